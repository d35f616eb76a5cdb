"""Alert latency: from an SOS published over MQTT to the first request at (fake) Twilio.

Private Mosquitto and PostgreSQL (fsync on), the local fake Twilio, and the gateway as
its own process (``eldercare run``, with its alert worker process unless ``--alert-worker
inline``) and the shipped escalation policy, under which an
SOS pages at once (the press is the confirmation). Each trial presses SOS on a
different elder's pager and measures until the fake receives the first SMS or call
for that elder's family. Two runs: the gateway idle, and the gateway ingesting
background wristband telemetry at about half the rate it sustains (``--background``,
default 18,000 msg/s, about half of what bench/ingest.py measured on this machine).
Prints median and 99th percentile for both; last line (loaded case):
``sos_p50_ms=<a> sos_p99_ms=<b>``

Run: ``nice -n -15 .venv/bin/python bench/alert_latency.py [--trials 200] [--background 18000]
[--alert-worker process|inline] [--batch-age-ms MS]``
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simulators.providers.twilio.server import FakeTwilio, running_in_thread  # noqa: E402
from simulators.services.local import private_services  # noqa: E402
from simulators.services.mosquitto import LocalMosquitto  # noqa: E402
from simulators.services.process import free_port  # noqa: E402

SID, TOKEN = "AC" + "1" * 32, "bench-token"
BANDS = 5_000


def phone(i: int) -> str:
    return f"+86138{i:08d}"


def registry(n: int) -> dict[str, Any]:
    elders = [
        {
            "id": f"e{i}",
            "name": f"老人{i}",
            "community": "幸福社区",
            "grid": "g1",
            "contacts": [{"name": f"家属{i}", "phone": phone(i), "channels": ["sms", "voice"]}],
            "devices": [{"id": f"pg-{i}", "type": "pager"}],
        }
        for i in range(n)
    ]
    return {
        "elders": elders,
        "responders": [
            {"id": "grid", "name": "王芳", "role": "grid_worker", "phone": "+8613900000001", "grid": "g1"},
            {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"},
        ],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


BACKGROUND = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[4])
from simulators.bulk_publisher import publish_all
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
# build every message first, so the load generator costs little CPU while it runs
base = time.time_ns() // 1_000_000
frames = [(f"eldercare/v1/wristband/wb-{i % 5000}/telemetry",
           json.dumps({"ts": base + i // 5000, "hr": 70 + i % 9, "spo2": 97, "steps": i // 5000,
                       "battery": 80, "worn": True}).encode())
          for i in range(int(rate * seconds))]
print("ready", flush=True)
sent = 0
def stream():
    global sent
    start = time.monotonic()
    for frame in frames:
        while sent >= int((time.monotonic() - start) * rate):
            time.sleep(0.002)
        yield frame
        sent += 1
t = time.monotonic()
asyncio.run(publish_all("127.0.0.1", port, stream(), client_id="background", window=20000, chunk=200))
print(sent / (time.monotonic() - t))
"""


class Background:
    """Wristband telemetry at a steady rate, from its own process (not this one's GIL)."""

    def __init__(self, port: int, rate: int, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BACKGROUND, str(port), str(rate), str(seconds), str(REPO)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready": the frames are built

    def achieved(self) -> float:
        out, _ = self.proc.communicate(timeout=600)
        return float(out.strip().splitlines()[-1])


def run_trials(broker: LocalMosquitto, fake: FakeTwilio, trials: int, first: int, label: str) -> list[float]:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sos-{label}", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    latencies: list[float] = []
    try:
        for k in range(trials):
            i = first + k
            target = phone(i)
            t0 = time.time() * 1000
            info = pub.publish(f"eldercare/v1/pager/pg-{i}/event", json.dumps({"ts": int(t0), "event": "sos"}), qos=1)
            info.wait_for_publish(10)
            found = fake.wait_until_sync(
                lambda target=target: next(
                    (r.received_at_ms for r in [*fake.messages, *fake.calls] if r.to == target), None
                ),
                timeout_s=15,
                what=f"page for trial {k}",
            )
            latencies.append(found - t0)
            time.sleep(0.05)
    finally:
        pub.loop_stop()
        pub.disconnect()
    return latencies


def wait_for_gateway(dsn: str, timeout_s: float = 60) -> None:
    """Until the gateway holds its database connections (its schema and registry are in)."""
    with psycopg.connect(dsn) as conn:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if row and row[0] >= 2:
                break
            time.sleep(0.2)
    time.sleep(3)  # the registry import and the MQTT session


def measure(
    broker: LocalMosquitto, fake: FakeTwilio, args: argparse.Namespace
) -> tuple[list[float], list[float], float]:
    """Warm up, then the idle trials, then the trials under background telemetry."""
    gc.freeze()  # the fake Twilio stamps arrivals in this process: no full collection of our set-up in between
    run_trials(broker, fake, 5, 2 * args.trials - 5, "warmup")  # warm caches and connections
    idle = run_trials(broker, fake, args.trials // 2, 0, "idle")
    background = Background(broker.port, args.background, seconds=12 + args.trials * 0.2)
    time.sleep(3)
    loaded = run_trials(broker, fake, args.trials // 2, args.trials // 2, "loaded")
    return idle, loaded, background.achieved()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--background", type=int, default=18_000, help="telemetry msg/s while loaded")
    parser.add_argument(
        "--alert-worker",
        choices=("process", "inline"),
        default="process",
        help="where the alert engine and outbox run (notify.alert_worker)",
    )
    parser.add_argument("--batch-age-ms", type=float, default=0, help="ingest.batch_max_age_ms (default: shipped)")
    args = parser.parse_args()
    fake = FakeTwilio(SID, TOKEN)
    with (
        private_services("eldercare-latency-", fsync=True, max_queued_messages=1_000_000, broker_persistence=False) as (
            broker,
            database,
        ),
        running_in_thread(fake),
    ):
        root = broker.workdir.parent
        (root / "registry.yaml").write_text(yaml.safe_dump(registry(2 * args.trials), allow_unicode=True))
        port = free_port()
        (root / "config.yaml").write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"port": broker.port, "client_id": "gateway"},
                    "database": {"dsn": database.dsn},
                    "storage": {"spool_dir": str(root / "spool")},
                    "registry": {"file": str(root / "registry.yaml")},
                    "notify": {
                        "public_base_url": f"http://127.0.0.1:{port}",
                        "http_port": port,
                        "alert_worker": args.alert_worker,
                        "twilio": {
                            "account_sid": SID,
                            "auth_token": TOKEN,
                            "sms_from": "+15005550006",
                            "voice_from": "+15005550006",
                            "base_url": fake.base_url,
                        },
                    },
                    "logging": {"level": "WARNING"},
                    **({"ingest": {"batch_max_age_ms": args.batch_age_ms}} if args.batch_age_ms else {}),
                }
            )
        )
        with (root / "gateway.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "-c", str(root / "config.yaml"), "run"],
                cwd=REPO,
                stdout=log,
                stderr=log,
            )
        try:
            wait_for_gateway(database.dsn)
            idle, loaded, achieved = measure(broker, fake, args)
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        f"SOS over MQTT -> first request at the fake Twilio ({args.trials // 2} trials each; "
        f"fsync on; gateway in its own process; alert worker: {args.alert_worker})"
    )
    for label, values, note in (
        ("idle", idle, ""),
        ("loaded", loaded, f" (background telemetry {achieved:,.0f} msg/s)"),
    ):
        print(
            f"{label:>7}: p50 {statistics.median(values):6.1f} ms  p99 {percentile(values, 0.99):6.1f} ms  "
            f"max {max(values):6.1f} ms{note}"
        )
    print(f"sos_p50_ms={statistics.median(loaded):.1f} sos_p99_ms={percentile(loaded, 0.99):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
