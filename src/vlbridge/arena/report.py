"""The arena tables: one row per connector (the mean over seeds with its 95% interval), the blind prior above
them, the paired difference of every row from ``mlp`` seed by seed, the shifted test set, and the costs.

Every task is summarised by the headline metric the eval runner names in its per-task ``main`` (CIDEr for
captions, Acc@0.5 for boxes, count accuracy, POPE accuracy, VQA accuracy ...), shown x100. ``mean``
averages the bounded (0-1) headline metrics, so an unbounded CIDEr does not swamp it; ``fine`` averages the
fine-detail tasks (glyphs, counting, spatial relations, boxes) that need local perception. Group columns
(``small obj`` ...) come from ``breakdown.py``. Intervals and the paired test are ``stats.py``'s.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

from ..data.shapesworld import TASKS
from ..eval.report import label
from .config import REFERENCE, ArenaConfig
from .stats import Interval, interval, paired, supported

# Used only when a task's metrics do not name their ``main`` number: preferred keys, then GENERIC.
PREFERRED: dict[str, tuple[str, ...]] = {"caption": ("cider",), "rec": ("acc@0.5",), "count": ("count_acc",)}
GENERIC: tuple[str, ...] = ("accuracy", "vqa_acc", "exact_match")
UNBOUNDED = frozenset({"cider"})
FINE_DETAIL_TASKS = ("glyph", "count", "spatial", "rec")
GROUP_COLUMNS = {"small": "small obj", "large": "large obj", "many": "count 4+ obj", "few": "count <4 obj",
                 "unseen": "unseen pair"}
MD_GROUPS = ("small", "large", "many")             # the main table shows these; the CSVs have all GROUP_COLUMNS
SHIFT_GROUPS = ("small", "many", "unseen")
NOT_SUPPORTED = "≈"                                # marks a difference from mlp that the seeds do not support


def headline(task: str, metrics: dict) -> tuple[str, float] | None:
    """(metric name, value) that summarises `task`, or None when the runner reported no number for it."""
    main = metrics.get("main")
    for key in ((main,) if main else ()) + PREFERRED.get(task, ()) + GENERIC:
        if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics[key], bool):
            return key, float(metrics[key])
    return None


def task_order(results: list[dict]) -> list[str]:
    """ShapesWorld's task order first, then any other task the runner reported; never 'overall'."""
    seen = {t for r in results for t in r["metrics"] if t != "overall"}
    return [t for t in TASKS if t in seen] + sorted(seen - set(TASKS))


def scores(metrics: dict, tasks: list[str]) -> dict[str, tuple[str, float] | None]:
    return {t: headline(t, metrics[t]) if t in metrics else None for t in tasks}


def mean_of(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary_scores(result: dict, tasks: list[str]) -> dict[str, float | None]:
    """'mean' over bounded headline metrics and 'fine' over the fine-detail tasks, both 0-1."""
    s = scores(result["metrics"], tasks)
    bounded = {t: h[1] for t, h in s.items() if h is not None and h[0] not in UNBOUNDED}
    fine = [bounded[t] for t in FINE_DETAIL_TASKS if t in bounded]
    return {"mean": mean_of(list(bounded.values())), "fine": mean_of(fine)}


def metric_names(results: list[dict], tasks: list[str]) -> dict[str, str]:
    names = {}
    for t in tasks:
        found = [scores(r["metrics"], [t])[t] for r in results]
        names[t] = next((h[0] for h in found if h), "")
    return names


def columns(tasks: list[str], groups) -> list[str]:
    return list(tasks) + ["mean", "fine"] + list(groups)


def run_values(metrics: dict, groups: dict, tasks: list[str]) -> dict[str, float | None]:
    """One run's column values (0-1, CIDEr unbounded): task headlines, mean, fine, every group."""
    s = scores(metrics, tasks)
    out = {t: s[t][1] if s[t] else None for t in tasks}
    out.update(summary_scores({"metrics": metrics}, tasks))
    out.update({g: groups.get(g, {}).get("score") for g in GROUP_COLUMNS})
    return out


def by_seed(results: list[dict], tasks: list[str], which: str = "test") -> dict[str, dict[str, dict[int, float]]]:
    """{row: {column: {seed: value}}} for the test set ``which`` ('test' or 'shift')."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in results:
        part = r if which == "test" else r.get("shift") or {}
        if not part.get("metrics"):
            continue
        values = run_values(part["metrics"], part.get("groups", {}), tasks)
        for col, v in values.items():
            if v is not None:
                out.setdefault(r["connector"], {}).setdefault(col, {})[int(r.get("seed", 0))] = v
    return out


def rows_in_order(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["connector"] for r in results))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def cell(iv: Interval | None, diff: Interval | None = None, is_reference: bool = True) -> str:
    """'62.3 ± 8.1' (x100; '± 95% half-width' from 2 seeds on), with NOT_SUPPORTED when the paired difference
    from the reference row is not supported by the seeds."""
    if iv is None:
        return "-"
    text = _pct(iv.mean) + ("" if iv.half is None else f" ± {100 * iv.half:.1f}")
    if not is_reference and diff is not None and diff.n >= 2 and not supported(diff):
        text += f" {NOT_SUPPORTED}"
    return text


def table(results: list[dict], prior: dict | None, tasks: list[str], groups, which: str = "test") -> str:
    """Markdown: the prior row (``prior``: {"metrics", "groups"}), then every row (mean ± 95% interval over seeds,
    x100)."""
    names = metric_names(results, tasks)
    cols = columns(tasks, groups)
    data = by_seed(results, tasks, which)
    head = ["connector", "seeds"] + [f"{c} ({label(names[c])})" if c in names else GROUP_COLUMNS.get(c, c)
                                     for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(cols)]
    if prior:
        pv = run_values(prior["metrics"], prior.get("groups", {}), tasks)
        lines.append("| prior (no image) | - | " + " | ".join(_pct(pv.get(c)) for c in cols) + " |")
    ref = data.get(REFERENCE, {})
    for row in rows_in_order(results):
        values = data.get(row, {})
        n = max((len(v) for v in values.values()), default=0)
        cells = [cell(interval(list(values.get(c, {}).values())), paired(values.get(c, {}), ref.get(c, {})),
                      row == REFERENCE or REFERENCE not in data) for c in cols]
        lines.append(f"| {row} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(results: list[dict], tasks: list[str], groups, which: str = "test") -> str:
    """Markdown: each row minus mlp, seed by seed: mean difference [95% interval], bold when supported."""
    data = by_seed(results, tasks, which)
    if REFERENCE not in data:
        return ""
    cols = columns(tasks, groups)
    lines = ["| connector - mlp | " + " | ".join(GROUP_COLUMNS.get(c, c) for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for row in rows_in_order(results):
        if row == REFERENCE or row not in data:
            continue
        cells = []
        for c in cols:
            d = paired(data[row].get(c, {}), data[REFERENCE].get(c, {}))
            if d is None:
                cells.append("-")
                continue
            text = f"{100 * d.mean:+.1f}" + ("" if d.ci is None else f" [{100 * d.ci[0]:+.1f}, {100 * d.ci[1]:+.1f}]")
            cells.append(f"**{text}**" if supported(d) else text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(results: list[dict]) -> str:
    """Markdown: tokens, connector parameters and FLOPs, and the time each run took (means over seeds)."""
    lines = ["| connector | visual tokens | connector params | connector MFLOPs / image | train s (LLM stage) | "
             "pre-stage s | ms / step | train tok/s | eval s | eval img/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows_in_order(results):
        rs = [r for r in results if r["connector"] == row]

        def avg(key):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else None
        tokens = avg("visual_tokens")
        tok = f"{tokens:.0f}" if float(tokens).is_integer() else f"{tokens:.1f}"
        if rs[0].get("dynamic"):
            tok += f" (max {rs[0]['max_visual_tokens']})"
        flops = avg("connector_flops")
        fmt = (lambda v, f: "-" if v is None else format(v, f))
        lines.append(f"| {row} | {tok} | {rs[0]['connector_params']:,} | {fmt(flops and flops / 1e6, '.1f')} | "
                     f"{fmt(avg('train_seconds'), ',.0f')} | {fmt(avg('pre_stage_seconds'), ',.0f')} | "
                     f"{fmt(avg('train_ms_per_step'), ',.0f')} | {fmt(avg('train_tokens_per_s'), ',.0f')} | "
                     f"{fmt(avg('eval_seconds'), ',.0f')} | {fmt(avg('eval_images_per_s'), '.1f')} |")
    return "\n".join(lines)


def long_csv(results: list[dict], prior: dict | None, tasks: list[str]) -> str:
    """One line per (test set, row, column): mean, 95% interval, min, max, n, and the paired difference from
    mlp with its interval and whether the seeds support it. The prior has n = 0."""
    names = metric_names(results, tasks)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["test_set", "connector", "column", "metric", "mean", "ci_low", "ci_high", "min", "max", "n",
                "diff_vs_mlp", "diff_ci_low", "diff_ci_high", "diff_supported"])
    cols = columns(tasks, GROUP_COLUMNS)
    for which in ("test", "shift"):
        data = by_seed(results, tasks, which)
        if not data:
            continue
        if prior and prior.get(which):
            pv = run_values(prior[which]["metrics"], prior[which].get("groups", {}), tasks)
            for c in cols:
                if pv.get(c) is not None:
                    w.writerow([which, "prior", c, names.get(c, ""), round(pv[c], 4)] + [None] * 4 + [0] + [None] * 4)
        for row in rows_in_order(results):
            for c in cols:
                iv = interval(list(data.get(row, {}).get(c, {}).values()))
                if iv is None:
                    continue
                d = paired(data[row].get(c, {}), data.get(REFERENCE, {}).get(c, {})) if row != REFERENCE else None
                r4 = (lambda v: None if v is None else round(v, 4))
                w.writerow([which, row, c, names.get(c, ""), r4(iv.mean), r4(iv.ci and iv.ci[0]), r4(iv.ci and iv.ci[1]),
                            r4(iv.low), r4(iv.high), iv.n, r4(d and d.mean), r4(d and d.ci and d.ci[0]),
                            r4(d and d.ci and d.ci[1]), None if d is None else supported(d)])
    return buf.getvalue()


def runs_csv(results: list[dict], tasks: list[str]) -> str:
    """One line per run (row, seed): every column on both test sets, and the costs."""
    cols = columns(tasks, GROUP_COLUMNS)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["connector", "seed", "options", "visual_tokens", "connector_params", "connector_flops",
                "train_seconds", "train_ms_per_step", "eval_seconds"] + cols + [f"shift:{c}" for c in cols])
    for r in results:
        test = run_values(r["metrics"], r.get("groups", {}), tasks)
        shift = run_values(r["shift"]["metrics"], r["shift"].get("groups", {}), tasks) if r.get("shift") else {}
        r4 = (lambda v: None if v is None else round(v, 4))
        w.writerow([r["connector"], r.get("seed", 0), json.dumps(r.get("options", {})), r["visual_tokens"],
                    r["connector_params"], r.get("connector_flops"), r4(r.get("train_seconds")),
                    r4(r.get("train_ms_per_step")), r4(r.get("eval_seconds"))]
                   + [r4(test.get(c)) for c in cols] + [r4(shift.get(c)) for c in cols])
    return buf.getvalue()


def sizing_note(results: list[dict], tasks: list[str]) -> str:
    """How the evaluation size compares with the spread over seeds: one run's binomial standard error on the
    bounded tasks (at its own score, n questions) against the seed-to-seed standard deviation of each cell."""
    import statistics
    data, errors, spreads = by_seed(results, tasks), [], []
    names = metric_names(results, tasks)
    n_of = {(r["connector"], t): r["metrics"][t].get("n") for r in results for t in tasks if t in r["metrics"]}
    for row, cols in data.items():
        for t in tasks:
            values = list(cols.get(t, {}).values())
            n = n_of.get((row, t))
            if not values or not n or names[t] in UNBOUNDED:
                continue
            errors += [(v * (1 - v) / n) ** 0.5 for v in values]
            if len(values) >= 2:
                spreads.append(statistics.stdev(values))
    if not errors:
        return ""
    text = (f"Evaluation size: one run's score on a bounded task has a binomial standard error of "
            f"{100 * statistics.median(errors):.1f} points (median over runs and tasks; at most "
            f"{100 * max(errors):.1f})")
    if spreads:
        text += (f", against a seed-to-seed standard deviation of {100 * statistics.median(spreads):.1f} points "
                 f"(median over rows and tasks): the intervals are mostly training variance, not test sampling")
    return text + "."


def write_table(results: list[dict], prior: dict | None, cfg: ArenaConfig, out: Path) -> str:
    """Write OUT/<name>.md (tables, how the comparison was set up, how to re-run a run), OUT/<name>.csv (long
    form: intervals and paired differences) and OUT/<name>_runs.csv (every run); return the main table."""
    tasks = task_order(results)
    prior = prior or {}
    main = table(results, prior.get("test"), tasks, MD_GROUPS)
    seeds = sorted({int(r.get("seed", 0)) for r in results})
    shapes = cfg.shapes
    parts = [
        "# Connector arena\n",
        f"Written {date.today().isoformat()}. Seeds {seeds}: each row trained once per seed (initialisation and "
        f"data order; the data and the frozen encoder are the same for all), {cfg.steps} steps of "
        f"{cfg.batch_size or 'the base preset'} records, every row on the same test records "
        f"({cfg.eval_limit or 'all'} per task).",
        f"Data: ShapesWorld, {shapes.n} scenes of {shapes.image_size} px, {shapes.min_objects}-{shapes.max_objects} "
        f"objects, sizes {list(shapes.object_size)}, glyph scale {shapes.glyph_scale}; pairs held out of training: "
        f"{', '.join(shapes.exclude_pairs) or 'none'}. Encoder pretrained on {', '.join(cfg.vision_attributes)}.\n",
        "Headline metric per task x100, mean ± half-width of the 95% Student-t interval over seeds. "
        f"`{NOT_SUPPORTED}`: the difference from `mlp` is not supported by the seeds (the 95% interval of the "
        "seed-by-seed difference includes 0). `prior (no image)`: the most frequent training answer to each "
        f"question, scored alike (the chance level of a column). `mean`: the bounded metrics (all but CIDEr); "
        f"`fine`: {', '.join(FINE_DETAIL_TASKS)}; `small obj` / `large obj`: questions about one object of that "
        "size; `count 4+ obj`: counting in scenes with 4 or more objects.\n",
        main,
        "\n" + sizing_note(results, tasks),
        "\n## Difference from mlp, seed by seed\n",
        "Mean of (row - mlp) over seeds x100 [95% interval]; bold where the seeds support a difference.\n",
        difference_table(results, tasks, MD_GROUPS),
    ]
    if any(r.get("shift") for r in results):
        parts += ["\n## Held-out shifted test set\n",
                  f"More ({cfg.shift_objects[0]}-{cfg.shift_objects[1]}) and smaller ({list(cfg.shift_object_size)}) "
                  f"objects, and every colour-shape pair ({cfg.shift_eval_limit or 'all'} questions per task). "
                  "`unseen pair`: questions about an object whose colour-shape pair training never showed.\n",
                  table(results, prior.get("shift"), tasks, SHIFT_GROUPS, "shift"),
                  "\n" + difference_table(results, tasks, SHIFT_GROUPS, "shift")]
    parts += ["\n## Cost\n", cost_table(results),
              f"\n![per task]({cfg.name}_tasks.png)\n![vs visual tokens]({cfg.name}_tokens.png)\n"
              f"![vs parameters]({cfg.name}_params.png)\n",
              "## Re-run one run\n",
              "\n".join(f"- `{r['connector']}` seed {r.get('seed', 0)}: `{r['command']}`" for r in results)]
    (out / f"{cfg.name}.md").write_text("\n".join(parts) + "\n")
    (out / f"{cfg.name}.csv").write_text(long_csv(results, prior, tasks))
    (out / f"{cfg.name}_runs.csv").write_text(runs_csv(results, tasks))
    return main
