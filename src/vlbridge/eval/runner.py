"""Evaluate a model on LLaVA-style records: batched KV-cache generation, per-task metrics, reports.

Each record's last assistant turn (a document: its answer) is the reference (a record may list more
acceptable answers in ``references``); everything before it is the prompt. The three steps, usable from Python::

    preds = predict(model, dataset, batch_size=64)     # generate (greedy, KV cache), unscored
    metrics = summarize(preds)                         # score per task (fills each p.score / p.details)
    write_reports(out_dir, preds, metrics, report, total)

``summarize`` scores all predictions of a task together, because some metrics are defined over a split
(CIDEr's IDF); the metric of each task comes from ``task_metrics`` (or the record's ``metric`` field).
Outputs: ``predictions.jsonl`` (id, task, prompt, prediction, reference, score, metric, details),
``metrics.json`` and ``metrics.md`` (a Markdown table, see ``report``). Nothing in them depends on time
or machine, so the same records and model give byte-identical files.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.dataset import InstructionDataset, collate
from ..data.records import Record, SkipReport
from ..errors import UserError
from ..generate import GenerationConfig, generate_answers
from .exact_match import exact_match
from .report import OVERALL, main_value, markdown_table  # noqa: F401  (re-exported for callers)
from .task_metrics import BadReference, evaluate, metric_for


@dataclass
class Prediction:
    id: str
    task: str
    prompt: str
    prediction: str
    reference: str
    score: float | None = None                 # this item's share of its task's main metric (set by summarize)
    metric: str = "exact_match"                # metric family that scores it
    references: list[str] | None = None        # all acceptable answers, when the record lists several
    details: dict = field(default_factory=dict)

    def acceptable(self) -> list[str]:
        return self.references or [self.reference]

    def to_json(self) -> dict:
        out = asdict(self)
        if out["references"] is None:
            del out["references"]
        return out


def record_metric(rec: Record) -> str:
    """The record's metric family; a bad name is an error naming the record."""
    try:
        return metric_for(rec.task or "all", rec.metric)
    except ValueError as e:
        raise UserError(f"{rec.where}: {e}") from None


def check_metrics(records: list[Record]) -> dict[str, str]:
    """task -> metric family, checking every record's ``metric`` and that each task uses one family."""
    chosen: dict[str, tuple[str, Record]] = {}
    for rec in records:
        task, metric = rec.task or "all", record_metric(rec)
        if task in chosen and chosen[task][0] != metric:
            other = chosen[task][1]
            raise UserError(f"{rec.where}: task {task!r} is scored with {metric!r} here but with "
                             f"{chosen[task][0]!r} in record {other.id!r}; one metric per task")
        chosen.setdefault(task, (metric, rec))
    return {task: metric for task, (metric, _) in chosen.items()}


@torch.no_grad()
def predict(model, dataset: InstructionDataset, batch_size: int = 32, gen: GenerationConfig | None = None,
            progress: bool = True) -> list[Prediction]:
    """Greedy answers for every record of ``dataset`` (built with for_generation=True), in dataset order."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    check_metrics([rec for rec, _, _ in dataset.items])
    for rec, _, _ in dataset.items:
        if rec.is_document and len(rec.turns) < 2:
            raise ValueError(f'{rec.where}: a document record needs an "answer" to be evaluated (the text the model '
                             "is to write after it)")
    gen = gen or GenerationConfig(max_new_tokens=40)
    model.eval()
    preds: list[Prediction] = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="eval", unit="batch", disable=not progress, mininterval=1.0):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        if not len(batch):
            continue
        with model.routing(tasks=[rec.task for rec in batch.records]):           # per-sample task types (MoA)
            texts = generate_answers(model, batch.input_ids, batch.pixel_values, gen)   # region tokens -> boxes
        for rec, text in zip(batch.records, texts):
            preds.append(prediction_for(rec, text))
    return preds


def prediction_for(rec: Record, prediction: str) -> Prediction:
    """An unscored prediction for ``rec``: prompt = last user turn (a document: its text), reference = last
    assistant turn (a document: its answer; when that is one line, only the first line written is read, as a
    document's items are lines and the model may go on to write the next ones)."""
    reference = rec.turns[-1].text
    prompt = next(t.text for t in reversed(rec.turns[:-1]) if t.role in ("user", "document"))
    if rec.is_document and "\n" not in reference.strip():
        prediction = prediction.strip().split("\n")[0]     # a one-item answer: the document's next item only
    return Prediction(rec.id, rec.task or "all", prompt, prediction, reference, metric=record_metric(rec),
                      references=list(rec.references) if rec.references else None)


def summarize(preds: list[Prediction]) -> dict[str, dict]:
    """Per-task metrics ({task: {"metric", "main", <numbers>, "n"}} plus "overall": exact match over every
    record, whatever its task's own metric).

    Scores every prediction in place (``p.score``, ``p.details``): split-level metrics need them all.
    """
    by_task: dict[str, list[Prediction]] = defaultdict(list)
    for p in preds:
        by_task[p.task].append(p)
    metrics: dict[str, dict] = {}
    for task, items in sorted(by_task.items()):
        families = sorted({p.metric for p in items})
        if len(families) > 1:
            raise UserError(f"task {task!r} mixes metrics {families}; give all its records the same 'metric'")
        try:
            result = evaluate(families[0], [p.prediction for p in items], [p.acceptable() for p in items])
        except BadReference as e:
            raise UserError(f"task {task!r}, record {items[e.index].id!r}: {e.problem}") from None
        for p, score, details in zip(items, result.per_item, result.details):
            p.score, p.details = round(float(score), 6), details
        metrics[task] = {"metric": families[0], "main": result.main, **result.summary, "n": len(items)}
    if preds:
        exact = [max(exact_match(p.prediction, r) for r in p.acceptable()) for p in preds]
        metrics[OVERALL] = {"main": "exact_match", "exact_match": sum(exact) / len(exact), "n": len(preds)}
    return metrics


def write_reports(out_dir: Path, preds: list[Prediction], metrics: dict, report: SkipReport, total: int) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for p in preds:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "skipped": report.counts()}, indent=2) + "\n",
                                          encoding="utf-8")
    (out_dir / "metrics.md").write_text(markdown_table(metrics) + "\n\n" + report.summary(total) + "\n",
                                        encoding="utf-8")


__all__ = ["Prediction", "predict", "prediction_for", "summarize", "write_reports", "markdown_table", "main_value",
           "check_metrics"]
