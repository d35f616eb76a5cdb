"""The gateway's side of the alert worker: start it early, restart it when it dies, stop it.

Kept apart from the worker itself (worker.py), whose imports (the engine, the outbox,
the providers' clients) the gateway process need not wait for: the command that runs
the gateway starts the first worker before it imports the rest of the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import msgspec

from gateway.config import GatewayConfig

log = logging.getLogger("gateway.alerting.worker")

READY = b"ready\n"  # the worker's line once it pages
GO = b"go\n"  # the gateway's second line: the schema is current, use the database
RESTART_DELAY_S = (1.0, 30.0)  # first and longest wait before starting a worker that died again
STOPPING_GRACE_S = 0.25  # a worker that exits is first given this long to turn out to be a stop
STOP_TIMEOUT_S = 15.0  # for the sends under way to finish after stdin is closed; then SIGKILL


class AlertWorkerProcess:
    """The gateway's side: start the worker, restart it when it dies, stop it with the gateway."""

    def __init__(self, config: GatewayConfig, stopping: asyncio.Event | None = None) -> None:
        self.config = config
        self._first: asyncio.subprocess.Process | None = None  # started early (``start_early``)
        self._config_sent = False
        # set by the gateway's signal handler: from then on a worker that exits stays stopped
        self.stopping = stopping if stopping is not None else asyncio.Event()
        self.started = asyncio.Event()  # it said "ready" once
        self.running = False  # it said "ready" and has not exited since
        self.restarts = 0
        self.pid: int | None = None
        self.exit_code: int | None = None  # of the last worker that exited

    async def start_early(self) -> None:
        """Start the first worker now, before the gateway has imported and loaded what it needs.

        A restart's SOS waits for both processes (issue 19: paged within 1 s of the start);
        started first, the worker's interpreter and imports run on the other core while the
        gateway's do. It gets its configuration at once (and imports its providers' clients)
        but touches the database only after ``hand_over``, so it never reads a schema that
        is being migrated.
        """
        self._first = await self._spawn()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # run() sees it exit
            await self._send(self._first, msgspec.json.encode(self.config) + b"\n")

    async def hand_over(self) -> None:
        """The schema is current: the early worker may use the database (and starts paging)."""
        if self._first is not None and not self._config_sent:
            self._config_sent = True
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self._send(self._first, GO)

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.alerting.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.pid = proc.pid
        return proc

    async def _send(self, proc: asyncio.subprocess.Process, data: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(data)
        await proc.stdin.drain()

    async def run(self) -> None:
        """Until cancelled or the gateway stops; each start waits for the worker's "ready" line."""
        delay = RESTART_DELAY_S[0]
        while not self.stopping.is_set():
            early, self._first = self._first, None
            proc = early or await self._spawn()
            self.pid = proc.pid
            assert proc.stdin is not None and proc.stdout is not None
            try:
                if early is None:  # its configuration, and the database at once
                    await self._send(proc, msgspec.json.encode(self.config) + b"\n" + GO)
                elif not self._config_sent:
                    await self._send(proc, GO)
                self._config_sent = True
                if await proc.stdout.readline() == READY:
                    log.info("alert worker running (pid %d)", proc.pid)
                    self.started.set()
                    self.running = True
                    delay = RESTART_DELAY_S[0]
                code = await proc.wait()
                self.running = False
            except asyncio.CancelledError:
                self.running = False
                await self._stop(proc)
                raise
            except (BrokenPipeError, ConnectionResetError):
                code = await proc.wait()
                self.running = False
            self.exit_code = code
            # the group's signal reaches the worker too; the gateway's own handler may run a
            # moment later when its loop is busy, so wait briefly before calling this a death
            if await _set_within(self.stopping, STOPPING_GRACE_S):
                log.info("alert worker (pid %d) stopped with code %s", proc.pid, code)
                return
            self.restarts += 1
            log.error(
                "alert worker (pid %d) exited with code %s; starting it again in %.0f s "
                "(detections wait in the database meanwhile)",
                proc.pid,
                code,
                delay,
            )
            if await _set_within(self.stopping, delay):
                return
            delay = min(delay * 2, RESTART_DELAY_S[1])

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """Close its stdin (it finishes the sends under way and exits); kill it if it does not."""
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("alert worker (pid %d) did not stop within %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                await proc.wait()
        self.exit_code = proc.returncode
        log.info("alert worker (pid %d) stopped with code %s", proc.pid, proc.returncode)


async def _set_within(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        return False
    return True
