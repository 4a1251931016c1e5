"""Generic argparse over config dataclasses: every leaf field becomes ``--section.field``.

Flags default to "not given", so only what the user typed overrides the preset. Help text comes from the
fields' ``help`` metadata. Types follow the annotations: bool (``--x`` or ``--x false``), int, float, str,
``X | None`` (``none`` for None), lists (comma-separated or JSON) and dicts (JSON).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(kind) -> tuple[Any, bool]:
    """(string -> value, is_bool) for an annotation."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner, is_bool = _converter(next(a for a in args if a is not type(None)))
        return (lambda s: None if s.lower() in ("none", "null") else inner(s)), is_bool
    if kind is bool:
        return _parse_bool, True
    if kind in (int, float, str):
        return kind, False
    if origin is list:
        item = args[0] if args else str
        return (lambda s: json.loads(s) if s.startswith("[") else [item(x) for x in s.split(",") if x]), False
    if origin is dict or kind is dict:
        return json.loads, False
    raise TypeError(f"unsupported config type {kind}")


def add_config_args(parser: argparse.ArgumentParser, cls, prefix: str = "",
                    aliases: dict[str, list[str]] | None = None) -> list[str]:
    """Add a flag per leaf field of `cls`; returns their dests (dotted paths)."""
    aliases, dests = aliases or {}, []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        dest = prefix + f.name
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            dests += add_config_args(parser, kind, dest + ".", aliases)
            continue
        convert, is_bool = _converter(kind)
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {json.dumps(default)})".replace("%", "%%")   # argparse formats help with %
        flags = [f"--{dest}"] + aliases.get(dest, [])
        extra = {"nargs": "?", "const": True} if is_bool else {"metavar": f.name.upper()}
        parser.add_argument(*flags, dest=dest, type=convert, default=argparse.SUPPRESS, help=help_text, **extra)
        dests.append(dest)
    return dests


def apply_overrides(cfg, namespace: argparse.Namespace, dests: list[str]):
    """Set every field in `dests` that was given on the command line onto `cfg` (in place; returns it)."""
    for dest in dests:
        if hasattr(namespace, dest):
            *path, leaf = dest.split(".")
            obj = cfg
            for part in path:
                obj = getattr(obj, part)
            setattr(obj, leaf, getattr(namespace, dest))
    return cfg
