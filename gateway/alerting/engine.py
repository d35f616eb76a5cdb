"""The alert engine: detections become alerts, due alerts escalate, tier by tier.

Two loops, both driven from the database so that a restart or a second gateway
instance carries on where the first stopped:

* ``process_detections`` claims unhandled detection rows (``FOR UPDATE SKIP LOCKED``),
  applies the lifecycle decision and marks them handled in the same transaction:
  each detection changes the alerts exactly once (:mod:`gateway.alerting.intake`).
* ``run_due`` claims alerts whose ``next_check_at`` has come (the escalation timer is
  that column, not a sleeping task), asks ``next_step`` what to do, records the tier
  firing (its primary key makes a second engine's attempt a no-op) and writes one
  outbox row per recipient and channel, then sets the next check time
  (:mod:`gateway.alerting.tier_firing`).

What people do (:mod:`gateway.alerting.actions`) comes in through the same object, one transaction
each. The clock is injected; the engine never reads the wall clock itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from zoneinfo import ZoneInfo

from psycopg_pool import AsyncConnectionPool

from gateway.alerting import actions, intake, store, tier_firing
from gateway.alerting.actions import AlertError
from gateway.alerting.downlinks import Downlink, elder_device
from gateway.alerting.policy import EscalationConfig, PolicySpec
from gateway.alerting.store import AlertRow, Conn
from gateway.alerting.tier_firing import FiringScope
from gateway.domain.registry import ElderSpec, RegistryFile

log = logging.getLogger(__name__)


class AlertEngine:
    """The alerting side's one entry point: each call is one transaction.

    Pages it claims and device commands it queues are handed on after the commit, so
    the first SMS needs no second transaction and a device is never asked about an
    alert that is not yet visible.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        escalation: EscalationConfig,
        registry: RegistryFile,
        clock_ms: Callable[[], int],
        downlink: Callable[[Downlink], Awaitable[None]] | None = None,
        claimed: Callable[[list[int]], Awaitable[None]] | None = None,
        lease_s: float = 20.0,
    ) -> None:
        self.pool = pool
        self.escalation = escalation
        self.registry = registry
        self.clock_ms = clock_ms
        self.downlink = downlink
        self.elders: dict[str, ElderSpec] = {e.id: e for e in registry.elders}
        self.policies: dict[str, PolicySpec] = {p.name: p for p in escalation.policies}
        self.tz = ZoneInfo(escalation.timezone)
        # With a sender attached, pages are created already claimed (with its lease) and
        # handed to it after the commit: no second transaction before the first SMS. If
        # the process dies first, the lease runs out and the outbox poller sends them.
        self.claimed = claimed
        self.lease_ms = int(lease_s * 1000)
        self._scope = FiringScope(
            escalation,
            self.policies,
            registry,
            self.elders,
            self.tz,
            self.lease_ms if claimed is not None else None,
        )

    def use_registry(self, registry: RegistryFile) -> None:
        """Elders, contacts and responders changed (console, import): page from the new ones."""
        self.registry = registry
        self.elders = {e.id: e for e in registry.elders}
        self._scope = replace(self._scope, registry=registry, elders=self.elders)

    # -- detections -> alerts ------------------------------------------------------------

    async def process_detections(self, limit: int = 500) -> int:
        """Apply unhandled detections in order; return how many were handled.

        One engine at a time does this (a transaction-level advisory lock; the others
        return at once): an SOS and its withdrawal, or two detections of one key seen
        by two gateway instances, must be applied in the order they were detected.
        """
        async with self.pool.connection() as conn, conn.transaction():
            rows = await intake.claim(conn, limit)
            if rows is None:
                return 0
            opened: list[int] = []
            downlinks: list[Downlink] = []
            claimed: list[int] = []
            for det_id, det in rows:
                applied = await intake.apply(conn, det, self.clock_ms(), self.escalation, self.elders)
                if applied.page_now and applied.alert_id is not None:
                    opened.append(applied.alert_id)
                if applied.ask is not None:
                    downlinks.append(applied.ask)
                await intake.mark_handled(conn, det_id, applied.alert_id)
            # an alert that pages at once (no confirmation window) fires its first tiers now,
            # in this transaction: one commit between the SOS and the first page
            now = self.clock_ms()
            for alert_id in opened:
                alert = await store.by_ref(conn, alert_id)
                if alert is not None and alert.state == "notifying":
                    # opened just now: nothing fired yet
                    claimed += await tier_firing.escalate(conn, alert, now, self._scope, [])
        await self._after_commit(claimed, downlinks)
        return len(rows)

    # -- escalation timers -----------------------------------------------------------------

    async def run_due(self, limit: int = 100) -> int:
        """Escalate every alert whose check time has come; return how many were looked at."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            due = await store.fetch(
                conn,
                "state <> 'resolved' AND next_check_at <= %s ORDER BY next_check_at LIMIT %s",
                (store.ts(now), limit),
                lock="FOR UPDATE SKIP LOCKED",
            )
            claimed: list[int] = []
            for alert in due:
                claimed += await tier_firing.escalate(conn, alert, now, self._scope, None)
        await self._after_commit(claimed, [])
        return len(due)

    async def _after_commit(self, claimed: list[int], downlinks: list[Downlink]) -> None:
        """Hand what a committed transaction produced to the outbox and the devices.

        Each call collects its own pages and commands: the engine serves several tasks at
        once (detections, timers, people's actions), and a transaction that rolled back
        must send nothing, nor have its commands sent by another task's commit.
        """
        if claimed and self.claimed is not None:
            await self.claimed(claimed)
        await self._flush_downlinks(downlinks)

    async def _flush_downlinks(self, pending: list[Downlink]) -> None:
        if self.downlink is None:
            return
        for command in pending:
            try:
                await self.downlink(command)
            except Exception as error:  # a device command is best effort; paging is not
                log.warning("could not send %s to %s: %s", command.payload.get("cmd"), command.device_id, error)

    # -- what people do ----------------------------------------------------------------------

    async def _locked(self, conn: Conn, ref: int | str) -> AlertRow:
        alert = await store.by_ref(conn, ref)
        if alert is None:
            raise AlertError(f"no alert {ref}")
        return alert

    async def acknowledge(
        self,
        ref: int | str,
        actor: str,
        channel: str,
        *,
        actor_key: str | None = None,
        eta_s: float | None = None,
        note: str | None = None,
    ) -> AlertRow:
        """A responder takes the alert; the elder's device is told help is coming."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            alert = await self._locked(conn, ref)
            taken = await actions.acknowledge(
                conn,
                alert,
                actor,
                actor_key,
                channel,
                eta_s,
                note,
                now,
                margin_s=self.escalation.on_scene_margin_s,
                default_eta_s=self.escalation.default_eta_s,
            )
            downlinks: list[Downlink] = []
            if taken:
                elder = self.elders.get(alert.elder_id or "")
                device = elder_device(elder) if elder else None
                if device:
                    downlinks.append(
                        Downlink(
                            device[0],
                            device[1],
                            {"cmd": "help_coming", "alert": alert.code, "by": actor, "vibrate": "reassure"},
                        )
                    )
                    await store.event(
                        conn, alert.alert_id, now, "reassured_elder", actor="system", channel="device", device=device[1]
                    )
            result = await self._locked(conn, alert.alert_id)
        await self._flush_downlinks(downlinks)
        return result

    async def pass_on(self, ref: int | str, actor: str, channel: str, *, actor_key: str | None = None) -> None:
        """The person paged declines ("press 2"): once everyone in the current tier has, move on now."""
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            alert = await self._locked(conn, ref)
            await actions.pass_on(conn, alert, actor, channel, actor_key, now, self._scope.policy_of)

    async def on_scene(self, ref: int | str, actor: str, channel: str) -> AlertRow:
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await actions.on_scene(conn, await self._locked(conn, ref), actor, channel, now)
            return await self._locked(conn, ref)

    async def resolve(
        self, ref: int | str, actor: str, channel: str, outcome: str, note: str | None = None
    ) -> AlertRow:
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await actions.resolve(conn, await self._locked(conn, ref), actor, channel, outcome, note, now)
            return await self._locked(conn, ref)

    async def add_note(self, ref: int | str, actor: str, channel: str, text: str) -> None:
        now = self.clock_ms()
        async with self.pool.connection() as conn, conn.transaction():
            await actions.note(conn, await self._locked(conn, ref), actor, channel, text, now)

    async def responder_position(self, actor: str, lat: float, lon: float, radius_m: float = 150) -> list[str]:
        """A responder's reported position: arriving at an elder they took puts them on scene."""
        now = self.clock_ms()
        arrived: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            for alert in await store.fetch(
                conn, "state = 'acknowledged' AND acknowledged_by = %s", (actor,), lock="FOR UPDATE"
            ):
                elder = self.elders.get(alert.elder_id or "")
                if elder is not None and actions.near_home(elder, lat, lon, radius_m):
                    await actions.on_scene(conn, alert, actor, "position", now)
                    arrived.append(alert.code)
        return arrived
