"""The argument parser every `vlbridge` command uses: one spelling per option, short errors, readable help.

- Every long option takes ``-`` or ``_`` between words (``--batch-size`` = ``--batch_size``, as Hugging
  Face's argument parser does); help lists the kebab spelling. Abbreviations are off (``--train.ste`` is
  an error, not ``--train.steps``).
- An error is one line, ``vlbridge SUB: error: ...``, then where to look (``--help``); unknown options and
  choices come with the closest match.
- Help lists only what the command takes: usage names the required options and ``[OPTIONS]``; text is
  wrapped per paragraph and indented lines (examples) are kept as written.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import textwrap

from ..errors import did_you_mean


def kebab(flag: str) -> str:
    return "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag


def snake(flag: str) -> str:
    return "--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag


def examples(*lines: str) -> str:
    """An epilog of example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


class HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str, **kwargs):
        kwargs.setdefault("max_help_position", 34)
        super().__init__(prog, **kwargs)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = para.splitlines()
            if len(lines) > 1 and any(line.startswith(" ") for line in lines[1:]) or para.startswith(" "):
                paragraphs.append("\n".join(indent + line for line in lines))      # a list or examples: as is
            else:
                paragraphs.append(textwrap.fill(" ".join(line.strip() for line in lines), width,
                                                initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(paragraphs)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        shown = ", ".join(s for s in action.option_strings if s not in getattr(action, "twins", ()))
        if action.nargs == 0:
            return shown
        return f"{shown} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def add_usage(self, usage, actions, groups, prefix=None):
        if usage is None:                        # the required options and positionals, then [OPTIONS]
            parts = []
            for a in actions:
                if not a.option_strings:
                    parts.append(self._format_args(a, self._get_default_metavar_for_positional(a)))
                elif a.required:
                    parts.append(f"{a.option_strings[0]} {self._format_args(a, self._get_default_metavar_for_optional(a))}")
            optional = any(a.option_strings and not a.required for a in actions)
            usage = " ".join(["%(prog)s", *parts] + (["[OPTIONS]"] if optional else []))
        super().add_usage(usage, actions, groups, prefix)


class HelpAction(argparse.Action):
    """-h/--help: fills in the defaults of the preset or config chosen so far (see ``Parser.show_defaults``)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        if parser.show_defaults is not None:
            parser.show_defaults(namespace)
        parser.print_help()
        parser.exit()


class Parser(argparse.ArgumentParser):
    """argparse with kebab/snake twins for every long option, no abbreviations and one-line errors."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = HelpFormatter
        kwargs["allow_abbrev"] = False
        add_help = kwargs.pop("add_help", True)
        super().__init__(*args, add_help=False, **kwargs)
        self.show_defaults = None           # set by commands whose help shows a preset's values
        if add_help:
            self.add_argument("-h", "--help", action=HelpAction, help="show this help and exit")

    def add_argument(self, *args, **kwargs):
        if not args or not all(a.startswith("-") for a in args):
            return super().add_argument(*args, **kwargs)
        shown = list(dict.fromkeys(kebab(a) for a in args))
        twins = [snake(a) for a in shown if snake(a) != a and snake(a) not in shown]
        action = super().add_argument(*shown, *twins, **kwargs)
        action.twins = tuple(twins)
        return action

    # ---- errors -----------------------------------------------------------------------------------------
    def error(self, message: str):
        # argparse names an option by all its spellings ("argument --a/--b/--a_b: ..."): keep the first
        message = re.sub(r"(-{1,2}[\w.\-]+)(?:/-{1,2}[\w.\-]+)+", r"\1", message)
        self.exit(2, f"{self.prog}: error: {message}\nsee: {self.prog} --help\n")

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice {value!r}{did_you_mean(str(value), names)}; "
                                                 f"choose from {', '.join(names)}")

    def option_suggestion(self, flag: str) -> str:
        name = flag.split("=", 1)[0]
        options = [s for a in self._actions for s in a.option_strings          # in the style typed
                   if "_" in name or s not in getattr(a, "twins", ())]
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if getattr(namespace, "_parser", None) is None:       # the innermost (sub)command that parsed
            namespace._parser = self
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            where = namespace._parser
            flag = next((x for x in extras if x.startswith("-")), None)
            if flag is None:
                where.error(f"unexpected argument {extras[0]!r}")
            where.error(f"unknown option {flag.split('=', 1)[0]}{where.option_suggestion(flag)}")
        return namespace


def at_least(kind: type, low: float):
    """An argparse type: a `kind` (int or float) value >= `low`, with a clear message otherwise."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    convert.__name__ = kind.__name__
    return convert


positive_int = at_least(int, 1)
non_negative_float = at_least(float, 0)


def debug() -> bool:
    """VLBRIDGE_DEBUG=1: user errors raise with their traceback instead of printing one line."""
    return os.environ.get("VLBRIDGE_DEBUG", "") not in ("", "0")


__all__ = ["Parser", "HelpFormatter", "examples", "at_least", "positive_int", "non_negative_float", "debug", "kebab",
           "snake"]
