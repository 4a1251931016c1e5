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
connector and for the PGP cross-attention core alone (projections precomputed), with the share of the
dense forward FLOPs the structure removes and the share of the dense time the cross-attention cores take
(which bounds the whole-connector ratio). Beside them, the structured path's achieved FLOP/s (3 x its forward
FLOPs / its fwd+bwd time) against the fp32 matmul peak measured in the same run, just before and just after
the comparison (the best of several 1024^3 matmuls, as bench/train_step.py measures it, on the same clock).

    python bench/connectors.py [--quick] [--reps 3] [--threads 2] [--clock wall|cpu] [--only pargo,mlp] [--skip-table]
"""
from __future__ import annotations

import argparse
import statistics
import time
import traceback

import torch

from train_step import matmul_peak                   # bench/ is on sys.path when run as a script
from vlbridge.connectors import CONNECTORS, VisualFeatures, build_connector

FULL = dict(grid=(24, 24), vis=1024, llm=4096, batch=8,
            pargo=dict(windows="raster", num_partial=288, num_global=16, hidden=768, heads=12, layers=4),
            lavit=dict(image_size=384, pixel_channels=[64, 32, 16, 8]),     # its pixel decoder: 24 -> 384 px
            lion={})                                                     # LION's sizes (BLIP-2 Q-Former, 16 heads)
QUICK = dict(grid=(12, 12), vis=256, llm=512, batch=4,
             pargo=dict(windows="raster", num_partial=72, num_global=8, hidden=192, heads=4, layers=4),
             lavit=dict(image_size=192, pixel_channels=[64, 32, 16, 8]),
             lion=dict(qformer=dict(hidden=192, layers=4, heads=4, intermediate=768), aggregator_heads=4))


def fwd_bwd(connector, feats: VisualFeatures) -> None:
    connector.zero_grad(set_to_none=True)
    out = connector(feats)
    (out.tokens.square().mean() + sum(out.aux_losses.values(), torch.zeros(()))).backward()


CLOCK = time.perf_counter                                    # --clock cpu: time.process_time


def timed(fn, reps: int) -> list[float]:
    fn()                                                     # warm-up (allocations, kernels)
    times = []
    for _ in range(reps):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return times


def interleaved(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each fn, alternating between them every repetition."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = CLOCK()
            fn()
            times[k].append(CLOCK() - t)
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
            # the other encoder layers a connector reads (LION's aggregator: two intermediate ones), as tokens
            feats.hidden = {i: torch.randn(scale["batch"], rows * cols, scale["vis"]) for i in c.encoder_layers()}
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
        peak_before = matmul_peak(clock=CLOCK)
        t = interleaved({k: (lambda c=c: fwd_bwd(c, feats)) for k, c in made.items()}, reps)
        peaks = (peak_before, matmul_peak(clock=CLOCK))
        flops_s, flops_d = s.flops(b), d.flops(b)
        print(f"pargo cpp={cpp:<8} whole connector fwd+bwd: structured {t['structured']:.2f} s, dense "
              f"{t['dense']:.2f} s -> {t['dense'] / t['structured']:.2f}x faster; forward FLOPs "
              f"{flops_s / 1e9:.1f} vs {flops_d / 1e9:.1f} G ({1 - flops_s / flops_d:.1%} fewer)")
        achieved = 3 * flops_s / t["structured"]
        print(f"    structured achieves {achieved / 1e9:.0f} GFLOP/s; fp32 matmul peak in this run "
              f"{max(peaks) / 1e9:.0f} GFLOP/s (before {peaks[0] / 1e9:.0f}, after {peaks[1] / 1e9:.0f}) -> "
              f"{achieved / max(peaks):.0%} of the best peak")
        dense_core = cross_attention_core(s, x, reps)
        share = len(s.layers) * dense_core / t["dense"]
        print(f"    the dense cross-attention cores are ~{share:.0%} of the dense connector's fwd+bwd "
              f"({len(s.layers)} x {dense_core * 1e3:.0f} ms): a free cross-attention would make it at most "
              f"{1 / (1 - share):.2f}x faster; the projections and FFNs (the same in both paths) bound the ratio")


def cross_attention_core(s, x: torch.Tensor, reps: int) -> float:
    """Layer 2's PGP cross-attention core alone (projections precomputed), structured vs dense, fwd+bwd.
    (The CPP self-attention is one masked SDPA over T x T in both paths.) Returns the dense seconds."""
    layer, p = s.layers[1], s.num_partial
    with torch.no_grad():
        feats = s.vision_norm(x)
        h = s.project(feats, upto=1)                                    # [B, T, H] states entering layer 2
        q, kv = layer.cross_q(h), layer.cross_kv(feats)                 # [B, T, H], [B, N, 2H]

    def run(fn):
        a, b = q.clone().requires_grad_(True), kv.clone().requires_grad_(True)
        fn(a, b).square().mean().backward()

    t = interleaved({"structured": lambda: run(lambda a, b: layer.windowed_attention(a, b, p, s.window_index,
                                                                                     s.window_partition)),
                     "dense": lambda: run(lambda a, b: layer.masked_attention(a, b, s.cross_mask))}, reps)
    print(f"    PGP cross-attention core (one layer): structured {t['structured'] * 1e3:.0f} ms, dense "
          f"{t['dense'] * 1e3:.0f} ms -> {t['dense'] / t['structured']:.2f}x")
    return t["dense"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller scale (seconds instead of minutes)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per measurement (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    ap.add_argument("--only", help="comma-separated connectors for the table (default: every registered one)")
    ap.add_argument("--skip-table", action="store_true", help="only the ParGo structured/dense comparison")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, robust to other "
                         "processes loading the machine)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    scale = QUICK if args.quick else FULL
    rows, cols = scale["grid"]
    print(f"scale: {rows}x{cols} = {rows * cols} patches of width {scale['vis']}, batch {scale['batch']}, "
          f"LLM width {scale['llm']}, {args.threads} threads, {args.clock} clock; pargo {scale['pargo']}")
    if not args.skip_table:
        names = args.only.split(",") if args.only else list(CONNECTORS)
        connector_table(scale, names, args.reps)
    pargo_comparison(scale, args.reps)


if __name__ == "__main__":
    main()
