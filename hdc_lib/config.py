"""Typed configs: dataclasses built from plain dicts (YAML) with clear errors.

Every config in hdc_lib is a dataclass with defaults next to the code it configures (the method's
config sits in the method's module). This file only turns nested dicts into those dataclasses and
back, checking names and types so a typo fails before any training starts, not hours into a run.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from hdc_lib.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config value that cannot be used. The reason names the dotted `key` (when one is to
    blame); `path` and `line` are the YAML file and line it came from, when it came from one."""

    def __init__(self, reason: str, path=None, line: int | None = None, key: str | None = None):
        super().__init__(reason, path, line)
        self.key = key


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclasses.

    Unknown keys and values of the wrong type raise ConfigError naming the dotted key.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {where + unknown[0]!r} (known: {', '.join(sorted(fields))})",
                          key=where + unknown[0])
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        # A partial nested section refines the field's own default (a toy preset's augmentation,
        # say), rather than falling back to the nested class's defaults.
        default = _default(fields[name])
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict) and default is not None:
            data[name] = {**to_dict(default), **value}
    kwargs = {name: _convert(hints[name], value, where + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}", key=where.rstrip(".") or None) from err


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict (YAML-ready) form of a config dataclass; tuples become lists."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", key=key)
        return from_dict(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}", key=key)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}", key=key)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}", key=key)
            items = [_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_hint = args[0] if args else Any
            items = [_convert(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return origin(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", key=key)
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}", key=key)
        return value
    return value
