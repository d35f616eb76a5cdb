"""Elders, devices, readings, the map, and fences drawn as GeoJSON (validated, audited, loadable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from gateway.detect.engine import DetectorSet
from gateway.domain.registry_db import load_registry_from_db
from tests.test_api_helpers import JSON, SQUARE, ApiHarness, add_users, login, rows, seed_registry


@pytest.fixture
def harness(database: str) -> ApiHarness:
    seed_registry(database)
    add_users(database)
    return ApiHarness(database)


def _telemetry(dsn: str, now: datetime) -> None:
    with psycopg.connect(dsn) as conn:
        for minute in range(0, 24 * 60, 2):  # a reading every 2 min for a day
            conn.execute(
                "INSERT INTO telemetry_wristband (time, device_id, hr, spo2, steps, battery, lat, lon) "
                "VALUES (%s, 'wb-1', %s, 97, %s, 80, 31.2305, 121.4738)",
                (now - timedelta(minutes=minute), 60 + minute % 30, 5000 - minute),
            )
        conn.execute(
            "INSERT INTO telemetry_glucose (time, device_id, glucose_mmol, context) VALUES "
            "(%s, 'gl-x', 6.1, 'fasting')",
            (now,),
        )
        conn.execute(
            "INSERT INTO device_status (time, device_id, device_type, battery, online) "
            "VALUES (%s, 'wb-2', 'wristband', 9, true)",
            (now - timedelta(minutes=1),),
        )
        conn.execute(
            "INSERT INTO device_status (time, device_id, device_type, battery, online) "
            "VALUES (%s, 'wb-3', 'wristband', 70, false)",
            (now - timedelta(minutes=1),),
        )


def test_elders_detail_readings_devices_and_map(harness: ApiHarness, database: str) -> None:
    now = datetime.fromtimestamp(harness.now_ms / 1000, UTC)
    _telemetry(database, now)
    with harness.client() as client:
        harness.open_alert("e1", "pg-1", "sos", "critical")
        harness.open_alert("e1", "wb-1", "not_worn", "warning")
        hotline = login(client, "hotline")
        listed = client.get("/api/elders", headers=hotline).json()
        assert listed["total"] == 3
        e1 = listed["elders"][0]
        assert e1 == {
            "elder_id": "e1",
            "name": "王秀英",
            "community": "幸福社区",
            "grid": "g1",
            "home": {"lat": 31.2304, "lon": 121.4737},
            "open_alerts": 2,
            "worst_severity": "critical",
        }
        assert listed["elders"][1]["open_alerts"] == 0 and listed["elders"][1]["worst_severity"] is None
        assert [e["elder_id"] for e in client.get("/api/elders?q=李", headers=hotline).json()["elders"]] == ["e2"]
        assert client.get("/api/elders?q=%25", headers=hotline).json()["total"] == 0  # % is literal
        page = client.get("/api/elders?community=幸福社区&limit=1&offset=1", headers=hotline).json()
        assert [e["elder_id"] for e in page["elders"]] == ["e2"] and page["total"] == 2

        detail = client.get("/api/elders/e1", headers=hotline).json()
        assert detail["profile"]["conditions"] == ["dementia"] and "contacts" not in detail["profile"]
        assert detail["contacts"][0]["phone"] == "+8613800000001"
        assert {d["device_id"]: d["online"] for d in detail["devices"]} == {"wb-1": True, "pg-1": False}
        assert detail["fences"]["type"] == "FeatureCollection"
        assert detail["fences"]["features"][0]["geometry"] == {"type": "Point", "coordinates": [121.4737, 31.2304]}
        assert detail["fences"]["features"][0]["properties"]["radius_m"] == 150
        latest = detail["latest"]
        assert latest["hr"] == 60 and latest["spo2"] == 97 and latest["lat"] == 31.2305 and latest["battery"] == 80
        assert latest["glucose_mmol"] is None  # gl-x belongs to nobody

        day = client.get("/api/elders/e1/readings?metric=hr&range=24h", headers=hotline).json()
        assert 280 <= len(day["points"]) <= 289 and all(60 <= p["value"] <= 89 for p in day["points"])
        week = client.get("/api/elders/e1/readings?metric=steps&range=7d", headers=hotline).json()
        assert 24 <= len(week["points"]) <= 25
        assert client.get("/api/elders/e1/readings?metric=mood", headers=hotline).status_code == 422
        assert client.get("/api/elders/e1/readings", headers=hotline).status_code == 422
        assert client.get("/api/elders/nobody", headers=hotline).status_code == 404

        devices = client.get("/api/devices", headers=hotline).json()
        assert devices["total"] == 4
        status = {d["device_id"]: (d["online"], d["battery"]) for d in devices["devices"]}
        assert status == {"wb-1": (True, 80), "pg-1": (False, None), "wb-2": (True, 9), "wb-3": (False, 70)}
        low = client.get("/api/devices?status=low_battery", headers=hotline).json()["devices"]
        assert [d["device_id"] for d in low] == ["wb-2"]
        silent = client.get("/api/devices?status=silent", headers=hotline).json()["devices"]
        assert {d["device_id"] for d in silent} == {"pg-1", "wb-3"}
        assert [
            d["device_id"] for d in client.get("/api/devices?elder_id=e1&type=pager", headers=hotline).json()["devices"]
        ] == ["pg-1"]

        world = client.get("/api/map", headers=hotline).json()
        assert {e["elder_id"]: e["worst_severity"] for e in world["elders"]} == {
            "e1": "critical",
            "e2": None,
            "e3": None,
        }
        assert len(world["fences"]["features"]) == 1
        min_lon, min_lat, max_lon, max_lat = world["bounds"]
        assert min_lon == 121.40 and min_lat == 31.20 and max_lon == 121.48 and max_lat == 31.24
        mine = client.get("/api/map?community=和平社区", headers=hotline).json()
        assert [e["elder_id"] for e in mine["elders"]] == ["e3"] and mine["fences"]["features"] == []


POLYGON = {
    "type": "Feature",
    "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
    "properties": {"name": "小区", "active_hours": "20:00-06:00", "severity": "critical"},
}


def _feature(coordinates: Any, kind: str = "Polygon", **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coordinates}, "properties": props}


def test_fences_drawn_as_geojson_are_validated_stored_and_audited(harness: ApiHarness, database: str) -> None:
    with harness.client() as client:
        grid1 = login(client, "grid1")
        stored = client.put("/api/elders/e1/fences/estate", headers=grid1, json=POLYGON)
        assert stored.status_code == 200, stored.text
        feature = stored.json()
        assert feature["id"] == "estate" and feature["geometry"]["coordinates"] == [SQUARE]
        assert feature["properties"] == {
            "name": "小区",
            "kind": "polygon",
            "elder_id": "e1",
            "active_hours": "20:00-06:00",
            "margin_m": None,
            "severity": "critical",
            "radius_m": None,
        }
        circle = _feature([121.4737, 31.2304], "Point", radius_m=300, margin_m=30)
        assert client.put("/api/elders/e1/fences/home", headers=grid1, json=circle).status_code == 200
        listed = client.get("/api/elders/e1/fences", headers=grid1).json()["features"]
        assert {f["id"]: f["properties"]["kind"] for f in listed} == {"estate": "polygon", "home": "circle"}

        def refused(body: Any, fence: str = "bad") -> str:
            response = client.put(f"/api/elders/e1/fences/{fence}", headers=grid1, json=body)
            assert response.status_code == 422, (body, response.text)
            return str(response.json()["detail"])

        assert "not closed" in refused(_feature([[*SQUARE[:-1], [121.4731, 31.23]]]))
        bowtie = [
            [121.4730, 31.2300],
            [121.4745, 31.2310],
            [121.4745, 31.2300],
            [121.4730, 31.2310],
            [121.4730, 31.2300],
        ]
        assert "Self-intersection" in refused(_feature([bowtie]))
        assert "at least 4 positions" in refused(_feature([SQUARE[:3]]))
        tiny = [
            [121.4730, 31.2300],
            [121.47305, 31.2300],
            [121.47305, 31.23005],
            [121.4730, 31.23005],
            [121.4730, 31.2300],
        ]
        assert "across" in refused(_feature([tiny]))
        huge = [[121.0, 31.0], [121.5, 31.0], [121.5, 31.5], [121.0, 31.5], [121.0, 31.0]]
        assert "km across" in refused(_feature([huge]))
        assert "longitude/latitude" in refused(_feature([[[121.47, 95.0], *SQUARE[1:-1], [121.47, 95.0]]]))
        assert "radius_m" in refused(_feature([121.47, 31.23], "Point"))
        assert "across" in refused(_feature([121.47, 31.23], "Point", radius_m=5))
        assert "HH:MM" in refused({**POLYGON, "properties": {"active_hours": "25:00-06:00"}})
        assert refused({"type": "Feature", "geometry": {"type": "LineString", "coordinates": SQUARE}})
        assert refused({"type": "FeatureCollection", "features": []})
        assert refused(_feature("not coordinates"))
        assert refused(POLYGON, fence="no spaces")
        assert refused({**POLYGON, "id": "other"}, fence="estate")
        assert client.put("/api/elders/e1/fences/bad", headers={**grid1, **JSON}, content=b"{oops").status_code == 400

        assert client.delete("/api/elders/e1/fences/estate", headers=grid1).status_code == 204
        assert client.delete("/api/elders/e1/fences/estate", headers=grid1).status_code == 404
    # stored in the registry's own format: the detectors load it as they load a registry file
    with psycopg.connect(database) as conn:
        registry = load_registry_from_db(conn)
    e1 = next(e for e in registry.elders if e.id == "e1")
    assert [(f.id, f.circle.radius_m if f.circle else None, f.margin_m) for f in e1.fences] == [("home", 300, 30)]
    DetectorSet(registry)
    audit = rows(
        database,
        "SELECT actor, action, target, detail->'after'->>'id' FROM audit_log WHERE action LIKE 'fence.%%' ORDER BY id",
    )
    assert audit == [
        ("grid1", "fence.create", "e1/estate", "estate"),
        ("grid1", "fence.update", "e1/home", "home"),
        ("grid1", "fence.delete", "e1/estate", None),
    ]
