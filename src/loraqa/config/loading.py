"""Loading a configuration: presets, files, overrides, type coercion, then one validation pass.

Resolution order: preset YAML (shipped in `loraqa/config/presets/`) < `--config FILE` < `--set
section.key=value` (repeatable, values parsed as YAML) < dedicated CLI options such as `--model`.
Every problem found is reported at once, each with its fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from loraqa.config.checks import suggest, validate
from loraqa.config.schema import SECTIONS, Config
from loraqa.errors import ConfigError, LoraqaError, UsageError, option, setting

# ---------------------------------------------------------------- presets and files


def _presets():
    return resources.files("loraqa.config").joinpath("presets")


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in _presets().iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict:
    names = preset_names()
    if name not in names:
        hint = difflib.get_close_matches(name, names, n=1)
        raise UsageError(
            f"unknown preset '{name}'"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; available presets: {', '.join(names)}"
        )
    text = _presets().joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def read_config_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}; pass an existing YAML file as {option('config')}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UsageError(f"config file {p} is not valid YAML{where}; fix the syntax and retry") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {p} must be a mapping of sections (model:, lora:, data:, ...)")
    return data


def parse_set(items: list[str]) -> dict:
    """Turn ['train.lr=1e-4', ...] into a nested dict; values are parsed as YAML."""
    out: dict = {}
    problems = []
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            problems.append(f"'{item}' must look like section.key=value (e.g. {setting('train.batch_size=8')})")
            continue
        key, raw = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[name] = value
    if problems:
        raise ConfigError(problems)
    return out


def merge(base: dict, override: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- typing and validation


def _coerce(value: Any, tp: Any, key: str) -> tuple[Any, str | None]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None, None
        inner = next(a for a in args if a is not type(None))
        return _coerce(value, inner, key)
    if tp is bool:
        if isinstance(value, bool):
            return value, None
        return value, f"{key} must be true or false, got {value!r}"
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        return value, f"{key} must be an integer, got {value!r}"
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        if isinstance(value, str):
            try:
                return float(value), None  # YAML reads '5e-5' (no dot) as a string
            except ValueError:
                pass
        return value, f"{key} must be a number, got {value!r}"
    if tp is str:
        if isinstance(value, str):
            return value, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
        return value, f"{key} must be a string, got {value!r}"
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value, None
        return value, f"{key} must be a list of names, e.g. [q, v], got {value!r}"
    return value, None


def build_config(raw: dict, preset: str | None = None) -> Config:
    """Type-check a nested dict into a Config, collecting every problem first."""
    problems: list[str] = []
    sections = {}
    for sname in raw:
        if sname not in SECTIONS and sname != "preset":
            problems.append(
                f"unknown section '{sname}'{suggest(sname, list(SECTIONS))}; sections are {', '.join(SECTIONS)}"
            )
    for sname, cls in SECTIONS.items():
        given = raw.get(sname) or {}
        if not isinstance(given, dict):
            problems.append(f"section '{sname}' must be a mapping of keys, got {given!r}")
            given = {}
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for k, v in given.items():
            if k not in names:
                problems.append(f"unknown key '{sname}.{k}'{suggest(k, names)}; see {option('keys')} for the list")
                continue
            value, err = _coerce(v, hints[k], f"{sname}.{k}")
            if err:
                problems.append(err)
            else:
                kwargs[k] = value
        sections[sname] = cls(**kwargs)
    cfg = Config(**sections, preset=preset)
    if cfg.data.task == "question_generation" and cfg.data.template == "squad":
        # The presets' QA instruction would tell the model to answer; the turned-around rows need their own.
        cfg.data.template = "question_generation"
    problems += validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    preset: str | None = "default",
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    overrides: dict | None = None,
) -> Config:
    """The resolved configuration: a preset, then a YAML file, then `section.key=value` strings,
    then a nested dict, each overriding the one before.

    Args:
        preset: A preset's name (`default`, `seed`, `base`, ...), or None for the schema's defaults.
        config_file: A YAML file of sections and keys.
        sets: Strings like `"train.max_steps=100"`, as `--set` takes them.
        overrides: Nested sections, e.g. `{"data": {"source": "my.jsonl"}}`.

    Returns:
        The checked Config.

    Raises:
        UsageError: An unknown preset or key, a value of the wrong type or out of range, a
            file that is missing or not YAML (the message names the setting).
    """
    raw: dict = read_preset(preset) if preset else {}
    if config_file:
        raw = merge(raw, read_config_file(config_file))
    raw = merge(raw, parse_set(sets or []))
    raw = merge(raw, overrides or {})
    raw.pop("preset", None)
    return build_config(raw, preset=preset)


def config_from_dict(d: dict) -> Config:
    """Rebuild a saved (resolved) config, e.g. a run directory's config.yaml."""
    d = dict(d)
    preset = d.pop("preset", None)
    return build_config(d, preset=preset)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def load_saved_config(path: str | Path) -> Config:
    """The resolved config saved beside a run or an adapter (config.yaml, loraqa_config.yaml)."""
    try:
        return config_from_dict(yaml.safe_load(Path(path).read_text()) or {})
    except (yaml.YAMLError, OSError) as exc:
        raise LoraqaError(f"cannot read the saved config {path} ({type(exc).__name__}); it was damaged") from None
