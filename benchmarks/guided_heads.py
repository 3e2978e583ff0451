"""Classifier-free guidance with derivative heads: eq. (81) against the guided ODE's true derivative.

GENIE's eq. (81) forms the guided second-order term from two heads, ``(1 + w) k_c - w k_u``, each
distilled along its own model's ODE.  The guided ODE moves along ``eps_hat = (1 + w) eps_c - w eps_u``
(eq. (79)), so the true derivative differs by ``w (1 + w) / sqrt(1 + gamma^2) (J_c - J_u)(eps_c - eps_u)``
and eq. (81) makes GENIE a first-order method on the guided ODE.

Problem: the nested Gaussian mixture of app. E (64 components) as the unconditional model and its first
cluster (8 components) as the conditional one, exact eps for both; "perfect heads" are the exact
derivatives of each model along its own DDIM ODE; the true second-order step differentiates eps_hat by
one JVP (``derivative="autodiff"``).  Reference: RK45 on the guided probability-flow ODE at rtol = atol =
1e-10 from the same x_1.  Mean (over starting points) Euclidean error at t_cutoff = 1e-3, quadratic grid.

    python benchmarks/guided_heads.py [--n 500] [--w 2] [--steps 10 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taylorsolve.diffusion import sample  # noqa: E402
from toy import GaussianMixture, nested_mixture  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="starting points")
    ap.add_argument("--w", type=float, nargs="+", default=[2.0], help="guidance scales")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    unc = nested_mixture()
    cond = GaussianMixture(unc.weights[:8] * 8, unc.means[:8], stds=unc.stds[:8])

    def model(x, t, c=None):
        return cond.eps(x, t) if c == 1 else unc.eps(x, t)

    def perfect_head(mix):
        def head(x, t, eps):
            g = mix.schedule.gamma(t)
            return mix.eps_derivatives(x * torch.sqrt(1 + g * g), g, 1, backend="taylor_mode")[1]
        return head

    heads = (perfect_head(cond), perfect_head(unc))
    x1 = torch.randn(args.n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed))
    print(f"nested mixture, {args.n} starting points, quadratic grid, t_cutoff 1e-3, float64; "
          f"mean error to RK45 (rtol = atol = 1e-10) on the guided PF ODE")
    print(f"{'w':>4} {'steps':>5} {'DDIM':>10} {'GENIE eq. (81), perfect heads':>30} {'GENIE, true guided d/dgamma':>28} {'eq.(81)/DDIM':>12}")
    for w in args.w:
        ref = sample(model, x1, None, method="rk45", cond=1, guidance_scale=w, rtol=1e-10, atol=1e-10).x
        for n in args.steps:
            err = {}
            for name, kw in (("ddim", {"method": "ddim"}),
                             ("eq81", {"method": "genie", "derivative": heads}),
                             ("true", {"method": "genie", "derivative": "autodiff"})):
                r = sample(model, x1, n, cond=1, guidance_scale=w, **kw)
                err[name] = float((r.x - ref).norm(dim=-1).mean())
            print(f"{w:>4g} {n:>5d} {err['ddim']:>10.3e} {err['eq81']:>30.3e} {err['true']:>28.3e} "
                  f"{err['eq81'] / err['ddim']:>12.2f}")


if __name__ == "__main__":
    main()
