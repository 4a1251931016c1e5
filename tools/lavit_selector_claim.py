"""Does LaVIT's selector keep fewer tokens on simple scenes and more on busy ones? Measured per seed for two ways
of training it, on an arena's data and frozen encoder.

- ``lavit``: as LaVIT trains it: the reconstruction loss reaches the keep/drop decisions through the
  straight-through Gumbel estimator (``--straight_through true --selector_prior 0``);
- ``prior``: the default here: no straight-through gradient, a label-free salience prior (cross-entropy towards
  keeping the batch's patches farthest from the mean feature) teaches it (``--selector_prior 5``).

Everything else is the tokenizer stage's default phase 1 (continuous reconstruction with the keep-ratio target
annealed to 1/3; the selector is frozen after it, so phases 2 and 3 cannot change what it keeps and are skipped).
Each run writes the tokenizer's ``metrics.json`` (val split); this script then prints, per variant, the mean and
95% interval over seeds of: kept tokens per image, the Pearson correlation of kept tokens with the object count,
the kept tokens at 1 / 3 / 6 objects, the share of object and background patches kept, and the continuous
reconstruction cosine. Runs that finished earlier are read, not repeated.

    python tools/lavit_selector_claim.py --arena runs/arena --out runs/lavit_selector --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from vlbridge.arena.stats import interval

VARIANTS = {"lavit": ["--straight_through", "true", "--selector_prior", "0"],
            "prior": ["--straight_through", "false", "--selector_prior", "5"]}
COUNTS = (1, 3, 6)


def run(arena: Path, out: Path, variant: str, seed: int, threads: int) -> dict:
    target = out / f"{variant}-seed{seed}"
    if not (target / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "vlbridge", "lavit", "tokenizer", "--annotations", str(arena / "data" / "scenes.json"),
               "--vision", str(arena / "vision"), "--out", str(target), "--seed", str(seed),
               "--steps_quantized", "0", "--steps_pixels", "0", *VARIANTS[variant]]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads((target / "metrics.json").read_text())


def figures(m: dict) -> dict[str, float]:
    by_count = {int(k): v for k, v in m["kept_by_object_count"].items()}
    row = {"kept": m["kept_mean"], "pearson": m["kept_vs_objects_pearson"],
           "object patches kept": m["kept_share_object_patches"],
           "background kept": m["kept_share_background_patches"], "cosine": m["cosine_continuous"]}
    row.update({f"kept @{k} obj": by_count[k] for k in COUNTS if k in by_count})
    return row


def cell(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    iv = interval([v * scale for v in values])
    return f"{iv.mean:.{digits}f}" + ("" if iv.half is None else f" ± {iv.half:.{digits}f}") + \
        f" [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arena", required=True, help="an arena run dir holding data/ and vision/")
    p.add_argument("--out", required=True, help="where the tokenizer runs go (one dir per variant and seed)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--threads", type=int, default=1, help="threads per run (default: 1)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {v: [figures(run(Path(args.arena), Path(args.out), v, s, args.threads)) for s in seeds] for v in VARIANTS}
    keys = list(rows["prior"][0])
    print(f"seeds {seeds}; mean ± 95% t interval [min, max] over seeds; val split\n")
    print("| selector training | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for variant, runs in rows.items():
        print(f"| {variant} | " + " | ".join(cell([r[k] for r in runs if k in r]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
