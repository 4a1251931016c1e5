"""The arena table: one row per connector, one column per task (its headline metric), plus cost columns.

Every task is summarised by one headline metric taken from the eval runner's per-task metrics (CIDEr for
captions, Acc@0.5 for boxes, accuracy otherwise, exact match as the fallback), shown x100. ``mean`` averages
the bounded (0-1) headline metrics, so an unbounded CIDEr does not swamp it; ``fine`` averages the
fine-detail tasks (glyphs, counting, boxes) that need local perception.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..data.shapes import TASKS

# Headline metric per task, in order of preference (names the eval runner may use); then GENERIC.
PREFERRED: dict[str, tuple[str, ...]] = {
    "caption": ("cider", "CIDEr", "cider_d", "CIDEr-D"),
    "rec": ("acc@0.5", "acc_iou50", "acc50", "accuracy@0.5"),
    "count": ("count_accuracy", "counting_accuracy", "accuracy"),
    "exist": ("accuracy", "f1"),
}
GENERIC: tuple[str, ...] = ("accuracy", "vqa_accuracy", "exact_match")
UNBOUNDED = {"cider", "CIDEr", "cider_d", "CIDEr-D"}
FINE_DETAIL_TASKS = ("glyph", "count", "rec")
SHORT_NAMES = {"exact_match": "EM", "vqa_accuracy": "VQA acc", "accuracy": "acc", "cider": "CIDEr",
               "acc@0.5": "Acc@0.5", "count_accuracy": "acc"}


def headline(task: str, metrics: dict) -> tuple[str, float] | None:
    """(metric name, value) that summarises `task`, or None when the runner reported no number for it."""
    for key in PREFERRED.get(task, ()) + GENERIC:
        if isinstance(metrics.get(key), (int, float)):
            return key, float(metrics[key])
    numbers = [(k, float(v)) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "n"]
    return numbers[0] if numbers else None


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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _tokens(r: dict) -> str:
    tokens = r["visual_tokens"]
    text = f"{tokens:.0f}" if float(tokens).is_integer() else f"{tokens:.1f}"
    return f"{text} (max {r['max_visual_tokens']})" if r.get("dynamic") else text


def markdown(results: list[dict]) -> str:
    tasks = task_order(results)
    names = metric_names(results, tasks)
    head = (["connector", "visual tokens", "connector params", "train tok/s", "eval img/s"]
            + [f"{t} ({SHORT_NAMES.get(names[t], names[t])})" for t in tasks] + ["mean", "fine"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        s, summ = scores(r, tasks), summary_scores(r, tasks)
        tok_s = r.get("train_tokens_per_s")
        cells = ([r["connector"], _tokens(r), f"{r['connector_params']:,}",
                  "-" if tok_s is None else f"{tok_s:,.0f}", f"{r['eval_images_per_s']:.1f}"]
                 + [_pct(s[t][1] if s[t] else None) for t in tasks] + [_pct(summ["mean"]), _pct(summ["fine"])])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(results: list[dict]) -> str:
    tasks = task_order(results)
    names = metric_names(results, tasks)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["connector", "options", "visual_tokens", "max_visual_tokens", "connector_params",
                "train_tokens_per_s", "train_seconds", "eval_images_per_s", "eval_records"]
               + [f"{t}:{names[t]}" for t in tasks] + ["mean", "fine"])
    for r in results:
        s, summ = scores(r, tasks), summary_scores(r, tasks)
        w.writerow([r["connector"], r.get("options", {}), r["visual_tokens"], r["max_visual_tokens"],
                    r["connector_params"], r.get("train_tokens_per_s"), r.get("train_seconds"),
                    r["eval_images_per_s"], r["eval_records"]]
                   + [None if s[t] is None else round(s[t][1], 4) for t in tasks]
                   + [None if v is None else round(v, 4) for v in (summ["mean"], summ["fine"])])
    return buf.getvalue()


def write_table(results: list[dict], out: Path) -> str:
    """Write OUT/arena.md (table + how to re-run each row) and OUT/arena.csv; return the Markdown table."""
    table = markdown(results)
    rerun = "\n".join(f"- `{r['connector']}`: `{r['command']}`" for r in results)
    (out / "arena.md").write_text(
        "# Connector arena\n\nHeadline metric per task x100 (test split); `mean`: bounded metrics, `fine`: "
        f"{', '.join(FINE_DETAIL_TASKS)}.\n\n{table}\n\n![per task](arena_tasks.png)\n"
        f"![vs visual tokens](arena_tokens.png)\n\n## Re-run one row\n\n{rerun}\n")
    (out / "arena.csv").write_text(csv_text(results))
    return table
