"""The text formats alerts travel in: Prometheus' templates and values, Alertmanager's
fingerprints and timestamps. Pure functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["fingerprint", "format_value", "render_template", "rfc3339", "to_prometheus_template"]

# {{ value }}, {{ $value }}, {{ label }}, {{ $labels.label }}
_TEMPLATE = re.compile(
    r"\{\{\s*(?:(?P<value>\$?value)|\$labels\.(?P<plabel>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<label>[A-Za-z_][A-Za-z0-9_]*))\s*\}\}"
)
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: what Alertmanager sends for "no end"


def rfc3339(ts: float | None) -> str:
    """UTC RFC 3339 with milliseconds; ``None`` is Go's zero time, as Alertmanager writes it.

    >>> rfc3339(0.5), rfc3339(None)
    ('1970-01-01T00:00:00.500Z', '0001-01-01T00:00:00Z')
    """
    if ts is None:
        return _ZERO_TIME
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def format_value(value: float) -> str:
    """A sample value as Prometheus templates print ``$value``.

    >>> format_value(1.0), format_value(0.25), format_value(float("inf"))
    ('1', '0.25', '+Inf')
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render_template(text: str, labels: Mapping[str, str], value: float) -> str:
    """Fill ``{{ label }}`` / ``{{ $labels.label }}`` and ``{{ value }}`` / ``{{ $value }}``;
    a label the alert does not have renders empty.

    >>> render_template("{{ feature }} at {{ $value }}", {"feature": "age"}, 0.5)
    'age at 0.5'
    """

    def fill(m: re.Match[str]) -> str:
        if m.group("value"):
            return format_value(value)
        return labels.get(m.group("plabel") or m.group("label"), "")

    return _TEMPLATE.sub(fill, text)


def to_prometheus_template(text: str) -> str:
    """The same annotation as a Prometheus rule template.

    >>> to_prometheus_template("{{ feature }} = {{ value }}")
    '{{ $labels.feature }} = {{ $value }}'
    """

    def rewrite(m: re.Match[str]) -> str:
        if m.group("value"):
            return "{{ $value }}"
        name = m.group("plabel") or m.group("label")
        return f"{{{{ $labels.{name} }}}}"

    return _TEMPLATE.sub(rewrite, text)


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over the sorted pairs), so the
    same alert has the same id here and in Alertmanager.

    >>> fingerprint({})
    'cbf29ce484222325'
    >>> fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    True
    """
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in (*part.encode(), 0xFF):
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"
