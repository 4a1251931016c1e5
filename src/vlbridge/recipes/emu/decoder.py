"""The `decoder` stage: the visual decoder learns to paint a trained Emu model's M embeddings of real images.

Everything but the decoder stays frozen. The data's images (``DATA/scenes.json``, train split; at most
``max_images``) pass the encoder once; the decoder's two parts then train apart:

1. the renderer (patch features -> pixels) on the encoder's *real* features of the images
   (``renderer_steps``); it depends on the encoder alone, so one trained renderer serves every model on that
   encoder: ``renderer_from`` takes it from an earlier decoder stage's output (``renderer.safetensors``) and
   skips this phase;
2. ``to_grid`` (M embeddings -> patch features) on the trained connector's embeddings of the same images, towards
   their real features (cosine; ``steps``), with Gaussian ``noise`` on the embeddings (a share of their standard
   deviation) so it also sees embeddings a little off the real ones, as regressed ones are.

The model is saved whole, with the decoder, to ``out``; ``renderer.safetensors`` and ``decoder_metrics.json``
beside it: on held-out images (val split), the feature cosine, and pixel L1 and what the ShapesWorld checker
reads, both for the renderer on the real features (a bound) and for the whole decoder on the embeddings.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from ...config import opt
from ...connectors.base import VisualFeatures
from ...errors import UserError
from ...models.vlm import VLBridgeModel
from ..lavit.tokenizer_stage import SplitData, encode_split, load_scenes
from .image_generation import check_emu, to_image
from .judge import judge_scenes

RENDERER = "renderer.safetensors"


@dataclass
class DecoderTrainConfig:
    model: str = opt("", "trained Emu model dir (e.g. RUN/final)")
    data: str = opt("", "data dir with scenes.json (the images to learn from: its train split; val for figures)")
    out: str = opt("", "output model dir (the model with its trained decoder)")
    steps: int = opt(1500, "steps of the embeddings -> features part", at_least=1)
    renderer_steps: int = opt(1500, "steps of the features -> pixels part on the encoder's real features", at_least=0)
    renderer_from: str | None = opt(None, "an earlier decoder stage's output dir whose renderer (trained on this "
                                          "encoder's real features) is taken instead of training one")
    batch_size: int = opt(32, "images per step", at_least=1)
    lr: float = opt(2e-3, "AdamW peak learning rate (one-cycle per part)")
    noise: float = opt(0.1, "std of Gaussian noise added to the embeddings in training, as a share of their std",
                       at_least=0)
    max_images: int = opt(4000, "at most this many training images (the first of the split)", at_least=1)
    val_images: int = opt(200, "held-out images the figures are measured on", at_least=0)
    seed: int = opt(0, "seed")


@torch.no_grad()
def embed_images(model, data: SplitData, batch: int = 256) -> torch.Tensor:
    """The connector's M embeddings [n, M, D] of encoder features [n, N, D_vis]."""
    model.eval()
    grid = model.vision.grid
    return torch.cat([model.connector(VisualFeatures(features=data.features[i:i + batch], grid=grid)).tokens
                      for i in range(0, len(data.features), batch)])


def split_data(model, scenes: list[dict], split: str, limit: int, folder: Path, where: str) -> SplitData | None:
    chosen = [s for s in scenes if s.get("split", "train") == split][:limit]
    return encode_split(model.vision, chosen, folder, where) if chosen else None


def one_cycle(params, cfg: DecoderTrainConfig, steps: int):
    opt_ = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = min(0.3, max(0.1, 2.0 / max(steps, 1)))                      # >= 2 warm-up steps (OneCycleLR needs > 1)
    return opt_, torch.optim.lr_scheduler.OneCycleLR(opt_, cfg.lr, total_steps=max(steps, 1), pct_start=warm)


def train_part(params, loss_fn, steps: int, cfg: DecoderTrainConfig, name: str, log: list) -> float:
    """``steps`` AdamW steps of ``loss_fn(step) -> loss``; returns seconds per step."""
    params = list(params)
    for p in params:
        p.requires_grad = True
    opt_, sched = one_cycle(params, cfg, steps)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"emu[decoder:{name}]", file=sys.stderr, mininterval=1.0)
    for step in bar:
        loss = loss_fn(step)
        opt_.zero_grad(set_to_none=True)
        loss.backward()
        opt_.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.append({"part": name, "step": step, "loss": loss.item()})
    for p in params:
        p.requires_grad = False
    return (time.perf_counter() - start) / max(steps, 1)


@torch.no_grad()
def reconstruction_figures(model, data: SplitData, embeddings: torch.Tensor, seed: int = 0) -> dict:
    """On held-out images: the renderer on their real features, and the whole decoder on their embeddings."""
    decoder = model.connector.decoder.eval()
    objects = [s["objects"] for s in data.scenes]
    out = {"images": len(embeddings)}
    for name, feats in (("renderer_on_real_features", data.features),
                        ("decoder_on_embeddings", torch.cat([decoder.to_grid(embeddings[i:i + 64])
                                                             for i in range(0, len(embeddings), 64)]))):
        g = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        pixels = torch.cat([decoder.render(feats[i:i + 64], g) for i in range(0, len(feats), 64)])
        out[name] = {"pixel_l1": float((pixels - data.pixels).abs().mean()),
                     "checker": judge_scenes(objects, [to_image(p) for p in pixels]),
                     "seconds_per_image": (time.perf_counter() - start) / max(len(feats), 1)}
        if name == "decoder_on_embeddings":
            out[name]["feature_cosine"] = float(F.cosine_similarity(feats, data.features, dim=-1).mean())
    out["pixel_l1_baseline_mean_colour"] = float((data.pixels - data.pixels.mean((0, 2, 3), keepdim=True)).abs().mean())
    return out


def train_decoder(cfg: DecoderTrainConfig) -> Path:
    if not cfg.model or not cfg.data or not cfg.out:
        raise UserError("emu decoder needs --model, --data and --out")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = VLBridgeModel.from_pretrained(cfg.model)
    check_emu(model)
    annotations = Path(cfg.data) / "scenes.json"
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations} not found: the decoder learns from the data's scenes "
                                "(`vlbridge data shapes-docs` or `data shapes` writes it)")
    scenes = load_scenes(annotations)
    train = split_data(model, scenes, "train", cfg.max_images, annotations.parent, str(annotations))
    if train is None:
        raise UserError(f"{annotations}: no scenes with split 'train'")
    val = split_data(model, scenes, "val", cfg.val_images, annotations.parent, str(annotations))
    decoder = model.connector.decoder
    if train.pixels.shape[-1] != decoder.image_size:
        raise UserError(f"the decoder paints {decoder.image_size}-px images, the data's are {train.pixels.shape[-1]}-px: "
                        "set the connector's image_size option to the data's")
    for p in model.parameters():
        p.requires_grad = False
    g = torch.Generator().manual_seed(cfg.seed)
    log: list[dict] = []
    figures: dict = {"decoder": model.connector.options.decoder, "train_images": len(train.features)}

    def batch() -> torch.Tensor:
        return torch.randint(len(train.features), (cfg.batch_size,), generator=g)

    decoder.train()
    if cfg.renderer_from:
        source = Path(cfg.renderer_from) / RENDERER
        if not source.is_file():
            raise FileNotFoundError(f"--renderer_from: {source} not found (an earlier `emu decoder` output holds it)")
        missing, unexpected = load_model(decoder.renderer, str(source), strict=False)
        if missing or unexpected:
            raise UserError(f"{source} does not fit this decoder's renderer (other options?): missing={missing[:3]} "
                            f"unexpected={unexpected[:3]}")
        figures["renderer_from"] = str(source)
    else:
        decoder.prepare(train.pixels)

        def render_step(step: int) -> torch.Tensor:
            idx = batch()
            return decoder.render_loss(train.features[idx], train.pixels[idx], generator=g)
        figures["renderer_seconds_per_step"] = train_part(decoder.renderer.parameters(), render_step,
                                                          cfg.renderer_steps, cfg, "renderer", log)
    emb = embed_images(model, train)                                          # [n, M, D]
    scale = float(emb.std())
    decoder.train()

    def grid_step(step: int) -> torch.Tensor:
        from ...emu.palette_decoder import feature_loss
        idx = batch()
        x = emb[idx] + cfg.noise * scale * torch.randn(emb[idx].shape, generator=g)
        return feature_loss(decoder.to_grid(x), train.features[idx])
    figures["grid_seconds_per_step"] = train_part(decoder.to_grid.parameters(), grid_step, cfg.steps, cfg, "grid", log)
    decoder.eval()
    figures["train_seconds"] = round(time.perf_counter() - t0, 1)
    if val is not None:
        figures["val"] = reconstruction_figures(model, val, embed_images(model, val), cfg.seed)
    out = Path(cfg.out)
    model.save_pretrained(out)
    save_model(decoder.renderer, str(out / RENDERER))
    (out / "decoder_metrics.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), **figures,
                                                          "log": log}, indent=2) + "\n")
    return out


def summary_line(figures: dict) -> str:
    v = figures.get("val")
    if not v:
        return f"decoder trained on {figures['train_images']} images (no val split for figures)"

    def part(f: dict) -> str:
        c = f["checker"]
        return (f"pixel L1 {f['pixel_l1']:.4f}, colours exact {c['colors_exact']:.1%}, every object "
                f"{c['objects_present']:.1%}, exact scene {c['objects_exact']:.1%}, "
                f"{1000 * f['seconds_per_image']:.1f} ms/image")
    d = v["decoder_on_embeddings"]
    return (f"decoder ({figures['decoder']}) on {v['images']} held-out images: from the embeddings: feature cosine "
            f"{d['feature_cosine']:.3f}, {part(d)}; the renderer on the real features: "
            f"{part(v['renderer_on_real_features'])} (flat mean colour: pixel L1 {v['pixel_l1_baseline_mean_colour']:.4f})")
