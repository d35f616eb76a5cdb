"""Fences in local metres: compilation to arrays and point classification (validation: domain/geometry.py).

Each fence gets its own local equirectangular frame (origin at the circle's centre or
the polygon's centroid), in which a radius or a margin is in metres at that latitude.
Over a community-sized area (a few km) the error of this projection is well under a
metre. Hysteresis uses two shapes per fence: ``outer`` (grown by the margin) and
``inner`` (shrunk by it); a fix is evidence of being outside only beyond ``outer``
(and beyond its own accuracy radius), of being inside only within ``inner``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import shape

from gateway.domain.geometry import M_PER_DEG_LAT, M_PER_DEG_LON_EQUATOR, local_polygon


@dataclass(frozen=True, slots=True)
class FenceInput:
    """One fence as the compiler needs it."""

    fence_id: str
    elder_index: int
    geojson: dict[str, Any] | None
    circle: tuple[float, float, float] | None  # lat, lon, radius_m
    margin_m: float
    window: tuple[int, int] | None  # minutes of local day; may wrap midnight
    severity_level: int  # -1: decided by the detector (dementia at night -> critical)


class FenceTable:
    """All fences as arrays; fences of one elder are contiguous (``start``/``count``)."""

    def __init__(self, fences: list[FenceInput], n_elders: int) -> None:
        fences = sorted(fences, key=lambda f: f.elder_index)
        n = len(fences)
        self.ids = [f.fence_id for f in fences]
        self.elder = np.array([f.elder_index for f in fences], np.int64)
        self.is_circle = np.array([f.circle is not None for f in fences], bool)
        self.radius = np.array([f.circle[2] if f.circle else 0.0 for f in fences])
        self.margin = np.array([f.margin_m for f in fences])
        self.window_start = np.array([f.window[0] if f.window else -1 for f in fences], np.int64)
        self.window_end = np.array([f.window[1] if f.window else -1 for f in fences], np.int64)
        self.severity_level = np.array([f.severity_level for f in fences], np.int64)
        lat0 = np.empty(n)
        lon0 = np.empty(n)
        outer: list[Any] = []
        inner: list[Any] = []
        polygons: list[Any] = []
        for i, fence in enumerate(fences):
            if fence.circle is not None:
                lat0[i], lon0[i] = fence.circle[0], fence.circle[1]
                outer.append(None)
                inner.append(None)
                polygons.append(None)
                continue
            assert fence.geojson is not None
            c = shape(fence.geojson).centroid
            lat0[i], lon0[i] = c.y, c.x
            poly = local_polygon(fence.geojson, (c.x, c.y))
            polygons.append(poly)
            outer.append(poly.buffer(fence.margin_m))
            shrunk = poly.buffer(-fence.margin_m)
            inner.append(shrunk if not shrunk.is_empty else poly)
        # Radii around each polygon's origin that settle most fixes without GEOS: within
        # ``inner_r`` a fix is inside the shrunk fence; beyond ``outer_r`` it is outside
        # the grown one. Only fixes in between go to shapely.
        self.inner_r = np.zeros(n)
        self.outer_r = np.zeros(n)
        origin = shapely.points(0.0, 0.0)
        for i in range(n):
            if inner[i] is not None:
                ring = inner[i].boundary
                contains_origin = inner[i].contains(origin)
                self.inner_r[i] = shapely.distance(ring, origin) if contains_origin else 0.0
                self.outer_r[i] = shapely.hausdorff_distance(origin, outer[i].exterior)
        self.lat0, self.lon0 = lat0, lon0
        self.kx = M_PER_DEG_LON_EQUATOR * np.cos(np.radians(lat0))
        self.ky = np.full(n, M_PER_DEG_LAT)
        self.outer = np.array(outer, dtype=object)
        self.inner = np.array(inner, dtype=object)
        self.polygon = np.array(polygons, dtype=object)
        for arr in (self.outer, self.inner, self.polygon):
            present = arr[arr != None]  # noqa: E711 - element-wise comparison
            if len(present):
                shapely.prepare(present)
        counts = np.bincount(self.elder, minlength=n_elders) if n else np.zeros(n_elders, np.int64)
        self.count = counts.astype(np.int64)
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def active(self, fence: NDArray[np.int64], minute_of_day: NDArray[np.int64]) -> NDArray[np.bool_]:
        start = self.window_start[fence]
        end = self.window_end[fence]
        always = start < 0
        plain = (start <= minute_of_day) & (minute_of_day < end)
        wrapped = (minute_of_day >= start) | (minute_of_day < end)
        return always | np.where(start <= end, plain, wrapped)

    def classify(
        self,
        fence: NDArray[np.int64],
        lat: NDArray[np.float64],
        lon: NDArray[np.float64],
        accuracy: NDArray[np.float64],
        clear_accuracy_m: float,
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.float64]]:
        """(outside evidence, inside evidence, metres beyond the fence) per pair.

        A fix is outside evidence only when it lies beyond the margin *and* beyond its
        own accuracy radius; inside evidence only when within the shrunk fence and
        accurate enough (``clear_accuracy_m``) not to end an exit by luck.
        """
        x = (lon - self.lon0[fence]) * self.kx[fence]
        y = (lat - self.lat0[fence]) * self.ky[fence]
        margin = self.margin[fence]
        slack = np.maximum(margin, accuracy)
        outside = np.zeros(len(fence), bool)
        inside = np.zeros(len(fence), bool)
        beyond = np.zeros(len(fence))
        circ = self.is_circle[fence]
        if circ.any():
            d = np.hypot(x[circ], y[circ]) - self.radius[fence[circ]]
            outside[circ] = d > slack[circ]
            inside[circ] = d < -margin[circ]
            beyond[circ] = d
        poly = ~circ
        if poly.any():
            f = fence[poly]
            px, py = x[poly], y[poly]
            r = np.hypot(px, py)
            sure_in = r < self.inner_r[f]
            sure_out = r > self.outer_r[f]
            unsure = ~(sure_in | sure_out)
            out_p = sure_out.copy()
            in_p = sure_in.copy()
            if unsure.any():
                fu, xu, yu = f[unsure], px[unsure], py[unsure]
                out_p[unsure] = ~shapely.contains_xy(self.outer[fu], xu, yu)
                in_p[unsure] = shapely.contains_xy(self.inner[fu], xu, yu)
            # a fix whose accuracy radius exceeds the margin must be farther out than it
            doubtful = out_p & (accuracy[poly] > margin[poly])
            dist = np.zeros(len(f))
            if out_p.any():
                pts = shapely.points(px[out_p], py[out_p])
                dist[out_p] = shapely.distance(self.polygon[f[out_p]], pts)
            out_p &= ~doubtful | (dist > accuracy[poly])
            outside[poly] = out_p
            inside[poly] = in_p
            beyond[poly] = dist
        inside &= accuracy <= clear_accuracy_m
        return outside, inside, beyond
