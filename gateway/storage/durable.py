"""Store or spool, then acknowledge: the one rule every path that writes for a device follows.

A batch is acknowledged to the broker only after it is committed to the database or
fsynced to the spool. While the spool holds anything, new batches go to the spool too
(order is kept), and ``replay`` writes it oldest first as soon as the database answers.
A batch the database refuses (a bug, not an outage) becomes dead letters, or is spooled
when even those cannot be written: it is never dropped. Detections of a batch that went
to the spool are paged at once from memory, since the alert engine reads the database.

The single gateway (``gateway/service.py``) and the cluster's detection stream
(``gateway/cluster.py``) both hand their batches to one ``DurableStore``, so the rule
lives in one place.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.domain.detection import Detection
from gateway.error_text import first_line
from gateway.pipeline.batch import DeadLetter, DecodedBatch, RawBatch
from gateway.storage.spool import DiskSpool
from gateway.storage.writer import StorageRejected, StorageUnavailable, TelemetryWriter

log = logging.getLogger(__name__)

Ack = Callable[[RawBatch], None]


@dataclass(frozen=True, slots=True)
class StoreHooks:
    """What the owner does around a write: acknowledge, count, wake the alerts, page from memory."""

    ack: Ack
    stored: Callable[[RawBatch, DecodedBatch, float], None]  # committed: raw, decoded, write ms
    spooled: Callable[[RawBatch], None]
    dead_lettered: Callable[[int], None]
    wake_alerts: Callable[[], None]
    page_from_memory: Callable[[list[Detection]], None]


class DurableStore:
    """Owns the spool and the database's up/down state for one gateway process."""

    def __init__(self, spool: DiskSpool, hooks: StoreHooks) -> None:
        self.spool = spool
        self.hooks = hooks
        self.database_up = True
        self._lock = threading.Lock()  # appends come from threads (asyncio.to_thread)

    async def store(
        self,
        writer: TelemetryWriter,
        raw: RawBatch,
        decoded: DecodedBatch,
        *,
        idempotent: bool,
        detections_only: bool = False,
        ack: Ack | None = None,
    ) -> None:
        """Write, else spool; acknowledge either way once the batch is safe.

        ``ack`` overrides the owner's acknowledgement, for a batch that came on another
        MQTT session (the cluster's detection stream).
        ``detections_only``: the batch carries detections and no telemetry (the cluster's
        detection stream): refused, it is acknowledged and its detections paged from memory,
        since spooling would only repeat the refusal; stored, it is not counted as a
        telemetry write; spooled, only its detections are kept (its messages were stored
        by the instance that took them from the shared subscription).
        """
        ack = ack or self.hooks.ack
        if self.spool.is_empty():
            started = time.perf_counter()
            try:
                await writer.write(decoded, idempotent=idempotent)
            except StorageUnavailable as error:
                self.database_down(error)
            except StorageRejected as error:
                if not detections_only:
                    await self.reject(writer, raw, error, decoded.detections)
                else:
                    log.error(
                        "database rejected %d detections (paging critical ones from memory): %s",
                        len(decoded.detections),
                        first_line(error),
                    )
                    ack(raw)
                    self.hooks.page_from_memory(decoded.detections)
                return
            else:
                self.database_back()
                if not detections_only:
                    self.hooks.stored(raw, decoded, (time.perf_counter() - started) * 1000)
                ack(raw)
                if decoded.detections:
                    self.hooks.wake_alerts()
                return
        await self.append(RawBatch([], [], [], [], decoded.received_ms) if detections_only else raw, decoded.detections)
        self.hooks.spooled(raw)
        ack(raw)
        self.hooks.page_from_memory(decoded.detections)

    async def append(self, raw: RawBatch, detections: list[Detection]) -> None:
        """fsync a batch to the spool (off the event loop)."""

        def work() -> None:
            with self._lock:
                self.spool.append(raw, detections)

        await asyncio.to_thread(work)

    async def reject(
        self,
        writer: TelemetryWriter,
        raw: RawBatch,
        error: StorageRejected,
        detections: list[Detection] | None = None,
    ) -> None:
        """The database refused rows it should have taken: keep them all as dead letters."""
        log.error("database rejected a batch of %d messages: %s", len(raw), first_line(error))
        reason = f"storage rejected the batch: {first_line(error)}"
        letters = DecodedBatch(
            dead_letters=[
                DeadLetter(raw.received_ms, t.decode(errors="replace"), reason, p)
                for t, p in zip(raw.topics, raw.payloads, strict=True)
            ],
            received_ms=raw.received_ms,
            detections=detections or [],
        )
        try:
            await writer.write(letters)
            self.hooks.dead_lettered(len(raw))
        except (StorageUnavailable, StorageRejected):
            await self.append(raw, letters.detections)
        self.hooks.ack(raw)

    async def replay(
        self,
        writer: TelemetryWriter,
        decode: Callable[[RawBatch], DecodedBatch],
        replayed: Callable[[RawBatch, DecodedBatch, bool], None],
    ) -> None:
        """Write spooled batches oldest first; stop at the first that cannot be written.

        ``replayed(batch, decoded, stored)`` is told of each batch that left the spool.
        """
        for spooled in self.spool.pending():
            decoded = decode(spooled.batch)
            decoded.detections = spooled.detections
            try:
                await writer.write(decoded, idempotent=True)
            except StorageUnavailable as error:
                self.database_down(error)
                return
            except StorageRejected as error:
                await self.reject(writer, spooled.batch, error, spooled.detections)
                replayed(spooled.batch, decoded, False)
            else:
                replayed(spooled.batch, decoded, True)
                if decoded.detections:
                    self.hooks.wake_alerts()
            self.spool.remove(spooled)
        if self.spool.is_empty():
            log.info("spool replayed; writing directly again")
            self.database_back()

    def database_down(self, error: Exception) -> None:
        if self.database_up:
            log.warning("database unavailable (%s); spooling to %s", first_line(error), self.spool.directory)
            self.database_up = False

    def database_back(self) -> None:
        if not self.database_up:
            log.info("database reachable again")
            self.database_up = True
