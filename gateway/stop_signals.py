"""SIGTERM and SIGINT, while no event loop handles them, recorded as a request to stop.

A service manager stops the gateway's whole process group (systemd's default), and
Ctrl-C in a terminal does the same; either can land while a process is still importing
or after ``asyncio.run`` has put Python's defaults back. Then the default would kill
the process mid-flush or raise ``KeyboardInterrupt`` with a traceback; recorded, the
signal becomes the same clean stop as one the event loop receives.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def record_stop_signals() -> list[int]:
    """Install recording handlers; the list returned fills with the signals that arrive."""
    received: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    return received
