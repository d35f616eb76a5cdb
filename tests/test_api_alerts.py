"""Alerts through the API: list, detail, ack/on-scene/resolve/notes through the engine, and scope per role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.test_api_helpers import ApiHarness, add_users, login, rows, seed_registry


@pytest.fixture
def harness(database: str) -> ApiHarness:
    seed_registry(database)
    add_users(database)
    return ApiHarness(database)


def test_list_detail_and_the_whole_response_through_the_engine(harness: ApiHarness, database: str) -> None:
    with harness.client() as client:
        sos = harness.open_alert("e1", "pg-1", "sos", "critical")
        fence = harness.open_alert(
            "e1",
            "wb-1",
            "geofence_exit",
            "warning",
            {"fence": "home", "lat": 31.2330, "lon": 121.4790, "accuracy_m": 8.0},
        )
        other = harness.open_alert("e3", "wb-3", "sos", "critical")
        now = datetime.fromtimestamp(harness.now_ms / 1000, UTC)
        with __import__("psycopg").connect(database) as conn:
            for minutes in (40, 20, 5):  # 40 min before the alert is outside the trail's window
                conn.execute(
                    "INSERT INTO telemetry_wristband (time, device_id, lat, lon, gps_acc_m, hr) "
                    "VALUES (%s, 'wb-1', 31.2331, 121.4791, 6, 80)",
                    (now - timedelta(minutes=minutes),),
                )
        grid1 = login(client, "grid1")
        listed = client.get("/api/alerts", headers=grid1).json()
        assert [a["alert_id"] for a in listed["alerts"]] == [sos, fence]  # critical first; e3 is not g1's
        assert listed["total"] == 2 and listed["next_before_id"] is None
        first = listed["alerts"][0]
        assert first["code"] == f"A{sos}" and first["elder_name"] == "王秀英" and first["grid"] == "g1"
        assert first["community"] == "幸福社区" and first["state"] == "notifying"
        assert first["position"] == {"lat": 31.2304, "lon": 121.4737}  # the home: an SOS has no fix
        assert listed["alerts"][1]["position"] == {"lat": 31.2330, "lon": 121.4790}  # where the band was
        assert first["opened_at"].endswith("Z") or first["opened_at"].endswith("+00:00")

        detail = client.get(f"/api/alerts/{sos}", headers=grid1).json()
        assert detail["timeline"][0]["event"] == "opened"
        assert detail["notifications"] and all("phone" not in n for n in detail["notifications"])
        assert {n["role"] for n in detail["notifications"]} >= {"family", "grid_worker"}
        assert [d["kind"] for d in detail["detections"]] == ["sos"]
        assert len(detail["trail"]) == 2 and detail["trail"][0]["gps_acc_m"] == 6

        taken = client.post(f"/api/alerts/{sos}/ack", headers=grid1, json={"eta_min": 8, "note": "on my way"})
        assert taken.status_code == 200, taken.text
        assert taken.json()["state"] == "acknowledged" and taken.json()["acknowledged_by"] == "王芳"
        again = client.post(f"/api/alerts/{sos}/ack", headers=grid1, json={})  # the same person again: no change
        assert again.status_code == 200
        hotline = login(client, "hotline")
        clash = client.post(f"/api/alerts/{sos}/ack", headers=hotline, json={})
        assert clash.status_code == 409 and clash.json()["error"] == "already_taken"
        assert client.post(f"/api/alerts/{sos}/notes", headers=grid1, json={"text": "家门已开"}).status_code == 204
        assert client.post(f"/api/alerts/{sos}/notes", headers=grid1, json={"text": "  "}).status_code == 422
        assert client.post(f"/api/alerts/{sos}/on-scene", headers=grid1).json()["state"] == "on_scene"
        bad = client.post(f"/api/alerts/{sos}/resolve", headers=grid1, json={"outcome": "fixed"})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_body"
        done = client.post(
            f"/api/alerts/{sos}/resolve", headers=grid1, json={"outcome": "handled_at_home", "note": "血压正常"}
        )
        assert done.status_code == 200 and done.json()["outcome"] == "handled_at_home"
        assert client.post(f"/api/alerts/{sos}/resolve", headers=grid1, json={"outcome": "other"}).status_code == 409
        assert client.post(f"/api/alerts/{sos}/on-scene", headers=grid1).status_code == 409

        assert [a["alert_id"] for a in client.get("/api/alerts", headers=grid1).json()["alerts"]] == [fence]
        resolved = client.get("/api/alerts?state=resolved", headers=grid1).json()["alerts"]
        assert [a["alert_id"] for a in resolved] == [sos]
        assert client.get("/api/alerts?state=all", headers=hotline).json()["total"] == 3
        assert client.get("/api/alerts?severity=warning", headers=hotline).json()["alerts"][0]["alert_id"] == fence
        assert client.get("/api/alerts?elder_id=e3&kind=sos", headers=hotline).json()["alerts"][0]["alert_id"] == other
        assert client.get("/api/alerts?state=bogus", headers=hotline).status_code == 422
        assert client.get("/api/alerts?limit=0", headers=hotline).status_code == 422
        assert client.get("/api/alerts?colour=red", headers=hotline).status_code == 400
        assert client.get("/api/alerts/999999", headers=hotline).status_code == 404
    trail = rows(
        database,
        "SELECT event, actor, channel, detail->>'note', detail->>'text' FROM alert_events "
        "WHERE alert_id = %s AND channel = 'console' ORDER BY id",
        (sos,),
    )
    assert [(e, a, c) for e, a, c, _, _ in trail] == [
        ("acknowledged", "王芳", "console"),
        ("ack_after_taken", "热线值班员", "console"),
        ("note", "王芳", "console"),
        ("on_scene", "王芳", "console"),
        ("resolved", "王芳", "console"),
    ]
    assert trail[0][3] == "on my way" and trail[2][4] == "家门已开" and trail[4][3] == "血压正常"
    # the others paged hear who took it, as with an SMS reply
    assert (
        rows(database, "SELECT count(*) FROM notifications WHERE alert_id = %s AND purpose = 'taken'", (sos,))[0][0]
        >= 1
    )


def test_every_role_sees_and_acts_only_in_its_scope(harness: ApiHarness) -> None:
    with harness.client() as client:
        a1 = harness.open_alert("e1", "pg-1")
        a2 = harness.open_alert("e2", "wb-2", "hr_critical_high", "critical")
        a3 = harness.open_alert("e3", "wb-3")
        unbound = harness.open_alert(None, "wb-9", "low_battery", "warning")
        visible = {
            "hotline": {a1, a2, a3, unbound},
            "admin": {a1, a2, a3, unbound},
            "station": {a1, a2},
            "grid1": {a1},
            "grid2": {a2},
            "grid3": {a3},
            "family1": {a1},
        }
        elders = {
            "hotline": {"e1", "e2", "e3"},
            "admin": {"e1", "e2", "e3"},
            "station": {"e1", "e2"},
            "grid1": {"e1"},
            "grid2": {"e2"},
            "grid3": {"e3"},
            "family1": {"e1"},
        }
        for user, expected in visible.items():
            headers = login(client, user)
            listed = {a["alert_id"] for a in client.get("/api/alerts?state=all", headers=headers).json()["alerts"]}
            assert listed == expected, user
            # filters cannot widen the scope
            assert (
                client.get("/api/alerts?grid=g3&state=all", headers=headers).json()["alerts"] == [] or a3 in expected
            ), user
            got = {e["elder_id"] for e in client.get("/api/elders", headers=headers).json()["elders"]}
            assert got == elders[user], user
            for alert in (a1, a2, a3, unbound):
                status = client.get(f"/api/alerts/{alert}", headers=headers).status_code
                assert status == (200 if alert in expected else 404), (user, alert)
            for elder in ("e1", "e2", "e3"):
                code = 200 if elder in elders[user] else 404
                assert client.get(f"/api/elders/{elder}", headers=headers).status_code == code, (user, elder)
                assert client.get(f"/api/elders/{elder}/readings?metric=hr", headers=headers).status_code == code, (
                    user,
                    elder,
                )
                assert client.get(f"/api/elders/{elder}/fences", headers=headers).status_code == code
            devices = {d["elder_id"] for d in client.get("/api/devices", headers=headers).json()["devices"]}
            assert devices == elders[user], user
            mapped = {e["elder_id"] for e in client.get("/api/map", headers=headers).json()["elders"]}
            assert mapped == elders[user], user
        # acting on another grid's alert: 404, nothing written
        grid2 = login(client, "grid2")
        for action, body in (
            ("ack", {}),
            ("resolve", {"outcome": "other"}),
            ("notes", {"text": "x"}),
            ("on-scene", None),
        ):
            response = client.post(f"/api/alerts/{a1}/{action}", headers=grid2, json=body)
            assert response.status_code == 404 and response.json()["error"] == "not_found", action
        square = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [121.47, 31.23]},
            "properties": {"radius_m": 100},
        }
        assert client.put("/api/elders/e1/fences/park", headers=grid2, json=square).status_code == 404
        assert client.delete("/api/elders/e1/fences/home", headers=grid2).status_code == 404
        family = login(client, "family1")
        assert client.put("/api/elders/e1/fences/park", headers=family, json=square).status_code == 403
        assert client.get("/api/responders", headers=family).status_code == 403
        assert client.post(f"/api/alerts/{a1}/ack", headers=family, json={}).status_code == 200  # family may take it
        assert (
            client.post(
                "/api/registry/import", headers=login(client, "hotline"), files={"file": ("x.csv", b"elder_id,name\n")}
            ).status_code
            == 403
        )
    assert rows(harness.dsn, "SELECT count(*) FROM alert_events WHERE actor = '刘洋'") == [(0,)]


def test_responders_and_rosters_follow_the_area_and_hide_numbers(harness: ApiHarness) -> None:
    with harness.client() as client:
        hotline = client.get("/api/responders", headers=login(client, "hotline")).json()["responders"]
        assert {r["id"] for r in hotline} == {"grid1", "grid3", "station", "hotline"}
        assert all(r["phone"] for r in hotline)
        grid1 = client.get("/api/responders", headers=login(client, "grid1")).json()["responders"]
        assert {r["id"] for r in grid1} == {"grid1", "station", "hotline"}
        assert all(r["phone"] is None for r in grid1)
        station = client.get("/api/responders", headers=login(client, "station")).json()["responders"]
        assert {r["id"] for r in station} == {"grid1", "station", "hotline"}
        rosters = client.get("/api/rosters", headers=login(client, "grid3")).json()["overrides"]
        assert rosters == [
            {
                "responder": "grid3",
                "start": "2026-01-01T08:00:00+08:00",
                "end": "2026-01-02T08:00:00+08:00",
                "on_duty": True,
            }
        ]
        assert len(client.get("/api/rosters", headers=login(client, "admin")).json()["overrides"]) == 2


def test_pages_of_alerts(harness: ApiHarness) -> None:
    with harness.client() as client:
        ids = [
            harness.open_alert("e1", "pg-1", kind, "warning")
            for kind in ("sos", "hr_critical_high", "spo2_critical_low", "not_worn")
        ]
        hotline = login(client, "hotline")
        first = client.get("/api/alerts?limit=2", headers=hotline).json()
        second = client.get("/api/alerts?limit=2&offset=2", headers=hotline).json()
        assert [a["alert_id"] for a in first["alerts"] + second["alerts"]] == ids and first["total"] == 4
        page = client.get("/api/alerts?state=all&limit=3", headers=hotline).json()
        assert [a["alert_id"] for a in page["alerts"]] == ids[::-1][:3] and page["next_before_id"] == ids[1]
        rest = client.get(f"/api/alerts?state=all&limit=3&before_id={page['next_before_id']}", headers=hotline)
        assert [a["alert_id"] for a in rest.json()["alerts"]] == [ids[0]]
