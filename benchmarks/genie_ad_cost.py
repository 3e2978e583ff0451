"""Cost of a GENIE step with autodiff derivatives, in forward passes of the network, on a small conv net.

GENIE with ``derivative="autodiff"`` costs one forward pass (eps) plus one ``torch.func.jvp`` (whose
primal is eps again) per step; ``derivative="autodiff_fused"`` one JVP per step (the xbar tangent from
the previous step's prediction, second order but not bit-identical).  Printed: wall time per step
relative to one forward pass of the same network and batch (ratios in one run; DDIM is the 1.0x
baseline plus the sampler's own overhead).

    python benchmarks/genie_ad_cost.py [--batch 64] [--size 16] [--width 64] [--steps 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taylorsolve.diffusion import sample  # noqa: E402


class SmallConvNet(nn.Module):
    """A few residual conv blocks with GroupNorm, SiLU and a time embedding (U-Net-like cost profile)."""

    def __init__(self, channels: int = 1, width: int = 64, blocks: int = 3):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.temb = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1)) for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.temb(torch.log(t)[:, None])[:, :, None, None]
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def timeit(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = SmallConvNet(width=args.width).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x1 = torch.randn(args.batch, 1, args.size, args.size)
    tb = torch.full((args.batch,), 0.5)
    with torch.no_grad():
        fwd = timeit(lambda: net(x1, tb), 10)
        jvp = timeit(lambda: torch.func.jvp(lambda x, t: net(x, t), (x1, tb), (x1, torch.ones_like(tb))), 10)
    print(f"SmallConvNet width {args.width}, batch {args.batch}, {args.size}x{args.size}, float32, "
          f"{args.threads} thread(s); one forward pass = {fwd * 1e3:.1f} ms")
    print(f"torch.func.jvp alone: {jvp / fwd:.2f} forward passes")
    print(f"{'method':<28} {'per step (forward passes)':>26} {'NFE':>4} {'JVP passes':>10}")
    for label, kw in (("ddim", {"method": "ddim"}),
                      ("genie, autodiff (exact)", {"method": "genie", "derivative": "autodiff"}),
                      ("genie, autodiff_fused", {"method": "genie", "derivative": "autodiff_fused"})):
        res = {}

        def run() -> None:
            res["r"] = sample(net, x1, args.steps, **kw)

        t = timeit(run, args.repeat)
        st = res["r"].stats
        print(f"{label:<28} {t / args.steps / fwd:>26.2f} {st.nfe:>4d} {st.jvp_passes:>10d}")


if __name__ == "__main__":
    main()
