"""LaVIT generation: text/visual id suppression (ModalityMask), the image-generation loop against the generic
KV-cache `generate`, classifier-free guidance identities, and rendering codes to pixels."""
from __future__ import annotations

import copy

import pytest
import torch

from vlbridge.data.records import load_records
from vlbridge.generate import GenerationConfig, generate
from vlbridge.recipes.lavit.image_generation import ImageGenConfig, generate_codes, image_prompt_ids, render_codes
from vlbridge.lavit.vocabulary import ModalityMask, VisualVocab
from vlbridge.models.build import build_model

from support import tiny_model_config

OPTIONS = {"codebook_size": 16, "image_size": 32, "heads": 2, "merger_layers": 1, "decoder_layers": 1,
           "pixel_channels": [16, 8, 8]}


@pytest.fixture(scope="module")
def model(shapes_dir):
    """A tiny LaVIT model whose LLM weights are redrawn large, so outputs depend on the whole context."""
    torch.manual_seed(0)
    texts = [t.text for r in load_records(shapes_dir / "train.json") for t in r.turns] + ["Draw a red circle"]
    m = build_model(tiny_model_config("lavit", OPTIONS), texts)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.llm.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def vocab(model):
    return VisualVocab.from_model(model)


def boost(ids, amount=100.0):
    def proc(logits, generated):
        out = logits.clone()
        out[:, list(ids)] += amount
        return out
    return proc


def prompt(model):
    return [torch.tensor(model.builder.build([type("T", (), {"role": "user", "text": "What is this?"})()],
                                             for_generation=True)[0])]


def test_text_generation_never_emits_visual_ids(model, vocab):
    codes = list(vocab.code_ids()) + [vocab.close_id]
    gen = GenerationConfig(max_new_tokens=8)
    free = generate(model, prompt(model), None, gen, logits_processors=[boost(codes)], stop_token_ids=[])[0]
    assert all(t in codes for t in free)                                # without the mask: only visual ids
    masked = generate(model, prompt(model), None, gen, logits_processors=[boost(codes), ModalityMask(vocab)],
                      stop_token_ids=[])[0]
    assert len(masked) == 8 and not any(t in codes for t in masked)


def test_image_generation_emits_only_codes_between_min_and_max(model, vocab):
    ids = image_prompt_ids(model, vocab, "a red circle")
    gen = GenerationConfig(max_new_tokens=12)
    mask = ModalityMask(vocab, start_in_image=True, min_image_tokens=3, max_image_tokens=5)
    eager = generate(model, [torch.tensor(ids)], None, gen, logits_processors=[boost([vocab.close_id]), mask],
                     stop_token_ids=[vocab.close_id])[0]
    assert len(eager) == 3 and all(t in vocab.code_ids() for t in eager)       # closes as soon as allowed
    text_ids = [t for t in range(len(model.tokenizer)) if t not in vocab.code_ids() and t != vocab.close_id]
    long = generate(model, [torch.tensor(ids)], None, gen, logits_processors=[boost(text_ids), mask],
                    stop_token_ids=[vocab.close_id])[0]
    assert len(long) == 5 and all(t in vocab.code_ids() for t in long)         # text ids suppressed, max forced


def test_mask_follows_img_markers_in_the_generated_text(vocab):
    mask = ModalityMask(vocab)
    code = vocab.first_code_id
    assert mask.state([5, vocab.open_id, code, code]) == (True, 2)
    assert mask.state([5, vocab.open_id, code, vocab.close_id, 7]) == (False, 0)
    logits = torch.zeros(2, vocab.first_code_id + vocab.size)
    out = mask(logits, torch.tensor([[5, vocab.open_id], [5, 6]]))
    assert torch.isinf(out[0, 5]) and not torch.isinf(out[0, code]) and torch.isinf(out[0, vocab.close_id])
    assert not torch.isinf(out[1, 5]) and torch.isinf(out[1, code])


def test_image_loop_equals_generic_generate(model, vocab):
    captions = ["a red circle", "a small blue square above a green triangle"]
    mine = generate_codes(model, captions, ImageGenConfig(max_tokens=6))
    for caption, codes in zip(captions, mine):
        ids = image_prompt_ids(model, vocab, caption)
        ref = generate(model, [torch.tensor(ids)], None, GenerationConfig(max_new_tokens=7),
                       logits_processors=[ModalityMask(vocab, start_in_image=True, max_image_tokens=6)],
                       stop_token_ids=[vocab.close_id])[0]
        assert codes == vocab.to_codes(ref)
        assert 1 <= len(codes) <= 6


def test_classifier_free_guidance_identities(model):
    base = ImageGenConfig(max_tokens=6)
    uncond = generate_codes(model, [""], base)
    # cond == uncond prompt: u + s (c - u) = c for any scale
    assert generate_codes(model, [""], ImageGenConfig(max_tokens=6, cfg_scale=4.0)) == uncond
    # scale 0: the unconditional distribution whatever the caption
    assert generate_codes(model, ["a red circle"], ImageGenConfig(max_tokens=6, cfg_scale=0.0)) == uncond
    guided = generate_codes(model, ["a red circle", "a blue square"], ImageGenConfig(max_tokens=6, cfg_scale=3.0))
    assert all(1 <= len(c) <= 6 for c in guided)


def test_sampling_is_seeded(model):
    cfg = ImageGenConfig(max_tokens=6, do_sample=True, seed=3)
    assert generate_codes(model, ["a red circle"] * 2, cfg) == generate_codes(model, ["a red circle"] * 2, cfg)


def test_render_codes_gives_images(model):
    images = render_codes(copy.deepcopy(model), [[0, 3, 5], [15]])
    assert [im.size for im in images] == [(32, 32), (32, 32)]
