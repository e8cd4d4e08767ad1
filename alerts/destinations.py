"""Where notifications go: each destination's name, timeout and signing secret, resolved
from the configuration and the environment once, at start-up (a missing secret fails
then, not at the first alert)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from standardwebhooks import Webhook

from alerts.exceptions import AlertsError
from monitor.config import RetrainingSettings, Sink

__all__ = ["Destination"]


def _env(environ: Mapping[str, str], name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = environ.get(name, "")
    if not value:
        raise AlertsError(f"{what}: environment variable {name} is not set or empty")
    return value


@dataclass(frozen=True)
class Destination:
    """Where a notification's ``sink`` name leads: its timeout and its signing secret."""

    name: str
    timeout: float = 10.0
    #: Standard Webhooks secret (``whsec_`` + base64), resolved from the environment
    secret: str | None = None

    def __post_init__(self) -> None:
        if self.secret is not None:
            Webhook(self.secret)  # fails now, not at the first delivery

    @classmethod
    def from_sink(cls, sink: Sink, environ: Mapping[str, str] = os.environ) -> Destination:
        secret = _env(environ, sink.secret_env, f"sink {sink.name} secret_env")
        return cls(sink.name, sink.timeout, secret)

    @classmethod
    def for_retraining(
        cls, settings: RetrainingSettings, environ: Mapping[str, str] = os.environ
    ) -> Destination:
        """Named ``retraining.<model>.<target type>``."""
        name = f"retraining.{settings.model}.{settings.target.type}"
        secret = _env(environ, settings.target.secret_env, f"{name} secret_env")
        return cls(name, 30.0, secret)
