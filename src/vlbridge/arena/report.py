"""The arena table: one row per connector, one column per task (its headline metric), plus cost columns.

Every task is summarised by the headline metric the eval runner names in its per-task ``main`` (CIDEr for
captions, Acc@0.5 for boxes, count accuracy, POPE accuracy, VQA accuracy ...), shown x100. ``mean``
averages the bounded (0-1) headline metrics, so an unbounded CIDEr does not swamp it; ``fine`` averages the
fine-detail tasks (glyphs, counting, boxes) that need local perception.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..data.shapesworld import TASKS
from ..eval.report import label

# Used only when a task's metrics do not name their ``main`` number: preferred keys, then GENERIC.
PREFERRED: dict[str, tuple[str, ...]] = {"caption": ("cider",), "rec": ("acc@0.5",), "count": ("count_acc",)}
GENERIC: tuple[str, ...] = ("accuracy", "vqa_acc", "exact_match")
UNBOUNDED = frozenset({"cider"})
FINE_DETAIL_TASKS = ("glyph", "count", "rec")


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


def scores(result: dict, tasks: list[str]) -> dict[str, tuple[str, float] | None]:
    return {t: headline(t, result["metrics"][t]) if t in result["metrics"] else None for t in tasks}


def mean_of(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary_scores(result: dict, tasks: list[str]) -> dict[str, float | None]:
    """'mean' over bounded headline metrics and 'fine' over the fine-detail tasks, both 0-1."""
    s = scores(result, tasks)
    bounded = {t: h[1] for t, h in s.items() if h is not None and h[0] not in UNBOUNDED}
    fine = [bounded[t] for t in FINE_DETAIL_TASKS if t in bounded]
    return {"mean": mean_of(list(bounded.values())), "fine": mean_of(fine)}


def metric_names(results: list[dict], tasks: list[str]) -> dict[str, str]:
    names = {}
    for t in tasks:
        found = [scores(r, [t])[t] for r in results]
        names[t] = next((h[0] for h in found if h), "")
    return names


GROUP_COLUMNS = {"small": "small obj", "large": "large obj", "many": "count 4+ obj", "few": "count <4 obj"}
MD_GROUPS = ("small", "large", "many")             # the table shows these; the CSV has all GROUP_COLUMNS


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _tokens(r: dict) -> str:
    tokens = r["visual_tokens"]
    text = f"{tokens:.0f}" if float(tokens).is_integer() else f"{tokens:.1f}"
    return f"{text} (max {r['max_visual_tokens']})" if r.get("dynamic") else text


def quality(r: dict, tasks: list[str], groups: tuple[str, ...]) -> list[float | None]:
    """Task headline metrics, then mean and fine, then the size/clutter groups (all 0-1 except CIDEr)."""
    s, summ = scores(r, tasks), summary_scores(r, tasks)
    return ([s[t][1] if s[t] else None for t in tasks] + [summ["mean"], summ["fine"]]
            + [r.get("groups", {}).get(g, {}).get("score") for g in groups])


def markdown(results: list[dict]) -> str:
    tasks = task_order(results)
    names = metric_names(results, tasks)
    groups = MD_GROUPS if any(r.get("groups") for r in results) else ()
    head = (["connector", "visual tokens", "connector params", "train ms/step", "train tok/s", "eval img/s"]
            + [f"{t} ({label(names[t])})" for t in tasks] + ["mean", "fine"] + [GROUP_COLUMNS[g] for g in groups])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        tok_s, ms = r.get("train_tokens_per_s"), r.get("train_ms_per_step")
        cells = ([r["connector"], _tokens(r), f"{r['connector_params']:,}", "-" if ms is None else f"{ms:,.0f}",
                  "-" if tok_s is None else f"{tok_s:,.0f}", f"{r['eval_images_per_s']:.1f}"]
                 + [_pct(v) for v in quality(r, tasks, groups)])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(results: list[dict]) -> str:
    tasks = task_order(results)
    names = metric_names(results, tasks)
    groups = tuple(GROUP_COLUMNS)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["connector", "options", "visual_tokens", "max_visual_tokens", "connector_params",
                "train_ms_per_step", "train_tokens_per_s", "train_seconds", "eval_images_per_s", "eval_records"]
               + [f"{t}:{names[t]}" for t in tasks] + ["mean", "fine"] + list(groups))
    for r in results:
        w.writerow([r["connector"], json.dumps(r.get("options", {})), r["visual_tokens"], r["max_visual_tokens"],
                    r["connector_params"], r.get("train_ms_per_step"), r.get("train_tokens_per_s"), r.get("train_seconds"),
                    r["eval_images_per_s"], r["eval_records"]]
                   + [None if v is None else round(v, 4) for v in quality(r, tasks, groups)])
    return buf.getvalue()


def write_table(results: list[dict], out: Path) -> str:
    """Write OUT/arena.md (table + how to re-run each row) and OUT/arena.csv; return the Markdown table."""
    table = markdown(results)
    rerun = "\n".join(f"- `{r['connector']}`: `{r['command']}`" for r in results)
    (out / "arena.md").write_text(
        "# Connector arena\n\nHeadline metric per task x100 on the test split. `mean`: the bounded metrics "
        f"(all but CIDEr); `fine`: {', '.join(FINE_DETAIL_TASKS)}; `small obj` / `large obj`: colour, shape, "
        "exist, REC and REG questions about one object of that size; `count 4+ obj`: counting in scenes with "
        "4 or more objects. `train ms/step`: wall time of the training run (set-up and checkpoints included) "
        "per step.\n\n"
        f"{table}\n\n![per task](arena_tasks.png)\n![vs visual tokens](arena_tokens.png)\n\n"
        f"## Re-run one row\n\n{rerun}\n")
    (out / "arena.csv").write_text(csv_text(results))
    return table
