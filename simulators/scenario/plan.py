"""A scenario as the runner plays it: the world, the timeline and the expectations, resolved.

Built by :mod:`.loader` from a file; everything here is checked already (elders,
devices and people exist, times are seconds, windows are absolute scenario times).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.domain.registry import RegistryFile
from simulators.scenario.timespec import CountRange, Window

Action = Literal["event", "reading", "walk", "accel", "get_up", "silent", "status", "press", "sms", "resolve"]


@dataclass(frozen=True, slots=True)
class Answer:
    """How a person answers: ``none`` (calls ring out), ``busy``, ``pick_up`` (answers calls, presses
    nothing by itself), or ``respond`` (a key or an SMS after a delay)."""

    mode: Literal["none", "busy", "pick_up", "respond"] = "none"
    by: Literal["key", "sms"] = "key"
    reply: str = "1"
    after_s: float = 20.0


@dataclass(frozen=True, slots=True)
class Person:
    """Someone who can be paged: a family contact or a responder."""

    key: str  # responder id, or "contact:<elder>:<phone>"
    name: str
    phone: str
    role: str  # family, grid_worker, post_station, volunteer, hotline
    answer: Answer
    elder_id: str | None = None  # whose family


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    type: str
    elder_id: str
    interval_s: float
    reports: bool  # sends periodic telemetry


@dataclass(frozen=True, slots=True)
class Elder:
    id: str
    name: str
    lat: float
    lon: float
    devices: tuple[Device, ...]

    def device(self, type_or_id: str) -> Device | None:
        for d in self.devices:
            if type_or_id in (d.id, d.type):
                return d
        return None


@dataclass(frozen=True, slots=True)
class World:
    elders: dict[str, Elder]
    people: tuple[Person, ...]
    registry: dict[str, Any]  # the registry document (as a registry YAML file would hold it)
    registry_file: RegistryFile  # the same, validated: what the gateway's database is given

    def people_named(self, ref: str) -> list[Person]:
        """People matching a name, responder id or phone."""
        return [p for p in self.people if ref in (p.name, p.phone, p.key)]


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    action: Action
    elders: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # the device of each elder that acts
    person: str | None = None  # the phone of the person who acts
    value: Any = None  # the action's argument, already checked
    label: str | None = None
    say: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class AlertSelector:
    elder: str | None = None
    kind: str | None = None
    severity: str | None = None

    def describe(self) -> str:
        parts = [self.kind or "any kind"]
        if self.elder:
            parts.append(f"of {self.elder}")
        if self.severity:
            parts.append(f"({self.severity})")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class DetectionSelector:
    elder: str | None = None
    kind: str | None = None
    severity: str | None = None
    cleared: bool | None = None

    def describe(self) -> str:
        text = f"detection {self.kind or 'of any kind'}"
        if self.cleared:
            text += " cleared"
        if self.elder:
            text += f" of {self.elder}"
        if self.severity:
            text += f" ({self.severity})"
        return text


@dataclass(frozen=True, slots=True)
class Recipients:
    """Whom a notification check is about."""

    tier: int | None = None  # 1-based
    person: str | None = None
    role: str | None = None
    channels: tuple[str, ...] = ()
    phones: frozenset[str] = frozenset()  # resolved from ``person``

    def describe(self) -> str:
        who = (
            f"every recipient of tier {self.tier}"
            if self.tier and not self.person and not self.role
            else self.person or (f"role {self.role}" if self.role else "anyone")
        )
        if self.tier and (self.person or self.role):
            who += f" in tier {self.tier}"
        return who + (f" by {'+'.join(self.channels)}" if self.channels else "")


@dataclass(frozen=True, slots=True)
class NotificationSelector:
    elder: str | None = None
    kind: str | None = None
    tier: int | None = None
    role: str | None = None
    channel: str | None = None
    purpose: str | None = None
    person: str | None = None
    phones: frozenset[str] = frozenset()

    def describe(self) -> str:
        parts = [self.purpose or "any", self.channel or "sms/voice", "notifications"]
        for name in ("kind", "elder", "tier", "role", "person"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return " ".join(parts)


Check = Literal[
    "opened",
    "tier_reached",
    "no_tier_beyond",
    "notified",
    "not_notified",
    "retraction",
    "acknowledged",
    "resolved",
    "no_alert",
    "detection",
    "no_detection",
    "notifications",
]


@dataclass(frozen=True, slots=True)
class Expectation:
    number: int  # 1-based position in the file
    line: int
    check: Check
    window: Window  # absolute scenario seconds
    count: CountRange
    alert: AlertSelector | None = None
    detection: DetectionSelector | None = None
    notifications: NotificationSelector | None = None
    tier: int | None = None
    recipients: Recipients | None = None
    by: str | None = None
    outcome: str | None = None
    note: str | None = None
    count_given: bool = False

    @property
    def negative(self) -> bool:
        return self.check in ("no_tier_beyond", "not_notified", "no_alert", "no_detection")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    path: str
    description: str
    start_local: str  # HH:MM
    timezone: str
    end_s: float
    speed: float | None
    max_speed: float | None
    gateway: dict[str, Any]
    world: World
    timeline: tuple[Step, ...]
    expectations: tuple[Expectation, ...]
    labels: dict[str, float] = field(default_factory=dict)
