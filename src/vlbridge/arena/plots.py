"""The arena's figures (matplotlib, headless): per-task grouped bars, and accuracy vs visual tokens."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..eval.report import label  # noqa: E402
from .report import FINE_DETAIL_TASKS, GROUP_COLUMNS, MD_GROUPS, metric_names, quality, summary_scores, task_order  # noqa: E402


def plot_tasks(results: list[dict], path: Path) -> Path:
    """Grouped bars: one group per task (+ mean, fine detail, object-size groups), one bar per connector."""
    tasks = task_order(results)
    names = metric_names(results, tasks)
    groups = MD_GROUPS if any(r.get("groups") for r in results) else ()
    labels = ([f"{t}\n({label(names[t])})" for t in tasks] + ["mean", "fine\ndetail"]
              + [GROUP_COLUMNS[g].replace(" ", "\n", 1) for g in groups])
    n = len(results)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(labels) + 0.12 * n * len(labels)), 4.8))
    cmap = plt.get_cmap("tab10")
    for i, r in enumerate(results):
        values = [0.0 if v is None else 100 * v for v in quality(r, tasks, groups)]
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(labels))]
        ax.bar(xs, values, width, label=f"{r['connector']} ({r['visual_tokens']:.0f} tok)", color=cmap(i % 10))
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("score x100 (test split)")
    ax.axvline(len(tasks) - 0.5, color="grey", lw=0.8, ls=":")
    ax.set_title("Connector arena: headline metric per task")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(n, 6), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tokens(results: list[dict], path: Path) -> Path:
    """Mean score and fine-detail score against visual tokens per image, one labelled point per connector."""
    tasks = task_order(results)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    series = (("mean", "o", "mean of tasks"), ("fine", "^", f"fine detail ({', '.join(FINE_DETAIL_TASKS)})"))
    for key, marker, legend in series:
        pts = [(r["visual_tokens"], 100 * v, r["connector"]) for r in results
               if (v := summary_scores(r, tasks)[key]) is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=50, label=legend)
        for x, y, name in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("visual tokens per image (log scale)")
    ax.set_ylabel("score x100 (test split)")
    ax.set_title("Accuracy vs number of visual tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: list[dict], out: Path) -> list[Path]:
    return [plot_tasks(results, out / "arena_tasks.png"), plot_tokens(results, out / "arena_tokens.png")]
