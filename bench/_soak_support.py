"""Parts of bench/soak.py: the load plan, the registry for it, /proc sampling, the fleet worker.

The fleet worker runs as its own process (``python bench/_soak_support.py fleet SPEC``): one
:class:`~simulators.devices.shard.FleetShard` per rate class, all on one event loop, so each
class reports at its own period. It prints JSON lines on stdout (``connected``, ``progress``
every second, ``done`` with the per-class results) and starts sending when a line arrives
on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simulators.community import GIVEN, SURNAMES, offset  # noqa: E402
from simulators.devices.shard import FleetShard  # noqa: E402
from simulators.fleet import FleetConfig, fleet_devices  # noqa: E402

CENTRE = (31.2304, 121.4737)
ELDERS_PER_GRID = 200
ELDERS_PER_COMMUNITY = 1000


@dataclass(frozen=True, slots=True)
class Group:
    """Devices of one type that report at one period, run as one fleet shard."""

    label: str
    type: str
    prefix: str
    count: int
    period_s: float  # each device sends one message every period_s
    keepalive_s: int

    @property
    def rate(self) -> float:
        return self.count / self.period_s

    def ids(self) -> list[str]:
        config = FleetConfig(devices=self.count, mix={self.type: 1.0}, id_prefix=self.prefix)
        return [d for d, _ in fleet_devices(config)]


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """The 20,000-device mix (scaled for other sizes); see ``for_devices``."""

    devices: int
    groups: tuple[Group, ...]  # driven by the fleet process
    probe_bands: int  # wristbands driven by the injector (home fences, reporting every 30 s)
    impacts_per_band_day: float

    @classmethod
    def for_devices(cls, devices: int, impacts_per_band_day: float = 1.0) -> LoadPlan:
        """60 % wristbands (one per elder; a quarter of them every 30 s, the rest every 60 s),
        20 % pagers (hourly status), 12.5 % glucose meters (4 readings a day), 7.5 % cuffs (2 a day)."""
        bands = round(devices * 0.6)
        pagers = round(devices * 0.2)
        glucose = round(devices * 0.125)
        bp = devices - bands - pagers - glucose
        bands_30 = round(bands * 0.25)
        probes = min(300, max(10, bands // 40))
        groups = (
            Group("wristband, every 60 s", "wristband", "s60-", bands - bands_30, 60.0, 60),
            Group("wristband, every 30 s", "wristband", "s30-", bands_30 - probes, 30.0, 60),
            Group("pager, hourly status", "pager", "s1h-", pagers, 3600.0, 300),
            Group("glucose, 4 readings/day", "glucose", "s6h-", glucose, 21_600.0, 300),
            Group("bp cuff, 2 readings/day", "bp", "s12h-", bp, 43_200.0, 300),
        )
        return cls(devices, groups, probes, impacts_per_band_day)

    @property
    def elders(self) -> int:
        return sum(g.count for g in self.groups if g.type == "wristband") + self.probe_bands

    @property
    def impact_rate(self) -> float:
        return self.elders * self.impacts_per_band_day / 86_400

    @property
    def rate(self) -> float:
        """Planned messages per second, fleet and injector together (not counting probes)."""
        return sum(g.rate for g in self.groups) + self.probe_bands / 30.0 + self.impact_rate

    def group(self, prefix: str) -> Group:
        return next(g for g in self.groups if g.prefix == prefix)


def probe_band_ids(n: int) -> list[str]:
    return [f"probe-wb-{i:06d}" for i in range(n)]


def family_phone(elder: int) -> str:
    return f"+86138{elder:08d}"


@dataclass(frozen=True, slots=True)
class Registry:
    doc: dict[str, Any]  # the registry file
    elder_of: dict[str, int]  # device id -> elder index
    homes: list[tuple[float, float]]  # per elder


def build_registry(plan: LoadPlan, seed: int = 11) -> Registry:
    """Elders with a family contact each (one wristband per elder; pagers, meters and cuffs on
    random subsets), grid workers per 200 elders, a post station per 1,000, one hotline.
    Injector-driven bands belong to elders with a 150 m home fence (every other one with dementia)."""
    rnd = random.Random(seed)
    n = plan.elders
    bands = probe_band_ids(plan.probe_bands) + plan.group("s30-").ids() + plan.group("s60-").ids()
    assert len(bands) == n
    devices: list[list[dict[str, Any]]] = [
        [
            {
                "id": b,
                "type": "wristband",
                "reporting_interval_s": 30 if i < len(bands) - plan.group("s60-").count else 60,
            }
        ]
        for i, b in enumerate(bands)
    ]
    elder_of = {b: i for i, b in enumerate(bands)}
    conditions: list[list[str]] = [[] for _ in range(n)]
    for prefix, condition in (("s1h-", ""), ("s6h-", "diabetes"), ("s12h-", "hypertension")):
        group = plan.group(prefix)
        for device, elder in zip(group.ids(), rnd.sample(range(n), group.count), strict=True):
            devices[elder].append(
                {"id": device, "type": group.type, "reporting_interval_s": min(86_400, round(group.period_s))}
            )
            elder_of[device] = elder
            if condition:
                conditions[elder].append(condition)
    homes = [offset(*CENTRE, rnd.uniform(-3000, 3000), rnd.uniform(-3000, 3000)) for _ in range(n)]
    elders = []
    for i in range(n):
        name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7 + i // 20) % len(GIVEN)]
        lat, lon = homes[i]
        probe = i < plan.probe_bands
        elders.append(
            {
                "id": f"e{i:05d}",
                "name": name,
                "community": f"社区{i // ELDERS_PER_COMMUNITY + 1}",
                "grid": f"网格{i // ELDERS_PER_GRID + 1}",
                "address": f"幸福路{100 + i}号",
                "conditions": conditions[i] + (["dementia"] if probe and i % 2 == 0 else []),
                "home": {"lat": lat, "lon": lon},
                "contacts": [{"name": name[0] + "强", "phone": family_phone(i), "relation": "child"}],
                "fences": [{"id": "home", "circle": {"lat": lat, "lon": lon, "radius_m": 150}}] if probe else [],
                "devices": devices[i],
            }
        )
    responders: list[dict[str, Any]] = [
        {
            "id": f"grid-{g + 1}",
            "name": f"网格员{g + 1}",
            "role": "grid_worker",
            "phone": f"+86139{g:08d}",
            "grid": f"网格{g + 1}",
            # a grid is a community's grid: the community of its first elder
            "community": f"社区{g * ELDERS_PER_GRID // ELDERS_PER_COMMUNITY + 1}",
        }
        for g in range(math.ceil(n / ELDERS_PER_GRID))
    ]
    responders += [
        {
            "id": f"station-{c + 1}",
            "name": f"社区{c + 1}养老驿站",
            "role": "post_station",
            "phone": f"+8621{c:08d}",
            "community": f"社区{c + 1}",
        }
        for c in range(math.ceil(n / ELDERS_PER_COMMUNITY))
    ]
    responders.append({"id": "hotline", "name": "24小时热线", "role": "hotline", "phone": "+8640000000001"})
    return Registry({"elders": elders, "responders": responders}, elder_of, homes)


# -- /proc ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and of its children it has reaped."""
    try:
        f = _stat(pid)
    except OSError:
        return 0.0
    return sum(int(f[k]) for k in (11, 12, 13, 14)) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def children(pid: int) -> list[int]:
    """Live child processes (the gateway's alert worker)."""
    out: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(task.path, "children").read_text().split()]
    except OSError:
        pass
    return out


def family_rss_mb(pid: int) -> float:
    """RSS of a process and its live children together."""
    return rss_mb(pid) + sum(rss_mb(child) for child in children(pid))


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy, all cores together (from /proc/stat)."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(f[k]) for k in (0, 1, 2, 5, 6, 7)) / CLK_TCK  # user nice system irq softirq steal


def tree_cpu_seconds(pid: int, exclude: frozenset[int] = frozenset()) -> float:
    """CPU of a process and its live children (PostgreSQL: the postmaster and its backends),
    but not the children in ``exclude`` (the benchmark's own database sessions)."""
    total = cpu_seconds(pid)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) not in exclude:
            try:
                f = _stat(int(entry.name))
            except OSError:
                continue
            if int(f[1]) == pid:
                total += cpu_seconds(int(entry.name))
    return total


# -- the fleet worker ----------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _fleet(spec: dict[str, Any]) -> None:
    shards: list[tuple[FleetShard, float]] = []
    for k, g in enumerate(spec["groups"]):
        config = FleetConfig(
            devices=g["count"],
            rate=g["rate"],
            duration_s=spec["duration_s"],
            host="127.0.0.1",
            port=spec["port"],
            mix={g["type"]: 1.0},
            id_prefix=g["prefix"],
            seed=k + 1,
            keepalive_s=g["keepalive_s"],
            drain_s=30.0,
            connect_concurrency=100,
        )
        devices = fleet_devices(config)
        if spec["per_device"]:  # one connection, login and will per device (the broker accepts any password)
            config = replace(config, credentials={d: "soak" for d, _ in devices})
        shards.append((FleetShard(config, devices, k), float(g["rate"])))
    started = time.monotonic()
    await asyncio.gather(*(s.connect() for s, _ in shards))
    _emit(
        "connected",
        seconds=time.monotonic() - started,
        links=sum(len(s.links) for s, _ in shards),
        up=sum(int(s.table.up.sum()) for s, _ in shards),
        refused=sum(s.refused for s, _ in shards),
        errors=sum(s.table.errors for s, _ in shards),
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True, name="stop").start()

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            _emit(
                "progress",
                sent=sum(s.table.sent for s, _ in shards),
                acked=sum(s.table.acked for s, _ in shards),
                errors=sum(s.table.errors for s, _ in shards),
                up=sum(int(s.table.up.sum()) for s, _ in shards),
            )

    reporter = asyncio.create_task(report(), name="report")
    await asyncio.gather(
        *(s.run(stop.is_set, rate) if rate >= 1 else _run_slow(s, stop.is_set, rate) for s, rate in shards)
    )
    reporter.cancel()
    _emit(
        "done",
        groups=[
            {
                "prefix": g["prefix"],
                "sent": s.table.sent,
                "acked": s.table.acked,
                "errors": s.table.errors,
                "duration_s": s.duration_s,
                "by_topic": s.acked_by_topic(),
                "refused": s.refused,
                "links": len(s.links),
                "error_samples": list(s.table.error_samples)[:3],
            }
            for (s, _), g in zip(shards, spec["groups"], strict=True)
        ],
    )


async def _run_slow(shard: FleetShard, stop: Callable[[], bool], rate: float) -> None:
    """``FleetShard.run`` for a shard under 1 msg/s: its catch-up rule (``budget = int(rate)`` when
    more than ``2 * rate`` behind) leaves such a shard at zero, so it would never send. The same
    turns, one device at a time, with the shard's own flow control, keep-alive and drain."""
    n = len(shard.ids)
    order = shard.model.rng.permutation(n).astype(np.int64)
    sent = 0
    shard.phase, shard.t0 = "sending", time.monotonic()
    last_ping = shard.t0
    while n and (elapsed := time.monotonic() - shard.t0) < shard.config.duration_s and not stop():
        if time.monotonic() - last_ping > 5.0:
            last_ping = time.monotonic()
            shard._ping(last_ping)
            shard._watch()
        if sent < int(rate * elapsed):
            chosen = shard._pick(order[sent % n : sent % n + 1])
            if chosen.shape[0]:
                shard._send(chosen)
                sent += 1
        await asyncio.sleep(0.05)
    await shard.drain()


def fleet_spec(plan: LoadPlan, port: int, duration_s: float, per_device: bool) -> str:
    groups = [{**asdict(g), "rate": g.rate} for g in plan.groups]
    return json.dumps({"port": port, "duration_s": duration_s, "per_device": per_device, "groups": groups})


def fleet_worker(spec: dict[str, Any]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_fleet(spec))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_fleet(spec))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fleet":
        raise SystemExit("usage: _soak_support.py fleet SPEC_JSON")
    fleet_worker(json.loads(sys.argv[2]))


def write_gateway_config(
    path: Path,
    *,
    broker_port: int,
    dsn: str,
    http_port: int,
    twilio: tuple[str, str, str],
    client_id: str = "gateway",
    registry_file: Path | None = None,
) -> Path:
    """The benchmarks' gateway config: private services, the fake Twilio (sid, token, base URL),
    the shipped escalation; the registry from ``registry_file`` or, without it, the database."""
    sid, token, base_url = twilio
    doc: dict[str, Any] = {
        "mqtt": {"port": broker_port, "client_id": client_id},
        "database": {"dsn": dsn},
        "storage": {"spool_dir": str(path.parent / "spool")},
        "notify": {
            "public_base_url": f"http://127.0.0.1:{http_port}",
            "http_port": http_port,
            "twilio": {
                "account_sid": sid,
                "auth_token": token,
                "sms_from": "+15005550006",
                "voice_from": "+15005550006",
                "base_url": base_url,
            },
        },
        "logging": {"level": "WARNING"},
    }
    if registry_file is not None:
        doc["registry"] = {"file": str(registry_file)}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def scrape(http_port: int) -> dict[str, float]:
    """The gateway's /metrics as name{labels} -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric(values: dict[str, float], name: str) -> float:
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def wait_ready(http_port: int, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> float:
    """Seconds until /readyz answers 200 (MQTT, database and alert worker up)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited ({proc.returncode}) while starting")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError("the gateway did not become ready")
