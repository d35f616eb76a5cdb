"""Soak: 20,000 simulated devices at realistic rates for 10 minutes against the gateway.

Private Mosquitto and PostgreSQL (fsync on), the local fake Twilio, and the gateway as its
own process (``eldercare run``) with the shipped escalation policy and a generated registry
(12,000 elders, each with a wristband and a family contact; pagers, glucose meters and cuffs
on random subsets; a grid worker per 200 elders, a post station per 1,000, one hotline).

Load (``_soak_support.LoadPlan``): the fleet code (one process, one connection, login and
will per device) sends 9,000 wristbands every 60 s, 2,700 every 30 s, 4,000 pagers' hourly
status, 2,500 glucose meters' 4 readings a day and 1,500 cuffs' 2 a day. This process adds
300 wristbands every 30 s that belong to elders with a 150 m home fence, and raw
acceleration windows (a heavy sit-down, 7 s at 50 Hz) at one per band per day.

Probes, also from this process: an SOS from an unused pager every ``--sos-every-s``
(alert latency: publish -> first request for that elder's family at the fake Twilio, which
answers and presses 1 so the alert is taken), and every ``--probe-every-s`` alternately a
low glucose reading or a fenced elder walking 420 m from home (detection latency: publish of
the reading that completes the detection -> its ``detections`` row visible to a reader
polling every 10 ms; the row's ``detected_at``, its transaction's start, is shown too).

Baseline in the same run, before the fleet starts: the gateway idle for ``--idle-s`` (registry
loaded, nothing arriving), then the SOS and low-glucose probes alone for ``--baseline-s``: their
latencies without the load, and the CPU they cost (the soak's CPU per 1,000 devices is also
given without it, "net"). Every 10 s: the gateway's RSS and CPU (its alert worker process
included), Mosquitto's, PostgreSQL's (postmaster and backends, not ours) and the fleet's CPU,
the gateway's /metrics, the size of
the time-series tables (all partitions, indexes, TOAST). Progress every 30 s; figures at the
end; last line ``soak_devices=... minutes=... ingest_msg_s=... alert_p99_ms=...
detection_p99_ms=... rss_growth_mb_per_h=... cpu_pct_per_1000_devices=...
cpu_pct_per_1000_devices_net=... db_mb_per_1000_device_days=...``, then the machine, then
issue 19's line: ``rss_mb=<gateway + worker, highest once warm> rss_slope_mb_per_h=<x>
cpu_pct_per_1k_devices=<y> sos_p99_ms=<z>``.

Run: ``nice -n -20 .venv/bin/python bench/soak.py [--devices 20000] [--minutes 10] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _soak_support import (  # noqa: E402
    LoadPlan,
    Registry,
    build_registry,
    cpu_seconds,
    family_phone,
    family_rss_mb,
    fleet_spec,
    machine_busy_seconds,
    metric,
    probe_band_ids,
    rss_mb,
    scrape,
    tree_cpu_seconds,
    wait_ready,
    write_gateway_config,
)

from devices.contracts import GlucoseReading, PagerEvent, WristbandTelemetry  # noqa: E402
from simulators.community import offset  # noqa: E402
from simulators.devices import accel  # noqa: E402
from simulators.devices.wire import encode, make  # noqa: E402
from simulators.providers.twilio.server import FakeTwilio, running_in_thread  # noqa: E402
from simulators.services.local import private_services  # noqa: E402
from simulators.services.process import free_port  # noqa: E402

SID, TOKEN = "AC" + "5" * 32, "soak-token"
SUPPORT = Path(__file__).with_name("_soak_support.py")
SOS_TEXT = ("紧急呼叫", "SOS")
TIME_SERIES = (
    "telemetry_wristband",
    "telemetry_glucose",
    "telemetry_bp",
    "wristband_accel",
    "device_events",
    "device_status",
)
SAMPLE_S = 10.0
POLL_S = 0.01


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def spread(values: list[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"n={len(values):<4d} p50 {percentile(values, 0.5):6.1f}  p95 {percentile(values, 0.95):6.1f}  "
        f"p99 {percentile(values, 0.99):6.1f}  max {max(values):6.1f} ms"
    )


# -- probes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    kind: str  # the detection kind it should cause: sos, hypoglycaemia, geofence_exit
    device: str
    ts_ms: int  # the message's ts: with the device, the key of the detection
    sent_ms: float  # wall clock just before the publish
    phone: str  # the elder's family
    phase: str  # warm-up, baseline (no fleet) or soak


@dataclass(slots=True)
class ProbeBand:
    device: str
    home: tuple[float, float]
    phone: str
    next_due: float = 0.0
    out_left: int = 0  # readings still to send from outside the fence
    used: bool = False


class Injector:
    """SOS presses, low glucose readings, fence exits, impact windows and the fenced bands' readings."""

    def __init__(self, port: int, plan: LoadPlan, registry: Registry, fake: FakeTwilio, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fake = fake
        self.registry = registry
        self.plan = plan
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-injector", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.pagers = plan.group("s1h-").ids()
        self.meters = plan.group("s6h-").ids()
        self.bands = plan.group("s60-").ids() + plan.group("s30-").ids()
        for pool in (self.pagers, self.meters):
            self.rng.shuffle(pool)
        self.probe_bands = [
            ProbeBand(d, registry.homes[registry.elder_of[d]], family_phone(registry.elder_of[d]))
            for d in probe_band_ids(plan.probe_bands)
        ]
        np_rng = np.random.default_rng(seed)
        self.windows = [accel.accel_window(accel.sitting_down(np_rng)) for _ in range(16)]
        self.lock = threading.Lock()
        self.probes: list[Probe] = []
        self.outside: dict[tuple[str, int], float] = {}  # (band, ts) of readings outside the fence -> sent
        self.sent: Counter[str] = Counter()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _publish(self, kind: str, topic: str, payload: bytes) -> float:
        sent = time.time() * 1000
        self.client.publish(topic, payload, qos=1)
        self.sent[kind] += 1
        return sent

    def _probe(self, kind: str, device: str, ts: int, sent: float, phase: str) -> Probe:
        probe = Probe(kind, device, ts, sent, family_phone(self.registry.elder_of[device]), phase)
        with self.lock:
            self.probes.append(probe)
        return probe

    def sos(self, phase: str) -> Probe:
        device = self.pagers.pop()
        self.fake.answer_as(family_phone(self.registry.elder_of[device]), "answered", press="1")
        ts = time.time_ns() // 1_000_000
        sent = self._publish("sos", f"eldercare/v1/pager/{device}/event", encode(make(PagerEvent, ts=ts, event="sos")))
        return self._probe("sos", device, ts, sent, phase)

    def low_glucose(self, phase: str) -> Probe:
        device = self.meters.pop()
        self.fake.answer_as(family_phone(self.registry.elder_of[device]), "answered", press="1")
        ts = time.time_ns() // 1_000_000
        reading = make(
            GlucoseReading, ts=ts, glucose=round(self.rng.uniform(2.6, 3.8), 1), unit="mmol/L", context="random"
        )
        sent = self._publish("glucose", f"eldercare/v1/glucose/{device}/telemetry", encode(reading))
        return self._probe("hypoglycaemia", device, ts, sent, phase)

    def start_exit(self) -> None:
        free = [b for b in self.probe_bands if not b.used]
        if free:
            band = self.rng.choice(free)
            band.used, band.out_left = True, 4  # fires on the third (two fixes outside, 60 s apart)
            self.fake.answer_as(band.phone, "answered", press="1")
            self.sent["exit"] += 1

    def impact(self) -> None:
        window = self.rng.choice(self.windows)
        ts = time.time_ns() // 1_000_000 - len(window.samples) * accel.DT_MS
        self._publish(
            "impact",
            f"eldercare/v1/wristband/{self.rng.choice(self.bands)}/telemetry",
            encode(make(WristbandTelemetry, ts=ts, accel=window)),
        )

    def band_readings(self, now: float) -> None:
        rng = self.rng
        for band in self.probe_bands:
            while band.next_due <= now:
                ts = int(band.next_due * 1000)
                outside = band.out_left > 0
                east, north = (300.0, 300.0) if outside else (0.0, 0.0)
                lat, lon = offset(*band.home, east + rng.gauss(0, 6), north + rng.gauss(0, 6))
                reading = make(
                    WristbandTelemetry,
                    ts=ts,
                    lat=round(lat, 6),
                    lon=round(lon, 6),
                    gps_acc_m=round(rng.uniform(5, 15), 1),
                    hr=float(rng.randint(62, 84)),
                    spo2=float(rng.randint(95, 99)),
                    steps=int(now) % 86_400 // 20,
                    battery=80.0,
                    worn=True,
                )
                sent = self._publish("fenced band", f"eldercare/v1/wristband/{band.device}/telemetry", encode(reading))
                if outside:
                    band.out_left -= 1
                    with self.lock:
                        self.outside[(band.device, ts)] = sent
                band.next_due += 30.0

    def run(
        self, stop: threading.Event, start: float, end: float, sos_every: float, probe_every: float, phase: str
    ) -> None:
        """Until ``end``: SOS presses and, in turn, low glucose readings and fence exits. In the soak
        also the fenced bands' readings and impact windows; in the baseline no exits (no fenced bands)."""
        rng = self.rng
        load = phase == "soak"
        for band in self.probe_bands:
            band.next_due = start + rng.uniform(0, 30) if load else float("inf")
        next_sos, next_probe = start + rng.uniform(0, sos_every), start + rng.uniform(0, probe_every)
        rate = self.plan.impact_rate
        next_impact = start + rng.expovariate(rate) if rate > 0 and load else float("inf")
        turn = 0
        while not stop.is_set() and (now := time.time()) < end:
            self.band_readings(now)
            if now >= next_sos:
                if self.pagers:
                    self.sos(phase)
                next_sos += sos_every
            if now >= next_probe:
                if (turn % 2 == 0 or not load) and self.meters:
                    self.low_glucose(phase)
                elif turn % 2 == 1 and now < end - 100:  # first fix outside within 30 s, fires 60 s later
                    self.start_exit()
                turn += 1
                next_probe += probe_every
            if now >= next_impact:
                self.impact()
                next_impact += rng.expovariate(rate)
            time.sleep(0.02)


@dataclass(frozen=True, slots=True)
class DetectionRow:
    device: str
    kind: str
    ts_ms: int
    detected_ms: float  # detected_at: start of the transaction that stored it
    seen_ms: float  # when the poller first saw it committed
    cleared: bool


class DetectionPoller(threading.Thread):
    """Reads new ``detections`` rows every 10 ms and notes when each became visible."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="detections", daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.rows: list[DetectionRow] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        last = 0
        with self.conn as conn:
            while not self.stop_event.is_set():
                found = conn.execute(
                    "SELECT id, device_id, kind, (extract(epoch FROM ts) * 1000)::bigint, "
                    "(extract(epoch FROM detected_at) * 1000)::float8, cleared FROM detections "
                    "WHERE id > %s ORDER BY id",
                    (last,),
                ).fetchall()
                seen = time.time() * 1000
                for row in found:
                    last = max(last, int(row[0]))
                    self.rows.append(
                        DetectionRow(str(row[1]), str(row[2]), int(row[3]), float(row[4]), seen, bool(row[5]))
                    )
                time.sleep(POLL_S)


def detection_latencies(
    injector: Injector, rows: list[DetectionRow], phase: str
) -> dict[str, list[tuple[float, float]]]:
    """Per kind, (visible, detected_at) latencies in ms of the probes that were detected."""
    with injector.lock:
        sent = {(p.device, p.ts_ms, p.kind): p.sent_ms for p in injector.probes if p.phase == phase}
        if phase == "soak":
            sent.update({(d, ts, "geofence_exit"): s for (d, ts), s in injector.outside.items()})
    out: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        at = sent.get((row.device, row.ts_ms, row.kind))
        if at is not None and not row.cleared:
            out.setdefault(row.kind, []).append((row.seen_ms - at, row.detected_ms - at))
    return out


def alert_latencies(injector: Injector, fake: FakeTwilio, phase: str) -> list[float]:
    """SOS publish -> first SMS or call request about an SOS for that elder's family."""
    by_phone: dict[str, list[tuple[int, str]]] = {}
    for m in fake.messages:
        by_phone.setdefault(m.to, []).append((m.received_at_ms, m.body))
    for c in fake.calls:
        by_phone.setdefault(c.to, []).append((c.received_at_ms, c.twiml or ""))
    with injector.lock:
        probes = [p for p in injector.probes if p.kind == "sos" and p.phase == phase]
    out = []
    for p in probes:
        times = [t for t, text in by_phone.get(p.phone, []) if t >= p.sent_ms - 1 and any(s in text for s in SOS_TEXT)]
        if times:
            out.append(max(0.0, min(times) - p.sent_ms))
    return out


# -- the fleet process, metrics, sizes ----------------------------------------------------------------


class FleetProcess:
    def __init__(self, spec: str, log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SUPPORT), "fleet", spec],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.events: dict[str, dict[str, Any]] = {}
        self.changed = threading.Event()
        threading.Thread(target=self._read, name="fleet-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                self.events[message["event"]] = message
                self.changed.set()

    def wait_for(self, event: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while event not in self.events:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fleet process: no '{event}' (exit code {self.proc.poll()})")
            self.changed.wait(0.5)
            self.changed.clear()
        return self.events[event]

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def acked(self) -> int:
        return int(self.events.get("progress", {}).get("acked", 0))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)


def labelled(values: dict[str, float], name: str, label: str) -> dict[str, float]:
    prefix = f'{name}{{{label}="'
    return {k[len(prefix) :].split('"')[0]: v for k, v in values.items() if k.startswith(prefix) and v}


class Database:
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.timescale = (
            self.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
        )

    def telemetry_bytes(self) -> int:
        if self.timescale:
            query = "SELECT coalesce(sum(hypertable_size(t::regclass)), 0) FROM unnest(%s::text[]) AS t"
        else:  # every partition (and its indexes and TOAST) of the time-series tables
            query = (
                "SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0) FROM unnest(%s::text[]) AS t, "
                "pg_partition_tree(t::regclass) AS p"
            )
        row = self.conn.execute(query, (list(TIME_SERIES),)).fetchone()
        return int(row[0]) if row else 0

    def database_bytes(self) -> int:
        row = self.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def rows(self) -> int:
        return sum(int(r[0]) for t in TIME_SERIES if (r := self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()))

    def scalar(self, query: str) -> str:
        row = self.conn.execute(query).fetchone()
        return str(row[0]) if row else ""


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the fleet started sending
    gw_cpu: float
    gw_rss: float
    broker_cpu: float
    pg_cpu: float
    fleet_cpu: float
    others_cpu: float  # everything else on the machine (other people's work), this process excluded
    broker_rss: float
    received: float
    stored: float
    fleet_acked: int
    telemetry_bytes: int


class Pids:
    def __init__(self, gateway: int, broker: int, postmaster: int, fleet: int, ours: frozenset[int]) -> None:
        self.gateway, self.broker, self.postmaster, self.fleet = gateway, broker, postmaster, fleet
        self.ours = ours  # the benchmark's own PostgreSQL backends

    def sample(self, t: float, port: int, fleet: FleetProcess | None, db: Database) -> Sample:
        m = scrape(port)
        # the gateway with its alert worker process
        gw, broker, fleet_cpu = tree_cpu_seconds(self.gateway), cpu_seconds(self.broker), cpu_seconds(self.fleet)
        pg, pg_all = tree_cpu_seconds(self.postmaster, self.ours), tree_cpu_seconds(self.postmaster)
        others = machine_busy_seconds() - gw - broker - fleet_cpu - pg_all - cpu_seconds(os.getpid())
        return Sample(
            t,
            gw,
            family_rss_mb(self.gateway),
            broker,
            pg,
            fleet_cpu if self.fleet else 0.0,
            others,
            rss_mb(self.broker),
            metric(m, "eldercare_ingest_messages_total"),
            metric(m, "eldercare_rows_stored_total"),
            fleet.acked() if fleet else 0,
            db.telemetry_bytes(),
        )


def nearest(samples: list[Sample], t: float) -> Sample:
    return min(samples, key=lambda s: abs(s.t - t))


def pct(a: Sample, b: Sample, field: str) -> float:
    return 100 * (getattr(b, field) - getattr(a, field)) / (b.t - a.t) if b.t > a.t else float("nan")


# -- running ------------------------------------------------------------------------------------------


def raise_fd_limit(need: int) -> bool:
    """One descriptor per device connection in the fleet process and in the broker (both inherit
    our limit); False if the limit cannot be made that high (then the fleet shares connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, need)), hard))
        if hard < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # needs CAP_SYS_RESOURCE
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need


def machine(db: Database) -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    mem_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    broker = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB, Linux {platform.release()}; "
        f"{broker.replace('mosquitto version', 'Mosquitto').strip()}, PostgreSQL "
        f"{db.scalar('SHOW server_version').split()[0]} "
        f"({'TimescaleDB' if db.timescale else 'native partitions, no TimescaleDB'}), fsync on"
    )


def write_config(root: Path, broker_port: int, dsn: str, http_port: int, fake: FakeTwilio, registry: Registry) -> Path:
    (root / "registry.yaml").write_text(yaml.safe_dump(registry.doc, allow_unicode=True))
    return write_gateway_config(
        root / "config.yaml",
        broker_port=broker_port,
        dsn=dsn,
        http_port=http_port,
        twilio=(SID, TOKEN, fake.base_url),
        registry_file=root / "registry.yaml",
    )


class Soak:
    def __init__(
        self,
        args: argparse.Namespace,
        plan: LoadPlan,
        registry: Registry,
        fake: FakeTwilio,
        broker_port: int,
        http_port: int,
        db: Database,
        poller: DetectionPoller,
    ) -> None:
        self.args, self.plan, self.registry, self.fake = args, plan, registry, fake
        self.broker_port, self.http_port, self.db, self.poller = broker_port, http_port, db, poller
        self.injector = Injector(broker_port, plan, registry, fake, args.seed)
        self.samples: list[Sample] = []
        self.idle: tuple[Sample, Sample] | None = None
        self.probes_only: tuple[Sample, Sample] | None = None

    def baseline(self, pids: Pids) -> None:
        """The gateway idle, then the probes alone (SOS and low glucose at the soak's pace, no fleet)."""
        time.sleep(5)  # start-up work (partitions, registry watch) settles
        origin = time.monotonic()
        a = pids.sample(0.0, self.http_port, None, self.db)
        time.sleep(self.args.idle_s)
        self.idle = (a, pids.sample(time.monotonic() - origin, self.http_port, None, self.db))
        for k in range(2):  # warm up connections and caches; not counted
            probe = self.injector.sos("warm-up")
            self.fake.wait_until_sync(partial(self._paged, probe), timeout_s=15, what=f"warm-up SOS {k}")
        c = pids.sample(time.monotonic() - origin, self.http_port, None, self.db)
        now = time.time()
        self.injector.run(
            threading.Event(),
            now,
            now + self.args.baseline_s,
            self.args.sos_every_s,
            self.args.probe_every_s * 2,
            "baseline",
        )
        time.sleep(1)
        self.probes_only = (c, pids.sample(time.monotonic() - origin, self.http_port, None, self.db))

    def _paged(self, probe: Probe) -> bool | None:
        pages = [(m.to, m.received_at_ms) for m in self.fake.messages]
        pages += [(c.to, c.received_at_ms) for c in self.fake.calls]
        return True if any(to == probe.phone and at >= probe.sent_ms - 1 for to, at in pages) else None

    def progress(self, a: Sample, b: Sample) -> None:
        dt = b.t - a.t
        alerts = alert_latencies(self.injector, self.fake, "soak")
        detections = [v for vs in detection_latencies(self.injector, self.poller.rows, "soak").values() for v, _ in vs]
        print(
            f"[{b.t:5.0f} s] fleet {(b.fleet_acked - a.fleet_acked) / dt:5.0f} msg/s  gateway in "
            f"{(b.received - a.received) / dt:5.0f} msg/s, {(b.stored - a.stored) / dt:5.0f} rows/s  "
            f"RSS {b.gw_rss:5.0f} MB  CPU gw {pct(a, b, 'gw_cpu'):4.1f}% broker {pct(a, b, 'broker_cpu'):4.1f}% "
            f"pg {pct(a, b, 'pg_cpu'):4.1f}% fleet {pct(a, b, 'fleet_cpu'):4.1f}% "
            f"others {pct(a, b, 'others_cpu'):3.0f}%  "
            f"SOS->page n={len(alerts)} p50 {percentile(alerts, 0.5):.0f} p99 {percentile(alerts, 0.99):.0f} ms  "
            f"detect n={len(detections)} p50 {percentile(detections, 0.5):.0f} "
            f"p99 {percentile(detections, 0.99):.0f} ms",
            flush=True,
        )

    def run(self, pids: Pids, fleet: FleetProcess) -> tuple[Sample, Sample]:
        """Send for --minutes; returns the first and the last sample of the soak."""
        duration = self.args.minutes * 60
        stop = threading.Event()
        go_wall, go = time.time(), time.monotonic()
        fleet.tell("go")
        injector = threading.Thread(
            target=self.injector.run,
            name="injector",
            daemon=True,
            args=(stop, go_wall, go_wall + duration, self.args.sos_every_s, self.args.probe_every_s, "soak"),
        )
        injector.start()
        self.samples.append(pids.sample(0.0, self.http_port, fleet, self.db))
        next_sample = go + SAMPLE_S
        while "done" not in fleet.events and time.monotonic() - go < duration + 90:
            if fleet.proc.poll() is not None and "done" not in fleet.events:
                raise RuntimeError(f"the fleet process exited ({fleet.proc.returncode}) mid-run")
            if time.monotonic() >= next_sample:
                self.samples.append(pids.sample(next_sample - go, self.http_port, fleet, self.db))
                next_sample += SAMPLE_S
                if len(self.samples) % 3 == 1:
                    self.progress(self.samples[-4], self.samples[-1])
            time.sleep(0.1)
        end = pids.sample(time.monotonic() - go, self.http_port, fleet, self.db)
        stop.set()
        injector.join(10)
        time.sleep(10)  # detections and pages of the last probes
        return self.samples[0], end


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the run produced, for the report."""

    first: Sample
    end: Sample
    fleet_done: dict[str, Any]
    rows_delta: int
    db_delta: int
    start_metrics: dict[str, float]
    final_metrics: dict[str, float]
    setup: dict[str, Any]

    def delta(self, name: str) -> float:
        return metric(self.final_metrics, name) - metric(self.start_metrics, name)


def report_load(soak: Soak, out: Outcome) -> float:
    """The mix and what arrived; returns the gateway's ingest rate over the soak."""
    plan, inj, setup = soak.plan, soak.injector, out.setup
    soak_sos = sum(1 for p in inj.probes if p.kind == "sos" and p.phase == "soak")
    print(f"\nsoak: {plan.devices:,} devices, {plan.elders:,} elders, {soak.args.minutes:g} min; {setup['machine']}")
    print(
        f"gateway ready {setup['ready_s']:.1f} s after start (registry import); fleet connected "
        f"{setup['connected']['up']:,} of {setup['connected']['links']:,} "
        f"{'per-device connections' if setup['per_device'] else 'shared connections'} in "
        f"{setup['connected']['seconds']:.1f} s"
    )
    print("load (devices, period, planned msg/s -> acked by the fleet):")
    by_prefix = {g["prefix"]: g for g in out.fleet_done["groups"]}
    for g in plan.groups:
        r = by_prefix[g.prefix]
        print(
            f"  {g.label:<26} {g.count:>6,}  {g.period_s:>7,.0f} s  {g.rate:8.2f}  -> {r['acked']:>8,} acked "
            f"({r['acked'] / r['duration_s']:.2f}/s, errors {r['errors']})"
        )
    print(
        f"  {'wristband, fenced, 30 s':<26} {plan.probe_bands:>6,}  {30:>7,} s  {plan.probe_bands / 30:8.2f}  "
        f"-> {inj.sent['fenced band']:>8,} sent (this process)"
    )
    print(
        f"  {'accel window (impacts)':<26} {'':>6}  1/band/day {plan.impact_rate:7.2f}  -> {inj.sent['impact']:>8,} "
        f"sent;  probes: {soak_sos} SOS, {inj.sent['glucose']} low glucose, {inj.sent['exit']} fence exits"
    )
    fleet_acked = sum(g["acked"] for g in out.fleet_done["groups"])
    ours = (
        inj.sent["fenced band"]
        + inj.sent["impact"]
        + soak_sos
        + sum(1 for p in inj.probes if p.kind == "hypoglycaemia" and p.phase == "soak")
    )
    ingest = (out.end.received - out.first.received) / out.end.t
    print(
        f"ingest: planned {plan.rate:.1f} msg/s; fleet acked {fleet_acked:,} + this process {ours:,}; gateway "
        f"received {out.delta('eldercare_ingest_messages_total'):,.0f} ({ingest:.1f} msg/s over {out.end.t:.0f} s), "
        f"rows stored {out.delta('eldercare_rows_stored_total'):,.0f}, rows in the database +{out.rows_delta:,}, "
        f"dead letters {out.delta('eldercare_decode_rejects_total'):,.0f}"
    )
    return ingest


def report_latency(soak: Soak) -> tuple[float, float]:
    """Alert and detection latencies; returns their p99 over the soak."""
    inj = soak.injector
    alerts = alert_latencies(inj, soak.fake, "soak")
    print("alert latency, SOS publish -> first request at the fake Twilio:")
    print(f"  baseline (no fleet)  {spread(alert_latencies(inj, soak.fake, 'baseline'))}")
    print(f"  during the soak      {spread(alerts)}")
    print("detection latency, publish -> detection row visible (polled every 10 ms) | by detected_at:")
    found = detection_latencies(inj, soak.poller.rows, "soak")
    expected = Counter(p.kind for p in inj.probes if p.phase == "soak")
    expected["geofence_exit"] = inj.sent["exit"]
    every: list[float] = []
    for kind in ("sos", "hypoglycaemia", "geofence_exit"):
        pairs = found.get(kind, [])
        every += [v for v, _ in pairs]
        print(
            f"  {kind:<14} {spread([v for v, _ in pairs])} | p50 {percentile([d for _, d in pairs], 0.5):5.1f} "
            f"p99 {percentile([d for _, d in pairs], 0.99):5.1f} ms  ({len(pairs)} of {expected[kind]})"
        )
    print(f"  {'all':<14} {spread(every)}")
    base = detection_latencies(inj, soak.poller.rows, "baseline")
    print(f"  baseline (no fleet): sos {spread([v for v, _ in base.get('sos', [])])}")
    print(f"                       hypoglycaemia {spread([v for v, _ in base.get('hypoglycaemia', [])])}")
    return percentile(alerts, 0.99), percentile(every, 0.99)


def report_resources(soak: Soak, out: Outcome, ingest: float) -> tuple[float, float, float, float]:
    """RSS by minute and its slope once warm, CPU; returns (slope MB/h, CPU % per 1,000 devices, net)."""
    assert soak.idle is not None and soak.probes_only is not None
    first, end, k = out.first, out.end, soak.plan.devices / 1000
    idle_pct, probes_pct = pct(*soak.idle, "gw_cpu"), pct(*soak.probes_only, "gw_cpu")
    print("gateway RSS and CPU by minute (CPU over the minute before):")
    print(
        f"  baseline: idle RSS {soak.idle[1].gw_rss:.1f} MB, CPU {idle_pct:.2f}%; probes alone RSS "
        f"{soak.probes_only[1].gw_rss:.1f} MB, CPU {probes_pct:.2f}% "
        f"(PostgreSQL {pct(*soak.probes_only, 'pg_cpu'):.2f}%)"
    )
    by_minute = [nearest([*soak.samples, end], 60.0 * m) for m in range(int(soak.args.minutes) + 1)]
    for prev, s in zip([by_minute[0], *by_minute], by_minute, strict=False):
        cpu = f"{pct(prev, s, 'gw_cpu'):5.2f}%" if s.t > prev.t else "    -"
        print(f"  {s.t / 60:4.0f} min  RSS {s.gw_rss:6.1f} MB  CPU {cpu}")
    warm = [s for s in [*soak.samples, end] if s.t >= soak.args.warm_s]
    rss = [s.gw_rss for s in warm]
    slope = float(np.polyfit([s.t / 3600 for s in warm], rss, 1)[0]) if len(warm) > 2 else float("nan")
    print(
        f"  after warm-up ({soak.args.warm_s:.0f} s): RSS {min(rss):.1f}-{max(rss):.1f} MB, "
        f"least-squares slope {slope:+.1f} MB/h ({len(warm)} samples every {SAMPLE_S:.0f} s)"
    )
    gw_pct = pct(first, end, "gw_cpu")
    net = (gw_pct - probes_pct) / k
    print(
        f"CPU (% of one core) over the soak: gateway {gw_pct:.2f}% = {gw_pct / k:.3f}% per 1,000 devices, "
        f"{net:.3f}% without the probes' share (soak - probes alone); PostgreSQL {pct(first, end, 'pg_cpu'):.2f}%, "
        f"Mosquitto {pct(first, end, 'broker_cpu'):.2f}% (RSS {first.broker_rss:.0f} -> {end.broker_rss:.0f} MB), "
        f"fleet {pct(first, end, 'fleet_cpu'):.2f}%; gateway {gw_pct * 10 / max(ingest, 1e-9):.2f} ms CPU per "
        f"message received; other people's processes on the machine: {pct(first, end, 'others_cpu'):.0f}% "
        f"(baseline: {pct(*soak.idle, 'others_cpu'):.0f}% idle, {pct(*soak.probes_only, 'others_cpu'):.0f}% probes)"
    )
    return slope, gw_pct / k, net, max(rss)


def report_database(soak: Soak, out: Outcome) -> float:
    """Growth of the time-series tables; returns MB per 1,000 device-days."""
    device_days = soak.plan.devices * out.end.t / 86_400
    tele = out.end.telemetry_bytes - out.first.telemetry_bytes
    per_dd = tele / 2**20 / device_days
    print(
        f"database: time-series tables +{tele / 2**20:.1f} MB over {device_days:.1f} device-days = "
        f"{per_dd:.3f} MB per device-day, {per_dd * 1000 / 1024:.2f} GB per 1,000 device-days "
        f"({tele / max(out.rows_delta, 1):.0f} B per row); whole database +{out.db_delta / 2**20:.1f} MB; "
        f"{'TimescaleDB hypertables (uncompressed)' if soak.db.timescale else 'native daily partitions'}"
    )
    inj = soak.injector
    mine = {(p.device, p.ts_ms) for p in inj.probes} | set(inj.outside)
    background = Counter(r.kind for r in soak.poller.rows if (r.device, r.ts_ms) not in mine and not r.cleared)
    print(
        f"other detections (from the load itself): {dict(background) or 'none'}; pages at the fake Twilio: "
        f"{len(soak.fake.messages):,} SMS, {len(soak.fake.calls):,} calls; open alerts "
        f"{metric(out.final_metrics, 'eldercare_open_alerts'):.0f}"
    )
    return per_dd * 1000


def report(soak: Soak, out: Outcome) -> None:
    ingest = report_load(soak, out)
    alert_p99, detection_p99 = report_latency(soak)
    slope, cpu, net, rss_max = report_resources(soak, out, ingest)
    db = report_database(soak, out)
    print(
        f"soak_devices={soak.plan.devices} minutes={soak.args.minutes:g} ingest_msg_s={ingest:.1f} "
        f"alert_p99_ms={alert_p99:.1f} detection_p99_ms={detection_p99:.1f} rss_growth_mb_per_h={slope:.1f} "
        f"cpu_pct_per_1000_devices={cpu:.3f} cpu_pct_per_1000_devices_net={net:.3f} "
        f"db_mb_per_1000_device_days={db:.0f}"
    )
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores")
    # issue 19's line: gateway + alert worker RSS (highest once warm), its slope, CPU, SOS p99 under load
    print(
        f"rss_mb={rss_max:.0f} rss_slope_mb_per_h={slope:.1f} cpu_pct_per_1k_devices={cpu:.3f} "
        f"sos_p99_ms={alert_p99:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sos-every-s", type=float, default=5.0)
    parser.add_argument("--probe-every-s", type=float, default=5.0, help="a low glucose or a fence exit, in turn")
    parser.add_argument("--impacts-per-band-day", type=float, default=1.0)
    parser.add_argument("--idle-s", type=float, default=20.0, help="baseline: the gateway idle")
    parser.add_argument("--baseline-s", type=float, default=60.0, help="baseline: the probes alone, no fleet")
    parser.add_argument("--warm-s", type=float, default=120.0, help="RSS slope from here on")
    parser.add_argument("--shared-connections", action="store_true", help="a few connections, not one per device")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 devices for 2 minutes")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.minutes, args.idle_s, args.baseline_s, args.warm_s = 2_000, 2.0, 10.0, 30.0, 60.0
    plan = LoadPlan.for_devices(args.devices, args.impacts_per_band_day)
    per_device = not args.shared_connections and raise_fd_limit(sum(g.count for g in plan.groups) + 150)
    registry = build_registry(plan)
    fake = FakeTwilio(SID, TOKEN)
    with (
        private_services("eldercare-soak-", fsync=True, broker_persistence=False) as (broker, database),
        running_in_thread(fake),
    ):
        assert broker.process is not None
        root = broker.workdir.parent
        http_port = free_port()
        config = write_config(root, broker.port, database.dsn, http_port, fake, registry)
        with (root / "gateway.log").open("ab") as log, (root / "fleet.log").open("ab") as fleet_log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "-c", str(config), "run"], cwd=REPO, stdout=log, stderr=log
            )
            fleet: FleetProcess | None = None
            try:
                ready_s = wait_ready(http_port, gateway)
                db = Database(database.dsn)
                poller = DetectionPoller(database.dsn)
                poller.start()
                soak = Soak(args, plan, registry, fake, broker.port, http_port, db, poller)
                postmaster = int((database.datadir / "postmaster.pid").read_text().split()[0])
                pids = Pids(
                    gateway.pid,
                    broker.process.pid,
                    postmaster,
                    0,
                    frozenset({db.conn.info.backend_pid, poller.conn.info.backend_pid}),
                )
                print(
                    f"gateway ready in {ready_s:.1f} s; baseline: idle {args.idle_s:g} s, then the probes alone "
                    f"for {args.baseline_s:g} s",
                    flush=True,
                )
                soak.baseline(pids)
                fleet = FleetProcess(fleet_spec(plan, broker.port, args.minutes * 60, per_device), fleet_log)
                connected = fleet.wait_for("connected", 600)
                print(
                    f"fleet connected: {connected['up']:,}/{connected['links']:,} links in "
                    f"{connected['seconds']:.1f} s; sending for {args.minutes:g} min",
                    flush=True,
                )
                pids.fleet = fleet.proc.pid
                start_metrics, rows0, db0 = scrape(http_port), db.rows(), db.database_bytes()
                first, end = soak.run(pids, fleet)
                done = fleet.wait_for("done", 60)
                final_metrics = scrape(http_port)
                poller.stop_event.set()
                setup = {"machine": machine(db), "ready_s": ready_s, "connected": connected, "per_device": per_device}
                report(
                    soak,
                    Outcome(
                        first,
                        end,
                        done,
                        db.rows() - rows0,
                        db.database_bytes() - db0,
                        start_metrics,
                        final_metrics,
                        setup,
                    ),
                )
                soak.injector.close()
            except Exception:
                print(
                    "gateway log (last lines):\n" + (root / "gateway.log").read_text(errors="replace")[-3000:],
                    file=sys.stderr,
                )
                print(
                    "fleet log (last lines):\n" + (root / "fleet.log").read_text(errors="replace")[-2000:],
                    file=sys.stderr,
                )
                raise
            finally:
                if fleet is not None:
                    fleet.close()
                gateway.terminate()
                gateway.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
