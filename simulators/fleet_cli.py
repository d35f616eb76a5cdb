"""``eldercare simulate``: a large simulated fleet, the load generator."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the ``simulate`` command to the ``eldercare`` parser."""
    del sub
