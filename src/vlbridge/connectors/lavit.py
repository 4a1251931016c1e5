"""`lavit`: LaVIT's dynamic visual tokenizer as a connector (variable tokens per image).

Understanding path (LaVIT's [image, text]): the selector keeps the informative patches, the merger folds the
dropped ones into them, and the *continuous* merger outputs ``[B, M_i, D]`` pass a projection (``proj_depth``
Linear layers, GELU between, as the ``mlp`` connector) to the LLM width. The model wraps each image's tokens
in the embeddings of ``[IMG]`` and ``[/IMG]`` (``wrap_tokens``), and adds those two tokens plus one token per
code to the vocabulary (``added_tokens``) so the same LLM can also *write* images as code ids.

The whole visual tokenizer (selector, merger, quantizer, feature and pixel decoders) lives inside the
connector so a saved model carries everything generation needs. It is trained in the `tokenizer` stage
(``vlbridge lavit tokenizer``). In the LLM stages the selection is deterministic (argmax; ``sample`` as an
option) and the selector, quantizer and decoders stay frozen: the code ids in the generation records are
fixed targets, and the codebook + decoders that paint them do not move (``stages``). ``train_merger`` lets the
merger learn from the LLM loss (LaVIT's understanding recipe trains LLM, merger and projection).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Stage, opt
from ..lavit.options import TokenizerOptions
from ..lavit.selector import MODES
from ..lavit.visual_tokenizer import DynamicVisualTokenizer, tokenizer_options
from ..lavit.vocabulary import IMG_CLOSE, IMG_OPEN, added_tokens
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class LavitOptions(TokenizerOptions):
    proj_depth: int = opt(2, "Linear layers of the projection to the LLM width (GELU between)")
    train_merger: bool = opt(False, "train the merger (and its input projection) through the LLM loss, as in "
                                    "LaVIT's understanding stage; false = the whole tokenizer stays frozen")
    selection: str = opt("argmax", "token selection: 'argmax' (deterministic) or 'sample'")
    tokenizer: str | None = opt(None, "a trained tokenizer dir (`vlbridge lavit tokenizer --out`) loaded when the "
                                      "model is built from its config (its options must match these); None = "
                                      "the tokenizer starts untrained (or comes from --init-from)")


class LavitConnector(Connector):
    Options = LavitOptions
    dynamic = True
    wrap_tokens = (IMG_OPEN, IMG_CLOSE)
    pre_stage = "tokenizer"

    def __init__(self, options: LavitOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        if options.selection not in MODES[1:]:
            raise ValueError(f"lavit connector: selection must be 'argmax' or 'sample', got {options.selection!r}")
        if options.proj_depth < 1:
            raise ValueError(f"lavit connector: proj_depth must be >= 1, got {options.proj_depth}")
        self.visual_tokenizer = DynamicVisualTokenizer(tokenizer_options(options), vis_dim, grid)
        width = options.width or vis_dim
        dims = [width] + [llm_dim] * options.proj_depth
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(d_in, d_out))
        self.proj = nn.Sequential(*layers)

    @classmethod
    def stages(cls, options: LavitOptions) -> dict[str, Stage]:
        """``tokenizer`` (the visual tokenizer alone, on frozen encoder features; run first), then the LLM stages,
        in which only the projection trains (and, with ``train_merger``, the merger and its input Linear): the
        selector's decisions, the codebook the generation records are written in, and the decoders that paint
        those codes stay as the tokenizer stage left them."""
        connector = ("connector.proj",) + (("connector.visual_tokenizer.inp", "connector.visual_tokenizer.merger")
                                          if options.train_merger else ())
        return {"tokenizer": Stage("tokenizer", trains=("connector.visual_tokenizer",), runner="lavit_tokenizer"),
                "align": Stage("align", trains=connector),
                "instruct": Stage("instruct", trains=connector + ("llm",))}

    def load_parts(self) -> None:
        """Load the trained tokenizer named by ``options.tokenizer``, after checking it is the one these
        options describe (same sizes and switches, feature width and patch grid)."""
        if not self.options.tokenizer:
            return
        trained = DynamicVisualTokenizer.load(self.options.tokenizer)
        wanted = dataclasses.asdict(tokenizer_options(self.options))
        differ = {k: (v, wanted[k]) for k, v in dataclasses.asdict(trained.options).items() if wanted[k] != v}
        if differ:
            raise ValueError(f"lavit connector: the tokenizer in {self.options.tokenizer} was trained with other "
                             "options (trained, here): " + ", ".join(f"{k}={a!r}/{b!r}" for k, (a, b) in differ.items())
                             + "; pass its options to the connector, or train a tokenizer with these")
        if (trained.vis_dim, trained.grid) != (self.vis_dim, self.grid):
            raise ValueError(f"lavit connector: the tokenizer in {self.options.tokenizer} reads {trained.vis_dim}-d "
                             f"features on a {trained.grid} grid, this vision encoder gives {self.vis_dim}-d on "
                             f"{self.grid}: train the tokenizer on this encoder's features")
        self.visual_tokenizer.load_state_dict(trained.state_dict())

    def added_tokens(self) -> list[str]:
        return added_tokens(self.options.codebook_size)

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        tok, x = self.visual_tokenizer, feats.features                  # x [B, N, D_vis]
        tok._check(x)
        with torch.no_grad():
            sel = tok.select(x, self.options.selection)                  # the selector is never trained here
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.options.train_merger):
            merged = tok.merge(x, sel)                                   # tokens [B, M_max, width]
        tokens = self.proj(merged.tokens)                                # [B, M_max, D_llm]
        return ConnectorOutput(tokens=tokens, lengths=merged.lengths,
                               extras={"positions": merged.positions, "keep_prob": sel.keep_prob})

    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def flops(self, batch: int = 1) -> int:
        """Selector + merger + projection Linears over all patches (an upper bound: M <= N)."""
        n = self.num_tokens()
        mods = [self.visual_tokenizer.selector, self.visual_tokenizer.inp, self.visual_tokenizer.merger, self.proj]
        return batch * sum(2 * m.in_features * m.out_features * n for mod in mods for m in mod.modules()
                           if isinstance(m, nn.Linear))

