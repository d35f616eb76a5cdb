"""Assignment: when the live set changes, forget lost elders and replay gained ones."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from gateway.cluster.link import DatabaseLink
from gateway.cluster.ownership import Ownership
from gateway.cluster.rows import fetch_recent_rows, insert_order, still_silent
from gateway.cluster.state import NEVER, REPLAY_CHUNK, REPLAYED, WATERMARK_S, ClusterState, log
from gateway.detect.engine import DetectorSet
from gateway.error_text import first_line
from gateway.pipeline.batch import DecodedBatch, TableRows
from gateway.storage import tables
from gateway.storage.writer import StorageRejected, StorageUnavailable, TelemetryWriter


class Assignment(ClusterState):
    """Reassign ownership and rebuild detector state from stored rows."""

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
        async with DatabaseLink(self._dsn, self._kwargs) as link:
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
                rows = await fetch_recent_rows(conn, spec, devices[at : at + REPLAY_CHUNK], self.settings.replay_s)
                if rows is not None:
                    history.append(rows)
        history += self._kept_events(devices, history)
        silent = await still_silent(conn, devices, self.settings.replay_s)
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
            await writer.write(DecodedBatch(detections=sorted(found, key=insert_order)), idempotent=True)
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
