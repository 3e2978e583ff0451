"""Conformance tests generated from the sampler registry: every registered unit gets them automatically.

For each registered method (its declared default order; ``ttm`` at order 3):
* single-point data (app. B.2): the DDIM ODE's solutions are straight lines, so units declaring
  ``exact_on_single_point`` land on the exact solution to rounding;
* Gaussian data ``N(m, s^2 I)``: closed-form eps and flow; the observed global order from refined grids
  is the declared order (deterministic fixed-step units);
* NFE: a counting model sees exactly ``unit.nfe(N) - afs + denoise`` evaluations, and ``nfe=`` budgets
  never exceed the budget (hypothesis over budget, method and knobs).
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taylorsolve.diffusion import get_process, sample
from taylorsolve.diffusion.registry import available_methods, get_sampler
from taylorsolve.errors import TaylorSolveError

from _problems import X1_2, X1_3, eps_gauss, eps_point, exact_gauss, exact_point  # noqa: E402

# every unit the default (scalar VP) process can run; units of other processes only (CLD's SSCS) are
# tested with their process (tests/diffusion/test_cld.py)
METHODS = tuple(m for m in available_methods() if get_process(None).supports(get_sampler(m).coordinates))


def _kw(method: str) -> dict:
    cls = get_sampler(method)
    kw: dict = {}
    if cls.default_order is None and (cls.orders is None or len(cls.orders) != 1):
        kw["order"] = 3
    if cls.stochastic:
        kw["generator"] = torch.Generator().manual_seed(0)
    return kw


def _steps(method: str, n: int):
    return None if get_sampler(method).adaptive else n


def test_registry_holds_the_built_in_methods():
    for m in ("ddim", "genie", "ttm", "ttm-pf", "s-pndm", "f-pndm", "adams-bashforth", "heun", "dpm-solver-2",
              "dpm-solver-3", "dpm-solver++2m", "deis", "euler-maruyama", "rk45"):
        assert m in METHODS


EXACT = [m for m in METHODS if get_sampler(m).exact_on_single_point and not get_sampler(m).stochastic]


@pytest.mark.parametrize("method", EXACT)
def test_single_point_data_is_integrated_exactly(method):
    r = sample(eps_point, X1_3, _steps(method, 5), method=method, **_kw(method))
    assert float((r.x - exact_point(X1_3, r.times)).abs().max()) < 1e-12


ORDERED = [m for m in METHODS if not get_sampler(m).stochastic and not get_sampler(m).adaptive]


@pytest.mark.parametrize("method", ORDERED)
def test_observed_order_on_gaussian_data_is_the_declared_order(method):
    cls = get_sampler(method)
    kw = _kw(method)
    unit = cls(**{k: v for k, v in kw.items() if k == "order"})
    # the declared global order: a corrector may raise it (UniPC: order + 1), unequal steps may lower it (F-PNDM)
    p_nominal = cls.variable_step_order or unit.accuracy_order
    ns = (16, 32, 64) if p_nominal <= 2 else (32, 64, 128)
    errs = []
    for n in ns:
        r = sample(eps_gauss, X1_2, n, method=method, grid="quadratic", t_cutoff=0.01, **kw)
        errs.append(float((r.x - exact_gauss(X1_2, r.times)).abs().max()))
    p = math.log2(errs[-2] / errs[-1])
    assert errs[-1] < errs[0]
    assert abs(p - p_nominal) <= 0.35, (method, p, errs)


class Counting:
    """Gaussian-data eps model counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return eps_gauss(x, t)


def _nfe_kw(method: str) -> dict:
    kw = _kw(method)
    if get_sampler(method).takes_derivative:
        kw["derivative"] = "zero"   # no JVP calls: every model call is an NFE
    return kw


@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("denoise", [False, True])
@pytest.mark.parametrize("method", [m for m in METHODS if not get_sampler(m).adaptive])
def test_nfe_follows_the_units_rule(method, afs, denoise):
    model = Counting()
    kw = _nfe_kw(method)
    r = sample(model, X1_2, 6, method=method, afs=afs, denoise=denoise, **kw)
    unit = get_sampler(method)(**{k: v for k, v in kw.items() if k in ("order", "derivative")})
    want = unit.nfe(6) - int(afs) + int(denoise)
    assert r.stats.nfe == want == model.calls
    assert r.stats.afs_saved == int(afs) and r.stats.denoise_nfe == int(denoise)


BUDGETED = [m for m in METHODS if not get_sampler(m).adaptive]


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(BUDGETED), nfe=st.integers(1, 40), afs=st.booleans(), denoise=st.booleans(),
       overhead=st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_an_nfe_budget_is_never_exceeded(method, nfe, afs, denoise, overhead):
    model = Counting()
    kw = _nfe_kw(method)
    try:
        r = sample(model, X1_2, method=method, nfe=nfe, afs=afs, denoise=denoise, overhead=overhead, **kw)
    except TaylorSolveError as exc:
        assert "at least" in str(exc)
        minimum = int(str(exc).split("at least ")[1].split(" ")[0])
        assert minimum > nfe
        # and the minimum itself is feasible
        r = sample(Counting(), X1_2, method=method, nfe=minimum, afs=afs, denoise=denoise, overhead=overhead, **kw)
        assert r.stats.nfe <= minimum
        return
    assert model.calls == r.stats.nfe
    evals = math.floor(nfe / (1.0 + overhead) + 0.5)
    assert r.stats.nfe <= evals <= nfe
    assert r.stats.nfe_budget == nfe and r.stats.eval_budget == evals
    # the budget is used: one more step would not fit
    unit = get_sampler(method)(**{k: v for k, v in kw.items() if k in ("order", "derivative")})
    assert unit.nfe(r.stats.steps + 1) - int(afs) + int(denoise) > evals


def test_register_refuses_taken_names_but_accepts_a_redefinition():
    from taylorsolve.diffusion.registry import Sampler, register

    def make():
        class Midpoint(Sampler):
            name = "test-midpoint-registry"
            orders = (2,)

            def nfe(self, steps):
                return 2 * steps

            def step(self, ctx, n, y, eps0=None):
                s, s1 = ctx.s[n], ctx.s[n + 1]
                e0 = ctx.eps_node(y, n) if eps0 is None else eps0
                sm = 0.5 * (s + s1)
                return y + ctx.c(s1 - s, y) * ctx.eps(y + ctx.c(sm - s, y) * e0, sm)

        return Midpoint

    from taylorsolve.diffusion import registry

    try:
        first = register(make())
        second = register(make())            # the same definition run again (a notebook cell)
        assert get_sampler("test-midpoint-registry") is second is not first
        r = sample(eps_gauss, X1_2, 8, method="test-midpoint-registry")
        assert r.stats.nfe == 16 and float((r.x - exact_gauss(X1_2, r.times)).abs().max()) < 1e-2
    finally:
        registry._REGISTRY.pop("test-midpoint-registry", None)   # leave the registry as it was

    class Other(Sampler):
        name = "ddim"

    with pytest.raises(TaylorSolveError, match="taken"):
        register(Other)
