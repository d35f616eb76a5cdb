"""``eldercare scenario run FILE...``: scripted worlds played against a live gateway."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the ``scenario`` command to the ``eldercare`` parser."""
    del sub
