"""Routes the gateway mounts next to its webhooks, health and metrics: the console API and page.

``ENDPOINTS`` is the whole API in one table; the Starlette routes and the OpenAPI
document at ``/openapi.json`` are both made from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.alerting.engine import AlertEngine
from gateway.api import alerts, audit_log, elders, event_stream, fences, people, registry_upload, session
from gateway.api.auth import ADMIN, STAFF
from gateway.api.context import ApiContext
from gateway.api.http import Endpoint, json_response
from gateway.api.openapi import openapi_document
from gateway.api.schemas import (
    AckBody,
    AlertDetail,
    AlertList,
    AlertQuery,
    AlertSummary,
    AuditList,
    AuditQuery,
    DeviceList,
    DeviceQuery,
    ElderDetail,
    ElderList,
    ElderQuery,
    EventsQuery,
    Fence,
    FenceCollection,
    FenceInput,
    ImportQuery,
    ImportResult,
    LoginBody,
    LoginResult,
    MapQuery,
    MapView,
    NoteBody,
    ReadingQuery,
    Readings,
    ResolveBody,
    ResponderList,
    RosterList,
    User,
)
from gateway.api.settings import ApiConfig

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

_ALERT = "/api/alerts/{alert_id:int}"
_ELDER = "/api/elders/{elder_id:str}"
_FENCE = "/api/elders/{elder_id:str}/fences/{fence_id:str}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/login",
        session.login,
        "Log in: a session token and cookie",
        "session",
        response=LoginResult,
        body=LoginBody,
        auth=False,
        errors=(401, 429),
    ),
    Endpoint("POST", "/api/logout", session.logout, "End this session", "session", status=204),
    Endpoint("GET", "/api/me", session.me, "The logged-in user", "session", response=User),
    Endpoint(
        "GET",
        "/api/alerts",
        alerts.list_alerts,
        "Alerts in the user's scope",
        "alerts",
        response=AlertList,
        query=AlertQuery,
        description="Open alerts come most severe first, then oldest first (page with offset); "
        "resolved and all come newest first (page with before_id).",
    ),
    Endpoint(
        "GET",
        _ALERT,
        alerts.alert_detail,
        "One alert with timeline, pages, detections and GPS trail",
        "alerts",
        response=AlertDetail,
        errors=(404,),
    ),
    Endpoint(
        "POST",
        f"{_ALERT}/ack",
        alerts.acknowledge,
        "Take the alert (help is coming)",
        "alerts",
        response=AlertSummary,
        body=AckBody,
        errors=(404, 409),
        description="The body is JSON, at least {} (a cross-site form cannot send that).",
    ),
    Endpoint(
        "POST",
        f"{_ALERT}/on-scene",
        alerts.on_scene,
        "The responder has arrived",
        "alerts",
        response=AlertSummary,
        errors=(404, 409),
    ),
    Endpoint(
        "POST",
        f"{_ALERT}/resolve",
        alerts.resolve,
        "Close the alert with its outcome",
        "alerts",
        response=AlertSummary,
        body=ResolveBody,
        errors=(404, 409),
    ),
    Endpoint(
        "POST",
        f"{_ALERT}/notes",
        alerts.add_note,
        "Add a note to the alert's timeline",
        "alerts",
        status=204,
        body=NoteBody,
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/elders",
        elders.list_elders,
        "Elders in the user's scope",
        "elders",
        response=ElderList,
        query=ElderQuery,
    ),
    Endpoint(
        "GET",
        _ELDER,
        elders.elder_detail,
        "One elder: profile, devices, contacts, fences, latest readings",
        "elders",
        response=ElderDetail,
        errors=(404,),
    ),
    Endpoint(
        "GET",
        f"{_ELDER}/readings",
        elders.readings,
        "One measurement over 24 h or 7 days, bucketed",
        "elders",
        response=Readings,
        query=ReadingQuery,
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/devices",
        elders.list_devices,
        "Devices: last seen, battery, online",
        "devices",
        response=DeviceList,
        query=DeviceQuery,
    ),
    Endpoint(
        "GET",
        f"{_ELDER}/fences",
        fences.list_fences,
        "An elder's fences (GeoJSON)",
        "fences",
        response=FenceCollection,
        errors=(404,),
    ),
    Endpoint(
        "PUT",
        _FENCE,
        fences.put_fence,
        "Create or redraw a fence (GeoJSON Feature)",
        "fences",
        response=Fence,
        body=FenceInput,
        roles=STAFF,
        errors=(404,),
    ),
    Endpoint("DELETE", _FENCE, fences.delete_fence, "Delete a fence", "fences", status=204, roles=STAFF, errors=(404,)),
    Endpoint(
        "GET",
        "/api/map",
        elders.elder_map,
        "Elders' homes, worst open alert and fences for the map",
        "map",
        response=MapView,
        query=MapQuery,
    ),
    Endpoint(
        "GET",
        "/api/responders",
        people.list_responders,
        "Responders the user works with",
        "people",
        response=ResponderList,
        roles=STAFF,
    ),
    Endpoint(
        "GET",
        "/api/rosters",
        people.list_rosters,
        "Roster overrides of those responders",
        "people",
        response=RosterList,
        roles=STAFF,
    ),
    Endpoint(
        "POST",
        "/api/registry/import",
        registry_upload.import_sheet,
        "Import elders from CSV or XLSX",
        "registry",
        response=ImportResult,
        query=ImportQuery,
        body="multipart",
        roles=ADMIN,
        errors=(413,),
        description="All rows or none: any invalid row answers 422 with every bad row "
        "and column. See CONTRACT.md for the columns.",
    ),
    Endpoint(
        "GET",
        "/api/audit",
        audit_log.list_audit,
        "The audit log: who read or changed what, newest first",
        "audit",
        response=AuditList,
        query=AuditQuery,
        roles=ADMIN,
        description="Every read of an elder's record by a person (read.elder, read.readings, read.alert, "
        "read.fences, read.elders, read.map) and every change (login, fence.*, registry.import, user.*). "
        "Filter by actor, action (exact, or a prefix ending in '.'), target (an elder id), since/until; "
        "page with before_id.",
    ),
    Endpoint(
        "GET",
        "/api/events",
        event_stream.alert_events,
        "Live alert changes (Server-Sent Events)",
        "events",
        query=EventsQuery,
        media_type="text/event-stream",
    ),
)


def build_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The API's routes plus ``/openapi.json``, for any pool and engine (the gateway's, or a test's)."""
    document = openapi_document(ENDPOINTS)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    return [*(ep.route(ctx) for ep in ENDPOINTS), Route("/openapi.json", openapi, methods=["GET"])]


def api_context(
    pool: AsyncConnectionPool,
    engine: AlertEngine,
    settings: ApiConfig,
    clock_ms: Any,
    dsn: str,
    connect_kwargs: dict[str, Any] | None = None,
    **extra: Any,
) -> ApiContext:
    kwargs = dict(connect_kwargs or {})

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, **kwargs)

    return ApiContext(pool=pool, engine=engine, settings=settings, clock_ms=clock_ms, connect=connect, **extra)


def api_routes(
    config: GatewayConfig, engine: AlertEngine, clock_ms: Callable[[], int], stopping: Callable[[], bool]
) -> list[BaseRoute]:
    """The console API and page, served by the running gateway."""
    from gateway.console import console_routes
    from gateway.settings import conninfo

    dsn, kwargs = conninfo(config)
    ctx = api_context(
        engine.pool,
        engine,
        config.api,
        clock_ms,
        dsn,
        kwargs,
        battery_low_pct=config.detect.battery_warning_pct,
        timezone=config.detect.timezone,
        stopping=stopping,
    )
    return [*build_routes(ctx), *console_routes(tile_url=config.api.console_tile_url)]
