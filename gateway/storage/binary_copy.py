"""PostgreSQL binary COPY data built from numpy columns, without a Python loop per row.

psycopg's ``Copy.write_row`` costs several microseconds a row in Python; telemetry
arrives tens of thousands of rows a second. A binary COPY row is a fixed layout
(field count, then length + big-endian value per field) whenever its NULLs and its
text lengths are fixed, so rows are grouped by (null pattern, text lengths) and each
group is written as one numpy record array. A batch has few such groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, the zero of PostgreSQL timestamps
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

Kind = Literal["timestamptz_ms", "float8", "float4", "int4", "int2", "bool", "text", "bytea"]
_VARIABLE = ("text", "bytea")

_WIDTH: dict[str, tuple[str, int]] = {
    "timestamptz_ms": (">i8", 8),
    "float8": (">f8", 8),
    "float4": (">f4", 4),
    "int4": (">i4", 4),
    "int2": (">i2", 2),
    "bool": ("u1", 1),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One column's values for every row; ``valid`` False means NULL.

    ``text`` and ``bytea`` columns hold ``bytes`` (text as UTF-8) in an object or ``S``
    array; numpy ``S`` arrays drop trailing NUL bytes, so binary values that may end
    in NUL must be given as an object array.
    ``timestamptz_ms`` holds int64 milliseconds since the Unix epoch.
    """

    kind: Kind
    values: NDArray[Any]
    valid: NDArray[np.bool_] | None = None


def _converted(col: Column) -> NDArray[np.generic]:
    if col.kind == "timestamptz_ms":
        return (col.values.astype(np.int64) - PG_EPOCH_MS) * 1000
    if col.kind == "bool":
        return col.values.astype(np.uint8)
    if col.kind in _VARIABLE:
        return np.asarray(col.values, dtype=np.bytes_)
    return col.values


def encode_rows(columns: list[Column]) -> bytes:
    """The data rows (no header/trailer) of a binary COPY for these columns."""
    if not columns:
        return b""
    n = len(columns[0].values)
    if n == 0:
        return b""
    values = [_converted(c) for c in columns]
    # True byte lengths, taken before numpy's S dtype hides trailing NUL bytes.
    lengths: dict[int, NDArray[np.int64]] = {
        i: np.fromiter(map(len, c.values), dtype=np.int64, count=n)
        for i, c in enumerate(columns)
        if c.kind in _VARIABLE
    }
    # Rows with the same null pattern and variable lengths share one record layout.
    key_parts: list[NDArray[np.int64]] = []
    for i, col in enumerate(columns):
        if col.valid is not None:
            key_parts.append(col.valid.astype(np.int64))
        if i in lengths:
            key_parts.append(lengths[i])
    groups: list[NDArray[np.intp]]
    if key_parts:
        order = np.lexsort(key_parts)
        change = np.zeros(n - 1, dtype=bool)
        for part in key_parts:
            change |= np.diff(part[order]) != 0
        groups = np.split(order, np.flatnonzero(change) + 1)
    else:
        groups = [np.arange(n)]
    out: list[bytes] = []
    for idx in groups:
        out.append(_encode_group(columns, values, lengths, idx))
    return b"".join(out)


def _encode_group(
    columns: list[Column],
    values: list[NDArray[np.generic]],
    lengths: dict[int, NDArray[np.int64]],
    idx: NDArray[np.intp],
) -> bytes:
    first = int(idx[0])
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    fill: list[tuple[str, object]] = [("nfields", len(columns))]
    for i, (col, vals) in enumerate(zip(columns, values, strict=True)):
        present = col.valid is None or bool(col.valid[first])
        fields.append((f"l{i}", ">i4"))
        if not present:
            fill.append((f"l{i}", -1))
            continue
        if col.kind in _VARIABLE:
            width = int(lengths[i][first])
            if width == 0:
                fill.append((f"l{i}", 0))
                continue
            fields.append((f"v{i}", f"S{width}"))
        else:
            dtype, width = _WIDTH[col.kind]
            fields.append((f"v{i}", dtype))
        fill.append((f"l{i}", width))
        fill.append((f"v{i}", vals[idx]))
    rows = np.empty(len(idx), dtype=np.dtype(fields))
    for name, value in fill:
        rows[name] = value
    return rows.tobytes()


def copy_payload(columns: list[Column]) -> bytes:
    """A whole binary COPY stream: header, rows, trailer."""
    return COPY_HEADER + encode_rows(columns) + COPY_TRAILER
