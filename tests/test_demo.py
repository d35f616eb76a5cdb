"""`make demo` must work: the scripted community run detects every scripted emergency, and a signal stops it all."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from simulators.demo import run_demo
from tests.support import REPO, wait_until, worker_children, zombie

pytestmark = pytest.mark.slow


def test_demo_detects_every_scripted_emergency(capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncio.run(run_demo()) == 0
    out = capsys.readouterr().out
    assert "scenarios passed=16 failed=0" in out.splitlines()[-1]  # 13 community checks, 3 YAML scenarios
    assert "/console/" in out and "log in as post / " in out
    assert "dead letters: 0" in out  # our own cmd downlinks are not read back as device input
    assert "紧急呼叫 SOS" in out and "跌倒后未起身" in out
    assert "SMS  → " in out and "CALL → " in out and "Reply 1" in out
    # +86 numbers through Aliyun (its templates, filled in), the contact abroad through Twilio
    assert "[aliyun SMS_900001]: 【幸福社区】" in out and "[aliyun TTS_900101]" in out and "[twilio]: " in out
    assert "key 1 pressed on the Aliyun call; the gateway answers 200" in out


@pytest.mark.parametrize(
    ("sig", "target"),
    [
        pytest.param(signal.SIGTERM, "demo", id="SIGTERM"),  # kill, systemd, `timeout`: also reaches a background job
        pytest.param(signal.SIGINT, "group", id="Ctrl-C"),  # the terminal signals the whole foreground group
        pytest.param(signal.SIGHUP, "demo", id="SIGHUP"),  # the terminal closed
    ],
)
def test_a_signal_stops_the_demo_and_everything_it_started(tmp_path: Path, sig: signal.Signals, target: str) -> None:
    """Issue 14 item 13: no Mosquitto or PostgreSQL left running, no folder left with the token and phone numbers."""
    # the demo's temporary folders go here (TMPDIR), so the test can see them go; a short path, as
    # PostgreSQL's socket path must fit in 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="demo-stop-"))
    try:
        _stop_the_demo(temp, tmp_path / "demo.out", sig, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _stop_the_demo(temp: Path, out: Path, sig: signal.Signals, target: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
    env.update(TMPDIR=str(temp), PYTHONUNBUFFERED="1")
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.cli", "demo", "--duration", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "scenario: " in out.read_text(errors="replace"), 90, "the demo under way")
        services = _processes_using(temp)
        names = {name for _, name in services}
        assert {"postgres", "mosquitto"} <= names, services
        workers = worker_children(proc.pid)
        assert len(workers) == 1, workers
        assert any(p.name.startswith("eldercare-demo-gw-") for p in temp.iterdir())  # token, phone numbers
        started = time.monotonic()
        if target == "group":
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code = proc.wait(60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text(errors="replace")
    print(f"{sig.name} to the {target}: demo exited {code} after {took:.1f} s")
    assert code == 0, text[-3000:]
    assert "stopped; everything the demo started has been shut down" in text, text[-3000:]
    assert "Traceback" not in text and "Fatal Python error" not in text, text[-3000:]
    assert "starting it again" not in text, text[-3000:]  # the gateway's worker was not restarted
    for pid, _ in services + [(w, "alert worker") for w in workers]:
        wait_until(lambda pid=pid: zombie(pid), 10, f"process {pid} gone")  # type: ignore[misc]
    assert list(temp.iterdir()) == []


def _processes_using(folder: Path) -> list[tuple[int, str]]:
    """(pid, program) of the processes whose command line names something in ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(folder).encode() in arg for arg in argv):
            found.append((int(entry.name), Path(argv[0].decode(errors="replace")).name))
    return found
