"""Emu's visual decoders at an equal CPU budget: which one paints a trained model's embeddings best per minute.

    python bench/emu_decoders.py --model RUN/final --data DOCS [--minutes 5] [--variants palette128,palette64,flow64]

Each variant is the same trained model with another decoder (the connector's decoder options), trained by the
`decoder` stage for as many steps as fit ``--minutes`` at the speed of its first steps, then judged on the
held-out images (val split): pixel L1, what the ShapesWorld checker reads in the reconstructions, and the
milliseconds to paint one image. Prints one line per variant.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vlbridge.config import ConnectorConfig
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.recipes.emu.decoder import DecoderTrainConfig, train_decoder

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


def seconds_per_step(model_dir: Path, data: str, probe: int = 10) -> float:
    """The decoder stage's seconds per step over ``probe`` steps (encoding and saving not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = train_decoder(DecoderTrainConfig(model=str(model_dir), data=data, out=tmp, steps=probe, max_images=256,
                                               val_images=1))
        return json.loads((out / "decoder_metrics.json").read_text())["seconds_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained Emu model dir")
    parser.add_argument("--data", required=True, help="documents dir with scenes.json")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per variant (default: 5)")
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
            per_step = seconds_per_step(start_dir, args.data)
            steps = max(int(args.minutes * 60 / per_step), 10)
            out = train_decoder(DecoderTrainConfig(model=str(start_dir), data=args.data, out=str(root / name), steps=steps))
            f = json.loads((out / "decoder_metrics.json").read_text())
            v, c = f["val"], f["val"]["checker"]
            params = sum(p.numel() for p in VLBridgeModel.from_pretrained(out).connector.decoder.parameters())
            print(f"{name}: {params / 1e6:.2f}M parameters, {steps} steps ({per_step:.2f} s/step, {f['train_seconds']:.0f} s "
                  f"with encoding), val {v['images']} images: pixel L1 {v['pixel_l1']:.4f}, colours exact "
                  f"{c['colors_exact']:.1%}, every object {c['objects_present']:.1%}, exact scene {c['objects_exact']:.1%}, "
                  f"{1000 * v['seconds_per_image']:.1f} ms/image", flush=True)


if __name__ == "__main__":
    main()
