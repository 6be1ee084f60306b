"""Building a :class:`~.schema.Config`: YAML files with inheritance, dotted overrides, and
the type coercion of every value.

YAML files may name a parent with ``base: other.yaml`` (resolved relative to the file);
the child's keys are merged into the parent's recursively.  Overrides use dotted keys,
``"model.num_prototypes=64"``; the value is parsed as YAML (``64``, ``0.5``, ``[1, 2]``,
``true``, ``null``).  Every dict is migrated (:mod:`.migrations`) before it is built.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, Iterable, List

import yaml

from ..errors import ConfigError
from .migrations import config_version_of, migrate_config_dict
from .schema import Config
from .validation import validate


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


# Keys that moved: old dotted name -> new dotted name.  Configs and checkpoints written before

def _build(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{where}.{name}" if where else name
            kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file, so not a YAML config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    parent = data.pop("base", None)
    if parent is not None:
        base = _read_yaml(path.parent / parent, seen + (path.resolve(),))
        # a child may inherit keys in an older layout: the older version migrates the merge
        version = min(config_version_of(base), config_version_of(data))
        data = {**_merge(base, data), "config_version": version}
    return data


def _apply_override(data: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = value


def config_from_dict(data: dict, quiet: bool = False) -> Config:
    """Build and validate a :class:`Config` from a (possibly partial) nested dict of any
    ``config_version``; it is migrated first (a note on stderr for each change, unless ``quiet``)."""
    data, notes = migrate_config_dict(data)
    if not quiet:
        for note in notes:
            print(note, file=sys.stderr)
    config = _build(Config, data)
    validate(config)
    return config


def _overridden(data: dict, overrides: Iterable[str]) -> Config:
    """``data`` (of any version) with dotted overrides: the dict is migrated by its own version
    first; the overrides carry no version, so old key names in them are migrated after."""
    data, notes = migrate_config_dict(data)
    for note in notes:
        print(note, file=sys.stderr)
    for override in overrides:
        _apply_override(data, override)
    return config_from_dict(data)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    A bare name such as ``"yolact_base"`` is one of the configs shipped in the package
    (``yolact_lite/configs/``, :func:`config_names`); anything else is a YAML path.
    """
    data: dict = {}
    if path is not None:
        if isinstance(path, Config):
            raise ConfigError("load_config takes a config name or a YAML path; this is already a Config "
                              "(with_overrides changes one)")
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"load_config takes a config name or a YAML path; got {type(path).__name__}")
        path = Path(path)
        if not path.suffix and not path.exists():
            if not (CONFIG_DIR / f"{path}.yaml").is_file():
                raise ConfigError(f"unknown config {str(path)!r}: not a file, and not one of the shipped configs "
                                  f"({', '.join(config_names())})")
            path = CONFIG_DIR / f"{path}.yaml"
        data = _read_yaml(path)
        data.setdefault("name", path.stem)
    return _overridden(data, overrides)


def require_config(value: Any, where: str) -> Config:
    """``value`` when it is a :class:`Config`, else a one-line ConfigError saying how to make one
    (a config name passed where the object is wanted is the usual slip)."""
    if not isinstance(value, Config):
        raise ConfigError(f"{where} takes a Config, got {type(value).__name__} {value!r:.60}: "
                          "load_config(name or YAML path) makes one")
    return value


def with_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """A new config: ``config`` with dotted overrides applied (``config`` is not changed)."""
    return _overridden(config.to_dict(), overrides)


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def config_names() -> List[str]:
    """The configs shipped with the package, by name."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
