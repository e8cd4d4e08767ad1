"""The ``driftline`` command line. Exit codes: 0 success, 2 bad usage or configuration, 1 other."""

from __future__ import annotations

import argparse
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

from alerts import AlertsError
from consumers.configfile import ConfigError, dump_config, load_config, resolve_secret
from consumers.exceptions import ConsumersError
from consumers.logs import setup_logging
from monitor.exceptions import MonitorError

__all__ = ["main"]

log = logging.getLogger("driftline")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driftline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service")
    run.add_argument("--config", required=True, help="YAML configuration file")
    run.add_argument("--log-format", choices=["json", "text"], default="json")

    demo = sub.add_parser("demo", help="embedded broker + service + simulated serving app")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    demo.add_argument("--bootstrap-servers", help="use this broker instead of the embedded one")
    demo.add_argument("--http-port", type=int, default=0, help="0 picks a free port")
    demo.add_argument("--rate", type=float, default=400.0, help="predictions per second")

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True, metavar="COMMAND")
    build = ref_sub.add_parser("build", help="build a profile JSON from a reference file")
    build.add_argument("--config", required=True)
    build.add_argument("--model", required=True)
    build.add_argument("--input", required=True, help=".csv, .jsonl or .parquet")
    build.add_argument("--output", help="profile JSON path (default: standard output)")

    check = sub.add_parser("check-config", help="validate and print the resolved config")
    check.add_argument("--config", required=True)

    rules = sub.add_parser("rules", help="alert rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    export = rules_sub.add_parser(
        "export", help="Prometheus alerting rules equivalent to the config"
    )
    export.add_argument("--config", required=True)

    broker = sub.add_parser("broker", help="the embedded broker, standalone")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--host", default="127.0.0.1")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.config)
            sys.stdout.write(dump_config(config))
            return EXIT_OK
        if args.command == "reference":
            return _reference_build(args)
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
            )
        if args.command == "run":
            setup_logging(json_logs=args.log_format == "json")
            return _run(args.config)
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


def _reference_build(args: argparse.Namespace) -> int:
    from consumers.reference_files import read_columns
    from consumers.service import options_of, specs_of
    from monitor.reference import build_profile
    from monitor.schema import FeatureKind

    config = load_config(args.config)
    settings = next((m for m in config.models if m.name == args.model), None)
    if settings is None:
        names = ", ".join(m.name for m in config.models)
        raise ConfigError(str(args.config), "models", f"no model {args.model!r} (have: {names})")
    columns = read_columns(args.input)
    kind = FeatureKind.CATEGORICAL if settings.task == "multiclass_classification" else None
    profile = build_profile(
        settings.name, columns, specs_of(settings), options_of(settings), prediction_kind=kind
    )
    text = json.dumps(profile.to_dict(), indent=1, allow_nan=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(
            f"wrote {args.output}: {len(profile.features)} features from {profile.n_events} rows",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _run(config_path: str) -> int:
    from consumers.http import HttpServer
    from consumers.loop import ConsumerLoop, open_store
    from consumers.service import Service

    config = load_config(config_path)
    service = Service(config, base_dir=Path(config_path).resolve().parent)
    secrets = {}
    password = resolve_secret(config.kafka.sasl_password_env, os.environ)
    if password is not None:
        secrets["sasl_plain_password"] = password
    # checkpoints, alert state and the alert outbox all live in the configured store
    store = open_store(config.state, config.kafka, secrets)
    service.enable_alerting(store, time.time())
    http = HttpServer(config.http.host, config.http.port, service.registry, service)
    http.start()
    log.info("serving HTTP", extra={"host": config.http.host, "port": http.port})
    stop = threading.Event()

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
        loop.run(stop)
    finally:
        http.stop()
        if service.alerting is not None:
            service.alerting.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
