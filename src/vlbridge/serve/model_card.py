"""What the server says about its model (``GET /v1/models``, the web demo's card): parts, tokens, parameters."""
from __future__ import annotations

from .image_outputs import WRITERS


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_card(model, name: str, max_images: int | None = None) -> dict:
    conn = model.connector
    return {
        "name": name,
        "connector": model.cfg.connector.name,
        "connector_options": conn.options_dict(),
        "visual_tokens_per_image": model.visual_tokens_per_image(),
        "dynamic_tokens": bool(getattr(conn, "dynamic", False)),
        "vision": model.vision.model.config.model_type,
        "image_size": model.vision.image_size,
        "llm": (model.llm.get_base_model() if model.lora else model.llm).config.model_type,
        "chat_template": model.template.name,
        "max_length": model.cfg.llm.max_length,
        "parameters": {"total": _params(model), "vision": _params(model.vision),
                       "connector": _params(conn), "llm": _params(model.llm)},
        "region_tokens": model.connector.region_tokens,
        "generates_images": model.cfg.connector.name in WRITERS,
        "max_images_per_request": max_images,
    }
