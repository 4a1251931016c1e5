"""A text-only language model for LION to freeze: the tiny LLM pretrained on the data's conversations without
their images, saved as a Hugging Face causal-LM directory (with its tokenizer).

LION keeps its LLM (FlanT5) frozen and trains only the branches, the adapters and the router. A tiny LLM
built from scratch knows no language, and nothing can be downloaded here, so this step stands in for the
LLM's pretraining, as `vlbridge pretrain-vision` does for the encoder: the LLM learns the answers' words and
formats (and their priors) from the text alone, never seeing an image. ``--model.llm.name_or_path`` then
loads it like any downloaded checkpoint.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from ...config import ConnectorConfig, RunConfig
from ...data.template import IMAGE_TOKEN

PLACEHOLDER = re.compile(re.escape(IMAGE_TOKEN) + r"\n?")


def blind_records(records: list[dict]) -> list[dict]:
    """The records without images: no "image" field, no <image> placeholder in any turn."""
    out = []
    for rec in records:
        rec = {k: v for k, v in rec.items() if k != "image"}
        rec["conversations"] = [{**t, "value": PLACEHOLDER.sub("", t.get("value", ""))}
                                for t in rec.get("conversations", [])]
        out.append(rec)
    return out


def pretrain_text_lm(cfg: RunConfig, steps: int, out: Path) -> Path:
    """Train ``cfg``'s from-scratch LLM on DATA's train/val text for ``steps`` steps; returns the HF dir
    (``out/model``), reused when it exists."""
    from ...models.vlm import VLBridgeModel
    from ...train.trainer import train
    model_dir = out / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    data = Path(cfg.data.path)
    text = out / "text"
    text.mkdir(parents=True, exist_ok=True)
    for name in (cfg.data.train_file, cfg.data.val_file):
        if name and (data / name).is_file():
            records = json.loads((data / name).read_text())
            (text / Path(name).name).write_text(json.dumps(blind_records(records)) + "\n")
    run = copy.deepcopy(cfg)
    run.model.connector = ConnectorConfig("linear", {})                   # unused: no image reaches it
    run.data.path, run.data.image_folder = str(text), None
    run.data.train_file, run.data.val_file = Path(cfg.data.train_file).name, Path(cfg.data.val_file or "val.json").name
    run.train.stage, run.train.stages, run.train.stage_schedules = "instruct", [], {}
    run.train.steps, run.train.train_vision, run.train.init_from = steps, False, None
    run.train.resume = (out / "run" / "checkpoints").is_dir()
    run.out = str(out / "run")
    final = train(run)
    model = VLBridgeModel.from_pretrained(final)
    model.llm.save_pretrained(str(model_dir))
    model.tokenizer.save_pretrained(str(model_dir))
    return model_dir
