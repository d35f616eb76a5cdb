"""Example payloads for every topic: the vendor document, tests and simulators use them.

Kept as code so that a documented example that stops decoding fails the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXAMPLE_TS = 1_795_000_000_000  # 2026-11-18T08:26:40Z


@dataclass(frozen=True, slots=True)
class Example:
    device_type: str
    channel: str
    title: str
    payload: Any  # a JSON object, or a SenML pack (a list)


EXAMPLES: tuple[Example, ...] = (
    Example(
        "wristband",
        "telemetry",
        "Periodic reading outdoors",
        {
            "ts": EXAMPLE_TS,
            "lat": 31.230416,
            "lon": 121.473701,
            "gps_acc_m": 8.5,
            "hr": 72,
            "spo2": 97,
            "steps": 3150,
            "battery": 81.5,
            "worn": True,
        },
    ),
    Example(
        "wristband",
        "telemetry",
        "Indoors, no GPS fix, RFC 3339 time",
        {
            "ts": "2026-11-18T16:26:40+08:00",
            "hr": 68,
            "spo2": 96,
            "steps": 3170,
            "worn": True,
        },
    ),
    Example(
        "wristband",
        "telemetry",
        "Raw acceleration window (50 Hz, g), first samples shown",
        {
            "ts": EXAMPLE_TS,
            "accel": {"rate_hz": 50, "samples": [[0.02, -0.98, 0.11], [0.03, -0.97, 0.12]]},
        },
    ),
    Example(
        "wristband",
        "telemetry",
        "The same reading as a SenML (RFC 8428) pack",
        [
            {"bn": "urn:dev:wb-000123:", "bt": EXAMPLE_TS / 1000, "n": "lat", "u": "lat", "v": 31.230416},
            {"n": "lon", "u": "lon", "v": 121.473701},
            {"n": "hr", "u": "beat/min", "v": 72},
            {"n": "spo2", "u": "%", "v": 97},
            {"n": "battery", "u": "%EL", "v": 81.5},
            {"n": "worn", "vb": True},
        ],
    ),
    Example("wristband", "event", "SOS button held", {"ts": EXAMPLE_TS, "event": "sos"}),
    Example("wristband", "event", "Fall detected by the band", {"ts": EXAMPLE_TS, "event": "fall"}),
    Example("wristband", "event", "Band taken off", {"ts": EXAMPLE_TS, "event": "removed"}),
    Example(
        "wristband", "event", "Elder cancels (pressed by mistake / I am OK)", {"ts": EXAMPLE_TS, "event": "cancel"}
    ),
    Example(
        "wristband",
        "event",
        'The band showed a command (e.g. "help is coming") to the elder',
        {"ts": EXAMPLE_TS, "event": "received", "alert": "A17"},
    ),
    Example(
        "wristband",
        "status",
        'Status; publish {"online": false} as the MQTT will',
        {
            "ts": EXAMPLE_TS,
            "battery": 64,
            "rssi_dbm": -78,
            "firmware": "2.4.1",
            "online": True,
        },
    ),
    Example("pager", "event", "Emergency button", {"ts": EXAMPLE_TS, "event": "sos"}),
    Example("pager", "event", "Call button (non-urgent request)", {"ts": EXAMPLE_TS, "event": "call"}),
    Example("pager", "event", "Cancel", {"ts": EXAMPLE_TS, "event": "cancel"}),
    Example("pager", "status", "Status", {"ts": EXAMPLE_TS, "battery": 90, "online": True}),
    Example(
        "glucose",
        "telemetry",
        "Fasting reading in mmol/L",
        {
            "ts": EXAMPLE_TS,
            "glucose": 5.6,
            "unit": "mmol/L",
            "context": "fasting",
        },
    ),
    Example(
        "glucose",
        "telemetry",
        "After a meal in mg/dL (converted to mmol/L)",
        {
            "ts": EXAMPLE_TS,
            "glucose": 162,
            "unit": "mg/dL",
            "context": "after_meal",
        },
    ),
    Example("glucose", "event", "Meter error", {"ts": EXAMPLE_TS, "event": "error", "code": "E-3"}),
    Example("glucose", "status", "Status", {"ts": EXAMPLE_TS, "battery": 50}),
    Example(
        "bp",
        "telemetry",
        "Morning measurement",
        {
            "ts": EXAMPLE_TS,
            "systolic": 132,
            "diastolic": 84,
            "pulse": 71,
            "irregular": False,
        },
    ),
    Example("bp", "event", "Cuff error", {"ts": EXAMPLE_TS, "event": "error", "code": "CUFF-LOOSE"}),
    Example("bp", "status", "Status", {"ts": EXAMPLE_TS, "battery": 75, "firmware": "1.0.9"}),
)
