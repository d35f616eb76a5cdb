"""Alert rows and their audit trail in PostgreSQL; every write is inside the caller's transaction.

Times cross this boundary as milliseconds since the epoch (the engine's clock);
PostgreSQL stores timestamptz.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.domain.detection import Severity

Conn = AsyncConnection[Any]


def ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert_id: int
    code: str
    alert_key: str
    elder_id: str | None
    device_id: str
    kind: str
    severity: Severity
    state: str
    policy: str
    community: str | None
    grid: str | None
    opened_ms: int
    last_seen_ms: int
    detection_count: int
    evidence: dict[str, Any]
    confirm_until_ms: int | None
    recovered: bool
    acknowledged_ms: int | None
    acknowledged_by: str | None
    eta_ms: int | None
    on_scene_ms: int | None
    resolved_ms: int | None
    resolved_by: str | None
    outcome: str | None
    next_check_ms: int | None


_COLUMNS = (
    "alert_id, code, alert_key, elder_id, device_id, kind, severity, state, policy, community, grid, "
    "opened_at, last_seen_at, detection_count, evidence, confirm_until, recovered, acknowledged_at, "
    "acknowledged_by, eta, on_scene_at, resolved_at, resolved_by, outcome, next_check_at"
)


def _row(r: dict[str, Any]) -> AlertRow:
    return AlertRow(
        alert_id=r["alert_id"],
        code=r["code"],
        alert_key=r["alert_key"],
        elder_id=r["elder_id"],
        device_id=r["device_id"],
        kind=r["kind"],
        severity=r["severity"],
        state=r["state"],
        policy=r["policy"],
        community=r["community"],
        grid=r["grid"],
        opened_ms=ms(r["opened_at"]) or 0,
        last_seen_ms=ms(r["last_seen_at"]) or 0,
        detection_count=r["detection_count"],
        evidence=r["evidence"],
        confirm_until_ms=ms(r["confirm_until"]),
        recovered=r["recovered"],
        acknowledged_ms=ms(r["acknowledged_at"]),
        acknowledged_by=r["acknowledged_by"],
        eta_ms=ms(r["eta"]),
        on_scene_ms=ms(r["on_scene_at"]),
        resolved_ms=ms(r["resolved_at"]),
        resolved_by=r["resolved_by"],
        outcome=r["outcome"],
        next_check_ms=ms(r["next_check_at"]),
    )


async def fetch(conn: Conn, where: str, params: tuple[Any, ...], *, lock: str = "") -> list[AlertRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM alerts WHERE {where} {lock}", params)
        return [_row(r) for r in await cur.fetchall()]


async def open_alert(conn: Conn, key: str) -> AlertRow | None:
    rows = await fetch(conn, "alert_key = %s AND state <> 'resolved'", (key,), lock="FOR UPDATE")
    return rows[0] if rows else None


async def by_ref(conn: Conn, ref: int | str, *, lock: bool = True) -> AlertRow | None:
    """An alert by id or by its code (``A123``), as responders quote it."""
    text = str(ref).strip().upper()
    alert_id = int(text[1:]) if text.startswith("A") and text[1:].isdigit() else (int(text) if text.isdigit() else -1)
    rows = await fetch(conn, "alert_id = %s", (alert_id,), lock="FOR UPDATE" if lock else "")
    return rows[0] if rows else None


async def insert_alert(
    conn: Conn,
    *,
    key: str,
    elder_id: str | None,
    device_id: str,
    kind: str,
    severity: str,
    state: str,
    policy: str,
    community: str | None,
    grid: str | None,
    now_ms: int,
    evidence: dict[str, Any],
    confirm_until_ms: int | None,
    next_check_ms: int | None,
    opened: dict[str, Any],
) -> int:
    """The new alert and its "opened" trail entry (``opened`` is its detail), in one round trip."""
    cur = await conn.execute(
        "WITH a AS (INSERT INTO alerts (alert_key, elder_id, device_id, kind, severity, state, policy, community, "
        "grid, opened_at, last_seen_at, evidence, confirm_until, next_check_at) VALUES "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING alert_id), "
        "e AS (INSERT INTO alert_events (alert_id, at, event, actor, channel, detail) "
        "SELECT alert_id, %s, 'opened', 'system', NULL, %s FROM a) "
        "SELECT alert_id FROM a",
        (
            key,
            elder_id,
            device_id,
            kind,
            severity,
            state,
            policy,
            community,
            grid,
            ts(now_ms),
            ts(now_ms),
            Jsonb(evidence),
            ts(confirm_until_ms),
            ts(next_check_ms),
            ts(now_ms),
            Jsonb(opened),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def update(conn: Conn, alert_id: int, **fields: Any) -> None:
    """Set columns; ``*_ms`` keys are converted to the matching timestamptz columns."""
    names = {
        "opened_ms": "opened_at",
        "last_seen_ms": "last_seen_at",
        "confirm_until_ms": "confirm_until",
        "acknowledged_ms": "acknowledged_at",
        "eta_ms": "eta",
        "on_scene_ms": "on_scene_at",
        "resolved_ms": "resolved_at",
        "next_check_ms": "next_check_at",
    }
    sets, values = [], []
    for key, value in fields.items():
        column = names.get(key, key)
        sets.append(f"{column} = %s")
        values.append(ts(value) if key in names else Jsonb(value) if isinstance(value, dict) else value)
    await conn.execute(f"UPDATE alerts SET {', '.join(sets)} WHERE alert_id = %s", (*values, alert_id))


async def event(
    conn: Conn,
    alert_id: int,
    now_ms: int,
    name: str,
    *,
    actor: str | None = None,
    channel: str | None = None,
    **detail: Any,
) -> None:
    """One audit row: who, when, through what channel, what happened or was said."""
    await conn.execute(
        "INSERT INTO alert_events (alert_id, at, event, actor, channel, detail) VALUES (%s, %s, %s, %s, %s, %s)",
        (alert_id, ts(now_ms), name, actor, channel, Jsonb(detail)),
    )


async def events(conn: Conn, alert_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT at, event, actor, channel, detail FROM alert_events WHERE alert_id = %s ORDER BY at, id",
            (alert_id,),
        )
        return list(await cur.fetchall())
