"""The training loop: one readable loop over a VLBridgeModel, for every stage and connector.

AdamW with per-module learning rates, linear warm-up + cosine decay, gradient clipping, gradient
accumulation (the LM loss is averaged over all supervised tokens of the optimizer step), a progress bar
with loss and tokens/s, periodic validation, atomic checkpoints and exact resume.

The loop runs on one device (``--train.device``) in one precision (``--train.precision``: autocast with fp32
master weights, a gradient scaler for fp16), with activation checkpointing where asked. Under ``torchrun`` the
same loop runs data-parallel (``distributed.py``) through a strategy (``strategy.py``): DDP replicas, or FSDP
shards (``fsdp.py``); rank 0 alone logs and writes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import RunConfig, save_json, validate
from ..data.dataset import collate
from ..data.records import SkipReport
from ..models.activation_checkpointing import enable_activation_checkpointing
from ..models.build import build_model
from ..models.compile import compile_decoder_layers
from ..models.device import peak_memory_mb, reset_peak_memory, resolve_device, seed_device
from ..models.feature_cache import FeatureCache
from ..models.loss_weights import answer_weights
from ..models.precision import resolve_precision, store_frozen, torch_dtype
from ..models.vlm import VLBridgeModel
from .checkpoint import (TrainerState, latest_checkpoint, load_training_state, read_optimizer_state,
                         save_checkpoint)
from .data import BatchStream, data_files, load_split, make_dataset
from .distributed import barrier, check_same_everywhere, init_from_env, shutdown, sum_across
from .output_dir import check_output_dir, clear_outputs
from .schedule import warmup_cosine
from .stages import apply_stage, format_counts, make_optimizer, resolve_stage
from .strategy import make_strategy


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loss_weight_total(batch, mode: str) -> float:
    """What the step's loss is normalised by: the summed token weights of its supervised tokens."""
    return sum(float(answer_weights(labels, mode).sum()) for labels in batch.labels)


class Trainer:
    """``overwrite`` replaces what ``cfg.out`` holds (final model, checkpoints, logs) instead of refusing it;
    the folder is touched only once the data and model have loaded."""

    def __init__(self, cfg: RunConfig, overwrite: bool = False):
        self.cfg = cfg
        self.overwrite = overwrite
        self.out = Path(cfg.out)
        self.ckpt_root = self.out / "checkpoints"
        self.report = SkipReport()
        self.device = resolve_device(cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.ctx = init_from_env(self.device)

    def log(self, msg: str) -> None:
        if self.ctx.is_main:
            log(msg)

    # ---- set-up -------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        validate(cfg)
        check_output_dir(self.out, overwrite=self.overwrite, resume=tc.resume, can_resume=True)
        resume_from = latest_checkpoint(self.ckpt_root) if tc.resume and not self.overwrite else None
        if tc.resume and resume_from is None:
            self.log(f"--resume: no checkpoint in {self.ckpt_root}; starting from scratch")
        seed_everything(tc.seed)
        seed_device(self.device, tc.seed)

        train_file, val_file = data_files(cfg.data)
        train_records = load_split(train_file, cfg.data, self.report)
        val_records = load_split(val_file, cfg.data, self.report) if val_file else []
        self.n_records = len(train_records) + len(val_records) + len(self.report.entries)
        if resume_from is not None:
            model = VLBridgeModel.from_pretrained(resume_from / "model")
        elif tc.init_from:
            model = VLBridgeModel.from_pretrained(tc.init_from)
        else:
            texts = (t.text.replace("<image>", "") for r in train_records for t in r.turns)
            model = build_model(cfg.model, texts)
        check_same_everywhere("tokenizer", model.tokenizer.backend_tokenizer.to_str(), self.ctx)
        self.stage = stage = resolve_stage(model.connector, tc)
        if stage.runner != "lm":
            raise ValueError(f"stage {stage.name!r} is not a language-model stage (its runner is {stage.runner!r}); "
                             f"run it with `vlbridge train --stage {stage.name}`")
        if tc.lora_r and "llm" in stage.trains and model.lora is None:
            model.apply_lora(tc.lora_r, tc.lora_alpha, tc.lora_targets)
        self.log(format_counts(apply_stage(model, stage), stage.name))
        self.store_frozen_parts(model)
        if stage.tasks is not None:
            train_records, val_records = self.select_tasks(train_records, stage), self.select_tasks(val_records, stage)
        self.model = model.train()            # after freezing: frozen modules stay in eval mode
        if tc.cache_vision_features > 0 and model.vision.frozen():
            model.vision.cache = FeatureCache(tc.cache_vision_features, tc.vision_feature_store)
        for line in enable_activation_checkpointing(model, tc.activation_checkpointing):
            self.log(f"activation checkpointing: {line}")
        if tc.compile:
            self.log(f"compile: {compile_decoder_layers(model.llm)} LLM decoder layers (compiled at first use)")
        self.strategy = make_strategy(tc.strategy, self.ctx, self.device, self.precision,
                                      tc.ddp_find_unused_parameters)
        self.forward = self.strategy.wrap(model)            # on the device; DDP or FSDP when distributed
        self.scaler = self.strategy.scaler()
        self.log(f"device: {self.device}, precision {self.precision}")
        if self.ctx.enabled:
            self.log(f"distributed: {self.ctx.world} processes x batch {tc.batch_size} = global batch "
                     f"{tc.batch_size * self.ctx.world} records per micro-batch")
            self.log(self.strategy.describe())

        self.train_set = make_dataset(train_records, model, cfg.data, self.report)
        self.val_set = make_dataset(val_records, model, cfg.data, self.report) if val_records else None
        self.log(f"data: {len(self.train_set)} training records from {train_file}"
            + (f", {len(self.val_set)} validation records from {val_file}" if self.val_set else ""))
        if self.report.entries:
            self.log("data: " + self.report.summary(self.n_records))

        self.optimizer = make_optimizer(model, tc, fused=self.strategy.fused_optimizer())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(warmup_cosine, total=tc.steps, warmup=tc.warmup_steps, min_ratio=tc.min_lr_ratio))
        self.state = TrainerState()
        if resume_from is not None:
            self.strategy.load_optimizer_state(model, self.optimizer, read_optimizer_state(resume_from))
            self.state = load_training_state(resume_from, self.scheduler, self.scaler, self.device)
            self.log(f"resumed from {resume_from} at step {self.state.step}")
        self.stream = BatchStream(self.train_set, tc, self.state.epoch, self.state.batch_in_epoch, self.ctx)
        self.claim_output_dir()

    def store_frozen_parts(self, model: VLBridgeModel) -> None:
        """Keep the frozen weights of the encoder / LLM in the storage dtype the run config names."""
        for part, what in (("vision", "the vision encoder"), ("llm", "the LLM")):
            name = getattr(self.cfg.model, part).dtype
            getattr(model.cfg, part).dtype = name             # saved with the model
            if store_frozen(model.module_named(part), torch_dtype(name), what):
                self.log(f"{what}: frozen weights stored in {name}")

    def claim_output_dir(self) -> None:
        """Once every input has loaded: clear the old outputs when overwriting, then save the resolved config."""
        barrier(self.ctx)                     # every rank has checked the run dir before rank 0 writes to it
        if self.ctx.is_main:
            if self.overwrite:
                clear_outputs(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            save_json(self.cfg, self.out / "config.json")
        barrier(self.ctx)

    def select_tasks(self, records: list, stage) -> list:
        """The records of the stage's tasks (its data mix)."""
        kept = [r for r in records if r.task in stage.tasks]
        self.log(f"stage {stage.name!r}: {len(kept)} of {len(records)} records (tasks {', '.join(stage.tasks)})")
        if records and not kept:
            raise ValueError(f"stage {stage.name!r} trains on tasks {list(stage.tasks)}, and the data has none of them")
        return kept

    # ---- one optimizer step ------------------------------------------------------------------------
    def train_step(self) -> dict:
        tc = self.cfg.train
        micro = [next(self.stream) for _ in range(tc.grad_accum)]
        # Normalise by the supervised weight of the whole (global) step; DDP then averages over ranks, so
        # scaling by the world size makes the gradient that of one process over the global batch.
        norm = max(sum_across([sum(loss_weight_total(b, tc.loss_weighting) for b in micro)], self.ctx)[0], 1e-8)
        scale = self.ctx.world / norm
        self.optimizer.zero_grad(set_to_none=True)
        lm_sum, positions, aux_total = 0.0, 0, 0.0
        stats: dict[str, list[float]] = {}          # the hidden-state objective's diagnostics, per micro-batch
        for k, batch in enumerate(micro):
            last = k == len(micro) - 1
            with contextlib.nullcontext() if last else self.strategy.accumulating():   # gradients sync once
                with self.strategy.autocast():
                    out = self.forward(batch, loss_weighting=tc.loss_weighting)
                    aux = sum(out.aux_losses.values(), torch.zeros(())) / tc.grad_accum
                self.scaler.scale(out.lm_loss_sum * scale + aux).backward()       # fp16: scaled; else as is
            lm_sum += float(out.lm_loss_sum.detach())
            aux_total += float(aux.detach())
            for key, value in out.stats.items():
                stats.setdefault(key, []).append(value)
            positions += out.n_positions
        lm_sum, aux_total, positions = sum_across([lm_sum, aux_total / self.ctx.world, positions], self.ctx)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scaler.unscale_(self.optimizer)
        grad_norm = self.strategy.clip_grad_norm(params, tc.max_grad_norm)
        self.scaler.step(self.optimizer)                  # fp16: skipped when a gradient is inf/NaN
        self.scaler.update()
        self.scheduler.step()
        self.state.step += 1
        self.state.epoch, self.state.batch_in_epoch = self.stream.position
        self.state.tokens_seen += positions
        return {"loss": lm_sum / norm, "aux": aux_total, "grad_norm": grad_norm, "positions": int(positions),
                "stats": {key: sum(v) / len(v) for key, v in stats.items()}}

    @torch.no_grad()
    def validate(self) -> float | None:
        if self.val_set is None:
            return None
        self.model.eval()
        bs = self.cfg.train.batch_size
        total, n = 0.0, 0
        for i in range(min(self.cfg.train.eval_batches, math.ceil(len(self.val_set) / bs))):
            batch = collate([self.val_set[j] for j in range(i * bs, min((i + 1) * bs, len(self.val_set)))])
            if len(batch):
                with self.strategy.autocast():
                    out = self.model(batch)
                total, n = total + float(out.lm_loss_sum), n + out.n_tokens
        self.model.train()
        return total / max(n, 1)

    def checkpoint(self) -> Path:
        """Every rank gathers what is saved (a collective under FSDP); rank 0 writes; all wait until it is done."""
        path = self.ckpt_root / f"step_{self.state.step:06d}"
        weights = self.strategy.model_state(self.model)
        optimizer_state = self.strategy.optimizer_state(self.model, self.optimizer)
        if self.ctx.is_main:
            path = save_checkpoint(self.ckpt_root, self.model, optimizer_state, self.scheduler, self.state,
                                   self.cfg.train.keep_checkpoints, weights=weights,
                                   scaler=self.scaler if self.scaler.is_enabled() else None, device=self.device)
        barrier(self.ctx)
        return path

    # ---- the loop -------------------------------------------------------------------------------------
    def train(self) -> Path:
        ts = time.perf_counter()
        self.setup()
        self.log(f"set-up took {time.perf_counter() - ts:.1f} s")
        tc = self.cfg.train
        log_file = (self.out / "log.jsonl").open("a") if self.ctx.is_main else open(os.devnull, "w")
        stop_at = min(tc.steps, self.state.step + tc.stop_after) if tc.stop_after else tc.steps
        bar = tqdm(total=tc.steps, initial=self.state.step, desc=f"train[{tc.stage}]", mininterval=1.0,
                   dynamic_ncols=True, file=sys.stderr, disable=not self.ctx.is_main)
        t0, pos0, smooth = time.perf_counter(), 0, None
        reset_peak_memory(self.device)
        try:
            while self.state.step < stop_at:
                m = self.train_step()
                smooth = m["loss"] if smooth is None else 0.9 * smooth + 0.1 * m["loss"]
                pos0 += m["positions"]
                bar.update(1)
                step = self.state.step
                if step % tc.log_every == 0 or step == stop_at:
                    tok_s = pos0 / (time.perf_counter() - t0)
                    lr = self.scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{smooth:.3f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.1e}")
                    log_file.write(json.dumps({"step": step, "loss": m["loss"], "aux": m["aux"], "lr": lr,
                                               "grad_norm": m["grad_norm"], "tokens_per_s": tok_s,
                                               "elapsed_s": round(time.perf_counter() - t0, 3),
                                               "peak_mem_mb": round(peak_memory_mb(self.device), 1),
                                               **m["stats"]}) + "\n")
                    log_file.flush()
                validating = self.ctx.is_main or self.strategy.every_rank_forwards   # FSDP: all ranks forward
                if ((tc.eval_every and step % tc.eval_every == 0) or step == tc.steps) and validating:
                    tv = time.perf_counter()
                    val = self.validate()
                    if val is not None and self.ctx.is_main:
                        self.state.history.append({"step": step, "val_loss": val})
                        log_file.write(json.dumps({"step": step, "val_loss": val,
                                                   "val_s": round(time.perf_counter() - tv, 3)}) + "\n")
                        bar.write(f"step {step}: val loss {val:.4f}", file=sys.stderr)
                if (tc.save_every and step % tc.save_every == 0) or step == stop_at:
                    tc0 = time.perf_counter()
                    self.checkpoint()
                    log_file.write(json.dumps({"step": step, "checkpoint_s": round(time.perf_counter() - tc0, 3)}) + "\n")
        except KeyboardInterrupt:
            bar.close()
            path = self.checkpoint()
            self.log(f"interrupted: checkpoint {path} written; continue with --resume")
            raise
        finally:
            bar.close()
            log_file.close()
        if (self.report.entries or self.report.notes) and self.ctx.is_main:
            self.report.write_jsonl(self.out / "skipped_records.jsonl")
        self.log("data: " + self.report.summary(self.n_records))
        if self.model.vision.cache is not None:
            self.log(self.model.vision.cache.summary())
        if self.state.step < tc.steps:
            self.log(f"stopped at step {self.state.step} of {tc.steps} (--stop_after); continue with --resume")
            return self.ckpt_root / f"step_{self.state.step:06d}"
        final = self.out / "final"
        weights = self.strategy.model_state(self.model)
        if self.ctx.is_main:
            self.model.save_pretrained(final, state_dict=weights)
        barrier(self.ctx)
        self.log(f"saved {final}")
        return final


def train(cfg: RunConfig, overwrite: bool = False) -> Path:
    """Run a language-model stage (``Stage.runner == "lm"``) to its end; returns the final model dir (or the
    checkpoint where ``stop_after`` stopped). A folder ``cfg.out`` holding a model or checkpoints is refused
    unless ``cfg.train.resume`` continues it or ``overwrite`` replaces it."""
    validate(cfg)
    trainer = Trainer(cfg, overwrite)
    try:
        return trainer.train()
    finally:
        shutdown(trainer.ctx)
