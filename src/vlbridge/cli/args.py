"""Generic argparse over config dataclasses: every leaf field becomes ``--section.field``.

Flags default to "not given", so only what the user typed overrides the preset. Help text comes from the
fields' ``help`` metadata, with their choices and the value the command starts from (a preset's or the
field's default). Types follow the annotations: bool (``--x`` or ``--x false``), int, float, str, ``X | None``
(``none`` for None), lists (comma-separated or JSON) and dicts (JSON). Both ``--train.batch-size`` and
``--train.batch_size`` work (see ``parser.Parser``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, Callable, Iterable

from ..config import field_choices


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_json(text: str, want: type, example: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON {text!r}: {e.msg} at column {e.colno}") from None
    if not isinstance(value, want):
        raise argparse.ArgumentTypeError(f"expected a JSON {'object' if want is dict else 'list'} such as {example}, "
                                         f"got {text!r}")
    return value


def json_object(text: str) -> dict:
    """An argparse type: a JSON object, with the JSON parser's message when it is not one."""
    return _parse_json(text, dict, '\'{"key": 1}\'')


def _list_of(item) -> Callable[[str], list]:
    def convert(text: str) -> list:
        if text.lstrip().startswith("["):
            return _parse_json(text, list, "[1, 2]")
        try:
            return [item(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None
    return convert


def _converter(kind) -> tuple[Callable[[str], Any], bool]:
    """(string -> value, is_bool) for an annotation."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner, is_bool = _converter(next(a for a in args if a is not type(None)))

        def optional(text: str):
            return None if text.lower() in ("none", "null") else inner(text)
        optional.__name__ = getattr(inner, "__name__", "value")
        return optional, is_bool
    if kind is bool:
        return _parse_bool, True
    if kind in (int, float, str):
        return kind, False
    if origin is list:
        return _list_of(args[0] if args else str), False
    if origin is dict or kind is dict:
        return json_object, False
    raise TypeError(f"unsupported config type {kind}")


def _short(value: Any, limit: int = 70) -> str:
    """A value as it is typed on the command line (none, true, plain strings, comma lists, JSON), cut at `limit`."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int, float)) for v in value):
        text = ", ".join(str(v) for v in value)            # typed comma-separated
    else:
        text = "none" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def lookup(cfg, dest: str) -> Any:
    for part in dest.split("."):
        cfg = getattr(cfg, part)
    return cfg


def add_config_args(parser: argparse.ArgumentParser, cls, prefix: str = "", *,
                    aliases: dict[str, list[str]] | None = None, include: Iterable[str] | None = None,
                    required: Iterable[str] = (), rename: dict[str, str] | None = None,
                    choices: dict[str, Iterable[str]] | None = None) -> list[str]:
    """Add a flag per leaf field of `cls`; returns their dests (dotted paths).

    ``include`` keeps only the dests starting with one of its prefixes; ``aliases`` adds flags per dest (shown
    first); ``required`` dests must be given; ``rename`` maps a dest prefix to the flag's (``{"vision.":
    "model.vision."}``); ``choices`` restricts plain str fields that declare none. Help shows the field
    defaults until :func:`show_defaults_of` names what the command starts from.
    """
    dests = _add_fields(parser, cls, prefix, aliases or {}, tuple(include) if include is not None else None,
                        set(required), rename or {}, choices or {})
    show_defaults_of(parser, lambda namespace: (cls(), "default"), prefix)
    return dests


def _add_fields(parser, cls, prefix, aliases, include, required, rename, choices) -> list[str]:
    hints = typing.get_type_hints(cls)
    dests = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        dest = prefix + f.name
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            if include is None or any(p.startswith(dest + ".") or dest.startswith(p) for p in include):
                dests += _add_fields(parser, kind, dest + ".", aliases, include, required, rename, choices)
            continue
        if include is not None and not dest.startswith(include):
            continue
        convert, is_bool = _converter(kind)
        names = field_choices(f) or (tuple(choices[dest]) if dest in choices else None)
        text = f.metadata.get("help", "")
        if names:
            text += f" (choices: {', '.join(names)})"
        flag = next((new + dest[len(old):] for old, new in rename.items() if dest.startswith(old)), dest)
        flags = aliases.get(dest, []) + [f"--{flag}"]
        extra = {"nargs": "?", "const": True, "metavar": "BOOL"} if is_bool else {
            "metavar": "JSON" if convert is json_object else f.name.upper()}
        if names and kind is str:
            extra["choices"] = names
        action = parser.add_argument(*flags, dest=dest, type=convert, default=argparse.SUPPRESS,
                                     required=dest in required, help=text.replace("%", "%%"), **extra)
        action.field_help = text
        dests.append(dest)
    return dests


def show_defaults_of(parser: argparse.ArgumentParser,
                     resolve: Callable[[argparse.Namespace], tuple[Any, str]], prefix: str = "") -> None:
    """Make the help of the config flags show the values `resolve(namespace)` gives: a config and its label
    (e.g. ``"tiny-cpu"`` for a preset, ``"default"`` for the field defaults). `--help` calls it with the
    options parsed before it, so ``--preset X --help`` shows preset X's values."""
    def fill(namespace: argparse.Namespace) -> None:
        try:
            cfg, label = resolve(namespace)
        except Exception:                   # a bad --config before --help: show the command's own start
            cfg, label = resolve(argparse.Namespace())
        for action in parser._actions:
            if not hasattr(action, "field_help"):
                continue
            shown = "required" if action.required else f"{label}: {_short(lookup(cfg, action.dest[len(prefix):]))}"
            action.help = f"{action.field_help} [{shown}]".replace("%", "%%")
    parser.show_defaults = fill
    fill(argparse.Namespace())


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


def add_overwrite_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """--overwrite for a command whose --out holds a model: without it such an --out is refused."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"write over the {what} --out already holds instead of refusing")


def print_config(cfg) -> None:
    """--print-config: the resolved config as JSON."""
    print(json.dumps(dataclasses.asdict(cfg), indent=2))
