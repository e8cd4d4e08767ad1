"""TLS and basic auth from a web configuration file, against real clients; and the errors
a bad web configuration file gives.

Certificates are made for each test by a throwaway CA (tests/tls_files.py); passwords are
hashed with bcrypt at its lowest cost to keep the tests quick.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml
from idle_service import idle_service
from tls_files import TlsFiles, make_tls_files

from consumers.basic_auth import BasicAuth
from consumers.cli import main
from consumers.configfile import ConfigError
from consumers.http import HttpServer
from consumers.service import Service
from consumers.web_config import WebConfig, load_web_config

USER, PASSWORD = "prometheus", "correct horse battery staple"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return idle_service(tmp_path)


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def _web_config(directory: Path, content: dict[str, object]) -> Path:
    path = directory / "web.yml"
    path.write_text(yaml.safe_dump(content))
    return path


@contextlib.contextmanager
def serving(service: Service, web_config: WebConfig) -> Iterator[HttpServer]:
    server = HttpServer("127.0.0.1", 0, service.registry, service, web_config=web_config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _trusting(tls: TlsFiles, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca))
    if client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def test_tls_and_basic_auth(tmp_path: Path, tls: TlsFiles, service: Service) -> None:
    # paths relative to the web config file's directory
    web = _web_config(
        tmp_path,
        {
            "tls_server_config": {"cert_file": "tls/server.crt", "key_file": "tls/server.key"},
            "basic_auth_users": {USER: _hash(PASSWORD)},
        },
    )
    with serving(service, load_web_config(web)) as server:
        base = f"https://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, verify=_trusting(tls), timeout=10) as client:
            r = client.get("/metrics", auth=(USER, PASSWORD))
            assert r.status_code == 200
            assert b"driftline_build_info" in r.content
            # /healthz too needs credentials, as every path of a Prometheus exporter does
            assert client.get("/healthz", auth=(USER, PASSWORD)).text == "ok\n"
            for path in ("/metrics", "/healthz", "/api/v1/models"):
                r = client.get(path)
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"].startswith("Basic")
            assert client.get("/metrics", auth=(USER, "wrong")).status_code == 401
            assert client.get("/metrics", auth=("nobody", PASSWORD)).status_code == 401
            assert client.head("/metrics").status_code == 401
            assert client.post("/metrics", auth=(USER, PASSWORD)).status_code == 405
        # plain HTTP on the TLS port gets no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/metrics", auth=(USER, PASSWORD), timeout=5)
        # and a client that does not trust the certificate refuses it
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/metrics", auth=(USER, PASSWORD), timeout=5)


def test_tls_without_auth_serves_everyone(tmp_path: Path, tls: TlsFiles, service: Service) -> None:
    web = _web_config(
        tmp_path,
        {"tls_server_config": {"cert_file": str(tls.server_cert), "key_file": str(tls.server_key)}},
    )
    with serving(service, load_web_config(web)) as server:
        r = httpx.get(f"https://localhost:{server.port}/healthz", verify=_trusting(tls))
        assert (r.status_code, r.text) == (200, "ok\n")


def test_client_certificates_are_required_with_a_client_ca(
    tmp_path: Path, tls: TlsFiles, service: Service
) -> None:
    web = _web_config(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": "tls/server.crt",
                "key_file": "tls/server.key",
                "client_ca_file": "tls/ca.crt",  # RequireAndVerifyClientCert by default
                "min_version": "TLS13",
            }
        },
    )
    with serving(service, load_web_config(web)) as server:
        url = f"https://127.0.0.1:{server.port}/healthz"
        r = httpx.get(url, verify=_trusting(tls, client_cert=True), timeout=5)
        assert r.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(url, verify=_trusting(tls), timeout=5)


def test_basic_auth_without_tls(tmp_path: Path, service: Service) -> None:
    web = _web_config(tmp_path, {"basic_auth_users": {USER: _hash(PASSWORD)}})
    with serving(service, load_web_config(web)) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert httpx.get(url, auth=(USER, PASSWORD)).status_code == 200
        assert httpx.get(url).status_code == 401


def test_successful_checks_are_remembered_failed_ones_are_not() -> None:
    auth = BasicAuth({USER: _hash(PASSWORD).encode()})
    assert not auth.remembered(USER, PASSWORD)
    assert auth.check(USER, PASSWORD)
    assert auth.remembered(USER, PASSWORD)
    assert not auth.check(USER, "wrong")
    assert not auth.remembered(USER, "wrong")
    assert not auth.check("nobody", PASSWORD)
    assert not auth.check(USER, "x" * 100)  # beyond bcrypt's 72 bytes: refused, no error


BAD = [
    ("unknown key", {"tls_config": {}}, "tls_config", "unknown key"),
    (
        "exporter key not implemented",
        {"http_server_config": {}},
        "http_server_config",
        "not supported",
    ),
    (
        "missing key file",
        {"tls_server_config": {"cert_file": "tls/server.crt"}},
        "tls_server_config.key_file",
        "required key is missing",
    ),
    (
        "no such certificate",
        {"tls_server_config": {"cert_file": "nope.crt", "key_file": "tls/server.key"}},
        "tls_server_config.cert_file",
        "no such file",
    ),
    (
        "key of another certificate",
        {"tls_server_config": {"cert_file": "tls/server.crt", "key_file": "tls/client.key"}},
        "tls_server_config.cert_file",
        "cannot load the certificate",
    ),
    (
        "not a certificate",
        {"tls_server_config": {"cert_file": "web.yml", "key_file": "tls/server.key"}},
        "tls_server_config.cert_file",
        "cannot load the certificate",
    ),
    (
        "unknown TLS version",
        {
            "tls_server_config": {
                "cert_file": "tls/server.crt",
                "key_file": "tls/server.key",
                "min_version": "TLS14",
            }
        },
        "tls_server_config.min_version",
        "is not one of TLS10",
    ),
    (
        "client verification without a CA",
        {
            "tls_server_config": {
                "cert_file": "tls/server.crt",
                "key_file": "tls/server.key",
                "client_auth_type": "RequireAndVerifyClientCert",
            }
        },
        "tls_server_config.client_auth_type",
        "needs client_ca_file",
    ),
    (
        "unverified client certificates",
        {
            "tls_server_config": {
                "cert_file": "tls/server.crt",
                "key_file": "tls/server.key",
                "client_auth_type": "RequireAnyClientCert",
            }
        },
        "tls_server_config.client_auth_type",
        "not supported",
    ),
    ("users not a mapping", {"basic_auth_users": ["a"]}, "basic_auth_users", "must be a mapping"),
    (
        "plain-text password",
        {"basic_auth_users": {USER: PASSWORD}},
        f"basic_auth_users.{USER}",
        "is not a bcrypt hash",
    ),
]


@pytest.mark.parametrize(
    ("content", "key", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_web_config_names_file_key_and_reason(
    tmp_path: Path, tls: TlsFiles, content: dict[str, object], key: str, reason: str
) -> None:
    web = _web_config(tmp_path, content)
    with pytest.raises(ConfigError) as exc:
        load_web_config(web)
    assert (exc.value.file, exc.value.key) == (str(web), key)
    assert reason in exc.value.reason
    assert str(exc.value).startswith(f"{web}: {key}: ")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {a: b\n")
    with pytest.raises(ConfigError, match=r"web\.yml: invalid YAML at line"):
        load_web_config(web)


def test_check_config_reads_the_web_config(
    tmp_path: Path, tls: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "reference.csv").write_text("amount\n1\n2\n3\n")
    config = tmp_path / "driftline.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'localhost:9092', group_id: g, predictions_topic: p,"
        " dead_letter_topic: d}\n"
        "http: {web_config: missing.yml}\n"
        "models: [{name: fraud, reference: {path: reference.csv}}]\n"
    )
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: http.web_config: no such file: {tmp_path / 'missing.yml'}" in err

    _web_config(tmp_path, {"basic_auth_users": {USER: "plain"}})
    config.write_text(config.read_text().replace("missing.yml", "web.yml"))
    assert main(["check-config", "--config", str(config)]) == 2
    assert f"{tmp_path / 'web.yml'}: basic_auth_users.{USER}: is not a bcrypt hash" in (
        capsys.readouterr().err
    )

    _web_config(tmp_path, {"basic_auth_users": {USER: _hash(PASSWORD)}})
    assert main(["check-config", "--config", str(config)]) == 0
    assert "web_config: web.yml" in capsys.readouterr().out
