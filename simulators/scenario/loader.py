"""Read a scenario file: YAML with line numbers, strict types, cross references.

:func:`load_scenario` returns a :class:`~simulators.scenario.plan.Scenario` or raises
:class:`~simulators.scenario.errors.ScenarioError` with one line naming the file, the
line and the key: an unknown key, a time that cannot be read, an elder or person that
is not in the world, a reading the device contract refuses.
"""

from __future__ import annotations

import math
import re
from pathlib import Path as FilePath
from typing import Any, cast, get_args
from zoneinfo import ZoneInfo

import msgspec
import yaml

from devices.contracts import CONTRACTS, PagerEventKind, WristbandEventKind
from gateway.alerting.policy import KNOWN_KINDS
from simulators.scenario.errors import Locator, Path, ScenarioError
from simulators.scenario.model import (
    ACTIONS,
    ALERT_CHECKS,
    SUBJECTS,
    AcknowledgedIn,
    ExpectIn,
    PlaceIn,
    ResolvedIn,
    ScenarioFile,
    StepIn,
)
from simulators.scenario.plan import (
    Action,
    AlertSelector,
    Check,
    DetectionSelector,
    Elder,
    Expectation,
    NotificationSelector,
    Recipients,
    Scenario,
    Step,
    World,
)
from simulators.scenario.timespec import (
    ANY_TIME,
    AT_LEAST_ONE,
    CountRange,
    SpecError,
    Window,
    parse_duration,
    parse_range,
    parse_window,
)
from simulators.scenario.world import build_world

ALERT_KINDS = frozenset(KNOWN_KINDS - {"fall_no_recovery", "cancel_late"})
DETECTION_KINDS = frozenset(KNOWN_KINDS | {"cancel", "cmd_received"})
READING_DEVICE = {
    "glucose": "glucose",
    "unit": "glucose",
    "context": "glucose",
    "systolic": "bp",
    "diastolic": "bp",
    "pulse": "bp",
    "irregular": "bp",
    "hr": "wristband",
    "spo2": "wristband",
    "battery": "wristband",
    "worn": "wristband",
    "steps": "wristband",
    "gps_acc_m": "wristband",
}
DEVICE_EVENTS: dict[str, frozenset[str]] = {
    "wristband": frozenset(get_args(WristbandEventKind)),
    "pager": frozenset(get_args(PagerEventKind)),
}


def _yaml_with_lines(text: str, file: str) -> tuple[Any, dict[Path, int]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioError(file, None, "", "the file is empty")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise ScenarioError(
            file, mark.line + 1 if mark else None, "", f"not valid YAML: {error.problem or error}"
        ) from None
    except yaml.YAMLError as error:
        raise ScenarioError(file, None, "", f"not valid YAML: {error}") from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}

    def walk(n: yaml.Node, path: Path) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = (*path, str(key.value))
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, value in enumerate(n.value):
                walk(value, (*path, i))

    walk(node, ())
    return data, lines


def _msgspec_path(text: str) -> tuple[str, Path]:
    """Split msgspec's "problem - at `$.a[1].b`" into the problem and the path."""
    if " - at `$" not in text:
        return text, ()
    problem, where = text.rsplit(" - at `$", 1)
    path: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[`]+)|\[(\d+|\.\.\.)\]", where.rstrip("`")):
        if name:
            path.append(name)
        elif index.isdigit():
            path.append(int(index))
    return problem, tuple(path)


def _fields_at(path: Path) -> list[str]:
    """Known keys of the mapping at ``path`` of a scenario file (for "unknown key" messages)."""
    from msgspec import inspect

    types: list[Any] = [inspect.type_info(ScenarioFile)]
    for part in path:
        nxt: list[Any] = []
        for t in types:
            options = t.types if isinstance(t, inspect.UnionType) else (t,)
            for o in options:
                if isinstance(o, inspect.StructType) and isinstance(part, str):
                    nxt += [f.type for f in o.fields if f.encode_name == part]
                elif isinstance(o, inspect.ListType) and isinstance(part, int):
                    nxt.append(o.item_type)
        types = nxt
    names: list[str] = []
    for t in types:
        for o in t.types if isinstance(t, inspect.UnionType) else (t,):
            if isinstance(o, inspect.StructType):
                names += [f.encode_name for f in o.fields if f.encode_name not in names]
    return names


def _convert(data: Any, loc: Locator) -> ScenarioFile:
    if not isinstance(data, dict):
        raise ScenarioError(loc.file, 1, "", "a scenario is a mapping (name, world, timeline, expect, ...)")
    try:
        return msgspec.convert(data, ScenarioFile, strict=False)
    except msgspec.ValidationError as error:
        problem, path = _msgspec_path(str(error))
        unknown = re.fullmatch(r"Object contains unknown field `(.+)`", problem)
        if unknown:
            known = _fields_at(path)
            hint = f" (known: {', '.join(known)})" if known else ""
            raise loc.error((*path, unknown.group(1)), f"unknown key{hint}") from None
        missing = re.fullmatch(r"Object missing required field `(.+)`", problem)
        if missing:
            raise loc.error(path, f"required key {missing.group(1)!r} is missing") from None
        raise loc.error(path, problem) from None


def load_scenario(path: str | FilePath) -> Scenario:
    """Read and check one scenario file."""
    file = str(path)
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(file, None, "", f"cannot read: {error.strerror}") from None
    data, lines = _yaml_with_lines(text, file)
    loc = Locator(file, lines)
    spec = _convert(data, loc)
    return _Compiler(spec, loc, FilePath(path).stem).scenario()


class _Compiler:
    def __init__(self, spec: ScenarioFile, loc: Locator, stem: str) -> None:
        self.spec = spec
        self.loc = loc
        self.stem = stem
        self.world: World
        self.labels: dict[str, float] = {}

    def _duration(self, value: Any, where: Path) -> float:
        try:
            return parse_duration(value)
        except SpecError as error:
            raise self.loc.error(where, str(error)) from None

    def scenario(self) -> Scenario:
        s = self.spec
        # an unquoted 23:30 is a base-60 number to YAML 1.1 (1410): read it back as a time of day
        start = f"{s.start // 60:02d}:{s.start % 60:02d}" if isinstance(s.start, int) else s.start.strip()
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", start):
            raise self.loc.error(("start",), f"{start!r} is not a time of day HH:MM (e.g. 23:30)")
        try:
            ZoneInfo(s.timezone)
        except Exception:
            raise self.loc.error(("timezone",), f"unknown time zone {s.timezone!r}") from None
        self._gateway(s.gateway)
        if s.speed and s.max_speed and s.speed > s.max_speed:
            raise self.loc.error(("speed",), f"speed {s.speed} is above max_speed {s.max_speed}")
        self.world = build_world(s.world, self.loc)
        steps = [self._step(i, step) for i, step in enumerate(s.timeline)]
        steps.sort(key=lambda st: st.at_s)  # stable: same time keeps file order
        expectations = [self._expect(i, e) for i, e in enumerate(s.expect)]
        last = max([st.at_s for st in steps] + [0.0])
        horizon = max([e.window.hi for e in expectations if math.isfinite(e.window.hi)] + [last])
        end = self._duration(s.end, ("end",)) if s.end is not None else horizon + 60.0
        if end < last:
            raise self.loc.error(("end",), f"the scenario ends ({end:.0f} s) before its last step ({last:.0f} s)")
        # negative checks without a window hold until the end
        expectations = [
            _with_window(e, Window(e.window.lo, end, e.window.text)) if e.window.hi == math.inf else e
            for e in expectations
        ]
        return Scenario(
            name=s.name or self.stem,
            path=self.loc.file,
            description=s.description.strip(),
            start_local=start,
            timezone=s.timezone,
            end_s=end,
            speed=s.speed,
            max_speed=s.max_speed,
            gateway=dict(s.gateway),
            world=self.world,
            timeline=tuple(steps),
            expectations=tuple(expectations),
            labels=dict(self.labels),
        )

    def _gateway(self, sections: dict[str, Any]) -> None:
        """Overrides of the gateway config: the same types (and policy checks) as ``config.yaml``."""
        from gateway.alerting.policy import EscalationConfig, PolicyError, validate
        from gateway.config import DetectConfig, IngestConfig, NotifyConfig

        types: dict[str, type[Any]] = {
            "detect": DetectConfig,
            "escalation": EscalationConfig,
            "notify": NotifyConfig,
            "ingest": IngestConfig,
        }
        for key, value in sections.items():
            if key not in types:
                raise self.loc.error(("gateway", key), f"only {', '.join(types)} can be set for a scenario's gateway")
            try:
                section = msgspec.convert(value, types[key], strict=False)
            except msgspec.ValidationError as error:
                problem, path = _msgspec_path(str(error))
                raise self.loc.error(("gateway", key, *path), problem) from None
            if key == "escalation":
                try:
                    validate(section)
                except PolicyError as error:
                    raise self.loc.error(("gateway", key), str(error)) from None

    # -- timeline ---------------------------------------------------------------------------

    def _elders(self, ref: str | list[str] | None, where: Path) -> tuple[str, ...]:
        if ref is None:
            return ()
        if ref == "all":
            return tuple(self.world.elders)
        refs = [ref] if isinstance(ref, str) else ref
        for r in refs:
            if r not in self.world.elders:
                raise self.loc.error(where, f"unknown elder {r!r}{_known(self.world.elders)}")
        return tuple(refs)

    def _person(self, ref: str, where: Path) -> list[str]:
        people = self.world.people_named(ref)
        if not people:
            known = sorted({p.name for p in self.world.people})
            raise self.loc.error(where, f"unknown person {ref!r}{_known(known)}")
        return sorted({p.phone for p in people})

    def _step(self, i: int, step: StepIn) -> Step:
        where: Path = ("timeline", i)
        at = self._duration(step.at, (*where, "at"))
        if step.id is not None:
            if step.id in self.labels:
                raise self.loc.error((*where, "id"), f"label {step.id!r} is used twice")
            self.labels[step.id] = at
        given = [a for a in ACTIONS if getattr(step, a) is not None]
        if len(given) != 1:
            what = "no action" if not given else f"several actions ({', '.join(given)})"
            raise self.loc.error(where, f"{what}: give exactly one of {', '.join(ACTIONS)}")
        action = cast(Action, given[0])
        value = getattr(step, action)
        elders = self._elders(step.elder, (*where, "elder"))
        if action in ("press", "sms"):
            if step.person is None:
                raise self.loc.error(where, f"{action} needs person: who {'presses' if action == 'press' else 'texts'}")
            phones = self._person(step.person, (*where, "person"))
            if len(phones) > 1:
                raise self.loc.error((*where, "person"), f"{step.person!r} names {len(phones)} people; use a phone")
            return Step(at, action, (), (), phones[0], value, step.id, step.say, self.loc.line(where) or 0)
        if not elders:
            raise self.loc.error(where, f"{action} needs elder: whose (an elder id, a list, or all)")
        if action == "resolve":
            if len(elders) != 1:
                raise self.loc.error((*where, "elder"), "resolve is about one elder's alert")
            self._alert_kind(value.kind, (*where, "resolve", "kind"))
            return Step(at, action, elders, (), None, value, step.id, step.say, self.loc.line(where) or 0)
        devices = tuple(self._device_for(self.world.elders[e], action, value, step.device, where) for e in elders)
        if action == "reading":
            self._payload(devices[0], "telemetry", value, (*where, "reading"))
        elif action == "status":
            self._payload(devices[0], "status", value, (*where, "status"))
        elif action == "get_up":
            if value is False:
                raise self.loc.error((*where, "get_up"), "give true or a number of steps")
            value = 20 if value is True else int(value)
        elif action == "walk" and isinstance(value.to, PlaceIn):
            self._place(value.to, (*where, "walk", "to"))
        return Step(at, action, elders, devices, None, value, step.id, step.say, self.loc.line(where) or 0)

    def _device_for(self, elder: Elder, action: str, value: Any, ref: str | None, where: Path) -> str:
        wanted: list[str]
        if action == "event":
            wanted = (
                ["pager", "wristband"]
                if value in ("sos", "cancel")
                else ["pager"]
                if value == "call"
                else ["wristband"]
            )
        elif action == "reading":
            kinds = {READING_DEVICE.get(k) for k in value}
            if None in kinds:
                bad = sorted(k for k in value if k not in READING_DEVICE)
                raise self.loc.error(
                    (*where, "reading", bad[0]), f"unknown measurement (known: {', '.join(READING_DEVICE)})"
                )
            if len(kinds) != 1:
                raise self.loc.error(
                    (*where, "reading"), "measurements of one device per reading (a band, a glucose meter or a cuff)"
                )
            wanted = [str(kinds.pop())]
        elif action in ("walk", "accel", "get_up"):
            wanted = ["wristband"]
        else:  # silent, status
            wanted = ["wristband", "pager", "glucose", "bp"]
        if ref is not None:
            device = elder.device(ref)
            if device is None:
                raise self.loc.error(
                    (*where, "device"),
                    f"elder {elder.id} has no device {ref!r} (has: {', '.join(d.id for d in elder.devices)})",
                )
            if device.type not in wanted:
                raise self.loc.error(
                    (*where, "device"),
                    f"a {device.type} cannot do {action} {value!r}"
                    if action == "event"
                    else f"{action} needs a {' or '.join(wanted)}",
                )
        else:
            device = next((d for t in wanted for d in elder.devices if d.type == t), None)
            if device is None:
                raise self.loc.error(where, f"elder {elder.id} has no {' or '.join(wanted)} for {action}")
        if action == "event" and value not in DEVICE_EVENTS.get(device.type, set()):
            raise self.loc.error((*where, "event"), f"a {device.type} does not send {value!r}")
        return device.id

    def _payload(self, device_id: str, channel: str, values: dict[str, Any], where: Path) -> None:
        """Check a reading or status against the device's contract, as the gateway will."""
        device_type = next(d.type for e in self.world.elders.values() for d in e.devices if d.id == device_id)
        contract = CONTRACTS.get((device_type, channel))
        if contract is None:
            raise self.loc.error(where, f"a {device_type} has no {channel} messages")
        if set(values) & {"ts", "device_id"}:
            raise self.loc.error(where, "ts and device_id are set by the runner")
        try:
            msgspec.convert({"ts": 0, **values}, contract)
        except msgspec.ValidationError as error:
            problem, path = _msgspec_path(str(error))
            raise self.loc.error((*where, *path), f"the {device_type} contract refuses it: {problem}") from None

    def _place(self, place: PlaceIn, where: Path) -> None:
        relative = place.north_m is not None or place.east_m is not None
        absolute = place.lat is not None or place.lon is not None
        if relative == absolute or (absolute and (place.lat is None or place.lon is None)):
            raise self.loc.error(where, "give north_m/east_m (from home) or lat and lon")

    def _alert_kind(self, kind: str | None, where: Path) -> None:
        if kind is None or kind in ALERT_KINDS:
            return
        if kind == "fall_no_recovery":
            raise self.loc.error(where, "fall_no_recovery is a detection; its alert is kind fall, severity critical")
        raise self.loc.error(where, f"unknown alert kind {kind!r}{_known(ALERT_KINDS)}")

    # -- expectations -----------------------------------------------------------------------

    def _expect(self, i: int, e: ExpectIn) -> Expectation:
        where: Path = ("expect", i)
        line = self.loc.line(where) or 0
        subjects = [s for s in SUBJECTS if getattr(e, s) is not None]
        if len(subjects) != 1:
            what = "no subject" if not subjects else f"several subjects ({', '.join(subjects)})"
            raise self.loc.error(where, f"{what}: give exactly one of {', '.join(SUBJECTS)}")
        subject = subjects[0]
        checks = [c for c in ALERT_CHECKS if getattr(e, c) is not None]
        if checks and subject != "alert":
            raise self.loc.error((*where, checks[0]), f"{checks[0]} is a check on an alert (use alert: ...)")
        if len(checks) > 1:
            raise self.loc.error(
                (*where, checks[1]),
                f"one check per expectation ({', '.join(checks)} given); write one expectation each",
            )
        window = ANY_TIME
        if e.at is not None:
            try:
                window = parse_window(e.at)
            except SpecError as error:
                raise self.loc.error((*where, "at"), str(error)) from None
        if e.since is not None:
            if e.since not in self.labels:
                raise self.loc.error((*where, "since"), f"no timeline step has id {e.since!r}{_known(self.labels)}")
            window = window.shifted(self.labels[e.since])
        count = AT_LEAST_ONE
        if e.count is not None:
            if subject in ("no_alert", "no_detection"):
                raise self.loc.error((*where, "count"), f"{subject} counts nothing; use {subject[3:]} with count")
            try:
                count = parse_range(e.count)
            except SpecError as error:
                raise self.loc.error((*where, "count"), str(error)) from None
        common: dict[str, Any] = {
            "number": i + 1,
            "line": line,
            "window": window,
            "count": count,
            "note": e.note,
            "count_given": e.count is not None,
        }
        if subject in ("detection", "no_detection"):
            sel = getattr(e, subject)
            self._elders(sel.elder, (*where, subject, "elder"))
            if sel.kind is not None and sel.kind not in DETECTION_KINDS:
                raise self.loc.error(
                    (*where, subject, "kind"), f"unknown detection kind {sel.kind!r}{_known(DETECTION_KINDS)}"
                )
            selector = DetectionSelector(sel.elder, sel.kind, sel.severity, sel.cleared)
            return Expectation(check=cast(Check, subject), detection=selector, **common)
        if subject == "notifications":
            n = e.notifications
            assert n is not None
            self._elders(n.elder, (*where, subject, "elder"))
            self._alert_kind(n.kind, (*where, subject, "kind"))
            phones = frozenset(self._person(n.person, (*where, subject, "person"))) if n.person else frozenset()
            return Expectation(
                check="notifications",
                notifications=NotificationSelector(
                    n.elder, n.kind, n.tier, n.role, n.channel, n.purpose, n.person, phones
                ),
                **common,
            )
        sel = e.alert if subject == "alert" else e.no_alert
        assert sel is not None
        self._elders(sel.elder, (*where, subject, "elder"))
        self._alert_kind(sel.kind, (*where, subject, "kind"))
        alert = AlertSelector(sel.elder, sel.kind, sel.severity)
        if subject == "no_alert":
            return Expectation(check="no_alert", alert=alert, **common)
        check = cast(Check, checks[0] if checks else "opened")
        if check in ("tier_reached", "no_tier_beyond"):
            return Expectation(check=check, alert=alert, tier=getattr(e, check), **common)
        if check in ("notified", "not_notified"):
            r = getattr(e, check)
            if check == "notified" and r.tier is None and r.person is None and r.role is None:
                raise self.loc.error((*where, check), "say whom: tier, person or role")
            phones = frozenset(self._person(r.person, (*where, check, "person"))) if r.person else frozenset()
            recipients = Recipients(r.tier, r.person, r.role, tuple(r.channels or ()), phones)
            return Expectation(check=check, alert=alert, recipients=recipients, **common)
        if check == "retraction":
            if e.retraction is not True:
                raise self.loc.error((*where, "retraction"), "write retraction: true (or use not_notified)")
            return Expectation(check="retraction", alert=alert, **common)
        if check == "acknowledged":
            ack = e.acknowledged
            if ack is False:
                raise self.loc.error((*where, "acknowledged"), "write acknowledged: true, or {by: NAME}")
            by = ack.by if isinstance(ack, AcknowledgedIn) else None
            if by is not None:
                self._person(by, (*where, "acknowledged", "by"))
            return Expectation(check="acknowledged", alert=alert, by=by, **common)
        if check == "resolved":
            res = e.resolved
            if res is False:
                raise self.loc.error((*where, "resolved"), "write resolved: true, or {outcome: ..., by: ...}")
            by = res.by if isinstance(res, ResolvedIn) else None
            if by is not None and by not in ("system", "elder"):
                self._person(by, (*where, "resolved", "by"))
            outcome = res.outcome if isinstance(res, ResolvedIn) else None
            return Expectation(check="resolved", alert=alert, by=by, outcome=outcome, **common)
        return Expectation(check="opened", alert=alert, **common)


def _with_window(e: Expectation, window: Window) -> Expectation:
    from dataclasses import replace

    return replace(e, window=window)


def _known(names: Any) -> str:
    listed = sorted(names)
    if not listed:
        return ""
    shown = ", ".join(listed[:12]) + (", ..." if len(listed) > 12 else "")
    return f" (known: {shown})"


__all__ = ["CountRange", "ScenarioError", "load_scenario"]
