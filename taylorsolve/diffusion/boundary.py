r"""The model boundary: one place where a network is called, counted, checked and converted to eps.

A sampler never calls a network directly.  :func:`taylorsolve.diffusion.sample` builds one
:class:`ModelBoundary` per call from a :class:`DiffusionModel` (or a plain callable, wrapped with the
keyword arguments of ``sample``), and every evaluation goes through :meth:`ModelBoundary.__call__`,
which

1. converts the solver's float64 time ``t`` to what the network takes (:attr:`DiffusionModel.time`):
   ``"continuous"`` ``t``; ``"discrete"`` the timestep ``t N - 1`` of an ``alphas_cumprod`` table of
   length ``N`` (continuous interpolation as in DPM-Solver; ``round_timesteps=True`` rounds to the
   network's integer timesteps); ``"sigma"`` EDM's noise level ``gamma_t`` for an EDM denoiser
   ``D(x / alpha_t, gamma_t)``;
2. shapes it as the network wants (:attr:`DiffusionModel.t_shape`: a 0-d tensor or a ``[B]`` vector)
   and casts ``x`` and ``t`` to the network's dtype (**dtype policy**: the solver state keeps the
   dtype of ``x1``, e.g. float64, while a float32 network is called in float32; its output is cast
   back to the state's dtype; all casts are differentiable, so JVPs pass through);
3. passes the conditioning (``cond=``: a dict of keyword arguments, or a third positional argument)
   and forms classifier-free guidance ``(1 + w) eps_c - w eps_u`` (eq. (79));
4. checks the output once (a floating tensor of the state's shape; finite outside autodiff
   transforms, else :class:`SolverError` naming the time and step) and converts the prediction
   (``eps``, ``x0``, ``v``, ``score``, ``edm``) to eps through the process;
5. counts: one NFE per primal evaluation, two model calls when guided; evaluations under
   ``torch.func`` transforms (JVPs) are counted by the derivative provider instead.

A network may also return a pair ``(prediction, k)`` where ``k ~ d eps / d gamma`` comes from a
distilled head computed in the same forward pass (GENIE, sec. 3.1); the boundary keeps ``k`` of the
last evaluation for the ``"head"`` derivative provider.  :attr:`DiffusionModel.overhead` (the head's
measured cost as a fraction of one network evaluation) enters NFE budgets (sec. 5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import SolverError, TaylorSolveError
from .cost import SampleStats
from .forward_ad import is_transformed, math_attention
from .parameterization import PARAMETERIZATIONS, broadcast_to_x
from .processes import DiffusionProcess, ScalarProcess, get_process, known_parameterizations, vp_discrete
from .schedules import DiscreteVPSchedule, as_time_tensor

__all__ = [
    "DiffusionModel",
    "ModelBoundary",
    "from_diffusers",
    "from_edm",
    "eps_function",
    "is_transformed",
    "MODEL_PARAMETERIZATIONS",
    "TIME_CONVENTIONS",
]

#: what a network may predict (``edm``: a denoiser ``D(x / alpha, gamma) ~ x_0``)
MODEL_PARAMETERIZATIONS = PARAMETERIZATIONS + ("edm",)
#: what a network may take as its time input
TIME_CONVENTIONS = ("continuous", "discrete", "sigma")
_T_SHAPES = ("auto", "scalar", "batch")

def _module_dtype(net: Any) -> torch.dtype | None:
    if isinstance(net, torch.nn.Module):
        for p in net.parameters():
            if torch.is_floating_point(p):
                return p.dtype
    return None


class DiffusionModel:
    """A network and how to call it (the declaration the boundary reads; see the module docstring).

    Args:
        net: ``net(x, t_in, *cond) -> prediction`` (or ``(prediction, k)`` with a head).
        parameterization: ``"eps"`` (default), ``"x0"``, ``"v"``, ``"score"`` or ``"edm"``.
        time: ``"continuous"`` (default), ``"discrete"`` (needs a discrete-table process) or
            ``"sigma"`` (EDM noise level; implied by ``parameterization="edm"``).
        t_shape: ``"scalar"`` (0-d), ``"batch"`` (``[B]``) or ``"auto"`` (``"batch"`` for
            ``torch.nn.Module`` networks, ``"scalar"`` otherwise).
        dtype: the network's input dtype; default the dtype of an ``nn.Module``'s parameters, else
            no cast (``x``'s own dtype).
        process: the process the network was trained for (default: the linear VP process, or the
            discrete process of ``from_diffusers``).  ``sample(..., process=...)`` may not contradict it.
        round_timesteps: ``"discrete"`` only: round ``t N - 1`` to the nearest integer timestep.
            Rounding makes eps piecewise constant in ``t``; autodiff derivatives then refuse to run.
        overhead: cost of the network's derivative head per call, as a fraction of one evaluation
            (measured; sec. 5, Tab. 5), used by NFE budgets.  ``None``: no head, or unknown (0).
        name: for messages.
    """

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        parameterization: str = "eps",
        time: str | None = None,
        t_shape: str = "auto",
        dtype: torch.dtype | None = None,
        t_dtype: torch.dtype | None = None,
        process: Any = None,
        round_timesteps: bool = False,
        overhead: float | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(net, DiffusionModel):
            raise TaylorSolveError("DiffusionModel(net): net is already a DiffusionModel")
        if not callable(net):
            raise TaylorSolveError(f"the model must be callable net(x, t), got {type(net).__name__}")
        if parameterization not in MODEL_PARAMETERIZATIONS and parameterization not in known_parameterizations():
            extra = [p for p in known_parameterizations() if p not in MODEL_PARAMETERIZATIONS]
            raise TaylorSolveError(
                f"unknown parameterization {parameterization!r}; use one of {', '.join(MODEL_PARAMETERIZATIONS)}"
                + (f" (or a process's own: {', '.join(extra)})" if extra else "")
            )
        if time is None:
            time = "sigma" if parameterization == "edm" else "continuous"
        if time not in TIME_CONVENTIONS:
            raise TaylorSolveError(f"unknown time convention {time!r}; use one of {', '.join(TIME_CONVENTIONS)}")
        if parameterization == "edm" and time != "sigma":
            raise TaylorSolveError("an EDM denoiser (parameterization='edm') takes the noise level: time='sigma'")
        if t_shape not in _T_SHAPES:
            raise TaylorSolveError(f"unknown t_shape {t_shape!r}; use one of {', '.join(_T_SHAPES)}")
        for nm, dt in (("dtype", dtype), ("t_dtype", t_dtype)):
            if dt is not None and not (isinstance(dt, torch.dtype) and dt.is_floating_point):
                raise TaylorSolveError(f"{nm} must be a floating torch.dtype, got {dt!r}")
        if overhead is not None:
            ov = float(overhead)
            if not (math.isfinite(ov) and ov >= 0):
                raise TaylorSolveError(f"overhead must be a finite fraction >= 0 (0.05 for 5 %), got {overhead!r}")
            overhead = ov
        self.net = net
        #: the ``torch.nn.Module`` behind ``net`` (for forward-AD work-arounds and dtype), if any
        self.module = net if isinstance(net, torch.nn.Module) else None
        self.parameterization = parameterization
        self.time = time
        self.t_shape = ("batch" if isinstance(net, torch.nn.Module) else "scalar") if t_shape == "auto" else t_shape
        self.dtype = dtype if dtype is not None else _module_dtype(net)
        self.t_dtype = t_dtype
        self.process = None if process is None else get_process(process)
        self.round_timesteps = bool(round_timesteps)
        self.overhead = overhead
        self.name = name or getattr(net, "__name__", type(net).__name__)
        if self.time == "discrete":
            if self.process is None or not isinstance(getattr(self.process, "schedule", None), DiscreteVPSchedule):
                raise TaylorSolveError(
                    "time='discrete' needs the process of the network's alphas_cumprod table: "
                    "process=taylorsolve.diffusion.processes.vp_discrete(alphas_cumprod) (or use from_diffusers)"
                )
        elif self.round_timesteps:
            raise TaylorSolveError("round_timesteps applies to discrete-time models (time='discrete') only")

    def __repr__(self) -> str:
        return (f"DiffusionModel({self.name}, parameterization={self.parameterization!r}, time={self.time!r}, "
                f"t_shape={self.t_shape!r}, dtype={self.dtype}, process={self.process!r})")

    def __call__(self, x: torch.Tensor, t: Any, *args: Any, **kwargs: Any) -> Any:
        """The network's own output at ``(x, t)`` (``t`` continuous, converted as for sampling)."""
        return self.net(x, self.model_time(t, x, self.process or get_process(None)), *args, **kwargs)

    def model_time(self, t: torch.Tensor, x: torch.Tensor, process: DiffusionProcess) -> torch.Tensor:
        """The network's time input at continuous time ``t`` for a state ``x`` (shape and dtype applied)."""
        t = as_time_tensor(t)
        if self.time == "discrete":
            sched = process.schedule  # type: ignore[attr-defined]
            t_in = sched.timestep(t)
            if self.round_timesteps:
                if is_transformed(t) or (isinstance(t, torch.Tensor) and t.requires_grad):
                    raise TaylorSolveError(
                        "this discrete-time model rounds t to integer timesteps (round_timesteps=True), so eps is "
                        "not differentiable in t: derivatives by autodiff (GENIE-AD, distillation targets) are "
                        "meaningless; switch rounding off (round_timesteps=False, the continuous interpolation)"
                    )
                t_in = torch.round(t_in)
        elif self.time == "sigma":
            t_in = process.schedule.gamma(t)  # type: ignore[attr-defined]
        else:
            t_in = t
        if self.t_shape == "batch" and t_in.ndim == 0 and x.ndim >= 1:
            t_in = t_in.expand(x.shape[0])
        dt = self.t_dtype or self.dtype
        if dt is not None and t_in.dtype != dt:
            t_in = t_in.to(dt)
        return t_in


def from_diffusers(unet: Any, scheduler: Any, *, round_timesteps: bool = False, overhead: float | None = None) -> DiffusionModel:
    """A diffusers network as a :class:`DiffusionModel` on the discrete VP process of ``scheduler``.

    ``unet(x, timestep, **cond).sample`` (any callable with diffusers' convention, e.g. ``UNet2DModel``;
    a plain tensor output is accepted too) and a scheduler with ``alphas_cumprod`` and
    ``config.prediction_type`` (``"epsilon"`` -> eps, ``"v_prediction"`` -> v, ``"sample"`` -> x0).
    Timesteps are continuous (``t N - 1``, DPM-Solver's interpolation) unless ``round_timesteps=True``.
    With ``grid=scheduler.timesteps`` (integer timesteps) :func:`~taylorsolve.diffusion.sample` visits
    exactly those timesteps, and ``denoise=True`` ends at ``alpha = 1`` like ``DDIMScheduler`` with
    ``set_alpha_to_one=True``.
    """
    if not callable(unet):
        raise TaylorSolveError(f"from_diffusers needs a callable network, got {type(unet).__name__}")
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise TaylorSolveError(f"the scheduler {type(scheduler).__name__} has no alphas_cumprod table")
    config = getattr(scheduler, "config", None)
    pred = getattr(config, "prediction_type", None) if config is not None else None
    if pred is None and isinstance(config, dict):
        pred = config.get("prediction_type")
    mapping = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
    if pred not in mapping:
        raise TaylorSolveError(
            f"the scheduler's prediction_type {pred!r} is not supported; supported: {', '.join(mapping)}"
        )

    def net(x: torch.Tensor, timestep: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = unet(x, timestep, *args, **kwargs)
        return getattr(out, "sample", out)

    net.__name__ = type(unet).__name__
    model = DiffusionModel(
        net,
        parameterization=mapping[pred],
        time="discrete",
        t_shape="batch",
        dtype=getattr(unet, "dtype", None) or _module_dtype(unet),
        process=vp_discrete(table),
        round_timesteps=round_timesteps,
        overhead=overhead,
        name=type(unet).__name__,
    )
    model.module = unet if isinstance(unet, torch.nn.Module) else None
    return model


def from_edm(denoiser: Callable[..., Any], process: Any = "edm", *, t_shape: str = "auto",
             dtype: torch.dtype | None = None) -> DiffusionModel:
    """An EDM / k-diffusion denoiser ``D(x, sigma) ~ x_0`` as a :class:`DiffusionModel`.

    On any scalar process ``x_t = alpha_t x_0 + sigma_t eps``, ``x_t / alpha_t = x_0 + gamma_t eps``
    is EDM's noisy image at noise level ``gamma_t``, so ``eps = (x / alpha - D(x / alpha, gamma)) / gamma``.
    Default process: EDM's VE noise levels (:func:`taylorsolve.diffusion.processes.edm`).
    """
    return DiffusionModel(denoiser, parameterization="edm", time="sigma", t_shape=t_shape, dtype=dtype,
                          process=process, name=getattr(denoiser, "__name__", type(denoiser).__name__))


@dataclass
class LastCall:
    """What the boundary saw at its last primal evaluation (read by derivative providers)."""

    x: torch.Tensor | None = None
    t: torch.Tensor | None = None
    eps: torch.Tensor | None = None
    #: per-branch eps ``(eps_cond, eps_uncond)`` when guided
    branches: tuple[torch.Tensor, torch.Tensor] | None = None
    #: the network's head output ``k`` (or ``(k_cond, k_uncond)`` when guided), in the state's dtype
    aux: Any = None


@dataclass
class ModelBoundary:
    """The counted, checked eps evaluation of one sampling run (see the module docstring)."""

    model: DiffusionModel
    process: DiffusionProcess
    stats: SampleStats
    cond: Any = None
    guidance_scale: float | None = None
    uncond: Any = None
    #: "solve", "warmup" or "denoise": where primal evaluations are booked
    phase: str = "solve"
    #: step index for error messages
    step: int | None = None
    last: LastCall = field(default_factory=LastCall)

    def __post_init__(self) -> None:
        if self.guidance_scale is not None:
            w = self.guidance_scale
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
                raise TaylorSolveError(f"guidance_scale must be a finite number, got {w!r}")
            if self.cond is None:
                raise TaylorSolveError("guidance_scale needs cond= (classifier-free guidance, eq. (79))")
        if self.model.time == "discrete" and not isinstance(getattr(self.process, "schedule", None), DiscreteVPSchedule):
            raise TaylorSolveError("a discrete-time model needs its own discrete process; do not pass another process")
        if self.model.parameterization == "edm" and not isinstance(self.process, ScalarProcess):
            raise TaylorSolveError("an EDM denoiser needs a process with scalar (alpha, sigma) coefficients")
        par = self.model.parameterization
        if par != "edm" and par not in self.process.parameterizations:
            raise TaylorSolveError(
                f"process {self.process.name!r} does not take parameterization {par!r}; "
                f"it takes {', '.join(self.process.parameterizations)}"
            )

    @property
    def calls_per_eval(self) -> int:
        return 1 if self.guidance_scale is None else 2

    # -- one network call ------------------------------------------------------------------------------
    def _call_net(self, x_in: torch.Tensor, t_in: torch.Tensor, cond: Any) -> Any:
        net = self.model.net
        args = () if cond is None or isinstance(cond, dict) else (cond,)
        kwargs = cond if isinstance(cond, dict) else {}
        if is_transformed(x_in, t_in):  # fused attention kernels have no forward-mode AD (forward_ad.py)
            with math_attention():
                return net(x_in, t_in, *args, **kwargs)
        return net(x_in, t_in, *args, **kwargs)

    def _branch(self, x: torch.Tensor, t: torch.Tensor, cond: Any, transformed: bool) -> tuple[torch.Tensor, Any]:
        """eps (state dtype) and the head output (or None) of one conditioning branch."""
        m = self.model
        x_in = x
        if m.parameterization == "edm":
            alpha = self.process.schedule.alpha(t)  # type: ignore[attr-defined]
            x_in = x / broadcast_to_x(alpha, x)
        if m.dtype is not None and x_in.dtype != m.dtype:
            x_in = x_in.to(m.dtype)
        t_in = m.model_time(t, x, self.process)
        out = self._call_net(x_in, t_in, cond)
        aux = None
        if isinstance(out, (tuple, list)) and len(out) == 2 and not isinstance(out, torch.Tensor):
            out, aux = out
        pred = self._check(out, x, t, transformed, what="the model")
        if isinstance(aux, (tuple, list)):          # heads for d eps/d gamma and d^2 eps/d gamma^2
            aux = tuple(self._check(a, x, t, transformed, what=f"the model's derivative head {i + 1}")
                        for i, a in enumerate(aux))
        elif aux is not None:
            aux = self._check(aux, x, t, transformed, what="the model's derivative head")
        if m.parameterization == "edm":
            gamma = self.process.schedule.gamma(t)  # type: ignore[attr-defined]
            alpha = self.process.schedule.alpha(t)  # type: ignore[attr-defined]
            xs = x / broadcast_to_x(alpha, x)
            eps = (xs - pred) / broadcast_to_x(gamma, x)
        else:
            eps = self.process.to_eps(pred, m.parameterization, x, t)
        return eps, aux

    def _check(self, out: Any, x: torch.Tensor, t: torch.Tensor, transformed: bool, *, what: str) -> torch.Tensor:
        tval = _time_value(t) if not transformed else None
        where = f" at t = {tval:.6g}" if tval is not None else ""
        if not isinstance(out, torch.Tensor):
            raise TaylorSolveError(f"{what} must return a torch.Tensor{where}, got {type(out).__name__}")
        if out.shape != x.shape:
            raise TaylorSolveError(
                f"{what} returned shape {tuple(out.shape)}{where}, but x has shape {tuple(x.shape)}"
            )
        if not out.is_floating_point():
            raise TaylorSolveError(f"{what} returned dtype {out.dtype}{where}; expected a floating dtype ({x.dtype})")
        want = self.model.dtype
        if want is not None and out.dtype != want:
            raise TaylorSolveError(
                f"{what} returned dtype {out.dtype}{where}, but it was called in its declared dtype {want}"
            )
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        if not transformed and not bool(torch.isfinite(out).all()):
            n_bad = int((~torch.isfinite(out)).sum())
            loc = f" (step {self.step})" if self.step is not None else ""
            raise SolverError(f"{what} output has {n_bad} non-finite (NaN/Inf) entries{where}{loc}",
                              step=self.step, time=tval)
        return out

    def __call__(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """eps at ``(x, t)`` in the state's dtype (guided if ``guidance_scale`` is set)."""
        t = as_time_tensor(t)
        transformed = is_transformed(x, t)
        if self.guidance_scale is None:
            eps, aux = self._branch(x, t, self.cond, transformed)
            branches = None
        else:
            w = float(self.guidance_scale)
            eps_c, aux_c = self._branch(x, t, self.cond, transformed)
            eps_u, aux_u = self._branch(x, t, self.uncond, transformed)
            eps = (1.0 + w) * eps_c - w * eps_u                       # eq. (79)
            branches = (eps_c, eps_u)
            aux = None if aux_c is None or aux_u is None else (aux_c, aux_u)
        if not transformed:
            st = self.stats
            st.nfe += 1
            st.model_calls += self.calls_per_eval
            if self.phase == "warmup":
                st.warmup_nfe += 1
            elif self.phase == "denoise":
                st.denoise_nfe += 1
            self.last = LastCall(x=x, t=t, eps=eps, branches=branches, aux=aux)
        return eps


    def book_primal(self, eps: torch.Tensor, x: torch.Tensor, t: Any) -> None:
        """Count one evaluation whose eps came out as the primal of a JVP (the fused autodiff provider),
        with the finiteness check a primal evaluation gets."""
        t = as_time_tensor(t)
        if not bool(torch.isfinite(eps).all()):
            tval = _time_value(t)
            n_bad = int((~torch.isfinite(eps)).sum())
            raise SolverError(f"the model output has {n_bad} non-finite (NaN/Inf) entries at t = {tval:.6g}",
                              step=self.step, time=tval)
        st = self.stats
        st.nfe += 1
        st.model_calls += self.calls_per_eval
        self.last = LastCall(x=x, t=t, eps=eps)


def eps_function(model: Any, *, process: Any = None, parameterization: str | None = None, cond: Any = None,
                 guidance_scale: float | None = None, uncond: Any = None) -> ModelBoundary:
    """``eps(x, t)`` of a model through the boundary, outside a sampler: for derivative targets
    (``torch.func.jvp`` through it, eq. (12)), denoising and evaluation.

    ``t`` is continuous (float64); conversions, dtype policy, conditioning and guidance are those of
    :func:`~taylorsolve.diffusion.sample`.  The returned :class:`ModelBoundary` counts its primal calls
    in ``.stats``.  Wrap JVPs through ``torch.nn.Module`` networks in
    :func:`taylorsolve.diffusion.forward_ad.forward_ad_safe` (fused attention, group norm).
    """
    if isinstance(model, DiffusionModel):
        if parameterization is not None and parameterization != model.parameterization:
            raise TaylorSolveError(f"parameterization={parameterization!r} contradicts the model's {model.parameterization!r}")
        dm = model
    else:
        dm = DiffusionModel(model, parameterization=parameterization or "eps",
                            overhead=getattr(model, "overhead", None))
    if dm.process is not None and process is not None and get_process(process) is not dm.process:
        raise TaylorSolveError(f"the model declares its process {dm.process!r}; process {process!r} contradicts it")
    proc = dm.process or get_process(process)
    return ModelBoundary(dm, proc, SampleStats(), cond=cond, guidance_scale=guidance_scale, uncond=uncond)


def _time_value(t: torch.Tensor) -> float | None:
    try:
        return float(t.detach().reshape(-1)[0]) if t.numel() else None
    except Exception:  # noqa: BLE001 - e.g. under vmap
        return None
