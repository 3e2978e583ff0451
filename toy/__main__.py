"""``python -m toy <experiment|all> [--out DIR] [--full]``: the toy experiments of :mod:`toy.experiments`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from toy.experiments import EXPERIMENTS, summarize
    from toy.experiments.common import DEFAULT_OUT, write_json

    p = argparse.ArgumentParser(prog="python -m toy", description=__doc__)
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--full", action="store_true", help="the paper's sizes (slow)")
    p.add_argument("--n", type=int, default=None, help="number of samples / starting points")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; small batches run faster)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    results = {}
    t0 = time.perf_counter()
    for name in names:
        t1 = time.perf_counter()
        results[name] = EXPERIMENTS[name](args.out, full=args.full, n=args.n, seed=args.seed, quiet=args.quiet)
        print(f"[{name}] done in {time.perf_counter() - t1:.1f} s -> {args.out}", file=sys.stderr)
    text = summarize(results)
    total = time.perf_counter() - t0
    text += f"\ntotal time: {total:.1f} s ({'full' if args.full else 'default'} sizes)"
    print(text)
    if args.experiment == "all":
        from toy.experiments.common import atomic_write_text

        atomic_write_text(args.out / "summary.txt", text + "\n")
        write_json(args.out / "summary.json", {k: v["summary"] for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
