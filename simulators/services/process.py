"""What the private services share: free ports, waiting for one to listen, running as another user.

When we are root, initdb and pg_ctl run as ``postgres`` and the broker as ``mosquitto``,
as the packaged services do; their folders must then be reachable by those users.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path


class LocalServiceError(RuntimeError):
    """A private service could not be started; the message says which and why."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise LocalServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def let_through(workdir: Path) -> None:
    """Give each parent of ``workdir`` that we own the search bit, so another user can reach it."""
    for parent in workdir.parents:
        st = parent.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            os.chmod(parent, (st.st_mode & 0o7777) | 0o011)
