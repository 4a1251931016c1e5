"""The ``det`` stage: train a region-token model's proposer on boxes, with the encoder frozen; report recall@K.

``vlbridge train --stage det --model.connector.name groma --data DIR --out RUN`` reads every object box of
``DIR/scenes.json`` (ShapesWorld's scene annotations, the format ``pretrain-vision`` reads:
``[{"image", "split", "objects": [{"box": [x1, y1, x2, y2]}, ...]}]``), trains ``connector.proposer`` alone
(AdamW, warm-up + cosine, ``--train.steps/batch_size/lr``) on the ``train`` split and measures recall@K
(IoU >= 0.5) of the kept proposals on the ``val`` split. The whole model is saved to ``RUN/final`` for the
next stage (``--init-from RUN/final``); ``RUN/det_metrics.json`` holds the recall figures.
The frozen encoder runs in eval mode; the stage is short (about a minute on a CPU), so it has no resume.
"""
from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from ...config import RunConfig, Stage, save_json
from ...data.images import load_image
from ...data.records import SkipReport
from ...errors import UserError
from ...grounding.proposer import proposer_loss, recall_at_k
from ...models.build import build_model
from ...models.feature_cache import FeatureCache
from ...models.vlm import VLBridgeModel
from ...train.data import data_files, load_split
from ...train.schedule import warmup_cosine
from ...train.stages import apply_stage
from ..vision_pretrain import load_annotations


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_boxes(path: Path, split: str, transform) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """Images [n, 3, S, S] and their boxes ([k, 4] each) of one split of a scenes file."""
    scenes = [s for s in load_annotations(path) if s.get("split", "train") == split]
    if not scenes:
        return None
    pixels, boxes = [], []
    for i, s in enumerate(scenes):
        objects = s.get("objects")
        if not isinstance(objects, list) or any("box" not in o or len(o["box"]) != 4 for o in objects):
            raise UserError(f"{path}: scene #{i} ({s.get('image')}): needs 'objects' with 4-number 'box' fields")
        pixels.append(transform(load_image(path.parent / s["image"], where=str(path))[0]))
        boxes.append(torch.tensor([o["box"] for o in objects], dtype=torch.float32).view(-1, 4))
    return torch.stack(pixels), boxes


def build_or_load(cfg: RunConfig, report: SkipReport) -> VLBridgeModel:
    if cfg.train.init_from:
        return VLBridgeModel.from_pretrained(cfg.train.init_from)
    train_file, _ = data_files(cfg.data)
    records = load_split(train_file, cfg.data, report)           # the tokenizer is trained on the data's text
    return build_model(cfg.model, (t.text.replace("<image>", "") for r in records for t in r.turns))


@torch.no_grad()
def evaluate_proposer(model, pixels: torch.Tensor, boxes: list[torch.Tensor], ks: list[int],
                      batch: int = 64) -> dict[str, float]:
    model.eval()
    kept = []
    for i in range(0, len(pixels), batch):
        kept += [b for b, _ in model.connector.propose(model.vision(pixels[i:i + batch]))]
    return recall_at_k(kept, boxes, ks)


def train_det(cfg: RunConfig, stage: Stage) -> Path:
    """Train the proposer of ``cfg``'s model (``stage`` says which parameters) and save the whole model."""
    tc = cfg.train
    out = Path(cfg.out)
    torch.manual_seed(tc.seed)
    if cfg.data.path is None or not Path(cfg.data.path).is_dir():
        raise UserError("stage det needs --data DIR holding scenes.json (box annotations, e.g. from `vlbridge data shapes`)")
    scenes = Path(cfg.data.path) / "scenes.json"
    if not scenes.is_file():
        raise FileNotFoundError(f"stage det: {scenes} not found (it lists every object box per image)")
    model = build_or_load(cfg, SkipReport())
    transform = model.vision.image_transform()
    train = load_boxes(scenes, "train", transform)
    if train is None:
        raise UserError(f"{scenes}: no scenes with split 'train'")
    val = load_boxes(scenes, "val", transform)
    out.mkdir(parents=True, exist_ok=True)                           # the inputs have loaded: write the run
    save_json(cfg, out / "config.json")
    apply_stage(model, stage)
    model.vision.cache = FeatureCache()                                # the frozen encoder runs once per image
    proposer = model.connector.proposer
    params = [p for p in proposer.parameters() if p.requires_grad]
    log(f"stage 'det': training the proposer ({sum(p.numel() for p in params):,} parameters) on "
        f"{len(train[0])} images; encoder frozen")
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, total=tc.steps,
                                                                    warmup=tc.warmup_steps, min_ratio=tc.min_lr_ratio))
    model.eval()                                                    # frozen encoder: running statistics
    proposer.train()
    g = torch.Generator().manual_seed(tc.seed)
    t0 = time.perf_counter()
    with (out / "log.jsonl").open("a") as log_file:
        bar = tqdm(range(tc.steps), desc="train[det]", file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
        for step in bar:
            idx = torch.randint(0, len(train[0]), (min(tc.batch_size, len(train[0])),), generator=g)
            with torch.no_grad():
                feats = model.vision(train[0][idx])
            dense = proposer(model.connector.proposer_maps(feats))
            losses = proposer_loss(dense, [train[1][i] for i in idx.tolist()])
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
            optimizer.step()
            schedule.step()
            if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                log_file.write(json.dumps({"step": step + 1, "loss": float(loss.detach()),
                                           **{k: float(v.detach()) for k, v in losses.items()}}) + "\n")
        bar.close()
    o = model.connector.options
    metrics = {"steps": tc.steps, "train_seconds": round(time.perf_counter() - t0, 1), "split": "val",
               "iou_threshold": 0.5, "score_threshold": o.score_threshold, "nms_iou": o.nms_iou,
               "max_regions": o.max_regions}
    if val is not None:
        ks = sorted({1, 3, o.max_regions})
        metrics.update(evaluate_proposer(model, val[0], val[1], ks))
        log("proposer on val: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith(("recall", "mean"))))
    (out / "det_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    final = out / "final"
    model.save_pretrained(final)
    log(f"saved {final}")
    return final
