"""The alert engine against real PostgreSQL with a clock the test moves: no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from gateway.alerting.downlinks import Downlink
from gateway.alerting.engine import AlertEngine
from gateway.alerting.policy import load_escalation
from gateway.domain.registry import RegistryFile, registry_from_dicts
from gateway.storage.schema import upgrade
from tests.support import query

T = TypeVar("T")
SH = ZoneInfo("Asia/Shanghai")
T0 = int(datetime(2026, 11, 23, 10, 0, tzinfo=SH).timestamp() * 1000)  # Monday 10:00 Shanghai
S = 1000
MIN = 60 * S

ELDER = {
    "id": "e1",
    "name": "王秀英",
    "community": "c1",
    "grid": "g1",
    "home": {"lat": 31.2304, "lon": 121.4737},
    "contacts": [
        {"name": "李娜", "phone": "+8613800000002", "relation": "daughter", "priority": 2},
        {"name": "王强", "phone": "+8613800000001", "relation": "son", "priority": 1},
    ],
    "devices": [{"id": "wb-1", "type": "wristband"}, {"id": "pg-1", "type": "pager"}],
}
RESPONDERS = [
    {
        "id": "grid-day",
        "name": "王芳",
        "role": "grid_worker",
        "phone": "+8613900000001",
        "grid": "g1",
        "shifts": ["daily 08:00-20:00"],
    },
    {
        "id": "grid-night",
        "name": "赵刚",
        "role": "grid_worker",
        "phone": "+8613900000002",
        "grid": "g1",
        "shifts": ["daily 20:00-08:00"],
    },
    {"id": "grid-other", "name": "孙丽", "role": "grid_worker", "phone": "+8613900000003", "grid": "g2"},
    {"id": "station", "name": "幸福社区养老驿站", "role": "post_station", "phone": "+8621000000001", "community": "c1"},
    {"id": "hotline", "name": "24小时热线", "role": "hotline", "phone": "+8640000000001"},
]
POLICIES: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "quiet_hours": "22:00-07:00",
    "on_scene_margin_s": 300,
    "default_eta_s": 900,
    "policies": [
        {
            "name": "sos",
            "kinds": ["sos"],
            "confirm_window_s": 0,
            "start_tiers": 2,
            "tiers": [
                {"roles": {"family": ["sms", "voice"]}, "wait_s": 120},
                {"roles": {"grid_worker": ["voice"]}, "wait_s": 180},
                {"roles": {"post_station": ["voice"]}, "wait_s": 180},
                {"roles": {"hotline": ["voice"]}, "wait_s": 120},
            ],
        },
        {
            "name": "fall",
            "kinds": ["fall"],
            "confirm_window_s": 60,
            "tiers": [
                {"roles": {"family": ["voice"]}, "wait_s": 120},
                {"roles": {"grid_worker": ["voice"]}, "wait_s": 180},
                {"roles": {"hotline": ["voice"]}, "wait_s": 120},
            ],
        },
        {
            "name": "default",
            "kinds": ["*"],
            "confirm_window_s": 0,
            "tiers": [
                {"roles": {"family": ["sms"]}, "wait_s": 600, "repeat": 2},
                {"roles": {"post_station": ["sms"]}, "wait_s": 600},
            ],
        },
    ],
}


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


class World:
    """A database with the schema, one elder, responders, and engines sharing a clock."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.clock = Clock()
        self.registry: RegistryFile = registry_from_dicts([ELDER], RESPONDERS)
        self.escalation = load_escalation(POLICIES)
        self.downlinks: list[Downlink] = []

    async def engine(self, pool: AsyncConnectionPool) -> AlertEngine:
        async def send(command: Downlink) -> None:
            self.downlinks.append(command)

        return AlertEngine(pool, self.escalation, self.registry, self.clock, send)

    def detect(
        self, kind: str, severity: str = "critical", *, cleared: bool = False, device: str = "wb-1", **evidence: Any
    ) -> None:
        with psycopg.connect(self.dsn) as conn:
            conn.execute(
                "INSERT INTO detections (elder_id, device_id, kind, severity, ts, cleared, evidence) "
                "VALUES ('e1', %s, %s, %s, to_timestamp(%s / 1000.0), %s, %s)",
                (device, kind, severity, self.clock.ms, cleared, Jsonb(evidence)),
            )

    def pages(self) -> list[tuple[int, str, str]]:
        """(tier, recipient, channel) of every page, in order."""
        return [
            (t, n, c)
            for t, n, c in query(
                self.dsn, "SELECT tier, recipient_name, channel FROM notifications WHERE purpose = 'page' ORDER BY id"
            )
        ]

    def alert(self) -> tuple[Any, ...]:
        rows = query(
            self.dsn,
            "SELECT code, state, severity, detection_count, outcome FROM alerts ORDER BY alert_id DESC LIMIT 1",
        )
        return rows[0] if rows else ()


@pytest.fixture
def world(database: str) -> Iterator[World]:
    upgrade(database)
    yield World(database)


def scenario(world: World, body: Callable[[AlertEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        async with AsyncConnectionPool(world.dsn, min_size=1, max_size=4) as pool:
            await body(await world.engine(pool))

    run(main())


async def step(engine: AlertEngine) -> None:
    await engine.process_detections()
    await engine.run_due()


def test_each_tier_fires_at_its_time_and_the_last_repeats_until_taken(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        # SOS: no confirmation window, tiers 0 and 1 start together
        assert world.pages() == [
            (0, "王强", "sms"),
            (0, "王强", "voice"),
            (0, "李娜", "sms"),
            (0, "李娜", "voice"),
            (1, "王芳", "voice"),
        ]
        world.clock.advance(180 * S - 1)
        await step(engine)
        assert len(world.pages()) == 5  # 1 ms before the grid worker's wait ends: nothing
        world.clock.advance(1)
        await step(engine)
        assert world.pages()[-1] == (2, "幸福社区养老驿站", "voice")
        world.clock.advance(180 * S)
        await step(engine)
        assert world.pages()[-1] == (3, "24小时热线", "voice")
        for _ in range(4):  # the hotline tier repeats every 120 s until someone takes it
            world.clock.advance(120 * S)
            await step(engine)
        assert [p for p in world.pages() if p[0] == 3] == [(3, "24小时热线", "voice")] * 5
        rounds = query(world.dsn, "SELECT round FROM tier_firings WHERE tier = 3 ORDER BY round")
        assert [r for (r,) in rounds] == [1, 2, 3, 4, 5]

    scenario(world, body)


def test_an_ack_stops_escalation_and_tells_the_others(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        code = world.alert()[0]
        taken = await engine.acknowledge(code, "王芳", "voice", actor_key="responder:grid-day", eta_s=600)
        assert taken.state == "acknowledged" and taken.acknowledged_by == "王芳"
        for _ in range(5):
            world.clock.advance(120 * S)
            await step(engine)
        assert len(world.pages()) == 5  # nothing more was paged while the ETA holds
        informed = query(
            world.dsn,
            "SELECT recipient_name, purpose FROM notifications WHERE purpose = 'taken' ORDER BY recipient_name",
        )
        assert informed == [("李娜", "taken"), ("王强", "taken")]  # not the one who took it
        assert world.downlinks[-1].payload["cmd"] == "help_coming"
        assert world.downlinks[-1].device_id == "wb-1"
        # a repeated acknowledgement (Twilio retries a webhook) changes nothing
        again = await engine.acknowledge(code, "王芳", "voice", actor_key="responder:grid-day")
        assert again.acknowledged_ms == taken.acknowledged_ms

    scenario(world, body)


def test_next_tier_when_the_responder_who_took_it_is_not_on_scene_in_time(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        code = world.alert()[0]
        await engine.acknowledge(code, "王芳", "sms", eta_s=600)
        world.clock.advance(600 * S + 300 * S - 1)
        await step(engine)
        assert len(world.pages()) == 5
        world.clock.advance(1)
        await step(engine)
        assert world.pages()[-1] == (2, "幸福社区养老驿站", "voice")
        events = [e for (e,) in query(world.dsn, "SELECT event FROM alert_events ORDER BY id")]
        assert events[-2:] == ["ack_lapsed", "tier_fired"]
        assert world.alert()[1] == "notifying"  # paging resumed with the normal waits
        world.clock.advance(180 * S - 1)
        await step(engine)
        assert world.pages()[-1][0] == 2  # no cascade through the remaining tiers
        world.clock.advance(1)
        await step(engine)
        assert world.pages()[-1] == (3, "24小时热线", "voice")

    scenario(world, body)


def test_on_scene_by_position_and_resolution_with_outcome(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        code = world.alert()[0]
        await engine.acknowledge(code, "王芳", "voice", eta_s=600)
        assert await engine.responder_position("王芳", 31.2400, 121.4737) == []  # 1 km away
        assert await engine.responder_position("王芳", 31.2305, 121.4738) == [code]
        assert world.alert()[1] == "on_scene"
        world.clock.advance(3600 * S)
        await step(engine)
        assert len(world.pages()) == 5  # on scene: no more escalation
        done = await engine.resolve(code, "王芳", "console", "handled_at_home", note="低血糖，已喂糖水")
        assert done.state == "resolved" and done.outcome == "handled_at_home"
        trail = query(world.dsn, "SELECT event, actor, channel FROM alert_events ORDER BY id")
        assert [e for e, _, _ in trail][:1] == ["opened"]
        assert ("acknowledged", "王芳", "voice") in trail and ("on_scene", "王芳", "position") in trail
        assert ("resolved", "王芳", "console") in trail
        with pytest.raises(Exception, match="already resolved"):
            await engine.resolve(code, "someone", "console", "other")

    scenario(world, body)


def test_repeated_detections_update_one_alert(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        for severity, hr in (("warning", 118), ("warning", 120), ("critical", 140)):
            world.detect("hr_high", severity, hr=hr)
            world.clock.advance(S)
        await step(engine)
        assert query(world.dsn, "SELECT count(*) FROM alerts") == [(1,)]
        _, state, severity, count, _ = world.alert()
        assert (state, severity, count) == ("notifying", "critical", 3)
        assert query(world.dsn, "SELECT count(*) FROM detections WHERE handled") == [(3,)]

    scenario(world, body)


def test_clearable_kinds_resolve_themselves_sos_and_fall_never_do(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("geofence_exit", "warning", fence="home")
        await step(engine)
        world.detect("geofence_exit", "warning", cleared=True, fence="home")
        await step(engine)
        assert query(world.dsn, "SELECT kind, state, outcome, resolved_by FROM alerts") == [
            ("geofence_exit", "resolved", "condition_cleared", "system")
        ]
        world.detect("sos")
        await step(engine)
        world.detect("sos", "info", cleared=True)  # cleared but not withdrawn by the elder
        await step(engine)
        assert query(world.dsn, "SELECT state FROM alerts WHERE kind = 'sos'") == [("notifying",)]
        world.clock.advance(5 * MIN)
        world.detect("fall", "warning")
        await step(engine)
        world.clock.advance(61 * S)  # confirmation window over: paging
        await step(engine)
        world.detect("fall", "warning", cleared=True)  # moving again
        await step(engine)
        assert query(world.dsn, "SELECT state, recovered FROM alerts WHERE kind = 'fall'") == [("notifying", True)]

        def fall_pages() -> list[tuple[Any, ...]]:
            return query(
                world.dsn,
                "SELECT n.tier FROM notifications n JOIN alerts a USING (alert_id) "
                "WHERE a.kind = 'fall' AND n.purpose = 'page'",
            )

        assert fall_pages() == [(0,), (0,)]
        world.clock.advance(30 * MIN)
        await step(engine)
        assert fall_pages() == [(0,), (0,)]  # recovered: no tier beyond those already paged
        stopped = "SELECT count(*) FROM alert_events WHERE event = 'escalation_stopped'"
        assert query(world.dsn, stopped) == [(1,)]
        # the SOS, never auto-resolved, kept escalating meanwhile
        assert query(
            world.dsn, "SELECT max(n.tier) FROM notifications n JOIN alerts a USING (alert_id) WHERE a.kind = 'sos'"
        ) == [(3,)]

    scenario(world, body)


def test_elder_cancel_inside_the_confirmation_window_is_a_false_alarm(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("fall", "warning")
        await step(engine)
        assert world.alert()[1] == "confirming"
        assert world.downlinks[-1].payload["cmd"] == "confirm"  # "are you OK?" to the band
        world.clock.advance(30 * S)
        await step(engine)
        assert world.pages() == []  # still asking the elder
        world.detect("cancel", "info")
        await step(engine)
        assert world.alert()[1:] == ("resolved", "warning", 1, "false_alarm")
        assert world.pages() == []
        # the same fall with no answer: the window ends and tier 1 is paged
        world.detect("fall", "warning")
        await step(engine)
        world.clock.advance(60 * S)
        await step(engine)
        assert world.pages() == [(0, "王强", "voice"), (0, "李娜", "voice")]

    scenario(world, body)


def test_withdrawn_sos_resolves_and_sends_a_retraction(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        world.clock.advance(10 * S)
        world.detect("sos", "info", cleared=True, withdrawn=True)
        await step(engine)
        assert world.alert()[1] == "resolved" and world.alert()[4] == "false_alarm"
        retractions = query(
            world.dsn, "SELECT DISTINCT recipient_name FROM notifications WHERE purpose = 'retraction' ORDER BY 1"
        )
        assert retractions == [("李娜",), ("王强",), ("王芳",)]

    scenario(world, body)


def test_a_late_cancel_retracts_to_everyone_paged_and_stops_new_tiers(world: World) -> None:
    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        world.clock.advance(60 * S)
        world.detect("cancel_late", "info", of="sos", cancelled_after_s=60)
        await step(engine)
        told = query(
            world.dsn, "SELECT DISTINCT recipient_name FROM notifications WHERE purpose = 'retraction' ORDER BY 1"
        )
        assert told == [("李娜",), ("王强",), ("王芳",)]
        assert world.alert()[1] == "notifying"  # still open: a person closes it
        before = len(world.pages())
        world.clock.advance(30 * MIN)
        await step(engine)
        assert len(world.pages()) == before

    scenario(world, body)


def test_quiet_hours_delay_a_warning_but_never_a_critical(world: World) -> None:
    world.clock.ms = int(datetime(2026, 11, 23, 23, 30, tzinfo=SH).timestamp() * 1000)

    async def body(engine: AlertEngine) -> None:
        world.detect("low_battery", "warning", battery_pct=12)
        world.detect("sos", device="pg-1")
        await step(engine)
        assert {t for t, _, _ in world.pages()} == {0, 1}  # the SOS pages family and grid at once
        assert not [
            p
            for p in query(
                world.dsn,
                "SELECT a.kind FROM notifications n JOIN alerts a USING (alert_id) WHERE a.kind = 'low_battery'",
            )
        ]
        world.clock.ms = int(datetime(2026, 11, 24, 7, 0, tzinfo=SH).timestamp() * 1000)
        await step(engine)
        battery = query(
            world.dsn,
            "SELECT n.recipient_name FROM notifications n JOIN alerts a "
            "USING (alert_id) WHERE a.kind = 'low_battery' ORDER BY n.id",
        )
        assert battery == [("王强",), ("李娜",)]

    scenario(world, body)


def test_roster_change_at_a_shift_boundary(world: World) -> None:
    world.clock.ms = int(datetime(2026, 11, 23, 7, 59, 59, tzinfo=SH).timestamp() * 1000)

    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)
        assert (1, "赵刚", "voice") in world.pages()  # 07:59:59: the night grid worker
        assert not [p for p in world.pages() if p[1] in ("王芳", "孙丽")]

    scenario(world, body)
    world.clock.ms = int(datetime(2026, 11, 23, 8, 0, tzinfo=SH).timestamp() * 1000)

    async def later(engine: AlertEngine) -> None:
        world.detect("sos", device="pg-1")
        code = world.alert()[0]
        await engine.resolve(code, "test", "console", "other")
        await step(engine)
        assert world.pages()[-1] == (1, "王芳", "voice")  # 08:00:00: the day grid worker

    scenario(world, later)


def test_restart_mid_escalation_continues_where_it_was(world: World) -> None:
    async def first(engine: AlertEngine) -> None:
        world.detect("sos")
        await step(engine)

    scenario(world, first)  # the engine (and its pool) is gone: a crash or a restart
    world.clock.advance(180 * S)

    async def second(engine: AlertEngine) -> None:
        await step(engine)
        assert world.pages()[-1] == (2, "幸福社区养老驿站", "voice")
        assert len(world.pages()) == 6

    scenario(world, second)


def test_two_engines_on_one_database_never_page_a_tier_twice(world: World) -> None:
    async def body(a: AlertEngine) -> None:
        async with AsyncConnectionPool(world.dsn, min_size=2, max_size=4) as pool_b:
            b = await world.engine(pool_b)
            world.detect("sos")
            world.detect("sos", device="pg-1")
            for _round in range(12):
                await asyncio.gather(step(a), step(b), step(a), step(b))
                world.clock.advance(60 * S)
        firings = query(world.dsn, "SELECT tier, round, count(*) FROM tier_firings GROUP BY 1, 2 HAVING count(*) > 1")
        assert firings == []
        keys = query(world.dsn, "SELECT idempotency_key, count(*) FROM notifications GROUP BY 1 HAVING count(*) > 1")
        assert keys == []
        assert {t for t, _, _ in world.pages()} == {0, 1, 2, 3}

    scenario(world, body)


def test_detections_are_applied_by_one_engine_at_a_time(world: World) -> None:
    """While another engine holds the detections lock, this one applies nothing and leaves the rows."""
    from gateway.alerting.intake import DETECTIONS_LOCK

    async def body(engine: AlertEngine) -> None:
        world.detect("sos")
        world.detect("sos", device="wb-2")
        with psycopg.connect(world.dsn) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (DETECTIONS_LOCK,))  # its transaction stays open
            assert await engine.process_detections() == 0
            assert query(world.dsn, "SELECT count(*) FROM detections WHERE NOT handled") == [(2,)]
        assert await engine.process_detections() == 2
        assert await engine.process_detections() == 0  # nothing left: one row of NULLs, not a detection
        assert query(world.dsn, "SELECT count(*) FROM detections WHERE NOT handled") == [(0,)]
        assert query(world.dsn, "SELECT detection_count FROM alerts") == [(2,)]  # one elder, one SOS alert
        assert query(world.dsn, "SELECT count(*) FROM alert_events WHERE event = 'opened'") == [(1,)]

    scenario(world, body)


def test_a_rolled_back_transaction_sends_no_device_command(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An "are you OK?" queued in a transaction that failed is never sent, not even by the next commit."""
    from gateway.alerting import intake

    async def body(engine: AlertEngine) -> None:
        real = intake.mark_handled
        calls = {"n": 0}

        async def failing(*args: Any, **kwargs: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("the connection broke mid-transaction")
            await real(*args, **kwargs)

        monkeypatch.setattr(intake, "mark_handled", failing)
        world.detect("fall", "warning")
        with pytest.raises(RuntimeError):
            await engine.process_detections()
        assert world.alert() == ()  # rolled back: no alert
        assert world.downlinks == []
        await engine.run_due()  # another commit must not carry the rolled-back command
        assert world.downlinks == []
        await engine.process_detections()  # the detection is still unhandled: now it opens once
        assert [d.payload["cmd"] for d in world.downlinks] == ["confirm"]
        assert world.alert()[1] == "confirming"

    scenario(world, body)
