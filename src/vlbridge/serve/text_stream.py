"""The answer text of one request as it grows: deltas safe to send, stop strings, the final text.

``render(ids)`` gives the whole answer text of the ids generated so far (the model's decoding; region-token
models write each ``<roi><rj></roi>`` as region j's box). A delta is sent only for text that cannot change
any more: held back are a trailing partial UTF-8 character, an open ``<roi>`` span and any tail that could
still become a stop string. The first stop string cuts the answer there.
"""
from __future__ import annotations

from typing import Callable, Sequence

OPEN_SPANS = (("<roi>", "</roi>"),)          # spans rewritten once complete (region references)


class TextStream:
    def __init__(self, render: Callable[[list[int]], str], stop: Sequence[str] = ()):
        self.render = render
        self.stop = [s for s in stop if s]
        self.sent = ""                       # text already sent as deltas
        self.text = ""                       # the answer so far (cut at a stop string)
        self.stopped = False

    def _held_back(self, text: str) -> int:
        """Length of the prefix of ``text`` that can be sent now."""
        end = len(text)
        if text.endswith("\ufffd"):
            end = len(text.rstrip("\ufffd"))
        for open_, close in OPEN_SPANS:
            at = text.rfind(open_)
            if at >= 0 and text.find(close, at) < 0:
                end = min(end, at)
        for s in self.stop:                  # a tail that is the start of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    end = min(end, len(text) - k)
                    break
        return end

    def _delta(self, text: str, upto: int) -> str:
        if not text.startswith(self.sent) or upto <= len(self.sent):
            return ""
        delta = text[len(self.sent):upto]
        self.sent += delta
        return delta

    def push(self, ids: list[int]) -> str:
        """The delta after the ids so far; sets ``stopped`` when a stop string appeared."""
        text = self.render(ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._delta(self.text, len(self.text))
        self.text = text
        return self._delta(text, self._held_back(text))

    def finish(self, ids: list[int]) -> str:
        """The last delta: everything not sent yet of the final text (``self.text``)."""
        if not self.stopped:
            self.text = self.render(ids)
        return self._delta(self.text, len(self.text))
