"""Payload contracts device vendors integrate against, as code.

Topic: ``eldercare/v1/{type}/{device_id}/{channel}``. Each (type, channel) pair has
one payload type below. Payloads are JSON objects with ``ts`` (ms since the Unix
epoch, or an RFC 3339 time with offset) and named measurements in fixed units;
SenML (RFC 8428) JSON packs are accepted too (see ``devices.senml``). Unknown extra
fields are ignored so firmware can add fields without breaking the gateway; a
known field with a wrong type or an impossible value is rejected with a reason.

The bounds are physical plausibility, not clinical alarm thresholds: a heart rate
of 25 bpm is an emergency to detect, not bad input, whereas 400 bpm is a sensor fault.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

TOPIC_PREFIX = "eldercare/v1"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# The largest RFC 3339 time (9999-12-31T23:59:59.999Z): ``ts`` as ms cannot be later, so
# it always fits the int64 columns the time checks and the database work on.
MAX_EPOCH_MS = 253_402_300_799_999
EpochMs = Annotated[int, Meta(ge=0, le=MAX_EPOCH_MS, description="ms since the Unix epoch")]
Timestamp = EpochMs | Annotated[datetime, Meta(tz=True)]
DeviceId = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
# PostgreSQL text cannot hold NUL, and control characters in a code break log lines.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
Latitude = Annotated[float, Meta(ge=-90.0, le=90.0, description="degrees, WGS-84")]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0, description="degrees, WGS-84")]
Percent = Annotated[float, Meta(ge=0.0, le=100.0)]
Bpm = Annotated[float, Meta(ge=0.0, le=300.0, description="beats per minute")]
AccelG = Annotated[float, Meta(ge=-64.0, le=64.0, description="acceleration in g")]

MG_PER_DL_PER_MMOL_PER_L = 18.0  # glucose molar mass 180.16 g/mol; the clinical convention


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every payload may carry."""

    ts: Timestamp
    device_id: DeviceId | None = None


class AccelWindow(msgspec.Struct, frozen=True):
    """Raw acceleration samples ``[[x, y, z], ...]`` in g at ``rate_hz``, starting at ``ts``."""

    rate_hz: Annotated[float, Meta(gt=0.0, le=1000.0)]
    samples: Annotated[
        list[Annotated[list[AccelG], Meta(min_length=3, max_length=3)]], Meta(min_length=1, max_length=6000)
    ]


class WristbandTelemetry(Payload, frozen=True, kw_only=True):
    """Periodic wristband reading; every measurement is optional (indoors: no GPS fix)."""

    lat: Latitude | None = None
    lon: Longitude | None = None
    gps_acc_m: Annotated[float, Meta(ge=0.0, le=100_000.0, description="GPS accuracy radius, m")] | None = None
    hr: Bpm | None = None
    spo2: Percent | None = None
    steps: Annotated[int, Meta(ge=0, le=1_000_000, description="steps since midnight")] | None = None
    battery: Percent | None = None
    worn: bool | None = None
    accel: AccelWindow | None = None


class GlucoseReading(Payload, frozen=True, kw_only=True):
    """One finger-stick or sensor reading; mg/dL is converted to mmol/L on decode."""

    glucose: Annotated[float, Meta(gt=0.0, le=1000.0)]
    unit: Literal["mmol/L", "mg/dL"] = "mmol/L"
    context: Literal["fasting", "before_meal", "after_meal", "random"] = "random"


class BloodPressureReading(Payload, frozen=True, kw_only=True):
    """One cuff measurement in mmHg."""

    systolic: Annotated[float, Meta(ge=40.0, le=320.0, description="mmHg")]
    diastolic: Annotated[float, Meta(ge=20.0, le=250.0, description="mmHg")]
    pulse: Bpm | None = None
    irregular: bool = False


WristbandEventKind = Literal["sos", "fall", "removed", "cancel", "received"]
PagerEventKind = Literal["sos", "call", "cancel", "received"]
MeterEventKind = Literal["error"]


class WristbandEvent(Payload, frozen=True, kw_only=True):
    """A button press or band-side detection; ``received`` confirms a ``cmd`` (give its ``alert``)."""

    event: WristbandEventKind
    alert: Annotated[str, Meta(max_length=32, pattern=NO_CONTROL_CHARACTERS)] | None = None


class PagerEvent(Payload, frozen=True, kw_only=True):
    """A button press; ``received`` confirms a ``cmd`` (give its ``alert``)."""

    event: PagerEventKind
    alert: Annotated[str, Meta(max_length=32, pattern=NO_CONTROL_CHARACTERS)] | None = None


class MeterEvent(Payload, frozen=True, kw_only=True):
    event: MeterEventKind
    code: Annotated[str, Meta(max_length=64, pattern=NO_CONTROL_CHARACTERS)] | None = None


class DeviceStatus(Payload, frozen=True, kw_only=True):
    """Battery, signal and firmware; the broker publishes ``online: false`` as the will.

    ``ts`` may be left out (a will message is fixed at connect time and cannot know
    when it will be sent); the gateway then uses the time it received the message.
    """

    ts: Timestamp | None = None  # type: ignore[assignment]

    battery: Percent | None = None
    rssi_dbm: Annotated[float, Meta(ge=-150.0, le=0.0)] | None = None
    firmware: Annotated[str, Meta(max_length=64, pattern=NO_CONTROL_CHARACTERS)] | None = None
    online: bool | None = None


DEVICE_TYPES: tuple[str, ...] = ("wristband", "pager", "glucose", "bp")
CHANNELS: tuple[str, ...] = ("telemetry", "event", "status")

CONTRACTS: dict[tuple[str, str], type[Payload]] = {
    ("wristband", "telemetry"): WristbandTelemetry,
    ("wristband", "event"): WristbandEvent,
    ("wristband", "status"): DeviceStatus,
    ("pager", "event"): PagerEvent,
    ("pager", "status"): DeviceStatus,
    ("glucose", "telemetry"): GlucoseReading,
    ("glucose", "event"): MeterEvent,
    ("glucose", "status"): DeviceStatus,
    ("bp", "telemetry"): BloodPressureReading,
    ("bp", "event"): MeterEvent,
    ("bp", "status"): DeviceStatus,
}


def topic_for(device_type: str, device_id: str, channel: str) -> str:
    return f"{TOPIC_PREFIX}/{device_type}/{device_id}/{channel}"


def ts_to_ms(ts: int | datetime | None, default: int = 0) -> int:
    """Milliseconds since the epoch for either accepted form of ``ts`` (or ``default``)."""
    if isinstance(ts, int):
        return ts
    if ts is None:
        return default
    return int(ts.timestamp() * 1000)


def json_schema(device_type: str, channel: str) -> dict[str, object]:
    """The JSON Schema a vendor validates their payloads against."""
    schema: dict[str, object] = _clean_descriptions(msgspec.json.schema(CONTRACTS[(device_type, channel)]))
    schema["$comment"] = f"topic: {topic_for(device_type, '{device_id}', channel)}"
    return schema


def _clean_descriptions(node: Any) -> Any:
    """Dedent every ``description`` taken from a docstring.

    msgspec releases differ on whether they clean docstrings (0.23 keeps the indentation of
    continuation lines), and the vendor's schema files must not change with the library.
    """
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node
