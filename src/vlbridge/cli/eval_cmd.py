"""`vlbridge eval`: per-task metrics of a saved model on LLaVA-style records (see vlbridge.eval.task_metrics)."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from ..config import RunConfig
from ..data.records import SkipReport
from ..errors import UserError, did_you_mean
from .args import add_config_args, apply_overrides
from .parser import examples, positive_int

DATA_ALIASES = {"data.image_folder": ["--image-folder"], "data.on_bad_record": ["--on-bad-record"]}


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model: per-task metrics, predictions JSONL, reports",
                       description="Generate an answer for every record (batched, KV cache, greedy) and score it "
                                   "against the record's last assistant turn with its task's metric: CIDEr-D/"
                                   "BLEU-4/ROUGE-L (caption), POPE yes/no (exist), counting (count), Acc@0.5 and "
                                   "mean IoU (rec), exact match + CIDEr-D (reg), exact match (glyph), VQA "
                                   "accuracy (others); a record's \"metric\" field overrides. The 'overall' row "
                                   "is exact match over every record. Exits 2 when nothing could be scored.",
                       epilog=examples("vlbridge eval --model runs/demo/final --data data/shapes/test.json",
                                       "vlbridge eval --model runs/demo/final --data data/shapes/test.json "
                                       "--tasks color,count --limit 50 --json",
                                       "vlbridge eval --data data/shapes/test.json --tasks list"))
    p.add_argument("--model", help="saved model dir (e.g. RUN/final); required unless --tasks list")
    p.add_argument("--data", required=True, help="LLaVA-style JSON with a 'task' field per record (e.g. test.json)")
    p.add_argument("--out", "--output-dir", help="report dir (default: MODEL/eval-<data name>)")
    p.add_argument("--tasks", help="comma-separated tasks to evaluate (default: all); 'list' prints the data's "
                                   "tasks with their record counts")
    p.add_argument("--limit", type=positive_int, help="evaluate at most this many records per task")
    p.add_argument("--batch-size", type=positive_int, default=64, help="records per generation batch (default: 64)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40,
                   help="generation budget per answer (default: 40)")
    p.add_argument("--json", action="store_true",
                   help="print the metrics (and skipped-record counts) as JSON on stdout; messages go to stderr")
    dests = add_config_args(p, RunConfig, aliases=DATA_ALIASES,
                            include=("data.image_folder", "data.on_bad_record", "data.image_modes", "data.max_pixels"))
    p.set_defaults(run=run, _dests=dests)


def task_counts(records) -> Counter:
    return Counter(r.task or "all" for r in records)


def wanted_tasks(text: str | None, available: Counter, data: str) -> set[str] | None:
    """The tasks named by --tasks (None = all); an unknown one is a UserError listing the data's tasks."""
    if not text:
        return None
    wanted = {t.strip() for t in text.split(",") if t.strip()}
    names = sorted(available)
    for task in sorted(wanted):
        if task not in available:
            raise UserError(f"--tasks: {data} has no task {task!r}{did_you_mean(task, names)}; its tasks: "
                            f"{', '.join(names)}")
    return wanted


def select(records, wanted: set[str] | None, limit: int | None):
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
    from ..models.vlm import read_model_meta
    from ..train.data import load_split
    if args.model:
        read_model_meta(args.model)                 # a wrong --model is reported before the data is read
    data_cfg = apply_overrides(RunConfig(), args, args._dests).data
    data_cfg.path = args.data
    report = SkipReport()
    records = load_split(Path(args.data), data_cfg, report)
    available = task_counts(records)
    if args.tasks == "list":
        print("\n".join(f"{task}\t{n}" for task, n in sorted(available.items())))
        return 0
    if not args.model:
        args._parser.error("the following arguments are required: --model")
    records = select(records, wanted_tasks(args.tasks, available, args.data), args.limit)
    if not records:
        raise UserError(f"{args.data}: no records to evaluate ({report.summary(len(report.entries))})")
    return evaluate(args, records, data_cfg, report)


def evaluate(args: argparse.Namespace, records, data_cfg, report: SkipReport) -> int:
    from ..eval.runner import markdown_table, predict, summarize, write_reports
    from ..generate import GenerationConfig
    from ..models.vlm import VLBridgeModel
    from ..train.data import make_dataset
    model = VLBridgeModel.from_pretrained(args.model)
    dataset = make_dataset(records, model, data_cfg, report, for_generation=True)
    total = len(records) + len([e for e in report.entries if e.index >= 0])
    if not len(dataset):
        raise UserError(f"{args.data}: nothing to evaluate, every selected record was skipped "
                        f"({report.summary(total)})")
    preds = predict(model, dataset, args.batch_size, GenerationConfig(max_new_tokens=args.max_new_tokens))
    metrics = summarize(preds)
    out = Path(args.out) if args.out else Path(args.model) / f"eval-{Path(args.data).stem}"
    write_reports(out, preds, metrics, report, total)
    if args.json:
        print(json.dumps({"metrics": metrics, "skipped": report.counts(), "out": str(out)}, indent=2))
        print(report.summary(total), file=sys.stderr)
    else:
        print(markdown_table(metrics))
        print(report.summary(total))
        print(f"predictions and metrics written to {out}")
    return 0
