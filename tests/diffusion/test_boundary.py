"""The model boundary: parameterisations, time conventions (continuous, discrete table, EDM sigma),
shapes and dtypes, no autograd graphs, and named errors for bad input."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.diffusion import DiffusionModel, from_edm, sample
from taylorsolve.diffusion.processes import ScalarProcess, edm, vp_discrete, vp_linear
from taylorsolve.diffusion.registry import available_methods, get_sampler
from taylorsolve.diffusion.schedules import DiscreteVPSchedule, LinearVPSchedule
from taylorsolve.errors import SolverError, TaylorSolveError

F64 = torch.float64
SCH = LinearVPSchedule()
M = torch.tensor([0.5, -1.0], dtype=F64)
S = 0.5
X1 = torch.tensor([[0.5, -0.1], [1.0, 2.0], [-0.7, 0.4]], dtype=F64)
DETERMINISTIC = [m for m in available_methods() if not get_sampler(m).stochastic]


def _kw(method):
    cls = get_sampler(method)
    return {"order": 3} if cls.default_order is None and (cls.orders is None or len(cls.orders) != 1) else {}


def eps_c(x, t, sched=SCH):
    a, s = sched.alpha(t), sched.sigma(t)
    a, s = a.reshape(-1, *([1] * (x.ndim - 1))) if a.ndim else a, s.reshape(-1, *([1] * (x.ndim - 1))) if s.ndim else s
    return s * (x - a * M) / (a * a * S * S + s * s)


# -- EDM denoisers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", DETERMINISTIC)
def test_edm_denoiser_gives_the_samples_of_the_eps_model_it_wraps(method):
    """D(x_ve, sigma) = x_ve - sigma eps(alpha x_ve, t(sigma)) on the VP process: eps = (x/alpha - D)/gamma."""

    def denoiser(xs, sigma):
        t = SCH.t_from_gamma(sigma)
        return xs - sigma * eps_c(xs * SCH.alpha(t), t)

    kw = _kw(method)
    steps = None if get_sampler(method).adaptive else 6
    ref = sample(eps_c, X1, steps, method=method, **kw)
    got = sample(from_edm(denoiser, process=vp_linear()), X1, steps, method=method, **kw)
    assert torch.allclose(got.x, ref.x, rtol=1e-10, atol=1e-11)


def test_edm_process_samples_the_ve_flow():
    """On EDM's VE process the DDIM ODE is dx/dsigma = eps; Gaussian data: closed-form flow."""
    proc = edm()
    sched = proc.schedule

    def denoiser(x, sigma):  # exact for N(m, s^2 I): D = m + s^2/(s^2 + sigma^2) (x - m)
        sig = sigma.reshape(-1, 1) if sigma.ndim else sigma
        return M + S * S / (S * S + sig * sig) * (x - M)

    x1 = proc.prior_sample((3, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert abs(float(x1.std()) - 80.0) < 60.0  # prior N(0, sigma_max^2 I)
    for method, order in (("heun", 2), ("ddim", 1)):
        errs = []
        for n in (40, 80):
            r = sample(from_edm(denoiser), x1, n, method=method, grid="edm")
            g0, g1 = sched.gamma(r.times[0]), sched.gamma(r.times[-1])
            exact = M + (x1 - M) * torch.sqrt((S * S + g1 * g1) / (S * S + g0 * g0))
            errs.append(float((r.x - exact).abs().max()))
        assert abs(math.log2(errs[0] / errs[1]) - order) < 0.2, (method, errs)


# -- discrete timesteps ---------------------------------------------------------------------------------
N_T = 1000
TABLE = SCH.alpha((torch.arange(N_T, dtype=F64) + 1) / N_T) ** 2
NODE_ONLY = ("ddim", "heun", "s-pndm", "dpm-solver++2m", "deis", "adams-bashforth")


def _discrete_model(round_timesteps=False):
    def net(x, timestep):  # a network trained on the table: timestep n <-> t = (n + 1)/N
        return eps_c(x, (timestep.to(F64) + 1.0) / N_T)

    return DiffusionModel(net, time="discrete", process=vp_discrete(TABLE), round_timesteps=round_timesteps)


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_discrete_timestep_model_gives_the_samples_of_the_continuous_model(method):
    """On the knots of the table the two models agree; methods evaluating only at grid nodes agree to
    rounding, the others (stages between knots, where log alpha is piecewise linear) closely."""
    if get_sampler(method).adaptive:
        pytest.skip("adaptive steps land between the knots")
    if method in ("ttm", "ttm-pf"):
        pytest.skip("log alpha is piecewise linear between the knots: its second derivatives (TTM-3, TTM on the "
                    "PF ODE) are not the continuous schedule's")
    grid = torch.tensor([999, 799, 599, 399, 199, 99, 39, 0])
    times = (grid.to(F64) + 1.0) / N_T
    kw = _kw(method)
    ref = sample(eps_c, X1, None, method=method, grid=times, **kw)
    got = sample(_discrete_model(), X1, None, method=method, grid=grid, **kw)
    assert torch.equal(got.times, ref.times)
    tol = 1e-12 if method in NODE_ONLY else 2e-3
    assert float((got.x - ref.x).abs().max()) < tol


def test_discrete_schedule_interpolates_like_dpm_solver():
    sched = DiscreteVPSchedule(TABLE)
    knots = (torch.arange(N_T, dtype=F64) + 1) / N_T
    assert torch.allclose(sched.alpha(knots) ** 2, TABLE, rtol=1e-13)
    t = torch.tensor([0.0005, 0.0123, 0.5004, 0.9995], dtype=F64)
    la = sched.log_alpha(t)
    # linear in t between the two neighbouring knots (log alpha_0 = 0 below the first knot)
    lo = torch.floor(t * N_T)
    la_lo = torch.where(lo == 0, torch.zeros_like(t), 0.5 * torch.log(TABLE[(lo - 1).clamp(min=0).long()]))
    la_hi = 0.5 * torch.log(TABLE[lo.long()])
    assert torch.allclose(la, la_lo + (la_hi - la_lo) * (t * N_T - lo), rtol=1e-12)
    g = sched.gamma(t)
    assert torch.allclose(sched.t_from_gamma(g), t, rtol=1e-11)
    # dt/dgamma against autograd of gamma(t)
    tt = t.clone().requires_grad_(True)
    (dg,) = torch.autograd.grad(sched.gamma(tt).sum(), tt)
    assert torch.allclose(sched.dt_dgamma(g), 1.0 / dg, rtol=1e-10)


def test_rounded_timesteps_refuse_autodiff_derivatives():
    model = _discrete_model(round_timesteps=True)
    grid = torch.tensor([999, 499, 99, 0])
    r = sample(model, X1, None, method="ddim", grid=grid)      # fine without derivatives
    assert r.stats.nfe == 3
    with pytest.raises(TaylorSolveError, match="round_timesteps=False"):
        sample(model, X1, None, method="genie", grid=grid)


@pytest.mark.parametrize("table,match", [
    (torch.tensor([0.9, 0.95, 0.5]), "strictly decreasing"),
    (torch.tensor([1.0, 0.9, 0.5]), r"in \(0, 1\)"),
    (torch.tensor([0.9, 0.5, 0.0]), r"in \(0, 1\)"),
    (torch.tensor([[0.9, 0.5]]), "1-D"),
    (torch.tensor([0.9, float("nan")]), "NaN"),
])
def test_bad_alphas_cumprod_is_named(table, match):
    with pytest.raises(TaylorSolveError, match=match):
        vp_discrete(table)


def test_timestep_grid_outside_the_table_is_named():
    with pytest.raises(TaylorSolveError, match="outside the table"):
        sample(_discrete_model(), X1, None, method="ddim", grid=torch.tensor([1000, 500, 0]))
    with pytest.raises(TaylorSolveError, match="outside the table"):
        sample(_discrete_model(), X1, None, method="ddim", grid=torch.tensor([999, 500, -1]))
    with pytest.raises(TaylorSolveError, match="integer grid"):
        sample(eps_c, X1, None, method="ddim", grid=torch.tensor([999, 500, 0]))


# -- shapes, dtypes, graphs ------------------------------------------------------------------------------
class TinyNet(torch.nn.Module):
    """float32 network recording what it receives."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2, dtype=torch.float32)
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x.dtype, t.dtype, tuple(t.shape)))
        return self.lin(torch.cat([x, t[:, None]], dim=1))


def test_module_gets_batched_time_in_its_dtype_and_no_graph_is_built():
    net = TinyNet()
    r = sample(net, X1, 4, method="genie")            # float64 state, float32 network, autodiff JVPs
    assert r.x.dtype == F64 and not r.x.requires_grad
    assert set(net.seen) == {(torch.float32, torch.float32, (3,))}
    assert all(p.grad is None for p in net.parameters())


def test_plain_callable_gets_scalar_float64_time():
    seen = []

    def f(x, t):
        seen.append((t.dtype, t.ndim))
        return eps_c(x, t)

    sample(f, X1, 3, method="ddim")
    assert set(seen) == {(F64, 0)}


def test_wrong_shape_or_dtype_is_named():
    with pytest.raises(TaylorSolveError, match="shape"):
        sample(lambda x, t: x[:, :1], X1, 3, method="ddim")
    with pytest.raises(TaylorSolveError, match="dtype"):
        sample(lambda x, t: torch.zeros(x.shape, dtype=torch.int64), X1, 3, method="ddim")

    class Half(TinyNet):
        def forward(self, x, t):
            return super().forward(x, t).to(torch.float64)

    with pytest.raises(TaylorSolveError, match="declared dtype"):
        sample(Half(), X1, 3, method="ddim")
    with pytest.raises(SolverError, match="non-finite"):
        sample(lambda x, t: x * float("nan"), X1, 3, method="ddim")


def test_declarations_are_checked():
    with pytest.raises(TaylorSolveError, match="parameterization"):
        DiffusionModel(eps_c, parameterization="noise")
    with pytest.raises(TaylorSolveError, match="vp_discrete"):
        DiffusionModel(eps_c, time="discrete")
    with pytest.raises(TaylorSolveError, match="contradicts"):
        sample(DiffusionModel(eps_c, parameterization="eps"), X1, 3, parameterization="v")
    with pytest.raises(TaylorSolveError, match="contradicts"):
        sample(_discrete_model(), X1, 3, method="ddim", process=vp_linear())
    with pytest.raises(TaylorSolveError, match="not both"):
        sample(eps_c, X1, 3, process=vp_linear(), schedule=SCH)


@pytest.mark.parametrize("param", ["x0", "v", "score"])
def test_parameterizations_give_the_same_samples(param):
    proc = ScalarProcess(SCH)

    def pred(x, t):
        e = eps_c(x, t)
        a, s = SCH.alpha(t), SCH.sigma(t)
        return {"x0": (x - s * e) / a, "v": a * e - s * (x - s * e) / a, "score": -e / s}[param]

    ref = sample(eps_c, X1, 5, method="dpm-solver-2")
    got = sample(pred, X1, 5, method="dpm-solver-2", parameterization=param, process=proc)
    assert torch.allclose(got.x, ref.x, rtol=1e-11, atol=1e-12)


# -- steps / nfe ----------------------------------------------------------------------------------------
def test_steps_and_nfe_are_exclusive_and_one_is_needed():
    with pytest.raises(TaylorSolveError, match="not both"):
        sample(eps_c, X1, 5, nfe=5)
    with pytest.raises(TaylorSolveError, match="steps= .* or nfe="):
        sample(eps_c, X1)


def test_too_small_budget_names_the_minimum():
    with pytest.raises(TaylorSolveError, match="at least 12 NFE"):
        sample(eps_c, X1, method="f-pndm", nfe=10)
    with pytest.raises(TaylorSolveError, match="at least 11 NFE"):
        sample(eps_c, X1, method="f-pndm", nfe=10, afs=True)
    with pytest.raises(TaylorSolveError, match="at least 2 NFE"):
        sample(eps_c, X1, method="heun", nfe=1)
    with pytest.raises(TaylorSolveError, match="adaptive"):
        sample(eps_c, X1, method="rk45", nfe=10)


def test_budget_with_a_head_overhead_follows_the_paper():
    """Sec. 5: with 14 % overhead, GENIE gets 9/13 evaluations where the baselines get 10/15."""
    for nfe, evals in ((10, 9), (15, 13)):
        r = sample(eps_c, X1, method="genie", derivative="zero", nfe=nfe, overhead=0.14)
        assert r.stats.nfe == evals and r.stats.eval_budget == evals and r.stats.nfe_budget == nfe
    # autodiff derivatives count one evaluation per JVP pass (the paper's "100 %")
    r = sample(eps_c, X1, method="genie", nfe=10)
    assert r.stats.overhead == 1.0 and r.stats.nfe == 5 and r.stats.jvp_passes == 5
    assert r.stats.equivalent_nfe == 10.0
