"""Scale-out benchmark: one gateway vs one cluster instance vs two, draining the same queued stream.

Like bench/ingest.py, a private broker first queues the whole stream (QoS 1) for sessions
registered beforehand, so publishing does not compete with the measurement; then the
gateway process(es) start and the clock runs until every row is in the database. Runs:

* ``single``: one gateway, cluster off (the default deployment);
* ``cluster x1``: one instance with ``cluster.enabled`` (shared subscription + its own
  detect stream: every message is read twice);
* ``cluster x2``: two instances sharing the stream (Mosquitto deals it round-robin).

Prints messages/s stored and the gateway processes' CPU per message. On a 2-core machine
two instances share the cores with PostgreSQL and Mosquitto, so this measures the cost of
the design more than the headroom of more hardware; see docs/deployment-city.md.

Run: ``.venv/bin/python bench/ingest_cluster.py [--messages 200000] [--devices 10000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ingest import process_cpu_s, wristband_stream  # noqa: E402
from simulators.bulk_publisher import publish_all  # noqa: E402
from simulators.services.local import private_services  # noqa: E402

TELEMETRY = "eldercare/v1/+/+/telemetry"


def register(port: int, client_id: str, topic: str) -> None:
    subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-V",
            "mqttv5",
            "-c",
            "-i",
            client_id,
            "-x",
            "86400",
            "-q",
            "1",
            "-t",
            topic,
            "-W",
            "1",
        ],
        capture_output=True,
        check=False,
    )


def run(mode: str, n: int, devices: int) -> tuple[float, float]:
    names = ["gw-a"] if mode != "cluster x2" else ["gw-a", "gw-b"]
    cluster = mode != "single"
    with private_services("eldercare-bench-", fsync=True, max_queued_messages=n * 2, broker_persistence=False) as (
        broker,
        database,
    ):
        root = broker.workdir.parent
        for name in names:
            register(broker.port, name, f"$share/bench/{TELEMETRY}" if cluster else TELEMETRY)
            if cluster:
                register(broker.port, f"{name}.detect", TELEMETRY)
        stream = wristband_stream(n, devices, time.time_ns() // 1_000_000 - n)
        assert asyncio.run(publish_all("127.0.0.1", broker.port, stream)) == n
        configs = []
        for name in names:
            config = root / f"{name}.yaml"
            config.write_text(
                json.dumps(
                    {
                        "mqtt": {
                            "port": broker.port,
                            "client_id": name,
                            **({"share_group": "bench"} if cluster else {}),
                        },
                        "database": {"dsn": database.dsn},
                        "storage": {"spool_dir": str(root / name / "spool")},
                        "notify": {"http_port": 0},
                        "logging": {"level": "WARNING"},
                        "cluster": {"enabled": cluster, "instance_id": name},
                    }
                )
            )
            configs.append(config)
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "-c", str(configs[0]), "db", "upgrade"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            procs = [
                subprocess.Popen([sys.executable, "-m", "gateway.cli", "-c", str(c), "run"], cwd=REPO) for c in configs
            ]
            try:
                start = time.perf_counter()
                stored = 0
                while stored < n and time.perf_counter() - start < 900:
                    time.sleep(0.05)
                    stored = conn.execute("SELECT count(*) FROM telemetry_wristband").fetchone()[0]
                elapsed = time.perf_counter() - start
                cpu = sum(process_cpu_s(p.pid) for p in procs)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(60)
        return n / elapsed, cpu / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    for mode in ("single", "cluster x1", "cluster x2"):
        rate, cpu_us = run(mode, args.messages, args.devices)
        print(f"{mode:<11} {rate:>9,.0f} msg/s stored   {cpu_us:5.1f} us gateway CPU/msg (all instances)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
