"""The fitted fall model: streaming geometry, a gradient-boosted tree ensemble, its threshold.

Kept in ``fall_model_params.json`` (written by ``tools/fit_fall_model.py``) and loaded once;
scoring is a few numpy gathers over all trees at once, so a batch of candidates costs about
the same as one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gateway.detect.fall_features import FEATURE_NAMES, FEATURE_POST, FEATURE_PRE

__all__ = ["FallModelParams"]

PARAMS_RESOURCE = "fall_model_params.json"


def _frozen(a: ArrayLike, dtype: type[np.generic]) -> NDArray[Any]:
    arr = np.array(a, dtype=dtype)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True, eq=False)
class FallModelParams:
    """Everything the detector needs: streaming geometry, the tree ensemble and its threshold.

    Trees are complete binary trees of equal depth stored level by level: node ``k`` has
    children ``2k+1`` (feature <= threshold) and ``2k+2`` (feature > threshold); leaves are
    numbered left to right. An unused split has threshold +max-float, so everything goes left.
    """

    rate_hz: float
    gate_g: float
    peak_radius: int
    pre_samples: int
    post_samples: int
    refractory_samples: int
    max_gap_ms: float
    feature_names: tuple[str, ...]
    base_score: float
    tree_feature: NDArray[np.intp]
    tree_threshold: NDArray[np.float64]
    tree_value: NDArray[np.float64]
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.feature_names != FEATURE_NAMES:
            raise ValueError("parameters were fitted on a different feature set")
        if self.pre_samples < FEATURE_PRE or self.post_samples < FEATURE_POST:
            raise ValueError("pre/post window shorter than the feature geometry")
        if not 1 <= self.peak_radius <= min(self.pre_samples, self.post_samples):
            raise ValueError("peak_radius must be within the candidate window")
        nt, nn = self.tree_feature.shape
        if self.tree_threshold.shape != (nt, nn) or self.tree_value.shape != (nt, nn + 1):
            raise ValueError("inconsistent tree arrays")
        if nn & (nn + 1):
            raise ValueError("trees must be complete binary trees")
        if nt and (self.tree_feature.min() < 0 or self.tree_feature.max() >= len(FEATURE_NAMES)):
            raise ValueError("tree refers to an unknown feature")

    @property
    def depth(self) -> int:
        """Depth of every tree."""
        return int(self.tree_feature.shape[1] + 1).bit_length() - 1

    @classmethod
    def untrained(
        cls,
        *,
        rate_hz: float = 50.0,
        gate_g: float = 1.8,
        peak_radius: int = 50,
        pre_samples: int = FEATURE_PRE,
        post_samples: int = FEATURE_POST,
        refractory_samples: int = 250,
        max_gap_ms: float = 250.0,
        depth: int = 1,
    ) -> FallModelParams:
        """Geometry without a model (never fires): used to harvest candidates for fitting."""
        nn = 2**depth - 1
        return cls(
            rate_hz=rate_hz,
            gate_g=gate_g,
            peak_radius=peak_radius,
            pre_samples=pre_samples,
            post_samples=post_samples,
            refractory_samples=refractory_samples,
            max_gap_ms=max_gap_ms,
            feature_names=FEATURE_NAMES,
            base_score=0.0,
            tree_feature=_frozen(np.zeros((0, nn)), np.intp),
            tree_threshold=_frozen(np.zeros((0, nn)), np.float64),
            tree_value=_frozen(np.zeros((0, nn + 1)), np.float64),
            threshold=float("inf"),
        )

    def with_model(
        self,
        base_score: float,
        tree_feature: ArrayLike,
        tree_threshold: ArrayLike,
        tree_value: ArrayLike,
        threshold: float,
        meta: dict[str, Any] | None = None,
    ) -> FallModelParams:
        """Same geometry, new fitted model."""
        return FallModelParams(
            rate_hz=self.rate_hz,
            gate_g=self.gate_g,
            peak_radius=self.peak_radius,
            pre_samples=self.pre_samples,
            post_samples=self.post_samples,
            refractory_samples=self.refractory_samples,
            max_gap_ms=self.max_gap_ms,
            feature_names=self.feature_names,
            base_score=float(base_score),
            tree_feature=_frozen(tree_feature, np.intp),
            tree_threshold=_frozen(tree_threshold, np.float64),
            tree_value=_frozen(tree_value, np.float64),
            threshold=float(threshold),
            meta=dict(meta or {}),
        )

    def score(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """Ensemble log-odds for a batch of feature rows, all trees at once."""
        n = features.shape[0]
        nt, nn = self.tree_feature.shape
        if n == 0 or nt == 0:
            return np.full(n, self.base_score, dtype=np.float64)
        rows = np.arange(n)[:, None]
        trees = np.arange(nt)[None, :]
        node = np.zeros((n, nt), dtype=np.intp)
        for _ in range(self.depth):
            f = self.tree_feature[trees, node]
            right = features[rows, f] > self.tree_threshold[trees, node]
            node = 2 * node + 1 + right
        leaves = self.tree_value[trees, node - nn]
        return np.asarray(self.base_score + leaves.sum(axis=1), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; floats keep full precision so decisions replay exactly."""
        big = np.finfo(np.float64).max
        return {
            "format": "eldercare-fall-gbdt/1",
            "rate_hz": self.rate_hz,
            "gate_g": self.gate_g,
            "peak_radius": self.peak_radius,
            "pre_samples": self.pre_samples,
            "post_samples": self.post_samples,
            "refractory_samples": self.refractory_samples,
            "max_gap_ms": self.max_gap_ms,
            "feature_names": list(self.feature_names),
            "base_score": self.base_score,
            "threshold": self.threshold,
            "tree_feature": self.tree_feature.tolist(),
            "tree_threshold": np.minimum(self.tree_threshold, big).tolist(),
            "tree_value": self.tree_value.tolist(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FallModelParams:
        """Inverse of :meth:`to_dict`."""
        if d.get("format") != "eldercare-fall-gbdt/1":
            raise ValueError("unknown fall model parameter format")
        return cls(
            rate_hz=float(d["rate_hz"]),
            gate_g=float(d["gate_g"]),
            peak_radius=int(d["peak_radius"]),
            pre_samples=int(d["pre_samples"]),
            post_samples=int(d["post_samples"]),
            refractory_samples=int(d["refractory_samples"]),
            max_gap_ms=float(d["max_gap_ms"]),
            feature_names=tuple(d["feature_names"]),
            base_score=float(d["base_score"]),
            tree_feature=_frozen(d["tree_feature"], np.intp),
            tree_threshold=_frozen(d["tree_threshold"], np.float64),
            tree_value=_frozen(d["tree_value"], np.float64),
            threshold=float(d["threshold"]),
            meta=dict(d.get("meta", {})),
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> FallModelParams:
        """Load from ``path``, or the parameters shipped with the package."""
        if path is None:
            text = resources.files(__package__).joinpath(PARAMS_RESOURCE).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write as JSON, one key (and one tree) per line so diffs stay readable."""
        lines = []
        for key, value in self.to_dict().items():
            if isinstance(value, list) and value and isinstance(value[0], list):
                rows = ",\n  ".join(json.dumps(row) for row in value)
                lines.append(f"{json.dumps(key)}: [\n  {rows}\n ]")
            else:
                lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
        Path(path).write_text("{\n " + ",\n ".join(lines) + "\n}\n", "utf-8")
