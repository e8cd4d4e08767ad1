"""Reading the YAML configuration: file errors, validation errors, environment overrides.

Every problem becomes one :class:`ConfigError` naming the file, the key path and the
reason, e.g. ``driftline.yaml: models[0].drift.numerical.method: Input should be ...``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from monitor.config import DriftlineConfig

__all__ = ["ENV_PREFIX", "ConfigError", "dump_config", "load_config", "resolve_secret"]

ENV_PREFIX = "DRIFTLINE_"
#: Sections whose scalar keys environment variables may override.
_ENV_SECTIONS = ("kafka", "http", "windows", "state", "validation")


class ConfigError(Exception):
    """A configuration problem: which file, which key, why."""

    def __init__(self, file: str, key: str, reason: str, *, more: list[str] | None = None):
        self.file, self.key, self.reason = file, key, reason
        self.more = more or []
        head = f"{file}: {key}: {reason}" if key else f"{file}: {reason}"
        super().__init__("\n".join([head, *self.more]))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _errors(file: str, exc: ValidationError) -> ConfigError:
    lines = []
    # A misspelt key also makes the real one "missing": report the typo first.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        reason = str(err["msg"]).removeprefix("Value error, ")
        if reason.startswith("@"):  # a model validator naming the key below its model
            sub, _, reason = reason[1:].partition(": ")
            key = ".".join(p for p in (_key_path(loc), sub) if p).replace(".[", "[")
        else:
            key = _key_path(loc)
        if err["type"] == "extra_forbidden":
            reason = "unknown key (not part of the configuration; check its spelling)"
        elif err["type"] == "missing":
            reason = "required key is missing"
        lines.append((key, reason))
    key, reason = lines[0]
    more = [f"{file}: {k}: {r}" if k else f"{file}: {r}" for k, r in lines[1:]]
    return ConfigError(file, key, reason, more=more)


def _env_overrides(data: dict[str, Any], environ: Mapping[str, str], file: str) -> dict[str, Any]:
    fields = DriftlineConfig.model_fields
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in _ENV_SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue  # DRIFTLINE_* variables of other tools (tests, secrets) are not ours
        key = rest[len(section) + 1 :]
        annotation = fields[section].annotation
        assert isinstance(annotation, type)
        assert issubclass(annotation, BaseModel)
        if key not in annotation.model_fields:
            known = ", ".join(
                f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in annotation.model_fields
            )
            raise ConfigError(var, f"{section}.{key}", f"no such setting; known: {known}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        current = data.get(section)
        if current is None:
            current = data[section] = {}
        if not isinstance(current, dict):
            raise ConfigError(file, section, "must be a mapping")
        current[key] = value
    return data


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> DriftlineConfig:
    """Read, override from the environment, and validate a configuration file."""
    file = str(path)
    env = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, "", f"invalid YAML at {where}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"the top level must be a mapping, not a {type(data).__name__}")
    data = _env_overrides(data, env, file)
    try:
        return DriftlineConfig.model_validate(data)
    except ValidationError as exc:
        raise _errors(file, exc) from None


def resolve_secret(env_name: str | None, environ: Mapping[str, str]) -> str | None:
    """The secret held by the environment variable ``env_name`` (None when unset)."""
    if env_name is None:
        return None
    return environ.get(env_name)


def dump_config(config: DriftlineConfig) -> str:
    """The resolved configuration as YAML (durations in seconds)."""
    data = config.model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
