"""`qformer`: BLIP-2's Querying Transformer, optionally instruction-aware (InstructBLIP). M = num_queries.

Learned queries ``[Q, H]`` (initialised N(0, 0.02)) pass through a BERT-style stack with post-LN
residuals. Every layer: self-attention among the queries -> ``LN(h + attn)``; layers 0, k, 2k, ...
(``k = cross_attention_every``; BLIP-2: 2) also cross-attend from the queries to the visual features
-> ``LN(h + attn)``; then an FFN -> ``LN(h + ffn)``. The visual features first go through a LayerNorm
(BLIP-2's ``ln_vision``); every token the encoder gives is attended to, so a kept CLS prefix is fine.
The query outputs are projected to the LLM width (BLIP-2's language projection).

Instruction-aware mode (InstructBLIP): the instruction tokens of the user turn that holds the image are
appended after the queries for the self-attention (bidirectional; padding masked). Only the queries
cross-attend to the image and only the query outputs go to the LLM. As in BLIP-2's Q-Former, text tokens
have their own FFN, separate from the queries' (the last layer has none: its text outputs are unused).
InstructBLIP embeds the instruction with the Q-Former's own BERT embeddings; here the model passes the
LLM's token embeddings (``VisualFeatures.text``, an object with ``embeds [B, T, D_llm]`` and ``mask [B, T]``,
True = real token; filled because ``wants_text``), which are projected to the Q-Former width and get
learned positions. No text (``text is None``) = an empty instruction. Instructions longer than
``max_text_len`` keep their first ``max_text_len`` tokens.

Defaults are BLIP-2's Q-Former (BERT-base: 12 layers, width 768, 12 heads, FFN 3072, 32 queries, cross-
attention every 2nd layer). BLIP-2 trains with dropout 0.1; the default here is 0 (like the other
connectors); set ``dropout`` for the paper's value.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures


@dataclass
class QFormerOptions:
    num_queries: int = opt(32, "learned query tokens = visual tokens per image (BLIP-2: 32)")
    hidden: int = opt(768, "Q-Former width (BLIP-2: BERT-base, 768)")
    layers: int = opt(12, "Q-Former layers (BLIP-2: 12)")
    heads: int = opt(12, "attention heads (BLIP-2: 12)")
    intermediate: int = opt(3072, "FFN width (BLIP-2: 3072)")
    cross_attention_every: int = opt(2, "cross-attention in layers 0, k, 2k, ... (BLIP-2: 2)")
    instruction_aware: bool = opt(False, "InstructBLIP: the instruction joins the queries' self-attention")
    max_text_len: int = opt(128, "instruction tokens kept (instruction-aware mode)")
    dropout: float = opt(0.0, "attention and hidden dropout (BLIP-2: 0.1)")
    layer_norm_eps: float = opt(1e-12, "BERT's LayerNorm epsilon")


class PostLNFeedForward(nn.Module):
    """BERT's intermediate + output: ``LN(x + W2 GELU(W1 x))``."""

    def __init__(self, hidden: int, intermediate: int, dropout: float, eps: float):
        super().__init__()
        self.up, self.down = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)
        self.act, self.drop, self.norm = nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.down(self.act(self.up(x)))))


class QFormerLayer(nn.Module):
    def __init__(self, o: QFormerOptions, vis_dim: int, cross: bool, text_ffn: bool):
        super().__init__()
        h = o.hidden
        self.self_attn = nn.MultiheadAttention(h, o.heads, dropout=o.dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(h, eps=o.layer_norm_eps)
        self.cross_attn = (nn.MultiheadAttention(h, o.heads, dropout=o.dropout, kdim=vis_dim, vdim=vis_dim,
                                                 batch_first=True) if cross else None)
        self.cross_norm = nn.LayerNorm(h, eps=o.layer_norm_eps) if cross else None
        self.query_ffn = PostLNFeedForward(h, o.intermediate, o.dropout, o.layer_norm_eps)
        self.text_ffn = PostLNFeedForward(h, o.intermediate, o.dropout, o.layer_norm_eps) if text_ffn else None
        self.drop = nn.Dropout(o.dropout)

    def forward(self, h: torch.Tensor, n_queries: int, visual: torch.Tensor,
                padding: torch.Tensor | None) -> torch.Tensor:
        # h [B, Q+T, H] (queries first, then instruction tokens); visual [B, N, D_vis]; padding [B, Q+T] True = pad
        a = self.self_attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        h = self.self_norm(h + self.drop(a))
        q, t = h[:, :n_queries], h[:, n_queries:]                        # [B, Q, H], [B, T, H]
        if self.cross_attn is not None:
            c = self.cross_attn(q, visual, visual, need_weights=False)[0]  # [B, Q, H]
            q = self.cross_norm(q + self.drop(c))
        q = self.query_ffn(q)
        if t.shape[1] and self.text_ffn is not None:
            t = self.text_ffn(t)
        return torch.cat([q, t], 1)                                      # [B, Q+T, H]


class QFormerConnector(Connector):
    Options = QFormerOptions
    wants_text = False                 # set per instance: True in instruction-aware mode

    def __init__(self, options: QFormerOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        o = options
        for name in ("num_queries", "hidden", "layers", "heads", "intermediate", "cross_attention_every",
                     "max_text_len"):
            if getattr(o, name) < 1:
                raise ValueError(f"qformer connector: {name} must be >= 1, got {getattr(o, name)}")
        if o.hidden % o.heads:
            raise ValueError(f"qformer connector: hidden ({o.hidden}) must be divisible by heads ({o.heads})")
        self.wants_text = o.instruction_aware        # the model fills VisualFeatures.text only when asked
        self.queries = nn.Parameter(torch.randn(1, o.num_queries, o.hidden) * 0.02)   # [1, Q, H]
        self.vision_norm = nn.LayerNorm(vis_dim)                                      # BLIP-2's ln_vision
        self.embed_norm = nn.LayerNorm(o.hidden, eps=o.layer_norm_eps)
        self.embed_drop = nn.Dropout(o.dropout)
        if o.instruction_aware:
            self.text_proj = nn.Linear(llm_dim, o.hidden)
            self.text_pos = nn.Parameter(torch.randn(o.max_text_len, o.hidden) * 0.02)  # [T_max, H]
        self.layers = nn.ModuleList(QFormerLayer(o, vis_dim, cross=self.has_cross_attention(i),
                                                 text_ffn=o.instruction_aware and i < o.layers - 1)
                                    for i in range(o.layers))
        self.proj = nn.Linear(o.hidden, llm_dim)

    def has_cross_attention(self, layer: int) -> bool:
        return layer % self.options.cross_attention_every == 0

    def _instruction(self, text, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Instruction tokens at the Q-Former width [B, T, H] and their mask [B, T] (True = real token)."""
        if text is None:
            return (self.queries.new_zeros(batch, 0, self.options.hidden),
                    torch.zeros(batch, 0, dtype=torch.bool, device=self.queries.device))
        embeds, mask = text.embeds, text.mask.bool()
        if embeds.shape[0] != batch or mask.shape != embeds.shape[:2]:
            raise ValueError(f"qformer connector: instruction text for {embeds.shape[0]} images (mask "
                             f"{tuple(mask.shape)}) but {batch} images")
        keep = self.options.max_text_len
        embeds, mask = embeds[:, :keep], mask[:, :keep]                 # [B, T, D_llm], [B, T]
        t = self.text_proj(embeds.to(self.queries.dtype)) + self.text_pos[: embeds.shape[1]]
        return t, mask

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        visual = self.vision_norm(feats.features)                       # [B, N, D_vis]
        B, Q = visual.shape[0], self.options.num_queries
        h = self.queries.expand(B, -1, -1)                              # [B, Q, H]
        padding = None
        if self.options.instruction_aware:
            t, mask = self._instruction(feats.text, B)                  # [B, T, H], [B, T]
            h = torch.cat([h, t], 1)                                    # [B, Q+T, H]
            padding = torch.cat([mask.new_zeros(B, Q), ~mask], 1)
        h = self.embed_drop(self.embed_norm(h))
        for layer in self.layers:
            h = layer(h, Q, visual, padding)
        return ConnectorOutput(tokens=self.proj(h[:, :Q]))              # [B, Q, D_llm]

    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def num_tokens(self) -> int:
        return self.options.num_queries

    def flops(self, batch: int = 1, text_len: int = 0) -> int:
        """2 x MACs of the projections, the attention scores/values and the FFNs (norms ignored).

        ``text_len``: instruction tokens per image (instruction-aware mode only)."""
        o = self.options
        Q, H, F = o.num_queries, o.hidden, o.intermediate
        T = min(text_len, o.max_text_len) if o.instruction_aware else 0
        S, N = Q + T, self.grid[0] * self.grid[1]
        macs = T * self.llm_dim * H                                     # text projection
        for i in range(o.layers):
            macs += S * 4 * H * H + 2 * S * S * H                       # self-attn: q,k,v,o + scores, values
            if self.has_cross_attention(i):
                macs += Q * 2 * H * H + N * 2 * self.vis_dim * H + 2 * Q * N * H
            macs += (S if i < o.layers - 1 else Q) * 2 * H * F          # query FFN (+ text FFN but the last)
        macs += Q * H * self.llm_dim                                    # output projection
        return 2 * batch * macs
