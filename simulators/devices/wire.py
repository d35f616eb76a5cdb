"""Payloads as a device sends them: the contract structs, encoded without the unset fields.

Each class here *is* its contract (a subclass with no fields of its own); the only
difference is ``omit_defaults``, so a reading without GPS carries no ``"lat": null``,
just as firmware would leave the field out. Simulators build these, so what they send
can never drift from what the gateway decodes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from devices.contracts import (
    BloodPressureReading,
    DeviceStatus,
    GlucoseReading,
    MeterEvent,
    PagerEvent,
    Payload,
    WristbandEvent,
    WristbandTelemetry,
)


class WristbandTelemetryOut(WristbandTelemetry, frozen=True, kw_only=True, omit_defaults=True):
    pass


class WristbandEventOut(WristbandEvent, frozen=True, kw_only=True, omit_defaults=True):
    pass


class PagerEventOut(PagerEvent, frozen=True, kw_only=True, omit_defaults=True):
    pass


class GlucoseReadingOut(GlucoseReading, frozen=True, kw_only=True, omit_defaults=True):
    pass


class BloodPressureReadingOut(BloodPressureReading, frozen=True, kw_only=True, omit_defaults=True):
    pass


class MeterEventOut(MeterEvent, frozen=True, kw_only=True, omit_defaults=True):
    pass


class DeviceStatusOut(DeviceStatus, frozen=True, kw_only=True, omit_defaults=True):
    pass


P = TypeVar("P", bound=Payload)
_OUT: dict[type[Payload], type[Payload]] = {
    WristbandTelemetry: WristbandTelemetryOut,
    WristbandEvent: WristbandEventOut,
    PagerEvent: PagerEventOut,
    GlucoseReading: GlucoseReadingOut,
    BloodPressureReading: BloodPressureReadingOut,
    MeterEvent: MeterEventOut,
    DeviceStatus: DeviceStatusOut,
}
_ENCODER = msgspec.json.Encoder()
encode = _ENCODER.encode

# What the broker publishes for a device that drops off (the will): no ``ts``, the gateway
# stamps it on arrival.
WILL_PAYLOAD = encode(DeviceStatusOut(online=False))


def make(contract: type[P], **fields: Any) -> P:
    """A ``contract`` record that encodes without its unset fields."""
    record: P = _OUT[contract](**fields)  # type: ignore[assignment]
    return record
