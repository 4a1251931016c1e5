"""Assemble a VLBridgeModel from a ModelConfig: tokenizer (loaded, or trained on the data), vision, connector, LLM."""
from __future__ import annotations

from typing import Iterable

from ..config import ModelConfig
from ..data.template import TOKENIZER_TEMPLATE, get_template
from ..errors import UserError
from .tokenizer import load_tokenizer, train_tokenizer
from .vlm import VLBridgeModel


def build_tokenizer(cfg: ModelConfig, texts: Iterable[str] | None = None):
    source = cfg.llm.tokenizer or cfg.llm.name_or_path
    if source:
        return load_tokenizer(source)
    if texts is None:
        raise ValueError("a from-scratch LLM needs training text to train its tokenizer (or set llm.tokenizer)")
    if cfg.llm.chat_template == TOKENIZER_TEMPLATE:
        raise UserError("llm.chat_template 'tokenizer' uses the LLM tokenizer's own template: give the LLM "
                        "(llm.name_or_path) or its tokenizer (llm.tokenizer), or choose plain, chatml or vicuna")
    return train_tokenizer(texts, get_template(cfg.llm.chat_template), cfg.llm.tokenizer_vocab)


def build_model(cfg: ModelConfig, texts: Iterable[str] | None = None) -> VLBridgeModel:
    """A new model from its config; connector parts trained separately (named in its options) are loaded."""
    model = VLBridgeModel(cfg, build_tokenizer(cfg, texts))
    model.connector.load_parts()
    return model
