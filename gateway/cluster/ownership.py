"""Who owns what: rendezvous hashing over the live instances, pure functions."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


def weight(member: str, key: bytes) -> int:
    """Rendezvous weight of ``member`` for ``key``: stable across processes and restarts."""
    return int.from_bytes(hashlib.blake2b(member.encode() + b"\x00" + key, digest_size=8).digest(), "big")


def owner_of(key: bytes, members: Sequence[str]) -> str | None:
    """The member with the highest weight for ``key`` (highest-random-weight hashing).

    A member joining takes about 1/n of the keys from each of the others; one leaving
    spreads its keys over the rest; no other key moves.
    """
    return max(members, key=lambda m: (weight(m, key), m)) if members else None


@dataclass(frozen=True, slots=True)
class Ownership:
    members: tuple[str, ...]
    me: str

    def owns(self, key: bytes) -> bool:
        # no members known yet (no database at start): own everything; twice is safe, never is not
        return not self.members or owner_of(key, self.members) == self.me


def topic_device(topic: bytes) -> bytes:
    """``eldercare/v1/{type}/{device_id}/{channel}`` -> device id (b"" for anything else)."""
    parts = topic.split(b"/")
    return parts[3] if len(parts) == 5 else b""
