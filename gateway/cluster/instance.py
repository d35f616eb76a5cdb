"""This instance's part in the cluster, wired by the supervisor (gateway/service.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from gateway.cluster.assignment import Assignment
from gateway.cluster.detect_stream import DetectStream
from gateway.cluster.link import DatabaseLink
from gateway.cluster.membership import Membership
from gateway.cluster.state import log
from gateway.domain.detection import Detection
from gateway.storage.writer import TelemetryWriter


class Cluster(DetectStream, Membership, Assignment):
    """Heartbeat, ownership, detect stream, replay, takeover: started, fed and stopped by the gateway."""

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
            async with DatabaseLink(self._dsn, self._kwargs) as link:
                await (await link.connection()).execute(
                    "DELETE FROM gateway_instances WHERE instance_id = %s", (self.instance_id,)
                )
        # everything is acked: the sessions can go (a restart subscribes afresh, the others replay)
        for client in (self.mqtt, gw.mqtt):
            current = client.connection
            await client.close(end_session=current is not None and current.unacked == 0)
        log.info("cluster: left")
