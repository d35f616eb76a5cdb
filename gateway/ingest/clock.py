"""The wall clock in milliseconds, in a module of its own.

The alert worker needs it but not the batcher's imports (numpy, through the pipeline's
batches): each import its start does not wait for brings an SOS's page nearer (issue 19).
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
