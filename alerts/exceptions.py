"""One root for every error the alerting package raises."""

from __future__ import annotations

__all__ = ["AlertsError", "CredentialsError", "OutboxError"]


class AlertsError(Exception):
    """Root of every error raised by :mod:`alerts`."""


class OutboxError(AlertsError):
    """The outbox directory cannot be created, written or read."""


class CredentialsError(AlertsError):
    """A destination's credentials cannot be loaded, or give no access token now (the token
    endpoint is down or refuses them): the request is retried later."""
