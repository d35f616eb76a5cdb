"""``POST /api/registry/import``: a spreadsheet of elders in, all rows or none.

The upload is refused with 413 while it streams in, once past ``api.max_upload_bytes``.
Then every row is checked (``registry_sheet``), merged with what is stored (fences
drawn in the console, responders and rosters stay), the merged registry is validated
as a whole, and ``import_registry`` writes it in one transaction together with the
``audit_log`` row. Any invalid row: 422 listing every bad row, nothing written.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from gateway.alerting.roster import RosterError, check_roster
from gateway.api.errors import ApiError
from gateway.api.http import Call, read_limited
from gateway.api.registry_sheet import SheetError, SheetResult, parse_sheet, read_table
from gateway.api.schemas import ImportErrors, ImportQuery, ImportResult, RowError
from gateway.domain.registry import RegistryError, registry_from_dicts
from gateway.domain.registry_db import decode_json_fast, import_registry


async def import_sheet(call: Call) -> ImportResult:
    q: ImportQuery = call.query
    limit = call.ctx.settings.max_upload_bytes
    filename, data = await _upload(call.request, limit)
    result = await asyncio.to_thread(
        import_spreadsheet, call.ctx.connect, filename, data, q.dry_run, call.who.username, call.ctx.now()
    )
    return result


async def _upload(request: Request, limit: int) -> tuple[str, bytes]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "bad_upload", "Send the file as multipart/form-data in the field 'file'.")
    body = await read_limited(request, limit + 64 * 1024)  # the multipart framing around the file
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except Exception as error:  # python-multipart's errors have no common public base
        raise ApiError(400, "bad_upload", f"The multipart body cannot be read: {error}.") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "bad_upload", "The multipart body has no file in the field 'file'.")
        data = await upload.read()
        if len(data) > limit:
            raise ApiError(413, "too_large", f"The upload is larger than {limit // 1024} KiB.")
        return upload.filename or "", data
    finally:
        await form.close()


def import_spreadsheet(
    connect: Any, filename: str, data: bytes, dry_run: bool, username: str, now: Any
) -> ImportResult:
    """Check every row of the file, then import all of it in one transaction (or none of it)."""
    try:
        table = read_table(filename, data)
    except SheetError as error:
        raise ApiError(422, "unreadable_file", str(error)) from None
    with connect() as conn:
        ids = (
            sorted(
                {
                    r[i].strip()
                    for r in table[1:]
                    for i, h in enumerate(table[0][: len(r)])
                    if h.strip().lower() == "elder_id" and r[i].strip()
                }
            )
            if table
            else []
        )
        stored = _stored_elders(conn, ids)
        try:
            sheet = parse_sheet(table, stored)
        except SheetError as error:
            raise ApiError(422, "unreadable_file", str(error)) from None
        if sheet.errors:
            raise _invalid(sheet.errors)
        responders = [s for (s,) in conn.execute("SELECT spec FROM responders ORDER BY responder_id")]
        overrides = [s for (s,) in conn.execute("SELECT spec FROM roster_overrides ORDER BY id")]
        # grid workers are (community, grid): the sheet's elders alone would not show every community
        communities = [c for (c,) in conn.execute("SELECT DISTINCT community FROM elders WHERE community <> ''")]
        try:
            registry = registry_from_dicts(sheet.elders, responders, overrides, communities)
            check_roster(registry, require_hotline=False)
        except (RegistryError, RosterError) as error:
            raise _invalid([RowError(row=_row_of(sheet, str(error)), column=None, detail=str(error))]) from None
        devices = sum(len(e.devices) for e in registry.elders)
        fences = sum(len(e.fences) for e in registry.elders)
        if not dry_run:
            with conn.transaction():
                count = import_registry(conn, registry)
                conn.execute(
                    "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (%s, %s, %s, %s, %s)",
                    (
                        now,
                        username,
                        "registry.import",
                        filename[:200],
                        Jsonb(
                            {
                                "elders": count,
                                "devices": devices,
                                "fences": fences,
                                "sha256": hashlib.sha256(data).hexdigest(),
                                "elder_ids": [e.id for e in registry.elders][:1000],
                            }
                        ),
                    ),
                )
    return ImportResult(imported=len(registry.elders), devices=devices, fences=fences, dry_run=dry_run)


def _invalid(rows: list[RowError]) -> ApiError:
    return ApiError(
        422,
        "invalid_rows",
        "",
        body=ImportErrors(
            error="invalid_rows", detail=f"{len(rows)} problem(s) found; nothing was imported.", rows=rows
        ),
    )


def _row_of(sheet: SheetResult, message: str) -> int:
    for elder, row in zip(sheet.elders, sheet.rows, strict=True):
        if f"elder {elder['id']}" in message:
            return row
    return 1


def _stored_elders(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Registered elders among ``ids`` as registry dicts, to merge the sheet's columns into."""
    elders: dict[str, dict[str, Any]] = {}
    decode_json_fast(conn)
    for elder_id, name, community, grid, profile in conn.execute(
        "SELECT elder_id, name, community, grid, profile FROM elders WHERE elder_id = ANY(%s)", (ids,)
    ):
        elders[elder_id] = {
            **profile,
            "id": elder_id,
            "name": name,
            "community": community or "",
            "grid": grid or "",
            "fences": [],
            "devices": [],
        }
    for elder_id, spec in conn.execute(
        "SELECT elder_id, spec FROM geofences WHERE elder_id = ANY(%s) ORDER BY fence_id", (ids,)
    ):
        elders[elder_id]["fences"].append(spec)
    for device_id, device_type, elder_id, interval in conn.execute(
        "SELECT device_id, device_type, elder_id, reporting_interval_s FROM devices WHERE elder_id = ANY(%s) "
        "ORDER BY device_id",
        (ids,),
    ):
        elders[elder_id]["devices"].append({"id": device_id, "type": device_type, "reporting_interval_s": interval})
    return elders
