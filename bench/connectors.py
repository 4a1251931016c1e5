"""Forward + backward time of every registered connector at ParGo's released scale, and ParGo's structured
path against its dense-mask reference, all measured in one run.

Scale (the released ParGo configuration, see ../shared/reference/pargo.md): 576 patch features (24x24, the
EVA02-CLIP-L/14 grid at 336 px) of width 1024, batch 8, LLM width 4096 (InternLM2-7B). ParGo: 288 partial
+ 16 global queries, hidden 768, 12 heads, 4 layers (the released depth is not published; BERT-small has 4),
in the released window layout: raster windows of k = 576 / 288 = 2 patches (a 1x2 tile on the grid), with
our default cascade schedule (radii 0, 1, 2, all). Every other connector runs with its own default options.
``--quick``: 12x12 patches of width 256, batch 4, LLM width 512, 72 + 8 queries, hidden 192.

Per connector: visual tokens, parameters, forward GFLOPs (the connector's own ``flops()``), median seconds
per forward + backward (gradients for the connector's parameters; the encoder is frozen) and the achieved
GFLOP/s (3 x forward FLOPs / time). Then ParGo structured vs dense, timed interleaved (the machine is
shared and noisy: ratios from interleaved runs are more stable than absolute times), for the whole
connector and for its two attention blocks alone (CPP self-attention, PGP cross-attention incl. its
projections), with the share of the dense forward FLOPs that the structure removes.

    python bench/connectors.py [--quick] [--reps 3] [--threads 2] [--only pargo,mlp]
"""
from __future__ import annotations

import argparse
import statistics
import time
import traceback

import torch

from vlbridge.connectors import CONNECTORS, VisualFeatures, build_connector

FULL = dict(grid=(24, 24), vis=1024, llm=4096, batch=8,
            pargo=dict(windows="raster", num_partial=288, num_global=16, hidden=768, heads=12, layers=4))
QUICK = dict(grid=(12, 12), vis=256, llm=512, batch=4,
             pargo=dict(windows="raster", num_partial=72, num_global=8, hidden=192, heads=4, layers=4))


def fwd_bwd(connector, feats: VisualFeatures) -> None:
    connector.zero_grad(set_to_none=True)
    out = connector(feats)
    (out.tokens.square().mean() + sum(out.aux_losses.values(), torch.zeros(()))).backward()


def timed(fn, reps: int) -> list[float]:
    fn()                                                     # warm-up (allocations, kernels)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def interleaved(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each fn, alternating between them every repetition."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def connector_table(scale: dict, names: list[str], reps: int) -> None:
    rows, cols = scale["grid"]
    x = torch.randn(scale["batch"], rows * cols, scale["vis"])
    feats = VisualFeatures(x, (rows, cols))
    print(f"{'connector':<14}{'tokens':>8}{'params':>10}{'GFLOP fwd':>11}{'fwd+bwd s':>11}{'GFLOP/s':>9}")
    for name in names:
        options = scale.get(name, {})
        try:
            torch.manual_seed(0)
            c = build_connector(name, options, scale["vis"], scale["llm"], (rows, cols)).train()
            secs = statistics.median(timed(lambda: fwd_bwd(c, feats), reps))
            gflop = c.flops(scale["batch"]) / 1e9
            print(f"{name:<14}{c.num_tokens():>8}{c.num_parameters() / 1e6:>9.1f}M{gflop:>11.1f}{secs:>11.2f}"
                  f"{3 * gflop / secs:>9.0f}")
        except Exception as e:                              # a connector that needs more than patch features
            print(f"{name:<14}  skipped: {type(e).__name__}: {str(e).splitlines()[0][:90]}")
            if isinstance(e, (RuntimeError, AssertionError)):
                traceback.print_exc(limit=2)


def pargo_comparison(scale: dict, reps: int) -> None:
    rows, cols = scale["grid"]
    b = scale["batch"]
    x = torch.randn(b, rows * cols, scale["vis"])
    feats = VisualFeatures(x, (rows, cols))
    for cpp in ("cascade", "all"):
        made = {}
        for impl in ("structured", "dense"):
            torch.manual_seed(0)
            made[impl] = build_connector("pargo", {**scale["pargo"], "cpp": cpp, "attention_impl": impl},
                                         scale["vis"], scale["llm"], (rows, cols)).train()
        made["dense"].load_state_dict(made["structured"].state_dict())
        s, d = made["structured"], made["dense"]
        t = interleaved({k: (lambda c=c: fwd_bwd(c, feats)) for k, c in made.items()}, reps)
        flops_s, flops_d = s.flops(b), d.flops(b)
        print(f"pargo cpp={cpp:<8} whole connector fwd+bwd: structured {t['structured']:.2f} s, dense "
              f"{t['dense']:.2f} s -> {t['dense'] / t['structured']:.2f}x faster; forward FLOPs "
              f"{flops_s / 1e9:.1f} vs {flops_d / 1e9:.1f} G ({1 - flops_s / flops_d:.1%} fewer)")
        blocks(s, d, x, reps)


def blocks(s, d, x: torch.Tensor, reps: int) -> None:
    """The two attention blocks of layer 2 alone (image-dependent input), structured vs dense, fwd+bwd."""
    layer_s, layer_d = s.layers[1], d.layers[1]
    g = s.geometry
    with torch.no_grad():
        feats = s.vision_norm(x)
        h = s.project(feats, upto=1)                          # [B, T, H] states entering layer 2
    p, r = s.num_partial, g.radii[1]
    band = None if r is None else s.bands[1]
    mix = s.options.mix_partial_global

    def cpp(layer, structured):
        hh = h.clone().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        layer.self_attention(hh, p, s.self_masks[1], band, r, mix, structured).square().mean().backward()

    def pgp(layer, structured):
        hh = h.clone().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        layer.cross_attention(hh, feats, p, s.cross_mask, s.window_index, s.window_partition,
                              structured).square().mean().backward()

    for name, fn in (("CPP self-attention", cpp), ("PGP cross-attention", pgp)):
        t = interleaved({"structured": lambda: fn(layer_s, True), "dense": lambda: fn(layer_d, False)}, reps)
        print(f"    layer-2 {name:<20} structured {t['structured'] * 1e3:7.0f} ms, dense "
              f"{t['dense'] * 1e3:7.0f} ms -> {t['dense'] / t['structured']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller scale (seconds instead of minutes)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per measurement (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    ap.add_argument("--only", help="comma-separated connectors for the table (default: every registered one)")
    ap.add_argument("--skip-table", action="store_true", help="only the ParGo structured/dense comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scale = QUICK if args.quick else FULL
    rows, cols = scale["grid"]
    print(f"scale: {rows}x{cols} = {rows * cols} patches of width {scale['vis']}, batch {scale['batch']}, "
          f"LLM width {scale['llm']}, {args.threads} threads; pargo {scale['pargo']}")
    if not args.skip_table:
        names = args.only.split(",") if args.only else list(CONNECTORS)
        connector_table(scale, names, args.reps)
    pargo_comparison(scale, args.reps)


if __name__ == "__main__":
    main()
