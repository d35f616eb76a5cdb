"""Ingest counters, kept by the supervisor and read by the metrics endpoint and the logs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestStats:
    """Counters for logs and metrics (no device ids, no values)."""

    received: int = 0
    batches: int = 0
    rows_stored: int = 0
    dead_letters: int = 0
    spooled_messages: int = 0
    replayed_messages: int = 0
    acked: int = 0
    ack_dropped: int = 0
    detections: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)  # dead letters by reason (first words)
    batch_messages: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # histogram bucket -> batches
    writes: int = 0
    write_ms_total: float = 0.0
    write_ms_buckets: dict[int, int] = field(default_factory=dict)
