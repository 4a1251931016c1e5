"""A PNG grid of samples: one row per prompt (real render | tokenizer reconstruction | generated ...), the
prompt and a check mark (the checker's verdict) written under each row."""
from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

CELL, PAD, TEXT_H = 128, 6, 30


def sample_grid(rows: list[list[Image.Image]], prompts: list[str], column_titles: list[str],
                verdicts: list[bool] | None = None, per_line: int = 2) -> Image.Image:
    """rows[i] = the images for prompts[i]; rows are laid out ``per_line`` to a line of the grid."""
    n_cols = len(column_titles)
    block_w = n_cols * (CELL + PAD) + PAD
    block_h = CELL + TEXT_H + PAD
    lines = (len(rows) + per_line - 1) // per_line
    sheet = Image.new("RGB", (per_line * block_w, 16 + lines * block_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k in range(min(per_line, len(rows))):
        for c, title in enumerate(column_titles):
            draw.text((k * block_w + PAD + c * (CELL + PAD), 2), title, fill=(0, 0, 0), font=font)
    for i, (images, prompt) in enumerate(zip(rows, prompts)):
        x0, y0 = (i % per_line) * block_w, 16 + (i // per_line) * block_h
        for c, im in enumerate(images):
            sheet.paste(im.resize((CELL, CELL), Image.NEAREST), (x0 + PAD + c * (CELL + PAD), y0))
        mark = "" if verdicts is None else ("[ok] " if verdicts[i] else "[x] ")
        text = "\n".join(textwrap.wrap(mark + prompt, width=block_w // 6)[:2])
        draw.text((x0 + PAD, y0 + CELL + 2), text, fill=(0, 0, 0), font=font)
    return sheet
