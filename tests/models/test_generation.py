"""Generation (vlbridge.generate.generate) on the tiny random model.

Checks that the KV-cache path generates exactly what full recomputation generates (greedy and sampling), with
the preallocated, the static and the dynamic cache alike, down to the logits of every step (and compiled),
that a left-padded batch of prompts of different lengths generates what each prompt generates alone, that
sampling is reproducible from a torch.Generator seed, that top_k=1 sampling is greedy, that text-only
prompts (alone or mixed with image prompts) work, and that generation stops at a stop token.
"""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import StaticCache

from support import redraw
from vlbridge.data.dataset import InstructionDataset
from vlbridge.data.records import SkipReport, Turn, load_records
from vlbridge.generate import Decoding, GenerationConfig, PreallocatedLayer, decode_threads, generate

MAX_NEW = 12


@pytest.fixture(scope="module")
def model(tiny_model):
    """A copy of the tiny model with LLM and connector weights redrawn at a larger scale.

    At the default init (std 0.02) the random LLM ignores its context and emits the same token forever,
    which would make every equality below trivially true; with std 0.2 the output depends on every
    position, position id and visual token.
    """
    return redraw(tiny_model)


@pytest.fixture(scope="module")
def prompts(model, shapes_dir):
    """Four image prompts of clearly different lengths (1 to 4 questions) and their pixel values."""
    records = load_records(shapes_dir / "train.json")
    cut = [dataclasses.replace(rec, turns=rec.turns[: 2 * k]) for k, rec in zip((1, 4, 2, 3), records)]
    ds = InstructionDataset(cut, model.builder, model.vision.image_transform(), max_length=256,
                            visual_tokens_per_image=model.visual_tokens_per_image(), report=SkipReport(),
                            on_error="raise", for_generation=True)
    samples = [ds[i] for i in range(len(ds))]
    assert len(samples) == 4
    lengths = [len(s.input_ids) for s in samples]
    assert len(set(lengths)) == 4, lengths                   # really different lengths -> real left padding
    assert all(len(s.pixel_values) == 1 for s in samples)
    return [s.input_ids for s in samples], [s.pixel_values for s in samples]


@pytest.fixture(scope="module")
def never(model):
    """A stop id outside the vocabulary: no row ever stops, so every row generates MAX_NEW tokens."""
    return [len(model.tokenizer) + 7]


def run(model, ids, pixels, never, generator=None, **kw):
    gen = GenerationConfig(max_new_tokens=kw.pop("max_new_tokens", MAX_NEW), **kw)
    pv = torch.cat(pixels) if pixels else None
    return generate(model, ids, pv, gen, generator=generator, stop_token_ids=never)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_full_length(out, n_rows):
    assert len(out) == n_rows
    assert all(len(row) == MAX_NEW for row in out), [len(r) for r in out]
    # guard against a degenerate model that repeats one token: then equalities would prove nothing
    assert all(len(set(row)) >= 3 for row in out), out
    assert len({tuple(row) for row in out}) == n_rows, out       # and the rows follow their own prompts


def test_prompts_end_with_the_assistant_prefix(model, prompts):
    ids, _ = prompts
    prefix = model.builder.encode(model.template.assistant_prefix)
    for x in ids:
        assert x[-len(prefix):].tolist() == prefix
        assert int((x == model.image_token_id).sum()) == 1


def test_cached_equals_uncached_greedy(model, prompts, never):
    ids, pixels = prompts
    cached = run(model, ids, pixels, never, use_cache=True)
    uncached = run(model, ids, pixels, never, use_cache=False)
    assert_full_length(cached, len(ids))
    assert cached == uncached


def test_the_image_and_the_prompt_matter(model, prompts, never):
    """Sanity check that the equalities below are not trivially true."""
    ids, pixels = prompts
    out = run(model, ids, pixels, never)
    assert len({tuple(row) for row in out}) == len(out)         # different prompts -> different outputs
    other = [torch.flip(p, dims=[-1]) + 0.5 for p in pixels]
    assert run(model, ids, other, never) != out                 # the visual tokens reach the LLM


def test_batched_equals_each_prompt_alone(model, prompts, never):
    ids, pixels = prompts
    batched = run(model, ids, pixels, never)
    alone = [run(model, [x], [p], never)[0] for x, p in zip(ids, pixels)]
    assert_full_length(batched, len(ids))
    assert batched == alone


def test_batch_order_does_not_matter(model, prompts, never):
    ids, pixels = prompts
    order = [2, 0, 3, 1]
    out = run(model, ids, pixels, never)
    shuffled = run(model, [ids[i] for i in order], [pixels[i] for i in order], never)
    assert shuffled == [out[i] for i in order]


def test_sampling_is_reproducible_from_the_seed(model, prompts, never):
    ids, pixels = prompts
    kw = dict(do_sample=True, temperature=1.5)
    a = run(model, ids, pixels, never, generator=seeded(123), **kw)
    b = run(model, ids, pixels, never, generator=seeded(123), **kw)
    c = run(model, ids, pixels, never, generator=seeded(124), **kw)
    assert_full_length(a, len(ids))
    assert a == b
    assert a != c                                            # it really samples
    greedy = run(model, ids, pixels, never)
    assert a != greedy


def test_cached_equals_uncached_when_sampling(model, prompts, never):
    ids, pixels = prompts
    kw = dict(do_sample=True, temperature=1.2, top_k=50, top_p=0.95)
    cached = run(model, ids, pixels, never, generator=seeded(7), use_cache=True, **kw)
    uncached = run(model, ids, pixels, never, generator=seeded(7), use_cache=False, **kw)
    assert_full_length(cached, len(ids))
    assert cached == uncached


def test_top_k_1_sampling_is_greedy(model, prompts, never):
    ids, pixels = prompts
    greedy = run(model, ids, pixels, never)
    top1 = run(model, ids, pixels, never, generator=seeded(0), do_sample=True, top_k=1, temperature=2.0)
    assert top1 == greedy


def test_text_only_prompts_generate(model, never):
    b = model.builder
    ids = [torch.tensor(b.build([Turn("user", q)], for_generation=True)[0])
           for q in ("How many circles are there?", "What color is the square in the picture on the left?")]
    assert all(model.image_token_id not in x.tolist() for x in ids)
    out = run(model, ids, [], never)
    assert_full_length(out, 2)
    assert all(0 <= t < len(model.tokenizer) for row in out for t in row)
    assert out == run(model, ids, [], never, use_cache=False)
    assert out == [run(model, [x], [], never)[0] for x in ids]


def test_mixed_text_only_and_image_prompts(model, prompts, never):
    ids, pixels = prompts
    text_ids = torch.tensor(model.builder.build([Turn("user", "Is there a circle?")], for_generation=True)[0])
    mixed_ids = [ids[0], text_ids, ids[1]]
    out = run(model, mixed_ids, [pixels[0], pixels[1]], never)
    assert_full_length(out, 3)
    assert out[0] == run(model, [ids[0]], [pixels[0]], never)[0]
    assert out[1] == run(model, [text_ids], [], never)[0]
    assert out[2] == run(model, [ids[1]], [pixels[1]], never)[0]


def test_generation_stops_at_a_stop_token_and_drops_it(model, prompts):
    """Force the stop token at step 3 for row 0 only: row 0 ends there, the others run to the end."""
    ids, pixels = prompts
    stop = model.builder.stop_token_ids()[0]

    def force_stop(logits, generated):
        if generated.shape[1] == 3:
            logits = logits.clone()
            logits[0] = -1e9
            logits[0, stop] = 0.0
        else:
            logits = logits.clone()
            logits[:, model.builder.stop_token_ids()] = -1e9
        return logits

    out = generate(model, ids, torch.cat(pixels), GenerationConfig(max_new_tokens=MAX_NEW),
                   logits_processors=[force_stop])
    assert len(out[0]) == 3
    assert all(len(row) == MAX_NEW for row in out[1:])
    assert all(t not in model.builder.stop_token_ids() for row in out for t in row)


def test_logits_processor_suppressing_a_range(model, prompts, never):
    ids, pixels = prompts
    low = 200

    def only_low_ids(logits, generated):
        return logits.masked_fill(torch.arange(logits.shape[-1]) >= low, float("-inf"))

    out = generate(model, ids, torch.cat(pixels), GenerationConfig(max_new_tokens=MAX_NEW),
                   logits_processors=[only_low_ids], stop_token_ids=never)
    assert_full_length(out, len(ids))
    assert all(t < low for row in out for t in row)


def test_empty_stop_list_generates_full_length(model, prompts):
    ids, pixels = prompts
    out = generate(model, ids, torch.cat(pixels), GenerationConfig(max_new_tokens=MAX_NEW), stop_token_ids=[])
    assert_full_length(out, len(ids))


def test_shared_image_positions_cached_batched_and_effective(model, prompts, never):
    """With every image at one position id: the cache and left padding still change nothing, and the
    position ids do reach the LLM (the answers differ from the sequential ones)."""
    shared = copy.deepcopy(model)
    shared.cfg.llm.image_positions = "shared"
    ids, pixels = prompts
    cached = run(shared, ids, pixels, never, use_cache=True)
    assert_full_length(cached, len(ids))
    assert cached == run(shared, ids, pixels, never, use_cache=False)
    assert [run(shared, [i], [p], never)[0] for i, p in zip(ids, pixels)] == cached
    assert cached != run(model, ids, pixels, never)


def step_logits(model, ids, pixels, gen, steps: int) -> torch.Tensor:
    """Next-token logits of prefill + `steps` decode steps, feeding a fixed token sequence: [steps + 1, B, V]."""
    s, _ = model.embed(list(ids), None, torch.cat(pixels), padding_side="left")
    d = Decoding(model.llm, s.inputs_embeds, s.attention_mask, s.position_ids, steps + 1, gen)
    feed = torch.Generator().manual_seed(5)
    with torch.no_grad():
        out = [d.prefill()]
        for _ in range(steps):
            out.append(d.step(torch.randint(len(model.tokenizer), (len(ids),), generator=feed)))
    return torch.stack(out)


def test_preallocated_static_and_dynamic_caches_equal_recompute(model, prompts, never):
    ids, pixels = prompts
    s, _ = model.embed(list(ids), None, torch.cat(pixels), padding_side="left")
    made = {kind: Decoding(model.llm, s.inputs_embeds, s.attention_mask, s.position_ids, 4,
                           GenerationConfig(cache=kind)).cache for kind in ("preallocated", "static")}
    assert all(isinstance(layer, PreallocatedLayer) for layer in made["preallocated"].layers)   # the default,
    assert isinstance(made["static"], StaticCache)                      # and each kind really used here
    assert GenerationConfig().cache == "preallocated"
    kinds = {"preallocated": dict(cache="preallocated"), "static": dict(cache="static"),
             "dynamic": dict(cache="dynamic"), "recompute": dict(use_cache=False)}
    logits = {name: step_logits(model, ids, pixels, GenerationConfig(**kw), steps=6) for name, kw in kinds.items()}
    assert logits["static"].shape == (7, len(ids), model.llm.get_input_embeddings().num_embeddings)
    for name in ("preallocated", "static", "dynamic"):
        assert (logits[name] - logits["recompute"]).abs().max() <= 1e-4, name
    kw = dict(do_sample=True, temperature=1.2, top_k=50)
    sampled = {name: run(model, ids, pixels, never, generator=seeded(9), cache=name, **kw)
               for name in ("preallocated", "static", "dynamic")}
    assert_full_length(sampled["static"], len(ids))
    assert sampled["preallocated"] == sampled["static"] == sampled["dynamic"]


def test_decode_threads_small_steps_on_one_thread_and_restored(model, prompts, never):
    assert decode_threads(GenerationConfig(), model.llm, 1) == 1           # a tiny LLM: one thread
    assert decode_threads(GenerationConfig(), model.llm, 10 ** 6) is None  # a big step: torch's setting
    assert decode_threads(GenerationConfig(threads=3), model.llm, 1) == 3
    ids, pixels = prompts
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(model, ids, pixels, never, threads=2) == run(model, ids, pixels, never)
        assert torch.get_num_threads() == 2                                  # restored after generation
    finally:
        torch.set_num_threads(before)


def test_unknown_cache_kind_is_a_clear_error(model, prompts, never):
    ids, pixels = prompts
    with pytest.raises(ValueError, match="cache must be one of"):
        run(model, ids, pixels, never, cache="paged")


@pytest.mark.slow
def test_compiled_decode_step_equals_eager(model, prompts, never):
    ids, pixels = prompts
    compiled = step_logits(model, ids, pixels, GenerationConfig(compile=True), steps=4)
    eager = step_logits(model, ids, pixels, GenerationConfig(), steps=4)
    assert (compiled - eager).abs().max() <= 1e-4
    assert run(model, ids, pixels, never, compile=True) == run(model, ids, pixels, never)
