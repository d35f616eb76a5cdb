"""Membership: heartbeats, the live set, and taking over a dead instance's sessions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import replace
from typing import Any

import psycopg

from gateway.cluster.link import DatabaseLink
from gateway.cluster.rows import (
    discard_publishes,
)
from gateway.cluster.state import QUIET_S, ClusterState, log
from gateway.error_text import first_line
from gateway.ingest.mqtt_client import MqttConnectError, MqttIngestClient


class Membership(ClusterState):
    """Heartbeat, read the live set, claim and drain the dead."""

    # -- membership --------------------------------------------------------------------------------------

    async def _heartbeat_stage(self) -> None:
        """Every ``heartbeat_s``: say we live, read who else does, retire the dead."""
        async with DatabaseLink(self._dsn, self._kwargs) as link:
            await self._heartbeats(link)

    async def _heartbeats(self, link: DatabaseLink) -> None:
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
        detect = MqttIngestClient(replace(self.mqtt.settings, client_id=detect_client_id), discard_publishes)
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
            async with DatabaseLink(self._dsn, self._kwargs) as link:
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
