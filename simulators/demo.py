"""``eldercare-sim demo``: the whole product on this machine, with nothing to configure.

Starts a private Mosquitto and PostgreSQL in a temporary directory, the gateway, and
a simulated community of 50 elders whose wristbands report every few seconds. Then
it plays a script of emergencies (an SOS, a severe hypoglycaemia, a hypertensive
crisis, a fall with no recovery, a dementia patient leaving home and coming back, an
SOS pressed by mistake and cancelled, a wristband that goes silent) and prints what
the gateway detects as it happens. Ends with a summary; exits 0 only if every
scripted emergency was detected as expected. Ctrl-C, SIGTERM or SIGHUP stops everything it
started and removes its temporary folders (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.alerting.policy import DEFAULT_ESCALATION, EscalationConfig
from gateway.config import load_config
from gateway.service import Gateway
from simulators.community import SimElder, build, offset
from simulators.demo_providers import ALIYUN_KEY, ALIYUN_SECRET, ALIYUN_TOKEN, DemoProviders, aliyun_config
from simulators.demo_services import demo_services
from simulators.providers.china.aliyun import FakeAliyun
from simulators.providers.twilio.server import FakeTwilio, running_in_thread
from simulators.services.process import free_port

TWILIO_SID, TWILIO_TOKEN = "AC" + "d" * 32, "demo-token"


def compressed(escalation: EscalationConfig, factor: float) -> dict[str, Any]:
    """The shipped policies with every wait and window divided by ``factor`` (demo time)."""
    raw = msgspec.to_builtins(escalation)
    for policy in raw["policies"]:
        policy["confirm_window_s"] = round(policy.get("confirm_window_s", 0) / factor)
        for tier in policy["tiers"]:
            tier["wait_s"] = max(1, int(tier["wait_s"] / factor))
    raw["quiet_hours"] = None
    return raw  # type: ignore[no-any-return]


SHANGHAI = ZoneInfo("Asia/Shanghai")
KIND_ZH = {
    "sos": "紧急呼叫 SOS",
    "call": "呼叫",
    "fall": "跌倒",
    "fall_no_recovery": "跌倒后未起身",
    "geofence_exit": "离开安全区域",
    "hypoglycaemia": "低血糖",
    "hyperglycaemia": "高血糖",
    "hypertensive_crisis": "高血压危象",
    "hypotension": "低血压",
    "hr_high": "心率过快",
    "hr_low": "心率过慢",
    "spo2_low": "血氧过低",
    "low_battery": "电量低",
    "not_worn": "未佩戴",
    "device_silent": "设备离线",
    "inactivity": "长时间无活动",
    "cancel_late": "取消（超时）",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Fleet:
    """The community's devices, publishing over MQTT at QoS 1 (paho-mqtt, as firmware would)."""

    def __init__(self, port: int, elders: list[SimElder]) -> None:
        self.elders = {e.id: e for e in elders}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-fleet", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.silenced: set[str] = set()
        self.position: dict[str, tuple[float, float]] = {e.id: (e.lat, e.lon) for e in elders}
        self.steps: dict[str, int] = {e.id: 1000 + i * 37 for i, e in enumerate(elders)}
        self.sent = 0

    def publish(self, device_type: str, device: str, channel: str, payload: dict[str, Any]) -> None:
        self.client.publish(f"eldercare/v1/{device_type}/{device}/{channel}", json.dumps(payload), qos=1)
        self.sent += 1

    def telemetry(self, tick: int) -> None:
        """Each band reports every 5 s (a fifth of them each second)."""
        t = now_ms()
        for i, elder in enumerate(self.elders.values()):
            if i % 5 != tick % 5 or elder.band in self.silenced:
                continue
            lat, lon = self.position[elder.id]
            self.steps[elder.id] += (i * 3 + tick) % 7
            self.publish(
                "wristband",
                elder.band,
                "telemetry",
                {
                    "ts": t,
                    "lat": round(lat, 6),
                    "lon": round(lon, 6),
                    "gps_acc_m": 8.0,
                    "hr": 68 + (i + tick) % 9,
                    "spo2": 96 + i % 3,
                    "steps": self.steps[elder.id],
                    "battery": 80 - tick * 0.01,
                    "worn": True,
                },
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    says: str
    act: Callable[[Fleet], None]


@dataclass(frozen=True, slots=True)
class Expect:
    elder: str
    kind: str
    cleared: bool = False


def script(elders: list[SimElder]) -> tuple[list[Step], list[Expect]]:
    by = {e.id: e for e in elders}
    sos, hypo, crisis, faller, mistaken, silent = (
        by["e001"],
        by["e007"],
        by["e009"],
        by["e006"],
        by["e011"],
        by["e014"],
    )
    wanderer = next(e for e in elders if e.dementia)

    def event(elder: SimElder, device_type: str, device: str | None, kind: str) -> Callable[[Fleet], None]:
        return lambda f: f.publish(device_type, device or elder.band, "event", {"ts": now_ms(), "event": kind})

    def walk(elder: SimElder, east_m: float) -> Callable[[Fleet], None]:
        def act(f: Fleet) -> None:
            f.position[elder.id] = offset(elder.lat, elder.lon, east_m, 0)

        return act

    steps = [
        Step(2, f"{sos.name} presses the SOS button on the pager", event(sos, "pager", sos.pager, "sos")),
        Step(
            4,
            f"{hypo.name}'s glucose meter reads 2.8 mmol/L",
            lambda f: f.publish(
                "glucose", hypo.glucose or "", "telemetry", {"ts": now_ms(), "glucose": 2.8, "context": "before_meal"}
            ),
        ),
        Step(
            6,
            f"{crisis.name}'s cuff reads 186/124 mmHg",
            lambda f: f.publish(
                "bp", crisis.bp or "", "telemetry", {"ts": now_ms(), "systolic": 186, "diastolic": 124, "pulse": 96}
            ),
        ),
        Step(
            8,
            f"{faller.name}'s band detects a fall; no movement afterwards",
            event(faller, "wristband", faller.band, "fall"),
        ),
        Step(10, f"{wanderer.name} (dementia) walks 400 m away from home", walk(wanderer, 400)),
        Step(12, f"{mistaken.name} presses SOS by mistake ...", event(mistaken, "pager", mistaken.pager, "sos")),
        Step(16, "... and cancels it 4 s later", event(mistaken, "pager", mistaken.pager, "cancel")),
        Step(18, f"{silent.name}'s wristband goes silent (battery pulled)", lambda f: f.silenced.add(silent.band)),
        Step(30, f"{wanderer.name} is brought back home", walk(wanderer, 0)),
    ]
    expects = [
        Expect(sos.id, "sos"),
        Expect(hypo.id, "hypoglycaemia"),
        Expect(crisis.id, "hypertensive_crisis"),
        Expect(faller.id, "fall"),
        Expect(faller.id, "fall_no_recovery"),
        Expect(wanderer.id, "geofence_exit"),
        Expect(wanderer.id, "geofence_exit", cleared=True),
        Expect(mistaken.id, "sos"),
        Expect(mistaken.id, "sos", cleared=True),
        Expect(silent.id, "device_silent"),
    ]
    return steps, expects


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%H:%M:%S")


async def run_demo(duration_s: float = 0.0) -> int:
    elders, registry = build(50)
    http_port = free_port()
    fake = FakeTwilio(TWILIO_SID, TWILIO_TOKEN)
    aliyun = FakeAliyun(ALIYUN_KEY, ALIYUN_SECRET, callback_base=f"http://127.0.0.1:{http_port}", token=ALIYUN_TOKEN)
    await fake.start()
    try:
        # a thread of its own: the demo plays people on it (key presses) from this loop
        with running_in_thread(aliyun):
            async with demo_services() as (broker, database):
                # the gateway's config (the fakes' secrets) and registry (contacts' phone numbers) live here
                work = Path(tempfile.mkdtemp(prefix="eldercare-demo-gw-"))
                providers = DemoProviders(fake, aliyun)
                try:
                    community_failed, expects = await _community(
                        elders, registry, providers, broker, database, work, duration_s, http_port
                    )
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                report = await _play_yaml_scenarios(broker, database)
    finally:
        await fake.stop()
    failed = community_failed + sum(not r.passed for r in report.results)
    passed = len(expects) + COMMUNITY_CHECKS - community_failed + sum(r.passed for r in report.results)
    print(f"scenarios passed={passed} failed={failed}")
    return 0 if failed == 0 else 1


async def _community(
    elders: list[SimElder],
    registry: dict[str, Any],
    providers: DemoProviders,
    broker: Any,
    database: Any,
    work: Path,
    duration_s: float,
    http_port: int,
) -> tuple[int, list[Expect]]:
    """The simulated community and its script; returns the failed checks and what was expected."""
    names = {e.id: e.name for e in elders}
    steps, expects = script(elders)
    timeline_end = max(s.at_s for s in steps) + 12
    fake = providers.twilio
    (work / "registry.yaml").write_text(yaml.safe_dump(registry, allow_unicode=True), "utf-8")
    (work / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "mqtt": {"port": broker.port, "client_id": "demo-gateway"},
                "database": {"dsn": database.dsn},
                "storage": {"spool_dir": str(work / "spool")},
                "notify": {
                    "http_port": http_port,
                    "public_base_url": f"http://127.0.0.1:{http_port}",
                    "twilio": {
                        "account_sid": TWILIO_SID,
                        "auth_token": TWILIO_TOKEN,
                        "sms_from": "+15005550006",
                        "voice_from": "+15005550006",
                        "base_url": fake.base_url,
                    },
                    "aliyun": aliyun_config(providers.aliyun.endpoint),  # +86 numbers first (notify.china_order)
                },
                "escalation": compressed(DEFAULT_ESCALATION, 8),
                "api": {"cookie_secure": False},  # the demo console is plain http on loopback
                "registry": {"file": str(work / "registry.yaml")},
                "detect": {
                    "fall_confirm_s": 10,
                    "fence_dwell_s": 4,
                    "fence_dwell_readings": 1,
                    "fence_reentry_readings": 1,
                    "silent_factor": 2.0,
                    "tick_s": 0.5,
                },
                "logging": {"level": "WARNING"},
            }
        )
    )
    print(
        f"fake Aliyun on {providers.aliyun.endpoint} carries +86 numbers (templates, an IVR call), "
        f"fake Twilio on {fake.base_url} the contact abroad: SMS and calls are recorded, not sent; "
        "escalation waits are 1/8 of the shipped ones so tiers move within the demo"
    )
    mqtt_name = "private Mosquitto" if hasattr(broker, "workdir") else "the embedded broker"
    pg_name = f"PostgreSQL on 127.0.0.1:{database.port}" if database.port else "the embedded PostgreSQL"
    print(f"eldercare-sim demo: {mqtt_name} on 127.0.0.1:{broker.port} and {pg_name} (temporary, removed on exit)")
    print(
        f"community 幸福社区: {len(elders)} elders, "
        f"{sum(len(d['devices']) for d in registry['elders'])} devices, one home fence each\n"
    )
    gateway = Gateway(load_config(work / "config.yaml", environ={}))
    stop = asyncio.Event()
    gateway_task = asyncio.create_task(gateway.run(stop), name="gateway")
    fleet: Fleet | None = None
    try:
        await asyncio.wait_for(gateway.ready.wait(), 30)
        await asyncio.wait_for(gateway.mqtt.connected.wait(), 30)
        accounts = await asyncio.to_thread(console_accounts, database.dsn)
        print(f"operator console: http://127.0.0.1:{gateway.http_port}/console/  (Chinese; add ?lang=en for English)")
        for username, password, who in accounts:
            print(f"  log in as {username} / {password}  — {who}")
        print(flush=True)
        fleet = Fleet(broker.port, elders)
        await _play_community(gateway, fleet, providers, steps, expects, registry, names, timeline_end, duration_s)
    finally:
        if fleet is not None:
            fleet.close()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(gateway_task, 30)
    assert fleet is not None  # (had it not started, the error would be on its way up)
    return _summary(gateway, fleet, providers, expects, names, database.dsn), expects


async def _play_community(
    gateway: Gateway,
    fleet: Fleet,
    providers: DemoProviders,
    steps: list[Step],
    expects: list[Expect],
    registry: dict[str, Any],
    names: dict[str, str],
    timeline_end: float,
    duration_s: float,
) -> None:
    elders = list(fleet.elders.values())
    shown = 0
    providers.people = {c["phone"]: c["name"] for e in registry["elders"] for c in e["contacts"]}
    providers.people.update({r["phone"]: r["name"] for r in registry["responders"]})
    start = time.monotonic()
    pending = list(steps)
    actions = responder_script(elders)
    tick = 0
    while True:
        elapsed = time.monotonic() - start
        while pending and pending[0].at_s <= elapsed:
            step = pending.pop(0)
            print(f"[{_clock(now_ms())}] scenario: {step.says}")
            step.act(fleet)
        fleet.telemetry(tick)
        tick += 1
        for d in gateway.detections[shown:]:
            what = KIND_ZH.get(d.kind, d.kind)
            state = "已解除 cleared" if d.cleared else d.severity.upper()
            who = names.get(d.elder_id or "", d.device_id)
            print(f"[{_clock(d.ts_ms)}]   detected: {who} — {what} ({d.kind}) {state}")
        shown = len(gateway.detections)
        for line in providers.new_lines():
            print(f"[{_clock(now_ms())}]   {line}")
        for act in list(actions):
            if act.at_s <= elapsed:
                actions.remove(act)
                await act.run(gateway, providers, elders)
        if elapsed >= max(timeline_end, duration_s) and (duration_s or not pending):
            if duration_s or _all_seen(gateway, expects):
                return
            if elapsed > timeline_end + 30:
                return
        await asyncio.sleep(1.0)


# YAML scenarios (simulators/scenarios/) the demo plays after its community script, each
# against a fresh gateway and database on the same private broker and server
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEMO_SCENARIOS = ("sos-pressed-by-mistake.yaml", "nobody-in-family-answers.yaml", "dementia-night-walk.yaml")
COMMUNITY_CHECKS = 3


async def _play_yaml_scenarios(broker: Any, database: Any) -> Any:
    from simulators.scenario.runner import ScenarioServices, run_scenarios

    print(f"\nscripted scenarios from {SCENARIO_DIR.name}/ (a fast clock: minutes pass in seconds)")
    report = await run_scenarios(
        [SCENARIO_DIR / name for name in DEMO_SCENARIOS],
        speed=240,
        services=ScenarioServices.from_local(broker, database),
        narrate=lambda line: print(f"  {line}"),
    )
    print("\n".join(report.table().splitlines()[:-1]))  # its count goes into the demo's own last line
    return report


DEMO_ACCOUNTS = (
    ("hotline", "hotline", "热线值班员", "24 小时热线 hotline: sees every alert", None, None),
    ("post", "post_station", "驿站值班员", "驿站值班 post station of 幸福社区", "幸福社区", None),
    (
        "grid1",
        "grid_worker",
        "网格1网格员",
        "网格员 grid worker of 幸福社区 网格1 (only its grid)",
        "幸福社区",
        "网格1",
    ),
)


def console_accounts(dsn: str) -> list[tuple[str, str, str]]:
    """Console users for the demo, each with a fresh random password (printed, never stored)."""
    import secrets

    import psycopg

    from gateway.api.auth import hash_password

    out: list[tuple[str, str, str]] = []
    with psycopg.connect(dsn) as conn:
        for username, role, display, who, community, grid in DEMO_ACCOUNTS:
            password = secrets.token_urlsafe(9)
            conn.execute(
                "INSERT INTO users (username, password_hash, role, display_name, language, community, grid) "
                "VALUES (%s, %s, %s, %s, 'zh', %s, %s)",
                (username, hash_password(password), role, display, community, grid),
            )
            out.append((username, password, who))
    return out


@dataclass(frozen=True, slots=True)
class Act:
    """A responder's action at a time in the script."""

    at_s: float
    says: str
    run_fn: Callable[[Gateway, DemoProviders, list[SimElder]], Any]

    async def run(self, gateway: Gateway, providers: DemoProviders, elders: list[SimElder]) -> None:
        print(f"[{_clock(now_ms())}] responder: {self.says}")
        try:
            await self.run_fn(gateway, providers, elders)
        except Exception as error:  # the demo reports what happened; it must not die here
            print(f"             (could not: {error})")


def responder_script(elders: list[SimElder]) -> list[Act]:
    first = elders[0]

    async def grid_worker_presses_1(gateway: Gateway, providers: DemoProviders, _: list[SimElder]) -> None:
        call = next(c for c in providers.aliyun.calls() if c.to == "13900000001")
        answer = await asyncio.to_thread(providers.aliyun.press_key, call, "1")
        print(f"             key 1 pressed on the Aliyun call; the gateway answers {answer.status}")

    async def resolve(gateway: Gateway, providers: DemoProviders, _: list[SimElder]) -> None:
        import psycopg

        dsn = gateway.config.database.dsn
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute("SELECT code FROM alerts WHERE elder_id = %s AND kind = 'sos'", (first.id,))
            row = await cur.fetchone()
        if row:
            assert gateway.alert_side is not None  # the engine lives on the alert side's loop
            alert = await gateway.alert_side.call(
                gateway.alerts.resolve(row[0], "王芳", "console", "handled_at_home", note="已陪同休息，家属已到")
            )
            print(f"             {alert.code} resolved: {alert.outcome}")

    return [
        Act(9, f"王芳 (grid worker) answers the call about {first.name} and presses 1", grid_worker_presses_1),
        Act(26, f"王芳 is with {first.name} and closes the alert: handled at home", resolve),
    ]


def _all_seen(gateway: Gateway, expects: list[Expect]) -> bool:
    seen = {(d.elder_id, d.kind, d.cleared) for d in gateway.detections}
    return all((e.elder, e.kind, e.cleared) in seen for e in expects)


def _summary(
    gateway: Gateway, fleet: Fleet, providers: DemoProviders, expects: list[Expect], names: dict[str, str], dsn: str
) -> int:
    import psycopg

    seen = {(d.elder_id, d.kind, d.cleared) for d in gateway.detections}
    with psycopg.connect(dsn) as conn:
        opened, acked, resolved = conn.execute(
            "SELECT count(*), count(acknowledged_at), count(resolved_at) FROM alerts"
        ).fetchone() or (0, 0, 0)
        sos_state = conn.execute(
            "SELECT state, acknowledged_by, outcome FROM alerts WHERE elder_id = 'e001' AND kind = 'sos'"
        ).fetchone()
    sms = [m for m in providers.twilio.messages if m.accepted]
    calls = [c for c in providers.twilio.calls if c.accepted]
    china_sms, china_calls = providers.aliyun.messages(), providers.aliyun.calls()
    print("\nsummary")
    print(f"  alerts opened: {opened}, acknowledged: {acked}, resolved: {resolved}")
    print(
        f"  notifications: Aliyun {len(china_sms)} SMS and {len(china_calls)} calls to +86 numbers; "
        f"Twilio {len(sms)} SMS ({sum(1 for m in sms if not m.to.startswith('+86'))} in English) "
        f"and {len(calls)} calls"
    )
    print(
        f"  messages published by the fleet: {fleet.sent:,}; rows stored: {gateway.stats.rows_stored:,}; "
        f"dead letters: {gateway.stats.dead_letters}"
    )
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(gateway.stats.detections.items()))
    print(f"  detections: {by_kind}")
    failed = 0
    for e in expects:
        ok = (e.elder, e.kind, e.cleared) in seen
        failed += not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {names.get(e.elder, e.elder)}: {e.kind}{' cleared' if e.cleared else ''}")
    checks = [
        (
            "SOS paged by SMS and voice through Aliyun",
            any(m.to == "138" + "0" * 8 for m in china_sms) and any(c.to == "13900000001" for c in china_calls),
        ),
        ("English SMS for the contact abroad", any(not m.to.startswith("+86") and "Reply 1" in m.body for m in sms)),
        ("SOS taken by key press, then resolved", sos_state == ("resolved", "王芳", "handled_at_home")),
    ]
    for label, ok in checks:
        failed += not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    return failed


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def run_until_signalled(duration_s: float = 0.0) -> int:
    """The demo, stopped cleanly by SIGTERM, SIGINT (Ctrl-C) or SIGHUP (its terminal closed).

    A signal cancels the demo wherever it is; every stage stops what it started on the
    way out (gateway and its worker, fakes, Mosquitto, PostgreSQL) and the temporary
    folders, which hold the token and the contacts' phone numbers, are removed. Then it
    exits 0: the operator asked for the stop and got it. A second signal does not cut
    the clean-up short.
    """
    demo = asyncio.current_task()
    assert demo is not None
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if not received:
            print(f"\n{sig.name}: stopping the demo and everything it started ...", flush=True)
            demo.cancel()
        received.append(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await run_demo(duration_s)
    except asyncio.CancelledError:
        if not received:
            raise
        print("stopped; everything the demo started has been shut down and its temporary folders removed")
        return 0
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)  # the interpreter's exit is not cut short either


def main(duration_s: float = 0.0) -> int:
    return asyncio.run(run_until_signalled(duration_s))
