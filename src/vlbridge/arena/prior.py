"""The chance/prior level of every task: what a model that never looks at the image scores.

A blind model can still learn the training answers' statistics, so the fair floor for a column is not
uniform chance but the best answer-from-the-question-alone: for every test question, the answer given most
often to that exact question in the training records (ties broken alphabetically); a question never asked
in training gets its task's most frequent answer. These answers are scored by the same metrics as the
connectors' (``eval.runner.summarize``), so the level sits in the same units as the column it is printed
under: 50 on balanced yes/no tasks, the majority count on counting, about one in six on colour questions.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from ..data.template import IMAGE_TOKEN
from ..eval.runner import Prediction, summarize
from ..eval.task_metrics import metric_for


def question_key(text: str) -> str:
    """A question as the model reads it, without the image placeholder and surrounding whitespace."""
    return text.replace(IMAGE_TOKEN, "").strip()


def training_answers(train_file: Path) -> tuple[dict[str, Counter], dict[str, Counter]]:
    """(question -> answer counts, task -> answer counts) over every (user, assistant) turn pair of the
    training records. A multi-turn record names each turn's task in ``tasks``, else its ``task`` applies."""
    by_question: dict[str, Counter] = defaultdict(Counter)
    by_task: dict[str, Counter] = defaultdict(Counter)
    for rec in json.loads(train_file.read_text()):
        turns = rec.get("conversations", [])
        tasks = rec.get("tasks") or [rec.get("task")] * (len(turns) // 2)
        for k in range(0, len(turns) - 1, 2):
            question, answer = question_key(turns[k]["value"]), turns[k + 1]["value"].strip()
            by_question[question][answer] += 1
            task = tasks[k // 2] if k // 2 < len(tasks) else None
            if task:
                by_task[task][answer] += 1
    return by_question, by_task


def most_common(counts: Counter) -> str:
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def prior_predictions(train_file: Path, test_records: list[dict]) -> list[Prediction]:
    """The blind model's answer to each test record (unscored)."""
    by_question, by_task = training_answers(train_file)
    preds = []
    for rec in test_records:
        turns, task = rec["conversations"], rec.get("task") or "all"
        prompt = next(t["value"] for t in reversed(turns[:-1]) if t["from"] in ("human", "user"))
        seen = by_question.get(question_key(prompt)) or by_task.get(task)
        answer = most_common(seen) if seen else ""
        preds.append(Prediction(str(rec["id"]), task, prompt, answer, turns[-1]["value"],
                                metric=metric_for(task, rec.get("metric")), references=rec.get("references")))
    return preds


def prior_metrics(train_file: Path, test_file: Path, ids: set[str] | None = None,
                  out_dir: Path | None = None) -> dict[str, dict]:
    """Per-task metrics of the blind model on the test records (only those in ``ids`` when given, so the level
    is measured on the same questions as the connectors); with ``out_dir`` its scored predictions are written
    there as an eval would write them (``predictions.jsonl``, ``metrics.json``)."""
    records = [r for r in json.loads(test_file.read_text()) if ids is None or str(r["id"]) in ids]
    preds = prior_predictions(train_file, records)
    metrics = summarize(preds)
    if out_dir is not None:
        from ..data.records import SkipReport
        from ..eval.runner import write_reports
        write_reports(out_dir, preds, metrics, SkipReport(), len(records))
    return metrics
