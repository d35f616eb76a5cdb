"""Playing scenarios against a live gateway with a fast clock.

For each scenario: a fresh database on the shared PostgreSQL server, a fresh fake
Twilio, and an in-process :class:`~gateway.service.Gateway` whose ``clock_ms`` is the
scenario clock (``speed`` times real time). The devices publish over the shared
Mosquitto broker; people answer through the fake Twilio. Expectations are judged
from the database, the fake's records and the gateway's detections every ~0.1 s
(real), and the scenario ends as soon as every expectation is decided, or at its
``end``.

Services (broker, PostgreSQL) are shared by all scenarios of a run: pass a
:class:`ScenarioServices`, or let :func:`run_scenarios` start private ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import psycopg
import yaml
from psycopg import sql

from gateway.alerting.policy import DEFAULT_ESCALATION
from gateway.config import ConfigError, load_config
from gateway.domain.registry import RegistryFile
from gateway.domain.registry_db import import_registry
from gateway.notify.base import redact_phone
from gateway.service import Gateway
from gateway.storage.schema import upgrade
from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.scenario.clock import ScenarioClock, start_ms_for
from simulators.scenario.errors import ScenarioRunError
from simulators.scenario.expect import Verdict, describe, judge
from simulators.scenario.fleet import ScenarioFleet
from simulators.scenario.loader import load_scenario
from simulators.scenario.observe import Observer
from simulators.scenario.people import People
from simulators.scenario.plan import Expectation, Scenario, Step
from simulators.scenario.timespec import format_duration
from simulators.services.local import private_services
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.postgres import LocalPostgres
from simulators.services.process import free_port

log = logging.getLogger(__name__)

DEFAULT_SPEED = 60.0
TWILIO_SID, TWILIO_TOKEN, TWILIO_FROM = "AC" + "5" * 32, "scenario-token", "+15005550006"
TICK_REAL_S = 0.02  # the runner's loop
NUDGE_REAL_S = 0.05  # how often the gateway's escalation stage is woken (its own timer is 1 s real)
POLL_REAL_S = 0.1  # how often expectations are judged (more slowly when a snapshot is costly)
HOLD_MAX_REAL_S = 5.0  # the clock stands still at most this long waiting for the gateway
Narrate = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ScenarioServices:
    """A broker and a PostgreSQL server shared by the scenarios of a run.

    ``postgres_dsn`` names any database on a server where this user may create
    databases: each scenario gets a new one beside it, dropped afterwards.
    """

    broker_port: int
    postgres_dsn: str
    broker_host: str = "127.0.0.1"

    @classmethod
    def from_local(cls, broker: LocalMosquitto, database: LocalPostgres) -> ScenarioServices:
        return cls(broker.port, database.dsn)

    def database_dsn(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.postgres_dsn, dbname=name)


@contextlib.contextmanager
def private_scenario_services() -> Iterator[ScenarioServices]:
    """A private Mosquitto and PostgreSQL in a temporary directory, removed afterwards."""
    with private_services(prefix="eldercare-scenarios-") as (broker, database):
        yield ScenarioServices.from_local(broker, database)


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    expectation: Expectation
    verdict: Verdict

    @property
    def passed(self) -> bool:
        return self.verdict.status == "pass"

    def brief(self) -> str:
        e = self.expectation
        return f"#{e.number} (line {e.line}) {describe(e)}: {self.verdict.detail or self.verdict.status}"


@dataclass(slots=True)
class ScenarioResult:
    name: str
    path: str
    status: Literal["pass", "fail", "error"]
    real_s: float = 0.0
    scenario_s: float = 0.0
    speed: float = 0.0
    expectations: list[ExpectationResult] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.expectations if not r.passed]


@dataclass(slots=True)
class RunReport:
    results: list[ScenarioResult]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.results and self.failed == 0 else 1

    def table(self) -> str:
        from simulators.scenario.report import render_table

        return render_table(self.results)


def base_sections(config_path: str | Path | None) -> dict[str, Any]:
    """The ``detect`` and ``escalation`` sections of a gateway config file (the policies under test)."""
    if config_path is None:
        return {}
    try:
        raw = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"{config_path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{config_path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: the top level must be a mapping of sections")
    return {k: raw[k] for k in ("detect", "escalation") if isinstance(raw.get(k), dict)}


def effective_speed(scenario: Scenario, speed: float | None) -> float:
    chosen = speed or scenario.speed or DEFAULT_SPEED
    return min(chosen, scenario.max_speed) if scenario.max_speed else chosen


def _prepare_database(dsn: str, registry: RegistryFile) -> None:
    """Schema and registry, as ``eldercare db upgrade`` and ``registry import`` would make them
    (the gateway then loads the registry from the database: no large YAML file to parse)."""
    upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        import_registry(conn, registry)


def _gateway_config(
    scenario: Scenario,
    services: ScenarioServices,
    dsn: str,
    fake: FakeTwilio,
    http_port: int,
    workdir: Path,
    speed: float,
    base: dict[str, Any],
) -> dict[str, Any]:
    over = scenario.gateway
    escalation = {**(base.get("escalation") or msgspec.to_builtins(DEFAULT_ESCALATION)), **over.get("escalation", {})}
    public = f"http://127.0.0.1:{http_port}"
    return {
        "mqtt": {
            "host": services.broker_host,
            "port": services.broker_port,
            "client_id": f"scenario-gw-{uuid.uuid4().hex[:10]}",
            "session_expiry_s": 30,
        },
        "database": {"dsn": dsn, "pool_min": 1, "pool_max": 8},
        "storage": {"spool_dir": str(workdir / "spool")},
        "ingest": over.get("ingest", {}),
        "detect": {"timezone": scenario.timezone, **base.get("detect", {}), "tick_s": 0.02, **over.get("detect", {})},
        "escalation": escalation,
        # a claimed page's lease is for crashes; in scenario time it must still last a few real seconds
        "notify": {
            "http_port": http_port,
            "public_base_url": public,
            "lease_s": 20.0 * speed,
            "twilio": {
                "account_sid": TWILIO_SID,
                "auth_token": TWILIO_TOKEN,
                "sms_from": TWILIO_FROM,
                "voice_from": TWILIO_FROM,
                "base_url": fake.base_url,
            },
            **over.get("notify", {}),
        },
        "logging": {"level": "WARNING"},
    }


class _Play:
    """One scenario being played."""

    def __init__(
        self,
        scenario: Scenario,
        services: ScenarioServices,
        speed: float,
        base: dict[str, Any],
        narrate: Narrate | None,
    ) -> None:
        self.s = scenario
        self.services = services
        self.speed = speed
        self.base = base
        self.clock = ScenarioClock(start_ms_for(scenario.start_local, scenario.timezone), speed)
        self.zone = ZoneInfo(scenario.timezone)
        self._narrate = narrate
        self.notes: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()  # console actions on their way

    def narrate(self, text: str) -> None:
        if self._narrate is not None:
            at = datetime.fromtimestamp(self.clock.now_ms() / 1000, self.zone).strftime("%H:%M:%S")
            self._narrate(f"[{at} +{format_duration(self.clock.elapsed_s())}] {text}")

    async def run(self) -> ScenarioResult:
        result = ScenarioResult(self.s.name, self.s.path, "error", speed=self.speed)
        started = time.monotonic()
        dbname = f"scenario_{re.sub(r'[^a-z0-9]', '_', self.s.name.lower())[:30]}_{uuid.uuid4().hex[:6]}"
        dsn = self.services.database_dsn(dbname)
        workdir = Path(tempfile.mkdtemp(prefix="eldercare-scenario-"))
        try:
            await asyncio.to_thread(self._create_database, dbname)
            try:
                result = await self._play(dsn, workdir, result)
            finally:
                await asyncio.to_thread(self._drop_database, dbname)
        except (ScenarioRunError, ConfigError) as error:
            result.status, result.error = "error", str(error)
        except (OSError, psycopg.Error) as error:
            result.status, result.error = "error", f"{type(error).__name__}: {error}"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result.real_s = time.monotonic() - started
        result.notes.extend(self.notes)
        return result

    def _create_database(self, name: str) -> None:
        with psycopg.connect(self.services.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _drop_database(self, name: str) -> None:
        with psycopg.connect(self.services.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    async def _play(self, dsn: str, workdir: Path, result: ScenarioResult) -> ScenarioResult:
        # An answered call waits at least 5 scenario minutes for a key press, whatever the speed. The fake
        # runs on a loop of its own: the gateway's responder thread calls it, and this loop is busy.
        fake = FakeTwilio(TWILIO_SID, TWILIO_TOKEN, step_s=0.02, answered_call_s=max(5.0, 300.0 / self.speed))
        with running_in_thread(fake):
            return await self._play_with(fake, dsn, workdir, result)

    async def _play_with(self, fake: FakeTwilio, dsn: str, workdir: Path, result: ScenarioResult) -> ScenarioResult:
        s = self.s
        http_port = free_port()
        await asyncio.to_thread(_prepare_database, dsn, s.world.registry_file)
        (workdir / "config.yaml").write_text(
            yaml.safe_dump(
                _gateway_config(s, self.services, dsn, fake, http_port, workdir, self.speed, self.base),
                allow_unicode=True,
            ),
            "utf-8",
        )
        config = load_config(workdir / "config.yaml", environ={})
        gateway = Gateway(config, clock_ms=self.clock.now_ms)
        stop = asyncio.Event()
        gateway_task = asyncio.create_task(gateway.run(stop), name=f"scenario-gateway-{s.name}")
        fleet: ScenarioFleet | None = None
        observer: Observer | None = None
        people = People(
            s.world, fake, self.clock, TWILIO_FROM, f"http://127.0.0.1:{http_port}/twilio/sms", self.narrate
        )
        try:
            await self._wait_ready(gateway, gateway_task)
            fleet = ScenarioFleet(s.world, self.clock, self.services.broker_port, self.services.broker_host)
            observer = Observer(dsn, fake, self.clock, gateway)
            people.configure()
            verdicts = await self._loop(gateway, gateway_task, fleet, observer, people, fake)
            result.expectations = [ExpectationResult(e, v) for e, v in zip(s.expectations, verdicts, strict=True)]
            result.status = "pass" if all(r.passed for r in result.expectations) else "fail"
            result.scenario_s = self.clock.elapsed_s()
            result.notes.extend(people.notes)
        finally:
            await people.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if fleet is not None:
                fleet.close()
            if observer is not None:
                await observer.close()
            stop.set()
            try:
                await asyncio.wait_for(gateway_task, 30)
            except Exception as error:  # a gateway that failed is reported, not raised over the result
                if result.status != "error":
                    result.status, result.error = "error", f"gateway failed: {error}"
        return result

    async def _wait_ready(self, gateway: Gateway, task: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + 60
        while not (gateway.ready.is_set() and gateway.mqtt.connected.is_set()):
            if task.done():
                error = task.exception()
                raise ScenarioRunError(f"the gateway stopped while starting: {error!r}")
            if time.monotonic() > deadline:
                raise ScenarioRunError("the gateway was not ready within 60 s")
            await asyncio.sleep(0.02)

    async def _loop(
        self,
        gateway: Gateway,
        gateway_task: asyncio.Task[None],
        fleet: ScenarioFleet,
        observer: Observer,
        people: People,
        fake: FakeTwilio,
    ) -> list[Verdict]:
        s = self.s
        clock = self.clock
        steps = list(s.timeline)
        verdicts: list[Verdict | None] = [None] * len(s.expectations)
        # Above real time the clock holds at each next thing the scenario does, and stands still
        # while the gateway is still taking in what was sent; at speed 1 it just runs.
        holding = self.speed > 1
        small_world = fleet.reporting <= 20  # then every periodic report is a point to hold at too
        clock.hold_at(0.0 if holding else math.inf)
        clock.start()
        self.narrate(f"scenario {s.name} starts at speed {self.speed:g}")
        next_nudge = next_poll = 0.0
        next_check = math.inf
        busy_since: float | None = None
        quiet_s: float | None = None  # the last scenario time the gateway was seen with nothing left to do
        shown = [0, 0, 0]  # detections, messages, calls narrated so far
        while True:
            if gateway_task.done():
                error = gateway_task.exception() if not gateway_task.cancelled() else None
                raise ScenarioRunError(f"the gateway stopped during the scenario: {error!r}")
            now_s = clock.elapsed_s()
            acted = 0
            while steps and steps[0].at_s <= now_s:
                self._do(steps.pop(0), now_s, fleet, people, gateway)
                acted += 1
            acted += fleet.due(now_s) + people.due(now_s)
            real = time.monotonic()
            if real >= next_nudge and gateway.alert_side is not None:
                gateway.alert_side.wake_alerts()  # escalation timers are checked now, not in a real second
                next_nudge = real + NUDGE_REAL_S
            if holding:
                pending, next_check = await observer.pending()
                stats = gateway.stats
                # a page that just reached a phone: its person's answer is timed from it, so look now
                unseen = people.unseen
                if unseen:
                    next_poll = 0.0
                busy = bool(
                    acted
                    or pending
                    or unseen
                    or people.busy
                    or self._tasks
                    or fleet.unacknowledged()
                    or stats.acked + stats.ack_dropped < fleet.sent
                )
                if busy and busy_since is None:
                    busy_since = real
                elif not busy:
                    busy_since, quiet_s = None, now_s
                if busy and real - (busy_since or real) > HOLD_MAX_REAL_S:
                    self.notes.append(
                        f"the gateway was still busy {HOLD_MAX_REAL_S:g} s (real) after "
                        f"{format_duration(now_s)}; the clock went on"
                    )
                    holding, quiet_s = False, None
                    clock.hold_at(math.inf)
                elif busy:
                    clock.hold_at(now_s)
                else:
                    clock.hold_at(
                        min(
                            steps[0].at_s if steps else math.inf,
                            people.next_due_s(),
                            next_check,
                            fleet.next_report_s() if small_world else math.inf,
                        )
                    )
            if real >= next_poll:
                t0 = time.monotonic()
                obs = await observer.snapshot(quiet_s)
                next_poll = time.monotonic() + max(POLL_REAL_S, 3 * (time.monotonic() - t0))
                people.notice(obs)
                if self._narrate is not None:
                    self._narrate_new(gateway, fake, shown)
                final = obs.settled_s >= s.end_s and not steps
                for i, e in enumerate(s.expectations):
                    if verdicts[i] is None:
                        v = judge(e, obs, final=final)
                        if v.status != "pending":
                            verdicts[i] = v
                            if self._narrate is not None:
                                self.narrate(f"expect #{e.number} {v.status.upper()}: {describe(e)}: {v.detail}")
                if all(v is not None for v in verdicts) and not steps:
                    return [v for v in verdicts if v is not None]
                if final:  # judge(final=True) decides everything; this is a guard
                    return [v or Verdict("fail", "undecided at the end") for v in verdicts]
            await asyncio.sleep(TICK_REAL_S)

    def _do(self, step: Step, now_s: float, fleet: ScenarioFleet, people: People, gateway: Gateway) -> None:
        self.narrate(f"scenario: {step.say or _say(step)}")
        if step.action == "press":
            assert step.person is not None
            people.press_latest(step.person, str(step.value))
            return
        if step.action == "sms":
            assert step.person is not None
            people.text(step.person, str(step.value))
            return
        if step.action == "resolve":
            self._resolve(step, gateway)
            return
        for elder_id, device_id in zip(step.elders, step.devices, strict=True):
            elder = self.s.world.elders[elder_id]
            if step.action == "event":
                fleet.event(device_id, str(step.value), now_s)
            elif step.action == "reading":
                fleet.reading(device_id, step.value, now_s)
            elif step.action == "status":
                fleet.status(device_id, step.value, now_s)
            elif step.action == "walk":
                fleet.walk(elder, device_id, step.value, now_s)
            elif step.action == "accel":
                fleet.accel(device_id, str(step.value), now_s)
            elif step.action == "get_up":
                fleet.get_up(device_id, int(step.value), now_s)
            elif step.action == "silent":
                fleet.set_silent(device_id, bool(step.value), now_s)

    def _resolve(self, step: Step, gateway: Gateway) -> None:
        spec = step.value
        elder_id = step.elders[0]

        async def act() -> None:
            async with await psycopg.AsyncConnection.connect(gateway.config.database.dsn) as conn:
                cur = await conn.execute(
                    "SELECT code FROM alerts WHERE elder_id = %s AND kind = %s AND state <> "
                    "'resolved' ORDER BY alert_id DESC LIMIT 1",
                    (elder_id, spec.kind),
                )
                row = await cur.fetchone()
            if row is None:
                self.notes.append(f"{spec.by} found no open {spec.kind} alert of {elder_id} to resolve")
                return
            assert gateway.alert_side is not None  # the alert engine lives on the alert side's loop
            await gateway.alert_side.call(
                gateway.alerts.resolve(row[0], spec.by, "console", spec.outcome, note=spec.note)
            )

        task = asyncio.create_task(act(), name="scenario-resolve")
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.notes.append(f"resolve failed: {t.exception()}")

        task.add_done_callback(done)

    def _narrate_new(self, gateway: Gateway, fake: FakeTwilio, shown: list[int]) -> None:
        names = {e.id: e.name for e in self.s.world.elders.values()}
        people = {p.phone: p.name for p in self.s.world.people}
        for d in gateway.detections[shown[0] :]:
            state = "cleared" if d.cleared else d.severity
            self.narrate(f"  detected: {names.get(d.elder_id or '', d.device_id)} {d.kind} {state}")
        shown[0] = len(gateway.detections)
        messages, calls = fake.messages, fake.calls
        for m in messages[shown[1] :]:
            if m.accepted:
                self.narrate(f"  SMS  -> {people.get(m.to, '?')} ({redact_phone(m.to)}): {m.body}")
        for c in calls[shown[2] :]:
            if c.accepted:
                self.narrate(f"  CALL -> {people.get(c.to, '?')} ({redact_phone(c.to)})")
        shown[1], shown[2] = len(messages), len(calls)


def _say(step: Step) -> str:
    who = ", ".join(step.elders[:3]) + (f" and {len(step.elders) - 3} more" if len(step.elders) > 3 else "")
    value = step.value
    if step.action in ("press", "sms"):
        return f"{step.person} {'presses' if step.action == 'press' else 'texts'} {value}"
    if step.action == "walk":
        to = value.to if value.to == "home" else {k: v for k, v in msgspec.to_builtins(value.to).items() if v}
        return f"{who} walks to {to} at {value.speed:g} m/s"
    if step.action == "resolve":
        return f"{value.by} closes the {value.kind} alert of {who} ({value.outcome})"
    return f"{who}: {step.action} {value}"


async def run_scenario(
    scenario: Scenario,
    services: ScenarioServices,
    *,
    speed: float | None = None,
    base: dict[str, Any] | None = None,
    narrate: Narrate | None = None,
) -> ScenarioResult:
    """Play one loaded scenario against a new gateway on ``services``."""
    return await _Play(scenario, services, effective_speed(scenario, speed), base or {}, narrate).run()


async def run_scenarios(
    paths: Sequence[str | Path | Scenario],
    *,
    speed: float | None = None,
    services: ScenarioServices | None = None,
    config: str | Path | None = None,
    narrate: Narrate | None = None,
    progress: Callable[[ScenarioResult], None] | None = None,
) -> RunReport:
    """Load and play scenarios one after another; every one gets a clean world.

    ``paths`` may mix files and already loaded scenarios (a file that does not load
    raises :class:`~simulators.scenario.errors.ScenarioError` before anything runs).
    ``services``: a broker and PostgreSQL to share; None starts private ones for the
    run. ``config``: a gateway config file whose detect and escalation sections are
    used (default: the shipped policies). ``narrate`` gets a line per thing that
    happens; ``progress`` each result as it is known.
    """
    scenarios = [p if isinstance(p, Scenario) else load_scenario(p) for p in paths]
    base = base_sections(config)
    results: list[ScenarioResult] = []
    with contextlib.ExitStack() as stack:
        if services is None:
            services = await asyncio.to_thread(stack.enter_context, private_scenario_services())
        for scenario in scenarios:
            result = await run_scenario(scenario, services, speed=speed, base=base, narrate=narrate)
            results.append(result)
            if progress is not None:
                progress(result)
    return RunReport(results)
