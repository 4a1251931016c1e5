"""`vlbridge eval`: per-task metrics of a saved model on LLaVA-style records (see vlbridge.eval.task_metrics)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DataConfig
from ..data.records import SkipReport
from ..generate import GenerationConfig
from ..models.vlm import VLBridgeModel
from ..train.data import load_split, make_dataset


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model: per-task metrics, predictions JSONL, reports",
                       description="Generate an answer for every record (batched, KV cache, greedy) and score it "
                                   "against the record's last assistant turn with its task's metric: CIDEr-D/"
                                   "BLEU-4/ROUGE-L (caption), POPE yes/no (exist), counting (count), Acc@0.5 and "
                                   "mean IoU (rec), exact match + CIDEr-D (reg), exact match (glyph), VQA "
                                   "accuracy (others); a record's \"metric\" field overrides.")
    p.add_argument("--model", required=True, help="saved model dir (e.g. RUN/final)")
    p.add_argument("--data", required=True, help="LLaVA-style JSON with a 'task' field per record (e.g. test.json)")
    p.add_argument("--image-folder", help="folder image paths resolve against (default: the JSON's folder)")
    p.add_argument("--out", help="report dir (default: MODEL/eval-<data name>)")
    p.add_argument("--tasks", help="comma-separated tasks to evaluate (default: all)")
    p.add_argument("--limit", type=int, help="evaluate at most this many records per task")
    p.add_argument("--batch-size", type=int, default=64, help="records per generation batch (default: 64)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="generation budget per answer (default: 40)")
    p.add_argument("--on-bad-record", choices=("skip", "error"), default="skip",
                   help="skip bad records (counted and reported) or stop at the first (default: skip)")
    p.set_defaults(run=run)


def select(records, tasks: str | None, limit: int | None):
    wanted = set(tasks.split(",")) if tasks else None
    kept, per_task = [], {}
    for r in records:
        task = r.task or "all"
        if wanted and task not in wanted:
            continue
        if limit is not None and per_task.get(task, 0) >= limit:
            continue
        per_task[task] = per_task.get(task, 0) + 1
        kept.append(r)
    return kept


def run(args: argparse.Namespace) -> int:
    from ..eval.runner import markdown_table, predict, summarize, write_reports
    model = VLBridgeModel.from_pretrained(args.model)
    data_cfg = DataConfig(path=args.data, image_folder=args.image_folder, on_bad_record=args.on_bad_record)
    report = SkipReport()
    records = select(load_split(Path(args.data), data_cfg, report), args.tasks, args.limit)
    dataset = make_dataset(records, model, data_cfg, report, for_generation=True)
    preds = predict(model, dataset, args.batch_size, GenerationConfig(max_new_tokens=args.max_new_tokens))
    metrics = summarize(preds)
    out = Path(args.out) if args.out else Path(args.model) / f"eval-{Path(args.data).stem}"
    total = len(records) + len([e for e in report.entries if e.index >= 0])
    write_reports(out, preds, metrics, report, total)
    print(markdown_table(metrics))
    print(report.summary(total))
    print(f"predictions and metrics written to {out}")
    return 0
