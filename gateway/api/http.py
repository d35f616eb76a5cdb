"""One description per endpoint feeds both the Starlette route and the OpenAPI document.

An ``Endpoint`` names its method, path, query and body types (msgspec Structs), its
response type and the statuses it can answer. ``route`` wraps the handler so every
endpoint authenticates, checks the role, decodes strictly and answers errors the same
way: ``{"error": code, "detail": sentence}``. Because ``openapi.py`` reads the same
descriptions, the document cannot drift from what the server does.

Errors:

    ApiError            -- an answer other than success, with status, code and detail
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.errors import ApiError, too_large
from gateway.api.request_checks import CSRF_HEADER, UNSAFE_METHODS, cross_origin, media_type
from gateway.api.schemas import Error

if TYPE_CHECKING:
    from gateway.api.auth import Principal
    from gateway.api.context import ApiContext

MAX_JSON_BYTES = 256 * 1024
_ENCODER = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODER.encode(body), status_code=status, media_type="application/json", headers=headers)


def error_response(error: ApiError) -> Response:
    body = error.body if error.body is not None else Error(error=error.code, detail=error.detail)
    return json_response(body, error.status, error.headers)


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, who is asking, and the decoded inputs."""

    request: Request
    ctx: ApiContext
    user: Principal | None
    query: Any
    body: Any

    @property
    def who(self) -> Principal:
        assert self.user is not None, "endpoint declared without authentication"
        return self.user

    def path(self, name: str) -> Any:
        return self.request.path_params[name]


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation. ``path`` uses Starlette convertors (``{alert_id:int}``)."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    response: Any = None  # a Struct type; None answers 204
    status: int = 200
    query: type[msgspec.Struct] | None = None
    body: Any = None  # a Struct type, or "multipart"
    body_required: bool = True
    errors: tuple[int, ...] = ()
    auth: bool = True
    roles: frozenset[str] | None = None  # None: every role
    media_type: str = "application/json"
    description: str = ""
    path_doc: dict[str, str] = field(default_factory=dict)

    @property
    def statuses(self) -> tuple[int, ...]:
        base = {self.status, *self.errors, 503}
        if self.auth:
            base.add(401)
        if self.roles is not None or self.method in UNSAFE_METHODS:
            base.add(403)  # a role, or a change from another origin
        if self.query is not None or self.body is not None:
            base.update((400, 422))
        if self.body is not None:
            base.add(415)
        return tuple(sorted(base))

    def route(self, ctx: ApiContext) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return await self._run(ctx, request)
            except ApiError as error:
                return error_response(error)
            except PoolTimeout:
                return error_response(
                    ApiError(503, "database_unavailable", "The database does not answer; try again shortly.")
                )

        return Route(self.path, endpoint, methods=[self.method], name=f"{self.method} {self.path}")

    async def _run(self, ctx: ApiContext, request: Request) -> Response:
        if any("\x00" in str(value) for value in request.path_params.values()):
            raise ApiError(404, "not_found", "No id holds a NUL character.")  # PostgreSQL text cannot hold one
        unsafe = request.method in UNSAFE_METHODS
        if unsafe and (refusal := cross_origin(request, ctx.settings.allowed_origins)) is not None:
            raise ApiError(403, "cross_origin", refusal)
        user = await ctx.auth.authenticate(request) if self.auth else None
        if unsafe and user is not None and user.by_cookie and not request.headers.get(CSRF_HEADER):
            raise ApiError(
                403, "csrf_header_missing", "A change made with the session cookie needs the X-Requested-With header."
            )
        if user is not None and self.roles is not None and user.role not in self.roles:
            raise ApiError(403, "forbidden", f"The {user.role} role may not do this.")
        if self.body is not None:
            expected = "multipart/form-data" if self.body == "multipart" else "application/json"
            if media_type(request) != expected:
                raise ApiError(415, "unsupported_media_type", f"Send the body as {expected} (its Content-Type).")
        query = decode_query(request, self.query) if self.query is not None else None
        body = None
        if self.body is not None and self.body != "multipart":
            body = await decode_body(request, self.body, required=self.body_required)
        result = await self.handler(Call(request, ctx, user, query, body))
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=204)
        return json_response(result, self.status)


def decode_query(request: Request, kind: type[msgspec.Struct]) -> Any:
    params: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            raise ApiError(400, "bad_query", f"The query parameter {key!r} is given twice.")
        if "\x00" in value or "\x00" in key:  # PostgreSQL text cannot hold NUL: say so, not a 500
            raise ApiError(400, "bad_query", f"The query parameter {key!r} holds a NUL character.")
        params[key] = value
    known = set(kind.__struct_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ApiError(400, "bad_query", f"Unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(known))}.")
    cleaned = {k: v for k, v in params.items() if v != ""}
    try:
        return msgspec.convert(cleaned, kind, strict=False)
    except msgspec.ValidationError as error:
        raise ApiError(422, "invalid_query", _sentence(error)) from None


async def decode_body(request: Request, kind: Any, *, required: bool = True) -> Any:
    raw = await read_limited(request, MAX_JSON_BYTES)
    if not raw.strip():
        if required:
            raise ApiError(400, "bad_json", "The request needs a JSON body.")
        raw = b"{}"
    try:
        decoded = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as error:
        raise ApiError(422, "invalid_body", _sentence(error)) from None
    except msgspec.DecodeError as error:
        raise ApiError(400, "bad_json", f"The body is not JSON: {error}.") from None
    if b"\\u0000" in raw and _holds_nul(msgspec.json.decode(raw)):
        raise ApiError(400, "bad_json", "The body holds a NUL character (\\u0000), which no field may contain.")
    return decoded


def _holds_nul(value: Any) -> bool:
    """Any string (key or value) in decoded JSON with a NUL: PostgreSQL text cannot store one."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


DISCARD_MAX_BYTES = 16 * 1024 * 1024  # past a limit, up to this much more is read and dropped


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (before it is all in memory).

    What follows the limit is read and thrown away, up to ``DISCARD_MAX_BYTES``, so an
    honest client that sent a file too large gets the 413 instead of a connection reset
    (closing a socket with unread data resets it); memory stays at ``limit``. A body
    larger still is cut off: the connection closes without reading it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + DISCARD_MAX_BYTES:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            if size > limit + DISCARD_MAX_BYTES:
                raise too_large(limit)
            chunks.clear()
            continue
        chunks.append(chunk)
    if size > limit:
        raise too_large(limit)
    return b"".join(chunks)


def _sentence(error: msgspec.ValidationError) -> str:
    text = str(error)
    return text if text.endswith(".") else text + "."
