"""What a detector hands to the alert engine: one event that may need a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
SEVERITY_LEVEL: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
LEVEL_SEVERITY: tuple[Severity, ...] = ("info", "warning", "critical")

# Alert kinds. A detection's key is (elder, kind); "cleared" detections carry the same
# kind so the alert engine can auto-resolve where that is safe.
SOS = "sos"
CALL = "call"
FALL = "fall"
FALL_NO_RECOVERY = "fall_no_recovery"
GEOFENCE_EXIT = "geofence_exit"
HR_HIGH = "hr_high"
HR_LOW = "hr_low"
SPO2_LOW = "spo2_low"
HYPOGLYCAEMIA = "hypoglycaemia"
HYPERGLYCAEMIA = "hyperglycaemia"
HYPERTENSIVE_CRISIS = "hypertensive_crisis"
HYPOTENSION = "hypotension"
LOW_BATTERY = "low_battery"
NOT_WORN = "not_worn"
DEVICE_SILENT = "device_silent"
INACTIVITY = "inactivity"
CANCEL_LATE = "cancel_late"
CMD_RECEIVED = "cmd_received"  # the device confirms it showed a command (alert code in evidence)
CANCEL = "cancel"  # the elder pressed cancel ("I am OK"): closes alerts still asking them


@dataclass(frozen=True, slots=True)
class Detection:
    """A detector's finding, with the evidence that triggered it.

    ``cleared`` marks the condition ending (back inside, vitals normal, reporting
    again, or an SOS withdrawn by a cancel inside the grace period).
    """

    elder_id: str | None
    device_id: str
    kind: str
    severity: Severity
    ts_ms: int
    evidence: dict[str, Any] = field(default_factory=dict)
    cleared: bool = False

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.elder_id, self.kind)
