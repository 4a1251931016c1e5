"""Tokenizers: the LLM's own, or a tiny byte-level BPE trained in-process on the training text.

The tiny tokenizer splits digits one per token (so box coordinates and counts are spelled digit by digit)
and keeps every chat-template marker and ``<image>`` as a single special token.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from ..data.template import IMAGE_TOKEN, ChatTemplate

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: Iterable[str], template: ChatTemplate, vocab_size: int = 640) -> PreTrainedTokenizerFast:
    specials = [PAD, BOS, EOS, IMAGE_TOKEN] + template.special_tokens()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=[IMAGE_TOKEN] + template.special_tokens())


def load_tokenizer(path: str):
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()     # AutoTokenizer peeks at config.json, whose model_type is vlbridge's own
    try:
        tok = AutoTokenizer.from_pretrained(path)
    finally:
        hf_logging.set_verbosity(level)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
