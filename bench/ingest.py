"""Ingest benchmark: how fast the gateway drains a queued stream, against null subscribers.

A private broker first queues the whole stream (QoS 1, persistent sessions registered
beforehand, queue limits raised) for each subscriber, so the publisher does not
compete for the two cores while a subscriber is measured. Then, one at a time:

* ``mosquitto_sub`` (C): the ceiling;
* a gmqtt subscriber that only counts: the fastest Python client, the baseline;
* our receive path alone (``MqttIngestClient``), acknowledging each read in one buffer;
* aiomqtt 3 (alpha, on the ``mqtt5`` codec) acknowledging by hand, each batch of 2,000
  once it is complete (as the gateway does after commit), when aiomqtt 3 is installed;
* the gateway (``eldercare run``): receive, decode, store with binary COPY, ack.

Before the broker starts, bench/mqtt_parse.py compares PUBLISH parsing alone (our
codec, ``mqtt5``, paho-mqtt 2) on the same recorded streams (``--parse-only`` stops there).

Prints messages per second for each, the ratio gateway / gmqtt, rows in the database
afterwards (must equal what was published) and the gateway's peak RSS. Last line:
``ingest_ratio=<gateway/null> rows_ok=<true|false>``.

``--timescaledb`` runs the gateway three times in the same run, on one private server
with TimescaleDB preloaded (scripts/timescaledb-tree.sh finds or builds it): plain daily
partitions (``storage.engine: partitions``), hypertables as the schema makes them (primary
key only), and hypertables with the ``(time DESC)`` index create_hypertable adds by default.

Run: ``.venv/bin/python bench/ingest.py [--messages 500000] [--devices 10000] [--timescaledb] [--parse-only]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.mqtt_parse import documented_stream  # noqa: E402
from bench.mqtt_parse import report as parse_report  # noqa: E402
from simulators.bulk_publisher import publish_all  # noqa: E402
from simulators.services.local import private_services  # noqa: E402
from simulators.services.postgres import LocalPostgres  # noqa: E402

TOPIC_FILTER = "eldercare/v1/+/+/telemetry"  # the stream is telemetry only
SESSION_EXPIRY_S = 86_400


def wristband_stream(n: int, devices: int, start_ms: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        device = f"wb-{i % devices:05d}"
        payload = {
            "ts": start_ms + i,
            "lat": round(31.2304 + rnd.uniform(-0.01, 0.01), 6),
            "lon": round(121.4737 + rnd.uniform(-0.01, 0.01), 6),
            "gps_acc_m": 8.5,
            "hr": rnd.randint(55, 95),
            "spo2": rnd.randint(93, 99),
            "steps": i % 9000,
            "battery": 81.5,
            "worn": True,
        }
        out.append((f"eldercare/v1/wristband/{device}/telemetry", json.dumps(payload, separators=(",", ":")).encode()))
    return out


def register_session(port: int, client_id: str) -> None:
    """Create a persistent session with the subscription, so the broker queues for it."""
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
            str(SESSION_EXPIRY_S),
            "-q",
            "1",
            "-t",
            TOPIC_FILTER,
            "-W",
            "1",
        ],
        capture_output=True,
        check=False,
    )


def drain_mosquitto_sub(port: int, n: int) -> float:
    start = time.perf_counter()
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
            "null-c",
            "-x",
            str(SESSION_EXPIRY_S),
            "-q",
            "1",
            "-t",
            TOPIC_FILTER,
            "-C",
            str(n),
        ],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    return n / (time.perf_counter() - start)


GMQTT_NULL = r"""
import asyncio, sys, time
import gmqtt
n = int(sys.argv[2])
async def main():
    done = asyncio.Event()
    state = {"count": 0, "first": 0.0}
    def on_message(client, topic, payload, qos, properties):
        if state["count"] == 0:
            state["first"] = time.perf_counter()
        state["count"] += 1
        if state["count"] >= n:
            done.set()
        return 0
    client = gmqtt.Client("null-gmqtt", clean_session=False, session_expiry_interval=86400)
    client.on_message = on_message
    start = time.perf_counter()
    await client.connect("127.0.0.1", int(sys.argv[1]), version=gmqtt.constants.MQTTv50)
    client.subscribe("eldercare/v1/+/+/+", qos=1)
    await asyncio.wait_for(done.wait(), 600)
    print(n / (time.perf_counter() - start))
    await client.disconnect()
asyncio.run(main())
"""


OWN_NULL = r"""
import asyncio, sys, time
from gateway.ingest.mqtt_client import MqttIngestClient, MqttSettings
n = int(sys.argv[2])
async def main():
    done = asyncio.Event()
    count = [0]
    def sink(publishes, connection):
        count[0] += len(publishes)
        client.ack(connection, publishes.packet_ids)  # one buffer of PUBACKs per read
        if count[0] >= n:
            done.set()
    settings = MqttSettings(port=int(sys.argv[1]), client_id="null-ours", topic_filters=("eldercare/v1/+/+/telemetry",))
    client = MqttIngestClient(settings, sink)
    start = time.perf_counter()
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(done.wait(), 600)
    print(n / (time.perf_counter() - start))
    await client.close()
    await asyncio.wait_for(task, 10)
asyncio.run(main())
"""

# the session (registered beforehand) holds the subscription: queued messages come on CONNECT
AIOMQTT3_NULL = r"""
import asyncio, sys, time
import aiomqtt
n = int(sys.argv[2])
async def main():
    client = aiomqtt.Client(
        hostname="127.0.0.1", port=int(sys.argv[1]), identifier="null-aiomqtt3",
        clean_start=False, session_expiry_interval=86400,
    )
    count = 0
    batch = []
    start = time.perf_counter()
    async with client:
        async for packet in client.messages():
            count += 1
            batch.append(packet.packet_id)
            if len(batch) >= 2000 or count >= n:  # the batch is "committed": acknowledge it
                for packet_id in batch:
                    await client.puback(packet_id)
                batch.clear()
            if count >= n:
                break
    print(n / (time.perf_counter() - start))
asyncio.run(main())
"""


def aiomqtt3_installed() -> bool:
    try:
        import aiomqtt
    except ImportError:
        return False
    return aiomqtt.__version__.startswith("3.")


def drain_script(script: str, port: int, n: int) -> tuple[float, float]:
    """(messages/s, CPU microseconds per message) of a null subscriber run as a child."""
    cpu = children_cpu_s()
    out = subprocess.run(
        [sys.executable, "-c", script, str(port), str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        cwd=REPO,
    )
    return float(out.stdout.strip().splitlines()[-1]), (children_cpu_s() - cpu) / n * 1e6


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain_gmqtt(port: int, n: int) -> tuple[float, float]:
    """(messages/s, CPU microseconds per message) of the gmqtt null subscriber."""
    cpu = children_cpu_s()
    out = subprocess.run(
        [sys.executable, "-c", GMQTT_NULL, str(port), str(n)], capture_output=True, text=True, check=True, timeout=900
    )
    return float(out.stdout.strip().splitlines()[-1]), (children_cpu_s() - cpu) / n * 1e6


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def drain_gateway(
    port: int,
    dsn: str,
    n: int,
    workdir: Path,
    client_id: str = "gateway",
    engine: str = "auto",
    extra_sql: tuple[str, ...] = (),
) -> tuple[float, int, float, float]:
    config = workdir / f"{client_id}.yaml"
    config.write_text(
        json.dumps(
            {
                "mqtt": {"port": port, "client_id": client_id},
                "database": {"dsn": dsn},
                "storage": {"spool_dir": str(workdir / f"spool-{client_id}"), "engine": engine},
                "notify": {"http_port": 0},
                "logging": {"level": "WARNING"},
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "-c", str(config), "db", "upgrade"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in extra_sql:
            conn.execute(statement)
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "-c", str(config), "run"], cwd=REPO)
        try:
            start = time.perf_counter()
            stored = 0
            deadline = start + 900
            while stored < n and time.perf_counter() < deadline:
                time.sleep(0.05)
                stored = conn.execute("SELECT count(*) FROM telemetry_wristband").fetchone()[0]
            elapsed = time.perf_counter() - start
            rss = peak_rss_mb(proc.pid)
            cpu_us = process_cpu_s(proc.pid) / n * 1e6  # includes start-up
        finally:
            proc.terminate()
            proc.wait(60)
        time.sleep(0.5)
        stored = conn.execute("SELECT count(*) FROM telemetry_wristband").fetchone()[0]
    return n / elapsed, int(stored), rss, cpu_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--timescaledb", action="store_true", help="also hypertables, with and without the time index")
    parser.add_argument("--parse-messages", type=int, default=200_000, help="frames per codec in the parse comparison")
    parser.add_argument("--parse-only", action="store_true", help="compare the MQTT codecs only (no broker)")
    args = parser.parse_args()
    n = args.messages
    if args.timescaledb:
        return timescaledb_run(n, args.devices)
    parse_report(
        {
            "wristband readings": wristband_stream(args.parse_messages, args.devices, 1_795_000_000_000),
            "documented examples": documented_stream(args.parse_messages, args.devices),
        }
    )
    if args.parse_only:
        return 0
    with_aiomqtt3 = aiomqtt3_installed()
    if not with_aiomqtt3:
        print("aiomqtt 3 not installed: its receive run is skipped", file=sys.stderr)
    # no broker persistence: autosaving a store of 1.5M queued messages every few
    # seconds would stall the broker and measure its disk, not the subscribers
    with private_services("eldercare-bench-", fsync=True, max_queued_messages=n * 2, broker_persistence=False) as (
        broker,
        database,
    ):
        root = broker.workdir.parent
        sessions = ["null-c", "null-gmqtt", "null-ours", "gateway"] + (["null-aiomqtt3"] if with_aiomqtt3 else [])
        for client_id in sessions:
            register_session(broker.port, client_id)
        stream = wristband_stream(n, args.devices, time.time_ns() // 1_000_000 - n)
        size = sum(len(p) for _, p in stream) / n
        t = time.perf_counter()
        acked = asyncio.run(publish_all("127.0.0.1", broker.port, stream))
        publish_rate = n / (time.perf_counter() - t)
        print(
            f"queued {acked:,} messages ({size:.0f} B payloads, {args.devices:,} devices) "
            f"for {len(sessions)} persistent sessions at {publish_rate:,.0f} msg/s"
        )
        if acked != n:
            print(f"publisher: only {acked} of {n} acknowledged", file=sys.stderr)
            return 1
        c_rate = drain_mosquitto_sub(broker.port, n)
        print(f"mosquitto_sub (C, ceiling):      {c_rate:>10,.0f} msg/s")
        null_rate, null_cpu = drain_gmqtt(broker.port, n)
        print(f"gmqtt null subscriber (baseline): {null_rate:>10,.0f} msg/s  {null_cpu:5.1f} us CPU/msg")
        own_rate, own_cpu = drain_script(OWN_NULL, broker.port, n)
        print(f"our receive path, ack per read:   {own_rate:>10,.0f} msg/s  {own_cpu:5.1f} us CPU/msg")
        if with_aiomqtt3:
            aio_rate, aio_cpu = drain_script(AIOMQTT3_NULL, broker.port, n)
            print(f"aiomqtt 3, manual ack per 2,000:  {aio_rate:>10,.0f} msg/s  {aio_cpu:5.1f} us CPU/msg")
            print(f"receive paths: aiomqtt 3 / ours = {aio_rate / own_rate:.2f}")
        gw_rate, rows, rss, gw_cpu = drain_gateway(broker.port, database.dsn, n, root)
        print(
            f"gateway (decode+detect+COPY+ack): {gw_rate:>10,.0f} msg/s  "
            f"{gw_cpu:5.1f} us CPU/msg in the gateway process (PostgreSQL not included)"
        )
        print(
            f"ratios: gateway/gmqtt = {gw_rate / null_rate:.2f}, "
            f"gateway/mosquitto_sub = {gw_rate / c_rate:.2f}, gmqtt/mosquitto_sub = "
            f"{null_rate / c_rate:.2f}"
        )
        print(f"rows in database: {rows:,} of {n:,} published; gateway peak RSS {rss:.0f} MB; cores: {os.cpu_count()}")
        print(f"ingest_ratio={gw_rate / null_rate:.3f} rows_ok={'true' if rows == n else 'false'}")
        return 0


TIME_INDEX = "CREATE INDEX telemetry_wristband_time_idx ON telemetry_wristband (time DESC)"
RUNS = (  # client id / database, engine, extra statements, label
    ("gw_partitions", "partitions", (), "daily partitions (primary key)"),
    ("gw_hypertables", "timescaledb", (), "hypertables (primary key only, as created)"),
    ("gw_hypertables_idx", "timescaledb", (TIME_INDEX,), "hypertables + (time DESC) index"),
)


def timescaledb_run(n: int, devices: int) -> int:
    """The gateway on partitions and on hypertables (without and with the time index), one server, one run."""
    tree = subprocess.run(
        ["bash", str(REPO / "scripts" / "timescaledb-tree.sh")], capture_output=True, text=True, check=False
    )
    if tree.returncode != 0:
        print(tree.stderr, file=sys.stderr)
        return 1
    with private_services("eldercare-bench-", fsync=True, max_queued_messages=n * 2, broker_persistence=False) as (
        broker,
        _plain,
    ):
        root = broker.workdir.parent
        database = LocalPostgres(
            root / "postgres-timescaledb",
            fsync=True,
            bindir=Path(tree.stdout.strip()),
            settings={"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off"},
        )
        database.start()
        try:
            admin = database.dsn.rsplit("/", 1)[0]
            with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
                for name, *_ in RUNS:
                    conn.execute(f"CREATE DATABASE {name}")
            for name, *_ in RUNS:
                register_session(broker.port, name)
            stream = wristband_stream(n, devices, time.time_ns() // 1_000_000 - n)
            acked = asyncio.run(publish_all("127.0.0.1", broker.port, stream))
            print(f"queued {acked:,} messages ({devices:,} devices) for {len(RUNS)} gateway sessions")
            if acked != n:
                return 1
            rates = {}
            for name, engine, extra, label in RUNS:
                rate, rows, rss, cpu = drain_gateway(broker.port, f"{admin}/{name}", n, root, name, engine, extra)
                rates[name] = rate
                ok = "ok" if rows == n else f"ONLY {rows:,}"
                print(f"{label:<44} {rate:>9,.0f} msg/s  {cpu:5.1f} us CPU/msg  rows {ok}  RSS {rss:.0f} MB")
            base = rates["gw_partitions"]
            print(
                f"hypertables/partitions = {rates['gw_hypertables'] / base:.2f}, "
                f"with time index/partitions = {rates['gw_hypertables_idx'] / base:.2f}, "
                f"time index cost = {1 - rates['gw_hypertables_idx'] / rates['gw_hypertables']:.1%}"
            )
        finally:
            database.stop("immediate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
