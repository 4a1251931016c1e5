"""The arena's figures (matplotlib, headless), each with 95% intervals over seeds as error bars: per-task grouped
bars with the blind prior marked, and the mean and fine-detail scores against visual tokens and against
connector parameters (the view at equal parameters)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..eval.report import label  # noqa: E402
from .report import (FINE_DETAIL_TASKS, GROUP_COLUMNS, MD_GROUPS, by_seed, columns, metric_names, rows_in_order,  # noqa: E402
                     run_values, task_order)
from .stats import interval  # noqa: E402


def _stats(values: dict[int, float] | None) -> tuple[float | None, float]:
    iv = interval(list((values or {}).values()))
    return (None, 0.0) if iv is None else (100 * iv.mean, 0.0 if iv.half is None else 100 * iv.half)


def plot_tasks(results: list[dict], prior: dict | None, path: Path) -> Path:
    """Grouped bars: one group per task (+ mean, fine detail, object-size groups), one bar per row; error bars are
    the 95% intervals over seeds, a black dash over each group the blind prior."""
    tasks = task_order(results)
    names = metric_names(results, tasks)
    groups = MD_GROUPS if any(r.get("groups") for r in results) else ()
    cols = columns(tasks, groups)
    labels = ([f"{t}\n({label(names[t])})" for t in tasks] + ["mean", "fine\ndetail"]
              + [GROUP_COLUMNS[g].replace(" ", "\n", 1) for g in groups])
    data, rows = by_seed(results, tasks), rows_in_order(results)
    n = len(rows)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(8.0, len(labels) * (0.45 + 0.07 * n)), 4.8))
    cmap = plt.get_cmap("tab10")
    for i, row in enumerate(rows):
        stats = [_stats(data.get(row, {}).get(c)) for c in cols]
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(cols))]
        tokens = next(r["visual_tokens"] for r in results if r["connector"] == row)
        ax.bar(xs, [m or 0.0 for m, _ in stats], width, yerr=[h for _, h in stats], capsize=1.5,
               error_kw={"elinewidth": 0.8}, label=f"{row} ({tokens:.0f} tok)", color=cmap(i % 10))
    if prior:
        pv = run_values(prior["metrics"], prior.get("groups", {}), tasks)
        for g, c in enumerate(cols):
            if pv.get(c) is not None:
                ax.plot([g - 0.45, g + 0.45], [100 * pv[c]] * 2, color="black", lw=1.2)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("score x100 (test split)")
    ax.axvline(len(tasks) - 0.5, color="grey", lw=0.8, ls=":")
    seeds = sorted({int(r.get("seed", 0)) for r in results})
    ax.set_title(f"Connector arena: headline metric per task (seeds {seeds}; bars 95% intervals; "
                 "black: prior, no image)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(n, 6), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


SERIES = (("mean", "o"), ("fine", "^"))
SERIES_LABELS = {"mean": "mean of tasks", "fine": f"fine detail\n({', '.join(FINE_DETAIL_TASKS)})"}


def plot_against(results: list[dict], prior: dict | None, path: Path, key: str, xlabel: str, title: str) -> Path:
    """Mean (circles) and fine-detail (triangles) scores with 95% intervals against a per-row size (``key`` of the
    results: visual tokens or connector parameters), log x; one colour per row as in the bars; the prior's mean
    and fine as dotted lines. Rows at the same x are spread slightly sideways."""
    tasks = task_order(results)
    data, rows = by_seed(results, tasks), rows_in_order(results)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    xs = {row: float(next(r[key] for r in results if r["connector"] == row)) for row in rows}
    same_x: dict[float, list[str]] = {}
    for row in rows:
        same_x.setdefault(round(xs[row], 3), []).append(row)
    top = 1.0
    for i, row in enumerate(rows):
        group = same_x[round(xs[row], 3)]
        x = xs[row] * 2 ** (0.05 * (group.index(row) - (len(group) - 1) / 2))          # log-space jitter
        for series, marker in SERIES:
            mean, half = _stats(data.get(row, {}).get(series))
            if mean is not None:
                ax.errorbar([x], [mean], yerr=[half], fmt=marker, ms=7, color=cmap(i % 10), mec="black", mew=0.5,
                            capsize=2, elinewidth=0.8, zorder=3)
                top = max(top, mean + half)
    if prior:
        pv = run_values(prior["metrics"], prior.get("groups", {}), tasks)
        for series, style in (("mean", ":"), ("fine", "-.")):
            if pv.get(series) is not None:
                ax.axhline(100 * pv[series], color="grey", lw=0.9, ls=style)
    ax.set_ylim(0, top * 1.15)                                            # from zero: differences at true scale
    ticks = sorted(same_x)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks], fontsize=7, rotation=30 if key != "visual_tokens" else 0)
    ax.minorticks_off()
    ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score x100 (test split)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker="s", ms=8, color=cmap(i % 10), label=row) for i, row in enumerate(rows)]
    handles += [Line2D([], [], ls="", marker=m, ms=8, color="white", markeredgecolor="black", label=SERIES_LABELS[k])
                for k, m in SERIES]
    handles += [Line2D([], [], color="grey", ls=":", label="prior: mean"),
                Line2D([], [], color="grey", ls="-.", label="prior: fine")]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: list[dict], prior: dict | None, out: Path, name: str = "arena") -> list[Path]:
    test_prior = (prior or {}).get("test")
    return [plot_tasks(results, test_prior, out / f"{name}_tasks.png"),
            plot_against(results, test_prior, out / f"{name}_tokens.png", "visual_tokens",
                         "visual tokens per image (log scale)", "Accuracy vs number of visual tokens"),
            plot_against(results, test_prior, out / f"{name}_params.png", "connector_params",
                         "connector parameters (log scale)", "Accuracy vs connector parameters")]
