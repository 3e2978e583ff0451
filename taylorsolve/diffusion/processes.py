r"""Diffusion processes as objects: the schedule, the generative equations, the solver coordinates, the prior.

A :class:`DiffusionProcess` owns everything a sampler needs to know about the forward process:

* the **prior** ``p_1`` it starts from (:meth:`~DiffusionProcess.prior_sample`);
* the **coordinates** a sampler steps in (:meth:`~DiffusionProcess.coordinates`): a state ``y`` and a
  solver time ``s``, the maps ``x <-> y`` and ``t <-> s``, and the right-hand side ``dy/ds``;
* the **parameterisations** of a network's output (:meth:`~DiffusionProcess.to_eps`), the data
  prediction (:meth:`~DiffusionProcess.predict_x0`) and the analytical first step (eq. (75)).

Samplers never see ``alpha_t`` or ``sigma_t`` directly: they ask their coordinates.  The processes here
have scalar coefficients (:class:`ScalarProcess`: ``x_t = alpha_t x_0 + sigma_t eps``, eq. (1)); a
process with an augmented state and matrix-valued coefficients (critically-damped Langevin diffusion)
is another subclass that provides its own coordinates and conversions.

Coordinate kinds of a :class:`ScalarProcess`:

============ ============================== =========================== ==========================================
kind         state ``y``                    solver time ``s``           ``dy/ds``
============ ============================== =========================== ==========================================
``"ddim"``   ``xbar = x / alpha_t``         ``gamma = sigma_t/alpha_t`` ``eps(x, t)``, the DDIM ODE (eq. (6))
``"pf"``     ``x``                          ``t``                       ``f(t) x + g(t)^2 eps / (2 sigma_t)`` (eq. (4))
``"sde"``    ``x``                          ``t``                       reverse-SDE drift ``f x + g^2 eps / sigma`` (eq. (3)); :meth:`Coordinates.diffusion` ``= g``
``"ei"``     ``xbar = x / alpha_t``         ``t``                       ``(d gamma/dt) eps``: gDDIM's exponential-integrator form (gDDIM eq. (16))
============ ============================== =========================== ==========================================

The ``"ei"`` kind is what the gDDIM units step in on *every* process (:mod:`taylorsolve.diffusion.cld`
gives CLD its own): a state ``y = Psi(0, t) x`` and a weight ``B_t`` with ``dy/dt = B_t eps``, so that one
step with eps frozen is ``y' = y + (P(t') - P(t)) eps`` (``P = gamma`` here: DDIM).

All time quantities are float64 and every map is built from differentiable torch operations, so the
right-hand sides can be differentiated in ``s`` and ``y`` by the core's forward-mode backends (eq. (12)).
"""
from __future__ import annotations

import abc
import math
from typing import Any, Callable

import torch

from ..errors import TaylorSolveError
from .parameterization import PARAMETERIZATIONS, broadcast_to_x, to_eps
from .schedules import (
    CosineVPSchedule,
    DiscreteVPSchedule,
    LinearVPSchedule,
    Schedule,
    VESchedule,
    as_time_tensor,
    get_schedule,
)

__all__ = [
    "DiffusionProcess",
    "ScalarProcess",
    "Coordinates",
    "VP",
    "vp_linear",
    "vp_cosine",
    "vp_discrete",
    "ve",
    "edm",
    "get_process",
    "known_parameterizations",
    "PROCESS_NAMES",
]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Coordinates(abc.ABC):
    """The state and time a sampler steps in, and the maps back to the model's ``(x, t)``."""

    #: the kind's name (``"ddim"``, ``"pf"``, ``"sde"``, or a process's own)
    kind: str = ""

    def __init__(self, process: "DiffusionProcess") -> None:
        self.process = process

    @abc.abstractmethod
    def s_of_t(self, t: Any) -> torch.Tensor:
        """Solver time ``s`` at diffusion time ``t`` (float64)."""

    @abc.abstractmethod
    def t_of_s(self, s: Any) -> torch.Tensor:
        """Diffusion time ``t`` at solver time ``s`` (float64, differentiable in ``s``)."""

    @abc.abstractmethod
    def to_state(self, x: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        """Solver state ``y`` of the data-space state ``x`` at time ``t`` (solver time ``s`` if known)."""

    @abc.abstractmethod
    def to_x(self, y: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        """Data-space state ``x`` of the solver state ``y`` at time ``t`` (solver time ``s`` if known)."""

    @abc.abstractmethod
    def velocity(self, eps: torch.Tensor, y: torch.Tensor, s: Any, t: Any) -> torch.Tensor:
        """``dy/ds`` given the model's eps at ``(x(y), t)``."""

    def noise(self, z: torch.Tensor, t: Any, dt: Any) -> torch.Tensor:
        """``G(t) sqrt(dt) z``: the noise of one SDE step of length ``dt > 0`` from a standard normal ``z``
        (``"sde"`` coordinates; scalar processes: ``g(t) sqrt(dt) z``, CLD: only the velocity is noisy)."""
        g = getattr(self, "diffusion", None)
        if g is None:
            raise TaylorSolveError(f"{self.kind!r} coordinates of {self.process.name!r} have no SDE noise")
        t = as_time_tensor(t)
        return torch.as_tensor(g(t) * torch.sqrt(as_time_tensor(dt)), dtype=torch.float64).to(z.dtype) * z

    def rhs(self, eps_fn: EpsFn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The core right-hand side ``f(s, y) = dy/ds`` with ``eps = eps_fn(x, t)``; differentiable in ``s, y``."""

        def f(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            s = as_time_tensor(s)
            t = self.t_of_s(s)
            return self.velocity(eps_fn(self.to_x(y, t, s), t), y, s, t)

        f.coordinates = self  # type: ignore[attr-defined]
        return f

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.process!r})"


# -- scalar processes ------------------------------------------------------------------------------------
class _ScalarDDIM(Coordinates):
    """``(xbar, gamma)``: the DDIM ODE ``d xbar / d gamma = eps`` (eq. (6), app. A)."""

    kind = "ddim"

    def __init__(self, process: "ScalarProcess") -> None:
        super().__init__(process)
        self.schedule = process.schedule
        self._vp = bool(process.schedule.variance_preserving)

    def s_of_t(self, t: Any) -> torch.Tensor:
        return self.schedule.gamma(as_time_tensor(t))

    def t_of_s(self, s: Any) -> torch.Tensor:
        return self.schedule.t_from_gamma(as_time_tensor(s))

    def alpha(self, t: Any, s: Any = None) -> torch.Tensor:
        """``alpha_t``; for VP schedules ``1 / sqrt(1 + gamma^2)`` from ``s = gamma`` when given (sec. 2)."""
        if self._vp and s is not None:
            s = as_time_tensor(s)
            return torch.rsqrt(1.0 + s * s)
        return self.schedule.alpha(as_time_tensor(t))

    def to_state(self, x: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        return x / broadcast_to_x(self.alpha(t, s), x)

    def to_x(self, y: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        return y * broadcast_to_x(self.alpha(t, s), y)

    def velocity(self, eps, y, s, t):
        return eps

    def rhs(self, eps_fn: EpsFn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def f(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            s = as_time_tensor(s)
            t = self.t_of_s(s)
            return eps_fn(self.to_x(y, t, s), t)

        f.coordinates = self  # type: ignore[attr-defined]
        return f


class _ScalarTime(Coordinates):
    """``(x, t)``: the probability-flow ODE (eq. (4)) or, with :meth:`diffusion`, the reverse SDE (eq. (3))."""

    def __init__(self, process: "ScalarProcess", kind: str) -> None:
        super().__init__(process)
        self.kind = kind
        self.schedule = process.schedule

    def s_of_t(self, t: Any) -> torch.Tensor:
        return as_time_tensor(t)

    def t_of_s(self, s: Any) -> torch.Tensor:
        return as_time_tensor(s)

    def to_state(self, x: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        return x

    def to_x(self, y: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        return y

    def velocity(self, eps, y, s, t):
        sched = self.schedule
        t = as_time_tensor(t)
        drift = broadcast_to_x(sched.dlog_alpha_dt(t), y)
        # PF ODE: f x + g^2 eps / (2 sigma) (eq. (4)); reverse SDE drift: f x + g^2 eps / sigma (eq. (3))
        half = 0.5 if self.kind == "pf" else 1.0
        return drift * y + broadcast_to_x(half * sched.g2(t) / sched.sigma(t), y) * eps

    def diffusion(self, t: Any) -> torch.Tensor:
        """``g(t)``, the reverse SDE's noise scale (``sqrt(beta_t)`` for VP)."""
        return torch.sqrt(self.schedule.g2(as_time_tensor(t)))


class _ScalarEI(Coordinates):
    r"""``(xbar, t)``: gDDIM's exponential-integrator form ``d xbar / dt = (d gamma / dt) eps`` (gDDIM eq. (16)).

    ``Psi(0, t) = 1 / alpha_t``, ``B_t = Psi(0, t) 1/2 g^2 / sigma_t = d gamma / dt`` and ``P(t) = gamma_t``
    (gDDIM app. B.1.3: eq. (16) is DDIM); the gDDIM units use :meth:`weight`, :meth:`antiderivative`,
    :meth:`apply` and :meth:`stochastic_step`.
    """

    kind = "ei"

    def __init__(self, process: "ScalarProcess") -> None:
        super().__init__(process)
        self.schedule = process.schedule

    def s_of_t(self, t: Any) -> torch.Tensor:
        return as_time_tensor(t)

    def t_of_s(self, s: Any) -> torch.Tensor:
        return as_time_tensor(s)

    def to_state(self, x: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        return x / broadcast_to_x(self.schedule.alpha(as_time_tensor(t)), x)

    def to_x(self, y: torch.Tensor, t: Any, s: Any = None) -> torch.Tensor:
        return y * broadcast_to_x(self.schedule.alpha(as_time_tensor(t)), y)

    def velocity(self, eps, y, s, t):
        return broadcast_to_x(self.schedule.dgamma_dt(as_time_tensor(t)), eps) * eps

    def weight(self, t: Any) -> torch.Tensor:
        """``B_t = d gamma / dt`` (float64, the shape of ``t``)."""
        return self.schedule.dgamma_dt(as_time_tensor(t))

    def antiderivative(self, t: Any) -> torch.Tensor:
        """``P(t) = gamma_t``."""
        return self.schedule.gamma(as_time_tensor(t))

    def apply(self, w: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(w, dtype=torch.float64).to(dtype=eps.dtype, device=eps.device) * eps

    def stochastic_step(self, t_from: float, t_to: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(A, N)`` with ``xbar' = xbar + A eps + N z``: gDDIM eq. (20)-(21) for a scalar process.

        ``Psi_hat(t, s) = (sigma_t / sigma_s)(gamma_t / gamma_s)^{lam^2}`` and ``P_st = sigma_t^2 (1 - (gamma_t/gamma_s)^{2 lam^2})``
        (gDDIM Theorem 1, eq. (57)-(61), in ``gamma``), so ``A = gamma_t (gamma_t/gamma_s)^{lam^2} - gamma_s`` and
        ``N = gamma_t sqrt(1 - (gamma_t/gamma_s)^{2 lam^2})``; ``lam = 0`` is DDIM.
        """
        gs = float(self.schedule.gamma(as_time_tensor(t_from)))
        gt = float(self.schedule.gamma(as_time_tensor(t_to)))
        lam2 = float(lam) ** 2
        log_r = math.log(gt / gs)
        A = gt * math.exp(lam2 * log_r) - gs
        N = gt * math.sqrt(max(-math.expm1(2.0 * lam2 * log_r), 0.0))
        return torch.tensor(A, dtype=torch.float64), torch.tensor(N, dtype=torch.float64)


class DiffusionProcess(abc.ABC):
    """Base class: a forward diffusion process and everything samplers need from it (module docstring)."""

    name: str = "process"
    #: the network parameterisations :meth:`to_eps` accepts
    parameterizations: tuple[str, ...] = PARAMETERIZATIONS

    @abc.abstractmethod
    def coordinates(self, kind: str) -> Coordinates:
        """The coordinates of ``kind``; :class:`TaylorSolveError` naming the supported kinds otherwise."""

    @property
    @abc.abstractmethod
    def coordinate_kinds(self) -> tuple[str, ...]:
        """The coordinate kinds this process supports."""

    @abc.abstractmethod
    def prior_sample(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
        """A sample of the prior ``p_1`` of shape ``shape``."""

    @abc.abstractmethod
    def to_eps(self, pred: torch.Tensor, parameterization: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A network's prediction in ``parameterization`` at ``(x, t)`` converted to eps."""

    @abc.abstractmethod
    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, t: Any) -> torch.Tensor:
        """The data prediction ``x_0`` from eps at ``(x, t)`` (the final denoising step, app. F.4)."""

    @abc.abstractmethod
    def analytic_eps(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """The analytical first step's eps at the start of sampling (eq. (75))."""

    def check_state(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise :class:`TaylorSolveError` if ``x`` cannot be a state of this process (shape rules)."""

    def perturb(self, x0: torch.Tensor, t: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample of the forward transition ``p(x_t | x_0)`` from a state ``x_0`` at ``t = 0`` (encoding, app. F.4)."""
        raise TaylorSolveError(f"process {self.name!r} cannot perturb a state (no forward kernel)")

    def supports(self, kind: str) -> bool:
        return kind in self.coordinate_kinds


class ScalarProcess(DiffusionProcess):
    """A process with scalar coefficients ``x_t = alpha_t x_0 + sigma_t eps`` (eq. (1)) from a :class:`Schedule`.

    Args:
        schedule: the noise schedule (or a name, see :func:`taylorsolve.diffusion.get_schedule`).
        prior_std: standard deviation of the prior ``N(0, prior_std^2 I)``; default
            ``sqrt(alpha_1^2 + sigma_1^2)`` rounded to 1 for VP schedules (``N(0, I)``) and
            ``sigma_1`` otherwise (``N(0, sigma_max^2 I)`` for VE).
        name: a short name.
    """

    def __init__(self, schedule: Schedule | str | None = None, *, prior_std: float | None = None,
                 name: str | None = None) -> None:
        self.schedule = get_schedule(schedule)
        if prior_std is None:
            one = torch.ones((), dtype=torch.float64)
            prior_std = 1.0 if self.schedule.variance_preserving else float(self.schedule.sigma(one))
        prior_std = float(prior_std)
        if not (math.isfinite(prior_std) and prior_std > 0):
            raise TaylorSolveError(f"prior_std must be a finite number > 0, got {prior_std!r}")
        self.prior_std = prior_std
        self.name = name or f"scalar[{self.schedule.name}]"
        self._coords: dict[str, Coordinates] = {}

    def __repr__(self) -> str:
        return f"ScalarProcess({self.schedule!r}, prior_std={self.prior_std!r})"

    @property
    def coordinate_kinds(self) -> tuple[str, ...]:
        return ("ddim", "pf", "sde", "ei")

    def coordinates(self, kind: str) -> Coordinates:
        if kind not in self._coords:
            if kind == "ddim":
                self._coords[kind] = _ScalarDDIM(self)
            elif kind == "ei":
                self._coords[kind] = _ScalarEI(self)
            elif kind in ("pf", "sde"):
                self._coords[kind] = _ScalarTime(self, kind)
            else:
                raise TaylorSolveError(
                    f"process {self.name!r} has no {kind!r} coordinates; it supports {', '.join(self.coordinate_kinds)}"
                )
        return self._coords[kind]

    def marginal_params(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` (eq. (1))."""
        return self.schedule.marginal_params(as_time_tensor(t))

    def prior_sample(self, shape, *, generator=None, dtype=torch.float32, device=None):
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return z if self.prior_std == 1.0 else z * self.prior_std

    def to_eps(self, pred, parameterization, x, t):
        if parameterization == "eps":
            return pred
        if parameterization not in PARAMETERIZATIONS:
            raise TaylorSolveError(f"unknown parameterization {parameterization!r}; use one of {', '.join(PARAMETERIZATIONS)}")
        alpha, sigma = self.marginal_params(t)
        return to_eps(pred, parameterization, x, alpha, sigma)

    def perturb(self, x0, t, generator=None):
        """``alpha_t x_0 + sigma_t eps`` (eq. (1)), ``eps`` from ``generator``."""
        noise = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        alpha, sigma = self.marginal_params(t)  # eq. (1)
        return alpha.to(x0.dtype) * x0 + sigma.to(x0.dtype) * noise

    def predict_x0(self, x, eps, t):
        alpha, sigma = self.marginal_params(t)
        return (x - broadcast_to_x(sigma, x) * eps) / broadcast_to_x(alpha, x)

    def analytic_eps(self, x, t):
        """Eq. (75): ``eps_theta(x_1, 1) ~ x_1`` for VP (``p_1 ~ N(0, I)``); in general the eps of
        unit-variance data at ``t``, ``sigma_t x / (alpha_t^2 + sigma_t^2)`` (= ``x / sigma`` for ``alpha = 1``, large ``sigma``)."""
        if self.schedule.variance_preserving:
            return x
        alpha, sigma = self.marginal_params(t)
        return broadcast_to_x(sigma / (alpha * alpha + sigma * sigma), x) * x


def VP(schedule: Schedule | str | None = None) -> ScalarProcess:
    """A variance-preserving process (prior ``N(0, I)``) with the given VP schedule (default linear)."""
    sched = get_schedule(schedule)
    if not sched.variance_preserving:
        raise TaylorSolveError(f"VP needs a variance-preserving schedule, got {sched!r}")
    return ScalarProcess(sched, prior_std=1.0, name=f"vp-{sched.name}")


def vp_linear(beta_0: float = 0.1, beta_1: float = 20.0) -> ScalarProcess:
    """VP with ``beta(t) = beta_0 + (beta_1 - beta_0) t`` (app. C.1; the default process)."""
    return ScalarProcess(LinearVPSchedule(beta_0, beta_1), prior_std=1.0, name="vp-linear")


def vp_cosine(s: float = 0.008, t_end: float = 0.9946) -> ScalarProcess:
    """VP with the cosine schedule of Nichol & Dhariwal (2021)."""
    return ScalarProcess(CosineVPSchedule(s, t_end), prior_std=1.0, name="vp-cosine")


def vp_discrete(alphas_cumprod: Any) -> ScalarProcess:
    """VP of a discrete-time model from its ``alphas_cumprod`` table (:class:`DiscreteVPSchedule`)."""
    return ScalarProcess(DiscreteVPSchedule(alphas_cumprod), prior_std=1.0, name="vp-discrete")


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0) -> ScalarProcess:
    """Variance exploding (Song et al. 2021): ``alpha = 1``, geometric ``sigma_t``, prior ``N(0, sigma_max^2 I)``."""
    sched = VESchedule(sigma_min, sigma_max)
    return ScalarProcess(sched, prior_std=sigma_max, name="ve")


def edm(sigma_min: float = 0.002, sigma_max: float = 80.0) -> ScalarProcess:
    """EDM's noise levels (Karras et al. 2022) as a VE process: ``gamma = sigma`` in ``[sigma_min, sigma_max]``."""
    sched = VESchedule(sigma_min, sigma_max)
    return ScalarProcess(sched, prior_std=sigma_max, name="edm")


def _cld() -> DiffusionProcess:
    from .cld import CLD

    return CLD()


_PROCESSES: dict[str, Callable[[], DiffusionProcess]] = {
    "vp": vp_linear,
    "vp-linear": vp_linear,
    "linear": vp_linear,
    "vp-cosine": vp_cosine,
    "cosine": vp_cosine,
    "ve": ve,
    "edm": edm,
    "cld": _cld,
}

#: names accepted by :func:`get_process`
PROCESS_NAMES = tuple(_PROCESSES)


def known_parameterizations() -> tuple[str, ...]:
    """Every network parameterisation some process class accepts (``DiffusionProcess.parameterizations``)."""
    seen: dict[str, None] = {}
    stack = [DiffusionProcess]
    while stack:
        cls = stack.pop()
        for p in getattr(cls, "parameterizations", ()):
            seen.setdefault(p, None)
        stack.extend(cls.__subclasses__())
    return tuple(seen)


def get_process(spec: Any = None) -> DiffusionProcess:
    """A process from ``None`` (linear VP), a name (:data:`PROCESS_NAMES`), a :class:`Schedule` or a process."""
    if spec is None:
        return vp_linear()
    if isinstance(spec, DiffusionProcess):
        return spec
    if isinstance(spec, Schedule):
        return ScalarProcess(spec, name=f"scalar[{spec.name}]")
    if isinstance(spec, str):
        key = spec.strip().lower().replace("_", "-")
        if key in _PROCESSES:
            return _PROCESSES[key]()
        raise TaylorSolveError(f"unknown process {spec!r}; known: {', '.join(PROCESS_NAMES)} (or a DiffusionProcess / Schedule)")
    raise TaylorSolveError(f"process must be a name, a Schedule or a DiffusionProcess, got {type(spec).__name__}")
