"""How a request's generated ids become answer text, and the ``vlbridge`` extension of a grounded answer.

``renderer`` returns ``ids -> text``: the model's decoding read back by its connector (``decode_answer``), e.g.
for a region-token model (``groma``) each generated ``<roi><rj></roi>`` written as region j's box, from the
region list the prompt's embedding recorded at prefill (``EngineRequest.info``), as
``VLBridgeModel.decode_answers`` does. ``extension`` reads the boxes of
any answer — written by a text-coordinate model or rewritten from region tokens — as
``{"boxes": [{"phrase": ..., "box": [x1, y1, x2, y2]}]}`` (normalised corners).
"""
from __future__ import annotations

from typing import Callable

from ..data.grounded_phrases import grounded_phrases


def renderer(model, request) -> Callable[[list[int]], str]:
    """``ids -> text`` for one engine request; reads ``request.info`` (set at prefill) when it decodes."""
    return lambda ids: model.connector.decode_answer(model.decode(ids), request.info)


def extension(text: str) -> dict | None:
    boxes = [{"phrase": phrase, "box": [round(float(v), 4) for v in box]} for phrase, box in grounded_phrases(text)]
    return {"boxes": boxes} if boxes else None
