"""Power cut: 20,000 devices come back at once, each with an hour of buffered readings, SOS presses among them.

Private Mosquitto (``max_queued_messages 1000000``, as docs/deployment.md configures it; no
persistence, whose 5 s autosave in the private broker would be unlike the deployed one) and
PostgreSQL (fsync on), the local fake Twilio (a thread of this process), the gateway as its own
process with the 12,000-elder registry of bench/soak.py in the database (imported before
anything is timed).

The order, as after a real cut: the gateway was down (SIGTERM; nothing published meanwhile),
power returns and the gateway starts (its start to /readyz is shown), *then* the devices
reconnect: every device at a random moment within ``--connect-s`` (10 s), one MQTT connection,
client id and will per device, as in the field; each flushes at once what it buffered over the
past hour (QoS 1, at most ``--window`` unacknowledged per device): one reading per reporting
interval of its registry entry (wristbands every 30 or 60 s: 120 or 60 readings; pagers one
status an hour; glucose meters and cuffs, every 6 and 12 h, 0 or 1), timestamps spread over
the hour before the reconnect, values in everyday ranges and positions within 20 m of home
(nothing in them should alert anyone). The devices are driven by the fleet code's links
(``simulators.devices.link``: one asyncio connection per device, frames written in bulk) in
``--processes`` (2) worker processes of their own (``python bench/powercut.py fleet SPEC``),
so that they do not hold this process's GIL from the fake Twilio and each stays within its
open-files limit. This process raises RLIMIT_NOFILE for them and for the broker as far as it
may: where the hard limit is below one descriptor per device plus the broker's own (on the
machine this was written on: 20,000, and no CAP_SYS_RESOURCE to raise it), the devices beyond
it (cuffs first, then glucose meters, never a pressing pager) share connections of 100, as the
fleet code's shared accounts do; the first lines say how many.

``--sos`` pagers (20) press SOS during the drain, live, on their own connections and with the
current ``ts``: each at a random point of it (when a random 2-90 % of the buffered readings are
stored). Measured:

- **drain**: from the first buffered publish until every reading is stored: rows counted in
  ``telemetry_wristband``, ``telemetry_glucose``, ``telemetry_bp`` and ``device_status`` (the
  gateway's /metrics ``eldercare_rows_stored`` is watched every 0.5 s, then confirmed by SQL);
- **rows_ok**: each table holds exactly the readings published (the tables' primary key
  ``(device_id, time)`` turns a re-delivered reading into a no-op, so duplicates cannot be rows;
  the messages the gateway received beyond those published are shown as re-deliveries);
  dead letters and rate-limited messages are shown too;
- **SOS latency during the drain**: publish -> first request at the fake for that elder's
  family phone (p50/p99/max), and where it waited: publish -> read by the gateway
  (``device_events.received_at``) -> detection stored (``detections.detected_at``) -> page;
- **baseline**, the same run, before the cut: ``--baseline-presses`` SOS on the idle gateway.

Last line: ``powercut_sos_p99_ms=<ms> drain_s=<s> rows_ok=<true|false>``

Run: ``nice -n 5 .venv/bin/python bench/powercut.py [--devices 20000] [--sos 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _soak_support import (  # noqa: E402
    LoadPlan,
    Registry,
    build_registry,
    cpu_seconds,
    family_phone,
    metric,
    scrape,
    wait_ready,
)
from flood import (  # noqa: E402
    SID,
    TOKEN,
    PageWatch,
    Pids,
    broker_pid,
    cpu_line,
    import_into_database,
    latency_ms,
    machine_line,
    percentile,
    postmaster_pid,
    publish_presses,
    sos_payload,
    start_gateway,
    stop_gateway,
    wall_ms,
    worker_pid,
    write_config,
)

from devices.contracts import topic_for  # noqa: E402
from gateway.ingest.mqtt_wire import Will  # noqa: E402
from simulators.devices.link import LinkTable, PublisherLink, open_link, topic_header  # noqa: E402
from simulators.devices.wire import (  # noqa: E402
    WILL_PAYLOAD,
    BloodPressureReadingOut,
    DeviceStatusOut,
    GlucoseReadingOut,
    WristbandTelemetryOut,
    encode,
)
from simulators.providers.twilio.server import FakeTwilio, running_in_thread  # noqa: E402
from simulators.services.local import private_services  # noqa: E402
from simulators.services.process import free_port  # noqa: E402

HOUR_MS = 3_600_000
TABLE_OF = {
    "wristband": "telemetry_wristband",
    "pager": "device_status",
    "glucose": "telemetry_glucose",
    "bp": "telemetry_bp",
}
TABLES = tuple(sorted(set(TABLE_OF.values())))
M_PER_DEG = 111_320.0
READING, SOS = 0, 1  # the fleet's two kinds of publish, for the acknowledgement counts
RECONNECT_TRIES = 5
BROKER_RESERVE = 200  # descriptors the broker needs besides the devices (gateway, listeners, files)
PER_SHARED_LINK = 100  # devices on one shared connection, where there must be some


# -- the fleet worker (its own process) ----------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def wristband_readings(times: list[int], lat: float, lon: float, rng: np.random.Generator) -> list[bytes]:
    """A worn band at home: position within 20 m, resting vitals, steps rising slowly."""
    n = len(times)
    north = rng.uniform(-20, 20, n)
    east = rng.uniform(-20, 20, n)
    hr = np.round(rng.uniform(64, 84, n), 0)
    spo2 = np.round(rng.uniform(96, 98.5, n), 1)
    steps = (rng.integers(500, 3000) + np.cumsum(rng.integers(0, 40, n))).tolist()
    battery = np.round(rng.uniform(60, 95) - 0.02 * np.arange(n), 1)  # draining slowly
    cos = math.cos(math.radians(lat))
    return [
        encode(
            WristbandTelemetryOut(
                ts=t,
                lat=round(lat + dn / M_PER_DEG, 6),
                lon=round(lon + de / (M_PER_DEG * cos), 6),
                gps_acc_m=8.0,
                hr=h,
                spo2=s,
                steps=st,
                battery=b,
                worn=True,
            )
        )
        for t, dn, de, h, s, st, b in zip(
            times, north.tolist(), east.tolist(), hr.tolist(), spo2.tolist(), steps, battery.tolist(), strict=True
        )
    ]


def readings_of(kind: str, times: list[int], lat: float, lon: float, rng: np.random.Generator) -> list[bytes]:
    if kind == "wristband":
        return wristband_readings(times, lat, lon, rng)
    if kind == "pager":
        return [
            encode(DeviceStatusOut(ts=t, battery=round(float(rng.uniform(50, 100)), 1), rssi_dbm=-70.0, online=True))
            for t in times
        ]
    if kind == "glucose":
        return [
            encode(GlucoseReadingOut(ts=t, glucose=round(float(rng.uniform(5.2, 7.5)), 1), context="random"))
            for t in times
        ]
    return [
        encode(
            BloodPressureReadingOut(
                ts=t,
                systolic=float(rng.integers(118, 138)),
                diastolic=float(rng.integers(72, 86)),
                pulse=float(rng.integers(60, 80)),
            )
        )
        for t in times
    ]


def buffered_times(interval_s: int, end_ms: int, rng: np.random.Generator) -> list[int]:
    """One reading per interval over the hour before ``end_ms``, from a random phase."""
    step = interval_s * 1000
    first = end_ms - HOUR_MS + int(rng.integers(0, step))
    return list(range(first, end_ms, step))


@dataclass
class FleetState:
    """The devices of one worker process, their connections and how far each has flushed.

    Device ``k`` publishes on link ``link_of[k]``: its own, or (where the broker's descriptors
    run out) one it shares with other devices, as the fleet code's shared accounts do.
    """

    ids: list[str]
    types: list[str]
    topics: list[bytes]  # the header of each device's reading topic
    event_topics: list[bytes]
    payloads: list[list[bytes]]
    link_of: np.ndarray[Any, np.dtype[np.int64]]
    link_names: list[str]  # client id of each link: the device's id, or the shared link's name
    link_wills: list[Will | None]
    link_windows: list[int]
    table: LinkTable
    links: list[PublisherLink | None]
    pos: np.ndarray[Any, np.dtype[np.int64]]
    count: np.ndarray[Any, np.dtype[np.int64]]
    first_ms: int = 0
    lost: int = 0  # readings of devices whose connection could not be made
    pending_sos: list[int] = field(default_factory=list)

    @property
    def readings(self) -> int:
        return int(self.count.sum())


def prepare(spec: dict[str, Any]) -> FleetState:
    rng = np.random.default_rng(spec["seed"])
    ids, types, topics, events, payloads, link_of = [], [], [], [], [], []
    names: list[str] = []
    wills: list[Will | None] = []
    windows: list[int] = []
    shared: dict[str, int] = {}
    for device, kind, interval_s, lat, lon, group in spec["devices"]:
        times = buffered_times(int(interval_s), int(spec["end_ms"]), rng)
        ids.append(device)
        types.append(kind)
        channel = "status" if kind == "pager" else "telemetry"
        topics.append(topic_header(topic_for(kind, device, channel)))
        events.append(topic_header(topic_for(kind, device, "event")))
        payloads.append(readings_of(kind, times, lat, lon, rng))
        if group is None or group not in shared:
            if group is not None:
                shared[group] = len(names)
            names.append(group or device)
            wills.append(None if group else Will(topic_for(kind, device, "status"), WILL_PAYLOAD, qos=1, retain=False))
            windows.append(int(spec["shared_window"] if group else spec["window"]))
        link_of.append(shared[group] if group is not None else len(names) - 1)
    return FleetState(
        ids,
        types,
        topics,
        events,
        payloads,
        np.array(link_of, np.int64),
        names,
        wills,
        windows,
        LinkTable(len(names), 2),
        [None] * len(names),
        np.zeros(len(ids), np.int64),
        np.array([len(p) for p in payloads], np.int64),
    )


async def reconnect(fleet: FleetState, j: int, port: int, delay_s: float, gate: asyncio.Semaphore) -> None:
    """Link ``j`` comes back after ``delay_s``; a refused or failed connect is tried again, as firmware does."""
    await asyncio.sleep(delay_s)
    for attempt in range(RECONNECT_TRIES):
        async with gate:
            try:
                fleet.links[j] = await open_link(
                    fleet.table,
                    j,
                    "127.0.0.1",
                    port,
                    fleet.link_names[j],
                    will=fleet.link_wills[j],
                    keepalive_s=60,
                    window=fleet.link_windows[j],
                )
                return
            except (OSError, TimeoutError, ConnectionError) as error:
                if attempt == RECONNECT_TRIES - 1:
                    fleet.table.error(1, f"{fleet.link_names[j]}: {error or type(error).__name__}")
        await asyncio.sleep(1.0 + attempt)
    mine = np.flatnonzero(fleet.link_of == j)
    fleet.lost += int((fleet.count[mine] - fleet.pos[mine]).sum())


def flush_some(fleet: FleetState) -> None:
    """Every device with buffered readings left whose link is up and has room sends more."""
    t = fleet.table
    links = fleet.link_of
    ready = np.flatnonzero((fleet.pos < fleet.count) & t.up[links] & (t.inflight[links] < t.window[links]))
    for k in ready.tolist():
        j = int(links[k])
        link = fleet.links[j]
        free = int(t.window[j] - t.inflight[j])
        if link is None or free <= 0:
            continue
        start = int(fleet.pos[k])
        chunk = fleet.payloads[k][start : start + free]
        if not fleet.first_ms:
            fleet.first_ms = wall_ms()
            emit("started", first_ms=fleet.first_ms)
        link.publish([fleet.topics[k]] * len(chunk), chunk, [READING] * len(chunk))
        fleet.pos[k] = start + len(chunk)


def press_pending(fleet: FleetState) -> None:
    """SOS presses asked for on stdin, on the pager's connection once it is up."""
    waiting = []
    for k in fleet.pending_sos:
        j = int(fleet.link_of[k])
        link = fleet.links[j]
        now = wall_ms()
        if link is not None and fleet.table.up[j] and link.write_one(fleet.event_topics[k], sos_payload(now), SOS):
            fleet.table.inflight[j] += 1
            fleet.table.sent += 1
            emit("sos", device=fleet.ids[k], ms=now)
        else:
            waiting.append(k)
    fleet.pending_sos = waiting


def keep_alive(fleet: FleetState) -> None:
    now = time.monotonic()
    for link in fleet.links:
        if link is not None and now - link.last_write > 20:
            link.ping()


def watch_stdin(fleet: FleetState, stop: asyncio.Event) -> None:
    """Lines from the benchmark: ``sos DEVICE`` presses, ``stop`` ends the run."""
    index = {d: k for k, d in enumerate(fleet.ids)}
    buf = bytearray()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        data = os.read(0, 65536)
        if not data:
            loop.remove_reader(0)
            stop.set()
            return
        buf.extend(data)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            words = line.decode().split()
            if words[:1] == ["sos"] and len(words) == 2:
                fleet.pending_sos.append(index[words[1]])
            elif words == ["stop"]:
                stop.set()
        fleet.table.progress.set()

    loop.add_reader(0, readable)


async def drive(fleet: FleetState, spec: dict[str, Any]) -> None:
    sys.stdin.readline()  # "go"
    started = time.monotonic()
    stop = asyncio.Event()
    watch_stdin(fleet, stop)
    rnd = random.Random(spec["seed"])
    gate = asyncio.Semaphore(500)
    tasks = [
        asyncio.create_task(reconnect(fleet, j, spec["port"], rnd.uniform(0, spec["connect_s"]), gate))
        for j in range(len(fleet.links))
    ]
    connected = asyncio.gather(*tasks)
    connected.add_done_callback(
        lambda _: emit(
            "connected",
            seconds=time.monotonic() - started,
            up=int(fleet.table.up.sum()),
            links=len(fleet.links),
            devices_up=int(fleet.table.up[fleet.link_of].sum()),
            errors=fleet.table.errors,
            samples=fleet.table.error_samples[:3],
        )
    )
    flushed = False
    last_ping = time.monotonic()
    while not stop.is_set():
        flush_some(fleet)
        press_pending(fleet)
        now = time.monotonic()
        if now - last_ping > 5:
            keep_alive(fleet)
            last_ping = now
        done_readings = int(fleet.table.acked_by_kind[READING])
        if not flushed and connected.done() and done_readings + fleet.lost >= fleet.readings:
            flushed = True
            emit("flushed", ms=wall_ms(), acked=done_readings, lost=fleet.lost, errors=fleet.table.errors)
        fleet.table.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.table.progress.wait(), 0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for link in fleet.links:
        if link is not None:
            link.close()
    t = fleet.table
    emit(
        "done",
        sent=t.sent,
        readings_acked=int(t.acked_by_kind[READING]),
        sos_acked=int(t.acked_by_kind[SOS]),
        lost=fleet.lost,
        errors=t.errors,
        samples=t.error_samples[:5],
    )


def fleet_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    started = time.monotonic()
    fleet = prepare(spec)
    by_table: dict[str, int] = {}
    for kind, n in zip(fleet.types, fleet.count.tolist(), strict=True):
        by_table[TABLE_OF[kind]] = by_table.get(TABLE_OF[kind], 0) + n
    emit(
        "prepared",
        readings=fleet.readings,
        by_table=by_table,
        links=len(fleet.links),
        seconds=time.monotonic() - started,
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(drive(fleet, spec))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(drive(fleet, spec))


# -- the benchmark's side ------------------------------------------------------------------------


class FleetProcess:
    """One fleet worker, its JSON lines read on a thread into a queue."""

    def __init__(self, spec: Path, log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "fleet", str(spec)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: dict[str, dict[str, Any]] = {}
        self.presses: dict[str, int] = {}  # device -> press ms
        threading.Thread(target=self._read, daemon=True, name="fleet-out").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def pump(self) -> None:
        """Take in what the worker said so far."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.seen[event["event"]] = event
            if event["event"] == "sos":
                self.presses[event["device"]] = event["ms"]

    def wait_for(self, name: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while name not in self.seen:
            if self.proc.poll() is not None and self.events.empty():
                raise RuntimeError(f"a fleet worker exited ({self.proc.returncode}) before {name!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"a fleet worker said no {name!r} within {timeout_s} s")
            time.sleep(0.05)
            self.pump()
        return self.seen[name]

    def stop(self) -> dict[str, Any] | None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.send("stop")
        try:
            done = self.wait_for("done", 60)
        except (RuntimeError, TimeoutError):
            done = None
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return done


class Fleet:
    """The fleet workers together: SOS presses go to the worker that holds the pager."""

    def __init__(self, specs: list[tuple[Path, set[str]]], log: IO[bytes]) -> None:
        self.workers = [FleetProcess(path, log) for path, _ in specs]
        self.owner = {d: w for w, (_, devices) in zip(self.workers, specs, strict=True) for d in devices}

    @property
    def presses(self) -> dict[str, int]:
        return {d: t for w in self.workers for d, t in w.presses.items()}

    def pump(self) -> None:
        for w in self.workers:
            w.pump()

    def send(self, line: str) -> None:
        for w in self.workers:
            w.send(line)

    def press(self, pager: str) -> None:
        self.owner[pager].send(f"sos {pager}")

    def wait_for(self, name: str, timeout_s: float) -> list[dict[str, Any]]:
        return [w.wait_for(name, timeout_s) for w in self.workers]

    def seen(self, name: str) -> list[dict[str, Any]]:
        self.pump()
        return [w.seen[name] for w in self.workers if name in w.seen]

    def total(self, name: str, key: str) -> Any:
        return sum(e.get(key, 0) for e in self.seen(name))

    def stop(self) -> list[dict[str, Any]]:
        return [d for w in self.workers if w.proc.poll() is None and (d := w.stop()) is not None]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(w.proc.pid) for w in self.workers)


def raise_fd_limit(need: int) -> int:
    """Raise the open-files limit the fleet workers and the broker inherit (to the hard limit without
    CAP_SYS_RESOURCE); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def shared_devices(registry: Registry, limit: int, keep: set[str]) -> list[str]:
    """Devices that must share connections: the broker has ``limit`` descriptors, less a reserve.

    Cuffs first, then glucose meters (they have least to send), never the pagers in ``keep``.
    """
    budget = limit - BROKER_RESERVE
    devices = [(d["type"], d["id"]) for e in registry.doc["elders"] for d in e["devices"]]
    if len(devices) <= budget:
        return []
    order = [d for t in ("bp", "glucose", "wristband", "pager") for k, d in devices if k == t and d not in keep]
    n = len(devices) - budget
    while len(devices) - n + -(-n // PER_SHARED_LINK) > budget:
        n += 1
    return order[:n]


def fleet_specs(
    root: Path, registry: Registry, port: int, args: argparse.Namespace, end_ms: int, shared: list[str]
) -> list[tuple[Path, set[str]]]:
    """One spec file per fleet worker (devices dealt out in turn; a shared link's devices stay together)."""
    group = {d: f"shared-{i // PER_SHARED_LINK:03d}" for i, d in enumerate(shared)}
    parts: list[list[list[Any]]] = [[] for _ in range(args.processes)]
    k = 0
    for i, e in enumerate(registry.doc["elders"]):
        for d in e["devices"]:
            g = group.get(d["id"])
            w = int(g.rsplit("-", 1)[1]) % args.processes if g else k % args.processes
            k += 0 if g else 1
            parts[w].append([d["id"], d["type"], d["reporting_interval_s"], *registry.homes[i], g])
    common = {
        "port": port,
        "window": args.window,
        "shared_window": args.window * PER_SHARED_LINK,
        "connect_s": args.connect_s,
        "end_ms": end_ms,
    }
    out = []
    for w, devices in enumerate(parts):
        path = root / f"fleet-{w}.json"
        path.write_text(json.dumps({**common, "seed": args.seed * 100 + w, "devices": devices}))
        out.append((path, {d[0] for d in devices}))
    return out


class Counts:
    """Rows of the reading tables and dead letters, counted by the benchmark's own session."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def tables(self) -> dict[str, int]:
        out = {}
        for name in (*TABLES, "device_events", "dead_letters"):
            row = self.conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            out[name] = int(row[0]) if row else 0
        return out


@dataclass
class Drain:
    """Follows the drain: stored rows from /metrics, SOS presses at random points, SQL to confirm."""

    fleet: Fleet
    counts: Counts
    http_port: int
    base: dict[str, int]
    base_stored: float
    published: dict[str, int]
    presses: list[tuple[float, str]]  # (share of the readings stored, pager), in order
    progress: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, rows stored)
    end_wall_ms: int = 0

    @property
    def readings(self) -> int:
        return sum(self.published.values())

    def stored_now(self) -> float:
        return metric(scrape(self.http_port), "eldercare_rows_stored_total") - self.base_stored

    def confirmed(self) -> bool:
        now = self.counts.tables()
        return all(now[t] - self.base[t] >= n for t, n in self.published.items())

    def run(self, stall_s: float, timeout_s: float, say: Callable[[str], None]) -> bool:
        """Until every reading is stored (True) or nothing moved for ``stall_s`` (False)."""
        started = last_move = time.monotonic()
        last_value, last_said = -1.0, 0.0
        while time.monotonic() - started < timeout_s:
            self.fleet.pump()
            stored = self.stored_now()
            now = time.monotonic()
            self.progress.append((now, stored))
            if stored > last_value:
                last_value, last_move = stored, now
            while self.presses and stored >= self.presses[0][0] * self.readings:
                self.fleet.press(self.presses.pop(0)[1])
            if stored >= self.readings and not self.presses and self.confirmed():
                self.end_wall_ms = wall_ms()
                return True
            if now - last_move > stall_s:
                return False
            if now - last_said >= 10:
                say(f"  [{now - started:5.1f} s] rows stored {stored:>11,.0f} of {self.readings:,}")
                last_said = now
            time.sleep(0.5)
        return False


def baseline_latencies(fake: FakeTwilio, port: int, pagers: list[str], phone_of: dict[str, str]) -> list[float]:
    """SOS presses on the idle gateway, one after the other."""
    out = []
    for pager in pagers:
        pressed = asyncio.run(publish_presses(port, [pager], 0.0))
        watch = PageWatch(fake, {phone_of[pager]: pressed[pager]})
        watch.wait(30)
        out += latency_ms(watch)
        time.sleep(1.0)
    return out


def sos_stages(counts: Counts, presses: dict[str, int], watch: PageWatch, phone_of: dict[str, str]) -> str:
    """Where each SOS of the drain waited: publish -> the gateway read it (``device_events.received_at``)
    -> its detection stored (``detections.detected_at``) -> first page at the fake; medians and maxima."""
    received: dict[str, Any] = dict(
        counts.conn.execute(
            "SELECT device_id, min(received_at) FROM device_events WHERE event = 'sos' AND device_id = ANY(%s) "
            "GROUP BY device_id",
            (list(presses),),
        ).fetchall()
    )
    detected: dict[str, Any] = dict(
        counts.conn.execute(
            "SELECT device_id, min(detected_at) FROM detections WHERE kind = 'sos' AND device_id = ANY(%s) "
            "GROUP BY device_id",
            (list(presses),),
        ).fetchall()
    )
    read, store, page = [], [], []
    for d, t in presses.items():
        if d in received and d in detected and phone_of[d] in watch.first:
            r, s = ms_of(received[d]), ms_of(detected[d])
            read.append(float(r - t))
            store.append(float(s - r))
            page.append(float(watch.first[phone_of[d]] - s))

    def show(v: list[float]) -> str:
        return f"p50 {percentile(v, 50):,.0f} ms, max {max(v, default=float('nan')):,.0f} ms"

    return (
        f"  where the SOS waited: publish -> read by the gateway {show(read)}; -> detection stored {show(store)}; "
        f"-> first page {show(page)}"
    )


def ms_of(value: Any) -> int:
    return int(value.timestamp() * 1000)


def other_pages(fake: FakeTwilio, since_ms: int, phones: set[str]) -> int:
    """Requests at the fake since ``since_ms`` to anyone but the SOS elders' families and the grid workers."""
    records: list[Any] = [*fake.messages, *fake.calls]
    return len(
        [r for r in records if r.received_at_ms >= since_ms and r.to not in phones and not r.to.startswith("+86139")]
    )


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "fleet":
        fleet_worker(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--sos", type=int, default=20, help="pagers pressing SOS during the drain")
    parser.add_argument("--baseline-presses", type=int, default=5)
    parser.add_argument("--connect-s", type=float, default=10.0, help="the devices reconnect within this long")
    parser.add_argument("--window", type=int, default=20, help="unacknowledged readings per device")
    parser.add_argument("--processes", type=int, default=2, help="fleet worker processes")
    parser.add_argument("--stall-s", type=float, default=60.0, help="give up when no row is stored this long")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    limit = raise_fd_limit(args.devices + 4096)
    registry = build_registry(LoadPlan.for_devices(args.devices))
    pagers = [d["id"] for e in registry.doc["elders"] for d in e["devices"] if d["type"] == "pager"]
    phone_of = {p: family_phone(registry.elder_of[p]) for p in pagers}
    rnd = random.Random(args.seed)
    chosen = rnd.sample(pagers, args.baseline_presses + args.sos)
    baseline_pagers, sos_pagers = chosen[: args.baseline_presses], chosen[args.baseline_presses :]
    shares = sorted(rnd.uniform(0.02, 0.9) for _ in sos_pagers)
    shared = shared_devices(registry, limit, set(sos_pagers))
    print(machine_line())
    print(
        f"open files limit: {limit:,} per process (the broker holds one per connection): "
        f"{args.devices - len(shared):,} devices on connections of their own, {len(shared):,} (cuffs, meters) "
        f"sharing {-(-len(shared) // PER_SHARED_LINK)} connections; {args.processes} fleet worker processes"
    )
    fake = FakeTwilio(SID, TOKEN)
    with (
        private_services(
            "eldercare-powercut-", fsync=True, max_queued_messages=1_000_000, broker_persistence=False
        ) as (broker, database),
        running_in_thread(fake),
    ):
        root = broker.workdir.parent
        took = import_into_database(database.dsn, registry)
        print(
            f"registry: {len(registry.doc['elders']):,} elders, {args.devices:,} devices, imported in {took:.1f} s "
            "(not measured)",
            flush=True,
        )
        http_port = free_port()
        config = write_config(root, broker.port, database.dsn, fake, http_port)
        gateway = start_gateway(config, root / "gateway.log")
        fleet: Fleet | None = None
        try:
            wait_ready(http_port, gateway)
            time.sleep(1.0)
            base_ms = baseline_latencies(fake, broker.port, baseline_pagers, phone_of)
            print(
                f"baseline, idle gateway before the cut: {len(base_ms)} SOS, first page p50 "
                f"{percentile(base_ms, 50):.0f} ms, max {max(base_ms, default=float('nan')):.0f} ms",
                flush=True,
            )
            stop_gateway(gateway)  # the cut
            end_ms = wall_ms()
            with (root / "fleet.log").open("ab") as fleet_log:
                fleet = Fleet(fleet_specs(root, registry, broker.port, args, end_ms, shared), fleet_log)
                prepared = fleet.wait_for("prepared", 600)
                by_table: dict[str, int] = {}
                for p in prepared:
                    for t, n in p["by_table"].items():
                        by_table[t] = by_table.get(t, 0) + n
                print(
                    f"power cut: gateway stopped; {args.devices:,} devices buffered {sum(by_table.values()):,} "
                    f"readings over the hour ({', '.join(f'{t} {n:,}' for t, n in sorted(by_table.items()))}; built in "
                    f"{max(p['seconds'] for p in prepared):.1f} s)",
                    flush=True,
                )
                gateway = start_gateway(config, root / "gateway.log")
                ready_s = wait_ready(http_port, gateway)
                print(f"power back: the gateway is ready {ready_s:.1f} s after its start", flush=True)
                time.sleep(1.0)  # its subscription is made
                counts = Counts(database.dsn)
                pids = Pids(
                    gateway.pid,
                    worker_pid(gateway.pid),
                    postmaster_pid(database),
                    broker_pid(broker),
                    frozenset({counts.conn.info.backend_pid}),
                )
                metrics0 = scrape(http_port)
                drain = Drain(
                    fleet,
                    counts,
                    http_port,
                    counts.tables(),
                    metric(metrics0, "eldercare_rows_stored_total"),
                    by_table,
                    list(zip(shares, sos_pagers, strict=True)),
                )
                cpu0, fleet_cpu0 = pids.snapshot(), fleet.cpu_seconds()
                fleet.send("go")
                go_ms = wall_ms()
                complete = drain.run(args.stall_s, args.timeout_s, lambda s: print(s, flush=True))
                cpu1, fleet_cpu1 = pids.snapshot(), fleet.cpu_seconds()
                fleet_pct = 100 * (fleet_cpu1 - fleet_cpu0) / (cpu1.at - cpu0.at)
                cpu = f"{cpu_line(cpu0, cpu1)}; fleet workers {fleet_pct:.0f}%"
                report(args, fake, fleet, drain, complete, go_ms, base_ms, phone_of, cpu, metrics0)
        except Exception:
            for log in ("fleet.log", "gateway.log"):
                with contextlib.suppress(OSError):
                    print(f"--- {log}:\n" + (root / log).read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if fleet is not None:
                fleet.stop()
            stop_gateway(gateway)
    return 0


def report(
    args: argparse.Namespace,
    fake: FakeTwilio,
    fleet: Fleet,
    drain: Drain,
    complete: bool,
    go_ms: int,
    base_ms: list[float],
    phone_of: dict[str, str],
    cpu: str,
    metrics0: dict[str, float],
) -> None:
    presses = fleet.presses
    watch = PageWatch(fake, {phone_of[d]: t for d, t in presses.items()})
    watch.wait(120)
    sos_ms = latency_ms(watch)
    metrics1 = scrape(drain.http_port)
    connected = fleet.seen("connected")
    flushed = fleet.seen("flushed")
    done = fleet.stop()
    now = drain.counts.tables()
    stored = {t: now[t] - drain.base[t] for t in drain.published}
    rows_ok = complete and stored == drain.published
    first_ms = min((e["first_ms"] for e in fleet.seen("started")), default=go_ms)
    drain_s = (drain.end_wall_ms - first_ms) / 1000 if complete else float("nan")
    received = metric(metrics1, "eldercare_ingest_messages_total") - metric(metrics0, "eldercare_ingest_messages_total")
    acked = sum(d["readings_acked"] for d in done)
    published = acked + len(presses)
    errors = [s for e in [*connected, *done] for s in e.get("samples", [])]

    def diff(name: str) -> float:
        return metric(metrics1, name) - metric(metrics0, name)

    flushed_s = (max(e["ms"] for e in flushed) - first_ms) / 1000 if len(flushed) == len(fleet.workers) else None
    lines = [
        f"reconnect: {sum(e['devices_up'] for e in connected):,} of {args.devices:,} devices up on "
        f"{sum(e['up'] for e in connected):,} connections, the last "
        f"{max((e['seconds'] for e in connected), default=float('nan')):.1f} s after power came back (spread over "
        f"{args.connect_s:g} s); connection errors {sum(e['errors'] for e in connected)} {errors[:3]}",
        "devices' side: every buffered reading acknowledged by the broker "
        + (f"{flushed_s:.1f} s after the first publish" if flushed_s is not None else "NOT (see errors)")
        + f"; readings lost on the devices' side {sum(d['lost'] for d in done):,}",
        f"drain: {'every reading stored' if complete else 'NOT complete'} {drain_s:.1f} s after the first buffered "
        f"publish ({drain.readings / drain_s if complete else 0:,.0f} readings/s)",
        "rows stored / buffered: "
        + ", ".join(f"{t} {stored[t]:,}/{n:,}" for t, n in sorted(drain.published.items()))
        + f"; missing {sum(max(0, n - stored[t]) for t, n in drain.published.items()):,}, beyond those buffered "
        f"{sum(max(0, stored[t] - n) for t, n in drain.published.items()):,}",
        f"messages the gateway received: {received:,.0f} for {published:,} acknowledged by the broker (re-deliveries "
        f"{max(0.0, received - published):,.0f}, absorbed by the primary key); dead letters "
        f"{now['dead_letters'] - drain.base['dead_letters']:,}; rate-limited "
        f"{diff('eldercare_rate_limited_messages_total'):,.0f}; SOS rows in device_events "
        f"{now['device_events'] - drain.base['device_events']}",
        f"SOS during the drain: {len(presses)} pressed, {len(sos_ms)} paged; publish -> first page p50 "
        f"{percentile(sos_ms, 50):,.0f} ms, p99 {percentile(sos_ms, 99):,.0f} ms, max "
        f"{max(sos_ms, default=float('nan')):,.0f} ms",
        "  pressed at (s after the first publish) -> paged after (s): "
        + ", ".join(
            f"{(t - first_ms) / 1000:.0f}->{(watch.first[phone_of[d]] - t) / 1000:.1f}"
            if phone_of[d] in watch.first
            else f"{(t - first_ms) / 1000:.0f}->never"
            for d, t in sorted(presses.items(), key=lambda x: x[1])
        ),
        sos_stages(drain.counts, presses, watch, phone_of),
        f"baseline, idle gateway before the cut: p50 {percentile(base_ms, 50):.0f} ms, max "
        f"{max(base_ms, default=float('nan')):.0f} ms ({len(base_ms)} SOS)",
        f"pages at the fake to anyone else since the reconnect (nothing in the readings should alert): "
        f"{other_pages(fake, go_ms, set(watch.wanted))}",
        cpu,
    ]
    print("\n".join(lines))
    print(f"powercut_sos_p99_ms={percentile(sos_ms, 99):.0f} drain_s={drain_s:.1f} rows_ok={str(rows_ok).lower()}")


if __name__ == "__main__":
    raise SystemExit(main())
