"""The cluster's shared state, its constants and counters."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from gateway.cluster.ownership import Ownership
from gateway.config import ConfigError
from gateway.detect.engine import DetectorSet
from gateway.ingest.batcher import MicroBatcher
from gateway.ingest.mqtt_client import IngestConnection, MqttIngestClient
from gateway.ingest.mqtt_wire import InboundPublishes
from gateway.pipeline.batch import DecodedBatch, RawBatch, TableRows
from gateway.pipeline.decode import BatchDecoder
from gateway.pipeline.rate_limit import DeviceRateLimiter
from gateway.storage import tables

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


class ClusterState:
    """What the cluster's loops share: set up once, read and written by each part's methods."""

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

    def _routing_key(self, device: bytes, detectors: DetectorSet | None) -> bytes:
        """The elder a device belongs to (ownership is per elder), else the device itself."""
        if detectors is not None:
            index = detectors.index
            slot = index.slot_of.get(device)
            if slot is not None:
                elder = int(index.elder_of_slot[slot])
                if elder >= 0:
                    return index.elder_ids[elder].encode()
        return device

    # the detect stream's (gateway/cluster/detect_stream.py), used by the others
    def _sink(self, publishes: InboundPublishes, conn: IngestConnection) -> None:
        raise NotImplementedError

    def _kept_events(self, devices: list[str], stored: list[TableRows]) -> list[TableRows]:
        raise NotImplementedError
