"""The outbox on disk, backoff and Retry-After arithmetic, destinations from the config."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from alerts.delivery import Dispatcher, backoff_delay, retry_after_seconds
from alerts.destinations import Destination
from alerts.exceptions import AlertsError
from alerts.outbox import Notification, Outbox, new_notification_id
from alerts.payloads import json_request
from consumers.checkpoints import DirectoryStore
from monitor.config import RetrainingSettings, Sink


def note(created_at: float = 0.0, nid: str | None = None) -> Notification:
    req = json_request("http://127.0.0.1:9/hook", {"n": created_at})
    return Notification(nid or new_notification_id(), "ops", req, created_at)


def outbox(root: Path) -> Outbox:
    box = Outbox(DirectoryStore(root))
    box.load()
    return box


def test_put_is_durable_and_a_new_outbox_reads_it_back(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    a, b = note(2.0), note(1.0, "msg_b")
    assert box.put(a)
    assert box.put(b)
    assert not box.put(b)  # the same id is not stored twice
    again = outbox(tmp_path)
    assert again.pending() == [b, a]  # oldest first
    again.remove(b.id)
    again.remove("msg_unknown")
    assert [n.id for n in outbox(tmp_path).pending()] == [a.id]
    assert sorted(p.name for p in (tmp_path / "alerts" / "outbox").iterdir()) == [a.id]


def test_a_cut_write_and_a_corrupt_record_do_not_stop_the_outbox(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    good = note()
    box.put(good)
    cut = tmp_path / "alerts" / "outbox" / "msg_cut"
    cut.mkdir()
    (cut / ".checkpoint-000000000001.bin.9.tmp").write_text('{"id": "msg_cut", "si')
    bad = tmp_path / "alerts" / "outbox" / "msg_bad"
    bad.mkdir()
    (bad / "checkpoint-000000000001.bin").write_text("{not json")
    again = outbox(tmp_path)
    assert again.pending() == [good]
    assert not list(cut.iterdir())  # the cut write is removed at start


def test_an_unwritable_outbox_delivers_from_memory_counts_and_retries(tmp_path: Path) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the store's directory should be")  # fails even as root
    now = [0.0]
    d = Dispatcher(
        Outbox(DirectoryStore(blocked)),
        [Destination("ops", timeout=0.5)],
        clock=lambda: now[0],
        rand=lambda: 1.0,
        backoff_base=1.0,
        backoff_max=8.0,
        start=False,
    )
    assert d.submit(note())  # accepted: the error is operational, never raised
    assert d.write_errors() == 1
    assert d.pending() == 1  # kept in memory, delivery goes on (here it fails: port 9)
    now[0] += 1.0
    d.pump()  # the write is retried when due
    assert d.write_errors() == 2
    blocked.unlink()  # the disk is back
    now[0] += 60.0
    d.pump()
    assert d.write_errors() == 2
    assert len(outbox(blocked).pending()) == 1  # now durable
    d.close(timeout=1)


def test_notification_round_trips_through_json() -> None:
    req = json_request("http://h", {"a": "é"})
    n = Notification("rt_1", "retraining.fraud.http", req, 5.0, model="fraud", target="http")
    assert Notification.from_dict(json.loads(json.dumps(n.to_dict()))) == n
    with pytest.raises(ValueError, match="notification id"):
        note(nid="../escape")


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    top = [backoff_delay(a, 0.5, 10.0, lambda: 1.0) for a in range(1, 8)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(5, 0.5, 10.0, lambda: 0.0) == 0.0
    assert backoff_delay(10_000, 1.0, 300.0, lambda: 0.5) == 150.0  # no overflow


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 11, 27, 19, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120", now) == 120.0
    later = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert retry_after_seconds(later, now) == 90.0
    earlier = format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True)
    assert retry_after_seconds(earlier, now) == 0.0
    assert retry_after_seconds(None, now) is None
    assert retry_after_seconds("-1", now) is None


def test_destinations_take_secrets_from_the_environment() -> None:
    sink = Sink(name="ops", type="webhook", url="http://h", secret_env="OPS_SECRET", timeout=3)
    d = Destination.from_sink(sink, {"OPS_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    assert (d.name, d.timeout, d.secret) == ("ops", 3.0, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    with pytest.raises(AlertsError, match="OPS_SECRET is not set"):
        Destination.from_sink(sink, {})
    unsigned = Sink(name="ops", type="slack", url="http://h")
    assert Destination.from_sink(unsigned, {}).secret is None
    r = RetrainingSettings.model_validate(
        {"model": "fraud", "on_alerts": ["A"], "target": {"type": "http", "url": "http://ci"}}
    )
    assert Destination.for_retraining(r, {}).name == "retraining.fraud.http"
