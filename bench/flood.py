"""Flood: 1,000 SOS presses within one second against the 12,000-elder registry (a mass event).

Private Mosquitto and PostgreSQL (fsync on), the local fake Twilio (in a thread of this
process), and the gateway as its own process (``python -m gateway.cli -c CONFIG run``, with
its alert worker process and the shipped escalation policy, under which an SOS pages the
family and the grid worker at once). The registry is bench/soak.py's (``LoadPlan.for_devices
(20000)``: 12,000 elders, 20,000 devices, a family phone per elder, a grid worker per 200
elders); it is imported into the database before the gateway starts, so its parse is not
measured.

Each run:

1. **Baseline**: one SOS on the idle gateway: publish -> first request (SMS or call) at the
   fake for that elder's family phone.
2. **Flood**: ``--presses`` pagers of as many distinct elders press SOS, published on one
   MQTT connection at QoS 1, evenly over ``--spread-s`` (1 s) in 10 ms slices; each press's
   time is the wall clock when its slice was written (also its payload's ``ts``). For every
   elder: the time from its press to the *first* request at the fake to its family's phone.

Printed: the time from the first press to the last first page, p50/p90/max of the per-alert
times, first pages per second, where each alert's time went (press -> ``detections.detected_at``
-> ``alerts.opened_at`` -> first page), the alert engine's transactions (told apart by their
pages' ``created_at``, the transaction's start: how many alerts each opened, when it started,
when its pages were handed to the outbox, when they reached the fake), the alerts in the
database (table ``alerts``), elders with more than one alert for their one press ("doubled"),
elders never paged, the pages by role/channel/status, PostgreSQL's commits and rows
(``pg_stat_database``), and the CPU each process used over the flood.

``--py-spy BIN --profile-dir DIR`` also samples the gateway and its alert worker with py-spy
over the flood (``py-spy record --format raw``: collapsed stacks, one file per process).

Runs after the first use other pagers (4,000 in the registry); open alerts of the previous run
are resolved first (SQL), but the grid workers' calls of the last hour still count
(``notify.calls_per_hour``), so later runs fail more calls over to SMS.

Last line: ``flood_last_first_page_s=<s> alerts=<n> doubled=<n>`` (median over runs for the
time, last run's counts).

Run: ``nice -n 5 .venv/bin/python bench/flood.py [--presses 1000] [--runs 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _soak_support import (  # noqa: E402
    LoadPlan,
    Registry,
    build_registry,
    children,
    cpu_seconds,
    family_phone,
    machine_busy_seconds,
    tree_cpu_seconds,
    wait_ready,
    write_gateway_config,
)

from gateway.domain.registry import registry_from_dicts  # noqa: E402
from gateway.domain.registry_db import import_registry  # noqa: E402
from gateway.storage import schema  # noqa: E402
from simulators.devices.link import LinkTable, open_link, topic_header  # noqa: E402
from simulators.providers.twilio.server import FakeTwilio, running_in_thread  # noqa: E402
from simulators.services.local import private_services  # noqa: E402
from simulators.services.mosquitto import LocalMosquitto  # noqa: E402
from simulators.services.postgres import LocalPostgres  # noqa: E402
from simulators.services.process import free_port  # noqa: E402

SID, TOKEN = "AC" + "3" * 32, "bench-token"
DEVICES = 20_000
STATS_DELAY_S = 11.0  # PostgreSQL's backends flush their statistics within 10 s (PGSTAT_IDLE_INTERVAL)


# -- shared with bench/powercut.py ---------------------------------------------------------------


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def machine_line() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return (
        f"machine: {os.cpu_count()} cpus ({model}), {platform.platform()}, Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (``q`` in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def import_into_database(dsn: str, registry: Registry) -> float:
    """The schema, then the registry written as ``eldercare registry import`` does; seconds taken."""
    started = time.perf_counter()
    schema.upgrade(dsn)
    parsed = registry_from_dicts(registry.doc["elders"], registry.doc["responders"])
    with psycopg.connect(dsn) as conn:
        import_registry(conn, parsed)
    return time.perf_counter() - started


def write_config(root: Path, broker_port: int, dsn: str, fake: FakeTwilio, http_port: int) -> Path:
    """The gateway's config: registry from the database, the fake Twilio, the shipped escalation."""
    return write_gateway_config(
        root / "config.yaml",
        broker_port=broker_port,
        dsn=dsn,
        http_port=http_port,
        twilio=(SID, TOKEN, fake.base_url),
        client_id="gateway-bench",
    )


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "-c", str(config), "run"], cwd=REPO, stdout=out, stderr=out
        )


def stop_gateway(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sos_topic(device: str) -> str:
    return f"eldercare/v1/pager/{device}/event"


def sos_payload(ts_ms: int) -> bytes:
    return b'{"ts":%d,"event":"sos"}' % ts_ms


async def publish_presses(port: int, devices: Sequence[str], spread_s: float, slice_s: float = 0.01) -> dict[str, int]:
    """Every device presses SOS once, evenly over ``spread_s``, on one QoS 1 connection.

    Returns device -> press time (wall ms, also the payload's ``ts``); waits for every PUBACK.
    """
    table = LinkTable(1, 1)
    link = await open_link(table, 0, "127.0.0.1", port, f"bench-sos-{os.getpid()}", window=max(20, len(devices)))
    slices = max(1, round(spread_s / slice_s))
    per_slice = -(-len(devices) // slices)
    pressed: dict[str, int] = {}
    started = time.monotonic()
    for k in range(0, len(devices), per_slice):
        await asyncio.sleep(max(0.0, started + (k // per_slice) * slice_s - time.monotonic()))
        now = wall_ms()
        chunk = devices[k : k + per_slice]
        link.publish([topic_header(sos_topic(d)) for d in chunk], [sos_payload(now) for _ in chunk], [0] * len(chunk))
        pressed.update(dict.fromkeys(chunk, now))
    deadline = time.monotonic() + 30
    while table.inflight[0] > 0 and time.monotonic() < deadline:
        table.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(table.progress.wait(), 0.5)
    if table.inflight[0] > 0 or table.errors:
        raise RuntimeError(f"the broker did not acknowledge every press: {table.error_samples[:3]}")
    link.close()
    return pressed


@dataclass
class PageWatch:
    """First request at the fake to each watched phone since its press (scans only new records)."""

    fake: FakeTwilio
    wanted: dict[str, int]  # phone -> press ms
    first: dict[str, int] = field(default_factory=dict)  # phone -> first request ms
    seen_messages: int = 0
    seen_calls: int = 0

    def poll(self) -> None:
        messages, calls = self.fake.messages, self.fake.calls
        fresh: list[Any] = [*messages[self.seen_messages :], *calls[self.seen_calls :]]
        self.seen_messages, self.seen_calls = len(messages), len(calls)
        for record in fresh:
            since = self.wanted.get(record.to)
            if since is not None and record.received_at_ms >= since:
                self.first[record.to] = min(self.first.get(record.to, record.received_at_ms), record.received_at_ms)

    def wait(self, timeout_s: float, every_s: float = 0.1) -> bool:
        """Until every phone was paged (True) or the time is up (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            if len(self.first) >= len(self.wanted) or time.monotonic() >= deadline:
                return len(self.first) >= len(self.wanted)
            time.sleep(every_s)


def latency_ms(watch: PageWatch) -> list[float]:
    return [float(watch.first[p] - watch.wanted[p]) for p in watch.wanted if p in watch.first]


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    at: float
    gateway: float
    worker: float
    postgres: float
    broker: float
    bench: float  # this process: the fake Twilio's thread and the benchmark
    machine: float


@dataclass(frozen=True, slots=True)
class Pids:
    gateway: int
    worker: int
    postmaster: int
    broker: int
    ours: frozenset[int]  # our own database sessions, not counted as PostgreSQL's work

    def snapshot(self) -> CpuSnapshot:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return CpuSnapshot(
            time.monotonic(),
            cpu_seconds(self.gateway),
            cpu_seconds(self.worker) if self.worker else 0.0,
            tree_cpu_seconds(self.postmaster, self.ours),
            cpu_seconds(self.broker),
            own.ru_utime + own.ru_stime,
            machine_busy_seconds(),
        )


def cpu_line(a: CpuSnapshot, b: CpuSnapshot) -> str:
    dt = max(1e-9, b.at - a.at)

    def pct(name: str) -> str:
        return f"{100 * (getattr(b, name) - getattr(a, name)) / dt:.0f}%"

    return (
        f"CPU over {dt:.1f} s (100% = one core; {os.cpu_count()} cores): gateway {pct('gateway')}, "
        f"alert worker {pct('worker')}, PostgreSQL {pct('postgres')}, Mosquitto {pct('broker')}, "
        f"this process (fake Twilio + bench) {pct('bench')}; whole machine {pct('machine')}"
    )


def worker_pid(gateway_pid: int, timeout_s: float = 30) -> int:
    """The gateway's alert worker (its only child process)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = children(gateway_pid)
        if found:
            return found[0]
        time.sleep(0.1)
    return 0


def postmaster_pid(database: LocalPostgres) -> int:
    return int((database.datadir / "postmaster.pid").read_text().split()[0])


def broker_pid(broker: LocalMosquitto) -> int:
    assert broker.process is not None
    return broker.process.pid


# -- the flood -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FloodResult:
    baseline_ms: float | None
    last_first_page_s: float
    per_alert_ms: list[float]
    alerts: int
    doubled: int
    never_paged: int


def ts(ms_: int) -> datetime:
    return datetime.fromtimestamp(ms_ / 1000, UTC)


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class Database:
    """The benchmark's own session (autocommit), for the counts after a run."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def outbox_busy(self) -> int:
        return int(self.scalar("SELECT count(*) FROM notifications WHERE status IN ('pending', 'sending')"))

    def wait_outbox_idle(self, timeout_s: float) -> float | None:
        """Seconds until no page is pending or being sent (None: still busy at the timeout)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.outbox_busy() == 0:
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    def work(self) -> list[int]:
        """Commits, rows inserted, updated and returned so far in this database (pg_stat_database)."""
        self.conn.execute("SELECT pg_stat_force_next_flush()")
        found = self.rows(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_returned FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        return [int(v) for v in found[0]]

    def scans(self) -> dict[str, int]:
        """Rows read by sequential scans so far, per table (pg_stat_user_tables)."""
        return {name: int(n) for name, n in self.rows("SELECT relname, seq_tup_read FROM pg_stat_user_tables")}

    def resolve_everything(self) -> None:
        self.conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = 'bench', outcome = 'bench', "
            "next_check_at = NULL WHERE state <> 'resolved'"
        )


def owners(registry: Registry) -> tuple[list[str], dict[str, int]]:
    """The registry's pagers (each on a different elder) and device -> elder index."""
    pagers = [d["id"] for e in registry.doc["elders"] for d in e["devices"] if d["type"] == "pager"]
    return pagers, registry.elder_of


def stage_lines(db: Database, pressed: dict[str, int], watch: PageWatch, phone_of: dict[str, str]) -> list[str]:
    """Where each alert's time went: press -> detection row -> alert opened -> first page."""
    devices = list(pressed)
    since = ts(min(pressed.values()) - 1000)
    detected = dict(
        db.rows(
            "SELECT device_id, min(detected_at) FROM detections WHERE kind = 'sos' AND device_id = ANY(%s) "
            "AND ts >= %s GROUP BY device_id",
            (devices, since),
        )
    )
    opened = {
        d: (o, a)
        for d, o, a in db.rows(
            "SELECT device_id, min(opened_at), min(alert_id) FROM alerts WHERE kind = 'sos' AND device_id = ANY(%s) "
            "AND opened_at >= %s GROUP BY device_id",
            (devices, since),
        )
    }
    to_detect, to_open, to_page = [], [], []
    for d, press in pressed.items():
        if d in detected:
            to_detect.append(ms(detected[d]) - press)
        if d in opened:
            to_open.append(ms(opened[d][0]) - press)
            first = watch.first.get(phone_of[d])
            if first is not None:
                to_page.append(first - ms(opened[d][0]))

    def spread(values: list[int]) -> str:
        v = [float(x) for x in values]
        return (
            f"p50 {percentile(v, 50):,.0f} ms, p90 {percentile(v, 90):,.0f} ms, max {max(v, default=0):,.0f} ms "
            f"(n={len(v)})"
        )

    t0 = min(pressed.values())
    return [
        f"  press -> detection stored (detections.detected_at, its transaction's start): {spread(to_detect)}",
        f"  press -> alert opened (alerts.opened_at, the engine's clock): {spread(to_open)}",
        f"  alert opened -> first page at the fake: {spread(to_page)}",
        "  the engine's transactions that opened these alerts (times from the first press):",
        *transaction_lines(db, {a: d for d, (_, a) in opened.items()}, watch, phone_of, t0),
    ]


def transaction_lines(
    db: Database, device_of: dict[int, str], watch: PageWatch, phone_of: dict[str, str], t0: int
) -> list[str]:
    """Per engine transaction (its pages' ``created_at`` is the transaction's start): how many alerts,
    when it started, when its pages went to the outbox (their "notified" trail entries carry the
    sender's clock at hand-over) and when their first pages reached the fake."""
    rows = db.rows(
        "SELECT n.created_at, n.alert_id, min(e.at) FROM notifications n LEFT JOIN alert_events e "
        "ON e.alert_id = n.alert_id AND e.event = 'notified' WHERE n.alert_id = ANY(%s) AND n.purpose = 'page' "
        "AND n.tier = 0 GROUP BY n.created_at, n.alert_id",
        (list(device_of),),
    )
    by_txn: dict[datetime, list[tuple[int, datetime | None]]] = {}
    for created, alert_id, notified in rows:
        by_txn.setdefault(created, []).append((alert_id, notified))
    out = []
    for created in sorted(by_txn):
        members = by_txn[created]
        handed = [ms(n) - t0 for _, n in members if n is not None]
        firsts = [watch.first[phone_of[device_of[a]]] - t0 for a, _ in members if phone_of[device_of[a]] in watch.first]
        out.append(
            f"    {len(members):>4} alerts: started +{(ms(created) - t0) / 1000:5.2f} s, handed to the outbox "
            f"+{min(handed, default=0) / 1000:5.2f} s, first pages +{min(firsts, default=0) / 1000:5.2f} .. "
            f"+{max(firsts, default=0) / 1000:5.2f} s"
        )
    return out


def page_lines(db: Database, fake: FakeTwilio, pressed: dict[str, int], phone_of: dict[str, str]) -> list[str]:
    since = min(pressed.values())
    phones = {phone_of[d] for d in pressed}
    sms: dict[str, int] = {}
    calls: dict[str, int] = {}
    for m in fake.messages:
        if m.to in phones and m.received_at_ms >= since:
            sms[m.to] = sms.get(m.to, 0) + 1
    for c in fake.calls:
        if c.to in phones and c.received_at_ms >= since:
            calls[c.to] = calls.get(c.to, 0) + 1
    rows = db.rows(
        "SELECT role, channel, status, count(*) FROM notifications n JOIN alerts a USING (alert_id) "
        "WHERE a.device_id = ANY(%s) AND a.opened_at >= %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (list(pressed), ts(since - 1000)),
    )
    shown = ", ".join(f"{role}/{channel}/{status} {n}" for role, channel, status, n in rows)
    all_sms = sum(1 for m in fake.messages if m.received_at_ms >= since)
    all_calls = sum(1 for c in fake.calls if c.received_at_ms >= since)
    return [
        f"  pages of these alerts (role/channel/status): {shown}",
        f"  at the fake since the first press: {all_sms:,} SMS, {all_calls:,} calls, {len(fake.webhooks):,} webhooks "
        f"in all; family phones with more than one SMS {sum(1 for n in sms.values() if n > 1)}, with more than "
        f"one call {sum(1 for n in calls.values() if n > 1)}",
    ]


def sample_with_py_spy(binary: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_sampling(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


@dataclass
class Flood:
    args: argparse.Namespace
    fake: FakeTwilio
    broker_port: int
    db: Database
    pids: Pids
    pagers: list[str]
    phone_of: dict[str, str]  # pager -> its elder's family phone

    def baseline(self, pager: str) -> float | None:
        pressed = asyncio.run(publish_presses(self.broker_port, [pager], 0.0))
        watch = PageWatch(self.fake, {self.phone_of[pager]: pressed[pager]})
        watch.wait(30)
        self.db.wait_outbox_idle(30)
        found = latency_ms(watch)
        return found[0] if found else None

    def run(self, k: int) -> FloodResult:
        n = self.args.presses
        baseline = self.baseline(self.pagers[-(k + 1)])
        print(f"run {k + 1}: baseline, one SOS on the idle gateway: first page after {baseline or 0:.0f} ms")
        devices = self.pagers[k * n : (k + 1) * n]
        profilers = self._profilers(k)
        work0, scans0 = self.db.work(), self.db.scans()
        before = self.pids.snapshot()
        pressed = asyncio.run(publish_presses(self.broker_port, devices, self.args.spread_s))
        t0 = min(pressed.values())
        print(f"  {len(pressed):,} presses published in {(max(pressed.values()) - t0) / 1000:.2f} s", flush=True)
        watch = PageWatch(self.fake, {self.phone_of[d]: p for d, p in pressed.items()})
        watch.wait(self.args.timeout_s)
        after = self.pids.snapshot()
        idle = self.db.wait_outbox_idle(60)
        time.sleep(STATS_DELAY_S)  # busy backends report their statistics at most this late
        work = [b - a for a, b in zip(work0, self.db.work(), strict=True)]
        scans = {t: n - scans0.get(t, 0) for t, n in self.db.scans().items()}
        stop_sampling(profilers)
        per_alert = latency_ms(watch)
        last = (max(watch.first.values()) - t0) / 1000 if watch.first else float("nan")
        counts = self.db.rows(
            "SELECT elder_id, count(*) FROM alerts WHERE kind = 'sos' AND device_id = ANY(%s) AND opened_at >= %s "
            "GROUP BY elder_id",
            (devices, ts(t0 - 1000)),
        )
        result = FloodResult(
            baseline,
            last,
            per_alert,
            sum(c for _, c in counts),
            sum(1 for _, c in counts if c > 1),
            len(pressed) - len(watch.first),
        )
        self._report(result, pressed, watch, before, after, idle, work, scans)
        return result

    def _profilers(self, k: int) -> list[subprocess.Popen[bytes]]:
        if not self.args.profile_dir:
            return []
        out = Path(self.args.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        procs = [
            sample_with_py_spy(self.args.py_spy, pid, out / f"flood-run{k + 1}-{name}.txt")
            for name, pid in (("worker", self.pids.worker), ("gateway", self.pids.gateway))
            if pid
        ]
        time.sleep(1.0)  # py-spy attaches
        return procs

    def _report(
        self,
        r: FloodResult,
        pressed: dict[str, int],
        watch: PageWatch,
        before: CpuSnapshot,
        after: CpuSnapshot,
        idle: float | None,
        work: list[int],
        scans: dict[str, int],
    ) -> None:
        v = r.per_alert_ms
        total = self.db.scalar("SELECT count(*) FROM alerts")
        rate = len(watch.first) / r.last_first_page_s if r.last_first_page_s > 0 else float("nan")
        lines = [
            f"  first page of every alert: last at {r.last_first_page_s:.2f} s after the first press; per alert "
            f"p50 {percentile(v, 50) / 1000:.2f} s, p90 {percentile(v, 90) / 1000:.2f} s, "
            f"max {max(v, default=0) / 1000:.2f} s; {rate:.1f} alerts paged per second",
            f"  within 3 s of the press: {sum(1 for x in v if x <= 3000):,} of {len(pressed):,}",
            f"  alerts in the database for these presses: {r.alerts:,} (table alerts: {total:,} rows); doubled "
            f"(an elder with more than one alert for the one press): {r.doubled}; never paged: {r.never_paged}",
            *stage_lines(self.db, pressed, watch, self.phone_of),
            *page_lines(self.db, self.fake, pressed, self.phone_of),
            "  " + cpu_line(before, after),
            f"  PostgreSQL from the first press until {STATS_DELAY_S:.0f} s after the outbox was empty (calls and "
            f"their webhooks included): {work[0]:,} commits, {work[1]:,} rows "
            f"inserted, {work[2]:,} updated, {work[3]:,} returned ({work[0] / max(1, len(pressed)):.1f} commits "
            "per alert; pg_stat_database, this database)",
            "  rows read by sequential scans meanwhile: "
            + ", ".join(f"{t} {n:,}" for t, n in sorted(scans.items(), key=lambda x: -x[1])[:4] if n),
            f"  every page of the flood sent (outbox empty): "
            f"{'after ' + format(after.at - before.at + idle, '.1f') + ' s' if idle is not None else 'not in time'}",
            f"  baseline (same run, idle gateway, one SOS): {r.baseline_ms or float('nan'):.0f} ms",
        ]
        print("\n".join(lines), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--spread-s", type=float, default=1.0, help="the presses are published over this long")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="for the last first page")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary (with --profile-dir)")
    parser.add_argument("--profile-dir", default="", help="sample gateway and alert worker with py-spy into here")
    args = parser.parse_args()
    registry = build_registry(LoadPlan.for_devices(DEVICES))
    pagers, elder_of = owners(registry)
    if args.runs * (args.presses + 1) > len(pagers):
        raise SystemExit(f"{len(pagers)} pagers in the registry: --runs x (--presses + 1) must not exceed it")
    phone_of = {p: family_phone(elder_of[p]) for p in pagers}
    print(machine_line())
    fake = FakeTwilio(SID, TOKEN)
    results: list[FloodResult] = []
    with private_services("eldercare-flood-", fsync=True) as (broker, database), running_in_thread(fake):
        root = broker.workdir.parent
        took = import_into_database(database.dsn, registry)
        print(
            f"registry: {len(registry.doc['elders']):,} elders, {DEVICES:,} devices, imported into the database "
            f"in {took:.1f} s (not measured)"
        )
        http_port = free_port()
        gateway = start_gateway(write_config(root, broker.port, database.dsn, fake, http_port), root / "gateway.log")
        try:
            print(f"gateway ready in {wait_ready(http_port, gateway):.1f} s", flush=True)
            time.sleep(1.0)  # its subscription is made
            db = Database(database.dsn)
            pids = Pids(
                gateway.pid,
                worker_pid(gateway.pid),
                postmaster_pid(database),
                broker_pid(broker),
                frozenset({db.conn.info.backend_pid}),
            )
            flood = Flood(args, fake, broker.port, db, pids, pagers, phone_of)
            for k in range(args.runs):
                results.append(flood.run(k))
                db.resolve_everything()
                db.wait_outbox_idle(60)
        finally:
            stop_gateway(gateway)
            if gateway.returncode not in (0, None):
                print((root / "gateway.log").read_text()[-3000:], file=sys.stderr)
    last = statistics.median(r.last_first_page_s for r in results)
    print(f"flood_last_first_page_s={last:.2f} alerts={results[-1].alerts} doubled={results[-1].doubled}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
