"""Eval metrics against hand-computed values, and the captioning scores against pycocoevalcap itself."""
from __future__ import annotations

import math
import shutil
import sys

import pytest

from vlbridge.eval.caption_tokenizer import ptb_like_tokenize, tokenize_captions
from vlbridge.eval.captioning import caption_scores
from vlbridge.eval.counting import count_correct, parse_count
from vlbridge.eval.rec import rec_metrics, score_box, score_box_text
from vlbridge.eval.runner import Prediction, summarize
from vlbridge.eval.task_metrics import TASK_METRICS, evaluate, metric_for
from vlbridge.eval.vqa import normalize_answer, vqa_accuracy
from vlbridge.eval.yes_no import parse_yes_no, yes_no_metrics

HAS_JAVA = shutil.which("java") is not None


# ----------------------------------------------------------------------------------------- VQA accuracy

@pytest.mark.parametrize("text, expected", [
    ("Two.", "2"), ("The red circle!", "red circle"), ("1,000 dogs", "1000 dogs"), ("dont know", "don't know"),
    ("couldnt've", "couldn't've"), ("3.5 m.", "3.5 m"), ("Yes, there is", "yes there is"), ("left-right", "left right"),
    ("were", "were"), ("its tail", "its tail"), ("  an  Apple\tpie\n", "apple pie"), ("none", "0"),
])
def test_vqa_normalisation(text, expected):
    assert normalize_answer(text) == expected


def test_vqa_accuracy_ten_answers():
    refs = ["2"] * 3 + ["3"] * 7
    # leave out one of the three "2": 2 matches -> 2/3 (3 subsets); leave out a "3": 3 matches -> 1 (7 subsets)
    assert vqa_accuracy("two", refs) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("3", refs) == 1.0
    assert vqa_accuracy("4", refs) == 0.0
    # one human said "4": 0 matches when they are left out, 1 match (1/3) in the other 9 subsets
    assert vqa_accuracy("4", ["4"] + ["5"] * 9) == pytest.approx(0.3)


def test_vqa_accuracy_single_reference_is_normalised_exact_match():
    assert vqa_accuracy("Two.", ["2"]) == 1.0
    assert vqa_accuracy("the Circle", ["circle"]) == 1.0
    assert vqa_accuracy("circles", ["circle"]) == 0.0


# --------------------------------------------------------------------------------------------- counting

@pytest.mark.parametrize("text, expected", [
    ("There are three objects.", 3), ("2", 2), ("none", 0), ("No", 0), ("many", None), ("1,000", 1000),
    ("Twelve circles", 12), ("", None),
])
def test_parse_count(text, expected):
    assert parse_count(text) == expected


def test_count_correct():
    assert count_correct("three", "3") == (1.0, True)
    assert count_correct("4 objects", "3") == (0.0, True)
    assert count_correct("some", "3") == (0.0, False)
    with pytest.raises(ValueError, match="no count"):
        count_correct("3", "several")


# ----------------------------------------------------------------------------------------- POPE yes/no

@pytest.mark.parametrize("text, expected", [
    ("Yes, there is.", "yes"), ("yes", "yes"), ("No.", "no"), ("There is no red circle.", "no"),
    ("It isn't.", "no"), ("I think yes", "yes"), ("There is a red circle.", None), ("", None),
    ("Nope", "no"), ("The circle is not red. Yes, a square.", "no"),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_yes_no_metrics_hand_computed():
    pred = ["yes", "yes", "no", None, "yes"]
    ref = ["yes", "no", "no", "yes", "yes"]
    m = yes_no_metrics(pred, ref)
    # TP = items 0, 4; FP = item 1; FN = item 3 (unparsable counts as a negative prediction); correct = 0, 2, 4
    assert m == pytest.approx({"accuracy": 3 / 5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
                               "yes_ratio": 3 / 5, "unparsable": 1})
    assert yes_no_metrics(["no", "no"], ["no", "no"])["precision"] == 0.0          # no positive predictions


# ---------------------------------------------------------------------------------------------------- REC

def test_rec_hand_computed():
    exact = score_box_text("[0.1,0.1,0.5,0.5]", "[0.100,0.100,0.500,0.500]")
    assert exact.iou == pytest.approx(1.0) and exact.hit
    # overlap 0.2 x 0.2 = 0.04, union 0.16 + 0.16 - 0.04 = 0.28
    far = score_box_text("The box is (0, 0, 0.4, 0.4).", "[0.2,0.2,0.6,0.6]")
    assert far.iou == pytest.approx(0.04 / 0.28) and not far.hit and far.parsed
    junk = score_box_text("no idea", "[0.2,0.2,0.6,0.6]")
    assert not junk.parsed and junk.iou == 0.0 and "no box" in junk.error
    half = score_box([0, 0, 1, 0.5], [0, 0, 1, 1])                                   # IoU exactly 0.5 is a hit
    assert half.iou == pytest.approx(0.5) and half.hit
    assert rec_metrics([exact, far, junk]) == pytest.approx(
        {"acc@0.5": 1 / 3, "mean_iou": (1 + 0.04 / 0.28 + 0) / 3, "unparsable": 1})
    pixels = score_box_text("[10, 10, 40, 40]", "[0.1,0.1,0.4,0.4]")              # no image size: unparsable
    assert not pixels.parsed
    with pytest.raises(ValueError, match="reference box"):
        score_box_text("[0,0,1,1]", "the left one")


# --------------------------------------------------------------------------------------------- captions

PTB_CASES = [
    ("A dog's (big) ball: red/blue.", "a dog 's -lrb- big -rrb- ball red/blue"),
    ("It costs $5.50, not 5%!", "it costs $ 5.50 not 5 %"),
    ("I'm sure they've done it; we'd go.", "i 'm sure they 've done it we 'd go"),
    ("can't won't", "ca n't wo n't"), ("Mr. Smith went home. Then he left.", "mr. smith went home then he left"),
    ("U.S. army", "u.s. army"), ('She said "hi there" loudly', "she said hi there loudly"),
    ("at 3:30, 1,000 people", "at 3:30 1,000 people"), ("wait -- what?!", "wait what ?!"), ("...", ""),
    ("A small red circle, a large blue square and a small green diamond.",
     "a small red circle a large blue square and a small green diamond"),
]


@pytest.mark.parametrize("text, expected", PTB_CASES)
def test_fallback_tokenizer(text, expected):
    assert ptb_like_tokenize(text) == expected


@pytest.mark.skipif(not HAS_JAVA, reason="no java on the PATH: the Java PTB tokenizer cannot run")
def test_fallback_tokenizer_agrees_with_java_ptb():
    texts = {str(i): [t] for i, (t, _) in enumerate(PTB_CASES)}
    java, backend = tokenize_captions(texts, "java")
    assert backend == "ptb-java"
    assert java == {k: [ptb_like_tokenize(v[0])] for k, v in texts.items()}


@pytest.mark.skipif(not HAS_JAVA, reason="no java on the PATH: the Java PTB tokenizer cannot run")
def test_java_path_equals_pycocoevalcap_ptbtokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    texts = {"a": [t for t, _ in PTB_CASES[:6]], "b": [t for t, _ in PTB_CASES[6:]] + ["", "two\nlines"]}
    ours, _ = tokenize_captions(texts, "java")
    theirs = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in texts.items()})
    assert ours == theirs


def test_no_java_uses_the_fallback(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    tokens, backend = tokenize_captions({"a": ["Two dogs."]})
    assert (tokens, backend) == ({"a": ["two dogs"]}, "ptb-python")
    with pytest.raises(RuntimeError, match="no java"):
        tokenize_captions({"a": ["x"]}, "java")
    scores = caption_scores(["two dogs"], [["Two dogs."]])
    assert scores.tokenizer == "ptb-python"
    # only the pure-Python scorers are ever imported (METEOR/SPICE need Java and downloads)
    assert not any(m.startswith(("pycocoevalcap.meteor", "pycocoevalcap.spice")) for m in sys.modules)


def test_cider_d_hand_computed():
    # 2 images -> log(N) = log 2. df: a=2, b=c=1, "a b"=1, "a c"=1, so idf(a) = 0 and idf(b) = idf("a b") = log 2.
    # item 0: identical unigram and bigram vectors -> cosine 1 for n = 1, 2; no 3/4-grams -> 0: 10 * 2/4 = 5.
    # item 1: "a" has weight 0 -> zero vector -> 0.
    s = caption_scores(["a b", "a"], [["a b"], ["a c"]], tokenizer="python")
    assert s.per_item_cider == pytest.approx([5.0, 0.0])
    assert s.cider == pytest.approx(2.5)
    # three-word captions with no shared words: cosine 1 for n = 1..3, no 4-grams: 10 * 3/4
    s = caption_scores(["red circle here", "blue square there"], [["red circle here"], ["blue square there"]],
                       tokenizer="python")
    assert s.per_item_cider == pytest.approx([7.5, 7.5])


def test_bleu4_and_rouge_l_hand_computed():
    # all n-gram precisions 1, brevity penalty exp(1 - 6/4)
    s = caption_scores(["a b c d"], [["a b c d e f"]], tokenizer="python")
    assert s.bleu4 == pytest.approx(math.exp(-0.5), rel=1e-6)
    # LCS("a b c d", "a c d e f") = 3: P = 3/4, R = 3/5, F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    s = caption_scores(["a b c d"], [["a c d e f"]], tokenizer="python")
    p, r = 3 / 4, 3 / 5
    assert s.rouge_l == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    assert caption_scores(["a b c d e"], [["A b c d e."]], tokenizer="python").bleu4 == pytest.approx(1.0, abs=1e-6)


CAPTIONS = [
    ("a small red circle and a large blue square.", ["A small red circle and a large blue square."]),
    ("a large green triangle.", ["A small green triangle.", "A green triangle."]),
    ("two squares", ["A small purple square and a large orange square."]),
    ("a blue diamond", ["A large blue diamond."]),
    ("", ["A small red circle."]),
]


def test_caption_scores_equal_pycocoevalcap_on_the_same_tokens():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    preds, refs = [p for p, _ in CAPTIONS], [r for _, r in CAPTIONS]
    ours = caption_scores(preds, refs)
    texts = {f"r{i}": r for i, r in enumerate(refs)} | {f"p{i}": [p] for i, p in enumerate(preds)}
    tokens, backend = tokenize_captions(texts)
    assert backend == ours.tokenizer
    gts = {str(i): tokens[f"r{i}"] for i in range(len(refs))}
    res = {str(i): tokens[f"p{i}"] for i in range(len(preds))}
    cider, cider_items = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    assert ours.cider == pytest.approx(float(cider)) and ours.per_item_cider == pytest.approx(list(cider_items))
    assert ours.bleu4 == pytest.approx(bleu[3]) and ours.rouge_l == pytest.approx(float(rouge))
    assert 0 < ours.cider < 10 and ours.per_item_cider[4] == 0.0


def test_cider_idf_is_over_the_whole_split():
    preds = [p for p, _ in CAPTIONS]
    refs = [r for _, r in CAPTIONS]
    whole = caption_scores(preds, refs, tokenizer="python")
    first_batch = caption_scores(preds[:2], refs[:2], tokenizer="python")
    assert first_batch.per_item_cider != pytest.approx(whole.per_item_cider[:2])
    # the eval summary scores a task's items together, whatever batches generated them
    items = [Prediction(str(i), "caption", "Describe.", p, r[0], metric="captioning", references=r)
             for i, (p, r) in enumerate(CAPTIONS)]
    metrics = summarize(items)
    assert metrics["caption"]["cider"] == pytest.approx(caption_scores(preds, refs).cider)
    assert [p.score for p in items] == pytest.approx(caption_scores(preds, refs).per_item_cider, abs=1e-6)


# ------------------------------------------------------------------------------------ task -> metric

def test_task_metric_mapping():
    assert {t: metric_for(t) for t in ("caption", "exist", "count", "rec", "reg", "color", "glyph")} == {
        "caption": "captioning", "exist": "pope", "count": "counting", "rec": "rec", "reg": "reg",
        "color": "vqa", "glyph": "exact_match"}
    assert metric_for("some_new_task") == "vqa"
    assert metric_for("caption", "exact_match") == "exact_match"               # a record's field wins
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        metric_for("caption", "bleu")
    from vlbridge.data.shapesworld import TASKS
    assert set(TASKS) <= set(TASK_METRICS)


def test_summarize_every_shapesworld_task_hand_computed():
    rows = [  # task, prediction, reference
        ("color", "Red.", "red"), ("color", "blue", "red"),
        ("count", "three", "3"), ("count", "lots", "2"),
        ("exist", "Yes, there is.", "yes"), ("exist", "yes", "no"), ("exist", "no", "no"), ("exist", "maybe", "yes"),
        ("rec", "[0.1,0.1,0.5,0.5]", "[0.100,0.100,0.500,0.500]"), ("rec", "unsure", "[0.2,0.2,0.6,0.6]"),
        ("reg", "a small red circle", "a small red circle"), ("reg", "a large red circle", "a small red circle"),
        ("glyph", "a", "A"), ("glyph", "", "A"),
    ]
    preds = [Prediction(str(i), t, "q", p, r, metric=TASK_METRICS[t]) for i, (t, p, r) in enumerate(rows)]
    m = summarize(preds)
    assert m["color"]["vqa_acc"] == 0.5 and m["color"]["main"] == "vqa_acc"
    assert m["count"]["count_acc"] == 0.5 and m["count"]["unparsable"] == 1
    assert m["exist"]["accuracy"] == 0.5 and m["exist"]["yes_ratio"] == 0.5 and m["exist"]["unparsable"] == 1
    assert m["exist"]["precision"] == 0.5 and m["exist"]["recall"] == 0.5
    assert m["rec"]["acc@0.5"] == 0.5 and m["rec"]["unparsable"] == 1 and m["rec"]["mean_iou"] == pytest.approx(0.5)
    assert m["reg"]["exact_match"] == 0.5 and m["reg"]["main"] == "exact_match" and m["reg"]["cider"] >= 0
    assert m["glyph"]["exact_match"] == 0.5                   # "" is not "A" (VQA normalisation would drop it)
    assert m["overall"]["n"] == len(rows)
    assert [p.score for p in preds[:4]] == [1.0, 0.0, 1.0, 0.0]
    assert preds[9].details["parsed"] is False


def test_multiple_references_and_bad_reference():
    preds = [Prediction("q1", "vqa", "q", "2", "2", metric="vqa", references=["2"] * 3 + ["3"] * 7)]
    assert summarize(preds)["vqa"]["vqa_acc"] == pytest.approx(0.9)
    bad = [Prediction("r7", "rec", "q", "[0,0,1,1]", "somewhere", metric="rec")]
    with pytest.raises(ValueError, match="record 'r7'.*reference box"):
        summarize(bad)
    assert evaluate("exact_match", ["x"], [["X."]]).summary == {"exact_match": 1.0}
