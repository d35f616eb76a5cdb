"""Attacks on the console API, each made for real against a running server (issue 14).

Parallel login bursts (httpx.AsyncClient, asyncio.gather), forged same-site requests,
NUL characters, a spoofed X-Forwarded-For, locking out the operator, the live stream
after logout, the cookie's Secure flag, weak passwords, and the audit of reads.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.api.auth import check_password_strength
from gateway.api.settings import ApiConfig
from tests.support import GatewayRunner
from tests.test_api_helpers import (
    ELDERS,
    JSON,
    PASSWORD,
    RESPONDERS,
    ApiHarness,
    add_users,
    login,
    rows,
    seed_registry,
)


def _burst(base: str, bodies: list[dict[str, str]], headers: list[dict[str, str]] | None = None) -> list[int]:
    """All the logins at once, each on its own connection; their statuses in order."""

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/api/login", json=body, headers=(headers[i] if headers else None))
                    for i, body in enumerate(bodies)
                )
            )
        return [a.status_code for a in answers]

    return asyncio.run(run())


def _harness(database: str, **settings: Any) -> ApiHarness:
    seed_registry(database)
    add_users(database)
    return ApiHarness(database, ApiConfig(cookie_secure=False, **settings))


# -- 1. the throttle counts parallel attempts ----------------------------------------------


def test_a_parallel_burst_of_wrong_passwords_gets_429_past_the_limit(database: str) -> None:
    harness = _harness(database, login_max_failures=5, login_max_failures_ip=10_000)
    with harness.client() as client:
        base = str(client.base_url)
        statuses = _burst(base, [{"username": "hotline", "password": f"guess number {i}"} for i in range(200)])
        assert statuses.count(401) <= 5 and statuses.count(401) + statuses.count(429) == 200, statuses
        assert statuses.count(429) >= 195
        # the right password after the burst, from the same address: still refused
        assert client.post("/api/login", json={"username": "hotline", "password": PASSWORD}).status_code == 429
        # the right password 55th of 60 at once: at most 5 of the 60 reach the password check
        harness.now_ms += 901 * 1000
        guesses = [{"username": "grid1", "password": f"guess number {i}"} for i in range(60)]
        guesses[54] = {"username": "grid1", "password": PASSWORD}
        statuses = _burst(base, guesses)
        assert sum(s != 429 for s in statuses) <= 5, statuses
        assert set(statuses) <= {200, 401, 429}
    checked = rows(database, "SELECT count(*) FROM audit_log WHERE action IN ('login', 'login_failed')")
    assert checked[0][0] <= 10


# -- 2. forged requests from another port of the same host ----------------------------------


def test_same_site_pages_cannot_take_alerts_or_add_notes_with_the_cookie(database: str) -> None:
    harness = _harness(database)
    with harness.client() as client:
        alert = harness.open_alert("e1", "pg-1")
        me = client.post("/api/login", json={"username": "hotline", "password": PASSWORD})
        assert me.status_code == 200 and client.cookies.get("eldercare_session")
        evil = {"Origin": "http://127.0.0.1:8081", "Sec-Fetch-Site": "same-site"}
        # <form action=".../ack" method="POST" enctype="text/plain"> with no fields, auto-submitted
        form = client.post(f"/api/alerts/{alert}/ack", content=b"", headers={**evil, "Content-Type": "text/plain"})
        assert form.status_code == 403 and form.json()["error"] == "cross_origin"
        # fetch(..., {mode: "no-cors", body: '{"text": ...}'}) adds a note
        note = client.post(
            f"/api/alerts/{alert}/notes",
            content=json.dumps({"text": "forged"}).encode(),
            headers={**evil, "Content-Type": "text/plain;charset=UTF-8"},
        )
        assert note.status_code == 403
        # an old browser without Origin or Sec-Fetch-*: the form still cannot be JSON or add the header
        plain = client.post(f"/api/alerts/{alert}/ack", content=b"", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 403 and plain.json()["error"] == "csrf_header_missing"
        bodyless = client.post(f"/api/alerts/{alert}/on-scene")
        assert bodyless.status_code == 403
        # multipart to the import, from another origin
        upload = client.post(
            "/api/registry/import", headers=evil, files={"file": ("e.csv", b"elder_id,name\ne9,x\n", "text/csv")}
        )
        assert upload.status_code == 403
        assert rows(database, "SELECT state FROM alerts WHERE alert_id = %s", (alert,)) == [("notifying",)]
        assert rows(database, "SELECT count(*) FROM alert_events WHERE event = 'note'") == [(0,)]
        # a JSON content type without a JSON body is no ack either
        bearer = login(client, "hotline")
        client.cookies.clear()
        empty = client.post(f"/api/alerts/{alert}/ack", headers={**bearer, **JSON}, content=b"")
        assert empty.status_code == 400 and empty.json()["error"] == "bad_json"
        # the console itself: cookie + its header + JSON + its own origin
        client.post("/api/login", json={"username": "hotline", "password": PASSWORD})
        own = {"Origin": str(client.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin", "X-Requested-With": "x"}
        taken = client.post(f"/api/alerts/{alert}/ack", json={}, headers=own)
        assert taken.status_code == 200 and taken.json()["state"] == "acknowledged"


# -- 7. NUL characters ----------------------------------------------------------------------


def test_nul_characters_get_a_clear_4xx_never_a_500(database: str) -> None:
    harness = _harness(database)
    with harness.client() as client:
        alert = harness.open_alert("e1", "pg-1")
        assert client.get("/api/elders/e1%00").status_code in (401, 404)  # before login
        nul_login = client.post("/api/login", json={"username": "hotline\u0000", "password": PASSWORD})
        assert nul_login.status_code == 400 and nul_login.json()["error"] == "bad_json"
        headers = login(client, "hotline")
        for path in ("/api/elders/e1%00", "/api/elders/e1%00/readings?metric=hr", "/api/elders/e1%00/fences"):
            response = client.get(path, headers=headers)
            assert response.status_code == 404 and response.json()["error"] == "not_found", path
        fence = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [121.47, 31.23]},
            "properties": {"radius_m": 100, "name": "park\u0000"},
        }
        for method, path, body in (
            ("POST", f"/api/alerts/{alert}/notes", {"text": "a\u0000b"}),
            ("POST", f"/api/alerts/{alert}/ack", {"note": "\u0000"}),
            ("POST", f"/api/alerts/{alert}/resolve", {"outcome": "other", "note": "x\u0000"}),
            ("PUT", "/api/elders/e1/fences/park", fence),
            ("PUT", "/api/elders/e1%00/fences/park", {**fence, "properties": {"radius_m": 100}}),
        ):
            response = client.request(method, path, headers=headers, json=body)
            assert response.status_code in (400, 404), (path, response.status_code, response.text)
            assert response.json()["error"] in ("bad_json", "not_found")
        assert rows(database, "SELECT state FROM alerts WHERE alert_id = %s", (alert,)) == [("notifying",)]


# -- 8. X-Forwarded-For is believed only from a configured proxy ----------------------------


def test_the_gateway_ignores_x_forwarded_for_by_default(gateway: GatewayRunner, database: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"elders": ELDERS, "responders": RESPONDERS}, allow_unicode=True))
    gw = gateway.start(registry={"file": str(registry)})
    add_users(database)
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=30) as client:
        statuses = [
            client.post(
                "/api/login",
                json={"username": "grid1", "password": "not the password"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            ).status_code
            for i in range(8)
        ]
    assert statuses == [401] * 5 + [429] * 3, statuses
    clients = {c for (c,) in rows(database, "SELECT detail->>'client' FROM audit_log WHERE action = 'login_failed'")}
    assert clients == {"127.0.0.1"}


# -- 9. a stranger cannot lock out the operator ---------------------------------------------


def test_wrong_passwords_lock_out_their_source_not_the_operator(database: str) -> None:
    harness = _harness(database, trusted_proxies=("127.0.0.1",), login_max_failures=5)
    attacker, operator = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "10.1.2.3, 198.51.100.7"}
    with harness.client() as client:
        for _ in range(5):
            wrong = client.post("/api/login", json={"username": "hotline", "password": "guess guess"}, headers=attacker)
            assert wrong.status_code == 401
        blocked = client.post("/api/login", json={"username": "hotline", "password": PASSWORD}, headers=attacker)
        assert blocked.status_code == 429
        ok = client.post("/api/login", json={"username": "hotline", "password": PASSWORD}, headers=operator)
        assert ok.status_code == 200, ok.text
    logged = rows(
        database,
        "SELECT action, detail->>'client' FROM audit_log WHERE action IN ('login', 'login_failed') ORDER BY id",
    )
    assert logged == [("login_failed", "203.0.113.9")] * 5 + [("login", "198.51.100.7")]


# -- 10. the live stream ends with the session -----------------------------------------------


class _Stream:
    """An SSE reader in a thread: (event, data) pairs until the server ends the stream."""

    def __init__(self, base: str, token: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base, token), daemon=True)
        self._thread.start()

    def _run(self, base: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with (
                httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=60)) as client,
                client.stream("GET", "/api/events", headers=headers) as response,
            ):
                event, data = "message", ""
                for line in response.iter_lines():
                    if line.startswith("retry:"):
                        self.opened.set()
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "" and data:
                        self.events.append((event, json.loads(data)))
                        event, data = "message", ""
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def kinds(self) -> list[str]:
        return [e for e, _ in self.events]


def test_the_event_stream_stops_sending_when_the_session_ends(database: str) -> None:
    harness = _harness(database, events_poll_s=0.1, events_ping_s=15.0)
    with harness.client() as client:
        base = str(client.base_url)
        token = client.post("/api/login", json={"username": "hotline", "password": PASSWORD}).json()["token"]
        other = client.post("/api/login", json={"username": "grid1", "password": PASSWORD}).json()["token"]
        client.cookies.clear()
        here, elsewhere = _Stream(base, token), _Stream(base, other)
        assert here.opened.wait(10) and elsewhere.opened.wait(10)
        time.sleep(1.2)  # past one session check, so the next frame checks again
        assert client.post("/api/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
        # grid1's session is ended by another instance (or an admin): only the database knows
        rows(database, "DELETE FROM sessions WHERE username = 'grid1' RETURNING 1")
        started = time.monotonic()
        harness.open_alert("e1", "pg-1")
        assert here.ended.wait(5) and elsewhere.ended.wait(5)
        took = time.monotonic() - started
    assert here.kinds() == ["logout"] and elsewhere.kinds() == ["logout"], (here.events, elsewhere.events)
    assert took < 3, took


# -- 11. the cookie is Secure by default; weak passwords are refused --------------------------


def test_the_session_cookie_is_secure_unless_turned_off(database: str) -> None:
    assert ApiConfig().cookie_secure is True
    seed_registry(database)
    add_users(database)
    with ApiHarness(database, ApiConfig()).client() as client:
        cookie = client.post("/api/login", json={"username": "hotline", "password": PASSWORD}).headers["set-cookie"]
    assert "; Secure" in cookie or "; secure" in cookie.lower(), cookie
    with ApiHarness(database, ApiConfig(cookie_secure=False)).client() as client:
        cookie = client.post("/api/login", json={"username": "hotline", "password": PASSWORD}).headers["set-cookie"]
    assert "secure" not in cookie.lower()


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaa",
        "abababababab",
        "password123",
        "P@ssw0rd2024!",
        "Password2025",
        "qwertyuiop",
        "1qaz2wsx3edc",
        "abcdefghijk",
        "9876543210",
        "13800138000",
        "woaini1314520",
        "iloveyou2025",
        "hotline-desk-1",
    ],
)
def test_common_and_patterned_passwords_are_refused(password: str) -> None:
    assert check_password_strength(password, "hotline") is not None


@pytest.mark.parametrize("password", ["correct horse battery", "雨后的梧桐街道很安静", "tram 7 leaves at dusk"])
def test_a_phrase_of_ones_own_passes(password: str) -> None:
    assert check_password_strength(password, "hotline") is None


def test_the_common_password_list_ships_in_the_package() -> None:
    from importlib import resources

    text = resources.files("gateway.api").joinpath("common_passwords.txt").read_text("utf-8")
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entries) > 2000 and "password" in entries and "woaini1314" in entries


# -- audit of reads ---------------------------------------------------------------------------


def test_every_read_of_an_elders_record_is_audited_and_an_admin_can_query_it(database: str) -> None:
    harness = _harness(database)
    with harness.client() as client:
        alert = harness.open_alert("e1", "pg-1")
        grid1 = login(client, "grid1")
        client.cookies.clear()
        assert client.get("/api/elders/e1", headers=grid1).status_code == 200
        assert client.get("/api/elders/e1/readings?metric=hr&range=7d", headers=grid1).status_code == 200
        assert client.get("/api/elders/e1/fences", headers=grid1).status_code == 200
        assert client.get(f"/api/alerts/{alert}", headers=grid1).status_code == 200
        assert client.get("/api/elders", headers=grid1).status_code == 200
        assert client.get("/api/map", headers=grid1).status_code == 200
        assert client.get("/api/elders/e3", headers=grid1).status_code == 404  # out of scope: nothing shown
        assert client.get("/api/audit", headers=grid1).status_code == 403
        admin = login(client, "admin")
        client.cookies.clear()
        reads = client.get("/api/audit?actor=grid1&action=read.", headers=admin).json()
        actions = [(e["action"], e["target"]) for e in reads["entries"]]
        assert actions == [
            ("read.map", None),
            ("read.elders", None),
            ("read.alert", "e1"),
            ("read.fences", "e1"),
            ("read.readings", "e1"),
            ("read.elder", "e1"),
        ]
        first = reads["entries"][-1]
        assert first["actor"] == "grid1" and first["detail"]["client"] == "127.0.0.1" and first["at"]
        assert reads["entries"][0]["detail"]["elder_ids"] == ["e1"]
        # by elder, and paged
        page = client.get("/api/audit?target=e1&limit=2", headers=admin).json()
        assert len(page["entries"]) == 2 and page["next_before_id"] is not None
        rest = client.get(f"/api/audit?target=e1&before_id={page['next_before_id']}", headers=admin).json()
        assert [e["action"] for e in page["entries"] + rest["entries"]] == [
            "read.alert",
            "read.fences",
            "read.readings",
            "read.elder",
        ]
        later = client.get("/api/audit", params={"since": first["at"], "action": "read.elder"}, headers=admin).json()
        assert [e["target"] for e in later["entries"]] == ["e1"]
        assert client.get("/api/audit?since=yesterday", headers=admin).status_code == 422
