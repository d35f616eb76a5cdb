"""Registry import from CSV and XLSX: row-by-row errors, all or nothing, size limit, audit."""

from __future__ import annotations

import io

import pytest
from openpyxl import Workbook

from gateway.api.settings import ApiConfig
from tests.test_api_helpers import ApiHarness, add_users, login, rows, seed_registry

HEADER = [
    "elder_id",
    "name",
    "community",
    "grid",
    "lives_alone",
    "conditions",
    "home_lat",
    "home_lon",
    "home_fence_m",
    "devices",
    "thresholds",
    "contact1_name",
    "contact1_phone",
    "contact1_relation",
]


def _xlsx(table: list[list[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "elders"
    for row in table:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.fixture
def harness(database: str) -> ApiHarness:
    seed_registry(database)
    add_users(database)
    return ApiHarness(database, ApiConfig(max_upload_bytes=64 * 1024))


def _upload(client: object, headers: dict[str, str], name: str, data: bytes, query: str = "") -> object:
    return client.post(
        f"/api/registry/import{query}",
        headers=headers,  # type: ignore[attr-defined]
        files={"file": (name, data, "application/octet-stream")},
    )


def test_csv_import_merges_with_what_is_stored_and_is_audited(harness: ApiHarness, database: str) -> None:
    csv = (
        "\ufeffelder_id,name,grid,devices,home_fence_m,contact1_name,contact1_phone\n"
        "e2,李建国,g1,wristband:wb-2;glucose:gl-2,200,李娜,+8613700000002\n"
        "e9,陈美华,g3,pager:pg-9,,,\n"
    ).encode()
    with harness.client() as client:
        admin = login(client, "admin")
        dry = _upload(client, admin, "elders.csv", csv, "?dry_run=true")
        assert dry.status_code == 200 and dry.json() == {"imported": 2, "devices": 3, "fences": 1, "dry_run": True}
        assert rows(database, "SELECT count(*) FROM elders") == [(3,)]
        done = _upload(client, admin, "elders.csv", csv)
        assert done.status_code == 200, done.text
        assert done.json()["imported"] == 2 and done.json()["dry_run"] is False
    assert rows(database, "SELECT elder_id, name, community, grid FROM elders ORDER BY 1") == [
        ("e1", "王秀英", "幸福社区", "g1"),
        ("e2", "李建国", "幸福社区", "g1"),
        ("e3", "张桂兰", "和平社区", "g3"),
        ("e9", "陈美华", "", "g3"),
    ]
    assert rows(database, "SELECT device_id, elder_id FROM devices WHERE elder_id IN ('e2', 'e9') ORDER BY 1") == [
        ("gl-2", "e2"),
        ("pg-9", "e9"),
        ("wb-2", "e2"),
    ]
    assert rows(database, "SELECT elder_id, (spec->'circle'->>'radius_m')::float FROM geofences ORDER BY 1") == [
        ("e1", 150.0),
        ("e2", 200.0),
    ]
    assert rows(database, "SELECT profile->'contacts'->0->>'phone' FROM elders WHERE elder_id = 'e2'") == [
        ("+8613700000002",)
    ]
    assert rows(database, "SELECT count(*) FROM responders") == [(4,)]  # kept: the sheet has elders only
    assert rows(
        database, "SELECT actor, action, target, detail->>'elders' FROM audit_log WHERE action = 'registry.import'"
    ) == [("admin", "registry.import", "elders.csv", "2")]


def test_an_xlsx_with_broken_rows_names_them_and_writes_nothing(harness: ApiHarness, database: str) -> None:
    good = [
        "e7",
        "周红",
        "幸福社区",
        "g1",
        "yes",
        "diabetes;fall_risk",
        31.23,
        121.47,
        150,
        "wristband:wb-7",
        "hr_warning_high=115",
        "周杰",
        "+8613600000007",
        "son",
    ]
    table: list[list[object]] = [
        HEADER,
        good,
        ["e8", "吴刚", "", "g2", "maybe", "", "", "", "", "", "", "", "", ""],
        ["e10", "郑丽", "", "g2", "", "insomnia", 95, 121.4, "", "", "", "", "", ""],
        ["e11", "冯军", "", "", "", "", "", "", "", "watch:wb-11", "", "冯", "8613600000011", ""],
        ["e7", "周红", "", "", "", "", "", "", "", "", "pulse=3", "", "", ""],
        ["e12", "", "", "", "", "", "", "", 100, "", "", "", "", ""],
    ]
    with harness.client() as client:
        admin = login(client, "admin")
        response = _upload(client, admin, "elders.xlsx", _xlsx(table))
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "invalid_rows" and "nothing was imported" in body["detail"]
        found = {(r["row"], r["column"]) for r in body["rows"]}
        assert found == {
            (3, "lives_alone"),
            (4, "conditions"),
            (5, "contact1_phone"),
            (6, "elder_id"),
            (6, "thresholds"),
            (7, "name"),
            (7, "home_fence_m"),
        }
        assert all(r["detail"] for r in body["rows"])
        assert {r["row"] for r in body["rows"]} == {3, 4, 5, 6, 7}  # row 2 is fine
        assert rows(database, "SELECT count(*) FROM elders") == [(3,)]
        assert rows(database, "SELECT count(*) FROM devices WHERE device_id = 'wb-7'") == [(0,)]
        # the good row alone goes in
        ok = _upload(client, admin, "elders.xlsx", _xlsx([HEADER, good]))
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"imported": 1, "devices": 1, "fences": 1, "dry_run": False}
    assert rows(
        database, "SELECT profile->>'lives_alone', profile->'conditions' FROM elders WHERE elder_id = 'e7'"
    ) == [("true", ["diabetes", "fall_risk"])]


def test_bad_files_are_refused(harness: ApiHarness, database: str) -> None:
    with harness.client() as client:
        admin = login(client, "admin")
        fake = _upload(client, admin, "elders.xlsx", b"elder_id,name\ne5,x\n")
        assert fake.status_code == 422 and fake.json()["error"] == "unreadable_file"
        assert "not an Excel workbook" in fake.json()["detail"]
        zipped = _upload(client, admin, "elders.xlsx", b"PK\x03\x04" + b"\x00" * 200)
        assert zipped.status_code == 422 and zipped.json()["error"] == "unreadable_file"
        big = _upload(client, admin, "elders.csv", b"elder_id,name\n" + b"e1,x\n" * 40_000)
        assert big.status_code == 413 and big.json()["error"] == "too_large"
        assert _upload(client, admin, "elders.txt", b"elder_id,name\n").status_code == 422
        unknown = _upload(client, admin, "elders.csv", b"elder_id,name,colour\ne5,x,red\n").json()
        assert unknown["rows"] == [{"row": 1, "column": "colour", "detail": unknown["rows"][0]["detail"]}]
        assert _upload(client, admin, "elders.csv", b"").status_code == 422
        no_file = client.post("/api/registry/import", headers=admin, data={"other": "x"}, files={"x": ("a.csv", b"1")})
        assert no_file.status_code == 400
        assert client.post("/api/registry/import", headers=admin, json={}).status_code == 415  # multipart only
        assert _upload(client, login(client, "station"), "elders.csv", b"elder_id,name\n").status_code == 403
    assert rows(database, "SELECT count(*) FROM elders") == [(3,)]
    assert rows(database, "SELECT count(*) FROM audit_log WHERE action = 'registry.import'") == [(0,)]
