"""OpenAI messages -> vlbridge turns and the images they carry.

Each message becomes one ``Turn``; a message given as content parts is its parts in order, text as it is
and each image as ``<image>``, joined by newlines (so ``[image, text]`` reads ``"<image>\\ntext"``, as
``Predictor.ask`` builds it). ``developer`` counts as ``system``. Images are allowed in user messages only,
and text may not contain ``<image>`` itself (images come as ``image_url`` parts).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data.records import Turn
from ..data.template import IMAGE_TOKEN
from .errors import bad_request
from .schema import ImagePart, Message


@dataclass
class ImageRef:
    url: str
    param: str            # where it sits in the request, for error messages


def to_turns(messages: list[Message]) -> tuple[list[Turn], list[ImageRef]]:
    turns, images = [], []
    for i, msg in enumerate(messages):
        role = "system" if msg.role == "developer" else msg.role
        parts = [msg.content or ""] if not isinstance(msg.content, list) else msg.content
        pieces = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content" + (f"[{j}]" if isinstance(msg.content, list) else "")
            if isinstance(part, ImagePart):
                if role != "user":
                    raise bad_request(f"images are allowed in user messages only (a {msg.role} message has one)",
                                      where, "invalid_message")
                images.append(ImageRef(part.image_url.url, where))
                pieces.append(IMAGE_TOKEN)
                continue
            text = part if isinstance(part, str) else part.text
            if IMAGE_TOKEN in text:
                raise bad_request(f"text may not contain {IMAGE_TOKEN!r}; send images as image_url parts", where,
                                  "invalid_message")
            pieces.append(text)
        turns.append(Turn(role, "\n".join(pieces)))
    if turns[-1].role != "user":
        raise bad_request("the last message must be a user message", f"messages[{len(turns) - 1}].role",
                          "invalid_message")
    return turns, images
