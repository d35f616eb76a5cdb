"""Fleet mode: thousands of simulated devices as load on a broker and the gateway behind it.

``run_fleet(FleetConfig(devices=10_000, rate=20_000, duration_s=60))`` publishes at the
aggregate ``rate`` for ``duration_s``, waits for the outstanding PUBACKs, and returns a
:class:`FleetResult` (sent, acked, errors, mean rate, acks per type and channel).

- Payloads come from :class:`~simulators.devices.batch.FleetModel`: the device models of
  the simulators stepped for whole batches with numpy, encoded from the contract structs.
  Devices take turns in a fixed random order, so each reports every ``devices / rate`` s.
- Without per-device credentials (anonymous, or one shared ``username``) many devices
  share a connection (``connections`` per process). With ``credentials`` (device id ->
  password, as ``eldercare provision`` issued them) each device has its own connection,
  its own login and its own will, as the broker's per-device ACL requires.
- ``processes`` > 1 splits the devices (and the rate) over worker processes; progress
  comes back through shared counters, results through a queue.
- ``progress`` is called about once a second with a :class:`FleetProgress`; SIGINT (Ctrl-C)
  or ``stop`` ends the run early, still waiting for acknowledgements and returning a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import re
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from devices.contracts import DEVICE_ID_PATTERN
from simulators.devices.batch import TYPES
from simulators.devices.shard import FleetProgress, FleetShard

__all__ = [
    "DEFAULT_MIX",
    "FleetConfig",
    "FleetError",
    "FleetProgress",
    "FleetResult",
    "device_type_of",
    "fleet_devices",
    "load_credentials",
    "parse_broker",
    "parse_mix",
    "run_fleet",
    "run_fleet_async",
]

DEFAULT_MIX: dict[str, float] = {"wristband": 0.7, "pager": 0.1, "glucose": 0.1, "bp": 0.1}
TYPE_PREFIX: dict[str, str] = {"wristband": "wb", "pager": "pg", "glucose": "gl", "bp": "bp"}
_PREFIX_TYPE = {v: k for k, v in TYPE_PREFIX.items()}
T = TypeVar("T")


class FleetError(ValueError):
    """A fleet option is wrong (mix, broker address, credentials file); the message says which."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    devices: int = 1000
    rate: float = 1000.0  # messages per second, all devices together
    duration_s: float = 10.0
    host: str = "127.0.0.1"
    port: int = 1883
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    qos: int = 1
    username: str | None = None  # one shared account: many devices per connection
    password: str | None = None
    credentials: Mapping[str, str] | None = None  # device id -> password: one connection per device
    processes: int = 1
    connections: int = 0  # per process, shared accounts only; 0: one per 2,500 devices, at most 4
    window: int = 0  # unacknowledged messages per connection; 0: 5,000 shared, 20 per device
    id_prefix: str = "sim-"
    seed: int = 1
    keepalive_s: int = 60
    drain_s: float = 15.0  # how long to wait for the last acknowledgements
    connect_concurrency: int = 200


@dataclass(frozen=True, slots=True)
class FleetResult:
    devices: int
    connections: int
    processes: int
    sent: int
    acked: int
    errors: int
    duration_s: float  # first message to last acknowledgement
    connect_s: float
    refused: int  # devices or connections the broker turned away
    interrupted: bool
    by_topic: dict[str, int]  # acknowledged per "type/channel" (at QoS 0: written)
    error_samples: tuple[str, ...] = ()

    @property
    def mean_rate(self) -> float:
        """Acknowledged messages per second over the run."""
        return self.acked / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> str:
        topics = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_topic.items()) if v)
        lines = [
            f"fleet summary{' (interrupted)' if self.interrupted else ''}: {self.devices:,} devices, "
            f"{self.connections:,} connection{'s' if self.connections != 1 else ''}, "
            f"{self.processes} process{'es' if self.processes > 1 else ''}",
            f"  sent {self.sent:,}  acked {self.acked:,}  errors {self.errors:,}  duration {self.duration_s:.1f} s  "
            f"mean rate {self.mean_rate:,.0f} msg/s  (connecting took {self.connect_s:.1f} s)",
            f"  acked by topic: {topics or 'none'}",
        ]
        if self.refused:
            lines.append(f"  refused by the broker: {self.refused:,}")
        lines += [f"  error: {e}" for e in self.error_samples[:5]]
        return "\n".join(lines)


# -- options ------------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``wristband=0.7,pager=0.1,...`` -> shares that add up to 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = {"glucose_meter": "glucose", "bp_cuff": "bp"}.get(name.strip(), name.strip())
        if name not in TYPES:
            raise FleetError(f"unknown device type {name!r} in --mix (use {', '.join(TYPES)})")
        try:
            share = float(value)
        except ValueError:
            raise FleetError(f"--mix {part!r}: the share must be a number") from None
        if share < 0 or not math.isfinite(share):
            raise FleetError(f"--mix {part!r}: the share must be zero or more")
        mix[name] = share
    total = sum(mix.values())
    if total <= 0:
        raise FleetError("--mix needs at least one device type with a share above zero")
    return {k: v / total for k, v in mix.items()}


def parse_broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, 1883
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise FleetError(f"--broker {text!r}: expected host:port") from None


_CREDENTIAL_LINE = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\s*(?::\s*(?:new\s+)?password\s+|[:,\s]\s*)(\S+)\s*$"
)


def load_credentials(path: str | Path) -> dict[str, str]:
    """Device id -> password from ``eldercare provision add`` output (``wb-1: password XYZ``),
    or ``id password`` / ``id:password`` / ``id,password`` lines; ``#`` starts a comment."""
    found: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _CREDENTIAL_LINE.match(line)
        if not match:
            raise FleetError(f"{path}:{number}: expected 'DEVICE: password SECRET' or 'DEVICE SECRET'")
        found[match.group(1)] = match.group(2)
    if not found:
        raise FleetError(f"{path}: no credentials")
    return found


def device_type_of(device_id: str) -> str:
    """The type a fleet device id names (``wb-``, ``pg-``, ``gl-``, ``bp-`` anywhere in it)."""
    for token in re.split(r"[-_.]", device_id):
        if token in _PREFIX_TYPE:
            return _PREFIX_TYPE[token]
        if token in TYPES:
            return token
    raise FleetError(f"cannot tell the type of device {device_id!r} (its id should contain wb-, pg-, gl- or bp-)")


def fleet_devices(config: FleetConfig) -> list[tuple[str, str]]:
    """(device id, type) of every device of the fleet, the same for the same config."""
    if config.credentials is not None:
        ids = list(config.credentials)
        if config.devices:
            ids = ids[: config.devices]
        return [(d, device_type_of(d)) for d in ids]
    mix = parse_mix(",".join(f"{k}={v}" for k, v in config.mix.items()))
    exact = {t: config.devices * s for t, s in mix.items()}
    counts = {t: int(v) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: exact[t] - counts[t], reverse=True)[: config.devices - sum(counts.values())]:
        counts[t] += 1
    types = [t for t in TYPES for _ in range(counts.get(t, 0))]
    np.random.default_rng(config.seed).shuffle(types)  # types interleaved, as in a real community
    pattern = re.compile(DEVICE_ID_PATTERN)
    out = [(f"{config.id_prefix}{TYPE_PREFIX[t]}-{i:06d}", t) for i, t in enumerate(types)]
    if out and not pattern.match(out[0][0]):
        raise FleetError(f"--id-prefix {config.id_prefix!r} makes invalid device ids")
    return out


# -- running ------------------------------------------------------------------------------------


def _result(shard: FleetShard, interrupted: bool) -> FleetResult:
    t = shard.table
    return FleetResult(
        len(shard.ids),
        len(shard.links),
        1,
        t.sent,
        t.acked,
        t.errors,
        shard.duration_s,
        shard.connect_s,
        shard.refused,
        interrupted,
        shard.acked_by_topic(),
        tuple(t.error_samples),
    )


class Stoppable(Protocol):
    """Anything with ``is_set()``: an asyncio, threading or multiprocessing event."""

    def is_set(self) -> bool: ...


class _Stop:
    """Stop when any of the events is set."""

    def __init__(self, *events: Stoppable | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


async def run_fleet_async(
    config: FleetConfig,
    *,
    stop: Stoppable | None = None,
    progress: Callable[[FleetProgress], None] | None = None,
    progress_interval_s: float = 1.0,
) -> FleetResult:
    """The fleet in this process and event loop (``config.processes`` is ignored)."""
    shard = FleetShard(config, fleet_devices(config), 0)
    halt = _Stop(stop)

    async def report() -> None:
        prev, at = 0, time.monotonic()
        while True:
            await asyncio.sleep(progress_interval_s)
            now = time.monotonic()
            if progress is not None:
                progress(shard.progress(prev, now - at))
            prev, at = shard.table.acked, now

    reporter = asyncio.create_task(report(), name="fleet-progress")
    try:
        await shard.connect()
        await shard.run(halt.is_set, config.rate)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    if progress is not None:
        progress(shard.progress(0, shard.duration_s))  # the last line shows the mean rate
    return _result(shard, halt.is_set())


def run_fleet(
    config: FleetConfig,
    *,
    progress: Callable[[FleetProgress], None] | None = None,
    progress_interval_s: float = 1.0,
    stop: threading.Event | None = None,
) -> FleetResult:
    """Run the fleet to the end (or to Ctrl-C / ``stop``) and return what happened."""
    if config.processes > 1:
        return _run_processes(config, progress, progress_interval_s, stop)

    async def main() -> FleetResult:
        interrupt = asyncio.Event()
        loop = asyncio.get_running_loop()
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            loop.add_signal_handler(signal.SIGINT, interrupt.set)
        try:
            return await run_fleet_async(
                config, stop=_Stop(interrupt, stop), progress=progress, progress_interval_s=progress_interval_s
            )
        finally:
            if in_main:
                loop.remove_signal_handler(signal.SIGINT)

    return _run_loop(main)


def _run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main`` on uvloop when it is installed (about twice the messages per CPU second
    with one connection per device), else on the standard event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


_SLOTS = 5  # sent, acked, errors, connected, connections


def _worker(
    config: FleetConfig,
    devices: list[tuple[str, str]],
    index: int,
    counters: Any,
    stop: Any,
    go: Any,
    ready: Any,
    results: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    async def main() -> FleetResult:
        shard = FleetShard(config, devices, index)

        async def publish_counters() -> None:
            base = index * _SLOTS
            while True:
                t = shard.table
                counters[base : base + _SLOTS] = [t.sent, t.acked, t.errors, int(t.up.sum()), len(shard.links)]
                await asyncio.sleep(0.2)

        task = asyncio.create_task(publish_counters(), name="fleet-counters")
        await shard.connect()
        with ready.get_lock():
            ready.value += 1
        while not go.is_set() and not stop.is_set():  # noqa: ASYNC110 (a multiprocessing event)
            await asyncio.sleep(0.01)
        await shard.run(stop.is_set, config.rate / config.processes)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        t = shard.table
        counters[index * _SLOTS : (index + 1) * _SLOTS] = [t.sent, t.acked, t.errors, 0, len(shard.links)]
        return _result(shard, stop.is_set())

    results.put((index, _run_loop(main)))


def _run_processes(
    config: FleetConfig,
    progress: Callable[[FleetProgress], None] | None,
    interval_s: float,
    stop: threading.Event | None,
) -> FleetResult:
    devices = fleet_devices(config)
    n = config.processes
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", n * _SLOTS, lock=False)
    halt, go = ctx.Event(), ctx.Event()
    ready = ctx.Value("i", 0)
    results = ctx.Queue()
    shard_config = replace(config, processes=n)
    workers = [
        ctx.Process(
            target=_worker,
            args=(shard_config, devices[i::n], i, counters, halt, go, ready, results),
            name=f"fleet-{i}",
            daemon=True,
        )
        for i in range(n)
    ]
    interrupted = False

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        halt.set()

    previous = (
        signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    )
    started = time.monotonic()
    out: dict[int, FleetResult] = {}
    try:
        for w in workers:
            w.start()
        prev_acked, at, phase_start = 0, time.monotonic(), started
        while len(out) < n:
            if not go.is_set() and ready.value >= n:
                go.set()
                phase_start = time.monotonic()
            if stop is not None and stop.is_set():
                halt.set()
                interrupted = True
            with contextlib.suppress(Exception):
                while True:
                    index, result = results.get(timeout=min(0.1, interval_s))
                    out[index] = result
            dead = [i for i, w in enumerate(workers) if w.exitcode is not None and i not in out]
            if dead and results.empty():
                halt.set()  # a worker died without a result: stop the others, report what they did
                if not any(w.is_alive() for w in workers):
                    break
            now = time.monotonic()
            if progress is not None and now - at >= interval_s:
                c = np.asarray(list(counters), np.int64).reshape(n, _SLOTS).sum(axis=0).tolist()
                phase = "sending" if go.is_set() else "connecting"
                if go.is_set() and now - phase_start > config.duration_s:
                    phase = "draining"
                progress(
                    FleetProgress(
                        phase, now - phase_start, c[0], c[1], c[2], (c[1] - prev_acked) / (now - at), c[3], c[4]
                    )
                )
                acked = c[1]
                prev_acked, at = acked, now
    finally:
        halt.set() if len(out) < n else None
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    parts = [out[i] for i in sorted(out)]
    missing = n - len(parts)
    by_topic: dict[str, int] = {}
    for r in parts:
        for k, v in r.by_topic.items():
            by_topic[k] = by_topic.get(k, 0) + v
    samples = tuple(s for r in parts for s in r.error_samples)
    if missing:
        samples += (f"{missing} worker process(es) died without a result",)
    return FleetResult(
        devices=len(devices),
        connections=sum(r.connections for r in parts),
        processes=n,
        sent=sum(r.sent for r in parts),
        acked=sum(r.acked for r in parts),
        errors=sum(r.errors for r in parts) + missing,
        duration_s=max((r.duration_s for r in parts), default=0.0),
        connect_s=max((r.connect_s for r in parts), default=0.0),
        refused=sum(r.refused for r in parts),
        interrupted=interrupted or any(r.interrupted for r in parts),
        by_topic=by_topic,
        error_samples=samples,
    )
