"""Topic routing and payload decoding under the contracts; never raises on bad input.

``route_topic`` parses a topic once (callers cache it per topic); ``decode_payload``
turns one payload into contract records or a ``Rejected`` reason. The batch decoder
in ``gateway.pipeline.decode`` uses the same pieces with a fast path inlined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from devices.contracts import (
    CHANNELS,
    CONTRACTS,
    DEVICE_ID_PATTERN,
    DEVICE_TYPES,
    MG_PER_DL_PER_MMOL_PER_L,
    TOPIC_PREFIX,
    BloodPressureReading,
    GlucoseReading,
    Payload,
)
from devices.senml import SenmlError, senml_readings

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_PREFIX_PARTS = tuple(TOPIC_PREFIX.split("/"))
GLUCOSE_MMOL_RANGE = (0.5, 60.0)  # meters read about 0.6-33.3 mmol/L; outside is a fault


@dataclass(frozen=True, slots=True)
class Route:
    """Where a topic leads: the device and which contract its payloads follow."""

    device_type: str
    device_id: str
    channel: str
    contract: type[Payload]
    decoder: msgspec.json.Decoder[Any]
    device_key: bytes = b""  # the id encoded once: every row of this device shares the object


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused; goes to the dead-letter table with the payload."""

    reason: str


_DECODERS: dict[type[Payload], msgspec.json.Decoder[Any]] = {
    contract: msgspec.json.Decoder(contract) for contract in set(CONTRACTS.values())
}


def route_topic(topic: str) -> Route | Rejected:
    parts = topic.split("/")
    if len(parts) != 5 or tuple(parts[:2]) != _PREFIX_PARTS:
        return Rejected(f"topic does not match {TOPIC_PREFIX}/{{type}}/{{device_id}}/{{channel}}")
    _, _, device_type, device_id, channel = parts
    if device_type not in DEVICE_TYPES:
        return Rejected(f"unknown device type {device_type!r}")
    if not _DEVICE_ID.match(device_id):
        return Rejected("device id must be 1-64 characters of letters, digits, '_', '.', '-'")
    if channel not in CHANNELS:
        return Rejected(f"unknown channel {channel!r} (devices publish telemetry, event, status)")
    contract = CONTRACTS.get((device_type, channel))
    if contract is None:
        return Rejected(f"a {device_type} has no {channel} channel")
    return Route(device_type, device_id, channel, contract, _DECODERS[contract], device_id.encode())


def check_record(record: Payload, route: Route) -> Rejected | None:
    """Rules one field's type cannot express: ownership and cross-field plausibility."""
    if record.device_id is not None and record.device_id != route.device_id:
        return Rejected(
            f"payload names device {record.device_id!r} but was published on the topic of {route.device_id!r}"
        )
    if isinstance(record, GlucoseReading):
        mmol = glucose_mmol(record)
        if not GLUCOSE_MMOL_RANGE[0] <= mmol <= GLUCOSE_MMOL_RANGE[1]:
            return Rejected(f"glucose {mmol:.2f} mmol/L is outside what a meter can read")
    elif isinstance(record, BloodPressureReading) and record.systolic <= record.diastolic:
        return Rejected("systolic must be above diastolic")
    return None


def glucose_mmol(record: GlucoseReading) -> float:
    if record.unit == "mg/dL":
        return record.glucose / MG_PER_DL_PER_MMOL_PER_L
    return record.glucose


def explain(error: Exception) -> str:
    if isinstance(error, msgspec.ValidationError):
        return f"invalid payload: {error}"
    if isinstance(error, msgspec.DecodeError):
        return f"not valid JSON: {error}"
    return f"{type(error).__name__}: {error}"


def decode_payload(payload: bytes, route: Route, now_ms: int) -> list[Payload] | Rejected:
    """Records from one payload (JSON object, or a SenML pack), or why it was refused."""
    try:
        stripped = payload.lstrip()
        if stripped[:1] == b"[":
            records = [msgspec.convert(reading, route.contract) for reading in senml_readings(payload, now_ms)]
        else:
            records = [route.decoder.decode(payload)]
    except (msgspec.ValidationError, msgspec.DecodeError, SenmlError) as error:
        return Rejected(explain(error) if not isinstance(error, SenmlError) else f"SenML: {error}")
    except Exception as error:  # the decoder must never raise out of the hot path
        return Rejected(f"undecodable payload: {explain(error)}")
    for record in records:
        problem = check_record(record, route)
        if problem is not None:
            return problem
    return records
