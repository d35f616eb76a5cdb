"""At scale: 10,000 elders and 1,000 open alerts; the list and map endpoints answer well under a second."""

from __future__ import annotations

import time

import psycopg

from gateway.storage.schema import upgrade
from tests.test_api_helpers import ApiHarness, add_users, login

COMMUNITIES = 20
GRIDS = 200


def _seed(dsn: str) -> None:
    upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO elders (elder_id, name, community, grid, profile) SELECT "
            "'e' || lpad(i::text, 5, '0'), '老人' || i, 'c' || (i %% %s), 'g' || (i %% %s), "
            "jsonb_build_object('home', jsonb_build_object('lat', 31.0 + (i %% 100) * 0.003, "
            "'lon', 121.0 + (i / 100) * 0.003), 'conditions', '[]'::jsonb) FROM generate_series(1, 10000) i",
            (COMMUNITIES, GRIDS),
        )
        conn.execute(
            "INSERT INTO devices (device_id, device_type, elder_id) SELECT 'wb-' || i, 'wristband', "
            "'e' || lpad(i::text, 5, '0') FROM generate_series(1, 10000) i"
        )
        conn.execute(
            "INSERT INTO geofences (elder_id, fence_id, spec) SELECT 'e' || lpad(i::text, 5, '0'), 'home', "
            "jsonb_build_object('id', 'home', 'circle', jsonb_build_object('lat', 31.0 + (i %% 100) * 0.003, "
            "'lon', 121.0 + (i / 100) * 0.003, 'radius_m', 200)) FROM generate_series(1, 10000, 3) i",
            (),
        )
        conn.execute(
            "INSERT INTO alerts (alert_key, elder_id, device_id, kind, severity, state, policy, community, grid, "
            "opened_at, last_seen_at) SELECT 'e' || lpad((i * 7)::text, 5, '0') || ':sos', "
            "'e' || lpad((i * 7)::text, 5, '0'), 'wb-' || (i * 7), 'sos', "
            "(ARRAY['critical', 'warning', 'info'])[1 + i %% 3], 'notifying', 'default', "
            "'c' || ((i * 7) %% %s), 'g' || ((i * 7) %% %s), now() - make_interval(secs => i), now() "
            "FROM generate_series(1, 1000) i",
            (COMMUNITIES, GRIDS),
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, event, actor) SELECT alert_id, opened_at, 'opened', "
            "'system' FROM alerts"
        )
        conn.execute("ANALYZE")


def test_lists_and_map_answer_quickly_with_10000_elders_and_1000_open_alerts(database: str) -> None:
    _seed(database)
    add_users(
        database,
        {
            "hotline": ("hotline", "热线", None, None, None),
            "grid": ("grid_worker", "网格员", "c7", "g7", None),  # g7 lies in c7: i % 200 == 7 gives i % 20 == 7
            "station": ("post_station", "驿站", "c7", None, None),
        },
    )
    harness = ApiHarness(database)
    with harness.client() as client:
        hotline, grid, station = login(client, "hotline"), login(client, "grid"), login(client, "station")

        def timed(path: str, headers: dict[str, str]) -> tuple[float, dict[str, object]]:
            client.get(path, headers=headers)  # warm: plans and pool connections
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            return elapsed, response.json()

        elapsed, body = timed("/api/alerts", hotline)
        assert body["total"] == 1000 and len(body["alerts"]) == 200 and elapsed < 0.5, elapsed  # type: ignore[arg-type]
        assert body["alerts"][0]["severity"] == "critical"  # type: ignore[index]
        elapsed, body = timed("/api/alerts?limit=1000", hotline)
        assert len(body["alerts"]) == 1000 and elapsed < 0.5, elapsed  # type: ignore[arg-type]
        elapsed, body = timed("/api/alerts", grid)
        assert body["total"] == 5 and elapsed < 0.3, elapsed
        elapsed, body = timed("/api/alerts", station)
        assert body["total"] == 50 and elapsed < 0.3, elapsed
        elapsed, body = timed("/api/map", hotline)
        assert len(body["elders"]) == 10_000 and elapsed < 0.8, elapsed  # type: ignore[arg-type]
        elapsed, body = timed("/api/map", station)
        assert len(body["elders"]) == 500 and elapsed < 0.3, elapsed  # type: ignore[arg-type]
        elapsed, body = timed("/api/elders?limit=100", hotline)
        assert body["total"] == 10_000 and elapsed < 0.3, elapsed
        elapsed, body = timed("/api/elders?q=老人99", station)
        assert elapsed < 0.3, elapsed
        elapsed, body = timed("/api/devices?limit=100", hotline)
        assert body["total"] == 10_000 and elapsed < 0.5, elapsed
