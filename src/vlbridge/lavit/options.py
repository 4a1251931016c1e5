"""Sizes and switches of the LaVIT visual tokenizer; saved in config.json (tokenizer dir and connector options).

The released tokenizer (EVA-CLIP ViT-g features, 1408-d, 16x16 patches) uses 12 merger blocks, 16 heads,
a 32-d code and 16,384 codes. The defaults here are the CPU/ShapesWorld scale: the tiny ResNet's 8x8 grid of
128-d features mapped to width 64, 2 merger blocks, 4,096 codes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import opt


@dataclass
class TokenizerOptions:
    width: int | None = opt(64, "merger/decoder width (a Linear maps the features to it); None = the vision "
                                "feature width, no input projection")
    heads: int = opt(4, "attention heads in merger and decoder")
    merger_layers: int = opt(2, "merger blocks (causal self-attn among kept, cross-attn to dropped, FFN)")
    decoder_layers: int = opt(2, "feature-decoder blocks (self-attn over queries, cross-attn to codes, FFN)")
    mlp_ratio: int = opt(4, "FFN hidden width = mlp_ratio * width")
    position_embedding: bool = opt(True, "add a learned raster-position embedding to the merger input (the "
                                         "tiny ResNet features carry little position; ViT features have it built in)")
    merge_bias: bool = opt(True, "a learned bias per 2-D patch offset in the merger's cross-attention (nearby "
                                 "dropped patches are easy to merge into a kept one; off = LaVIT's plain attention)")
    decoder_distance_scale: float = opt(55.0, "initial scale s of the feature decoder's cross-attention bias "
                                              "-s * |query position - code position|^2 (learned per head; positions "
                                              "in [0, 1], so one patch of an 8x8 grid away costs s/64)")
    snap_positions: bool = opt(True, "the feature decoder snaps the codes' read-out positions to strictly "
                                     "increasing patch centres (kept tokens come in raster order, one per patch) "
                                     "before placing them; false = the raw read-out")
    position_weight: float = opt(2.0, "weight of the loss that teaches each kept code its patch position (the "
                                     "feature decoder places codes by it; 0 = codes cannot be placed)")
    keep_ratio: float = opt(1 / 3, "target share of kept patches (LaVIT: 1/3)")
    ratio_weight: float = opt(20.0, "weight of the keep-ratio regulariser (kept share - target)^2")
    min_keep: int = opt(1, "at least this many tokens are kept per image (guards 'all tokens dropped')")
    gumbel_tau: float = opt(1.0, "Gumbel-softmax temperature of the straight-through selection in training")
    code_dim: int = opt(32, "dimension of the l2-normalised codes")
    codebook_size: int = opt(4096, "number of codes (visual vocabulary size; LaVIT: 16,384)")
    ema_decay: float = opt(0.99, "EMA decay of the codebook statistics")
    commitment: float = opt(0.25, "weight of the commitment loss ||z - sg(q)||^2")
    dead_ratio: float = opt(0.03, "a code is dead when its EMA usage is below dead_ratio x the uniform share")
    image_size: int = opt(64, "side of the images the pixel decoder produces (the vision encoder's input size)")
    pixel_channels: list[int] = opt([64, 32, 16], "pixel decoder channels, one per x2 upsampling stage")
    pixel_palette: int = opt(16, "colours the pixel decoder chooses from per pixel (fitted to the training images)")
