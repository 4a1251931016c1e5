"""Image loading: header checks, full decoding and conversion of every supported mode to 8-bit RGB.

``open_header`` reads only an image's header (to check that it exists, is readable and is within the
pixel limit, ``MAX_IMAGE_PIXELS`` by default) without decoding pixels; ``load_image`` decodes the whole
image and converts it to RGB: alpha composited on white, palettes expanded, 16-bit, 32-bit integer and
float images scaled to 8 bit. Each conversion is reported as a note, or refused with
``image_modes="reject"``. Every failure is an :class:`ImageError` whose ``kind`` says what went wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..errors import UserError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ImageError",
    "ImageModes",
    "check_image_modes",
    "describe_conversion",
    "load_image",
    "open_header",
]

MAX_IMAGE_PIXELS = 64_000_000

ImageModes = Literal["convert", "reject"]


class ImageError(UserError):
    """An image that cannot be used; ``kind`` is "missing_image", "unreadable_image", "image_mode" or
    "image_too_large" (the image kinds of ``records.ERROR_KINDS``)."""

    def __init__(self, kind: str, problem: str):
        super().__init__(kind, problem)
        self.kind = kind
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


def describe_conversion(mode: str, info: dict[str, Any]) -> str:
    """The note for converting an image of ``mode`` to RGB."""
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return f"{mode} image converted to RGB (alpha composited on white)"
    if mode == "P":
        if "transparency" in info:
            return "P (palette) image with transparency converted to RGB (via RGBA, composited on white)"
        return "P (palette) image converted to RGB"
    if mode.startswith("I;16"):
        return f"{mode} (16-bit) image scaled to 8 bit (divided by 257) and converted to RGB"
    if mode in ("I", "F"):
        bits = "32-bit integer" if mode == "I" else "32-bit float"
        return f"{mode} ({bits}) image scaled to 8 bit by its value range and converted to RGB"
    if mode in ("L", "1"):
        return f"{mode} (greyscale) image converted to RGB"
    return f"{mode} image converted to RGB"


def _composite_on_white(img: Image.Image) -> Image.Image:
    if img.mode == "La":
        img = img.convert("LA")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _scale_wide(img: Image.Image) -> tuple[Image.Image, str]:
    """Scale a 16-bit, 32-bit integer or float image to 8-bit RGB by its value range."""
    a = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        return _grey_to_rgb(a / 257.0), describe_conversion(img.mode, img.info)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        how, out = "values in [0, 1] multiplied by 255", a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        how, out = "values already in 0..255", a
    elif img.mode == "I" and lo >= 0.0 and hi <= 65535.0:
        how, out = "16-bit values divided by 257", a / 257.0
    elif hi > lo:
        how, out = f"range {lo:g}..{hi:g} stretched to 0..255", (a - lo) * (255.0 / (hi - lo))
    else:
        how, out = f"constant value {lo:g} mapped to 0", np.zeros_like(a)
    return _grey_to_rgb(out), f"{img.mode} image scaled to 8 bit ({how}) and converted to RGB"


def to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert a decoded image to RGB; return it with a note (None for plain RGB)."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _scale_wide(img)
    note = describe_conversion(mode, img.info)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(img), note
    try:
        return img.convert("RGB"), note
    except (ValueError, OSError) as e:
        raise ImageError("image_mode", f"unsupported image mode {mode!r}: {e}") from None


def open_header(path: Path, max_pixels: int | None) -> Image.Image:
    """Open ``path`` reading only the header; refuse unreadable files and bombs.

    The caller owns (and must close) the returned image.
    """
    if not path.is_file():
        raise ImageError("missing_image", f"image file not found: {path}")
    with warnings.catch_warnings():
        # Our own max_pixels check below is authoritative; PIL's warning is redundant.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ImageError("image_too_large", f"image {path} refused by PIL as a decompression bomb: {e}") from None
        except Exception as e:  # PIL raises many types for corrupt headers
            raise ImageError("unreadable_image", f"cannot read image {path}: {type(e).__name__}: {e}") from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageError(
            "image_too_large",
            f"image {path} is {width}x{height} = {width * height} pixels, more than the limit {max_pixels}",
        )
    return img


def load_image(
    path: str | Path,
    *,
    image_modes: ImageModes = "convert",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    where: str = "",
) -> tuple[Image.Image, str | None]:
    """Fully decode ``path`` and return ``(rgb_image, note)``.

    The size is checked from the header before any pixel is decoded. Non-RGB modes
    are converted (``note`` says how) or, with ``image_modes="reject"``, refused.
    ``where`` (e.g. ``record.where``) prefixes messages and notes.
    Raises :class:`ImageError` for missing, unreadable, too large or rejected images.
    """
    check_image_modes(image_modes)
    prefix = f"{where}: " if where else ""
    try:
        rgb, note = _decode(Path(path), image_modes, max_pixels)
    except ImageError as e:
        raise ImageError(e.kind, prefix + e.problem) from None
    return rgb, (prefix + f"image {path}: {note}" if note and where else note)


def _decode(path: Path, image_modes: ImageModes, max_pixels: int | None) -> tuple[Image.Image, str | None]:
    with open_header(path, max_pixels) as img:
        if image_modes == "reject" and img.mode != "RGB":
            raise ImageError("image_mode", f"image {path} has mode {img.mode!r}, expected RGB")
        try:
            img.load()
        except Exception as e:  # truncated data, bad CRC, decoder errors ...
            raise ImageError("unreadable_image", f"cannot decode image {path}: {type(e).__name__}: {e}") from None
        rgb, note = to_rgb(img)
        if rgb is img:
            rgb = img.copy()  # detach from the file handle closed by the with-block
    return rgb, note


def check_image_modes(image_modes: str) -> None:
    if image_modes not in ("convert", "reject"):
        raise ValueError(f"image_modes must be 'convert' or 'reject', not {image_modes!r}")


def tensor_to_image(pixels) -> Image.Image:
    """A painted image tensor [3, S, S] in [0, 1] (any device or dtype) -> an RGB PIL image."""
    arr = (pixels.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")
