"""The detect stream: every message read a second time, the owner's detected and stored."""

from __future__ import annotations

import asyncio

import numpy as np

from gateway.cluster.ownership import topic_device
from gateway.cluster.rows import insert_order, subset_batch, take_rows
from gateway.cluster.state import EVENT_SUFFIX, NEVER, ClusterState
from gateway.ingest.mqtt_client import IngestConnection
from gateway.ingest.mqtt_wire import InboundPublishes
from gateway.pipeline.batch import DecodedBatch, RawBatch, TableRows
from gateway.storage import tables
from gateway.storage.writer import TelemetryWriter


class DetectStream(ClusterState):
    """Routing by owner, detection of owned elders, and their store-then-ack."""

    # -- routing -----------------------------------------------------------------------------------------

    def _owns(self, device: bytes) -> bool:
        owned = self._route.get(device)
        if owned is None:
            if len(self._route) > 1_000_000:
                self._route.clear()
            owned = self._route[device] = self.ownership.owns(self._routing_key(device, self.gateway.detectors))
        return owned

    # -- the detect stream -------------------------------------------------------------------------------

    def _sink(self, publishes: InboundPublishes, conn: IngestConnection) -> None:
        if not self._flowing.is_set():
            self._flowing.set()
        self.batcher.add(publishes, conn)

    async def _detect_stage(self, queue: asyncio.Queue[RawBatch], consume: bool) -> None:
        await self._ready.wait()
        while True:
            raw = await queue.get()
            if consume:
                self.batcher.consumed()
            try:
                async with self._lock:
                    await self._detect(raw)
            finally:
                queue.task_done()

    async def _detect(self, raw: RawBatch) -> None:
        owned: list[int] = []
        events: list[int] = []  # other instances' device events: kept in memory
        others: list[int] = []
        owns = self._owns
        for i, topic in enumerate(raw.topics):
            if owns(topic_device(topic)):
                owned.append(i)
            else:
                if topic.endswith(EVENT_SUFFIX):
                    events.append(i)
                others.append(raw.packet_ids[i])
        self.stats.detect_received += len(raw)
        self.stats.detect_owned += len(owned)
        if events:
            self._keep_events(subset_batch(raw, events))
        self._ack(raw.ack_token, others)
        if not owned:
            return
        gw = self.gateway
        decoded = self.decoder.decode(subset_batch(raw, owned))
        if self._watermarks:
            self._skip_replayed(decoded)
        detections = gw.detectors.process(decoded) if gw.detectors is not None else []
        mine = [raw.packet_ids[i] for i in owned]
        if not detections:
            self._ack(raw.ack_token, mine)
            return
        gw.detected(detections)
        ack = RawBatch([], [], mine, [], raw.received_ms, raw.ack_token)
        await self.store_queue.put(
            (ack, DecodedBatch(received_ms=raw.received_ms, detections=sorted(detections, key=insert_order)))
        )

    def _keep_events(self, raw: RawBatch) -> None:
        """Other instances' device events, for a replay should their elders come here."""
        now = asyncio.get_running_loop().time()
        kept = self._others_events
        kept.extend((now, rows) for rows in self.decoder.decode(raw).tables if rows.spec is tables.EVENTS)
        while kept and kept[0][0] < now - self.settings.replay_s:
            kept.popleft()

    def _kept_events(self, devices: list[str], stored: list[TableRows]) -> list[TableRows]:
        """Kept events of ``devices`` that are not (yet) in the database."""
        wanted = {d.encode() for d in devices}
        seen = {
            (d, t, e)
            for rows in stored
            if rows.spec is tables.EVENTS
            for d, t, e in zip(
                rows.column("device_id").values.tolist(),
                rows.column("time").values.tolist(),
                rows.column("event").values.tolist(),
                strict=True,
            )
        }
        out: list[TableRows] = []
        for _, rows in self._others_events:
            keep = np.array(
                [
                    d in wanted and (d, t, e) not in seen
                    for d, t, e in zip(
                        rows.column("device_id").values.tolist(),
                        rows.column("time").values.tolist(),
                        rows.column("event").values.tolist(),
                        strict=True,
                    )
                ],
                bool,
            )
            if keep.any():
                out.append(take_rows(rows, keep))
        return out

    def _skip_replayed(self, decoded: DecodedBatch) -> None:
        """Rows a replay already went through are not detected again (they would count twice)."""
        if asyncio.get_running_loop().time() > self._watermarks_until:
            self._watermarks.clear()
            self._replayed_events.clear()
            return
        kept: list[TableRows] = []
        for rows in decoded.tables:
            name = rows.spec.name
            devices = rows.column("device_id").values.tolist()
            ts = rows.column("time").values.tolist()
            if rows.spec is tables.EVENTS:
                seen = self._replayed_events
                keep = np.array(
                    [
                        (d, t, e) not in seen
                        for d, t, e in zip(devices, ts, rows.column("event").values.tolist(), strict=True)
                    ],
                    bool,
                )
            else:
                marks = self._watermarks
                keep = np.array([t > marks.get((d, name), NEVER) for d, t in zip(devices, ts, strict=True)], bool)
            kept.append(rows if keep.all() else take_rows(rows, keep))
        decoded.tables = [rows for rows in kept if len(rows)]

    def _ack(self, token: object, packet_ids: list[int]) -> None:
        if packet_ids:
            self.mqtt.ack(token, packet_ids)

    async def _store_stage(self, writer: TelemetryWriter) -> None:
        while True:
            ack, decoded = await self.store_queue.get()
            try:
                await self._store(writer, ack, decoded)
            finally:
                self.store_queue.task_done()

    async def _store(self, writer: TelemetryWriter, ack: RawBatch, decoded: DecodedBatch) -> None:
        """Detections, then the ack; while the database is away, the spool (and pages from memory)."""
        await self.gateway.durable.store(
            writer,
            ack,
            decoded,
            idempotent=True,
            detections_only=True,
            ack=lambda batch: self._ack(batch.ack_token, batch.packet_ids),
        )
