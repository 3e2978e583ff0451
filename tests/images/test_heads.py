"""Prediction heads attached by hooks (images.heads) and their distillation (images.distill)."""
from __future__ import annotations

import pytest
import torch
from _images_helpers import TINY_KW, randomized

from images.errors import HeadMismatchError, HookError, NotDifferentiableError, ResumeError
from images.heads import attach_head, load_head, save_head, teacher_fingerprint
from images.unet import UNet, get_config
from taylorsolve.diffusion import eps_function, from_diffusers, sample
from taylorsolve.diffusion.distillation import derivative_targets, distillation_loss

diffusers = pytest.importorskip("diffusers")


def project_unet(seed: int = 0, dtype=torch.float64) -> UNet:
    cfg = get_config("tiny", in_channels=1, resolution=8, **TINY_KW)
    return randomized(UNet(cfg), seed).to(dtype).eval()


def diffusers_unet(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, add_attention=False)
    return unet.to(dtype).eval()


def _models():
    return {
        "project": (project_unet(), (1, 8, 8)),
        "diffusers": (from_diffusers(diffusers_unet(), diffusers.DDIMScheduler()), (3, 8, 8)),
    }


@pytest.mark.parametrize("which", ["project", "diffusers"])
def test_hooks_leave_the_network_output_unchanged_and_capture_features(which):
    model, shape = _models()[which]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=gen)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    plain = eps_function(model)
    before = plain(x, t).clone()
    headed = attach_head(model, overhead=None)
    eps_h, k = headed.net(x, t)                       # one pass: prediction and head output
    after = plain(x, t)                               # the network called on its own, hooks installed
    assert torch.equal(after, before)
    assert torch.allclose(headed.process.to_eps(eps_h, headed.parameterization, x, t) if which == "diffusers" else eps_h,
                          before, atol=1e-12, rtol=0)
    assert k.shape == x.shape and bool(torch.isfinite(k).all())
    eps_call, k_call = headed(x, t)                   # the documented form: eps, k = headed(x, t)
    assert torch.equal(k_call, k) and torch.equal(eps_call, eps_h)
    _, _, feats, emb = headed.features(x, t)
    assert feats.shape[0] == 3 and feats.shape[-2:] == x.shape[-2:] and emb.shape[0] == 3
    headed.remove()
    assert torch.equal(plain(x, t), before)


@pytest.mark.parametrize("which", ["project", "diffusers"])
def test_distillation_target_is_the_derivative_of_eps_along_the_ddim_ode(which):
    """Eq. (10)-(12): the JVP target equals a central difference of eps along the DDIM ODE, whose curve
    is built independently here: xbar(g) = xbar0 + (g - g0) eps0 (the ODE's tangent), x = alpha xbar."""
    model, shape = _models()[which]
    headed = attach_head(model, overhead=None)
    proc = headed.process
    sched = proc.schedule
    eps_fn = eps_function(headed.base)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=gen)
    t = torch.tensor([0.3004, 0.6007], dtype=torch.float64)   # off the discrete table's knots (kinks of log alpha)
    tg = derivative_targets(eps_fn, x, t, process=proc, module=headed.base.module)
    g0 = sched.gamma(t)
    eps0 = eps_fn(x, t)
    xbar0 = x / sched.alpha(t).reshape(-1, 1, 1, 1)

    def along(h: torch.Tensor) -> torch.Tensor:
        g = g0 + h
        tt = sched.t_from_gamma(g)
        xx = sched.alpha(tt).reshape(-1, 1, 1, 1) * (xbar0 + h.reshape(-1, 1, 1, 1) * eps0)
        return eps_fn(xx, tt)

    def central(h: torch.Tensor) -> torch.Tensor:
        return (along(h) - along(-h)) / (2 * h).reshape(-1, 1, 1, 1)

    # diffusers embeds timesteps (~300) sinusoidally in float32: eps oscillates with period ~6 timesteps
    # and t resolves to ~3e-5 timesteps; a step of 0.1 timestep (1e-4 in t) with Richardson
    # extrapolation keeps both the truncation (~1e-6) and the rounding (~3e-4) errors small
    h = 1e-4 / sched.dt_dgamma(g0)
    fd = ((4 * central(h) - central(2 * h)) / 3).detach()
    scale = float(fd.abs().max())
    assert scale > 1e-2                                               # a non-trivial derivative
    err = float((tg.d1 - fd).abs().max())
    assert err < 2e-3 * scale
    # the sign matters: Alg. 1's printed "JVP_s - JVP_t" is far off
    from taylorsolve.diffusion.distillation import ddim_tangents
    from taylorsolve.diffusion.forward_ad import forward_ad_safe

    u, dt_dg, _ = ddim_tangents(x, eps0, t, proc)
    with forward_ad_safe(headed.base.module):
        jvp_t = torch.func.jvp(eps_fn, (x, t), (torch.zeros_like(x), dt_dg))[1]
    wrong = tg.d1 - 2 * jvp_t
    assert float((wrong - fd).detach().abs().max()) > 50 * err
    headed.remove()


def test_distillation_cuts_the_weighted_loss(tmp_path):
    """A few hundred steps on the committed digits teacher cut the gamma^2-weighted loss well below its start."""
    from images import DEFAULT_DIGITS_CHECKPOINT
    from images.checkpoint import load_model
    from images.data import load_dataset
    from images.distill import DistillArgs, distill

    teacher = load_model(DEFAULT_DIGITS_CHECKPOINT)
    ds = load_dataset("digits")
    args = DistillArgs(out=str(tmp_path / "run"), steps=300, batch_size=32, pool=256, lr=3e-3, threads=1,
                       progress=False, eval_samples=128, checkpoint_every=10)
    res = distill(args, dataset=ds, teacher=teacher)
    losses = [r["loss"] for r in map(__import__("json").loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())]
    assert losses[-1] < 0.5 * losses[0]                              # the first entry averages steps 1-10
    # the weighted loss on fresh held-out draws relative to the starting head's (k ~ 0 scores 1)
    assert res["eval"]["rel_mse"] < 0.5
    # resume: the run folder holds a finished head; starting it again without --resume is refused
    with pytest.raises(ResumeError, match="--resume"):
        distill(args, dataset=ds, teacher=teacher)


def test_distillation_resume_is_exact(tmp_path):
    from images.data import load_dataset
    from images.distill import DistillArgs, distill

    teacher = project_unet(seed=4, dtype=torch.float32)
    ds = load_dataset("gaussian")
    kw = dict(steps=12, batch_size=8, threads=1, progress=False, eval_samples=0, checkpoint_every=4)
    distill(DistillArgs(out=str(tmp_path / "a"), **kw), dataset=ds, teacher=teacher)
    distill(DistillArgs(out=str(tmp_path / "b"), **kw), dataset=ds, teacher=teacher, stop_after=5)
    distill(DistillArgs(out=str(tmp_path / "b"), resume=True, **kw), dataset=ds, teacher=teacher)
    ha, _ = load_head(tmp_path / "a" / "head.safetensors")
    hb, _ = load_head(tmp_path / "b" / "head.safetensors")
    for (na, pa), (_, pb) in zip(ha.state_dict().items(), hb.state_dict().items()):
        assert torch.equal(pa, pb), na


def test_sample_with_a_head_reports_the_overhead_adjusted_nfe():
    model = project_unet(dtype=torch.float32)
    headed = attach_head(model, overhead=0.25)
    x1 = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = sample(headed, x1, nfe=10, method="genie", derivative="head")
    assert r.stats.nfe_budget == 10 and r.stats.eval_budget == 8 and r.stats.nfe == 8   # round(10 / 1.25)
    assert r.stats.derivative == "head" and r.stats.derivative_evals == r.stats.steps
    assert r.stats.equivalent_nfe == pytest.approx(8 * 1.25)
    # the head changes the result: not DDIM in disguise
    d = sample(headed, x1, 8, method="ddim")
    assert float((r.x - d.x).abs().max()) > 1e-6


def test_ttm3_runs_on_two_heads_and_one_head_is_refused():
    from taylorsolve.errors import TaylorSolveError

    from images.heads import HeadConfig, build_head

    model = project_unet(dtype=torch.float32)
    one = attach_head(model, overhead=0.0)
    x1 = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TaylorSolveError, match="second-order head"):
        sample(one, x1, 4, method="ttm", order=3, derivative="head")
    cfg = HeadConfig(**{**one.head.config.to_dict(), "order": 2})
    two = attach_head(model.__class__.__new__(model.__class__) if False else one.base, head=one.head,
                      head2=build_head(cfg, seed=1), overhead=0.0)
    r = sample(two, x1, 4, method="ttm", order=3, derivative="head")
    assert r.stats.order == 3 and bool(torch.isfinite(r.x).all())
    r2 = sample(two, x1, 4, method="genie", derivative="head")
    assert float((r.x - r2.x).abs().max()) > 0                       # the second head enters the step


def test_no_module_matching_the_preset_lists_candidates():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.temb_mlp = torch.nn.Linear(1, 8)
            self.body = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.out_norm = torch.nn.GroupNorm(2, 8)
            self.conv_out = torch.nn.Conv2d(8, 1, 3, padding=1)

        def forward(self, x, t):
            e = self.temb_mlp(t.reshape(-1, 1).to(x.dtype))
            return self.conv_out(self.out_norm(self.body(x) + e[:, :, None, None]))

    net = Net()
    with pytest.raises(HookError, match="no hook preset.*out_norm.*temb_mlp"):
        attach_head(net, overhead=None)
    # naming the modules works
    headed = attach_head(net, features="out_norm:input", embedding="temb_mlp", sample_shape=(1, 8, 8), overhead=None)
    eps, k = headed.net(torch.randn(2, 1, 8, 8), torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert k.shape == (2, 1, 8, 8)
    with pytest.raises(HookError, match="no module named 'nope'"):
        attach_head(net, features="nope", embedding="temb_mlp", sample_shape=(1, 8, 8), overhead=None)


def test_head_for_another_teacher_or_config_is_refused(tmp_path):
    a = project_unet(seed=0, dtype=torch.float32)
    b = project_unet(seed=1, dtype=torch.float32)
    headed = attach_head(a, overhead=None)
    path = save_head(tmp_path / "h.safetensors", headed.head, teacher=teacher_fingerprint(a), hooks=headed.hooks)
    attach_head(a, head=path, overhead=None)                                   # its own teacher: fine
    with pytest.raises(HeadMismatchError, match="weights differ"):
        attach_head(b, head=path, overhead=None)
    other_cfg = randomized(UNet(get_config("tiny", in_channels=1, resolution=8, **{**TINY_KW, "ch": 16})), 0).eval()
    with pytest.raises(HeadMismatchError, match="config.ch"):
        attach_head(other_cfg, head=path, overhead=None)


def test_teacher_with_integer_timestep_rounding_is_refused():
    from images.distill import teacher_batch
    from taylorsolve.diffusion.distillation import DistillationObjective

    unet = diffusers_unet(dtype=torch.float32)
    model = from_diffusers(unet, diffusers.DDIMScheduler(), round_timesteps=True)
    headed = attach_head(model, overhead=None)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    with pytest.raises(NotDifferentiableError, match="round_timesteps=False"):
        teacher_batch(headed, x, t, None, DistillationObjective())


def test_distillation_loss_weighting():
    k = torch.zeros(2, 1, 2, 2)
    target = torch.ones(2, 1, 2, 2)
    gamma = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert float(distillation_loss(k, target, gamma)) == pytest.approx((1.0 + 9.0) / 2)
    assert float(distillation_loss(k, target, gamma, weighting=False)) == pytest.approx(1.0)


def test_distil_a_head_for_a_diffusers_unet(tmp_path):
    """The same distillation runs on a diffusers UNet2DModel through from_diffusers (continuous timesteps)."""
    from images.data import GaussianImages
    from images.distill import DistillArgs, distill

    model = from_diffusers(diffusers_unet(dtype=torch.float32), diffusers.DDIMScheduler())
    ds = GaussianImages(resolution=8, channels=3)
    res = distill(DistillArgs(out=str(tmp_path / "d"), steps=30, batch_size=8, pool=32, threads=1, progress=False,
                              eval_samples=16, checkpoint_every=30), dataset=ds, teacher=model)
    assert res["step"] == 30 and res["eval"]["rel_mse"] < 1.0                 # better than the zero head
    headed = attach_head(model, head=tmp_path / "d" / "head.safetensors", overhead=None)
    eps, k = headed.net(torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7], dtype=torch.float64))
    assert k.shape == (2, 3, 8, 8)


def test_distillation_ddp_two_processes_matches_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank takes its slice of the global batch; the head equals
    the one-process run's up to summation order."""
    import subprocess

    from _images_helpers import cli_env, python

    def cmd(out):
        return ["-m", "images", "distill", "--out", str(out), "--steps", "4", "--batch-size", "8", "--pool", "16",
                "--threads", "1", "--eval-samples", "0", "--no-progress", "--checkpoint-every", "2"]

    ddp = [python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cmd(tmp_path / "ddp")]
    res = subprocess.run(ddp, env=cli_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    one = subprocess.run([python(), *cmd(tmp_path / "one")], env=cli_env(), capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, _ = load_head(tmp_path / "ddp" / "head.safetensors")
    b, _ = load_head(tmp_path / "one" / "head.safetensors")
    from images.heads import build_head

    init = build_head(a.config, seed=0)                              # the heads' common starting point
    for (k, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6), k
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), init.state_dict().values()))
