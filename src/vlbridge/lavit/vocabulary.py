"""The visual vocabulary in the LLM: [IMG], [/IMG] and one token per code, and id suppression in generation.

``added_tokens(codebook_size)`` lists the token strings the ``lavit`` connector asks the model to add (once,
in this order, so the code ids are contiguous). ``VisualVocab`` maps between code indices and LLM ids.
``ModalityMask`` is a logits processor for ``vlbridge.generate.generate`` (and the CFG loop): inside an image
(after [IMG], until [/IMG]) only code ids and [/IMG] may be generated, with at least ``min_image_tokens``
codes and at most ``max_image_tokens``; outside an image every code id and [/IMG] are suppressed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError

IMG_OPEN, IMG_CLOSE = "[IMG]", "[/IMG]"


def code_token(i: int) -> str:
    return f"<v{i}>"


def added_tokens(codebook_size: int) -> list[str]:
    return [IMG_OPEN, IMG_CLOSE] + [code_token(i) for i in range(codebook_size)]


def image_text(codes: list[int]) -> str:
    """An image as text: "[IMG]<v3><v17>...[/IMG]" (each piece is one added token)."""
    return IMG_OPEN + "".join(code_token(c) for c in codes) + IMG_CLOSE


@dataclass(frozen=True)
class VisualVocab:
    open_id: int
    close_id: int
    first_code_id: int
    size: int

    @classmethod
    def from_tokenizer(cls, tokenizer, size: int) -> "VisualVocab":
        vocab = tokenizer.get_vocab()
        missing = [t for t in (IMG_OPEN, IMG_CLOSE, code_token(0), code_token(size - 1)) if t not in vocab]
        if missing:
            raise ValueError(f"the tokenizer lacks the LaVIT tokens {missing} (was the model built with the "
                             "lavit connector?)")
        ids = [vocab[code_token(i)] for i in range(size)]
        if ids != list(range(ids[0], ids[0] + size)):
            raise ValueError("the LaVIT code tokens do not have contiguous ids")
        return cls(vocab[IMG_OPEN], vocab[IMG_CLOSE], ids[0], size)

    @classmethod
    def from_model(cls, model) -> "VisualVocab":
        size = getattr(model.connector.options, "codebook_size", None)
        if size is None:
            raise UserError(f"model connector {model.cfg.connector.name!r} is not a LaVIT connector")
        return cls.from_tokenizer(model.tokenizer, size)

    def code_ids(self) -> range:
        return range(self.first_code_id, self.first_code_id + self.size)

    def to_ids(self, codes: list[int]) -> list[int]:
        return [self.first_code_id + c for c in codes]

    def to_codes(self, ids: list[int]) -> list[int]:
        """Code indices of the code ids in `ids` (other ids are skipped)."""
        return [t - self.first_code_id for t in ids if self.first_code_id <= t < self.first_code_id + self.size]


class ModalityMask:
    """Logits processor ``(logits [B, V], generated [B, t]) -> logits`` separating text and image ids."""

    def __init__(self, vocab: VisualVocab, start_in_image: bool = False, min_image_tokens: int = 1,
                 max_image_tokens: int | None = None):
        self.vocab, self.start_in_image = vocab, start_in_image
        self.min_tokens, self.max_tokens = min_image_tokens, max_image_tokens

    def state(self, row: list[int]) -> tuple[bool, int]:
        """(inside an image?, codes generated since it opened) after the generated ids `row`."""
        inside, n = self.start_in_image, 0
        for t in row:
            if t == self.vocab.open_id:
                inside, n = True, 0
            elif t == self.vocab.close_id:
                inside, n = False, 0
            elif inside:
                n += 1
        return inside, n

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        codes = torch.zeros(logits.shape[-1], dtype=torch.bool)
        codes[self.vocab.first_code_id: self.vocab.first_code_id + self.vocab.size] = True
        out = logits.clone()
        for b, row in enumerate(generated.tolist()):
            inside, n = self.state(row)
            if inside:
                allowed = codes.clone()
                if n >= self.min_tokens:
                    allowed[self.vocab.close_id] = True
                if self.max_tokens is not None and n >= self.max_tokens:
                    allowed = torch.zeros_like(codes)
                    allowed[self.vocab.close_id] = True
                out[b] = out[b].masked_fill(~allowed, float("-inf"))
            else:
                blocked = codes.clone()
                blocked[self.vocab.close_id] = True
                out[b] = out[b].masked_fill(blocked, float("-inf"))
        return out


GENERATE_WORD = "Draw"


def generation_prompt(text: str) -> str:
    """The user turn of a text->image request ("Draw a red circle"; "Draw" alone = unconditional)."""
    return f"{GENERATE_WORD} {text.strip()}".strip()
