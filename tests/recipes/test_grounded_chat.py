"""Grounded answers: phrases with boxes, region prompts, the drawn PNG, `vlbridge chat --grounded`, grounded data."""
import json

import pytest
import torch
from PIL import Image

from vlbridge.cli.main import main
from vlbridge.data.shapesworld import GCAP_QUESTION, NOT_PRESENT
from vlbridge.recipes.groma.grounded_chat import PALETTE, draw_grounding, grounded_prompt, parse_region
from vlbridge.eval.grounding import grounded_caption_score
from vlbridge.data.grounded_phrases import grounded_phrases


def test_phrases_take_the_text_before_their_box() -> None:
    text = "a small red circle [0.1,0.2,0.3,0.4], a large blue square [0.5,0.5,0.9,0.9] and a tiny x [9,9]."
    assert grounded_phrases(text) == [("a small red circle", (0.1, 0.2, 0.3, 0.4)),
                                      ("a large blue square", (0.5, 0.5, 0.9, 0.9))]
    assert grounded_phrases("[0.1,0.1,0.2,0.2]") == [("", (0.1, 0.1, 0.2, 0.2))]
    assert grounded_phrases("not present") == []


def test_grounded_caption_score_by_hand() -> None:
    ref = "a small red circle [0.1,0.1,0.3,0.3] and a large blue square [0.5,0.5,0.9,0.9]."
    assert grounded_caption_score(ref, ref).f1 == 1.0
    s = grounded_caption_score("a small red circle [0.1,0.1,0.3,0.3] and a large red square [0.5,0.5,0.9,0.9].", ref)
    assert (s.precision, s.recall, s.box_recall) == (0.5, 0.5, 1.0)            # wrong phrase, right box
    assert grounded_caption_score("a small red circle.", ref).f1 == 0.0
    with pytest.raises(ValueError):
        grounded_caption_score("x", "no boxes here")


def test_region_prompts() -> None:
    assert parse_region("0.1,0.2,0.5,0.6", (64, 64)) == pytest.approx((0.1, 0.2, 0.5, 0.6))
    assert parse_region("16, 32, 48, 64", (64, 128)) == pytest.approx((0.25, 0.25, 0.75, 0.5))
    with pytest.raises(ValueError, match="--region"):
        parse_region("1,2,3", (64, 64))
    box = (0.1, 0.2, 0.5, 0.6)
    assert grounded_prompt(None, None) == GCAP_QUESTION
    assert grounded_prompt(None, box) == "What is the object at [0.100,0.200,0.500,0.600]?\nAnswer the question using a single word or phrase."
    assert grounded_prompt("Is <region> red?", box) == "Is [0.100,0.200,0.500,0.600] red?"


def test_drawing_puts_each_box_outline_in_its_colour(tmp_path) -> None:
    image = Image.new("RGB", (64, 64), (30, 30, 30))
    out = draw_grounding(image, [("a circle", (0.25, 0.5, 0.5, 0.75)), ("", (0.6, 0.1, 0.9, 0.4))], tmp_path / "g.png")
    drawn = Image.open(out).convert("RGB")
    assert drawn.size == (384, 384)                                       # 64 px enlarged x6
    assert drawn.getpixel((int(0.25 * 384) + 1, int(0.62 * 384))) == PALETTE[0]   # left edge of box 0
    assert drawn.getpixel((int(0.9 * 384) - 1, int(0.3 * 384))) == PALETTE[1]     # right edge of box 1
    assert drawn.getpixel((int(0.37 * 384), int(0.62 * 384))) == (30, 30, 30)     # inside stays the image


def test_chat_grounded_draws_the_answers_box_where_the_answer_puts_it(groma_model, grounding_data, tmp_path, capsys,
                                                                    monkeypatch) -> None:
    """The model's greedy choice is steered to answer "a circle <roi><r0></roi>" (the real generation loop, with
    every other token ruled out): the printed answer must give region 0's box, and the PNG must have that box's
    outline, in the first palette colour, exactly there."""
    import vlbridge.generate as generation
    from vlbridge.data.boxes import parse_box
    groma_model.save_pretrained(tmp_path / "model")
    image = grounding_data / "images" / "test_000000.png"
    tokenizer = groma_model.tokenizer
    forced = tokenizer("a circle", add_special_tokens=False)["input_ids"] + tokenizer.convert_tokens_to_ids(
        ["<roi>", "<r0>", "</roi>"])
    real, seen = generation.generate_from, {}

    def steered(model, s, gen=generation.GenerationConfig(), generator=None, logits_processors=(), **kw):
        seen["regions"] = s.info[0]                                   # the regions the prompt listed

        def force(logits, generated):
            step = generated.shape[1]
            if step >= len(forced):
                return logits
            out = torch.full_like(logits, float("-inf"))
            out[:, forced[step]] = 0.0
            return out
        return real(model, s, gen, generator, [force, *logits_processors], **kw)

    monkeypatch.setattr(generation, "generate_from", steered)
    png = tmp_path / "answer.png"
    assert main(["chat", "--model", str(tmp_path / "model"), "--image", str(image), "--grounded",
                 "--grounded-out", str(png), "--max-new-tokens", str(len(forced) + 1)]) == 0
    printed = capsys.readouterr().out
    assert GCAP_QUESTION in printed and f"boxes drawn in {png}" in printed
    answer = next(line for line in printed.splitlines() if line.startswith("model> "))
    box = parse_box(answer).box
    assert box == pytest.approx(tuple(float(v) for v in seen["regions"][0]), abs=5e-4)    # region 0's box
    drawn = Image.open(png).convert("RGB")
    W, H = drawn.size
    assert (W, H) == (384, 384)
    x1, y1, x2, y2 = (round(v * side) for v, side in zip(box, (W, H, W, H)))
    mid_x, mid_y = (x1 + x2) // 2, (y1 + y2) // 2
    outline = [(x1 + 1, mid_y), (x2 - 1, mid_y), (mid_x, y2 - 1)]          # left, right and bottom edges
    assert all(drawn.getpixel(p) == PALETTE[0] for p in outline), [drawn.getpixel(p) for p in outline]
    original = Image.open(image).convert("RGB").resize((W, H), Image.NEAREST)
    assert drawn.getpixel((mid_x, mid_y)) == original.getpixel((mid_x, mid_y))   # the inside stays the image
    assert sum(drawn.getpixel((x, y)) == PALETTE[0] for x in range(0, W, 4) for y in range(0, H, 4)
               if not (x1 - 3 <= x <= x2 + 3 and y1 - 20 <= y <= y2 + 20)) == 0    # nothing of it elsewhere


def test_chat_region_question_and_bad_region(groma_model, grounding_data, tmp_path, capsys) -> None:
    groma_model.save_pretrained(tmp_path / "model")
    image = grounding_data / "images" / "test_000000.png"
    png2 = tmp_path / "region.png"
    assert main(["chat", "--model", str(tmp_path / "model"), "--image", str(image), "--region", "8,8,24,24",
                 "--grounded-out", str(png2), "--max-new-tokens", "4"]) == 0
    assert "What is the object at [0.250,0.250,0.750,0.750]?" in capsys.readouterr().out and png2.is_file()
    assert main(["chat", "--model", str(tmp_path / "model"), "--image", str(image), "--region", "oops"]) == 2
    assert "--region 'oops'" in capsys.readouterr().err


def test_shapes_grounded_captions_and_negatives_match_the_scenes(grounding_data) -> None:
    scenes = {s["image"]: s for s in json.loads((grounding_data / "scenes.json").read_text())}
    records = json.loads((grounding_data / "test.json").read_text())
    gcap = [r for r in records if r["task"] == "gcap"]
    neg = [r for r in records if r["task"] == "rec_neg"]
    assert len(gcap) == len({r["image"] for r in records}) and neg
    for r in gcap:
        objects = scenes[r["image"]]["objects"]
        pairs = grounded_phrases(r["conversations"][1]["value"])
        expected = {(f"a {o['size']} {o['color']} {o['shape']}", tuple(round(v, 3) for v in o["box"])) for o in objects}
        assert {(p, tuple(round(v, 3) for v in b)) for p, b in pairs} == expected
    for r in neg:
        present = {f"{o['color']} {o['shape']}" for o in scenes[r["image"]]["objects"]}
        question, answer = r["conversations"][0]["value"], r["conversations"][1]["value"]
        assert answer == NOT_PRESENT and not any(f"the {p}." in question for p in present)


def test_task_weights_shape_the_train_mix(tmp_path) -> None:
    from vlbridge.data.shapesworld import ShapesWorldConfig, generate
    summary = generate(ShapesWorldConfig(n=20, seed=1, image_size=32, extra_tasks=["rec_neg"], train_turns=4,
                                         task_weights={"rec": 5, "glyph": 0, "color": 0}), tmp_path)
    mix = summary["per_task"]["train"]
    assert mix["glyph"] == 0 and mix["color"] == 0 and mix["rec"] >= max(v for k, v in mix.items() if k != "rec")
    with pytest.raises(ValueError, match="task_weights"):
        ShapesWorldConfig(task_weights={"nope": 1})


def test_single_turn_tasks_get_their_own_records(tmp_path) -> None:
    from vlbridge.data.shapesworld import ShapesWorldConfig, generate
    grounding = ["rec", "reg", "gcap", "rec_neg"]
    generate(ShapesWorldConfig(n=20, seed=2, image_size=32, extra_tasks=["gcap", "rec_neg"], train_turns=3,
                               single_turn_tasks=grounding, single_turn_records=3), tmp_path)
    train = json.loads((tmp_path / "train.json").read_text())
    mixed = [r for r in train if r["task"] == "mixed"]
    single = [r for r in train if r["task"] != "mixed"]
    assert not any(t in grounding for r in mixed for t in r["tasks"])         # no box can leak between turns
    assert single and all(r["task"] in grounding and len(r["conversations"]) == 2 for r in single)
    per_image = {}
    for r in single:
        per_image.setdefault(r["image"], []).append(r["conversations"][0]["value"])
    assert all(len(q) == len(set(q)) <= 3 for q in per_image.values())
    with pytest.raises(ValueError, match="single_turn"):
        ShapesWorldConfig(single_turn_tasks=["rec"])


def test_single_turn_negatives_never_outnumber_the_objects(tmp_path) -> None:
    from vlbridge.data.shapesworld import ShapesWorldConfig, generate
    generate(ShapesWorldConfig(n=40, seed=4, image_size=32, max_objects=2, extra_tasks=["rec_neg"], train_turns=1,
                               single_turn_tasks=["rec", "rec_neg"], single_turn_records=6), tmp_path)
    scenes = {s["image"]: len(s["objects"]) for s in json.loads((tmp_path / "scenes.json").read_text())}
    negatives = {}
    for r in json.loads((tmp_path / "train.json").read_text()):
        if r["task"] == "rec_neg":
            negatives[r["image"]] = negatives.get(r["image"], 0) + 1
    assert negatives and all(n <= scenes[image] for image, n in negatives.items())
