"""The sampling glue, reference-trajectory error, classifier FD, smoothness check, grids, the sample CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _images_helpers import TINY_KW, randomized

from images.errors import UnknownNameError
from images.evaluate import derivative_smoothness, inception_fid, per_image_rmse, save_grid, trajectory_error
from images.sampling import (
    diffusion_model,
    initial_noise,
    method_available,
    reference_solve,
    run_sampler,
    steps_for_budget,
)
from images.unet import build_unet
from taylorsolve.diffusion import expected_nfe


def _model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    m = build_unet("tiny", in_channels=1, resolution=8, **{**TINY_KW, "dropout": 0.0})
    m = randomized(m, seed)
    # a damped output so that the ODE stays well-behaved (eps of order 0.3)
    with torch.no_grad():
        m.conv_out.weight.mul_(0.3)
    return m.to(dtype).eval()


class GaussianEps(torch.nn.Module):
    """The exact eps of the ``gaussian`` dataset with the U-Net's interface: a smooth, known ODE."""

    def __init__(self):
        super().__init__()
        from images.data import GaussianImages
        from images.unet import get_config

        self.ds = GaussianImages()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.config = get_config("tiny", in_channels=1, resolution=8)

    def forward(self, x, t, class_labels=None):
        from taylorsolve.diffusion import LinearVPSchedule

        s = LinearVPSchedule()
        a = s.alpha(t).to(x.dtype)[:, None, None, None]
        sg = s.sigma(t).to(x.dtype)[:, None, None, None]
        return self.scale * self.ds.exact_eps(x, a, sg)


class Spy(torch.nn.Module):
    """Records what the model receives."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.dtype, t.dtype, tuple(t.shape), class_labels))
        return self.w * x * t[:, None, None, None]


def test_the_unet_crosses_the_boundary_with_batched_float32_time_and_labels():
    spy = Spy()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    r = run_sampler(spy, x, "ddim", 2)
    assert {c[:3] for c in spy.calls} == {(torch.float32, torch.float32, (3,))}
    assert r.x.dtype == torch.float64 and not r.x.requires_grad  # float64 state, no autograd graph
    # forward-mode AD through the boundary: d/dt (w x t) = w x
    from taylorsolve.diffusion import eps_function

    fn = eps_function(diffusion_model(spy))
    t = torch.tensor(0.25, dtype=torch.float64)
    assert torch.allclose(fn(x, t), 0.125 * x.float().double())
    _, dt = torch.func.jvp(lambda s: fn(x, s), (t,), (torch.ones_like(t),))
    assert torch.allclose(dt, 0.5 * x.float().double())
    labels = torch.tensor([1, 2, 3])
    run_sampler(spy, x, "ddim", 1, class_labels=labels)
    assert spy.calls[-1][3] is labels


def test_genie_autodiff_through_the_glue_is_second_order():
    """GENIE (autodiff d eps/d gamma through the boundary) converges faster than DDIM to the reference."""
    m = GaussianEps()
    x1 = initial_noise(4, (1, 8, 8), 0)
    ref = reference_solve(m, x1, "dpm3").x
    e = {(meth, n): trajectory_error(run_sampler(m, x1, meth, n).x, ref)["rmse"] for meth in ("ddim", "genie") for n in (8, 16)}
    assert e[("genie", 8)] < 0.5 * e[("ddim", 8)]
    # observed orders from refining the grid: about 1 for DDIM, about 2 for GENIE
    order = {meth: np.log2(e[(meth, 8)] / e[(meth, 16)]) for meth in ("ddim", "genie")}
    assert 0.7 < order["ddim"] < 1.4 and order["genie"] > 1.6, order


def test_reference_solvers_agree_and_the_reference_has_zero_error():
    m = GaussianEps()
    x1 = initial_noise(4, (1, 8, 8), 1)
    rk = reference_solve(m, x1, "rk45")
    dp = reference_solve(m, x1, "dpm3")
    assert trajectory_error(rk.x, rk.x)["rmse"] == 0.0
    assert float(per_image_rmse(rk.x, rk.x).abs().max()) == 0.0
    ddim = trajectory_error(run_sampler(m, x1, "ddim", 10).x, rk.x)["rmse"]
    agree = trajectory_error(dp.x, rk.x)["rmse"]
    assert agree < 0.01 * ddim, (agree, ddim)


def test_per_image_rmse():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.tensor([1.0, 2.0])[:, None, None, None].expand(2, 1, 2, 2)
    assert torch.allclose(per_image_rmse(a, b), torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_budgets():
    for method in ("ddim", "s-pndm", "dpm-solver++2m", "deis"):
        for afs in (False, True):
            n = steps_for_budget(method, 10, afs=afs)
            assert expected_nfe(method, n, afs=afs) <= 10 < expected_nfe(method, n + 1, afs=afs)
    # GENIE with its JVP priced at c evaluations: round(budget / (1 + c)) evaluations (sec. 5's rule);
    # with AFS the first step is free (analytic eps, no JVP)
    assert steps_for_budget("genie", 10, jvp_cost=1.0) == 5
    assert steps_for_budget("genie", 10, jvp_cost=2.5) == 3      # round(10 / 3.5) = 3
    assert steps_for_budget("genie", 10, jvp_cost=4.0) == 2
    assert steps_for_budget("genie", 10, afs=True, jvp_cost=1.0) == 6
    assert steps_for_budget("genie", 10) == 10


def test_unavailable_method_is_named():
    m = _model()
    x1 = initial_noise(2, (1, 8, 8), 0)
    with pytest.raises(UnknownNameError, match="known methods: ddim"):
        run_sampler(m, x1, "no-such-solver", 3)
    if not method_available("unipc"):
        with pytest.raises(UnknownNameError, match="not \\(yet\\) implemented"):
            run_sampler(m, x1, "unipc", 3)


def test_smoothness_check_sees_second_order_convergence_for_a_smooth_model():
    m = _model(torch.float64)
    x1 = initial_noise(2, (1, 8, 8), 0)
    rows = derivative_smoothness(m, x1, times=(0.1, 0.5), dts=(1e-2, 1e-3), ref_steps=20)
    for r in rows:
        big, small = r["rel_diff_dt=0.01"], r["rel_diff_dt=0.001"]
        assert small < big / 30 and small < 1e-3, r  # central differences: error ~ dt^2


def test_classifier_fd_held_out_small_noise_large():
    from images.classifier import classifier_fd, frechet_distance, load_classifier
    from images.data import load_digits

    clf = load_classifier()
    assert clf.info["held_out_accuracy"] > 0.95
    ds = load_digits()
    x, y = ds.train_images()
    xt, yt = ds.held_out()
    with torch.no_grad():
        assert float((clf(xt).argmax(1) == yt).float().mean()) > 0.95
    g = torch.Generator().manual_seed(0)
    held = classifier_fd(clf, [xt], x)
    noise = classifier_fd(clf, [torch.randn(xt.shape, generator=g).clamp(-1, 1) for _ in range(2)], x)
    blurred = classifier_fd(clf, [torch.nn.functional.avg_pool2d(xt, 3, 1, 1)], x)
    assert held["mean"] < 0.05 * noise["mean"] and held["mean"] < blurred["mean"] < noise["mean"]
    assert len(noise["values"]) == 2 and noise["std"] >= 0
    # the Frechet distance itself: zero for identical sets, the closed form for Gaussians
    f = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(f, f)) < 1e-8
    f2 = 2.0 * torch.randn(4000, 3, generator=g, dtype=torch.float64) + 1.0
    assert abs(frechet_distance(f, f2) - (3 * 1.0 + 3 * (2.0 - 1.0) ** 2)) < 0.3


def test_inception_fid_is_skipped_with_a_reason(tmp_path):
    x = torch.zeros(4, 1, 8, 8)
    val, msg = inception_fid(x, x, None)
    assert val is None and "--inception-weights" in msg
    val, msg = inception_fid(x, x, tmp_path / "missing.pth")
    assert val is None and "does not exist" in msg


def test_save_grid(tmp_path):
    from PIL import Image

    p = save_grid(torch.linspace(-1, 1, 6 * 16 * 16).reshape(6, 1, 16, 16), tmp_path / "g.png", nrow=3, scale=2)
    im = Image.open(p)
    assert im.size == (2 * (3 * 17 + 1), 2 * (2 * 17 + 1)) and im.mode == "L"


def test_sample_cli_writes_grid_and_samples(tmp_path, tiny_checkpoint, capsys):
    from safetensors.torch import load_file

    from images.cli import main

    rc = main(["sample", "--checkpoint", str(tiny_checkpoint), "--method", "ddim", "--nfe", "6", "--afs", "--num", "5",
               "--seed", "2", "--out", str(tmp_path), "--threads", "1"])
    assert rc == 0
    x = load_file(str(tmp_path / "ddim_nfe6_afs_seed2.safetensors"))["samples"]
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()
    assert (tmp_path / "ddim_nfe6_afs_seed2.png").is_file()
    assert "7 steps" in capsys.readouterr().out  # 6 NFE with the analytical first step: 7 steps
    assert main(["sample", "--checkpoint", str(tmp_path / "none"), "--method", "ddim", "--nfe", "5",
                 "--out", str(tmp_path)]) == 2
