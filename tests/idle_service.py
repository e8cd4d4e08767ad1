"""A real service that consumes nothing: enough for the HTTP endpoints, which only read
its state. Its broker address is never contacted."""

from __future__ import annotations

from pathlib import Path

from consumers.service import Service
from monitor.config import DriftlineConfig


def idle_service(directory: Path) -> Service:
    """A service with one model, ``fraud``, whose reference is written to ``directory``."""
    reference = directory / "reference.csv"
    reference.write_text("amount,country\n" + "".join(f"{i},FR\n" for i in range(50)))
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9",
                "group_id": "g",
                "predictions_topic": "p",
                "dead_letter_topic": "d",
            },
            "models": [{"name": "fraud", "reference": {"path": str(reference)}}],
        }
    )
    return Service(config)
