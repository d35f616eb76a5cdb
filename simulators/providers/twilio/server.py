"""The fake Twilio server: its parts put together, started and stopped, alone or on a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol, TypeVar

from aiohttp import ClientSession, ClientTimeout, web

from simulators.providers.twilio.behaviour import Behaviour
from simulators.providers.twilio.people import PlaysPeople
from simulators.providers.twilio.progress import Progress
from simulators.providers.twilio.records import log
from simulators.providers.twilio.records_view import RecordsView
from simulators.providers.twilio.rest_api import RestApi


class FakeTwilio(RestApi, Progress, PlaysPeople, Behaviour, RecordsView):
    """Twilio's Messages and Calls API and its webhooks, on a loopback port."""

    def __repr__(self) -> str:  # no token, ever
        return f"FakeTwilio(account_sid={self.account_sid!r}, base_url={self._base_url!r})"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("the fake is already running")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._messages_api)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", self._calls_api)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._session = ClientSession(timeout=ClientTimeout(total=self.webhook_s))
        bound_host, bound_port = runner.addresses[0][:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._base_url = f"http://{shown_host}:{bound_port}"
        log.info("fake Twilio listening on %s", self._base_url)

    async def stop(self) -> None:
        if self._runner is None:
            return
        assert self._stopping is not None and self._session is not None
        self._stopping.set()  # held "timeout" requests answer now
        await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()
        self._runner = None
        self._base_url = ""
        log.info("fake Twilio stopped")

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: what ``client.api.base_url`` should be set to."""
        if not self._base_url:
            raise RuntimeError("the fake is not running")
        return self._base_url


class Serves(Protocol):
    async def start(self, host: str = ..., port: int = ...) -> None: ...
    async def stop(self) -> None: ...


F = TypeVar("F", bound=Serves)


@contextlib.contextmanager
def running_in_thread(fake: F, host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 10.0) -> Iterator[F]:
    """Run ``fake`` (this one, or the China fakes) on its own event loop in a daemon thread for the ``with`` block."""
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=serve, name="fake-twilio", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(host, port), loop).result(timeout_s)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout_s)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
