"""Default vital-sign thresholds, from published clinical guidance, as a rule table.

Each rule says: when ``metric`` compares to ``value`` by ``op``, the reading is
abnormal at ``severity`` and belongs to alert ``kind``. An elder's care profile may
override any rule's value by its ``name``. Sources:

* Heart rate and SpO2: Royal College of Physicians, National Early Warning Score
  (NEWS2), 2017. Pulse <= 40 or >= 131 scores 3 (critical here); 111-130 scores 2
  (warning). SpO2 scale 1: <= 91 % scores 3 (critical), 92-93 % scores 2 (warning).
  Score-1 bands (41-50, 91-110 bpm; 94-95 %) are common in older people at rest and
  would page families for nothing, so they raise no alert.
* Glucose: American Diabetes Association, Standards of Care in Diabetes, section 6
  (Glycemic Goals and Hypoglycemia): level 1 hypoglycaemia < 3.9 mmol/L (70 mg/dL),
  level 2 < 3.0 mmol/L (54 mg/dL). Hyperglycaemia: >= 16.7 mmol/L (300 mg/dL) is a
  warning, >= 33.3 mmol/L (600 mg/dL, the hyperosmolar-state threshold) critical.
* Blood pressure: 2017 ACC/AHA Guideline for High Blood Pressure in Adults:
  hypertensive crisis at systolic >= 180 mmHg or diastolic >= 120 mmHg. Systolic
  < 90 mmHg is hypotension (warning).

Continuous measurements (wristband heart rate and SpO2) must persist over several
readings before they alert; a single glucose or cuff reading in a band is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.domain.detection import (
    HR_HIGH,
    HR_LOW,
    HYPERGLYCAEMIA,
    HYPERTENSIVE_CRISIS,
    HYPOGLYCAEMIA,
    HYPOTENSION,
    SPO2_LOW,
    Severity,
)

Op = Literal["<", "<=", ">=", ">"]
Metric = Literal["hr", "spo2", "glucose", "systolic", "diastolic"]


@dataclass(frozen=True, slots=True)
class VitalRule:
    name: str
    metric: Metric
    op: Op
    value: float
    severity: Severity
    kind: str


DEFAULT_RULES: tuple[VitalRule, ...] = (
    VitalRule("hr_critical_low", "hr", "<=", 40, "critical", HR_LOW),
    VitalRule("hr_warning_high", "hr", ">=", 111, "warning", HR_HIGH),
    VitalRule("hr_critical_high", "hr", ">=", 131, "critical", HR_HIGH),
    VitalRule("spo2_warning_low", "spo2", "<=", 93, "warning", SPO2_LOW),
    VitalRule("spo2_critical_low", "spo2", "<=", 91, "critical", SPO2_LOW),
    VitalRule("glucose_warning_low", "glucose", "<", 3.9, "warning", HYPOGLYCAEMIA),
    VitalRule("glucose_critical_low", "glucose", "<", 3.0, "critical", HYPOGLYCAEMIA),
    VitalRule("glucose_warning_high", "glucose", ">=", 16.7, "warning", HYPERGLYCAEMIA),
    VitalRule("glucose_critical_high", "glucose", ">=", 33.3, "critical", HYPERGLYCAEMIA),
    VitalRule("systolic_critical_high", "systolic", ">=", 180, "critical", HYPERTENSIVE_CRISIS),
    VitalRule("diastolic_critical_high", "diastolic", ">=", 120, "critical", HYPERTENSIVE_CRISIS),
    VitalRule("systolic_warning_low", "systolic", "<", 90, "warning", HYPOTENSION),
)

RULE_NAMES: frozenset[str] = frozenset(r.name for r in DEFAULT_RULES)
CONTINUOUS_METRICS: frozenset[str] = frozenset({"hr", "spo2"})
