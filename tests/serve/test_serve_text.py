"""Pieces of the server that need no model: streamed text deltas and stop strings, messages -> turns,
and rows joined / dropped in a KV cache."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from vlbridge.serve import kv_cache
from vlbridge.serve.conversation import to_turns
from vlbridge.serve.errors import APIError
from vlbridge.serve.schema import ChatRequest
from vlbridge.serve.text_stream import TextStream


def pieces(tokens: list[str], stop=()):
    """Feed the texts of successive ids; return (deltas, final text)."""
    stream = TextStream(lambda ids: "".join(tokens[i] for i in ids), stop)
    deltas = []
    for n in range(1, len(tokens) + 1):
        deltas.append(stream.push(list(range(n))))
        if stream.stopped:
            break
    deltas.append(stream.finish(list(range(n))))
    return deltas, stream.text


def test_deltas_add_up_to_the_final_text():
    deltas, text = pieces(["a", " red", " circle", "."])
    assert deltas == ["a", " red", " circle", ".", ""] and "".join(deltas) == text == "a red circle."


def test_a_stop_string_across_tokens_cuts_the_answer_and_is_never_sent():
    deltas, text = pieces(["a red", " ci", "rcle", " and more"], stop=["circle"])
    assert text == "a red " and "".join(deltas) == text
    assert all("ci" not in d for d in deltas)                        # the partial stop string was held back


def test_open_region_spans_and_partial_characters_are_held_back():
    deltas, _ = pieces(["a circle ", "<roi>", "<r1>", "</roi>", " x"])
    assert deltas[1] == deltas[2] == ""                              # "<roi>" is open: nothing sent
    assert deltas[3] == "<roi><r1></roi>"
    deltas, _ = pieces(["caf", "\ufffd", "é"])                          # a split UTF-8 character
    assert deltas[:2] == ["caf", ""]


def request(messages):
    return ChatRequest.model_validate({"model": "m", "messages": messages})


def test_messages_become_turns_with_image_placeholders_in_place():
    turns, images = to_turns(request([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:a"}},
                                     {"type": "text", "text": "Compare with"},
                                     {"type": "image_url", "image_url": {"url": "data:b"}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": "Which is red?"}]).messages)
    assert [(t.role, t.text) for t in turns] == [("system", "Be brief."), ("user", "<image>\nCompare with\n<image>"),
                                                 ("assistant", "ok"), ("system", "Answer in one word."),
                                                 ("user", "Which is red?")]
    assert [(i.url, i.param) for i in images] == [("data:a", "messages[1].content[0]"),
                                                  ("data:b", "messages[1].content[2]")]


@pytest.mark.parametrize("messages, match", [
    ([{"role": "user", "content": "look: <image>"}], "may not contain"),
    ([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:a"}}]},
      {"role": "user", "content": "hi"}], "user messages only"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "last message"),
])
def test_bad_conversations_are_refused(messages, match):
    with pytest.raises(APIError, match=match):
        to_turns(request(messages).messages)


def cache_of(rows: list[list[float]]) -> tuple[DynamicCache, torch.Tensor]:
    """A one-layer cache whose row b holds the values rows[b] (left-padded with zeros)."""
    T = max(len(r) for r in rows)
    k = torch.zeros(len(rows), 1, T, 1)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        k[b, 0, T - len(r):, 0] = torch.tensor(r)
        mask[b, T - len(r):] = 1
    cache = DynamicCache()
    cache.update(k, k.clone(), 0)
    return cache, mask


def test_kv_rows_join_left_padded_and_leave_without_unused_columns():
    cache, mask = cache_of([[1, 2], [3]])
    other, other_mask = cache_of([[4, 5, 6]])
    mask = kv_cache.join(cache, mask, other, other_mask)
    keys = cache.layers[0].keys[:, 0, :, 0]
    assert keys.tolist() == [[0, 1, 2], [0, 0, 3], [4, 5, 6]] and mask.tolist() == [[0, 1, 1], [0, 0, 1], [1, 1, 1]]
    mask = kv_cache.select(cache, mask, torch.tensor([0, 1]))
    assert cache.layers[0].keys[:, 0, :, 0].tolist() == [[1, 2], [0, 3]] and mask.tolist() == [[1, 1], [0, 1]]
    assert cache.layers[0].values.shape == cache.layers[0].keys.shape
