"""taylorsolve.diffusion against diffusers: ``from_diffusers``, DDIM equality, DEIS / UniPC / DPM-Solver++ agreement.

Skipped without diffusers (the optional extra ``diffusers``; CI installs it with the ``test`` extra).

The multistep comparisons share one problem: Gaussian data ``N(mu, diag(s^2))`` (per channel) with its
closed-form eps, on diffusers' default discrete schedule (linear betas 1e-4 .. 0.02, 1000 timesteps),
both sides in float64.  diffusers keeps its tables in float32 (``alphas_cumprod``, and ``set_timesteps``
casts ``sigmas`` to float32), which alone would cap the agreement at ~1e-7; :func:`_float64_scheduler`
replaces those tensors by float64 ones computed from float64 betas, *the same* table our
``from_diffusers`` reads, so both sides see identical noise levels and any difference is the algorithm.

How diffusers' final step maps to ours (see ``MultistepMixin``):

* ``final_sigmas_type="zero"`` (UniPC, DPM-Solver++): the last of its ``N`` steps goes to ``sigma = 0``
  at first order, which is the denoising step: ``grid=scheduler.timesteps, denoise=True``;
* ``final_sigmas_type="sigma_min"`` (DEIS always): the last step goes to timestep 0's noise level:
  ``grid=cat(scheduler.timesteps, [0]), denoise=False``.
"""
from __future__ import annotations

import types

import pytest
import torch

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed (optional extra: pip install 'taylorsolve[diffusers]')")

from taylorsolve.diffusion import from_diffusers, get_process  # noqa: E402
from taylorsolve.diffusion.processes import vp_discrete  # noqa: E402
from taylorsolve.diffusion.registry import available_methods, get_sampler  # noqa: E402
from taylorsolve.diffusion.samplers import sample  # noqa: E402
from taylorsolve.diffusion.schedules import DiscreteVPSchedule  # noqa: E402
from taylorsolve.errors import TaylorSolveError  # noqa: E402

# diffusers 0.42's DEIS and DPM-Solver call numpy on torch tensors (NumPy 2 deprecation noise, not ours)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

F64 = torch.float64
BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)          # diffusers' default "linear" betas, in float64
ABAR = torch.cumprod(1.0 - BETAS, 0)
GAMMA = torch.sqrt((1.0 - ABAR) / ABAR)                        # diffusers' "sigmas" (sigma / alpha)
SCHED = DiscreteVPSchedule(ABAR)
MU = torch.tensor([0.4, -0.7, 0.1], dtype=F64).reshape(3, 1, 1)
S = torch.tensor([0.5, 0.3, 0.8], dtype=F64).reshape(3, 1, 1)
X1 = torch.randn(2, 3, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))


def _eps_gauss(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma * (x - alpha * MU) / (alpha * alpha * S * S + sigma * sigma)


class GaussUnet:
    """Exact eps of the Gaussian data with diffusers' calling convention ``unet(x, timestep).sample``.

    ``timestep`` is diffusers' (a 0-d integer tensor) or ours (a ``[B]`` float64 vector, ``t N - 1``);
    the noise level comes from the float64 table (continuous interpolation between timesteps).
    """

    def __init__(self, prediction: str = "epsilon", sched: DiscreteVPSchedule = SCHED):
        self.prediction, self.sched, self.calls = prediction, sched, 0

    def __call__(self, x: torch.Tensor, timestep):
        self.calls += 1
        n = torch.as_tensor(timestep, dtype=F64).reshape(-1)[0]
        t = self.sched.t_of_timestep(n)
        a, s = self.sched.alpha(t).to(x.dtype), self.sched.sigma(t).to(x.dtype)
        eps = _eps_gauss(x, a, s)
        out = {"epsilon": eps,
               "sample": (x - s * eps) / a,                               # x0
               "v_prediction": a * eps - s * (x - s * eps) / a}[self.prediction]   # v = alpha eps - sigma x0
        return types.SimpleNamespace(sample=out)


def _float64_scheduler(cls, **config):
    """A diffusers multistep scheduler whose tables are float64 (module docstring)."""
    sch = cls(**config)
    sch.alphas_cumprod = ABAR.clone()
    sch.alpha_t, sch.sigma_t = ABAR.sqrt(), (1.0 - ABAR).sqrt()
    sch.lambda_t = sch.alpha_t.log() - sch.sigma_t.log()
    return sch


def run_diffusers(cls, steps: int, x1: torch.Tensor, **config):
    """``steps`` steps of a diffusers multistep scheduler in float64; its result and timesteps."""
    sch = _float64_scheduler(cls, **config)
    sch.set_timesteps(steps)
    final = sch.config.get("final_sigmas_type", "sigma_min")     # DEIS has no option: timestep 0's sigma
    last = torch.zeros(1, dtype=F64) if final == "zero" else GAMMA[:1]
    # set_timesteps rebuilt sigmas in float32; put the float64 values at the same timesteps back
    sch.sigmas = torch.cat([GAMMA[sch.timesteps], last])
    unet, x = GaussUnet(), x1.clone()
    for t in sch.timesteps:
        x = sch.step(unet(x, t).sample, t, x).prev_sample
    assert unet.calls == steps
    return x, sch.timesteps.clone()


def _ours(method: str, timesteps: torch.Tensor, final: str, **kw):
    model = from_diffusers(GaussUnet(), types.SimpleNamespace(alphas_cumprod=ABAR,
                                                              config={"prediction_type": "epsilon"}))
    if final == "zero":
        return sample(model, X1, method=method, grid=timesteps, denoise=True, **kw)
    grid = torch.cat([timesteps, torch.zeros(1, dtype=timesteps.dtype)])
    return sample(model, X1, method=method, grid=grid, **kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


SPACINGS = {5: "linspace", 10: "trailing", 20: "leading"}

# (final_sigmas_type, lower_order_final).  ("zero", False) is not a configuration diffusers can run at
# order >= 2: its last UniP step to sigma = 0 divides by r = 0 (inf / a singular solve); ours has no such step.
UNIPC_CONFIGS = [("zero", True), ("sigma_min", True), ("sigma_min", False)]


@pytest.mark.parametrize("final,lof", UNIPC_CONFIGS)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_unipc_matches_diffusers_to_round_off(steps, order, final, lof):
    xd, ts = run_diffusers(diffusers.UniPCMultistepScheduler, steps, X1, solver_order=order, lower_order_final=lof,
                           final_sigmas_type=final, timestep_spacing=SPACINGS[steps])
    r = _ours("unipc", ts, final, order=order, lower_order_final=lof)
    assert _rel(r.x, xd) < 1e-13, _rel(r.x, xd)
    assert r.stats.nfe == steps
    # every step but the last is corrected; diffusers' final step to sigma = 0 is our denoising step
    assert r.stats.extra["corrections"] == r.stats.steps - 1


def test_unipc_disable_corrector_uses_diffusers_indices():
    xd, ts = run_diffusers(diffusers.UniPCMultistepScheduler, 8, X1, solver_order=3, disable_corrector=[0, 3])
    r = _ours("unipc", ts, "zero", order=3, lower_order_final=True, disable_corrector=[0, 3])
    assert _rel(r.x, xd) < 1e-13
    assert r.stats.extra["corrections"] == r.stats.steps - 1 - 2


@pytest.mark.parametrize("lof", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_deis_matches_diffusers_to_round_off(steps, order, lof):
    xd, ts = run_diffusers(diffusers.DEISMultistepScheduler, steps, X1, solver_order=order, lower_order_final=lof,
                           timestep_spacing=SPACINGS[steps])
    r = _ours("deis", ts, "sigma_min", order=order, lower_order_final=lof)
    assert _rel(r.x, xd) < 1e-12, _rel(r.x, xd)
    assert r.stats.nfe == steps


@pytest.mark.parametrize("final,lof", [("zero", True), ("zero", False), ("sigma_min", True), ("sigma_min", False)])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_dpm_solver_pp_2m_matches_diffusers(steps, final, lof):
    """diffusers' DPMSolverMultistepScheduler.step casts the state to float32 each step ("upcast"), so the
    agreement is float32 round-off, not float64: 1e-6 (an algorithmic difference is ~1e-3, see below)."""
    xd, ts = run_diffusers(diffusers.DPMSolverMultistepScheduler, steps, X1, solver_order=2, lower_order_final=lof,
                           final_sigmas_type=final, timestep_spacing=SPACINGS[steps])
    r = _ours("dpm-solver++2m", ts, final, lower_order_final=lof)
    assert _rel(r.x, xd) < 1e-6, _rel(r.x, xd)


def test_the_comparisons_resolve_lower_order_final_and_the_final_step():
    """The tolerances above are far below what a wrong configuration costs."""
    xd, ts = run_diffusers(diffusers.UniPCMultistepScheduler, 10, X1, solver_order=3, final_sigmas_type="sigma_min")
    assert _rel(_ours("unipc", ts, "sigma_min", order=3, lower_order_final=False).x, xd) > 1e-4
    xd, ts = run_diffusers(diffusers.DEISMultistepScheduler, 10, X1, solver_order=3, lower_order_final=True)
    assert _rel(_ours("deis", ts, "sigma_min", order=3, lower_order_final=False).x, xd) > 1e-4
    xd, ts = run_diffusers(diffusers.DPMSolverMultistepScheduler, 10, X1, final_sigmas_type="sigma_min")
    assert _rel(_ours("dpm-solver++2m", ts, "sigma_min", lower_order_final=False).x, xd) > 1e-4
    # with denoise=True the denoising step is the final, first-order one: the last grid step stays second order
    xd, ts = run_diffusers(diffusers.UniPCMultistepScheduler, 10, X1, solver_order=2)
    r_lower = _ours("unipc", ts, "sigma_min", lower_order_final=True)
    assert r_lower.stats.extra["step_orders"][-2:] == [2, 1]
    assert _ours("unipc", ts, "zero", lower_order_final=True).stats.extra["step_orders"][-1] == 2


# -- a real diffusers network -----------------------------------------------------------------------------
def tiny_unet(add_attention: bool = True) -> torch.nn.Module:
    """A randomly initialised, seeded ``UNet2DModel`` built from a config (nothing is downloaded)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, add_attention=add_attention)
    return unet.to(torch.float32).eval()   # explicit: another test module changes torch's default dtype


def test_genie_autodiff_through_diffusers_attention_matches_a_finite_difference():
    """d eps/d gamma along the DDIM ODE by one JVP through a UNet2DModel with attention (forward_ad.py)."""
    from taylorsolve.diffusion.forward_ad import forward_ad_safe

    unet = tiny_unet(add_attention=True)
    model = from_diffusers(unet, diffusers.DDIMScheduler())
    x1 = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r = sample(model, x1, 3, method="genie")                         # runs: JVPs through attention
    assert bool(torch.isfinite(r.x).all()) and r.stats.jvp_passes == 3
    proc = model.process
    t = torch.tensor(0.5, dtype=torch.float64)
    g = proc.schedule.gamma(t)

    def eps(x, tt):
        tb = (proc.schedule.timestep(tt) * torch.ones(x.shape[0], dtype=torch.float64)).float()
        return unet(x.float(), tb).sample.double()

    e = eps(x1, t)
    dx = e / torch.sqrt(1 + g * g) - g * x1 / (1 + g * g)             # eq. (11)
    dt = proc.schedule.dt_dgamma(g)
    with torch.no_grad(), forward_ad_safe(unet):
        from taylorsolve.diffusion.forward_ad import math_attention
        with math_attention():
            jvp = torch.func.jvp(eps, (x1, t), (dx, dt))[1]
        h = 1e-3
        fd = (eps(x1 + h * dx, t + h * dt) - eps(x1 - h * dx, t - h * dt)) / (2 * h)
    assert float((jvp - fd).abs().max()) < 2e-2 * float(fd.abs().max())


# DDIMScheduler steps from timestep t to t - 1000 // N.  That is its own next timestep for "leading"
# spacing (any N, any steps_offset) and for "trailing" when N divides 1000; "linspace" (and "trailing"
# otherwise) step to a timestep it never evaluates, so no ODE grid reproduces them.
DDIM_CASES = [("leading", 0, 5), ("leading", 0, 10), ("leading", 0, 50), ("leading", 1, 7), ("leading", 1, 10),
              ("trailing", 0, 10), ("trailing", 0, 20), ("trailing", 0, 25)]


@pytest.mark.parametrize("spacing,offset,steps", DDIM_CASES)
def test_ddim_on_scheduler_timesteps_equals_diffusers_ddim(spacing, offset, steps):
    """The issue's fixed names.  clip_sample=False: diffusers' default clips x0 to [-1, 1] (not an ODE step)."""
    unet = tiny_unet()
    scheduler = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset, clip_sample=False,
                                        set_alpha_to_one=True)
    scheduler.set_timesteps(steps)
    x1 = torch.randn(2, 3, 8, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(1))
    x = x1.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample

    model = from_diffusers(unet, scheduler)
    out = sample(model, x1, method="ddim", grid=scheduler.timesteps, denoise=True)
    assert out.x.dtype == torch.float32 and out.stats.nfe == steps
    tol = 50 * torch.finfo(torch.float32).eps * float(x.abs().max())
    assert float((out.x - x).abs().max()) < tol


def test_every_registered_sampler_runs_on_a_diffusers_unet():
    """NFE accounting and a finite float32 sample for every method, on a network with mid-block attention
    (GENIE's JVPs pass through it thanks to taylorsolve.diffusion.forward_ad: the math SDPA kernel and
    contiguous group_norm inputs under transforms).  ``ttm`` runs at order 2: nested forward AD (TTM-3)
    through diffusers' SiLU fails on torch 2.13 (silu_backward has no forward-mode formula)."""
    unet = tiny_unet(add_attention=True)
    x1 = torch.randn(2, 3, 8, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(1))

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, x, t):
            self.calls += 1
            return self.net(x, t)

    vp = get_process(None)
    for method in available_methods():
        cls = get_sampler(method)
        if not vp.supports(cls.coordinates):
            continue  # a unit of another process (CLD's SSCS)
        kw: dict = {}
        if cls.default_order is None and (cls.orders is None or len(cls.orders) != 1):
            kw["order"] = 2
        if cls.stochastic:
            kw["generator"] = torch.Generator().manual_seed(0)
        if cls.adaptive:
            kw.update(rtol=1e-2, atol=1e-2)
        net = Counting(unet)
        r = sample(from_diffusers(net, diffusers.DDIMScheduler()), x1, None if cls.adaptive else 4, method=method,
                   denoise=True, **kw)
        assert r.x.dtype == torch.float32 and r.x.shape == x1.shape and bool(torch.isfinite(r.x).all()), method
        if cls.adaptive:
            assert r.stats.nfe == net.calls > 0, method
            continue
        unit = cls(**{k: v for k, v in kw.items() if k == "order"})
        assert r.stats.nfe == unit.nfe(4) + 1, method
        # calls under a JVP are the derivative provider's, not NFE
        assert r.stats.nfe <= net.calls <= r.stats.nfe + r.stats.jvp_passes, method


# -- from_diffusers: parameterizations and errors ---------------------------------------------------------
@pytest.mark.parametrize("method", ["ddim", "unipc", "genie", "dpm-solver-2"])
def test_prediction_types_give_the_same_samples_as_the_eps_model(method):
    """epsilon / v_prediction / sample networks of the same exact model (diffusers' own float32 table)."""
    ref = None
    for pred in ("epsilon", "v_prediction", "sample"):
        scheduler = diffusers.DDIMScheduler(prediction_type=pred)
        scheduler.set_timesteps(6)
        sched = DiscreteVPSchedule(scheduler.alphas_cumprod)
        model = from_diffusers(GaussUnet(pred, sched), scheduler)
        r = sample(model, X1, method=method, grid=scheduler.timesteps, denoise=True)
        if ref is None:
            ref = r.x
            # and the eps network equals a plain continuous-time eps model on the same discrete process
            plain = lambda x, t: _eps_gauss(x, sched.alpha(t), sched.sigma(t))  # noqa: E731
            r_plain = sample(plain, X1, method=method, process=vp_discrete(scheduler.alphas_cumprod),
                             grid=scheduler.timesteps, denoise=True)
            assert _rel(r_plain.x, ref) < 1e-13
        else:
            assert _rel(r.x, ref) < 1e-11, (pred, _rel(r.x, ref))


@pytest.mark.parametrize("pred", ["flow_prediction", "banana"])
def test_unsupported_prediction_type_is_named(pred):
    scheduler = types.SimpleNamespace(alphas_cumprod=ABAR, config={"prediction_type": pred})
    with pytest.raises(TaylorSolveError, match=pred):
        from_diffusers(GaussUnet(), scheduler)
    with pytest.raises(TaylorSolveError, match="flow_prediction"):
        from_diffusers(GaussUnet(), diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction"))


def test_timestep_grid_outside_the_table_is_named():
    model = from_diffusers(GaussUnet(), diffusers.DDIMScheduler())
    for bad, shown in ((torch.tensor([1000, 500, 0]), "1000"), (torch.tensor([900, 500, -1]), "-1")):
        with pytest.raises(TaylorSolveError, match=rf"outside the table: timestep {shown}\b"):
            sample(model, X1, method="ddim", grid=bad)
