"""The dynamic visual tokenizer: selector -> merger -> quantizer, and back: feature decoder -> pixel decoder.

``forward`` (training) selects, merges, quantizes (or not, in the first tokenizer phase) and reconstructs
all patch features; ``tokenize`` turns features into code-id sequences (variable length); ``decode_ids``
turns code ids back into features and ``render`` features into pixels. ``save``/``load`` write a directory
with ``config.json`` (options, feature width, grid, training metrics) and ``model.safetensors``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from ..errors import UserError
from .feature_decoder import FeatureDecoder
from .merger import Merged, TokenMerger
from .options import TokenizerOptions
from .pixel_decoder import PixelDecoder
from .quantizer import EMAQuantizer, Quantized
from .selector import Selection, TokenSelector, ratio_loss

CONFIG_TYPE = "vlbridge-lavit-tokenizer"
PLACEMENTS = ("readout", "readout_detached", "true")


@dataclass
class TokenizerOutput:
    selection: Selection
    merged: Merged
    quantized: Quantized | None          # [B, N] layout (all positions); None without quantisation (phase 1)
    recon: torch.Tensor                  # [B, N, D_vis] reconstructed patch features
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


def tokenizer_options(options) -> TokenizerOptions:
    """The TokenizerOptions fields of any options object that has them (e.g. the connector's)."""
    return TokenizerOptions(**{f.name: getattr(options, f.name) for f in dataclasses.fields(TokenizerOptions)})


class DynamicVisualTokenizer(nn.Module):
    def __init__(self, options: TokenizerOptions, vis_dim: int, grid: tuple[int, int]):
        super().__init__()
        self.options, self.vis_dim, self.grid = options, vis_dim, tuple(grid)
        n = grid[0] * grid[1]
        width = options.width or vis_dim
        self.inp = nn.Linear(vis_dim, width) if width != vis_dim else nn.Identity()
        self.selector = TokenSelector(vis_dim)
        self.merger = TokenMerger(width, options.heads, options.merger_layers, options.mlp_ratio,
                                  n if options.position_embedding else None, self.grid if options.merge_bias else None)
        self.quantizer = EMAQuantizer(width, options.code_dim, options.codebook_size, options.ema_decay,
                                      options.commitment, options.dead_ratio)
        self.decoder = FeatureDecoder(options.code_dim, width, vis_dim, self.grid, options.heads,
                                      options.decoder_layers, options.mlp_ratio, options.decoder_distance_scale,
                                      options.snap_positions)
        self.pixel_decoder = PixelDecoder(vis_dim, self.grid, options.image_size, options.pixel_channels,
                                          options.pixel_palette)

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def _check(self, features: torch.Tensor) -> None:
        if features.dim() != 3 or features.shape[1] != self.n_patches or features.shape[2] != self.vis_dim:
            raise ValueError(f"lavit tokenizer: expected features [B, {self.n_patches}, {self.vis_dim}] (grid "
                             f"{self.grid}), got {list(features.shape)}; CLS tokens must not be kept")

    def select(self, features: torch.Tensor, mode: str, generator: torch.Generator | None = None,
               noise: float = 1.0) -> Selection:
        return self.selector(features, mode, self.options.gumbel_tau, self.options.min_keep, generator, noise)

    def merge(self, features: torch.Tensor, sel: Selection) -> Merged:
        return self.merger(self.inp(features), sel)                       # tokens [B, M_max, width]

    def forward(self, features: torch.Tensor, mode: str = "gumbel", quantize: bool = True,
                ratio_target: float | None = None, generator: torch.Generator | None = None,
                noise: float = 1.0, placement: str = "readout", straight_through: bool = True,
                position_into_codes: bool = True) -> TokenizerOutput:
        """placement: where the feature decoder puts the kept codes. 'readout' = each code's own position
        read-out (as at generation time, the default); 'readout_detached' = the same without a gradient from
        the reconstruction into the read-out; 'true' = the kept tokens' real patch positions (teacher forcing:
        tokenizer training uses it so the decoder learns to route by position from the first step).
        straight_through=False: the reconstruction sends no gradient to the keep/drop decisions (the selector
        then learns from its regularisers only). position_into_codes=False: the position loss trains the
        read-out head only, not the codes it reads."""
        self._check(features)
        sel = self.select(features, mode, generator, noise)
        if not straight_through:
            sel = dataclasses.replace(sel, weight=sel.weight.detach())
        merged = self.merge(features, sel)
        aux = {}
        if mode == "gumbel":
            target = self.options.keep_ratio if ratio_target is None else ratio_target
            aux["keep_ratio"] = ratio_loss(sel, target, self.options.ratio_weight)
        # Codes of every position (dropped ones too); the decoder admits the kept ones, by their index in the
        # kept sequence, with the selector's straight-through weights: forward = decoding the gathered codes.
        qz = None
        if quantize:
            qz = self.quantizer(merged.full, sel.keep)
            codes = qz.q                                                   # [B, N, C]
            aux["commitment"] = qz.commitment
        else:
            codes = self.quantizer.encode(merged.full)                     # continuous unit vectors [B, N, C]
        seq_index = (sel.keep.long().cumsum(1) - 1).clamp(min=0)           # [B, N]
        # each kept code learns to tell where it sits (the decoder places generated codes by it)
        where = self.decoder.locate(codes if position_into_codes else codes.detach())   # [B, N, 2]
        if placement not in PLACEMENTS:
            raise ValueError(f"lavit tokenizer: placement must be one of {PLACEMENTS}, got {placement!r}")
        place = {"true": self.decoder.query_pos.expand_as(where), "readout": where,
                 "readout_detached": where.detach()}[placement]
        recon = self.decoder(codes, sel.keep, seq_index, sel.weight, place)     # [B, N, D_vis]
        err = ((where - self.decoder.query_pos) ** 2).sum(-1)              # [B, N]
        aux["position"] = self.options.position_weight * (err * sel.keep).sum() / sel.keep.sum().clamp_min(1)
        return TokenizerOutput(sel, merged, qz, recon, aux)

    @torch.no_grad()
    def tokenize(self, features: torch.Tensor, mode: str = "argmax",
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Code ids per image (variable length, raster order of the kept patches)."""
        self._check(features)
        merged = self.merge(features, self.select(features, mode, generator))
        ids = self.quantizer.lookup(self.quantizer.encode(merged.tokens))  # [B, M_max]
        return [row[: int(n)].tolist() for row, n in zip(ids, merged.lengths)]

    @torch.no_grad()
    def decode_ids(self, ids: list[list[int]]) -> torch.Tensor:
        """Code-id sequences -> reconstructed features [B, N, D_vis]."""
        size = self.options.codebook_size
        if any(not seq for seq in ids):
            raise ValueError("lavit tokenizer: an image needs at least one code")
        if any(not 0 <= c < size for seq in ids for c in seq):
            raise ValueError(f"lavit tokenizer: code ids must lie in [0, {size})")
        padded, valid = pad_ids(ids)
        return self.decoder(self.quantizer.embed(padded), valid)

    def render(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, N, D_vis] -> RGB [B, 3, S, S] in [0, 1]."""
        return self.pixel_decoder(features)

    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"type": CONFIG_TYPE, "options": dataclasses.asdict(self.options), "vis_dim": self.vis_dim,
                "grid": list(self.grid), **(extra or {})}
        save_model(self, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "DynamicVisualTokenizer":
        path = Path(path)
        meta = read_config(path)
        tok = cls(TokenizerOptions(**meta["options"]), meta["vis_dim"], tuple(meta["grid"]))
        missing, unexpected = load_model(tok, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}/model.safetensors does not match config.json: missing={missing[:5]} "
                             f"unexpected={unexpected[:5]}")
        return tok.eval()


def pad_ids(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length code-id sequences -> ids [B, M_max] (0-padded) and valid [B, M_max] bool."""
    M = max(len(seq) for seq in ids)
    padded = torch.zeros(len(ids), M, dtype=torch.long)
    valid = torch.zeros(len(ids), M, dtype=torch.bool)
    for b, seq in enumerate(ids):
        padded[b, : len(seq)], valid[b, : len(seq)] = torch.tensor(seq), True
    return padded, valid


def read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{path} is not a LaVIT tokenizer directory (no config.json)")
    meta = json.loads(cfg.read_text())
    if meta.get("type") != CONFIG_TYPE:
        raise UserError(f"{cfg}: type is {meta.get('type')!r}, expected {CONFIG_TYPE!r}")
    return meta


def cosine_loss(recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean cosine similarity over all patches (weighted mean with ``weight`` [B, N] if given)."""
    cos = F.cosine_similarity(recon, target, dim=-1)                      # [B, N]
    if weight is None:
        return 1 - cos.mean()
    return 1 - (weight * cos).sum() / weight.sum()


def salience_weights(features: torch.Tensor, reference: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-patch loss weights [B, N] that follow how far each patch is from ``reference`` (the mean feature of
    the training set: on ShapesWorld, plain background), rescaled to mean 1 per image, mixed with ``floor``.

    With uniform weights the 1-cosine loss is dominated by the background, which covers most of a scene:
    the tokenizer then learns the layout and loses the objects' colours (measured: 18.5% of reconstructions
    keep every colour of the scene). Weighting by salience needs no labels."""
    dist = 1 - F.cosine_similarity(features, reference.expand_as(features), dim=-1)   # [B, N]
    dist = dist / dist.mean(1, keepdim=True).clamp_min(1e-6)
    return floor + (1 - floor) * dist
