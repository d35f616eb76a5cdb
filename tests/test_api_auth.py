"""Sessions: login, bearer and cookie, expiry, logout, throttling; the OpenAPI document."""

from __future__ import annotations

from gateway.api.auth import hash_password, verify_password
from gateway.api.settings import ApiConfig
from tests.test_api_helpers import JSON, PASSWORD, ApiHarness, add_users, login, rows, seed_registry


def test_passwords_are_scrypt_hashes_that_verify_only_the_right_password() -> None:
    stored = hash_password("a long passphrase", n=2**10)
    assert stored.startswith("scrypt$1024$8$1$") and "a long passphrase" not in stored
    assert verify_password("a long passphrase", stored)
    assert not verify_password("a long passphrase!", stored)
    assert not verify_password("x", "md5$abc")
    assert hash_password("same", n=2**10) != hash_password("same", n=2**10)  # salted


def test_login_me_logout_and_unauthenticated_calls(database: str) -> None:
    seed_registry(database)
    add_users(database)
    harness = ApiHarness(database)
    with harness.client() as client:
        assert client.get("/api/me").status_code == 401
        assert client.get("/api/alerts").json()["error"] == "not_logged_in"
        assert client.get("/api/me", headers={"Authorization": "Bearer nonsense"}).status_code == 401
        response = client.post("/api/login", json={"username": "grid1", "password": PASSWORD})
        assert response.status_code == 200
        body = response.json()
        assert body["user"] == {
            "username": "grid1",
            "role": "grid_worker",
            "display_name": "王芳",
            "language": "zh",
            "community": "幸福社区",
            "grid": "g1",
            "elder_id": None,
        }
        cookie = response.headers["set-cookie"]
        assert "eldercare_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        # the cookie alone authenticates (the TestClient keeps it)
        assert client.get("/api/me").json()["username"] == "grid1"
        bearer = {"Authorization": f"Bearer {body['token']}"}
        assert client.get("/api/me", headers=bearer).status_code == 200
        # only a hash of the token is stored
        assert rows(database, "SELECT count(*) FROM sessions WHERE token_hash = %s", (body["token"].encode(),)) == [
            (0,)
        ]
        assert client.post("/api/logout", headers=bearer).status_code == 204
        client.cookies.clear()
        assert client.get("/api/me", headers=bearer).status_code == 401
        bad = client.post("/api/login", json={"username": "grid1", "password": "wrong password"})
        assert bad.status_code == 401 and bad.json()["error"] == "bad_credentials"
        unknown = client.post("/api/login", json={"username": "nobody", "password": "wrong password"})
        assert unknown.status_code == 401 and unknown.json()["detail"] == bad.json()["detail"]
        assert client.post("/api/login", json={"username": "grid1"}).status_code == 422
        assert client.post("/api/login", content=b"{not json", headers=JSON).status_code == 400
        assert client.post("/api/login", content=b"{not json").status_code == 415  # a form could send that
    actions = [a for (a,) in rows(database, "SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["login", "logout", "login_failed", "login_failed"]


def test_a_session_expires(database: str) -> None:
    seed_registry(database)
    add_users(database)
    harness = ApiHarness(database, ApiConfig(session_ttl_h=12))
    with harness.client() as client:
        headers = login(client, "hotline")
        client.cookies.clear()
        harness.now_ms += 11 * 3600 * 1000
        assert client.get("/api/me", headers=headers).status_code == 200
        harness.now_ms += 2 * 3600 * 1000
        expired = client.get("/api/alerts", headers=headers)
        assert expired.status_code == 401 and expired.json()["error"] == "session_expired"


def test_logins_are_throttled_per_username(database: str) -> None:
    seed_registry(database)
    add_users(database)
    harness = ApiHarness(database, ApiConfig(login_max_failures=3, login_window_s=600))
    with harness.client() as client:
        for _ in range(3):
            assert client.post("/api/login", json={"username": "grid1", "password": "guess guess"}).status_code == 401
        blocked = client.post("/api/login", json={"username": "grid1", "password": PASSWORD})
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "600"
        assert client.post("/api/login", json={"username": "grid2", "password": PASSWORD}).status_code == 200
        harness.now_ms += 601 * 1000  # the window has passed
        assert client.post("/api/login", json={"username": "grid1", "password": PASSWORD}).status_code == 200


def test_openapi_document_covers_every_endpoint(database: str) -> None:
    seed_registry(database)
    harness = ApiHarness(database)
    with harness.client() as client:
        doc = client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session"}
    ops = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert ("/api/alerts/{alert_id}/ack", "post") in ops and ("/api/elders/{elder_id}/fences/{fence_id}", "put") in ops
    assert len(ops) == 22
    for path, method in ops:
        op = doc["paths"][path][method]
        if path != "/api/login":
            assert "401" in op["responses"], (path, method)
        for status, response in op["responses"].items():
            if status not in ("204",) and not path.endswith("/events"):
                assert "content" in response, (path, method, status)
    ack = doc["paths"]["/api/alerts/{alert_id}/ack"]["post"]
    assert ack["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AckBody"}
    assert {"200", "401", "404", "409", "422"} <= set(ack["responses"])
    assert doc["paths"]["/api/login"]["post"]["security"] == []
    assert "AlertSummary" in doc["components"]["schemas"] and "ImportErrors" in doc["components"]["schemas"]
