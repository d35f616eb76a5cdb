"""The alert side of the gateway process: alert engine, outbox and HTTP (callbacks, console API).

HTTP shares the gateway's event loop with ingest, with its own pool of database
connections, so a webhook never waits for a telemetry COPY to release a connection.
Detections become alerts and pages in the alert worker process (gateway/alerting/worker.py),
away from telemetry load, unless ``notify.alert_worker`` is ``inline`` or the gateway runs
on a clock of its own (tests, fast scenarios), when the same loops (gateway/alerting/paging.py)
run here. (A thread was tried and measured: under telemetry load the alert path then
waited on the GIL at every database round trip, and the median SOS latency went from
about 30 ms to 200 ms; see bench/alert_latency.py.)

The engine here still serves people's answers (webhooks, console): taking an alert,
passing it on. Everything works from the database, so the two sides need no messages
between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.alerting.downlinks import Downlink
from gateway.alerting.engine import AlertEngine
from gateway.alerting.paging import PagingLoops
from gateway.alerting.worker_process import AlertWorkerProcess
from gateway.api.routes import api_routes
from gateway.config import ConfigError, china_secrets, twilio_token
from gateway.ingest.batcher import wall_clock_ms
from gateway.metrics import render as render_metrics
from gateway.notify.china_callbacks import ChinaCallbacks
from gateway.notify.outbox import OutboxSender
from gateway.notify.responses import Responses
from gateway.notify.setup import build_notifiers, outbox_settings
from gateway.notify.twilio_callbacks import TwilioWebhooks, webhook_app

if TYPE_CHECKING:
    from gateway.host import AlertSideHost

log = logging.getLogger(__name__)
T = TypeVar("T")


class AlertSide:
    """The gateway starts it, wakes it when detections are stored, and stops it."""

    def __init__(
        self,
        gateway: AlertSideHost,
        dsn: str,
        kwargs: dict[str, object],
        stopping: asyncio.Event | None = None,
        worker: AlertWorkerProcess | None = None,
    ) -> None:
        self.gateway = gateway
        self.dsn = dsn
        self.kwargs = kwargs
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.failed: asyncio.Future[None] | None = None  # set on the ingest loop if this side dies
        self.pool: AsyncConnectionPool | None = None
        self.alerts: AlertEngine | None = None
        self.outbox: OutboxSender | None = None
        self.paging: PagingLoops | None = None
        config = gateway.config
        in_worker = config.notify.alert_worker == "process" and gateway.clock_ms is wall_clock_ms
        # ``stopping``: the gateway's stop event, so its worker is never started again once it is set;
        # ``worker``: one the gateway started early (gateway/cli.py), else it is made here
        self.worker = (worker or AlertWorkerProcess(config, stopping)) if in_worker else None
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
        """Detections were committed: apply them now rather than at the next poll.

        The alert worker is woken by the database itself (``NOTIFY``); this is for inline paging.
        """
        if self.worker is None and self.paging is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.paging.detections_stored.set)  # callable from any thread

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (which uses this side's pool or engine): from its loop, or from another thread's."""
        assert self.loop is not None
        if asyncio.get_running_loop() is self.loop:
            return await work
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stopping.set()  # its worker is not started again, whatever stopped the gateway
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
            self.dsn,
            kwargs=self.kwargs,
            min_size=1,
            max_size=max(2, config.database.pool_max // 2),
            open=False,
            timeout=config.database.connect_timeout_s,
            reconnect_timeout=0,
        )
        await self.pool.open(wait=False)
        # with an alert worker, this process pages rarely (the database down, people's actions):
        # its providers' clients are built when first used, not before the gateway is up; inline,
        # this outbox sends every page, so they are built now, as before (issue 19)
        notifiers = (lambda: build_notifiers(config)) if self.worker is not None else build_notifiers(config)
        self.outbox = OutboxSender(self.pool, notifiers, outbox_settings(config), gw.clock_ms)
        self.paging = PagingLoops(self.outbox if config.notify.enabled else None, lambda: gw.database_up)
        # pages this engine creates (someone passes an alert on) are sent from here at once
        self.alerts = AlertEngine(
            self.pool,
            config.escalation,
            gw.registry,
            gw.clock_ms,
            self._send_downlink,
            claimed=self.paging.send_claimed if config.notify.enabled else None,
            lease_s=config.notify.lease_s,
        )
        try:
            http = self._http_server() if config.notify.enabled else None
            self._started.set()
            async with asyncio.TaskGroup() as tasks:
                paging = tasks.create_task(self.paging.run(self.alerts), name="paging") if self.worker is None else None
                workers = [] if self.worker is None else [tasks.create_task(self.worker.run(), name="alert-worker")]
                if http is not None:
                    assert self._http_socket is not None
                    workers.append(tasks.create_task(http.serve(sockets=[self._http_socket]), name="http"))
                await self._stop.wait()
                if paging is not None:
                    await self.paging.finish(paging)  # the pages under way are sent
                if http is not None:
                    http.should_exit = True
                for worker in workers:
                    if worker.get_name() != "http":
                        worker.cancel()
        finally:
            await self.paging.drain()
            await self.outbox.close()
            await self.pool.close()

    async def _send_downlink(self, command: Downlink) -> None:
        """ "Help is coming" to the elder's device, over the gateway's MQTT session."""
        payload = json.dumps(command.payload, ensure_ascii=False).encode()
        await self.gateway.mqtt.publish(command.topic, payload, qos=1)

    # -- HTTP: webhooks, console API, health, metrics ------------------------------------------

    def _http_server(self) -> uvicorn.Server:
        gw = self.gateway
        assert self.pool is not None and self.alerts is not None
        n = gw.config.notify
        routes: list[BaseRoute] = [
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
        ]
        routes.extend(api_routes(gw.config, self.alerts, gw.clock_ms, self._http_stopping))
        tokens = {name: china_secrets(gw.config, name)[1] for name in ("aliyun", "tencent") if getattr(n, name)}
        if tokens:
            routes.extend(ChinaCallbacks(Responses(self.pool, self.alerts, gw.clock_ms), tokens).routes())
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
            raise ConfigError(
                f"notify.http_port: cannot listen on {n.http_host}:{n.http_port}: {error.strerror}"
            ) from None
        sock.listen(128)
        sock.setblocking(False)
        self._http_socket = sock
        self.http_port = int(sock.getsockname()[1])
        # proxy_headers=False: X-Forwarded-For is believed only from api.trusted_proxies (request_checks.py)
        server = _HttpServer(uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=False))
        self.http = server
        return server

    async def _metrics(self, request: Request) -> Response:
        return Response(await render_metrics(self.gateway, self.pool, self.worker), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        gw = self.gateway
        connected = gw.mqtt.connected.is_set()
        worker = self.worker is None or self.worker.running
        ready = connected and gw.database_up and worker
        upkeep = gw.storage_upkeep
        storage = {"mode": gw.storage_mode, "warnings": upkeep.warnings() if upkeep is not None else []}
        return JSONResponse(
            {
                "mqtt": connected,
                "database": gw.database_up,
                "alert_worker": worker,
                "spool_batches": len(gw.spool),
                "storage": storage,  # warnings do not make the gateway unready: alerts still flow
            },
            status_code=200 if ready else 503,
        )

    def _http_stopping(self) -> bool:
        """The console's live streams end when the HTTP server is shutting down."""
        return self.http is not None and self.http.should_exit


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway's supervisor owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
