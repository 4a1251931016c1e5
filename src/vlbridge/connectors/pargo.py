"""`pargo`: ParGo, the Partial-Global projector (AAAI 2025, arXiv 2408.12928). M = P + G tokens.

P partial + G global learnable queries (one tensor, N(0, 0.02), plus learned position embeddings,
LayerNorm, dropout, as in the released BERT-style embeddings) pass through ``layers`` post-LN layers
(``pargo_layer.py``): Cascaded Partial Perception (self-attention, band among partial tokens widening with
depth), Partial-Global Perception (partial token i cross-attends to its window of patches, global tokens to
all patches), FFN. The visual features get a fresh LayerNorm first (released: EVA-CLIP features + LN).
All P + G query states are projected to the LLM width. Windows, schedule and masks: ``pargo_windows.py``.

Self-supervised auxiliary objective (the paper mentions predicting occluded content; its exact form is not
published, so this one is ours), on when ``aux_weight > 0`` and only in training mode:
  1. in every window pick round(aux_mask_ratio * K) (at least 1) of its K patches at random; the union of
     the picked patches is occluded: their (normalised) features are replaced by a learned mask vector;
  2. the projector runs a second time on the occluded features (the LLM's tokens come from the clean pass);
  3. a small head (Linear-GELU-Linear) reads partial token i's final state plus a learned embedding of the
     slot s (0..K-1) in the window and predicts the features of each occluded patch of window i;
  4. loss = aux_weight * mean squared error against the clean features, layer-normalised without affine
     and detached (MAE's normalised targets), averaged over occluded (window, slot) pairs.
It is returned as ``aux_losses["pargo_masked_patches"]``; the trainer adds it to the LM loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import opt
from .base import Connector, ConnectorOutput, VisualFeatures
from .pargo_layer import ParGoLayer
from .pargo_windows import ParGoGeometry


@dataclass
class ParGoOptions:
    hidden: int | None = opt(None, "projector width; None = the vision feature width (released: bert-small)")
    layers: int = opt(3, "projector layers L (CPP + PGP + FFN each)")
    heads: int = opt(4, "attention heads (must divide hidden)")
    ffn_mult: int = opt(4, "FFN width = ffn_mult * hidden (BERT: 4)")
    num_global: int = opt(4, "G global tokens (released: 16)")
    windows: str = opt("tile", "\"tile\" (2-D tiles of the grid) or \"raster\" (released: runs of N/P patches)")
    tile: list[int] = opt([2, 2], "tile windows: (rows, cols) patches per partial token")
    stride: list[int] | None = opt(None, "tile: (rows, cols) between tiles; raster: [step]; None = window size (no overlap)")
    raster_size: int | None = opt(None, "raster: patches per window; None = N / num_partial")
    num_partial: int | None = opt(None, "P; None = follows from the grid and the windows (released: 288)")
    cpp: str = opt("cascade", "\"cascade\" (band widening with depth, paper figure) or \"all\" (released code)")
    cpp_radii: list[int] | None = opt(None, "explicit band half-width per layer (-1 = one-to-all); overrides cpp")
    mix_partial_global: bool = opt(False, "let partial and global tokens attend to each other (released: blocked)")
    attention_impl: str = opt("structured", "\"structured\" (gathered windows) or \"dense\" (masked reference)")
    dropout: float = opt(0.0, "on the query embeddings and every residual branch")
    aux_weight: float = opt(0.0, "weight of the masked-patch reconstruction loss (0 = off)")
    aux_mask_ratio: float = opt(0.25, "fraction of each window's patches occluded for that loss")


class ParGoConnector(Connector):
    Options = ParGoOptions

    def __init__(self, options: ParGoOptions, vis_dim: int, llm_dim: int, grid):
        super().__init__(options, vis_dim, llm_dim, grid)
        o = options
        if o.attention_impl not in ("structured", "dense"):
            raise ValueError(f"pargo: attention_impl must be 'structured' or 'dense', got {o.attention_impl!r}")
        if o.layers < 1 or o.heads < 1 or o.ffn_mult < 1:
            raise ValueError(f"pargo: layers, heads and ffn_mult must be >= 1, got {o.layers}, {o.heads}, {o.ffn_mult}")
        if not 0.0 < o.aux_mask_ratio < 1.0:
            raise ValueError(f"pargo: aux_mask_ratio must be in (0, 1), got {o.aux_mask_ratio}")
        self.geometry = ParGoGeometry.from_options(o, self.grid)
        hidden = o.hidden or vis_dim
        self.hidden, self.num_partial = hidden, self.geometry.num_partial
        t = self.geometry.num_tokens
        self.queries = nn.Parameter(torch.randn(t, hidden) * 0.02)       # [P + G, H]: partial first, then global
        self.query_pos = nn.Parameter(torch.randn(t, hidden) * 0.02)
        self.query_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.vision_norm = nn.LayerNorm(vis_dim)
        self.layers = nn.ModuleList(ParGoLayer(hidden, vis_dim, o.heads, o.ffn_mult * hidden, o.dropout)
                                    for _ in range(o.layers))
        self.out_proj = nn.Linear(hidden, llm_dim)
        if o.aux_weight > 0:
            k = self.geometry.windows.size
            self.aux_mask_token = nn.Parameter(torch.randn(vis_dim) * 0.02)
            self.aux_slot = nn.Parameter(torch.randn(k, hidden) * 0.02)    # position of a patch inside its window
            self.aux_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, vis_dim))
        self.apply(self._init_bert)
        # masks and windows as buffers: they follow .to(device) and are rebuilt from the options, not saved
        g = self.geometry
        self.register_buffer("window_index", g.windows.index, persistent=False)               # [P, K]
        self.register_buffer("cross_mask", g.cross_mask(), persistent=False)                  # [T, N]
        self.register_buffer("self_masks", torch.stack([g.self_mask(l) for l in range(o.layers)]),
                             persistent=False)                                                # [L, T, T]
        self.window_partition = g.windows.is_partition()
        self.self_mask_full = [bool(m.all()) for m in self.self_masks]    # known here: no device sync per step

    @staticmethod
    def _init_bert(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    # ---- forward ---------------------------------------------------------------------------------------
    def project(self, feats: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Normalised patch features [B, N, D_vis] -> query states [B, P + G, H] after the first `upto`
        layers (default: all)."""
        structured = self.options.attention_impl == "structured"
        h = self.query_norm(self.queries + self.query_pos)[None]                          # [1, T, H]
        h = F.dropout(h, self.options.dropout, self.training)
        if not structured:
            h = h.expand(feats.shape[0], -1, -1)                                           # [B, T, H]
        for l, layer in enumerate(self.layers[:upto]):
            h = layer.self_attention(h, None if self.self_mask_full[l] else self.self_masks[l])   # [b, T, H]
            h = layer.cross_attention(h, feats, self.num_partial, self.cross_mask, self.window_index,
                                      self.window_partition, structured)               # [B, T, H]
            h = layer.feed_forward(h)
        return h

    def forward(self, feats: VisualFeatures) -> ConnectorOutput:
        x = feats.features
        n = self.grid[0] * self.grid[1]
        if x.shape[1] != n:
            raise ValueError(f"pargo: expected {n} patch features for the {self.grid[0]}x{self.grid[1]} grid, got "
                             f"{x.shape[1]} (keep_cls must be off)")
        x = self.vision_norm(x)                                                            # [B, N, D_vis]
        tokens = self.out_proj(self.project(x))                                            # [B, P + G, D_llm]
        aux = {}
        if self.training and self.options.aux_weight > 0:
            aux["pargo_masked_patches"] = self.options.aux_weight * self.masked_patch_loss(feats.features)
        return ConnectorOutput(tokens=tokens, aux_losses=aux)

    def sample_occlusion(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, N] bool: round(ratio * K) (>= 1) random patches of every window, united over windows."""
        index = self.window_index                                                          # [P, K]
        p, k = index.shape
        pick = max(1, round(self.options.aux_mask_ratio * k))
        order = torch.rand(batch, p, k, generator=generator, device=index.device).argsort(-1)[..., :pick]
        patches = index[torch.arange(p, device=index.device)[:, None], order]              # [B, P, pick]
        occluded = torch.zeros(batch, self.grid[0] * self.grid[1], dtype=torch.bool, device=index.device)
        return occluded.scatter_(1, patches.flatten(1), True)

    def masked_patch_loss(self, raw: torch.Tensor, occluded: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct occluded patch features from the partial tokens (see the module docstring)."""
        if occluded is None:
            occluded = self.sample_occlusion(raw.shape[0])                                 # [B, N]
        x = self.vision_norm(raw)
        x = torch.where(occluded[..., None], self.aux_mask_token.to(x.dtype), x)
        part = self.project(x)[:, : self.num_partial]                                      # [B, P, H]
        pred = self.aux_head(part[:, :, None] + self.aux_slot)                             # [B, P, K, D_vis]
        target = F.layer_norm(raw.detach(), raw.shape[-1:])[:, self.window_index]         # [B, P, K, D_vis]
        selected = occluded[:, self.window_index]                                          # [B, P, K]
        return ((pred - target) ** 2).mean(-1)[selected].mean()

    # ---- reporting -------------------------------------------------------------------------------------
    def checkpoint_blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def num_tokens(self) -> int:
        return self.geometry.num_tokens

    def flops(self, batch: int = 1) -> int:
        """Forward FLOPs (2 per multiply-accumulate) of the path that runs: every projection and the attention
        scores + weighted values (cross-attention: P*K + G*N pairs structured, T*N dense; self-attention: T*T).
        The structured path runs the first layer's self-attention and query projection once per batch (they
        see only the learned queries). LayerNorms, softmax and the auxiliary pass are not counted."""
        o, g = self.options, self.geometry
        t, p, glob, n, k = g.num_tokens, g.num_partial, g.num_global, self.grid[0] * self.grid[1], g.windows.size
        hd, ffn = self.hidden, o.ffn_mult * self.hidden
        structured = o.attention_impl == "structured"
        macs = 0
        for l in range(o.layers):
            queries = 4 * t * hd * hd + 2 * hd * t * t + t * hd * hd      # self q, k, v, out, pairs; cross q
            cross_pairs = p * k + glob * n if structured else t * n
            per_image = 2 * n * self.vis_dim * hd + 2 * hd * cross_pairs + t * hd * hd + 2 * t * hd * ffn
            macs += queries * (1 if structured and l == 0 else batch) + per_image * batch
        macs += batch * t * hd * self.llm_dim
        return 2 * macs
