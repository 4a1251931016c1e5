"""The Emu claims, measured over seeds: next frame, in-context learning, text -> image, regression on vs off.

For each seed: the ``tiny-cpu-emu`` model trained on a documents dir with the regression (``regression_weight``)
and without it (0), the same data, encoder, steps and seed; the regressing model's decoder stage; ``vlbridge
eval`` of both on the dir's test.json (QA: caption CIDEr, colour, shape; few-shot at each k); ``emu measure`` of the
regressing one (next frame, text -> image). Every step writes its own directory under OUT/seed<S>/ and is
skipped when it finished before, so an interrupted run continues. The summary (``claims.md``, ``claims.json``)
gives mean +- sd over seeds and says which claims hold:

- in-context learning counts only if few-shot accuracy rises with k above the k = 0 prior (every k > 0 above
  k = 0 by more than the spread over seeds, and k = 4 above k = 1);
- the next frame counts if generation in context gets the changing object right more often than copying the
  last frame and than generating with no context;
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
    steps: int = opt(1000, "LM training steps of each model")
    regression_weight: float = opt(1.0, "lambda of the regressing models (the others have 0)")
    decoder_steps: int = opt(800, "decoder stage steps")
    eval_limit: int = opt(200, "test records per task in evaluation")
    measure_n: int = opt(200, "next-frame and text -> image items measured")
    cfg_scales: list[float] = opt([1.0, 3.0], "guidance scales measured")
    options: dict = opt({}, "connector options over the preset's (JSON), for both settings")


def log(msg: str) -> None:
    print(f"[emu claims] {msg}", file=sys.stderr, flush=True)


def run_config(cfg: ClaimsConfig, seed: int, weight: float, out: Path):
    run = get_preset("tiny-cpu-emu")
    run.model.connector.options = {**run.model.connector.options, **cfg.options, "regression_weight": weight}
    run.model.vision = dataclasses.replace(run.model.vision, name_or_path=cfg.vision, arch={})
    run.data = dataclasses.replace(run.data, path=cfg.data)
    run.train = dataclasses.replace(run.train, train_vision=False, steps=cfg.steps, seed=seed, save_every=250,
                                    eval_every=0)
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
    root, data = Path(cfg.out) / f"seed{seed}", Path(cfg.data)
    result: dict = {"seed": seed}
    for name, weight in (("regression", cfg.regression_weight), ("plain", 0.0)):
        t0 = time.perf_counter()
        log(f"seed {seed}: training the {name} model (lambda {weight:g})")
        final = train_once(run_config(cfg, seed, weight, root / name))
        result[f"{name}_train_seconds"] = time.perf_counter() - t0
        log(f"seed {seed}: evaluating the {name} model")
        result[f"{name}_eval"] = evaluate(final, data / "test.json", cfg.eval_limit, root / name / "eval")
    gen = root / "regression" / "with_decoder"
    if not (gen / "decoder_metrics.json").is_file():
        log(f"seed {seed}: decoder stage")
        train_decoder(DecoderTrainConfig(model=str(root / "regression" / "final"), data=cfg.data, out=str(gen),
                                         steps=cfg.decoder_steps, seed=seed))
    result["decoder"] = json.loads((gen / "decoder_metrics.json").read_text()).get("val")
    figures = root / "regression" / "measure" / "metrics.json"
    if not figures.is_file():
        log(f"seed {seed}: measuring generation")
        measure(EmuMeasureConfig(model=str(gen), data=cfg.data, out=str(figures.parent), n=cfg.measure_n,
                                 cfg_scales=list(cfg.cfg_scales), seed=seed))
    result["measure"] = json.loads(figures.read_text())
    return result


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], pct: bool = True) -> str:
    m, s = mean_sd(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.1f} ± {s:.1f}"


def headline(metrics: dict, task: str) -> float:
    entry = metrics[task]
    return float(entry[entry["main"]])


def summarize_claims(cfg: ClaimsConfig, results: list[dict]) -> tuple[str, dict]:
    ks = sorted(int(t.split("_k")[1]) for t in results[0]["regression_eval"] if t.startswith("fewshot_k"))
    verdict: dict = {}
    lines = [f"Seeds {', '.join(str(r['seed']) for r in results)}; {cfg.steps} steps each; mean ± sd over seeds.", ""]

    lines += ["**In-context learning** (few-shot episode accuracy, %, by k examples):", "",
              "| model | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    icl = {}
    for name in ("regression", "plain"):
        per_k = {k: [headline(r[f"{name}_eval"], f"fewshot_k{k}") for r in results] for k in ks}
        icl[name] = per_k
        lines.append(f"| {name_of(name, cfg)} | " + " | ".join(fmt(per_k[k]) for k in ks) + " |")
    for name, per_k in icl.items():
        m0, s0 = mean_sd(per_k[ks[0]])
        rises = all(mean_sd(per_k[k])[0] - m0 > max(s0, mean_sd(per_k[k])[1]) for k in ks[1:])
        monotone = all(mean_sd(per_k[b])[0] >= mean_sd(per_k[a])[0] for a, b in zip(ks[1:], ks[2:]))
        verdict[f"in_context_learning_{name}"] = bool(rises and monotone)

    lines += ["", "**Regression on vs off** (understanding at equal steps):", "",
              "| model | caption CIDEr | colour % | shape % |", "|---|---:|---:|---:|"]
    for name in ("regression", "plain"):
        lines.append(f"| {name_of(name, cfg)} | "
                     + fmt([headline(r[f'{name}_eval'], 'caption') for r in results], pct=False) + " | "
                     + fmt([headline(r[f'{name}_eval'], 'color') for r in results]) + " | "
                     + fmt([headline(r[f'{name}_eval'], 'shape') for r in results]) + " |")

    scales = list(cfg.cfg_scales)
    lines += ["", "**Next frame** (checker on the generated frame, %):", "",
              "| frame | changed object right | other objects there | exact frame |", "|---|---:|---:|---:|"]
    rows = [("the true frame", "next_frame_real"), ("decoder on the true frame's embeddings", "next_frame_reconstruction")]
    rows += [(f"generated in context, CFG {s:g}", f"next_frame_cfg{s:g}") for s in scales]
    rows += [("baseline: copy the last frame", "next_frame_copy_last"), ("baseline: no context", "next_frame_no_context")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt([r["measure"][key][m] for r in results])
                                                   for m in ("changed_ok", "others_ok", "frame_ok")) + " |")
    best = max(scales, key=lambda s: mean_sd([r["measure"][f"next_frame_cfg{s:g}"]["changed_ok"] for r in results])[0])
    gen_nf = mean_sd([r["measure"][f"next_frame_cfg{best:g}"]["changed_ok"] for r in results])
    base = max(mean_sd([r["measure"][k]["changed_ok"] for r in results])[0]
               for k in ("next_frame_copy_last", "next_frame_no_context"))
    verdict["next_frame"] = bool(gen_nf[0] - gen_nf[1] > base)

    lines += ["", "**Text → image** (checker, %; LaVIT: its figures at CFG 1 on the same 200 test scenes, one seed):",
              "", "| images | colours exact | every object | exact scene |", "|---|---:|---:|---:|"]
    rows = [("real renders", "t2i_real_renders"), ("decoder on the real embeddings", "t2i_reconstructions")]
    rows += [(f"Emu generated, CFG {s:g}", f"t2i_cfg{s:g}") for s in scales]
    rows += [("baseline: other scenes", "t2i_other_scenes"), ("baseline: no caption", "t2i_no_caption")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt([r["measure"][key][m] for r in results])
                                                   for m in ("colors_exact", "objects_present", "objects_exact")) + " |")
    lines.append("| LaVIT generated, CFG 1 (discrete codes) | "
                 + " | ".join(f"{100 * LAVIT_T2I[m]:.1f}" for m in ("colors_exact", "objects_present", "objects_exact")) + " |")
    best = max(scales, key=lambda s: mean_sd([r["measure"][f"t2i_cfg{s:g}"]["colors_exact"] for r in results])[0])
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


def name_of(name: str, cfg: ClaimsConfig) -> str:
    return f"λ = {cfg.regression_weight:g} (regression)" if name == "regression" else "λ = 0 (plain)"


def run_claims(cfg: ClaimsConfig) -> dict:
    if not cfg.data or not cfg.vision:
        raise ValueError("emu claims needs --data (shapes-docs dir) and --vision (pretrained encoder dir)")
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
