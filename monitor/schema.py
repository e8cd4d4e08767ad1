"""Feature schema: which features a model has and whether each is numerical or categorical."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

__all__ = ["FeatureKind", "FeatureSpec", "infer_kind"]


class FeatureKind(StrEnum):
    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature of a model.

    ``bounds`` are the configured valid range of a numerical feature; when absent the
    reference's observed range is used for out-of-range counting.
    """

    name: str
    kind: FeatureKind
    bounds: tuple[float, float] | None = None


def infer_kind(values: NDArray[np.generic]) -> FeatureKind:
    """Infer a feature's kind from a reference column.

    A column is numerical when every non-missing value is a real number (booleans excluded,
    since a flag is a category); anything else, strings included, is categorical.

    >>> infer_kind(np.array([1.5, None, 3], dtype=object))
    <FeatureKind.NUMERICAL: 'numerical'>
    >>> infer_kind(np.array(["FR", None, "DE"], dtype=object))
    <FeatureKind.CATEGORICAL: 'categorical'>
    >>> infer_kind(np.array([True, False]))
    <FeatureKind.CATEGORICAL: 'categorical'>
    """
    if values.dtype.kind in "iuf":
        return FeatureKind.NUMERICAL
    if values.dtype.kind == "b":
        return FeatureKind.CATEGORICAL
    present = [v for v in values.tolist() if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return FeatureKind.NUMERICAL
    return FeatureKind.CATEGORICAL
