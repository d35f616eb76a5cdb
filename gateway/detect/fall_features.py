"""Features of a candidate impact: hand-made summaries of the 6 s around it, pure numpy.

A fall on the wrist shows up as an impact (acceleration magnitude peak), usually preceded by a
short free-fall dip and followed by a change of wrist orientation and then little movement. The
impact alone is not enough on the wrist (clapping, hitting a table, dropping onto a chair all
peak above 3 g), so these features describe what came before and after it. They live apart
from the streaming detector because ``tools/fit_fall_model.py`` computes the very same ones to
fit the model: what is fitted is what runs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["FEATURE_NAMES", "FEATURE_POST", "FEATURE_PRE", "candidate_features"]

# Feature geometry, in samples at 50 Hz relative to the impact sample (half-open ranges).
# The feature window must therefore cover at least FEATURE_PRE samples before the impact and
# FEATURE_POST after it.
FEATURE_PRE = 150
FEATURE_POST = 150
_IMPACT_PRE = (-50, 1)  # last second up to and including the peak: free fall, impact velocity
_PRE_NEAR = (-50, -5)  # last second before the impact
_PRE_ACT = (-150, -25)  # what the wearer was doing before
_PRE_ORIENT = (-100, -25)  # wrist orientation before
_PRE_TILT_A = (-150, -100)
_PRE_TILT_B = (-50, -10)
_IMPACT = (-25, 26)  # +-0.5 s around the peak
_IMPACT_WIDE = (-50, 51)
_OTHER_EXCLUDE = (-12, 13)  # the impact itself, excluded when looking for other peaks
_POST_ACT = (50, 151)  # 1..3 s after: lying still?
_POST_EARLY = (25, 100)
_POST_LATE = (100, 151)
_POST_MAX = (25, 151)
_POST_ORIENT = (75, 151)  # wrist orientation after
_POST_TILT_A = (25, 75)

FEATURE_NAMES: tuple[str, ...] = (
    "peak_g",
    "pre_min_g",
    "free_fall_samples",
    "pre_mean_g",
    "pre_std_g",
    "pre_activity",
    "pre_activity_near",
    "post_std_g",
    "post_activity",
    "post_activity_early",
    "post_activity_late",
    "post_mad_g",
    "post_jerk",
    "post_max_g",
    "post_count_1g5",
    "pre_count_1g5",
    "tilt_deg",
    "pre_tilt_deg",
    "post_tilt_deg",
    "impact_velocity",
    "impact_energy",
    "impact_width",
    "impact_jerk",
    "other_peak_g",
    "other_peak_pre_g",
    "post_ux",
    "post_uy",
    "post_uz",
    "pre_ux",
    "pre_uy",
    "pre_uz",
    "post_gravity_g",
)
# A coarse profile of the 6 s around the impact (0.5 s bins): wrist orientation (unit gravity
# vector), peak magnitude and movement per bin, so the trees can see the sequence of events.
_BIN = 25
_BINS = tuple(range(-FEATURE_PRE // _BIN, FEATURE_POST // _BIN))
FEATURE_NAMES = FEATURE_NAMES + tuple(f"bin{b:+d}_{q}" for b in _BINS for q in ("ux", "uy", "uz", "max_g", "activity"))


def _angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Angle between mean gravity vectors: the posture change a fall leaves behind."""
    na = np.sqrt(np.einsum("ck,ck->c", a, a))
    nb = np.sqrt(np.einsum("ck,ck->c", b, b))
    cos = np.einsum("ck,ck->c", a, b) / (na * nb + 1e-9)
    out: NDArray[np.float64] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def candidate_features(win: NDArray[np.float64], pre: int) -> NDArray[np.float64]:
    """Features of candidate windows (C, pre+post+1, 3) centred on the impact at index ``pre``.

    Shared by streaming inference and by the fitting script, so that the model is fitted on
    exactly what it sees at run time. Means and spreads over the many sub-windows come from
    running sums (one pass), which keeps the per-candidate cost low in the hot loop.
    """
    if pre < FEATURE_PRE or win.shape[1] - pre - 1 < FEATURE_POST:
        raise ValueError("candidate window too short for the features")
    win = win[:, pre - FEATURE_PRE : pre + FEATURE_POST + 1]
    c = FEATURE_PRE
    n_cand = win.shape[0]
    mag: NDArray[np.float64] = np.sqrt(np.einsum("ctk,ctk->ct", win, win))
    # Running sums with a leading zero: sum over [a, b) is cs[b] - cs[a].
    cw = np.zeros((n_cand, win.shape[1] + 1, 7))
    np.cumsum(win, axis=1, out=cw[:, 1:, 0:3])
    np.cumsum(win * win, axis=1, out=cw[:, 1:, 3:6])
    np.cumsum(mag, axis=1, out=cw[:, 1:, 6])

    def m(r: tuple[int, int]) -> NDArray[np.float64]:
        return mag[:, c + r[0] : c + r[1]]

    def w(r: tuple[int, int]) -> NDArray[np.float64]:
        return win[:, c + r[0] : c + r[1]]

    def sums(r: tuple[int, int]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = (cw[:, c + r[1]] - cw[:, c + r[0]]) / (r[1] - r[0])
        return out

    def mean_vec(r: tuple[int, int]) -> NDArray[np.float64]:
        return sums(r)[:, 0:3]

    def activity(r: tuple[int, int]) -> NDArray[np.float64]:
        # Per-axis spread catches rotation too, which the magnitude alone hides.
        s = sums(r)
        var = s[:, 3:6] - s[:, 0:3] ** 2
        spread: NDArray[np.float64] = np.sqrt(np.maximum(var.sum(axis=1), 0.0))
        return spread

    def mag_std(r: tuple[int, int]) -> NDArray[np.float64]:
        s = sums(r)
        var = s[:, 3:6].sum(axis=1) - s[:, 6] ** 2  # E|a|^2 - (E|a|)^2
        std: NDArray[np.float64] = np.sqrt(np.maximum(var, 0.0))
        return std

    out = np.empty((n_cand, len(FEATURE_NAMES)), dtype=np.float64)
    v_pre = mean_vec(_PRE_ORIENT)
    v_post = mean_vec(_POST_ORIENT)
    n_post = np.linalg.norm(v_post, axis=1)
    u_post = v_post / (n_post[:, None] + 1e-9)
    u_pre = v_pre / (np.linalg.norm(v_pre, axis=1)[:, None] + 1e-9)
    others = mag.copy()
    others[:, c + _OTHER_EXCLUDE[0] : c + _OTHER_EXCLUDE[1]] = 0.0
    impact = sums(_IMPACT)
    n_impact = _IMPACT[1] - _IMPACT[0]
    cols: list[NDArray[np.float64]] = [
        mag[:, c],
        m(_IMPACT_PRE).min(axis=1),
        (m(_IMPACT_PRE) < 0.6).sum(axis=1).astype(np.float64),
        sums(_PRE_NEAR)[:, 6],
        mag_std(_PRE_ACT),
        activity(_PRE_ACT),
        activity(_PRE_NEAR),
        mag_std(_POST_ACT),
        activity(_POST_ACT),
        activity(_POST_EARLY),
        activity(_POST_LATE),
        np.abs(m(_POST_ACT) - 1.0).mean(axis=1),
        np.abs(np.diff(w(_POST_ACT), axis=1)).sum(axis=2).mean(axis=1),
        m(_POST_MAX).max(axis=1),
        (m(_POST_MAX) > 1.5).sum(axis=1).astype(np.float64),
        (m(_PRE_ACT) > 1.5).sum(axis=1).astype(np.float64),
        _angle_deg(v_pre, v_post),
        _angle_deg(mean_vec(_PRE_TILT_A), mean_vec(_PRE_TILT_B)),
        _angle_deg(mean_vec(_POST_TILT_A), v_post),
        (sums(_IMPACT_PRE)[:, 6] - 1.0) * (_IMPACT_PRE[1] - _IMPACT_PRE[0]) / 50.0,
        # sum (|a| - 1)^2 = sum |a|^2 - 2 sum |a| + n
        (impact[:, 3:6].sum(axis=1) - 2.0 * impact[:, 6] + 1.0) * n_impact / 50.0,
        (m(_IMPACT_WIDE) > 1.6).sum(axis=1).astype(np.float64),
        np.linalg.norm(np.diff(w(_IMPACT), axis=1), axis=2).max(axis=1),
        others.max(axis=1),
        others[:, :c].max(axis=1),
        u_post[:, 0],
        u_post[:, 1],
        u_post[:, 2],
        u_pre[:, 0],
        u_pre[:, 1],
        u_pre[:, 2],
        n_post,
    ]
    for j, col in enumerate(cols):
        out[:, j] = col
    # Profile bins from the same running sums.
    edges = c + np.arange(_BINS[0], _BINS[-1] + 2) * _BIN
    bin_mean = np.diff(cw[:, edges], axis=1) / _BIN  # (C, bins, 7)
    mean = bin_mean[..., 0:3]
    unit = mean / (np.linalg.norm(mean, axis=2, keepdims=True) + 1e-9)
    spread = np.sqrt(np.maximum((bin_mean[..., 3:6] - mean**2).sum(axis=2), 0.0))
    peak = mag[:, edges[0] : edges[-1]].reshape(n_cand, -1, _BIN).max(axis=2)
    block = np.concatenate([unit, peak[..., None], spread[..., None]], axis=2)
    out[:, len(cols) :] = block.reshape(n_cand, -1)
    return out
