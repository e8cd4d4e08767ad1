"""Reference profiles: the fixed bins and reference counts that every window is compared with.

A profile is built once, from a file or from the first events of a model version, and
written as versioned JSON (``driftline.reference/v1``) that ``reference.path`` accepts back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from monitor.binning import MISSING_CODE, CategoricalBins, NumericBins
from monitor.drift import DISTANCES
from monitor.exceptions import ReferenceError
from monitor.labels import normalize_label, normalize_labels
from monitor.null_model import NullTable, simulate_null
from monitor.schema import FeatureKind, FeatureSpec, infer_kind
from monitor.score_calibration import ScoreCalibration, fit_calibration

if TYPE_CHECKING:
    from monitor.segments import Segments

__all__ = [
    "LABEL",
    "PREDICTION",
    "PROFILE_FORMAT",
    "BinningOptions",
    "FeatureProfile",
    "ReferenceProfile",
    "build_profile",
    "recount",
]

PROFILE_FORMAT = "driftline.reference/v1"
#: Name of the pseudo-feature holding the model output (score or class).
PREDICTION = "prediction"
#: Name of the reference column holding the ground truth.
LABEL = "label"
#: Reference columns that are not input features.
_NOT_FEATURES = frozenset({PREDICTION, LABEL, "event_id", "timestamp", "model_version"})
#: Why a profile read from JSON has no score calibration.
_NO_CALIBRATION_STORED = (
    "the reference profile holds no score calibration (built without labels, "
    "for another task, or by an older driftline)"
)


@dataclass(frozen=True)
class BinningOptions:
    quantiles: int = 100
    coarse_bins: int = 10
    max_categories: int = 50


@dataclass(frozen=True)
class FeatureProfile:
    """Bins, reference counts per value bin and summary statistics of one feature."""

    spec: FeatureSpec
    bins: NumericBins | CategoricalBins
    counts: NDArray[np.int64]
    sums: NDArray[np.float64]  # per-bin sum of values (numerical); the bin's mean is a W1 point
    missing: int
    mean: float = float("nan")
    std: float = float("nan")
    minimum: float = float("nan")
    maximum: float = float("nan")
    #: per-bin sum of squared values (numerical): the spread of each bin's mean
    sumsq: NDArray[np.float64] | None = None
    _null: dict[str, NullTable] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def null_table(self) -> NullTable:
        """The simulated null distribution of this feature's scores (computed once)."""
        table = self._null.get("table")
        if table is None:
            table = self._null["table"] = self._simulate()
        return table

    def _simulate(self) -> NullTable:
        if self.kind is not FeatureKind.NUMERICAL:
            methods = tuple(m for m in DISTANCES if m != "wasserstein")
            return simulate_null(self.counts, self.bins.coarse_starts, methods)
        return simulate_null(
            self.counts,
            self.bins.coarse_starts,
            DISTANCES,
            points=self.wasserstein_points(),
            std=self.std,
        )

    def wasserstein_points(self) -> NDArray[np.float64]:
        """Where Wasserstein puts each bin's mass, in the reference and in a window alike.

        An interior bin's mass sits at the reference's mean of that bin (its centre when
        the reference has none there), so the score is a function of counts and its null
        distribution can be simulated exactly whatever the feature's shape. Values below
        (above) the whole reference range count at the first (last) interior bin's
        point: how far out they were is what ``out_of_range`` reports, and a single
        value far out cannot swamp the score of a small window.
        """
        assert isinstance(self.bins, NumericBins)
        with np.errstate(invalid="ignore", divide="ignore"):
            points = np.where(
                self.counts > 0, self.sums / np.maximum(self.counts, 1), self.bins.centers()
            )
        points[0], points[-1] = points[1], points[-2]
        return points.astype(np.float64)

    @property
    def kind(self) -> FeatureKind:
        return self.spec.kind

    def valid_range(self, margin: float = 0.0) -> tuple[float, float]:
        """Configured bounds, else the reference's observed range widened by ``margin``.

        >>> fp = build_profile("m", {"x": np.array([0.0, 10.0])}).features[0]
        >>> fp.valid_range(), fp.valid_range(0.1)
        ((0.0, 10.0), (-1.0, 11.0))
        """
        if self.spec.bounds is not None:
            return self.spec.bounds
        pad = margin * (self.maximum - self.minimum)
        return (self.minimum - pad, self.maximum + pad)

    def to_dict(self, calibration: bool = False) -> dict[str, Any]:
        """The profile as JSON data; with ``calibration`` also the null table (simulated
        now if need be), which a reference file keeps so that loading it is instant."""
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.kind.value,
            "bins": self.bins.to_dict(),
            "counts": self.counts.tolist(),
            "missing": self.missing,
        }
        if self.spec.bounds is not None:
            data["bounds"] = list(self.spec.bounds)
        if self.kind is FeatureKind.NUMERICAL:
            data.update(
                sums=self.sums.tolist(),
                mean=self.mean,
                std=self.std,
                min=self.minimum,
                max=self.maximum,
            )
            if self.sumsq is not None:
                data["sumsq"] = self.sumsq.tolist()
        if calibration:
            data["null"] = self.null_table().to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureProfile:
        try:
            kind = FeatureKind(data["type"])
            bounds = None
            if data.get("bounds") is not None:
                lo, hi = data["bounds"]
                bounds = (float(lo), float(hi))
            spec = FeatureSpec(str(data["name"]), kind, bounds)
            counts = np.asarray(data["counts"], dtype=np.int64)
            bins: NumericBins | CategoricalBins
            if kind is FeatureKind.NUMERICAL:
                bins = NumericBins.from_dict(data["bins"])
                sums = np.asarray(data["sums"], dtype=np.float64)
                stats = (data["mean"], data["std"], data["min"], data["max"])
            else:
                bins = CategoricalBins.from_dict(data["bins"])
                sums = np.zeros(counts.size, dtype=np.float64)
                stats = (float("nan"),) * 4
            if counts.size != bins.n_value_bins or sums.size != counts.size:
                raise ReferenceError(
                    f"feature {spec.name!r}: {counts.size} counts for {bins.n_value_bins} bins"
                )
            sumsq = None
            if data.get("sumsq") is not None:
                sumsq = np.asarray(data["sumsq"], dtype=np.float64)
                if sumsq.size != counts.size:
                    raise ReferenceError(f"feature {spec.name!r}: sumsq has the wrong size")
            mean, std, lo, hi = map(float, stats)
            profile = cls(spec, bins, counts, sums, int(data["missing"]), mean, std, lo, hi, sumsq)
            if data.get("null") is not None:
                table = NullTable.from_dict(data["null"])
                if table is not None and table.m == int(counts.sum()):
                    profile._null["table"] = table
            return profile
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceError(f"invalid feature profile: {exc!r}") from exc


@dataclass(frozen=True)
class ReferenceProfile:
    """Everything driftline keeps of a model's reference data."""

    model: str
    n_events: int
    features: tuple[FeatureProfile, ...]
    prediction: FeatureProfile | None = None
    model_version: str | None = None
    #: map of a binary classifier's scores to probabilities of its positive class, fitted
    #: on the labelled reference; ``None`` when there is none
    score_calibration: ScoreCalibration | None = None
    #: why there is no ``score_calibration`` (not stored)
    uncalibrated_reason: str | None = field(default=None, compare=False)
    #: the segments the model's windows are sliced by, and their reference slices
    segments: Segments | None = None

    def feature(self, name: str) -> FeatureProfile:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(f.spec for f in self.features)

    def calibrate(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Simulate every feature's null distribution now rather than at its first
        evaluation (each segment's slice too); ``progress(done, total)`` is called after
        each feature.

        Features are simulated on one thread per core (numpy's random draws and array
        arithmetic release the GIL); each table is seeded from its own counts, so the
        result does not depend on the order they finish in.
        """
        profiles = [*self.features, *([self.prediction] if self.prediction else [])]
        for part in self.segments.slices if self.segments is not None else ():
            if part is not None:  # a segment judged against its own slice of the reference
                profiles += [*part[0], *([part[1]] if part[1] is not None else [])]
        workers = max(1, min(len(profiles), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="calibrate") as pool:
            futures = [pool.submit(fp.null_table) for fp in profiles]
            for i, future in enumerate(as_completed(futures), 1):
                future.result()
                if progress is not None:
                    progress(i, len(profiles))

    def to_dict(self, calibration: bool = False) -> dict[str, Any]:
        """The profile as JSON data (see :meth:`FeatureProfile.to_dict`); the key
        ``score_calibration`` only when there is one."""
        data: dict[str, Any] = {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "model_version": self.model_version,
            "n_events": self.n_events,
            "features": [f.to_dict(calibration) for f in self.features],
            "prediction": self.prediction.to_dict(calibration) if self.prediction else None,
        }
        if self.score_calibration is not None:
            data["score_calibration"] = self.score_calibration.to_dict()
        if self.segments is not None:
            data["segments"] = self.segments.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        fmt = data.get("format") if isinstance(data, Mapping) else None
        if fmt != PROFILE_FORMAT:
            raise ReferenceError(
                f"unsupported reference profile format {fmt!r}; this driftline reads "
                f"{PROFILE_FORMAT!r} (rebuild it with `driftline reference build`)"
            )
        try:
            from monitor.segments import Segments  # segments are profiles' slices

            features = tuple(FeatureProfile.from_dict(f) for f in data["features"])
            pred = data.get("prediction")
            stored = data.get("score_calibration")
            cut = data.get("segments")
            return cls(
                model=str(data["model"]),
                n_events=int(data["n_events"]),
                features=features,
                prediction=FeatureProfile.from_dict(pred) if pred else None,
                model_version=data.get("model_version"),
                score_calibration=ScoreCalibration.from_dict(stored) if stored else None,
                uncalibrated_reason=None if stored else _NO_CALIBRATION_STORED,
                segments=None if cut is None else Segments.from_dict(cut),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceError(f"invalid reference profile: {exc!r}") from exc


def _profile_numeric(
    spec: FeatureSpec, column: NDArray[Any], opts: BinningOptions
) -> FeatureProfile:
    values = _as_float(column, spec.name)
    present = ~np.isnan(values)
    finite = values[present & np.isfinite(values)]
    if finite.size == 0:
        raise ReferenceError(f"feature {spec.name!r} has no finite reference values")
    bins = NumericBins.from_values(finite, opts.quantiles, opts.coarse_bins)
    idx = bins.assign(finite)
    counts = np.bincount(idx, minlength=bins.n_value_bins).astype(np.int64)
    sums = np.bincount(idx, weights=finite, minlength=bins.n_value_bins).astype(np.float64)
    sumsq = np.bincount(idx, weights=finite**2, minlength=bins.n_value_bins).astype(np.float64)
    return FeatureProfile(
        spec,
        bins,
        counts,
        sums,
        missing=int((~present).sum()),
        mean=float(finite.mean()),
        std=float(finite.std()),
        minimum=float(finite.min()),
        maximum=float(finite.max()),
        sumsq=sumsq,
    )


def _profile_categorical(
    spec: FeatureSpec, column: NDArray[Any], opts: BinningOptions
) -> FeatureProfile:
    values = np.array([None if v is None else str(v) for v in column.tolist()], dtype=object)
    bins = CategoricalBins.from_values(values, opts.max_categories)
    if len(bins.known) > opts.max_categories and values.size >= 2:
        # Top-K chosen and counted on the same rows overstates the chosen categories (the
        # winner's curse): rank on the even rows, count on the odd ones.
        bins = CategoricalBins.from_values(values, opts.max_categories, rank_on=values[0::2])
        values = values[1::2]
    codes = bins.assign(values)
    present = codes != MISSING_CODE
    counts = np.bincount(codes[present], minlength=bins.n_value_bins).astype(np.int64)
    return FeatureProfile(
        spec, bins, counts, np.zeros(counts.size, dtype=np.float64), missing=int((~present).sum())
    )


def recount(fp: FeatureProfile, column: NDArray[Any]) -> FeatureProfile:
    """The profile of ``column`` in the bins of ``fp`` (a slice of the rows ``fp`` was built
    from): its own counts, sums and spread, the valid range of ``fp``.

    >>> whole = build_profile("m", {"x": np.arange(100.0)}).features[0]
    >>> part = recount(whole, np.arange(50.0))
    >>> int(part.counts.sum()), part.mean, (part.minimum, part.maximum)
    (50, 24.5, (0.0, 99.0))
    """
    if fp.kind is not FeatureKind.NUMERICAL:
        assert isinstance(fp.bins, CategoricalBins)
        text = np.array([None if v is None else str(v) for v in column.tolist()], dtype=object)
        codes = fp.bins.assign(text)
        present = codes != MISSING_CODE
        counts = np.bincount(codes[present], minlength=fp.bins.n_value_bins).astype(np.int64)
        return FeatureProfile(
            fp.spec, fp.bins, counts, np.zeros(counts.size), missing=int((~present).sum())
        )
    assert isinstance(fp.bins, NumericBins)
    values = _as_float(column, fp.name)
    present = ~np.isnan(values)
    finite = values[present & np.isfinite(values)]
    idx = fp.bins.assign(finite)
    size = fp.bins.n_value_bins
    return FeatureProfile(
        fp.spec,
        fp.bins,
        np.bincount(idx, minlength=size).astype(np.int64),
        np.bincount(idx, weights=finite, minlength=size).astype(np.float64),
        missing=int((~present).sum()),
        mean=float(finite.mean()) if finite.size else math.nan,
        std=float(finite.std()) if finite.size else math.nan,
        # the model's valid range: quality rules are the model's, whatever the segment
        minimum=fp.minimum,
        maximum=fp.maximum,
        sumsq=np.bincount(idx, weights=finite**2, minlength=size).astype(np.float64),
    )


def _as_float(column: NDArray[Any], name: str) -> NDArray[np.float64]:
    try:
        return np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ReferenceError(f"feature {name!r} is numerical but has non-numeric values") from exc


def build_profile(
    model: str,
    columns: Mapping[str, NDArray[Any]],
    specs: Sequence[FeatureSpec] | None = None,
    options: BinningOptions | None = None,
    *,
    prediction_kind: FeatureKind | None = None,
    model_version: str | None = None,
    positive_label: object | None = None,
) -> ReferenceProfile:
    """Build a profile from reference columns (missing values as ``None`` or NaN).

    ``specs`` fixes the features and their kinds; without it every column but
    ``prediction``/``label`` (and ``tags.*``) is a feature and its kind is inferred. A
    ``prediction`` column, when present, becomes the reference of the model-output drift.

    ``positive_label`` is given for a binary classifier only: with a numerical
    ``prediction`` (its score) and a ``label`` column, the profile then holds the score's
    calibration (:func:`~monitor.score_calibration.fit_calibration`, rows without a label
    left out, a label is positive when it normalises to ``positive_label``); when it
    cannot, ``uncalibrated_reason`` says why.

    >>> cols = {"x": np.arange(1000.0), "c": np.array(["a", "b"] * 500, dtype=object)}
    >>> p = build_profile("m", cols)
    >>> [(f.name, f.kind.value, int(f.counts.sum())) for f in p.features]
    [('x', 'numerical', 1000), ('c', 'categorical', 1000)]
    """
    opts = options or BinningOptions()
    if not columns:
        raise ReferenceError("the reference has no columns")
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise ReferenceError("reference columns have different lengths")
    (n,) = lengths
    if n == 0:
        raise ReferenceError("the reference has no rows")
    if specs is None:
        specs = [
            FeatureSpec(name, infer_kind(np.asarray(col)))
            for name, col in columns.items()
            # a ``tags.NAME`` column holds an event tag (a segment field), not a feature
            if name not in _NOT_FEATURES and not name.startswith("tags.")
        ]
    features = []
    for spec in specs:
        if spec.name not in columns:
            raise ReferenceError(f"feature {spec.name!r} is not a column of the reference")
        builder = _profile_numeric if spec.kind is FeatureKind.NUMERICAL else _profile_categorical
        features.append(builder(spec, np.asarray(columns[spec.name]), opts))
    prediction = None
    if PREDICTION in columns:
        column = np.asarray(columns[PREDICTION])
        kind = prediction_kind or infer_kind(column)
        pspec = FeatureSpec(PREDICTION, kind)
        builder = _profile_numeric if kind is FeatureKind.NUMERICAL else _profile_categorical
        prediction = builder(pspec, column, opts)
    calibration: ScoreCalibration | None = None
    reason: str | None = "no binary classifier's labelled reference to calibrate on"
    if positive_label is not None:
        calibration, reason = _calibration(columns, prediction, positive_label)
    return ReferenceProfile(
        model, n, tuple(features), prediction, model_version, calibration, reason
    )


def _calibration(
    columns: Mapping[str, NDArray[Any]],
    prediction: FeatureProfile | None,
    positive_label: object,
) -> tuple[ScoreCalibration | None, str | None]:
    """The score calibration of a binary classifier's reference, or why there is none."""
    if prediction is None or prediction.kind is not FeatureKind.NUMERICAL:
        return None, f"the reference has no numerical {PREDICTION!r} column (score)"
    if LABEL not in columns:
        return None, f"the reference has no {LABEL!r} column"
    positive = normalize_label(positive_label)
    labels = normalize_labels(columns[LABEL])
    labelled = np.not_equal(labels, np.array(None, dtype=object))
    score = _as_float(np.asarray(columns[PREDICTION])[labelled], PREDICTION)
    fitted = fit_calibration(score, labels[labelled] == positive)
    return (fitted, None) if isinstance(fitted, ScoreCalibration) else (None, fitted)
