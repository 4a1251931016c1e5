"""ShapesWorld generation speed: seconds and scenes/s to write a dataset (PNGs + JSON) into a temporary folder.

    python bench/shapesworld.py [--n 3000] [--seed 0] [--repeats 3]

Prints one line per repeat and the best; the dataset is the default ``ShapesWorldConfig`` with ``--n`` scenes.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from vlbridge.data.shapesworld import ShapesWorldConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="scenes to generate (default: 3000)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed generations (default: 3)")
    args = parser.parse_args()
    times = []
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = generate(ShapesWorldConfig(n=args.n, seed=args.seed), out)
            times.append(time.perf_counter() - start)
        records = summary["train"] + summary["val"] + summary["test"]
        print(f"run {k}: {args.n} scenes, {records} records in {times[-1]:.2f} s ({args.n / times[-1]:.0f} scenes/s)")
    print(f"best: {min(times):.2f} s ({args.n / min(times):.0f} scenes/s)")


if __name__ == "__main__":
    main()
