"""Detections to alerts to pages: the two loops that drive the alert engine and the outbox.

Both read their work from the database (unhandled detections, due alerts, pending
notifications), so they are woken when there is news but never depend on it: a wake-up
lost in a crash is made up by the next poll. They run either in the gateway process
(``alerts.worker: inline``) or in the alert worker process (gateway/alerting/worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import PoolTimeout

from gateway.alerting.engine import AlertEngine
from gateway.error_text import first_line
from gateway.notify.outbox import OutboxSender

log = logging.getLogger(__name__)
FINISH_TIMEOUT_S = 10.0  # for the pages under way at a stop (one send attempt is at most 10 s)


class PagingLoops:
    """Runs ``process_detections``/``run_due`` and the outbox; sends fresh pages at once."""

    def __init__(
        self,
        outbox: OutboxSender | None,
        database_up: Callable[[], bool],
        *,
        alert_poll_s: float = 1.0,
        outbox_poll_s: float = 0.5,
    ) -> None:
        self.outbox = outbox
        self.database_up = database_up
        self.alert_poll_s = alert_poll_s  # escalation timers are checked this often
        self.outbox_poll_s = outbox_poll_s  # retries and rows written by others are found this often
        self.detections_stored = asyncio.Event()
        self.outbox_due = asyncio.Event()
        self._fast_sends: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def run(self, alerts: AlertEngine) -> None:
        """Until cancelled, or until ``stop()`` once the steps under way are done."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._alert_stage(alerts), name="escalate")
            if self.outbox is not None:
                tasks.create_task(self._notify_stage(self.outbox), name="notify")

    def stop(self) -> None:
        """A clean stop: each loop finishes the step it is in and returns.

        Cancelled instead, a loop cut off a batch of pages mid-send: those rows stayed
        claimed ("sending") until their lease ran out, and were sent again then.
        """
        self._stopping.set()
        self.detections_stored.set()
        self.outbox_due.set()

    async def finish(self, task: asyncio.Task[None], timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """``stop()``, wait for ``task`` (running ``run``) to return; cancel it if it takes too long."""
        self.stop()
        _, pending = await asyncio.wait({task}, timeout=timeout_s)
        if pending:
            log.warning("paging did not finish within %.0f s; cut off (leased pages are sent again)", timeout_s)
            task.cancel()

    async def drain(self) -> None:
        """Let pages already being sent finish (on shutdown)."""
        await asyncio.gather(*self._fast_sends, return_exceptions=True)

    async def send_claimed(self, ids: list[int]) -> None:
        """Pages the engine just created (already claimed): sent right away, in the background."""
        task = asyncio.create_task(self._send_claimed_now(ids), name="notify-fast")
        self._fast_sends.add(task)
        task.add_done_callback(self._fast_sends.discard)

    async def _send_claimed_now(self, ids: list[int]) -> None:
        assert self.outbox is not None
        try:
            await self.outbox.send_claimed(ids)
        except Exception:  # the lease runs out and the poller sends them: never lost
            log.exception("immediate send failed; the outbox will retry")

    async def _database_loop(
        self, wake: asyncio.Event, every_s: float, step: Callable[[], Awaitable[None]], what: str
    ) -> None:
        """Run ``step`` when woken or every ``every_s``; the database being away only delays it."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await wake.wait()
            wake.clear()
            if self._stopping.is_set():
                return
            if not self.database_up():
                continue
            try:
                await step()
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as error:
                log.warning("%s waiting for the database: %s", what, first_line(error))
            except Exception:
                log.exception("%s step failed; retrying", what)

    async def _alert_stage(self, alerts: AlertEngine) -> None:
        """Detections become alerts as soon as they are committed; escalation timers every second.

        Nothing here is lost by a crash: a restarted gateway (or another instance) finds
        the same unhandled rows.
        """

        async def step() -> None:
            while not self._stopping.is_set() and await alerts.process_detections() > 0:
                pass
            await alerts.run_due()
            self.outbox_due.set()

        await self._database_loop(self.detections_stored, self.alert_poll_s, step, "alert engine")

    async def _notify_stage(self, outbox: OutboxSender) -> None:
        """Send what the alert engine queued in the outbox: woken by it, and polled for retries."""

        async def step() -> None:
            while not self._stopping.is_set() and await outbox.run_once() > 0:
                pass

        await self._database_loop(self.outbox_due, self.outbox_poll_s, step, "outbox")
