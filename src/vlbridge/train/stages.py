"""Training stages applied to a model: which parameters train, per-module parameter groups and learning rates.

A stage is data (``config.Stage``): the parts that train as parameter-name prefixes, the parts kept frozen,
the records it trains on and the loop that runs it. The common stages are ``align`` (the connector only, as
in LLaVA's pre-training) and ``instruct`` (connector + LLM, full or LoRA, plus the encoder with
``train_vision``); a connector adjusts or extends them through ``Connector.stages`` (e.g. groma's ``det``).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch

from ..config import Stage, TrainConfig
from ..errors import UserError
from ..models.vlm import MODULES

ADDED_ROWS = "embeddings:added"        # Stage.trains entry: only the embedding rows of the connector's tokens
_ROW_HOOKS = "_added_row_hooks"


def resolve_stage(connector, cfg: TrainConfig) -> Stage:
    """The stage ``cfg.stage`` names, as this model's connector declares it (``train_vision`` adds the encoder
    to ``instruct``)."""
    stages = type(connector).stages(connector.options)
    if cfg.stage not in stages:
        raise UserError(f"unknown stage {cfg.stage!r} for connector {type(connector).__name__}; "
                         f"stages: {', '.join(stages)}")
    stage = stages[cfg.stage]
    return stage.with_trains("vision") if cfg.train_vision and cfg.stage == "instruct" else stage


def _matches(name: str, prefixes) -> bool:
    """``name`` is a prefix entry or lies under one; an entry with ``*`` is a pattern over whole names
    (``llm.*.moa_router``: the router of every layer, wherever the LLM keeps its layers)."""
    return any(name == p or name.startswith(p + ".") or ("*" in p and (fnmatchcase(name, p) or fnmatchcase(name, p + ".*")))
               for p in prefixes)


def apply_stage(model, stage: Stage) -> dict[str, tuple[int, int]]:
    """Freeze/unfreeze the model's parameters for ``stage``; returns {module: (trainable, total)} counts."""
    clear_row_masks(model)
    for name, p in model.named_parameters():
        p.requires_grad = _matches(name, stage.trains) and not _matches(name, stage.frozen)
        if p.requires_grad and model.lora is not None and name.startswith("llm.") and "lora_" not in name \
                and not _matches(name, [t for t in stage.trains if t != "llm"]):
            p.requires_grad = False      # LoRA: the LLM trains through its adapters (and what the stage names)
    if ADDED_ROWS in stage.trains:
        added = model.connector.added_tokens()
        train_only_rows(model, model.tokenizer.convert_tokens_to_ids(added) if added else [])
    return {name: (sum(p.numel() for p in model.module_named(name).parameters() if p.requires_grad),
                   sum(p.numel() for p in model.module_named(name).parameters())) for name in MODULES}


def train_only_rows(model, rows: list[int]) -> None:
    """Make the LLM's embedding (and untied output) matrices trainable in ``rows`` only: a gradient mask keeps
    every other row at exactly its value, and the matrices are excluded from weight decay."""
    handles = []
    embeddings = [model.llm.get_input_embeddings(), model.llm.get_output_embeddings()]
    for weight in {id(e.weight): e.weight for e in embeddings if e is not None}.values():
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)
        mask[rows] = 1
        weight.requires_grad = True
        weight.no_weight_decay = True                            # read by param_groups
        handles.append((weight.register_hook(lambda g, m=mask: g * m), weight))
    model.__dict__[_ROW_HOOKS] = handles


def clear_row_masks(model) -> None:
    for handle, weight in model.__dict__.pop(_ROW_HOOKS, []):
        handle.remove()
        weight.no_weight_decay = False


def format_counts(counts: dict[str, tuple[int, int]], stage: str) -> str:
    lines = [f"stage {stage!r}: trainable parameters per module"]
    for name, (n_train, n_total) in counts.items():
        lines.append(f"  {name:<10} {n_train:>12,} / {n_total:>12,}  {'trained' if n_train else 'frozen'}")
    total = sum(t for t, _ in counts.values())
    lines.append(f"  {'total':<10} {total:>12,} / {sum(n for _, n in counts.values()):>12,}")
    return "\n".join(lines)


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups per module (its own lr) x (decay, no decay for biases/norms/embeddings of dim < 2)."""
    groups = []
    for name in MODULES:
        lr = getattr(cfg, f"lr_{name}") or cfg.lr
        params = [(n, p) for n, p in model.module_named(name).named_parameters() if p.requires_grad]
        decay = [p for n, p in params if p.ndim >= 2 and not getattr(p, "no_weight_decay", False)]
        no_decay = [p for n, p in params if p.ndim < 2 or getattr(p, "no_weight_decay", False)]
        for ps, wd, tag in ((decay, cfg.weight_decay, "decay"), (no_decay, 0.0, "no_decay")):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": f"{name}.{tag}"})
    if not groups:
        raise UserError(f"stage {cfg.stage!r} leaves nothing to train")
    return groups


def make_optimizer(model, cfg: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``; ``fused`` (when the parameters allow it): the kernel that updates all of them in
    one pass (much faster than the per-tensor loop on CPU)."""
    groups = param_groups(model, cfg)
    fused = fused and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)
