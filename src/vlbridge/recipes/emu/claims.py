"""The Emu claims, measured over seeds: next frame, in-context learning, text -> image, regression on vs off.

For each seed, on one documents dir with one frozen encoder (OUT/seed<S>/...):

- ``plain``: ``tiny-cpu-emu`` trained ``steps`` steps without the regression (lambda 0);
- ``emu``: the same from scratch with the regression (lambda ``regression_weight``), connector and LLM trained
  together as Emu does (the collapse guard off, so the run finishes and its targets' image share is logged);
- ``generate``: ``plain`` continued ``generate_steps`` steps in the ``generate`` stage (regression on, connector
  frozen), then its decoder stage; this is the model that generates.

``vlbridge eval`` scores each on the dir's test.json (QA: caption CIDEr, colour, shape; few-shot at each k) and
``emu measure`` the generating one (next frame, text -> image). Every step writes its own directory and is
skipped when it finished before, so an interrupted run continues. The summary (``claims.md``, ``claims.json``)
gives mean +- sd over seeds and says which claims hold:

- in-context learning counts only if few-shot accuracy rises with k above the k = 0 prior (every k > 0 above
  k = 0 by more than the spread over seeds, and not falling as k grows);
- the next frame counts if generation in context gets the changing object right more often than copying the
  last frame and than generating with no context (by more than the spread);
- text -> image counts if generated images have exactly the prompt's colours more often than both baselines.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ...config import DataConfig, opt
from ...data.records import SkipReport
from ...errors import UserError
from ...generate import GenerationConfig
from ...presets import get_preset

LAVIT_T2I = {"colors_exact": 0.14, "objects_present": 0.09, "objects_exact": 0.04,
             "source": "README, LaVIT (2026-11-26): generated at CFG 1, 200 prompts of the test split, seed 0"}


@dataclass
class ClaimsConfig:
    data: str = opt("", "ShapesWorld documents dir (`vlbridge data shapes-docs`)")
    vision: str = opt("", "pretrained vision encoder dir (`vlbridge pretrain-vision` on DATA/scenes.json)")
    out: str = opt("runs/emu_claims", "output dir: one dir per seed and setting, claims.md, claims.json")
    seeds: list[int] = opt([0, 1, 2], "training seeds")
    steps: int = opt(1000, "LM training steps of the plain and emu models")
    generate_steps: int = opt(500, "steps of the generate stage after the plain model")
    regression_weight: float = opt(1.0, "lambda of the regressing models (the plain one has 0)")
    decoder_steps: int = opt(1500, "decoder stage steps of its embeddings -> features part (per seed)")
    renderer_steps: int = opt(1500, "decoder stage steps of its features -> pixels part (trained once, on the first "
                                    "seed's run: it depends on the shared encoder alone)")
    eval_limit: int = opt(200, "test records per task in evaluation")
    measure_n: int = opt(200, "next-frame and text -> image items measured")
    cfg_scales: list[float] = opt([1.0, 3.0], "guidance scales measured")
    options: dict = opt({}, "connector options over the preset's (JSON), for both settings")


def log(msg: str) -> None:
    print(f"[emu claims] {msg}", file=sys.stderr, flush=True)


def run_config(cfg: ClaimsConfig, seed: int, weight: float, out: Path, stage: str = "instruct",
               init_from: Path | None = None):
    run = get_preset("tiny-cpu-emu")
    run.model.connector.options = {**run.model.connector.options, **cfg.options, "regression_weight": weight,
                                   "collapse_ratio": 0.0}
    run.model.vision = dataclasses.replace(run.model.vision, name_or_path=cfg.vision, arch={})
    run.data = dataclasses.replace(run.data, path=cfg.data)
    steps = cfg.generate_steps if stage == "generate" else cfg.steps
    run.train = dataclasses.replace(run.train, train_vision=False, steps=steps, seed=seed, save_every=250,
                                    eval_every=0, stage=stage, init_from=str(init_from) if init_from else None,
                                    warmup_steps=min(run.train.warmup_steps, steps // 10))
    run.out = str(out)
    return run


def train_once(run) -> Path:
    from ...train.checkpoint import latest_checkpoint
    from ...train.trainer import train
    final = Path(run.out) / "final"
    if (final / "model.safetensors").is_file():
        return final
    run = copy.deepcopy(run)
    run.train.resume = latest_checkpoint(Path(run.out) / "checkpoints") is not None
    return train(run)


def evaluate(model_dir: Path, test_file: Path, limit: int, out: Path) -> dict:
    from ...eval.runner import predict, summarize, write_reports
    from ...models.vlm import VLBridgeModel
    from ...train.data import load_split, make_dataset
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())["metrics"]
    model = VLBridgeModel.from_pretrained(model_dir)
    data_cfg, report = DataConfig(path=str(test_file)), SkipReport()
    records, per_task = [], {}
    for r in load_split(test_file, data_cfg, report):
        per_task[r.task] = per_task.get(r.task, 0) + 1
        if per_task[r.task] <= limit:
            records.append(r)
    dataset = make_dataset(records, model, data_cfg, report, for_generation=True)
    preds = predict(model, dataset, 64, GenerationConfig(max_new_tokens=40))
    metrics = summarize(preds)
    write_reports(out, preds, metrics, report, len(records))
    return metrics


def run_seed(cfg: ClaimsConfig, seed: int) -> dict:
    from .decoder import DecoderTrainConfig, train_decoder
    from .measure import EmuMeasureConfig, measure
    from .prepare import prepare
    root, data = Path(cfg.out) / f"seed{seed}", Path(cfg.data)
    result: dict = {"seed": seed}
    plan = [("plain", 0.0, "instruct", None), ("emu", cfg.regression_weight, "instruct", None),
            ("generate", cfg.regression_weight, "generate", root / "generate_init")]
    for name, weight, stage, init in plan:
        t0 = time.perf_counter()
        if init is not None and not (init / "model.safetensors").is_file():
            prepare(root / "plain" / "final", init, {"regression_weight": weight, "collapse_ratio": 0.0})
        log(f"seed {seed}: training {name} (lambda {weight:g}, stage {stage})")
        final = train_once(run_config(cfg, seed, weight, root / name, stage, init))
        result[f"{name}_train_seconds"] = time.perf_counter() - t0
        result[f"{name}_log"] = objective_log(root / name / "log.jsonl")
        log(f"seed {seed}: evaluating {name}")
        result[f"{name}_eval"] = evaluate(final, data / "test.json", cfg.eval_limit, root / name / "eval")
        result[f"{name}_image_share"] = embedding_image_share(final, data)
        result[f"{name}_fewshot"] = fewshot_breakdown(root / name / "eval", data)
    gen = root / "generate" / "with_decoder"
    if not (gen / "decoder_metrics.json").is_file():
        log(f"seed {seed}: decoder stage")
        first = Path(cfg.out) / f"seed{cfg.seeds[0]}" / "generate" / "with_decoder"
        train_decoder(DecoderTrainConfig(model=str(root / "generate" / "final"), data=cfg.data, out=str(gen),
                                         steps=cfg.decoder_steps, renderer_steps=cfg.renderer_steps, seed=seed,
                                         renderer_from=str(first) if seed != cfg.seeds[0] else None))
    result["decoder"] = json.loads((gen / "decoder_metrics.json").read_text()).get("val")
    figures = root / "generate" / "measure" / "metrics.json"
    if not figures.is_file():
        log(f"seed {seed}: measuring generation")
        measure(EmuMeasureConfig(model=str(gen), data=cfg.data, out=str(figures.parent), n=cfg.measure_n,
                                 cfg_scales=list(cfg.cfg_scales), seed=seed))
    result["measure"] = json.loads(figures.read_text())
    return result


def embedding_image_share(model_dir: Path, data: Path, n: int = 200) -> float:
    """How much the connector's embeddings depend on the image: ``regression.image_share`` of the embeddings of
    the first ``n`` val images of the data (0 = the same embeddings for every image)."""
    from ...emu.regression import image_share
    from ...models.vlm import VLBridgeModel
    from ..lavit.tokenizer_stage import encode_split, load_scenes
    from .decoder import embed_images
    model = VLBridgeModel.from_pretrained(model_dir)
    scenes = [s for s in load_scenes(data / "scenes.json") if s.get("split") == "val"][:n]
    return image_share(embed_images(model, encode_split(model.vision, scenes, data, str(data))))


def fewshot_breakdown(eval_dir: Path, data: Path) -> dict:
    """What the few-shot answers were, per k: right; the sibling rule's answer (the right kind of answer about
    the wrong object: largest for leftmost or back); another answer of the right kind; an answer of another kind
    (a shape for a colour ...)."""
    from ...data.shapesworld import COLORS, SHAPES
    from ...data.shapesworld.documents import rule_answer, sibling
    from ...data.shapesworld.scenes import Obj
    from ...eval.exact_match import normalize
    records = {r["id"]: r for r in json.loads((data / "test.json").read_text()) if "rule" in r}
    objects = {s["image"]: [Obj(**o) for o in s["objects"]] for s in json.loads((data / "scenes.json").read_text())}
    kinds = {"color": set(COLORS), "shape": set(SHAPES), "count": {str(i) for i in range(10)}}
    out: dict = {}
    for line in (eval_dir / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        rec = records.get(p["id"])
        if rec is None:
            continue
        rule, query = rec["rule"], objects[rec["images"][-1]]
        answer, pred = rule_answer(rule, query), normalize(p["prediction"])
        other = sibling(rule)
        kind = rule.split("_")[0]
        verdict = ("right" if pred == answer else "sibling_rule" if other and pred == rule_answer(other, query)
                   else "right_kind" if pred in kinds[kind] else "other_kind")
        counts = out.setdefault(p["task"], {"right": 0, "sibling_rule": 0, "right_kind": 0, "other_kind": 0, "n": 0})
        counts[verdict] += 1
        counts["n"] += 1
    return {task: {k: v / c["n"] if k != "n" else v for k, v in c.items()} for task, c in out.items()}


def objective_log(path: Path) -> dict:
    """The objective's logged figures at the first and last logged steps (regression loss, image share)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line] if path.is_file() else []
    keys = ("regression", "target_image_share", "target_var")
    pick = lambda row: {k: row[k] for k in keys if k in row} | {"step": row["step"]}   # noqa: E731
    return {"first": pick(rows[0]), "last": pick(rows[-1])} if rows else {}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], pct: bool = True) -> str:
    m, s = mean_sd(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.1f} ± {s:.1f}"


def headline(metrics: dict, task: str) -> float:
    entry = metrics[task]
    return float(entry[entry["main"]])


MODELS = ("plain", "emu", "generate")


def name_of(name: str, cfg: ClaimsConfig) -> str:
    return {"plain": f"plain: λ = 0, {cfg.steps} steps",
            "emu": f"Emu: λ = {cfg.regression_weight:g} from the start, {cfg.steps} steps",
            "generate": f"plain + generate stage (λ = {cfg.regression_weight:g}, connector frozen), "
                        f"{cfg.steps} + {cfg.generate_steps} steps"}[name]


def summarize_claims(cfg: ClaimsConfig, results: list[dict]) -> tuple[str, dict]:
    ks = sorted(int(t.split("_k")[1]) for t in results[0]["plain_eval"] if t.startswith("fewshot_k"))
    verdict: dict = {}
    lines = [f"Seeds {', '.join(str(r['seed']) for r in results)}; mean ± sd over seeds.", ""]

    lines += ["**Regression on vs off** (understanding on the test split; image share = the share of the variance "
              "of the connector's embeddings of 200 val images that differs from image to image):", "",
              "| model | caption CIDEr | colour % | shape % | image share |", "|---|---:|---:|---:|---:|"]
    for name in MODELS:
        share_text = fmt([r[f"{name}_image_share"] for r in results]) + " %"
        lines.append(f"| {name_of(name, cfg)} | "
                     + fmt([headline(r[f'{name}_eval'], 'caption') for r in results], pct=False) + " | "
                     + fmt([headline(r[f'{name}_eval'], 'color') for r in results]) + " | "
                     + fmt([headline(r[f'{name}_eval'], 'shape') for r in results]) + f" | {share_text} |")

    lines += ["", "**In-context learning** (few-shot episode accuracy, %, by k examples; the same queries at every k):",
              "", "| model | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for name in MODELS:
        per_k = {k: [headline(r[f"{name}_eval"], f"fewshot_k{k}") for r in results] for k in ks}
        lines.append(f"| {name_of(name, cfg)} | " + " | ".join(fmt(per_k[k]) for k in ks) + " |")
        m0, s0 = mean_sd(per_k[ks[0]])
        rises = all(mean_sd(per_k[k])[0] - m0 > max(s0, mean_sd(per_k[k])[1]) for k in ks[1:])
        monotone = all(mean_sd(per_k[b])[0] >= mean_sd(per_k[a])[0] - mean_sd(per_k[a])[1]
                       for a, b in zip(ks[1:], ks[2:]))
        verdict[f"in_context_learning_{name}"] = bool(rises and monotone)

    lines += ["", "What the few-shot answers were (%, the plain model; sibling rule = the right kind of answer about the "
                  "other object, e.g. the largest one's colour when the rule asks for the leftmost's):", "",
              "| k | right | sibling rule | another answer of the right kind | an answer of another kind |",
              "|---|---:|---:|---:|---:|"]
    for k in ks:
        rows = [r["plain_fewshot"].get(f"fewshot_k{k}") for r in results]
        if all(rows):
            lines.append(f"| {k} | " + " | ".join(fmt([x[v] for x in rows]) for v in
                                                  ("right", "sibling_rule", "right_kind", "other_kind")) + " |")

    scales = list(cfg.cfg_scales)
    lines += ["", "**Next frame** (the generate model; checker on the frame, %):", "",
              "| frame | changed object right | other objects there | exact frame |", "|---|---:|---:|---:|"]
    rows = [("the true frame", "next_frame_real"), ("decoder on the true frame's embeddings", "next_frame_reconstruction")]
    rows += [(f"generated in context, CFG {x:g}", f"next_frame_cfg{x:g}") for x in scales]
    rows += [("baseline: copy the last frame", "next_frame_copy_last"), ("baseline: no context", "next_frame_no_context")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt([r["measure"][key][m] for r in results])
                                                   for m in ("changed_ok", "others_ok", "frame_ok")) + " |")
    best = max(scales, key=lambda x: mean_sd([r["measure"][f"next_frame_cfg{x:g}"]["changed_ok"] for r in results])[0])
    gen_nf = mean_sd([r["measure"][f"next_frame_cfg{best:g}"]["changed_ok"] for r in results])
    base = max(mean_sd([r["measure"][k]["changed_ok"] for r in results])[0]
               for k in ("next_frame_copy_last", "next_frame_no_context"))
    verdict["next_frame"] = bool(gen_nf[0] - gen_nf[1] > base)

    lines += ["", "**Text → image** (the generate model; checker, %; LaVIT: its README figures at CFG 1 on the same "
                  "200 test scenes and prompts, one run):", "",
              "| images | colours exact | every object | exact scene |", "|---|---:|---:|---:|"]
    rows = [("real renders", "t2i_real_renders"), ("decoder on the real embeddings", "t2i_reconstructions")]
    rows += [(f"Emu generated, CFG {x:g}", f"t2i_cfg{x:g}") for x in scales]
    rows += [("baseline: other scenes", "t2i_other_scenes"), ("baseline: no caption", "t2i_no_caption")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt([r["measure"][key][m] for r in results])
                                                   for m in ("colors_exact", "objects_present", "objects_exact")) + " |")
    lines.append("| LaVIT generated, CFG 1 (discrete codes) | "
                 + " | ".join(f"{100 * LAVIT_T2I[m]:.1f}" for m in ("colors_exact", "objects_present", "objects_exact")) + " |")
    best = max(scales, key=lambda x: mean_sd([r["measure"][f"t2i_cfg{x:g}"]["colors_exact"] for r in results])[0])
    gen_t2i = mean_sd([r["measure"][f"t2i_cfg{best:g}"]["colors_exact"] for r in results])
    base = max(mean_sd([r["measure"][k]["colors_exact"] for r in results])[0] for k in ("t2i_other_scenes", "t2i_no_caption"))
    verdict["text_to_image"] = bool(gen_t2i[0] - gen_t2i[1] > base)

    t = [r["measure"]["trilemma"] for r in results]
    l1 = mean_sd([x["reconstruction_pixel_l1"] for x in t])
    lines += ["", f"**Trilemma**: {t[0]['tokens_per_image']} continuous tokens per image (+ [IMG], [/IMG]); "
                  f"reconstruction through the decoder: pixel L1 {l1[0]:.4f} ± {l1[1]:.4f}, exact scene "
                  f"{fmt([x['reconstruction_exact_scene'] for x in t])} %; not discrete."]
    lines += ["", "Verdicts: " + ", ".join(f"{k}: {'holds' if v else 'does not hold'}" for k, v in verdict.items())]
    return "\n".join(lines), verdict


def run_claims(cfg: ClaimsConfig) -> dict:
    if not cfg.data or not cfg.vision:
        raise UserError("emu claims needs --data (shapes-docs dir) and --vision (pretrained encoder dir)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "claims_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    results = []
    for seed in cfg.seeds:
        results.append(run_seed(cfg, seed))
        (out / "claims.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "seeds": results}, indent=2) + "\n")
    text, verdict = summarize_claims(cfg, results)
    (out / "claims.md").write_text(text + "\n")
    (out / "claims.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "seeds": results,
                                                 "verdict": verdict}, indent=2) + "\n")
    return {"text": text, "verdict": verdict}
