"""A real Prometheus scrapes driftline over HTTPS with basic auth, as configured in the
README: ``scheme: https``, ``tls_config: {ca_file}`` and ``basic_auth``. The target is up
with the right password and down with a wrong one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import bcrypt
import pytest
import yaml
from idle_service import idle_service
from test_prometheus import Server, query  # skips this module too without Prometheus
from tls_files import make_tls_files

from consumers.http import HttpServer
from consumers.web_config import load_web_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

USER, PASSWORD = "prometheus", "s3cr3t-scrape"


def _job(name: str, target: str, ca: Path, password: str) -> dict[str, object]:
    return {
        "job_name": name,
        "scheme": "https",
        "tls_config": {"ca_file": str(ca)},
        "basic_auth": {"username": USER, "password": password},
        "static_configs": [{"targets": [target]}],
    }


def test_prometheus_scrapes_over_https_with_basic_auth(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "tls/server.crt", "key_file": "tls/server.key"},
                "basic_auth_users": {USER: hashed},
            }
        )
    )
    service = idle_service(tmp_path)
    http = HttpServer("127.0.0.1", 0, service.registry, service, web_config=load_web_config(web))
    http.start()
    directory = tmp_path / "prometheus"
    directory.mkdir()
    target = f"127.0.0.1:{http.port}"
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            _job("driftline", target, tls.ca, PASSWORD),
            _job("driftline-wrong-password", target, tls.ca, "wrong"),
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = Server(
        str(shutil.which("prometheus")),
        directory,
        [
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
        ],
    )
    try:
        prometheus.wait_ready()
        up: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = {r["metric"]["job"]: float(r["value"][1]) for r in query(prometheus, "up")}
            if up.get("driftline") == 1.0 and "driftline-wrong-password" in up:
                break
            time.sleep(0.5)
        assert up == {"driftline": 1.0, "driftline-wrong-password": 0.0}, (
            up,
            prometheus.get("/api/v1/targets"),
        )
        assert query(prometheus, 'driftline_build_info{job="driftline"}')
    finally:
        prometheus.stop()
        http.stop()
