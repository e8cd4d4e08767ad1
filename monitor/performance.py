"""Model performance as mergeable accumulators: realized (from joined labels) and estimated.

An accumulator turns a batch of joined (ground truth, prediction) pairs into one flat float64
vector. Vectors of panes add with ``+`` and expire with ``-``, like the feature histograms,
and :meth:`~PerformanceAccumulator.metrics` reads the metrics off any such sum. The
accumulator objects hold only configuration (classes, threshold, bins); the state is the
vector. Counts are stored as integer-valued floats, exact below 2**53, so rates such as
accuracy survive any sequence of merges and expiries bit for bit. Sums of losses are
ordinary float sums: after an expiry they carry an absolute rounding error of about
``1e-16`` times what was subtracted.

Classification labels are compared as ``str(value)`` (so ``1``, ``"1"`` match but ``1.0``
does not); a missing value is ``None``. Scores are probabilities in [0, 1]; the score
histograms behind ``roc_auc`` clip them to that range and split it into equal bins, and a
positive and a negative in the same bin count as a tie (half). The error against the exact
AUC is at most half the share of positive-negative pairs that share a bin: small for
continuous scores (under 0.01 in the tests), nil when equal scores are the only ones that
share a bin.

>>> acc = accumulator_for("binary_classification", positive_label="fraud")
>>> y = np.array(["fraud", "ok", "ok", "fraud"], dtype=object)
>>> s = np.array([0.9, 0.2, 0.6, 0.4])
>>> none = np.full(4, None, dtype=object)
>>> a, b = acc.accumulate(y[:2], s[:2], none[:2]), acc.accumulate(y[2:], s[2:], none[2:])
>>> m = acc.metrics(a + b)
>>> m["accuracy"], m["precision"], m["roc_auc"]
(0.5, 0.5, 0.75)
>>> acc.pairs(a + b), acc.metrics((a + b) - b)["accuracy"] == acc.metrics(a)["accuracy"]
(4, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.labels import normalize_label, normalize_labels
from monitor.score_calibration import ScoreCalibration

__all__ = [
    "BINARY_METRICS",
    "EXPECTED_METRICS",
    "MULTICLASS_METRICS",
    "PROBABILITY_EPS",
    "REGRESSION_METRICS",
    "SCORE_BINS",
    "TASKS",
    "BinaryClassificationPerformance",
    "ExpectedPerformance",
    "MulticlassClassificationPerformance",
    "PerformanceAccumulator",
    "RegressionPerformance",
    "accumulator_for",
]

TASKS = ("binary_classification", "multiclass_classification", "regression")
BINARY_METRICS: tuple[str, ...] = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
)
MULTICLASS_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "log_loss")
REGRESSION_METRICS: tuple[str, ...] = ("mae", "rmse", "mape", "r2", "mean_error")
EXPECTED_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc")

#: Equal-width bins on [0, 1] of the score histograms behind (expected) ``roc_auc``.
SCORE_BINS = 1000
#: Probabilities are clipped to ``[eps, 1 - eps]`` before a log, as scikit-learn does.
PROBABILITY_EPS = float(np.finfo(np.float64).eps)
_MAPE_EPS = PROBABILITY_EPS  # scikit-learn's floor on |y| in mape

Vector = NDArray[np.float64]


class PerformanceAccumulator(Protocol):
    """The common shape of the realized-performance accumulators of every task."""

    size: int
    metric_names: tuple[str, ...]

    def zeros(self) -> Vector: ...

    def accumulate(
        self,
        y_true: ArrayLike,
        score: ArrayLike,
        label: ArrayLike,
        probabilities: ArrayLike | None = None,
    ) -> Vector:
        """The vector (length :attr:`size`) of these joined pairs."""
        ...

    def pairs(self, acc: Vector) -> int:
        """How many joined pairs count in ``acc`` (pairs with no usable prediction do not)."""
        ...

    def metrics(self, acc: Vector) -> dict[str, float]:
        """The metrics defined on ``acc``; an empty dict when it holds no pairs."""
        ...

    def unknown_labels(self, y_true: ArrayLike) -> tuple[int, str | None]:
        """How many of these ground-truth labels match no class the model knows, and one
        of them (``0, None`` for a task without a closed set of classes)."""
        ...


def _unknown(y_true: ArrayLike, known: frozenset[str] | None) -> tuple[int, str | None]:
    if known is None:
        return 0, None
    y = normalize_labels(y_true)
    bad = _present(y) & ~np.isin(y.astype(str), list(known))
    n = int(np.count_nonzero(bad))
    return n, (str(y[np.argmax(bad)]) if n else None)


def accumulator_for(
    task: str,
    *,
    positive_label: object | None,
    decision_threshold: float = 0.5,
    classes: Sequence[str] | None = None,
    negative_label: object | None = None,
) -> PerformanceAccumulator:
    """The accumulator of a model's task (one of :data:`TASKS`)."""
    if task == "binary_classification":
        if positive_label is None:
            raise ValueError("binary_classification needs a positive_label")
        return BinaryClassificationPerformance(
            positive_label, decision_threshold, negative_label=negative_label
        )
    if task == "multiclass_classification":
        if classes is None:
            raise ValueError("multiclass_classification needs its list of classes")
        return MulticlassClassificationPerformance(classes)
    if task == "regression":
        return RegressionPerformance()
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def _check(arr: NDArray[np.generic], n: int | None, name: str) -> None:
    if arr.ndim != 1 or (n is not None and arr.size != n):
        raise ValueError(f"{name} must be 1-D of length {n}, got shape {arr.shape}")


def _objects(values: ArrayLike, n: int | None, name: str) -> NDArray[np.object_]:
    arr: NDArray[np.object_] = np.asarray(values, dtype=object)
    _check(arr, n, name)
    return arr


def _floats(values: ArrayLike, n: int | None, name: str) -> Vector:
    arr: Vector = np.asarray(values, dtype=np.float64)
    _check(arr, n, name)
    return arr


_NONE = np.array(None, dtype=object)


def _present(values: NDArray[np.object_]) -> NDArray[np.bool_]:
    present: NDArray[np.bool_] = np.not_equal(values, _NONE)
    return present


def _numbers(values: ArrayLike) -> Vector:
    """Values as floats: NaN for ``None`` and for anything ``float()`` rejects."""
    arr: NDArray[np.object_] = np.asarray(values, dtype=object).ravel()
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        return np.array([_number(v) for v in arr.tolist()], dtype=np.float64)


def _number(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _histogram(scores: Vector, weights: Vector | None, bins: int) -> Vector:
    idx = np.minimum((np.clip(scores, 0.0, 1.0) * bins).astype(np.intp), bins - 1)
    return np.bincount(idx, weights=weights, minlength=bins).astype(np.float64)


def _auc(pos: Vector, neg: Vector, floor: float = 0.0) -> float | None:
    """Area under the ROC curve from per-bin positive and negative mass, ties as half.

    ``None`` when either class has no mass (above ``floor``).
    """
    p, n = float(pos.sum()), float(neg.sum())
    if p <= floor or n <= floor:
        return None
    below = np.cumsum(neg) - neg
    return float(np.dot(pos, below + 0.5 * neg) / (p * n))


def _ratio(num: float, den: float, floor: float = 0.0) -> float | None:
    return num / den if den > floor else None


def _put(out: dict[str, float], name: str, value: float | None) -> None:
    if value is not None:
        out[name] = value


class BinaryClassificationPerformance:
    """Confusion counts at a threshold, score histograms per class, log-loss and Brier sums.

    A pair's predicted class is positive when its score is >= ``decision_threshold``; when
    it has no score (NaN), when its predicted label equals ``positive_label``. A pair with
    neither does not count. ``log_loss`` and ``brier`` use only pairs with a score.
    ``precision`` is left out while nothing was predicted positive and ``recall`` while no
    label was positive (0/0), ``roc_auc`` while a class is absent.
    """

    metric_names = BINARY_METRICS
    _PAIRS, _TP, _FP, _FN, _TN, _SCORED, _LOG_LOSS, _BRIER = range(8)

    def __init__(
        self,
        positive_label: object,
        decision_threshold: float = 0.5,
        bins: int = SCORE_BINS,
        *,
        negative_label: object | None = None,
    ) -> None:
        if bins < 1:
            raise ValueError("bins must be >= 1")
        positive = normalize_label(positive_label)
        if positive is None:
            raise ValueError(f"positive_label {positive_label!r} is no label")
        self.positive_label = positive
        negative = normalize_label(negative_label)
        if negative is None and positive == "1":
            negative = "0"  # a 0/1 model (also true/false)
        #: the classes a label may be; ``None``: anything but the positive one is negative
        self.known: frozenset[str] | None = (
            None if negative is None else frozenset({positive, negative})
        )
        self.decision_threshold = float(decision_threshold)
        self.bins = bins
        self._hist = 8
        self.size = 8 + 2 * bins

    def zeros(self) -> Vector:
        return np.zeros(self.size)

    def accumulate(
        self,
        y_true: ArrayLike,
        score: ArrayLike,
        label: ArrayLike,
        probabilities: ArrayLike | None = None,
    ) -> Vector:
        """The vector of these pairs; ``probabilities`` is not used by this task."""
        y = normalize_labels(_objects(y_true, None, "y_true"))
        s = _floats(score, y.size, "score")
        lab = normalize_labels(_objects(label, y.size, "label"))
        pos = y == self.positive_label
        has_score = ~np.isnan(s)
        has_label = _present(lab)
        pred = np.where(has_score, s >= self.decision_threshold, lab == self.positive_label)
        counted = _present(y) & (has_score | has_label)
        pos, neg, pred, scored = pos[counted], ~pos[counted], pred[counted], has_score[counted]
        s = s[counted]
        out = self.zeros()
        out[self._PAIRS] = counted.sum()
        out[self._TP] = np.count_nonzero(pos & pred)
        out[self._FP] = np.count_nonzero(neg & pred)
        out[self._FN] = np.count_nonzero(pos & ~pred)
        out[self._TN] = np.count_nonzero(neg & ~pred)
        ps, ns = s[pos & scored], s[neg & scored]
        out[self._SCORED] = ps.size + ns.size
        eps = PROBABILITY_EPS
        out[self._LOG_LOSS] = -(
            np.log(np.clip(ps, eps, 1 - eps)).sum() + np.log(np.clip(1 - ns, eps, 1 - eps)).sum()
        )
        out[self._BRIER] = np.square(ps - 1.0).sum() + np.square(ns).sum()
        h, b = self._hist, self.bins
        out[h : h + b] = _histogram(ps, None, b)
        out[h + b : h + 2 * b] = _histogram(ns, None, b)
        return out

    def pairs(self, acc: Vector) -> int:
        return round(float(acc[self._PAIRS]))

    def metrics(self, acc: Vector) -> dict[str, float]:
        tp, fp, fn, tn = (float(acc[i]) for i in (self._TP, self._FP, self._FN, self._TN))
        out: dict[str, float] = {}
        if self.pairs(acc) <= 0:
            return out
        _put(out, "accuracy", _ratio(tp + tn, tp + fp + fn + tn))
        _put(out, "precision", _ratio(tp, tp + fp))
        _put(out, "recall", _ratio(tp, tp + fn))
        _put(out, "f1", _ratio(2 * tp, 2 * tp + fp + fn))
        h, b = self._hist, self.bins
        _put(out, "roc_auc", _auc(acc[h : h + b], acc[h + b : h + 2 * b]))
        scored = float(acc[self._SCORED])
        _put(out, "log_loss", _ratio(float(acc[self._LOG_LOSS]), scored))
        _put(out, "brier", _ratio(float(acc[self._BRIER]), scored))
        return out

    def unknown_labels(self, y_true: ArrayLike) -> tuple[int, str | None]:
        return _unknown(y_true, self.known)


class MulticlassClassificationPerformance:
    """A confusion matrix over ``classes`` plus one "other" class, and a log-loss sum.

    Labels outside ``classes`` all count as the one "other" class. The predicted class is
    the pair's label, or when it has none, the argmax of its ``probabilities`` row (columns
    in the order of ``classes``). Macro precision, recall and f1 average over the classes
    seen in the truth or the predictions, with 0 for a 0/0 (scikit-learn's
    ``average="macro", zero_division=0``). ``log_loss`` is ``-log p(true class)`` over the
    rows with probabilities (a true class outside ``classes`` has p = 0, clipped to eps).
    """

    metric_names = MULTICLASS_METRICS
    _PAIRS, _SCORED, _LOG_LOSS = range(3)

    def __init__(self, classes: Sequence[str]) -> None:
        names = [n for n in (normalize_label(c) for c in classes) if n is not None]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError("multiclass_classification needs at least two distinct classes")
        self.classes = tuple(names)
        self._index = {c: i for i, c in enumerate(names)}
        self.k = len(names) + 1  # the last one is "other"
        self.size = 3 + self.k * self.k

    def zeros(self) -> Vector:
        return np.zeros(self.size)

    def _codes(self, values: NDArray[np.object_]) -> NDArray[np.intp]:
        """Class index of each (normalised) value; "other" (k - 1) for unknown ones and for
        ``None``."""
        uniq, inverse = np.unique(values.astype(str), return_inverse=True)
        lut = np.array([self._index.get(u, self.k - 1) for u in uniq.tolist()], dtype=np.intp)
        return lut[inverse.ravel()]

    def accumulate(
        self,
        y_true: ArrayLike,
        score: ArrayLike,
        label: ArrayLike,
        probabilities: ArrayLike | None = None,
    ) -> Vector:
        """The vector of these pairs; ``score`` is not used by this task."""
        y = normalize_labels(_objects(y_true, None, "y_true"))
        lab = normalize_labels(_objects(label, y.size, "label"))
        truth, y_ok = self._codes(y), _present(y)
        pred, pred_ok = self._codes(lab), _present(lab)
        out = self.zeros()
        if probabilities is not None:
            prob = np.asarray(probabilities, dtype=np.float64)
            if prob.shape != (y.size, self.k - 1):
                raise ValueError(f"probabilities must be {y.size} x {self.k - 1}")
            rows = np.isfinite(prob).all(axis=1)
            fill = rows & ~pred_ok
            pred[fill] = np.argmax(prob[fill], axis=1)
            pred_ok = pred_ok | rows
            scored = rows & y_ok
            t = truth[scored]
            p = np.zeros(t.size)
            known = t < self.k - 1
            p[known] = prob[scored][known, t[known]]
            eps = PROBABILITY_EPS
            out[self._SCORED] = t.size
            out[self._LOG_LOSS] = -np.log(np.clip(p, eps, 1 - eps)).sum()
        counted = y_ok & pred_ok
        out[self._PAIRS] = counted.sum()
        cells = truth[counted] * self.k + pred[counted]
        out[3:] = np.bincount(cells, minlength=self.k * self.k)
        return out

    def confusion(self, acc: Vector) -> NDArray[np.float64]:
        """The k x k confusion matrix (rows: truth, columns: prediction; "other" last)."""
        return acc[3:].reshape(self.k, self.k)

    def pairs(self, acc: Vector) -> int:
        return round(float(acc[self._PAIRS]))

    def metrics(self, acc: Vector) -> dict[str, float]:
        out: dict[str, float] = {}
        cm = self.confusion(acc)
        total = float(cm.sum())
        if total > 0:
            tp = np.diag(cm)
            predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
            seen = (predicted + actual) > 0
            tp, predicted, actual = tp[seen], predicted[seen], actual[seen]
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(predicted > 0, tp / predicted, 0.0)
                recall = np.where(actual > 0, tp / actual, 0.0)
                f1 = 2 * tp / (predicted + actual)
            out["accuracy"] = float(tp.sum()) / total
            out["precision"] = float(precision.mean())
            out["recall"] = float(recall.mean())
            out["f1"] = float(f1.mean())
        _put(out, "log_loss", _ratio(float(acc[self._LOG_LOSS]), float(acc[self._SCORED])))
        return out

    def unknown_labels(self, y_true: ArrayLike) -> tuple[int, str | None]:
        return _unknown(y_true, frozenset(self.classes))


class RegressionPerformance:
    """Sums of errors and of the targets: mae, rmse, mape, r2 and mean error (bias).

    The prediction is the pair's score; pairs where it or the target is not a finite
    number do not count. ``mape`` floors ``|y|`` at machine epsilon, as scikit-learn does.
    ``r2`` is ``1 - SSE / SST`` with ``SST = Σy² - (Σy)²/n``, so it merges; it is left out
    below two pairs and when the targets are (numerically) constant, where scikit-learn
    falls back to the convention 1.0 or 0.0. The one-pass ``SST`` loses precision when
    ``|mean(y)| / std(y)`` is beyond about 1e6.
    """

    metric_names = REGRESSION_METRICS
    _N, _ERR, _ABS, _SQ, _PCT, _Y, _Y2 = range(7)
    size = 7

    def zeros(self) -> Vector:
        return np.zeros(self.size)

    def accumulate(
        self,
        y_true: ArrayLike,
        score: ArrayLike,
        label: ArrayLike,
        probabilities: ArrayLike | None = None,
    ) -> Vector:
        """The vector of these pairs; ``label`` and ``probabilities`` are not used."""
        y = _numbers(y_true)
        pred = _floats(score, y.size, "score")
        ok = np.isfinite(y) & np.isfinite(pred)
        y, pred = y[ok], pred[ok]
        err = pred - y
        out = self.zeros()
        out[self._N] = y.size
        out[self._ERR] = err.sum()
        out[self._ABS] = np.abs(err).sum()
        out[self._SQ] = np.square(err).sum()
        out[self._PCT] = (np.abs(err) / np.maximum(np.abs(y), _MAPE_EPS)).sum()
        out[self._Y] = y.sum()
        out[self._Y2] = np.square(y).sum()
        return out

    def pairs(self, acc: Vector) -> int:
        return round(float(acc[self._N]))

    def metrics(self, acc: Vector) -> dict[str, float]:
        n = self.pairs(acc)
        if n <= 0:
            return {}
        sse = max(float(acc[self._SQ]), 0.0)
        out = {
            "mae": float(acc[self._ABS]) / n,
            "rmse": math.sqrt(sse / n),
            "mape": float(acc[self._PCT]) / n,
            "mean_error": float(acc[self._ERR]) / n,
        }
        y2 = float(acc[self._Y2])
        sst = y2 - float(acc[self._Y]) ** 2 / n
        if n >= 2 and sst > 1e-12 * y2:
            out["r2"] = 1.0 - sse / sst
        return out

    def unknown_labels(self, y_true: ArrayLike) -> tuple[int, str | None]:
        return 0, None  # any number is a target


class ExpectedPerformance:
    """Performance expected from the scores alone, before any label arrives (CBPE).

    Confidence-based performance estimation, as NannyML's CBPE: each prediction is a
    positive with probability p, whatever its label turns out to be, where p is its score
    read through ``calibration`` (fitted on the labelled reference, see
    :mod:`monitor.score_calibration`), or without one the score itself, which is then
    **assumed calibrated**. The predicted class is still the model's: positive when the
    score (clipped to [0, 1]) is >= the threshold t. The expected confusion matrix is
    ``E[TP] = Σ p·1[s>=t]``, ``E[FP] = Σ (1-p)·1[s>=t]``, ``E[FN] = Σ p·1[s<t]``,
    ``E[TN] = Σ (1-p)·1[s<t]``, and the expected ROC AUC is the AUC of histograms of the
    scores s weighted by p (positives) and 1 - p (negatives).

    It runs over every prediction with a score, labelled or not. It tracks covariate shift
    (the inputs, hence the scores, moving while P(y | x) stays), because the calibration
    holds there; under concept drift (P(y | x) itself changes) the calibration is stale and
    the estimate is wrong, which is what comparing it with the realized performance shows.

    >>> est = ExpectedPerformance()
    >>> m = est.metrics(est.accumulate(np.array([0.9, 0.8, 0.1, 0.3])))
    >>> round(m["accuracy"], 6), round(m["precision"], 6)
    (0.825, 0.85)
    """

    metric_names = EXPECTED_METRICS
    _N, _TP, _FP, _FN, _TN = range(5)

    def __init__(
        self,
        decision_threshold: float = 0.5,
        bins: int = SCORE_BINS,
        *,
        calibration: ScoreCalibration | None = None,
    ) -> None:
        if bins < 1:
            raise ValueError("bins must be >= 1")
        self.decision_threshold = float(decision_threshold)
        self.bins = bins
        self.calibration = calibration
        self.size = 5 + 2 * bins

    def zeros(self) -> Vector:
        return np.zeros(self.size)

    def accumulate(self, score: ArrayLike) -> Vector:
        """The vector of these predictions; scores clipped to [0, 1], NaN ones left out
        (the calibration reads the scores before clipping)."""
        raw = _floats(score, None, "score")
        raw = raw[~np.isnan(raw)]
        s = np.clip(raw, 0.0, 1.0)
        p = s if self.calibration is None else self.calibration.apply(raw)
        positive = s >= self.decision_threshold
        out = self.zeros()
        out[self._N] = s.size
        out[self._TP] = p[positive].sum()
        out[self._FP] = (1 - p[positive]).sum()
        out[self._FN] = p[~positive].sum()
        out[self._TN] = (1 - p[~positive]).sum()
        b = self.bins
        out[5 : 5 + b] = _histogram(s, p, b)
        out[5 + b : 5 + 2 * b] = _histogram(s, 1 - p, b)
        return out

    def predictions(self, acc: Vector) -> int:
        return round(float(acc[self._N]))

    def metrics(self, acc: Vector) -> dict[str, float]:
        n = self.predictions(acc)
        if n <= 0:
            return {}
        tp, fp, fn, tn = (float(acc[i]) for i in (self._TP, self._FP, self._FN, self._TN))
        # Expected masses are float sums: treat what rounding leaves of a zero as zero.
        floor = 1e-9 * n
        out: dict[str, float] = {"accuracy": (tp + tn) / n}
        _put(out, "precision", _ratio(tp, tp + fp, floor))
        _put(out, "recall", _ratio(tp, tp + fn, floor))
        _put(out, "f1", _ratio(2 * tp, 2 * tp + fp + fn, floor))
        b = self.bins
        _put(out, "roc_auc", _auc(acc[5 : 5 + b], acc[5 + b : 5 + 2 * b], floor))
        return out
