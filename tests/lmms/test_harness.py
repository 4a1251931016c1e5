"""lmms-eval's own evaluator (``python -m lmms_eval``, the installed harness) scoring a trained vlbridge
model on the local tasks of tests/lmms/tasks: every score equals what vlbridge computes on the same questions.

Runs in the side environment of ``make test-lmms`` (lmms-eval beside this project's torch); the main suite
does not collect this folder. A tiny model is trained here for a few hundred steps on ShapesWorld colour and
shape questions, so its scores are neither 0 nor 1, then the harness runs three tasks over the 30 shipped
questions (tests/lmms/data/shapes_qa.json):

- generation: the harness's answers and its VQA accuracy equal ``vlbridge eval``'s;
- multiple choice: its per-choice losses equal the model's training loss on each choice, and its ``acc`` and
  ``acc_norm`` equal ranking the choices by that loss;
- loglikelihood: its perplexity equals exp(mean loss of the reference answers) and its ``acc`` the share of
  answers that vlbridge's greedy generation starts with.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval lives in the side environment built by `make test-lmms`")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from support import tiny_model_config  # noqa: E402
from shapes_qa import QUESTIONS, world  # noqa: E402
from vlbridge.cli.main import main as vlbridge_main  # noqa: E402
from vlbridge.config import RunConfig, TrainConfig  # noqa: E402
from vlbridge.data.dataset import Batch  # noqa: E402
from vlbridge.data.records import Turn  # noqa: E402
from vlbridge.data.shapesworld import generate  # noqa: E402
from vlbridge.data.template import IGNORE_INDEX  # noqa: E402
from vlbridge.inference import Predictor, Query  # noqa: E402
from vlbridge.models.vlm import VLBridgeModel  # noqa: E402
from vlbridge.train.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
_spec = importlib.util.spec_from_file_location("vlbridge_shapes_task", TASKS_DIR / "vlbridge_shapes" / "utils.py")
task_utils = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(task_utils)
CHOICES, DATA_DIR, doc_to_target = task_utils.CHOICES, task_utils.DATA_DIR, task_utils.doc_to_target

GEN, MC, PPL = "vlbridge_shapes_gen", "vlbridge_shapes_mc", "vlbridge_shapes_ppl"
TRAIN_STEPS = 600


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model trained on ShapesWorld colour/shape questions (scenes other than the shipped ones)."""
    root = tmp_path_factory.mktemp("lmms_model")
    generate(world(n=500, seed=0), root / "data")
    model = tiny_model_config()
    model.vision.arch["image_size"] = 64                       # the images' own size: no detail lost
    model.llm.arch["tie_word_embeddings"] = False
    steps = TrainConfig(stage="instruct", train_vision=True, steps=TRAIN_STEPS, batch_size=8, lr=3e-3,
                        warmup_steps=20, eval_every=0, eval_batches=1, save_every=0, log_every=50)
    cfg = RunConfig(model=model, train=steps, out=str(root / "run"))
    cfg.data.path = str(root / "data")
    return train(cfg)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return json.loads(QUESTIONS.read_text())


@pytest.fixture(scope="module")
def harness(model_dir, tmp_path_factory) -> dict:
    """``python -m lmms_eval`` on the three local tasks: its results and per-document samples.

    lmms-eval reports a failed evaluation in its log and still exits 0, so success is read from the
    results file it writes only when every task was scored.
    """
    out = tmp_path_factory.mktemp("lmms_out")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(out / "hf_home"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "vlbridge",
           "--model_args", f"pretrained={model_dir},batch_size=8", "--tasks", f"{GEN},{MC},{PPL}",
           "--include_path", str(TASKS_DIR), "--output_path", str(out), "--log_samples"]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = (run.stdout + run.stderr)[-6000:]
    found = sorted(out.glob("*/*_results.json"))
    assert run.returncode == 0 and found and "Error during evaluation" not in log, f"lmms-eval failed:\n{log}"
    results = json.loads(found[-1].read_text())["results"]
    samples = {}
    for task in (GEN, MC, PPL):
        path, = out.glob(f"*/*_samples_{task}.jsonl")
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])
    return {"results": results, "samples": samples}


@pytest.fixture(scope="module")
def vlbridge_eval(model_dir, tmp_path_factory) -> dict[str, dict]:
    """``vlbridge eval`` on the same questions: its prediction record per question id."""
    out = tmp_path_factory.mktemp("vlbridge_eval")
    assert vlbridge_main(["eval", "--model", str(model_dir), "--data", str(QUESTIONS), "--out", str(out)]) == 0
    return {p["id"]: p for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(VLBridgeModel.from_pretrained(model_dir))


def question(record: dict) -> Query:
    image = Image.open(DATA_DIR / record["image"]).convert("RGB")
    return Query([Turn("user", record["conversations"][0]["value"])], [image])


@torch.no_grad()
def training_loss(predictor: Predictor, record: dict, answer: str) -> float:
    """Mean token negative log-likelihood of ``answer`` after the question, by the model's training loss."""
    prompt, pixels = predictor.encode(question(record))
    cont = predictor.continuation_ids(answer)
    ids = torch.cat([prompt, torch.tensor(cont, dtype=prompt.dtype)])
    out = predictor.model(Batch([ids], [torch.tensor([IGNORE_INDEX] * len(prompt) + cont)], pixels, [1]))
    return float(out.lm_loss_sum) / len(cont)


def score(harness: dict, task: str, metric: str) -> float:
    return harness["results"][task][f"{metric},none"]


def test_every_question_is_scored(harness, records):
    for task in (GEN, MC, PPL):
        assert [s["doc_id"] for s in harness["samples"][task]] == list(range(len(records))), task


def test_generation_equals_vlbridge_eval(harness, vlbridge_eval, records):
    answers = [s["filtered_resps"] for s in harness["samples"][GEN]]
    # filtered_resps is the answer text (lmms-eval keeps the first response of each document)
    answers = [a[0] if isinstance(a, list) else a for a in answers]
    assert answers == [vlbridge_eval[r["id"]]["prediction"] for r in records]
    ours = sum(vlbridge_eval[r["id"]]["score"] for r in records) / len(records)
    print(f"\ngeneration accuracy: lmms-eval {score(harness, GEN, 'accuracy'):.4f}, vlbridge eval {ours:.4f}")
    assert score(harness, GEN, "accuracy") == pytest.approx(ours, abs=1e-9)
    assert 0 < ours < 1


def test_multiple_choice_equals_likelihood_ranking(harness, predictor, records):
    acc, acc_norm = [], []
    for record, sample in zip(records, harness["samples"][MC]):
        choices = CHOICES[record["task"]]
        losses = [training_loss(predictor, record, c) for c in choices]
        harness_losses = [float(loss) for loss, _ in sample["filtered_resps"]]
        assert harness_losses == pytest.approx(losses, abs=1e-4), record["id"]
        gold = choices.index(doc_to_target(record))
        acc.append(float(min(range(len(choices)), key=lambda i: losses[i]) == gold))
        acc_norm.append(float(min(range(len(choices)), key=lambda i: losses[i] / len(choices[i])) == gold))
        assert (sample["acc"], sample["acc_norm"]) == (acc[-1], acc_norm[-1]), record["id"]
    ours, ours_norm = sum(acc) / len(acc), sum(acc_norm) / len(acc_norm)
    print(f"\nmultiple choice acc: lmms-eval {score(harness, MC, 'acc'):.4f}, likelihood ranking {ours:.4f}; "
          f"acc_norm: lmms-eval {score(harness, MC, 'acc_norm'):.4f}, likelihood ranking {ours_norm:.4f}")
    assert score(harness, MC, "acc") == pytest.approx(ours, abs=1e-9)
    assert score(harness, MC, "acc_norm") == pytest.approx(ours_norm, abs=1e-9)
    assert 0 < ours < 1


def test_loglikelihood_perplexity_and_greedy_share(harness, predictor, vlbridge_eval, records):
    losses = [training_loss(predictor, r, doc_to_target(r)) for r in records]
    harness_losses = [float(s["filtered_resps"][0]) for s in harness["samples"][PPL]]
    assert harness_losses == pytest.approx(losses, abs=1e-4)
    perplexity = math.exp(sum(losses) / len(losses))
    # greedy: vlbridge's greedy answer starts with the reference's tokens
    tokens = predictor.continuation_ids
    greedy = [tokens(vlbridge_eval[r["id"]]["prediction"])[:len(tokens(doc_to_target(r)))] == tokens(doc_to_target(r))
              for r in records]
    ours = sum(greedy) / len(greedy)
    print(f"\nperplexity: lmms-eval {score(harness, PPL, 'perplexity'):.4f}, vlbridge {perplexity:.4f}; "
          f"greedy share: lmms-eval {score(harness, PPL, 'acc'):.4f}, vlbridge generation {ours:.4f}")
    assert score(harness, PPL, "perplexity") == pytest.approx(perplexity, rel=1e-5)
    assert perplexity > 1
    assert score(harness, PPL, "acc") == pytest.approx(ours, abs=1e-9)
    assert 0 < ours < 1
