"""The numpy-built binary COPY must round-trip through a real PostgreSQL exactly."""

from __future__ import annotations

import numpy as np
import psycopg

from gateway.storage.binary_copy import Column, copy_payload


def test_round_trip_with_mixed_nulls_text_lengths_and_binary_ending_in_nul(database: str) -> None:
    rng = np.random.default_rng(3)
    n = 500
    ts = 1_763_800_000_000 + np.arange(n, dtype=np.int64)
    names = np.array([("dev-" + "x" * int(k)).encode() for k in rng.integers(0, 12, n)], dtype=object)
    f8 = rng.normal(size=n)
    f8_valid = rng.random(n) > 0.3
    f4 = rng.normal(size=n).astype(np.float32)
    f4_valid = rng.random(n) > 0.5
    i4 = rng.integers(-1000, 1000, n).astype(np.int32)
    flags = rng.random(n) > 0.5
    blobs = np.array([bytes([1, 2, 0, 0][: int(k)]) + b"\x00" * int(k) for k in rng.integers(0, 4, n)], dtype=object)
    text_valid = rng.random(n) > 0.2
    data = copy_payload(
        [
            Column("timestamptz_ms", ts),
            Column("text", names),
            Column("float8", f8, f8_valid),
            Column("float4", f4, f4_valid),
            Column("int4", i4),
            Column("bool", flags),
            Column("bytea", blobs),
            Column("text", names, text_valid),
        ]
    )
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (time timestamptz, name text, a float8, b real, c int, d bool, e bytea, f text)")
        with conn.cursor().copy("COPY t FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint, name, a, b, c, d, e, f FROM t ORDER BY time"
        ).fetchall()
    assert len(rows) == n
    for i, row in enumerate(rows):
        assert row[0] == ts[i]
        assert row[1] == names[i].decode()
        assert row[2] == (f8[i] if f8_valid[i] else None)
        assert (np.float32(row[3]) if row[3] is not None else None) == (f4[i] if f4_valid[i] else None)
        assert row[4] == i4[i]
        assert row[5] == flags[i]
        assert bytes(row[6]) == blobs[i]
        assert row[7] == (names[i].decode() if text_valid[i] else None)
