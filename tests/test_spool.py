"""The spool survives reopening, keeps order, and forgets half-written files."""

from __future__ import annotations

from pathlib import Path

from gateway.pipeline.batch import RawBatch
from gateway.storage.spool import DiskSpool


def batch(i: int) -> RawBatch:
    return RawBatch(
        [b"eldercare/v1/pager/p/event"] * 2, [b'{"i":%d}' % i, b"\x00\xff"], [1, 2], [False, False], 1000 + i
    )


def test_order_reopen_and_half_written_files(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    assert spool.is_empty()
    for i in range(3):
        spool.append(batch(i))
    (tmp_path / "0000000000000099.tmp").write_bytes(b"half")
    reopened = DiskSpool(tmp_path)
    assert not (tmp_path / "0000000000000099.tmp").exists()
    pending = list(reopened.pending())
    assert [p.batch.received_ms for p in pending] == [1000, 1001, 1002]
    assert pending[0].batch.payloads == [b'{"i":0}', b"\x00\xff"]
    assert all(p.batch.any_dup for p in pending)  # replays may repeat stored rows
    reopened.remove(pending[0])
    reopened.append(batch(3))
    assert [p.batch.received_ms for p in reopened.pending()] == [1001, 1002, 1003]
    assert reopened.message_count() == 6
