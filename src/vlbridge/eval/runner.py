"""Evaluate a model on LLaVA-style records: batched KV-cache generation, per-task scores, reports.

Each record's last assistant turn is the reference; everything before it is the prompt. Outputs a JSONL
of predictions (id, task, prompt, prediction, reference, score) and a metrics report (JSON + Markdown).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.dataset import InstructionDataset, collate
from ..data.records import Record, SkipReport
from ..generate import GenerationConfig, generate
from .exact_match import exact_match


@dataclass
class Prediction:
    id: str
    task: str
    prompt: str
    prediction: str
    reference: str
    score: float


@torch.no_grad()
def predict(model, dataset: InstructionDataset, batch_size: int = 32, gen: GenerationConfig | None = None,
            progress: bool = True) -> list[Prediction]:
    gen = gen or GenerationConfig(max_new_tokens=40)
    model.eval()
    preds: list[Prediction] = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="eval", disable=not progress, mininterval=1.0):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        if not len(batch):
            continue
        outs = generate(model, batch.input_ids, batch.pixel_values, gen)
        for rec, ids in zip(batch.records, outs):
            preds.append(score_record(rec, model.decode(ids)))
    return preds


def score_record(rec: Record, prediction: str) -> Prediction:
    reference = rec.turns[-1].text
    prompt = next(t.text for t in reversed(rec.turns[:-1]) if t.role == "user")
    return Prediction(rec.id, rec.task or "all", prompt, prediction, reference, exact_match(prediction, reference))


def summarize(preds: list[Prediction]) -> dict[str, dict]:
    by_task: dict[str, list[float]] = defaultdict(list)
    for p in preds:
        by_task[p.task].append(p.score)
    metrics = {task: {"exact_match": sum(s) / len(s), "n": len(s)} for task, s in sorted(by_task.items())}
    if preds:
        metrics["overall"] = {"exact_match": sum(p.score for p in preds) / len(preds), "n": len(preds)}
    return metrics


def markdown_table(metrics: dict[str, dict]) -> str:
    lines = ["| task | exact match | n |", "|---|---:|---:|"]
    for task, m in metrics.items():
        lines.append(f"| {task} | {100 * m['exact_match']:.1f}% | {m['n']} |")
    return "\n".join(lines)


def write_reports(out_dir: Path, preds: list[Prediction], metrics: dict, report: SkipReport, total: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "predictions.jsonl").open("w") as f:
        for p in preds:
            f.write(json.dumps(p.__dict__) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "skipped": report.counts()}, indent=2) + "\n")
    (out_dir / "metrics.md").write_text(markdown_table(metrics) + "\n\n" + report.summary(total) + "\n")
