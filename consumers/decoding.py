"""Decoding Kafka record values into per-model numpy column batches.

Fast path: each model has a typed msgspec decoder generated from its schema (numerical
features ``float | None``, categorical ``str | int | bool | None``, unknown features
forbidden). A record is decoded with the decoder of the model seen last; when that fails
or names another model, the record takes the lenient path, which finds its model, accepts
what the contract allows (NaN/Infinity literals, extra features, wrong-typed feature values,
all counted), or rejects it with a reason for the dead-letter topic. Columns are read from
the decoded structs one at a time in C, never a Python loop per event per feature.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitor.events import MAX_VERSION_LENGTH, MISMATCH, NONFINITE, EventBatch
from monitor.schema import FeatureKind, FeatureSpec

__all__ = [
    "BatchDecoder",
    "DecodedBatch",
    "GroundTruthBatch",
    "GroundTruthDecoder",
    "Invalid",
    "Reason",
]


class Reason:
    """Why a record went to the dead-letter topic (the ``reason`` label and header)."""

    EMPTY = "empty_record"
    OVERSIZE = "oversize"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_MODEL = "unknown_model"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    UNEXPECTED_FEATURE = "unexpected_feature"

    ALL = (
        "empty_record",
        "oversize",
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "invalid_field",
        "unknown_model",
        "timestamp_out_of_range",
        "unexpected_feature",
    )


@dataclass(frozen=True)
class Invalid:
    index: int  # position of the record in the decoded sequence
    model: str  # "unknown" when the model could not be read or is not configured
    reason: str
    message: str


@dataclass
class DecodedBatch:
    batches: dict[str, EventBatch] = field(default_factory=dict)
    invalid: list[Invalid] = field(default_factory=list)
    #: features sent that the model's schema does not have, per model
    extra_features: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def valid(self) -> int:
        return sum(len(b) for b in self.batches.values())


class _Prediction(msgspec.Struct, gc=False):
    label: str | int | None = None
    score: float | None = None
    probabilities: dict[str, float] | None = None


# Offset required: a bare local time takes the lenient path, which reads it as UTC.
_Timestamp = Annotated[datetime, msgspec.Meta(tz=True)] | float | None
_PredictionValue = int | float | str | _Prediction | None


class _ModelCodec:
    """The typed decoder of one model and the order of its feature fields."""

    def __init__(
        self,
        model: str,
        specs: Sequence[FeatureSpec],
        forbid_extra: bool = True,
        max_category_length: int = 1024,
    ) -> None:
        self.model = model
        self.specs = tuple(specs)
        self.numerical = [i for i, s in enumerate(self.specs) if s.kind is FeatureKind.NUMERICAL]
        self.categorical = [
            i for i, s in enumerate(self.specs) if s.kind is FeatureKind.CATEGORICAL
        ]
        self.index = {s.name: i for i, s in enumerate(self.specs)}
        # A longer category fails the typed path; the lenient one flags it as a mismatch.
        category = Annotated[str, msgspec.Meta(max_length=max_category_length)]
        fields: list[tuple[str, Any, Any]] = []
        for i, spec in enumerate(self.specs):
            kind: Any = (
                float | None if spec.kind is FeatureKind.NUMERICAL else category | int | bool | None
            )
            fields.append((f"f{i}", kind, None))
        features = msgspec.defstruct(
            f"Features_{model}",
            fields,
            rename={f"f{i}": s.name for i, s in enumerate(self.specs)},
            # Extra features take the lenient path, where they are counted or rejected.
            forbid_unknown_fields=forbid_extra,
            gc=False,
        )
        event = msgspec.defstruct(
            f"Event_{model}",
            [
                ("event_id", str),
                ("model", str),
                ("features", features),
                ("model_version", str | None, None),
                ("timestamp", _Timestamp, None),
                ("prediction", _PredictionValue, None),
                ("latency_ms", float | None, None),
                ("tags", dict[str, str] | None, None),
            ],
            gc=False,
        )
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(event)
        self.features = features
        #: each feature's value of a features struct, in ``specs`` order
        self.getters = [attrgetter(f"f{i}") for i in range(len(self.specs))]


@dataclass
class _Rows:
    """Events of one model collected during a batch, before they become columns."""

    index: list[int] = field(default_factory=list)  # position of each event's record
    event_id: list[str] = field(default_factory=list)
    version: list[str | None] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    prediction: list[Any] = field(default_factory=list)
    latency: list[float | None] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)  # the codec's features structs
    flags: list[tuple[int, int, int]] = field(default_factory=list)  # (row, feature, flag)
    tags: list[dict[str, str] | None] = field(default_factory=list)

    def add_typed(self, start: int, events: list[Any], record_times: Sequence[float]) -> None:
        """Append typed events: one comprehension per field, no loop per feature."""
        self.index.extend(range(start, start + len(events)))
        self.event_id.extend([e.event_id for e in events])
        self.version.extend([e.model_version for e in events])
        stamps = [e.timestamp for e in events]
        try:  # the common case: every event has an RFC 3339 timestamp
            times = list(map(datetime.timestamp, stamps))
        except TypeError:
            times = _epochs(stamps, record_times)
        self.time.extend(times)
        self.prediction.extend([e.prediction for e in events])
        self.latency.extend([e.latency_ms for e in events])
        self.features.extend([e.features for e in events])
        self.tags.extend([e.tags for e in events])


class BatchDecoder:
    """Decodes record values of the predictions topic into per-model batches."""

    def __init__(
        self,
        schemas: Mapping[str, Sequence[FeatureSpec] | None],
        *,
        max_record_bytes: int = 1 << 20,
        max_future: float | None = None,
        max_age: float | None = None,
        extra_features: str = "count",
        max_id_length: int = 256,
        max_features: int = 1000,
        max_category_length: int = 1024,
        tags: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``tags`` names, per model, the event tags its batches keep (those it is sliced
        by); other tags are checked and dropped."""
        if extra_features not in ("allow", "count", "reject"):
            raise ValueError(f"extra_features must be allow, count or reject: {extra_features!r}")
        self.max_record_bytes = max_record_bytes
        self.max_id_length = max_id_length
        self.max_features = max_features
        self.max_category_length = max_category_length
        self.max_future = max_future
        self.max_age = max_age
        self.extra_features = extra_features
        self.tags = {model: tuple(names) for model, names in (tags or {}).items()}
        self._codecs: dict[str, _ModelCodec | None] = {}
        for model, specs in schemas.items():
            self.set_schema(model, specs)
        self._last: _ModelCodec | None = None

    @property
    def models(self) -> frozenset[str]:
        return frozenset(self._codecs)

    def set_schema(self, model: str, specs: Sequence[FeatureSpec] | None) -> None:
        """Set (or, with ``None``, clear) the feature schema a model is decoded with.

        A model without a schema (its reference comes from the stream) decodes every
        feature as a raw value into ``categorical``, for the reference builder to type.
        """
        forbid = self.extra_features != "allow"
        self._codecs[model] = (
            _ModelCodec(model, specs, forbid, self.max_category_length)
            if specs is not None
            else None
        )
        self._last = None

    def decode(
        self,
        values: Sequence[bytes | None],
        record_times: Sequence[float],
        now: float | None = None,
    ) -> DecodedBatch:
        """Decode ``values``; ``record_times`` (epoch seconds) stand in for absent timestamps.

        With ``now`` (wall-clock seconds), event times beyond ``max_future`` ahead of it or
        ``max_age`` behind it make the event invalid.
        """
        out = DecodedBatch()
        rows: dict[str, _Rows] = {}
        raw_rows: dict[str, list[tuple[Any, ...]]] = {}
        codec = self._last
        i, n = 0, len(values)
        while i < n:
            if codec is not None:
                i = self._fast(codec, values, record_times, i, rows)
                if i >= n:
                    break
            found = self._lenient(i, values[i], record_times[i], out, rows, raw_rows)
            codec = found or codec
            i += 1
        self._last = codec
        for model, r in rows.items():
            model_codec = self._codecs[model]
            assert model_codec is not None
            batch = _columns(model, model_codec, r)
            batch.tags = _tag_columns(self.tags.get(model, ()), r.tags)
            out.batches[model] = self._check_times(model, batch, r.index, now, out)
        for model, raw in raw_rows.items():
            index = [row[6] for row in raw]
            batch = _raw_columns(model, raw)
            batch.tags = _tag_columns(self.tags.get(model, ()), [row[7] for row in raw])
            out.batches[model] = self._check_times(model, batch, index, now, out)
        for model in [m for m, b in out.batches.items() if len(b) == 0]:
            del out.batches[model]
        out.invalid.sort(key=lambda inv: inv.index)
        return out

    def _check_times(
        self, model: str, batch: EventBatch, index: list[int], now: float | None, out: DecodedBatch
    ) -> EventBatch:
        lat = batch.latency_ms
        bad_latency = ~np.isnan(lat) & ~((lat >= 0) & (lat <= MAX_LATENCY_MS))
        bad_time = out_of_range(batch.event_time, now, self.max_future, self.max_age)
        limit = self.max_id_length
        long_id = np.fromiter(map(len, batch.event_id), np.intp, len(batch)) > limit
        versions = batch.model_version
        versions[versions == ""] = None  # no version: not a version named ""
        long_version = np.zeros(len(batch), dtype=bool)
        if max(map(len, filter(None, versions.tolist())), default=0) > MAX_VERSION_LENGTH:
            long_version = np.fromiter(
                (v is not None and len(v) > MAX_VERSION_LENGTH for v in versions.tolist()),
                bool,
                len(batch),
            )
        bad = bad_time | bad_latency | long_id | long_version
        if not bad.any():
            return batch
        t = batch.event_time
        for j in np.flatnonzero(bad).tolist():
            if long_id[j]:
                reason = Reason.INVALID_FIELD
                message = (
                    f"event_id of {len(batch.event_id[j])} characters > limit {limit} "
                    "(validation.max_id_length)"
                )
            elif long_version[j]:
                reason = Reason.INVALID_FIELD
                message = (
                    f"model_version of {len(versions[j])} characters > limit {MAX_VERSION_LENGTH}"
                )
            elif bad_time[j]:
                reason = Reason.TIMESTAMP_OUT_OF_RANGE
                assert now is not None
                message = time_message(float(t[j]), now, self.max_future, self.max_age)
            else:
                reason = Reason.INVALID_FIELD
                message = f"latency_ms {lat[j]!r} is outside [0, {MAX_LATENCY_MS:.0f}] (one day)"
            out.invalid.append(Invalid(index[j], model, reason, message))
        return batch.select(~bad)

    def _fast(
        self,
        codec: _ModelCodec,
        values: Sequence[bytes | None],
        record_times: Sequence[float],
        start: int,
        rows: dict[str, _Rows],
    ) -> int:
        """Decode from ``start`` with ``codec`` until a record does not fit; return its index."""
        decode = codec.decoder.decode
        model = codec.model
        limit = self.max_record_bytes
        events: list[Any] = []
        append = events.append
        i = start
        for value in values[start:]:
            if value is None or len(value) > limit:
                break
            try:
                ev = decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                break
            if ev.model != model:
                break
            append(ev)
            i += 1
        if events:
            r = rows.get(model) or rows.setdefault(model, _Rows())
            r.add_typed(start, events, record_times[start:i])
        return i

    def _lenient(
        self,
        i: int,
        value: bytes | None,
        record_time: float,
        out: DecodedBatch,
        rows: dict[str, _Rows],
        raw_rows: dict[str, list[tuple[Any, ...]]],
    ) -> _ModelCodec | None:
        """Decode one record the slow, forgiving way; returns the codec that fits it."""

        def reject(reason: str, message: str, model: str = "unknown") -> None:
            out.invalid.append(Invalid(i, model, reason, message))

        if value is None or len(value) == 0:
            reject(Reason.EMPTY, "record has no value")
            return None
        if len(value) > self.max_record_bytes:
            reject(Reason.OVERSIZE, f"{len(value)} bytes > limit {self.max_record_bytes}")
            return None
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            reject(Reason.NOT_UTF8, str(exc))
            return None
        try:
            data = json.loads(text)  # stdlib: accepts the NaN/Infinity literals Python emits
        except (ValueError, RecursionError) as exc:
            reject(Reason.INVALID_JSON, str(exc)[:200])
            return None
        if not isinstance(data, dict):
            reject(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(data).__name__}")
            return None
        model = data.get("model")
        if not isinstance(model, str):
            reject(Reason.INVALID_FIELD, "model: required string")
            return None
        if model not in self._codecs:
            reject(Reason.UNKNOWN_MODEL, f"model {model[:100]!r} is not configured")
            return None
        codec = self._codecs[model]
        try:
            event_id, version, t, prediction, latency = _envelope(data, record_time)
        except ValueError as exc:
            reject(Reason.INVALID_FIELD, str(exc), model)
            return None
        features = data.get("features")
        if not isinstance(features, dict):
            reject(Reason.INVALID_FIELD, "features: required object", model)
            return None
        if len(features) > self.max_features:
            reject(
                Reason.INVALID_FIELD,
                f"{len(features)} features > limit {self.max_features} (validation.max_features)",
                model,
            )
            return None
        if codec is None:
            # No schema yet: the reference sample keeps values, so over-long ones are dropped
            # (read as missing) instead of becoming categories.
            limit = self.max_category_length
            if any(isinstance(v, str) and len(v) > limit for v in features.values()):
                features = {
                    k: None if isinstance(v, str) and len(v) > limit else v
                    for k, v in features.items()
                }
            raw_rows.setdefault(model, []).append(
                (event_id, version, t, prediction, latency, features, i, data.get("tags"))
            )
            return None
        extra = [name for name in features if name not in codec.index]
        if extra and self.extra_features == "reject":
            shown = ", ".join(repr(n[:50]) for n in extra[:5])
            reject(Reason.UNEXPECTED_FEATURE, f"features not in the schema: {shown}", model)
            return None
        if extra and self.extra_features == "count":
            out.extra_features.setdefault(model, Counter()).update(extra)
        r = rows.setdefault(model, _Rows())
        row = len(r.event_id)
        values_out: list[Any] = [None] * len(codec.specs)
        for name, v in features.items():
            j = codec.index.get(name)
            if j is None:
                continue
            ok, flag = _feature_value(codec.specs[j].kind, v, self.max_category_length)
            if flag:
                r.flags.append((row, j, flag))
            else:
                values_out[j] = ok
        r.index.append(i)
        r.event_id.append(event_id)
        r.version.append(version)
        r.time.append(t)
        r.prediction.append(prediction)
        r.latency.append(latency)
        r.features.append(codec.features(*values_out))
        r.tags.append(data.get("tags"))
        return codec


def _feature_value(kind: FeatureKind, v: Any, max_category_length: int) -> tuple[Any, int]:
    """A feature value as the fast path would have typed it, or a flag saying why not.

    A category longer than ``max_category_length`` characters is a mismatch: it is never
    binned, so no state holds it.
    """
    if v is None:
        return None, 0
    if kind is FeatureKind.NUMERICAL:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None, MISMATCH
        try:
            f = float(v)
        except OverflowError:  # an integer beyond float range
            return None, NONFINITE
        return (f, 0) if math.isfinite(f) else (None, NONFINITE)
    if isinstance(v, str) and len(v) > max_category_length:
        return None, MISMATCH
    if isinstance(v, str | int):  # bool is an int
        return v, 0
    return None, MISMATCH


def _epoch(t: datetime | float | None, record_time: float) -> float:
    if t is None:
        return record_time
    if isinstance(t, datetime):
        if t.tzinfo is None:  # RFC 3339 requires an offset; read a bare time as UTC
            t = t.replace(tzinfo=UTC)
        return t.timestamp()
    return float(t)


def _epochs(stamps: list[datetime | float | None], record_times: Sequence[float]) -> list[float]:
    """Epoch seconds of typed timestamps, ``record_times`` where there is none."""
    try:  # epoch seconds, some absent: one conversion (an absent one reads as NaN)
        t = np.array(stamps, dtype=np.float64)
    except TypeError:  # times mixed with epoch seconds
        return list(map(_epoch, stamps, record_times))
    absent = np.isnan(t)  # JSON has no NaN: NaN is None
    if absent.any():
        t[absent] = np.asarray(record_times, dtype=np.float64)[absent]
    return t.tolist()  # type: ignore[no-any-return]


def _envelope(data: dict[str, Any], record_time: float) -> tuple[str, Any, float, Any, Any]:
    event_id = data.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event_id: required non-empty string")
    version = data.get("model_version")
    if version is not None and not isinstance(version, str):
        raise ValueError("model_version: must be a string")
    ts = data.get("timestamp")
    if ts is None:
        t = record_time
    elif isinstance(ts, bool):
        raise ValueError("timestamp: must be RFC 3339 text or epoch seconds")
    elif isinstance(ts, int | float):
        t = float(ts)
    elif isinstance(ts, str):
        try:
            t = _epoch(datetime.fromisoformat(ts), record_time)
        except ValueError:
            raise ValueError(f"timestamp: not RFC 3339: {ts[:40]!r}") from None
    else:
        raise ValueError("timestamp: must be RFC 3339 text or epoch seconds")
    if not math.isfinite(t):
        raise ValueError("timestamp: not a finite number")
    latency = data.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise ValueError("latency_ms: must be a number")
    tags = data.get("tags")
    if tags is not None and (
        not isinstance(tags, dict) or not all(isinstance(x, str) for x in tags.values())
    ):
        raise ValueError("tags: must be an object of strings")
    prediction = data.get("prediction")
    if isinstance(prediction, dict):
        label, score, probs = (prediction.get(k) for k in ("label", "score", "probabilities"))
        if label is not None and (isinstance(label, bool) or not isinstance(label, str | int)):
            raise ValueError("prediction.label: must be a string or integer")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise ValueError("prediction.score: must be a number")
        if probs is not None and (
            not isinstance(probs, dict)
            or not all(
                isinstance(p, int | float) and not isinstance(p, bool) for p in probs.values()
            )
        ):
            raise ValueError("prediction.probabilities: must map labels to numbers")
        prediction = _Prediction(label, None if score is None else float(score), probs)
    elif isinstance(prediction, bool):
        prediction = str(prediction).lower()
    elif prediction is not None and not isinstance(prediction, int | float | str):
        raise ValueError("prediction: must be a number, a string or an object")
    return event_id, version, t, prediction, latency


def _split_prediction(p: Any) -> tuple[float, Any]:
    """(score, label) of one prediction value (NaN / None where it has none)."""
    if p is None:
        return math.nan, None
    if isinstance(p, str):
        return math.nan, p
    if isinstance(p, int | float):
        return float(p), None
    score = math.nan if p.score is None else p.score
    label = p.label
    if p.probabilities:
        best = max(p.probabilities, key=p.probabilities.__getitem__)
        label = best if label is None else label
        if p.score is None:
            score = p.probabilities[best]
    return score, label


def _outputs(predictions: list[Any]) -> tuple[NDArray[np.float64], NDArray[np.object_]]:
    n = len(predictions)
    try:  # the common case: every prediction is a number
        score = np.array(predictions, dtype=np.float64)
        if score.shape == (n,):
            return score, np.full(n, None, dtype=object)
    except (TypeError, ValueError):
        pass
    pairs = [_split_prediction(p) for p in predictions]
    score = np.fromiter((s for s, _ in pairs), dtype=np.float64, count=n)
    label = np.empty(n, dtype=object)
    label[:] = [lab for _, lab in pairs]
    return score, label


def _columns(model: str, codec: _ModelCodec, r: _Rows) -> EventBatch:
    n = len(r.event_id)
    # One column at a time, read from the structs in C: no object per event is made (a
    # tuple per event made the garbage collector a fifth of stage 1's time).
    getters, features = codec.getters, r.features
    numerical = {codec.specs[j].name: _floats(getters[j], features) for j in codec.numerical}
    categorical = {codec.specs[j].name: _objects(getters[j], features) for j in codec.categorical}
    flags: dict[str, NDArray[np.int8]] = {}
    for row, j, flag in r.flags:
        name = codec.specs[j].name
        if name not in flags:
            flags[name] = np.zeros(n, dtype=np.int8)
        flags[name][row] = flag
    score, label = _outputs(r.prediction)
    version = np.empty(n, dtype=object)
    version[:] = r.version
    return EventBatch(
        model=model,
        event_time=np.array(r.time, dtype=np.float64),
        event_id=r.event_id,
        model_version=version,
        numerical=numerical,
        categorical=categorical,
        score=score,
        label=label,
        latency_ms=np.array(r.latency, dtype=np.float64),
        flags=flags,
    )


def _floats(getter: Callable[[Any], Any], rows: list[Any]) -> NDArray[np.float64]:
    """The float column ``getter`` reads from ``rows``, NaN where it reads ``None``."""
    try:  # the common case: no value missing
        return np.fromiter(map(getter, rows), dtype=np.float64, count=len(rows))
    except TypeError:
        return np.array(list(map(getter, rows)), dtype=np.float64)


def _objects(getter: Callable[[Any], Any], rows: list[Any]) -> NDArray[np.object_]:
    column = np.empty(len(rows), dtype=object)
    column[:] = list(map(getter, rows))
    return column


def _tag_columns(
    names: Sequence[str], tags: list[dict[str, str] | None]
) -> dict[str, NDArray[np.object_]]:
    """Object columns of the tags ``names`` (``None`` where an event lacks one)."""
    out: dict[str, NDArray[np.object_]] = {}
    for name in names:
        col = np.empty(len(tags), dtype=object)
        col[:] = [t.get(name) if t else None for t in tags]
        out[name] = col
    return out


def _raw_columns(model: str, raw: list[tuple[Any, ...]]) -> EventBatch:
    """Untyped columns (every feature as an object column) for a model with no schema yet."""
    n = len(raw)
    names = sorted({k for row in raw for k in row[5]})
    categorical = {}
    for name in names:
        col = np.empty(n, dtype=object)
        col[:] = [row[5].get(name) for row in raw]
        categorical[name] = col
    score, label = _outputs([row[3] for row in raw])
    version = np.empty(n, dtype=object)
    version[:] = [row[1] for row in raw]
    return EventBatch(
        model=model,
        event_time=np.array([row[2] for row in raw], dtype=np.float64),
        event_id=[row[0] for row in raw],
        model_version=version,
        numerical={},
        categorical=categorical,
        score=score,
        label=label,
        latency_ms=np.array([row[4] for row in raw], dtype=np.float64),
    )


class _GroundTruth(msgspec.Struct, gc=False):
    event_id: str
    model: str
    label: str | int | float | bool
    timestamp: _Timestamp = None


@dataclass
class GroundTruthBatch:
    """Decoded ground-truth events of one partition, per model."""

    labels: dict[str, tuple[list[str], NDArray[np.object_], NDArray[np.float64]]] = field(
        default_factory=dict
    )
    invalid: list[Invalid] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return sum(len(ids) for ids, _, _ in self.labels.values())


#: a prediction latency beyond a day is a unit mistake, not a latency
MAX_LATENCY_MS = 86_400_000.0


def out_of_range(
    t: NDArray[np.float64], now: float | None, max_future: float | None, max_age: float | None
) -> NDArray[np.bool_]:
    """Event times beyond ``max_future`` ahead of ``now`` or ``max_age`` behind it."""
    bad = ~np.isfinite(t)
    if now is None:
        return bad
    if max_future is not None:
        bad |= t > now + max_future
    if max_age is not None:
        bad |= t < now - max_age
    return bad


def time_message(t: float, now: float, max_future: float | None, max_age: float | None) -> str:
    """Why an event time was refused, naming the likely mistake."""
    hint = ""
    if t > 1e11 and (max_future is None or t / 1000.0 <= now + max_future):
        hint = " (milliseconds? timestamps are epoch seconds or RFC 3339)"
    elif t > 1e11 and t / 1e6 <= now + (max_future or 0.0):
        hint = " (microseconds? timestamps are epoch seconds or RFC 3339)"
    return (
        f"event time {t:.3f} is outside [now - {max_age}s, now + {max_future}s] "
        f"(now {now:.3f}){hint}"
    )


class GroundTruthDecoder:
    """Decodes ``{"event_id", "model", "label", "timestamp"}`` records."""

    def __init__(
        self,
        models: Iterable[str],
        *,
        max_record_bytes: int = 1 << 20,
        max_future: float | None = None,
        max_age: float | None = None,
        max_id_length: int = 256,
        max_label_length: int = 256,
    ) -> None:
        self.models = frozenset(models)
        self.max_record_bytes = max_record_bytes
        self.max_id_length = max_id_length
        self.max_label_length = max_label_length
        self.max_future = max_future
        self.max_age = max_age
        self._decoder = msgspec.json.Decoder(_GroundTruth)

    def decode(
        self,
        values: Sequence[bytes | None],
        record_times: Sequence[float],
        now: float | None = None,
    ) -> GroundTruthBatch:
        """Decode ``values``; with ``now``, label times outside the prediction time range
        (``max_future``, ``max_age``) make the record invalid, as for predictions."""
        out = GroundTruthBatch()
        rows: dict[str, tuple[list[str], list[Any], list[float]]] = {}
        for i, value in enumerate(values):
            if value is None or len(value) == 0:
                out.invalid.append(Invalid(i, "unknown", Reason.EMPTY, "record has no value"))
                continue
            if len(value) > self.max_record_bytes:
                out.invalid.append(Invalid(i, "unknown", Reason.OVERSIZE, f"{len(value)} bytes"))
                continue
            try:
                gt = self._decoder.decode(value)
            except msgspec.DecodeError as exc:
                reason = (
                    Reason.INVALID_FIELD
                    if isinstance(exc, msgspec.ValidationError)
                    else Reason.INVALID_JSON
                )
                out.invalid.append(Invalid(i, "unknown", reason, str(exc)[:200]))
                continue
            if gt.model not in self.models:
                out.invalid.append(
                    Invalid(i, "unknown", Reason.UNKNOWN_MODEL, f"model {gt.model[:100]!r}")
                )
                continue
            if len(gt.event_id) > self.max_id_length:
                message = (
                    f"event_id of {len(gt.event_id)} characters > limit {self.max_id_length} "
                    "(validation.max_id_length)"
                )
                out.invalid.append(Invalid(i, gt.model, Reason.INVALID_FIELD, message))
                continue
            if isinstance(gt.label, str) and len(gt.label) > self.max_label_length:
                message = (
                    f"label of {len(gt.label)} characters > limit {self.max_label_length} "
                    "(validation.max_label_length)"
                )
                out.invalid.append(Invalid(i, gt.model, Reason.INVALID_FIELD, message))
                continue
            t = _epoch(gt.timestamp, record_times[i])
            if out_of_range(np.array([t]), now, self.max_future, self.max_age)[0]:
                assert now is not None
                message = time_message(t, now, self.max_future, self.max_age)
                out.invalid.append(Invalid(i, gt.model, Reason.TIMESTAMP_OUT_OF_RANGE, message))
                continue
            ids, labels, times = rows.setdefault(gt.model, ([], [], []))
            ids.append(gt.event_id)
            labels.append(gt.label)
            times.append(t)
        for model, (ids, labels, times) in rows.items():
            y = np.empty(len(labels), dtype=object)
            y[:] = labels
            out.labels[model] = (ids, y, np.array(times, dtype=np.float64))
        return out
