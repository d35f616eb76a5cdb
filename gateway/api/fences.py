"""Fence endpoints: an elder's fences as GeoJSON; draw, redraw and delete one.

A change is checked twice: as a shape (``fence_shapes``) and as part of the elder's
whole registry entry (``registry_from_dicts``, the same validation a registry file
gets), so nothing is stored that the detectors would refuse at the next start. The
change and its ``audit_log`` row (before and after) commit together.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg.types.json import Jsonb

from gateway.api.audit_log import record_read
from gateway.api.auth import Scope, audit
from gateway.api.elders import fences_of, visible_elder
from gateway.api.errors import ApiError, not_found
from gateway.api.fence_shapes import FenceProblem, feature_from_spec, spec_from_feature
from gateway.api.http import Call
from gateway.api.schemas import Fence, FenceCollection, FenceInput
from gateway.domain.registry import RegistryError, registry_from_dicts

FENCE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


async def list_fences(call: Call) -> FenceCollection:
    elder_id = call.path("elder_id")
    await visible_elder(call, elder_id)
    fences = await fences_of(call, [elder_id])
    await record_read(call, "read.fences", elder_id, {"fences": len(fences.features)})
    return fences


def _fence_id(call: Call) -> str:
    fence_id = str(call.path("fence_id"))
    if not FENCE_ID.match(fence_id):
        raise ApiError(422, "invalid_fence", "A fence id is 1 to 64 letters, digits, '.', '_' or '-'.")
    return fence_id


async def put_fence(call: Call) -> Fence:
    elder_id = call.path("elder_id")
    fence_id = _fence_id(call)
    feature: FenceInput = call.body
    if feature.id is not None and str(feature.id) != fence_id:
        raise ApiError(422, "invalid_fence", f"The Feature's id {feature.id!r} differs from the path's {fence_id!r}.")
    try:
        spec = spec_from_feature(fence_id, feature)
    except FenceProblem as problem:
        raise ApiError(422, "invalid_fence", _sentence(str(problem))) from None
    scope, params = Scope.elders(call.who)
    async with call.ctx.pool.connection() as conn, conn.transaction():
        elder = await _locked_elder(conn, elder_id, scope, params)
        cur = await conn.execute("SELECT fence_id, spec FROM geofences WHERE elder_id = %s", (elder_id,))
        fences = {f: s for f, s in await cur.fetchall()}
        before = fences.get(fence_id)
        fences[fence_id] = spec
        await _check_registry(conn, elder, list(fences.values()))
        await conn.execute(
            "INSERT INTO geofences (elder_id, fence_id, spec) VALUES (%s, %s, %s) "
            "ON CONFLICT (elder_id, fence_id) DO UPDATE SET spec = EXCLUDED.spec",
            (elder_id, fence_id, Jsonb(spec)),
        )
        await audit(
            conn,
            call.who.username,
            "fence.update" if before else "fence.create",
            f"{elder_id}/{fence_id}",
            {"before": before, "after": spec},
            call.ctx.now(),
        )
    return feature_from_spec(elder_id, spec)


async def delete_fence(call: Call) -> None:
    elder_id = call.path("elder_id")
    fence_id = str(call.path("fence_id"))
    scope, params = Scope.elders(call.who)
    async with call.ctx.pool.connection() as conn, conn.transaction():
        await _locked_elder(conn, elder_id, scope, params)
        cur = await conn.execute(
            "DELETE FROM geofences WHERE elder_id = %s AND fence_id = %s RETURNING spec", (elder_id, fence_id)
        )
        row = await cur.fetchone()
        if row is None:
            raise not_found(f"fence {fence_id} of elder {elder_id}")
        await audit(
            conn, call.who.username, "fence.delete", f"{elder_id}/{fence_id}", {"before": row[0]}, call.ctx.now()
        )


async def _locked_elder(conn: Any, elder_id: str, scope: str, params: tuple[Any, ...]) -> dict[str, Any]:
    cur = await conn.execute(
        f"SELECT e.elder_id, e.name, e.community, e.grid, e.profile FROM elders e "
        f"WHERE e.elder_id = %s AND {scope} FOR UPDATE OF e",
        (elder_id, *params),
    )
    row = await cur.fetchone()
    if row is None:
        raise not_found(f"elder {elder_id}")
    eid, name, community, grid, profile = row
    return {**profile, "id": eid, "name": name, "community": community or "", "grid": grid or ""}


async def _check_registry(conn: Any, elder: dict[str, Any], fences: list[dict[str, Any]]) -> None:
    cur = await conn.execute(
        "SELECT device_id, device_type, reporting_interval_s FROM devices WHERE elder_id = %s", (elder["id"],)
    )
    devices = [{"id": d, "type": t, "reporting_interval_s": i} for d, t, i in await cur.fetchall()]
    try:
        registry_from_dicts([{**elder, "fences": fences, "devices": devices}])
    except RegistryError as error:
        raise ApiError(422, "invalid_fence", _sentence(str(error))) from None


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."
