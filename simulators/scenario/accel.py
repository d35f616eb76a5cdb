"""Raw wrist acceleration windows (50 Hz, in g) a band would send: a fall, or walking.

The fall is shaped like a real one as the gateway's model expects it: standing with
the arm moving, about 0.3 s of free fall while the wrist turns, a 4 g impact, a short
bounce, then lying still in a new orientation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

RATE_HZ = 50
WINDOW_S = 20.0
_ARM_DOWN = np.array([0.9, -0.3, -0.3]) / np.linalg.norm([0.9, -0.3, -0.3])
_LYING = np.array([-0.2, -0.4, -0.9]) / np.linalg.norm([-0.2, -0.4, -0.9])


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def _still(n: int, g: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    return g[None, :] + rng.normal(0.0, 0.01, (n, 3))


def fall_window(seed: int = 1, before_s: float = 10.0) -> tuple[NDArray[np.float64], float]:
    """20 s of samples with a fall, and the offset in seconds of its 4 g impact."""
    rng = np.random.default_rng(seed)
    n_before = int(before_s * RATE_HZ)
    t = np.arange(n_before) / RATE_HZ
    stand = _still(n_before, _ARM_DOWN, rng)
    stand += 0.15 * np.sin(2 * np.pi * t)[:, None] * np.array([0.3, 1.0, 0.5])
    k = np.linspace(0.0, 1.0, 15)[:, None]
    free_fall = _unit((1 - k) * _ARM_DOWN + k * _LYING) * np.linspace(0.8, 0.4, 15)[:, None]
    hit = _unit(_LYING + np.array([0.0, 0.6, 0.0]))
    side = _unit(np.cross(hit, _ARM_DOWN))
    mags = np.array([1.8, 3.0, 4.0, 2.6, 1.2, 2.2, 1.6, 1.3])
    dirs = np.array([hit, hit, hit, _unit(hit + side), -side, _unit(_LYING - side), _LYING, _LYING])
    impact = dirs * mags[:, None]
    tb = np.arange(30) / RATE_HZ
    wobble = 0.4 * np.exp(-tb / 0.2) * np.sin(2 * np.pi * 4 * tb)
    bounce = _LYING[None, :] + wobble[:, None] * _unit(side + hit)
    head = np.concatenate([stand, free_fall, impact, bounce])
    lying = _still(int(WINDOW_S * RATE_HZ) - head.shape[0], _LYING, rng)
    return np.concatenate([head, lying]), (n_before + 15 + 2) / RATE_HZ


def walking_window(seed: int = 2, seconds: float = WINDOW_S) -> NDArray[np.float64]:
    """Arm swing at 0.9 Hz with a heel strike every step: clearly moving, no fall."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    ang = np.radians(30.0) * np.sin(2 * np.pi * 0.9 * t)
    g = np.stack([np.cos(ang) * 0.95, np.sin(ang) * 0.95, -0.3 * np.ones(n)], axis=1)
    phase = (t * 1.8) % 1.0
    jolt = 1.3 * np.exp(-(((phase - 0.05) / 0.03) ** 2))
    out: NDArray[np.float64] = g + jolt[:, None] * _unit(g) + rng.normal(0.0, 0.03, (n, 3))
    return out


def as_payload(samples: NDArray[np.float64]) -> dict[str, object]:
    """The ``accel`` field of a wristband telemetry payload."""
    return {"rate_hz": RATE_HZ, "samples": np.round(samples, 3).tolist()}
