"""Tests for toy.learned: DSM training, head distillation (GENIE Alg. 1), checkpoints, comparison table.

Tiny sizes throughout (one intra-op thread; the whole file runs in well under a minute)."""
from __future__ import annotations

import csv
import math
import os

import pytest
import torch

from taylorsolve.diffusion import sample
from taylorsolve.diffusion.providers import autodiff_terms
from taylorsolve.diffusion.schedules import LinearVPSchedule
from toy import nested_mixture
from toy.learned import (
    CheckpointNotFoundError,
    DerivativeHead,
    EpsMLP,
    HeadConfig,
    HeadedModel,
    TrainConfig,
    autodiff_target,
    distill_head,
    evaluate_head,
    freeze,
    load_checkpoint,
    load_eps_model,
    measure_overhead,
    train_eps_model,
)
from toy.learned.compare import CSV_COLUMNS, run_comparison, single_thread
from toy.learned.head import make_head
from toy.learned.train import CheckpointConfigError

TINY_EPS = TrainConfig(iters=250, batch=128, hidden=48, depth=2, temb_dim=16, lr=3e-3)
TINY_HEAD = HeadConfig(iters=250, batch=128, hidden=32, lr=3e-3)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def mixture():
    return nested_mixture()


@pytest.fixture(scope="module")
def trained(mixture):
    model, state = train_eps_model(mixture, TINY_EPS, progress=False)
    head, hstate = distill_head(model, mixture, TINY_HEAD, progress=False)
    return model, state, head, hstate


def _mean(v):
    return sum(v) / len(v)


def test_dsm_loss_decreases(trained):
    _, state, _, _ = trained
    assert len(state.losses) == TINY_EPS.iters
    assert _mean(state.losses[-30:]) < 0.6 * _mean(state.losses[:10])


def test_distillation_loss_decreases(trained, mixture):
    model, _, head, hstate = trained
    assert _mean(hstate.losses[-50:]) < _mean(hstate.losses[:20])  # noisy minibatch losses (seeded)
    # on fixed held-out points, eq. (15)'s weighted error of the untrained head (same seed) vs the trained one
    untrained = make_head(model, TINY_HEAD)
    before = evaluate_head(model, untrained, mixture, n=2048, seed=7)["rel_mse"]
    after = evaluate_head(model, head, mixture, n=2048, seed=7)["rel_mse"]
    assert after < 0.9 * before, (before, after)


def test_teacher_frozen(trained):
    model, _, _, _ = trained
    assert all(not p.requires_grad for p in model.parameters())


def test_head_beats_zero_derivative_on_held_out_points(trained, mixture):
    model, _, head, _ = trained
    ev = evaluate_head(model, head, mixture, n=2048, seed=999)  # a zero derivative scores exactly 1
    assert ev["rel_mse"] < 0.9, ev


def test_autodiff_target_is_sum_of_eq12_terms():
    torch.manual_seed(0)
    model = freeze(EpsMLP(hidden=32, depth=2, temb_dim=16).double())
    sched = LinearVPSchedule()
    x = torch.randn(16, 2, dtype=torch.float64)
    for tv in (0.01, 0.3, 0.9):
        t = torch.tensor(tv, dtype=torch.float64)
        eps, d = autodiff_target(model, x, t, sched)
        terms = autodiff_terms(model, x, t, sched)
        torch.testing.assert_close(eps, terms.eps)
        torch.testing.assert_close(d, terms.total, rtol=1e-10, atol=1e-10)
        # eq. (12)'s sign (+ JVP_t, not Alg. 1's typo): central difference along the tangent (dx/dgamma, dt/dgamma)
        g = sched.gamma(t)
        u = eps / torch.sqrt(1 + g * g) - g / (1 + g * g) * x
        h = 1e-6
        dtdg = sched.dt_dgamma(g)
        fd = (model(x + h * u, t + h * dtdg) - model(x - h * u, t - h * dtdg)) / (2 * h)
        torch.testing.assert_close(d, fd, rtol=1e-5, atol=1e-6)
        alg1_typo = terms.coef1 * terms.jvp1 + terms.coef2 * terms.jvp2 - terms.time_term
        assert (alg1_typo - fd).abs().max() > 10 * (d - fd).abs().max()
    # per-sample times give the same as one scalar time per sample
    ts = torch.tensor([0.05, 0.5], dtype=torch.float64)
    _, d2 = autodiff_target(model, x[:2], ts, sched)
    for i in range(2):
        _, di = autodiff_target(model, x[i:i + 1], ts[i], sched)
        torch.testing.assert_close(d2[i:i + 1], di)


def test_mixed_parameterization_eq14():
    torch.manual_seed(0)
    head = DerivativeHead(8, 4, dim=2, hidden=16, mixed=True).double()
    h, temb = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    x, e = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    gamma = torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0], dtype=torch.float64)
    head.calibrate(h, temb, x, e, gamma)
    z = torch.cat([h, temb, x, e, torch.log(gamma)[:, None]], -1)
    assert (head.in_scale != 1).all() and (head.in_shift != 0).all()   # the inputs are standardised
    raw = head.net((z - z.mean(0)) / z.std(0))
    k1, k2, k3 = raw[:, :2], raw[:, 2:4], raw[:, 4:]
    g = gamma[:, None]
    want = -k1 / g + g / (1 + g * g) * k2 + k3 / (g * (1 + g * g))
    torch.testing.assert_close(head(h, temb, x, e, gamma), want)
    direct = DerivativeHead(8, 4, dim=2, hidden=16, mixed=False).double()
    torch.testing.assert_close(direct(h, temb, x, e, gamma), direct.net(z))   # uncalibrated: identity scaling


def test_head_errors_per_band(trained, mixture):
    model, _, head, _ = trained
    ev = evaluate_head(model, head, mixture, n=3000, seed=5)
    assert [(b["lo"], b["hi"]) for b in ev["bands"]] == [(1e-3, 1e-2), (1e-2, 1e-1), (1e-1, 1.0)]
    assert sum(b["n"] for b in ev["bands"]) == 3000
    assert min(b["n"] for b in ev["bands"]) > 300          # uniform+log visits small t (uniform: ~1 %)
    assert ev["rel_mse"] < 0.9 and ev["bands"][1]["rel_mse"] < 0.9, ev   # tiny sizes: see README for the default


def test_resume_with_other_settings_is_refused(tmp_path, mixture):
    path = str(tmp_path / "eps.safetensors")
    train_eps_model(mixture, TrainConfig(iters=4, batch=16, hidden=16, depth=1, temb_dim=8), path, progress=False)
    with pytest.raises(CheckpointConfigError, match="hidden: 16 there, 24 now"):
        train_eps_model(mixture, TrainConfig(iters=8, batch=16, hidden=24, depth=1, temb_dim=8), path, progress=False)
    _, st = train_eps_model(mixture, TrainConfig(iters=8, batch=16, hidden=16, depth=1, temb_dim=8), path,
                            progress=False)                   # a longer run of the same settings resumes
    assert st.step == 8


def test_headed_model_samples_and_reuses_features(trained):
    model, _, head, _ = trained
    hm = HeadedModel(model, head)
    x1 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = sample(hm, x1, 6, method="genie", derivative=hm.provider())
    assert torch.isfinite(res.x).all()
    assert res.stats.nfe == 6 and res.stats.derivative_evals == 6
    assert hm.cache_hits == 6 and hm.cache_misses == 0
    ov = measure_overhead(model, head, batch=256, repeats=3, inner=3)
    assert ov["overhead"] > 0 and ov["head_params"] < ov["model_params"]


def test_checkpoint_roundtrip_and_resume(tmp_path, mixture):
    cfg = TrainConfig(iters=30, batch=32, hidden=16, depth=1, temb_dim=8, ckpt_every=10)
    path = str(tmp_path / "eps.safetensors")
    # interrupted after 12 steps (checkpoint written), then resumed to 30
    m1, s1 = train_eps_model(mixture, cfg, path, progress=False, stop_after=12)
    assert s1.step == 12
    m2, s2 = train_eps_model(mixture, cfg, path, progress=False)
    assert s2.step == 30 and len(s2.losses) == 30
    # uninterrupted reference run: identical parameters and losses
    m3, s3 = train_eps_model(mixture, cfg, None, progress=False)
    for (k, a), (_, b) in zip(m2.state_dict().items(), m3.state_dict().items()):
        assert torch.equal(a, b), k
    assert s2.losses == pytest.approx(s3.losses, rel=0, abs=0)
    # exact round trip of parameters and optimizer state
    m4 = load_eps_model(path)
    for (k, a), (_, b) in zip(m2.state_dict().items(), m4.state_dict().items()):
        assert torch.equal(a, b), k
    opt = torch.optim.Adam(m4.parameters(), lr=1.0)
    st = load_checkpoint(path, m4, opt)
    assert st.step == 30
    steps = {int(v["step"]) for v in opt.state_dict()["state"].values()}
    assert steps == {30}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # atomic: no temp files left


def test_missing_checkpoint_raises_clear_error(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="nope.safetensors"):
        load_eps_model(missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(missing, EpsMLP())


def test_compare_table(tmp_path):
    variants = {"GENIE (head)": {}, "no mixed param.": {"mixed": False}}
    res = run_comparison(
        str(tmp_path), nfes=(5, 10), n_samples=128,
        eps_cfg=TrainConfig(iters=60, batch=64, hidden=32, depth=2, temb_dim=16),
        head_cfg=HeadConfig(iters=30, batch=64, hidden=16), variants=variants, progress=False, figure=True,
    )
    for f in ("table.csv", "table.md", "comparison.png", "summary.json"):
        assert (tmp_path / f).is_file(), f
    with open(tmp_path / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    methods = {r["method"] for r in rows}
    assert {"DDIM", "S-PNDM", "GENIE (AD)", "GENIE (head)", "no mixed param.", "GENIE (exact, true eps)",
            "p_0 samples"} <= methods
    for r in rows:
        assert int(r["nfe"]) in (5, 10)
        fr = [float(r[f"frac_{h}sigma"]) for h in (1, 2, 3, 4)]
        assert all(0.0 <= v <= 1.0 for v in fr) and fr == sorted(fr)
        assert math.isfinite(float(r["mean_logp0"])) and float(r["sliced_w2"]) >= 0
        if r["method"] != "p_0 samples":
            assert 0 < int(r["nfe_used"]) <= int(r["nfe"])
    by = {(r["method"], int(r["nfe"])): r for r in rows}
    assert float(by[("p_0 samples", 5)]["frac_4sigma"]) > 0.98
    assert int(by[("GENIE (AD)", 10)]["nfe_used"]) == 5  # 100 % overhead: round(10 / 2)
    assert float(by[("GENIE (exact, true eps)", 10)]["frac_4sigma"]) > 0.5
    md = (tmp_path / "table.md").read_text()
    assert "| method | NFEs=5 | NFEs=10 |" in md
    assert "| head | rel. error (gamma^2-weighted) | unweighted | t in [0.001, 0.01) | t in [0.01, 0.1) | t in [0.1, 1] |" in md
    assert len(res["summary"]["heads"]["GENIE (head)"]["bands"]) == 3
    assert res["summary"]["overhead"]["head_params"] > 0
