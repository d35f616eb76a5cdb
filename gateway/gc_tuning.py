"""Keep Python's cyclic garbage collector out of the SOS path.

A full (generation 2) collection walks every tracked object: with the registry, the
detector index and the libraries loaded that took 35-65 ms in the gateway, long enough
to be most of an SOS's latency when it lands in one. What exists once the gateway has
started (modules, registry, index) lives until it stops, so it is moved out of the
collector's sight (``gc.freeze``) and later full collections only walk what came after.
Objects are still freed by reference counting as usual.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect what start-up left behind, then exempt the rest from later full collections.

    Called again after a registry reload: what was frozen is thawed first, so a replaced
    registry's cycles are collected rather than kept for ever.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
