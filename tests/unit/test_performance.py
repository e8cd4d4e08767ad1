"""Performance accumulators agree with scikit-learn, and merge and expire like panes do.

Every realized metric is checked against scikit-learn on the pairs that count, for the whole
batch, for a sum of vectors over random chunks (merge) and for that sum minus one chunk
(expiry). Rates built on counts must agree to 1e-9. Metrics built on float sums also carry
the rounding of the sums: after an expiry, up to ~1e-16 times what was subtracted, and for
r2 the conditioning of the one-pass ``SST = Σy² - (Σy)²/n``; the tolerances below say so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn import metrics as skm

from monitor.labels import normalize_label
from monitor.performance import (
    PROBABILITY_EPS,
    SCORE_BINS,
    BinaryClassificationPerformance,
    ExpectedPerformance,
    MulticlassClassificationPerformance,
    PerformanceAccumulator,
    RegressionPerformance,
    accumulator_for,
)

EPS = PROBABILITY_EPS
COUNT_METRICS = {"accuracy", "precision", "recall", "f1", "roc_auc"}
Arrays = tuple[NDArray[Any], ...]


def obj(values: Sequence[Any]) -> NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def check(got: dict[str, float], want: dict[str, float], slack: dict[str, float]) -> None:
    """Same metric names; values within 1e-9 (relative) plus the float-sum ``slack``."""
    assert got.keys() == want.keys()
    for name, w in want.items():
        g = got[name]
        if name == "rmse":  # rounding is on the sum of squares: compare squares
            g, w = g * g, w * w
        tol = 1e-12 + slack.get(name, 0.0)
        assert math.isclose(g, w, rel_tol=1e-9, abs_tol=tol), (name, g, w)


@st.composite
def chunking(draw: st.DrawFn, n: int) -> list[slice]:
    """Random contiguous chunks covering ``range(n)``, empty ones allowed."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def run_merge_and_expiry(
    acc: PerformanceAccumulator,
    arrays: Arrays,
    chunks: list[slice],
    expired: int,
    reference: Callable[[Arrays], dict[str, float]],
    slack: Callable[[Arrays, Arrays], dict[str, float]],
    probabilities: NDArray[np.float64] | None = None,
) -> None:
    """Whole batch, merge of chunks and expiry of one chunk all equal the reference."""

    def vector(part: slice) -> NDArray[np.float64]:
        p = None if probabilities is None else probabilities[part]
        return acc.accumulate(*(a[part] for a in arrays[:3]), probabilities=p)

    everything = slice(0, arrays[0].size)
    whole = vector(everything)
    want = reference(arrays)
    no_slack = slack(arrays, arrays)
    check(acc.metrics(whole), want, no_slack)

    vectors = [vector(c) for c in chunks]
    merged = np.sum(vectors, axis=0)
    check(acc.metrics(merged), want, no_slack)
    assert acc.pairs(merged) == acc.pairs(whole)

    gone = chunks[expired]
    keep = np.ones(arrays[0].size, dtype=bool)
    keep[gone] = False
    rest = tuple(a[keep] for a in arrays)
    check(acc.metrics(merged - vectors[expired]), reference(rest), slack(arrays, rest))


# --- binary classification -------------------------------------------------------------

# Scores on bin centres, plus the clip edges 0 and 1 (alone in the first and last bins):
# the histogram AUC is then exact, as only equal scores share a bin.
grid_score = st.integers(1, SCORE_BINS - 2).map(lambda k: (k + 0.5) / SCORE_BINS)
binary_score = grid_score | st.sampled_from([0.0, 1.0, math.nan])
binary_truth = st.sampled_from(["fraud", "ok", "other", None, 1, 0, True])
binary_label = st.sampled_from(["fraud", "ok", None, 1])


@st.composite
def binary_batches(draw: st.DrawFn) -> tuple[Arrays, list[slice], int]:
    rows = draw(
        st.lists(st.tuples(binary_truth, binary_score, binary_label), min_size=1, max_size=80)
    )
    n = len(rows)
    y, s, lab = zip(*rows, strict=True)
    chunks = draw(chunking(n))
    return (
        (obj(y), np.array(s, dtype=np.float64), obj(lab)),
        chunks,
        draw(st.integers(0, len(chunks) - 1)),
    )


def binary_reference(pos: str, threshold: float) -> Callable[[Arrays], dict[str, float]]:
    def reference(arrays: Arrays) -> dict[str, float]:
        y, s, lab = arrays
        # labels compared after the one documented normalisation (True is "1", ...)
        y, lab = [normalize_label(v) for v in y], [normalize_label(v) for v in lab]
        truth = np.array([v == pos for v in y], dtype=int)
        has_y = np.array([v is not None for v in y], dtype=bool)
        has_s = ~np.isnan(s)
        has_lab = np.array([v is not None for v in lab], dtype=bool)
        by_label = np.array([v == pos for v in lab], dtype=bool)
        pred = np.where(has_s, s >= threshold, by_label).astype(int)
        counted = has_y & (has_s | has_lab)
        yt, yp = truth[counted], pred[counted]
        out: dict[str, float] = {}
        if yt.size:
            out["accuracy"] = skm.accuracy_score(yt, yp)
            if yp.sum():
                out["precision"] = skm.precision_score(yt, yp)
            if yt.sum():
                out["recall"] = skm.recall_score(yt, yp)
            if yt.sum() + yp.sum():
                out["f1"] = skm.f1_score(yt, yp)
        scored = has_y & has_s
        ys, ss = truth[scored], s[scored]
        if ys.size:
            if 0 < ys.sum() < ys.size:
                out["roc_auc"] = skm.roc_auc_score(ys, ss)
            out["log_loss"] = skm.log_loss(ys, ss, labels=[0, 1])
            out["brier"] = skm.brier_score_loss(ys, ss, labels=[0, 1])
        return out

    return reference


def binary_slack(total: Arrays, rest: Arrays) -> dict[str, float]:
    """Rounding left by subtracting sums of terms bounded by -log(eps) and 1."""
    n_rest = max(int(np.sum(~np.isnan(rest[1]))), 1)
    n_total = int(np.sum(~np.isnan(total[1])))
    return {"log_loss": 1e-12 * 37 * n_total / n_rest, "brier": 1e-12 * n_total / n_rest}


@settings(max_examples=60, deadline=None)
@given(
    batch=binary_batches(),
    threshold=st.sampled_from([0.5, 0.3, 0.8]),
    pos=st.sampled_from(["fraud", "1"]),
)
def test_binary_metrics_equal_sklearn_merged_and_expired(
    batch: tuple[Arrays, list[slice], int], threshold: float, pos: str
) -> None:
    arrays, chunks, expired = batch
    acc = accumulator_for("binary_classification", positive_label=pos, decision_threshold=threshold)
    run_merge_and_expiry(
        acc, arrays, chunks, expired, binary_reference(pos, threshold), binary_slack
    )


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(200, 3000),
    a=st.floats(0.3, 5),
    b=st.floats(0.3, 5),
)
def test_binary_histogram_auc_within_001_of_sklearn_on_continuous_scores(
    seed: int, n: int, a: float, b: float
) -> None:
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, size=n)
    y = rng.random(n) < p
    if y.all() or not y.any():
        y[0] = not y[0]
    acc = BinaryClassificationPerformance("1")
    got = acc.metrics(acc.accumulate(obj(y.astype(int).tolist()), p, obj([None] * n)))
    assert abs(got["roc_auc"] - skm.roc_auc_score(y, p)) < 0.01


def test_binary_threshold_is_inclusive_and_label_is_the_fallback() -> None:
    acc = BinaryClassificationPerformance("yes", decision_threshold=0.5)
    y = obj(["yes", "no", "yes", "no", "yes"])
    s = np.array([0.5, 0.4999, math.nan, math.nan, math.nan])
    lab = obj([None, None, "yes", "yes", None])  # the last pair has no prediction at all
    v = acc.accumulate(y, s, lab)
    assert acc.pairs(v) == 4
    assert acc.metrics(v)["accuracy"] == 3 / 4
    assert acc.metrics(v)["precision"] == 2 / 3


def test_undefined_metrics_are_left_out() -> None:
    acc = BinaryClassificationPerformance("yes")
    assert acc.metrics(acc.zeros()) == {}
    v = acc.accumulate(obj(["no", "no"]), np.array([0.1, 0.2]), obj([None, None]))
    assert set(acc.metrics(v)) == {"accuracy", "log_loss", "brier"}  # no positives anywhere


# --- multiclass classification ---------------------------------------------------------

CLASS_POOL = ["a", "b", "c", "d", "e"]


@st.composite
def multiclass_batches(
    draw: st.DrawFn, *, outside: bool = True
) -> tuple[list[str], Arrays, NDArray[np.float64] | None, list[slice], int]:
    classes = draw(st.lists(st.sampled_from(CLASS_POOL), min_size=2, max_size=5, unique=True))
    values = classes + (["z", 7] if outside else [])
    n = draw(st.integers(1, 80))
    y = draw(st.lists(st.sampled_from([*values, None]), min_size=n, max_size=n))
    lab = draw(st.lists(st.sampled_from([*values, *classes, None]), min_size=n, max_size=n))
    prob = None
    if draw(st.booleans()):
        weights = st.lists(st.floats(0, 1), min_size=len(classes), max_size=len(classes))
        rows = []
        for _ in range(n):
            w = np.array(draw(weights))
            missing = draw(st.integers(0, 4)) == 0
            rows.append(np.full(w.size, np.nan) if missing else (w + 1e-3) / (w + 1e-3).sum())
        prob = np.array(rows)
    chunks = draw(chunking(n))
    return (
        classes,
        (obj(y), np.full(n, np.nan), obj(lab)),
        prob,
        chunks,
        draw(st.integers(0, len(chunks) - 1)),
    )


def multiclass_reference(
    classes: list[str], prob: NDArray[np.float64] | None
) -> Callable[[Arrays], dict[str, float]]:
    def mapped(v: Any) -> str:
        return str(v) if str(v) in classes else "__other__"

    def reference(arrays: Arrays) -> dict[str, float]:
        y, _, lab, rows = arrays
        out: dict[str, float] = {}
        truth, pred = [], []
        for t, p, r in zip(y, lab, rows, strict=True):
            if t is None:
                continue
            if p is not None:
                pred.append(mapped(p))
            elif prob is not None and np.isfinite(prob[r]).all():
                pred.append(classes[int(np.argmax(prob[r]))])
            else:
                continue
            truth.append(mapped(t))
        if truth:
            out["accuracy"] = skm.accuracy_score(truth, pred)
            for name, fn in (
                ("precision", skm.precision_score),
                ("recall", skm.recall_score),
                ("f1", skm.f1_score),
            ):
                out[name] = fn(truth, pred, average="macro", zero_division=0)
        if prob is not None:
            scored = [
                (str(t), r)
                for t, r in zip(y, rows, strict=True)
                if t is not None and np.isfinite(prob[r]).all()
            ]
            if scored:
                order = sorted(classes)
                columns = [classes.index(c) for c in order]
                truths, at = zip(*scored, strict=True)
                out["log_loss"] = skm.log_loss(
                    list(truths), prob[np.array(at)][:, columns], labels=order
                )
        return out

    return reference


def multiclass_slack(total: Arrays, rest: Arrays) -> dict[str, float]:
    return {"log_loss": 1e-12 * 37 * total[0].size / max(rest[0].size, 1)}


@settings(max_examples=50, deadline=None)
@given(batch=multiclass_batches(outside=True))
def test_multiclass_confusion_metrics_equal_sklearn_merged_and_expired(
    batch: tuple[list[str], Arrays, NDArray[np.float64] | None, list[slice], int],
) -> None:
    classes, (y, s, lab), _, chunks, expired = batch
    acc = accumulator_for("multiclass_classification", positive_label=None, classes=classes)
    rows = np.arange(y.size)
    run_merge_and_expiry(
        acc,
        (y, s, lab, rows),
        chunks,
        expired,
        multiclass_reference(classes, None),
        multiclass_slack,
    )


@settings(max_examples=50, deadline=None)
@given(batch=multiclass_batches(outside=False))
def test_multiclass_log_loss_and_argmax_equal_sklearn_merged_and_expired(
    batch: tuple[list[str], Arrays, NDArray[np.float64] | None, list[slice], int],
) -> None:
    classes, (y, s, lab), prob, chunks, expired = batch
    acc = MulticlassClassificationPerformance(classes)
    rows = np.arange(y.size)
    run_merge_and_expiry(
        acc,
        (y, s, lab, rows),
        chunks,
        expired,
        multiclass_reference(classes, prob),
        multiclass_slack,
        probabilities=prob,
    )


def test_multiclass_true_class_outside_the_list_has_probability_zero() -> None:
    acc = MulticlassClassificationPerformance(["a", "b"])
    prob = np.array([[0.75, 0.25], [0.5, 0.5]])
    v = acc.accumulate(obj(["a", "zebra"]), np.full(2, np.nan), obj([None, None]), prob)
    got = acc.metrics(v)
    assert got["log_loss"] == pytest.approx((-math.log(0.75) - math.log(EPS)) / 2, rel=1e-12)
    assert acc.confusion(v)[2].tolist() == [1.0, 0.0, 0.0]  # "zebra" counted as other


def test_multiclass_needs_classes() -> None:
    with pytest.raises(ValueError, match="classes"):
        accumulator_for("multiclass_classification", positive_label=None)
    with pytest.raises(ValueError, match="positive_label"):
        accumulator_for("binary_classification", positive_label=None)
    with pytest.raises(ValueError, match="unknown task"):
        accumulator_for("ranking", positive_label=None)


# --- regression ------------------------------------------------------------------------

# Multiples of 1/8: errors, their squares and the targets' sums are exact in float64, so
# merges and expiries of everything but mape (a division) are exact.
dyadic = st.integers(-4000, 4000).map(lambda k: k / 8)
target = dyadic | st.sampled_from([0.0, None, "2.5"])
prediction = dyadic | st.just(math.nan)


@st.composite
def regression_batches(draw: st.DrawFn) -> tuple[Arrays, list[slice], int]:
    n = draw(st.integers(1, 80))
    y = draw(st.lists(target, min_size=n, max_size=n))
    s = draw(st.lists(prediction, min_size=n, max_size=n))
    chunks = draw(chunking(n))
    return (obj(y), np.array(s), obj([None] * n)), chunks, draw(st.integers(0, len(chunks) - 1))


def regression_pairs(arrays: Arrays) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    y = np.array([math.nan if v is None else float(v) for v in arrays[0]])
    s = arrays[1]
    ok = np.isfinite(y) & np.isfinite(s)
    return y[ok], s[ok]


def regression_reference(arrays: Arrays) -> dict[str, float]:
    y, p = regression_pairs(arrays)
    if not y.size:
        return {}
    out = {
        "mae": skm.mean_absolute_error(y, p),
        "rmse": math.sqrt(skm.mean_squared_error(y, p)),
        "mape": skm.mean_absolute_percentage_error(y, p),
        "mean_error": float(np.mean(p - y)),
    }
    if y.size >= 2 and np.ptp(y) > 0:
        out["r2"] = skm.r2_score(y, p)
    return out


def regression_slack(total: Arrays, rest: Arrays) -> dict[str, float]:
    """Rounding of the sums: mape's subtraction, and the conditioning of one-pass SST."""
    yt, pt = regression_pairs(total)
    y, p = regression_pairs(rest)
    n = max(y.size, 1)
    mape_terms = np.abs(pt - yt) / np.maximum(np.abs(yt), EPS)
    sse = float(np.sum((p - y) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    r2_slack = 0.0
    if sst > 0:
        r2_slack = 1e-12 * (1 + sse / sst) * (float(np.sum(yt**2)) + 1) / sst
    return {
        "mape": 1e-12 * float(mape_terms.sum()) / n,
        "mean_error": 1e-12 * float(np.abs(pt - yt).sum()) / n,
        "r2": r2_slack,
    }


@settings(max_examples=60, deadline=None)
@given(batch=regression_batches())
def test_regression_metrics_equal_sklearn_merged_and_expired(
    batch: tuple[Arrays, list[slice], int],
) -> None:
    arrays, chunks, expired = batch
    acc = accumulator_for("regression", positive_label=None)
    run_merge_and_expiry(acc, arrays, chunks, expired, regression_reference, regression_slack)


@settings(max_examples=30, deadline=None)
@given(
    y=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60),
    noise=st.lists(st.floats(-1e3, 1e3), min_size=60, max_size=60),
)
def test_regression_on_arbitrary_floats(y: list[float], noise: list[float]) -> None:
    yt = np.array(y)
    p = yt + np.array(noise[: yt.size])
    acc = RegressionPerformance()
    got = acc.metrics(acc.accumulate(obj(y), p, obj([None] * yt.size)))
    want = regression_reference((obj(y), p))
    slack = {"mean_error": 1e-12 * float(np.abs(p - yt).sum()) / yt.size}
    sst = float(np.sum((yt - yt.mean()) ** 2))
    if "r2" in want and "r2" not in got:
        # constant targets (numerically): scikit-learn's 1.0/0.0 convention, left out here
        assert sst <= 1e-12 * float(np.sum(yt**2)) * 10
        del want["r2"]
    elif sst > 0:
        slack["r2"] = 1e-12 * yt.size * (1 + abs(1 - want.get("r2", 1.0))) * np.sum(yt**2) / sst
    check(got, want, slack)


# --- confidence-based performance estimation -------------------------------------------


def calibrated(rng: np.random.Generator, n: int, a: float, b: float) -> tuple[Any, Any]:
    """A calibrated model: the score is P(y = 1) and the outcome is drawn from it."""
    p = rng.beta(a, b, size=n)
    return p, (rng.random(n) < p).astype(int)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cbpe_tracks_realized_accuracy_and_auc_under_covariate_shift(seed: int) -> None:
    rng = np.random.default_rng(seed)
    est = ExpectedPerformance(decision_threshold=0.5)
    realized, estimated = [], []
    # Before: confident scores, mostly negatives; after: the inputs moved, so the scores
    # pile up near 0.5 and the model is right less often.
    for a, b in ((1.0, 4.0), (3.0, 2.5)):
        p, y = calibrated(rng, 20_000, a, b)
        chunks = np.array_split(np.arange(p.size), 7)
        vec = np.sum([est.accumulate(p[c]) for c in chunks], axis=0)
        np.testing.assert_allclose(vec, est.accumulate(p), rtol=1e-12, atol=1e-9)
        got = est.metrics(vec)
        pred = (p >= 0.5).astype(int)
        want = {
            "accuracy": skm.accuracy_score(y, pred),
            "roc_auc": skm.roc_auc_score(y, p),
            "precision": skm.precision_score(y, pred),
            "recall": skm.recall_score(y, pred),
            "f1": skm.f1_score(y, pred),
        }
        for name in ("accuracy", "roc_auc"):
            assert abs(got[name] - want[name]) < 0.02, (name, got[name], want[name])
        for name in ("precision", "recall", "f1"):
            assert abs(got[name] - want[name]) < 0.03, (name, got[name], want[name])
        realized.append(want)
        estimated.append(got)
    for name in ("accuracy", "roc_auc"):
        moved = realized[1][name] - realized[0][name]
        assert moved < -0.05  # the shift really costs performance...
        # ...and the estimate moves with it.
        assert abs((estimated[1][name] - estimated[0][name]) - moved) < 0.03


def test_cbpe_is_wrong_when_scores_are_not_calibrated() -> None:
    """The documented assumption matters: with concept drift the estimate misses."""
    rng = np.random.default_rng(3)
    p = rng.beta(1.0, 4.0, size=20_000)
    y = (rng.random(p.size) < np.sqrt(p)).astype(int)  # the world now says yes more often
    est = ExpectedPerformance()
    got = est.metrics(est.accumulate(p))
    assert got["accuracy"] - skm.accuracy_score(y, p >= 0.5) > 0.1


def test_cbpe_expiry_and_empty() -> None:
    est = ExpectedPerformance()
    assert est.metrics(est.zeros()) == {}
    a = est.accumulate(np.array([0.9, 0.2, math.nan]))
    b = est.accumulate(np.array([0.6, 0.7]))
    assert est.predictions(a) == 2
    got, want = est.metrics((a + b) - b), est.metrics(a)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12)


def test_one_pair() -> None:
    acc = BinaryClassificationPerformance("1")
    v = acc.accumulate(obj([1]), np.array([0.7]), obj([None]))
    assert acc.metrics(v) == {
        "accuracy": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "log_loss": pytest.approx(-math.log(0.7)),
        "brier": pytest.approx(0.09),
    }
