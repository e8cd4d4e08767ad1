"""One root for every error the alerting package raises."""

from __future__ import annotations

__all__ = ["AlertsError", "OutboxError"]


class AlertsError(Exception):
    """Root of every error raised by :mod:`alerts`."""


class OutboxError(AlertsError):
    """The outbox directory cannot be created, written or read."""
