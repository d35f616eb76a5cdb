"""The spool survives reopening, keeps order, and forgets half-written files."""

from __future__ import annotations

import os
import stat
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


def test_the_spool_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Spooled batches hold positions and readings: folder 0700, files 0600, even under umask 000."""
    old_dir = tmp_path / "old"
    old_dir.mkdir(mode=0o755)
    (old_dir / "0000000000000001.batch").write_bytes(DiskSpool(tmp_path / "seed").append(batch(0)).read_bytes())
    os.chmod(old_dir / "0000000000000001.batch", 0o644)  # as an older version left them
    previous = os.umask(0)
    try:
        fresh = DiskSpool(tmp_path / "new" / "spool")
        written = fresh.append(batch(1))
        reopened = DiskSpool(old_dir)
        appended = reopened.append(batch(2))
    finally:
        os.umask(previous)
    for folder in (fresh.directory, old_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in (written, old_dir / "0000000000000001.batch", appended):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert [p.batch.received_ms for p in reopened.pending()] == [1000, 1002]


def test_the_systemd_unit_keeps_new_files_private() -> None:
    unit = Path(__file__).resolve().parent.parent / "deploy" / "eldercare-gateway.service"
    assert "UMask=0077" in unit.read_text().splitlines()
