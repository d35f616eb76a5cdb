"""Where an elder is during the day: a street grid around home, walks, dwell times, wandering.

Positions are metres east and north of the elder's home door (``to_latlon`` turns them
into WGS-84 degrees). Streets run east-west and north-south every ``BLOCK_M`` metres,
with home and every place in the middle of a block, so a trip leaves through the
compound gate, follows the streets around corners, and enters the destination the same
way. A day is a list of :class:`Segment` (asleep, at home, walking, visiting, charging),
each with its polyline and times; :func:`plan_day` writes one from a seeded generator,
:func:`wander` a dementia walk that keeps going away from home, and :func:`sample_plan`
turns a day into arrays on a fixed grid for the fleet's vectorised replay.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

BLOCK_M = 120.0
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
M_PER_DEG_LAT = 110_574.0

Kind = Literal["sleep", "home", "walk", "visit", "charging", "wander", "lying"]
# Activity codes shared with the vitals model and the fleet's arrays.
SITTING, WALKING, SLEEPING, LYING, OFF_WRIST = 0, 1, 2, 3, 4
ACTIVITY: dict[str, int] = {
    "sleep": SLEEPING,
    "home": SITTING,
    "walk": WALKING,
    "visit": SITTING,
    "charging": OFF_WRIST,
    "wander": WALKING,
    "lying": LYING,
}

Points = NDArray[np.float64]  # (k, 2): east, north in metres


def to_latlon(
    home_lat: float, home_lon: float, east_m: NDArray[np.float64] | float, north_m: NDArray[np.float64] | float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Degrees for offsets in metres around ``home`` (flat-earth; fine within a few km)."""
    lat = home_lat + np.asarray(north_m) / M_PER_DEG_LAT
    lon = home_lon + np.asarray(east_m) / (111_320.0 * math.cos(math.radians(home_lat)))
    return lat, lon


@dataclass(frozen=True, slots=True)
class Place:
    """Somewhere the elder goes: a block's middle, indoors or not, how long they stay."""

    name: str
    east_m: float
    north_m: float
    indoor: bool
    dwell_s: tuple[float, float]


def _mid_block(bx: int, by: int) -> tuple[float, float]:
    return bx * BLOCK_M, by * BLOCK_M


def neighbourhood(rng: np.random.Generator) -> dict[str, Place]:
    """Home and the usual places of an elder's week, a few blocks away in random directions."""

    def block(lo: int, hi: int) -> tuple[float, float]:
        while True:
            bx, by = (int(v) for v in rng.integers(-hi, hi + 1, 2))
            if lo <= abs(bx) + abs(by) <= hi:
                return _mid_block(bx, by)

    return {
        "home": Place("home", 0.0, 0.0, True, (0.0, 0.0)),
        "market": Place("market", *block(2, 5), True, (900.0, 2400.0)),
        "park": Place("park", *block(2, 4), False, (1200.0, 3600.0)),
        "post_station": Place("post_station", *block(1, 3), True, (1800.0, 5400.0)),
        "clinic": Place("clinic", *block(3, 6), True, (1200.0, 3000.0)),
    }


def _gate(east: float, north: float) -> tuple[float, float]:
    """Where a mid-block place meets the street south of it."""
    return east, north - BLOCK_M / 2


def street_route(a: tuple[float, float], b: tuple[float, float], rng: np.random.Generator) -> Points:
    """Walking route from place ``a`` to place ``b`` along the street grid (both mid-block)."""
    ga, gb = _gate(*a), _gate(*b)
    half = BLOCK_M / 2
    # nearest corners along the street each gate is on (streets at multiples of BLOCK_M + half)
    ca = (ga[0] + (half if gb[0] >= ga[0] else -half), ga[1])
    cb = (gb[0] + (half if ga[0] > gb[0] else -half), gb[1])
    turn = (cb[0], ca[1]) if rng.random() < 0.5 else (ca[0], cb[1])
    side = rng.uniform(-4.0, 4.0)  # which side of the street, roughly
    pts = [a, ga, (ca[0], ca[1] + side), (turn[0] + side, turn[1] + side), (cb[0] + side, cb[1]), gb, b]
    return _dedupe(np.array(pts, dtype=np.float64))


def route_home(position: tuple[float, float], home: tuple[float, float], rng: np.random.Generator) -> Points:
    """From anywhere on or near the streets back to the home door: to the nearest corner, then
    along the grid to the corner by the home gate."""
    half = BLOCK_M / 2
    corner = (
        round((position[0] - half) / BLOCK_M) * BLOCK_M + half,
        round((position[1] - half) / BLOCK_M) * BLOCK_M + half,
    )
    gate = _gate(*home)
    home_corner = (gate[0] + (half if corner[0] > gate[0] else -half), gate[1])
    turn = (corner[0], home_corner[1]) if rng.random() < 0.5 else (home_corner[0], corner[1])
    return _dedupe(np.array([position, corner, turn, home_corner, gate, home], dtype=np.float64))


def _dedupe(pts: Points) -> Points:
    keep = np.r_[True, np.linalg.norm(np.diff(pts, axis=0), axis=1) > 0.01]
    out: Points = pts[keep]
    return out


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of the day: ``kind`` from ``start_ms`` to ``end_ms`` along ``points``."""

    kind: Kind
    start_ms: int
    end_ms: int
    points: Points
    indoor: bool
    place: str = ""

    @property
    def activity(self) -> int:
        return ACTIVITY[self.kind]

    def position(self, t_ms: int) -> tuple[float, float]:
        """Position at ``t_ms``: constant speed along the polyline."""
        if self.points.shape[0] == 1 or t_ms <= self.start_ms:
            return float(self.points[0, 0]), float(self.points[0, 1])
        if t_ms >= self.end_ms:
            return float(self.points[-1, 0]), float(self.points[-1, 1])
        seg = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        along = np.r_[0.0, np.cumsum(seg)]
        d = along[-1] * (t_ms - self.start_ms) / (self.end_ms - self.start_ms)
        e = float(np.interp(d, along, self.points[:, 0]))
        n = float(np.interp(d, along, self.points[:, 1]))
        return e, n


def _stay(kind: Kind, start: int, end: int, place: Place) -> Segment:
    return Segment(kind, start, end, np.array([[place.east_m, place.north_m]]), place.indoor, place.name)


def walk(start_ms: int, route: Points, speed_mps: float, kind: Kind = "walk", place: str = "") -> Segment:
    length = float(np.linalg.norm(np.diff(route, axis=0), axis=1).sum()) if route.shape[0] > 1 else 0.0
    return Segment(kind, start_ms, start_ms + max(1000, round(length / speed_mps * 1000)), route, False, place)


@dataclass(frozen=True, slots=True)
class Habits:
    """An elder's daily routine: when they wake and sleep, how often they go out, how fast."""

    wake_h: tuple[float, float] = (5.5, 7.0)
    sleep_h: tuple[float, float] = (21.0, 22.5)
    charge_h: tuple[float, float] = (19.5, 20.5)  # the band comes off to charge for about an hour
    speed_mps: tuple[float, float] = (0.75, 1.05)
    outings: tuple[tuple[str, float, float, float], ...] = (
        # place, earliest hour, latest hour to set off, probability on a given day
        ("park", 6.5, 8.0, 0.6),
        ("market", 8.5, 10.5, 0.7),
        ("post_station", 14.0, 15.0, 0.3),
        ("clinic", 9.0, 10.0, 0.1),
        ("park", 15.5, 17.0, 0.4),
    )


def plan_day(
    day_start_ms: int, rng: np.random.Generator, places: dict[str, Place], habits: Habits | None = None
) -> list[Segment]:
    """The segments of one day from local midnight ``day_start_ms`` to the next midnight."""
    h = habits or Habits()
    home = places["home"]
    segments: list[Segment] = []
    t = day_start_ms
    wake = day_start_ms + round(rng.uniform(*h.wake_h) * HOUR_MS)
    segments.append(_stay("sleep", t, wake, home))
    t = wake
    speed = rng.uniform(*h.speed_mps)
    charge = day_start_ms + round(rng.uniform(*h.charge_h) * HOUR_MS)
    for name, earliest, latest, p in h.outings:
        if rng.random() >= p or name not in places:
            continue
        leave = max(t + 60_000, day_start_ms + round(rng.uniform(earliest, latest) * HOUR_MS))
        place = places[name]
        there = walk(
            leave, street_route((home.east_m, home.north_m), (place.east_m, place.north_m), rng), speed, place=name
        )
        stay_end = there.end_ms + round(rng.uniform(*place.dwell_s) * 1000)
        back = walk(
            stay_end, street_route((place.east_m, place.north_m), (home.east_m, home.north_m), rng), speed, place="home"
        )
        if back.end_ms >= charge - 600_000:
            continue
        segments.append(_stay("home", t, leave, home))
        segments += [there, _stay("visit", there.end_ms, stay_end, place), back]
        t = back.end_ms
    charged = charge + round(rng.uniform(0.8, 1.3) * HOUR_MS)
    sleep = max(charged + 300_000, day_start_ms + round(rng.uniform(*h.sleep_h) * HOUR_MS))
    segments += [
        _stay("home", t, charge, home),
        _stay("charging", charge, charged, home),
        _stay("home", charged, sleep, home),
        _stay("sleep", sleep, day_start_ms + DAY_MS, home),
    ]
    return [s for s in segments if s.end_ms > s.start_ms]


def wander(
    start_ms: int, origin: tuple[float, float], rng: np.random.Generator, hops: int = 80, speed_mps: float = 0.7
) -> Segment:
    """A dementia walk: out of the gate, street after street, mostly away from home."""
    gate = _gate(*origin)
    half = BLOCK_M / 2
    corner = (gate[0] + half, gate[1])
    pts = [origin, gate, corner]
    heading = (1, 0)
    for _ in range(hops):
        options = [(1, 0), (-1, 0), (0, 1), (0, -1)]
        options.remove((-heading[0], -heading[1]))  # no turning back at a corner
        weights = []
        for dx, dy in options:
            nx, ny = pts[-1][0] + dx * BLOCK_M, pts[-1][1] + dy * BLOCK_M
            weights.append(1.0 + max(0.0, math.hypot(nx, ny) - math.hypot(*pts[-1])) / 40.0)
        w = np.array(weights) / sum(weights)
        heading = options[int(rng.choice(len(options), p=w))]
        pts.append((pts[-1][0] + heading[0] * BLOCK_M, pts[-1][1] + heading[1] * BLOCK_M))
    return walk(start_ms, np.array(pts, dtype=np.float64), speed_mps, kind="wander")


class Itinerary:
    """The segments the elder follows, looked up by time; later segments can replace the rest."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments: list[Segment] = []
        self._starts: list[int] = []
        self.replace_from(segments[0].start_ms, segments)

    def replace_from(self, t_ms: int, segments: list[Segment]) -> None:
        """Keep what happened before ``t_ms``; from then on follow ``segments``."""
        kept = [s for s in self.segments if s.start_ms < t_ms]
        if kept and kept[-1].end_ms > t_ms:
            last = kept[-1]
            # the current segment stops where the elder is now
            e, n = last.position(t_ms)
            pts = last.points if last.points.shape[0] == 1 else np.vstack([last.points[:1], [[e, n]]])
            kept[-1] = Segment(last.kind, last.start_ms, t_ms, pts, last.indoor, last.place)
        self.segments = kept + segments
        self._starts = [s.start_ms for s in self.segments]

    @property
    def end_ms(self) -> int:
        return self.segments[-1].end_ms if self.segments else 0

    def at(self, t_ms: int) -> Segment:
        i = max(0, bisect_right(self._starts, t_ms) - 1)
        seg = self.segments[i]
        if t_ms >= seg.end_ms and i + 1 < len(self.segments):
            return self.segments[i + 1]
        return seg

    def seconds(self, activity: int, start_ms: int, t_ms: int) -> float:
        """Seconds spent in ``activity`` between ``start_ms`` and ``t_ms`` (e.g. walking, for steps)."""
        total = 0.0
        for s in self.segments:
            if s.end_ms <= start_ms or s.start_ms >= t_ms or s.activity != activity:
                continue
            total += (min(t_ms, s.end_ms) - max(start_ms, s.start_ms)) / 1000.0
        return total

    def drop_before(self, t_ms: int) -> None:
        """Forget segments that ended before ``t_ms`` (a long-running device stays small)."""
        keep = [s for s in self.segments if s.end_ms > t_ms]
        if keep:
            self.segments = keep
            self._starts = [s.start_ms for s in keep]


@dataclass(frozen=True, slots=True)
class SampledDay:
    """A day on a fixed time grid, as arrays (for replay by many devices at once)."""

    step_s: float
    east_m: NDArray[np.float32]
    north_m: NDArray[np.float32]
    indoor: NDArray[np.bool_]
    activity: NDArray[np.int8]
    walking_s: NDArray[np.float32]  # cumulative since midnight
    sitting_s: NDArray[np.float32]  # awake at home or visiting, cumulative since midnight


def sample_plan(segments: list[Segment], day_start_ms: int, step_s: float = 5.0) -> SampledDay:
    """The day at every ``step_s`` from ``day_start_ms``, one segment at a time (vectorised)."""
    n = round(86_400 / step_s)
    t = day_start_ms + np.round(np.arange(n) * step_s * 1000)
    east = np.zeros(n, np.float32)
    north = np.zeros(n, np.float32)
    indoor = np.zeros(n, bool)
    act = np.zeros(n, np.int8)
    for seg in segments:
        sel = (t >= seg.start_ms) & (t < seg.end_ms)
        if not sel.any():
            continue
        pts = seg.points
        if pts.shape[0] == 1:
            east[sel], north[sel] = pts[0]
        else:
            along = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
            d = along[-1] * (t[sel] - seg.start_ms) / (seg.end_ms - seg.start_ms)
            east[sel] = np.interp(d, along, pts[:, 0])
            north[sel] = np.interp(d, along, pts[:, 1])
        indoor[sel] = seg.indoor
        act[sel] = seg.activity
    walking = np.cumsum(act == WALKING).astype(np.float32) * np.float32(step_s)
    sitting = np.cumsum(act == SITTING).astype(np.float32) * np.float32(step_s)
    return SampledDay(step_s, east, north, indoor, act, walking, sitting)
