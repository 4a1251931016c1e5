"""Which metric scores which task, and the metric families behind the names.

A metric family takes all predictions of one task of a split together (CIDEr's IDF needs the whole split)
and returns a ``MetricResult``: the summary numbers, the key of the headline number, and each item's
contribution to it (the ``score`` written next to each prediction) with per-item details.

ShapesWorld tasks map to families by ``TASK_METRICS``; a task not listed uses ``DEFAULT_METRIC`` (VQA
accuracy). A record may name its family in a ``"metric"`` field, which wins over the task's default; all
records of one task must then agree. ``glyph`` uses exact match rather than VQA accuracy because the VQA
normalisation deletes the article "a", which would make the glyph "A" equal to an empty answer.

Families ("metric" values): captioning, vqa, exact_match, counting, pope, rec, reg, grounded_caption, absent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .grounding import absent_score, grounded_caption_score
from .captioning import caption_scores
from .counting import count_correct
from .exact_match import exact_match
from .rec import rec_metrics, score_box_text
from .reg import reg_scores
from .vqa import vqa_accuracy
from .yes_no import parse_yes_no, yes_no_metrics

Summary = dict[str, "float | int | str"]


@dataclass
class MetricResult:
    main: str                                           # key of the headline number in ``summary``
    summary: Summary
    per_item: list[float]                               # each item's contribution to the headline number
    details: list[dict] = field(default_factory=list)   # per item extras (IoU, parsed answer, CIDEr ...)


class BadReference(ValueError):
    """A reference the metric cannot use (e.g. no box in a REC reference); ``index`` is the item."""

    def __init__(self, index: int, problem: str):
        super().__init__(problem)
        self.index = index
        self.problem = problem


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _exact(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> list[float]:
    return [max(exact_match(p, r) for r in rs) for p, rs in zip(preds, refs)]


def exact_match_metric(preds, refs) -> MetricResult:
    exact = _exact(preds, refs)
    return MetricResult("exact_match", {"exact_match": _mean(exact)}, exact)


def vqa_metric(preds, refs) -> MetricResult:
    acc = [vqa_accuracy(p, rs) for p, rs in zip(preds, refs)]
    return MetricResult("vqa_acc", {"vqa_acc": _mean(acc), "exact_match": _mean(_exact(preds, refs))}, acc)


def counting_metric(preds, refs) -> MetricResult:
    scores, parsed = [], []
    for i, (p, rs) in enumerate(zip(preds, refs)):
        try:
            ok, has_count = count_correct(p, rs[0])
        except ValueError as e:
            raise BadReference(i, str(e)) from None
        scores.append(ok)
        parsed.append(has_count)
    summary = {"count_acc": _mean(scores), "exact_match": _mean(_exact(preds, refs)),
               "unparsable": sum(not x for x in parsed)}
    return MetricResult("count_acc", summary, scores, [{"parsed": x} for x in parsed])


def pope_metric(preds, refs) -> MetricResult:
    answers, truth = [parse_yes_no(p) for p in preds], []
    for i, rs in enumerate(refs):
        r = parse_yes_no(rs[0])
        if r is None:
            raise BadReference(i, f"reference {rs[0]!r} is not a yes/no answer")
        truth.append(r)
    correct = [float(a == t) for a, t in zip(answers, truth)]
    return MetricResult("accuracy", dict(yes_no_metrics(answers, truth)), correct, [{"answer": a} for a in answers])


def rec_metric(preds, refs) -> MetricResult:
    outcomes = []
    for i, (p, rs) in enumerate(zip(preds, refs)):
        try:
            outcomes.append(score_box_text(p, rs[0]))
        except ValueError as e:                         # only the reference can fail to parse
            raise BadReference(i, str(e)) from None
    details = [{"iou": round(o.iou, 6), "parsed": o.parsed} | ({"error": o.error} if o.error else {}) for o in outcomes]
    summary = rec_metrics(outcomes)
    return MetricResult(next(iter(summary)), dict(summary), [float(o.hit) for o in outcomes], details)


def captioning_metric(preds, refs) -> MetricResult:
    s = caption_scores(preds, refs)
    summary = {"cider": s.cider, "bleu4": s.bleu4, "rouge_l": s.rouge_l, "exact_match": _mean(_exact(preds, refs)),
               "tokenizer": s.tokenizer}
    details = [{"bleu4": round(b, 6), "rouge_l": round(r, 6)} for b, r in zip(s.per_item_bleu4, s.per_item_rouge_l)]
    return MetricResult("cider", summary, s.per_item_cider, details)


def reg_metric(preds, refs) -> MetricResult:
    s = reg_scores(preds, refs)
    details = [{"cider": round(c, 6)} for c in s.per_item_cider]
    return MetricResult("exact_match", {"exact_match": s.exact_match, "cider": s.cider, "tokenizer": s.tokenizer},
                        s.per_item_exact, details)


def grounded_caption_metric(preds, refs) -> MetricResult:
    scores = []
    for i, (p, rs) in enumerate(zip(preds, refs)):
        try:
            scores.append(grounded_caption_score(p, rs[0]))
        except ValueError as e:
            raise BadReference(i, str(e)) from None
    summary = {"f1": _mean([s.f1 for s in scores]), "precision": _mean([s.precision for s in scores]),
               "recall": _mean([s.recall for s in scores]), "box_recall": _mean([s.box_recall for s in scores])}
    details = [{"precision": round(s.precision, 6), "recall": round(s.recall, 6), "n_boxes": s.n_predicted}
               for s in scores]
    return MetricResult("f1", summary, [s.f1 for s in scores], details)


def absent_metric(preds, refs) -> MetricResult:
    outcomes = [absent_score(p) for p in preds]
    summary = {"accuracy": _mean([float(ok) for ok, _ in outcomes]), "boxed": _mean([float(b) for _, b in outcomes])}
    return MetricResult("accuracy", summary, [float(ok) for ok, _ in outcomes], [{"boxed": b} for _, b in outcomes])


MetricFn = Callable[[Sequence[str], Sequence[Sequence[str]]], MetricResult]
METRICS: dict[str, MetricFn] = {
    "captioning": captioning_metric,
    "vqa": vqa_metric,
    "exact_match": exact_match_metric,
    "counting": counting_metric,
    "pope": pope_metric,
    "rec": rec_metric,
    "reg": reg_metric,
    "grounded_caption": grounded_caption_metric,
    "absent": absent_metric,
}
TASK_METRICS: dict[str, str] = {
    "caption": "captioning", "color": "vqa", "shape": "vqa", "count": "counting", "exist": "pope",
    "spatial": "vqa", "glyph": "exact_match", "rec": "rec", "reg": "reg",
    "inventory": "exact_match", "inventory_color": "exact_match", "gcap": "grounded_caption", "rec_neg": "absent",
}
DEFAULT_METRIC = "vqa"


def metric_for(task: str, requested: str | None = None) -> str:
    """The metric family of a record: its own ``metric`` field, else its task's default."""
    name = requested or TASK_METRICS.get(task, DEFAULT_METRIC)
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return name


def evaluate(metric: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricResult:
    """Score one task's items together; references[i] holds one or more acceptable answers."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    for i, refs in enumerate(references):
        if not refs:
            raise BadReference(i, "no reference answer")
    result = METRICS[metric_for("", metric)](list(predictions), [list(r) for r in references])
    if not result.details:
        result.details = [{} for _ in predictions]
    return result
