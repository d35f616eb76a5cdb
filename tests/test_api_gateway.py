"""The API inside the running gateway: an SOS over MQTT reaches the console live (SSE), scoped;
the console's acknowledgement reaches the band; a change made by another process is seen too;
``eldercare users`` manages the accounts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from simulators.services.mosquitto import LocalMosquitto
from tests.support import REPO, GatewayRunner, Publisher, query, wait_until
from tests.test_alerts_gateway import CommandListener
from tests.test_api_helpers import ELDERS, PASSWORD, RESPONDERS


class EventStream:
    """An SSE client in a thread: records (event, id, data) until the server ends the stream."""

    def __init__(self, base: str, token: str, last_event_id: int | None = None) -> None:
        self.events: list[tuple[str, int | None, Any]] = []
        self.lock = threading.Lock()
        self.status: int | None = None
        self.ended = threading.Event()
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self._thread = threading.Thread(target=self._run, args=(base, headers), daemon=True)
        self._thread.start()

    def _run(self, base: str, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=60)) as client,
                client.stream("GET", "/api/events", headers=headers) as response,
            ):
                self.status = response.status_code
                event, event_id, data = "message", None, ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("id: "):
                        event_id = int(line[4:])
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "" and data:
                        with self.lock:
                            self.events.append((event, event_id, json.loads(data)))
                        event, event_id, data = "message", None, ""
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def alerts(self) -> list[tuple[int | None, dict[str, Any]]]:
        with self.lock:
            return [(i, d) for e, i, d in self.events if e == "alert"]

    def count(self, event: str) -> int:
        with self.lock:
            return sum(1 for e, _, _ in self.events if e == event)


def _cli(gateway: GatewayRunner, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "-c", str(gateway.workdir / "config.yaml"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        input=stdin,
    )


def test_sos_reaches_the_console_live_and_the_console_ack_reaches_the_band(
    gateway: GatewayRunner, publisher: Publisher, broker: LocalMosquitto, database: str, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"elders": ELDERS, "responders": RESPONDERS}, allow_unicode=True))
    gw = gateway.start(registry={"file": str(registry)}, api={"events_ping_s": 1.0, "events_poll_s": 0.2})
    base = f"http://127.0.0.1:{gw.http_port}"
    for username, role, scope in (
        ("grid1", "grid_worker", ["--grid", "g1", "--community", "幸福社区"]),
        ("grid2", "grid_worker", ["--grid", "g2", "--community", "幸福社区"]),
        ("hotline", "hotline", []),
    ):
        added = _cli(
            gateway,
            "users",
            "add",
            username,
            "--role",
            role,
            *scope,
            "--display-name",
            {"grid1": "王芳"}.get(username, username),
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        assert added.returncode == 0, added.stderr
    assert _cli(gateway, "users", "add", "weak", "--role", "hotline", stdin="short\n").returncode == 1
    assert _cli(gateway, "users", "add", "nogrid", "--role", "grid_worker", stdin=PASSWORD + "\n").returncode == 1
    listed = _cli(gateway, "users", "list")
    assert "grid1" in listed.stdout and "g1" in listed.stdout and "3 user(s)" in listed.stdout
    with httpx.Client(base_url=base, timeout=10) as client:
        tokens = {}
        for username in ("grid1", "grid2", "hotline"):
            response = client.post("/api/login", json={"username": username, "password": PASSWORD})
            assert response.status_code == 200, response.text
            tokens[username] = response.json()["token"]
        client.cookies.clear()  # bearer tokens from here on
        grid1 = {"Authorization": f"Bearer {tokens['grid1']}"}
        assert client.get("/openapi.json").json()["openapi"] == "3.1.0"
        assert client.get("/api/events").status_code == 401
        mine, theirs = EventStream(base, tokens["grid1"]), EventStream(base, tokens["grid2"])
        band = CommandListener(broker.port)
        try:
            wait_until(lambda: mine.count("ping") and theirs.count("ping"), 10, "both streams open")
            publisher.publish(
                "eldercare/v1/pager/pg-1/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"})
            )
            first = wait_until(lambda: mine.alerts(), 20, "the SOS on the console")[0]
            first_id, summary = first
            assert summary["kind"] == "sos" and summary["elder_id"] == "e1" and summary["grid"] == "g1"
            alert_id = summary["alert_id"]
            response = client.post(f"/api/alerts/{alert_id}/ack", headers=grid1, json={"eta_min": 5})
            assert response.status_code == 200 and response.json()["acknowledged_by"] == "王芳"
            wait_until(lambda: "help_coming" in band.commands(), 20, "'help is coming' on the band")
            wait_until(lambda: any(d["state"] == "acknowledged" for _, d in mine.alerts()), 10, "ack on the stream")
            # another process (the CLI) closes it: the console hears it from the database
            code = summary["code"]
            done = _cli(gateway, "alerts", "resolve", code, "--by", "热线", "--outcome", "handled_at_home")
            assert done.returncode == 0, done.stderr
            wait_until(lambda: any(d["state"] == "resolved" for _, d in mine.alerts()), 10, "resolved on the stream")
            time.sleep(1.0)
            assert theirs.alerts() == []  # grid 2 never hears of grid 1's elder
            assert theirs.count("ping") >= 2
            # a reconnect with Last-Event-ID gets what changed since, then goes on live
            assert first_id is not None
            resumed = EventStream(base, tokens["grid1"], last_event_id=first_id - 1)
            got = wait_until(lambda: resumed.alerts(), 10, "the backlog after Last-Event-ID")
            assert got[-1][1]["alert_id"] == alert_id and got[-1][1]["state"] == "resolved"
            late = EventStream(base, tokens["grid2"], last_event_id=0)
            wait_until(lambda: late.count("ping"), 10, "grid 2's resumed stream")
            assert late.alerts() == []
            # a password change ends the user's sessions, open streams included
            assert (
                _cli(gateway, "users", "passwd", "grid2", "--password-stdin", stdin="another long one\n").returncode
                == 0
            )
            wait_until(lambda: theirs.ended.is_set() and theirs.count("logout"), 10, "grid 2's stream ended")
            assert client.get("/api/me", headers={"Authorization": f"Bearer {tokens['grid2']}"}).status_code == 401
        finally:
            band.close()
        trail = query(
            database,
            "SELECT event, actor, channel FROM alert_events WHERE alert_id = %s AND "
            "event IN ('acknowledged', 'resolved') ORDER BY id",
            (alert_id,),
        )
        assert trail == [("acknowledged", "王芳", "console"), ("resolved", "热线", "cli")]
        assert _cli(gateway, "users", "remove", "grid2").returncode == 0
        assert _cli(gateway, "users", "remove", "grid2").returncode == 1
    assert [a for (a,) in query(database, "SELECT action FROM audit_log WHERE action LIKE 'user.%%' ORDER BY id")] == [
        "user.add",
        "user.add",
        "user.add",
        "user.passwd",
        "user.remove",
    ]
    # the gateway stops although a console is still listening
    gateway.stop()
    assert mine.ended.wait(10) and resumed.ended.wait(10)


def test_two_communities_each_with_a_grid_called_wangge1_see_and_are_paged_only_for_their_own(
    gateway: GatewayRunner, publisher: Publisher, database: str, tmp_path: Path
) -> None:
    """A grid is (community, grid). An elder imported into 幸福社区's 网格1 is not 和平社区 网格1's to list,
    read (the contacts' phones), hear of live, write notes on, or be paged for."""
    registry = tmp_path / "registry.yaml"
    first = {
        "elders": [
            {
                "id": "eA",
                "name": "王秀英",
                "community": "和平社区",
                "grid": "网格1",
                "home": {"lat": 31.20, "lon": 121.40},
                "contacts": [{"name": "王强", "phone": "+8613800000011"}],
                "devices": [{"id": "pg-a", "type": "pager"}],
            }
        ],
        "responders": [  # 王芳 is from before grid workers named their community: the only one then
            {"id": "gwA", "name": "王芳", "role": "grid_worker", "phone": "+8613900000011", "grid": "网格1"},
            {
                "id": "gwB",
                "name": "赵刚",
                "role": "grid_worker",
                "phone": "+8613900000022",
                "grid": "网格1",
                "community": "幸福社区",
            },
            {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"},
        ],
    }
    registry.write_text(yaml.safe_dump(first, allow_unicode=True))
    gw = gateway.start(
        registry={"file": str(registry), "reload_s": 0.3}, api={"events_ping_s": 1.0, "events_poll_s": 0.2}
    )
    base = f"http://127.0.0.1:{gw.http_port}"
    for username, role, scope in (
        ("gridA", "grid_worker", ["--grid", "网格1"]),  # one community so far: it is that one's
        ("gridB", "grid_worker", ["--grid", "网格1", "--community", "幸福社区"]),
        ("admin", "admin", []),
    ):
        added = _cli(gateway, "users", "add", username, "--role", role, *scope, "--password-stdin", stdin=PASSWORD)
        assert added.returncode == 0, added.stderr
    # an account from before accounts carried a community
    query(
        database,
        "INSERT INTO users (username, password_hash, role, display_name, grid) "
        "SELECT 'legacy', password_hash, 'grid_worker', '老账号', '网格1' FROM users WHERE username = 'gridA' "
        "RETURNING 1",
    )
    assert query(database, "SELECT community FROM users WHERE username = 'gridA'") == [("和平社区",)]
    with httpx.Client(base_url=base, timeout=10) as client:

        def token(username: str) -> str:
            response = client.post("/api/login", json={"username": username, "password": PASSWORD})
            assert response.status_code == 200, response.text
            client.cookies.clear()
            return str(response.json()["token"])

        tokens = {u: token(u) for u in ("gridA", "gridB", "admin", "legacy")}
        auth = {u: {"Authorization": f"Bearer {t}"} for u, t in tokens.items()}
        assert client.get("/api/me", headers=auth["legacy"]).status_code == 200  # one community: unambiguous
        sheet = (
            "elder_id,name,community,grid,home_lat,home_lon,devices,contact1_name,contact1_phone\n"
            "eB,李建国,幸福社区,网格1,31.24,121.48,pager:pg-b,李娜,+8613800000022\n"
        ).encode()
        imported = client.post("/api/registry/import", headers=auth["admin"], files={"file": ("b.csv", sheet)})
        assert imported.status_code == 200, imported.text
        wait_until(lambda: gw.registry_reloads >= 1 and len(gw.registry.elders) == 2, 10, "the import reloaded")
        a_stream, b_stream = EventStream(base, tokens["gridA"]), EventStream(base, tokens["gridB"])
        wait_until(lambda: a_stream.count("ping") and b_stream.count("ping"), 10, "both streams open")
        publisher.publish(
            "eldercare/v1/pager/pg-b/event", json.dumps({"ts": time.time_ns() // 1_000_000, "event": "sos"})
        )
        alert_id = wait_until(lambda: b_stream.alerts(), 20, "the SOS on 幸福社区 网格1's console")[0][1]["alert_id"]
        pages = wait_until(
            lambda: query(
                database,
                "SELECT recipient_name, role FROM notifications WHERE alert_id = %s AND purpose = 'page'",
                (alert_id,),
            ),
            what="the pages",
        )
        assert {n for n, r in pages if r == "grid_worker"} == {"赵刚"}  # not 和平社区's 王芳
        assert (
            client.post(f"/api/alerts/{alert_id}/notes", headers=auth["gridB"], json={"text": "到了"}).status_code
            == 204
        )
        assert client.get("/api/elders/eB", headers=auth["gridB"]).json()["contacts"]
        # 和平社区 网格1: nothing of it, by any door
        a = auth["gridA"]
        assert client.get("/api/alerts?state=all", headers=a).json()["total"] == 0
        assert client.get("/api/alerts?state=all&grid=网格1&community=幸福社区", headers=a).json()["alerts"] == []
        assert client.get(f"/api/alerts/{alert_id}", headers=a).status_code == 404
        assert client.get("/api/elders/eB", headers=a).status_code == 404
        assert {e["elder_id"] for e in client.get("/api/elders", headers=a).json()["elders"]} == {"eA"}
        assert {e["elder_id"] for e in client.get("/api/map", headers=a).json()["elders"]} == {"eA"}
        assert client.get("/api/elders/eB/readings?metric=hr", headers=a).status_code == 404
        for action, body in (("notes", {"text": "x"}), ("ack", {}), ("on-scene", None)):
            assert client.post(f"/api/alerts/{alert_id}/{action}", headers=a, json=body).status_code == 404, action
        assert {r["id"] for r in client.get("/api/responders", headers=a).json()["responders"]} == {"gwA", "hotline"}
        time.sleep(1.0)
        assert a_stream.alerts() == []  # never heard of it live
        resumed = EventStream(base, tokens["gridA"], last_event_id=0)
        wait_until(lambda: resumed.count("ping"), 10, "和平社区's resumed stream")
        assert resumed.alerts() == []  # nor from the backlog
        # the account without a community is now ambiguous: refused, saying how to fix it
        refused = client.get("/api/me", headers=auth["legacy"])
        assert refused.status_code == 403 and refused.json()["error"] == "account_needs_community"
        assert "eldercare users community legacy" in refused.json()["detail"]
        assert (
            _cli(
                gateway, "users", "add", "gridC", "--role", "grid_worker", "--grid", "网格1", stdin=PASSWORD
            ).returncode
            == 1
        )
        assert _cli(gateway, "users", "community", "legacy", "和平社区").returncode == 0
        again = {"Authorization": f"Bearer {token('legacy')}"}
        assert client.get("/api/me", headers=again).json()["community"] == "和平社区"
        assert client.get("/api/alerts?state=all", headers=again).json()["total"] == 0
    assert query(database, "SELECT actor FROM alert_events WHERE event = 'note'") == [("gridB",)]
