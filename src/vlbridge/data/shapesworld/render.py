"""Rendering: a scene drawn as a flat-coloured RGB image (no antialiasing, so pixels are deterministic)."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .config import ShapesWorldConfig
from .constants import BACKGROUND, COLORS, GLYPH_DARK, GLYPH_LIGHT, LIGHT_COLORS
from .glyphs import GLYPH_H, GLYPH_W, GLYPHS
from .scenes import Obj, PixelBox, Scene


def _pixel_box(obj: Obj, image_size: int) -> PixelBox:
    x0, y0, x1, y1 = (round(v * image_size) for v in obj.box)
    return x0, y0, x1, y1


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: PixelBox, fill: tuple[int, int, int]) -> None:
    x0, y0 = box[0], box[1]
    x1, y1 = box[2] - 1, box[3] - 1  # inclusive corner for PIL
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def glyph_origin(obj: Obj, image_size: int, scale: int) -> tuple[int, int]:
    """Top-left pixel of the object's glyph: centred on the box, lower on triangles."""
    x0, y0, x1, y1 = _pixel_box(obj, image_size)
    cx = (x0 + x1) / 2
    cy = y0 + (x1 - x0) * 0.64 if obj.shape == "triangle" else (y0 + y1) / 2
    return round(cx - GLYPH_W * scale / 2), round(cy - GLYPH_H * scale / 2)


def _draw_glyph(draw: ImageDraw.ImageDraw, char: str, origin: tuple[int, int],
                scale: int, fill: tuple[int, int, int]) -> None:
    gx, gy = origin
    for row, line in enumerate(GLYPHS[char]):
        for col, cell in enumerate(line):
            if cell == "#":
                x, y = gx + col * scale, gy + row * scale
                draw.rectangle((x, y, x + scale - 1, y + scale - 1), fill=fill)


def glyph_color(color: str) -> tuple[int, int, int]:
    """Ink colour of a glyph on an object of ``color``: black on light, white on dark."""
    return GLYPH_DARK if color in LIGHT_COLORS else GLYPH_LIGHT


def render_scene(scene: Scene, cfg: ShapesWorldConfig) -> Image.Image:
    """Draw the scene on a flat dark background (RGB, no antialiasing, deterministic)."""
    image = Image.new("RGB", (cfg.image_size, cfg.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_shape(draw, obj.shape, _pixel_box(obj, cfg.image_size), COLORS[obj.color])
        if obj.glyph is not None:
            origin = glyph_origin(obj, cfg.image_size, cfg.glyph_scale)
            _draw_glyph(draw, obj.glyph, origin, cfg.glyph_scale, glyph_color(obj.color))
    return image
