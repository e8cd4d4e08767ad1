"""One normalisation of class labels, applied to ground truth, predicted labels, the
configured ``positive_label`` and the reference's classes alike.

Serving code sends the same class in many spellings: ``1`` from Python, ``1.0`` from
pandas, ``"1"`` from a CSV, ``true`` from JSON. Labels are compared as text after:

- ``True``/``False`` (and the strings ``"true"``/``"false"``, any case) become ``"1"``/``"0"``;
- a number, or a string that is one, with an integer value becomes that integer's text
  (``1.0``, ``"1.0"``, ``" 1 "`` → ``"1"``); other numbers their shortest text (``0.5``);
- other strings are stripped of surrounding blanks, case kept (``"Fraud"`` ≠ ``"fraud"``);
- ``None``, NaN, the empty string and the strings ``"nan"``, ``"none"``, ``"null"`` (any
  case) are no label.

>>> normalize_label(1.0), normalize_label("true"), normalize_label(" 2 "), normalize_label("x")
('1', '1', '2', 'x')
>>> normalize_label(0.25), normalize_label("1e3"), normalize_label(float("nan"))
('0.25', '1000', None)
>>> normalize_labels([1, 1.0, "1", True, False, None, float("nan"), "cat"]).tolist()
['1', '1', '1', '1', '0', None, None, 'cat']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["normalize_label", "normalize_labels"]

_BOOLS = {"true": "1", "false": "0"}
#: texts of no label: what ``str()`` makes of ``None`` and of a float NaN
_MISSING = frozenset({"none", "nan", "null"})


def _from_text(text: str) -> str | None:
    text = text.strip()
    low = text.lower()
    if not text or low in _MISSING:
        return None
    if low in _BOOLS:
        return _BOOLS[low]
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text  # "inf" and the like: a category spelt like a float
    return str(int(number)) if number == int(number) else repr(number)


def normalize_label(value: Any) -> str | None:
    """The text a label is compared as, or ``None`` for no label."""
    return None if value is None else _from_text(str(value))


def normalize_labels(values: ArrayLike) -> NDArray[np.object_]:
    """:func:`normalize_label` of each value, vectorised: the text of every value at
    once, then one normalisation per distinct text."""
    arr: NDArray[np.object_] = np.asarray(values, dtype=object).ravel()
    if arr.size == 0:
        return np.empty(0, dtype=object)
    present = np.not_equal(arr, np.array(None, dtype=object))
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    mapped = np.array([_from_text(u) for u in uniq.tolist()] + [None], dtype=object)[:-1]
    out: NDArray[np.object_] = mapped[inverse.ravel()]
    out[~present] = None
    return out
