"""Training speed of the tiny-cpu stack with the `lavit` connector against `mlp` (and the preset's
`pixel_shuffle`) at the same batch: visual tokens per image, LLM positions and padding per step, tokens/s and
records/s, all measured in one run (the connectors' steps interleaved).

Each connector trains the same ShapesWorld records with the same batch size (``Trainer.train_step``: data,
splicing, forward, backward, AdamW); the vision encoder is frozen and its features cached, as in the demo.
The LaVIT selector is untrained here, so its keep/drop margin is calibrated first to keep ``--keep-ratio`` of
the patches (as the tokenizer stage does before its quantised phase); each image then carries only its kept
tokens (+ [IMG], [/IMG]) into the LLM. "padding" is the share of a batch's LLM positions that are right
padding (rows are padded to the batch's longest row; nothing pads an image back to 64 tokens).

    python bench/connector_tokens.py [--steps 20] [--batch-size 16] [--keep-ratio 0.333] [--connectors lavit,mlp,pixel_shuffle]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vlbridge.config import ConnectorConfig
from vlbridge.data.dataset import collate
from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.presets import get_preset
from vlbridge.recipes.lavit.tokenizer_stage import calibrate_keep_ratio
from vlbridge.train.data import BatchStream
from vlbridge.train.trainer import Trainer


def make_trainer(name: str, data: Path, out: Path, batch: int, keep_ratio: float) -> Trainer:
    cfg = get_preset("tiny-cpu")
    cfg.model.connector = ConnectorConfig(name, {})
    cfg.data.path, cfg.out = str(data), str(out / name)
    cfg.train.batch_size, cfg.train.steps, cfg.train.warmup_steps = batch, 10_000, 10
    cfg.train.train_vision = False
    trainer = Trainer(cfg)
    trainer.setup()
    if name == "lavit":
        with torch.no_grad():
            pixels = collate([trainer.train_set[i] for i in range(min(128, len(trainer.train_set)))]).pixel_values
            calibrate_keep_ratio(trainer.model.connector.visual_tokenizer, trainer.model.vision(pixels).features,
                                 keep_ratio)
        trainer.model.train()
    return trainer


def batch_shape(trainer: Trainer) -> tuple[float, int, int]:
    """Visual tokens per image (mean), real LLM positions and padded positions (B x T) of the next batch."""
    batch = next(BatchStream(trainer.train_set, trainer.cfg.train, *trainer.stream.position))
    model = trainer.model
    with torch.no_grad():
        s, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
    visual = float(s.visual_mask.sum()) / len(batch.pixel_values)
    return visual, int(s.attention_mask.sum()), s.attention_mask.numel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per connector (default 20)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--keep-ratio", type=float, default=1 / 3, help="share of patches LaVIT keeps (default 1/3)")
    ap.add_argument("--connectors", default="lavit,mlp,pixel_shuffle")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vlbridge-bench-"))
    generate(ShapesWorldConfig(n=400, seed=0), tmp / "data")
    names = args.connectors.split(",")
    trainers = {n: make_trainer(n, tmp / "data", tmp / "runs", args.batch_size, args.keep_ratio) for n in names}
    for trainer in trainers.values():                   # untimed: one epoch (the feature cache fills)
        for _ in range(-(-len(trainer.train_set) // args.batch_size)):
            trainer.train_step()
    shapes = {n: [] for n in names}
    times = {n: [] for n in names}
    positions = {n: 0 for n in names}
    for _ in range(args.steps):
        for n, trainer in trainers.items():
            shapes[n].append(batch_shape(trainer))
            t = time.perf_counter()
            positions[n] += trainer.train_step()["positions"]
            times[n].append(time.perf_counter() - t)
    print(f"tiny-cpu stack, frozen encoder (features cached), batch {args.batch_size}, {args.steps} interleaved steps "
          f"per connector, {torch.get_num_threads()} threads; lavit keeps {args.keep_ratio:.3f} of 64 patches")
    print(f"{'connector':<15}{'visual/image':>13}{'positions/step':>16}{'padding':>9}{'ms/step':>9}{'tokens/s':>10}"
          f"{'records/s':>11}")
    rate = {}
    for n in names:
        visual = statistics.mean(v for v, _, _ in shapes[n])
        pad = 1 - sum(r for _, r, _ in shapes[n]) / sum(p for _, _, p in shapes[n])
        total = sum(times[n])
        rate[n] = (positions[n] / total, args.batch_size * args.steps / total)
        print(f"{n:<15}{visual:>13.1f}{positions[n] / args.steps:>16,.0f}{pad:>9.1%}"
              f"{statistics.median(times[n]) * 1e3:>9.0f}{rate[n][0]:>10,.0f}{rate[n][1]:>11.1f}")
    if "lavit" in rate and "mlp" in rate:
        print(f"lavit vs mlp: {rate['lavit'][0] / rate['mlp'][0]:.2f}x the tokens/s, "
              f"{rate['lavit'][1] / rate['mlp'][1]:.2f}x the records/s")


if __name__ == "__main__":
    main()
