"""Wrist fall detector, vectorised over many devices for the gateway's hot loop.

Every impact that passes a cheap magnitude gate becomes a *candidate*; once 3 s of signal
after it have arrived, the features of the 6 s around it (:mod:`fall_features`) are scored by
the fitted tree ensemble (:mod:`fall_params`), and the candidate is reported as a fall when
the score clears the fitted threshold.

Per-device state lives in numpy arrays indexed by a device slot (a ring buffer of the last
~10 s of samples plus a few counters), never in per-device Python objects, so that one call
handles a batch of windows from a thousand devices with a handful of numpy operations. Only
slots whose recent samples crossed the gate pay for candidate search and features.

Candidates are the samples whose magnitude exceeds the gate and is the maximum within
``peak_radius`` samples on each side (strictly greater than the samples before, at least the
samples after). That definition depends only on the signal, not on how it was cut into
windows, so a fall split across windows is found exactly once, and the features the model was
fitted on are the very ones computed in streaming.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gateway.detect.fall_features import FEATURE_NAMES, candidate_features
from gateway.detect.fall_params import FallModelParams

__all__ = ["CandidateBatch", "FallCandidate", "FallDetector", "FallFindings", "sparse_zeros"]

_NEG = np.int64(-(2**62))  # "never" for sample indices


def _window_max(x: NDArray[np.float32], r: int) -> NDArray[np.float32]:
    """Running maximum over ``r`` samples along axis 1 by doubling: log2(r) passes, not r."""
    y = x
    span = 1
    while span * 2 <= r:
        y = np.maximum(y[:, :-span], y[:, span:])
        span *= 2
    if span < r:
        y = np.maximum(y[:, : y.shape[1] - (r - span)], y[:, r - span :])
    return y


@dataclass(frozen=True, slots=True)
class FallCandidate:
    """One detected fall: where, when the impact happened, and the evidence."""

    slot: int
    t_ms: int
    peak_g: float
    score: float


@dataclass(frozen=True, slots=True, eq=False)
class CandidateBatch:
    """Every candidate decided in one update, fired or not (kept for fitting and debugging)."""

    slot: NDArray[np.int64]
    sample_index: NDArray[np.int64]  # index of the impact sample since the slot's stream start
    t_ms: NDArray[np.int64]
    peak_g: NDArray[np.float64]
    features: NDArray[np.float64]
    score: NDArray[np.float64]
    fired: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.slot.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class FallFindings:
    """Falls found by one :meth:`FallDetector.update` call, as parallel arrays."""

    slot: NDArray[np.int64]
    t_ms: NDArray[np.int64]
    peak_g: NDArray[np.float64]
    score: NDArray[np.float64]
    ignored: int = 0  # windows dropped: wrong rate, non-finite, stale/duplicate, or empty
    evaluated: CandidateBatch | None = None

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    def candidates(self) -> list[FallCandidate]:
        """The falls as value objects (for the alerting path, which is not hot)."""
        return [
            FallCandidate(int(s), int(t), float(p), float(c))
            for s, t, p, c in zip(
                self.slot.tolist(),
                self.t_ms.tolist(),
                self.peak_g.tolist(),
                self.score.tolist(),
                strict=True,
            )
        ]

    def __iter__(self) -> Iterator[FallCandidate]:
        return iter(self.candidates())


def _empty_findings(ignored: int, collect: bool) -> FallFindings:
    i64 = np.zeros(0, dtype=np.int64)
    f64 = np.zeros(0, dtype=np.float64)
    ev = None
    if collect:
        ev = CandidateBatch(i64, i64, i64, f64, np.zeros((0, len(FEATURE_NAMES))), f64, np.zeros(0, bool))
    return FallFindings(i64, i64, f64, f64, ignored, ev)


@dataclass(frozen=True, slots=True, eq=False)
class _Round:
    """Windows with at most one per slot, each no longer than the ring allows."""

    slots: NDArray[np.int64]
    t0_ms: NDArray[np.float64]
    data: NDArray[np.float32]  # (m, T, 3), padded when lens is not None
    lens: NDArray[np.int64] | None


def sparse_zeros(shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
    """A zeroed array whose pages become resident only where written, 4 KiB at a time.

    numpy asks the kernel for transparent huge pages on every array of 4 MiB or more, so one
    write into an untouched 2 MiB stretch makes all of it resident. The ring buffer below is
    written sparsely (a band sends raw acceleration a few times a day): with huge pages each
    such window cost 2 MiB instead of 8 KiB, and RSS climbed by ~100 MB in the first hour.
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size < 1 << 22 or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype=dtype)
    area = mmap.mmap(-1, size)  # anonymous, zero-filled by the kernel; freed with the array
    area.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(area, dtype=dtype).reshape(shape)


class FallDetector:
    """Streaming fall detector over device slots; all state in numpy arrays.

    State per slot: a ring buffer of ``ring`` samples (float32 x, y, z), the number of samples
    received since the stream (re)started, the time of sample 0, the index of the last sample
    above the gate and of the last reported fall. Candidates waiting for their post-impact
    seconds need no extra state: they are re-derived from the ring when their last needed
    sample arrives, which also makes the decision independent of window boundaries.
    """

    def __init__(
        self,
        capacity: int,
        params: FallModelParams | None = None,
        *,
        collect_candidates: bool = False,
    ) -> None:
        self.params = params if params is not None else FallModelParams.load()
        p = self.params
        self._collect = collect_candidates
        self._pre = p.pre_samples
        self._post = p.post_samples
        self._radius = p.peak_radius
        span = p.pre_samples + p.post_samples + 1
        # Ring: the candidate window plus at least a 4 s chunk of new data; power of two so a
        # mask replaces the modulo.
        self._ring = 1 << int(span + 200 - 1).bit_length()
        self._mask = self._ring - 1
        # Longest piece appended in one go; the refractory must cover it so at most one fall
        # per slot can be reported per piece.
        self._chunk = min(self._ring - span, p.refractory_samples)
        if self._chunk < 1:
            raise ValueError("refractory_samples must be positive")
        self._dt_ms = 1000.0 / p.rate_hz
        self._gate2 = np.float32(p.gate_g) * np.float32(p.gate_g)
        cap = max(int(capacity), 1)
        self._buf = sparse_zeros((cap, self._ring, 3), np.float32)
        self._count = np.zeros(cap, dtype=np.int64)
        self._t_origin = np.zeros(cap, dtype=np.float64)
        self._last_hot = np.full(cap, _NEG, dtype=np.int64)
        self._last_fire = np.full(cap, _NEG, dtype=np.int64)
        self._mark = np.full(cap, -1, dtype=np.int64)  # scratch for duplicate-slot checks

    @property
    def capacity(self) -> int:
        """Number of device slots currently allocated."""
        return int(self._count.shape[0])

    def bytes_per_slot(self) -> int:
        """Memory of the per-slot state."""
        arrays = (self._buf, self._count, self._t_origin, self._last_hot, self._last_fire)
        return sum(a.nbytes for a in arrays) // self.capacity + self._mark.itemsize

    def reset(self, slot: int) -> None:
        """Forget a slot's stream (device re-paired or slot reused); pending impacts are dropped."""
        if 0 <= slot < self.capacity:
            self._count[slot] = 0
            self._last_hot[slot] = _NEG
            self._last_fire[slot] = _NEG

    def _grow(self, needed: int) -> None:
        cap = self.capacity
        if needed <= cap:
            return
        new = max(needed, 2 * cap)
        extra = new - cap
        buf = sparse_zeros((new, self._ring, 3), np.float32)
        used = np.flatnonzero(self._count > 0)  # copy only rows ever written: the rest stay untouched pages
        buf[used] = self._buf[used]
        self._buf = buf
        self._count = np.concatenate([self._count, np.zeros(extra, dtype=np.int64)])
        self._t_origin = np.concatenate([self._t_origin, np.zeros(extra)])
        self._last_hot = np.concatenate([self._last_hot, np.full(extra, _NEG)])
        self._last_fire = np.concatenate([self._last_fire, np.full(extra, _NEG)])
        self._mark = np.concatenate([self._mark, np.full(extra, -1, dtype=np.int64)])

    def update(
        self,
        slots: ArrayLike,
        t0_ms: ArrayLike,
        windows: Sequence[NDArray[np.floating[Any]]] | NDArray[np.floating[Any]],
        rate_hz: ArrayLike | None = None,
    ) -> FallFindings:
        """Append a batch of windows and return the falls decided now.

        ``windows`` is either an (n, T, 3) array (fast path) or a list of (T_i, 3) arrays, in g.
        Several windows of one slot are applied in ``t0_ms`` order. ``rate_hz`` (scalar or
        per window), when given, drops windows not at the model's rate.
        Windows with non-finite samples, or that start before the slot's last sample
        (duplicates), are dropped; a forward gap larger than ``max_gap_ms`` restarts the slot's
        stream. Each impact is decided once, ``post_samples`` after it.
        """
        sl = np.asarray(slots, dtype=np.int64).reshape(-1)
        t0 = np.asarray(t0_ms, dtype=np.float64).reshape(-1)
        n = sl.shape[0]
        if t0.shape[0] != n or len(windows) != n:
            raise ValueError("slots, t0_ms and windows must have the same length")
        if n == 0:
            return _empty_findings(0, self._collect)
        if sl.min() < 0:
            raise ValueError("slots must be non-negative")
        self._grow(int(sl.max()) + 1)
        keep = np.ones(n, dtype=bool)
        if rate_hz is not None:
            rate = np.broadcast_to(np.asarray(rate_hz, dtype=np.float64), (n,))
            keep &= np.abs(rate - self.params.rate_hz) < 1e-6
        rounds, keep = self._rounds(sl, t0, windows, keep)
        ignored = int(n - keep.sum())
        found: list[FallFindings] = []
        for rnd in rounds:
            res = self._process(rnd)
            ignored += res.ignored
            if len(res) or (res.evaluated is not None and len(res.evaluated)):
                found.append(res)
        if not found:
            return _empty_findings(ignored, self._collect)
        ev = None
        if self._collect:
            evs = [f.evaluated for f in found if f.evaluated is not None]
            ev = CandidateBatch(*(np.concatenate([getattr(e, f.name) for e in evs]) for f in fields(CandidateBatch)))
        return FallFindings(
            np.concatenate([f.slot for f in found]),
            np.concatenate([f.t_ms for f in found]),
            np.concatenate([f.peak_g for f in found]),
            np.concatenate([f.score for f in found]),
            ignored,
            ev,
        )

    def _unique(self, sl: NDArray[np.int64]) -> bool:
        """O(n) duplicate check using a scratch array instead of sorting."""
        idx = np.arange(sl.shape[0], dtype=np.int64)
        self._mark[sl] = idx
        ok = bool((self._mark[sl] == idx).all())
        self._mark[sl] = -1
        return ok

    def _rounds(
        self,
        sl: NDArray[np.int64],
        t0: NDArray[np.float64],
        windows: Sequence[NDArray[np.floating[Any]]] | NDArray[np.floating[Any]],
        keep: NDArray[np.bool_],
    ) -> tuple[list[_Round], NDArray[np.bool_]]:
        """Split the batch into rounds with one piece per slot (order kept within a slot).

        Also returns which windows were accepted (rate matched, all samples finite). The
        common case (distinct slots, equal lengths, list or array) is one round with no copy
        beyond the float32 conversion; everything else is index arithmetic, no Python loop
        over windows.
        """
        n = sl.shape[0]
        if isinstance(windows, np.ndarray):
            if windows.ndim != 3 or windows.shape[2] != 3:
                raise ValueError("windows array must be (n, T, 3)")
            data = np.asarray(windows, dtype=np.float32)
            flat = data.reshape(-1, 3)
            lens = np.full(n, data.shape[1], dtype=np.int64)
        else:
            lens = np.fromiter((len(w) for w in windows), dtype=np.int64, count=n)
            try:
                flat = np.concatenate(windows, axis=0, dtype=np.float32)
            except ValueError as error:
                raise ValueError("each window must be (T, 3)") from error
            if flat.ndim != 2 or flat.shape[1] != 3:
                raise ValueError("each window must be (T, 3)")
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        bad_rows = ~np.isfinite(flat).all(axis=1)
        if bad_rows.any():
            bad = np.add.reduceat(bad_rows, np.minimum(starts, flat.shape[0] - 1)) > 0
            keep = keep & ~(bad & (lens > 0))
        keep = keep & (lens > 0)
        if not keep.any():
            return [], keep
        t_max = int(lens.max())
        if t_max <= self._chunk and bool((lens == t_max).all()) and self._unique(sl):
            data = flat.reshape(n, t_max, 3)
            if keep.all():
                return [_Round(sl, t0, data, None)], keep
            return [_Round(sl[keep], t0[keep], data[keep], None)], keep
        # Pieces of at most `chunk` samples.
        win = np.flatnonzero(keep)
        n_pieces = -(-lens[win] // self._chunk)
        src = np.repeat(win, n_pieces)
        first_piece = np.cumsum(n_pieces) - n_pieces
        off = (np.arange(src.shape[0]) - np.repeat(first_piece, n_pieces)) * self._chunk
        plen = np.minimum(self._chunk, lens[src] - off)
        psl = sl[src]
        pt0 = t0[src] + off * self._dt_ms
        order = np.lexsort((pt0, psl))  # by slot, then time (ties keep arrival order)
        sorted_sl = psl[order]
        head = np.r_[True, sorted_sl[1:] != sorted_sl[:-1]]
        group_start = np.maximum.accumulate(np.where(head, np.arange(order.shape[0]), 0))
        rank = np.empty_like(order)
        rank[order] = np.arange(order.shape[0]) - group_start
        rounds: list[_Round] = []
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            rl = plen[sel]
            tmax = int(rl.max())
            ar = np.arange(tmax, dtype=np.int64)
            valid = ar < rl[:, None]
            idx = np.where(valid, starts[src[sel], None] + off[sel, None] + ar, 0)
            data = flat[idx]
            equal = bool((rl == tmax).all())
            rounds.append(_Round(psl[sel], pt0[sel], data, None if equal else rl))
        return rounds, keep

    def _process(self, rnd: _Round) -> FallFindings:
        """Append one round (one piece per slot), then decide the impacts now complete."""
        s, t0, x, lens = rnd.slots, rnd.t0_ms, rnd.data, rnd.lens
        m, t = x.shape[0], x.shape[1]
        tol = self.params.max_gap_ms
        cnt = self._count[s]
        fresh = cnt == 0
        delta = t0 - (self._t_origin[s] + cnt * self._dt_ms)
        stale = ~fresh & (delta < -tol)
        ignored = 0
        if stale.any():
            ok = ~stale
            ignored = int(stale.sum())
            s, t0, x, cnt, delta, fresh = s[ok], t0[ok], x[ok], cnt[ok], delta[ok], fresh[ok]
            lens = None if lens is None else lens[ok]
            m = s.shape[0]
            if m == 0:
                return _empty_findings(ignored, self._collect)
        restart = fresh | (delta > tol)
        if restart.any():
            r = s[restart]
            # Pre-fill with the first sample so features of an impact right at stream start
            # see a plausible (still) past instead of zeros.
            self._buf[r] = x[restart, 0][:, None, :]
            cnt = np.where(restart, 0, cnt)
            self._last_hot[r] = _NEG
            self._last_fire[r] = _NEG
        start = cnt
        self._t_origin[s] = t0 - start * self._dt_ms
        ar = np.arange(t, dtype=np.int64)
        pos = (start[:, None] + ar) & self._mask
        m2 = x[..., 0] * x[..., 0] + x[..., 1] * x[..., 1] + x[..., 2] * x[..., 2]
        hot = m2 > self._gate2
        if lens is None:
            self._buf[s[:, None], pos] = x
            n_new = np.full(m, t, dtype=np.int64)
        else:
            valid = ar < lens[:, None]
            self._buf[np.broadcast_to(s[:, None], (m, t))[valid], pos[valid]] = x[valid]
            hot &= valid
            n_new = lens
        end = start + n_new
        self._count[s] = end
        any_hot = hot.any(axis=1)
        if any_hot.any():
            h = np.flatnonzero(any_hot)
            last = t - 1 - np.argmax(hot[h, ::-1], axis=1)
            self._last_hot[s[h]] = start[h] + last
        # Impacts whose last needed sample arrived now: p in [start - post, end - post).
        lo = start - self._post
        need = np.flatnonzero((self._last_hot[s] >= lo) & (end - self._post > 0))
        if need.shape[0] == 0:
            return _empty_findings(ignored, self._collect)
        return self._decide(s[need], lo[need], n_new[need], ignored)

    def _decide(
        self,
        s: NDArray[np.int64],
        lo: NDArray[np.int64],
        n: NDArray[np.int64],
        ignored: int,
    ) -> FallFindings:
        """Find candidate impacts in [lo, lo + n) per slot, score them, report falls."""
        r = self._radius
        nmax = int(n.max())
        idx = lo[:, None] + np.arange(-r, nmax + r, dtype=np.int64)
        seg = self._buf[s[:, None], idx & self._mask]
        m2 = seg[..., 0] * seg[..., 0] + seg[..., 1] * seg[..., 1] + seg[..., 2] * seg[..., 2]
        runs = _window_max(m2, r)  # runs[:, j] = max m2[:, j : j + r]
        centre = m2[:, r : r + nmax]
        cand = (
            (centre > self._gate2)
            & (centre > runs[:, :nmax])
            & (centre >= runs[:, r + 1 : r + 1 + nmax])
            & (np.arange(nmax) < n[:, None])
            & (idx[:, r : r + nmax] >= 0)
        )
        fi, j = np.nonzero(cand)
        if fi.shape[0] == 0:
            return _empty_findings(ignored, self._collect)
        slot = s[fi]
        p = lo[fi] + j
        widx = (p[:, None] + np.arange(-self._pre, self._post + 1, dtype=np.int64)) & self._mask
        win = self._buf[slot[:, None], widx].astype(np.float64)
        feats = candidate_features(win, self._pre)
        score = self.params.score(feats)
        peak = feats[:, 0]
        t_ms = np.rint(self._t_origin[slot] + p * self._dt_ms).astype(np.int64)
        fired = score >= self.params.threshold
        report = np.zeros_like(fired)
        eligible = fired & (p - self._last_fire[slot] > self.params.refractory_samples)
        if eligible.any():
            # One fall, one alert: candidates come ordered by slot then time, and a round spans
            # less than the refractory period, so only the first eligible one per slot counts.
            fidx = np.flatnonzero(eligible)
            fs = slot[fidx]
            first = fidx[np.r_[True, fs[1:] != fs[:-1]]]
            report[first] = True
            self._last_fire[slot[first]] = p[first]
        ev = None
        if self._collect:
            ev = CandidateBatch(slot, p, t_ms, peak, feats, score, fired)
        return FallFindings(slot[report], t_ms[report], peak[report], score[report], ignored, ev)
