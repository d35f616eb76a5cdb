"""Scale-out: several gateway processes sharing one broker and one database.

    shared subscription ($share/<group>/...) --> store rows (COPY | spool) --> ack     (service.py, as before)
    detect stream (own session, every message) --> owner? --> detect --> detections --> ack
    gateway_instances (heartbeats) --> live set --> owner of an elder: rendezvous hashing over the live ids

Why two streams: Mosquitto deals a shared subscription out round-robin, message by
message, so a device's readings alternate between instances and no single instance
could count a fence dwell or a persistence streak. Storing does not care who stores a
row; detecting needs all of a device's readings, in order, in one place. So storage
keeps the shared subscription, and each instance reads the whole stream a second time
on a connection of its own, looks up the owner of each message's device from its topic
(a dict lookup), and decodes and detects only its own elders' messages. The others are
acknowledged at once; device events (SOS, fall, cancel) of other instances' elders are
also kept in memory for ``cluster.replay_s``: they are rare, and they must survive their
owner dying before it detected them.

Ownership is per elder (a device bound to no elder is its own key), so fences, which
belong to an elder, see every fix of the elder's band on one instance. When the live
set changes, an instance forgets the elders it lost and rebuilds the state of those it
gained by replaying their last ``cluster.replay_s`` of stored rows through the detectors
(``DetectorSet.replay``) before it detects anything more; rows already replayed are not
detected a second time when they arrive live.

No emergency is lost between an owner dying and the others noticing:

* every instance keeps each device event its detect stream sees, whoever owns it, and a
  replay adds those of the elders it gains to what it reads from the database;
* an instance whose heartbeat stopped stays a member (its elders stay unowned by the
  others) until one live instance has claimed its row, taken over its shared session
  (whatever the broker queued for it, or sent it and never had acknowledged, is stored
  like any message), ended that session and its detect session, and deleted the row;
* only then does the live set change, and the new owners' replay finds every row of the
  gap. Detections dedupe on their unique key and alerts on theirs, so replaying an SOS
  that was already handled is a no-op, and one that was not becomes its alert.

Writes are never doubled on purpose: each row is stored by the one instance the shared
subscription gave it to, detections only by owners. Where owners overlap for a moment
(a live-set change seen a heartbeat apart), both insert the same detection keys; they
are inserted in one canonical order, so the two transactions wait, never deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import sql

from gateway.config import ConfigError
from gateway.detect.engine import DetectorSet
from gateway.domain.detection import DEVICE_SILENT, Detection
from gateway.error_text import first_line
from gateway.ingest.batcher import MicroBatcher
from gateway.ingest.mqtt_client import IngestConnection, MqttConnectError, MqttIngestClient
from gateway.ingest.mqtt_wire import InboundPublishes
from gateway.pipeline.batch import DecodedBatch, RawBatch, TableRows
from gateway.pipeline.decode import BatchDecoder
from gateway.pipeline.rate_limit import DeviceRateLimiter
from gateway.storage import tables
from gateway.storage.binary_copy import Column
from gateway.storage.writer import StorageRejected, StorageUnavailable, TelemetryWriter

if TYPE_CHECKING:
    from gateway.host import ClusterHost

log = logging.getLogger(__name__)

NEVER = int(np.iinfo(np.int64).min)
# what a replay reads back: every table whose rows feed per-device detector state
# (raw acceleration is left out: the fall model's window is seconds long)
REPLAYED = (tables.WRISTBAND, tables.GLUCOSE, tables.BLOOD_PRESSURE, tables.EVENTS, tables.STATUS)
REPLAY_CHUNK = 5_000  # device ids per query
WATERMARK_S = 120.0  # how long live rows are checked against a replay (redeliveries arrive soon after)
QUIET_S = 0.5  # a taken-over session is drained once nothing came for this long and all is acked
EVENT_SUFFIX = b"/event"


# -- who owns what: pure functions --------------------------------------------------------------------


def weight(member: str, key: bytes) -> int:
    """Rendezvous weight of ``member`` for ``key``: stable across processes and restarts."""
    return int.from_bytes(hashlib.blake2b(member.encode() + b"\x00" + key, digest_size=8).digest(), "big")


def owner_of(key: bytes, members: Sequence[str]) -> str | None:
    """The member with the highest weight for ``key`` (highest-random-weight hashing).

    A member joining takes about 1/n of the keys from each of the others; one leaving
    spreads its keys over the rest; no other key moves.
    """
    return max(members, key=lambda m: (weight(m, key), m)) if members else None


@dataclass(frozen=True, slots=True)
class Ownership:
    members: tuple[str, ...]
    me: str

    def owns(self, key: bytes) -> bool:
        # no members known yet (no database at start): own everything; twice is safe, never is not
        return not self.members or owner_of(key, self.members) == self.me


def topic_device(topic: bytes) -> bytes:
    """``eldercare/v1/{type}/{device_id}/{channel}`` -> device id (b"" for anything else)."""
    parts = topic.split(b"/")
    return parts[3] if len(parts) == 5 else b""


def _subset(raw: RawBatch, which: list[int]) -> RawBatch:
    return RawBatch(
        [raw.topics[i] for i in which],
        [raw.payloads[i] for i in which],
        [raw.packet_ids[i] for i in which],
        [raw.dup[i] for i in which],
        raw.received_ms,
        raw.ack_token,
    )


def _take(rows: TableRows, keep: NDArray[np.bool_]) -> TableRows:
    return TableRows(
        rows.spec,
        tuple(Column(c.kind, c.values[keep], None if c.valid is None else c.valid[keep]) for c in rows.columns),
    )


@dataclass(slots=True)
class ClusterStats:
    members: int = 0
    reassignments: int = 0
    replays: int = 0
    replayed_rows: int = 0
    replayed_detections: int = 0
    takeovers: int = 0
    detect_received: int = 0
    detect_owned: int = 0


class Cluster:
    """This instance's part in the cluster: heartbeat, ownership, detect stream, replay, takeover."""

    def __init__(self, gateway: ClusterHost) -> None:
        config = gateway.config
        c, m = config.cluster, config.mqtt
        if not m.share_group:
            raise ConfigError("cluster.enabled: set mqtt.share_group too (storage shares the load through it)")
        if c.dead_after_s < 2 * c.heartbeat_s:
            raise ConfigError("cluster.dead_after_s: must be at least twice cluster.heartbeat_s")
        self.gateway = gateway
        self.settings = c
        self.instance_id = c.instance_id or m.client_id
        self.detect_client_id = f"{m.client_id}.detect"
        self.ownership = Ownership((), self.instance_id)
        self.stats = ClusterStats()
        self.detect_queue: asyncio.Queue[RawBatch] = asyncio.Queue()
        self.detect_urgent_queue: asyncio.Queue[RawBatch] = asyncio.Queue()
        # (what to ack once durable, the detections to write)
        self.store_queue: asyncio.Queue[tuple[RawBatch, DecodedBatch]] = asyncio.Queue(maxsize=64)
        i = config.ingest
        self.batcher = MicroBatcher(
            self.detect_queue,
            max_messages=i.batch_max_messages,
            max_age_ms=i.batch_max_age_ms,
            max_pending=i.max_pending_batches,
            clock_ms=gateway.clock_ms,
            urgent=self.detect_urgent_queue,
        )
        shared = gateway.mqtt.settings
        self.mqtt = MqttIngestClient(
            replace(
                shared, client_id=self.detect_client_id, share_group=None, session_expiry_s=c.detect_session_expiry_s
            ),
            self._sink,
        )
        self._flowing = asyncio.Event()  # the detect stream brings messages (its SUBACK may wait behind them)
        limiter = gateway.decoder.rate_limiter
        self.decoder = BatchDecoder(
            gateway.decoder.limits, DeviceRateLimiter(limiter.limits) if limiter is not None else None
        )
        self._lock = asyncio.Lock()  # detection and reassignment take turns
        self._ready = asyncio.Event()  # the first assignment (and its replay) is done
        self._wake_assign = asyncio.Event()
        self._wake_heartbeat = asyncio.Event()
        self._wanted: tuple[str, ...] | None = None  # the live set last read
        self._replay_all = False
        self._needs_replay: set[str] = set()
        self._route: dict[bytes, bool] = {}
        self._watermarks: dict[tuple[bytes, str], int] = {}
        self._replayed_events: set[tuple[bytes, int, bytes]] = set()
        self._others_events: deque[tuple[float, TableRows]] = deque()  # (loop time, rows), oldest first
        self._watermarks_until = 0.0
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        self._leaving = False
        self._dsn = ""
        self._kwargs: dict[str, object] = {}

    # -- wiring (service.py) --------------------------------------------------------------------------

    def start(
        self, tasks: asyncio.TaskGroup, writer: TelemetryWriter, dsn: str, kwargs: dict[str, object]
    ) -> list[asyncio.Task[Any]]:
        self._dsn, self._kwargs = dsn, kwargs
        log.info("cluster: instance %s, detect stream as %s", self.instance_id, self.detect_client_id)
        return [
            tasks.create_task(self.mqtt.run(), name="detect-ingest"),
            tasks.create_task(self._heartbeat_stage(), name="cluster-heartbeat"),
            tasks.create_task(self._assign_stage(writer), name="cluster-assign"),
            tasks.create_task(self._detect_stage(self.detect_queue, True), name="detect"),
            tasks.create_task(self._detect_stage(self.detect_urgent_queue, False), name="detect-urgent"),
            tasks.create_task(self._store_stage(writer), name="detect-store"),
        ]

    def owned(self, found: list[Detection]) -> list[Detection]:
        """Timer detections (silence, falls unconfirmed) only for elders this instance owns."""
        return [d for d in found if self._owns(d.device_id.encode())]

    def detectors_replaced(self) -> None:
        """The registry was reloaded: the detectors start empty, so rebuild everything owned."""
        self._route.clear()
        self._replay_all = True
        self._wake_assign.set()

    async def leave(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: stop taking shared messages, flush both paths, end our sessions, leave the set."""
        gw = self.gateway
        self._leaving = True  # no more heartbeats (they would put our row back) and no takeovers
        self._ready.set()  # a stop during start-up: let the detect stages drain
        for takeover in self._takeovers.values():
            takeover.cancel()
        with contextlib.suppress(OSError, TimeoutError, ConnectionError):
            await gw.mqtt.unsubscribe()  # the others get every new message from now on
        self.batcher.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await gw.drain(timeout_s)
                await self.detect_urgent_queue.join()
                await self.detect_queue.join()
                await self.store_queue.join()
        with contextlib.suppress(psycopg.Error, OSError):
            async with _Link(self._dsn, self._kwargs) as link:
                await (await link.connection()).execute(
                    "DELETE FROM gateway_instances WHERE instance_id = %s", (self.instance_id,)
                )
        # everything is acked: the sessions can go (a restart subscribes afresh, the others replay)
        for client in (self.mqtt, gw.mqtt):
            current = client.connection
            await client.close(end_session=current is not None and current.unacked == 0)
        log.info("cluster: left")

    # -- routing -----------------------------------------------------------------------------------------

    def _routing_key(self, device: bytes, detectors: DetectorSet | None) -> bytes:
        if detectors is not None:
            index = detectors.index
            slot = index.slot_of.get(device)
            if slot is not None:
                elder = int(index.elder_of_slot[slot])
                if elder >= 0:
                    return index.elder_ids[elder].encode()
        return device

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
            self._keep_events(_subset(raw, events))
        self._ack(raw.ack_token, others)
        if not owned:
            return
        gw = self.gateway
        decoded = self.decoder.decode(_subset(raw, owned))
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
            (ack, DecodedBatch(received_ms=raw.received_ms, detections=sorted(detections, key=_insert_order)))
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
                out.append(_take(rows, keep))
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
            kept.append(rows if keep.all() else _take(rows, keep))
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

    # -- membership --------------------------------------------------------------------------------------

    async def _heartbeat_stage(self) -> None:
        """Every ``heartbeat_s``: say we live, read who else does, retire the dead."""
        async with _Link(self._dsn, self._kwargs) as link:
            await self._heartbeats(link)

    async def _heartbeats(self, link: _Link) -> None:
        c = self.settings
        first = True
        failing = False
        while not self._leaving:
            try:
                conn = await link.connection()
                await self._heartbeat(conn, first)
                first = False
                members, dead = await self._read_members(conn)
                if failing:
                    log.info("cluster: database reachable again")
                    failing = False
                if members != self._wanted:
                    log.info("cluster: live instances %s", ", ".join(members))
                    self._wanted = members
                    self._wake_assign.set()
                for instance_id in dead:
                    running = self._takeovers.get(instance_id)
                    if (running is None or running.done()) and not self._leaving:
                        claimed = await self._claim(conn, instance_id)
                        if claimed is not None:
                            self._takeovers[instance_id] = asyncio.create_task(
                                self._take_over(instance_id, *claimed), name=f"takeover-{instance_id}"
                            )
            except (psycopg.Error, OSError) as error:
                if not failing:
                    log.warning("cluster: heartbeat failed (%s); keeping the last live set", first_line(error))
                    failing = True
                await link.drop()
            self._wake_heartbeat.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(c.heartbeat_s):
                    await self._wake_heartbeat.wait()

    async def _heartbeat(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], first: bool) -> None:
        if not first:
            cur = await conn.execute(
                "UPDATE gateway_instances SET heartbeat_at = now(), retiring_by = NULL, retiring_at = NULL "
                "WHERE instance_id = %s",
                (self.instance_id,),
            )
            if cur.rowcount == 1:
                return
            log.warning("cluster: our row was gone (taken for dead?); joining again")
        await conn.execute(
            "INSERT INTO gateway_instances (instance_id, shared_client_id, detect_client_id, host, pid) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), "
            "started_at = now(), retiring_by = NULL, retiring_at = NULL, "
            "shared_client_id = EXCLUDED.shared_client_id, detect_client_id = EXCLUDED.detect_client_id, "
            "host = EXCLUDED.host, pid = EXCLUDED.pid",
            (
                self.instance_id,
                self.gateway.mqtt.settings.client_id,
                self.detect_client_id,
                socket.gethostname(),
                os.getpid(),
            ),
        )

    async def _read_members(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> tuple[tuple[str, ...], list[str]]:
        """Members: every row until it is retired (or its takeover had all the time it gets)."""
        c = self.settings
        rows = await (
            await conn.execute(
                "SELECT instance_id, heartbeat_at > now() - make_interval(secs => %s), "
                "heartbeat_at > now() - make_interval(secs => %s) FROM gateway_instances",
                (c.dead_after_s, c.dead_after_s + c.takeover_timeout_s),
            )
        ).fetchall()
        members = tuple(sorted({str(r[0]) for r in rows if r[2]} | {self.instance_id}))
        dead = [str(r[0]) for r in rows if not r[1] and r[0] != self.instance_id]
        return members, dead

    async def _claim(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], instance_id: str) -> tuple[str, str] | None:
        """One live instance takes over a dead one; a stalled takeover is claimed again later."""
        c = self.settings
        row = await (
            await conn.execute(
                "UPDATE gateway_instances SET retiring_by = %s, retiring_at = now() WHERE instance_id = %s "
                "AND heartbeat_at <= now() - make_interval(secs => %s) "
                "AND (retiring_at IS NULL OR retiring_at <= now() - make_interval(secs => %s)) "
                "RETURNING shared_client_id, detect_client_id",
                (self.instance_id, instance_id, c.dead_after_s, c.takeover_timeout_s),
            )
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    async def _take_over(self, instance_id: str, shared_client_id: str, detect_client_id: str) -> None:
        """Store what the broker holds for a dead instance, end its sessions, then retire its row.

        Mosquitto keeps dealing a dead member its share of a shared subscription (queued in
        its persistent session) until the session ends; EMQX redispatches, and then there is
        simply nothing to drain. Resuming the session as that client id hands us its queue,
        which goes through our own storage path; leaving its subscription stops new messages.
        """
        gw = self.gateway
        loop = asyncio.get_running_loop()
        log.warning("cluster: instance %s stopped its heartbeat; taking over its broker sessions", instance_id)
        shared = MqttIngestClient(replace(gw.mqtt.settings, client_id=shared_client_id), gw.batcher.add)
        detect = MqttIngestClient(replace(self.mqtt.settings, client_id=detect_client_id), _discard)
        try:
            async with asyncio.timeout(self.settings.takeover_timeout_s):
                conn = await shared.take_over(subscribed=True)
                drained = False
                try:
                    while conn.unacked or loop.time() - conn.last_heard < QUIET_S:
                        if not conn.is_open:
                            raise ConnectionError(f"{instance_id} took its session back")
                        await asyncio.sleep(0.05)
                    drained = True
                finally:
                    await shared.close(conn, end_session=drained)
                await detect.close(await detect.take_over(subscribed=False))
            async with _Link(self._dsn, self._kwargs) as link:
                await (await link.connection()).execute(
                    "DELETE FROM gateway_instances WHERE instance_id = %s "
                    "AND heartbeat_at <= now() - make_interval(secs => %s)",
                    (instance_id, self.settings.dead_after_s),
                )
        except (OSError, TimeoutError, MqttConnectError, psycopg.Error) as error:
            log.warning(
                "cluster: takeover of %s did not finish (%s); it will be tried again", instance_id, first_line(error)
            )
            return
        self.stats.takeovers += 1
        log.info("cluster: %s retired; its elders move to the live instances", instance_id)
        self._wake_heartbeat.set()

    # -- assignment and replay ---------------------------------------------------------------------------

    async def _assign_stage(self, writer: TelemetryWriter) -> None:
        """Apply live-set changes: forget what moved away, replay what moved here."""
        c = self.settings
        # the detect stream is subscribed before the first replay, so no message falls in between
        # (messages flowing means a resumed session, whose SUBACK may wait unread behind them)
        waits = {asyncio.ensure_future(self.mqtt.connected.wait()), asyncio.ensure_future(self._flowing.wait())}
        _, pending = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(c.dead_after_s):
                while self._wanted is None:
                    await self._wake_assign.wait()
                    self._wake_assign.clear()
        async with _Link(self._dsn, self._kwargs) as link:
            while True:
                self._wake_assign.clear()
                try:
                    await self._reassign(await link.connection(), writer)
                except (psycopg.Error, OSError, StorageUnavailable, StorageRejected) as error:
                    log.warning("cluster: replay waits for the database (%s)", first_line(error))
                    await link.drop()
                finally:
                    self._ready.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(c.heartbeat_s):
                        await self._wake_assign.wait()

    async def _reassign(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], writer: TelemetryWriter) -> None:
        gw = self.gateway
        members = self._wanted or ()
        async with self._lock:
            detectors = gw.detectors
            if detectors is None:
                return
            old, new = self.ownership, Ownership(members, self.instance_id)
            first = not self._ready.is_set()
            everything = first or self._replay_all
            if new != old or everything:
                self.ownership = new
                self._route.clear()
                self.stats.members = len(members)
                self.stats.reassignments += 1
                keys = [self._routing_key(d.encode(), detectors) for d in detectors.index.device_ids]
                lost = [
                    d
                    for d, k in zip(detectors.index.device_ids, keys, strict=True)
                    if not new.owns(k) and (everything or old.owns(k))
                ]
                gained = {
                    d
                    for d, k in zip(detectors.index.device_ids, keys, strict=True)
                    if new.owns(k) and (everything or not old.owns(k))
                }
                detectors.forget(lost)
                self._needs_replay = (self._needs_replay - set(lost)) | gained
                self._replay_all = False
                if everything:
                    log.info("cluster: rebuilding the state of all %d devices owned here", len(gained))
                else:
                    log.info("cluster: %d devices moved away, %d moved here", len(lost), len(gained))
            if not self._needs_replay:
                return
            devices = sorted(self._needs_replay)
            # rows on their way through the shared paths have a moment to commit before history is read
            await asyncio.sleep(self.settings.settle_s)
            await self._replay(conn, writer, detectors, devices)
            self._needs_replay.clear()

    async def _replay(
        self,
        conn: psycopg.AsyncConnection[tuple[Any, ...]],
        writer: TelemetryWriter,
        detectors: DetectorSet,
        devices: list[str],
    ) -> None:
        started = asyncio.get_running_loop().time()
        history: list[TableRows] = []
        for spec in REPLAYED:
            for at in range(0, len(devices), REPLAY_CHUNK):
                rows = await _fetch(conn, spec, devices[at : at + REPLAY_CHUNK], self.settings.replay_s)
                if rows is not None:
                    history.append(rows)
        history += self._kept_events(devices, history)
        silent = await _still_silent(conn, devices, self.settings.replay_s)
        detectors.forget(devices)
        found = detectors.replay(history)
        last: dict[bytes, int] = {}
        marks: dict[tuple[bytes, str], int] = {}
        replayed_events: set[tuple[bytes, int, bytes]] = set()
        for rows in history:
            name = rows.spec.name
            ids = rows.column("device_id").values.tolist()
            ts = rows.column("time").values.tolist()
            for d, t in zip(ids, ts, strict=True):
                if t > marks.get((d, name), NEVER):
                    marks[(d, name)] = t
                if t > last.get(d, NEVER):
                    last[d] = t
            if rows.spec is tables.EVENTS:
                replayed_events.update(zip(ids, ts, rows.column("event").values.tolist(), strict=True))
        # a device already reported silent by its last owner (and not heard since) is not reported again
        detectors.mark_silent([d for d, at in silent.items() if at > last.get(d.encode(), NEVER)])
        if found:
            await writer.write(DecodedBatch(detections=sorted(found, key=_insert_order)), idempotent=True)
            self.gateway.wake_alerts()
        self._watermarks.update(marks)
        self._replayed_events |= replayed_events
        self._watermarks_until = asyncio.get_running_loop().time() + WATERMARK_S
        n = sum(len(rows) for rows in history)
        self.stats.replays += 1
        self.stats.replayed_rows += n
        self.stats.replayed_detections += len(found)
        log.info(
            "cluster: replayed %d rows of %d devices in %.2f s (%d detections, repeats ignored)",
            n,
            len(devices),
            asyncio.get_running_loop().time() - started,
            len(found),
        )


class _Link:
    """One autocommit connection, opened when first needed and again after a failure."""

    def __init__(self, dsn: str, kwargs: dict[str, object]) -> None:
        self.dsn, self.kwargs = dsn, kwargs
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    async def connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **self.kwargs)  # type: ignore[arg-type]
        return self._conn

    async def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def __aenter__(self) -> _Link:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()


async def _fetch(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], spec: tables.TableSpec, devices: list[str], replay_s: float
) -> TableRows | None:
    """Stored rows of ``devices`` from the last ``replay_s``, as the decoder would have made them."""
    select = sql.SQL(", ").join(
        sql.SQL("(extract(epoch FROM {}) * 1000)::int8").format(sql.Identifier(c.name))
        if c.kind == "timestamptz_ms"
        else sql.Identifier(c.name)
        for c in spec.columns
    )
    query = sql.SQL(
        "SELECT {} FROM {} WHERE device_id = ANY(%s) AND time > now() - make_interval(secs => %s) ORDER BY time"
    ).format(select, sql.Identifier(spec.name))
    records = await (await conn.execute(query, (devices, replay_s))).fetchall()
    if not records:
        return None
    columns: list[Column] = []
    for i, c in enumerate(spec.columns):
        values = [r[i] for r in records]
        valid = np.array([v is not None for v in values], bool)
        if c.kind in ("text", "bytea"):
            arr = np.array(
                [v.encode() if isinstance(v, str) else (bytes(v) if v is not None else b"") for v in values],
                dtype=object,
            )
        else:
            dtype = {
                "timestamptz_ms": np.int64,
                "float8": np.float64,
                "float4": np.float32,
                "int4": np.int32,
                "int2": np.int16,
                "bool": np.bool_,
            }[c.kind]
            arr = np.array([0 if v is None else v for v in values], dtype=dtype)
        columns.append(Column(c.kind, arr, None if valid.all() else valid))
    return TableRows(spec, tuple(columns))


async def _still_silent(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], devices: list[str], replay_s: float
) -> dict[str, int]:
    """Devices whose latest silence detection is not cleared, with its time (ms)."""
    out: dict[str, int] = {}
    for at in range(0, len(devices), REPLAY_CHUNK):
        rows = await (
            await conn.execute(
                "SELECT DISTINCT ON (device_id) device_id, cleared, (extract(epoch FROM ts) * 1000)::int8 "
                "FROM detections WHERE kind = %s AND device_id = ANY(%s) "
                "AND ts > now() - make_interval(secs => %s) ORDER BY device_id, ts DESC, cleared DESC",
                (DEVICE_SILENT, devices[at : at + REPLAY_CHUNK], replay_s),
            )
        ).fetchall()
        out.update({str(r[0]): int(r[2]) for r in rows if not r[1]})
    return out


def _insert_order(d: Detection) -> tuple[str, str, int, bool]:
    """The detections' unique key: every writer inserts in this order, so none waits in a cycle."""
    return (d.device_id, d.kind, d.ts_ms, d.cleared)


def _discard(publishes: InboundPublishes, conn: IngestConnection) -> None:
    """A dead instance's detect session is only ended, never read."""


__all__ = ["Cluster", "Ownership", "owner_of", "topic_device", "weight"]
