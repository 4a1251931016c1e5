"""`vlbridge serve`: an OpenAI-compatible HTTP server (chat completions, streaming) and a web demo at /."""
from __future__ import annotations

import argparse
from pathlib import Path

from .device_args import add_device_flags, load_model


def default_name(model_dir: str) -> str:
    """The model id clients send: the model folder's name (its run's name for RUN/final, RUN/best, RUN/step_N)."""
    path = Path(model_dir).resolve()
    if path.name in ("final", "best") or path.name.startswith("step"):
        return path.parent.name or path.name
    return path.name


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API with a web demo",
                       description=__doc__)
    p.add_argument("--model", required=True, help="saved model dir (e.g. RUN/final)")
    add_device_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--served-model-name", help="the model id clients send (default: the model folder's name, "
                                               "or its run's name for RUN/final)")
    p.add_argument("--max-batch", type=int, default=32, help="requests decoded together (default: 32)")
    p.add_argument("--max-tokens", type=int, default=256,
                   help="answer length when a request sets none (default: 256, capped by the context)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="temperature when a request sets none (default: 0 = greedy)")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance of generated images (default: 3 for LaVIT, 1 = off for Emu)")
    p.add_argument("--max-prompt-tokens", type=int,
                   help="longest prompt, visual tokens included (default: the model's max_length)")
    p.add_argument("--max-images", type=int, default=8, help="images per request (default: 8)")
    p.add_argument("--max-image-bytes", type=int, default=10 * 2**20, help="bytes of one image (default: 10 MiB)")
    p.add_argument("--max-image-pixels", type=int, default=25_000_000,
                   help="width x height of one image, checked before decoding (default: 25000000)")
    p.add_argument("--allow-remote-images", metavar="DOMAIN,...", default="",
                   help="fetch http(s) images from these domains and their subdomains (public addresses only; "
                        "default: none, remote URLs are refused)")
    p.add_argument("--remote-timeout", type=float, default=5.0, help="seconds for one image download (default: 5)")
    p.add_argument("--allowed-local-media-path", metavar="DIR",
                   help="accept image paths / file:// URLs inside DIR (default: local paths are refused)")
    p.add_argument("--threads", type=int, help="torch threads for generation (default: torch's own choice)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from ..serve.app import create_app
    from ..serve.config import ImageLimits, ServeConfig

    if args.allowed_local_media_path and not Path(args.allowed_local_media_path).is_dir():
        raise FileNotFoundError(f"--allowed-local-media-path {args.allowed_local_media_path}: not a directory")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args)
    domains = tuple(d.strip() for d in args.allow_remote_images.split(",") if d.strip())
    cfg = ServeConfig(model_name=args.served_model_name or default_name(args.model), host=args.host, port=args.port,
                      max_batch=args.max_batch, max_prompt_tokens=args.max_prompt_tokens,
                      default_max_tokens=args.max_tokens, default_temperature=args.temperature,
                      cfg_scale=args.cfg_scale,
                      images=ImageLimits(max_bytes=args.max_image_bytes, max_pixels=args.max_image_pixels,
                                         max_images=args.max_images, remote_domains=domains,
                                         remote_timeout=args.remote_timeout,
                                         local_dir=args.allowed_local_media_path))
    print(f"serving {args.model} as {cfg.model_name!r} on http://{args.host}:{args.port} "
          f"(web demo at /, API at /v1/chat/completions)", flush=True)
    uvicorn.run(create_app(model, cfg), host=args.host, port=args.port, log_level=args.log_level)
    return 0
