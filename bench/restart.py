"""Restart and registry import on the edge box: 12,000 elders and 20,000 devices (issue 19).

Private Mosquitto and PostgreSQL (fsync on) and the fake Twilio. Three measurements:

1. **Import** of bench/soak.py's registry (12,000 elders, 20,000 devices) from YAML:
   ``eldercare registry import`` as an operator runs it (interpreter start included),
   its phases in this process (parse, validate, write), and the same done the way it was
   before (pure-Python ``yaml.safe_load``, one INSERT round trip per row) as the baseline.
   The same elders as the console's spreadsheet (XLSX) upload: read, check every row,
   write (``import_spreadsheet``, what ``POST /api/v1/registry/import`` runs).
2. **Memory** the gateway holds once ready: started with the registry file (imported at
   start) against started with the registry already in the database.
3. **Restart**: the gateway (registry in the database, its MQTT session persistent) is
   SIGKILLed, an SOS is published while it is down (the broker queues it), and the
   gateway is started again: the seconds from the start to ``/readyz`` answering 200 and
   to the first page at the fake Twilio. Baseline: the same restart with an empty
   registry, and the interpreter's own start (``import gateway.service``).

Last line: ``restart_ready_s=<s> restart_sos_paged_s=<s>`` (median of ``--runs``).

Run: ``.venv/bin/python bench/restart.py [--runs 3] [--devices 20000]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _soak_support import LoadPlan, build_registry, family_phone, rss_mb, write_gateway_config  # noqa: E402

from gateway.api.registry_upload import import_spreadsheet  # noqa: E402
from gateway.domain.registry import load_registry, registry_from_dicts  # noqa: E402
from gateway.domain.registry_db import import_registry  # noqa: E402
from gateway.storage import schema  # noqa: E402
from simulators.providers.twilio.server import FakeTwilio, running_in_thread  # noqa: E402
from simulators.services.local import private_services  # noqa: E402
from simulators.services.process import free_port  # noqa: E402

SID, TOKEN = "AC" + "2" * 32, "bench-token"


def cli(config: Path, *args: str) -> float:
    """Seconds an ``eldercare`` command takes, start to exit."""
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "-c", str(config), *args], cwd=REPO, check=True, capture_output=True
    )
    return time.perf_counter() - t


def import_phases(path: Path, dsn: str) -> dict[str, float]:
    t0 = time.perf_counter()
    registry = load_registry(path)
    t1 = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        import_registry(conn, registry)
    t2 = time.perf_counter()
    return {"parse+validate": t1 - t0, "write": t2 - t1}


def import_the_old_way(path: Path, dsn: str) -> dict[str, float]:
    """The baseline: pure-Python safe_load, then one INSERT round trip per row."""
    t0 = time.perf_counter()
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    registry = registry_from_dicts(raw["elders"], raw.get("responders"), raw.get("roster_overrides"))
    t1 = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.transaction():
        for elder in registry.elders:
            conn.execute(
                "INSERT INTO elders (elder_id, name, community, grid, profile) VALUES (%s, %s, %s, %s, '{}') "
                "ON CONFLICT (elder_id) DO UPDATE SET name = EXCLUDED.name",
                (elder.id, elder.name, elder.community, elder.grid),
            )
            for d in elder.devices:
                conn.execute(
                    "INSERT INTO devices (device_id, device_type, elder_id, reporting_interval_s) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) DO NOTHING",
                    (d.id, d.type, elder.id, d.reporting_interval_s),
                )
    t2 = time.perf_counter()
    return {"parse+validate": t1 - t0, "write": t2 - t1}


def registry_workbook(doc: dict[str, Any]) -> bytes:
    """The registry's elders as the spreadsheet a post station keeps (one row per elder)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("elders")
    columns = ["elder_id", "name", "community", "grid", "address", "conditions", "home_lat", "home_lon"]
    sheet.append([*columns, "home_fence_m", "devices", "contact1_name", "contact1_phone", "contact1_relation"])
    for e in doc["elders"]:
        contact = e["contacts"][0]
        fence = e["fences"][0]["circle"]["radius_m"] if e["fences"] else None
        devices = ";".join(f"{d['type']}:{d['id']}" for d in e["devices"])
        row = [e["id"], e["name"], e["community"], e["grid"], e["address"], ";".join(e["conditions"])]
        sheet.append(
            [
                *row,
                e["home"]["lat"],
                e["home"]["lon"],
                fence,
                devices,
                *(contact[k] for k in ("name", "phone", "relation")),
            ]
        )
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def import_sheet(data: bytes, dsn: str) -> float:
    t = time.perf_counter()
    result = import_spreadsheet(lambda: psycopg.connect(dsn), "elders.xlsx", data, False, "bench", datetime.now(UTC))
    assert result.imported > 0, result
    return time.perf_counter() - t


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("the gateway did not become ready")


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "-c", str(config), "run"], cwd=REPO, stdout=out, stderr=out
        )


def publish_sos(port: int, device: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{device}", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    info = client.publish(
        f"eldercare/v1/pager/{device}/event", json.dumps({"ts": int(time.time() * 1000), "event": "sos"}), qos=1
    )
    info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def restart_once(
    config: Path, log: Path, http_port: int, broker_port: int, fake: FakeTwilio, pager: str | None, phone: str | None
) -> tuple[float, float | None, float]:
    """SIGKILL the running gateway, queue an SOS, start it: (ready_s, paged_s, rss_mb)."""
    first = start(config, log)
    wait_ready(http_port, first)
    time.sleep(1.0)  # its MQTT session is made
    workers = _children(first.pid)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.02)  # its alert worker follows it (PR_SET_PDEATHSIG)
    if pager:
        publish_sos(broker_port, pager)
    t0 = time.perf_counter()
    wall0 = time.time() * 1000
    proc = start(config, log)
    try:
        ready = wait_ready(http_port, proc) - t0
        paged = None
        if phone:

            def first_page() -> float | None:
                records: list[Any] = [*fake.messages, *fake.calls]
                times = [r.received_at_ms for r in records if r.to == phone and r.received_at_ms >= wall0]
                return min(times) if times else None

            found = fake.wait_until_sync(
                first_page,
                timeout_s=60,
                what="the SOS paged after the restart",
            )
            paged = (found - wall0) / 1000
        time.sleep(0.5)
        memory = rss_mb(proc.pid) + sum(rss_mb(c) for c in _children(proc.pid))
        return ready, paged, memory
    finally:
        proc.terminate()
        proc.wait(30)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def config_for(
    root: Path, broker: Any, dsn: str, fake: FakeTwilio, http_port: int, registry: Path | None, name: str
) -> Path:
    return write_gateway_config(
        root / f"config-{name}.yaml",
        broker_port=broker.port,
        dsn=dsn,
        http_port=http_port,
        twilio=(SID, TOKEN, fake.base_url),
        client_id=f"gateway-{name}",
        registry_file=registry,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=20_000)
    args = parser.parse_args()
    plan = LoadPlan.for_devices(args.devices)
    reg = build_registry(plan)
    pagers = [d["id"] for e in reg.doc["elders"] for d in e["devices"] if d["type"] == "pager"]
    owner = {d["id"]: i for i, e in enumerate(reg.doc["elders"]) for d in e["devices"]}
    fake = FakeTwilio(SID, TOKEN)
    with private_services("eldercare-restart-", fsync=True) as (broker, database), running_in_thread(fake):
        root = broker.workdir.parent
        path = root / "registry.yaml"
        path.write_text(yaml.safe_dump(reg.doc, allow_unicode=True))
        schema.upgrade(database.dsn)
        empty_dsn = database.dsn.rsplit("/", 1)[0] + "/empty"
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE empty")
        schema.upgrade(empty_dsn)
        http_port = free_port()
        with_file = config_for(root, broker, database.dsn, fake, http_port, path, "file")
        from_db = config_for(root, broker, database.dsn, fake, http_port, None, "db")
        empty = config_for(root, broker, empty_dsn, fake, http_port, None, "empty")
        print(
            f"registry: {len(reg.doc['elders']):,} elders, {args.devices:,} devices, "
            f"{path.stat().st_size / 1e6:.1f} MB of YAML; cores: {os.cpu_count()}"
        )

        old = import_the_old_way(path, database.dsn)
        new = [import_phases(path, database.dsn) for _ in range(args.runs)]
        command = [cli(with_file, "registry", "import", str(path)) for _ in range(args.runs)]
        floor = [cli(with_file, "--help") for _ in range(args.runs)]
        workbook = registry_workbook(reg.doc)
        sheet = [import_sheet(workbook, database.dsn) for _ in range(args.runs)]
        best = {k: min(n[k] for n in new) for k in new[0]}
        print(
            f"import, baseline (safe_load, a round trip per row): parse+validate {old['parse+validate']:.2f} s, "
            f"write {old['write']:.2f} s, total {sum(old.values()):.2f} s"
        )
        print(
            f"import, now (ryaml where it reads alike, COPY):    parse+validate {best['parse+validate']:.2f} s, "
            f"write {best['write']:.2f} s, total {sum(best.values()):.2f} s"
        )
        print(
            f"`eldercare registry import` (interpreter start included): median {statistics.median(command):.2f} s "
            f"(`eldercare --help` alone {statistics.median(floor):.2f} s)"
        )
        print(
            f"spreadsheet upload ({len(workbook) / 1e6:.1f} MB XLSX, every row checked, then written): "
            f"median {statistics.median(sheet):.2f} s"
        )

        # memory once ready, registry from the file vs from the database
        _, _, rss_file = restart_once(with_file, root / "gw.log", http_port, broker.port, fake, None, None)
        _, _, rss_db = restart_once(from_db, root / "gw.log", http_port, broker.port, fake, None, None)
        print(
            f"gateway + alert worker RSS once ready: registry from the file {rss_file:.0f} MB, "
            f"from the database {rss_db:.0f} MB"
        )

        results = []
        for k in range(args.runs):
            pager = pagers[k]
            results.append(
                restart_once(from_db, root / "gw.log", http_port, broker.port, fake, pager, family_phone(owner[pager]))
            )
        ready = statistics.median(r[0] for r in results)
        paged = statistics.median(r[1] or 0.0 for r in results)
        base = [
            restart_once(empty, root / "gw.log", http_port, broker.port, fake, None, None)[0] for _ in range(args.runs)
        ]
        print(
            f"restart after SIGKILL, {len(reg.doc['elders']):,} elders in the database: ready "
            f"{', '.join(f'{r[0]:.2f}' for r in results)} s; SOS queued while down, paged "
            f"{', '.join(f'{(r[1] or 0):.2f}' for r in results)} s after the start"
        )
        print(
            f"baseline: the same restart with an empty database: ready {statistics.median(base):.2f} s; "
            f"the interpreter and `eldercare --help`: {statistics.median(floor):.2f} s"
        )
    print(f"restart_ready_s={ready:.2f} restart_sos_paged_s={paged:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
