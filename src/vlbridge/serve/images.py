"""Images of a request, safely: data URLs, allow-listed http(s) URLs, paths inside an allowed folder.

Every source is refused past ``ImageLimits.max_bytes`` before decoding (a data URL from its base64 length),
and past ``max_pixels`` from the header before the pixels are decoded (decompression bombs). Only common
still-image formats are opened; animated images give their first frame. A refused or undecodable image is an
``APIError`` (400) naming the message part it came from.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image

from ..data.images import to_rgb
from .config import ImageLimits
from .errors import bad_request
from .fetch import fetch

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)


def decode_image(data: bytes, limits: ImageLimits, param: str | None = None) -> Image.Image:
    """Encoded bytes -> RGB image, refusing oversized, bomb-sized, truncated or unknown images."""
    if len(data) > limits.max_bytes:
        raise bad_request(f"image is {len(data)} bytes, more than the limit {limits.max_bytes}", param,
                          "image_too_large")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)     # our own pixel cap decides
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError as e:
            raise bad_request(f"image refused as a decompression bomb: {e}", param, "image_too_large") from None
        except Exception as e:
            raise bad_request(f"cannot read the image ({', '.join(FORMATS)} accepted): {type(e).__name__}: {e}",
                              param, "invalid_image") from None
    with img:
        width, height = img.size
        if width * height > limits.max_pixels:
            raise bad_request(f"image is {width}x{height} = {width * height} pixels, more than the limit "
                              f"{limits.max_pixels}", param, "image_too_large")
        try:
            img.load()                                          # first frame of an animation
            rgb, _ = to_rgb(img)
            return rgb.copy() if rgb is img else rgb
        except Exception as e:                                  # truncated data, bad CRC, decoder errors ...
            raise bad_request(f"cannot decode the image: {type(e).__name__}: {e}", param, "invalid_image") from None


def data_url_bytes(url: str, limits: ImageLimits, param: str | None = None) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL; the size is checked before decoding the base64."""
    m = _DATA_URL.match(url[:300])
    if not m or not m.group("b64"):
        raise bad_request("a data URL must look like data:image/png;base64,...", param, "invalid_image_url")
    if m.group("mime") and not m.group("mime").lower().startswith("image/"):
        raise bad_request(f"data URL of type {m.group('mime')!r} is not an image", param, "invalid_image_url")
    payload = url[m.end():]
    if len(payload) * 3 // 4 > limits.max_bytes + 3:
        raise bad_request(f"image is about {len(payload) * 3 // 4} bytes, more than the limit {limits.max_bytes}",
                          param, "image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"the data URL is not valid base64: {e}", param, "invalid_image_url") from None


def local_bytes(url: str, limits: ImageLimits, param: str | None = None) -> bytes:
    """A file inside ``limits.local_dir`` (``file://`` URL or plain path); anything else is refused."""
    path = unquote(urlsplit(url).path) if url.startswith("file:") else url
    if not limits.local_dir:
        raise bad_request("local image paths are not allowed on this server (start it with "
                          "--allowed-local-media-path DIR to allow a folder)", param, "local_path_not_allowed")
    root = Path(limits.local_dir).resolve()
    target = (root / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    if not target.is_relative_to(root):
        raise bad_request(f"image path {path!r} is outside the allowed folder", param, "local_path_not_allowed")
    if not target.is_file():
        raise bad_request(f"image file {path!r} not found in the allowed folder", param, "image_not_found")
    size = target.stat().st_size
    if size > limits.max_bytes:
        raise bad_request(f"image file is {size} bytes, more than the limit {limits.max_bytes}", param,
                          "image_too_large")
    with open(target, "rb") as f:
        return f.read(limits.max_bytes + 1)


def load_request_image(url: str, limits: ImageLimits, param: str | None = None) -> Image.Image:
    """An ``image_url`` of a request -> RGB image, from whichever source it names (if that source is allowed)."""
    scheme = urlsplit(url[:64]).scheme.lower() if ":" in url[:64] else ""
    if scheme == "data":
        data = data_url_bytes(url, limits, param)
    elif scheme in ("http", "https"):
        if not limits.remote_domains:
            raise bad_request("remote image URLs are disabled on this server (send the image as a data URL, or "
                              "start the server with --allow-remote-images DOMAIN)", param, "remote_images_disabled")
        data = fetch(url, limits.remote_domains, limits.max_bytes, limits.remote_timeout, limits.max_redirects,
                     param=param)
    elif scheme in ("", "file") or len(scheme) == 1:                  # a path (or a Windows drive letter)
        data = local_bytes(url, limits, param)
    else:
        raise bad_request(f"unsupported image URL scheme {scheme!r} (data:, http(s) or a local path)", param,
                          "invalid_image_url")
    return decode_image(data, limits, param)
