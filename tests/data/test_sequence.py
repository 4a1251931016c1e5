"""Sequence building (vlbridge.data.template.SequenceBuilder) and its label masks.

Checks that labels supervise exactly the assistant messages plus their end markers (for the ``plain``,
``chatml`` and ``vicuna`` templates), that every ``<image>`` becomes one ``image_token_id`` at the place it
appears in the text, that ``for_generation`` ends with the assistant prefix, and that ``<image>`` and tokens
added with ``VLBridgeModel.add_tokens`` are never split by the BPE.
"""
from __future__ import annotations

import copy

import pytest
import torch

from vlbridge.data.records import Turn
from vlbridge.data.template import IGNORE_INDEX, IMAGE_TOKEN, TEMPLATES, SequenceBuilder, get_template

TWO_TURNS = [
    Turn("user", "<image>\nWhat color is the square?"),
    Turn("assistant", "a large red square"),
    Turn("user", "How many circles are there?"),
    Turn("assistant", "2 circles."),
]
ANSWERS = [t.text for t in TWO_TURNS if t.role == "assistant"]


# ----------------------------------------------------------------------------- helpers

def runs(mask: list[bool]) -> list[tuple[int, int]]:
    """Maximal [start, end) runs where mask is True."""
    out, start = [], None
    for i, m in enumerate(mask + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def render(template, turns, for_generation: bool = False) -> str:
    """The conversation as one string, written from the template fields (no tokenizer involved)."""
    turns = list(turns)
    if for_generation and turns and turns[-1].role == "assistant":
        turns = turns[:-1]
    text = ""
    if template.default_system is not None and turns[0].role != "system":
        text += template.system_prefix + template.default_system + template.user_suffix
    for t in turns:
        if t.role == "system":
            text += template.system_prefix + t.text + template.user_suffix
        elif t.role == "user":
            text += template.user_prefix + t.text + template.user_suffix
        else:
            text += template.assistant_prefix + t.text + template.assistant_suffix + template.assistant_trailer
    if for_generation:
        text += template.assistant_prefix
    return text


def supervised(ids: list[int], labels: list[int]) -> list[int]:
    return [i for i, l in zip(ids, labels) if l != IGNORE_INDEX]


@pytest.fixture()
def tok(tiny_model):
    return tiny_model.tokenizer


@pytest.fixture()
def builder(tiny_model):
    return tiny_model.builder


# ----------------------------------------------------------------------------- labels

def test_labels_cover_exactly_answers_and_end_markers(builder, tok):
    ids, labels = builder.build(TWO_TURNS)
    assert len(ids) == len(labels)
    end_id = tok.convert_tokens_to_ids(builder.template.assistant_suffix)
    prefix_id = tok.convert_tokens_to_ids(builder.template.assistant_prefix)

    # Supervised labels are the ids themselves; everything else is IGNORE_INDEX.
    for i, l in zip(ids, labels):
        assert l == IGNORE_INDEX or l == i
    spans = runs([l != IGNORE_INDEX for l in labels])
    assert len(spans) == 2                                    # one contiguous span per answer
    for (start, end), answer in zip(spans, ANSWERS):
        assert ids[start - 1] == prefix_id                    # right after the (unsupervised) assistant marker
        assert ids[end - 1] == end_id                         # the end marker is learned
        assert tok.decode(ids[start:end - 1]) == answer
    assert tok.decode(supervised(ids, labels)) == "".join(a + "<|end|>" for a in ANSWERS)
    assert tok.convert_ids_to_tokens(supervised(ids, labels)).count("<|end|>") == 2

    # Nothing from the user side is supervised: no image token, no user marker, no BOS.
    sup = set(supervised(ids, labels))
    assert builder.image_token_id not in sup
    assert tok.convert_tokens_to_ids(builder.template.user_prefix) not in sup
    assert tok.bos_token_id not in sup
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX


def test_decoding_all_ids_reproduces_the_rendered_conversation(builder, tok):
    ids, _ = builder.build(TWO_TURNS)
    assert tok.decode(ids) == tok.bos_token + render(builder.template, TWO_TURNS)


def test_system_turn_is_not_supervised(builder, tok):
    turns = [Turn("system", "Be brief.")] + TWO_TURNS
    ids, labels = builder.build(turns)
    plain_ids, plain_labels = builder.build(TWO_TURNS)
    assert tok.decode(supervised(ids, labels)) == tok.decode(supervised(plain_ids, plain_labels))
    assert "Be brief." in tok.decode(ids)


@pytest.mark.parametrize("name", ["chatml", "vicuna"])
def test_other_templates_supervise_only_answer_and_suffix(tiny_model, name):
    tok = tiny_model.tokenizer
    template = get_template(name)
    b = SequenceBuilder(tok, template)
    ids, labels = b.build(TWO_TURNS)

    spans = runs([l != IGNORE_INDEX for l in labels])
    assert len(spans) == 2
    for (start, end), answer in zip(spans, ANSWERS):
        assert tok.decode(ids[start:end]) == answer + template.assistant_suffix
        # the assistant prefix (several tokens with this tokenizer) sits right before and is not supervised
        prefix = b.encode(template.assistant_prefix)
        assert ids[start - len(prefix):start] == prefix
        assert all(l == IGNORE_INDEX for l in labels[start - len(prefix):start])
    assert tok.decode(supervised(ids, labels)) == "".join(a + template.assistant_suffix for a in ANSWERS)

    bos = tok.bos_token if template.add_bos else ""
    assert tok.decode(ids) == bos + render(template, TWO_TURNS)
    assert ids.count(b.image_token_id) == 1

    gen_ids, gen_labels = b.build(TWO_TURNS, for_generation=True)
    prefix = b.encode(template.assistant_prefix)
    assert gen_ids[-len(prefix):] == prefix
    assert tok.decode(gen_ids) == bos + render(template, TWO_TURNS, for_generation=True)


def test_unknown_template_is_an_error():
    with pytest.raises(ValueError, match="plain"):
        get_template("no-such-template")
    assert {"plain", "chatml", "vicuna"} <= set(TEMPLATES)


# ----------------------------------------------------------------------------- for_generation

def test_for_generation_drops_trailing_answer_and_ends_with_assistant_prefix(builder, tok):
    prefix_id = tok.convert_tokens_to_ids(builder.template.assistant_prefix)
    full_ids, full_labels = builder.build(TWO_TURNS)
    ids, labels = builder.build(TWO_TURNS, for_generation=True)

    assert ids[-1] == prefix_id
    assert tok.decode(ids).endswith("How many circles are there?<|end|><|assistant|>")
    assert ANSWERS[-1] not in tok.decode(ids)
    assert ANSWERS[0] in tok.decode(ids)                      # earlier answers stay in the prompt
    # the prompt is exactly the training sequence up to (and including) the last assistant marker
    last_start = runs([l != IGNORE_INDEX for l in full_labels])[-1][0]
    assert ids == full_ids[:last_start]
    assert len(labels) == len(ids)


def test_for_generation_without_trailing_answer_only_appends_prefix(builder, tok):
    turns = TWO_TURNS[:3]                                     # ends with a user turn
    ids, _ = builder.build(turns, for_generation=True)
    train_like, _ = builder.build(turns)
    assert ids[:-1] == train_like
    assert ids[-1] == tok.convert_tokens_to_ids(builder.template.assistant_prefix)


# ----------------------------------------------------------------------------- <image> placement

@pytest.mark.parametrize("text, before, after", [
    ("What colour is <image> this shape?", "What colour is ", " this shape?"),
    ("Look:<image>", "Look:", ""),
    ("<image>\nWhat is it?", "", "\nWhat is it?"),
])
def test_image_token_stays_where_the_user_put_it(builder, tok, text, before, after):
    ids, labels = builder.build([Turn("user", text), Turn("assistant", "red")])
    positions = [i for i, t in enumerate(ids) if t == builder.image_token_id]
    assert len(positions) == 1
    pos = positions[0]
    user_prefix = builder.template.user_prefix
    assert tok.decode(ids[:pos]) == tok.bos_token + user_prefix + before
    assert tok.decode(ids[pos + 1:]).startswith(after + builder.template.user_suffix)
    assert labels[pos] == IGNORE_INDEX
    if before:                                                # not moved to right after BOS / the marker
        assert pos > 2


def test_every_image_placeholder_becomes_one_id_in_order(builder, tok):
    turns = [Turn("user", "Compare <image> with<image>."), Turn("assistant", "same"),
             Turn("user", "And this one? <image>"), Turn("assistant", "different")]
    ids, _ = builder.build(turns)
    positions = [i for i, t in enumerate(ids) if t == builder.image_token_id]
    assert len(positions) == sum(t.text.count(IMAGE_TOKEN) for t in turns) == 3
    # the text between consecutive placeholders is what the user wrote between them
    assert tok.decode(ids[positions[0] + 1:positions[1]]) == " with"
    assert tok.decode(ids[positions[1] + 1:positions[2]]) == ".<|end|><|assistant|>same<|end|><|user|>And this one? "
    assert tok.decode(ids) == tok.bos_token + render(builder.template, turns)


def test_image_token_is_never_split_by_bpe(builder, tok):
    for text in ["<image>", "x<image>y", "colour<image><image>?", " <image> ", "<image>image<image"]:
        direct = tok.encode(text, add_special_tokens=False)
        assert direct.count(builder.image_token_id) == text.count(IMAGE_TOKEN)
        assert tok.decode(direct) == text
        msg = builder.encode_message(text)
        assert msg.count(builder.image_token_id) == text.count(IMAGE_TOKEN)
        assert tok.decode(msg) == text
    assert tok.convert_ids_to_tokens(builder.image_token_id) == IMAGE_TOKEN


# ----------------------------------------------------------------------------- added tokens

def test_added_tokens_stay_whole_and_get_mean_embeddings(tiny_model):
    model = copy.deepcopy(tiny_model)                         # the session fixture is shared
    old_weight = model.llm.get_input_embeddings().weight.detach().clone()
    old_len = len(model.tokenizer)

    new_ids = model.add_tokens(["<r0>", "<r1>"])
    tok = model.tokenizer
    assert len(set(new_ids)) == 2 and min(new_ids) >= old_len
    assert len(tok) == old_len + 2
    assert len(tiny_model.tokenizer) == old_len               # the shared fixture is untouched

    emb = model.llm.get_input_embeddings().weight.detach()
    assert emb.shape[0] == len(tok)
    torch.testing.assert_close(emb[:old_len], old_weight, rtol=0, atol=0)
    mean = old_weight.mean(0)
    for i in new_ids:
        torch.testing.assert_close(emb[i], mean)
    out = model.llm.get_output_embeddings()
    if out is not None:
        assert out.weight.shape[0] == len(tok)
        for i in new_ids:
            torch.testing.assert_close(out.weight.detach()[i], out.weight.detach()[:old_len].mean(0))

    r1 = tok.convert_tokens_to_ids("<r1>")
    turns = [Turn("user", "<image>\nWhat is in region<r1>?"), Turn("assistant", "a circle at <r1> and <r0>")]
    ids, labels = model.builder.build(turns)
    assert ids.count(r1) == 2                                 # once in the question, once in the answer
    toks = tok.convert_ids_to_tokens(ids)
    assert "<r1>" in toks and "<r0>" in toks
    assert not any(t in toks for t in ("<r", "r1", "1>"))
    user_pos, answer_pos = [i for i, t in enumerate(ids) if t == r1]
    assert labels[user_pos] == IGNORE_INDEX                   # added tokens follow the span rule
    assert labels[answer_pos] == r1
    assert tok.decode(supervised(ids, labels)) == "a circle at <r1> and <r0><|end|>"
    assert model.decode(ids[answer_pos:answer_pos + 1]) == "<r1>"


def test_memoised_encoding_follows_added_tokens(tiny_model):
    """SequenceBuilder.encode remembers texts; adding tokens to the tokenizer must not serve stale ids."""
    tok = copy.deepcopy(tiny_model.tokenizer)
    b = SequenceBuilder(tok, get_template("plain"))
    text = "What color is <zz9> the circle?"
    before = b.encode(text)
    assert before == tok.encode(text, add_special_tokens=False) and b.encode(text) == before
    tok.add_special_tokens({"additional_special_tokens": ["<zz9>"]}, replace_extra_special_tokens=False)
    after = b.encode(text)
    assert after == tok.encode(text, add_special_tokens=False) != before
    assert tok.convert_tokens_to_ids("<zz9>") in after
    long = "a red circle " * 60                      # longer than the memo's limit: encoded directly
    assert b.encode(long) == tok.encode(long, add_special_tokens=False)


def test_document_supervises_every_token_and_ends_like_an_answer(builder, tok):
    doc = [Turn("document", "<image>\na red circle\n<image>\nAnswer:"), Turn("completion", " red")]
    ids, labels = builder.build(doc)
    end = builder.encode(builder.template.assistant_suffix)
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX
    assert labels[1:] == ids[1:] and ids[-len(end):] == end                 # text, images, answer, end marker
    assert ids.count(builder.image_token_id) == 2
    prompt, prompt_labels = builder.build(doc, for_generation=True)
    assert all(label == IGNORE_INDEX for label in prompt_labels)
    assert ids[:len(prompt)] == prompt and tok.decode(ids[len(prompt):-len(end)]) == " red"   # the answer follows
    with pytest.raises(ValueError, match="document"):
        builder.build([Turn("document", "x"), Turn("user", "y")])
