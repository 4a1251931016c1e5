"""Server options (``vlbridge serve`` flags) and their defaults."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ImageLimits:
    max_bytes: int = 10 * 2**20            # encoded bytes of one image (data URL, download or file)
    max_pixels: int = 25_000_000           # width * height, read from the header before decoding
    max_images: int = 8                    # images in one request
    remote_domains: tuple[str, ...] = ()   # hosts http(s) images may come from (and their subdomains); () = none
    remote_timeout: float = 5.0            # seconds for one download, redirects included
    max_redirects: int = 3
    local_dir: str | None = None           # local paths are refused unless inside this folder


@dataclass
class ServeConfig:
    model_name: str = "vlbridge"           # the id clients pass as "model"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32                    # rows decoded together
    max_prompt_tokens: int | None = None   # None = the model's max_length
    default_max_tokens: int = 256          # when a request gives neither max_tokens nor max_completion_tokens
    default_temperature: float = 0.0       # when a request gives no temperature (0 = greedy)
    cfg_scale: float | None = None         # classifier-free guidance of generated images (None: the writer's own)
    max_body_bytes: int | None = None      # None = enough for max_images images of max_bytes in base64
    images: ImageLimits = field(default_factory=ImageLimits)

    def body_limit(self) -> int:
        return self.max_body_bytes or self.images.max_images * (self.images.max_bytes * 4 // 3 + 1024) + 2**20
