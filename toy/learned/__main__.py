"""``python -m toy.learned [--out DIR] [--full]``: the learned-score comparison (:mod:`toy.learned.compare`)."""
from __future__ import annotations

import argparse
import sys

from .compare import run_comparison


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy.learned", description=__doc__)
    p.add_argument("--out", default="results/toy_learned", help="output folder (default results/toy_learned)")
    p.add_argument("--full", action="store_true", help="longer training (eps model 20k iters, heads 6k)")
    p.add_argument("--samples", type=int, default=2000, help="samples per run (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    res = run_comparison(a.out, full=a.full, n_samples=a.samples, seed=a.seed, progress=not a.no_progress)
    print(res["markdown"])
    s = res["summary"]
    print(f"wrote {a.out}/table.csv, table.md, comparison.png, summary.json in {s['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
