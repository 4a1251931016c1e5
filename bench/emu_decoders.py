"""Emu's visual decoders at an equal CPU budget: which one paints a trained model's embeddings best per minute.

    python bench/emu_decoders.py --model RUN/final --data DOCS [--minutes 5] [--variants palette128,palette64,flow64]

Each variant is the same trained model with another decoder (the connector's decoder options). Its renderer
(features -> pixels) trains on the encoder's real features for as many steps as fit ``--minutes`` at the speed
of its first steps; its embeddings -> features part then trains ``--grid-steps`` steps (the same for every
variant: it has the same shape in all of them). Prints, per variant, the held-out (val) figures of the renderer
on real features and of the whole decoder on the embeddings: pixel L1, what the ShapesWorld checker reads, and
the milliseconds to paint one image.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from vlbridge.config import ConnectorConfig
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.recipes.emu.decoder import DecoderTrainConfig, summary_line, train_decoder

VARIANTS = {
    "palette128": {"decoder": "palette", "decoder_width": 128, "decoder_channels": [64, 32, 32]},
    "palette64": {"decoder": "palette", "decoder_width": 64, "decoder_channels": [32, 16, 16]},
    "flow64": {"decoder": "flow", "decoder_width": 64, "decoder_channels": [16, 32, 64], "decoder_steps": 16},
    "flow128": {"decoder": "flow", "decoder_width": 128, "decoder_channels": [32, 64, 64], "decoder_steps": 16},
}


def with_decoder(model: VLBridgeModel, options: dict) -> VLBridgeModel:
    """The same model with another decoder (every other weight copied)."""
    cfg = model.resolved_config()
    cfg.connector = ConnectorConfig("emu", {**cfg.connector.options, **options})
    other = VLBridgeModel(cfg, model.tokenizer)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("connector.decoder.")}
    missing, unexpected = other.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("connector.decoder.") for k in missing)
    return other


def renderer_seconds_per_step(model_dir: Path, data: str, probe: int = 20) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = train_decoder(DecoderTrainConfig(model=str(model_dir), data=data, out=tmp, steps=1, renderer_steps=probe,
                                               max_images=256, val_images=0))
        return json.loads((out / "decoder_metrics.json").read_text())["renderer_seconds_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained Emu model dir")
    parser.add_argument("--data", required=True, help="documents dir with scenes.json")
    parser.add_argument("--minutes", type=float, default=5.0, help="renderer training budget per variant (default: 5)")
    parser.add_argument("--grid-steps", type=int, default=600, help="embeddings -> features steps (default: 600)")
    parser.add_argument("--variants", default="palette128,palette64,flow64", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--out", default=None, help="keep each variant's model here (default: a temporary dir)")
    args = parser.parse_args()
    torch.manual_seed(0)
    base = VLBridgeModel.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for name in args.variants.split(","):
            start_dir = root / f"{name}_start"
            with_decoder(base, VARIANTS[name]).save_pretrained(start_dir)
            per_step = renderer_seconds_per_step(start_dir, args.data)
            steps = max(int(args.minutes * 60 / per_step), 10)
            out = train_decoder(DecoderTrainConfig(model=str(start_dir), data=args.data, out=str(root / name),
                                                   steps=args.grid_steps, renderer_steps=steps))
            f = json.loads((out / "decoder_metrics.json").read_text())
            params = sum(p.numel() for p in VLBridgeModel.from_pretrained(out).connector.decoder.renderer.parameters())
            print(f"{name}: renderer {params / 1e6:.2f}M parameters, {steps} renderer steps (probe {per_step:.2f} s/step), "
                  f"{args.grid_steps} grid steps, {f['train_seconds']:.0f} s in all; {summary_line(f)}", flush=True)


if __name__ == "__main__":
    main()
