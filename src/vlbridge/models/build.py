"""Assemble a VLBridgeModel from a ModelConfig: tokenizer (loaded, or trained on the data), vision, connector, LLM."""
from __future__ import annotations

from typing import Iterable

from ..config import ModelConfig
from ..data.template import get_template
from .tokenizer import load_tokenizer, train_tokenizer
from .vlm import VLBridgeModel


def build_tokenizer(cfg: ModelConfig, texts: Iterable[str] | None = None):
    source = cfg.llm.tokenizer or cfg.llm.name_or_path
    if source:
        return load_tokenizer(source)
    if texts is None:
        raise ValueError("a from-scratch LLM needs training text to train its tokenizer (or set llm.tokenizer)")
    return train_tokenizer(texts, get_template(cfg.llm.chat_template), cfg.llm.tokenizer_vocab)


def build_model(cfg: ModelConfig, texts: Iterable[str] | None = None) -> VLBridgeModel:
    """A new model from its config; connector parts trained separately (named in its options) are loaded."""
    model = VLBridgeModel(cfg, build_tokenizer(cfg, texts))
    model.connector.load_parts()
    return model
