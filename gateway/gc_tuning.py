"""Keep Python's cyclic garbage collector out of the SOS path.

A full (generation 2) collection walks every tracked object: with the registry, the
detector index and the libraries loaded that took 35-65 ms in the gateway, long enough
to be most of an SOS's latency when it lands in one. What exists once the gateway has
started (modules, registry, index) lives until it stops, so it is moved out of the
collector's sight (``gc.freeze``) and later full collections only walk what came after.
Objects are still freed by reference counting as usual.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc


def freeze_long_lived() -> None:
    """Collect what start-up left behind, then exempt the rest from later full collections.

    Called again after a registry reload: what was frozen is thawed first, so a replaced
    registry's cycles are collected rather than kept for ever.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def return_freed_memory() -> None:
    """Give the heap that start-up freed back to the system.

    Reading a 12,000-elder registry file builds some 150 MB of Python objects that are
    dropped once the registry is checked; glibc keeps the freed pages in its arenas, so
    the gateway went on holding them (issue 19: "leaves no extra memory behind").
    ``malloc_trim`` returns them; elsewhere (musl, macOS) this only collects.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


FREEZE_AFTER_S = 3.0


def freeze_soon() -> None:
    """``freeze_long_lived`` a few seconds from now, on the running loop.

    Its full collection takes 50-100 ms with 12,000 elders loaded: at start-up that was
    time the broker's queued SOS waited before the first read (issue 19).
    """
    asyncio.get_running_loop().call_later(FREEZE_AFTER_S, freeze_long_lived)
