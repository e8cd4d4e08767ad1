"""One root for every error the pure core raises."""

from __future__ import annotations

__all__ = ["MonitorError", "ReferenceError", "SchemaError"]


class MonitorError(Exception):
    """Root of every error raised by :mod:`monitor`."""


class SchemaError(MonitorError):
    """A feature or event does not fit the model's schema."""


class ReferenceError(MonitorError):
    """A reference profile cannot be built or read."""
