"""driftline's Grafana dashboards, as code (Grafana's ``grafana-foundation-sdk``).

    python grafana/dashboards.py [--output DIR]     # default: grafana/dashboards/

writes one JSON file per dashboard; the JSON is committed, and regenerating it must
leave ``git diff`` empty (tests/unit/test_grafana.py). Importing has no side effects.

- Overview (overview.py): every model's traffic, drift, performance and alerts;
- Model detail (model_detail.py): one model, the ``model`` variable;
- Service health (service_health.py): scrape, Kafka consumer, checkpoints, webhooks.

Queries use only the metrics listed in the README and the service's own health metrics.
Panels whose metrics the service does not export yet (its own alert rules, webhooks,
retraining) show "No data" until it does; the e2e test (tests/e2e/test_prometheus.py)
lists them and fails when that list goes stale.

The modules beside this one are imported as top-level modules: this directory is on
``sys.path`` when the script runs, and the tests put it there to import it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from model_detail import model_detail
from overview import overview
from panels import (
    CATCH_UP_SECONDS,
    DATASET_DRIFT_SHARE,
    DATASOURCE_UID,
    DRIFT_THRESHOLD,
    INVALID_SHARE,
)
from service_health import service_health

__all__ = [
    "CATCH_UP_SECONDS",
    "DATASET_DRIFT_SHARE",
    "DATASOURCE_UID",
    "DRIFT_THRESHOLD",
    "INVALID_SHARE",
    "build_dashboards",
    "main",
    "panel_queries",
    "render",
    "write_dashboards",
]

OUTPUT_DIR = Path(__file__).resolve().parent / "dashboards"
#: file name -> builder, in the order they are written
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "driftline-overview.json": overview,
    "driftline-model.json": model_detail,
    "driftline-service.json": service_health,
}


def build_dashboards() -> dict[str, dm.Dashboard]:
    """The dashboards by file name, panels numbered in order."""
    out = {}
    for name, builder in DASHBOARDS.items():
        board = builder().build()
        # The SDK leaves every id at 0; Grafana wants them unique within a dashboard.
        for i, panel in enumerate(board.panels or [], start=1):
            panel.id_val = i
        out[name] = board
    return out


def render(board: dm.Dashboard) -> str:
    """Deterministic JSON: sorted keys, no timestamps or versions, a final newline."""
    return JSONEncoder(sort_keys=True, indent=2).encode(board) + "\n"


def write_dashboards(directory: Path = OUTPUT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in build_dashboards().items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def panel_queries(model: str = "fraud", rate_interval: str = "1m") -> list[tuple[str, str, str]]:
    """``(dashboard title, panel title, PromQL)`` of every query, with Grafana's variables
    replaced as Grafana would for ``model`` and a ``$__rate_interval`` of ``rate_interval``."""
    out = []
    for board in build_dashboards().values():
        for panel in board.panels or []:
            if not isinstance(panel, dm.Panel):
                continue  # rows
            for target in panel.targets or []:
                expr: str = target.expr  # type: ignore[attr-defined]
                expr = expr.replace("$__rate_interval", rate_interval)
                expr = re.sub(r"\$\{model\}|\$model\b", model, expr)
                expr = expr.replace("$segment", "")  # "All": the whole model (=~"")
                out.append((str(board.title), str(panel.title), expr))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write driftline's Grafana dashboards.")
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR, help="directory for the JSON")
    args = parser.parse_args(argv)
    for path in write_dashboards(args.output):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
