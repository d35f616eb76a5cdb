"""One log format for every process of the gateway (the supervisor, the alert worker, the CLI)."""

from __future__ import annotations

import logging


def setup_logging(level: str) -> None:
    """Configure the root logger once, at a process's start."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
