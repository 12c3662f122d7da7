"""Calibration: does a checkpoint's 0.7 mean 70 %? (headless; pure functions of arrays).

Two levels, both binary (tumour vs background):

* **pixels**: every pixel's predicted tumour probability against its ground-truth label;
* **slices** (tumour presence): a slice's highest probability against "the slice contains
  tumour" (:func:`slice_presence`).

Measures (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017; Nixon et al.,
"Measuring Calibration in Deep Learning", CVPR-W 2019):

* reliability diagram (:func:`reliability`): mean predicted probability (``confidence``) and
  observed tumour fraction (``frequency``) per bin, with **equal-width** bins on [0, 1]
  (``strategy="width"``; a bin is right-closed, ``(b_i, b_{i+1}]``, the first also holds 0, as
  scikit-learn's ``calibration_curve``) or **equal-mass** bins (``strategy="mass"``: the
  probabilities sorted and cut into ``n_bins`` runs of equal count);
* ECE = ``sum_b n_b / N * |confidence_b - frequency_b|`` over the 15 equal-width bins, the
  adaptive ECE the same over equal-mass bins, MCE = the largest ``|confidence_b - frequency_b|``
  over non-empty equal-width bins;
* Brier score = mean ``(p - y)^2``; NLL = mean binary cross-entropy in nats of the probabilities
  clipped to ``[EPS, 1 - EPS]`` (``EPS = 1e-7``, the float32 resolution near 1, so a saturated wrong
  pixel costs at most 16.1 nats).

Post-hoc temperature scaling (Guo et al. 2017): one scalar ``T`` fitted on validation logits by
minimising the NLL of ``sigmoid(logit / T)`` (:func:`fit_temperature`); ``T > 1`` softens an
over-confident checkpoint. Dividing a logit by ``T > 0`` keeps its sign, so the mask at threshold
0.5 never changes; other thresholds move.

:func:`calibration_summary` returns the dict stored in ``ModelCard.calibration``::

    {"definition": str, "n_bins": 15, "temperature": T,
     "fit": {"split": "validation", "n_pixels": int, "nll_before": float, "nll_after": float},
     "pixels": {"before": M, "after": M}, "slices": {"before": M, "after": M}}

where ``M`` (:func:`calibration_metrics`, on the test data before / after the temperature) is
``{"n", "n_positive", "ece", "ece_adaptive", "mce", "brier", "nll",
"reliability": {"width": R, "mass": R}}`` and ``R`` (:meth:`Reliability.to_dict`) is
``{"edges", "confidence", "frequency", "count"}`` (lists; ``None`` for an empty bin).

Examples:
    >>> import numpy as np
    >>> p = np.array([0.1, 0.1, 0.9, 0.9]); y = np.array([0, 0, 1, 0])
    >>> round(expected_calibration_error(p, y), 3)  # bins 0.1 (freq 0) and 0.9 (freq 0.5)
    0.25
    >>> round(brier_score(p, y), 3)
    0.21
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

#: equal-width bins of the headline ECE
N_BINS = 15
#: probabilities are clipped to [EPS, 1 - EPS] for the NLL
EPS = 1e-7
STRATEGIES = ("width", "mass")
#: search interval of the temperature
TEMPERATURE_BOUNDS = (0.05, 50.0)
DEFINITION = (
    "Calibration on the held-out test data, before and after a post-hoc temperature T fitted on the validation "
    "data (minimum NLL of sigmoid(logit / T), one scalar; the mask at threshold 0.5 is unchanged). pixels: every "
    "pixel's tumour probability vs its label; slices: the slice's highest probability vs 'the slice contains "
    "tumour'. ECE = bin-count-weighted mean |mean probability - tumour fraction| over 15 equal-width bins; "
    "ece_adaptive: the same over 15 equal-mass bins; MCE = the largest gap of a non-empty equal-width bin; "
    "Brier = mean squared error of the probability; NLL = mean binary cross-entropy (nats, probabilities "
    "clipped to [1e-7, 1 - 1e-7])."
)


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram.

    Attributes:
        strategy: ``"width"`` (equal-width bins) or ``"mass"`` (equal-count bins).
        edges: ``(n_bins + 1,)`` bin limits in [0, 1]: the fixed grid for ``"width"``; for
            ``"mass"`` the lowest probability, the first probability of each later bin, and the highest.
        confidence: ``(n_bins,)`` mean predicted probability per bin (NaN when empty).
        frequency: ``(n_bins,)`` fraction of positives per bin (NaN when empty).
        count: ``(n_bins,)`` int64 samples per bin.
    """

    strategy: str
    edges: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    count: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """``(n_bins,)`` ``|confidence - frequency|`` (NaN for empty bins)."""
        return np.abs(self.confidence - self.frequency)

    @property
    def ece(self) -> float:
        """Count-weighted mean gap (NaN without samples)."""
        total = int(self.count.sum())
        keep = self.count > 0
        return float(np.sum(self.count[keep] * self.gap[keep]) / total) if total else float("nan")

    @property
    def mce(self) -> float:
        """Largest gap of a non-empty bin (NaN without samples)."""
        keep = self.count > 0
        return float(self.gap[keep].max()) if keep.any() else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists (``None`` for the NaNs of empty bins)."""
        def listed(values: np.ndarray) -> list:
            return [None if not np.isfinite(v) else float(v) for v in values]

        return {"edges": listed(self.edges), "confidence": listed(self.confidence),
                "frequency": listed(self.frequency), "count": [int(c) for c in self.count]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], strategy: str = "width") -> Reliability:
        """The diagram stored by :meth:`to_dict` (e.g. a model card's)."""
        def array(key: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in data[key]], dtype=np.float64)

        return cls(strategy, array("edges"), array("confidence"), array("frequency"),
                   np.asarray(data["count"], dtype=np.int64))


def _flat(probability: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p, y)`` float64 1-D; one-line ``ValueError`` for mismatched, empty or out-of-range input."""
    p = np.asarray(probability, dtype=np.float64).ravel()
    y = np.asarray(target)
    if y.shape != np.shape(probability):
        raise ValueError(f"probability shape {np.shape(probability)} != target shape {y.shape}")
    if p.size == 0:
        raise ValueError("calibration needs at least one probability")
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probability must hold finite values in [0, 1]")
    return p, (y.ravel() != 0).astype(np.float64)


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability(probability: np.ndarray, target: np.ndarray, *, n_bins: int = N_BINS,
                strategy: str = "width") -> Reliability:
    """Reliability diagram of ``probability`` (any shape, in [0, 1]) against ``target`` (same shape, non-zero = positive).

    ``strategy``: ``"width"`` (equal-width bins) or ``"mass"`` (equal-count bins); see the module docstring.
    """
    n_bins = _check_bins(n_bins)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    p, y = _flat(probability, target)
    if strategy == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        ids = np.searchsorted(edges[1:-1], p)
        count = np.bincount(ids, minlength=n_bins)
        sums = np.bincount(ids, weights=p, minlength=n_bins)
        positives = np.bincount(ids, weights=y, minlength=n_bins)
    else:
        order = np.argsort(p, kind="stable")
        p, y = p[order], y[order]
        bounds = np.linspace(0, p.size, n_bins + 1).round().astype(np.int64)
        count = np.diff(bounds)
        starts = np.minimum(bounds[:-1], p.size - 1)
        sums = np.where(count > 0, np.add.reduceat(p, starts), 0.0)
        positives = np.where(count > 0, np.add.reduceat(y, starts), 0.0)
        edges = np.concatenate([p[starts], p[-1:]])
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, sums / count, np.nan)
        frequency = np.where(count > 0, positives / count, np.nan)
    return Reliability(strategy, edges, confidence, frequency, count.astype(np.int64))


def expected_calibration_error(probability: np.ndarray, target: np.ndarray, *, n_bins: int = N_BINS,
                               strategy: str = "width") -> float:
    """ECE over ``n_bins`` equal-width bins (``strategy="mass"``: the adaptive ECE)."""
    return reliability(probability, target, n_bins=n_bins, strategy=strategy).ece


def maximum_calibration_error(probability: np.ndarray, target: np.ndarray, *, n_bins: int = N_BINS) -> float:
    """MCE: the largest gap of a non-empty equal-width bin."""
    return reliability(probability, target, n_bins=n_bins).mce


def brier_score(probability: np.ndarray, target: np.ndarray) -> float:
    """Mean squared difference between probability and label (0 = perfect)."""
    p, y = _flat(probability, target)
    return float(np.mean((p - y) ** 2))


def negative_log_likelihood(probability: np.ndarray, target: np.ndarray, *, eps: float = EPS) -> float:
    """Mean binary cross-entropy in nats of the probabilities clipped to ``[eps, 1 - eps]``."""
    p, y = _flat(probability, target)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def slice_presence(probability: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice tumour presence: ``(highest probability (N,), mask non-empty (N,) bool)`` of ``(N, H, W)`` stacks."""
    prob, truth = np.asarray(probability), np.asarray(masks)
    if prob.ndim != 3 or prob.shape != truth.shape:
        raise ValueError(f"slice presence needs (N, H, W) probability and masks of one shape, got "
                         f"{prob.shape} and {truth.shape}")
    return prob.max(axis=(1, 2)), (truth != 0).any(axis=(1, 2))


def calibration_metrics(probability: np.ndarray, target: np.ndarray, *, n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE, adaptive ECE, MCE, Brier, NLL and both reliability diagrams (the ``M`` dict of the module docstring)."""
    width = reliability(probability, target, n_bins=n_bins, strategy="width")
    mass = reliability(probability, target, n_bins=n_bins, strategy="mass")
    return {
        "n": int(width.count.sum()), "n_positive": int(np.count_nonzero(target)),
        "ece": width.ece, "ece_adaptive": mass.ece, "mce": width.mce,
        "brier": brier_score(probability, target), "nll": negative_log_likelihood(probability, target),
        "reliability": {"width": width.to_dict(), "mass": mass.to_dict()},
    }


def _logits(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(target)
    if y.shape != np.shape(logits):
        raise ValueError(f"logits shape {np.shape(logits)} != masks shape {y.shape}")
    if z.size == 0:
        raise ValueError("fitting a temperature needs at least one logit")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite (pass the network's raw outputs, not probabilities)")
    return z, (y.ravel() != 0).astype(np.float64)


def _nll_at(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Exact mean BCE of ``sigmoid(z / T)`` (log-sum-exp form, no clipping)."""
    s = z / temperature
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_temperature(logits: np.ndarray, masks: np.ndarray, *,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature ``T`` minimising the NLL of ``sigmoid(logits / T)`` against ``masks``.

    Args:
        logits: float raw network outputs, any shape (validation data).
        masks: labels of the same shape (non-zero = tumour).
        bounds: search interval of ``T`` (bounded scalar minimisation of the exact NLL over ``log T``).
    Returns:
        ``T > 0`` (1 = already calibrated in the NLL sense; > 1 = the checkpoint was over-confident).
    """
    low, high = bounds
    if not 0 < low < 1 < high:
        raise ValueError(f"temperature bounds must satisfy 0 < low < 1 < high, got {bounds}")
    z, y = _logits(logits, masks)
    found = optimize.minimize_scalar(lambda t: _nll_at(z, y, float(np.exp(t))), bounds=(np.log(low), np.log(high)),
                                     method="bounded", options={"xatol": 1e-4})
    best = float(np.exp(found.x))
    return best if _nll_at(z, y, best) <= _nll_at(z, y, 1.0) else 1.0


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float32 ``sigmoid(logits / temperature)``, same shape."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return special.expit(np.asarray(logits, dtype=np.float64) / float(temperature)).astype(np.float32)


def rescale_probability(probability: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated float32 ``sigmoid(logit(p) / T)`` of stored probabilities ``p`` (same shape).

    Saturated 0 and 1 stay saturated (their logits are beyond float32 resolution); values on the
    two sides of 0.5 stay there, so the mask at 0.5 is unchanged.
    """
    p = np.asarray(probability, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return apply_temperature(special.logit(p), temperature)


def calibration_summary(val_logits: np.ndarray, val_masks: np.ndarray, test_logits: np.ndarray,
                        test_masks: np.ndarray, *, n_bins: int = N_BINS) -> dict[str, Any]:
    """The ``ModelCard.calibration`` dict (module docstring): ``T`` fitted on the validation
    ``(N, H, W)`` logits and masks, every measure on the test ``(M, H', W')`` data before and after ``T``."""
    temperature = fit_temperature(val_logits, val_masks)
    z, y = _logits(val_logits, val_masks)
    out: dict[str, Any] = {
        "definition": DEFINITION, "n_bins": _check_bins(n_bins), "temperature": temperature,
        "fit": {"split": "validation", "n_pixels": int(z.size), "nll_before": _nll_at(z, y, 1.0),
                "nll_after": _nll_at(z, y, temperature)},
    }
    del z, y
    for level in ("pixels", "slices"):
        out[level] = {}
        for when, t in (("before", 1.0), ("after", temperature)):
            prob = apply_temperature(test_logits, t)
            if level == "slices":
                p, target = slice_presence(prob, test_masks)
            else:
                p, target = prob, test_masks
            out[level][when] = calibration_metrics(p, target, n_bins=n_bins)
    return out


def headline(calibration: Mapping[str, Any]) -> dict[str, float]:
    """The numbers tables show from a stored :func:`calibration_summary` (a card's ``calibration``):
    ``temperature``, pixel ``ece`` / ``ece_calibrated`` and tumour-presence ``slice_ece`` /
    ``slice_ece_calibrated`` on the test data; NaN for whatever it lacks (e.g. an unmeasured card)."""
    def get(level: str, when: str) -> float:
        value = calibration.get(level, {}).get(when, {}).get("ece")
        return float(value) if value is not None else float("nan")

    temperature = calibration.get("temperature")
    return {"temperature": float(temperature) if temperature is not None else float("nan"),
            "ece": get("pixels", "before"), "ece_calibrated": get("pixels", "after"),
            "slice_ece": get("slices", "before"), "slice_ece_calibrated": get("slices", "after")}
