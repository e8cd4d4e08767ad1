"""The driftline command line. Exit codes: 0 success, 2 bad usage or configuration, 1 other."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from alerts import AlertsError
from consumers.configfile import (
    ConfigError,
    check_files,
    config_warnings,
    dump_config,
    load_config,
    resolve_secret,
)
from consumers.exceptions import ConsumersError
from consumers.logs import setup_logging
from consumers.web_config import web_config_for
from monitor.exceptions import MonitorError

__all__ = ["main"]

log = logging.getLogger("driftline")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


DESCRIPTION = """\
driftline: streaming production monitoring for machine-learning models.

Consumes prediction and ground-truth events from Kafka, computes drift, data quality and
performance per model over sliding windows, exports them to Prometheus and fires alerts.
Exit codes: 0 success, 2 bad usage or configuration, 1 anything else."""

CONFIG_HELP = "the YAML configuration file (relative paths in it are resolved from its folder)"


def _parser() -> argparse.ArgumentParser:
    from consumers.model_specs import driftline_version

    p = argparse.ArgumentParser(
        prog="driftline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"driftline {driftline_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service", description="Run the service.")
    run.add_argument("--config", required=True, help=CONFIG_HELP)
    run.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="one JSON object per line (default, for log shippers) or plain text",
    )
    run.add_argument(
        "--summary-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="log a one-line summary per model this often (default 60; 0 turns it off)",
    )

    init = sub.add_parser(
        "init",
        help="write a commented driftline.yaml for your model from its reference file",
        description="Write a commented configuration for one model, inferring its features "
        "from a reference file, and say what is missing.",
    )
    init.add_argument("--reference", required=True, help="reference data: .csv .jsonl .parquet")
    init.add_argument("--model", required=True, help="the model's name in the events")
    init.add_argument(
        "--task",
        choices=["binary_classification", "multiclass_classification", "regression"],
        help="default: inferred from the label column (two values: binary)",
    )
    init.add_argument("--output", default="driftline.yaml", help="default: driftline.yaml")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    demo = sub.add_parser(
        "demo",
        help="embedded broker + service + simulated serving app",
        description="Run the embedded broker, the service and a simulated serving app.",
    )
    demo.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    demo.add_argument("--bootstrap-servers", help="use this broker instead of the embedded one")
    demo.add_argument("--http-port", type=int, default=0, help="0 picks a free port")
    demo.add_argument("--rate", type=float, default=400.0, help="predictions per second")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the service and its web view up after the scripted part (Ctrl-C stops)",
    )

    replay = sub.add_parser(
        "replay",
        help="evaluate files of past events offline, in event time (backtesting)",
        description="Run the service's core over files of prediction and ground-truth "
        "events (JSONL, or Parquet), in event time: one JSON line per window evaluated, "
        "a summary on standard error. Sends no notification and no retraining request.",
    )
    replay.add_argument("--config", required=True, help=CONFIG_HELP)
    replay.add_argument("--input", required=True, help="prediction events: .jsonl or .parquet")
    replay.add_argument("--labels", help="ground-truth events: .jsonl or .parquet")
    replay.add_argument("--output", help="JSONL path (default: standard output)")
    replay.add_argument(
        "--report", help="also write the whole period as one self-contained HTML page here"
    )

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True, metavar="COMMAND")
    build = ref_sub.add_parser("build", help="build a profile JSON from a reference file")
    build.add_argument("--config", required=True, help=CONFIG_HELP)
    build.add_argument("--model", required=True, help="a model named in the configuration")
    build.add_argument("--input", required=True, help=".csv, .jsonl or .parquet")
    build.add_argument("--output", help="profile JSON path (default: standard output)")

    check = sub.add_parser(
        "check-config",
        help="validate and print the resolved config",
        description="Validate the configuration, print it resolved (defaults and "
        "DRIFTLINE_* overrides applied) and warn about suspicious settings.",
    )
    check.add_argument("--config", required=True, help=CONFIG_HELP)

    rules = sub.add_parser("rules", help="alert rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    export = rules_sub.add_parser(
        "export", help="Prometheus alerting rules equivalent to the config"
    )
    export.add_argument("--config", required=True, help=CONFIG_HELP)

    broker = sub.add_parser("broker", help="the embedded broker, standalone")
    broker.add_argument("--port", type=int, default=9092, help="default 9092")
    broker.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.config)
            check_files(config, args.config)
            _check_references(config, args.config)
            web_config_for(args.config, config.http.web_config)
            for warning in config_warnings(args.config):
                print(f"driftline: warning: {warning}", file=sys.stderr)
            sys.stdout.write(dump_config(config))
            return EXIT_OK
        if args.command == "init":
            return _init(args)
        if args.command == "reference":
            return _reference_build(args)
        if args.command == "replay":
            setup_logging(level="WARNING", json_logs=False)
            return _replay(args)
        if args.command == "rules":
            from alerts import export_rules

            sys.stdout.write(export_rules(load_config(args.config)))
            return EXIT_OK
        if args.command == "broker":
            from consumers.broker import run_broker

            return run_broker(args.port, args.host)
        if args.command == "demo":
            from consumers.demo import run_demo

            return run_demo(
                duration=args.duration,
                bootstrap_servers=args.bootstrap_servers,
                http_port=args.http_port,
                rate=args.rate,
                keep_running=args.keep_running,
            )
        if args.command == "run":
            setup_logging(json_logs=args.log_format == "json")
            return _run(args.config, args.summary_every)
    except ConfigError as exc:
        print(f"driftline: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MonitorError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AlertsError as exc:
        print(f"driftline: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConsumersError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


def _check_references(config: Any, path: str) -> None:
    """Load every model's reference as ``run`` would, build its KPIs on it and size its
    panes; a problem names the file, the key path and the reason."""
    from consumers.model_specs import check_pane_bytes, kpis_of, load_reference

    base = Path(path).resolve().parent
    problems = []
    for i, model in enumerate(config.models):
        if model.reference.path is None:
            continue
        try:
            profile = load_reference(model, base)
        except (ConsumersError, MonitorError, OSError, ValueError) as exc:
            problems.append((f"models[{i}].reference.path", str(exc)))
            continue
        try:  # a KPI's field must be a numerical column of that reference
            kpis_of(model, profile)
        except (MonitorError, ValueError) as exc:
            problems.append((f"models[{i}].kpis", str(exc)))
            continue
        try:  # segments multiply the pane: within segmenting.max_pane_bytes
            check_pane_bytes(model, profile)
        except MonitorError as exc:
            problems.append((f"models[{i}].segments", str(exc)))
    if problems:
        (key, reason), *more = problems
        raise ConfigError(path, key, reason, more=more)


def _reference_build(args: argparse.Namespace) -> int:
    from consumers.model_specs import profile_of_columns
    from consumers.reference_files import read_columns

    config = load_config(args.config)
    settings = next((m for m in config.models if m.name == args.model), None)
    if settings is None:
        names = ", ".join(m.name for m in config.models)
        raise ConfigError(str(args.config), "models", f"no model {args.model!r} (have: {names})")
    profile = profile_of_columns(settings, read_columns(args.input))
    if settings.task == "binary_classification" and profile.score_calibration is None:
        print(f"no score calibration: {profile.uncalibrated_reason}", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\rcalibrating drift thresholds: {done}/{total} features", end=end, file=sys.stderr)

    profile.calibrate(progress)  # kept in the file, so loading it is instant
    text = json.dumps(profile.to_dict(calibration=True), indent=1, allow_nan=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(
            f"wrote {args.output}: {len(profile.features)} features from {profile.n_events} rows",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from consumers.replay import replay_files

    config = load_config(args.config)
    check_files(config, args.config)
    base = Path(args.config).resolve().parent
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            summary = replay_files(config, args.input, args.labels, out, base, args.report)
    else:
        summary = replay_files(config, args.input, args.labels, sys.stdout, base, args.report)
        sys.stdout.flush()
    for line in summary.lines():
        print(f"driftline replay: {line}" if not line.startswith(" ") else line, file=sys.stderr)
    if args.report:
        print(f"driftline replay: report written to {args.report}", file=sys.stderr)
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    from consumers.init_config import init_config
    from consumers.reference_files import read_columns

    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"driftline: {output} exists; pass --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    reference = Path(args.reference)
    result = init_config(read_columns(reference), reference, args.model, output, args.task)
    output.write_text(result.text, encoding="utf-8")
    print(f"wrote {output}", file=sys.stderr)
    for note in result.notes:
        print(f"  note: {note}", file=sys.stderr)
    print(f"next: driftline check-config --config {output}", file=sys.stderr)
    return EXIT_OK


def _summaries(service: Any, every: float, stop: threading.Event) -> None:
    from consumers.summary import summary_lines

    before: dict[str, int] | None = None
    while not stop.wait(every):
        snapshot = service.snapshot()
        for line in summary_lines(snapshot, before):
            log.info(line)
        before = {m: c.predictions for m, c in snapshot.counters.items()}


def _run(config_path: str, summary_every: float = 60.0) -> int:
    from consumers.http import http_server
    from consumers.loop import ConsumerLoop, open_store
    from consumers.service import Service

    config = load_config(config_path)
    check_files(config, config_path)
    web_config = web_config_for(config_path, config.http.web_config)
    for warning in config_warnings(config_path):
        log.warning("configuration: %s", warning)
    service = Service(config, base_dir=Path(config_path).resolve().parent)
    secrets = {}
    password = resolve_secret(config.kafka.sasl_password_env, os.environ)
    if password is not None:
        secrets["sasl_plain_password"] = password
    # checkpoints, alert state and the alert outbox all live in the configured store
    store = open_store(config.state, config.kafka, secrets)
    service.enable_alerting(store, time.time())
    http = http_server(config.http, web_config, service.registry, service)
    http.start()
    shown = "127.0.0.1" if config.http.host in ("0.0.0.0", "::", "") else config.http.host
    base = f"{'https' if http.tls else 'http'}://{shown}:{http.port}"
    log.info(
        "serving HTTP: metrics %s/metrics, API %s/api/v1/models, readiness %s/readyz",
        base,
        base,
        base,
        extra={"host": config.http.host, "port": http.port},
    )
    stop = threading.Event()
    if summary_every > 0:
        threading.Thread(
            target=_summaries, args=(service, summary_every, stop), daemon=True
        ).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        loop = ConsumerLoop(
            service,
            config.kafka,
            store=store,
            checkpoint_interval=config.state.checkpoint_interval,
            secrets=secrets,
        )
        # What exists now (modules, references, calibration tables) lives as long as the
        # process: the collector's full passes stop walking it (they took ~4 % of stage 1).
        gc.freeze()
        loop.run(stop)
    finally:
        http.stop()
        if service.alerting is not None:
            service.alerting.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
