"""Request and response bodies of the console API, as msgspec Structs.

These types are the contract in code: the handlers build them, msgspec encodes them,
and ``openapi.py`` publishes their JSON Schema. Requests are strict (an unknown field
is an error, so a typo in the console fails loudly); responses always carry every
field, ``null`` when unknown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Severity = Literal["info", "warning", "critical"]
AlertState = Literal["confirming", "notifying", "acknowledged", "on_scene", "resolved"]
Outcome = Literal["false_alarm", "handled_at_home", "sent_to_hospital", "condition_cleared", "other"]
Role = Literal["hotline", "post_station", "grid_worker", "family", "admin"]
Metric = Literal["hr", "spo2", "glucose_mmol", "systolic", "diastolic", "steps", "battery"]
DeviceType = Literal["wristband", "pager", "glucose", "bp"]
ElderId = Annotated[str, Meta(min_length=1, max_length=128)]
Text = Annotated[str, Meta(max_length=4000)]
Lat = Annotated[float, Meta(ge=-90, le=90)]
Lon = Annotated[float, Meta(ge=-180, le=180)]


class _Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies and queries: a misspelt key is an error."""


class _Response(msgspec.Struct, kw_only=True):
    """Response bodies: every field present."""


class Error(_Response):
    error: str
    detail: str


# -- session -----------------------------------------------------------------------------


class LoginBody(_Request):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


class User(_Response):
    username: str
    role: Role
    display_name: str
    language: Literal["zh", "en"]
    community: str | None
    grid: str | None
    elder_id: str | None


class LoginResult(_Response):
    token: str
    expires_at: datetime
    user: User


# -- alerts ------------------------------------------------------------------------------


class Position(_Response):
    lat: float
    lon: float


class AlertSummary(_Response):
    alert_id: int
    code: str
    elder_id: str | None
    elder_name: str | None
    device_id: str
    kind: str
    severity: Severity
    state: AlertState
    community: str | None
    grid: str | None
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    on_scene_at: datetime | None
    resolved_at: datetime | None
    outcome: str | None
    position: Position | None


class AlertList(_Response):
    alerts: list[AlertSummary]
    total: int
    next_before_id: int | None


class TimelineEntry(_Response):
    at: datetime
    event: str
    actor: str | None
    channel: str | None
    detail: dict[str, Any]


class NotificationView(_Response):
    at: datetime
    recipient_name: str
    role: str
    channel: str
    purpose: str
    tier: int | None
    status: str


class DetectionView(_Response):
    id: int
    time: datetime
    kind: str
    severity: Severity
    device_id: str
    cleared: bool
    evidence: dict[str, Any]


class TrailPoint(_Response):
    time: datetime
    lat: float
    lon: float
    gps_acc_m: float | None


class AlertDetail(AlertSummary):
    timeline: list[TimelineEntry]
    notifications: list[NotificationView]
    detections: list[DetectionView]
    trail: list[TrailPoint]


class AlertQuery(_Request):
    state: Literal["open", "resolved", "all"] = "open"
    severity: Severity | None = None
    kind: Annotated[str, Meta(max_length=64)] | None = None
    community: Annotated[str, Meta(max_length=128)] | None = None
    grid: Annotated[str, Meta(max_length=128)] | None = None
    elder_id: ElderId | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 200
    offset: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    before_id: Annotated[int, Meta(ge=1, le=2**62)] | None = None


class AckBody(_Request):
    eta_min: Annotated[float, Meta(gt=0, le=1440)] | None = None
    note: Text | None = None


class ResolveBody(_Request):
    outcome: Outcome
    note: Text | None = None


class NoteBody(_Request):
    text: Annotated[str, Meta(min_length=1, max_length=4000)]


# -- elders, devices, fences ---------------------------------------------------------------


class ElderRow(_Response):
    elder_id: str
    name: str
    community: str | None
    grid: str | None
    home: Position | None
    open_alerts: int
    worst_severity: Severity | None


class ElderList(_Response):
    elders: list[ElderRow]
    total: int


class ElderQuery(_Request):
    q: Annotated[str, Meta(max_length=128)] | None = None
    community: Annotated[str, Meta(max_length=128)] | None = None
    grid: Annotated[str, Meta(max_length=128)] | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    offset: Annotated[int, Meta(ge=0, le=1_000_000)] = 0


class Device(_Response):
    device_id: str
    device_type: str
    elder_id: str | None
    last_seen: datetime | None
    battery: float | None
    online: bool
    reporting_interval_s: int


class DeviceList(_Response):
    devices: list[Device]
    total: int


class DeviceQuery(_Request):
    elder_id: ElderId | None = None
    type: DeviceType | None = None
    status: Literal["online", "silent", "low_battery"] | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 200
    offset: Annotated[int, Meta(ge=0, le=1_000_000)] = 0


class ContactView(_Response):
    name: str
    phone: str
    relation: str
    language: str
    priority: int
    channels: list[str]


class Latest(_Response):
    hr: float | None
    spo2: float | None
    glucose_mmol: float | None
    systolic: float | None
    diastolic: float | None
    battery: float | None
    lat: float | None
    lon: float | None
    time: datetime | None


class FenceProperties(_Response):
    name: str
    kind: Literal["polygon", "circle"]
    elder_id: str
    active_hours: str | None
    margin_m: float | None
    severity: Literal["warning", "critical"] | None
    radius_m: float | None


class Fence(_Response):
    type: Literal["Feature"]
    id: str
    geometry: dict[str, Any]
    properties: FenceProperties


class FenceCollection(_Response):
    type: Literal["FeatureCollection"]
    features: list[Fence]


class ElderDetail(_Response):
    elder_id: str
    name: str
    community: str | None
    grid: str | None
    profile: dict[str, Any]
    devices: list[Device]
    contacts: list[ContactView]
    fences: FenceCollection
    latest: Latest


class ReadingQuery(_Request):
    metric: Metric
    range: Literal["24h", "7d", "30d"] = "24h"


class ReadingPoint(_Response):
    time: datetime
    value: float


class Readings(_Response):
    metric: Metric
    range: Literal["24h", "7d", "30d"]
    points: list[ReadingPoint]


Position2 = Annotated[list[float], Meta(min_length=2, max_length=3)]


class PolygonGeometry(msgspec.Struct, tag_field="type", tag="Polygon", forbid_unknown_fields=True):
    coordinates: Annotated[
        list[Annotated[list[Position2], Meta(max_length=10_000)]], Meta(min_length=1, max_length=100)
    ]


class PointGeometry(msgspec.Struct, tag_field="type", tag="Point", forbid_unknown_fields=True):
    coordinates: Position2


class FenceInputProperties(_Request):
    name: Annotated[str, Meta(max_length=128)] | None = None
    kind: Literal["polygon", "circle"] | None = None  # echoed back by the console; the geometry decides
    elder_id: str | None = None  # echoed back; the path decides
    radius_m: Annotated[float, Meta(gt=0)] | None = None
    active_hours: Annotated[str, Meta(max_length=11)] | None = None
    margin_m: Annotated[float, Meta(ge=0, le=1000)] | None = None
    severity: Literal["warning", "critical"] | None = None


class FenceInput(msgspec.Struct, tag_field="type", tag="Feature", forbid_unknown_fields=True, kw_only=True):
    geometry: PolygonGeometry | PointGeometry
    properties: FenceInputProperties = msgspec.field(default_factory=FenceInputProperties)
    id: str | None = None


class MapElder(_Response):
    elder_id: str
    name: str
    lat: float
    lon: float
    grid: str | None
    worst_severity: Severity | None


class MapView(_Response):
    elders: list[MapElder]
    fences: FenceCollection
    bounds: Annotated[list[float], Meta(min_length=4, max_length=4)] | None


class MapQuery(_Request):
    community: Annotated[str, Meta(max_length=128)] | None = None
    grid: Annotated[str, Meta(max_length=128)] | None = None


# -- people and registry --------------------------------------------------------------------


class ResponderView(_Response):
    id: str
    name: str
    role: str
    language: str
    grid: str | None
    community: str | None
    shifts: list[str]
    channels: list[str]
    phone: str | None  # only the hotline and admins see numbers


class ResponderList(_Response):
    responders: list[ResponderView]


class RosterOverrideView(_Response):
    responder: str
    start: str
    end: str
    on_duty: bool


class RosterList(_Response):
    overrides: list[RosterOverrideView]


class ImportQuery(_Request):
    dry_run: bool = False


class ImportResult(_Response):
    imported: int
    devices: int
    fences: int
    dry_run: bool


class RowError(_Response):
    row: int
    column: str | None
    detail: str


class ImportErrors(_Response):
    error: Literal["invalid_rows"]
    detail: str
    rows: list[RowError]


class EventsQuery(_Request):
    last_event_id: Annotated[int, Meta(ge=0)] | None = None  # for clients that cannot set the header


# -- audit log ---------------------------------------------------------------------------


class AuditQuery(_Request):
    actor: Annotated[str, Meta(max_length=128)] | None = None
    action: Annotated[str, Meta(max_length=64)] | None = None  # exact, or a prefix ending in "." ("read.")
    target: Annotated[str, Meta(max_length=256)] | None = None
    since: Annotated[datetime, Meta(tz=True)] | None = None
    until: Annotated[datetime, Meta(tz=True)] | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    before_id: Annotated[int, Meta(ge=1, le=2**62)] | None = None


class AuditEntry(_Response):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


class AuditList(_Response):
    entries: list[AuditEntry]  # newest first
    next_before_id: int | None  # pass as before_id for the next (older) page; null: no more
