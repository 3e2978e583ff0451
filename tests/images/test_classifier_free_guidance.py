"""Classifier-free guidance on the class-conditional U-Net (eq. (79)-(81)): w = 0 is unguided sampling, the
guided-ODE head's target is the derivative of eps_hat along the guided ODE, eq. (81)'s pair misses it by the
documented gap; distillation with conditional teachers; named errors for bad labels and unguidable models."""
from __future__ import annotations

import pytest
import torch
from _images_helpers import TINY_KW, randomized

from images.data import load_digits
from images.distill import Conditioner, DistillArgs, build_pool, distill
from images.errors import ClassLabelError, GuidanceError
from images.guidance import (
    GuidedUNet,
    branch_eps,
    check_requested_labels,
    eq81_gap,
    eq81_pair,
    guided_target,
    ode_derivative,
)
from images.heads import attach_head
from images.sampling import diffusion_model
from images.unet import build_unet
from taylorsolve.diffusion import sample
from taylorsolve.diffusion.schedules import LinearVPSchedule

F64 = torch.float64
SCH = LinearVPSchedule()


def _cond_model(dtype=F64, seed=0, num_classes=3):
    torch.manual_seed(seed)
    m = build_unet("tiny", in_channels=1, resolution=8, num_classes=num_classes, **{**TINY_KW, "dropout": 0.0})
    m = randomized(m, seed)
    with torch.no_grad():
        m.conv_out.weight.mul_(0.3)
        m.class_embed.weight.normal_(0.0, 1.0)
    return m.to(dtype).eval()


def _x(n=4, seed=1):
    return torch.randn(n, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("method,deriv", [("ddim", None), ("genie", "autodiff"), ("dpm-solver++2m", None)])
def test_guidance_scale_zero_is_unguided_sampling_exactly(method, deriv):
    m = _cond_model()
    x1 = _x()
    kw = {} if deriv is None else {"derivative": deriv}
    plain = sample(diffusion_model(m), x1, 6, method=method, cond={"class_labels": LABELS}, **kw)
    g0 = sample(diffusion_model(m), x1, 6, method=method, cond={"class_labels": LABELS}, guidance_scale=0.0, **kw)
    assert torch.equal(plain.x, g0.x)
    assert g0.stats.model_calls == 2 * plain.stats.model_calls          # both branches were evaluated
    # the guided model as one network at w = 0 is the conditional model, too
    gw = sample(diffusion_model(GuidedUNet(m)), x1, 6, method=method, cond={"class_labels": LABELS, "guidance": 0.0}, **kw)
    assert torch.allclose(gw.x, plain.x, rtol=1e-12, atol=1e-12)
    g1 = sample(diffusion_model(m), x1, 6, method=method, cond={"class_labels": LABELS}, guidance_scale=1.0, **kw)
    assert float((g1.x - plain.x).abs().max()) > 1e-3


def test_guided_network_is_eq79_and_exposes_both_branches_to_a_head():
    m = _cond_model()
    x, t = _x(), torch.tensor(0.4, dtype=F64)
    w = torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=F64)
    gw = GuidedUNet(m).eval()
    got = {}
    hs = [gw.last_features.register_forward_hook(lambda mod, i, o: got.__setitem__("feat", o)),
          gw.embedding.register_forward_hook(lambda mod, i, o: got.__setitem__("emb", o))]
    with torch.no_grad():
        out = gw(x, t.expand(4), LABELS, w)
        wx = w.reshape(4, 1, 1, 1)
        want = (1 + wx) * m(x, t.expand(4), LABELS) - wx * m(x, t.expand(4))
    for h in hs:
        h.remove()
    assert torch.allclose(out, want, rtol=1e-12, atol=1e-12)
    assert got["feat"].shape == (4, 2 * m.feature_channels, 8, 8)
    assert got["emb"].shape == (4, m.emb_dim + 2)
    # the scale reaches the head's embedding: two images differing only in w get different embeddings
    assert float((got["emb"][1] - got["emb"][2]).abs().max()) > 0.1
    # GENIE on the guided network with the exact derivative = GENIE-AD with the boundary's guidance
    a = sample(diffusion_model(gw), x, 5, method="genie", cond={"class_labels": LABELS, "guidance": 2.0})
    b = sample(diffusion_model(m), x, 5, method="genie", cond={"class_labels": LABELS}, guidance_scale=2.0)
    assert torch.allclose(a.x, b.x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_guided_target_is_a_finite_difference_of_eps_hat_along_the_guided_ode(t):
    m = _cond_model()
    x, w = _x(), 2.0
    tt = torch.tensor(t, dtype=F64)
    d = guided_target(m, x, tt, LABELS, w)
    f = branch_eps(m, LABELS, w)
    g = SCH.gamma(tt)
    xbar = x * torch.sqrt(1 + g * g)

    def eps_hat(xb, gam):
        return f(xb / torch.sqrt(1 + gam * gam), SCH.t_from_gamma(gam))

    errs = []
    with torch.no_grad():
        e0 = eps_hat(xbar, g)
        for rel in (1e-2, 1e-3):
            h = rel * float(g)
            fd = (eps_hat(xbar + h * e0, g + h) - eps_hat(xbar - h * e0, g - h)) / (2 * h)   # along (eps_hat, 1)
            errs.append(float((fd - d).norm() / d.norm()))
    assert errs[1] < 1e-5, errs
    assert errs[1] < errs[0] / 30, errs      # central differences: O(h^2)
    # the derivative is along the guided ODE, not along the conditional model's own
    _, d_c = ode_derivative(branch_eps(m, LABELS), x, tt)
    assert float((d_c - d).norm() / d.norm()) > 1e-2


@pytest.mark.parametrize("w", [1.0, 4.0])
def test_eq81_pair_misses_the_guided_derivative_by_the_documented_gap(w):
    m = _cond_model(seed=2)
    x, t = _x(seed=3), torch.tensor(0.25, dtype=F64)
    true = guided_target(m, x, t, LABELS, w)
    pair = eq81_pair(m, x, t, LABELS, w)
    gap = eq81_gap(m, x, t, LABELS, w)
    assert float((pair - true - gap).norm()) < 1e-9 * float(true.norm())
    assert float(gap.norm()) > 1e-3 * float(true.norm())      # the gap is real on a network
    assert float(eq81_gap(m, x, t, LABELS, 0.0).abs().max()) == 0.0


def test_distillation_targets_of_conditional_teachers():
    """The pool of a guided teacher holds d eps_hat/d gamma along the guided ODE for each image's own scale;
    a class-conditional teacher's pool drops labels at the requested rate."""
    m = _cond_model(dtype=torch.float32, num_classes=10)
    ds = load_digits(resolution=8)
    args = DistillArgs(guidance="0:4", label_dropout=0.5)
    gw = GuidedUNet(m).eval()
    headed = attach_head(gw, overhead=None)
    pool = build_pool(headed, ds, 16, batch=8, conditioner=Conditioner(gw, args))
    w, y = pool["cond.guidance"], pool["cond.class_labels"]
    assert float(w.min()) >= 0 and float(w.max()) <= 4 and float(w.std()) > 0.3 and int((y == 10).sum()) == 0
    md = m.double()
    for i in (0, 7, 12):
        want = guided_target(md, pool["x_t"][i:i + 1].double(), pool["t"][i], y[i:i + 1], float(w[i]))
        got = pool["target_autodiff"][i:i + 1].double()
        assert float((got - want).norm() / want.norm()) < 1e-4
    m.float()
    plain = build_pool(attach_head(m, overhead=None), ds, 256, batch=64, conditioner=Conditioner(m, args))
    dropped = float((plain["cond.class_labels"] == 10).float().mean())
    assert 0.4 < dropped < 0.6


def test_a_guided_head_distils_and_reattaches_from_its_file(tmp_path):
    m = _cond_model(dtype=torch.float32, num_classes=10)
    ds = load_digits(resolution=8)
    res = distill(DistillArgs(out=str(tmp_path / "g"), steps=20, batch_size=8, pool=32, threads=1, progress=False,
                              guidance="0:4", eval_samples=32, checkpoint_every=10), dataset=ds, teacher=m)
    assert res["head_config"]["emb_dim"] == m.emb_dim + 2
    assert res["head_config"]["feature_channels"] == 2 * m.feature_channels
    headed = attach_head(GuidedUNet(m), head=res["checkpoint"], overhead=None)
    x1 = _x().float()
    out = sample(headed, x1, 4, method="genie", derivative="head", cond={"class_labels": LABELS, "guidance": 2.0})
    assert out.stats.nfe == 4 and bool(torch.isfinite(out.x).all())
    from images.errors import HeadMismatchError

    with pytest.raises(HeadMismatchError):          # distilled on the guided model, not on the bare U-Net
        attach_head(m, head=res["checkpoint"], overhead=None)


def test_named_errors_for_labels_and_unguidable_models():
    m = _cond_model()
    x1 = _x()
    with pytest.raises(ClassLabelError, match=r"\[0, 2\]"):
        GuidedUNet(m)(x1, torch.full((4,), 0.5, dtype=F64), torch.tensor([0, 1, 3, 0]), 1.0)  # 3 = "no label"
    with pytest.raises(ClassLabelError, match=r"\[0, 2\]"):
        check_requested_labels(m, torch.tensor([-1, 0, 0, 0]), 4)
    with pytest.raises(ClassLabelError, match="integers"):
        check_requested_labels(m, torch.tensor([0.0, 1.0, 0.0, 0.0]), 4)
    with pytest.raises(ClassLabelError, match=r"\[0, 2\]"):          # the network itself refuses, too
        m(x1, torch.full((4,), 0.5, dtype=F64), torch.tensor([0, 1, 7, 0]))
    with pytest.raises(GuidanceError, match="scale"):
        GuidedUNet(m)(x1, torch.full((4,), 0.5, dtype=F64), LABELS, -1.0)
    unc = build_unet("tiny", in_channels=1, resolution=8, **{**TINY_KW, "dropout": 0.0}).double().eval()
    with pytest.raises(GuidanceError, match="class-conditional"):
        GuidedUNet(unc)
    with pytest.raises(ClassLabelError, match="unconditional"):
        unc(x1, torch.full((4,), 0.5, dtype=F64), LABELS)
    with pytest.raises(GuidanceError, match="lo:hi"):
        DistillArgs(guidance="4:1").check()


def test_the_pipeline_refuses_guidance_of_an_unconditional_model():
    from images.sampling import run_sampler

    unc = build_unet("tiny", in_channels=1, resolution=8, **{**TINY_KW, "dropout": 0.0}).double().eval()
    with pytest.raises(GuidanceError, match="class-conditional"):
        run_sampler(unc, _x(), "ddim", 3, guidance_scale=2.0)
    m = _cond_model()
    with pytest.raises(GuidanceError, match="finite"):
        run_sampler(m, _x(), "ddim", 3, class_labels=LABELS, guidance_scale=float("nan"))
    a = run_sampler(m, _x(), "ddim", 3, class_labels=LABELS, guidance_scale=0.0)
    b = run_sampler(m, _x(), "ddim", 3, class_labels=LABELS)
    assert torch.equal(a.x, b.x)
