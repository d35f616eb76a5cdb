"""``eldercare users``: console accounts."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the ``users`` command to the ``eldercare`` parser."""
    del sub
