"""Measure JiuTian-LION's claims at toy scale: every condition x seed through `vlbridge recipe lion`, then tables.

Runs (one at a time, each a `vlbridge` command written to OUT/commands.log with its date; a finished stage or
evaluation is never redone, so the script resumes):

    full        dual branch, router (2 adapters), staged image -> region -> mixed      (LION)
    shared      one shared adapter                       (MoA claim)
    none        no adapter                               (MoA claim)
    branch_a    branch A alone (Q-Former)                (branch claim)
    branch_b    branch B alone (aggregator)              (branch claim)
    joint       LION's parts all at once on the mixed data, the same total steps   (schedule claim)
    hard, soft  the tag sentence in plain words / with <soft>; evaluated at tag noise 0, 0.2, 0.5   (tag claim)

All share the data, the frozen encoder (pretrained once, by the first run: OUT/vision) and, per seed, the
text-pretrained LLM (made by that seed's `full` run); the tag runs share one tagger (OUT/tagger, `vlbridge lion tagger`).
`python tools/lion_claims.py table OUT` prints the tables.

    python tools/lion_claims.py run --data runs/lion_data --out runs/lion_claims --seeds 0,1,2
    python tools/lion_claims.py table runs/lion_claims > tables.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

STEPS = {"image": 300, "region": 150, "mixed": 150}
SCHEDULES = {"image": {"steps": 300, "warmup_steps": 20}, "region": {"steps": 150, "warmup_steps": 15},
             "mixed": {"steps": 150, "warmup_steps": 15}}
# tiny-cpu-lion's options; the LLM (text-pretrained, from scratch) also trains in the first stage: frozen from the
# start it learned nothing visual in 200 steps (colour and shape at chance)
TINY = {"qformer": {"num_queries": 8, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512,
                    "cross_attention_every": 1, "max_text_len": 64},
        "aggregator_heads": 4, "position_codes": True, "llm_stages": ["image"]}
CONDITIONS = {
    "full": {},
    "shared": {"options": {"adapters": 1}},
    "none": {"options": {"adapters": 0}},
    "branch_a": {"options": {"branches": "image"}},
    "branch_b": {"options": {"branches": "region"}},
    "joint": {"stages": ["joint"], "options": {"llm_stages": ["joint"]}},
    "hard": {"tags": "hard"},
    "soft": {"tags": "soft"},
}
NOISE = (0.0, 0.2, 0.5)
EVAL_LIMIT = 80
IMAGE_TASKS = [("caption", "cider", "caption CIDEr"), ("color", "vqa_acc", "colour"), ("shape", "vqa_acc", "shape"),
               ("count", "count_acc", "count"), ("exist", "f1", "exist POPE F1")]
REGION_TASKS = [("rec", "acc@0.5", "REC Acc@0.5"), ("reg", "cider", "REG CIDEr"), ("gcap", "f1", "gcap F1")]


def vlbridge(args: list[str], log: Path) -> None:
    cmd = ["nice", "-n", "10", sys.executable, "-m", "vlbridge", *args]
    with log.open("a") as f:
        f.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')}\n{' '.join(quote(a) for a in cmd[3:])}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def quote(a: str) -> str:
    return f"'{a}'" if any(c in a for c in " {}\"[],") else a


def run_condition(name: str, seed: int, data: Path, out: Path, log: Path) -> Path:
    spec = CONDITIONS[name]
    run = out / f"{name}_s{seed}"
    stages = spec.get("stages", list(STEPS))
    schedules = ({"joint": {"steps": sum(STEPS.values()), "warmup_steps": 20}} if stages == ["joint"] else SCHEDULES)
    args = ["recipe", "lion", "--data", str(data), "--out", str(run), "--seed", str(seed),
            "--model.connector.options", json.dumps({**TINY, **spec.get("options", {})}),
            "--train.stages", ",".join(stages), "--train.stage_schedules", json.dumps(schedules),
            "--train.save_every", "100", "--train.eval_every", "0", "--eval.limit", str(EVAL_LIMIT)]
    vision = out / "vision"
    if (vision / "vision_pretrain.json").is_file():
        args += ["--model.vision.name_or_path", str(vision)]
    elif name != "full" or seed:
        raise FileNotFoundError(f"{vision} is missing: run condition full with seed 0 first (it pretrains the encoder)")
    llm = out / f"full_s{seed}" / "llm" / "model"
    if name != "full":
        args += ["--model.llm.name_or_path", str(llm)]
    tagger = out / "tagger"
    if "tags" in spec:
        if not (tagger / "model.safetensors").is_file():          # one tagger for every run, on the shared encoder
            vlbridge(["lion", "tagger", "--data", str(data), "--vision", str(vision), "--out", str(tagger)], log)
        args += ["--tags.mode", spec["tags"], "--tagger", str(tagger)]
    if name not in ("full", "shared", "none"):               # only these show the conflict stage by stage
        args += ["--eval.stages", stages[-1]]
    vlbridge(args, log)
    if not vision.exists():                                 # the first run pretrained it: every other run shares it
        vision.symlink_to((run / "vision").resolve())
    if "tags" in spec:
        final = run / stages[-1] / "final"
        for noise in NOISE[1:]:
            tagged = run / f"noise{noise}"
            report = run / f"eval-noise{noise}"
            if (report / "metrics.json").is_file():
                continue
            vlbridge(["lion", "tags", "--tagger", str(tagger), "--data", str(data), "--out",
                      str(tagged), "--files", "test.json", "--tags.mode", spec["tags"], "--tags.noise", str(noise)], log)
            vlbridge(["eval", "--model", str(final), "--data", str(tagged / "test.json"), "--image-folder", str(data),
                      "--limit", str(EVAL_LIMIT), "--out", str(report)], log)
    return run


def main_run(args) -> None:
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.conditions.split(",") if args.conditions else list(CONDITIONS)
    for seed in seeds:                       # seed-major: every condition gets seed 0 before any gets seed 1
        for name in (["full"] if "full" in names else []) + [n for n in names if n != "full"]:
            print(f"{datetime.datetime.now():%H:%M:%S} {name} seed {seed}", flush=True)
            run_condition(name, seed, data, out, log)


# ---------------------------------------------------------------------------------------------------- tables
def metric(path: Path, task: str, key: str) -> float | None:
    if not path.is_file():
        return None
    m = json.loads(path.read_text())["metrics"].get(task)
    return None if m is None or m.get(key) is None else float(m[key])


def cell(values: list[float | None], scale: float = 100.0) -> str:
    got = [v * scale for v in values if v is not None]
    if not got:
        return "–"
    if len(got) == 1:
        return f"{got[0]:.1f} (1 seed)"
    return f"{statistics.mean(got):.1f} ± {statistics.stdev(got):.1f}"


def runs(out: Path, name: str) -> list[Path]:
    return sorted(out.glob(f"{name}_s*"))


def final_eval(run: Path) -> Path:
    stage = "joint" if (run / "joint").is_dir() else "mixed"
    return run / stage / "eval" / "metrics.json"


def table(rows: list[tuple[str, list[Path]]], tasks) -> str:
    head = "| condition | seeds | " + " | ".join(t[2] for t in tasks) + " |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for label, files in rows:
        cells = [cell([metric(f, task, key) for f in files]) for task, key, _ in tasks]
        lines.append(f"| {label} | {len(files)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_table(args) -> None:
    out = Path(args.out)
    tasks = IMAGE_TASKS + REGION_TASKS
    finals = {n: [final_eval(r) for r in runs(out, n) if final_eval(r).is_file()] for n in CONDITIONS}
    print("## Branches (router, staged)\n")
    print(table([("dual (LION)", finals["full"]), ("branch A alone", finals["branch_a"]),
                 ("branch B alone", finals["branch_b"])], tasks))
    print("\n## Adapters (dual branch, staged)\n")
    print(table([("router, 2 adapters (LION)", finals["full"]), ("one shared adapter", finals["shared"]),
                 ("no adapter", finals["none"])], tasks))
    print("\n## The conflict: scores after each stage\n")
    rows = []
    for name, label in (("full", "router"), ("shared", "shared adapter"), ("none", "no adapter")):
        for stage in STEPS:
            files = [r / stage / "eval" / "metrics.json" for r in runs(out, name)]
            rows.append((f"{label}, after {stage}", [f for f in files if f.is_file()]))
    print(table(rows, tasks))
    print("\n## Schedule (dual, router)\n")
    print(table([("staged image -> region -> mixed", finals["full"]), ("all at once (joint)", finals["joint"])], tasks))
    print("\n## Tags (dual, router, staged): overall exact match and exist (POPE F1) at tag noise\n")
    head = "| tags | seeds | " + " | ".join(f"noise {n:.0%}: overall / exist F1" for n in NOISE) + " |"
    lines = [head, "|" + "---|" * (len(NOISE) + 2)]
    for name, label in (("full", "none"), ("hard", "hard prompt"), ("soft", "soft prompt (<soft>)")):
        cells = []
        for noise in NOISE:
            files = [final_eval(r) if (noise == 0.0 or name == "full") else r / f"eval-noise{noise}" / "metrics.json"
                     for r in runs(out, name)]
            files = [f for f in files if f.is_file()]
            cells.append(f"{cell([metric(f, 'overall', 'exact_match') for f in files])} / "
                         f"{cell([metric(f, 'exist', 'f1') for f in files])}")
        lines.append(f"| {label} | {len(runs(out, name))} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--conditions", help="comma-separated subset of " + ",".join(CONDITIONS))
    r.set_defaults(fn=main_run)
    t = sub.add_parser("table")
    t.add_argument("out")
    t.set_defaults(fn=main_table)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
