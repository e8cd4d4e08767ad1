"""Where notifications go: each destination's name, deadline, signing secret and bearer
token, resolved from the configuration and the environment once, at start-up (a missing
secret or token fails then, naming its key and variable, not at the first alert). Secrets
and tokens stay in memory: requests are given them when sent, never in the outbox. A
token that expires (Google's, for Vertex AI) comes from a :class:`TokenSource` asked at
each request."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from standardwebhooks import Webhook

from alerts.exceptions import AlertsError
from alerts.google_credentials import GoogleAccessTokens
from monitor.config import RetrainingSettings, Sink

__all__ = ["Destination", "TokenSource"]


class TokenSource(Protocol):
    def token(self) -> str:
        """A bearer token valid now; raises :class:`~alerts.exceptions.CredentialsError`
        when none can be had (the request is retried later)."""
        ...


def _env(environ: Mapping[str, str], name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = environ.get(name, "")
    if not value:
        raise AlertsError(f"{what}: environment variable {name} is not set or empty")
    return value


@dataclass(frozen=True)
class Destination:
    """Where a notification's ``sink`` name leads: its deadline, its signing secret and
    its bearer token."""

    name: str
    #: seconds for a whole request: connecting, sending and reading the answer
    timeout: float = 10.0
    #: Standard Webhooks secret (``whsec_`` + base64), resolved from the environment
    secret: str | None = field(default=None, repr=False)
    #: sent as ``Authorization: Bearer <token>``, resolved from the environment
    token: str | None = field(default=None, repr=False)
    #: instead of ``token``: asked for a bearer token at each request
    tokens: TokenSource | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.secret is not None:
            Webhook(self.secret)  # fails now, not at the first delivery

    def headers(self) -> dict[str, str]:
        """The headers this destination adds to every request it is sent (a
        :class:`~alerts.exceptions.CredentialsError` when its token source has none)."""
        token = self.tokens.token() if self.tokens is not None else self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def from_sink(cls, sink: Sink, environ: Mapping[str, str] = os.environ) -> Destination:
        secret = _env(environ, sink.secret_env, f"sink {sink.name} secret_env")
        return cls(sink.name, sink.timeout, secret)

    @classmethod
    def for_retraining(
        cls, settings: RetrainingSettings, environ: Mapping[str, str] = os.environ
    ) -> Destination:
        """Named ``retraining.<model>.<target type>``."""
        target = settings.target
        name = f"retraining.{settings.model}.{target.type}"
        secret = _env(environ, target.secret_env, f"{name} secret_env")
        token = _env(environ, target.token_env, f"{name} token_env")
        tokens = None
        if target.credentials == "google":
            try:
                tokens = GoogleAccessTokens(timeout=target.timeout)
            except AlertsError as exc:
                raise AlertsError(f"{name} credentials: {exc}") from exc
        return cls(name, target.timeout, secret, token, tokens)
