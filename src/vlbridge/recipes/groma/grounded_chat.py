"""Grounded chat: prompts for grounded captions and region questions, the answer's phrases with boxes, a PNG.

Works for both grounding approaches: a text-coordinate model writes boxes itself, a region-token model's
``<roi><rj></roi>`` is turned into region j's box by ``VLBridgeModel.decode_answers`` before this module
reads the answer.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ...data.shapesworld import SHORT_ANSWER_SUFFIX
from ...errors import UserError
from ...data.boxes import Box, format_box, parse_box
from ...data.grounded_phrases import grounded_phrases

GROUNDED_PROMPT = "Describe the image briefly, with a box for each object."     # ShapesWorld's gcap question
REGION_PROMPT = "What is the object at {region}?\n" + SHORT_ANSWER_SUFFIX     # ShapesWorld's reg question
REGION_PLACEHOLDER = "<region>"
PALETTE = [(0, 255, 0), (255, 64, 255), (0, 200, 255), (255, 200, 0), (255, 80, 80), (160, 160, 255)]


def parse_region(text: str, image_size: tuple[int, int]) -> Box:
    """"x1,y1,x2,y2" (normalised, or pixels of the image) -> a normalised box; a clear error otherwise."""
    parsed = parse_box(f"[{text}]", image_size)
    if not parsed.ok:
        raise UserError(f"--region {text!r}: {parsed.error} (expected x1,y1,x2,y2, normalised or in pixels)")
    return parsed.box


def grounded_prompt(prompt: str | None, region: Box | None) -> str:
    """The question to ask: the user's prompt with the region's box text in place of <region> (or appended),
    else a region question, else the grounded-caption question."""
    box = format_box(region) if region is not None else None
    if prompt is None:
        return REGION_PROMPT.format(region=box) if box else GROUNDED_PROMPT
    if box is None:
        return prompt
    return prompt.replace(REGION_PLACEHOLDER, box) if REGION_PLACEHOLDER in prompt else f"{prompt} {box}"


def phrase_boxes(answer: str, fallback: str = "") -> list[tuple[str, Box]]:
    """(phrase, box) pairs of an answer; a box with no phrase before it is labelled ``fallback``."""
    return [(phrase or fallback, box) for phrase, box in grounded_phrases(answer)]


def describe(answer: str, pairs: list[tuple[str, Box]]) -> str:
    lines = [answer]
    lines += [f"  {phrase or '(box)'}: {format_box(box)}" for phrase, box in pairs]
    if not pairs:
        lines.append("  (no boxes in the answer)")
    return "\n".join(lines)


def draw_grounding(image: Image.Image, pairs: list[tuple[str, Box]], out: str | Path, min_side: int = 384,
                   region: Box | None = None) -> Path:
    """Draw each (phrase, box) with its label (and the asked region dashed in white); write a PNG.

    Small images are enlarged (nearest neighbour) to at least ``min_side`` pixels so labels stay legible."""
    scale = max(1, -(-min_side // min(image.size)))
    canvas = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    W, H = canvas.size
    if region is not None:
        x1, y1, x2, y2 = region[0] * W, region[1] * H, region[2] * W, region[3] * H
        for i in range(int(x1), int(x2), 8):
            draw.line([(i, y1), (min(i + 4, x2), y1)], fill="white", width=2)
            draw.line([(i, y2), (min(i + 4, x2), y2)], fill="white", width=2)
        for j in range(int(y1), int(y2), 8):
            draw.line([(x1, j), (x1, min(j + 4, y2))], fill="white", width=2)
            draw.line([(x2, j), (x2, min(j + 4, y2))], fill="white", width=2)
    for k, (phrase, box) in enumerate(pairs):
        color = PALETTE[k % len(PALETTE)]
        x1, y1, x2, y2 = box[0] * W, box[1] * H, box[2] * W, box[3] * H
        draw.rectangle([x1, y1, x2, y2], outline=color, width=3)
        label = phrase or f"box {k}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tx, ty = min(max(0, x1), W - (right - left) - 4), y1 - (bottom - top) - 6
        if ty < 0:
            ty = min(y2 + 2, H - (bottom - top) - 4)
        draw.rectangle([tx, ty, tx + right - left + 4, ty + bottom - top + 4], fill=color)
        draw.text((tx + 2, ty + 2 - top), label, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out
