"""The Markdown table of an eval: one row per task with its main metric and the secondary ones.

Accuracy-like numbers print as percentages; CIDEr-D, BLEU-4, ROUGE-L and mean IoU print x100 (the
usual convention in papers: "CIDEr 85.3"); counts (n, unparsable) as integers. Text values such as the
captioning tokenizer go into a note under the table.
"""
from __future__ import annotations

LABELS = {
    "cider": "CIDEr", "bleu4": "BLEU-4", "rouge_l": "ROUGE-L", "exact_match": "exact match", "vqa_acc": "VQA acc",
    "count_acc": "count acc", "accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1",
    "yes_ratio": "yes-ratio", "acc@0.5": "Acc@0.5", "mean_iou": "mean IoU", "unparsable": "unparsable",
}
SCALED = frozenset({"cider", "bleu4", "rouge_l", "mean_iou"})
NOT_METRICS = frozenset({"metric", "main", "n"})
OVERALL = "overall"     # the row of every record together, scored by exact match (tasks' own metrics differ)


def label(key: str) -> str:
    return LABELS.get(key, key)


def format_value(key: str, value) -> str:
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    if key in SCALED:
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f}%"


def main_value(task_metrics: dict) -> float:
    """The headline number of one task's metrics (e.g. CIDEr for captioning, Acc@0.5 for REC)."""
    return task_metrics[task_metrics.get("main", "exact_match")]


def markdown_table(metrics: dict[str, dict]) -> str:
    lines = ["| task | metric | score | other metrics | n |", "|---|---|---:|---|---:|"]
    notes = []
    for task, m in metrics.items():
        main = m.get("main", "exact_match")
        others = []
        for key, value in m.items():
            if key in NOT_METRICS or key == main:
                continue
            if isinstance(value, str):
                notes.append(f"{task}: {key} {value}")
                continue
            others.append(f"{label(key)} {format_value(key, value)}")
        metric = f"{label(main)} over all records" if task == OVERALL else label(main)
        lines.append(f"| {task} | {metric} | {format_value(main, m[main])} | {', '.join(others)} | {m['n']} |")
    if notes:
        lines += ["", "; ".join(notes)]
    return "\n".join(lines)
