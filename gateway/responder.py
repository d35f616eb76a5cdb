"""The responder side of the gateway: alert engine, outbox and HTTP (webhooks, console API).

They share the gateway's event loop with ingest but have their own pool of database
connections, so an SOS being paged never waits for a telemetry COPY to release a
connection. (A thread of their own was tried and measured: under telemetry load the
alert path then waited on the GIL at every database round trip, and the median SOS
latency went from about 30 ms to 200 ms; see bench/alert_latency.py.)

Everything here works from the database (unhandled detections, due alerts, pending
notifications), so it is woken by the ingest side but never depends on being woken:
a wake-up lost in a crash is made up by the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api.routes import api_routes
from gateway.config import ConfigError, twilio_token
from gateway.metrics import render as render_metrics
from gateway.notify.outbox import OutboxSender
from gateway.notify.setup import build_notifiers, outbox_settings
from gateway.notify.webhooks import TwilioWebhooks, webhook_app
from rules.engine import AlertEngine, Downlink

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)
T = TypeVar("T")

class Responder:
    """The gateway starts it, wakes it when detections are stored, and stops it."""

    def __init__(self, gateway: Gateway, dsn: str, kwargs: dict[str, object]) -> None:
        self.gateway = gateway
        self.dsn = dsn
        self.kwargs = kwargs
        self.loop: asyncio.AbstractEventLoop | None = None
        self.detections_stored = asyncio.Event()
        self.outbox_due = asyncio.Event()
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._fast_sends: set[asyncio.Task[None]] = set()
        self.failed: asyncio.Future[None] | None = None  # set on the ingest loop if this side dies
        self.pool: AsyncConnectionPool | None = None
        self.alerts: AlertEngine | None = None
        self.outbox: OutboxSender | None = None
        self.http: uvicorn.Server | None = None
        self.http_port = 0
        self._http_socket: socket.socket | None = None

    # -- called from the ingest loop -------------------------------------------------------

    async def start(self) -> None:
        """Start it; raise its start-up error (a port in use) here."""
        self.loop = asyncio.get_running_loop()
        self.failed = self.loop.create_future()
        self._task = asyncio.create_task(self._main(), name="responder")
        await self._started.wait()
        if self._error is not None:
            raise self._error

    def wake_alerts(self) -> None:
        """Detections were committed: apply them now rather than at the next poll."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.detections_stored.set)  # callable from any thread

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (which uses this side's pool or engine): from its loop, or from another thread's."""
        assert self.loop is not None
        if asyncio.get_running_loop() is self.loop:
            return await work
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=30)  # its error, if any, was reported through ``failed``

    async def _main(self) -> None:
        try:
            await self._run()
        except BaseException as error:
            self._error = error
            self._started.set()
            if self.failed is not None and not self.failed.done():
                self.failed.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def _run(self) -> None:
        gw = self.gateway
        config = gw.config
        self.pool = AsyncConnectionPool(
            self.dsn, kwargs=self.kwargs, min_size=1, max_size=max(2, config.database.pool_max // 2),
            open=False, timeout=config.database.connect_timeout_s, reconnect_timeout=0,
        )
        await self.pool.open(wait=False)
        self.outbox = OutboxSender(self.pool, build_notifiers(config), outbox_settings(config), gw.clock_ms)
        self.alerts = AlertEngine(self.pool, config.escalation, gw.registry, gw.clock_ms, self._send_downlink,
                                  claimed=self._send_claimed if config.notify.enabled else None,
                                  lease_s=config.notify.lease_s)
        try:
            http = self._http_server() if config.notify.enabled else None
            self._started.set()
            async with asyncio.TaskGroup() as tasks:
                workers = [tasks.create_task(self._alert_stage(), name="escalate"),
                           tasks.create_task(self._notify_stage(), name="notify")]
                if http is not None:
                    assert self._http_socket is not None
                    workers.append(tasks.create_task(http.serve(sockets=[self._http_socket]), name="http"))
                await self._stop.wait()
                if http is not None:
                    http.should_exit = True
                for worker in workers:
                    if worker.get_name() != "http":
                        worker.cancel()
        finally:
            await asyncio.gather(*self._fast_sends, return_exceptions=True)
            await self.outbox.close()
            await self.pool.close()

    async def _database_loop(self, wake: asyncio.Event, every_s: float, step: Callable[[], Awaitable[None]],
                             what: str) -> None:
        """Run ``step`` when woken or every ``every_s``; the database being away only delays it."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await wake.wait()
            wake.clear()
            if not self.gateway.database_up:
                continue
            try:
                await step()
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as error:
                log.warning("%s waiting for the database: %s", what, _first_line(error))
            except Exception:
                log.exception("%s step failed; retrying", what)

    async def _alert_stage(self) -> None:
        """Detections become alerts as soon as they are committed; escalation timers every second.

        Both read their work from the database, so nothing here is lost by a crash: a
        restarted gateway (or another instance) finds the same unhandled rows.
        """
        alerts = self.alerts
        assert alerts is not None

        async def step() -> None:
            while await alerts.process_detections() > 0:
                pass
            await alerts.run_due()
            self.outbox_due.set()

        await self._database_loop(self.detections_stored, 1.0, step, "alert engine")

    async def _notify_stage(self) -> None:
        """Send what the alert engine queued in the outbox: woken by it, and every 0.5 s for retries."""
        outbox = self.outbox
        if not self.gateway.config.notify.enabled or outbox is None:
            return

        async def step() -> None:
            while await outbox.run_once() > 0:
                pass

        await self._database_loop(self.outbox_due, 0.5, step, "outbox")

    async def _send_claimed(self, ids: list[int]) -> None:
        """Pages the engine just created: sent right away, in the background."""
        task = asyncio.create_task(self._send_claimed_now(ids), name="notify-fast")
        self._fast_sends.add(task)
        task.add_done_callback(self._fast_sends.discard)

    async def _send_claimed_now(self, ids: list[int]) -> None:
        assert self.outbox is not None
        try:
            await self.outbox.send_claimed(ids)
        except Exception:  # the lease runs out and the poller sends them: never lost
            log.exception("immediate send failed; the outbox will retry")

    async def _send_downlink(self, command: Downlink) -> None:
        """"Help is coming" to the elder's device, over the gateway's MQTT session."""
        payload = json.dumps(command.payload, ensure_ascii=False).encode()
        await self.gateway.mqtt.publish(command.topic, payload, qos=1)

    # -- HTTP: webhooks, console API, health, metrics ------------------------------------------

    def _http_server(self) -> uvicorn.Server:
        gw = self.gateway
        assert self.pool is not None and self.alerts is not None
        n = gw.config.notify
        routes: list[BaseRoute] = [Route("/healthz", self._healthz), Route("/readyz", self._readyz),
                                   Route("/metrics", self._metrics)]
        routes.extend(api_routes(gw))
        if n.twilio is not None:
            hooks = TwilioWebhooks(self.pool, self.alerts, twilio_token(gw.config), n.public_base_url, gw.clock_ms)
            app = webhook_app(hooks, routes)
        else:
            app = Starlette(routes=routes)
        # bind here, so a port in use is a clear start-up error, not uvicorn exiting the process later
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((n.http_host, n.http_port))
        except OSError as error:
            sock.close()
            raise ConfigError(f"notify.http_port: cannot listen on {n.http_host}:{n.http_port}: "
                              f"{error.strerror}") from None
        sock.listen(128)
        sock.setblocking(False)
        self._http_socket = sock
        self.http_port = int(sock.getsockname()[1])
        server = _HttpServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.http = server
        return server

    async def _metrics(self, request: Request) -> Response:
        return Response(await render_metrics(self.gateway), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        gw = self.gateway
        connected = gw.mqtt.connected.is_set()
        ready = connected and gw.database_up
        return JSONResponse({"mqtt": connected, "database": gw.database_up, "spool_batches": len(gw.spool)},
                            status_code=200 if ready else 503)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway's supervisor owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

