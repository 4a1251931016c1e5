"""The device flags every command that runs a saved model shares: ``--device`` and ``--dtype``.

    vlbridge eval --model RUN/final --data test.json --device cuda --dtype bf16

``--device auto`` takes CUDA, then MPS, then the CPU; ``--dtype auto`` runs the whole model in bf16 on a CUDA GPU
(fp16 on GPUs without bf16) and in fp32 elsewhere. The model is loaded onto that device once; everything it
computes (batches, caches, generation, metrics' inputs) follows it from there.
"""
from __future__ import annotations

import argparse

from ..config import DEVICES, PRECISIONS


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the model runs: auto = cuda, then mps, then cpu (default: auto)")
    parser.add_argument("--dtype", default="auto", choices=PRECISIONS,
                        help="the weights' dtype for inference: auto = bf16 on CUDA, fp32 elsewhere (default: auto)")


def load_model(args: argparse.Namespace, path=None):
    """The saved model ``path`` (default ``args.model``) on ``args.device`` in ``args.dtype``, in eval mode."""
    from ..models.device import resolve_device
    from ..models.precision import DTYPES, resolve_precision
    from ..models.vlm import VLBridgeModel
    device = resolve_device(getattr(args, "device", "auto"))
    dtype = DTYPES[resolve_precision(getattr(args, "dtype", "auto"), device)]
    return VLBridgeModel.from_pretrained(path or args.model, device=device, dtype=dtype)
