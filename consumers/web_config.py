"""The web configuration file: TLS and basic auth, in the format of Prometheus exporters.

The file is the one the exporters' ``--web.config.file`` takes::

    tls_server_config:
      cert_file: server.crt          # relative to this file's directory
      key_file: server.key
      client_ca_file: clients.crt    # optional: verify client certificates
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12             # the default
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash of the password

Both sections are optional. Every problem is a :class:`ConfigError` naming the file, the
key path and the reason.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.configfile import ConfigError, _read_yaml

__all__ = ["WebConfig", "load_web_config", "web_config_for", "web_config_path"]

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# client_auth_type -> how the server treats client certificates
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# accepted by the exporters but not by Python's TLS, which verifies any certificate it asks for
_CLIENT_AUTH_UNSUPPORTED = ("RequestClientCert", "RequireAnyClientCert")
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version")
_TOP_KEYS = ("tls_server_config", "basic_auth_users")
# exporter settings driftline does not implement: refused rather than silently ignored
_NOT_SUPPORTED = {
    "http_server_config",
    "rate_limit",
    "cert",
    "key",
    "client_ca",
    "max_version",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass(frozen=True)
class WebConfig:
    """What a web configuration file asks for: TLS (when ``tls`` is set) and basic auth
    (when ``users`` is not empty, user name to bcrypt hash)."""

    file: str
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)


def web_config_path(config_file: str | Path, web_config: str) -> Path:
    """``http.web_config`` as a path: relative ones are read from ``config_file``'s directory.

    >>> str(web_config_path("/etc/driftline/driftline.yaml", "web.yml"))
    '/etc/driftline/web.yml'
    """
    return Path(config_file).resolve().parent / web_config


def web_config_for(config_file: str | Path, web_config: str | None) -> WebConfig | None:
    """The web configuration that ``http.web_config`` of ``config_file`` names, if any; a
    missing file is an error on that key."""
    if web_config is None:
        return None
    path = web_config_path(config_file, web_config)
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "no such file"
        raise ConfigError(str(config_file), "http.web_config", f"{why}: {path}")
    return load_web_config(path)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the web configuration file at ``path``; certificate and key files
    are loaded now, so a bad one stops the service at start, not at the first scrape."""
    file = str(path)
    data = _read_yaml(path, file)
    _check_keys(file, "", data, _TOP_KEYS)
    base = Path(path).resolve().parent
    tls = data.get("tls_server_config")
    users = data.get("basic_auth_users")
    return WebConfig(
        file=file,
        tls=None if tls is None else _tls_context(file, base, tls),
        users={} if users is None else _users(file, users),
    )


def _check_keys(file: str, where: str, data: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in data:
        path = f"{where}.{key}" if where else str(key)
        if key in _NOT_SUPPORTED:
            raise ConfigError(file, path, "not supported by driftline")
        if key not in known:
            raise ConfigError(file, path, f"unknown key; known: {', '.join(known)}")


def _string(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(file, key, f"must be a non-empty string, got {value!r:.60}")
    return value


def _file(file: str, key: str, base: Path, value: Any) -> Path:
    full = base / _string(file, key, value)
    if not full.is_file():
        raise ConfigError(
            file, key, f"{'is a directory' if full.is_dir() else 'no such file'}: {full}"
        )
    return full


def _tls_context(file: str, base: Path, tls: Any) -> ssl.SSLContext:
    where = "tls_server_config"
    if not isinstance(tls, dict):
        raise ConfigError(file, where, f"must be a mapping, got {type(tls).__name__}")
    _check_keys(file, where, tls, _TLS_KEYS)
    for required in ("cert_file", "key_file"):
        if required not in tls:
            raise ConfigError(file, f"{where}.{required}", "required key is missing")
    cert = _file(file, f"{where}.cert_file", base, tls["cert_file"])
    key = _file(file, f"{where}.key_file", base, tls["key_file"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = tls.get("min_version", "TLS12")
    if version not in _TLS_VERSIONS:
        raise ConfigError(
            file,
            f"{where}.min_version",
            f"{version!r:.60} is not one of {', '.join(_TLS_VERSIONS)}",
        )
    context.minimum_version = _TLS_VERSIONS[version]
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = f"cannot load the certificate {cert} with the key {key}: {exc}"
        raise ConfigError(file, f"{where}.cert_file", reason) from None
    ca = tls.get("client_ca_file")
    # as in the exporters: a client CA alone means client certificates are required
    default_auth = "NoClientCert" if ca is None else "RequireAndVerifyClientCert"
    auth = tls.get("client_auth_type", default_auth)
    if auth in _CLIENT_AUTH_UNSUPPORTED:
        raise ConfigError(
            file,
            f"{where}.client_auth_type",
            f"{auth} is not supported (Python's TLS verifies every client certificate it "
            "asks for): use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
    if auth not in _CLIENT_AUTH:
        known = ", ".join(_CLIENT_AUTH)
        raise ConfigError(file, f"{where}.client_auth_type", f"{auth!r:.60} is not one of {known}")
    if _CLIENT_AUTH[auth] != ssl.CERT_NONE:
        if ca is None:
            reason = f"{auth} needs client_ca_file to verify client certificates with"
            raise ConfigError(file, f"{where}.client_auth_type", reason)
        ca_path = _file(file, f"{where}.client_ca_file", base, ca)
        try:
            context.load_verify_locations(cafile=ca_path)
        except (ssl.SSLError, OSError) as exc:
            reason = f"cannot load CA certificates from {ca_path}: {exc}"
            raise ConfigError(file, f"{where}.client_ca_file", reason) from None
        context.verify_mode = _CLIENT_AUTH[auth]
    elif ca is not None:
        reason = "client_ca_file is set but client_auth_type is NoClientCert: it would be unused"
        raise ConfigError(file, f"{where}.client_auth_type", reason)
    return context


def _users(file: str, users: Any) -> dict[str, bytes]:
    where = "basic_auth_users"
    if not isinstance(users, dict):
        raise ConfigError(
            file, where, f"must be a mapping of user to bcrypt hash, got {users!r:.60}"
        )
    out = {}
    for user, hashed in users.items():
        key = f"{where}.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(file, key, "a user name must be a non-empty string without ':'")
        if not (
            isinstance(hashed, str) and hashed.startswith(_BCRYPT_PREFIXES) and len(hashed) == 60
        ):
            raise ConfigError(
                file,
                key,
                "is not a bcrypt hash ($2b$..., 60 characters); make one with python -c "
                "'import bcrypt; print(bcrypt.hashpw(b\"PASSWORD\", bcrypt.gensalt()).decode())'",
            )
        out[user] = hashed.encode()
    return out
