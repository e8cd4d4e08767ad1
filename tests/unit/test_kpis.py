"""Business KPIs against numpy on the same events: per window (panes merged and expired),
per segment, with the prediction filter; exported as ``driftline_kpi``."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumers.exporter import DriftlineCollector, StateSnapshot
from consumers.model_specs import kpis_of
from monitor.config import ModelSettings
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.events import EventBatch
from monitor.label_join import LabelJoin
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.performance import accumulator_for
from monitor.reference import build_profile
from monitor.segments import SegmentOptions

#: fixed drift thresholds: these tests check KPIs, not the calibrated thresholds (whose
#: simulation, for a new reference every example, would take most of their time)
FIXED = DriftPolicy(MethodChoice("wasserstein", 0.1), MethodChoice("jensenshannon", 0.1))

KPIS: dict[str, Any] = {
    "events": {"agg": "count"},
    "events_per_second": {"agg": "rate"},
    "amount": {"agg": "sum", "field": "amount"},
    "amount_per_second": {"agg": "rate", "field": "amount"},
    "mean_amount": {"agg": "mean", "field": "amount"},
    "blocked_amount": {"agg": "sum", "field": "amount", "where": {"prediction": "positive"}},
    "passed": {"agg": "count", "where": {"prediction": "negative"}},
    "amount_p90": {"agg": "quantile", "field": "amount", "q": 0.9},
    "score_median": {"agg": "quantile", "field": "prediction", "q": 0.5},
}
REGIONS = np.array(["eu", "us", "ap"], dtype=object)
ONE = WindowSpec(60.0, 60.0, 0.0)


def model_settings() -> ModelSettings:
    return ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "unused.csv"}, "kpis": KPIS, "decision_threshold": 0.7}
    )


def monitor(rng: np.random.Generator, pane: float, panes: int) -> ModelMonitor:
    n = 5000
    cols = {"amount": rng.lognormal(3, 1, n), "prediction": rng.random(n)}
    profile = build_profile("m", cols)
    profile = SegmentOptions(("tags.region",), top_k=2).apply(
        profile, {**cols, "tags.region": rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2])}
    )
    kpis = kpis_of(model_settings(), profile)
    return ModelMonitor(profile, WindowSpec(pane, pane * panes, 0.0), FIXED, kpis=kpis)


def events(rng: np.random.Generator, n: int, t0: float, t1: float) -> EventBatch:
    amount = rng.lognormal(3.2, 1, n)
    amount[rng.random(n) < 0.05] = np.nan
    region = np.empty(n, dtype=object)
    region[:] = rng.choice(REGIONS, n).tolist()
    return EventBatch(
        model="m",
        event_time=rng.uniform(t0, t1, n),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, "v1", dtype=object),
        numerical={"amount": amount},
        categorical={},
        score=rng.random(n),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
        tags={"region": region},
    )


def expected(b: EventBatch, seconds: float) -> dict[str, float]:
    amount, score = b.numerical["amount"], b.score
    ok = ~np.isnan(amount)
    positive = score >= 0.7
    return {
        "events": float(len(b)),
        "events_per_second": len(b) / seconds,
        "amount": float(amount[ok].sum()),
        "amount_per_second": float(amount[ok].sum()) / seconds,
        "mean_amount": float(amount[ok].mean()),
        "blocked_amount": float(amount[ok & positive].sum()),
        "passed": float((~positive).sum()),
    }


def within_a_bin(m: ModelMonitor, name: str, got: float, values: np.ndarray, q: float) -> None:
    """A sketch's quantile lies within the reference bins of the window's values next to
    rank ``q * n`` (the histogram knows no more of where values sit inside a bin)."""
    (slot,) = [s for s in m.kpis.slots if s.name == name]  # type: ignore[union-attr]
    edges = slot.bins.edges  # type: ignore[union-attr]
    v = np.sort(values)
    rank = q * v.size
    below, above = v[max(int(np.floor(rank)) - 1, 0)], v[min(int(np.ceil(rank)), v.size - 1)]
    k = int(np.searchsorted(edges, below, side="right"))  # below's bin: [edges[k-1], edges[k])
    lo = edges[k - 1] if k >= 1 else -np.inf
    k = int(np.searchsorted(edges, above, side="right"))
    hi = edges[k] if k < edges.size else np.inf
    assert lo <= got <= hi, (name, got, np.quantile(v, q), lo, hi)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), panes=st.integers(1, 4), batches=st.integers(1, 8))
def test_kpis_equal_numpy_per_window_and_per_segment(seed: int, panes: int, batches: int) -> None:
    rng = np.random.default_rng(seed)
    pane = 10.0
    m = monitor(rng, pane, panes)
    seen = []
    for i in range(batches):  # a batch per pane: early panes expire from the window
        b = events(rng, int(rng.integers(200, 800)), i * pane, (i + 1) * pane)
        m.ingest(b)
        seen.append(b)
    m.advance(batches * pane)
    ev = m.evaluate(now=0.0)
    inside = EventBatch.concat(seen[-panes:])
    seconds = panes * pane
    groups = {
        None: np.ones(len(inside), dtype=bool),
        "tags.region=eu": inside.tags["region"] == "eu",
        "tags.region=us": inside.tags["region"] == "us",
        "tags.region=other": inside.tags["region"] == "ap",
    }
    for segment, mask in groups.items():
        got = ev.kpis if segment is None else ev.segments[segment].kpis
        part = inside.select(mask)
        for name, value in expected(part, seconds).items():
            assert got[name] == pytest.approx(value, rel=1e-9), (segment, name)
        amount = part.numerical["amount"]
        within_a_bin(m, "amount_p90", got["amount_p90"], amount[~np.isnan(amount)], 0.9)
        within_a_bin(m, "score_median", got["score_median"], part.score, 0.5)


def test_kpis_are_exported_per_model_and_segment() -> None:
    rng = np.random.default_rng(1)
    m = monitor(rng, 60.0, 1)
    b = events(rng, 1000, 0.0, 60.0)
    m.ingest(b)
    m.advance(60.0)
    ev = m.evaluate(now=0.0)
    registry = CollectorRegistry()
    registry.register(DriftlineCollector(lambda: StateSnapshot("t", evaluations={"m": ev})))
    whole = registry.get_sample_value("driftline_kpi", {"model": "m", "kpi": "events"})
    eu = registry.get_sample_value(
        "driftline_kpi", {"model": "m", "kpi": "events", "segment": "tags.region=eu"}
    )
    assert (whole, eu) == (1000.0, float((b.tags["region"] == "eu").sum()))


@pytest.mark.parametrize(
    ("kpi", "error"),
    [
        ({"agg": "sum"}, "sum needs a field"),
        ({"agg": "count", "field": "amount"}, "drop field"),
        ({"agg": "quantile", "field": "amount"}, "required by agg: quantile"),
        ({"agg": "mean", "field": "amount", "q": 0.5}, "required by agg: quantile"),
        ({"agg": "median", "field": "amount"}, "count"),
    ],
)
def test_bad_kpis_name_their_key(kpi: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ModelSettings.model_validate(
            {"name": "m", "reference": {"path": "r.csv"}, "kpis": {"k": kpi}}
        )


def test_a_filter_on_the_prediction_is_for_binary_classifiers() -> None:
    with pytest.raises(ValueError, match="binary_classification only"):
        ModelSettings.model_validate(
            {
                "name": "m",
                "task": "regression",
                "reference": {"path": "r.csv"},
                "kpis": {"k": {"agg": "count", "where": {"prediction": "positive"}}},
            }
        )


LABELLED: dict[str, Any] = {
    "caught_amount": {
        "agg": "sum",
        "field": "amount",
        "where": {"prediction": "positive", "label": "positive"},
    },
    "missed": {"agg": "count", "where": {"prediction": "negative", "label": "positive"}},
    "labelled_mean_amount": {"agg": "mean", "field": "amount", "where": {"label": "negative"}},
}


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), early=st.floats(0.0, 1.0))
def test_label_aware_kpis_equal_numpy_on_the_joined_pairs(seed: int, early: float) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    cols = {"amount": rng.lognormal(3, 1, n), "prediction": rng.random(n)}
    # eu and us are the reference's top two regions; slices share its thresholds
    region = rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2])
    profile = SegmentOptions(("tags.region",), top_k=2, by_slice=False).apply(
        build_profile("m", cols), {**cols, "tags.region": region}
    )
    settings_ = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r.csv"}, "kpis": LABELLED, "positive_label": "fraud"}
    )
    m = ModelMonitor(
        profile,
        WindowSpec(60.0, 60.0, 0.0),
        FIXED,
        performance=accumulator_for("binary_classification", positive_label="fraud"),
        kpis=kpis_of(settings_, profile),
    )
    b = events(rng, 2000, 0.0, 60.0)
    b.event_id = [f"e{i}" for i in range(len(b))]
    y = np.where(rng.random(len(b)) < b.score, "fraud", "ok").astype(object)
    labelled = rng.random(len(b)) < 0.7
    first = labelled & (rng.random(len(b)) < early)  # labels that arrive before predictions
    join = LabelJoin()
    at = np.flatnonzero(first)
    ids = [b.event_id[i] for i in at]
    assert len(join.add_labels(ids, y[at], np.full(at.size, 1.0), now=0.0)) == 0
    join = LabelJoin.restore(json.loads(json.dumps(join.snapshot())))  # a checkpoint
    m.ingest(b)
    m.add_joined(
        join.add_predictions(
            b.event_id,
            b.event_time,
            b.score,
            b.label,
            b.model_version,
            now=0.0,
            segment=m.segment_cells(b),
            kpi=m.kpi_values(b),
        )
    )
    join = LabelJoin.restore(json.loads(json.dumps(join.snapshot())))
    at = np.flatnonzero(labelled & ~first)
    ids = [b.event_id[i] for i in at]
    m.add_joined(join.add_labels(ids, y[at], np.full(at.size, 30.0), now=0.0))
    m.advance(60.0)
    ev = m.evaluate(now=0.0)
    for segment, mask in {
        None: np.ones(len(b), dtype=bool),
        "tags.region=eu": b.tags["region"] == "eu",
        "tags.region=other": b.tags["region"] == "ap",
    }.items():
        got = ev.kpis if segment is None else ev.segments[segment].kpis
        amount = b.numerical["amount"]
        ok = labelled & mask & ~np.isnan(amount)
        fraud, flagged = y == "fraud", b.score >= 0.5
        assert got["caught_amount"] == pytest.approx(amount[ok & fraud & flagged].sum())
        assert got["missed"] == (labelled & mask & fraud & ~flagged).sum()
        assert got["labelled_mean_amount"] == pytest.approx(amount[ok & ~fraud].mean())


def test_panes_of_other_kpis_have_another_fingerprint() -> None:
    rng = np.random.default_rng(2)
    profile = build_profile("m", {"amount": rng.lognormal(3, 1, 500)})

    def fingerprint(kpis: dict[str, Any]) -> str:
        s = ModelSettings.model_validate({"name": "m", "reference": {"path": "r"}, "kpis": kpis})
        return ModelMonitor(profile, ONE, kpis=kpis_of(s, profile)).layout.fingerprint

    plain = ModelMonitor(profile, ONE).layout.fingerprint
    count = fingerprint({"n": {"agg": "count"}})
    assert len({plain, count, fingerprint({"n": {"agg": "sum", "field": "amount"}})}) == 3
    assert count == fingerprint({"n": {"agg": "count"}})


def _restart_monitor(kpis: dict[str, Any], segments: tuple[str, ...]) -> ModelMonitor:
    rng = np.random.default_rng(0)
    n = 1000
    cols = {"amount": rng.random(n) * 100, "fee": rng.random(n), "prediction": rng.random(n)}
    tags = {
        "tags.region": np.array(rng.choice(["eu", "us", "ap"], n).tolist(), dtype=object),
        "tags.dev": np.array(rng.choice(["ios", "android"], n).tolist(), dtype=object),
    }
    profile = SegmentOptions(segments, top_k=3, by_slice=False).apply(
        build_profile("m", cols), {**cols, **tags}
    )
    settings = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r.csv"}, "kpis": kpis}
    )
    return ModelMonitor(
        profile,
        WindowSpec(60.0, 60.0, 0.0),
        FIXED,
        performance=accumulator_for("binary_classification", positive_label="1"),
        kpis=kpis_of(settings, profile),
    )


def test_pending_predictions_outlive_a_change_of_kpis_and_segments() -> None:
    # predictions pended under two label-aware KPIs and one segment field; the service
    # restarts with one KPI and two segment fields, then their labels arrive
    caught = {"agg": "sum", "field": "amount", "where": {"label": "positive"}}
    fees = {"agg": "sum", "field": "fee", "where": {"label": "positive"}}
    before = _restart_monitor({"a": caught, "f": fees}, ("tags.region",))
    rng = np.random.default_rng(1)
    k = 200
    b = EventBatch(
        model="m",
        event_time=rng.uniform(0, 60, k),
        event_id=[f"e{i}" for i in range(k)],
        model_version=np.full(k, "v", dtype=object),
        numerical={"amount": rng.random(k) * 100, "fee": rng.random(k)},
        categorical={},
        score=rng.random(k),
        label=np.full(k, None, dtype=object),
        latency_ms=np.full(k, np.nan),
        tags={
            "region": np.array(rng.choice(["eu", "us"], k).tolist(), dtype=object),
            "dev": np.array(rng.choice(["ios", "android"], k).tolist(), dtype=object),
        },
    )
    join = LabelJoin()
    join.add_predictions(
        b.event_id, b.event_time, b.score, b.label, b.model_version, now=0.0,
        segment=before.segment_cells(b), kpi=before.kpi_values(b),
    )  # fmt: skip
    join = LabelJoin.restore(json.loads(json.dumps(join.snapshot())))
    after = _restart_monitor({"f": fees}, ("tags.dev", "tags.region"))
    assert after.layout.fingerprint != before.layout.fingerprint
    join.forget_layout()  # what a partition does when the layout changed
    after.ingest(b)
    joined = join.add_labels(b.event_id, np.full(k, "1", dtype=object), np.full(k, 30.0), now=0.0)
    assert len(joined) == k
    after.add_joined(joined)  # raised a shape mismatch before
    after.advance(60.0)
    ev = after.evaluate(0.0)
    assert ev.label_coverage == 1.0  # the whole model still counts every pair
    assert ev.performance["accuracy"] == pytest.approx(np.mean(b.score >= 0.5))
    # none of them is put in a segment it was not in, nor adds an old KPI column
    assert all(not s.performance for s in ev.segments.values())
    assert ev.kpis["f"] == 0.0


# -- expressions --------------------------------------------------------------------------

EXPRESSIONS: dict[str, Any] = {
    "net": {"agg": "sum", "expr": "amount * (1 - discount)"},
    "net_per_second": {"agg": "rate", "expr": "amount*(1-discount)"},
    "mean_margin": {"agg": "mean", "expr": "(amount - fee) / amount"},
    "flagged_exposure": {
        "agg": "sum",
        "expr": "prediction * amount + 2.5",
        "where": {"prediction": "positive"},
    },
    "mean_complement": {"agg": "mean", "expr": "-prediction + 1"},
}


def numpy_of(text: str, columns: dict[str, np.ndarray]) -> np.ndarray:
    """The expression computed by numpy on the columns, independently of its parser."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, d, f, p = (columns[k] for k in ("amount", "discount", "fee", "prediction"))
        return {
            "amount * (1 - discount)": a * (1 - d),
            "amount*(1-discount)": a * (1 - d),
            "(amount - fee) / amount": (a - f) / a,
            "prediction * amount + 2.5": p * a + 2.5,
            "-prediction + 1": 1 - p,
            "amount * (1 - discount) / prediction": a * (1 - d) / p,
        }[text]


def expression_batch(rng: np.random.Generator, n: int, t0: float, t1: float) -> EventBatch:
    b = events(rng, n, t0, t1)
    amount = b.numerical["amount"]
    amount[rng.random(n) < 0.03] = 0.0  # (amount - fee) / amount: -inf, left out
    discount = rng.random(n) * 0.5
    discount[rng.random(n) < 0.1] = np.nan
    b.numerical = {"amount": amount, "discount": discount, "fee": rng.random(n) * 3}
    return b


def expression_profile(rng: np.random.Generator, by_slice: bool = True) -> Any:
    n = 4000
    cols = {
        "amount": rng.lognormal(3, 1, n),
        "discount": rng.random(n) * 0.5,
        "fee": rng.random(n) * 3,
        "prediction": rng.random(n),
    }
    region = rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2])
    return SegmentOptions(("tags.region",), top_k=2, by_slice=by_slice).apply(
        build_profile("m", cols), {**cols, "tags.region": region}
    )


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), panes=st.integers(1, 4), batches=st.integers(1, 6))
def test_expression_kpis_equal_numpy_per_window_and_per_segment(
    seed: int, panes: int, batches: int
) -> None:
    rng = np.random.default_rng(seed)
    pane = 10.0
    profile = expression_profile(rng)
    s = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r"}, "kpis": EXPRESSIONS, "decision_threshold": 0.7}
    )
    m = ModelMonitor(profile, WindowSpec(pane, pane * panes, 0.0), FIXED, kpis=kpis_of(s, profile))
    seen = []
    for i in range(batches):  # a batch per pane: early panes expire from the window
        b = expression_batch(rng, int(rng.integers(200, 600)), i * pane, (i + 1) * pane)
        m.ingest(b)
        seen.append(b)
    m.advance(batches * pane)
    ev = m.evaluate(now=0.0)
    inside = EventBatch.concat(seen[-panes:])
    seconds = panes * pane
    for segment, mask in {
        None: np.ones(len(inside), dtype=bool),
        "tags.region=eu": inside.tags["region"] == "eu",
        "tags.region=other": inside.tags["region"] == "ap",
    }.items():
        got = ev.kpis if segment is None else ev.segments[segment].kpis
        part = inside.select(mask)
        cols = {**part.numerical, "prediction": part.score}
        flagged = part.score >= 0.7

        def finite(v: np.ndarray) -> np.ndarray:
            return v[np.isfinite(v)]

        net = finite(numpy_of("amount * (1 - discount)", cols))
        margin = finite(numpy_of("(amount - fee) / amount", cols))
        exposure = finite(numpy_of("prediction * amount + 2.5", cols)[flagged])
        want = {
            "net": net.sum(),
            "net_per_second": net.sum() / seconds,
            "mean_margin": margin.mean(),
            "flagged_exposure": exposure.sum(),
            "mean_complement": finite(numpy_of("-prediction + 1", cols)).mean(),
        }
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-9), (segment, name)
        # the missing discounts and zero amounts were there to be left out
        assert net.size < len(part) or not np.isnan(part.numerical["discount"]).any()


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), early=st.floats(0.0, 1.0))
@example(seed=0, early=1.0)  # every label first: rows of two fields joined (was a ValueError)
def test_label_aware_expression_kpis_equal_numpy_on_the_joined_pairs(
    seed: int, early: float
) -> None:
    # the pending prediction keeps the expression's operands; its prediction is the
    # joined pair's score
    rng = np.random.default_rng(seed)
    profile = expression_profile(rng, by_slice=False)
    kpis = {
        "caught_net": {
            "agg": "sum",
            "expr": "amount * (1 - discount)",
            "where": {"prediction": "positive", "label": "positive"},
        },
        "missed_exposure": {
            "agg": "mean",
            "expr": "amount * (1 - discount) / prediction",
            "where": {"prediction": "negative", "label": "positive"},
        },
    }
    s = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r.csv"}, "kpis": kpis, "positive_label": "fraud"}
    )
    m = ModelMonitor(
        profile,
        ONE,
        FIXED,
        performance=accumulator_for("binary_classification", positive_label="fraud"),
        kpis=kpis_of(s, profile),
    )
    assert m.kpis is not None
    assert m.kpis.joined_fields == ("amount", "discount")
    b = expression_batch(rng, 2000, 0.0, 60.0)
    b.event_id = [f"e{i}" for i in range(len(b))]
    y = np.where(rng.random(len(b)) < b.score, "fraud", "ok").astype(object)
    labelled = rng.random(len(b)) < 0.7
    first = labelled & (rng.random(len(b)) < early)
    join = LabelJoin()
    at = np.flatnonzero(first)
    join.add_labels([b.event_id[i] for i in at], y[at], np.full(at.size, 1.0), now=0.0)
    m.ingest(b)
    m.add_joined(
        join.add_predictions(
            b.event_id, b.event_time, b.score, b.label, b.model_version, now=0.0,
            segment=m.segment_cells(b), kpi=m.kpi_values(b),
        )
    )  # fmt: skip
    join = LabelJoin.restore(json.loads(json.dumps(join.snapshot())))  # a checkpoint
    at = np.flatnonzero(labelled & ~first)
    m.add_joined(join.add_labels([b.event_id[i] for i in at], y[at], np.full(at.size, 30.0), 0.0))
    m.advance(60.0)
    ev = m.evaluate(now=0.0)
    cols = {**b.numerical, "prediction": b.score}
    fraud, flagged = y == "fraud", b.score >= 0.5
    for segment, mask in {
        None: np.ones(len(b), dtype=bool),
        "tags.region=us": b.tags["region"] == "us",
    }.items():
        got = ev.kpis if segment is None else ev.segments[segment].kpis
        net = numpy_of("amount * (1 - discount)", cols)[labelled & mask & fraud & flagged]
        assert got["caught_net"] == pytest.approx(net[np.isfinite(net)].sum(), rel=1e-9)
        missed = numpy_of("amount * (1 - discount) / prediction", cols)
        missed = missed[labelled & mask & fraud & ~flagged]
        assert got["missed_exposure"] == pytest.approx(missed[np.isfinite(missed)].mean())


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("amount ** 2", r"\*\* is not allowed"),
        ("__import__('os').system('true')", "a call is not allowed"),
        ("amount.real", "an attribute is not allowed"),
        ("amount[0]", "a subscript is not allowed"),
        ("amount > 1", "a comparison is not allowed"),
        ("amount and fee", "and/or is not allowed"),
        ("'x' + amount", "'x' is not a finite number"),
        ("True * amount", "True is not a finite number"),
        ("1e999 * amount", "inf is not a finite number"),
        ("2 * 3", "names no field"),
        ("amount +", "not an expression"),
        ("amount; fee", "not an expression"),
        ("+" * 150 + "amount" + " " * 60, "longer than 200 characters"),
        (3, "an expression is a string"),
    ],
)
def test_a_bad_expression_is_refused_with_its_reason(expr: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ModelSettings.model_validate(
            {"name": "m", "reference": {"path": "r"}, "kpis": {"k": {"agg": "sum", "expr": expr}}}
        )


@pytest.mark.parametrize(
    ("kpi", "features", "key", "error"),
    [
        ({"agg": "sum", "expr": "amount ** 2"}, {}, "models[0].kpis.net.expr", r"\*\* is not"),
        (
            {"agg": "sum", "field": "amount", "expr": "amount * 2"},
            {},
            "models[0].kpis.net.expr",
            "a field or an expression, not both",
        ),
        (
            {"agg": "quantile", "q": 0.5, "expr": "amount * 2"},
            {},
            "models[0].kpis.net.expr",
            "a quantile is read from the reference's bins of one field",
        ),
        ({"agg": "count", "expr": "amount"}, {}, "models[0].kpis.net.expr", "drop expr"),
        (
            {"agg": "sum", "expr": "amount * (1 - discont)"},
            {"amount": {"type": "numerical"}, "discount": {"type": "numerical"}},
            "models[0].kpis.net.expr",
            "discont in amount \\* \\(1 - discont\\) is no feature",
        ),
        (
            {"agg": "sum", "expr": "amount * country"},
            {"amount": {"type": "numerical"}, "country": {"type": "categorical"}},
            "models[0].kpis.net.expr",
            "country in amount \\* country is categorical",
        ),
    ],
)
def test_a_bad_kpi_expression_names_its_key_in_the_config_file(
    tmp_path: Any, kpi: dict[str, Any], features: dict[str, Any], key: str, error: str
) -> None:
    from consumers.configfile import ConfigError, load_config

    model = {"name": "m", "reference": {"path": "r.csv"}, "kpis": {"net": kpi}}
    if features:
        model["features"] = features
    path = tmp_path / "driftline.yaml"
    path.write_text(json.dumps({"models": [model]}))  # JSON is YAML
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key, str(info.value)
    assert re.search(error, info.value.reason), info.value.reason


def test_an_expression_is_parsed_once_and_printed_in_normal_form() -> None:
    s = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r"}, "kpis": {"k": {"agg": "sum", "expr": "a*(1-b)"}}}
    )
    expr = s.kpis["k"].expr
    assert expr is not None
    assert expr.names == ("a", "b")
    assert s.model_dump(mode="json")["kpis"]["k"]["expr"] == "a * (1 - b)"
    # a change of spacing is the same KPI (and the same pane fingerprint), another text is not
    again = ModelSettings.model_validate(s.model_dump(mode="json"))
    assert again.kpis["k"].expr == expr


def test_panes_of_another_expression_have_another_fingerprint() -> None:
    rng = np.random.default_rng(3)
    profile = build_profile("m", {"a": rng.random(500), "b": rng.random(500)})

    def fingerprint(expr: str) -> str:
        kpis = {"k": {"agg": "sum", "expr": expr}}
        s = ModelSettings.model_validate({"name": "m", "reference": {"path": "r"}, "kpis": kpis})
        return ModelMonitor(profile, ONE, kpis=kpis_of(s, profile)).layout.fingerprint

    assert fingerprint("a*(1-b)") == fingerprint("a * (1 - b)")
    assert fingerprint("a * (1 - b)") != fingerprint("a * (1 + b)")


# -- tags read as numbers -------------------------------------------------------------------

TAGGED: dict[str, Any] = {
    "items": {"agg": "sum", "field": "tags.items"},
    "items_per_second": {"agg": "rate", "field": "tags.items"},
    "mean_items": {"agg": "mean", "field": "tags.items"},
    "amount_per_item": {"agg": "mean", "expr": "amount / tags.items"},
    "items_caught": {"agg": "sum", "field": "tags.items", "where": {"label": "positive"}},
    "net_caught": {
        "agg": "sum",
        "expr": "amount * (1 - discount) * tags.items",
        "where": {"label": "positive"},
    },
}


def with_items(rng: np.random.Generator, b: EventBatch) -> np.ndarray:
    """Give ``b`` an ``items`` tag (strings as sent; some missing, some no number) and
    return its numbers, parsed here one by one."""
    n = len(b)
    raw = np.empty(n, dtype=object)
    raw[:] = [str(v) for v in rng.integers(0, 6, n)]
    raw[rng.random(n) < 0.05] = None
    raw[rng.random(n) < 0.03] = "n/a"
    b.tags = {**b.tags, "items": raw}
    return np.array([np.nan if v in (None, "n/a") else float(v) for v in raw.tolist()])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), panes=st.integers(1, 3))
def test_tag_kpis_equal_numpy_per_window_and_per_segment(seed: int, panes: int) -> None:
    rng = np.random.default_rng(seed)
    pane = 10.0
    profile = expression_profile(rng, by_slice=False)
    s = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r"}, "kpis": TAGGED, "positive_label": "fraud"}
    )
    m = ModelMonitor(
        profile,
        WindowSpec(pane, pane * panes, 0.0),
        FIXED,
        performance=accumulator_for("binary_classification", positive_label="fraud"),
        kpis=kpis_of(s, profile),
    )
    assert m.kpis is not None
    assert m.kpis.tags == ("items",)
    join = LabelJoin()
    seen, items, truth = [], [], []
    for i in range(panes + 1):  # the first pane expires when panes > 0
        b = expression_batch(rng, int(rng.integers(200, 500)), i * pane, (i + 1) * pane)
        b.event_id = [f"p{i}e{j}" for j in range(len(b))]
        items.append(with_items(rng, b))
        y = np.where(rng.random(len(b)) < b.score, "fraud", "ok").astype(object)
        m.ingest(b)
        m.add_joined(
            join.add_predictions(
                b.event_id, b.event_time, b.score, b.label, b.model_version, now=0.0,
                segment=m.segment_cells(b), kpi=m.kpi_values(b),
            )
        )  # fmt: skip
        m.add_joined(join.add_labels(b.event_id, y, np.full(len(b), 1.0), now=0.0))
        seen.append(b)
        truth.append(y)
    m.advance((panes + 1) * pane)
    ev = m.evaluate(now=0.0)
    inside = EventBatch.concat(seen[-panes:])
    tag, y = np.concatenate(items[-panes:]), np.concatenate(truth[-panes:])
    for segment, mask in {
        None: np.ones(len(inside), dtype=bool),
        "tags.region=eu": inside.tags["region"] == "eu",
        "tags.region=other": inside.tags["region"] == "ap",
    }.items():
        got = ev.kpis if segment is None else ev.segments[segment].kpis
        t = tag[mask]
        a, d = inside.numerical["amount"][mask], inside.numerical["discount"][mask]
        fraud = y[mask] == "fraud"
        with np.errstate(divide="ignore", invalid="ignore"):
            per_item, net = a / t, a * (1 - d) * t
        ok = np.isfinite(t)
        want = {
            "items": t[ok].sum(),
            "items_per_second": t[ok].sum() / (panes * pane),
            "mean_items": t[ok].mean(),
            "amount_per_item": per_item[np.isfinite(per_item)].mean(),
            "items_caught": t[ok & fraud].sum(),
            "net_caught": net[np.isfinite(net) & fraud].sum(),
        }
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-9), (segment, name)


def test_the_decoder_keeps_the_tags_kpis_and_segments_read() -> None:
    from consumers.model_specs import tags_of

    s = ModelSettings.model_validate(
        {
            "name": "m",
            "reference": {"path": "r"},
            "features": {"amount": {"type": "numerical"}},  # tags are no features
            "segments": ["tags.region"],
            "kpis": {
                "a": {"agg": "sum", "field": "tags.items"},
                "b": {"agg": "mean", "expr": "amount * tags.qty / tags.items"},
                "c": {"agg": "sum", "field": "amount"},
            },
        }
    )
    assert tags_of(s) == ("region", "items", "qty")


@pytest.mark.parametrize(
    ("kpi", "error"),
    [
        ({"agg": "quantile", "q": 0.5, "field": "tags.items"}, "a tag has none"),
        ({"agg": "sum", "expr": "amount * tags['items']"}, "a subscript is not allowed"),
        ({"agg": "sum", "expr": "amount * other.items"}, "an attribute is not allowed"),
    ],
)
def test_a_bad_tag_kpi_is_refused(kpi: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ModelSettings.model_validate({"name": "m", "reference": {"path": "r"}, "kpis": {"k": kpi}})
