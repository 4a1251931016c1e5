"""Typed configuration for a vlbridge run: model (vision, connector, LLM), data and training.

Every option lives in a dataclass field with a ``help`` string; the CLI (``vlbridge.cli.args``) turns the
fields into ``--section.field`` flags, so no option is declared twice. Named presets live in
``vlbridge.presets``. The resolved config is saved as JSON in every run and checkpoint directory.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UserError, did_you_mean

Choices = Sequence[str] | str | Callable[[], Sequence[str]]


def opt(default: Any, help: str, cli: bool = True, *, choices: Choices | None = None,
        at_least: float | None = None, at_most: float | None = None) -> Any:
    """A dataclass field with a help string (mutable defaults are copied per instance); cli=False hides it
    from the command line (set by the program, not the user). ``choices`` (names, or the key of a registry of
    names, see ``register_names``) and the bounds ``at_least``/``at_most`` are checked by :func:`validate` and shown by
    the CLI; for a list field they apply to every item."""
    meta = {"help": help, "cli": cli, "choices": choices, "at_least": at_least, "at_most": at_most}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


# Registries of names (connectors, chat templates ...) that choice-checked fields name by key. The modules that
# define them register here when imported; this module sits below them and never imports them.
REGISTRIES: dict[str, Callable[[], Sequence[str]]] = {}


def register_names(key: str, names: Callable[[], Sequence[str]]) -> None:
    """Make ``opt(..., choices=key)`` fields accept the names ``names()`` returns."""
    REGISTRIES[key] = names


def field_choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The allowed values of a field (a registry's current names when given as a registry key), or None
    (also when the registry's module has not been imported)."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    if isinstance(choices, str):
        return tuple(REGISTRIES[choices]()) if choices in REGISTRIES else None
    return tuple(choices() if callable(choices) else choices)


@dataclass
class VisionConfig:
    name_or_path: str | None = opt(None, "Hugging Face vision model (hub id or local dir); None builds `arch` from scratch")
    arch: dict = opt({}, "Hugging Face config kwargs (with model_type) used when name_or_path is None; "
                         "filled with the full resolved config when a model is saved")
    feature_layers: list[int] = opt([-1], "hidden-state indices fed to the connector (several are concatenated on "
                                          "the channel axis; -2 is LLaVA's penultimate layer)")
    keep_cls: bool = opt(False, "keep the CLS/prefix token(s) in the features passed to the connector")
    image_size: int | None = opt(None, "input resolution (square); None = the encoder's config image_size",
                                 at_least=1)
    image_mean: list[float] | None = opt(None, "normalisation mean; None = CLIP's")
    image_std: list[float] | None = opt(None, "normalisation std; None = CLIP's")


@dataclass
class ConnectorConfig:
    name: str = opt("mlp", "connector registry name (`vlbridge connectors` lists them)", choices="connectors")
    options: dict = opt({}, "connector options as JSON, e.g. '{\"depth\": 2}'")

    def check(self) -> None:
        names = REGISTRIES.get(f"connector_options.{self.name}")     # registered by vlbridge.connectors
        known = list(names()) if names is not None else list(self.options)
        for key in self.options:
            if key not in known:
                raise UserError(f"connector {self.name!r} has no option {key!r}{did_you_mean(key, known)}; "
                                f"options: {', '.join(known)}")


@dataclass
class LLMConfig:
    name_or_path: str | None = opt(None, "Hugging Face causal LM (hub id or local dir); None builds `arch` from scratch")
    arch: dict = opt({}, "Hugging Face config kwargs (with model_type) used when name_or_path is None")
    tokenizer: str | None = opt(None, "tokenizer dir; None = the LLM's own, or (from scratch) one trained on the data")
    tokenizer_vocab: int = opt(640, "vocabulary size when a tokenizer is trained in-process", at_least=1)
    chat_template: str = opt("plain", "chat template name", choices="chat_templates")
    max_length: int = opt(512, "longest sequence (text + visual tokens) the model accepts", at_least=1)
    image_positions: str = opt("sequential", "position ids of visual tokens: 'sequential' (LLaVA) or 'shared' (all "
                                             "of an image's tokens at one position; text continues after it)",
                               choices="image_positions")


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
    on_bad_record: str = opt("skip", "'skip' (count and report bad records) or 'error' (stop at the first one)",
                             choices=("skip", "error"))
    image_modes: str = opt("convert", "non-RGB images: 'convert' deliberately (and note it) or 'reject' as bad",
                           choices=("convert", "reject"))
    max_pixels: int = opt(64_000_000, "refuse images with more pixels than this (decompression bombs)", at_least=1)


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
    steps: int = opt(1000, "optimizer steps", at_least=1)
    batch_size: int = opt(16, "records per micro-batch (per process under torchrun)", at_least=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step", at_least=1)
    lr: float = opt(1e-3, "peak learning rate", at_least=0)
    lr_vision: float | None = opt(None, "vision encoder learning rate (None = lr)", at_least=0)
    lr_connector: float | None = opt(None, "connector learning rate (None = lr)", at_least=0)
    lr_llm: float | None = opt(None, "LLM learning rate (None = lr)", at_least=0)
    weight_decay: float = opt(0.0, "AdamW weight decay (not applied to biases and norms)", at_least=0)
    betas: list[float] = opt([0.9, 0.98], "AdamW betas: two values in [0, 1)", at_least=0)
    warmup_steps: int = opt(50, "linear warm-up steps", at_least=0)
    min_lr_ratio: float = opt(0.1, "cosine decays to lr * min_lr_ratio", at_least=0, at_most=1)
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)", at_least=0)
    loss_weighting: str = opt("token", "LM loss weights: 'token' (LLaVA), 'sqrt' (InternVL 2.5 square averaging: "
                                       "1/sqrt(answer length)) or 'answer' (1/answer length)",
                              choices="loss_weightings")
    lora_r: int = opt(0, "LoRA rank for the LLM in the instruct stage (0 = full fine-tuning)", at_least=0)
    lora_alpha: int = opt(16, "LoRA alpha", at_least=1)
    lora_targets: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj"], "LLM module names LoRA adapts")
    log_every: int = opt(10, "steps between progress-bar postfix updates", at_least=1)
    eval_every: int = opt(200, "steps between validation passes (0 = only at the end)", at_least=0)
    eval_batches: int = opt(8, "validation micro-batches per pass", at_least=1)
    save_every: int = opt(0, "steps between checkpoints (0 = only at the end)", at_least=0)
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep (0 = all)", at_least=0)
    seed: int = opt(0, "seed for initialisation, data order and dropout")
    resume: bool = opt(False, "continue from the latest checkpoint in --out")
    stop_after: int | None = opt(None, "stop (with a checkpoint) after this many steps in this invocation; "
                                       "--resume continues the same schedule (for jobs split across sessions)",
                                   at_least=1)
    num_workers: int = opt(0, "DataLoader worker processes for image decoding", at_least=0)
    cache_vision_features: float = opt(1024.0, "MB of a frozen vision encoder's features kept per image, so each "
                                               "image is encoded once (0 = off; used only while the encoder "
                                               "has nothing to train)", at_least=0)
    ddp_find_unused_parameters: bool = opt(True, "under torchrun: let DDP tolerate trainable parameters that get "
                                                  "no gradient in a step (an encoder's unused final norm, optional "
                                                  "connector branches); HF Trainer's default. False saves a "
                                                  "graph walk per step when every parameter is used")
    compile: bool = opt(False, "torch.compile each LLM decoder layer (regional compilation): fused elementwise "
                               "ops, faster steps once compiled; the first steps pay the compilation")
    group_by_length: bool = opt(False, "batch records of similar length (less padding; HF Trainer's "
                                       "group_by_length): each epoch's shuffled order is cut into groups of "
                                       "50 batches, each group sorted by length, then the batches shuffled")

    def check(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"train.betas: expected two values in [0, 1) such as 0.9,0.98, got {self.betas}")


@dataclass(frozen=True)
class Stage:
    """One training stage, as data: which parts train, on which records, run by which loop.

    ``trains`` and ``frozen`` are parameter-name prefixes of the model (``"connector"``, ``"llm"``, ``"vision"``,
    ``"connector.proposer"`` ...); a parameter trains when it matches ``trains`` and not ``frozen``. The entry
    ``"embeddings:added"`` trains only the rows of the LLM's embedding (and untied output) matrices that belong to
    the tokens the connector added (region ids, [IMG]...), every other row staying exactly as it was. With LoRA,
    ``"llm"`` means the LLM's LoRA weights. ``runner`` names the loop: ``"lm"`` is the trainer's next-token loop;
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
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        hint = did_you_mean(unknown[0], names) if len(unknown) == 1 else ""
        raise UserError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}{hint}; options: {', '.join(names)}")
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        kwargs[name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) and isinstance(value, dict) else value
    return cls(**kwargs)


def save_json(cfg, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_run_config(path: str | Path) -> RunConfig:
    """A saved run config (RUN/config.json); a model's config.json or bad JSON is a UserError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--config {path} is a folder: pass the run config file, e.g. {path / 'config.json'}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object (a run config), got {type(data).__name__}")
    if data.get("model_type") == "vlbridge":
        raise UserError(f"{path} is a saved model's config, not a run config: start from the model with "
                        f"--init-from {path.parent}")
    try:
        return from_dict(RunConfig, data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- validation

def _type_ok(value: Any, kind) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin in (list, tuple) or kind in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_type_ok(v, args[0]) for v in value))
    if origin is dict or kind is dict:
        return isinstance(value, dict)
    return True


def _type_name(kind) -> str:
    return getattr(kind, "__name__", None) if typing.get_origin(kind) is None else str(kind).replace("typing.", "")


def validate(cfg, prefix: str = ""):
    """Check every field of a config dataclass (nested ones too) before anything runs: its type, its choices
    and bounds (see :func:`opt`), then the class's own ``check()`` (or a ``__post_init__`` that validates).
    Raises a UserError naming the field, e.g. ``train.batch_size: must be >= 1, got 0``; returns `cfg`."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        name, value, kind = prefix + f.name, getattr(cfg, f.name), hints[f.name]
        if dataclasses.is_dataclass(kind):
            if not dataclasses.is_dataclass(value):
                raise UserError(f"{name}: expected an object of options, got {value!r}")
            validate(value, name + ".")
            continue
        if not _type_ok(value, kind):
            raise UserError(f"{name}: expected {_type_name(kind)}, got {value!r}")
        items = value if isinstance(value, (list, tuple)) else [value]
        choices = field_choices(f)
        for item in items:
            if item is None:
                continue
            if choices is not None and item not in choices:
                raise UserError(f"{name}: unknown value {item!r}{did_you_mean(str(item), choices)}; choose from "
                                f"{', '.join(choices)}")
            low, high = f.metadata.get("at_least"), f.metadata.get("at_most")
            if low is not None and item < low:
                raise UserError(f"{name}: must be >= {low}, got {value!r}")
            if high is not None and item > high:
                raise UserError(f"{name}: must be <= {high}, got {value!r}")
    if hasattr(cfg, "check"):              # its messages name the fields in full
        cfg.check()
    elif hasattr(cfg, "__post_init__"):
        try:
            cfg.__post_init__()
        except ValueError as e:            # the class validates its own input there
            raise UserError(f"{prefix.rstrip('.')}: {e}" if prefix else str(e)) from None
    return cfg
