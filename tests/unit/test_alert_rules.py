"""Alert rules as state machines, driven by a fake clock (evaluations every pane)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alerts.formats import fingerprint, render_template
from alerts.rules import AlertState, RuleEngine
from monitor.config import AlertRule

DRIFTED = "driftline_feature_drifted"
PENDING, FIRING = AlertState.PENDING, AlertState.FIRING
INACTIVE, RESOLVED = AlertState.INACTIVE, AlertState.RESOLVED


def rule(**kw: Any) -> AlertRule:
    base: dict[str, Any] = {"alert": "FeatureDrift", "metric": DRIFTED, "threshold": 1}
    return AlertRule.model_validate(base | kw)


def drifted(value: float, feature: str = "amount", model: str = "fraud") -> Any:
    return (DRIFTED, {"model": model, "feature": feature}, value)


def moves(transitions: list[Any]) -> list[tuple[str, str, str]]:
    return [(t.alert.labels.get("feature", ""), t.old.value, t.new.value) for t in transitions]


def test_for_zero_fires_at_once_and_resolves_when_the_condition_stops() -> None:
    engine = RuleEngine([rule()])
    assert engine.evaluate([drifted(0.0)], now=0.0) == []
    (t,) = engine.evaluate([drifted(1.0)], now=60.0)
    assert (t.old, t.new) == (INACTIVE, FIRING)
    assert t.alert.starts_at == 60.0
    assert t.alert.ends_at is None
    assert engine.evaluate([drifted(1.0)], now=120.0) == []  # still firing: no news
    (t,) = engine.evaluate([drifted(0.0)], now=180.0)
    assert (t.old, t.new) == (FIRING, RESOLVED)
    assert (t.alert.starts_at, t.alert.ends_at) == (60.0, 180.0)
    assert engine.active() == []


def test_for_holds_the_alert_pending_until_the_condition_held_long_enough() -> None:
    engine = RuleEngine([rule(**{"for": "2m"})])
    assert moves(engine.evaluate([drifted(1)], now=0.0)) == [("amount", "inactive", "pending")]
    assert engine.evaluate([drifted(1)], now=60.0) == []
    assert engine.active()[0].state is PENDING
    assert moves(engine.evaluate([drifted(1)], now=120.0)) == [("amount", "pending", "firing")]
    assert engine.active()[0].active_at == 0.0
    assert engine.active()[0].starts_at == 120.0


def test_a_pending_alert_whose_condition_stops_goes_back_to_inactive() -> None:
    engine = RuleEngine([rule(**{"for": "5m"})])
    engine.evaluate([drifted(1)], now=0.0)
    assert moves(engine.evaluate([drifted(0)], now=60.0)) == [("amount", "pending", "inactive")]
    # the hold starts over: 5 minutes from the next time the condition holds
    engine.evaluate([drifted(1)], now=120.0)
    assert engine.evaluate([drifted(1)], now=360.0) == []
    assert moves(engine.evaluate([drifted(1)], now=420.0)) == [("amount", "pending", "firing")]


def test_keep_firing_for_holds_a_firing_alert_after_the_condition_stops() -> None:
    engine = RuleEngine([rule(keep_firing_for="5m")])
    engine.evaluate([drifted(1)], now=0.0)
    for now in (60.0, 120.0, 300.0):  # stopped at 60: kept until 60 + 300
        assert engine.evaluate([drifted(0)], now=now) == []
        assert engine.active()[0].state is FIRING
    (t,) = engine.evaluate([drifted(0)], now=360.0)
    assert (t.new, t.alert.ends_at) == (RESOLVED, 360.0)


def test_the_condition_holding_again_restarts_keep_firing_for() -> None:
    engine = RuleEngine([rule(keep_firing_for="5m")])
    engine.evaluate([drifted(1)], now=0.0)
    engine.evaluate([drifted(0)], now=60.0)
    engine.evaluate([drifted(1)], now=300.0)
    assert engine.evaluate([drifted(0)], now=360.0) == []
    assert engine.evaluate([drifted(0)], now=600.0) == []  # 240s after the last stop
    assert [t.new for t in engine.evaluate([drifted(0)], now=660.0)] == [RESOLVED]


def test_a_vanished_series_counts_as_the_condition_not_holding() -> None:
    engine = RuleEngine([rule(keep_firing_for="2m")])
    engine.evaluate([drifted(1, "amount"), drifted(1, "age")], now=0.0)
    assert engine.evaluate([drifted(1, "age")], now=60.0) == []
    assert engine.evaluate([drifted(1, "age")], now=120.0) == []
    got = engine.evaluate([drifted(1, "age")], now=180.0)
    assert moves(got) == [("amount", "firing", "resolved")]
    assert [a.labels["feature"] for a in engine.active()] == ["age"]


def test_each_label_set_is_its_own_alert_with_rule_labels_added() -> None:
    r = rule(match={"model": "fraud"}, severity="critical", labels={"team": "risk"})
    engine = RuleEngine([r])
    samples = [drifted(1, "amount"), drifted(1, "age"), drifted(0, "country")]
    samples += [drifted(1, "amount", model="churn"), ("driftline_other", {"model": "fraud"}, 1)]
    got = engine.evaluate(samples, now=0.0)
    assert sorted(t.alert.labels["feature"] for t in got) == ["age", "amount"]
    labels = engine.active()[0].labels
    assert labels == {
        "alertname": "FeatureDrift",
        "feature": "age",
        "model": "fraud",
        "severity": "critical",
        "team": "risk",
    }
    assert len({t.alert.fingerprint for t in got}) == 2
    assert engine.firing_counts() == {("fraud", "FeatureDrift", "critical"): 2}


@pytest.mark.parametrize(
    ("op", "holds", "fails"),
    [(">", 0.6, 0.5), (">=", 0.5, 0.4), ("<", 0.4, 0.5), ("<=", 0.5, 0.6),
     ("==", 0.5, 0.6), ("!=", 0.6, 0.5)],
)  # fmt: skip
def test_every_comparison(op: str, holds: float, fails: float) -> None:
    engine = RuleEngine([rule(op=op, threshold=0.5)])
    assert engine.evaluate([drifted(fails)], now=0.0) == []
    assert [t.new for t in engine.evaluate([drifted(holds)], now=1.0)] == [FIRING]


def flap(engine: RuleEngine, minutes: int) -> list[Any]:
    """Drift verdict oscillating every evaluation: 1, 0, 1, 0, ..."""
    out = []
    for i in range(minutes):
        out += engine.evaluate([drifted(1.0 if i % 2 == 0 else 0.0)], now=60.0 * i)
    return out


def test_flapping_fires_once_with_keep_firing_for() -> None:
    engine = RuleEngine([rule(keep_firing_for="5m")])
    transitions = flap(engine, 30)
    assert [t.new for t in transitions if t.notifies] == [FIRING]
    # once the metric settles below the threshold, one resolution, 5 minutes later
    later = [t for i in range(30, 40) for t in engine.evaluate([drifted(0)], now=60.0 * i)]
    assert [(t.new, t.at) for t in later] == [(RESOLVED, 60.0 * 34)]


def test_flapping_without_keep_firing_for_fires_on_every_oscillation() -> None:
    transitions = flap(RuleEngine([rule()]), 30)
    assert sum(t.new is FIRING for t in transitions) == 15


def test_annotations_are_rendered_from_labels_and_value() -> None:
    r = rule(
        op=">",
        threshold=0.1,
        metric="driftline_feature_drift_score",
        annotations={
            "summary": "{{ feature }} drifted on {{model}} ({{ value }})",
            "description": "{{ $labels.feature }} scored {{ $value }}; {{ missing }}.",
        },
    )
    engine = RuleEngine([r])
    sample = ("driftline_feature_drift_score", {"model": "fraud", "feature": "age"}, 0.25)
    (t,) = engine.evaluate([sample], now=0.0)
    assert t.alert.annotations == {
        "summary": "age drifted on fraud (0.25)",
        "description": "age scored 0.25; .",
    }
    assert render_template("{{ value }}", {}, 3.0) == "3"


def test_resolved_alert_keeps_its_last_value_in_annotations() -> None:
    engine = RuleEngine([rule(op=">", threshold=0.5, annotations={"v": "{{ value }}"})])
    engine.evaluate([drifted(0.75)], now=0.0)
    (t,) = engine.evaluate([drifted(0.25)], now=60.0)
    assert t.alert.annotations == {"v": "0.75"}
    assert t.new is RESOLVED


def test_fingerprint_is_alertmanagers_fnv1a_over_sorted_pairs() -> None:
    def fnv1a(data: bytes) -> int:
        h = 14695981039346656037
        for b in data:
            h = ((h ^ b) * 1099511628211) % 2**64
        return h

    labels = {"severity": "warning", "alertname": "FeatureDrift", "model": "fraud"}
    data = b"".join(f"{k}\xff{labels[k]}\xff".encode("latin-1") for k in sorted(labels))
    assert fingerprint(labels) == f"{fnv1a(data):016x}"


def test_snapshot_restores_pending_firing_and_kept_alerts() -> None:
    rules = [rule(**{"for": "2m"}), rule(alert="Kept", keep_firing_for="5m")]
    a = RuleEngine(rules)
    a.evaluate([drifted(1, "amount")], now=0.0)  # FeatureDrift pending, Kept firing
    a.evaluate([drifted(1, "amount"), drifted(1, "age")], now=60.0)
    a.evaluate([drifted(1, "age")], now=120.0)  # Kept/amount now held by keep_firing_for
    b = RuleEngine(rules)
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert b.active() == a.active()
    for now in (180.0, 240.0, 420.0, 480.0):
        samples = [drifted(1, "age")]
        assert moves(b.evaluate(samples, now)) == moves(a.evaluate(samples, now))
    assert b.active() == a.active()
    assert len(a.active()) == 2  # both rules on age


def test_restore_drops_rules_no_longer_configured() -> None:
    a = RuleEngine([rule(), rule(alert="Gone")])
    a.evaluate([drifted(1)], now=0.0)
    b = RuleEngine([rule()])
    b.restore(a.snapshot())
    assert [x.name for x in b.active()] == ["FeatureDrift"]
    with pytest.raises(ValueError, match="version"):
        b.restore({"version": 99, "alerts": []})


def test_active_alert_json_is_prometheus_like() -> None:
    engine = RuleEngine([rule(**{"for": "1m"})])
    engine.evaluate([drifted(1)], now=0.0)
    (alert,) = engine.active()
    d = alert.to_dict()
    assert d["state"] == "pending"
    assert d["activeAt"] == "1970-01-01T00:00:00.000Z"
    assert d["value"] == "1"
    assert d["fingerprint"] == fingerprint(d["labels"])


def test_an_empty_matcher_selects_series_without_the_label_as_promql_does() -> None:
    whole = (DRIFTED, {"model": "fraud", "feature": "amount"}, 1.0)
    segment = (DRIFTED, {"model": "fraud", "feature": "amount", "segment": "tags.region=eu"}, 1.0)
    only_whole = RuleEngine([rule(match={"segment": ""})])
    (t,) = only_whole.evaluate([whole, segment], now=0.0)
    assert "segment" not in t.alert.labels
    one_segment = RuleEngine([rule(match={"segment": "tags.region=eu"})])
    (t,) = one_segment.evaluate([whole, segment], now=0.0)
    assert t.alert.labels["segment"] == "tags.region=eu"
    assert len(RuleEngine([rule()]).evaluate([whole, segment], now=0.0)) == 2
