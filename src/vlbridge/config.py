"""Typed configuration for a vlbridge run: model (vision, connector, LLM), data and training.

Every option lives in a dataclass field with a ``help`` string; the CLI (``vlbridge.cli.args``) turns the
fields into ``--section.field`` flags, so no option is declared twice. Named presets live in
``vlbridge.presets``. The resolved config is saved as JSON in every run and checkpoint directory.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def opt(default: Any, help: str, cli: bool = True) -> Any:
    """A dataclass field with a help string (mutable defaults are copied per instance); cli=False hides it
    from the command line (set by the program, not the user)."""
    meta = {"help": help, "cli": cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class VisionConfig:
    name_or_path: str | None = opt(None, "Hugging Face vision model (hub id or local dir); None builds `arch` from scratch")
    arch: dict = opt({}, "Hugging Face config kwargs (with model_type) used when name_or_path is None; "
                         "filled with the full resolved config when a model is saved")
    feature_layers: list[int] = opt([-1], "hidden-state indices fed to the connector (several are concatenated on "
                                          "the channel axis; -2 is LLaVA's penultimate layer)")
    keep_cls: bool = opt(False, "keep the CLS/prefix token(s) in the features passed to the connector")
    image_size: int | None = opt(None, "input resolution (square); None = the encoder's config image_size")
    image_mean: list[float] | None = opt(None, "normalisation mean; None = CLIP's")
    image_std: list[float] | None = opt(None, "normalisation std; None = CLIP's")


@dataclass
class ConnectorConfig:
    name: str = opt("mlp", "connector registry name (see `vlbridge.connectors.CONNECTORS`)")
    options: dict = opt({}, "connector options as JSON, e.g. '{\"depth\": 2}'")


@dataclass
class LLMConfig:
    name_or_path: str | None = opt(None, "Hugging Face causal LM (hub id or local dir); None builds `arch` from scratch")
    arch: dict = opt({}, "Hugging Face config kwargs (with model_type) used when name_or_path is None")
    tokenizer: str | None = opt(None, "tokenizer dir; None = the LLM's own, or (from scratch) one trained on the data")
    tokenizer_vocab: int = opt(640, "vocabulary size when a tokenizer is trained in-process")
    chat_template: str = opt("plain", "chat template name (see `vlbridge.data.template.TEMPLATES`)")
    max_length: int = opt(512, "longest sequence (text + visual tokens) the model accepts")
    image_positions: str = opt("sequential", "position ids of visual tokens: 'sequential' (LLaVA) or 'shared' (all "
                                             "of an image's tokens at one position; text continues after it)")


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


@dataclass
class DataConfig:
    path: str | None = opt(None, "dataset dir (with train.json/val.json) or a single LLaVA-style JSON file")
    train_file: str = opt("train.json", "training records, relative to `path` when it is a dir")
    val_file: str | None = opt("val.json", "validation records (None or missing file = no validation)")
    image_folder: str | None = opt(None, "folder that image paths resolve against; None = the JSON file's folder")
    on_bad_record: str = opt("skip", "'skip' (count and report bad records) or 'error' (stop at the first one)")
    image_modes: str = opt("convert", "non-RGB images: 'convert' deliberately (and note it) or 'reject' as bad")
    max_pixels: int = opt(64_000_000, "refuse images with more pixels than this (decompression bombs)")


@dataclass
class TrainConfig:
    stage: str = opt("instruct", "'align' (connector only), 'instruct' (connector + LLM; the vision encoder too "
                                 "with train_vision), or a stage the connector declares (`vlbridge connectors "
                                 "--describe NAME`), e.g. groma's 'det' (its region proposer alone)")
    stages: list[str] = opt([], "several stages to run in order, each into OUT/<stage>/ and starting from the "
                                "previous one's output, e.g. 'det,instruct'; empty = the single `stage` into OUT")
    stage_schedules: dict = opt({}, "per-stage settings when `stages` runs several, as JSON {stage: {field: value}}: "
                                    "TrainConfig fields for LM and det stages (steps, lr ...), the tokenizer "
                                    "stage's own fields for a visual tokenizer")
    train_vision: bool = opt(False, "also train the vision encoder in the instruct stage")
    init_from: str | None = opt(None, "start from this saved model dir (e.g. the align stage's output)")
    steps: int = opt(1000, "optimizer steps")
    batch_size: int = opt(16, "records per micro-batch (per process under torchrun)")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    lr: float = opt(1e-3, "peak learning rate")
    lr_vision: float | None = opt(None, "vision encoder learning rate (None = lr)")
    lr_connector: float | None = opt(None, "connector learning rate (None = lr)")
    lr_llm: float | None = opt(None, "LLM learning rate (None = lr)")
    weight_decay: float = opt(0.0, "AdamW weight decay (not applied to biases and norms)")
    betas: list[float] = opt([0.9, 0.98], "AdamW betas")
    warmup_steps: int = opt(50, "linear warm-up steps")
    min_lr_ratio: float = opt(0.1, "cosine decays to lr * min_lr_ratio")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    loss_weighting: str = opt("token", "LM loss weights: 'token' (LLaVA), 'sqrt' (InternVL 2.5 square averaging: "
                                       "1/sqrt(answer length)) or 'answer' (1/answer length)")
    lora_r: int = opt(0, "LoRA rank for the LLM in the instruct stage (0 = full fine-tuning)")
    lora_alpha: int = opt(16, "LoRA alpha")
    lora_targets: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj"], "LLM module names LoRA adapts")
    log_every: int = opt(10, "steps between progress-bar postfix updates")
    eval_every: int = opt(200, "steps between validation passes (0 = only at the end)")
    eval_batches: int = opt(8, "validation micro-batches per pass")
    save_every: int = opt(0, "steps between checkpoints (0 = only at the end)")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    seed: int = opt(0, "seed for initialisation, data order and dropout")
    resume: bool = opt(False, "continue from the latest checkpoint in --out")
    stop_after: int | None = opt(None, "stop (with a checkpoint) after this many steps in this invocation; "
                                       "--resume continues the same schedule (for jobs split across sessions)")
    num_workers: int = opt(0, "DataLoader worker processes for image decoding")
    cache_vision_features: float = opt(1024.0, "MB of a frozen vision encoder's features kept per image, so each "
                                               "image is encoded once (0 = off; used only while the encoder "
                                               "has nothing to train)")
    ddp_find_unused_parameters: bool = opt(True, "under torchrun: let DDP tolerate trainable parameters that get "
                                                  "no gradient in a step (an encoder's unused final norm, optional "
                                                  "connector branches); HF Trainer's default. False saves a "
                                                  "graph walk per step when every parameter is used")
    compile: bool = opt(False, "torch.compile each LLM decoder layer (regional compilation): fused elementwise "
                               "ops, faster steps once compiled; the first steps pay the compilation")
    group_by_length: bool = opt(False, "batch records of similar length (less padding; HF Trainer's "
                                       "group_by_length): each epoch's shuffled order is cut into groups of "
                                       "50 batches, each group sorted by length, then the batches shuffled")


@dataclass(frozen=True)
class Stage:
    """One training stage, as data: which parts train, on which records, run by which loop.

    ``trains`` and ``frozen`` are parameter-name prefixes of the model (``"connector"``, ``"llm"``, ``"vision"``,
    ``"connector.proposer"`` ...) or patterns with ``*`` (``"llm.*.moa_router"``); a parameter trains when it
    matches ``trains`` and not ``frozen``. The entry
    ``"embeddings:added"`` trains only the rows of the LLM's embedding (and untied output) matrices that belong to
    the tokens the connector added (region ids, [IMG]...), every other row staying exactly as it was. With LoRA,
    ``"llm"`` means the LLM's LoRA weights (LLM parameters a more specific entry names still train). ``runner`` names the loop: ``"lm"`` is the trainer's next-token loop;
    other names are stage runners of ``vlbridge.recipes.stages`` (a region proposer's, a visual tokenizer's).
    ``tasks`` restricts the training records to these tasks (``None`` = every record). ``schedule`` holds
    ``TrainConfig`` fields a multi-stage recipe sets for this stage (steps, lr ...).
    """
    name: str
    trains: tuple[str, ...]
    frozen: tuple[str, ...] = ()
    runner: str = "lm"
    tasks: tuple[str, ...] | None = None
    schedule: tuple[tuple[str, Any], ...] = ()

    def with_trains(self, *extra: str) -> "Stage":
        return dataclasses.replace(self, trains=tuple(dict.fromkeys(self.trains + extra)))


# The stages every model has; a connector may adjust them or add its own (``Connector.stages``).
STAGES: dict[str, Stage] = {
    "align": Stage("align", trains=("connector",)),                 # LLaVA's pre-training: connector only
    "instruct": Stage("instruct", trains=("connector", "llm")),     # connector + LLM (full or LoRA)
}


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = opt("runs/run", "run directory (checkpoints, logs, resolved config, final model)")
    preset: str | None = opt(None, "the preset this config started from", cli=False)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """Build dataclass `cls` from a (possibly partial) nested dict; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        kwargs[name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) and isinstance(value, dict) else value
    return cls(**kwargs)


def save_json(cfg, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_run_config(path: str | Path) -> RunConfig:
    return from_dict(RunConfig, json.loads(Path(path).read_text()))
