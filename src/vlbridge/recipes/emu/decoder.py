"""The `decoder` stage: the visual decoder learns to paint a trained Emu model's M embeddings of real images.

Everything but the decoder stays frozen: the data's images (``DATA/scenes.json``, train split; at most
``max_images``) pass the encoder and the trained connector once, and the decoder learns to turn those
embeddings back into the images (palette cross-entropy, or the flow-matching loss) and, on the way, into the
encoder's patch features of the same images (cosine). ``noise`` adds Gaussian
noise to the embeddings in training (a share of their standard deviation), so the decoder also sees
embeddings a little off the real ones, as regressed ones are. The model is then saved whole, with the decoder,
to ``out``; ``decoder_metrics.json`` beside it holds the figures on held-out images (val split):
reconstruction pixel L1 and what the ShapesWorld checker finds in the reconstructions.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ...config import opt
from ...errors import UserError
from ...connectors.base import VisualFeatures
from ...models.vlm import VLBridgeModel
from ..lavit.tokenizer_stage import SplitData, encode_split, load_scenes
from .image_generation import check_emu, to_image
from .judge import judge_scenes


@dataclass
class DecoderTrainConfig:
    model: str = opt("", "trained Emu model dir (e.g. RUN/final)")
    data: str = opt("", "data dir with scenes.json (the images to learn from: its train split; val for figures)")
    out: str = opt("", "output model dir (the model with its trained decoder)")
    steps: int = opt(1500, "optimizer steps")
    batch_size: int = opt(32, "images per step")
    lr: float = opt(2e-3, "AdamW peak learning rate (one-cycle)")
    noise: float = opt(0.1, "std of Gaussian noise added to the embeddings in training, as a share of their std")
    max_images: int = opt(4000, "at most this many training images (the first of the split)")
    val_images: int = opt(200, "held-out images the figures are measured on")
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


@torch.no_grad()
def reconstruction_figures(model, data: SplitData, embeddings: torch.Tensor, seed: int = 0) -> dict:
    """Pixel L1 of the decoded real embeddings and the checker's reading of them (against the scenes' objects)."""
    decoder = model.connector.decoder.eval()
    g = torch.Generator().manual_seed(seed)
    pixels = torch.cat([decoder(embeddings[i:i + 64], generator=g) for i in range(0, len(embeddings), 64)])
    images = [to_image(p) for p in pixels]
    return {"pixel_l1": float((pixels - data.pixels).abs().mean()),
            "pixel_l1_baseline_background": float((data.pixels - data.pixels.mean((0, 2, 3), keepdim=True)).abs().mean()),
            "checker": judge_scenes([s["objects"] for s in data.scenes], images), "images": len(images)}


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
    size = model.connector.decoder.image_size
    if train.pixels.shape[-1] != size:
        raise UserError(f"the decoder paints {size}-px images, the data's are {train.pixels.shape[-1]}-px: set the "
                         "connector's image_size option to the data's")
    emb = embed_images(model, train)                                          # [n, M, D]
    scale = float(emb.std())
    decoder = model.connector.decoder
    decoder.prepare(train.pixels)
    for p in model.parameters():
        p.requires_grad = False
    params = list(decoder.parameters())
    for p in params:
        p.requires_grad = True
    opt_ = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = min(0.3, max(0.1, 2.0 / max(cfg.steps, 1)))                   # >= 2 warm-up steps (OneCycleLR needs > 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_, cfg.lr, total_steps=max(cfg.steps, 1), pct_start=warm)
    g = torch.Generator().manual_seed(cfg.seed)
    log = []
    decoder.train()
    t_loop = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="emu[decoder]", file=sys.stderr, mininterval=1.0)
    for step in bar:
        idx = torch.randint(len(emb), (cfg.batch_size,), generator=g)
        x = emb[idx]
        if cfg.noise > 0:
            x = x + cfg.noise * scale * torch.randn(x.shape, generator=g)
        loss = decoder.loss(x, train.pixels[idx], generator=g, features=train.features[idx])
        opt_.zero_grad(set_to_none=True)
        loss.backward()
        opt_.step()
        sched.step()
        if step % 20 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.append({"step": step, "loss": loss.item()})
    decoder.eval()
    loop = time.perf_counter() - t_loop
    figures = {"decoder": model.cfg.connector.options.get("decoder", "palette"), "train_images": len(emb),
               "train_seconds": round(time.perf_counter() - t0, 1), "steps": cfg.steps,
               "seconds_per_step": loop / max(cfg.steps, 1)}
    if val is not None:
        t1 = time.perf_counter()
        figures["val"] = reconstruction_figures(model, val, embed_images(model, val), cfg.seed)
        figures["val"]["seconds_per_image"] = (time.perf_counter() - t1) / max(len(val.scenes), 1)
    out = Path(cfg.out)
    model.save_pretrained(out)
    (out / "decoder_metrics.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), **figures,
                                                          "log": log}, indent=2) + "\n")
    return out


def summary_line(figures: dict) -> str:
    v = figures.get("val")
    if not v:
        return f"decoder trained on {figures['train_images']} images (no val split for figures)"
    c = v["checker"]
    return (f"decoder ({figures['decoder']}) on {v['images']} held-out images: pixel L1 {v['pixel_l1']:.4f} "
            f"(flat mean colour {v['pixel_l1_baseline_background']:.4f}); checker: colours exact {c['colors_exact']:.1%}, "
            f"every object {c['objects_present']:.1%}, exact scene {c['objects_exact']:.1%}; "
            f"{1000 * v['seconds_per_image']:.1f} ms per image")


