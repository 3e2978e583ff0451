"""Hybrid score matching of a small CLD model (gDDIM eq. (22)/(23)): the kernel it samples, training, sampling."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.diffusion import CLD, sample
from toy import CLDMixture, GaussianMixture
from toy.learned.cld import cld_diffusion_model, hsm_loss, load_cld_model, train_cld_model
from toy.learned.train import TrainConfig

F64 = torch.float64


@pytest.mark.parametrize("factor", ["R", "L"])
def test_hsm_perturbation_kernel_moments(factor):
    """u_t = mu_t(x_0) + K_t eps has mean Psi(t, 0)(x_0, 0) and covariance Sigma_t for K = R and K = L."""
    proc = CLD()
    gen = torch.Generator().manual_seed(0)
    n, t = 40000, 0.2
    x0 = torch.full((n, 1), 0.6, dtype=F64)
    u, eps = proc.hsm_perturb(x0, torch.full((n,), t, dtype=F64), gen, factor)
    S = proc.sigma(torch.tensor(t, dtype=F64))
    mean = proc.psi(torch.tensor(t, dtype=F64))[:, 0] * 0.6
    assert ((u.mean(0) - mean).abs() < 4 * torch.sqrt(S.diagonal() / n)).all()
    se = torch.sqrt((S.diagonal()[:, None] * S.diagonal()[None, :] + S * S) / n)
    assert ((torch.cov(u.T) - S).abs() < 4 * se).all()


def test_hsm_training_learns_the_exact_eps_in_both_parameterisations(tmp_path):
    mix = GaussianMixture([0.5, 0.5], torch.tensor([[-0.5, 0.2], [0.5, -0.2]], dtype=F64), stds=0.3)
    cfg = TrainConfig(iters=300, batch=256, lr=1e-2, lr_final=1e-3, hidden=48, depth=2, x_fourier=8, ckpt_every=150,
                      x_scale=4.0, time_sampling="uniform")
    gen = torch.Generator().manual_seed(1)
    for factor in ("R", "L"):
        proc = CLD(factor=factor, data_channels=2)
        cm = CLDMixture(mix, proc)
        path = tmp_path / f"m_{factor}.safetensors"
        model, state = train_cld_model(mix, factor, cfg, str(path), process=proc, progress=False)
        assert sum(state.losses[-20:]) / 20 < 0.6 * sum(state.losses[:20]) / 20
        # the learned eps is closer to the exact one than an untrained network (the part each loss trains)
        u = cm.sample_t(512, 0.5, gen)
        part = slice(0, 4) if factor == "R" else slice(2, 4)
        exact = cm.eps(u, 0.5)[:, part]
        torch.manual_seed(123)
        with torch.no_grad():
            learned = model(u.float(), torch.tensor(0.5)).double()[:, part]
            fresh = type(model)(**model.config)(u.float(), torch.tensor(0.5)).double()[:, part]
        assert float(((learned - exact) ** 2).mean()) < 0.2 * float(((fresh - exact) ** 2).mean())
        # the checkpoint restores the model and its process; the sampler runs it through the boundary
        m2, p2 = load_cld_model(str(path))
        assert p2.factor == factor and p2.data_channels == 2
        u1 = proc.prior_sample((64, 4), generator=gen, dtype=F64)
        r = sample(cld_diffusion_model(m2, p2), u1, 10, method="gddim", order=2)
        assert r.x.shape == (64, 4) and bool(torch.isfinite(r.x).all())
        assert r.x.dtype == F64 and r.stats.nfe == 10


def test_hsm_loss_weights_only_the_velocity_part_for_l():
    """gDDIM eq. (72): the L model is trained on eps_v only; eq. (73): the R model on both parts."""
    proc = CLD()
    x0 = torch.zeros(8, 1, dtype=F64)
    t = torch.full((8,), 0.5, dtype=F64)

    class Const(torch.nn.Module):
        def __init__(self, which):
            super().__init__()
            self.which = which

        def forward(self, u, tt):
            out = torch.zeros_like(u)
            out[:, self.which] = 1e3
            return out

    g = torch.Generator().manual_seed(0)
    base = hsm_loss(Const(slice(0, 0)), proc, x0, t, torch.Generator().manual_seed(0), "L")
    assert math.isclose(float(hsm_loss(Const(slice(0, 1)), proc, x0, t, torch.Generator().manual_seed(0), "L")),
                        float(base), rel_tol=1e-6)
    assert float(hsm_loss(Const(slice(0, 1)), proc, x0, t, g, "R")) > 1e5
