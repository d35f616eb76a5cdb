"""Errors the console API answers with: one exception carrying status, code and detail."""

from __future__ import annotations

import msgspec


class ApiError(Exception):
    """An error answer; ``extra`` fields are added to the JSON body."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        body: msgspec.Struct | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.body = body


def not_found(what: str) -> ApiError:
    """Unknown and out of scope look the same: an id guessed from outside tells nothing."""
    return ApiError(404, "not_found", f"There is no {what} you may see.")


def too_large(limit: int) -> ApiError:
    # close: the rest of the body is not read, so the connection cannot carry another request
    return ApiError(
        413, "too_large", f"The upload is larger than {limit // 1024} KiB.", headers={"Connection": "close"}
    )
