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

The gateway starts it (``AlertWorkerProcess``, worker_process.py), hands it the configuration
on stdin and then ``go`` once the schema is current (a restart's worker starts before the
gateway has migrated anything, issue 19), restarts it if it dies, and stops it by closing
stdin: a worker whose gateway was killed sees end-of-file and exits, so it never outlives the gateway (and, on Linux,
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
from gateway.alerting.worker_process import GO, READY
from gateway.config import GatewayConfig, mqtt_password
from gateway.domain.registry import RegistryFile, load_registry
from gateway.domain.registry_watch import registry_from_db, watch_registry
from gateway.error_text import first_line
from gateway.gc_tuning import freeze_long_lived, freeze_soon
from gateway.ingest.clock import wall_clock_ms
from gateway.ingest.mqtt_client import MqttIngestClient, MqttSettings
from gateway.notify.outbox import OutboxSender
from gateway.notify.setup import build_notifiers, import_providers, outbox_settings
from gateway.stop_signals import STOP_SIGNALS, record_stop_signals
from gateway.storage.channels import DETECTIONS_CHANNEL

log = logging.getLogger("gateway.alerting.worker")


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

        freeze_soon()  # not before the first read: a queued SOS waits for it
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


class _Lines:
    """Lines from the gateway on the raw descriptor: no buffered reader, so no lock held at shutdown."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def read(self) -> bytes:
        """The next line, or b"" when the gateway went away first."""
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


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
    lines = _Lines(stdin)
    line = lines.read()
    if not line or signalled:
        return 0
    config = msgspec.json.decode(line, type=GatewayConfig)
    if config.notify.enabled:
        import_providers(config)  # while the gateway migrates the schema: not after (issue 19)
    if lines.read() != GO or signalled:  # "go": the schema is current
        return 0
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
