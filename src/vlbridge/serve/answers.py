"""How a request's generated ids become answer text, and the ``vlbridge`` extension of a grounded answer.

``renderer`` returns ``ids -> text``: the model's decoding, and for a region-token model (``groma``) each
generated ``<roi><rj></roi>`` written as region j's box (the same text ``VLBridgeModel.decode_answers``
gives; the region list is computed once, when the request is admitted). ``extension`` reads the boxes of
any answer — written by a text-coordinate model or rewritten from region tokens — as
``{"boxes": [{"phrase": ..., "box": [x1, y1, x2, y2]}]}`` (normalised corners).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..grounding.phrases import grounded_phrases
from ..grounding.region_tokens import boxes_to_text


def renderer(model, input_ids: list[int], pixel_values: torch.Tensor | None) -> Callable[[list[int]], str]:
    regions = getattr(model, "regions", None)
    if regions is None or pixel_values is None:
        return model.decode
    boxes = regions.region_boxes(model, [torch.tensor(input_ids)], pixel_values)[0]
    if boxes is None:
        return model.decode
    listed = boxes.tolist()
    return lambda ids: boxes_to_text(model.decode(ids), listed)


def extension(text: str) -> dict | None:
    boxes = [{"phrase": phrase, "box": [round(float(v), 4) for v in box]} for phrase, box in grounded_phrases(text)]
    return {"boxes": boxes} if boxes else None
