"""Training checkpoints: weights, optimizer, scheduler, RNG states and data position; written atomically.

Layout of ``RUN/checkpoints/``::

    step_000200/
        model/                    save_pretrained: config.json, model.safetensors, tokenizer
        optimizer.safetensors     every optimizer state tensor (key "state.<param>.<name>")
        rng.safetensors           torch CPU RNG state
        trainer_state.json        step, data position, param groups, scheduler, python/numpy RNG, metrics
    latest                        the name of the newest complete checkpoint

A checkpoint is written into a temporary directory and renamed into place only when complete; ``latest`` is
replaced (write temp + rename) after that. An interrupted write therefore leaves at most a stray temporary
directory, never a broken ``latest``. Nothing is pickled.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


@dataclass
class TrainerState:
    step: int = 0                  # optimizer steps done
    epoch: int = 0                 # data position: epoch ...
    batch_in_epoch: int = 0        # ... and micro-batches consumed in it
    tokens_seen: int = 0
    history: list[dict] = field(default_factory=list)   # validation results


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _python_rng() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _restore_python_rng(data: dict) -> None:
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _write_json_atomic(path: Path, data) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(ckpt_root: Path, model, optimizer, scheduler, state: TrainerState, keep: int = 2) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=ckpt_root))
    model.save_pretrained(tmp / "model")
    opt_tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    _write_json_atomic(tmp / "trainer_state.json", {
        "trainer": asdict(state), "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": _python_rng()})
    final = ckpt_root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_json_atomic(ckpt_root / LATEST, {"checkpoint": name})
    _prune(ckpt_root, keep, name)
    return final


def _prune(ckpt_root: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old.name != newest:
            shutil.rmtree(old, ignore_errors=True)
    for stray in ckpt_root.glob(".tmp-step_*"):      # left by an interrupted write
        shutil.rmtree(stray, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_root / json.loads(pointer.read_text())["checkpoint"]
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete or missing")
    return path


def load_training_state(path: Path, optimizer, scheduler) -> TrainerState:
    """Restore optimizer, scheduler and RNG states; returns the trainer state (step, data position)."""
    meta = json.loads((path / "trainer_state.json").read_text())
    optimizer.load_state_dict(_optimizer_from_files(load_file(str(path / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    _restore_python_rng(meta["rng"])
    return TrainerState(**meta["trainer"])
