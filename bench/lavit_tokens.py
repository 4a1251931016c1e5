"""LaVIT selector + merger at the released scale: the kept-token path against the all-token masked reference,
forward and forward + backward, across kept ratios, all measured in one run (the two paths interleaved).

Scale (../shared/reference/lavit.md): 256 patch features (16x16, EVA-CLIP ViT-g/14 at 224 px) of width 1408;
selector 1408 -> 704 -> 352 -> 2; merger of 12 blocks, width 1408, 16 heads, FFN 6144, no position embedding and
no offset bias (LaVIT's plain merger); batch 8. ``--quick``: 64 patches of width 256, 2 blocks, 4 heads, FFN
1024, batch 4.

Decisions: the selector runs (its cost is included in every timing), then each image keeps its k most likely
patches, k spread over the batch from 0.75 to 1.25 x ratio x 256 (at most 256; argmax selection keeps more tokens for busy
images); both paths get exactly these decisions. Per kept ratio, three measurements:

  forward     no gradient (inference: `tokenize`, the connector at eval)
  fwd+bwd     the merger trained, the selector frozen (the `lavit` connector with ``train_merger``)
  fwd+bwd ST  straight-through selection weights: the gradient also reaches the selector (tokenizer training
              with ``straight_through``); the kept-token path then also runs the dropped positions through the
              blocks, without gradient, because that gradient reads their keys and values
              (``TokenMerger``'s docstring)

Printed per ratio: kept tokens per image, the median seconds of each path, old / new, and the new path's time
as a share of its time with every token kept (which should fall about linearly with the ratio).

``--official FILE`` also times the official selector + merger (``TokenPredictor`` + ``TokenMerger`` of
jy0205/LaVIT's ``LaVIT/models/modeling_visual_tokenzier.py``, a local copy; its imports of timm and of the
EVA-CLIP builder, which these two classes do not use, are stubbed) at the same scale and decisions, random
weights (its time does not depend on them).

    python bench/lavit_tokens.py [--quick] [--batch 8] [--reps 2] [--ratios 0.125,0.25,0.333,0.5,1]
                                 [--modes forward,fwd+bwd,st] [--threads 2] [--clock wall|cpu]
                                 [--reference-at 0.333,1] [--official FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types

import torch
from torch import nn

import connectors                                    # bench/ is on sys.path when run as a script
from vlbridge.lavit.merger import TokenMerger
from vlbridge.lavit.merger_reference import merge_all_tokens
from vlbridge.lavit.selector import Selection, TokenSelector

FULL = dict(grid=16, dim=1408, layers=12, heads=16, ffn=6144, batch=8)
QUICK = dict(grid=8, dim=256, layers=2, heads=4, ffn=1024, batch=4)
MODES = ("forward", "fwd+bwd", "st")


def decide(logp: torch.Tensor, ratio: float) -> torch.Tensor:
    """keep [B, N]: each image's k most likely patches, k from 0.75 to 1.25 x ratio x N over the batch (a
    narrower spread where 1.25 x ratio would exceed every patch; ratio 1 keeps everything)."""
    B, N, _ = logp.shape
    s = min(0.25, 1 / ratio - 1)
    spread = torch.linspace(1 - s, 1 + s, B) if B > 1 else torch.ones(1)
    k = (ratio * N * spread).round().clamp(1, N).long()                  # [B]
    rank = (logp[..., 0] - logp[..., 1]).argsort(1, descending=True).argsort(1)   # [B, N] rank of each patch
    return rank < k[:, None]


def step(selector: TokenSelector, merger: TokenMerger, path, x: torch.Tensor, ratio: float, mode: str) -> None:
    """One timed call: selector + merger along `path` (forward, or forward + backward of a squared-output loss)."""
    merger.zero_grad(set_to_none=True)
    selector.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(mode == "st"):
        logp = selector.log_probs(x)                                     # [B, N, 2]
    keep = decide(logp.detach(), ratio)
    hard = keep.to(x.dtype)
    soft = logp[..., 0].exp()
    weight = hard + (soft - soft.detach()) if mode == "st" else hard    # value 0/1; gradient in ST mode
    sel = Selection(keep, weight, soft.detach(), logp.detach())
    with torch.set_grad_enabled(mode != "forward"):
        out = path(x, sel)
        if mode != "forward":
            (out.tokens.square() * out.valid[..., None]).mean().backward()


def load_official(path: str):
    """The official tokenizer module from a local file, with stand-ins for the imports its selector and merger
    do not use (timm's init helpers: torch's; the EVA-CLIP builder: never called)."""
    layers = types.ModuleType("timm.models.layers")
    layers.trunc_normal_, layers.drop_path, layers.to_2tuple = nn.init.trunc_normal_, None, None
    encoder = types.ModuleType("models.modeling_visual_encoder")
    encoder.build_eva_clip = None
    for name, module in {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                         "timm.models.layers": layers, "models": types.ModuleType("models"),
                         "models.modeling_visual_encoder": encoder}.items():
        sys.modules.setdefault(name, module)
    spec = importlib.util.spec_from_file_location("lavit_official_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_step(predictor, merger, x: torch.Tensor, ratio: float, mode: str) -> None:
    """The same call through the official TokenPredictor + TokenMerger (decisions as a 0/1 float policy)."""
    merger.zero_grad(set_to_none=True)
    predictor.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(mode == "st"):
        logp = predictor(x, torch.ones(*x.shape[:2], 1))                # [B, N, 2]
    keep = decide(logp.detach(), ratio)
    hard = keep.to(x.dtype)
    soft = logp[..., 0].exp()
    policy = hard + (soft - soft.detach()) if mode == "st" else hard
    with torch.set_grad_enabled(mode != "forward"):
        out = merger(x, policy)                                          # [B, N, D] every position
        if mode != "forward":
            (out.square() * hard[..., None]).mean().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small scale (seconds instead of an hour)")
    ap.add_argument("--batch", type=int, help="images per batch (default: 8, --quick 4)")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions per measurement (median; default 2)")
    ap.add_argument("--ratios", default="0.125,0.25,0.333,0.5,1", help="kept ratios (default: 1/8 1/4 1/3 1/2 all)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"measurements (default: {','.join(MODES)})")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    ap.add_argument("--reference-at", default="0.333,1", help="kept ratios at which the all-token reference (and "
                    "--official) is timed too; its cost does not depend on the ratio (default: 0.333,1)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, robust to other "
                         "processes loading the machine)")
    ap.add_argument("--official", metavar="FILE", help="jy0205/LaVIT's LaVIT/models/modeling_visual_tokenzier.py "
                                                      "(a local copy): time its selector + merger too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    connectors.CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    scale = QUICK if args.quick else FULL
    B, N, D = args.batch or scale["batch"], scale["grid"] ** 2, scale["dim"]
    modes = args.modes.split(",")
    if any(m not in MODES for m in modes):
        ap.error(f"--modes: choose from {MODES}")
    torch.manual_seed(0)
    selector = TokenSelector(D)
    merger = TokenMerger(D, scale["heads"], scale["layers"], scale["ffn"] / D)
    x = torch.randn(B, N, D)
    print(f"scale: {N} patches of width {D}, merger {scale['layers']} blocks, {scale['heads']} heads, FFN "
          f"{scale['ffn']}; batch {B}; {args.threads} threads; {args.clock} clock; median of {args.reps} interleaved "
          f"repetitions")
    paths = {"new": merger, "old": lambda x_, s_: merge_all_tokens(merger, x_, s_)}
    official = None
    if args.official:
        mod = load_official(args.official)
        torch.manual_seed(0)
        official = (mod.TokenPredictor(D), mod.TokenMerger(D, scale["heads"], scale["layers"], scale["ffn"] / D,
                                                           qkv_bias=True))
    ratios = [float(r) for r in args.ratios.split(",")]
    reference_at = [float(r) for r in args.reference_at.split(",")]
    for mode in modes:
        label = {"forward": "forward", "fwd+bwd": "forward+backward (merger trained)",
                 "st": "forward+backward, straight-through (selector and merger trained)"}[mode]
        print(f"\n{label}")
        print(f"{'kept ratio':>10}{'kept/image':>14}{'new s':>9}{'old s':>9}{'old/new':>9}{'new vs all kept':>17}"
              + (f"{'official s':>12}{'official/new':>14}" if official else ""))
        rows = {}
        for ratio in ratios:
            with torch.no_grad():
                kept = decide(selector.log_probs(x), ratio).sum(1)
            timed = paths if any(abs(ratio - r) < 1e-6 for r in reference_at) else {"new": merger}
            fns = {name: (lambda p=p: step(selector, merger, p, x, ratio, mode)) for name, p in timed.items()}
            if official and "old" in timed:
                fns["official"] = lambda: official_step(*official, x, ratio, mode)
            t = connectors.interleaved(fns, args.reps)
            rows[ratio] = (kept, t)
        base = rows[max(ratios)][1]["new"]
        for ratio, (kept, t) in rows.items():
            old = f"{t['old']:>9.2f}{t['old'] / t['new']:>8.2f}x" if "old" in t else f"{'-':>9}{'-':>9}"
            line = f"{ratio:>10.3f}{f'{int(kept.min())}-{int(kept.max())}':>14}{t['new']:>9.2f}{old}{t['new'] / base:>16.0%}"
            if "official" in t:
                line += f"{t['official']:>12.2f}{t['official'] / t['new']:>13.2f}x"
            print(line)


if __name__ == "__main__":
    main()
