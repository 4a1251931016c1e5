"""What every arena connector shares, built once: the base run config, the ShapesWorld data, the vision encoder.

Each piece is reused when it already exists with the same settings (so a re-run or a resumed arena does not
regenerate or retrain it) and is an error when it exists with different settings (so two comparisons never
mix silently in one run directory).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

from ..config import RunConfig, VisionConfig, from_dict, load_run_config
from ..data.shapesworld import ShapesWorldConfig, generate
from ..errors import UserError
from ..presets import get_preset
from .config import ArenaConfig


def log(msg: str) -> None:
    print(f"[arena] {msg}", file=sys.stderr, flush=True)


def plain(obj) -> object:
    """A JSON-comparable form of a dataclass or dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj))


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested dicts, e.g. ['train.steps: 300 -> 600']."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def as_saved(cls, saved: dict) -> dict:
    """A saved config rebuilt through its dataclass, so a field added to the code since (with its default)
    does not count as a change; a field the code no longer has stays and shows up as a difference."""
    try:
        return plain(from_dict(cls, saved))
    except (ValueError, TypeError):
        return plain(saved)


def require_same(saved: dict, wanted: dict, where: Path, what: str) -> None:
    diff = differences(saved, wanted)
    if diff:
        raise UserError(f"{where} holds {what} made with other settings ({'; '.join(diff[:4])}); "
                         f"use another --out, or delete it to rebuild")


def base_run_config(cfg: ArenaConfig) -> RunConfig:
    """The run config every connector starts from: --base_config, else the --base preset."""
    if cfg.base_config:
        path = Path(cfg.base_config)
        if not path.is_file():
            raise FileNotFoundError(f"--base-config {path} does not exist")
        return load_run_config(path)
    return get_preset(cfg.base)


def prepare_data(cfg: ArenaConfig, out: Path) -> Path:
    """The dataset dir: --data as given, else ShapesWorld generated (once) into OUT/data."""
    if cfg.data:
        root = Path(cfg.data)
        missing = [f for f in ("train.json", "test.json") if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"--data {root} lacks {', '.join(missing)} (make one with `vlbridge data shapes`)")
        return root
    root = out / "data"
    stamp = root / "shapesworld.json"
    if stamp.is_file():
        saved = as_saved(ShapesWorldConfig, json.loads(stamp.read_text())["config"])
        require_same(saved, plain(cfg.shapes), stamp, "ShapesWorld data")
        log(f"data: reusing {root}")
        return root
    log(f"data: generating ShapesWorld ({cfg.shapes.n} scenes, {cfg.shapes.image_size}px) into {root}")
    generate(cfg.shapes, root)
    return root


def data_image_size(data: Path) -> int | None:
    """The image side of a ShapesWorld dir (None when the dir was not made by `vlbridge data shapes`)."""
    stamp = data / "shapesworld.json"
    return json.loads(stamp.read_text())["config"]["image_size"] if stamp.is_file() else None


def sized_vision(vision: VisionConfig, size: int | None) -> VisionConfig:
    """A from-scratch encoder config set to take `size`-pixel images (a conv net takes any size; a ViT's
    position table is built for arch.image_size)."""
    vision = copy.deepcopy(vision)
    if size is not None and not vision.name_or_path:
        vision.image_size = size
        if "image_size" in vision.arch:
            vision.arch["image_size"] = size
    return vision


def prepare_vision(cfg: ArenaConfig, base_vision: VisionConfig, data: Path, out: Path) -> str:
    """The frozen encoder all connectors share: --vision, a checkpoint named by the base preset, or one
    pretrained (once) into OUT/vision on the data's scenes.json."""
    if cfg.vision:
        if not Path(cfg.vision).is_dir():
            raise FileNotFoundError(f"--vision {cfg.vision} is not a directory")
        return cfg.vision
    if base_vision.name_or_path:
        return base_vision.name_or_path
    from ..recipes.vision_pretrain import VisionPretrainConfig, pretrain_vision
    scenes = data / "scenes.json"
    if not scenes.is_file():
        raise FileNotFoundError(f"{data} has no scenes.json to pretrain the vision encoder on; pass --vision DIR")
    target = out / "vision"
    vcfg = VisionPretrainConfig(annotations=str(scenes), out=str(target), attributes=list(cfg.vision_attributes),
                                steps=cfg.vision_steps, seed=cfg.seed, vision=base_vision)
    stamp = target / "vision_pretrain.json"
    if stamp.is_file():
        require_same(as_saved(VisionPretrainConfig, json.loads(stamp.read_text())["config"]), plain(vcfg), stamp,
                     "a vision encoder")
        log(f"vision: reusing {target}")
        return str(target)
    log(f"vision: pretraining the {base_vision.arch.get('model_type', '')} encoder for {cfg.vision_steps} steps "
        f"on {', '.join(cfg.vision_attributes)}")
    pretrain_vision(vcfg)
    accuracy = json.loads(stamp.read_text())["held_out_patch_accuracy"]
    log(f"vision: held-out patch accuracy {json.dumps(accuracy)}")
    return str(target)
