"""SenML (RFC 8428) JSON packs turned into the same payloads as plain JSON.

A pack is a JSON array of records. Each record's full name (``bn`` + ``n``) ends in a
field name of the plain contract (``urn:dev:mac:0024befffe804ff1:hr`` -> ``hr``); its
time is ``bt`` + ``t`` in seconds (values below 2**28 are relative to now, RFC 8428
section 4.5.3); its value is ``v``, ``vs`` or ``vb``. Records at the same time form
one reading, so a pack may carry several readings. When a unit is given it must be
the one the contract uses (or mg/dL for glucose, converted later like plain JSON).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

RELATIVE_TIME_LIMIT_S = 2**28

# Field -> SenML units accepted (RFC 8428 / IANA SenML units where one exists).
UNITS: dict[str, frozenset[str]] = {
    "lat": frozenset({"lat"}),
    "lon": frozenset({"lon"}),
    "gps_acc_m": frozenset({"m"}),
    "hr": frozenset({"beat/min", "beats/min", "/min"}),
    "pulse": frozenset({"beat/min", "beats/min", "/min"}),
    "spo2": frozenset({"%"}),
    "battery": frozenset({"%", "%EL"}),
    "steps": frozenset({"count", "steps"}),
    "systolic": frozenset({"mmHg"}),
    "diastolic": frozenset({"mmHg"}),
    "rssi_dbm": frozenset({"dBm"}),
    "glucose": frozenset({"mmol/L", "mmol/l", "mg/dL", "mg/dl"}),
}


class SenmlRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    bn: str | None = None
    bt: float | None = None
    bu: str | None = None
    n: str = ""
    u: str | None = None
    v: int | float | None = None  # an int stays one: ``steps`` is an integer field
    vs: str | None = None
    vb: bool | None = None
    t: float = 0.0


_PACK = msgspec.json.Decoder(list[SenmlRecord])


class SenmlError(ValueError):
    """The pack is valid JSON but not a SenML pack the contracts can read."""


def _field_name(full: str) -> str:
    for sep in (":", "/"):
        if sep in full:
            full = full.rsplit(sep, 1)[1]
    return full


def senml_readings(payload: bytes, now_ms: int) -> list[dict[str, Any]]:
    """Plain-contract dicts (with ``ts`` in ms), one per distinct time in the pack."""
    records = _PACK.decode(payload)
    if not records:
        raise SenmlError("empty SenML pack")
    base_name = ""
    base_time = 0.0
    base_unit: str | None = None
    by_time: dict[int, dict[str, Any]] = {}
    for rec in records:
        if rec.bn is not None:
            base_name = rec.bn
        if rec.bt is not None:
            base_time = rec.bt
        if rec.bu is not None:
            base_unit = rec.bu
        name = _field_name(base_name + rec.n)
        if not name:
            raise SenmlError("SenML record without a name")
        seconds = base_time + rec.t
        if not math.isfinite(seconds * 1000):
            raise SenmlError(f"SenML record {name!r} has a time out of range")
        ms = round(seconds * 1000)
        if abs(seconds) < RELATIVE_TIME_LIMIT_S:
            ms = now_ms + ms
        values = [x for x in (rec.v, rec.vs, rec.vb) if x is not None]
        if len(values) != 1:
            raise SenmlError(f"SenML record {name!r} must carry exactly one of v, vs, vb")
        unit = rec.u if rec.u is not None else base_unit
        if unit is not None and name in UNITS and unit not in UNITS[name]:
            raise SenmlError(f"unit {unit!r} is not accepted for {name!r}")
        reading = by_time.setdefault(ms, {"ts": ms})
        if name in reading:
            raise SenmlError(f"field {name!r} given twice at the same time")
        reading[name] = values[0]
        if name == "glucose" and unit is not None:
            reading["unit"] = "mg/dL" if unit.lower() == "mg/dl" else "mmol/L"
    return [by_time[k] for k in sorted(by_time)]
