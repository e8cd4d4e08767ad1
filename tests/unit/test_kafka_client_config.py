"""kafka.client and the client settings it runs with: librdkafka's names, refusals."""

from __future__ import annotations

import pytest

from consumers.configfile import ConfigError, check_files, load_config
from consumers.librdkafka_config import UnsupportedSettingError, translate
from consumers.loop import security_config
from monitor.config import KafkaSettings

REF = "models:\n  - name: fraud\n    reference: {path: ref.csv}\n"


def checked(tmp_path, kafka_yaml: str) -> ConfigError | None:
    (tmp_path / "ref.csv").write_text("x\n1\n")
    path = tmp_path / "driftline.yaml"
    path.write_text(kafka_yaml + REF)
    try:
        check_files(load_config(path, environ={}), path)
    except ConfigError as err:
        if err.file != str(path):
            raise
        return err
    return None


def test_the_default_client_is_kafka_python():
    assert KafkaSettings().client == "kafka-python"


def test_security_settings_reach_librdkafka_by_its_names():
    kafka = KafkaSettings(
        client="confluent",
        consumer={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "driftline",
            "ssl_cafile": "/etc/ca.pem",
            "ssl_certfile": "/etc/cert.pem",
            "ssl_keyfile": "/etc/key.pem",
            "ssl_check_hostname": True,
            "session_timeout_ms": 3000,
        },
    )
    assert translate(security_config(kafka, {"sasl_plain_password": "s3cret"})) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "driftline",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/cert.pem",
        "ssl.key.location": "/etc/key.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"bootstrap_servers": ["a:1", "b:2"]}, {"bootstrap.servers": "a:1,b:2"}),
        ({"acks": -1}, {"acks": "-1"}),
        ({"compression_type": None}, {"compression.type": "none"}),
        ({"buffer_memory": 32 * 1024 * 1024}, {"queue.buffering.max.kbytes": 32768}),
        ({"ssl_check_hostname": False}, {"ssl.endpoint.identification.algorithm": "none"}),
        ({"max_poll_records": 500, "max_block_ms": 10}, {}),
        ({"fetch.wait.max.ms": 10}, {"fetch.wait.max.ms": 10}),
    ],
)
def test_translate(given, expected):
    assert translate(given) == expected


def test_a_setting_librdkafka_cannot_take_is_refused_by_name():
    with pytest.raises(UnsupportedSettingError) as info:
        translate({"linger_ms": 5, "sasl_oauth_token_provider": object()})
    assert info.value.key == "sasl_oauth_token_provider"
    assert "sasl.*" in info.value.reason


def test_config_check_names_the_setting_the_confluent_client_cannot_take(tmp_path):
    pytest.importorskip("confluent_kafka")
    err = checked(tmp_path, "kafka:\n  client: confluent\n  producer: {ssl_context: x}\n")
    assert err is not None
    assert err.key == "kafka.producer.ssl_context"
    assert "no librdkafka equivalent" in err.reason


def test_config_check_refuses_librdkafka_names_on_kafka_python(tmp_path):
    err = checked(tmp_path, "kafka:\n  consumer: {fetch.wait.max.ms: 10}\n")
    assert err is not None
    assert err.key == "kafka.consumer.fetch.wait.max.ms"
    assert "kafka.client: confluent" in err.reason


def test_config_check_accepts_both_vocabularies_on_confluent(tmp_path):
    pytest.importorskip("confluent_kafka")
    consumer = "{session_timeout_ms: 3000, fetch.wait.max.ms: 10}"
    kafka = f"kafka:\n  client: confluent\n  consumer: {consumer}\n"
    assert checked(tmp_path, kafka) is None


def test_an_unknown_client_names_the_key(tmp_path):
    path = tmp_path / "driftline.yaml"
    path.write_text("kafka:\n  client: librdkafka\n" + REF)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "kafka.client"
