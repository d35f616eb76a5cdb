"""Who is calling, and what they may see.

Passwords are hashed with scrypt (``hashlib.scrypt``, RFC 7914): memory-hard, so a
stolen users table costs an attacker RAM as well as time per guess, and it is in the
standard library, so there is no native dependency to build on the gateway's small
boxes. The parameters are stored with each hash, so they can be raised later and old
hashes still verify.

A session is a random 256-bit token; only its SHA-256 is stored, so reading the
sessions table does not let anyone log in. Sessions expire (``api.session_ttl_h``).
Failed logins are rows in ``login_failures`` (shared by every gateway instance); a
username from one client address, or a client address, past its limit in the window
gets 429. Each attempt is counted before its password is checked, so a burst of
parallel guesses is counted in full (``_reserve_attempt``).

Scope: ``Scope.alerts`` and ``Scope.elders`` return SQL predicates (over ``alerts a``
and ``elders e``) that every query adds, so an id from another grid simply matches
nothing and the answer is 404. A grid is (community, grid), never the grid's name
alone: every community has its 网格1. A grid-worker account from before accounts
carried a community is read as the only community's, and refused (403, saying how
to fix it) once there are several.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from gateway.api.errors import ApiError
from gateway.api.schemas import User
from gateway.api.settings import ApiConfig

COOKIE = "eldercare_session"
ROLES: tuple[str, ...] = ("hotline", "post_station", "grid_worker", "family", "admin")
EVERYTHING = frozenset({"hotline", "admin"})
STAFF = frozenset({"hotline", "post_station", "grid_worker", "admin"})
ADMIN = frozenset({"admin"})
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1  # ~16 MiB and ~50 ms per check


def hash_password(password: str, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R, p: int = _SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    """Checked for unknown usernames, so they take as long as known ones (no user enumeration by timing)."""
    return hash_password(secrets.token_hex(8))


def check_password_strength(password: str, username: str = "") -> str | None:
    """Why a new password is refused, or None.

    Length alone lets ``aaaaaaaaaa`` and ``password123`` through, the first guesses of
    any attacker. Refused too: a common password (``common_passwords.txt``, shipped in
    the package), including one only decorated (``P@ssw0rd2024!`` is ``password``),
    one character or a short pattern repeated, a run along the alphabet, digits or
    keyboard, digits only (a phone number or a date), the username itself.
    """
    if len(password) < 10:
        return "a password needs at least 10 characters"
    if len(password) > 1024:
        return "a password may have at most 1024 characters"
    lowered = password.lower()
    if any(lowered == (lowered[:k] * len(lowered))[: len(lowered)] for k in range(1, 5)):
        return "a password may not be one character or a short pattern repeated"
    if password.isdigit():
        return "a password may not be digits only (phone numbers and dates are guessed first)"
    if _is_run(lowered):
        return "a password may not be a run of neighbouring letters, digits or keys"
    if len(username) >= 4 and username.lower() in lowered:
        return "a password may not contain the username"
    core = _core(lowered)
    if lowered in _common() or core in _common() or core.translate(_LEET) in _common():
        return "this password is among the most common ones; choose a longer phrase of your own"
    return None


_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "1": "i", "!": "i", "3": "e", "$": "s", "5": "s", "7": "t"})
_ROWS = (
    "`1234567890-=",
    "qwertyuiop[]",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "abcdefghijklmnopqrstuvwxyz",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/",  # down the keyboard's columns
)


def _core(text: str) -> str:
    """The password without the digits and symbols people add around a word to pass a rule."""
    return text.strip("0123456789!@#$%^&*()_+-=.,?~ ")


def _is_run(text: str) -> bool:
    """Neighbours along the alphabet, the digits or a keyboard row, either way (``abcdefghij``, ``0987654321``)."""
    return any(text in row * 2 or text in row[::-1] * 2 for row in _ROWS)


@functools.cache
def _common() -> frozenset[str]:
    source = resources.files("gateway.api").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line.strip() for line in source.splitlines() if line.strip() and not line.startswith("#"))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """A logged-in user and the session they came with."""

    username: str
    role: str
    display_name: str
    language: str
    community: str | None
    grid: str | None
    elder_id: str | None
    session: bytes
    by_cookie: bool = False  # the token came from the cookie (a browser adds it by itself: check for CSRF)

    @property
    def actor(self) -> str:
        """How the user appears in the alert trail and in "taken by" messages (unique per user)."""
        return self.display_name

    def view(self) -> User:
        return User(
            username=self.username,
            role=self.role,  # type: ignore[arg-type]
            display_name=self.display_name,
            language=self.language,  # type: ignore[arg-type]
            community=self.community,
            grid=self.grid,
            elder_id=self.elder_id,
        )


class Scope:
    """SQL predicates limiting rows to what a principal may see."""

    @staticmethod
    def alerts(user: Principal) -> tuple[str, tuple[Any, ...]]:
        """Over ``alerts a LEFT JOIN elders e``; an alert's own community/grid, else its elder's."""
        if user.role in EVERYTHING:
            return "true", ()
        if user.role == "post_station":
            return "(a.community = %s OR (a.community IS NULL AND e.community = %s))", (user.community,) * 2
        if user.role == "grid_worker":
            return (
                "((a.grid = %s AND a.community = %s) OR (a.grid IS NULL AND e.grid = %s AND e.community = %s))",
                (user.grid, user.community or "") * 2,
            )
        return "a.elder_id = %s", (user.elder_id,)

    @staticmethod
    def elders(user: Principal) -> tuple[str, tuple[Any, ...]]:
        """Over ``elders e``."""
        if user.role in EVERYTHING:
            return "true", ()
        if user.role == "post_station":
            return "e.community = %s", (user.community,)
        if user.role == "grid_worker":
            return "(e.grid = %s AND e.community = %s)", (user.grid, user.community or "")
        return "e.elder_id = %s", (user.elder_id,)


class Authenticator:
    def __init__(self, pool: AsyncConnectionPool, settings: ApiConfig, clock_ms: Callable[[], int]) -> None:
        self.pool = pool
        self.settings = settings
        self.clock_ms = clock_ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock_ms() / 1000, UTC)

    async def authenticate(self, request: Request) -> Principal:
        token, by_cookie = _token_from(request)
        if not token:
            raise ApiError(
                401,
                "not_logged_in",
                "Log in first (a session cookie or a bearer token).",
                headers={"WWW-Authenticate": 'Bearer realm="eldercare"'},
            )
        digest = token_hash(token)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT s.expires_at, u.username, u.role, u.display_name, u.language, u.community, u.grid, "
                "u.elder_id FROM sessions s JOIN users u USING (username) WHERE s.token_hash = %s",
                (digest,),
            )
            row = await cur.fetchone()
        if row is None:
            raise ApiError(
                401,
                "not_logged_in",
                "The session is unknown or was ended; log in again.",
                headers={"WWW-Authenticate": 'Bearer realm="eldercare", error="invalid_token"'},
            )
        expires = row[0]
        if expires <= self.now():
            raise ApiError(
                401,
                "session_expired",
                "The session has expired; log in again.",
                headers={"WWW-Authenticate": 'Bearer realm="eldercare", error="invalid_token"'},
            )
        return await self._with_community(_principal(row[1:], digest, by_cookie=by_cookie))

    async def _with_community(self, user: Principal) -> Principal:
        """A grid-worker account without a community: the only community's, else refused (which 网格1?)."""
        if user.role != "grid_worker" or user.community is not None:
            return user
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT DISTINCT community FROM elders WHERE community <> '' LIMIT 2")
            found = [c for (c,) in await cur.fetchall()]
        if len(found) > 1:
            raise ApiError(
                403,
                "account_needs_community",
                f"The grid-worker account {user.username} has no community, and there are several "
                f"(each may have a grid called {user.grid}); an administrator sets it: "
                f"eldercare users community {user.username} <community>.",
            )
        return dataclasses.replace(user, community=found[0] if found else None)

    async def login(self, username: str, password: str, client: str) -> tuple[str, datetime, Principal]:
        now = self.now()
        attempt = await self._reserve_attempt(username, client, now)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT password_hash, username, role, display_name, language, community, grid, elder_id "
                "FROM users WHERE username = %s",
                (username,),
            )
            found = await cur.fetchone()
        stored = found[0] if found else _dummy_hash()
        ok = await asyncio.to_thread(verify_password, password, stored)
        if not ok or found is None:
            async with self.pool.connection() as conn, conn.transaction():  # the reserved attempt stays: a failure
                await conn.execute(
                    "DELETE FROM login_failures WHERE at < %s",
                    (now - timedelta(seconds=self.settings.login_window_s * 2),),
                )
                await audit(conn, username, "login_failed", None, {"client": client}, now)
            raise ApiError(401, "bad_credentials", "The username or password is wrong.")
        async with self.pool.connection() as conn, conn.transaction():
            token = secrets.token_urlsafe(32)
            expires = now + timedelta(hours=self.settings.session_ttl_h)
            await conn.execute(
                "INSERT INTO sessions (token_hash, username, created_at, expires_at, client) "
                "VALUES (%s, %s, %s, %s, %s)",
                (token_hash(token), username, now, expires, client),
            )
            await conn.execute(
                "DELETE FROM login_failures WHERE (username = %s AND client = %s) OR id = %s",
                (username, client, attempt),
            )
            await conn.execute("DELETE FROM sessions WHERE expires_at < %s", (now - timedelta(days=1),))
            await audit(conn, username, "login", None, {"client": client}, now)
        return token, expires, _principal(found[1:], token_hash(token))

    async def _reserve_attempt(self, username: str, client: str, now: datetime) -> int:
        """Count this attempt before the password is checked; 429 if it is one too many.

        The attempt is committed as a failure first and the window counted after, so of
        N simultaneous attempts the k-th to commit sees at least k rows: at most the
        limit get to scrypt, however many arrive at once, on however many gateways.
        A refused attempt removes its row again (a flood does not grow the table). The
        limit is per username *and* address, plus per address: a stranger guessing at
        the hotline's account locks out only themselves, never the operator.
        """
        since = now - timedelta(seconds=self.settings.login_window_s)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO login_failures (username, client, at) VALUES (%s, %s, %s) RETURNING id",
                (username, client, now),
            )
            row = await cur.fetchone()
            assert row is not None
            attempt = int(row[0])
            await conn.commit()
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM login_failures WHERE username = %s AND client = %s AND at > %s), "
                "(SELECT count(*) FROM login_failures WHERE client = %s AND at > %s)",
                (username, client, since, client, since),
            )
            counts = await cur.fetchone()
            assert counts is not None
            if counts[0] <= self.settings.login_max_failures and counts[1] <= self.settings.login_max_failures_ip:
                return attempt
            await conn.execute("DELETE FROM login_failures WHERE id = %s", (attempt,))
        retry = int(self.settings.login_window_s)
        raise ApiError(
            429,
            "too_many_attempts",
            f"Too many failed logins; try again in {max(1, retry // 60)} minutes.",
            headers={"Retry-After": str(retry)},
        )

    async def still_valid(self, user: Principal) -> bool:
        """For long streams: the session has not been ended or expired meanwhile."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM sessions WHERE token_hash = %s AND expires_at > %s", (user.session, self.now())
            )
            return await cur.fetchone() is not None

    async def logout(self, user: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM sessions WHERE token_hash = %s", (user.session,))
            await audit(conn, user.username, "logout", None, {}, self.now())


def _principal(row: Any, session: bytes, *, by_cookie: bool = False) -> Principal:
    username, role, display_name, language, community, grid, elder_id = row
    return Principal(
        username=username,
        role=role,
        display_name=display_name,
        language=language,
        community=community,
        grid=grid,
        elder_id=elder_id,
        session=session,
        by_cookie=by_cookie,
    )


def _token_from(request: Request) -> tuple[str | None, bool]:
    """The session token, and whether it came from the cookie rather than an Authorization header."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None, False
    return request.cookies.get(COOKIE) or None, True


async def audit(conn: Any, actor: str, action: str, target: str | None, detail: dict[str, Any], at: datetime) -> None:
    """One row in ``audit_log`` inside the caller's transaction: who changed what, and how."""
    from psycopg.types.json import Jsonb

    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (%s, %s, %s, %s, %s)",
        (at, actor, action, target, Jsonb(detail)),
    )
