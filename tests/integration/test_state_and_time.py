"""State and event time you can trust, on a real broker: each scenario once lost or
double-counted events, or blinded a model."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_fault_tolerance import PANE, PARTITIONS, SIZE, expected_window, produce, write_reference

from consumers.checkpoints import DirectoryStore
from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration


def make_config(
    kafka_bootstrap: str, topic: str, group: str, ref: Path, consumer: dict, **model: Any
) -> DriftlineConfig:
    return DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": group,
                "predictions_topic": topic,
                "dead_letter_topic": topic + ".dlq",
                "consumer": consumer,
                "poll_timeout_ms": 200,
                "max_batch": 1000,
            },
            "windows": {"pane": f"{PANE:g}s", "size": f"{SIZE:g}s", "allowed_lateness": "5s"},
            "models": [{"name": "m", "reference": {"path": str(ref)}, **model}],
        }
    )


class Instance:
    """A service and its consumer loop on a thread, with a directory store."""

    def __init__(self, config: DriftlineConfig, store: Path) -> None:
        self.service = Service(config)
        self.stop = threading.Event()
        self.loop = ConsumerLoop(
            self.service, config.kafka, store=DirectoryStore(store), checkpoint_interval=0.3
        )
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def wait_counted(self, n: int, timeout: float = 60.0) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline and self.service.events_counted("m") < n:
            time.sleep(0.1)
        time.sleep(0.5)  # anything counted twice would show now
        return self.service.events_counted("m")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def checkpoints(store: Path) -> dict[int, list[Path]]:
    out = {}
    for p in range(PARTITIONS):
        files = sorted(store.rglob(f"partition-{p}/checkpoint-*.bin"))
        out[p] = files
    return out


@pytest.fixture
def setup(tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config):
    ref = tmp_path / "ref.csv"
    write_reference(ref)
    topic = make_topic(partitions=PARTITIONS)
    t0 = float(int(time.time()) // 100 * 100 - 1000)
    group = make_group()
    return ref, topic, group, t0, consumer_config()


def test_newest_checkpoint_truncated_bit_flipped_or_empty_falls_back_to_an_older_one(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, t0, consumer = setup
    config = make_config(kafka_bootstrap, topic, group, ref, consumer)
    store = tmp_path / "state"
    sent = produce(kafka_bootstrap, topic, 0, 6_000, t0)
    a = Instance(config, store)
    try:
        assert a.wait_counted(6_000) == 6_000
        time.sleep(1.0)  # a few more checkpoints of the same state
        sent += produce(kafka_bootstrap, topic, 6_000, 4_000, t0)
        assert a.wait_counted(10_000) == 10_000
    finally:
        a.close()
    files = checkpoints(store)
    assert all(len(f) >= 2 for f in files.values()), files
    # break the newest checkpoint of each partition, three ways
    newest = [files[p][-1] for p in range(PARTITIONS)]
    newest[0].write_bytes(newest[0].read_bytes()[:100])  # truncated
    flipped = bytearray(newest[1].read_bytes())
    flipped[len(flipped) // 2] ^= 0x40
    newest[1].write_bytes(bytes(flipped))  # one bit flipped
    newest[2].write_bytes(b"")  # empty
    stale = newest[0].parent / ".checkpoint-000000000099.bin.1234.tmp"
    stale.write_bytes(b"half a write")
    b = Instance(config, store)
    try:
        assert b.wait_counted(10_000) == 10_000  # exactly: nothing lost, nothing twice
        assert b.service.restore_outcomes["restored_older"] == PARTITIONS
        assert not stale.exists()
        want = expected_window(sent)
        deadline = time.time() + 20
        ev = None
        while time.time() < deadline:
            b.service.evaluate_all(time.time())
            ev = b.service.evaluation("m")
            if ev is not None and ev.window_events == want:
                break
            time.sleep(0.2)
        assert ev is not None
        assert ev.window_events == want
    finally:
        b.close()


def test_restart_after_changing_the_binning_keeps_every_count(tmp_path, kafka_bootstrap, setup):
    ref, topic, group, t0, consumer = setup
    store = tmp_path / "state"
    sent = produce(kafka_bootstrap, topic, 0, 10_000, t0)
    a = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer), store)
    try:
        assert a.wait_counted(10_000) == 10_000
    finally:
        a.close()
    changed = make_config(kafka_bootstrap, topic, group, ref, consumer, binning={"quantiles": 20})
    b = Instance(changed, store)
    try:
        assert b.wait_counted(10_000) == 10_000
        assert b.service.restore_outcomes["reference_changed"] == PARTITIONS
        # new windows from the restored offsets: new traffic fills them
        sent += produce(kafka_bootstrap, topic, 10_000, 5_000, t0)
        assert b.wait_counted(15_000) == 15_000
        deadline = time.time() + 20
        ev = None
        while time.time() < deadline:
            ev = b.service.evaluation("m")
            if ev is not None and ev.window_events > 0:
                break
            time.sleep(0.2)
        assert ev is not None
        assert 0 < ev.window_events <= expected_window(sent)
    finally:
        b.close()
