"""The batch decoder: typed fast path, lenient path, reasons for unusable records."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.decoding import BatchDecoder, Reason
from monitor.events import MISMATCH, NONFINITE
from monitor.schema import FeatureKind, FeatureSpec

SPECS = {
    "fraud": [
        FeatureSpec("amount", FeatureKind.NUMERICAL),
        FeatureSpec("user-age", FeatureKind.NUMERICAL),
        FeatureSpec("country", FeatureKind.CATEGORICAL),
    ],
    "churn": [FeatureSpec("plan", FeatureKind.CATEGORICAL)],
}


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def event(i, model="fraud", **over):
    e = {
        "event_id": f"e{i}",
        "model": model,
        "timestamp": "2026-11-27T19:00:00.123Z",
        "features": {"amount": 1.5 * i, "user-age": 30, "country": "FR"}
        if model == "fraud"
        else {"plan": "pro"},
        "prediction": 0.25,
        "latency_ms": 4.2,
    }
    e.update(over)
    return e


def test_typed_columns_and_event_times():
    dec = BatchDecoder(SPECS)
    values = [enc(event(i)) for i in range(5)] + [enc(event(9, "churn"))]
    out = dec.decode(values, [0.0] * 6)
    assert out.invalid == []
    b = out.batches["fraud"]
    assert b.numerical["amount"].tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert b.numerical["user-age"].dtype == np.float64
    assert b.categorical["country"].tolist() == ["FR"] * 5
    assert b.event_time[0] == datetime(2026, 11, 27, 19, 0, 0, 123000, tzinfo=UTC).timestamp()
    assert b.score.tolist() == [0.25] * 5
    assert b.latency_ms.tolist() == [4.2] * 5
    assert out.batches["churn"].categorical["plan"].tolist() == ["pro"]


def test_timestamps_epoch_naive_and_absent():
    dec = BatchDecoder(SPECS)
    values = [
        enc(event(0, timestamp=1_700_000_000.5)),
        enc(event(1, timestamp="2026-11-27T19:00:00")),  # read as UTC
        enc({k: v for k, v in event(2).items() if k != "timestamp"}),
    ]
    b = dec.decode(values, [11.0, 12.0, 1234.5]).batches["fraud"]
    naive_utc = datetime(2026, 11, 27, 19, tzinfo=UTC).timestamp()
    assert b.event_time.tolist() == [1_700_000_000.5, naive_utc, 1234.5]


def test_missing_mismatch_nonfinite_and_extra_features():
    dec = BatchDecoder(SPECS)
    values = [
        enc(event(0, features={"amount": None, "country": "DE"})),  # user-age absent
        enc(event(1, features={"amount": "12", "user-age": True, "country": 3})),
        b'{"event_id":"e2","model":"fraud","features":{"amount":NaN,"user-age":Infinity,'
        b'"country":["x"],"extra":1}}',
    ]
    out = dec.decode(values, [0.0] * 3)
    assert out.invalid == []
    b = out.batches["fraud"]
    assert np.isnan(b.numerical["amount"]).all()
    assert b.categorical["country"].tolist() == ["DE", 3, None]
    assert b.flags["amount"].tolist() == [0, MISMATCH, NONFINITE]
    assert b.flags["user-age"].tolist() == [0, MISMATCH, NONFINITE]
    assert b.flags["country"].tolist() == [0, 0, MISMATCH]
    assert out.extra_features == {"fraud": {"extra": 1}}


def test_prediction_shapes():
    dec = BatchDecoder(SPECS)
    values = [
        enc(event(0, prediction=0.9)),
        enc(event(1, prediction="fraud")),
        enc(event(2, prediction={"label": "ok", "score": 0.2})),
        enc(event(3, prediction={"probabilities": {"fraud": 0.7, "ok": 0.3}})),
        enc(event(4, prediction=None)),
    ]
    b = dec.decode(values, [0.0] * 5).batches["fraud"]
    assert b.label.tolist() == [None, "fraud", "ok", "fraud", None]
    np.testing.assert_array_equal(b.score, [0.9, np.nan, 0.2, 0.7, np.nan])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.EMPTY),
        (b"", Reason.EMPTY),
        (b"\xff\xfe{", Reason.NOT_UTF8),
        (b'{"event_id": "x", "model": "fraud", "features": {', Reason.INVALID_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'"just a string"', Reason.NOT_AN_OBJECT),
        (enc(event(0, model="nope")), Reason.UNKNOWN_MODEL),
        (enc({"event_id": "x", "features": {}}), Reason.INVALID_FIELD),
        (enc(event(0, event_id=7)), Reason.INVALID_FIELD),
        (enc(event(0, features=[1, 2])), Reason.INVALID_FIELD),
        (enc(event(0, timestamp="yesterday")), Reason.INVALID_FIELD),
        (enc(event(0, latency_ms="fast")), Reason.INVALID_FIELD),
        (enc(event(0, prediction=[0.1])), Reason.INVALID_FIELD),
        (b"[" * 100_000 + b"]" * 100_000, Reason.INVALID_JSON),
        (b'{"pad": "' + b"x" * (2 << 20) + b'"}', Reason.OVERSIZE),
    ],
)
def test_unusable_records_get_a_reason(value, reason):
    dec = BatchDecoder(SPECS)
    out = dec.decode([enc(event(0)), value, enc(event(1))], [0.0] * 3)
    assert [(i.index, i.reason) for i in out.invalid] == [(1, reason)]
    assert out.valid == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.builds(
                lambda f, p, t: enc(event(0, features=f, prediction=p, timestamp=t)),
                st.dictionaries(
                    st.sampled_from(["amount", "user-age", "country", "x"]), json_values
                ),
                json_values,
                json_values,
            ),
        ),
        max_size=20,
    )
)
def test_every_record_is_valid_or_invalid_never_both_never_lost(values):
    out = BatchDecoder(SPECS).decode(values, [0.0] * len(values))
    assert out.valid + len(out.invalid) == len(values)
    assert len({i.index for i in out.invalid}) == len(out.invalid)
    for b in out.batches.values():
        assert np.isfinite(b.event_time).all()
        for col in b.numerical.values():
            assert not np.isinf(col).any()


def test_fast_path_matches_lenient_path():
    """The typed decoder and the forgiving one agree on valid events."""
    rng = np.random.default_rng(3)
    values = []
    for i in range(200):
        values.append(
            msgspec.json.encode(
                event(
                    i,
                    features={
                        "amount": float(rng.normal()),
                        "user-age": int(rng.integers(18, 90)),
                        "country": str(rng.choice(["FR", "DE"])),
                    },
                )
            )
        )
    fast = BatchDecoder(SPECS).decode(values, [0.0] * 200).batches["fraud"]
    # a leading record that is not JSON forces every following record through a fresh codec
    slow_dec = BatchDecoder(SPECS)
    slow = [slow_dec._lenient(i, v, 0.0, *_sinks()) for i, v in enumerate(values)]
    assert all(c is not None for c in slow)
    assert fast.numerical["amount"].tolist() == [
        json.loads(v)["features"]["amount"] for v in values
    ]
    assert not math.isnan(fast.event_time.sum())


def _sinks():
    from consumers.decoding import DecodedBatch

    return DecodedBatch(), {}, {}


def test_timestamps_outside_the_accepted_range_are_rejected():
    now = 1_800_000_000.0
    dec = BatchDecoder(SPECS, max_future=3600, max_age=86400)
    values = [
        enc(event(0, timestamp=now)),
        enc(event(1, timestamp=now + 7200)),  # two hours ahead
        enc(event(2, timestamp="1970-01-01T00:00:00Z")),
        enc(event(3, timestamp="3000-01-01T00:00:00Z")),
        enc(event(4, timestamp=now - 3600)),
    ]
    out = dec.decode(values, [now] * 5, now=now)
    assert [(i.index, i.reason) for i in out.invalid] == [
        (1, Reason.TIMESTAMP_OUT_OF_RANGE),
        (2, Reason.TIMESTAMP_OUT_OF_RANGE),
        (3, Reason.TIMESTAMP_OUT_OF_RANGE),
    ]
    assert out.batches["fraud"].event_id == ["e0", "e4"]


@pytest.mark.parametrize("policy", ["allow", "count", "reject"])
def test_extra_feature_policy(policy):
    dec = BatchDecoder(SPECS, extra_features=policy)
    extra = event(1, features={"amount": 1.0, "country": "FR", "surprise": 3})
    out = dec.decode([enc(event(0)), enc(extra)], [0.0, 0.0])
    if policy == "reject":
        assert [(i.index, i.reason) for i in out.invalid] == [(1, Reason.UNEXPECTED_FEATURE)]
        assert out.valid == 1
    else:
        assert out.invalid == []
        assert out.valid == 2
        expected = {"fraud": {"surprise": 1}} if policy == "count" else {}
        assert out.extra_features == expected


def test_a_category_longer_than_the_limit_is_a_mismatch_and_never_kept():
    dec = BatchDecoder(SPECS, max_category_length=8)
    countries = ["FR", "x" * 8, "y" * 9, "z" * 100_000]
    values = [
        enc(event(i, features={"amount": 1.0, "country": c})) for i, c in enumerate(countries)
    ]
    b = dec.decode(values, [0.0] * 4).batches["fraud"]
    assert b.categorical["country"].tolist() == ["FR", "x" * 8, None, None]
    assert b.flags["country"].tolist() == [0, 0, MISMATCH, MISMATCH]


def test_a_long_category_does_not_enter_a_stream_reference_sample():
    dec = BatchDecoder({"fraud": None}, max_category_length=8)
    values = [enc(event(i, features={"country": c})) for i, c in enumerate(["FR", "y" * 9])]
    b = dec.decode(values, [0.0] * 2).batches["fraud"]
    assert b.categorical["country"].tolist() == ["FR", None]


def test_the_tags_a_model_is_sliced_by_become_columns_on_both_paths():
    dec = BatchDecoder(SPECS, tags={"fraud": ["region"]})
    values = [
        enc(event(0, tags={"region": "eu", "shard": "7"})),
        enc(event(1)),
        # a bare local time takes the lenient path
        enc(event(2, timestamp="2026-11-27T19:00:00", tags={"region": "us"})),
    ]
    out = dec.decode(values, [0.0] * 3)
    b = out.batches["fraud"]
    assert b.tags["region"].tolist() == ["eu", None, "us"]
    assert set(b.tags) == {"region"}  # other tags are not kept
    assert out.batches["fraud"].select(np.array([False, False, True])).tags["region"].tolist() == [
        "us"
    ]


@pytest.mark.parametrize("fast", [True, False])
def test_an_empty_version_is_no_version_and_a_long_one_is_refused(fast):
    """model_version becomes a label value: "" would be the model's own series, and a
    version longer than MAX_VERSION_LENGTH is refused, on both decoding paths."""
    from monitor.events import MAX_VERSION_LENGTH

    dec = BatchDecoder(SPECS)
    extra = {} if fast else {"features": {"amount": "not a number"}}  # the lenient path
    values = [
        enc(event(0, model_version="", **extra)),
        enc(event(1, model_version="v" * (MAX_VERSION_LENGTH + 1), **extra)),
        enc(event(2, model_version="v" * MAX_VERSION_LENGTH, **extra)),
    ]
    out = dec.decode(values, [0.0] * 3)
    assert [(i.index, i.reason) for i in out.invalid] == [(1, Reason.INVALID_FIELD)]
    assert "model_version of 129 characters" in out.invalid[0].message
    assert out.batches["fraud"].model_version.tolist() == [None, "v" * MAX_VERSION_LENGTH]
