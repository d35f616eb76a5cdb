"""The alert worker: the alert engine and the outbox in a process of their own.

Why a process: in the gateway process an SOS's path from a stored detection to the
first page is some fifteen database round trips and an HTTP request, and under
telemetry load each of them waited behind decode and COPY work on the shared event
loop (and, on a thread, behind the GIL). Measured with bench/alert_latency.py at
18,000 msg/s: those steps took about 50 ms at the median and over 100 ms in the tail.
Here they run on an otherwise idle loop.

It needs nothing from the gateway's memory: detections, alerts and the outbox are in
the database. Stored detections wake it through PostgreSQL ``NOTIFY`` (a trigger,
schema migration 8) and it also polls, so a lost wake-up only delays. It publishes
"help is coming" downlinks on an MQTT connection of its own.

The gateway starts it (``AlertWorkerProcess``), hands it the configuration on stdin,
restarts it if it dies, and stops it by closing stdin: a worker whose gateway was
killed sees end-of-file and exits, so it never outlives the gateway (and, on Linux,
the kernel sends it SIGTERM too: ``PR_SET_PDEATHSIG``).

A clean stop (issue 20). The worker is in the gateway's process group, so systemd's
default stop and Ctrl-C in a terminal signal both at once: SIGTERM and SIGINT make it
finish the sends under way and exit 0, like end-of-file does. Stdin is watched with
``os.read`` on the raw descriptor from the event loop: a daemon thread blocked in
``sys.stdin.buffer.read()`` held the buffered reader's lock at interpreter shutdown,
and the interpreter aborted (``Fatal Python error: _enter_buffered_busy``, SIGABRT).
The gateway marks itself stopping before anything is signalled, so a worker that
exits while the gateway stops is not started again.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.alerting.downlinks import Downlink
from gateway.alerting.engine import AlertEngine
from gateway.alerting.paging import PagingLoops
from gateway.config import GatewayConfig, mqtt_password
from gateway.domain.registry import RegistryFile, load_registry
from gateway.domain.registry_watch import registry_from_db, watch_registry
from gateway.error_text import first_line
from gateway.gc_tuning import freeze_long_lived
from gateway.ingest.batcher import wall_clock_ms
from gateway.ingest.mqtt_client import MqttIngestClient, MqttSettings
from gateway.notify.outbox import OutboxSender
from gateway.notify.setup import build_notifiers, outbox_settings
from gateway.stop_signals import STOP_SIGNALS, record_stop_signals
from gateway.storage.schema import DETECTIONS_CHANNEL

log = logging.getLogger("gateway.alerting.worker")

READY = b"ready\n"
RESTART_DELAY_S = (1.0, 30.0)  # first and longest wait before starting a worker that died again
STOPPING_GRACE_S = 0.25  # a worker that exits is first given this long to turn out to be a stop
STOP_TIMEOUT_S = 15.0  # for the sends under way to finish after stdin is closed; then SIGKILL


class AlertWorkerProcess:
    """The gateway's side: start the worker, restart it when it dies, stop it with the gateway."""

    def __init__(self, config: GatewayConfig, stopping: asyncio.Event | None = None) -> None:
        self.config = config
        # set by the gateway's signal handler: from then on a worker that exits stays stopped
        self.stopping = stopping if stopping is not None else asyncio.Event()
        self.started = asyncio.Event()  # it said "ready" once
        self.running = False  # it said "ready" and has not exited since
        self.restarts = 0
        self.pid: int | None = None
        self.exit_code: int | None = None  # of the last worker that exited

    async def run(self) -> None:
        """Until cancelled or the gateway stops; each start waits for the worker's "ready" line."""
        delay = RESTART_DELAY_S[0]
        while not self.stopping.is_set():
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.alerting.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.pid = proc.pid
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(msgspec.json.encode(self.config) + b"\n")
                await proc.stdin.drain()
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


class AlertWorker:
    """The worker's side: engine and outbox loops, woken by ``NOTIFY``, until stdin closes."""

    def __init__(self, config: GatewayConfig, dsn: str, kwargs: dict[str, Any], *, poll_s: float = 1.0) -> None:
        self.config = config
        self.poll_s = poll_s
        self.dsn = dsn
        self.kwargs = kwargs
        m = config.mqtt
        self.mqtt = MqttIngestClient(
            MqttSettings(
                host=m.host,
                port=m.port,
                client_id=f"{m.client_id}-alerts",
                username=m.username,
                password=mqtt_password(config),
                topic_filters=(),
                keepalive_s=m.keepalive_s,
                session_expiry_s=0,
                tls_ca_file=m.tls_ca_file,
            ),
            lambda publishes, conn: None,
        )
        self.database_up = True

    async def run(self, stop: asyncio.Event, ready: Any) -> None:
        config = self.config
        pool = AsyncConnectionPool(
            self.dsn,
            kwargs=self.kwargs,
            min_size=1,
            max_size=max(2, config.database.pool_max // 2),
            open=False,
            timeout=config.database.connect_timeout_s,
            reconnect_timeout=0,
        )
        await pool.open(wait=False)
        registry, loaded = await self._registry()
        outbox = (
            OutboxSender(pool, build_notifiers(config), outbox_settings(config), wall_clock_ms)
            if config.notify.enabled
            else None
        )
        loops = PagingLoops(outbox, lambda: self.database_up, alert_poll_s=self.poll_s)
        alerts = AlertEngine(
            pool,
            config.escalation,
            registry,
            wall_clock_ms,
            self._send_downlink,
            claimed=loops.send_claimed if outbox is not None else None,
            lease_s=config.notify.lease_s,
        )

        async def changed(new: RegistryFile) -> None:
            alerts.use_registry(new)
            freeze_long_lived()
            log.info("alert worker: registry reloaded (%d elders)", len(new.elders))

        freeze_long_lived()
        try:
            async with asyncio.TaskGroup() as tasks:
                paging = tasks.create_task(loops.run(alerts), name="paging")
                workers = [
                    tasks.create_task(self.mqtt.run(), name="mqtt"),
                    tasks.create_task(self._listen(loops), name="listen"),
                    tasks.create_task(
                        watch_registry(self.dsn, self.kwargs, config.registry.reload_s, changed, loaded=loaded),
                        name="registry",
                    ),
                ]
                ready()
                await stop.wait()
                await loops.finish(paging)  # the pages under way are sent (downlinks need mqtt still)
                for worker in workers:
                    worker.cancel()
        finally:
            await loops.drain()
            await self.mqtt.close()
            if outbox is not None:
                await outbox.close()
            await pool.close()

    async def _registry(self) -> tuple[RegistryFile, bool]:
        """From the database (the gateway imported the file there); else the file, reloaded later."""
        try:
            return await asyncio.to_thread(registry_from_db, self.dsn, self.kwargs), True
        except psycopg.OperationalError as error:
            log.warning(
                "alert worker: database unreachable (%s); registry from the file until it returns", first_line(error)
            )
            path = self.config.registry.file
            return (load_registry(path) if path else RegistryFile()), False

    async def _listen(self, loops: PagingLoops) -> None:
        """Wake the engine when detections are committed; reconnect when the database comes back."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **self.kwargs) as conn:
                    await conn.execute(f"LISTEN {DETECTIONS_CHANNEL}")
                    self.database_up = True
                    loops.detections_stored.set()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        loops.detections_stored.set()
            except psycopg.OperationalError as error:
                if self.database_up:
                    log.warning("alert worker: database unreachable (%s); waiting for it", first_line(error))
                self.database_up = False
                await asyncio.sleep(1.0)

    async def _send_downlink(self, command: Downlink) -> None:
        payload = json.dumps(command.payload, ensure_ascii=False).encode()
        await self.mqtt.publish(command.topic, payload, qos=1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """Linux: SIGTERM (a clean stop) when the gateway dies, even if stdin were somehow kept open."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # end-of-file on stdin still stops it


def _read_line(fd: int) -> bytes:
    """The configuration line, read raw: no buffered reader, so no lock held at shutdown."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""  # the gateway went away before handing over the configuration
        data += chunk
    return data


def _watch_stdin(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    """End of file on stdin: the gateway closed it or died. Either way, stop."""

    def readable() -> None:
        try:
            more = os.read(fd, 4096)
        except OSError:
            more = b""
        if not more:
            loop.remove_reader(fd)
            log.info("alert worker: stdin closed (the gateway stops or is gone); stopping")
            stop.set()

    loop.add_reader(fd, readable)


def main() -> int:
    from gateway.logging_setup import setup_logging
    from gateway.settings import conninfo

    signalled = record_stop_signals()  # a stop asked for before the event loop runs, or after it closed
    _die_with_parent()  # (had the gateway died already, end-of-file below says so)
    stdin = sys.stdin.fileno()
    line = _read_line(stdin)
    if not line or signalled:
        return 0
    config = msgspec.json.decode(line, type=GatewayConfig)
    setup_logging(config.logging.level)
    dsn, kwargs = conninfo(config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        _watch_stdin(loop, stdin, stop)

        def signalled_now(sig: signal.Signals) -> None:
            log.info("alert worker: %s; finishing the sends under way and stopping", sig.name)
            stop.set()

        for sig in STOP_SIGNALS:  # a service manager or Ctrl-C stopping the whole group
            loop.add_signal_handler(sig, signalled_now, sig)
        if signalled:
            stop.set()

        def ready() -> None:
            sys.stdout.buffer.write(READY)
            sys.stdout.buffer.flush()
            sys.stdout = sys.stderr  # nothing else may fill a pipe the gateway no longer reads

        await AlertWorker(config, dsn, kwargs).run(stop, ready)

    asyncio.run(run())
    record_stop_signals()  # asyncio put the defaults back: a late signal must not abort the exit
    log.info("alert worker: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
