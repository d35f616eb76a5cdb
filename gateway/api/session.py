"""Log in, log out, who am I. The token comes back both as a cookie (the console) and in the body (scripts)."""

from __future__ import annotations

from starlette.responses import Response

from gateway.api.auth import COOKIE
from gateway.api.http import Call, json_response
from gateway.api.request_checks import client_address
from gateway.api.schemas import LoginBody, LoginResult, User


async def login(call: Call) -> Response:
    body: LoginBody = call.body
    token, expires, user = await call.ctx.auth.login(
        body.username, body.password, client_address(call.request, call.ctx.settings.trusted_proxies)
    )
    response = json_response(LoginResult(token=token, expires_at=expires, user=user.view()))
    max_age = max(1, int((expires - call.ctx.now()).total_seconds()))
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=call.ctx.settings.cookie_secure,
    )
    return response


async def logout(call: Call) -> Response:
    await call.ctx.auth.logout(call.who)
    call.ctx.feed.end_session(call.who.session)  # this process's live streams stop now; others at their next check
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=call.ctx.settings.cookie_secure)
    return response


async def me(call: Call) -> User:
    return call.who.view()
