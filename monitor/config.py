"""driftline's configuration: pydantic v2 models, frozen, with the documented defaults (README).

Pure: no file is read here (see :mod:`consumers.configfile`). Durations are written as
``"500ms"``, ``"60s"``, ``"5m"``, ``"1h"``, ``"7d"`` or plain seconds, and held as float
seconds. Secrets never live in the YAML: ``*_env`` keys name environment variables.

A validator that judges a key below its own model starts its message with
``"@sub.key: "``; :mod:`consumers.configfile` moves that path into the error's key.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from monitor.expressions import Expression
from monitor.labels import normalize_label

__all__ = [
    "RULE_METRICS",
    "AlertRule",
    "AlertSettings",
    "BinningSettings",
    "DriftSettings",
    "DriftlineConfig",
    "Duration",
    "FeatureSettings",
    "FromStream",
    "HttpSettings",
    "KafkaSettings",
    "KpiSettings",
    "LabelSettings",
    "MethodSettings",
    "ModelSettings",
    "OverrideSettings",
    "QualitySettings",
    "ReferenceSettings",
    "RetrainingSettings",
    "RetrainingTarget",
    "SegmentingSettings",
    "Sink",
    "StateSettings",
    "ValidationSettings",
    "VersionSettings",
    "WindowSettings",
    "parse_cron",
    "parse_duration",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")


def parse_duration(value: str | float | int) -> float:
    """Seconds in a duration: a number of seconds, or a number with ms, s, m, h or d.

    >>> parse_duration("5m"), parse_duration("500ms"), parse_duration("1.5h"), parse_duration(2)
    (300.0, 0.5, 5400.0, 2.0)
    >>> parse_duration("5x")
    Traceback (most recent call last):
    ValueError: invalid duration '5x': use a number with ms, s, m, h or d
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
        return float(value)
    if isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d")


def _pattern(regex: str, what: str) -> AfterValidator:
    """A string check whose error says what was expected (not the regex)."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} {what}")
        return value

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Name = Annotated[str, _pattern(r"[A-Za-z0-9_.-]+", "is not a name: use letters, digits, _ . -")]
#: a categorical feature or ``tags.NAME``
SegmentField = Annotated[
    str,
    _pattern(
        r"tags\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}|(?!tags\.)[A-Za-z0-9_.-]{1,64}",
        "is not a feature name or tags.NAME",
    ),
]
Url = Annotated[str, _pattern(r"https?://[^\s/?#]+\S*", "is not an http:// or https:// URL")]
#: where Vertex AI reads a compiled pipeline spec (Cloud Storage or Artifact Registry)
TemplateUri = Annotated[
    str, _pattern(r"(gs|https)://[^\s/?#]+/\S+", "is not a gs:// or https:// pipeline spec URI")
]
GcsUri = Annotated[str, _pattern(r"gs://[^\s/?#]+(/\S*)?", "is not a gs:// URI")]
EnvName = Annotated[
    str,
    _pattern(
        r"[A-Za-z_][A-Za-z0-9_]*",
        "is not an environment variable name: a *_env key names the variable "
        "that holds the secret, never the secret itself",
    ),
]
_LABEL = r"[A-Za-z_][A-Za-z0-9_]*"
Repo = Annotated[str, _pattern(r"[\w.-]+/[\w.-]+", "is not a GitHub repository: use owner/name")]
LabelName = Annotated[str, _pattern(_LABEL, "is not a Prometheus label name")]
Method = Literal["psi", "kl", "jensenshannon", "hellinger", "wasserstein", "ks", "chisquare"]
_TESTS = ("ks", "chisquare")  # they decide on a p-value, not a distance
_ORDERED_ONLY = ("wasserstein", "ks")  # they need ordered values


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Settings):
    bootstrap_servers: str = "localhost:9092"
    #: the Kafka client of the consumer loops; confluent (librdkafka) is an install extra
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    group_id: str = "driftline"
    predictions_topic: str = "driftline.predictions"
    ground_truth_topic: str = "driftline.ground-truth"
    dead_letter_topic: str = "driftline.dead-letter"
    #: stage 1 publishes closed panes here, keyed by model; stage 2 merges them
    panes_topic: str = "driftline.panes"
    #: partitions of the predictions topic when `driftline run` creates it (the
    #: ground-truth and panes topics get as many as the predictions topic has)
    partitions: int = Field(6, ge=1, le=10_000)
    #: client settings in kafka-python's names, whichever the client (librdkafka's own
    #: names, with dots, also reach the confluent client)
    consumer: dict[str, Any] = Field(default_factory=dict)
    producer: dict[str, Any] = Field(default_factory=dict)
    sasl_password_env: EnvName | None = None
    #: records per poll
    max_batch: int = Field(10_000, gt=0)
    poll_timeout_ms: int = Field(500, ge=0)

    @field_validator("consumer", "producer")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if "password" in key.lower():
                raise ValueError(
                    f"@{key}: secrets do not belong in the YAML; "
                    "name an environment variable in kafka.sasl_password_env"
                )
        return v


class HttpSettings(_Settings):
    host: str = "0.0.0.0"
    #: 0 asks the system for a free port (the demo and the tests use it)
    port: int = Field(9108, ge=0, le=65535)
    #: TLS and basic auth, in the web configuration file of Prometheus exporters
    #: (``tls_server_config``, ``basic_auth_users``); relative to this file's directory.
    #: None serves plain HTTP to anyone
    web_config: str | None = None
    #: /metrics is rendered at most once this often (per format), however many scrapers
    metrics_max_age: Duration = 1.0
    #: open connections beyond this evict the oldest one still waiting for its request,
    #: or are closed at once when every connection is busy
    max_connections: int = Field(256, gt=0)
    #: a connection that has not sent a whole request head this long after it opened (or
    #: after its previous response) is closed
    header_timeout: PositiveDuration = 10.0


class ValidationSettings(_Settings):
    """Event-level checks; a record failing one goes to the dead-letter topic."""

    max_record_bytes: int = Field(1 << 20, gt=0)
    #: longer event ids are refused (they are held by the label join until joined)
    max_id_length: int = Field(256, gt=0)
    #: events with more feature keys are refused
    max_features: int = Field(1000, gt=0)
    #: longer ground-truth labels are refused (held by the label join too)
    max_label_length: int = Field(256, gt=0)
    #: longer categorical values are counted as type mismatches, never binned or kept
    max_category_length: int = Field(1024, gt=0)
    #: timestamps further ahead of the wall clock than this are rejected
    max_future: Duration = 3600.0
    #: timestamps older than this are rejected (as old as the label-join TTL by default)
    max_age: Duration = 7 * 86400.0
    #: features the model's schema does not have: allow (ignore), count, or reject the event
    extra_features: Literal["allow", "count", "reject"] = "count"


class WindowSettings(_Settings):
    pane: Duration = 60.0
    size: Duration = 3600.0
    allowed_lateness: Duration = 300.0
    #: a source partition with no event of a model for this long (wall clock) no longer
    #: holds that model's merged watermark back
    idle_timeout: PositiveDuration = 300.0
    #: events further ahead of the wall clock than this are counted as from the future;
    #: no event moves the watermark beyond now + min(clock_skew, allowed_lateness), so a
    #: producer with a fast clock cannot make on-time events late
    clock_skew: Duration = 60.0

    @model_validator(mode="after")
    def _size_is_whole_panes(self) -> Self:
        if self.pane <= 0:
            raise ValueError("@pane: must be longer than 0s")
        panes = self.size / self.pane
        if round(panes) < 1 or abs(panes - round(panes)) > 1e-9:
            raise ValueError(
                f"@size: {self.size:g}s must be a positive whole multiple of pane ({self.pane:g}s)"
            )
        return self


class StateSettings(_Settings):
    """Where checkpoints go: a directory or a compacted Kafka topic, exactly one."""

    dir: str | None = "./state"
    kafka_topic: str | None = None
    checkpoint_interval: PositiveDuration = 30.0
    keep: int = Field(3, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _topic_replaces_default_dir(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: (None if v == "" else v) for k, v in data.items()}
            if data.get("kafka_topic") is not None and "dir" not in data:
                data["dir"] = None
        return data

    @model_validator(mode="after")
    def _exactly_one_store(self) -> Self:
        if (self.dir is None) == (self.kafka_topic is None):
            raise ValueError("give exactly one of 'dir' or 'kafka_topic' (set the other to null)")
        return self


class FeatureSettings(_Settings):
    type: Literal["numerical", "categorical"]
    bounds: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.bounds is not None:
            if self.type != "numerical":
                raise ValueError("@bounds: bounds apply to numerical features only")
            if not self.bounds[0] < self.bounds[1]:
                raise ValueError("@bounds: must be [low, high] with low < high")
        return self


class FromStream(_Settings):
    events: int = Field(gt=0)


class ReferenceSettings(_Settings):
    path: str | None = None
    from_stream: FromStream | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.path is None) == (self.from_stream is None):
            raise ValueError("give exactly one of 'path' or 'from_stream'")
        return self


def _check_pvalue(method: str | None, threshold: float | str | None, key: str) -> None:
    if method in _TESTS and isinstance(threshold, float | int) and threshold >= 1:
        raise ValueError(f"@{key}: {method} decides on a p-value, so threshold must be < 1")


#: a fixed threshold, or "auto": calibrated per window to the model's false-alarm budget
Threshold = Annotated[float, Field(gt=0)] | Literal["auto"]


class MethodSettings(_Settings):
    method: Method
    #: "auto" (default): the score's null quantile for the window's size, at the feature's
    #: share of ``drift.false_alarm_rate``; a number keeps its fixed meaning: a distance
    #: drifts when score >= threshold, a test (ks, chisquare) when p-value < threshold
    threshold: Threshold = "auto"
    #: the smallest score that counts as drift (default: the method's, see the README)
    min_effect: float | None = Field(None, ge=0)
    #: methods exported besides the deciding one, as a second opinion
    report: tuple[Method, ...] = ()

    @model_validator(mode="after")
    def _pvalue_threshold(self) -> Self:
        _check_pvalue(self.method, self.threshold, "threshold")
        return self


def _numerical_default() -> MethodSettings:
    return MethodSettings(method="wasserstein", report=("psi", "ks"))


def _categorical_default() -> MethodSettings:
    return MethodSettings(method="jensenshannon", report=("psi", "chisquare"))


class OverrideSettings(_Settings):
    method: Method | None = None
    threshold: Threshold | None = None
    min_effect: float | None = Field(None, ge=0)


class DriftSettings(_Settings):
    numerical: MethodSettings = Field(default_factory=_numerical_default)
    categorical: MethodSettings = Field(default_factory=_categorical_default)
    min_events: int = Field(100, ge=1)
    #: the model's false-alarm budget: with stationary traffic, an evaluation flags any
    #: feature with at most this probability (split evenly across the features)
    false_alarm_rate: float = Field(0.01, gt=0, lt=1)
    #: time between false alerts the model is judged for when nothing drifts, counting one
    #: per run of flagged evaluations of a feature (consecutive windows overlap, so a
    #: chance verdict repeats): features are judged at a lower rate than their share of
    #: false_alarm_rate when that is needed; null: per evaluation only
    false_alert_interval: PositiveDuration | None = 7 * 86400.0
    #: per feature name
    overrides: dict[str, OverrideSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _categorical_methods(self) -> Self:
        c = self.categorical
        keys = [("categorical.method", c.method)]
        keys += [(f"categorical.report[{i}]", m) for i, m in enumerate(c.report)]
        for key, m in keys:
            if m in _ORDERED_ONLY:
                raise ValueError(f"@{key}: {m} needs ordered values; it cannot judge categories")
        return self


class QualitySettings(_Settings):
    #: a value is out of range outside [min - m*(max-min), max + m*(max-min)] of the reference
    #: (configured feature bounds take precedence)
    range_margin: float = Field(0.0, ge=0)


class SegmentingSettings(_Settings):
    """How a model's ``segments`` are cut: the ``top_k`` most frequent values of each field
    in the reference, every other value (and a missing one) in "other"."""

    top_k: int = Field(10, ge=1, le=100)
    #: ``slice``: a segment's features are compared with the reference rows of the same
    #: segment (when it has at least ``min_reference_events`` of them, else with the whole
    #: reference); ``whole``: always with the whole reference
    reference: Literal["slice", "whole"] = "slice"
    min_reference_events: int = Field(100, ge=1)
    #: memory of one pane of the model, in bytes: every segment is one more copy of the
    #: model's bins in each pane of the window (of each partition, and in each checkpoint),
    #: so a reference whose segments would make a larger pane is refused at start
    max_pane_bytes: int = Field(8 << 20, ge=1 << 16)


def _expression(value: Any) -> Expression:
    if isinstance(value, Expression):
        return value
    if not isinstance(value, str):
        raise ValueError('an expression is a string, e.g. "amount * (1 - discount)"')
    return Expression.parse(value)


#: arithmetic over numerical fields, parsed (and its nodes checked) when the config is read
KpiExpression = Annotated[
    Expression, PlainValidator(_expression), PlainSerializer(str, return_type=str)
]


class VersionSettings(_Settings):
    """Windows per model version: while a model has two or more live versions in a
    partition (a canary, a shadow challenger), each keeps its own window, label join and
    reference beside the model's, so versions are compared side by side."""

    #: at most this many versions have windows of their own (the least recently seen is
    #: retired first); 0 turns version windows off
    live: int = Field(3, ge=0, le=10)
    #: a version with no event for this long (wall clock) is retired; default: the window size
    retire_after: PositiveDuration | None = None


class KpiSettings(_Settings):
    """A business KPI: ``agg`` of ``field`` (or of ``expr``) over the window's events,
    optionally only those whose prediction or ground truth is ``positive`` or ``negative``
    (binary classification)."""

    agg: Literal["count", "sum", "mean", "rate", "quantile"]
    #: a numerical feature, ``prediction`` (the score) or ``tags.NAME`` (an event tag read as
    #: a number); none for a count (or a rate of events)
    field: str | None = None
    #: instead of ``field``: ``+ - * /`` over numerical features, ``prediction``,
    #: ``tags.NAME`` and numbers
    expr: KpiExpression | None = None
    #: the quantile, for ``agg: quantile``
    q: float | None = Field(None, gt=0, lt=1)
    where: dict[Literal["prediction", "label"], Literal["positive", "negative"]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.field is not None and self.expr is not None:
            raise ValueError("@expr: a KPI reads a field or an expression, not both")
        if self.expr is not None and self.agg == "count":
            raise ValueError("@expr: a count counts events; drop expr")
        if self.expr is not None and self.agg == "quantile":
            # the sketch's bins are the reference's quantile bins of one column
            raise ValueError(
                "@expr: a quantile is read from the reference's bins of one field and an "
                "expression has none; use field, or sum/mean/rate of the expression"
            )
        if self.field is None and self.expr is None and self.agg not in ("count", "rate"):
            raise ValueError(f"@field: {self.agg} needs a field (or expr)")
        if self.field is not None and self.agg == "count":
            raise ValueError("@field: a count counts events; drop field")
        if self.agg == "quantile" and (self.field or "").startswith("tags."):
            raise ValueError(
                "@field: a quantile is read from the reference's bins of its field and a tag "
                "has none; use sum/mean/rate of the tag"
            )
        if (self.q is None) == (self.agg == "quantile"):
            raise ValueError("@q: required by agg: quantile, and by it only")
        return self


#: bytes a pending label-join entry takes besides its event id (arrays and index; measured
#: 110, rounded up)
JOIN_ENTRY_BYTES = 160
#: bytes more per pending prediction that keeps the fields of label-aware KPIs (a row of
#: numbers: about 100 measured alone, more while evicted rows keep their batch's array
#: alive; 128 let a join overshoot max_bytes by 2% under eviction, 160 keeps it within)
KPI_ROW_BYTES = 160


class LabelSettings(_Settings):
    """How long and how many predictions wait for their ground truth, and vice versa."""

    ttl: Duration = 7 * 86400.0
    capacity: int = Field(1_000_000, ge=1)
    #: memory of one side of one partition's join, in bytes: the capacity is lowered to
    #: fit it at the longest event id allowed (``validation.max_id_length``)
    max_bytes: int = Field(512 << 20, ge=1 << 20)

    def capacity_within(self, max_id_length: int, extra: int = 0) -> int:
        """The capacity that keeps a join side within :attr:`max_bytes` (measured: about
        110 bytes of arrays and index per entry, plus the id string, 49 + its length, plus
        ``extra`` bytes an entry keeps besides, such as :data:`KPI_ROW_BYTES`).

        >>> LabelSettings(capacity=10**6, max_bytes=64 << 20).capacity_within(256)
        144320
        """
        per_entry = JOIN_ENTRY_BYTES + 49 + max_id_length + extra
        return max(1, min(self.capacity, self.max_bytes // per_entry))


class BinningSettings(_Settings):
    quantiles: int = Field(100, ge=10, le=1000)
    coarse_bins: int = Field(10, ge=2)
    max_categories: int = Field(50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _coarse_le_fine(self) -> Self:
        if self.coarse_bins > self.quantiles:
            raise ValueError(f"@coarse_bins: must not exceed quantiles ({self.quantiles})")
        return self


class ModelSettings(_Settings):
    name: Name
    task: Literal["binary_classification", "multiclass_classification", "regression"] = (
        "binary_classification"
    )
    #: the positive class, compared after the label normalisation of the README (1, 1.0,
    #: "1" and true are one class); the negative one, when given, makes other labels
    #: "unknown class" (a 0/1 model's is 0 without saying)
    positive_label: str | None = None
    negative_label: str | None = None
    decision_threshold: float = Field(0.5, ge=0, le=1)
    reference: ReferenceSettings
    #: optional; inferred from the reference when empty, the full schema otherwise
    features: dict[str, FeatureSettings] = Field(default_factory=dict)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    binning: BinningSettings = Field(default_factory=BinningSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    #: fields every window is sliced by: a categorical feature or an event tag (``tags.NAME``)
    segments: list[SegmentField] = Field(default_factory=list, max_length=8)
    segmenting: SegmentingSettings = Field(default_factory=SegmentingSettings)
    versions: VersionSettings = Field(default_factory=VersionSettings)
    #: named per-window aggregations of event fields
    kpis: dict[Name, KpiSettings] = Field(default_factory=dict, max_length=32)

    def join_capacity(self, max_id_length: int) -> int:
        """A partition's label-join capacity for this model, within ``labels.max_bytes``: a
        pending prediction keeps the fields of label-aware KPIs too."""
        aware = any(k.where.get("label") for k in self.kpis.values())
        return self.labels.capacity_within(max_id_length, KPI_ROW_BYTES if aware else 0)

    @field_validator("positive_label", "negative_label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict | list):
            return value  # refused by the type check, with its usual message
        label = normalize_label(value)
        if label is None:
            raise ValueError(f"{value!r} is no label")
        return label

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for key in ("positive_label", "negative_label"):
            if getattr(self, key) is not None and self.task != "binary_classification":
                raise ValueError(f"@{key}: applies to binary_classification only")
        if self.negative_label is not None and self.negative_label == (self.positive_label or "1"):
            raise ValueError("@negative_label: must differ from positive_label")
        if len(set(self.segments)) != len(self.segments):
            raise ValueError("@segments: a field is named twice")
        for i, name in enumerate(self.segments):
            feature = self.features.get(name)
            if (
                not name.startswith("tags.")
                and feature is not None
                and feature.type != "categorical"
            ):
                raise ValueError(
                    f"@segments.{i}: {name} is numerical; slice by a categorical feature or a tag"
                )
            if self.features and feature is None and not name.startswith("tags."):
                raise ValueError(
                    f"@segments.{i}: no feature {name!r} in features (or write tags.{name})"
                )
        for name, k in self.kpis.items():
            if k.where and self.task != "binary_classification":
                raise ValueError(f"@kpis.{name}.where: applies to binary_classification only")
            feature = self.features.get(k.field or "")
            tag = (k.field or "").startswith("tags.")
            if (
                k.field not in (None, "prediction")
                and self.features
                and not tag
                and feature is None
            ):
                raise ValueError(f"@kpis.{name}.field: no feature {k.field!r} in features")
            if feature is not None and feature.type != "numerical":
                raise ValueError(f"@kpis.{name}.field: {k.field} is categorical, not numerical")
            for operand in k.expr.names if k.expr is not None else ():
                feature = self.features.get(operand)
                where = f"@kpis.{name}.expr: {operand} in {k.expr}"
                tag = operand.startswith("tags.")
                if operand != "prediction" and self.features and not tag and feature is None:
                    raise ValueError(f"{where} is no feature of features")
                if feature is not None and feature.type != "numerical":
                    raise ValueError(f"{where} is categorical, not numerical")
        for name, o in self.drift.overrides.items():
            key = f"drift.overrides.{name}"
            feature = self.features.get(name)
            if self.features and feature is None:
                known = ", ".join(self.features)
                raise ValueError(f"@{key}: no feature {name!r} in features ({known})")
            kind = feature.type if feature else None
            if kind == "categorical" and o.method in _ORDERED_ONLY:
                raise ValueError(
                    f"@{key}.method: {o.method} needs ordered values; {name} is categorical"
                )
            base = {"numerical": self.drift.numerical, "categorical": self.drift.categorical}
            method = o.method or (base[kind].method if kind else None)
            threshold = o.threshold
            if threshold is None and kind:
                threshold = base[kind].threshold
            _check_pvalue(method, threshold, f"{key}.threshold")
        return self


Op = Literal[">", ">=", "<", "<=", "==", "!="]

#: What driftline's own rules read: a model's merged series, exported by the one instance
#: that owns the model. Consumer-side counters are per instance (alert on their sum with
#: Prometheus rules, as deploy/prometheus/alert_rules.yml does).
RULE_METRICS = frozenset(
    {
        "driftline_window_events",
        "driftline_feature_drift_score",
        "driftline_feature_drift_pvalue",
        "driftline_feature_drift_threshold",
        "driftline_feature_drifted",
        "driftline_drifted_features_ratio",
        "driftline_feature_missing_ratio",
        "driftline_feature_type_mismatch_ratio",
        "driftline_feature_nonfinite_ratio",
        "driftline_feature_out_of_range_ratio",
        "driftline_feature_new_category_ratio",
        "driftline_prediction_drift_score",
        "driftline_model_performance",
        "driftline_model_performance_estimated",
        "driftline_label_coverage_ratio",
        "driftline_last_evaluation_timestamp_seconds",
        "driftline_segment_traffic_ratio",
        "driftline_segment_reference_ratio",
        "driftline_segment_mix_drift_score",
        "driftline_kpi",
    }
)


class AlertRule(_Settings):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    alert: Annotated[str, _pattern(_LABEL, "is not an alert name: letters, digits and _")]
    metric: Annotated[
        str, _pattern(r"driftline_[A-Za-z0-9_]+", "is not a driftline metric (driftline_...)")
    ]
    #: label matchers, all must hold
    match: dict[LabelName, str] = Field(default_factory=dict)
    op: Op = ">="
    threshold: float
    #: the condition must hold this long before the alert fires
    for_: Duration = Field(0.0, alias="for")
    #: hysteresis: keep firing this long after the condition stops holding
    keep_firing_for: Duration = 0.0
    severity: str = "warning"
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("metric")
    @classmethod
    def _model_level(cls, v: str) -> str:
        if v not in RULE_METRICS:
            raise ValueError(
                f"{v} is not one of a model's merged series, which driftline's rules read "
                f"({', '.join(sorted(RULE_METRICS))}); counters of the consumer side are "
                "per instance: alert on their sum with a Prometheus rule"
            )
        return v


class Sink(_Settings):
    name: Name
    type: Literal["webhook", "alertmanager", "slack"]
    url: Url
    #: Standard Webhooks signing when set
    secret_env: EnvName | None = None
    send_resolved: bool = True
    #: deadline of a whole request: connecting, sending and reading the answer
    timeout: PositiveDuration = 10.0


def _no_duplicates(names: list[str], key: str, field: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"@{key}[{i}].{field}: duplicate {field} {n!r}")
        seen.add(n)


class AlertSettings(_Settings):
    rules: list[AlertRule] = Field(default_factory=list)
    sinks: list[Sink] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _no_duplicates([r.alert for r in self.rules], "rules", "alert")
        _no_duplicates([s.name for s in self.sinks], "sinks", "name")
        return self


# fields a retraining target type needs, and fields that mean something to one type only
_TARGET_NEEDS = {
    "airflow": ("dag_id",),
    "github": ("repo", "token_env"),
    "kubeflow": ("pipeline_id",),
    "vertex": ("project", "region", "template_uri"),
}
_TARGET_ONLY = {
    "dag_id": "airflow",
    "repo": "github",
    "pipeline_id": "kubeflow",
    "project": "vertex",
    "region": "vertex",
    "template_uri": "vertex",
    "pipeline_root": "vertex",
    "service_account": "vertex",
    "credentials": "vertex",
}


class RetrainingTarget(_Settings):
    type: Literal["http", "airflow", "github", "kubeflow", "vertex"]
    #: required but for ``vertex``, whose default is ``https://{region}-aiplatform.googleapis.com``
    url: Url | None = None
    #: Standard Webhooks signing of the request when set
    secret_env: EnvName | None = None
    #: bearer token (GitHub, Airflow, Kubeflow, Vertex AI); must be set when named
    token_env: EnvName | None = None
    #: Vertex AI, instead of ``token_env``: ``google`` takes access tokens from Google
    #: Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's, or
    #: the metadata server's) and refreshes them before they expire; the optional extra
    #: ``driftline[google]``
    credentials: Literal["google"] | None = None
    #: deadline of a whole request: connecting, sending and reading the answer
    timeout: PositiveDuration = 30.0
    dag_id: str | None = None
    repo: Repo | None = None
    event_type: str = "driftline-retrain"
    pipeline_id: str | None = None
    #: Vertex AI Pipelines: the Google Cloud project and region the run is created in, the
    #: compiled pipeline spec (``gs://``, Artifact Registry or https URI), and optionally
    #: the run's output root (``gs://``) and service account
    project: (
        Annotated[
            str, _pattern(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "is not a Google Cloud project id")
        ]
        | None
    ) = None
    region: Annotated[str, _pattern(r"[a-z]+-[a-z]+[0-9]", "is not a region")] | None = None
    template_uri: TemplateUri | None = None
    pipeline_root: GcsUri | None = None
    service_account: str | None = None

    @model_validator(mode="after")
    def _target_fields(self) -> Self:
        if self.url is None and self.type != "vertex":
            raise ValueError(f"@url: a {self.type} target needs url")
        for key in _TARGET_NEEDS.get(self.type, ()):
            if not getattr(self, key):
                raise ValueError(f"@{key}: a {self.type} target needs {key}")
        for key, kind in _TARGET_ONLY.items():
            if getattr(self, key) is not None and self.type != kind:
                raise ValueError(f"@{key}: applies to {kind} targets only, not {self.type}")
        if self.type == "vertex" and (self.token_env is None) == (self.credentials is None):
            # an access token from the environment expires within the hour
            raise ValueError(
                "@credentials: a vertex target needs credentials: google (tokens refreshed "
                "from Application Default Credentials) or token_env, not both"
            )
        return self


class RetrainingSettings(_Settings):
    model: str
    #: alert rules (by `alert` name) whose firing requests a retraining
    on_alerts: list[str] = Field(default_factory=list)
    cooldown: Duration = 6 * 3600.0
    max_per_day: int = Field(2, ge=1)
    #: 5-field cron, UTC: retrain on this schedule regardless of alerts
    schedule: str | None = None
    target: RetrainingTarget

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            parse_cron(v)
        return v

    @model_validator(mode="after")
    def _fires_somehow(self) -> Self:
        if not self.on_alerts and self.schedule is None:
            raise ValueError("give on_alerts, a schedule or both; otherwise it never fires")
        return self


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),  # 0 and 7 are Sunday
)


def parse_cron(expr: str) -> tuple[frozenset[int], ...]:
    """The allowed values of the five fields (minute, hour, day of month, month, day of
    week) of a cron expression. Names (``jan``, ``sun``) are accepted; Sunday is 0.

    >>> [sorted(f)[:3] for f in parse_cron("*/15 3 * * 7")]
    [[0, 15, 30], [3], [1, 2, 3], [1, 2, 3], [0]]
    >>> sorted(parse_cron("0 0 1 jan-mar mon-fri")[4])
    [1, 2, 3, 4, 5]
    """
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(
            f"cron schedule {expr!r} must have 5 fields "
            f"(minute hour day-of-month month day-of-week), not {len(parts)}"
        )
    out = []
    for text, (name, lo, hi, names) in zip(parts, _CRON_FIELDS, strict=True):
        values = {v for item in text.split(",") for v in _cron_item(item, name, lo, hi, names)}
        if name == "day of week" and 7 in values:
            values = (values - {7}) | {0}
        out.append(frozenset(values))
    return tuple(out)


def _cron_item(item: str, name: str, lo: int, hi: int, names: dict[str, int]) -> range:
    """``*``, ``n``, ``a-b``, each with an optional ``/step``."""

    def number(s: str) -> int:
        if s.isdigit():
            return int(s)
        if s.lower() in names:
            return names[s.lower()]
        raise ValueError(f"cron {name} field {item!r}: {s!r} is not a number")

    rng, slash, step_text = item.partition("/")
    step = number(step_text) if slash else 1
    if step < 1:
        raise ValueError(f"cron {name} field {item!r}: the step must be at least 1")
    if rng == "*":
        start, end = lo, hi
    else:
        a, dash, b = rng.partition("-")
        start = number(a)
        end = number(b) if dash else (hi if slash else start)
    if not lo <= start <= end <= hi:
        raise ValueError(f"cron {name} field {item!r}: outside {lo}-{hi} or reversed")
    return range(start, end + 1, step)


class DriftlineConfig(_Settings):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    models: Annotated[list[ModelSettings], Field(min_length=1)]
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retraining: list[RetrainingSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Self:
        _no_duplicates([m.name for m in self.models], "models", "name")
        models = {m.name for m in self.models}
        alerts = {r.alert for r in self.alerts.rules}
        for i, r in enumerate(self.retraining):
            if r.model not in models:
                known = ", ".join(sorted(models))
                raise ValueError(f"@retraining[{i}].model: unknown model {r.model!r} ({known})")
            for j, a in enumerate(r.on_alerts):
                if a not in alerts:
                    known = ", ".join(sorted(alerts)) or "none configured"
                    raise ValueError(
                        f"@retraining[{i}].on_alerts[{j}]: unknown alert rule {a!r} ({known})"
                    )
        return self
