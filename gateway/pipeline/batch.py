"""The values handed from stage to stage: raw batches in, decoded columns out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.domain.detection import Detection
from gateway.storage.binary_copy import Column, Kind
from gateway.storage.tables import TableSpec


@dataclass(slots=True)
class RawBatch:
    """Messages as received, in order, plus what is needed to acknowledge them.

    ``ack_token`` identifies the broker connection the packet ids belong to; ids are
    only meaningful on that connection.
    """

    topics: list[bytes]
    payloads: list[bytes]
    packet_ids: list[int]
    dup: list[bool]
    received_ms: int
    ack_token: object = None

    def __len__(self) -> int:
        return len(self.topics)

    @property
    def any_dup(self) -> bool:
        return any(self.dup)


@dataclass(frozen=True, slots=True)
class TableRows:
    """Rows for one time-series table, one ``Column`` per column of its spec."""

    spec: TableSpec
    columns: tuple[Column, ...]

    def __len__(self) -> int:
        return len(self.columns[0].values) if self.columns else 0

    def column(self, name: str) -> Column:
        return self.columns[self.spec.position[name]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    topic: str
    reason: str
    payload: bytes
    index: int = 0  # position in its batch, so letters are stored in arrival order


@dataclass(slots=True)
class DecodedBatch:
    """Everything a raw batch became: table rows to store, and what was refused."""

    tables: list[TableRows] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    received_ms: int = 0
    detections: list[Detection] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return sum(len(t) for t in self.tables)

    def table(self, name: str) -> TableRows | None:
        for rows in self.tables:
            if rows.spec.name == name:
                return rows
        return None


def float_column(kind: Kind, values: list[float | None], dtype: type[np.floating[Any]] = np.float64) -> Column:
    """A nullable numeric column from a list where None means NULL."""
    n = len(values)
    valid: NDArray[np.bool_] = np.fromiter((v is not None for v in values), bool, n)
    arr = np.fromiter((0.0 if v is None else v for v in values), dtype, n)
    return Column(kind, arr, None if valid.all() else valid)
