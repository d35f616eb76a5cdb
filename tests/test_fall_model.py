"""Wrist fall detector: streaming and evaluation on synthetic signals (real sets: bench/fall_evaluate.py)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.detect import fall_evaluate
from gateway.detect.fall_params import FallModelParams
from gateway.detect.fall_stream import FallDetector, FallFindings, sparse_zeros

FS = 50
DT_MS = 20

ARM_DOWN = np.array([0.9, -0.3, -0.3]) / np.linalg.norm([0.9, -0.3, -0.3])
LYING = np.array([-0.2, -0.4, -0.9]) / np.linalg.norm([-0.2, -0.4, -0.9])


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def still(n: int, g: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """A wrist at rest: gravity plus sensor noise."""
    return g[None, :] + rng.normal(0.0, 0.01, (n, 3))


def synthetic_fall(rng: np.random.Generator, before_s: float = 10.0) -> tuple[NDArray[np.float64], int]:
    """Standing with the arm moving, 0.3 s free fall while the arm turns, a jolting 4 g impact,
    a short bounce, then lying still with the wrist in a new orientation.

    Returns 20 s of samples and the index of the 4 g sample.
    """
    n_before = int(before_s * FS)
    t = np.arange(n_before) / FS
    stand = still(n_before, ARM_DOWN, rng)
    stand += 0.15 * np.sin(2 * np.pi * t)[:, None] * np.array([0.3, 1.0, 0.5])
    k = np.linspace(0.0, 1.0, 15)[:, None]
    free_fall = _unit((1 - k) * ARM_DOWN + k * LYING) * np.linspace(0.8, 0.4, 15)[:, None]
    hit = _unit(LYING + np.array([0.0, 0.6, 0.0]))
    side = _unit(np.cross(hit, ARM_DOWN))
    mags = np.array([1.8, 3.0, 4.0, 2.6, 1.2, 2.2, 1.6, 1.3])
    dirs = np.array([hit, hit, hit, _unit(hit + side), -side, _unit(LYING - side), LYING, LYING])
    impact = dirs * mags[:, None]
    tb = np.arange(30) / FS
    wobble = 0.4 * np.exp(-tb / 0.2) * np.sin(2 * np.pi * 4 * tb)
    bounce = LYING[None, :] + wobble[:, None] * _unit(side + hit)
    head = np.concatenate([stand, free_fall, impact, bounce])
    lying = still(20 * FS - head.shape[0], LYING, rng)
    return np.concatenate([head, lying]), n_before + 15 + 2


def walking(seconds: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Arm swing at 0.9 Hz with a heel-strike jolt every step: peaks above 2 g, no fall."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    ang = np.radians(30.0) * np.sin(2 * np.pi * 0.9 * t)
    g = np.stack([np.cos(ang) * 0.95, np.sin(ang) * 0.95, -0.3 * np.ones(n)], axis=1)
    phase = (t * 1.8) % 1.0
    jolt = 1.3 * np.exp(-(((phase - 0.05) / 0.03) ** 2))
    sig = g + jolt[:, None] * _unit(g) + rng.normal(0.0, 0.03, (n, 3))
    return sig


def stream(
    det: FallDetector,
    signals: list[NDArray[np.float64]],
    window: int = FS,
    slots: list[int] | None = None,
) -> FallFindings:
    """Feed equal-length recordings in parallel, ``window`` samples at a time."""
    sl = np.arange(len(signals)) if slots is None else np.asarray(slots)
    data = np.stack(signals)
    parts: list[FallFindings] = []
    for k in range(0, data.shape[1], window):
        parts.append(det.update(sl, np.full(sl.shape[0], k * DT_MS), data[:, k : k + window]))
    return _merge(parts)


def _merge(parts: list[FallFindings]) -> FallFindings:
    return FallFindings(
        np.concatenate([p.slot for p in parts]),
        np.concatenate([p.t_ms for p in parts]),
        np.concatenate([p.peak_g for p in parts]),
        np.concatenate([p.score for p in parts]),
        sum(p.ignored for p in parts),
    )


@pytest.fixture(scope="module")
def params() -> FallModelParams:
    return FallModelParams.load()


def test_synthetic_fall_fires_once(params: FallModelParams) -> None:
    sig, hit = synthetic_fall(np.random.default_rng(1))
    found = stream(FallDetector(4, params), [sig])
    assert len(found) == 1
    (fall,) = found.candidates()
    assert fall.slot == 0
    assert fall.t_ms == hit * DT_MS
    assert fall.peak_g == pytest.approx(4.0, abs=0.1)
    assert fall.score >= params.threshold


def test_two_falls_in_one_stream_reported_separately(params: FallModelParams) -> None:
    rng = np.random.default_rng(10)
    first, hit1 = synthetic_fall(rng, before_s=5.0)
    second, hit2 = synthetic_fall(rng, before_s=5.0)
    head = first[: hit1 + 8 * FS]  # 8 s lying, then up and falling again
    sig = np.concatenate([head, second])
    found = stream(FallDetector(1, params), [sig])
    assert found.t_ms.tolist() == [hit1 * DT_MS, (head.shape[0] + hit2) * DT_MS]


def test_impact_without_fall_context_does_not_fire(params: FallModelParams) -> None:
    """The same 4 g spike on a resting wrist with no free fall or posture change."""
    rng = np.random.default_rng(2)
    sig = still(20 * FS, ARM_DOWN, rng)
    sig[500:503] += ARM_DOWN * np.array([1.2, 3.0, 1.4])[:, None]
    det = FallDetector(1, params, collect_candidates=True)
    parts = [det.update([0], [k * DT_MS], sig[None, k : k + FS]) for k in range(0, 1000, FS)]
    assert sum(len(p) for p in parts) == 0
    assert sum(len(p.evaluated) for p in parts if p.evaluated is not None) == 1


def test_walking_does_not_fire(params: FallModelParams) -> None:
    sig = walking(60.0, np.random.default_rng(3))
    det = FallDetector(1, params, collect_candidates=True)
    parts = [det.update([0], [k * DT_MS], sig[None, k : k + FS]) for k in range(0, sig.shape[0], FS)]
    evaluated = sum(len(p.evaluated) for p in parts if p.evaluated is not None)
    assert evaluated >= 10, "walking should pass the impact gate (the model has to reject it)"
    assert sum(len(p) for p in parts) == 0


@pytest.mark.parametrize("cut", [-1, 0, 1, 2])
def test_fall_split_across_windows_found_once(params: FallModelParams, cut: int) -> None:
    sig, hit = synthetic_fall(np.random.default_rng(4))
    reference = stream(FallDetector(1, params), [sig]).candidates()
    # Irregular windows, one boundary right at the impact (+- a sample).
    bounds = [0, 137, 333, hit + cut, hit + cut + 7, 700, 701, 850, 1000]
    det = FallDetector(1, params)
    parts = [det.update([0], [a * DT_MS], [sig[a:b]]) for a, b in itertools.pairwise(bounds)]
    found = _merge(parts).candidates()
    assert len(found) == 1
    assert found == reference


def test_two_windows_of_one_slot_in_one_batch(params: FallModelParams) -> None:
    sig, hit = synthetic_fall(np.random.default_rng(5))
    det = FallDetector(2, params)
    parts = []
    for k in range(0, 1000, 2 * FS):  # each batch: two consecutive 1 s windows of slot 1
        a, b = sig[k : k + FS], sig[k + FS : k + 2 * FS]
        parts.append(det.update([1, 1], [k * DT_MS, (k + FS) * DT_MS], [a, b]))
    found = _merge(parts).candidates()
    assert [(f.slot, f.t_ms) for f in found] == [(1, hit * DT_MS)]
    # Same with the (n, T, 3) array form, which must take the same per-slot order.
    det = FallDetector(2, params)
    parts = [
        det.update(
            [1, 1],
            [k * DT_MS, (k + FS) * DT_MS],
            np.stack([sig[k : k + FS], sig[k + FS : k + 2 * FS]]),
        )
        for k in range(0, 1000, 2 * FS)
    ]
    assert [(f.slot, f.t_ms) for f in _merge(parts).candidates()] == [(1, hit * DT_MS)]
    # Arriving in reverse order within the batch: applied in time order all the same.
    det = FallDetector(2, params)
    parts = [
        det.update([1, 1], [(k + FS) * DT_MS, k * DT_MS], [sig[k + FS : k + 2 * FS], sig[k : k + FS]])
        for k in range(0, 1000, 2 * FS)
    ]
    assert [(f.slot, f.t_ms) for f in _merge(parts).candidates()] == [(1, hit * DT_MS)]


def test_many_slots_in_one_batch(params: FallModelParams) -> None:
    rng = np.random.default_rng(6)
    n = 300
    signals: list[NDArray[np.float64]] = []
    expected: dict[int, int] = {}
    for i in range(n):
        if i % 7 == 0:
            sig, hit = synthetic_fall(rng, before_s=6.0 + (i % 5))
            expected[1000 + i] = hit * DT_MS
        elif i % 2:
            sig = walking(20.0, rng)
        else:
            sig = still(1000, ARM_DOWN, rng)
        signals.append(sig)
    slots = [1000 + i for i in range(n)]  # beyond the initial capacity: must grow
    det = FallDetector(16, params)
    found = stream(det, signals, slots=slots)
    assert det.capacity >= 1300
    assert dict(zip(found.slot.tolist(), found.t_ms.tolist(), strict=True)) == expected
    assert len(found) == len(expected)


def _mapping_flags(address: int) -> list[str]:
    """VmFlags of the mapping that holds ``address`` (Linux /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError("mapping not found")


def test_ring_buffer_is_not_backed_by_huge_pages(params: FallModelParams) -> None:
    """Windows land sparsely in the ring; with 2 MiB pages each one made 2 MiB resident and RSS crept up."""
    det = FallDetector(32_768, params)
    flags = _mapping_flags(det._buf.__array_interface__["data"][0])
    assert "hg" not in flags and "nh" in flags  # not MADV_HUGEPAGE (numpy's default), but MADV_NOHUGEPAGE
    det._grow(40_000)
    assert "nh" in _mapping_flags(det._buf.__array_interface__["data"][0])


def test_sparse_zeros_grows_and_keeps_contents(params: FallModelParams) -> None:
    small, big = sparse_zeros((4, 3), np.float32), sparse_zeros((1 << 20, 3), np.float32)
    assert not small.any() and not big.any() and big.flags.writeable
    det = FallDetector(1024, params)
    det.update([7], [1_000_000.0], [still(100, ARM_DOWN, np.random.default_rng(1))])
    row = det._buf[7].copy()
    det._grow(5000)
    assert det.capacity >= 5000
    assert np.array_equal(det._buf[7], row) and not det._buf[1024:].any()


def test_rate_gap_duplicate_and_reset(params: FallModelParams) -> None:
    sig, hit = synthetic_fall(np.random.default_rng(7))
    det = FallDetector(1, params)
    r = det.update([0], [0], sig[None, :FS], rate_hz=[25.0])
    assert len(r) == 0 and r.ignored == 1
    broken = sig[:FS].copy()
    broken[3, 1] = np.nan
    assert det.update([0], [0], [broken]).ignored == 1
    found = []
    for k in range(0, 1000, FS):
        found += det.update([0], [k * DT_MS], sig[None, k : k + FS], rate_hz=50.0).candidates()
        if k == 9 * FS:  # a duplicate of the window just sent is dropped
            assert det.update([0], [k * DT_MS], sig[None, k : k + FS]).ignored == 1
    assert [f.t_ms for f in found] == [hit * DT_MS]
    # A reset right after the impact drops the pending candidate.
    det = FallDetector(1, params)
    for k in range(0, hit + 10, FS):
        assert len(det.update([0], [k * DT_MS], [sig[k : min(k + FS, hit + 10)]])) == 0
    det.reset(0)
    rest = [det.update([0], [k * DT_MS], [sig[k : k + FS]]) for k in range(hit + 10, 1000, FS)]
    assert sum(len(p) for p in rest) == 0


def test_params_json_round_trip(params: FallModelParams, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    params.save(path)
    again = FallModelParams.load(path)
    x = np.random.default_rng(8).normal(1.0, 1.0, (50, len(params.feature_names)))
    np.testing.assert_array_equal(again.score(x), params.score(x))
    assert again.threshold == params.threshold


def _synthetic_trial_set(n_each: int, seed: int) -> fall_evaluate.TrialSet:
    """Falls (free fall, impact, lying still) and everyday motion (walking, resting) in the
    trial-set format: the evaluation code is tested on data the suite makes, not on a data set
    that lives outside the repository (bench/fall_evaluate.py scores the real sets)."""
    rng = np.random.default_rng(seed)
    recordings: list[NDArray[np.float64]] = []
    labels: list[int] = []
    activity: list[str] = []
    for i in range(n_each):
        recordings.append(synthetic_fall(rng, before_s=8.0 + (i % 4))[0])
        labels.append(1)
        activity.append("101")
    for i in range(n_each):
        recordings.append(walking(20.0, rng) if i % 2 == 0 else still(20 * FS, ARM_DOWN, rng))
        labels.append(0)
        activity.append("1" if i % 2 == 0 else "2")
    lengths = np.array([r.shape[0] for r in recordings], dtype=np.int64)
    return fall_evaluate.TrialSet(
        acc_g=np.concatenate(recordings).astype(np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        fs=float(FS),
        label=np.array(labels, dtype=np.int8),
        activity=np.array(activity),
        subject=np.arange(2 * n_each, dtype=np.int64) % 5,
    )


def test_evaluate_on_synthetic_trial_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "synthetic.npz"
    _synthetic_trial_set(10, seed=9).save(path)
    trials = fall_evaluate.load_trial_set(path)
    subset = tmp_path / "subset.npz"
    trials.subset(np.arange(len(trials))[::-1]).save(subset)

    report = fall_evaluate.evaluate(subset)
    assert report.n_falls == 10 and report.n_adl == 10
    assert report.sensitivity >= 0.9
    assert report.specificity >= 0.9

    assert fall_evaluate.main([str(subset), "--window-s", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"sensitivity=\d\.\d{3} specificity=\d\.\d{3}", out[-1])
    rows = [line.split() for line in out if re.match(r"\s*\d+\s+\d+\s+(fall|adl)\s", line)]
    assert sum(int(r[1]) for r in rows) == 20
    assert {r[2] for r in rows} == {"fall", "adl"}
    assert fall_evaluate.main([str(tmp_path / "missing.npz")]) == 2
