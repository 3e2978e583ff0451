"""Conversions between the eps / x0 / v / score parameterisations, and :class:`EpsModel`.

With ``x = alpha x0 + sigma eps`` (eq. (1), (7)):

* eps   <-> x0:    ``eps = (x - alpha x0) / sigma``,           ``x0 = (x - sigma eps) / alpha`` (eq. (41))
* eps   <-> score: ``score = -eps / sigma`` (sec. 2, ``s_theta := -eps_theta / sigma_t``), ``eps = -sigma score``
* eps   <-> v:     ``v = alpha eps - sigma x0`` (Salimans & Ho); eliminating ``x0`` with the first line,
  ``v = ((alpha^2 + sigma^2) eps - sigma x) / alpha`` and ``eps = (alpha v + sigma x) / (alpha^2 + sigma^2)``;
  for VP schedules (``alpha^2 + sigma^2 = 1``) ``eps = alpha v + sigma x`` and ``x0 = alpha x - sigma v``.

Every function takes ``(x, value, alpha, sigma)``; ``alpha`` and ``sigma`` may be python floats, 0-d
tensors or per-sample vectors of shape ``[B]`` (broadcast over ``x`` of shape ``[B, ...]`` by
:func:`broadcast_to_x`).  The formulas are exact for any (not only VP) schedule.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import SolverError, TaylorSolveError
from .schedules import Schedule, as_time_tensor, get_schedule, is_tensor_like

__all__ = [
    "PARAMETERIZATIONS",
    "broadcast_to_x",
    "eps_from_x0",
    "x0_from_eps",
    "eps_from_v",
    "v_from_eps",
    "eps_from_score",
    "score_from_eps",
    "x0_from_v",
    "v_from_x0",
    "x0_from_score",
    "score_from_x0",
    "to_eps",
    "from_eps",
    "EpsModel",
]

PARAMETERIZATIONS = ("eps", "x0", "v", "score")


def broadcast_to_x(c: Any, x: torch.Tensor) -> torch.Tensor | float:
    """Reshape a coefficient for broadcasting against ``x`` and cast it to ``x``'s dtype.

    Python numbers pass through; a 0-d tensor stays 0-d; a vector of shape ``[B]`` (``B = x.shape[0]``)
    becomes ``[B, 1, ..., 1]``.  Anything else raises :class:`TaylorSolveError`.
    """
    if not is_tensor_like(c):
        return float(c)
    if c.dtype != x.dtype and x.is_floating_point():
        c = c.to(x.dtype)
    if c.ndim > 0 and c.device != x.device:
        c = c.to(x.device)
    if c.ndim == 0:
        return c
    if c.ndim == 1 and x.ndim >= 1 and c.shape[0] in (x.shape[0], 1):
        return c.reshape(c.shape[0], *([1] * (x.ndim - 1)))
    if c.shape == x.shape:
        return c
    raise TaylorSolveError(
        f"coefficient of shape {tuple(c.shape)} cannot be broadcast over x of shape {tuple(x.shape)}; "
        "use a scalar or a per-sample vector of shape [B]"
    )


def _b(x: torch.Tensor, alpha: Any, sigma: Any):
    return broadcast_to_x(alpha, x), broadcast_to_x(sigma, x)


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``eps = (x - alpha x0) / sigma`` (eq. (38))."""
    a, s = _b(x, alpha, sigma)
    return (x - a * x0) / s


def x0_from_eps(x: torch.Tensor, eps: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``x0 = (x - sigma eps) / alpha`` (eq. (41), the "denoising" step of app. F.4)."""
    a, s = _b(x, alpha, sigma)
    return (x - s * eps) / a


def eps_from_v(x: torch.Tensor, v: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``eps = (alpha v + sigma x) / (alpha^2 + sigma^2)`` (``= alpha v + sigma x`` for VP)."""
    a, s = _b(x, alpha, sigma)
    return (a * v + s * x) / (a * a + s * s)


def v_from_eps(x: torch.Tensor, eps: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``v = alpha eps - sigma x0 = ((alpha^2 + sigma^2) eps - sigma x) / alpha``."""
    a, s = _b(x, alpha, sigma)
    return ((a * a + s * s) * eps - s * x) / a


def eps_from_score(x: torch.Tensor, score: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``eps = -sigma score`` (``score = -eps / sigma``, sec. 2).  ``x``, ``alpha`` unused (uniform signature)."""
    _, s = _b(x, alpha, sigma)
    return -s * score


def score_from_eps(x: torch.Tensor, eps: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``score = -eps / sigma`` (sec. 2, ``s_theta := -eps_theta / sigma_t``)."""
    _, s = _b(x, alpha, sigma)
    return -eps / s


def x0_from_v(x: torch.Tensor, v: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` (``= alpha x - sigma v`` for VP)."""
    a, s = _b(x, alpha, sigma)
    return (a * x - s * v) / (a * a + s * s)


def v_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``v = alpha eps - sigma x0`` with ``eps = (x - alpha x0) / sigma``."""
    return v_from_eps(x, eps_from_x0(x, x0, alpha, sigma), alpha, sigma)


def x0_from_score(x: torch.Tensor, score: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``x0 = (x + sigma^2 score) / alpha`` (Tweedie)."""
    a, s = _b(x, alpha, sigma)
    return (x + s * s * score) / a


def score_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """``score = -(x - alpha x0) / sigma^2``."""
    a, s = _b(x, alpha, sigma)
    return -(x - a * x0) / (s * s)


_TO_EPS: dict[str, Callable[..., torch.Tensor]] = {
    "eps": lambda x, p, a, s: p,
    "x0": eps_from_x0,
    "v": eps_from_v,
    "score": eps_from_score,
}
_FROM_EPS: dict[str, Callable[..., torch.Tensor]] = {
    "eps": lambda x, e, a, s: e,
    "x0": x0_from_eps,
    "v": v_from_eps,
    "score": score_from_eps,
}


def _check_param(parameterization: str) -> str:
    if parameterization not in PARAMETERIZATIONS:
        raise TaylorSolveError(
            f"unknown parameterization {parameterization!r}; use one of {', '.join(PARAMETERIZATIONS)}"
        )
    return parameterization


def to_eps(pred: torch.Tensor, parameterization: str, x: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """Convert a prediction in ``parameterization`` (eps, x0, v, score) to eps."""
    return _TO_EPS[_check_param(parameterization)](x, pred, alpha, sigma)


def from_eps(eps: torch.Tensor, parameterization: str, x: torch.Tensor, alpha: Any, sigma: Any) -> torch.Tensor:
    """Convert eps to ``parameterization`` (eps, x0, v, score)."""
    return _FROM_EPS[_check_param(parameterization)](x, eps, alpha, sigma)


def _time_value(t: torch.Tensor) -> float | None:
    try:
        return float(t.detach().reshape(-1)[0]) if t.numel() else None
    except Exception:  # noqa: BLE001 - e.g. under vmap
        return None


class EpsModel:
    """Wrap ``model(x, t, **cond) -> prediction`` into an eps-prediction model ``eps(x, t, **cond)``.

    Args:
        model: any callable ``model(x, t, **cond)`` returning a tensor shaped like ``x``.
        parameterization: what ``model`` predicts: ``"eps"`` (noise), ``"x0"`` (data), ``"v"``
            (``alpha eps - sigma x0``) or ``"score"`` (``grad log p_t``); converted to eps with the
            formulas of this module using ``alpha_t, sigma_t`` of ``schedule``.
        schedule: a :class:`Schedule` or name (default ``"linear"``).
        expand_t: if True the model receives ``t`` broadcast to shape ``[B]`` (``B = x.shape[0]``), as
            image networks expect; otherwise ``t`` is passed as given (float64 0-d or ``[B]`` tensor).
        t_dtype: if given, ``t`` is cast to this dtype before the model call (``alpha``/``sigma`` are
            always computed in float64 and cast to ``x.dtype``).
        check: validate the output (shape; NaN/Inf).

    ``t`` may be a python float, a float64 0-d tensor, or a batch vector of shape ``[B]``; all
    operations on ``t`` are differentiable, so ``EpsModel`` works inside ``torch.func.jvp`` (eq. (12)).

    Raises:
        TaylorSolveError: the model output is not a tensor or has the wrong shape (expected vs got).
        SolverError: the model output contains NaN/Inf; the message names the time.
    """

    def __init__(
        self,
        model: Callable[..., torch.Tensor],
        parameterization: str = "eps",
        schedule: str | Schedule | None = None,
        *,
        expand_t: bool = False,
        t_dtype: torch.dtype | None = None,
        check: bool = True,
    ):
        if not callable(model):
            raise TaylorSolveError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.parameterization = _check_param(parameterization)
        self.schedule = get_schedule(schedule)
        self.expand_t = bool(expand_t)
        self.t_dtype = t_dtype
        self.check = bool(check)

    def __repr__(self) -> str:
        return f"EpsModel({self.model!r}, parameterization={self.parameterization!r}, schedule={self.schedule!r})"

    def _time(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = as_time_tensor(t)
        if t.ndim > 1 or (t.ndim == 1 and x.ndim >= 1 and t.shape[0] not in (1, x.shape[0])):
            raise TaylorSolveError(
                f"t must be a scalar or a vector of shape [B] with B = x.shape[0] = "
                f"{x.shape[0] if x.ndim else 'n/a'}; got shape {tuple(t.shape)}"
            )
        return t

    def raw(self, x: torch.Tensor, t: Any, **cond: Any) -> torch.Tensor:
        """The wrapped model's own (validated) prediction at ``(x, t)``."""
        t = self._time(x, t)
        t_in = t
        if self.expand_t and x.ndim >= 1 and t_in.ndim == 0:
            t_in = t_in.expand(x.shape[0])
        if self.t_dtype is not None:
            t_in = t_in.to(self.t_dtype)
        out = self.model(x, t_in, **cond)
        if self.check:
            self._check_output(out, x, t)
        return out

    def _check_output(self, out: Any, x: torch.Tensor, t: torch.Tensor) -> None:
        if not is_tensor_like(out):
            raise TaylorSolveError(
                f"model must return a torch.Tensor shaped like x {tuple(x.shape)}, got {type(out).__name__}"
            )
        if out.shape != x.shape:
            raise TaylorSolveError(
                f"model output has the wrong shape: expected {tuple(x.shape)} (the shape of x), "
                f"got {tuple(out.shape)}"
            )
        try:
            finite = bool(torch.isfinite(out).all())
        except Exception:  # noqa: BLE001 - data-dependent checks unsupported under some transforms
            return
        if not finite:
            tv = _time_value(t)
            n_bad = int((~torch.isfinite(out.detach())).sum())
            where = f"t = {tv:.6g}" if tv is not None else "the given t"
            raise SolverError(
                f"model ({self.parameterization} parameterization) returned {n_bad} NaN/Inf entries at {where}",
                time=tv,
            )

    def __call__(self, x: torch.Tensor, t: Any, **cond: Any) -> torch.Tensor:
        """eps prediction at ``(x, t)``, shaped and typed like ``x``."""
        t = self._time(x, t)
        out = self.raw(x, t, **cond)
        if self.parameterization == "eps":
            return out
        alpha, sigma = self.schedule.marginal_params(t)
        return to_eps(out, self.parameterization, x, alpha, sigma)

    def predict_x0(self, x: torch.Tensor, t: Any, **cond: Any) -> torch.Tensor:
        """Denoised estimate ``x0 = (x - sigma_t eps(x, t)) / alpha_t`` (eq. (41), app. F.4)."""
        t = self._time(x, t)
        alpha, sigma = self.schedule.marginal_params(t)
        return x0_from_eps(x, self(x, t, **cond), alpha, sigma)

    def predict(self, x: torch.Tensor, t: Any, parameterization: str = "eps", **cond: Any) -> torch.Tensor:
        """Prediction in any parameterization (converted from eps)."""
        t = self._time(x, t)
        eps = self(x, t, **cond)
        alpha, sigma = self.schedule.marginal_params(t)
        return from_eps(eps, parameterization, x, alpha, sigma)
