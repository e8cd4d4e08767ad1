"""KPI expressions: arithmetic over numerical event fields, parsed once, evaluated on whole
columns.

An expression is ``+ - * /``, unary minus, parentheses, numbers and names: a numerical
feature, ``prediction`` (the score) or ``tags.NAME`` (an event tag read as a number). It
is parsed with :mod:`ast` and every node is checked against that list, so a configuration
never runs code: there is no call, attribute (but ``tags.NAME``), subscript, comparison or
lookup beyond the columns handed to :meth:`Expression.evaluate`. Values follow IEEE
arithmetic on float64 columns: a missing operand gives NaN and a division by zero ±inf or
NaN, which a KPI leaves out like a missing value.

>>> e = Expression.parse("amount*(1 - discount)")
>>> str(e), e.names
('amount * (1 - discount)', ('amount', 'discount'))
>>> cols = {"amount": np.array([10.0, 20.0, 5.0]), "discount": np.array([0.1, np.nan, 0.0])}
>>> e.evaluate(cols, np.zeros(3))
array([ 9., nan,  5.])
>>> Expression.parse("__import__('os').system('true')")
Traceback (most recent call last):
ValueError: a call is not allowed: use + - * / on numerical fields, prediction and numbers
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from monitor.reference import PREDICTION
from monitor.segments import TAG_PREFIX

__all__ = ["MAX_LENGTH", "Expression"]

#: characters in an expression; it also bounds the tree's depth (Python's parser refuses
#: 200 nested parentheses, and evaluation recurses once per level)
MAX_LENGTH = 200

_ALLOWED = "use + - * / on numerical fields, prediction and numbers"

Column = NDArray[np.float64]
_BINARY: dict[type[ast.operator], Callable[[Column, Column], Column]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
}
_WHAT = {
    ast.Call: "a call",
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
    ast.Lambda: "a lambda",
}


@dataclass(frozen=True)
class Expression:
    """An arithmetic expression over numerical fields; equal when their normal text is."""

    #: the normal form (:func:`ast.unparse`): spacing does not make another expression
    text: str
    #: the names it reads, in order of first appearance (``prediction`` included)
    names: tuple[str, ...]
    _tree: ast.expr = field(compare=False, repr=False)

    @classmethod
    def parse(cls, source: str) -> Expression:
        """Check ``source`` and parse it; a :class:`ValueError` says what is not allowed.

        >>> Expression.parse("amount ** 2")
        Traceback (most recent call last):
        ValueError: ** is not allowed: use + - * / on numerical fields, prediction and numbers
        >>> Expression.parse("2 * 3")
        Traceback (most recent call last):
        ValueError: names no field: an expression reads at least one numerical field or prediction
        """
        if len(source) > MAX_LENGTH:
            raise ValueError(f"longer than {MAX_LENGTH} characters")
        try:
            tree = ast.parse(source.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"not an expression: {exc.msg}") from None
        names: list[str] = []
        _check(tree, names)
        if not names:
            raise ValueError(
                "names no field: an expression reads at least one numerical field or prediction"
            )
        return cls(ast.unparse(tree), tuple(dict.fromkeys(names)), tree)

    def __str__(self) -> str:
        return self.text

    def evaluate(self, columns: Mapping[str, Column], score: Column) -> Column:
        """The expression on whole columns (one numpy operation per node, no loop per
        event); ``prediction`` reads ``score``, a name without a column reads NaN."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = _evaluate(self._tree, columns, score)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), score.shape)


def _check(node: ast.expr, names: list[str]) -> None:
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            op = {ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%"}.get(type(node.op), "operator")
            raise ValueError(f"{op} is not allowed: {_ALLOWED}")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise ValueError(f"{ast.unparse(node)} is not allowed: {_ALLOWED}")
        _check(node.operand, names)
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{node.value!r} is not a finite number: {_ALLOWED}")
    elif isinstance(node, ast.Name):
        names.append(node.id)
    elif _is_tag(node):
        assert isinstance(node, ast.Attribute)
        names.append(f"{TAG_PREFIX}{node.attr}")
    else:
        what = next((w for t, w in _WHAT.items() if isinstance(node, t)), type(node).__name__)
        raise ValueError(f"{what} is not allowed: {_ALLOWED}")


def _evaluate(node: ast.expr, columns: Mapping[str, Column], score: Column) -> Column | float:
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, columns, score)
        right = _evaluate(node.right, columns, score)
        return _BINARY[type(node.op)](left, right)  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, columns, score)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # checked by _check
        return float(node.value)
    if isinstance(node, ast.Attribute):  # tags.NAME: nothing else passes _check
        name = f"{TAG_PREFIX}{node.attr}"
    else:
        assert isinstance(node, ast.Name)
        name = node.id
    if name == PREDICTION:
        return score
    column = columns.get(name)
    return np.full(score.shape, np.nan) if column is None else column


def _is_tag(node: ast.expr) -> bool:
    """``tags.NAME``: the one attribute an expression may read."""
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == TAG_PREFIX[:-1]
    )
