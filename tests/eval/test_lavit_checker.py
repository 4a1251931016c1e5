"""The prompt/image agreement checker, on real ShapesWorld renders first; captions and prompt parsing."""
from __future__ import annotations

import random

import numpy as np
import pytest

from vlbridge.data.shapesworld import COLORS, ShapesWorldConfig, generate_scene, render_scene, scene_rng
from vlbridge.data.scene_captions import PromptObject, caption, parse_prompt
from vlbridge.eval.image_checker import agreement, detect_objects

CFG = ShapesWorldConfig(glyph_prob=0.6)          # more glyphs: holes inside objects must not confuse the checker


def scenes(n: int, seed: int = 11):
    return [generate_scene(scene_rng(seed, "test", i), CFG) for i in range(n)]


def test_checker_recovers_every_object_of_real_renders():
    for scene in scenes(150):
        found = detect_objects(render_scene(scene, CFG))
        want = sorted((o.color, o.shape, o.size) for o in scene.objects)
        assert sorted((d.color, d.shape, d.size) for d in found) == want
        for obj in scene.objects:                                       # boxes within a pixel
            d = next(d for d in found if (d.color, d.shape) == (obj.color, obj.shape))
            assert np.allclose(d.box, obj.box, atol=1.5 / CFG.image_size)


def test_captions_of_real_renders_agree_and_wrong_prompts_do_not():
    rng = random.Random(0)
    n_rel = 0
    for scene in scenes(100, seed=12):
        objs = [o.to_dict() for o in scene.objects]
        text = caption(objs, rng)
        spec = parse_prompt(text)
        found = detect_objects(render_scene(scene, CFG))
        verdict = agreement(spec, found)
        assert verdict.full and verdict.colors_present and verdict.colors_exact, text
        n_rel += spec.relation is not None
        first = spec.objects[0]
        other = next(c for c in COLORS if c != first.color and (c, first.shape) not in
                     {(o.color, o.shape) for o in spec.objects})
        wrong = spec.__class__((PromptObject(other, first.shape, first.size),) + spec.objects[1:], spec.relation)
        a = agreement(wrong, found)
        assert not a.objects_present and not a.full
        if spec.relation is not None:                                  # the opposite relation fails
            i, rel, j = spec.relation
            flipped = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}[rel]
            assert not agreement(spec.__class__(spec.objects, (i, flipped, j)), found).relation_ok
    assert n_rel > 10


def test_extra_object_breaks_exactness_only():
    scene = next(s for s in scenes(50, seed=13) if len(s.objects) == 2)
    found = detect_objects(render_scene(scene, CFG))
    spec = parse_prompt(f"a {scene.objects[0].color} {scene.objects[0].shape}")
    a = agreement(spec, found)
    assert a.objects_present and not a.objects_exact and not a.full
    # a second colour in the image: the prompt's colours are present, but not exactly them
    assert a.colors_present and a.colors_exact == (scene.objects[1].color == scene.objects[0].color)


def test_parse_prompt():
    spec = parse_prompt("a red circle above a small blue square")
    assert spec.objects == (PromptObject("red", "circle"), PromptObject("blue", "square", "small"))
    assert spec.relation == (0, "above", 1)
    assert parse_prompt("An orange diamond, a large green triangle and a purple circle").relation is None
    with pytest.raises(ValueError, match="no object"):
        parse_prompt("a cat on a mat")


def test_blank_and_noisy_images_have_no_objects():
    assert detect_objects(np.full((64, 64, 3), 30, dtype=np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(detect_objects(noise)) == 0                              # speckle never forms 20-px regions
