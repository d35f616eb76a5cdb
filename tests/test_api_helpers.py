"""Shared by the API tests: a seeded registry, users of every role, and the API on a real pool.

``ApiHarness`` serves the API routes with uvicorn on a private port, from an
``AsyncConnectionPool`` on the test's database, with an ``AlertEngine`` on the same
pool and a clock the test can move. Alerts are opened the real way: detection rows,
then ``process_detections``. (No tests here; the other test_api_* modules import it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from gateway.alerting.engine import AlertEngine
from gateway.alerting.policy import EscalationConfig
from gateway.api.auth import hash_password
from gateway.api.routes import api_context, build_routes
from gateway.api.settings import ApiConfig
from gateway.domain.registry import registry_from_dicts
from gateway.domain.registry_db import import_registry, load_registry_from_db
from gateway.storage.schema import upgrade

PASSWORD = "correct horse battery"
JSON = {"Content-Type": "application/json"}
HOME1 = {"lat": 31.2304, "lon": 121.4737}
SQUARE = [[121.4730, 31.2300], [121.4745, 31.2300], [121.4745, 31.2310], [121.4730, 31.2310], [121.4730, 31.2300]]

ELDERS: list[dict[str, Any]] = [
    {
        "id": "e1",
        "name": "王秀英",
        "community": "幸福社区",
        "grid": "g1",
        "home": HOME1,
        "conditions": ["dementia"],
        "thresholds": {"hr_warning_high": 120},
        "contacts": [{"name": "王强", "phone": "+8613800000001", "relation": "son"}],
        "devices": [{"id": "wb-1", "type": "wristband"}, {"id": "pg-1", "type": "pager"}],
        "fences": [{"id": "home", "circle": {**HOME1, "radius_m": 150}}],
    },
    {
        "id": "e2",
        "name": "李建国",
        "community": "幸福社区",
        "grid": "g2",
        "home": {"lat": 31.24, "lon": 121.48},
        "devices": [{"id": "wb-2", "type": "wristband"}],
    },
    {
        "id": "e3",
        "name": "张桂兰",
        "community": "和平社区",
        "grid": "g3",
        "home": {"lat": 31.20, "lon": 121.40},
        "devices": [{"id": "wb-3", "type": "wristband"}],
    },
]
RESPONDERS: list[dict[str, Any]] = [
    {
        "id": "grid1",
        "name": "王芳",
        "role": "grid_worker",
        "phone": "+8613900000001",
        "grid": "g1",
        "community": "幸福社区",
    },
    {
        "id": "grid3",
        "name": "赵磊",
        "role": "grid_worker",
        "phone": "+8613900000003",
        "grid": "g3",
        "community": "和平社区",
    },
    {"id": "station", "name": "幸福驿站", "role": "post_station", "phone": "+8613900000009", "community": "幸福社区"},
    {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"},
]
OVERRIDES: list[dict[str, Any]] = [
    {"responder": "grid1", "start": "2026-01-01T08:00:00+08:00", "end": "2026-01-02T08:00:00+08:00", "on_duty": False},
    {"responder": "grid3", "start": "2026-01-01T08:00:00+08:00", "end": "2026-01-02T08:00:00+08:00"},
]
# username -> (role, display name, community, grid, elder)
USERS: dict[str, tuple[str, str, str | None, str | None, str | None]] = {
    "hotline": ("hotline", "热线值班员", None, None, None),
    "station": ("post_station", "幸福驿站值班", "幸福社区", None, None),
    "grid1": ("grid_worker", "王芳", "幸福社区", "g1", None),
    "grid2": ("grid_worker", "刘洋", "幸福社区", "g2", None),
    "grid3": ("grid_worker", "赵磊", "和平社区", "g3", None),
    "family1": ("family", "王强", None, None, "e1"),
    "admin": ("admin", "管理员", None, None, None),
}
_HASH: dict[str, str] = {}


def seed_registry(dsn: str) -> None:
    upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        import_registry(conn, registry_from_dicts(ELDERS, RESPONDERS, OVERRIDES))


def add_users(dsn: str, users: dict[str, tuple[str, str, str | None, str | None, str | None]] = USERS) -> None:
    if PASSWORD not in _HASH:
        _HASH[PASSWORD] = hash_password(PASSWORD)  # scrypt is slow on purpose: hash once per run
    with psycopg.connect(dsn) as conn:
        for username, (role, display, community, grid, elder) in users.items():
            conn.execute(
                "INSERT INTO users (username, password_hash, role, display_name, community, grid, "
                "elder_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (username, _HASH[PASSWORD], role, display, community, grid, elder),
            )


class ApiHarness:
    """The API on a pool, served by uvicorn in a thread; ``now_ms`` is the test's clock to move."""

    def __init__(self, dsn: str, settings: ApiConfig | None = None) -> None:
        self.dsn = dsn
        self.now_ms = time.time_ns() // 1_000_000
        self.settings = settings or ApiConfig(cookie_secure=False)  # plain http on loopback
        self.engine: AlertEngine | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: uvicorn.Server | None = None
        with psycopg.connect(dsn) as conn:
            self.registry = load_registry_from_db(conn)

    def clock_ms(self) -> int:
        return self.now_ms

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            async with AsyncConnectionPool(self.dsn, min_size=1, max_size=4) as pool:
                self.engine = AlertEngine(pool, EscalationConfig(), self.registry, self.clock_ms)
                ctx = api_context(
                    pool,
                    self.engine,
                    self.settings,
                    self.clock_ms,
                    self.dsn,
                    stopping=lambda: self.server is not None and self.server.should_exit,
                )
                app = Starlette(routes=build_routes(ctx))
                self.server = uvicorn.Server(
                    uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=False)  # as the gateway
                )
                self.loop = asyncio.get_running_loop()
                ready.set()
                await self.server.serve(sockets=[sock])

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as error:
                errors.append(error)
                ready.set()

        thread = threading.Thread(target=run, name="api-harness", daemon=True)
        thread.start()
        assert ready.wait(30) and not errors, errors
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield client
        finally:
            assert self.server is not None
            self.server.should_exit = True
            thread.join(30)
            sock.close()
        if errors:
            raise errors[0]

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (where the pool lives) and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def open_alert(
        self,
        elder_id: str | None,
        device_id: str,
        kind: str = "sos",
        severity: str = "critical",
        evidence: dict[str, Any] | None = None,
    ) -> int:
        """A detection row, applied by the engine: the alert it opened (or updated)."""
        ts = self.now_ms / 1000
        with psycopg.connect(self.dsn) as conn:
            conn.execute(
                "INSERT INTO detections (elder_id, device_id, kind, severity, ts, evidence) "
                "VALUES (%s, %s, %s, %s, to_timestamp(%s), %s)",
                (elder_id, device_id, kind, severity, ts, Jsonb(evidence or {})),
            )
        assert self.engine is not None
        self.run(self.engine.process_detections())
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT alert_id FROM detections WHERE device_id = %s ORDER BY id DESC LIMIT 1", (device_id,)
            ).fetchone()
        assert row is not None and row[0] is not None
        return int(row[0])


def login(client: Any, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Bearer headers for ``username``."""
    response = client.post("/api/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def rows(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
