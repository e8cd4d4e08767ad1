"""Reading the YAML configuration: file errors, validation errors, environment overrides.

Every problem becomes one :class:`ConfigError` naming the file, the key path and the
reason, e.g. ``driftline.yaml: models[0].drift.numerical.method: Input should be ...``;
when pydantic finds several, the message has one such line each, the first as headline.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from consumers.exceptions import ConsumersError
from consumers.kafka_client import check_client
from consumers.librdkafka_config import UnsupportedSettingError
from monitor.config import DriftlineConfig

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "check_files",
    "config_warnings",
    "dump_config",
    "load_config",
    "resolve_secret",
]

ENV_PREFIX = "DRIFTLINE_"


class ConfigError(ConsumersError):
    """A configuration problem: which file, which key, why.

    ``problems`` holds every ``(key, reason)`` found, the first being ``key, reason``.

    >>> str(ConfigError("driftline.yaml", "http.port", "Input should be <= 65535"))
    'driftline.yaml: http.port: Input should be <= 65535'
    >>> str(ConfigError("driftline.yaml", "", "no such file"))
    'driftline.yaml: no such file'
    """

    def __init__(
        self, file: str, key: str, reason: str, *, more: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.file, self.key, self.reason = file, key, reason
        self.problems: tuple[tuple[str, str], ...] = ((key, reason), *more)
        super().__init__(
            "\n".join(f"{file}: {k}: {r}" if k else f"{file}: {r}" for k, r in self.problems)
        )


# -- YAML -------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Hashable, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys brought in by `<<: *anchor` may be overridden, that is their point
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: str | Path, file: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, "", f"invalid YAML at {where}{problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            file, "", f"the top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


# -- the model's shape, read from the classes --------------------------------------------------


def _unwrap(t: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        if get_origin(t) is Annotated:
            t = get_args(t)[0]
        elif get_origin(t) in (Union, types.UnionType):
            rest = [a for a in get_args(t) if a is not type(None)]
            if len(rest) != 1:
                return t
            t = rest[0]
        else:
            return t


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """Fields by the key the YAML uses (the alias when there is one: ``for``)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _keys_at(loc: Sequence[int | str]) -> list[str]:
    """The keys the configuration allows in the mapping at ``loc``."""
    t: Any = DriftlineConfig
    for part in loc:
        t = _unwrap(t)
        if _is_model(t) and isinstance(part, str) and part in _fields(t):
            t = _fields(t)[part].annotation
        elif get_origin(t) in (list, tuple) and isinstance(part, int):
            t = get_args(t)[0]
        elif get_origin(t) is dict:
            t = get_args(t)[1]
        else:
            return []
    t = _unwrap(t)
    return list(_fields(t)) if _is_model(t) else []


def _env_sections() -> dict[str, dict[str, FieldInfo]]:
    """Top-level sections made of settings, not of lists of things: kafka, http, ..."""
    out = {}
    for name, field in DriftlineConfig.model_fields.items():
        t = _unwrap(field.annotation)
        if _is_model(t):
            fields = _fields(t)
            if not any(get_origin(_unwrap(f.annotation)) is list for f in fields.values()):
                out[name] = fields
    return out


def _takes_str(field: FieldInfo) -> tuple[bool, bool]:
    """Whether a field takes any string as is, and whether it takes None."""
    t = field.annotation
    while get_origin(t) is Annotated:
        t = get_args(t)[0]
    args = get_args(t) if get_origin(t) in (Union, types.UnionType) else (t,)
    return any(_unwrap(a) is str for a in args), type(None) in args


# -- environment overrides ---------------------------------------------------------------------


def _secret_names(node: Any) -> set[str]:
    """Variables named by ``*_env`` keys: they hold secrets, they are not overrides."""
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str) and k.endswith("_env") and isinstance(v, str):
                out.add(v)
            out |= _secret_names(v)
    elif isinstance(node, list):
        for v in node:
            out |= _secret_names(v)
    return out


def _env_value(raw: str, field: FieldInfo) -> Any:
    takes_str, takes_none = _takes_str(field)
    if takes_none and raw.strip() in ("", "~", "null"):
        return None
    if takes_str:  # a group id "no" or "0123" stays what it says
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # let validation say what is wrong with it


def _env_overrides(data: dict[str, Any], environ: Mapping[str, str], file: str) -> dict[str, str]:
    """Apply ``DRIFTLINE_<SECTION>_<KEY>`` variables to ``data``; the key paths they set."""
    sections = _env_sections()
    secrets = _secret_names(data)
    applied: dict[str, str] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var in secrets:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            continue  # DRIFTLINE_* variables of other tools (tests, secrets) are not ours
        key, fields = rest[len(section) + 1 :], sections[section]
        if key not in fields:
            names = [f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in fields]
            close = difflib.get_close_matches(var, names, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(names)}"
            raise ConfigError(var, f"{section}.{key}", f"no such setting; {hint}")
        current = data.get(section)
        if current is None:
            current = data[section] = {}
        if not isinstance(current, dict):
            raise ConfigError(file, section, "must be a mapping")
        current[key] = _env_value(raw, fields[key])
        applied[f"{section}.{key}"] = var
    return applied


# -- validation errors -------------------------------------------------------------------------


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: ErrorDetails) -> tuple[str, str]:
    loc = [
        p
        for p in err["loc"]
        if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]"))
    ]
    reason = str(err["msg"]).removeprefix("Value error, ")
    key = _key_path(loc)
    if reason.startswith("@"):  # a validator naming a key below its model
        sub, _, reason = reason[1:].partition(": ")
        key = f"{key}.{sub}" if key and not sub.startswith("[") else f"{key}{sub}"
    if err["type"] == "extra_forbidden":
        known = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        reason = f"unknown key; {hint}"
    elif err["type"] == "missing":
        reason = "required key is missing"
    elif err["type"] not in ("value_error", "assertion_error") and isinstance(
        err.get("input"), str | int | float | bool
    ):
        reason = f"{reason} (got {err['input']!r:.60})"
    return key, reason


def _within(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((prefix + ".", prefix + "["))


def _validation_error(
    file: str, exc: ValidationError, overridden: Mapping[str, str]
) -> ConfigError:
    # A misspelt key also makes the real one "missing": report the typo first.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    problems = []
    for err in errors:
        key, reason = _problem(err)
        # name the variables that set this key, or a key below the mapping it is about
        found = [v for k, v in overridden.items() if _within(key, k) or (key and _within(k, key))]
        problems.append((key, f"{reason} (set by {', '.join(found)})" if found else reason))
    (key, reason), *more = problems
    return ConfigError(file, key, reason, more=more)


# -- public ------------------------------------------------------------------------------------


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> DriftlineConfig:
    """Read a configuration file, apply ``DRIFTLINE_<SECTION>_<KEY>`` overrides from
    ``environ`` (default: the process environment) and validate it.

    Raises :class:`ConfigError` for a missing or unreadable file, bad YAML, an unknown
    override variable, and every validation problem (all of them, in one error).
    """
    file = str(path)
    data = _read_yaml(path, file)
    overridden = _env_overrides(data, os.environ if environ is None else environ, file)
    try:
        return DriftlineConfig.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(file, exc, overridden) from None


def check_files(config: DriftlineConfig, path: str | Path) -> None:
    """Raise :class:`ConfigError` naming every reference file that cannot be read
    (key ``models[i].reference.path``; relative paths are read from ``path``'s directory)
    and a Kafka client that is not installed or cannot take a ``kafka.consumer`` or
    ``kafka.producer`` setting."""
    base = Path(path).resolve().parent
    problems = []
    kafka = config.kafka
    try:
        check_client(kafka.client, kafka.consumer, kafka.producer)
    except UnsupportedSettingError as exc:
        problems.append((f"kafka.{exc.key}", exc.reason))
    for i, model in enumerate(config.models):
        ref = model.reference.path
        if ref is None:
            continue
        full = base / ref
        if not full.is_file():
            why = "is a directory" if full.is_dir() else "no such file"
            problems.append((f"models[{i}].reference.path", f"{why}: {full}"))
        elif not os.access(full, os.R_OK):
            problems.append((f"models[{i}].reference.path", f"not readable: {full}"))
    if problems:
        (key, reason), *more = problems
        raise ConfigError(str(path), key, reason, more=more)


def resolve_secret(env_name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret held by the environment variable ``env_name``; None when no variable is
    named. A named variable that is unset or empty is a :class:`ConfigError`: running
    unsigned or unauthenticated because of a typo is worse than not starting.

    >>> resolve_secret("HOOK_SECRET", {"HOOK_SECRET": "s3cr3t"}), resolve_secret(None, {})
    ('s3cr3t', None)
    """
    if env_name is None:
        return None
    value = (os.environ if environ is None else environ).get(env_name)
    if not value:
        reason = "is unset or empty, but the configuration names it for a secret"
        raise ConfigError(env_name, "", f"environment variable {reason}")
    return value


def dump_config(config: DriftlineConfig) -> str:
    """The resolved configuration as YAML that loads back to the same config (durations
    in seconds, keys as written in the file: ``for``, not ``for_``)."""
    data = config.model_dump(mode="json", by_alias=True)
    header = "# driftline resolved configuration; durations in seconds\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# -- warnings: accepted, but probably not what was meant ------------------------------------


def config_warnings(path: str | Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """What a valid configuration file (with its overrides) accepts but probably does not
    mean: ``DRIFTLINE_*`` variables that set nothing, durations without a unit, an
    ``allowed_lateness`` longer than the window. Call after :func:`load_config`."""
    file = str(path)
    env = os.environ if environ is None else environ
    data = _read_yaml(path, file)
    out: list[str] = []
    sections = _env_sections()
    secrets = _secret_names(data)
    known = [f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, f in sections.items() for k in f]
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in secrets:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        if not any(rest.startswith(s + "_") for s in sections):
            close = difflib.get_close_matches(var, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            out.append(f"{var} is not a driftline setting and is ignored{hint}")
    for where, value in _bare_durations(data, DriftlineConfig, ""):
        out.append(
            f"{file}: {where}: {value!r} has no unit and is read as {value} seconds; "
            f"write {value}s (or ms, m, h, d) to say so"
        )
    config = load_config(path, env)
    w = config.windows
    if w.allowed_lateness > w.size:
        out.append(
            f"{file}: windows.allowed_lateness ({w.allowed_lateness:g}s) is longer than "
            f"windows.size ({w.size:g}s): every pane waits longer than the window lasts, "
            "so the window always lags by more than its own length"
        )
    return out


def _is_duration(f: FieldInfo) -> bool:
    from monitor.config import parse_duration

    return any(getattr(m, "func", None) is parse_duration for m in f.metadata)


def _bare_durations(node: Any, model: type[BaseModel], where: str) -> list[tuple[str, float]]:
    """(key path, value) of every duration written as a bare number under ``node``."""
    if not isinstance(node, dict):
        return []
    out: list[tuple[str, float]] = []
    fields = _fields(model)
    for key, value in node.items():
        f = fields.get(key) if isinstance(key, str) else None
        if f is None:
            continue
        path = f"{where}.{key}" if where else str(key)
        t = _unwrap(f.annotation)
        if _is_duration(f) and isinstance(value, int | float) and not isinstance(value, bool):
            if value != 0:
                out.append((path, value))
        elif _is_model(t):
            out += _bare_durations(value, t, path)
        elif get_origin(t) is list and isinstance(value, list):
            (item,) = get_args(t) or (None,)
            if _is_model(item):
                for i, v in enumerate(value):
                    out += _bare_durations(v, item, f"{path}[{i}]")
        elif get_origin(t) is dict and isinstance(value, dict):
            args = get_args(t)
            if len(args) == 2 and _is_model(args[1]):
                for k, v in value.items():
                    out += _bare_durations(v, args[1], f"{path}.{k}")
    return out
