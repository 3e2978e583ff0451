"""Exact CLD scores of the toy mixtures, Monte-Carlo checks, gDDIM Prop. 4, and the CLD samplers' observed orders."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.diffusion import CLD, sample
from taylorsolve.errors import TaylorSolveError
from toy import CLDMixture, GaussianMixture, lattice_9, single_gaussian, single_point, two_mode_1d

F64 = torch.float64


def T(v):
    return torch.tensor(float(v), dtype=F64)


def full_cov_mixture():
    cov = torch.tensor([[[0.09, 0.03], [0.03, 0.04]], [[0.02, -0.01], [-0.01, 0.05]]], dtype=F64)
    return GaussianMixture([0.3, 0.7], torch.tensor([[0.5, -0.2], [-0.4, 0.3]], dtype=F64), covariances=cov)


@pytest.mark.parametrize("mix", [lattice_9(), full_cov_mixture()], ids=["lattice", "full-cov"])
def test_scores_match_finite_differences_of_the_log_density(mix):
    cm = CLDMixture(mix)
    gen = torch.Generator().manual_seed(0)
    for t in (0.01, 0.2, 0.9):
        u = cm.sample_t(6, t, gen)
        s = cm.score(u, t)
        h = 1e-5
        fd = torch.zeros_like(u)
        for i in range(u.shape[1]):
            e = torch.zeros_like(u)
            e[:, i] = h
            fd[:, i] = (cm.log_prob(u + e, t) - cm.log_prob(u - e, t)) / (2 * h)
        assert torch.allclose(s, fd, rtol=1e-6, atol=1e-6 * float(s.abs().max()))
        for factor in ("R", "L"):                           # eps = -K^T score, both parameterisations
            K = cm.process.K(T(t), factor)
            assert torch.allclose(cm.eps(u, t, factor), cm.process.apply(-K.T, s), atol=1e-12)


def test_moments_and_stein_identities_against_monte_carlo_of_the_forward_sde():
    """Euler-Maruyama on du = F u dt + G dw from (x_0 ~ p_0, v_0 ~ N(0, gamma M)): mean and covariance of
    p_t within 4 standard errors; the exact score satisfies E[score] = 0 and E[score u^T] = -I."""
    cm = CLDMixture(two_mode_1d(means=(-0.6, 0.6), stds=(0.2, 0.3), weights=(0.4, 0.6)))
    gen = torch.Generator().manual_seed(1)
    n, t = 40000, 0.3
    u = cm.simulate_forward(n, t, steps=1500, generator=gen)
    mu, cov = cm.mean_cov(t)
    assert ((u.mean(0) - mu).abs() < 4 * torch.sqrt(cov.diagonal() / n)).all()
    emp = torch.cov(u.T)
    c4 = ((u - mu) ** 2).T @ ((u - mu) ** 2) / n - cov.diagonal()[:, None] * cov.diagonal()[None, :]
    se = torch.sqrt((c4.abs() + cov * cov) / n)
    assert ((emp - cov).abs() < 4 * se).all()
    s = cm.score(u, t)
    assert ((s.mean(0)).abs() < 4 * s.std(0) / math.sqrt(n)).all()
    stein = (s[:, :, None] * u[:, None, :]).mean(0)
    se_st = (s[:, :, None] * u[:, None, :]).std(0) / math.sqrt(n)
    assert ((stein + torch.eye(2, dtype=F64)).abs() < 4 * se_st).all()
    # the closed-form sampler of p_t agrees too
    x = cm.sample_t(n, t, gen)
    assert ((x.mean(0) - mu).abs() < 4 * torch.sqrt(cov.diagonal() / n)).all()


def test_exact_eps_derivative_matches_autodiff():
    cm = CLDMixture(lattice_9())
    gen = torch.Generator().manual_seed(2)
    for factor in ("R", "L"):
        c2 = cm.with_process(cm.process.with_factor(factor))
        for t in (0.02, 0.5):
            u = c2.sample_t(5, t, gen)
            tt = T(t)
            udot = c2.pf_velocity(u, tt)
            ref = torch.func.jvp(lambda uu, ts: c2.eps(uu, ts), (u, tt), (udot, torch.ones_like(tt)))[1]
            got = c2.eps_dt(u, tt)
            assert torch.allclose(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


def test_bad_shapes_are_named():
    cm = CLDMixture(lattice_9())
    with pytest.raises(TaylorSolveError, match="data dimension mismatch"):
        cm.eps(torch.zeros(3, 6, dtype=F64), 0.5)
    with pytest.raises(TaylorSolveError, match="data dimension mismatch"):
        sample(cm, torch.zeros(3, 6, dtype=F64), 2, method="gddim", process=cm.process)


def test_prop4_eps_r_is_constant_along_probability_flow_and_one_gddim_step_is_exact():
    """gDDIM Prop. 4: Gaussian data in u (a point in x, Gaussian velocities; or N(m, s^2) with x_var = s^2)."""
    gen = torch.Generator().manual_seed(3)
    times = torch.linspace(1.0, 1e-3, 5, dtype=F64)
    for mix, proc in ((single_point([0.3, -0.5]), CLD()), (single_gaussian([0.3, -0.5], 0.2), CLD(x_var=0.04))):
        cm = CLDMixture(mix, proc)
        u1 = cm.sample_t(4, 1.0, gen)
        traj = cm.reference_solve(u1, times, rtol=1e-11, atol=1e-12)
        eps_r = torch.stack([cm.eps(traj[k], times[k], "R") for k in range(len(times))])
        eps_l = torch.stack([cm.eps(traj[k], times[k], "L") for k in range(len(times))])
        assert float((eps_r - eps_r[0]).abs().max()) < 1e-8
        assert float((eps_l - eps_l[0]).abs().max()) > 0.3
        one = sample(cm, u1, None, method="gddim", process=proc, grid=times[[0, -1]])
        assert float((one.x - traj[-1]).abs().max()) < 1e-8
        lam = sample(cm, u1, None, method="gddim", process=proc.with_factor("L"), grid=times[[0, -1]])
        assert float((lam.x - traj[-1]).abs().max()) > 1e-2          # one L_t step is not exact


def test_stochastic_gddim_is_exact_in_distribution_for_gaussian_data():
    """gDDIM Prop. 5-6: for the kernel's own Gaussian data eq. (19) is the exact eps, so eq. (20) samples p_t exactly."""
    cm = CLDMixture(single_point([0.4]), CLD(data_channels=1))
    gen = torch.Generator().manual_seed(4)
    n = 40000
    mu, cov = cm.mean_cov(1e-3)
    for lam in (0.5, 1.0):
        r = sample(cm, cm.sample_t(n, 1.0, gen), 3, method="gddim", lam=lam, process=cm.process, generator=gen)
        assert ((r.x.mean(0) - mu).abs() < 4 * torch.sqrt(cov.diagonal() / n)).all()
        rel = (torch.cov(r.x.T) - cov) / torch.sqrt(cov.diagonal()[:, None] * cov.diagonal()[None, :])
        assert float(rel.abs().max()) < 4 * math.sqrt(2.0 / n)


@pytest.fixture(scope="module")
def two_mode_reference():
    cm = CLDMixture(two_mode_1d(means=(-0.5, 0.5), stds=(0.3, 0.3)))
    gen = torch.Generator().manual_seed(5)
    u1 = cm.sample_t(12, 1.0, gen)
    ref = cm.reference_solve(u1, [1.0, 1e-3], rtol=1e-10, atol=1e-11)[-1]
    return cm, u1, ref


@pytest.mark.parametrize("q,floor", [(1, 0.8), (2, 1.6), (3, 2.35)])
def test_gddim_multistep_observed_order_on_the_exact_score_mixture(two_mode_reference, q, floor):
    cm, u1, ref = two_mode_reference
    errs = [float((sample(cm, u1, n, method="gddim", order=q, process=cm.process).x - ref).norm(dim=1).mean())
            for n in (40, 80, 160)]
    assert errs[0] > errs[1] > errs[2]
    assert math.log2(errs[1] / errs[2]) > floor


def test_genie_on_cld_exact_and_autodiff_derivatives_agree_and_are_second_order(two_mode_reference):
    cm, u1, ref = two_mode_reference
    a = sample(cm, u1, 20, method="gddim-ttm", process=cm.process)
    b = sample(cm, u1, 20, method="gddim-ttm", process=cm.process, derivative=cm.eps_dt)
    assert float((a.x - b.x).abs().max()) < 1e-10
    assert a.stats.jvp_passes == 20 and b.stats.jvp_passes == 0
    errs = [float((sample(cm, u1, n, method="gddim-ttm", process=cm.process, derivative=cm.eps_dt).x - ref)
                  .norm(dim=1).mean()) for n in (40, 80)]
    assert math.log2(errs[0] / errs[1]) > 1.6


def test_probability_flow_solvers_converge_on_cld(two_mode_reference):
    cm, u1, ref = two_mode_reference
    r = sample(cm, u1, None, method="rk45", process=cm.process, rtol=1e-8, atol=1e-8)
    assert float((r.x - ref).abs().max()) < 1e-5
    e = [float((sample(cm, u1[:4], n, method="ttm-pf", process=cm.process).x - ref[:4]).abs().max()) for n in (50, 100)]
    assert e[1] < e[0] / 3 and e[1] < 0.05                  # TTM-2 with autodiff (JVPs through R_t and the model)


@pytest.mark.parametrize("method,ns", [("sscs", (8, 16, 32)), ("euler-maruyama", (32, 64, 128))])
def test_sde_samplers_weak_order_one_on_a_gaussian(method, ns):
    """thesis eq. (2.98): SSCS is weak order 1 like Euler-Maruyama (mean and covariance of the samples)."""
    cm = CLDMixture(single_gaussian([0.4], 0.3), CLD(data_channels=1))
    mu, cov = cm.mean_cov(1e-3)
    errs = []
    for n_steps in ns:
        gen = torch.Generator().manual_seed(n_steps)
        r = sample(cm, cm.sample_t(40000, 1.0, gen), n_steps, method=method, process=cm.process, generator=gen)
        errs.append(max(float((r.x.mean(0) - mu).abs().max()), float((torch.cov(r.x.T) - cov).abs().max())))
    orders = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(0.6 < o < 1.7 for o in orders), (errs, orders)


def test_euler_maruyama_lambda_zero_is_euler_on_the_probability_flow():
    cm = CLDMixture(lattice_9())
    u1 = cm.sample_t(3, 1.0, torch.Generator().manual_seed(6))
    a = sample(cm, u1, 5, method="euler-maruyama", lam=0.0, process=cm.process, generator=torch.Generator())
    b = sample(cm, u1, 5, method="ttm-pf", order=1, derivative="zero", process=cm.process)
    assert float((a.x - b.x).abs().max()) < 1e-12


def test_cld_experiment_writes_its_tables(tmp_path):
    """python -m toy cld, the cheapest part: gDDIM's and DEIS's first orders coincide (both are DDIM on VP)."""
    import csv

    from toy.experiments import cld as exp

    res = exp.run(tmp_path, n=16, quiet=True, parts=["vp_deis"])
    rows = list(csv.DictReader(open(tmp_path / "cld" / "cld_vp_deis.csv")))
    assert len(rows) == 18
    first = {(r["method"], r["nfe"]): float(r["error"]) for r in rows if r["q"] == "1"}
    for nfe in ("10", "20", "50"):
        assert first[("gddim", nfe)] == pytest.approx(first[("deis", nfe)], rel=1e-10)
    assert "vp_deis" in res["summary"]["text"]
    assert (tmp_path / "cld" / "cld_summary.json").exists()
    assert not list((tmp_path / "cld").glob(".*.tmp"))                   # atomic writes leave no temporaries
