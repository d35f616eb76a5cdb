"""Response-time report: the figures a post station is assessed by, from the audit trail.

Per community and per tier reached: alerts, acknowledgements, median and 90th
percentile time to acknowledge and to resolve, and how many escalations went
unacknowledged all the way to the hotline. Computed in SQL from ``alerts`` and
``tier_firings``, so it reflects exactly what happened, not what was intended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg

REPORT_SQL = """
WITH month_alerts AS (
  SELECT a.*, coalesce(a.community, '(no community)') AS comm,
         (SELECT max(tier) FROM tier_firings f WHERE f.alert_id = a.alert_id) AS top_tier,
         (SELECT bool_or(p.role = 'hotline') FROM notifications p
           WHERE p.alert_id = a.alert_id AND p.purpose = 'page') AS reached_hotline
  FROM alerts a
  WHERE a.opened_at >= %(start)s AND a.opened_at < %(end)s
)
SELECT comm,
       coalesce(top_tier + 1, 0) AS tier,
       count(*) AS alerts,
       count(acknowledged_at) AS acknowledged,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at))
         AS ack_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at))
         AS ack_p90,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - opened_at))
         AS resolve_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - opened_at))
         AS resolve_p90,
       count(*) FILTER (WHERE coalesce(reached_hotline, false)
                        AND (acknowledged_at IS NULL
                             OR acknowledged_at > (SELECT min(f.at) FROM tier_firings f
                                                   JOIN notifications p ON p.alert_id = f.alert_id
                                                   AND p.tier = f.tier AND p.role = 'hotline'
                                                   WHERE f.alert_id = month_alerts.alert_id)))
         AS unacked_to_hotline
FROM month_alerts
GROUP BY comm, coalesce(top_tier + 1, 0)
ORDER BY comm, tier
"""


@dataclass(frozen=True, slots=True)
class ResponseRow:
    community: str
    tier: int  # highest tier paged, counted from 1; 0 = closed before anyone was paged
    alerts: int
    acknowledged: int
    ack_p50_s: float | None
    ack_p90_s: float | None
    resolve_p50_s: float | None
    resolve_p90_s: float | None
    unacked_to_hotline: int


def month_bounds(month: str) -> tuple[date, date]:
    """``2026-11`` -> (2026-11-01, 2026-12-01)."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        start = date(year, mon, 1)
    except ValueError:
        raise ValueError(f"month must look like 2026-11, got {month!r}") from None
    end = date(year + (mon == 12), mon % 12 + 1, 1)
    return start, end


def responses(conn: psycopg.Connection[Any], month: str, timezone: str = "Asia/Shanghai") -> list[ResponseRow]:
    start, end = month_bounds(month)
    conn.execute("SELECT set_config('TimeZone', %s, true)", (timezone,))
    rows = conn.execute(REPORT_SQL, {"start": start, "end": end}).fetchall()

    def seconds(value: Any) -> float | None:
        return None if value is None else float(value)

    return [
        ResponseRow(
            str(r[0]),
            int(r[1]),
            int(r[2]),
            int(r[3]),
            seconds(r[4]),
            seconds(r[5]),
            seconds(r[6]),
            seconds(r[7]),
            int(r[8]),
        )
        for r in rows
    ]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def render(rows: list[ResponseRow], month: str) -> str:
    header = (
        f"{'community':<16} {'tier':>4} {'alerts':>6} {'acked':>6} {'ack p50':>9} {'ack p90':>9} "
        f"{'resolve p50':>12} {'resolve p90':>12} {'to hotline unacked':>19}"
    )
    lines = [f"response times for {month} (tier = highest tier paged; 0 = closed before paging)", header]
    for r in rows:
        lines.append(
            f"{r.community:<16} {r.tier:>4} {r.alerts:>6} {r.acknowledged:>6} "
            f"{_dur(r.ack_p50_s):>9} {_dur(r.ack_p90_s):>9} "
            f"{_dur(r.resolve_p50_s):>12} {_dur(r.resolve_p90_s):>12} "
            f"{r.unacked_to_hotline:>19}"
        )
    total = sum(r.alerts for r in rows)
    acked = sum(r.acknowledged for r in rows)
    lines.append(
        f"total: {total} alerts, {acked} acknowledged, "
        f"{sum(r.unacked_to_hotline for r in rows)} reached the hotline unacknowledged"
    )
    return "\n".join(lines)
