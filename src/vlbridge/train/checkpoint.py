"""Training checkpoints: weights, optimizer, scheduler, RNG states and data position; written atomically.

Layout of ``RUN/checkpoints/``::

    step_000200/
        model/                    save_pretrained: config.json, model.safetensors (full weights), tokenizer
        optimizer.safetensors     every optimizer state tensor (key "state.<param>.<name>"; <param> numbers the
                                  parameters as ``optimizer.state_dict()`` does; gathered in full under FSDP)
        rng.safetensors           torch CPU RNG state (and the accelerator's, keyed by its type, e.g. "cuda")
        trainer_state.json        step, data position, param groups, scheduler, fp16 gradient scaler,
                                  python/numpy RNG, metrics
    latest                        the name of the newest complete checkpoint

The layout is the same whatever the strategy (one process, DDP, FSDP), so any of them resumes any checkpoint
(the data position counts global batches: resume with the same number of processes to continue exactly).

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

from ..models.device import rng_state, set_rng_state

LATEST = "latest"


@dataclass
class TrainerState:
    step: int = 0                  # optimizer steps done
    epoch: int = 0                 # data position: epoch ...
    batch_in_epoch: int = 0        # ... and micro-batches consumed in it
    tokens_seen: int = 0
    history: list[dict] = field(default_factory=list)   # validation results


def _optimizer_to_files(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu").contiguous()
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


def save_checkpoint(ckpt_root: Path, model, optimizer_state: dict, scheduler, state: TrainerState, keep: int = 2,
                    weights: dict[str, torch.Tensor] | None = None, scaler=None,
                    device: torch.device | None = None) -> Path:
    """``optimizer_state``: ``optimizer.state_dict()`` (gathered, under FSDP); ``weights``: the full model weights
    when the model is sharded (None = its own); ``scaler``: the fp16 gradient scaler; ``device``: whose RNG to
    save besides the CPU's."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=ckpt_root))
    model.save_pretrained(tmp / "model", state_dict=weights)
    opt_tensors, opt_meta = _optimizer_to_files(optimizer_state)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    device_rng = rng_state(device) if device is not None else None
    if device_rng is not None:
        rng[device.type] = device_rng
    save_file(rng, str(tmp / "rng.safetensors"))
    _write_json_atomic(tmp / "trainer_state.json", {
        "trainer": asdict(state), "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": _python_rng(),
        "scaler": scaler.state_dict() if scaler is not None else {}})
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


def read_optimizer_state(path: Path) -> dict:
    """A checkpoint's optimizer state, as ``optimizer.state_dict()`` gives it (full, whatever the strategy)."""
    meta = json.loads((path / "trainer_state.json").read_text())
    return _optimizer_from_files(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])


def load_training_state(path: Path, scheduler, scaler=None, device: torch.device | None = None) -> TrainerState:
    """Restore scheduler, gradient scaler and RNG states (the optimizer's: ``read_optimizer_state``); returns the
    trainer state (step, data position)."""
    meta = json.loads((path / "trainer_state.json").read_text())
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if device is not None:
        set_rng_state(device, rng.get(device.type))
    _restore_python_rng(meta["rng"])
    return TrainerState(**meta["trainer"])
