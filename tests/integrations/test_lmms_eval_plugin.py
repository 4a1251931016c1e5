"""The lmms-eval plugin, called directly with request objects shaped as lmms-eval builds them.

Every test runs twice: with ``EmulatedInstance`` (a faithful copy of the fields and ``args`` of
``lmms_eval.api.instance.Instance``; always runs) and with lmms-eval's own ``Instance`` (skipped with the
reason when lmms-eval is not importable: it lives in the side environment of ``make test-lmms``, which
also runs these tests, and the harness end to end in tests/lmms/).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pytest
import torch
from PIL import Image

from vlbridge.data.dataset import Batch
from vlbridge.data.records import Turn
from vlbridge.data.template import IGNORE_INDEX
from vlbridge.generate import GenerationConfig
from vlbridge.inference import Predictor, Query
from vlbridge.integrations.lmms_eval import VLBridgeLMMS, prompt_with_images, unwrap

TASK, SPLIT = "shapes", "test"


@dataclass
class EmulatedInstance:
    """Same constructor fields and ``args`` property as lmms_eval.api.instance.Instance."""
    request_type: str
    arguments: tuple
    idx: int
    metadata: dict = field(default_factory=dict)
    resps: list = field(default_factory=list)
    filtered_resps: dict = field(default_factory=dict)
    task_name: str | None = None
    doc_id: int | None = None
    repeats: int | None = None

    def __post_init__(self) -> None:
        self.task_name, self.doc_id, self.repeats = self.metadata["task"], self.metadata["doc_id"], self.metadata["repeats"]

    @property
    def args(self) -> tuple:
        return self.arguments if isinstance(self.arguments, tuple) else (self.arguments,)


@pytest.fixture(params=["emulated", "lmms_eval"])
def Instance(request):
    if request.param == "emulated":
        return EmulatedInstance
    try:
        from lmms_eval.api.instance import Instance as Real
    except ImportError as e:
        pytest.skip(f"lmms-eval is not importable ({e}); install the optional extra [lmms] to test against it")
    return Real


def request(Instance, kind: str, arguments: tuple, doc_id: int = 0):
    return Instance(request_type=kind, arguments=arguments, idx=0,
                    metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})


def doc_to_visual(doc):
    return [doc["image"]]


@pytest.fixture(scope="module")
def plugin(untied_tiny_model, shapes_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("lmms") / "model"
    untied_tiny_model.save_pretrained(path)
    # what `python -m lmms_eval --model vlbridge --model_args ...` does (its CLI always adds --batch_size 1)
    lm = VLBridgeLMMS.create_from_arg_string(f"pretrained={path},batch_size=2,max_new_tokens=5",
                                             {"batch_size": 1, "max_batch_size": None, "device": None})
    assert lm.batch_size == 2
    records = json.loads((shapes_dir / "test.json").read_text())[:3]
    lm.task_dict = {TASK: {SPLIT: [
        {"image": Image.open(shapes_dir / r["image"]).convert("RGB"),
         "question": r["conversations"][0]["value"].replace("<image>\n", ""),
         "answer": r["conversations"][1]["value"]} for r in records]}}
    return lm


def docs(plugin):
    return plugin.task_dict[TASK][SPLIT]


def answers(plugin, questions_images, max_new_tokens):
    queries = [Query([Turn("user", prompt_with_images(q, len(ims)))], ims) for q, ims in questions_images]
    return Predictor(plugin.model, GenerationConfig(max_new_tokens=max_new_tokens)).answer(queries)


def test_generate_until_is_vlbridge_generation(plugin, Instance):
    d = docs(plugin)
    kwargs = [{"max_new_tokens": 5, "until": []}, {"max_new_tokens": 2}, {"max_new_tokens": 5, "until": []}]
    reqs = [request(Instance, "generate_until", (d[i]["question"], kwargs[i], doc_to_visual, i, TASK, SPLIT), i)
            for i in range(3)]
    out = plugin.generate_until(reqs)
    # requests 0 and 2 share gen_kwargs and form one batch of 2; request 1 is a group of its own
    batch = answers(plugin, [(d[i]["question"], [d[i]["image"]]) for i in (0, 2)], 5)
    assert out == [batch[0], answers(plugin, [(d[1]["question"], [d[1]["image"]])], 2)[0], batch[1]]


def test_until_cuts_the_answer(plugin, Instance):
    d = docs(plugin)
    full = plugin.generate_until([request(Instance, "generate_until",
                                          (d[0]["question"], {}, doc_to_visual, 0, TASK, SPLIT))])[0]
    assert len(full) >= 3, "the tiny model's answer is too short to test stop strings"
    stop = full[1:3]
    cut = plugin.generate_until([request(Instance, "generate_until",
                                         (d[0]["question"], {"until": stop}, doc_to_visual, 0, TASK, SPLIT))])[0]
    assert cut == full[:full.index(stop)] and stop not in cut


def _model_loss(plugin, question, image, continuation_ids):
    """Mean token negative log-likelihood of a continuation from the model's own training loss."""
    prompt, pixels = plugin.predictor.encode(Query([Turn("user", f"<image>\n{question}")], [image]))
    ids = torch.cat([prompt, torch.tensor(continuation_ids)])
    labels = torch.tensor([IGNORE_INDEX] * len(prompt) + continuation_ids)
    with torch.no_grad():
        out = plugin.model(Batch([ids], [labels], pixels, [1]))
    return float(out.lm_loss_sum) / len(continuation_ids)


def loglikelihood(plugin, reqs):
    return [unwrap(r) for r in plugin.loglikelihood(reqs)]


def test_loglikelihood_is_the_mean_token_loss(plugin, Instance):
    d = docs(plugin)
    conts = [" " + d[0]["answer"], "red circle", d[2]["answer"]]
    reqs = [request(Instance, "loglikelihood", (d[i]["question"], conts[i], doc_to_visual, i, TASK, SPLIT), i)
            for i in range(3)]
    out = loglikelihood(plugin, reqs)                               # batches of 2 and 1
    for i, (loss, greedy) in enumerate(out):
        ref = _model_loss(plugin, d[i]["question"], d[i]["image"], plugin.continuation_ids(conts[i]))
        assert loss == pytest.approx(ref, abs=1e-5) and loss > 0 and isinstance(greedy, bool)
    # doc_to_target as a callable is the same as the string it returns
    by_fn = loglikelihood(plugin, [request(Instance, "loglikelihood",
                                           (d[0]["question"], lambda doc: doc["answer"], doc_to_visual, 0, TASK, SPLIT))])
    assert by_fn[0][0] == pytest.approx(out[0][0], abs=1e-5)
    # the unconditional (context, continuation) form of mutual-information scoring: no image
    (loss, _), = loglikelihood(plugin, [request(Instance, "loglikelihood", ("", "red"))])
    assert loss > 0


def test_loglikelihood_result_passes_lmms_evals_unwrapping(plugin, Instance):
    """The evaluator reads each result through ``unwrap_generation_output``: the pair must come out whole."""
    try:
        from lmms_eval.api.instance import unwrap_generation_output
    except ImportError as e:
        pytest.skip(f"lmms-eval is not importable ({e})")
    d = docs(plugin)
    result, = plugin.loglikelihood([request(Instance, "loglikelihood", (d[0]["question"], "red", doc_to_visual, 0,
                                                                        TASK, SPLIT))])
    pair, _ = unwrap_generation_output(result)
    loss, greedy = pair
    assert isinstance(loss, float) and isinstance(greedy, bool) and pair == unwrap(result)


def test_loglikelihood_is_greedy(plugin, Instance):
    text_of = plugin.model.tokenizer.decode

    def greedy_ranking(doc):
        prompt, pixels = plugin.predictor.encode(Query([Turn("user", f"<image>\n{doc['question']}")], [doc["image"]]))
        with torch.no_grad():
            s, _ = plugin.model.embed([prompt], None, pixels)
            logits = plugin.model.llm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask,
                                      position_ids=s.position_ids).logits[0, -1]
        return prompt, pixels, logits, logits.argsort(descending=True).tolist()

    # a doc whose greedy token round-trips through text (a random model's argmax may be a token that text
    # re-tokenizes differently; such a token cannot be asked about as a string)
    for doc in docs(plugin):
        prompt, pixels, logits, ranked = greedy_ranking(doc)
        if plugin.continuation_ids(text_of([ranked[0]])) == [ranked[0]]:
            break
    else:
        pytest.fail("no doc's greedy token round-trips through text")
    d = [doc]
    best, other = ranked[0], next(t for t in ranked[1:] if plugin.continuation_ids(text_of([t])) == [t])
    reqs = [request(Instance, "loglikelihood", (d[0]["question"], text_of([t]), doc_to_visual, 0, TASK, SPLIT))
            for t in (best, other)]
    (loss_best, greedy_best), (loss_other, greedy_other) = loglikelihood(plugin, reqs)
    assert greedy_best and not greedy_other and loss_best < loss_other
    assert loss_best == pytest.approx(-float(logits.log_softmax(-1)[best]), abs=1e-4)
    # greedy means every token is the argmax: [best, x] with x not the argmax after best is not greedy
    with torch.no_grad():
        s, _ = plugin.model.embed([torch.cat([prompt, torch.tensor([best])])], None, pixels)
        next_best = plugin.model.llm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask,
                                     position_ids=s.position_ids).logits[0, -1].argmax()
    pair = next([best, t] for t in ranked[1:] if t != next_best and plugin.continuation_ids(text_of([best, t])) == [best, t])
    (_, greedy_pair), = loglikelihood(plugin, [request(Instance, "loglikelihood", (d[0]["question"], text_of(pair),
                                                                                   doc_to_visual, 0, TASK, SPLIT))])
    assert not greedy_pair


def test_generate_until_multi_round(plugin, Instance):
    d = docs(plugin)
    calls = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        calls.append((list(previous_output), round_idx, previous_round_info))
        if round_idx == 2:
            return None, None, True, previous_output, None
        return None, "What shape is it?", False, previous_output, {"round": round_idx}   # round 2 has no image

    gen = {"max_new_tokens": 4}
    out = plugin.generate_until_multi_round([request(
        Instance, "generate_until_multi_round", (d[1]["question"], gen, doc_to_visual, doc_to_text, 1, TASK, SPLIT), 1)])
    first = answers(plugin, [(d[1]["question"], [d[1]["image"]])], 4)[0]
    second = answers(plugin, [("What shape is it?", [])], 4)[0]
    assert second != answers(plugin, [("What shape is it?", [d[1]["image"]])], 4)[0]     # the test can tell
    assert out == [[first, second]]
    assert calls == [([first], 1, None), ([first, second], 2, {"round": 1})]


def test_bad_requests_are_clear_errors(plugin, Instance, tmp_path):
    d = docs(plugin)
    video = request(Instance, "generate_until", (d[0]["question"], {}, lambda doc: ["clip.mp4"], 0, TASK, SPLIT))
    with pytest.raises(ValueError, match="images only"):
        plugin.generate_until([video])
    beams = request(Instance, "generate_until", (d[0]["question"], {"num_beams": 3}, doc_to_visual, 0, TASK, SPLIT))
    with pytest.raises(ValueError, match="beam search"):
        plugin.generate_until([beams])
    with pytest.raises(KeyError, match="no document 7"):
        plugin.generate_until([request(Instance, "generate_until", ("q", {}, doc_to_visual, 7, TASK, SPLIT))])
    with pytest.raises(ValueError, match="unknown model_args"):
        VLBridgeLMMS(pretrained=str(tmp_path), temperature_typo=1)


def test_prompt_with_images():
    assert prompt_with_images("What is it?", 1) == "<image>\nWhat is it?"
    assert prompt_with_images("<image>\nWhat is it?", 1) == "<image>\nWhat is it?"
    assert prompt_with_images("<image> and <image>?", 2) == "<image> and <image>?"
    assert prompt_with_images("<image> Compare.", 2) == "<image>\n<image>\nCompare."
    assert prompt_with_images("No image.", 0) == "No image."


def test_registered_with_lmms_eval():
    try:
        from lmms_eval.api.model import lmms
        from lmms_eval.models import get_model
    except ImportError as e:
        pytest.skip(f"lmms-eval is not importable ({e}); install the optional extra [lmms] to test its registry")
    assert issubclass(VLBridgeLMMS, lmms) and VLBridgeLMMS.is_simple
    if "vlbridge" not in {ep.name for ep in entry_points(group="lmms_eval.models")}:
        pytest.skip("this vlbridge install predates its lmms_eval.models entry point: reinstall (pip install -e .)")
    assert get_model("vlbridge") is VLBridgeLMMS
