"""Structured logs: one JSON object per line with the record's context fields."""

from __future__ import annotations

import json
import logging

from consumers.logs import JsonFormatter


def test_dead_letter_log_line_carries_its_context():
    record = logging.LogRecord(
        "driftline.consumer", logging.WARNING, __file__, 1, "dead-lettered record", (), None
    )
    for key, value in {
        "model": "fraud",
        "topic": "t",
        "partition": 2,
        "offset": 17,
        "reason": "invalid_json",
    }.items():
        setattr(record, key, value)
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert "\n" not in line
    assert data["level"] == "warning"
    assert data["msg"] == "dead-lettered record"
    assert {k: data[k] for k in ("model", "topic", "partition", "offset", "reason")} == {
        "model": "fraud",
        "topic": "t",
        "partition": 2,
        "offset": 17,
        "reason": "invalid_json",
    }
