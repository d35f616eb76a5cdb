"""Raw wrist acceleration at 50 Hz, in g, in the band's own frame: activities and falls.

A wrist at rest reads gravity (1 g) along whatever way the forearm points, plus sensor
noise; walking swings the arm at half the step cadence with a jolt at each heel strike;
sitting down turns the forearm onto the lap with a soft bump; a fall is a short free
fall (magnitude well under 1 g) while the arm turns, a sharp impact of a few g, a bounce,
and then either lying still with the wrist in a new orientation or, later, getting up.

Every generator returns an ``(n, 3)`` float64 array and takes a ``numpy`` generator, so
the signals are reproducible from a seed. ``accel_window`` wraps samples in the
contract's :class:`~devices.contracts.AccelWindow`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from devices.contracts import AccelWindow

RATE_HZ = 50
DT_MS = 1000 // RATE_HZ

Signal = NDArray[np.float64]

# Wrist orientations: the direction gravity reads in the band's frame (unit vectors).
ARM_HANGING = np.array([0.9, -0.3, -0.3]) / np.linalg.norm([0.9, -0.3, -0.3])
FOREARM_ON_LAP = np.array([0.15, -0.25, 0.95]) / np.linalg.norm([0.15, -0.25, 0.95])
LYING_POSES = tuple(
    v / np.linalg.norm(v)
    for v in (
        np.array([-0.2, -0.4, -0.9]),
        np.array([-0.1, 0.95, 0.2]),
        np.array([0.3, 0.2, 0.93]),
        np.array([-0.6, 0.1, -0.8]),
        np.array([0.1, -0.97, 0.2]),
    )
)


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def _near(v: NDArray[np.float64], spread: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """An orientation a little different from ``v`` (people never hold their arm the same way)."""
    return _unit(v + rng.normal(0.0, spread, 3))


def still(
    seconds: float, rng: np.random.Generator, pose: NDArray[np.float64] | None = None, tremor_g: float = 0.01
) -> Signal:
    """A wrist at rest (sitting, lying, asleep): gravity, sensor noise and a slow drift."""
    n = max(1, round(seconds * RATE_HZ))
    g = _near(ARM_HANGING if pose is None else pose, 0.03, rng)
    drift = np.cumsum(rng.normal(0.0, 0.0008, (n, 3)), axis=0)
    out: Signal = g[None, :] + drift + rng.normal(0.0, tremor_g, (n, 3))
    return out


def walking(
    seconds: float, rng: np.random.Generator, cadence_spm: float | None = None, heel_strike_g: float | None = None
) -> Signal:
    """Arm swing at half the step cadence and a jolt at every heel strike.

    Older people walk at 90-115 steps a minute with smaller swings and softer strikes than
    the young; strikes still reach 1.5-2 g now and then, which the fall model must reject.
    """
    n = max(1, round(seconds * RATE_HZ))
    t = np.arange(n) / RATE_HZ
    steps_per_s = (cadence_spm if cadence_spm is not None else rng.uniform(90, 115)) / 60.0
    strike = heel_strike_g if heel_strike_g is not None else rng.uniform(0.4, 1.0)
    swing = np.radians(rng.uniform(12, 28)) * np.sin(2 * np.pi * steps_per_s / 2 * t + rng.uniform(0, 6.3))
    base = _near(ARM_HANGING, 0.05, rng)
    g = np.stack(
        [
            np.cos(swing) * base[0] - np.sin(swing) * base[1],
            np.sin(swing) * base[0] + np.cos(swing) * base[1],
            np.full(n, base[2]),
        ],
        axis=1,
    )
    phase = (t * steps_per_s + rng.uniform()) % 1.0
    jolt = strike * np.exp(-(((phase - 0.1) / 0.035) ** 2)) * rng.uniform(0.7, 1.15, n)
    bob = 0.08 * np.sin(2 * np.pi * steps_per_s * t)
    out: Signal = (
        g * (1.0 + bob)[:, None] + jolt[:, None] * _unit(g + np.array([0.0, 0.0, 0.4])) + rng.normal(0.0, 0.03, (n, 3))
    )
    return out


def _turn(a: NDArray[np.float64], b: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """Orientations turning smoothly from ``a`` to ``b`` over ``n`` samples."""
    k = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n)))[:, None]
    return _unit((1 - k) * a + k * b)


def sitting_down(rng: np.random.Generator, before_s: float = 3.0, after_s: float = 4.0) -> Signal:
    """Standing, then lowering onto a chair: the forearm turns onto the lap, a soft bump, rest."""
    stand = still(before_s, rng, ARM_HANGING, tremor_g=0.02)
    lap = _near(FOREARM_ON_LAP, 0.08, rng)
    n_turn = round(rng.uniform(0.8, 1.5) * RATE_HZ)
    lower = _turn(stand[-1] / np.linalg.norm(stand[-1]), lap, n_turn)
    lower *= (1.0 - 0.15 * np.sin(np.linspace(0.0, np.pi, n_turn)))[:, None]  # easing down
    bump_g = rng.uniform(0.3, 1.4)
    tb = np.arange(15) / RATE_HZ
    bump = lap[None, :] * (1.0 + bump_g * np.exp(-tb / 0.04) * np.cos(2 * np.pi * 6 * tb))[:, None]
    rest = still(after_s, rng, lap)
    out: Signal = np.concatenate([stand, lower, bump, rest]) + rng.normal(
        0.0, 0.015, (stand.shape[0] + n_turn + 15 + rest.shape[0], 3)
    )
    return out


def getting_up(rng: np.random.Generator, pose: NDArray[np.float64], seconds: float = 6.0) -> Signal:
    """From lying: roll, push up with the arm (lots of movement), stand, first steps."""
    n_push = round(2.5 * RATE_HZ)
    turn = _turn(pose, ARM_HANGING, n_push)
    effort = 0.35 * np.sin(np.linspace(0.0, 6 * np.pi, n_push))[:, None] * rng.normal(0.0, 1.0, (1, 3))
    push = turn + effort + rng.normal(0.0, 0.08, (n_push, 3))
    steps = walking(max(0.5, seconds - 2.5), rng, cadence_spm=80, heel_strike_g=0.5)
    out: Signal = np.concatenate([push, steps])
    return out


@dataclass(frozen=True, slots=True)
class FallSignal:
    """A fall recording: samples, where the impact peak is, and the pose lying afterwards."""

    samples: Signal
    impact_index: int
    lying_pose: NDArray[np.float64]


def fall(
    rng: np.random.Generator,
    *,
    before_s: float = 5.0,
    after_s: float = 6.0,
    walking_before: bool | None = None,
    recover_after_s: float | None = None,
) -> FallSignal:
    """Walking or standing, a trip: 0.2-0.45 s of free fall while the arm turns, an impact of
    3.6-6.5 g over a few samples, a bounce, then lying still; with ``recover_after_s``, getting up
    that long after the impact (the recording then runs until ``after_s`` past getting up).
    """
    moving = bool(rng.random() < 0.6) if walking_before is None else walking_before
    pre = walking(before_s, rng) if moving else still(before_s, rng, ARM_HANGING, tremor_g=0.03)
    start = _unit(pre[-5:].mean(axis=0))
    lying = _near(LYING_POSES[int(rng.integers(len(LYING_POSES)))], 0.1, rng)
    n_ff = round(rng.uniform(0.2, 0.45) * RATE_HZ)
    free_fall = _turn(start, lying, n_ff) * np.linspace(rng.uniform(0.6, 0.9), rng.uniform(0.15, 0.45), n_ff)[:, None]
    hit = _unit(lying + rng.normal(0.0, 0.4, 3))
    side = _unit(np.cross(hit, start) + 1e-6)
    peak = rng.uniform(3.6, 6.5)
    mags = peak * np.array([0.45, 0.75, 1.0, 0.65, 0.3, 0.5, 0.35, 0.3]) * rng.uniform(0.85, 1.15, 8)
    mags[2] = peak
    dirs = np.array([hit, hit, hit, _unit(hit + side), -side, _unit(lying - side), lying, lying])
    impact = dirs * mags[:, None]
    tb = np.arange(30) / RATE_HZ
    wobble = rng.uniform(0.2, 0.5) * np.exp(-tb / 0.2) * np.sin(2 * np.pi * rng.uniform(3, 5) * tb)
    bounce = lying[None, :] + wobble[:, None] * _unit(side + hit)
    head = np.concatenate([pre, free_fall, impact, bounce])
    impact_index = pre.shape[0] + n_ff + 2
    if recover_after_s is None:
        tail = still(after_s - (head.shape[0] - impact_index) / RATE_HZ, rng, lying, tremor_g=0.006)
        samples = np.concatenate([head, tail])
    else:
        lie = still(max(0.5, recover_after_s - (head.shape[0] - impact_index) / RATE_HZ), rng, lying, 0.006)
        samples = np.concatenate([head, lie, getting_up(rng, lying, after_s)])
    return FallSignal(samples, impact_index, lying)


def activity(kind: str, seconds: float, rng: np.random.Generator) -> Signal:
    """Samples of an everyday activity: ``still``, ``sleeping``, ``sitting``, ``walking``."""
    if kind == "walking":
        return walking(seconds, rng)
    if kind == "sleeping":
        return still(seconds, rng, _near(LYING_POSES[2], 0.2, rng), tremor_g=0.004)
    if kind == "sitting":
        return still(seconds, rng, FOREARM_ON_LAP, tremor_g=0.01)
    if kind == "still":
        return still(seconds, rng, ARM_HANGING, tremor_g=0.015)
    raise ValueError(f"unknown activity {kind!r} (still, sleeping, sitting, walking)")


def accel_window(samples: Signal) -> AccelWindow:
    """The contract's window: rounded to the milli-g a band reports, clipped to its +-16 g range."""
    clipped = np.clip(np.round(samples, 3), -16.0, 16.0)
    return AccelWindow(rate_hz=float(RATE_HZ), samples=clipped.tolist())
