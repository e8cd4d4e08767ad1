"""driftline's configuration: pydantic v2 models, frozen, with DESIGN.md's defaults.

Pure: no file is read here (see :mod:`consumers.configfile`). Durations are written as
``"500ms"``, ``"60s"``, ``"5m"``, ``"1h"``, ``"7d"`` or plain seconds, and held as float
seconds. Secrets never live in the YAML: ``*_env`` keys name environment variables.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = [
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
    "MethodSettings",
    "ModelSettings",
    "OverrideSettings",
    "QualitySettings",
    "ReferenceSettings",
    "RetrainingSettings",
    "RetrainingTarget",
    "Sink",
    "StateSettings",
    "ValidationSettings",
    "WindowSettings",
    "parse_cron",
    "parse_duration",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: str | float | int) -> float:
    """Seconds in a duration.

    >>> parse_duration("5m"), parse_duration("500ms"), parse_duration(2)
    (300.0, 0.5, 2.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Method = Literal["psi", "kl", "jensenshannon", "hellinger", "wasserstein", "ks", "chisquare"]
_TESTS = ("ks", "chisquare")
_ORDERED_ONLY = ("wasserstein", "ks")


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Settings):
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "driftline"
    predictions_topic: str = "driftline.predictions"
    ground_truth_topic: str = "driftline.ground-truth"
    dead_letter_topic: str = "driftline.dead-letter"
    consumer: dict[str, Any] = Field(default_factory=dict)
    producer: dict[str, Any] = Field(default_factory=dict)
    sasl_password_env: str | None = None
    max_batch: int = Field(10_000, gt=0)
    poll_timeout_ms: int = Field(500, gt=0)


class HttpSettings(_Settings):
    host: str = "0.0.0.0"
    port: int = Field(9108, ge=0, le=65535)


class ValidationSettings(_Settings):
    """Event-level checks; a record failing one goes to the dead-letter topic."""

    max_record_bytes: int = Field(1 << 20, gt=0)
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

    @model_validator(mode="after")
    def _size_is_whole_panes(self) -> Self:
        if self.pane <= 0:
            raise ValueError("@pane: must be longer than 0s")
        panes = self.size / self.pane
        if self.size <= 0 or abs(panes - round(panes)) > 1e-9:
            raise ValueError(
                f"@size: {self.size:g}s must be a positive whole multiple of pane ({self.pane:g}s)"
            )
        return self


class StateSettings(_Settings):
    dir: str | None = "./state"
    kafka_topic: str | None = None
    checkpoint_interval: Duration = 30.0
    keep: int = Field(3, ge=1)


class FeatureSettings(_Settings):
    type: Literal["numerical", "categorical"]
    bounds: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.bounds is not None:
            if self.type != "numerical":
                raise ValueError("bounds apply to numerical features only")
            if not self.bounds[0] < self.bounds[1]:
                raise ValueError("bounds must be [low, high] with low < high")
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


class MethodSettings(_Settings):
    method: Method
    threshold: float = Field(gt=0)
    report: tuple[Method, ...] = ()

    @model_validator(mode="after")
    def _pvalue_threshold(self) -> Self:
        if self.method in _TESTS and self.threshold >= 1:
            raise ValueError(f"{self.method} decides on a p-value: threshold must be < 1")
        return self


def _numerical_default() -> MethodSettings:
    return MethodSettings(method="wasserstein", threshold=0.1, report=("psi", "ks"))


def _categorical_default() -> MethodSettings:
    return MethodSettings(method="jensenshannon", threshold=0.1, report=("psi", "chisquare"))


class OverrideSettings(_Settings):
    method: Method | None = None
    threshold: float | None = Field(None, gt=0)


class DriftSettings(_Settings):
    numerical: MethodSettings = Field(default_factory=_numerical_default)
    categorical: MethodSettings = Field(default_factory=_categorical_default)
    min_events: int = Field(100, ge=1)
    overrides: dict[str, OverrideSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _categorical_methods(self) -> Self:
        v = self.categorical
        for m in (v.method, *v.report):
            if m in _ORDERED_ONLY:
                raise ValueError(
                    f"@categorical.method: {m} needs ordered values; "
                    "it cannot judge categorical features"
                )
        return self


class QualitySettings(_Settings):
    #: a value is out of range outside [min - m*(max-min), max + m*(max-min)] of the reference
    #: (configured feature bounds take precedence)
    range_margin: float = Field(0.0, ge=0)


class BinningSettings(_Settings):
    quantiles: int = Field(100, ge=10, le=1000)
    coarse_bins: int = Field(10, ge=2)
    max_categories: int = Field(50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _coarse_le_fine(self) -> Self:
        if self.coarse_bins > self.quantiles:
            raise ValueError("coarse_bins must not exceed quantiles")
        return self


class ModelSettings(_Settings):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    task: Literal["binary_classification", "multiclass_classification", "regression"] = (
        "binary_classification"
    )
    positive_label: str | None = None
    decision_threshold: float = Field(0.5, ge=0, le=1)
    reference: ReferenceSettings
    features: dict[str, FeatureSettings] = Field(default_factory=dict)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    binning: BinningSettings = Field(default_factory=BinningSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)

    @model_validator(mode="after")
    def _overrides_fit(self) -> Self:
        for name, o in self.drift.overrides.items():
            f = self.features.get(name)
            if f is not None and f.type == "categorical" and o.method in _ORDERED_ONLY:
                raise ValueError(
                    f"@drift.overrides.{name}.method: {o.method} needs ordered values; "
                    f"{name} is categorical"
                )
        return self


Op = Literal[">", ">=", "<", "<=", "==", "!="]
_URL = r"^https?://\S+$"


class AlertRule(_Settings):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    alert: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    metric: Annotated[str, Field(pattern=r"^driftline_[a-z0-9_]+$")]
    match: dict[str, str] = Field(default_factory=dict)
    op: Op = ">="
    threshold: float
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    severity: str = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Sink(_Settings):
    name: str
    type: Literal["webhook", "alertmanager", "slack"]
    url: Annotated[str, Field(pattern=_URL)]
    secret_env: str | None = None
    send_resolved: bool = True
    timeout: Duration = 10.0


class AlertSettings(_Settings):
    rules: list[AlertRule] = Field(default_factory=list)
    sinks: list[Sink] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _no_duplicates([r.alert for r in self.rules], "rules", "alert")
        _no_duplicates([s.name for s in self.sinks], "sinks", "name")
        return self


class RetrainingTarget(_Settings):
    type: Literal["http", "airflow", "github", "kubeflow"]
    url: Annotated[str, Field(pattern=_URL)]
    secret_env: str | None = None
    token_env: str | None = None
    dag_id: str | None = None
    repo: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")] | None = None
    event_type: str = "driftline-retrain"
    pipeline_id: str | None = None

    @model_validator(mode="after")
    def _target_fields(self) -> Self:
        if self.type == "airflow" and not self.dag_id:
            raise ValueError("an airflow target needs dag_id")
        if self.type == "github" and not self.repo:
            raise ValueError("a github target needs repo: owner/name")
        if self.type == "kubeflow" and not self.pipeline_id:
            raise ValueError("a kubeflow target needs pipeline_id")
        return self


class RetrainingSettings(_Settings):
    model: str
    on_alerts: list[str] = Field(default_factory=list)
    cooldown: Duration = 6 * 3600.0
    max_per_day: int = Field(2, ge=1)
    schedule: str | None = None
    target: RetrainingTarget

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            parse_cron(v)
        return v


_CRON_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)


def parse_cron(expr: str) -> tuple[frozenset[int], ...]:
    """The allowed values of each of the five fields of a cron expression.

    >>> [sorted(f)[:3] for f in parse_cron("*/15 3 * * 0")]
    [[0, 15, 30], [3], [1, 2, 3], [1, 2, 3], [0]]
    """
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"cron schedule {expr!r} must have 5 fields, has {len(parts)}")
    out = []
    for text, (name, lo, hi) in zip(parts, _CRON_FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            rng, _, step_text = item.partition("/")
            step = int(step_text) if step_text.isdigit() else (1 if not step_text else 0)
            if step <= 0:
                raise ValueError(f"cron {name} field {item!r}: bad step")
            if rng == "*":
                start, end = lo, hi
            else:
                a, _, b = rng.partition("-")
                if not a.isdigit() or (b and not b.isdigit()):
                    raise ValueError(f"cron {name} field {item!r}: not a number or range")
                start, end = int(a), int(b) if b else (hi if step_text else int(a))
            if not lo <= start <= end <= hi:
                raise ValueError(f"cron {name} field {item!r}: outside {lo}-{hi}")
            values.update(range(start, end + 1, step))
        out.append(frozenset(values))
    return tuple(out)


def _no_duplicates(names: list[str], key: str, field: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"@{key}[{i}].{field}: duplicate {n!r}")
        seen.add(n)


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
        # Messages start with "@key.path: " so the file loader can name the key.
        seen: set[str] = set()
        for i, m in enumerate(self.models):
            if m.name in seen:
                raise ValueError(f"@models[{i}].name: duplicate model name {m.name!r}")
            seen.add(m.name)
        alerts = {r.alert for r in self.alerts.rules}
        for i, r in enumerate(self.retraining):
            if r.model not in seen:
                raise ValueError(f"@retraining[{i}].model: unknown model {r.model!r}")
            for j, a in enumerate(r.on_alerts):
                if a not in alerts:
                    raise ValueError(f"@retraining[{i}].on_alerts[{j}]: unknown alert rule {a!r}")
        return self
