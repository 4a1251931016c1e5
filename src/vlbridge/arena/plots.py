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
    fig, ax = plt.subplots(figsize=(max(8.0, len(labels) * (0.45 + 0.07 * n)), 4.8))
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
    """Mean score (circles) and fine-detail score (triangles) against visual tokens per image; one colour per
    connector as in the bars. Connectors with the same token count are spread slightly sideways."""
    from matplotlib.lines import Line2D
    tasks = task_order(results)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    same_x: dict[float, list[int]] = {}
    for i, r in enumerate(results):
        same_x.setdefault(round(float(r["visual_tokens"]), 3), []).append(i)
    for i, r in enumerate(results):
        group = same_x[round(float(r["visual_tokens"]), 3)]
        x = r["visual_tokens"] * 2 ** (0.04 * (group.index(i) - (len(group) - 1) / 2))     # log-space jitter
        summ = summary_scores(r, tasks)
        for key, marker in SERIES:
            if summ[key] is not None:
                ax.scatter([x], [100 * summ[key]], marker=marker, s=60, color=cmap(i % 10), edgecolors="black",
                           linewidths=0.5, zorder=3)
    top = max([100 * v for r in results for v in summary_scores(r, tasks).values() if v is not None], default=1.0)
    ax.set_ylim(0, max(top * 1.15, 1.0))                                 # from zero: differences at true scale
    ticks = sorted(same_x)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(min(ticks) / 1.4, max(ticks) * 1.4)
    ax.set_xlabel("visual tokens per image (log scale)")
    ax.set_ylabel("score x100 (test split)")
    ax.set_title("Accuracy vs number of visual tokens")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker="s", ms=8, color=cmap(i % 10), label=r["connector"])
               for i, r in enumerate(results)]
    handles += [Line2D([], [], ls="", marker=m, ms=8, color="white", markeredgecolor="black", label=SERIES_LABELS[k])
                for k, m in SERIES]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


SERIES = (("mean", "o"), ("fine", "^"))
SERIES_LABELS = {"mean": "mean of tasks", "fine": f"fine detail\n({', '.join(FINE_DETAIL_TASKS)})"}


def write_plots(results: list[dict], out: Path) -> list[Path]:
    return [plot_tasks(results, out / "arena_tasks.png"), plot_tokens(results, out / "arena_tokens.png")]
