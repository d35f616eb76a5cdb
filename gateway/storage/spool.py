"""On-disk spool: where acknowledged messages wait while the database is away.

A batch that cannot be stored is written here (one file per batch, fsynced and
renamed into place) before its messages are acknowledged to the broker, so an
acknowledged reading survives both a database outage and a gateway crash. Files are
named by a rising sequence number and replayed oldest first; a file is removed only
after its batch is committed to the database. The raw messages are kept, not the
decoded rows, so replay goes through exactly the same decoder (with the time the
batch was first received as its reference clock); detections made when the batch
arrived are kept with it, since detection runs once, on live data.

The batches hold positions and health readings, so the folder is 0700 and each file
0600 whatever the umask (a folder left 0755 by an older version is tightened on open).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from gateway.domain.detection import Detection
from gateway.pipeline.batch import RawBatch


class SpoolRecord(msgspec.Struct, array_like=True):
    received_ms: int
    topics: list[bytes]
    payloads: list[bytes]
    detections: list[Detection] = []


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    path: Path
    batch: RawBatch
    detections: list[Detection]


class DiskSpool:
    """A directory of batch files; safe to reopen after a crash."""

    SUFFIX = ".batch"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is cut by the umask, and an old folder keeps its own
        for leftover in directory.glob("*.tmp"):  # a write cut short by a crash: never acked
            leftover.unlink()
        files = self._files()
        for path in files:
            os.chmod(path, 0o600)
        self._next = max((self._seq(p) for p in files), default=0) + 1
        # kept in memory: the pipeline asks on every batch, a directory scan each time is waste
        self._count = len(files)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(SpoolRecord)

    @staticmethod
    def _seq(path: Path) -> int:
        return int(path.stem)

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{self.SUFFIX}"), key=self._seq)

    def __len__(self) -> int:
        return self._count

    def is_empty(self) -> bool:
        return self._count == 0

    def message_count(self) -> int:
        return sum(len(s.batch) for s in self.pending())

    def append(self, batch: RawBatch, detections: list[Detection] | None = None) -> Path:
        """Write the batch (and what was detected in it) durably; return its file."""
        record = SpoolRecord(batch.received_ms, batch.topics, batch.payloads, detections or [])
        final = self.directory / f"{self._next:016d}{self.SUFFIX}"
        tmp = final.with_suffix(".tmp")
        self._next += 1
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(self._encoder.encode(record))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._count += 1
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def pending(self) -> Iterator[SpooledBatch]:
        """Spooled batches, oldest first; each is read when reached."""
        for path in self._files():
            record = self._decoder.decode(path.read_bytes())
            n = len(record.topics)
            yield SpooledBatch(
                path,
                RawBatch(record.topics, record.payloads, [0] * n, [True] * n, record.received_ms),
                record.detections,
            )

    def remove(self, spooled: SpooledBatch) -> None:
        if spooled.path.exists():
            spooled.path.unlink()
            self._count -= 1
