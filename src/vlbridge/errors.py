"""The error class for problems with what the user gave (flags, config files, data, paths).

Anything raised as a :class:`UserError` is the user's to fix: the ``vlbridge`` command prints its message
as one line and exits 2. Every other exception is a bug and keeps its traceback. ``UserError`` is a
``ValueError``, so library callers that catch ``ValueError`` keep working.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(ValueError):
    """Bad input from the user; the message says what is wrong and, where possible, how to fix it."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest option to `word`, or '' when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(what: str, name: str, options: Iterable[str]) -> UserError:
    """A UserError for a name that is not one of `options`, with the closest match and the full list."""
    options = list(options)
    return UserError(f"unknown {what} {name!r}{did_you_mean(name, options)}; choose from {', '.join(options)}")
