"""Bearer tokens of Google Application Default Credentials, refreshed before they expire.

Google access tokens last an hour, so a static ``token_env`` stops working in a service
that runs longer. :class:`GoogleAccessTokens` loads the credentials once, at start-up,
the way Google's client libraries do (``GOOGLE_APPLICATION_CREDENTIALS``: a service
account key or an external-account file; else gcloud's user credentials; else the
metadata server of the VM, GKE node or Cloud Run service it runs on) and asks google-auth
for a new token when the one it holds is expired or about to (google-auth refreshes a few
minutes before the expiry its token endpoint announced). The package is the optional
extra ``driftline[google]``.
"""

from __future__ import annotations

import threading
from typing import Any

from alerts.exceptions import CredentialsError

__all__ = ["CLOUD_PLATFORM", "GoogleAccessTokens"]

#: the OAuth scope the Vertex AI API accepts
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class GoogleAccessTokens:
    """Access tokens of one set of Google credentials; safe to share between threads."""

    def __init__(self, timeout: float = 30.0) -> None:
        """Load the Application Default Credentials (from the process environment, as
        google-auth does); a token endpoint is given ``timeout`` seconds to answer."""
        try:
            import google.auth
            import google.auth.exceptions
            from google.auth.transport.requests import Request
        except ImportError as exc:
            raise CredentialsError(
                "Google credentials need the google-auth package: pip install 'driftline[google]'"
            ) from exc
        self._errors = (google.auth.exceptions.GoogleAuthError, OSError)
        try:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
        except self._errors as exc:
            raise CredentialsError(f"no Google Application Default Credentials: {exc}") from exc
        self._credentials: Any = credentials
        transport = Request()

        def request(*args: Any, **kwargs: Any) -> Any:
            # google-auth's requests transport waits 120 s by default
            return transport(*args, **{**kwargs, "timeout": timeout})

        self._request = request
        self._lock = threading.Lock()

    def token(self) -> str:
        """A valid access token: the one held, or a new one when it is expired or close to."""
        with self._lock:
            if not self._credentials.valid:
                try:
                    self._credentials.refresh(self._request)
                except self._errors as exc:
                    raise CredentialsError(f"Google access token refresh failed: {exc}") from exc
            return str(self._credentials.token)
