"""Rows and batches the cluster cuts, reads back and orders (no state)."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql

from gateway.cluster.state import REPLAY_CHUNK
from gateway.domain.detection import DEVICE_SILENT, Detection
from gateway.ingest.mqtt_client import IngestConnection
from gateway.ingest.mqtt_wire import InboundPublishes
from gateway.pipeline.batch import RawBatch, TableRows
from gateway.storage import tables
from gateway.storage.binary_copy import Column


def subset_batch(raw: RawBatch, which: list[int]) -> RawBatch:
    return RawBatch(
        [raw.topics[i] for i in which],
        [raw.payloads[i] for i in which],
        [raw.packet_ids[i] for i in which],
        [raw.dup[i] for i in which],
        raw.received_ms,
        raw.ack_token,
    )


def take_rows(rows: TableRows, keep: NDArray[np.bool_]) -> TableRows:
    return TableRows(
        rows.spec,
        tuple(Column(c.kind, c.values[keep], None if c.valid is None else c.valid[keep]) for c in rows.columns),
    )


async def fetch_recent_rows(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], spec: tables.TableSpec, devices: list[str], replay_s: float
) -> TableRows | None:
    """Stored rows of ``devices`` from the last ``replay_s``, as the decoder would have made them."""
    select = sql.SQL(", ").join(
        sql.SQL("(extract(epoch FROM {}) * 1000)::int8").format(sql.Identifier(c.name))
        if c.kind == "timestamptz_ms"
        else sql.Identifier(c.name)
        for c in spec.columns
    )
    query = sql.SQL(
        "SELECT {} FROM {} WHERE device_id = ANY(%s) AND time > now() - make_interval(secs => %s) ORDER BY time"
    ).format(select, sql.Identifier(spec.name))
    records = await (await conn.execute(query, (devices, replay_s))).fetchall()
    if not records:
        return None
    columns: list[Column] = []
    for i, c in enumerate(spec.columns):
        values = [r[i] for r in records]
        valid = np.array([v is not None for v in values], bool)
        if c.kind in ("text", "bytea"):
            arr = np.array(
                [v.encode() if isinstance(v, str) else (bytes(v) if v is not None else b"") for v in values],
                dtype=object,
            )
        else:
            dtype = {
                "timestamptz_ms": np.int64,
                "float8": np.float64,
                "float4": np.float32,
                "int4": np.int32,
                "int2": np.int16,
                "bool": np.bool_,
            }[c.kind]
            arr = np.array([0 if v is None else v for v in values], dtype=dtype)
        columns.append(Column(c.kind, arr, None if valid.all() else valid))
    return TableRows(spec, tuple(columns))


async def still_silent(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], devices: list[str], replay_s: float
) -> dict[str, int]:
    """Devices whose latest silence detection is not cleared, with its time (ms)."""
    out: dict[str, int] = {}
    for at in range(0, len(devices), REPLAY_CHUNK):
        rows = await (
            await conn.execute(
                "SELECT DISTINCT ON (device_id) device_id, cleared, (extract(epoch FROM ts) * 1000)::int8 "
                "FROM detections WHERE kind = %s AND device_id = ANY(%s) "
                "AND ts > now() - make_interval(secs => %s) ORDER BY device_id, ts DESC, cleared DESC",
                (DEVICE_SILENT, devices[at : at + REPLAY_CHUNK], replay_s),
            )
        ).fetchall()
        out.update({str(r[0]): int(r[2]) for r in rows if not r[1]})
    return out


def insert_order(d: Detection) -> tuple[str, str, int, bool]:
    """The detections' unique key: every writer inserts in this order, so none waits in a cycle."""
    return (d.device_id, d.kind, d.ts_ms, d.cleared)


def discard_publishes(publishes: InboundPublishes, conn: IngestConnection) -> None:
    """A dead instance's detect session is only ended, never read."""
