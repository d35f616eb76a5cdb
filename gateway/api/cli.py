"""``eldercare users``: console accounts (add, list, passwd, remove).

Passwords are read from the terminal without echo, or from standard input with
``--password-stdin`` (for scripts); never from the command line, where they would end
up in shell history and in ``ps``. Every change is written to ``audit_log`` with the
operating-system user who made it, and changing or removing an account ends its
sessions.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

ROLES = ("hotline", "post_station", "grid_worker", "family", "admin")


def register(sub: Any) -> None:
    """Add the ``users`` command to the ``eldercare`` parser."""
    users = sub.add_parser("users", help="console accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="create an account (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--display-name", help="how the user appears in the alert trail (default: the username)")
    add.add_argument("--language", choices=("zh", "en"), default="zh")
    add.add_argument("--community", help="post station, grid worker: its community")
    add.add_argument("--grid", help="grid worker: its grid (in its community: every community may have a 网格1)")
    add.add_argument("--elder", help="family: the elder's id")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=cmd_users)
    users_sub.add_parser("list", help="accounts and their scope").set_defaults(func=cmd_users)
    passwd = users_sub.add_parser("passwd", help="set a new password (ends the user's sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(func=cmd_users)
    community = users_sub.add_parser("community", help="set the community of a grid worker or post station")
    community.add_argument("username")
    community.add_argument("community")
    community.set_defaults(func=cmd_users)
    remove = users_sub.add_parser("remove", help="delete an account and its sessions")
    remove.add_argument("username")
    remove.set_defaults(func=cmd_users)


def _read_password(args: argparse.Namespace) -> str:
    from gateway.api.auth import check_password_strength

    if args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise _UsersError("the passwords differ")
    problem = check_password_strength(password, getattr(args, "username", ""))
    if problem:
        raise _UsersError(problem)
    return password


def _only_community(conn: Any, grid: str) -> str | None:
    """The community of a grid worker added without one: the only one there is, else refused."""
    found = [c for (c,) in conn.execute("SELECT DISTINCT community FROM elders WHERE community <> '' LIMIT 2")]
    if len(found) > 1:
        raise _UsersError(f"a grid_worker account needs --community: several communities may have a grid {grid}")
    return found[0] if found else None


class _UsersError(Exception):
    """A refused change; the message is printed."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def cmd_users(args: argparse.Namespace) -> int:
    import psycopg

    from gateway.config import load_config_or_default
    from gateway.settings import conninfo, dsn_with_password, storage_policy
    from gateway.storage.schema import upgrade

    config = load_config_or_default(args.config)
    dsn, kwargs = conninfo(config)
    dsn = dsn_with_password(dsn, kwargs)
    upgrade(dsn, storage_policy(config))
    try:
        with psycopg.connect(dsn) as conn:
            return _run(conn, args)
    except _UsersError as error:
        print(f"users: {error}", file=sys.stderr)
        return 1


def _run(conn: Any, args: argparse.Namespace) -> int:
    from psycopg.types.json import Jsonb

    from gateway.api.auth import hash_password

    command = args.users_command
    if command == "list":
        rows = conn.execute(
            "SELECT username, role, display_name, coalesce(community, ''), coalesce(grid, ''), "
            "coalesce(elder_id, ''), (SELECT count(*) FROM sessions s WHERE s.username = u.username "
            "AND s.expires_at > now()) FROM users u ORDER BY username"
        ).fetchall()
        print(f"{'username':<20} {'role':<13} {'display name':<16} scope")
        for username, role, display, community, grid, elder, live in rows:
            scope = f"{community or '(no community)'} / {grid}" if grid else community or elder or "everything"
            print(f"{username:<20} {role:<13} {display:<16} {scope}  ({live} active session(s))")
        print(f"{len(rows)} user(s)")
        return 0
    exists = conn.execute("SELECT 1 FROM users WHERE username = %s", (args.username,)).fetchone() is not None
    if command == "add":
        if exists:
            raise _UsersError(f"{args.username} exists; use passwd to change the password")
        scope = {
            "post_station": ("community", args.community),
            "grid_worker": ("grid", args.grid),
            "family": ("elder", args.elder),
        }.get(args.role)
        if scope and not scope[1]:
            raise _UsersError(f"a {args.role} account needs --{scope[0]}")
        if args.role == "grid_worker" and not args.community:
            args.community = _only_community(conn, args.grid)
        password = _read_password(args)
        display = args.display_name or args.username
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO users (username, password_hash, role, display_name, language, community, grid, "
                    "elder_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        args.username,
                        hash_password(password),
                        args.role,
                        display,
                        args.language,
                        args.community if args.role in ("post_station", "grid_worker") else None,
                        args.grid if args.role == "grid_worker" else None,
                        args.elder if args.role == "family" else None,
                    ),
                )
                conn.execute(
                    "INSERT INTO audit_log (actor, action, target, detail) VALUES (%s, 'user.add', %s, %s)",
                    (_actor(), args.username, Jsonb({"role": args.role, "display_name": display})),
                )
        except Exception as error:
            import psycopg

            if isinstance(error, psycopg.errors.UniqueViolation):
                raise _UsersError(f"the display name {display!r} is taken; pick another") from None
            if isinstance(error, psycopg.errors.CheckViolation):
                raise _UsersError("a username is 2 to 64 letters, digits, '_', '.', '@' or '-'") from None
            raise
        print(f"added {args.username} ({args.role})")
        return 0
    if not exists:
        raise _UsersError(f"no user {args.username}")
    if command == "community":
        role = conn.execute("SELECT role FROM users WHERE username = %s", (args.username,)).fetchone()[0]
        if role not in ("grid_worker", "post_station"):
            raise _UsersError(f"{args.username} is a {role}: only grid workers and post stations have a community")
        with conn.transaction():
            conn.execute("UPDATE users SET community = %s WHERE username = %s", (args.community, args.username))
            conn.execute("DELETE FROM sessions WHERE username = %s", (args.username,))
            conn.execute(
                "INSERT INTO audit_log (actor, action, target, detail) VALUES (%s, 'user.community', %s, %s)",
                (_actor(), args.username, Jsonb({"community": args.community})),
            )
        print(f"{args.username} now covers community {args.community}; their sessions are ended")
        return 0
    if command == "passwd":
        password = _read_password(args)
        with conn.transaction():
            conn.execute(
                "UPDATE users SET password_hash = %s, password_changed_at = now() WHERE username = %s",
                (hash_password(password), args.username),
            )
            conn.execute("DELETE FROM sessions WHERE username = %s", (args.username,))
            conn.execute(
                "INSERT INTO audit_log (actor, action, target) VALUES (%s, 'user.passwd', %s)",
                (_actor(), args.username),
            )
        print(f"password of {args.username} changed; their sessions are ended")
        return 0
    with conn.transaction():
        conn.execute("DELETE FROM users WHERE username = %s", (args.username,))
        conn.execute(
            "INSERT INTO audit_log (actor, action, target) VALUES (%s, 'user.remove', %s)", (_actor(), args.username)
        )
    print(f"removed {args.username}")
    return 0
