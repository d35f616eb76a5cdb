"""The scenario file format as strict types: a misspelt key is an error, not a silent default.

These Structs mirror the YAML one to one (see ``docs/scenarios.md``); durations,
windows and counts stay as written here and are read by :mod:`.loader`, which also
checks cross references (elders, people, labels) and turns the file into a
:class:`~simulators.scenario.plan.Scenario`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.domain.registry import Condition

Duration = int | float | str  # "90s", "2m", "1m30s" or seconds
DeviceType = Literal["wristband", "pager", "glucose", "bp"]
Language = Literal["zh", "en"]
ChannelName = Literal["sms", "voice"]
Severity = Literal["info", "warning", "critical"]
Role = Literal["family", "grid_worker", "post_station", "volunteer", "hotline"]
Outcome = Literal["false_alarm", "handled_at_home", "sent_to_hospital", "condition_cleared", "other"]
Purpose = Literal["page", "taken", "retraction", "resolved"]


class _In(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Scenario input: strict keys."""


class PointIn(_In, frozen=True, kw_only=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]


class PlaceIn(_In, frozen=True, kw_only=True):
    """Somewhere relative to the elder's home (metres north/east) or absolute (lat/lon)."""

    north_m: float | None = None
    east_m: float | None = None
    lat: Annotated[float, Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, Meta(ge=-180, le=180)] | None = None


class AnswerIn(_In, frozen=True, kw_only=True):
    """How a person answers a page: a key press on the call or an SMS reply, after a delay."""

    by: Literal["key", "sms"] = "key"
    reply: Annotated[str, Meta(min_length=1, max_length=160)] = "1"
    after: Duration = "20s"


Answers = Literal["none", "busy", "pick_up"] | AnswerIn


class FenceIn(_In, frozen=True, kw_only=True):
    id: str = "home"
    radius_m: Annotated[float, Meta(gt=0, le=50_000)] | None = None
    centre: PointIn | None = None  # default: the elder's home
    geojson: dict[str, Any] | None = None
    active: str | None = None  # "HH:MM-HH:MM" local; default: always
    margin_m: Annotated[float, Meta(ge=0, le=1000)] | None = None
    severity: Literal["warning", "critical"] | None = None


class DeviceIn(_In, frozen=True, kw_only=True):
    type: DeviceType
    id: str | None = None  # default "<type prefix>-<elder id>"
    every: Duration | None = None  # reporting interval; wristband 60s, others 1 day
    reports: bool | None = None  # periodic telemetry; default: wristbands only


class ContactIn(_In, frozen=True, kw_only=True):
    name: str
    phone: str
    relation: str = "child"
    language: Language = "zh"
    priority: Annotated[int, Meta(ge=1, le=99)] = 1
    channels: list[ChannelName] = msgspec.field(default_factory=lambda: ["sms", "voice"])
    answers: Answers = "none"


class ResponderIn(_In, frozen=True, kw_only=True):
    id: str
    name: str
    role: Literal["grid_worker", "post_station", "volunteer", "hotline"]
    phone: str
    language: Language = "zh"
    grid: str | None = None
    community: str | None = None
    position: PointIn | None = None
    shifts: list[str] = []
    channels: list[ChannelName] = msgspec.field(default_factory=lambda: ["sms", "voice"])
    answers: Answers = "none"


class ElderIn(_In, frozen=True, kw_only=True):
    id: str
    name: str | None = None
    home: PointIn | None = None
    profile: list[Condition] = []
    thresholds: dict[str, float] = {}
    community: str = "幸福社区"
    grid: str = "网格1"
    address: str | None = None
    lives_alone: bool = False
    language: Language = "zh"
    fences: list[FenceIn] = []
    devices: list[DeviceType | DeviceIn] = msgspec.field(default_factory=lambda: ["wristband"])
    contacts: list[ContactIn] = []


class GenerateIn(_In, frozen=True, kw_only=True):
    """Many elders from one template; ``{n}`` (1, 2, ...) in ids, names and phones."""

    count: Annotated[int, Meta(ge=1, le=20_000)]
    id: str = "g{n:05d}"
    name: str | None = None  # default: generated Chinese names
    community: str = "幸福社区"
    grid: str = "网格1"
    grids: Annotated[int, Meta(ge=1, le=10_000)] | None = None  # spread over grid + "1".."grids"
    profile: list[Condition] = []
    spread_m: Annotated[float, Meta(gt=0, le=20_000)] = 1000.0
    lives_alone: bool = False
    fences: list[FenceIn] = []
    devices: list[DeviceType | DeviceIn] = msgspec.field(default_factory=lambda: ["pager"])
    contacts: list[ContactIn] = []


class WorldIn(_In, frozen=True, kw_only=True):
    centre: PointIn | None = None
    elders: list[ElderIn] = []
    generate: GenerateIn | list[GenerateIn] | None = None
    responders: list[ResponderIn] = []


class WalkIn(_In, frozen=True, kw_only=True):
    to: Literal["home"] | PlaceIn
    speed: Annotated[float, Meta(gt=0, le=10)] = 1.0  # metres per second


class ResolveIn(_In, frozen=True, kw_only=True):
    kind: str
    by: str
    outcome: Outcome = "handled_at_home"
    note: str | None = None


class StepIn(_In, frozen=True, kw_only=True):
    """One timeline entry: when, who, and exactly one action."""

    at: Duration
    id: str | None = None
    say: str | None = None
    elder: str | list[str] | None = None  # "all": every elder
    device: str | None = None  # a device type or id of the elder
    person: str | None = None  # for press / sms
    event: Literal["sos", "cancel", "call", "fall", "removed"] | None = None
    reading: dict[str, float | bool | str] | None = None
    walk: WalkIn | None = None
    accel: Literal["fall", "walking"] | None = None
    get_up: bool | Annotated[int, Meta(ge=1, le=10_000)] | None = None
    silent: bool | None = None
    status: dict[str, float | bool | str] | None = None
    press: Annotated[str, Meta(pattern=r"^[0-9*#]{1,8}$")] | None = None
    sms: Annotated[str, Meta(min_length=1, max_length=160)] | None = None
    resolve: ResolveIn | None = None


ACTIONS: tuple[str, ...] = (
    "event",
    "reading",
    "walk",
    "accel",
    "get_up",
    "silent",
    "status",
    "press",
    "sms",
    "resolve",
)


class AlertSel(_In, frozen=True, kw_only=True):
    elder: str | None = None
    kind: str | None = None
    severity: Severity | None = None


class DetectionSel(_In, frozen=True, kw_only=True):
    elder: str | None = None
    kind: str | None = None
    severity: Severity | None = None
    cleared: bool | None = None


class NotifiedIn(_In, frozen=True, kw_only=True):
    """Whom a check is about: every recipient of a tier, a person, or a role."""

    tier: Annotated[int, Meta(ge=1, le=20)] | None = None
    person: str | None = None
    role: Role | None = None
    channels: list[ChannelName] | None = None


class NotificationSel(_In, frozen=True, kw_only=True):
    elder: str | None = None
    kind: str | None = None
    tier: Annotated[int, Meta(ge=1, le=20)] | None = None
    person: str | None = None
    role: Role | None = None
    channel: ChannelName | None = None
    purpose: Purpose | None = None


class AcknowledgedIn(_In, frozen=True, kw_only=True):
    by: str | None = None


class ResolvedIn(_In, frozen=True, kw_only=True):
    outcome: Outcome | None = None
    by: str | None = None


class ExpectIn(_In, frozen=True, kw_only=True):
    """One assertion: a subject, at most one check on it, and when."""

    alert: AlertSel | None = None
    no_alert: AlertSel | None = None
    detection: DetectionSel | None = None
    no_detection: DetectionSel | None = None
    notifications: NotificationSel | None = None
    tier_reached: Annotated[int, Meta(ge=1, le=20)] | None = None
    no_tier_beyond: Annotated[int, Meta(ge=0, le=20)] | None = None
    notified: NotifiedIn | None = None
    not_notified: NotifiedIn | None = None
    retraction: bool | None = None
    acknowledged: bool | AcknowledgedIn | None = None
    resolved: bool | ResolvedIn | None = None
    at: str | None = None
    since: str | None = None
    count: int | str | None = None
    note: str | None = None


SUBJECTS: tuple[str, ...] = ("alert", "no_alert", "detection", "no_detection", "notifications")
ALERT_CHECKS: tuple[str, ...] = (
    "tier_reached",
    "no_tier_beyond",
    "notified",
    "not_notified",
    "retraction",
    "acknowledged",
    "resolved",
)


class ScenarioFile(_In, frozen=True, kw_only=True):
    name: str | None = None
    description: str = ""
    start: str | int = "10:00"  # local time of day at scenario time 0 (today); YAML 1.1 reads 23:00 as 1380
    timezone: str = "Asia/Shanghai"
    end: Duration | None = None
    speed: Annotated[float, Meta(gt=0, le=1000)] | None = None
    max_speed: Annotated[float, Meta(gt=0, le=1000)] | None = None
    gateway: dict[str, Any] = {}  # overrides: detect, escalation, notify sections
    world: WorldIn
    timeline: list[StepIn] = []
    expect: list[ExpectIn] = []
