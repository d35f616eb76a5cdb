"""Monthly vitals and activity per elder, from the hourly rollups (the same in either storage mode).

For each elder with readings in the month: days with wristband data, mean heart rate
and SpO2, mean daily steps (the day's highest cumulative count), mean glucose and
blood pressure. Days are counted in the report's time zone. Averages are sums over
counts, so every reading weighs the same however the hours fell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from gateway.alerting.report import month_bounds

VITALS_SQL = """
WITH bounds AS (
  SELECT %(start)s::timestamp AT TIME ZONE %(tz)s AS lo, %(end)s::timestamp AT TIME ZONE %(tz)s AS hi
), wrist AS (
  SELECT d.elder_id, date_trunc('day', r.bucket, %(tz)s) AS day,
         sum(r.hr_sum) AS hr_sum, sum(r.hr_n) AS hr_n, sum(r.spo2_sum) AS spo2_sum, sum(r.spo2_n) AS spo2_n,
         max(r.steps_max) AS steps
  FROM wristband_hourly r JOIN devices d USING (device_id), bounds
  WHERE r.bucket >= bounds.lo AND r.bucket < bounds.hi AND d.elder_id IS NOT NULL
  GROUP BY 1, 2
), wrist_month AS (
  SELECT elder_id, count(*) AS days, sum(hr_sum) / nullif(sum(hr_n), 0) AS hr,
         sum(spo2_sum) / nullif(sum(spo2_n), 0) AS spo2, avg(steps) AS steps
  FROM wrist GROUP BY 1
), glucose AS (
  SELECT d.elder_id, sum(r.glucose_mmol_sum) / nullif(sum(r.glucose_mmol_n), 0) AS glucose
  FROM glucose_hourly r JOIN devices d USING (device_id), bounds
  WHERE r.bucket >= bounds.lo AND r.bucket < bounds.hi AND d.elder_id IS NOT NULL GROUP BY 1
), bp AS (
  SELECT d.elder_id, sum(r.systolic_sum) / nullif(sum(r.systolic_n), 0) AS systolic,
         sum(r.diastolic_sum) / nullif(sum(r.diastolic_n), 0) AS diastolic
  FROM bp_hourly r JOIN devices d USING (device_id), bounds
  WHERE r.bucket >= bounds.lo AND r.bucket < bounds.hi AND d.elder_id IS NOT NULL GROUP BY 1
)
SELECT e.elder_id, e.name, coalesce(w.days, 0), w.hr, w.spo2, w.steps, g.glucose, b.systolic, b.diastolic
FROM elders e
LEFT JOIN wrist_month w USING (elder_id) LEFT JOIN glucose g USING (elder_id) LEFT JOIN bp b USING (elder_id)
WHERE w.elder_id IS NOT NULL OR g.elder_id IS NOT NULL OR b.elder_id IS NOT NULL
ORDER BY e.elder_id
"""


@dataclass(frozen=True, slots=True)
class VitalsRow:
    elder_id: str
    name: str
    days: int  # days with wristband readings
    hr: float | None
    spo2: float | None
    steps_per_day: float | None
    glucose_mmol: float | None
    systolic: float | None
    diastolic: float | None


def vitals(conn: psycopg.Connection[Any], month: str, timezone: str = "Asia/Shanghai") -> list[VitalsRow]:
    start, end = month_bounds(month)
    rows = conn.execute(VITALS_SQL, {"start": start, "end": end, "tz": timezone}).fetchall()

    def num(value: Any) -> float | None:
        return None if value is None else float(value)

    return [
        VitalsRow(str(r[0]), str(r[1]), int(r[2]), num(r[3]), num(r[4]), num(r[5]), num(r[6]), num(r[7]), num(r[8]))
        for r in rows
    ]


def render(rows: list[VitalsRow], month: str) -> str:
    def show(value: float | None, decimals: int = 0) -> str:
        return "-" if value is None else f"{value:.{decimals}f}"

    lines = [
        f"vitals for {month} (means over the month; steps: mean of each day's count)",
        f"{'elder':<10} {'name':<8} {'days':>4} {'HR':>5} {'SpO2':>5} {'steps/day':>9} {'glucose':>7} {'BP':>9}",
    ]
    for r in rows:
        bp = f"{show(r.systolic)}/{show(r.diastolic)}" if r.systolic is not None else "-"
        lines.append(
            f"{r.elder_id:<10} {r.name:<8} {r.days:>4} {show(r.hr):>5} {show(r.spo2, 1):>5} "
            f"{show(r.steps_per_day):>9} {show(r.glucose_mmol, 1):>7} {bp:>9}"
        )
    lines.append(f"total: {len(rows)} elders with readings")
    return "\n".join(lines)
