"""Helpers for the server and export tests: weights redrawn so answers depend on the input, a live server on
loopback, forced tokens, an overfit grounded model.

``answering_model`` redraws the LLM and connector weights at std 0.2: at the default init a random LLM repeats
one token whatever the input, which would make "batched equals alone" trivially true.
"""
from __future__ import annotations

import base64
import copy
import io
import socket
import threading
import time

import pytest
import torch
import uvicorn
from support import tiny_model_config
from PIL import Image

from support import redraw  # noqa: F401  (re-exported for the serve tests)
from vlbridge.data.records import load_records
from vlbridge.models.build import build_model
from vlbridge.serve.app import create_app
from vlbridge.serve.config import ImageLimits, ServeConfig


def png_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn on 127.0.0.1 in a thread, serving ``create_app(model, config)``."""

    def __init__(self, model, config: ServeConfig):
        self.config = config
        self.app = create_app(model, config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def scheduler(self):
        return self.app.state.scheduler


def serve_config(**kw) -> ServeConfig:
    images = kw.pop("images", None) or ImageLimits()
    kw.setdefault("default_max_tokens", 12)
    return ServeConfig(model_name="tiny", images=images, **kw)


GROUNDED_ANSWER = "a red circle [0.125,0.250,0.500,0.625] and a blue square [0.550,0.500,0.900,0.850]"


def overfit(model, turns, image, steps: int = 400, lr: float = 1e-2):
    """Train a copy of ``model`` on one conversation until it answers it word for word (a model that really
    writes boxes, for the tests that need one); raises if it has not learnt it."""
    from vlbridge.data.dataset import Batch
    from vlbridge.generate import GenerationConfig
    from vlbridge.inference import Predictor, Query
    m = copy.deepcopy(model).train()
    ids, labels = m.builder.build(turns)
    pixels = m.vision.image_transform()(image)[None]
    batch = Batch([torch.tensor(ids)], [torch.tensor(labels)], pixels, [1])
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    torch.manual_seed(0)
    for step in range(steps):
        loss = m(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-3:
            break
    m.eval()
    answer = Predictor(m, GenerationConfig(max_new_tokens=96)).answer([Query(turns[:-1], [image])])[0]
    if answer != turns[-1].text:
        raise RuntimeError(f"the model did not learn the answer in {steps} steps (loss {loss.item():.4f}): {answer!r}")
    return m


def force(schedule: dict[int, int]):
    """A logits processor that makes the t-th generated token ``schedule[t]`` (as if the model chose it)."""
    def proc(logits, generated):
        out = logits.clone()
        t = generated.shape[1]
        if t in schedule:
            out[:, schedule[t]] += 1e4
        return out
    return proc


LAVIT_OPTIONS = {"codebook_size": 16, "image_size": 32, "heads": 2, "merger_layers": 1, "decoder_layers": 1,
                 "pixel_channels": [16, 8, 8]}


