"""Micro-batching between the broker connection and the decode stage.

Messages are gathered until the batch holds ``max_messages`` or its first message is
``max_age_ms`` old, then handed on whole; a read that brings a device event (an SOS,
a fall, a cancel) flushes at once. The hand-off is bounded: when
``max_pending`` batches wait, the broker connection stops reading, so TCP and the
broker's receive-maximum push back on publishers instead of memory growing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["MicroBatcher", "wall_clock_ms"]  # wall_clock_ms: where it was imported from before

from gateway.ingest.clock import wall_clock_ms
from gateway.ingest.mqtt_client import IngestConnection
from gateway.ingest.mqtt_wire import InboundPublishes
from gateway.pipeline.batch import RawBatch


class MicroBatcher:
    """Collects publishes into ``RawBatch``es and puts them on ``queue``."""

    def __init__(
        self,
        queue: asyncio.Queue[RawBatch],
        *,
        max_messages: int = 2_000,
        max_age_ms: float = 5.0,
        max_pending: int = 8,
        clock_ms: Callable[[], int] = wall_clock_ms,
        urgent: asyncio.Queue[RawBatch] | None = None,
    ) -> None:
        self.queue = queue
        self.urgent = urgent
        self.max_messages = max_messages
        self.max_age_s = max_age_ms / 1000
        self.max_pending = max_pending
        self.clock_ms = clock_ms
        self._conn: IngestConnection | None = None
        self._paused: list[IngestConnection] = []  # a takeover's connection may be paused too (cluster.py)
        self._timer: asyncio.TimerHandle | None = None
        self._reset()
        self.received = 0

    def _reset(self) -> None:
        self._topics: list[bytes] = []
        self._payloads: list[bytes] = []
        self._ids: list[int] = []
        self._dup: list[bool] = []
        self._first_ms = 0

    def add(self, publishes: InboundPublishes, conn: IngestConnection) -> None:
        """The connection's sink: called once per read with every frame parsed in it."""
        if conn is not self._conn:
            self.flush()
            self._conn = conn
        if self.urgent is not None and any(t.endswith(b"/event") for t in publishes.topics):
            publishes = self._send_events_ahead(publishes, conn)
            if not publishes.topics:
                return
        if not self._topics:
            self._first_ms = self.clock_ms()
            self._timer = asyncio.get_running_loop().call_later(self.max_age_s, self.flush)
        self._topics += publishes.topics
        self._payloads += publishes.payloads
        self._ids += publishes.packet_ids
        self._dup += publishes.dup
        self.received += len(publishes.topics)
        # an event (SOS, fall, cancel) does not wait for the batch to fill or age
        if len(self._topics) >= self.max_messages or any(t.endswith(b"/event") for t in publishes.topics):
            self.flush()

    def _send_events_ahead(self, publishes: InboundPublishes, conn: IngestConnection) -> InboundPublishes:
        """Device events go on at once as a batch of their own; the rest is returned."""
        assert self.urgent is not None
        events = [i for i, t in enumerate(publishes.topics) if t.endswith(b"/event")]
        rest = [i for i, t in enumerate(publishes.topics) if not t.endswith(b"/event")]

        def pick(values: list[Any], which: list[int]) -> list[Any]:
            return [values[i] for i in which]

        self.urgent.put_nowait(
            RawBatch(
                pick(publishes.topics, events),
                pick(publishes.payloads, events),
                pick(publishes.packet_ids, events),
                pick(publishes.dup, events),
                self.clock_ms(),
                conn,
            )
        )
        self.received += len(events)
        return InboundPublishes(
            pick(publishes.topics, rest),
            pick(publishes.payloads, rest),
            pick(publishes.packet_ids, rest),
            pick(publishes.dup, rest),
        )

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._topics:
            return
        batch = RawBatch(self._topics, self._payloads, self._ids, self._dup, self._first_ms, self._conn)
        self._reset()
        self.queue.put_nowait(batch)
        if self.queue.qsize() >= self.max_pending and self._conn is not None and not self._conn.paused:
            self._conn.pause()
            self._paused.append(self._conn)

    def consumed(self) -> None:
        """Called by the consumer after each ``get``: resume reading once there is room."""
        if self._paused and self.queue.qsize() <= self.max_pending // 2:
            for conn in self._paused:
                conn.resume()
            self._paused.clear()
