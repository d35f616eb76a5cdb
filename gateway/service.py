"""The gateway process: one supervisor, named stages, bounded queues.

    ingest (MQTT) -> batcher -> decode + detect -> store (COPY | spool) -> ack to broker
                                        tick (timers) ----^

A message is acknowledged to the broker only after its batch is committed to the
database or fsynced to the spool. While the spool holds anything, new batches go to
the spool too (order is kept), and the store stage replays it oldest first as soon as
the database answers again. SIGTERM flushes what is held before disconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import uvicorn
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import Cluster
from gateway.config import GatewayConfig, database_password, mqtt_password
from gateway.detect.detection import Detection
from gateway.detect.engine import DetectorSet
from gateway.detect.index import DetectSettings
from gateway.detect.registry import RegistryFile, device_types, load_registry, parse_window
from gateway.detect.registry_db import import_registry, load_registry_from_db
from gateway.error_text import first_line
from gateway.gc_tuning import freeze_long_lived
from gateway.ingest.batcher import MicroBatcher, wall_clock_ms
from gateway.ingest.mqtt_client import MqttIngestClient, MqttSettings
from gateway.metrics import BATCH_BUCKETS, WRITE_BUCKETS_MS, bucket_of
from gateway.notify.emergency import EmergencyPager
from gateway.notify.outbox import OutboxSender
from gateway.pipeline.batch import DeadLetter, DecodedBatch, RawBatch
from gateway.pipeline.decode import BatchDecoder, DecodeLimits
from gateway.pipeline.rate_limit import DeviceRateLimiter, RateLimits
from gateway.registry_watch import watch_registry
from gateway.responder import Responder
from gateway.storage.schema import StoragePolicy, maintain_partitions, upgrade
from gateway.storage.spool import DiskSpool
from gateway.storage.writer import StorageRejected, StorageUnavailable, TelemetryWriter
from rules.engine import AlertEngine
from rules.roster import check_roster

log = logging.getLogger(__name__)


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


def detect_settings(config: GatewayConfig, now: datetime | None = None) -> DetectSettings:
    d = config.detect
    offset = (now or datetime.now(UTC)).astimezone(ZoneInfo(d.timezone)).utcoffset()
    return DetectSettings(
        timezone_offset_min=int(offset.total_seconds() // 60) if offset else 0,
        persistence_readings=d.persistence_readings,
        persistence_span_s=d.persistence_span_s,
        clear_readings=d.clear_readings,
        fence_margin_m=d.fence_margin_m,
        fence_dwell_readings=d.fence_dwell_readings,
        fence_dwell_s=d.fence_dwell_s,
        fence_reentry_readings=d.fence_reentry_readings,
        fence_clear_accuracy_m=d.fence_clear_accuracy_m,
        gps_max_accuracy_m=d.gps_max_accuracy_m,
        night_window=parse_window(d.night),
        day_window=parse_window(d.day),
        sos_cancel_grace_s=d.sos_cancel_grace_s,
        fall_confirm_s=d.fall_confirm_s,
        fall_movement_steps=d.fall_movement_steps,
        battery_warning_pct=d.battery_warning_pct,
        battery_critical_pct=d.battery_critical_pct,
        battery_clear_pct=d.battery_clear_pct,
        not_worn_readings=d.not_worn_readings,
        silent_factor=d.silent_factor,
        inactivity_hours=d.inactivity_hours,
    )


def storage_policy(config: GatewayConfig) -> StoragePolicy:
    return StoragePolicy(
        past_days=config.ingest.max_past_s // 86_400 + 1,
        ahead_days=config.storage.partition_ahead_days,
        retention_days=config.storage.retention_days,
        compress_after_days=config.storage.compress_after_days,
    )


def conninfo(config: GatewayConfig) -> tuple[str, dict[str, object]]:
    kwargs: dict[str, object] = {"connect_timeout": max(1, int(config.database.connect_timeout_s))}
    password = database_password(config)
    if password:
        kwargs["password"] = password
    return config.database.dsn, kwargs


class Gateway:
    """Runs the ingest pipeline until ``stop`` is set."""

    def __init__(self, config: GatewayConfig, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.config = config
        self.clock_ms = clock_ms
        self.stats = IngestStats()
        self.decoder = BatchDecoder(
            DecodeLimits(
                max_payload_bytes=config.ingest.max_payload_bytes,
                max_past_ms=config.ingest.max_past_s * 1000,
                max_future_ms=config.ingest.max_future_s * 1000,
            ),
            DeviceRateLimiter(
                RateLimits(
                    rate_per_s=config.ingest.device_rate_per_s,
                    burst=config.ingest.device_burst,
                    event_rate_per_s=config.ingest.device_event_rate_per_s,
                    event_burst=config.ingest.device_event_burst,
                )
            ),
        )
        self.policy = storage_policy(config)
        self.spool = DiskSpool(Path(config.storage.spool_dir))
        self.raw_queue: asyncio.Queue[RawBatch] = asyncio.Queue()
        # device events (SOS, fall, cancel) travel alone and are decoded ahead of telemetry
        self.urgent_raw_queue: asyncio.Queue[RawBatch] = asyncio.Queue()
        self.store_queue: asyncio.Queue[tuple[RawBatch, DecodedBatch]] = asyncio.Queue(maxsize=2)
        # batches with device events (SOS, fall) are stored on their own task and connection,
        # so an emergency does not wait behind telemetry commits
        self.urgent_queue: asyncio.Queue[tuple[RawBatch, DecodedBatch]] = asyncio.Queue(maxsize=64)
        self.batcher = MicroBatcher(
            self.raw_queue,
            max_messages=config.ingest.batch_max_messages,
            max_age_ms=config.ingest.batch_max_age_ms,
            max_pending=config.ingest.max_pending_batches,
            clock_ms=clock_ms,
            urgent=self.urgent_raw_queue,
        )
        m = config.mqtt
        self.mqtt = MqttIngestClient(
            MqttSettings(
                host=m.host,
                port=m.port,
                client_id=m.client_id,
                username=m.username,
                password=mqtt_password(config),
                topic_filters=tuple(m.topic_filters),
                share_group=m.share_group,
                keepalive_s=m.keepalive_s,
                session_expiry_s=m.session_expiry_s,
                receive_maximum=m.receive_maximum,
                tls_ca_file=m.tls_ca_file,
            ),
            self.batcher.add,
        )
        self.database_up = True
        self.ready = asyncio.Event()
        self.detectors: DetectorSet | None = None
        self.responder: Responder | None = None
        self.ingest_loop: asyncio.AbstractEventLoop | None = None
        self.emergency: EmergencyPager | None = None
        self._emergency_tasks: set[asyncio.Task[int]] = set()
        self.detections: list[Detection] = []  # everything detected, for tests and the console
        self.registry = RegistryFile()
        self.registry_reloads = 0
        self._spool_lock = threading.Lock()  # the store stages and the detect stream append from threads
        # scale-out (gateway/cluster.py): detection moves to a stream of its own, per owned elder
        self.cluster = Cluster(self) if config.cluster.enabled else None

    # the responder side's objects, for the console API, metrics and tests (use them on its loop)
    @property
    def _pool(self) -> AsyncConnectionPool | None:
        return self.responder.pool if self.responder is not None else None

    @property
    def alerts(self) -> AlertEngine:
        assert self.responder is not None and self.responder.alerts is not None
        return self.responder.alerts

    @property
    def outbox(self) -> OutboxSender:
        assert self.responder is not None and self.responder.outbox is not None
        return self.responder.outbox

    @property
    def http(self) -> uvicorn.Server | None:
        return self.responder.http if self.responder is not None else None

    @property
    def http_port(self) -> int:
        return self.responder.http_port if self.responder is not None else 0

    async def run(self, stop: asyncio.Event) -> None:
        dsn, kwargs = conninfo(self.config)
        await self._upgrade_schema(dsn, kwargs)
        registry = await self._load_registry(dsn, kwargs)
        self.detectors = DetectorSet(registry, detect_settings(self.config))
        self.registry = registry
        self._use_device_types(registry)
        log.info(
            "detectors ready: %d elders, %d devices, %d fences",
            len(registry.elders),
            len(self.detectors.index.device_ids),
            len(self.detectors.index.fences),
        )
        self.ingest_loop = asyncio.get_running_loop()
        self._ingest_pool = AsyncConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=self.config.database.pool_min,
            max_size=self.config.database.pool_max,
            open=False,
            timeout=self.config.database.connect_timeout_s,
            reconnect_timeout=0,  # keep trying for ever; the spool covers the gap
        )
        await self._ingest_pool.open(wait=False)
        writer = TelemetryWriter(self._ingest_pool, self.policy)
        self.responder = Responder(self, dsn, kwargs)
        try:
            await self.responder.start()
        except BaseException:
            await self._ingest_pool.close()
            raise
        # paging without the database goes through the outbox's own notifiers (same loop)
        self.emergency = (
            EmergencyPager(
                self.outbox.notifiers,
                self.config.escalation,
                registry,
                self.clock_ms,
                self.config.notify.public_base_url,
            )
            if self.config.notify.enabled
            else None
        )
        failed = self.responder.failed
        assert failed is not None
        try:
            async with asyncio.TaskGroup() as tasks:
                workers = [
                    tasks.create_task(self.mqtt.run(), name="ingest"),
                    tasks.create_task(self._decode_stage(), name="decode"),
                    tasks.create_task(self._urgent_decode_stage(writer), name="decode-urgent"),
                    tasks.create_task(self._store_stage(writer), name="store"),
                    tasks.create_task(self._urgent_stage(writer), name="store-urgent"),
                    tasks.create_task(self._tick_stage(), name="detect-timers"),
                    tasks.create_task(self._maintenance(dsn, kwargs), name="maintenance"),
                    tasks.create_task(self._registry_watch(dsn, kwargs), name="registry-watch"),
                    tasks.create_task(self._log_stats(), name="stats"),
                ]
                if self.cluster is not None:
                    workers += self.cluster.start(tasks, writer, dsn, kwargs)
                freeze_long_lived()
                self.ready.set()
                stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
                await asyncio.wait([stopping, failed], return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if failed.done():
                    failed.result()  # the responder side died: stop the gateway with its error
                log.info("stopping: flushing what is held")
                if self.cluster is not None:
                    await self.cluster.leave()
                await self._drain()
                await self.mqtt.close()
                for worker in workers:
                    worker.cancel()
        finally:
            await self.responder.stop()  # closes the notifiers too
            await self._ingest_pool.close()

    async def _upgrade_schema(self, dsn: str, kwargs: dict[str, object]) -> None:
        """Migrate at start-up; if the database is down, start anyway and spool."""

        def work() -> None:
            upgrade(_with_password(dsn, kwargs), self.policy)

        try:
            await asyncio.to_thread(work)
        except psycopg.OperationalError as error:
            log.warning("database unreachable at start-up (%s); spooling until it returns", first_line(error))
            self.database_up = False

    async def _load_registry(self, dsn: str, kwargs: dict[str, object]) -> RegistryFile:
        """The registry file when configured (imported into the database), else the database."""
        path = self.config.registry.file
        registry = load_registry(path) if path else None
        if registry is not None:
            check_roster(registry, require_hotline=False)  # bad shifts fail now, not mid-emergency
            if registry.elders and not any(r.role == "hotline" for r in registry.responders):
                log.error(
                    "the registry has no hotline responder: an alert nobody takes has no last "
                    "tier to reach; add one (role: hotline)"
                )

        def work() -> RegistryFile:
            with psycopg.connect(dsn, **kwargs) as conn:  # type: ignore[arg-type]
                if registry is not None:
                    import_registry(conn, registry)
                    return registry
                return load_registry_from_db(conn)

        try:
            return await asyncio.to_thread(work)
        except psycopg.OperationalError as error:
            if registry is not None:
                return registry
            log.error("registry unavailable (%s): detecting with default thresholds, no fences", first_line(error))
            return RegistryFile()

    async def _registry_watch(self, dsn: str, kwargs: dict[str, object]) -> None:
        """Reload elders, devices and fences when the database's registry version moves.

        The detectors are rebuilt from the new registry; their per-device state (fence
        dwell, persistence counts, silence timers) starts again, which can only delay a
        detection by a few readings, never drop an alert already raised.
        """

        async def changed(registry: RegistryFile) -> None:
            self._use_registry(registry)
            self.registry_reloads += 1
            if self.responder is not None and self.responder.alerts is not None:
                self.responder.alerts.use_registry(registry)
            log.info(
                "registry changed: %d elders, %d devices, %d fences reloaded",
                len(registry.elders),
                len(self.detectors.index.device_ids) if self.detectors else 0,
                len(self.detectors.index.fences) if self.detectors else 0,
            )

        await watch_registry(dsn, kwargs, self.config.registry.reload_s, changed)

    def _use_device_types(self, registry: RegistryFile) -> None:
        """Both decoders (storing and, in a cluster, detecting) refuse a topic of another type."""
        types = device_types(registry)
        self.decoder.use_device_types(types)
        if self.cluster is not None:
            self.cluster.decoder.use_device_types(types)

    def _use_registry(self, registry: RegistryFile) -> None:
        self.registry = registry
        self.detectors = DetectorSet(registry, detect_settings(self.config))
        self._use_device_types(registry)
        if self.cluster is not None:
            self.cluster.detectors_replaced()
        if self.emergency is not None:
            self.emergency.use_registry(registry)
        freeze_long_lived()  # the new registry and index live until the next reload

    async def _tick_stage(self) -> None:
        """Timers that need no message: silent devices, unconfirmed falls, inactivity."""
        while True:
            await asyncio.sleep(self.config.detect.tick_s)
            assert self.detectors is not None
            now = self.clock_ms()
            found = self.detectors.tick(now)
            if found and self.cluster is not None:
                found = self.cluster.owned(found)
            if found:
                self._detected(found)
            # a flood that stopped still gets its report, even if nothing else arrives
            limiter = self.decoder.rate_limiter
            letters = (
                []
                if limiter is None
                else [DeadLetter(now, r.topic, r.reason(limiter.limits), r.sample, 0) for r in limiter.due_reports(now)]
            )
            if found or letters:
                empty = RawBatch([], [], [], [], now)
                await self.store_queue.put(
                    (empty, DecodedBatch(received_ms=now, detections=found, dead_letters=letters))
                )

    def _wake_alerts(self) -> None:
        if self.responder is not None:
            self.responder.wake_alerts()

    def _detected(self, found: list[Detection]) -> None:
        self.detections.extend(found)
        if len(self.detections) > 20_000:  # kept for tests and the demo's narration, not for ever
            del self.detections[:10_000]
        for d in found:
            self.stats.detections[d.kind] = self.stats.detections.get(d.kind, 0) + 1
            log.info("detected %s%s (%s) for elder %s", d.kind, " cleared" if d.cleared else "", d.severity, d.elder_id)

    async def _drain(self, timeout_s: float = 30.0) -> None:
        self.batcher.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.urgent_raw_queue.join()
                await self.raw_queue.join()
                await self.store_queue.join()
                await self.urgent_queue.join()

    async def _decode_stage(self) -> None:
        while True:
            raw = await self.raw_queue.get()
            self.batcher.consumed()
            await self._decode_one(raw)
            self.raw_queue.task_done()

    async def _urgent_decode_stage(self, writer: TelemetryWriter) -> None:
        """Device events: decoded, detected and stored by this one task, no hand-off in between."""
        while True:
            raw = await self.urgent_raw_queue.get()
            try:
                decoded, urgent = self._decode(raw)
                if urgent:
                    await self._store(writer, raw, decoded)
                else:  # the spool holds older batches: this one waits its turn behind them
                    await self.store_queue.put((raw, decoded))
            finally:
                self.urgent_raw_queue.task_done()

    async def _decode_one(self, raw: RawBatch) -> None:
        decoded, urgent = self._decode(raw)
        await (self.urgent_queue if urgent else self.store_queue).put((raw, decoded))

    def _decode(self, raw: RawBatch) -> tuple[DecodedBatch, bool]:
        """Decode and detect; say whether the batch (it holds device events) may skip the telemetry queue."""
        decoded = self.decoder.decode(raw)
        if self.detectors is not None and self.cluster is None:  # a cluster detects on its own stream
            decoded.detections = self.detectors.process(decoded)
            if decoded.detections:
                self._detected(decoded.detections)
        return decoded, decoded.table("device_events") is not None and self.spool.is_empty()

    async def _store_stage(self, writer: TelemetryWriter) -> None:
        retry_s = self.config.storage.db_retry_s
        if not self.spool.is_empty():
            log.info("spool holds %d batches from before; replaying first", len(self.spool))
            await self._replay(writer)
        while True:
            try:
                async with asyncio.timeout(retry_s):
                    raw, decoded = await self.store_queue.get()
            except TimeoutError:
                if not self.spool.is_empty():
                    await self._replay(writer)
                continue
            try:
                await self._store(writer, raw, decoded)
            finally:
                self.store_queue.task_done()

    async def _urgent_stage(self, writer: TelemetryWriter) -> None:
        while True:
            raw, decoded = await self.urgent_queue.get()
            try:
                await self._store(writer, raw, decoded)
            finally:
                self.urgent_queue.task_done()

    async def _store(self, writer: TelemetryWriter, raw: RawBatch, decoded: DecodedBatch) -> None:
        stats = self.stats
        if self.spool.is_empty():
            started = time.perf_counter()
            try:
                await writer.write(decoded, idempotent=raw.any_dup)
            except StorageUnavailable as error:
                self._database_down(error)
            except StorageRejected as error:
                await self._reject_batch(writer, raw, error, decoded.detections)
                return
            else:
                self._database_back()
                stats.rows_stored += decoded.row_count
                stats.dead_letters += len(decoded.dead_letters)
                self._count(raw, decoded, (time.perf_counter() - started) * 1000)
                self._ack(raw)
                if decoded.detections:
                    self._wake_alerts()
                return
        await self._spool_append(raw, decoded.detections)
        stats.spooled_messages += len(raw)
        self._ack(raw)
        self._page_without_database(decoded.detections)

    async def _spool_append(self, raw: RawBatch, detections: list[Detection]) -> None:
        def append() -> None:
            with self._spool_lock:
                self.spool.append(raw, detections)

        await asyncio.to_thread(append)

    def _count(self, raw: RawBatch, decoded: DecodedBatch, write_ms: float) -> None:
        """Per batch, not per message: what the metrics endpoint reports."""
        s = self.stats
        s.batch_messages += len(raw)
        size_bucket = bucket_of(len(raw), BATCH_BUCKETS)
        s.batch_sizes[size_bucket] = s.batch_sizes.get(size_bucket, 0) + 1
        s.writes += 1
        s.write_ms_total += write_ms
        ms_bucket = bucket_of(write_ms, WRITE_BUCKETS_MS)
        s.write_ms_buckets[ms_bucket] = s.write_ms_buckets.get(ms_bucket, 0) + 1
        for letter in decoded.dead_letters:
            reason = " ".join(letter.reason.split(":")[0].split()[:3])
            s.rejects[reason] = s.rejects.get(reason, 0) + 1

    def _page_without_database(self, detections: list[Detection]) -> None:
        """The batch went to the spool: its critical detections are paged now, from memory."""
        pager = self.emergency
        if pager is None:
            return
        for det in detections:
            if pager.wanted(det):
                task = asyncio.create_task(pager.page(det), name="emergency-page")
                self._emergency_tasks.add(task)
                task.add_done_callback(self._emergency_tasks.discard)

    async def _reject_batch(
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
            self.stats.dead_letters += len(raw)
        except (StorageUnavailable, StorageRejected):
            await self._spool_append(raw, letters.detections)
        self._ack(raw)

    async def _replay(self, writer: TelemetryWriter) -> None:
        """Write spooled batches oldest first; stop at the first that cannot be written."""
        for spooled in self.spool.pending():
            decoded = self.decoder.decode(spooled.batch, rate_limit=False)  # admitted when it came
            decoded.detections = spooled.detections
            try:
                await writer.write(decoded, idempotent=True)
            except StorageUnavailable as error:
                self._database_down(error)
                return
            except StorageRejected as error:
                await self._reject_batch(writer, spooled.batch, error, spooled.detections)
            else:
                self.stats.rows_stored += decoded.row_count
                self.stats.dead_letters += len(decoded.dead_letters)
                if decoded.detections:
                    self._wake_alerts()
            self.stats.replayed_messages += len(spooled.batch)
            self.spool.remove(spooled)
        if self.spool.is_empty():
            log.info("spool replayed; writing directly again")
            self._database_back()

    def _ack(self, raw: RawBatch) -> None:
        self.stats.batches += 1
        if raw.ack_token is None:
            return
        if self.mqtt.ack(raw.ack_token, raw.packet_ids):
            self.stats.acked += len(raw)
        else:
            self.stats.ack_dropped += len(raw)

    def _database_down(self, error: Exception) -> None:
        if self.database_up:
            log.warning("database unavailable (%s); spooling to %s", first_line(error), self.spool.directory)
            self.database_up = False

    def _database_back(self) -> None:
        if not self.database_up:
            log.info("database reachable again")
            self.database_up = True

    async def _maintenance(self, dsn: str, kwargs: dict[str, object]) -> None:
        def work() -> None:
            with psycopg.connect(dsn, autocommit=True, **kwargs) as conn:  # type: ignore[arg-type]
                maintain_partitions(conn, self.policy, datetime.now(UTC))

        while True:
            await asyncio.sleep(3600)
            try:
                await asyncio.to_thread(work)
            except psycopg.Error as error:
                log.warning("partition upkeep failed: %s", first_line(error))

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.config.logging.stats_interval_s)
            s = self.stats
            log.info(
                "ingest: received=%d stored_rows=%d dead_letters=%d spooled=%d replayed=%d",
                self.batcher.received,
                s.rows_stored,
                s.dead_letters,
                s.spooled_messages,
                s.replayed_messages,
            )


def _with_password(dsn: str, kwargs: dict[str, object]) -> str:
    from psycopg.conninfo import make_conninfo

    extra = {k: v for k, v in kwargs.items() if k in ("password", "connect_timeout")}
    return make_conninfo(dsn, **extra)  # type: ignore[arg-type]
