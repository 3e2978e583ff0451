"""Toy experiments (toy.experiments): tiny runs into a tmp dir, table columns, sane values, metrics."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import toy
from toy.experiments import fd_error, global_error, metrics, samples, single_step, summarize
from toy.experiments.common import iso_eps_derivatives, reference_solve, write_csv

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def fnum(s):
    return float(s) if s not in ("", None) else float("nan")


# ----------------------------------------------------------------------------------------------- helpers
def test_iso_derivatives_match_taylor_mode():
    mix = toy.nested_mixture()
    for g in (0.02, 0.3, 4.0):
        xb = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) * (1 + g)
        ref = mix.eps_derivatives(xb, g, 2, backend="taylor_mode")
        mine = iso_eps_derivatives(mix, xb, g, 2)
        for a, b in zip(ref, mine):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(a.abs().max()))


def test_reference_solve_matches_single_gaussian_closed_form():
    mix = toy.single_gaussian([0.3, -0.2], 0.5)
    xb0 = torch.randn(20, 2, dtype=F64, generator=torch.Generator().manual_seed(2)) * 3
    gs = [3.0, 1.0, 0.05]
    got = reference_solve(mix, xb0, 10.0, gs)
    for j, g in enumerate(gs):
        assert torch.allclose(got[j], mix.ddim_solution(xb0, 10.0, g), atol=1e-9)


def test_write_csv_is_atomic_and_complete(tmp_path):
    p = write_csv(tmp_path / "a.csv", [{"x": 1.0, "y": "b"}, {"x": float("nan")}])
    rows = read_csv(p)
    assert rows[0] == {"x": "1.0", "y": "b"} and rows[1]["x"] == "nan"
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------- metrics
def test_metrics_exact_samples_score_near_perfect():
    mix = toy.nested_mixture()
    x = mix.sample(3000, generator=torch.Generator().manual_seed(3))
    ref = mix.sample(3000, generator=torch.Generator().manual_seed(4))
    q = metrics.quality(mix, x, ref)
    ideal = metrics.ideal_mode_fractions(2)
    for h in metrics.H_VALUES:
        assert abs(q[f"frac_{h}sigma"] - ideal[h]) < 0.03
    assert q["frac_4sigma"] > 0.99
    # mean log p_0 of exact samples = -entropy; close to its expectation estimated on fresh samples
    assert abs(q["mean_logp0"] - metrics.mean_log_prob(mix, ref)) < 0.1
    assert q["sliced_w2"] < 0.06
    assert abs(q["mmd2"]) < 5e-3


def test_metrics_far_shifted_samples_score_badly():
    mix = toy.nested_mixture()
    x = mix.sample(2000, generator=torch.Generator().manual_seed(5))
    ref = mix.sample(2000, generator=torch.Generator().manual_seed(6))
    good = metrics.quality(mix, x, ref)
    bad = metrics.quality(mix, x + torch.tensor([3.0, 3.0], dtype=F64), ref)
    assert all(bad[f"frac_{h}sigma"] == 0.0 for h in metrics.H_VALUES)
    assert bad["mean_logp0"] < good["mean_logp0"] - 1000
    assert bad["sliced_w2"] > 2.0 > 10 * good["sliced_w2"]
    assert bad["mmd2"] > 100 * abs(good["mmd2"])


def test_mode_fractions_known_case():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=F64)
    x = torch.tensor([[0.5, 0.0], [10.0, 1.5], [5.0, 5.0], [0.0, 3.9]], dtype=F64)
    fr = metrics.mode_fractions(x, means, 1.0)
    assert fr == {1: 0.25, 2: 0.5, 3: 0.5, 4: 0.75}


def test_sliced_wasserstein_of_a_shift():
    x = torch.randn(1000, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    # W2 between a sample and its own shift by v projects to |theta . v|: sliced W2 = |v| / sqrt(2) in 2-D
    sw = metrics.sliced_wasserstein(x, x + torch.tensor([1.0, 0.0], dtype=F64), n_proj=2000)
    assert abs(sw - 1 / math.sqrt(2)) < 0.02
    assert metrics.sliced_wasserstein(x, x) == 0.0
    # unequal sample sizes are handled through quantiles
    assert metrics.sliced_wasserstein(x, x[:500]) < 0.1


# ----------------------------------------------------------------------------------------------- experiments
def test_samples_tiny(tmp_path):
    res = samples.run(tmp_path, n=200, steps=(5, 10), quiet=True)
    rows = read_csv(tmp_path / "samples.csv")
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert set(samples.COLUMNS) <= set(rows[0])
    assert {r["method"] for r in rows} == {"ground_truth", "exact_p_tcutoff", "ddim", "genie"}
    for r in rows:
        for c in metrics.QUALITY_COLUMNS:
            if c.startswith("frac"):
                assert 0.0 <= fnum(r[c]) <= 1.0
            else:
                assert math.isfinite(fnum(r[c]))
    by = {(r["method"], r["steps"]): r for r in rows}
    assert int(by[("genie", "10")]["nfe"]) == 10 and int(by[("genie", "10")]["derivative_evals"]) == 10
    assert fnum(by[("genie", "10")]["frac_2sigma"]) > fnum(by[("ddim", "10")]["frac_2sigma"])
    assert "samples" in summarize({"samples": res})


def test_single_step_tiny(tmp_path):
    res = single_step.run(tmp_path, n=20, ts=(0.2,), n_dt=5, quiet=True, fit_points=3)
    rows = read_csv(tmp_path / "single_step.csv")
    assert set(single_step.COLUMNS) <= set(rows[0]) and len(rows) == 15
    assert all(fnum(r["mean_error"]) > 0 and math.isfinite(fnum(r["mean_error"])) for r in rows)
    s = json.loads((tmp_path / "single_step.json").read_text())
    sl = s["slopes"]["0.2"]
    assert abs(sl["ddim"] - 2) < 0.3 and abs(sl["genie"] - 3) < 0.4 and abs(sl["ttm3"] - 4) < 0.5
    assert s["checks"]["ttm3_beats_genie_at_small_step_sizes"]["pass"]
    assert res["summary"]["ttm3_beats_genie_small_dt"]["0.2"]


def test_fd_error_tiny(tmp_path):
    single = fd_error.run(tmp_path, n=20, ts=(0.02, 0.5), n_dt=4, quiet=True)
    rows = read_csv(tmp_path / "fd_error.csv")
    assert set(fd_error.COLUMNS) <= set(rows[0]) and len(rows) == 8
    for r in rows:
        for c in ("xi_past", "xi_future", "rel_xi_past", "rel_xi_future", "mean_abs_deps"):
            assert fnum(r[c]) > 0 and math.isfinite(fnum(r[c]))
    # first-order differences: the error shrinks with dt; relative error is far worse at small t
    for t in ("0.02", "0.5"):
        xs = [fnum(r["xi_past"]) for r in rows if r["t"] == t]
        assert xs[0] < xs[-1]
    small = [fnum(r["rel_xi_past"]) for r in rows if r["t"] == "0.02"]
    big = [fnum(r["rel_xi_past"]) for r in rows if r["t"] == "0.5"]
    assert small[0] > big[0]
    assert (tmp_path / "fd_error.png").exists() and single["summary"]["experiment"] == "fd_error"


def test_global_error_tiny(tmp_path):
    res = global_error.run(tmp_path, n=64, nfes=(10, 25), grids=("quadratic", "linear"),
                           methods=("ddim", "genie", "heun", "euler-maruyama", "rk45"), rk45_tols=(1e-2,),
                           quiet=True)
    rows = read_csv(tmp_path / "global_error.csv")
    assert set(global_error.COLUMNS) <= set(rows[0])
    meth = {r["method"] for r in rows}
    assert {"ddim", "genie", "heun", "euler-maruyama", "rk45", "reference_ode_solution", "exact_p_tcutoff"} <= meth
    for r in rows:
        for c in metrics.QUALITY_COLUMNS:
            v = fnum(r[c])
            if c.startswith("frac"):
                assert 0.0 <= v <= 1.0
            elif c != "mmd2" or r["best_grid"] == "True":
                assert math.isfinite(v), (r["method"], c)
        if r["method"] in ("ddim", "genie", "heun", "rk45"):
            assert fnum(r["global_error"]) > 0 and math.isfinite(fnum(r["global_error"]))
            assert int(r["nfe"]) > 0 and fnum(r["total_cost"]) >= int(r["nfe"])
        if r["method"] == "euler-maruyama":
            assert math.isnan(fnum(r["global_error"]))
        if r["method"] == "genie":
            assert int(r["derivative_evals"]) == int(r["steps"]) and fnum(r["total_cost"]) > int(r["nfe"])
    err = {(r["method"], r["grid"], r["steps"]): fnum(r["global_error"]) for r in rows}
    assert err[("genie", "quadratic", "10")] < err[("ddim", "quadratic", "10")]
    s = json.loads((tmp_path / "global_error.json").read_text())
    assert set(s["best_grid"]) == {"ddim", "genie", "heun", "euler-maruyama"}
    assert all(g in ("quadratic", "linear") for g in s["best_grid"].values())
    for name, c in s["checks"].items():
        assert isinstance(c["pass"], bool) and c["genie"] > 0 and c["ddim"] > 0
    assert "global_error" in summarize({"global_error": res})


def test_cli_single_experiment(tmp_path, capsys):
    from toy.__main__ import main

    assert main(["fd_error", "--out", str(tmp_path), "--n", "10", "--quiet"]) == 0
    assert (tmp_path / "fd_error.csv").exists()
    assert "fd_error" in capsys.readouterr().out
