"""The request body of ``POST /v1/chat/completions`` (OpenAI's schema) and the response objects.

Unknown fields are ignored (as OpenAI clients send many); known fields are type-checked strictly, so a
string where a number belongs is a 400, not a silent conversion. Responses are plain dicts in OpenAI's
shape, with one extension object ``vlbridge`` (see docs/serve.md): ``boxes`` of grounded answers.
"""
from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ImageURL(_Body):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class VlbridgeOptions(_Body):
    """Request extension: options OpenAI's schema has no field for."""
    cfg_scale: float | None = Field(None, ge=1.0, le=20.0)    # classifier-free guidance of generated images
    ignore_eos: bool = False                                   # generate max_tokens, past the end of the answer
    task_type: str | None = None                               # the routing type of a mixture of adapters (lion)


class ChatRequest(_Body):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    vlbridge: VlbridgeOptions | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(cid: str, model: str, content, finish_reason: str, usage_: dict, extension: dict | None) -> dict:
    message = {"role": "assistant", "content": content}
    if extension:
        message["vlbridge"] = extension
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage_}


def chunk(cid: str, model: str, delta: dict, finish_reason: str | None = None, usage_: dict | None = None,
          with_usage_field: bool = False) -> dict:
    out = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
    if with_usage_field:
        out["usage"] = usage_
    return out
