"""Whether a job may write into its output folder: never over a trained model or checkpoints by accident.

A training run's folder holds ``config.json``, ``log.jsonl``, ``checkpoints/`` and ``final/``; other jobs
(vision pretraining, the LaVIT tokenizer, ``lavit prepare``) write a model straight into their folder.
``check_output_dir`` refuses a folder holding such work unless the job resumes it or ``overwrite`` is set;
``clear_outputs`` then removes only what a job writes (never the folder or anything else in it), and is
called once the inputs have validated.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UserError

MODEL_FILES = ("model.safetensors",)
RUN_OUTPUTS = ("final", "checkpoints", "config.json", "log.jsonl", "skipped_records.jsonl")


def _latest_step(ckpt_root: Path) -> str | None:
    pointer = ckpt_root / "latest"
    if pointer.is_file():
        try:
            return json.loads(pointer.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError):
            return "an unreadable 'latest' pointer"
    steps = sorted(p.name for p in ckpt_root.glob("step_*") if p.is_dir())
    return steps[-1] if steps else None


def existing_work(out: Path) -> list[str]:
    """What in `out` a new job would replace: a saved model, a run's final model, its checkpoints."""
    out = Path(out)
    found = [f"a model ({out / name})" for name in MODEL_FILES if (out / name).is_file()]
    if (out / "final" / "model.safetensors").is_file() or (out / "final" / "config.json").is_file():
        found.append(f"a trained model ({out / 'final'})")
    latest = _latest_step(out / "checkpoints")
    if latest is not None:
        found.append(f"checkpoints (latest: {latest})")
    return found


def has_checkpoint(out: Path) -> bool:
    return (Path(out) / "checkpoints" / "latest").is_file()


def check_output_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False,
                     can_resume: bool = False) -> None:
    """Refuse an `out` holding work unless `overwrite`, or `resume` of a job that `can_resume` from its
    checkpoints. A UserError says what is there and which flag to pass."""
    out = Path(out)
    if resume and overwrite:
        raise UserError("--resume continues what --out holds and --overwrite replaces it: pass one of them")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    work = existing_work(out)
    if not work or overwrite:
        return
    if resume and can_resume:
        if has_checkpoint(out):
            return
        raise UserError(f"--resume: {out} holds {' and '.join(work)} but no checkpoint to resume from; pass "
                        f"--overwrite to train again from scratch (replacing it), or use another --out")
    again = "--resume to continue it, " if can_resume and has_checkpoint(out) else ""
    raise UserError(f"{out} already holds {' and '.join(work)}: pass {again}--overwrite to replace it, or use "
                    f"another --out")


def clear_outputs(out: str | Path, names: tuple[str, ...] = RUN_OUTPUTS + MODEL_FILES) -> None:
    """Remove what a job writes into `out` (files or folders named in `names`), nothing else."""
    out = Path(out)
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
