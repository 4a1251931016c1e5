"""Typed options of the connector arena and its named presets (``arena-cpu``).

What every connector shares (base model preset, data, vision encoder, seed, schedule, step budget, eval
split) lives here; what differs is only the connector name and its options. The CLI turns every field into
a flag (``--steps``, ``--shapes.max_objects`` ...), and the resolved config is saved as ``OUT/arena.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config import opt
from ..data.shapesworld import ShapesWorldConfig
from ..errors import unknown_name
from ..presets import PRESETS

ALL_CONNECTORS = ["mlp", "qformer", "resampler", "cabstractor", "pixel_shuffle", "pargo"]


@dataclass
class ArenaConfig:
    connectors: list[str] = opt(list(ALL_CONNECTORS), "connectors to compare (registry names, comma-separated)",
                                choices="connectors")
    connector_options: dict = opt({}, "options per connector as JSON, e.g. '{\"resampler\": {\"num_queries\": 16}}'")
    out: str = opt("runs/arena", "run directory: data/, vision/, one dir per connector, arena.md/.csv, plots")
    base: str = opt("tiny-cpu", "training preset every connector starts from (vision arch, LLM, schedule)",
                    choices=lambda: tuple(PRESETS))
    base_config: str | None = opt(None, "a saved run config.json to start from instead of `base`")
    steps: int = opt(600, "optimizer steps per connector (the same budget for all)", at_least=1)
    batch_size: int | None = opt(None, "records per step (None = the base preset's)", at_least=1)
    lr: float | None = opt(None, "peak learning rate (None = the base preset's)", at_least=0)
    warmup_steps: int | None = opt(None, "warm-up steps (None = the base preset's, at most a tenth of `steps`)",
                                   at_least=0)
    seed: int = opt(0, "training seed: the same LLM initialisation and data order for every connector")
    save_every: int = opt(100, "steps between checkpoints (a killed arena resumes from the last one)", at_least=0)
    data: str | None = opt(None, "an existing ShapesWorld dir to use instead of generating one into OUT/data")
    vision: str | None = opt(None, "a pretrained vision encoder dir shared by all connectors; None = pretrain "
                                   "one into OUT/vision (`vlbridge pretrain-vision` on the data's scenes.json)")
    vision_steps: int = opt(400, "vision pretraining steps (when `vision` is None)", at_least=1)
    vision_attributes: list[str] = opt(["shape", "color"], "object attributes the encoder's patches learn "
                                                           "in pretraining (add 'glyph' to make glyphs legible)")
    stage_schedules: dict = opt({"det": {"steps": 300, "lr": 2e-3, "warmup_steps": 30}},
                                "settings of the stages a connector runs before its LLM stage (its `pre_stage`), "
                                "as JSON {stage: {field: value}}: e.g. groma's 'det' (training fields) or lavit's "
                                "'tokenizer' (fields of `vlbridge lavit tokenizer`); not counted in `steps`")
    eval_limit: int | None = opt(100, "test records per task (None = the whole test split)", at_least=1)
    eval_batch_size: int = opt(64, "records per generation batch in evaluation", at_least=1)
    max_new_tokens: int = opt(40, "generation budget per answer", at_least=1)
    shapes: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)
    preset: str | None = opt(None, "the preset this config started from", cli=False)


def arena_cpu() -> ArenaConfig:
    """Six connectors in <= 40 min on 2 CPU cores: the tiny-cpu stack (frozen pretrained ResNet, 8x8 grid ->
    connector -> 4-layer LM) on scenes made for fine detail: up to 6 objects (counting), small objects of
    ~6-8 px (below one 8-px patch) and 3x5-px glyphs the encoder is pretrained to see."""
    shapes = ShapesWorldConfig(n=3000, seed=0, image_size=64, min_objects=1, max_objects=6,
                               object_size=[0.09, 0.13, 0.22, 0.32], glyph_prob=0.5, glyph_scale=1)
    return ArenaConfig(steps=500, vision_steps=400, vision_attributes=["shape", "color", "glyph"],
                       eval_limit=200, shapes=shapes, connector_options=tiny_connector_options(),
                       preset="arena-cpu")


def tiny_connector_options() -> dict:
    """Paper-default connectors scaled to the tiny stack (width 128): every compressing connector turns the
    8x8 = 64 patches into 16 tokens (ParGo: 16 partial + 4 global), learned-query ones get 2 layers; the MLP
    keeps all 64 as the uncompressed reference."""
    return {
        "qformer": {"num_queries": 16, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512,
                    "cross_attention_every": 1},
        "resampler": {"num_latents": 16, "layers": 2, "heads": 4, "head_dim": 32},
        "cabstractor": {"grid_out": [4, 4], "depth": 2},
        "pixel_shuffle": {"factor": 2},
        "pargo": {"layers": 2, "num_global": 4, "tile": [2, 2]},
        # not in the default lists (a `det` stage / a visual-tokenizer stage first); `--connectors mlp,groma,lavit,emu`
        # adds them as rows. lavit: LaVIT's defaults at the CPU scale (width 64, 256 codes, keep ratio 1/3)
        "lavit": {},
        "groma": {"proposer_layers": [-2, -1], "region_layers": [-2, -1], "tag_features": True},
        # Emu's Causal Transformer at the width of the stack: 16 queries, 2 layers (chat records produce no images,
        # so nothing is regressed here: the row measures the connector as a reader)
        "emu": {"num_queries": 16, "layers": 2, "hidden": 128, "heads": 4},
    }


ARENA_PRESETS: dict[str, Callable[[], ArenaConfig]] = {"arena-cpu": arena_cpu}


def get_arena_preset(name: str) -> ArenaConfig:
    if name not in ARENA_PRESETS:
        raise unknown_name("arena preset", name, ARENA_PRESETS)
    return ARENA_PRESETS[name]()
