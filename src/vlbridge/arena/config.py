"""Typed options of the connector arena and its named presets (``arena-cpu``, ``arena-long``, ``arena-quick``).

What every connector shares (base model preset, data, vision encoder, seeds, schedule, step budget, eval
split) lives here; what differs is only the connector and its options. A row is a registry name
(``qformer``) or a labelled variant (``pargo_aux=pargo``: the row ``pargo_aux`` trains a ``pargo`` with the
preset's ``pargo`` options updated by ``connector_options["pargo_aux"]``). The CLI turns every field into a
flag (``--steps``, ``--shapes.max_objects`` ...), and the resolved config is saved as ``OUT/arena.json``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from ..config import DEVICES, opt
from ..data.shapesworld import ShapesWorldConfig
from ..errors import unknown_name
from ..presets import PRESETS

ALL_CONNECTORS = ["mlp", "qformer", "resampler", "cabstractor", "pixel_shuffle", "pargo"]
REFERENCE = "mlp"           # the uncompressed row every other row is compared with, seed by seed


@dataclass
class ArenaConfig:
    connectors: list[str] = opt(list(ALL_CONNECTORS), "rows to compare, comma-separated: registry names, or "
                                                      "LABEL=NAME for a variant of a connector (its options: the "
                                                      "NAME options updated by connector_options[LABEL])")
    connector_options: dict = opt({}, "options per row as JSON, e.g. '{\"resampler\": {\"num_latents\": 16}}'; on the "
                                      "command line each row given replaces that row's preset options, the others keep "
                                      "theirs")
    out: str = opt("runs/arena", "run directory: data/, vision/, features/, one dir per row and seed, the tables "
                                 "and plots")
    name: str = opt("arena", "file stem of this comparison's tables, plots and config (OUT/<name>.md ...): several "
                             "comparisons can share one run directory, and a run two of them list trains once")
    base: str = opt("tiny-cpu", "training preset every connector starts from (vision arch, LLM, schedule)",
                    choices=lambda: tuple(PRESETS))
    base_config: str | None = opt(None, "a saved run config.json to start from instead of `base`")
    steps: int = opt(600, "optimizer steps per connector and seed (the same budget for all)", at_least=1)
    batch_size: int | None = opt(None, "records per step (None = the base preset's)", at_least=1)
    lr: float | None = opt(None, "peak learning rate (None = the base preset's)", at_least=0)
    warmup_steps: int | None = opt(None, "warm-up steps (None = the base preset's, at most a tenth of `steps`)",
                                   at_least=0)
    seeds: list[int] = opt([0], "training seeds: each row trains once per seed (model initialisation and data "
                                "order); the data and the encoder stay the same")
    device: str = opt("auto", "where every run trains and is evaluated: auto = cuda, then mps, then cpu",
                      choices=DEVICES)
    save_every: int = opt(100, "steps between checkpoints (a killed arena resumes from the last one)", at_least=0)
    threads: int | None = opt(None, "torch threads per run for training and evaluation (None = torch's default; "
                                    "on a machine shared with other jobs 1 thread is often faster than 2)",
                              at_least=1)
    jobs: int = opt(1, "runs trained at the same time, each in its own process (e.g. 2 jobs x 1 thread on two "
                       "cores: small models use two processes better than two threads)", at_least=1)
    feature_store: bool = opt(True, "keep the frozen encoder's features on disk in OUT/features (keyed by image "
                                    "and encoder), so every row and seed reads them instead of encoding again")
    data: str | None = opt(None, "an existing ShapesWorld dir to use instead of generating one into OUT/data")
    vision: str | None = opt(None, "a pretrained vision encoder dir shared by all connectors; None = pretrain "
                                   "one into OUT/vision (`vlbridge pretrain-vision` on the data's scenes.json)")
    vision_steps: int = opt(400, "vision pretraining steps (when `vision` is None)", at_least=1)
    vision_attributes: list[str] = opt(["shape", "color"], "object attributes the encoder's patches learn "
                                                           "in pretraining (add 'glyph' to make glyphs legible, "
                                                           "x1,y1,x2,y2 for where each object lies)")
    vision_attribute_weights: dict = opt({}, "loss weight per pretraining attribute (default 1), e.g. '{\"glyph\": 4}'")
    vision_seed: int = opt(0, "seed of the vision pretraining (the encoder is the same for every training seed)")
    stage_schedules: dict = opt({"det": {"steps": 300, "lr": 2e-3, "warmup_steps": 30}},
                                "settings of the stages a connector runs before its LLM stage (its `pre_stage`), "
                                "as JSON {stage: {field: value}}: e.g. groma's 'det' (training fields) or lavit's "
                                "'tokenizer' (fields of `vlbridge lavit tokenizer`); not counted in `steps`")
    eval_limit: int | None = opt(100, "test records per task (None = the whole test split)", at_least=1)
    eval_tasks: list[str] = opt([], "tasks to score (empty = every test task the training records ask)")
    eval_batch_size: int = opt(64, "records per generation batch in evaluation", at_least=1)
    max_new_tokens: int = opt(40, "generation budget per answer", at_least=1)
    shapes: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)
    shift_n: int = opt(0, "scenes of the held-out shifted test set (0 = none): the training data's generator with "
                          "more, smaller objects, and without its exclude_pairs (pairs never seen in training)")
    shift_objects: list[int] = opt([4, 8], "fewest, most objects per shifted scene")
    shift_object_size: list[float] = opt([0.07, 0.1, 0.16, 0.24], "object sizes of the shifted scenes (as "
                                                                    "`shapes.object_size`)")
    shift_eval_limit: int | None = opt(100, "shifted test records per task (None = all)")
    preset: str | None = opt(None, "the preset this config started from", cli=False)

    def shift_shapes(self, data: ShapesWorldConfig | None = None) -> ShapesWorldConfig | None:
        """The generator config of the shifted test set (test split only), or None: the training data's generator
        (``data``, default ``shapes``) with more, smaller objects and every colour-shape pair."""
        if not self.shift_n:
            return None
        base = data or self.shapes
        lo, hi = self.shift_objects
        return dataclasses.replace(base, n=self.shift_n, seed=base.seed + 1, splits=[0.0, 0.0, 1.0],
                                   min_objects=lo, max_objects=hi, object_size=list(self.shift_object_size),
                                   exclude_pairs=[])


@dataclass(frozen=True)
class Row:
    """One row of the table: its label, the registry connector it trains, and that connector's options."""
    label: str
    connector: str
    options: dict


# Held out of training: each colour and each shape keeps three of its four / five of its six pairings
HELD_OUT_PAIRS = ["red circle", "green square", "blue triangle", "yellow diamond"]


def arena_cpu() -> ArenaConfig:
    """Six connectors x 3 seeds on 2 CPU cores (2 runs at a time, one thread each): the tiny-cpu stack (frozen
    pretrained ResNet, 8x8 grid -> connector -> 4-layer LM) on scenes made for fine detail. The encoder learns
    what and where (shape, colour, glyph, box edges); up to 6 objects (counting), small objects of 6-8 px (below
    one 8-px patch), 6x10-px glyphs on the largest objects. The training mix is the demo's (inventories and
    sentence answers, which teach the LM to find an object by its name) with more weight on the fine-detail
    tasks and sentence answers for glyph and REC questions too; every box is shown once per record; four
    colour-shape pairs are held out of training and appear only in the shifted test set.
    docs/arena.md describes the data."""
    weights = {"caption": 0.5, "color": 4, "shape": 3, "count": 2, "exist": 1.5, "spatial": 2, "glyph": 2,
               "rec": 2, "reg": 1, "inventory": 2.5, "inventory_color": 1}
    shapes = ShapesWorldConfig(n=3000, seed=0, image_size=64, min_objects=1, max_objects=6,
                               object_size=[0.09, 0.13, 0.22, 0.32], glyph_prob=1.0, glyph_scale=2,
                               sentence_tasks=["color", "shape", "glyph", "rec"], box_once=True, task_weights=weights,
                               exclude_pairs=list(HELD_OUT_PAIRS))
    return ArenaConfig(steps=800, seeds=[0, 1, 2], jobs=2, threads=1, vision_steps=1200,
                       vision_attributes=["shape", "color", "glyph", "x1", "y1", "x2", "y2"],
                       vision_attribute_weights={"glyph": 4}, eval_limit=150, shapes=shapes, shift_n=300,
                       shift_eval_limit=100, connector_options=tiny_connector_options(), preset="arena-cpu")


def arena_long() -> ArenaConfig:
    """arena-cpu at four times the step budget (3,200 steps per run, checkpoints every 400): the budget at which
    the uncompressed ``mlp`` rises above the blind prior on the fine-detail tasks too (count, exist, spatial,
    glyph), so compressors can be told apart on them. About four times arena-cpu's time."""
    cfg = arena_cpu()
    cfg.steps, cfg.save_every = 3200, 400
    cfg.preset = "arena-long"
    return cfg


def arena_quick() -> ArenaConfig:
    """A smoke run of the whole pipeline in a few minutes: arena-cpu's stack and data on fewer scenes, one seed,
    a short schedule and a small evaluation (the numbers mean nothing; the files and the code paths are real)."""
    cfg = arena_cpu()
    cfg.shapes = dataclasses.replace(cfg.shapes, n=300)
    cfg.steps, cfg.seeds, cfg.vision_steps, cfg.save_every, cfg.jobs = 30, [0], 60, 30, 1
    cfg.eval_limit, cfg.shift_n, cfg.shift_eval_limit = 10, 40, 10
    cfg.preset = "arena-quick"
    return cfg


def tiny_connector_options() -> dict:
    """Paper-default connectors scaled to the tiny stack (width 128). Every compressing connector turns the
    8x8 = 64 patches into the same 16 tokens: ParGo 12 partial (2x3 tiles; the last column of tiles overlaps
    its neighbour by one patch) + 4 global. The learned-query connectors have 3 layers (ParGo needs 3 for its
    cascade: one-to-one, one-to-one-neighbour, one-to-all), so ParGo and the Q-Former also match in parameters
    (about 0.81 M) and forward FLOPs. The MLP keeps all 64 as the uncompressed reference."""
    return {
        "qformer": {"num_queries": 16, "hidden": 128, "layers": 3, "heads": 4, "intermediate": 512,
                    "cross_attention_every": 1},
        "resampler": {"num_latents": 16, "layers": 3, "heads": 4, "head_dim": 32},
        "cabstractor": {"grid_out": [4, 4], "depth": 2},
        "pixel_shuffle": {"factor": 2},
        "pargo": {"layers": 3, "num_global": 4, "tile": [2, 3]},
        # not in the default lists (a `det` stage / a visual-tokenizer stage first); `--connectors mlp,groma,lavit`
        # adds them as rows. lavit: LaVIT's defaults at the CPU scale (width 64, keep ratio 1/3)
        "lavit": {},
        "groma": {"proposer_layers": [-2, -1], "region_layers": [-2, -1], "tag_features": True},
        # lion: 8 Q-Former queries + one aggregator token per patch; its row trains `instruct` (all parts at once)
        "lion": {"qformer": {"num_queries": 8, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512,
                             "cross_attention_every": 1, "max_text_len": 64},
                 "aggregator_heads": 4, "position_codes": True},
        # Emu's Causal Transformer at the width of the stack: 16 queries, 3 layers as the other learned-query rows
        # (chat records produce no images, so nothing is regressed here: the row measures the connector as a reader)
        "emu": {"num_queries": 16, "layers": 3, "hidden": 128, "heads": 4},
    }


ARENA_PRESETS: dict[str, Callable[[], ArenaConfig]] = {"arena-cpu": arena_cpu, "arena-long": arena_long,
                                                        "arena-quick": arena_quick}


def get_arena_preset(name: str) -> ArenaConfig:
    if name not in ARENA_PRESETS:
        raise unknown_name("arena preset", name, ARENA_PRESETS)
    return ARENA_PRESETS[name]()


def parse_rows(cfg: ArenaConfig) -> list[Row]:
    """The table's rows from ``cfg.connectors`` (registry names are checked by the runner)."""
    rows = []
    for entry in cfg.connectors:
        label, _, name = entry.partition("=")
        label, name = label.strip(), (name or label).strip()
        if not label or not name:
            raise ValueError(f"--connectors entry {entry!r}: expected NAME or LABEL=NAME")
        options = dict(cfg.connector_options.get(name, {})) if label != name else {}
        options.update(cfg.connector_options.get(label, {}))
        rows.append(Row(label, name, options))
    return rows
