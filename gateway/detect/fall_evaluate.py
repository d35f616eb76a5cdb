"""Score the fall detector on a "fall trial set" the way the gateway would run it.

A fall trial set is an ``.npz`` file with ``acc_g`` (samples x 3, g, all recordings
concatenated), ``offsets`` (n + 1), ``fs`` (Hz), ``label`` (1 fall, 0 daily activity),
``activity`` (activity code) and ``subject``. Every recording is cut into windows of
``window_s`` seconds and streamed through :class:`FallDetector` (one slot per recording, all
recordings in parallel); a recording counts as detected when the detector reports a fall
anywhere in it. This backs ``eldercare falls evaluate FILE``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from gateway.detect.fall_params import FallModelParams
from gateway.detect.fall_stream import CandidateBatch, FallDetector

__all__ = [
    "ActivityRow",
    "FallReport",
    "StreamResult",
    "TrialSet",
    "build_report",
    "evaluate",
    "load_trial_set",
    "main",
    "stream_trials",
]


@dataclass(frozen=True, slots=True, eq=False)
class TrialSet:
    """Recordings of a fall trial set, concatenated as in the file."""

    acc_g: NDArray[np.float32]
    offsets: NDArray[np.int64]
    fs: float
    label: NDArray[np.int8]
    activity: NDArray[np.str_]
    subject: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def recording(self, i: int) -> NDArray[np.float32]:
        """Samples of recording ``i``."""
        return self.acc_g[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, indices: NDArray[np.int64]) -> TrialSet:
        """A new trial set with the chosen recordings, in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        parts = [self.recording(int(i)) for i in idx]
        lengths = np.array([p.shape[0] for p in parts], dtype=np.int64)
        acc = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
        return TrialSet(
            acc_g=acc.astype(np.float32, copy=False),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            fs=self.fs,
            label=self.label[idx],
            activity=self.activity[idx],
            subject=self.subject[idx],
        )

    def save(self, path: str | Path) -> None:
        """Write in the trial-set file format."""
        with Path(path).open("wb") as fh:
            np.savez_compressed(
                fh,
                acc_g=self.acc_g,
                offsets=self.offsets,
                fs=np.float32(self.fs),
                label=self.label,
                activity=self.activity,
                subject=self.subject.astype(np.int16),
            )


def load_trial_set(path: str | Path) -> TrialSet:
    """Read and sanity-check a trial-set file."""
    with np.load(Path(path), allow_pickle=False) as z:
        missing = {"acc_g", "offsets", "fs", "label", "activity"} - set(z.files)
        if missing:
            raise ValueError(f"not a fall trial set, missing {sorted(missing)}")
        acc = np.asarray(z["acc_g"], dtype=np.float32)
        offsets = np.asarray(z["offsets"], dtype=np.int64)
        label = np.asarray(z["label"], dtype=np.int8)
        activity = np.asarray(z["activity"]).astype(str)
        subject = (
            np.asarray(z["subject"], dtype=np.int64) if "subject" in z.files else np.zeros(label.shape[0], np.int64)
        )
        fs = float(z["fs"])
    n = label.shape[0]
    if acc.ndim != 2 or acc.shape[1] != 3:
        raise ValueError("acc_g must be (samples, 3)")
    if offsets.shape != (n + 1,) or activity.shape != (n,) or subject.shape != (n,):
        raise ValueError("offsets, label, activity and subject disagree on the recording count")
    if offsets[0] != 0 or offsets[-1] != acc.shape[0] or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets do not partition acc_g")
    return TrialSet(acc, offsets, fs, label, activity, subject)


@dataclass(frozen=True, slots=True, eq=False)
class StreamResult:
    """Per-recording outcome of streaming a trial set through the detector."""

    detected: NDArray[np.bool_]
    first_fall_ms: NDArray[np.int64]  # time of the first reported impact, -1 when none
    candidates: CandidateBatch | None  # every decided candidate (slot = recording position)


def stream_trials(
    trials: TrialSet,
    params: FallModelParams | None = None,
    window_s: float = 1.0,
    indices: NDArray[np.int64] | None = None,
    collect: bool = False,
) -> StreamResult:
    """Stream recordings (all, or ``indices``) in ``window_s`` windows, one slot each.

    This is the only place recordings meet the detector, for the CLI and for the fitting
    script alike, so held-out figures come from the code the gateway runs.
    """
    idx = np.arange(len(trials), dtype=np.int64) if indices is None else np.asarray(indices)
    n = idx.shape[0]
    det = FallDetector(max(n, 1), params, collect_candidates=collect)
    w = round(window_s * trials.fs)
    if w < 1:
        raise ValueError("window_s is shorter than one sample")
    starts = trials.offsets[idx]
    lengths = trials.offsets[idx + 1] - starts
    detected = np.zeros(n, dtype=bool)
    first = np.full(n, -1, dtype=np.int64)
    batches: list[CandidateBatch] = []
    ar = np.arange(w, dtype=np.int64)
    longest = int(lengths.max()) if n else 0
    for k in range(0, longest, w):
        t0 = k * 1000.0 / trials.fs
        full = np.flatnonzero(lengths >= k + w)
        part = np.flatnonzero((lengths > k) & (lengths < k + w))
        calls: list[tuple[NDArray[np.int64], list[NDArray[np.float32]] | NDArray[np.float32]]]
        calls = []
        if full.shape[0]:
            calls.append((full, trials.acc_g[starts[full, None] + k + ar]))
        if part.shape[0]:
            wins = [trials.acc_g[starts[i] + k : starts[i] + lengths[i]] for i in part]
            calls.append((part, wins))
        for slots, windows in calls:
            found = det.update(slots, np.full(slots.shape[0], t0), windows, rate_hz=trials.fs)
            new = found.slot[~detected[found.slot]]
            if new.shape[0]:
                first[new] = found.t_ms[~detected[found.slot]]
            detected[found.slot] = True
            if collect and found.evaluated is not None and len(found.evaluated):
                batches.append(found.evaluated)
    cands = None
    if collect:
        if batches:
            cands = CandidateBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in _BATCH_FIELDS))
        else:
            cands = det.update(np.zeros(0, np.int64), np.zeros(0), []).evaluated
    return StreamResult(detected, first, cands)


_BATCH_FIELDS = ("slot", "sample_index", "t_ms", "peak_g", "features", "score", "fired")


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """Outcome for one activity code."""

    code: str
    n: int
    label: int
    detected: int

    @property
    def detected_fraction(self) -> float:
        return self.detected / self.n if self.n else 0.0

    @property
    def correct_fraction(self) -> float:
        """Sensitivity for a fall code, specificity for a daily-activity code."""
        d = self.detected_fraction
        return d if self.label == 1 else 1.0 - d


@dataclass(frozen=True, slots=True)
class FallReport:
    """Sensitivity and specificity overall and per activity code."""

    source: str
    window_s: float
    n_falls: int
    n_adl: int
    sensitivity: float
    specificity: float
    rows: tuple[ActivityRow, ...]

    def lines(self) -> list[str]:
        """Human-readable table; the last line is machine-readable."""
        out = [
            f"fall trial set: {self.source} (windows of {self.window_s:g} s)",
            f"{'code':>6} {'n':>5} {'label':>5} {'detected':>9} {'correct':>8}",
        ]
        for r in self.rows:
            kind = "fall" if r.label == 1 else "adl"
            out.append(f"{r.code:>6} {r.n:>5} {kind:>5} {r.detected_fraction:>9.3f} {r.correct_fraction:>8.3f}")
        out.append(f"falls: {self.n_falls}  daily activities: {self.n_adl}")
        out.append(f"sensitivity={self.sensitivity:.3f} specificity={self.specificity:.3f}")
        return out


def _code_key(code: str) -> tuple[int, int | str]:
    return (0, int(code)) if code.isdigit() else (1, code)


def build_report(
    detected: NDArray[np.bool_],
    label: NDArray[np.integer],
    activity: NDArray[np.str_],
    source: str,
    window_s: float,
) -> FallReport:
    """Summarise per-recording detections."""
    fall = label == 1
    n_falls = int(fall.sum())
    n_adl = int((~fall).sum())
    sens = float(detected[fall].mean()) if n_falls else float("nan")
    spec = float(1.0 - detected[~fall].mean()) if n_adl else float("nan")
    rows = []
    for code in sorted({str(a) for a in activity.tolist()}, key=_code_key):
        sel = activity == code
        rows.append(
            ActivityRow(
                code=code,
                n=int(sel.sum()),
                label=int(np.round(label[sel].mean())),
                detected=int(detected[sel].sum()),
            )
        )
    return FallReport(source, window_s, n_falls, n_adl, sens, spec, tuple(rows))


def evaluate(path: str | Path, window_s: float = 1.0, params: FallModelParams | None = None) -> FallReport:
    """Stream a trial-set file through the detector (shipped parameters by default)."""
    trials = load_trial_set(path)
    p = params if params is not None else FallModelParams.load()
    if abs(trials.fs - p.rate_hz) > 1e-6:
        raise ValueError(f"trial set is sampled at {trials.fs:g} Hz, the model needs {p.rate_hz:g}")
    result = stream_trials(trials, p, window_s)
    return build_report(result.detected, trials.label, trials.activity, str(path), window_s)


def main(argv: list[str] | None = None) -> int:
    """``eldercare falls evaluate FILE [--window-s S] [--params JSON]``."""
    parser = argparse.ArgumentParser(
        prog="eldercare falls evaluate", description="score the fall detector on a trial set"
    )
    parser.add_argument("file", help="fall trial set (.npz)")
    parser.add_argument("--window-s", type=float, default=1.0, help="streaming window length")
    parser.add_argument("--params", help="model parameters JSON (default: shipped)")
    args = parser.parse_args(argv)
    try:
        params = FallModelParams.load(args.params) if args.params else None
        report = evaluate(args.file, args.window_s, params)
    except (OSError, ValueError, KeyError) as error:
        print(f"falls evaluate: {error}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
