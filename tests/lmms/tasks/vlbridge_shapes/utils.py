"""ShapesWorld colour/shape questions as lmms-eval tasks (the records of tests/lmms/data/shapes_qa.json, in
vlbridge's LLaVA-style format, loaded by lmms-eval with the ``json`` dataset builder)."""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor
from vlbridge.data.shapesworld import COLORS, SHAPES

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
CHOICES = {"color": list(COLORS), "shape": list(SHAPES)}
_normalize = EvalAIAnswerProcessor()


def doc_to_visual(doc):
    return [Image.open(DATA_DIR / doc["image"]).convert("RGB")]


def doc_to_text(doc):
    """The question without its image placeholder (the model puts the image where its template wants it)."""
    return doc["conversations"][0]["value"].replace("<image>", "").strip()


def doc_to_target(doc):
    return doc["conversations"][1]["value"]


def doc_to_choice(doc):
    return CHOICES[doc["task"]]


def process_results(doc, results):
    """VQA accuracy with one reference: exact match after lmms-eval's VQA answer normalisation."""
    prediction, answer = _normalize(results[0]), _normalize(doc_to_target(doc))
    return {"accuracy": float(prediction == answer)}


def loglikelihood_results(doc, results):
    """A loglikelihood document's one ``(loss, is_greedy)`` result as the metrics ``perplexity`` (its loss,
    aggregated by ``perplexity`` below) and ``acc`` (greedy). lmms-eval's built-in scoring of loglikelihood
    tasks unpacks the list of results instead of its one element and fails, so such a task needs its own."""
    (loss, is_greedy), = results
    return {"perplexity": loss, "acc": float(is_greedy)}


def perplexity(losses):
    """exp(mean loss) over documents, for models whose loglikelihood results are losses (mean token negative
    log-likelihoods, the convention of lmms-eval's own models); lmms-eval's built-in ``perplexity``
    aggregation, exp(-mean), expects log-likelihoods instead."""
    return math.exp(sum(losses) / len(losses))
