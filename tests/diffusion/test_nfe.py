"""NFE accounting, asserted exactly from the method definitions (not from running the code).

N = 5 steps throughout.  Rules (model evaluations before the knobs):
  ddim, genie, ttm, ttm-pf, adams-bashforth, dpm-solver++2m, deis, euler-maruyama: N
  s-pndm: first step pseudo improved Euler (2) + 1 per later step        -> N + 1 = 6
  f-pndm: 3 pseudo-RK4 warm-up steps x 4 + 1 per later step             -> 12 + 2 = 14
  heun, dpm-solver-2: 2 per step -> 10;  dpm-solver-3: 3 per step -> 15
AFS (app. F.2) replaces the first evaluation (-1); denoising adds one (+1).
"""
from __future__ import annotations

import pytest
import torch

from taylorsolve.errors import TaylorSolveError
from taylorsolve.diffusion import providers as P
from taylorsolve.diffusion.cost import expected_nfe, overhead_adjusted_nfe, steps_for_nfe
from taylorsolve.diffusion.samplers import sample
from taylorsolve.diffusion.schedules import LinearVPSchedule

F64 = torch.float64
SCH = LinearVPSchedule()
M = torch.tensor([0.5, -1.0], dtype=F64)
X1 = torch.tensor([[0.5, -0.1], [1.0, 2.0]], dtype=F64)
N = 5


class CountingModel:
    """Gaussian-data eps model counting every call (primal and under JVP)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        a, s = SCH.alpha(t), SCH.sigma(t)
        return s * (x - a * M) / (a * a * 0.25 + s * s)


# (method, options, NFE without knobs, warm-up NFE) -- from the definitions
TABLE = [
    ("ddim", {}, 5, 0),
    ("genie", {"derivative": "zero"}, 5, 0),
    ("ttm", {"order": 3, "derivative": "ideal"}, 5, 0),
    ("ttm-pf", {"derivative": "zero"}, 5, 0),
    ("s-pndm", {}, 6, 2),
    ("f-pndm", {}, 14, 12),
    ("adams-bashforth", {"order": 3}, 5, 0),
    ("heun", {}, 10, 0),
    ("dpm-solver-2", {}, 10, 0),
    ("dpm-solver-3", {}, 15, 0),
    ("dpm-solver++2m", {}, 5, 0),
    ("deis", {"order": 3}, 5, 0),
    ("euler-maruyama", {"generator": None}, 5, 0),
]


@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("denoise", [False, True])
@pytest.mark.parametrize("method,kw,nfe,warm", TABLE, ids=[r[0] for r in TABLE])
def test_nfe_per_method_and_knobs(method, kw, nfe, warm, afs, denoise):
    model = CountingModel()
    kw = dict(kw)
    if method == "euler-maruyama":
        kw["generator"] = torch.Generator().manual_seed(0)
    r = sample(model, X1, N, method=method, afs=afs, denoise=denoise, **kw)
    want = nfe - (1 if afs else 0) + (1 if denoise else 0)
    assert r.stats.nfe == want
    assert model.calls == want  # no hidden evaluations (no autodiff in these cases)
    assert r.stats.model_calls == want
    assert r.stats.afs_saved == (1 if afs else 0)
    assert r.stats.denoise_nfe == (1 if denoise else 0)
    assert r.stats.warmup_nfe == (warm - 1 if (afs and warm) else warm)
    assert r.stats.steps == N
    assert expected_nfe(method, N, afs=afs, denoise=denoise) == want


@pytest.mark.parametrize("afs", [False, True])
def test_genie_autodiff_costs_one_jvp_per_derivative_step(afs):
    model = CountingModel()
    r = sample(model, X1, N, method="genie", afs=afs, denoise=True)
    taylor_steps = N - 1 if afs else N       # the AFS step is Euler with d eps/d gamma ~ 0 (eq. (76)-(78))
    assert r.stats.nfe == taylor_steps + 1   # + denoising
    assert r.stats.jvp_passes == taylor_steps
    assert r.stats.derivative_evals == taylor_steps
    assert model.calls == r.stats.nfe + r.stats.jvp_passes


def test_ttm3_autodiff_passes():
    """TTM-3 by nested JVPs: c_2 costs a depth-1 JVP, c_3 a depth-2 nested JVP (core convention: 1 + 2)."""
    model = CountingModel()
    r = sample(model, X1, N, method="ttm", order=3)
    assert r.stats.nfe == 5 and r.stats.derivative_evals == 10 and r.stats.jvp_passes == 15
    assert model.calls == 5 + 5 * 2  # one model call per JVP (nested or not)


def test_learned_head_counts_derivative_evals_not_nfe():
    model, heads = CountingModel(), {"n": 0}

    def head(x, t, eps):
        heads["n"] += 1
        return torch.zeros_like(eps)

    r = sample(model, X1, N, method="genie", derivative=head, afs=True)
    assert r.stats.nfe == 4 and model.calls == 4
    assert r.stats.derivative_evals == 4 and heads["n"] == 4 and r.stats.jvp_passes == 0
    r = sample(model, X1, N, method="genie", derivative=P.learned(head))
    assert r.stats.derivative == "learned" and r.stats.derivative_evals == 5


def test_finite_difference_afs_keeps_the_analytic_eps_in_history():
    """AB with AFS: the analytic eps(x_1, 1) = x_1 enters the history; later steps use it (AB-2 at step 2)."""
    r = sample(CountingModel(), X1, N, method="adams-bashforth", order=2, afs=True)
    r_gen = sample(CountingModel(), X1, N, method="genie", derivative="finite_difference", afs=True)
    assert r.stats.nfe == 4 and r_gen.stats.nfe == 4
    assert torch.allclose(r.x, r_gen.x, rtol=1e-13)


def test_rk45_reports_scipy_nfe_and_afs_saves_one():
    a = sample(CountingModel(), X1, None, method="rk45", rtol=1e-4, atol=1e-4)
    b = sample(CountingModel(), X1, None, method="rk45", rtol=1e-4, atol=1e-4, afs=True, denoise=True)
    assert a.stats.nfe == a.stats.extra["scipy_nfev"]
    assert b.stats.nfe == b.stats.extra["scipy_nfev"] - 1 + 1


def test_guided_sampling_counts_model_calls_twice():
    calls = {"n": 0}

    def model(x, t, c=None):
        calls["n"] += 1
        return CountingModel()(x, t)

    r = sample(model, X1, N, method="heun", cond={"c": 1}, guidance_scale=2.0, afs=True)
    assert r.stats.nfe == 9 and r.stats.model_calls == 18 and calls["n"] == 18


def test_expected_and_budgeted_steps():
    assert expected_nfe("f-pndm", 2) == 8
    assert expected_nfe("f-pndm", 6) == 15
    assert steps_for_nfe("f-pndm", 15) == 6
    assert steps_for_nfe("s-pndm", 5) == 4
    assert steps_for_nfe("genie", 5, afs=True) == 6
    assert steps_for_nfe("genie", 10, afs=True, denoise=True) == 10
    assert steps_for_nfe("dpm-solver-3", 10) == 3
    with pytest.raises(TaylorSolveError, match="N/A"):
        steps_for_nfe("f-pndm", 10)     # the paper lists F-PNDM as N/A for <= 10 NFE
    with pytest.raises(TaylorSolveError):
        expected_nfe("rk45", 10)
    with pytest.raises(TaylorSolveError, match="unknown method"):
        expected_nfe("foo", 10)


def test_overhead_adjusted_nfe_follows_the_paper():
    # sec. 5: LSUN Bedrooms, overhead 14.0 %: baselines at 10/15 NFE vs GENIE at 9/13
    assert overhead_adjusted_nfe(10, 0.140) == 9
    assert overhead_adjusted_nfe(15, 0.140) == 13
    # autodiff derivatives: "additional computational overhead of 100%"
    assert [overhead_adjusted_nfe(n, 1.0) for n in (10, 20, 30, 40)] == [5, 10, 15, 20]
    # CIFAR-10, 1.47 %: 25 / 1.0147 = 24.64 -> 25 (nearest integer)
    assert overhead_adjusted_nfe(25, 0.0147) == 25
    assert overhead_adjusted_nfe(5, 0.25) == 4
    assert overhead_adjusted_nfe(3, 0.2) == 3   # 2.5 rounds up
    with pytest.raises(TaylorSolveError):
        overhead_adjusted_nfe(10, -0.1)
    with pytest.raises(TaylorSolveError):
        overhead_adjusted_nfe(-1, 0.1)
