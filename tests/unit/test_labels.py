"""Labels as users send them: one normalisation for truth, predictions and the config."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from monitor.config import ModelSettings
from monitor.labels import normalize_label, normalize_labels
from monitor.performance import (
    BinaryClassificationPerformance,
    MulticlassClassificationPerformance,
    RegressionPerformance,
)

#: every spelling of a 0/1 label that real producers send
SPELLINGS = {
    1: [1, 1.0, "1", "1.0", True, "true", "True", " 1 ", np.int64(1), np.float32(1.0)],
    0: [0, 0.0, "0", "0.0", False, "false", "FALSE", np.int64(0), np.float64(0.0)],
}


def test_every_spelling_of_zero_and_one_is_one_class():
    for value, spellings in SPELLINGS.items():
        assert {normalize_label(s) for s in spellings} == {str(value)}
        assert set(normalize_labels(np.array(spellings, dtype=object)).tolist()) == {str(value)}


def test_no_label_and_texts_kept():
    assert normalize_labels([None, float("nan"), "", "NaN", "null"]).tolist() == [None] * 5
    assert normalize_labels(["Fraud", "fraud", "2.5", "inf", 3]).tolist() == [
        "Fraud",
        "fraud",
        "2.5",
        "inf",
        "3",
    ]


@settings(max_examples=60, deadline=None)
@given(
    truth=st.lists(st.booleans(), min_size=20, max_size=300),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_metrics_whatever_the_spelling_equal_sklearn(truth, seed):
    rng = np.random.default_rng(seed)
    y = np.array(truth, dtype=int)
    score = np.clip(y * 0.3 + rng.random(y.size) * 0.7, 0, 1)
    # each label in a random spelling of its class, as mixed producers send them
    spelled = np.array(
        [SPELLINGS[v][rng.integers(len(SPELLINGS[v]))] for v in y.tolist()], dtype=object
    )
    for positive in (1, "1", 1.0, True, "true"):
        acc = BinaryClassificationPerformance(positive)
        vec = acc.accumulate(spelled, score, [None] * y.size)
        got = acc.metrics(vec)
        pred = (score >= 0.5).astype(int)
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        if pred.any():
            assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
        if y.any():
            assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
        assert acc.unknown_labels(spelled) == (0, None)


def test_unknown_classes_are_counted_with_a_sample():
    acc = BinaryClassificationPerformance("1")
    assert acc.unknown_labels([1, "yes", 0, 2, None, 1.0]) == (2, "yes")
    # a string positive class: anything else is negative unless a negative one is named
    assert BinaryClassificationPerformance("fraud").unknown_labels(["legit", "x"]) == (0, None)
    named = BinaryClassificationPerformance("fraud", negative_label="legit")
    assert named.unknown_labels(["legit", "fraud", "Legit"]) == (1, "Legit")
    multi = MulticlassClassificationPerformance(["1", "2", "cat"])
    assert multi.unknown_labels([1.0, "2", "cat", "dog", True]) == (1, "dog")
    assert RegressionPerformance().unknown_labels([1.5, "x"]) == (0, None)


def test_multiclass_integer_valued_floats_equal_integers():
    acc = MulticlassClassificationPerformance([0, 1, 2])
    truth = [0.0, 1.0, 2.0, "2", 1]
    pred = [0, 1, 1, 2.0, "1.0"]
    got = acc.metrics(acc.accumulate(truth, [np.nan] * 5, pred))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score([0, 1, 2, 2, 1], [0, 1, 1, 2, 1]))


@pytest.mark.parametrize(
    ("given_label", "stored"), [(1, "1"), (1.0, "1"), (True, "1"), ("fraud", "fraud"), (0, "0")]
)
def test_positive_label_accepts_strings_integers_and_booleans(given_label, stored):
    m = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r.csv"}, "positive_label": given_label}
    )
    assert m.positive_label == stored


def test_positive_and_negative_label_must_differ():
    with pytest.raises(ValueError, match="must differ"):
        ModelSettings.model_validate(
            {"name": "m", "reference": {"path": "r.csv"}, "negative_label": 1.0}
        )
