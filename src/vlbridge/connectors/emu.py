"""`emu`: Emu's visual side as a connector — M continuous embeddings per image that the LLM reads and regresses.

Each image becomes ``[IMG]`` + M embeddings + ``[/IMG]`` at its place in the text (``wrap_tokens``). The M
embeddings come from the Causal Transformer (``emu.causal_transformer``: M learned queries, causal
self-attention, cross-attention to the LayerNorm'd encoder features, Linear to the LLM width; Emu: 32
queries, 12 layers, width 768) or, with ``pool``, from Emu2's simpler path: the patch grid average-pooled to
M tokens (a sqrt(M) x sqrt(M) grid) and a Linear to the LLM width.

Images the sequence *produces* (every image of a document record, an image in an assistant turn) are also
regressed (``hidden_objective``): the LLM's last hidden state at ``[IMG]`` and at the first M-1 embeddings
predicts the next embedding through a Linear head (``emu.regression``), the state at the last embedding
predicts ``[/IMG]`` by the next-token loss, so L = CE(text) + lambda * regression. Targets are the connector's
own outputs, detached by default; their variance, and the share of it that differs from image to image, are
logged, and a run whose embeddings stop depending on the image is stopped (``emu.regression``).

The visual decoder that paints M embeddings (``decoder``: a one-pass palette decoder, or a flow-matching
U-Net) lives in the connector so a saved model carries everything generation needs; it trains in its own
``decoder`` stage after the LLM stages (``vlbridge emu decoder``), and stays frozen in them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Stage, opt
from ..emu.causal_transformer import POSITIONS, CausalTransformer
from ..emu.flow_decoder import FlowDecoder
from ..emu.palette_decoder import PaletteDecoder
from ..emu.regression import (LOSSES, CollapseGuard, RegressionHead, image_share, mean_variance, regression_loss,
                              regression_positions)
from ..data.template import IGNORE_INDEX
from .base import Arranged, Connector, ConnectorOutput, ImageSlot, ObjectiveTerms, SequenceContext, VisualFeatures

IMG_OPEN, IMG_CLOSE = "[IMG]", "[/IMG]"
DECODERS = ("palette", "flow")


@dataclass
class EmuOptions:
    num_queries: int = opt(32, "M: visual embeddings per image (Emu: 32; with `pool` a square number)", at_least=1)
    pool: bool = opt(False, "Emu2's connector instead of the Causal Transformer: the patch grid average-pooled to "
                            "M tokens, then a Linear to the LLM width")
    layers: int = opt(12, "Causal Transformer layers (Emu: 12)")
    hidden: int = opt(768, "Causal Transformer width (Emu: 768)")
    heads: int = opt(12, "attention heads (Emu: 12)")
    mlp_ratio: int = opt(4, "FFN width = mlp_ratio * hidden")
    position: str = opt("sincos", "2-D position embedding added to the features the queries read: 'sincos' "
                                  "(fixed), 'learned' or 'none' (a ViT's features already carry positions)",
                        choices=POSITIONS)
    regression_weight: float = opt(1.0, "lambda: weight of the regression of produced images' embeddings "
                                        "(L = CE + lambda * regression; 0 = the plain next-token loss)", at_least=0)
    regression_loss: str = opt("mse", "'mse' (Emu) or 'cosine' (1 - cosine similarity per embedding)", choices=LOSSES)
    detach_targets: bool = opt(True, "regression targets carry no gradient into the connector (Emu); false lets "
                                     "it flow into the connector through the targets too")
    input_noise: float = opt(0.0, "training only: Gaussian noise (a share of the embeddings' std) on the *inputs* "
                                   "of produced images, so predicting the next embedding cannot lean on copying the "
                                   "previous ones and has to use the context (0 = none, as Emu)", at_least=0)
    collapse_ratio: float = opt(0.01, "stop training when the share of the targets' variance that differs from image "
                                      "to image stays below this (0 = never)")
    collapse_patience: int = opt(20, "training batches in a row below collapse_ratio before the run stops")
    decoder: str = opt("palette", "visual decoder: 'palette' (one pass, a palette colour per pixel) or 'flow' "
                                  "(flow-matching U-Net, `decoder_steps` passes)", choices=DECODERS)
    decoder_width: int = opt(128, "decoder width (embedding-to-grid transformer; the flow U-Net's coarsest level)")
    decoder_layers: int = opt(2, "decoder transformer layers (patch queries reading the M embeddings)")
    decoder_heads: int = opt(4, "decoder attention heads")
    decoder_channels: list[int] = opt([64, 32, 32], "channels of the decoder's conv stages, coarse to fine for the "
                                                    "palette decoder, fine to coarse for the flow U-Net")
    decoder_steps: int = opt(16, "flow decoder: Euler steps per image")
    palette: int = opt(16, "palette decoder: colours")
    image_size: int | None = opt(None, "side of the images the decoder paints; None = the encoder's input size")


class EmuConnector(Connector):
    Options = EmuOptions
    wrap_tokens = (IMG_OPEN, IMG_CLOSE)
    uses_hidden_states = True

    def __init__(self, options: EmuOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        M = options.num_queries
        if M < 1:
            raise ValueError(f"emu connector: num_queries must be >= 1, got {M}")
        if options.regression_loss not in LOSSES:
            raise ValueError(f"emu connector: regression_loss must be one of {LOSSES}, got {options.regression_loss!r}")
        if options.regression_weight < 0:
            raise ValueError(f"emu connector: regression_weight must be >= 0, got {options.regression_weight}")
        if options.decoder not in DECODERS:
            raise ValueError(f"emu connector: decoder must be one of {DECODERS}, got {options.decoder!r}")
        if options.pool:
            side = math.isqrt(M)
            if side * side != M or side > min(self.grid):
                raise ValueError(f"emu connector: pool needs num_queries a square number of at most the patch grid "
                                 f"{self.grid}, got {M}")
            self.pool_side = side
            self.proj = nn.Linear(vis_dim, llm_dim)
        else:
            self.former = CausalTransformer(vis_dim, llm_dim, M, options.hidden, options.layers, options.heads,
                                            options.mlp_ratio, options.position, self.grid)
        self.regression = RegressionHead(llm_dim)
        self.decoder = self._decoder(options.image_size) if options.image_size else None   # else in bind_vision
        self.guard = CollapseGuard(options.collapse_ratio, options.collapse_patience)

    def bind_vision(self, tower) -> None:
        """Without an ``image_size`` option the decoder paints images of the encoder's input size."""
        if self.decoder is None:
            self.decoder = self._decoder(tower.image_size)

    def _decoder(self, image_size: int) -> nn.Module:
        o = self.options
        common = dict(llm_dim=self.llm_dim, num_tokens=o.num_queries, grid=self.grid, image_size=image_size,
                      dim=o.decoder_width, layers=o.decoder_layers, heads=o.decoder_heads, channels=o.decoder_channels,
                      feature_dim=self.vis_dim)
        if o.decoder == "flow":
            return FlowDecoder(**common, steps=o.decoder_steps)
        return PaletteDecoder(**common, palette=o.palette)

    # ---- understanding: features -> M embeddings ------------------------------------------------------------
    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        x = feats.features                                                   # [B, N, D_vis]
        if self.options.pool:
            rows, cols = feats.grid
            patches = x[:, x.shape[1] - rows * cols:]                        # CLS/prefix tokens are not pooled
            grid = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], rows, cols)
            pooled = F.adaptive_avg_pool2d(grid, self.pool_side).flatten(2).transpose(1, 2)   # [B, M, D_vis]
            return ConnectorOutput(tokens=self.proj(pooled))                 # [B, M, D_llm]
        return ConnectorOutput(tokens=self.former(x))                        # [B, M, D_llm]

    def num_tokens(self) -> int:
        return self.options.num_queries

    def added_tokens(self) -> list[str]:
        return [IMG_OPEN, IMG_CLOSE]

    def arrange(self, ctx: SequenceContext, input_ids, labels, feats, out, visual) -> Arranged:
        """With ``input_noise`` in training, the embeddings a produced image feeds the LLM get Gaussian noise (its
        regression targets stay clean: ``hidden_objective`` reads the connector's own outputs)."""
        if not (ctx.training and labels is not None and self.options.input_noise > 0):
            return Arranged(list(input_ids), labels, visual)
        produced = [bool(lab[ids == ctx.image_token_id][k] != IGNORE_INDEX)
                    for ids, lab in zip(input_ids, labels) for k in range(int((ids == ctx.image_token_id).sum()))]
        scale = self.options.input_noise * float(out.tokens.detach().std())
        noisy = []
        for v, made in zip(visual, produced):
            if made:
                v = torch.cat([v[:1], v[1:-1] + scale * torch.randn_like(v[1:-1]), v[-1:]])   # [IMG] e_1..e_M [/IMG]
            noisy.append(v)
        return Arranged(list(input_ids), labels, noisy)

    # ---- generation: the objective on hidden states ---------------------------------------------------------
    def regress(self, hidden: torch.Tensor) -> torch.Tensor:
        """The next visual embedding predicted from hidden states [..., D]."""
        return self.regression(hidden)

    def hidden_objective(self, hidden: torch.Tensor, slots: list[ImageSlot], visual: list[torch.Tensor],
                         ctx: SequenceContext) -> ObjectiveTerms:
        """lambda * regression of each produced image's M embeddings from the hidden states before them; logs the
        unweighted loss and the targets' variance, and stops a training run whose targets collapse."""
        rows, positions, produced = regression_positions(slots, self.options.num_queries)
        if not produced:
            return ObjectiveTerms()
        targets = torch.stack([visual[i] for i in produced])                 # [n, M, D]
        target = targets.flatten(0, 1)                                       # [n*M, D]
        if self.options.detach_targets:
            target = target.detach()
        share = image_share(targets)
        stats = {"target_var": mean_variance(target)}
        if share is not None:
            stats["target_image_share"] = share
        if ctx.training:
            self.guard.check(share)
        if self.options.regression_weight == 0:
            return ObjectiveTerms(stats=stats)
        pred = self.regress(hidden[rows, positions])                         # [n*M, D]
        loss = regression_loss(pred, target.to(pred.dtype), self.options.regression_loss)
        stats["regression"] = float(loss.detach())
        return ObjectiveTerms({"regression": self.options.regression_weight * loss}, stats)

    # ---- stages ---------------------------------------------------------------------------------------------
    @classmethod
    def stages(cls, options: EmuOptions) -> dict[str, Stage]:
        """``align`` (connector and regression head) and ``instruct`` (+ the LLM), the visual decoder frozen in
        both; ``generate``: the LLM and the regression head learn to produce images while the connector that makes
        the targets stays frozen (so the targets cannot collapse; start it from a model whose connector learnt to
        read, e.g. an ``instruct`` run); then ``decoder``: the decoder alone learns to paint the trained connector's
        embeddings of the data's images (``vlbridge emu decoder``; run it after the LLM stages)."""
        parts = ("connector",)
        frozen = ("connector.decoder",)
        return {"align": Stage("align", trains=parts, frozen=frozen),
                "instruct": Stage("instruct", trains=parts + ("llm",), frozen=frozen),
                "generate": Stage("generate", trains=("connector.regression", "llm")),
                "decoder": Stage("decoder", trains=("connector.decoder",), runner="emu_decoder")}

    OBJECTIVE_OPTIONS = ("regression_weight", "regression_loss", "detach_targets", "input_noise", "collapse_ratio",
                         "collapse_patience")

    def set_objective(self, **options) -> None:
        """Change the objective's options of a built connector (none of them shapes a module), e.g. to switch
        the regression on for the ``generate`` stage of a model trained without it."""
        bad = sorted(set(options) - set(self.OBJECTIVE_OPTIONS))
        if bad:
            raise ValueError(f"emu connector: {bad} are not objective options; these are: {list(self.OBJECTIVE_OPTIONS)}")
        merged = dataclasses.replace(self.options, **options)
        if merged.regression_loss not in LOSSES or merged.regression_weight < 0:
            raise ValueError(f"emu connector: regression_loss must be one of {LOSSES} and regression_weight >= 0")
        self.options = merged
        self.guard = CollapseGuard(merged.collapse_ratio, merged.collapse_patience)

    def flops(self, batch: int = 1) -> int:
        """Linears of the Causal Transformer (queries and memory) or of the pooled projection (the decoder and the
        regression head are not on the understanding path)."""
        n, M = self.grid[0] * self.grid[1], self.options.num_queries
        if self.options.pool:
            return batch * 2 * self.vis_dim * self.llm_dim * M
        total = 0
        for name, m in self.former.named_modules():
            if isinstance(m, nn.Linear):
                tokens = n if name.endswith("cross_attn.kv") else M
                total += 2 * m.in_features * m.out_features * tokens
        return batch * total
