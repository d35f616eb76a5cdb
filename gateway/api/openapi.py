"""The OpenAPI 3.1 document, built from the endpoint descriptions and the msgspec types.

Request and response schemas come from ``msgspec.json.schema_components``; query
parameters from the fields of each endpoint's query Struct. Every operation lists the
statuses ``Endpoint.statuses`` says it can answer, and the two ways to authenticate
(bearer token, session cookie).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.api.auth import COOKIE
from gateway.api.http import Endpoint
from gateway.api.schemas import Error, ImportErrors

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
_REASONS = {
    200: "OK",
    204: "No content",
    400: "Bad request",
    401: "Not logged in or session expired",
    403: "Not allowed for this role",
    404: "Unknown, or out of the user's scope",
    409: "Conflicts with the alert's state",
    413: "Upload too large",
    422: "Invalid input",
    429: "Too many failed logins",
    503: "Database unavailable",
}


def openapi_document(endpoints: Sequence[Endpoint], version: str = "1") -> dict[str, Any]:
    types: list[Any] = [Error, ImportErrors]
    for ep in endpoints:
        for kind in (ep.response, ep.body if ep.body != "multipart" else None, ep.query):
            if isinstance(kind, type) and kind not in types:
                types.append(kind)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", ep.path)
        paths.setdefault(path, {})[ep.method.lower()] = _operation(ep, by_type, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eldercare-gateway console API",
            "version": version,
            "description": "Alerts, elders, devices, fences and people for the operator console. "
            'Errors are {"error": code, "detail": sentence}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the token from POST /api/login"},
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


def _operation(ep: Endpoint, by_type: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": _operation_id(ep), "summary": ep.summary, "tags": [ep.tag]}
    if ep.description:
        op["description"] = ep.description
    params: list[dict[str, Any]] = []
    for name, convertor in _PATH_PARAM.findall(ep.path):
        schema: dict[str, Any] = (
            {"type": "integer", "minimum": 1, "maximum": 2**62}
            if convertor == "int"
            else {"type": "string", "minLength": 1, "maxLength": 128}
        )
        params.append(
            {"name": name, "in": "path", "required": True, "schema": schema, "description": ep.path_doc.get(name, "")}
        )
    if ep.query is not None:
        struct = components[by_type[ep.query]["$ref"].rsplit("/", 1)[1]]
        required = set(struct.get("required", []))
        for name, schema in struct.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": _non_null(schema)})
    if ep.path == "/api/events":
        params.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "description": "resume after this alert_events id",
            }
        )
    if params:
        op["parameters"] = params
    if ep.body == "multipart":
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                                "description": ".csv or .xlsx",
                            }
                        },
                    }
                }
            },
        }
    elif ep.body is not None:
        op["requestBody"] = {
            "required": ep.body_required,
            "content": {"application/json": {"schema": by_type[ep.body]}},
        }
    responses: dict[str, Any] = {}
    for status in ep.statuses:
        entry: dict[str, Any] = {"description": _REASONS.get(status, "")}
        if status == ep.status and status != 204:
            if ep.media_type == "text/event-stream":
                entry["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
            elif ep.response is not None:
                entry["content"] = {"application/json": {"schema": by_type[ep.response]}}
        elif status >= 400:
            schema = by_type[Error]
            if status == 422 and ep.body == "multipart":
                schema = {"anyOf": [by_type[Error], {"$ref": _REF.format(name="ImportErrors")}]}
            entry["content"] = {"application/json": {"schema": schema}}
        responses[str(status)] = entry
    op["responses"] = responses
    if not ep.auth:
        op["security"] = []
    return op


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: ``X | None`` is published as ``X``."""
    out = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    options = out.pop("anyOf", None)
    if options is not None:
        kept = [o for o in options if o != {"type": "null"}]
        out.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    return out


def _operation_id(ep: Endpoint) -> str:
    return getattr(ep.handler, "__name__", ep.method.lower())
