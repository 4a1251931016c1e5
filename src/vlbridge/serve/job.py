"""One chat completion being generated: the engine's sink on one side, an asyncio queue on the other.

The engine thread calls ``token`` / ``finish`` / ``fail``; each posts an event onto the request's event
loop: ``("delta", text)``, ``("done", Outcome)`` or ``("error", exception)``. Setting ``cancel()`` (from
the loop, when the client goes away) makes the engine drop the row at its next step.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import torch

from .answers import renderer
from .engine import EngineRequest
from .image_outputs import ImageJob
from .text_stream import TextStream


@dataclass
class Outcome:
    text: str
    finish_reason: str                    # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    images: list = field(default_factory=list)     # PIL images the answer generated


class Job:
    def __init__(self, input_ids: list[int], pixel_values: torch.Tensor | None, max_new_tokens: int,
                 temperature: float, top_p: float, seed: int | None, stop: list[str], cfg_scale: float,
                 loop: asyncio.AbstractEventLoop, deltas: bool = True, ignore_eos: bool = False,
                 task_type: str | None = None):
        self.request = EngineRequest(input_ids, pixel_values, max_new_tokens, self, temperature, top_p, seed,
                                     ignore_stop=ignore_eos, task_type=task_type)
        self.stop, self.cfg_scale = stop, cfg_scale
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.stream: TextStream | None = None
        self.image_queue: list | None = None
        self.generated: list[int] = []            # text ids so far
        self.opened: list[int] = []               # the id that opened an image, if the answer opened one
        self.deltas = deltas                       # post text deltas (streaming) or only the outcome

    # ---- scheduler side ---------------------------------------------------------------------------------
    def prepare(self, model, end_ids, image_queue: list) -> None:
        """On the engine thread, before admission: the answer renderer and the ids that end an answer."""
        self.stream = TextStream(renderer(model, self.request), self.stop)
        self.request.end_ids = list(end_ids)
        self.image_queue = image_queue

    def _post(self, kind: str, value) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:                       # the loop is closed: nobody is listening any more
            pass

    def token(self, token_id: int) -> bool:
        self.generated.append(token_id)
        delta = self.stream.push(self.generated)
        if delta and self.deltas:
            self._post("delta", delta)
        return self.stream.stopped

    def finish(self, reason: str, generated: list[int]) -> None:
        if reason == "cancelled":
            return
        if reason == "end":                        # the answer opened an image: the image writer takes over
            self.opened = generated[-1:]
            self.image_queue.append(self)
            return
        self.done(reason)

    def done(self, reason: str, images: list | None = None, image_tokens: int = 0) -> None:
        delta = self.stream.finish(self.generated)
        if delta and self.deltas:
            self._post("delta", delta)
        self._post("done", Outcome(self.stream.text, reason, self.request.prompt_tokens,
                                   len(self.generated) + len(self.opened) + image_tokens, images or []))

    def fail(self, error: Exception) -> None:
        self._post("error", error)

    def image_job(self) -> ImageJob:
        r = self.request
        return ImageJob(r.input_ids + self.generated + self.opened, r.pixel_values, r.temperature,
                        r.top_p, r.seed, self.cfg_scale)

    # ---- loop side ----------------------------------------------------------------------------------------
    def cancel(self) -> None:
        self.request.cancelled = True
