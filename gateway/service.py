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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import uvicorn
from psycopg_pool import AsyncConnectionPool

from gateway.alert_side import AlertSide
from gateway.alerting.engine import AlertEngine
from gateway.alerting.roster import check_roster
from gateway.alerting.worker_process import AlertWorkerProcess
from gateway.config import GatewayConfig, mqtt_password
from gateway.detect.engine import DetectorSet
from gateway.domain.detection import Detection
from gateway.domain.registry import RegistryFile, device_types, load_registry
from gateway.domain.registry_db import import_registry, load_registry_from_db
from gateway.domain.registry_watch import watch_registry
from gateway.error_text import first_line
from gateway.gc_tuning import freeze_long_lived, freeze_soon, return_freed_memory
from gateway.ingest.batcher import MicroBatcher, wall_clock_ms
from gateway.ingest.mqtt_client import MqttIngestClient, MqttSettings
from gateway.metrics import BATCH_BUCKETS, WRITE_BUCKETS_MS, bucket_of
from gateway.notify.emergency import EmergencyPager
from gateway.notify.outbox import OutboxSender
from gateway.pipeline.batch import DeadLetter, DecodedBatch, RawBatch
from gateway.pipeline.decode import BatchDecoder, DecodeLimits
from gateway.pipeline.rate_limit import DeviceRateLimiter, RateLimits
from gateway.pipeline.stats import IngestStats
from gateway.settings import conninfo, detect_settings, dsn_with_password, storage_policy
from gateway.storage import rollups
from gateway.storage.durable import DurableStore, StoreHooks
from gateway.storage.schema import maintain_partitions, storage_mode, upgrade
from gateway.storage.spool import DiskSpool
from gateway.storage.upkeep_check import UpkeepOutcome, check_upkeep
from gateway.storage.writer import TelemetryWriter

if TYPE_CHECKING:
    from gateway.cluster.instance import Cluster

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30.0  # a stop waits this long at most for what is held to be stored or spooled


class Gateway:
    """Runs the ingest pipeline until ``stop`` is set."""

    def __init__(
        self,
        config: GatewayConfig,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        early_worker: AlertWorkerProcess | None = None,
    ) -> None:
        self.config = config
        self.early_worker = early_worker  # an alert worker started before this module was imported
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
        self.durable = DurableStore(
            self.spool,
            StoreHooks(
                ack=self._ack,
                stored=self._stored,
                spooled=self._spooled,
                dead_lettered=self._dead_lettered,
                wake_alerts=self.wake_alerts,
                page_from_memory=self.page_from_memory,
            ),
        )
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
        self.storage_mode = "unknown"  # timescaledb or partitioned, once the upkeep has looked
        self.storage_upkeep: UpkeepOutcome | None = None  # what the last upkeep found (see upkeep_check.py)
        self.ready = asyncio.Event()
        self.detectors: DetectorSet | None = None
        self.alert_side: AlertSide | None = None
        self.ingest_loop: asyncio.AbstractEventLoop | None = None
        self.emergency: EmergencyPager | None = None
        self._emergency_tasks: set[asyncio.Task[int]] = set()
        self.detections: list[Detection] = []  # everything detected, for tests and the console
        self.registry = RegistryFile()
        self.registry_reloads = 0
        # scale-out (gateway/cluster.py): detection moves to a stream of its own, per owned elder
        self.cluster: Cluster | None = None
        if config.cluster.enabled:
            from gateway.cluster.instance import Cluster  # only a scaled-out gateway waits to import it

            self.cluster = Cluster(self)

    # the alert side's objects, for the console API, metrics and tests (use them on its loop)
    @property
    def alerts(self) -> AlertEngine:
        assert self.alert_side is not None and self.alert_side.alerts is not None
        return self.alert_side.alerts

    @property
    def outbox(self) -> OutboxSender:
        assert self.alert_side is not None and self.alert_side.outbox is not None
        return self.alert_side.outbox

    @property
    def http(self) -> uvicorn.Server | None:
        return self.alert_side.http if self.alert_side is not None else None

    @property
    def http_port(self) -> int:
        return self.alert_side.http_port if self.alert_side is not None else 0

    async def run(self, stop: asyncio.Event) -> None:
        dsn, kwargs = conninfo(self.config)
        await self._upgrade_schema(dsn, kwargs)
        # the early worker goes on once the schema is current and the database holds the
        # registry: at once, or after the registry file is imported (it must page from it)
        file_given = bool(self.config.registry.file)
        if self.early_worker is not None and not file_given:
            await self.early_worker.hand_over()  # it loads the registry and connects while we do
        registry = await self._load_registry(dsn, kwargs)
        if self.early_worker is not None and file_given:
            await self.early_worker.hand_over()
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
        self.alert_side = AlertSide(self, dsn, kwargs, stopping=stop, worker=self.early_worker)
        try:
            await self.alert_side.start()
        except BaseException:
            await self._ingest_pool.close()
            raise
        # paging without the database goes through the outbox's own notifiers (same loop)
        self.emergency = (
            EmergencyPager(
                lambda: self.outbox.notifiers,
                self.config.escalation,
                registry,
                self.clock_ms,
                self.config.notify.public_base_url,
            )
            if self.config.notify.enabled
            else None
        )
        failed = self.alert_side.failed
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
                freeze_soon()  # not before the first read: a queued SOS waits for it
                self.ready.set()
                stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
                await asyncio.wait([stopping, failed], return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if failed.done():
                    failed.result()  # the alert side died: stop the gateway with its error
                log.info("stopping: flushing what is held")
                if self.cluster is not None:
                    await self.cluster.leave()
                self.mqtt.stop_reading()  # flush what is held; the broker keeps the rest for our session
                await self.drain()
                await self.mqtt.close()
                s = self.stats
                log.info(
                    "ingest stopped: received=%d acknowledged=%d ack_dropped=%d stored_rows=%d spooled=%d",
                    self.batcher.received,
                    s.acked,
                    s.ack_dropped,
                    s.rows_stored,
                    s.spooled_messages,
                )
                for worker in workers:
                    worker.cancel()
        finally:
            await self.alert_side.stop()  # closes the notifiers too
            await self._ingest_pool.close()

    async def _upgrade_schema(self, dsn: str, kwargs: dict[str, object]) -> None:
        """Migrate at start-up; if the database is down, start anyway and spool."""

        def work() -> None:
            upgrade(dsn_with_password(dsn, kwargs), self.policy)

        try:
            await asyncio.to_thread(work)
        except psycopg.OperationalError as error:
            log.warning("database unreachable at start-up (%s); spooling until it returns", first_line(error))
            self.durable.database_up = False

    async def _load_registry(self, dsn: str, kwargs: dict[str, object]) -> RegistryFile:
        """The registry file when configured (imported into the database), else the database."""
        path = self.config.registry.file
        registry = load_registry(path) if path else None
        if registry is not None:
            return_freed_memory()  # the parsed file's objects are gone; give their pages back
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
            if self.alert_side is not None and self.alert_side.alerts is not None:
                self.alert_side.alerts.use_registry(registry)
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
                self.detected(found)
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

    def wake_alerts(self) -> None:
        if self.alert_side is not None:
            self.alert_side.wake_alerts()

    def detected(self, found: list[Detection]) -> None:
        self.detections.extend(found)
        if len(self.detections) > 20_000:  # kept for tests and the demo's narration, not for ever
            del self.detections[:10_000]
        for d in found:
            self.stats.detections[d.kind] = self.stats.detections.get(d.kind, 0) + 1
            log.info("detected %s%s (%s) for elder %s", d.kind, " cleared" if d.cleared else "", d.severity, d.elder_id)

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
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
                self.detected(decoded.detections)
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
        await self.durable.store(writer, raw, decoded, idempotent=raw.any_dup)

    def _stored(self, raw: RawBatch, decoded: DecodedBatch, write_ms: float) -> None:
        self.stats.rows_stored += decoded.row_count
        self.stats.dead_letters += len(decoded.dead_letters)
        self._count(raw, decoded, write_ms)

    def _spooled(self, raw: RawBatch) -> None:
        self.stats.spooled_messages += len(raw)

    def _dead_lettered(self, n: int) -> None:
        self.stats.dead_letters += n

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

    def page_from_memory(self, detections: list[Detection]) -> None:
        """The batch went to the spool: its critical detections are paged now, from memory."""
        pager = self.emergency
        if pager is None:
            return
        for det in detections:
            if pager.wanted(det):
                task = asyncio.create_task(pager.page(det), name="emergency-page")
                self._emergency_tasks.add(task)
                task.add_done_callback(self._emergency_tasks.discard)

    async def _replay(self, writer: TelemetryWriter) -> None:
        def decode(batch: RawBatch) -> DecodedBatch:
            return self.decoder.decode(batch, rate_limit=False)  # admitted when it came

        def replayed(batch: RawBatch, decoded: DecodedBatch, stored: bool) -> None:
            if stored:
                self.stats.rows_stored += decoded.row_count
                self.stats.dead_letters += len(decoded.dead_letters)
            self.stats.replayed_messages += len(batch)

        await self.durable.replay(writer, decode, replayed)

    def _ack(self, raw: RawBatch) -> None:
        self.stats.batches += 1
        if raw.ack_token is None:
            return
        if self.mqtt.ack(raw.ack_token, raw.packet_ids):
            self.stats.acked += len(raw)
        else:
            self.stats.ack_dropped += len(raw)

    @property
    def database_up(self) -> bool:
        return self.durable.database_up

    async def _maintenance(self, dsn: str, kwargs: dict[str, object]) -> None:
        """Storage upkeep at start-up and then every ``storage.upkeep_interval_s``.

        Partitions ahead and expired ones dropped, the plain rollups refreshed (TimescaleDB's
        own policies do both there), then the outcome checked: overdue compression or
        retention shows in /metrics and /readyz, whatever the job status says.
        """

        def work() -> UpkeepOutcome:
            now = datetime.now(UTC)
            with psycopg.connect(dsn, autocommit=True, **kwargs) as conn:  # type: ignore[arg-type]
                self.storage_mode = storage_mode(conn)
                try:
                    maintain_partitions(conn, self.policy, now)
                    if self.storage_mode == "partitioned":
                        rollups.refresh(conn, self.storage_mode, now)
                    else:  # the continuous aggregates keep their own invalidation log
                        conn.execute("DELETE FROM rollup_invalidations")
                except psycopg.Error as error:  # then the check below is what tells
                    if isinstance(error, psycopg.OperationalError):
                        raise
                    log.warning("storage upkeep failed: %s", first_line(error))
                return check_upkeep(conn, self.policy, now)

        while True:
            try:
                outcome = await asyncio.to_thread(work)
            except psycopg.Error as error:
                log.warning("storage upkeep failed: %s", first_line(error))
            else:
                for warning in outcome.warnings():
                    log.warning("storage upkeep: %s", warning)
                self.storage_upkeep = outcome
            await asyncio.sleep(self.config.storage.upkeep_interval_s)

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
