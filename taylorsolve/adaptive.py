r"""Adaptive truncated Taylor integration: step-size rules, heyoka's order rule, per-trajectory batches.

Step size (made from the coefficients of the current step, before it is taken, so every step is
accepted).  With ``p`` the order, ``c_k`` the coefficients and norms the max-abs over one problem's
entries:

* ``order="auto"`` uses **heyoka's rule** (Jorba & Zou 2005, "A software package for the numerical
  integration of ODEs by means of high-order Taylor methods", Exp. Math. 14, as implemented in heyoka):
  the tolerance sets only the order, ``p = ceil(-ln(tol) / 2) + 1`` with ``tol = min(rtol, atol)``, and

      rho_m = (s / ||c_m||)^(1/m),  m in {p-1, p},      h = e^-2 e^(-0.7/(p-1)) min(rho_{p-1}, rho_p),

  with ``s = max(1, ||x||)`` for ``rtol = atol`` (in general ``s = max(atol, rtol ||x||) / tol``).  Then
  ``||c_p|| h^p <= s e^(-2p) ~ s tol``: the last kept term is at the tolerance.  heyoka 7.13 makes the
  same steps to the last bit on Kepler (``tests/core/test_adaptive.py``).
* an explicit ``order`` uses the **Jorba-Zou rule** with the tolerances:
  ``rho_m = (eps / ||c_m||)^(1/m)``, ``eps = atol + rtol ||x||``, ``h = e^(-0.7/(p-1)) min(rho_{p-1}, rho_p)``
  (``||c_p|| h^p <= eps``; two coefficients because one may vanish by symmetry).

Batches: ``y0`` with leading batch dimensions (``event_ndim`` trailing dimensions form one problem).
By default each member takes **its own steps** (``batch_steps="per_trajectory"``, like heyoka's batch
mode): the members advance in lockstep, each with its own step size, and members that reached ``t1``
are dropped from the computation.  ``batch_steps="shared"`` keeps one step sequence for all (the
smallest step), the previous behaviour.  Per-trajectory steps run on the compiled path for any ``f``;
on the interpreted path they need an ``f`` that does not read ``t`` (members are at different times and
``f`` receives one scalar ``t``), otherwise the steps are shared and ``stats.notes`` says so.

Failures: NaN/Inf raises :class:`~taylorsolve.errors.SolverError` (step and time).  When the step
size collapses (``t + h == t``, or ``h`` below 1e-12 of the span) or ``max_steps`` runs out, :class:`~taylorsolve.errors.StiffnessError`
gives ``t`` and ``h`` and says whether the problem looks stiff (the state barely changes per step, so
stability, not accuracy, limits the step), pointing to implicit solvers (scipy's ``Radau``/``BDF``).
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from .coefficients import RHS, CoefficientBackend
from .errors import SolverError, StiffnessError, TaylorSolveError, check_finite
from .solution import Solution
from .stepping import _stats, check_coefficients, compensated_step

__all__ = ["auto_order", "jorba_zou_step", "step_sizes", "solve_adaptive", "RULES"]

#: step-size rules: "heyoka" (order="auto") and "jorba_zou" (explicit order, tolerances)
RULES = ("heyoka", "jorba_zou")
_RULE_CODE = {"jorba_zou": 1, "heyoka": 2}
#: window of recent steps used to tell a stiff problem from a singular one
_WINDOW = 50
#: relative state change per step below which a collapsed solve "looks stiff"
_STIFF_CHANGE = 1e-3
#: steps below this fraction of the span count as collapsed (the solve would need > 1e12 steps)
_MIN_STEP = 1e-12


def auto_order(tol: float) -> int:
    """heyoka's order for a tolerance: ``ceil(-ln(tol) / 2) + 1`` (at least 2)."""
    if not (0.0 < tol < 1.0):
        raise TaylorSolveError(f"order='auto' needs a tolerance in (0, 1), got {tol}")
    return max(2, math.ceil(-math.log(tol) / 2.0) + 1)


def _batch_inf_norm(x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Max-abs over the event dimensions: shape = batch shape (a 0-d tensor for an unbatched state)."""
    if event_ndim == 0:
        return x.abs()
    return x.abs().flatten(start_dim=x.ndim - event_ndim).amax(dim=-1)


def step_sizes(coeffs: list[torch.Tensor], rtol: float, atol: float, event_ndim: int, rule: str = "jorba_zou") -> torch.Tensor:
    """The step size of every batch member (float64, batch-shaped) by ``rule`` (see the module docstring)."""
    p = len(coeffs) - 1
    xmax = _batch_inf_norm(coeffs[0], event_ndim).to(torch.float64)
    if rule == "heyoka":
        tol = min(rtol, atol) if (rtol > 0 and atol > 0) else max(rtol, atol)
        scale = torch.maximum(torch.full_like(xmax, atol), rtol * xmax) / tol
        fac = math.exp(-2.0) * (math.exp(-0.7 / (p - 1)) if p > 1 else 0.9)
    elif rule == "jorba_zou":
        scale = atol + rtol * xmax
        fac = math.exp(-0.7 / (p - 1)) if p > 1 else 0.9
    else:
        raise TaylorSolveError(f"unknown step-size rule {rule!r}; use one of {RULES}")
    h = torch.full_like(xmax, math.inf)
    for k in ([p] if p == 1 else [p - 1, p]):
        norm = _batch_inf_norm(coeffs[k], event_ndim).to(torch.float64)
        rho = torch.where(norm > 0, (scale / norm.clamp_min(1e-300)) ** (1.0 / k), torch.full_like(norm, math.inf))
        h = torch.minimum(h, rho)
    return h * fac


def jorba_zou_step(coeffs: list[torch.Tensor], rtol: float, atol: float, event_ndim: int) -> float:
    """The Jorba-Zou step size (module docstring) for the coefficients of one step; the batch's smallest."""
    return float(step_sizes(coeffs, rtol, atol, event_ndim, "jorba_zou").min())


# --------------------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------------------
def _radius(coeffs: Any) -> float | None:
    """heyoka's ``rho`` of the last step's coefficients ``[p+1, ...]``: how far the Taylor series reaches."""
    if coeffs is None:
        return None
    c = np.asarray(coeffs.detach().cpu().double() if isinstance(coeffs, torch.Tensor) else coeffs, dtype=np.float64)
    c = np.abs(c.reshape(c.shape[0], -1)).max(axis=1)
    p = c.shape[0] - 1
    if p < 2 or not np.isfinite(c).all():
        return None
    rhos = [(max(1.0, c[0]) / c[m]) ** (1.0 / m) for m in (p - 1, p) if c[m] > 0]
    return min(rhos) if rhos else None


def _stiffness_error(kind: str, *, t: float, h: float, step: int, t1: float, span: float, max_steps: int,
                     recent: torch.Tensor | np.ndarray | None, member: str = "", coeffs: Any = None) -> StiffnessError:
    """The message for a collapsed step size or an exhausted step budget, with a stiffness diagnosis.

    Three cases: the step is far below the reach of the Taylor series (``h < 0.01 rho``, heyoka's
    ``rho``): the order/tolerance pair limits it (raise the order); the series reaches little farther
    than the step and the state barely changes per step: stiff (stability limits the steps); the state
    changes fast: a singularity or fast dynamics.
    """
    if kind == "budget":
        head = (f"adaptive solve reached max_steps={max_steps}{member} at t = {t:.6g} before t1 = {t1:.6g}; "
                f"the step size there is h = {h:.3g} ({h / span:.2g} of the span)")
    else:
        head = (f"adaptive step size collapsed to h = {h:.3g}{member} at t = {t:.6g} (step {step}, "
                f"{h / span:.2g} of the span)")
    change = None
    if recent is not None and len(recent) >= 3:
        r = np.asarray(recent.detach().cpu().double() if isinstance(recent, torch.Tensor) else recent, dtype=np.float64)
        r = r.reshape(len(r), -1)
        d = np.abs(np.diff(r, axis=0)).max(axis=1) / np.maximum(1.0, np.abs(r[1:]).max(axis=1))
        change = float(np.mean(d)) if np.isfinite(d).all() else None
    rho = _radius(coeffs)
    if rho is not None and h < 0.01 * rho:
        diag = (f". The Taylor series reaches about {rho:.3g} but the tolerance at order {np.asarray(coeffs).shape[0] - 1} "
                "allows only this step: raise the order (order='auto' chooses it from the tolerance) or loosen "
                "rtol/atol; it does not look stiff.")
    elif change is not None and change < _STIFF_CHANGE:
        diag = (f". The problem looks stiff: over the last {len(recent) - 1} steps the state changed by only "
                f"{change:.2g} (relative) per step, so stability, not accuracy, limits the explicit Taylor steps. "
                "Use an implicit solver such as scipy.integrate.solve_ivp(..., method='Radau') or method='BDF'.")
    elif change is not None:
        diag = (f". The state changes by {change:.2g} (relative) per step here: a singularity or very fast "
                "dynamics near this t (it does not look stiff); raise max_steps if the steps are right, and for a "
                "stiff problem use an implicit solver such as scipy's Radau or BDF.")
    else:
        diag = (". If the problem is stiff, use an implicit solver such as scipy.integrate.solve_ivp(..., "
                "method='Radau') or method='BDF'; otherwise raise max_steps.")
    return StiffnessError(head + diag, step=step, time=t, h=h)


class _Progress:
    """A tqdm bar over t (``progress=True``); a no-op otherwise."""

    def __init__(self, enabled: bool, t0: float, t1: float, desc: str) -> None:
        self.bar = None
        self.span = abs(t1 - t0)
        self.done = 0.0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.span, desc=desc, unit="t", unit_scale=False,
                            bar_format="{l_bar}{bar}| t {n:.4g}/{total:.4g} [{elapsed}<{remaining}, {postfix}]")

    def to(self, fraction: float, steps: int) -> None:
        if self.bar is None:
            return
        new = min(max(fraction, 0.0), 1.0) * self.span
        if new > self.done:
            self.bar.update(new - self.done)
            self.done = new
        self.bar.set_postfix_str(f"{steps} steps", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------------
def solve_adaptive(
    f: RHS,
    y0: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    order: int,
    backend: CoefficientBackend,
    *,
    rtol: float,
    atol: float,
    event_ndim: int,
    max_steps: int,
    check_nonfinite: bool = True,
    h_max: float | None = None,
    rule: str = "jorba_zou",
    batch_steps: str = "per_trajectory",
    progress: bool = False,
    dense: bool = True,
) -> Solution:
    """Integrate from ``t0`` to ``t1`` with adaptive steps (module docstring); the result is callable (dense output)
    unless ``dense=False`` (saves the memory of every step's coefficients, ``[S, p+1, *y0.shape]``)."""
    if rule not in RULES:
        raise TaylorSolveError(f"unknown step-size rule {rule!r}; use one of {RULES}")
    if batch_steps not in ("per_trajectory", "shared"):
        raise TaylorSolveError(f"batch_steps must be 'per_trajectory' or 'shared', got {batch_steps!r}")
    backend.reset()
    start = time.perf_counter()
    span = abs(float(t1) - float(t0))
    h_cap = span if h_max is None else min(span, float(h_max))
    batched = (y0.ndim - event_ndim) > 0 and math.prod(y0.shape[: y0.ndim - event_ndim]) > 1
    per_traj = batched and batch_steps == "per_trajectory"
    bar = _Progress(progress, float(t0), float(t1), f"TTM-{order} ({backend.name})")
    try:
        plan = None
        compiled_note = ""
        want = getattr(backend, "compile_mode", None)
        if want is not None and want("adaptive"):
            plan, compiled_note = backend.compiled_plan(f, t0, y0, event_ndim)
        if plan is not None:
            plan_obj, nd = plan
            sol = _compiled_adaptive(plan_obj, nd, f, y0, float(t0), float(t1), order, backend, rtol=rtol, atol=atol,
                                     max_steps=max_steps, check=check_nonfinite, h_cap=h_cap, rule=rule,
                                     per_traj=per_traj if nd == event_ndim else False, bar=bar, start=start,
                                     dense=dense)
            if nd != event_ndim and batched:
                sol.stats.notes = _join(sol.stats.notes, "f couples the batch members: they were solved as one system")
            return sol
        shared_note = ("per-trajectory steps need the compiled path or an f that does not read t (members are at "
                       "different times): steps were shared")
        sol = None
        if per_traj and not hasattr(backend, "last_read_time"):
            per_traj, compiled_note = False, _join(compiled_note, shared_note)
        if per_traj:
            try:
                sol = _interpreted_per_trajectory(f, y0, t0, t1, order, backend, rtol=rtol, atol=atol,
                                                  event_ndim=event_ndim, max_steps=max_steps, check=check_nonfinite,
                                                  h_cap=h_cap, rule=rule, bar=bar, start=start, dense=dense)
            except _ReadsTime:
                backend.reset()
                compiled_note = _join(compiled_note, shared_note)
        if sol is None:
            sol = _interpreted_shared(f, y0, t0, t1, order, backend, rtol=rtol, atol=atol, event_ndim=event_ndim,
                                      max_steps=max_steps, check=check_nonfinite, h_cap=h_cap, rule=rule, bar=bar,
                                      start=start, dense=dense)
        sol.stats.notes = _join(compiled_note, sol.stats.notes)
        return sol
    finally:
        bar.close()


def _join(a: str, b: str) -> str:
    return "; ".join(x for x in (a, b) if x)


class _ReadsTime(Exception):
    """The interpreted per-trajectory loop found that ``f`` reads ``t`` (members would need different times)."""


def _remaining_ok(t: float, t1: float, h: float) -> tuple[float, bool]:
    remaining = abs(t1 - t)
    if h >= remaining or remaining - h < 1e-12 * max(1.0, abs(t1)):
        return remaining, True
    return h, False


def _interpreted_shared(f, y0, t0, t1, order, backend, *, rtol, atol, event_ndim, max_steps, check, h_cap, rule,
                        bar, start, dense=True) -> Solution:
    direction = 1.0 if float(t1) > float(t0) else -1.0
    ts = [t0]
    ys = [y0]
    dcs: list[torch.Tensor] = []
    hs: list[float] = []
    last_c = None
    lo = None
    t, y = t0, y0
    span = abs(float(t1 - t0))
    n = 0
    while direction * float(t1 - t) > 0:
        if n >= max_steps:
            raise _stiffness_error("budget", t=float(t), h=hs[-1] if hs else span, step=n, t1=float(t1), span=span,
                                   max_steps=max_steps, recent=torch.stack(ys[-_WINDOW:]), coeffs=last_c)
        coeffs = backend.coefficients(f, t, y, order)
        if check:
            check_coefficients(coeffs, order, y, step=n, time_=float(t))
        last_c = torch.stack([c.detach() for c in coeffs])
        h = min(float(step_sizes(coeffs, rtol, atol, event_ndim, rule).min()), h_cap)
        h, last = _remaining_ok(float(t), float(t1), h)
        if last:
            t_next = t1
        else:
            if not h > 1e-14 * max(1.0, abs(float(t))) or h < _MIN_STEP * span:
                raise _stiffness_error("collapse", t=float(t), h=h, step=n, t1=float(t1), span=span,
                                       max_steps=max_steps, recent=torch.stack(ys[-_WINDOW:]),
                                       coeffs=torch.stack([c.detach() for c in coeffs]))
            t_next = t + direction * h
        y, lo = compensated_step(coeffs, (t_next - t).to(coeffs[0].dtype), lo)
        n += 1
        hs.append(h)
        if check:
            check_finite(y, what="the state", step=n, time=float(t_next))
        if dense:
            dcs.append(torch.stack([c.detach() for c in coeffs]))
        t = torch.as_tensor(t_next, dtype=t0.dtype, device=t0.device)
        ts.append(t)
        ys.append(y)
        bar.to(abs(float(t) - float(t0)) / span, n)
    stats = _stats(backend, steps=n, order=order, start=start)
    return Solution(t=torch.stack(ts), ys=torch.stack(ys), stats=stats, coefficients=torch.stack(dcs) if dense else None)


def _assemble_per_trajectory(B: int, S: int, steps: torch.Tensor, t0: float, t1: float, y0b: torch.Tensor,
                             rec_m, rec_k, rec_t1, rec_c, rec_y, p: int, tdtype) -> tuple[torch.Tensor, ...]:
    """Padded ``t [S+1, B]``, ``ys [S+1, B, *ev]``, ``C [S, p+1, B, *ev]`` from per-step records."""
    ev = tuple(y0b.shape[1:])
    T = torch.full((S + 1, B), t1, dtype=tdtype)
    T[0] = t0
    Y = torch.empty((S + 1, B, *ev), dtype=y0b.dtype)
    Y[0] = y0b
    C = torch.zeros((S, p + 1, B, *ev), dtype=y0b.dtype) if rec_c is not None else None
    if len(rec_m):
        T[rec_k + 1, rec_m] = rec_t1.to(tdtype)
        Y[rec_k + 1, rec_m] = rec_y
        if C is not None:
            C[rec_k, :, rec_m] = rec_c
        done = steps > 0
        T[steps[done], torch.nonzero(done).flatten()] = t1  # the last step ends exactly at t1
    # members that finished early repeat their final state
    last = steps.clamp_max(S)
    rows = torch.arange(S + 1).reshape(-1, 1)
    after = rows > last.reshape(1, -1)  # [S+1, B]
    if bool(after.any()):
        final = Y[last, torch.arange(B)]  # [B, *ev]
        mask = after.reshape(S + 1, B, *([1] * len(ev)))
        Y = torch.where(mask, final.unsqueeze(0), Y)
    return T, Y, C


def _interpreted_per_trajectory(f, y0, t0, t1, order, backend, *, rtol, atol, event_ndim, max_steps, check, h_cap,
                                rule, bar, start, dense=True) -> Solution:
    """Each member its own steps; ``f`` does not read ``t`` (checked by the caller), members in lockstep."""
    bshape = y0.shape[: y0.ndim - event_ndim]
    ev = y0.shape[y0.ndim - event_ndim :]
    B = math.prod(bshape)
    Yb = y0.reshape(B, *ev).clone()
    Lo = torch.zeros_like(Yb)  # compensated summation of the states
    y0b = Yb.clone()
    T = torch.full((B,), float(t0), dtype=torch.float64)
    steps = torch.zeros(B, dtype=torch.int64)
    active = torch.arange(B)
    direction = 1.0 if float(t1) > float(t0) else -1.0
    span = abs(float(t1) - float(t0))
    recs: list[tuple] = []
    hist: list[torch.Tensor] = [y0b.clone()]
    n = 0
    while active.numel():
        if int(steps[active].max()) >= max_steps:
            worst = int(active[int(torch.argmax(steps[active]))])
            last = recs[-1]
            j = int(torch.nonzero(last[0] == worst)[0]) if bool((last[0] == worst).any()) else 0
            raise _stiffness_error("budget", t=float(T[worst]), h=float(last[4][j]), step=max_steps,
                                   t1=float(t1), span=span, max_steps=max_steps,
                                   recent=torch.stack([hh[worst] for hh in hist[-_WINDOW:]]), member=f" (batch member {worst})",
                                   coeffs=last[3][j] if last[3] is not None else None)
        ya = Yb[active]
        ta = T[active]
        coeffs = backend.coefficients(f, ta[0].to(t0.dtype), ya, order)
        if n == 0 and getattr(backend, "last_read_time", True) is not False:
            raise _ReadsTime()
        if check:
            check_coefficients(coeffs, order, ya, step=n, time_=float(ta.min()))
        h = step_sizes(coeffs, rtol, atol, event_ndim, rule).reshape(-1).clamp_max(h_cap)
        remaining = (float(t1) - ta).abs()
        last = (h >= remaining) | (remaining - h < 1e-12 * max(1.0, abs(float(t1))))
        tiny = ~last & (~(h > 1e-14 * ta.abs().clamp_min(1.0)) | (h < _MIN_STEP * span))
        if bool(tiny.any()):
            i = int(torch.nonzero(tiny)[0])
            m = int(active[i])
            raise _stiffness_error("collapse", t=float(ta[i]), h=float(h[i]), step=int(steps[m]), t1=float(t1), span=span,
                                   max_steps=max_steps, recent=torch.stack([hh[m] for hh in hist[-_WINDOW:]]),
                                   member=f" (batch member {m})", coeffs=torch.stack([c[i].detach() for c in coeffs]))
        h = torch.where(last, remaining, h)
        tn = torch.where(last, torch.full_like(ta, float(t1)), ta + direction * h)
        s = (tn - ta).to(ya.dtype).reshape(-1, *([1] * event_ndim))
        y_new, lo_new = compensated_step(coeffs, s, Lo[active])
        if check:
            check_finite(y_new, what="the state", step=n + 1, time=float(tn.min()))
        recs.append((active.clone(), steps[active].clone(), tn.clone(),
                     torch.stack([c.detach() for c in coeffs], 1) if dense else None, h, y_new.detach()))
        steps[active] += 1
        Yb[active] = y_new
        Lo[active] = lo_new
        T[active] = tn
        if B * math.prod(ev) <= 1_000_000:  # recent states, for the stiffness diagnosis
            hist = hist[-_WINDOW:] + [Yb.clone()]
        active = active[direction * (float(t1) - tn) > 0]
        n += 1
        bar.to(float(((T - float(t0)).abs() / span).mean()), n)
    S = int(steps.max())
    rec_m = torch.cat([r[0] for r in recs]) if recs else torch.zeros(0, dtype=torch.int64)
    rec_k = torch.cat([r[1] for r in recs]) if recs else torch.zeros(0, dtype=torch.int64)
    rec_t = torch.cat([r[2] for r in recs]) if recs else torch.zeros(0)
    rec_c = torch.cat([r[3] for r in recs]) if (recs and dense) else None
    rec_y = torch.cat([r[5] for r in recs]) if recs else torch.zeros((0, *ev))
    Tt, Y, C = _assemble_per_trajectory(B, S, steps, float(t0), float(t1), y0b, rec_m, rec_k, rec_t, rec_c, rec_y,
                                        order, t0.dtype)
    stats = _stats(backend, steps=S, order=order, start=start)
    stats.steps_per_member = steps.reshape(bshape)
    stats.accepted_steps = int(steps.sum())
    return Solution(t=Tt.reshape(S + 1, *bshape), ys=Y.reshape(S + 1, *bshape, *ev), stats=stats,
                    coefficients=C.reshape(S, order + 1, *bshape, *ev) if C is not None else None,
                    batch_ndim=len(bshape))


# --------------------------------------------------------------------------------------------------
# the compiled path
# --------------------------------------------------------------------------------------------------
_CODES = {2: "budget", 3: "collapse"}


def _raise_compiled(status: int, *, t: float, h: float, step: int, t1: float, span: float, max_steps: int,
                    recent: Any, member: str = "", coeffs: Any = None) -> None:
    if status in (2, 3):
        raise _stiffness_error(_CODES[status], t=t, h=h, step=step, t1=t1, span=span, max_steps=max_steps,
                               recent=recent, member=member, coeffs=coeffs)
    what = "a Taylor coefficient" if status == 4 else "the state"
    raise SolverError(f"{what} has non-finite (NaN/Inf) entries{member} at step {step} (t = {t:.6g})", step=step, time=t)


def _compiled_adaptive(plan, nd, f, y0, t0, t1, order, backend, *, rtol, atol, max_steps, check, h_cap, rule,
                       per_traj, bar, start, dense=True) -> Solution:
    ns = plan.n_state
    span = abs(t1 - t0)
    code = _RULE_CODE[rule]
    bshape = y0.shape[: y0.ndim - nd]
    B = math.prod(bshape)
    npd = plan.np_dtype
    chunk = 1 << 62 if bar.bar is None else 200
    yb = np.ascontiguousarray(y0.detach().reshape(B, ns).cpu().numpy().astype(npd))
    coef = plan.coef
    if B == 1:
        plan.ensure("adaptive1")
        loop = plan.loop("adaptive1")
        cap = int(min(max_steps, 512)) + 1
        U = plan.work(order)
        Cw = np.zeros((order + 1, ns), dtype=npd)
        ts = np.zeros(cap + 1)
        ys = np.zeros((cap + 1, ns), dtype=npd)
        cs = np.zeros((cap if dense else 1, order + 1, ns), dtype=npd)
        hs = np.zeros(cap)
        ts[0] = t0
        ys[0] = yb[0]
        y = yb[0].copy()
        ylo = np.zeros_like(y)  # compensated summation of the state (see _loops._advance)
        n = 0
        t = t0
        while True:
            n, status = loop(coef, t, t1, y, order, code, rtol, atol, h_cap, _MIN_STEP * span, max_steps, n, U, plan.K,
                             ts, ys, cs, hs, check, chunk, dense, Cw, ylo)
            if status == 1:
                bar.to(abs(ts[n] - t0) / span, n)
                if n >= hs.shape[0]:
                    extra = hs.shape[0]
                    ts, ys, hs = (_grow(a, extra) for a in (ts, ys, hs))
                    if dense:
                        cs = _grow(cs, extra)
                t = float(ts[n])
                continue
            if status != 0:
                last_c = (cs[max(n - 1, 0)] if status == 2 else cs[n]) if dense else Cw
                _raise_compiled(status, t=float(ts[n]), h=float(hs[n] if status == 3 else hs[max(n - 1, 0)]), step=n,
                                t1=t1, span=span, max_steps=max_steps, recent=ys[max(0, n - _WINDOW) : n + 1],
                                coeffs=last_c)
            break
        bar.to(1.0, n)
        backend.counters.f_evals += n
        backend.counters.derivative_evals += n if order > 1 else 0
        stats = _stats(backend, steps=n, order=order, start=start)
        stats.compile_time, stats.compiled = plan.compile_time, True
        return Solution(
            t=torch.from_numpy(ts[: n + 1].copy()),
            ys=torch.from_numpy(ys[: n + 1].copy()).reshape(n + 1, *y0.shape),
            stats=stats,
            coefficients=torch.from_numpy(cs[:n].copy()).reshape(n, order + 1, *y0.shape) if dense else None,
        )
    # a batch: lockstep over the active members, per-trajectory or shared steps
    plan.ensure("adaptiveB")
    loop = plan.loop("adaptiveB")
    U = plan.work(order)
    slot_member = np.arange(B, dtype=np.int64)
    T = np.full(B, t0)
    Y = yb.copy()
    steps = np.zeros(B, dtype=np.int64)
    cap = int(min(max(B * 32, 4096), B * (max_steps + 1)))
    hbuf = np.zeros(B)
    fail = np.zeros(2, dtype=np.int64)
    Cb = np.zeros((1 if dense else B, order + 1, ns), dtype=npd)
    Ylo = np.zeros_like(Y)  # compensated summation of the states
    chunks: list[tuple[np.ndarray, ...]] = []  # filled record buffers (no copying as the solve grows)

    def new_buffers():
        return (np.zeros(cap, dtype=np.int64), np.zeros(cap), np.zeros(cap),
                np.zeros((cap if dense else 1, order + 1, ns), dtype=npd), np.zeros((cap, ns), dtype=npd))

    rec_m, rec_t, rec_h, rec_c, rec_y = new_buffers()
    n_active, nrec = B, 0
    while True:
        n_active, nrec, status = loop(coef, t1, order, code, rtol, atol, h_cap, _MIN_STEP * span, max_steps, not per_traj,
                                      U, plan.K,
                                      slot_member, n_active, T, Y, steps, rec_m, rec_t, rec_h, rec_c, rec_y, nrec,
                                      check, chunk, hbuf, fail, dense, Cb, Ylo)
        if status == 1:
            bar.to(float(np.mean(np.abs(_member_times(T, slot_member, n_active, t1) - t0)) / span), int(steps.max()))
            if nrec + n_active > cap:
                chunks.append((rec_m[:nrec], rec_t[:nrec], rec_h[:nrec], rec_c[:nrec] if dense else None, rec_y[:nrec]))
                rec_m, rec_t, rec_h, rec_c, rec_y = new_buffers()
                nrec = 0
            continue
        chunks.append((rec_m[:nrec], rec_t[:nrec], rec_h[:nrec], rec_c[:nrec] if dense else None, rec_y[:nrec]))
        if status != 0:
            m = int(fail[0])
            rm_all = np.concatenate([c[0] for c in chunks])
            sel = rm_all == m
            recent = np.concatenate([c[4] for c in chunks])[sel][-_WINDOW:]
            rt = np.concatenate([c[1] for c in chunks])[sel]
            rh = np.concatenate([c[2] for c in chunks])[sel]
            tm = float(rt[-1] + rh[-1]) if sel.any() else t0
            hm = float(hbuf[0]) if status == 3 else (float(rh[-1]) if sel.any() else span)
            if status == 3:
                tm = float(T[0])
            lc = None
            if dense and sel.any():
                lc = np.concatenate([c[3] for c in chunks])[sel][-1]
            _raise_compiled(status, t=tm, h=hm, step=int(fail[1]), t1=t1, span=span, max_steps=max_steps,
                            recent=recent, member=f" (batch member {m})", coeffs=lc)
        break
    rec_m = np.concatenate([c[0] for c in chunks])
    rec_t = np.concatenate([c[1] for c in chunks])
    rec_h = np.concatenate([c[2] for c in chunks])
    rec_c = np.concatenate([c[3] for c in chunks]) if dense else None
    rec_y = np.concatenate([c[4] for c in chunks])
    nrec = len(rec_m)
    bar.to(1.0, int(steps.max()))
    backend.counters.f_evals += nrec
    backend.counters.derivative_evals += nrec if order > 1 else 0
    S = int(steps.max())
    rm = rec_m[:nrec]
    # step index of each record within its member (a member's records are in time order)
    order_ = np.argsort(rm, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(rm, minlength=B))[:-1]])
    k_of = np.empty(nrec, dtype=np.int64)
    k_of[order_] = np.arange(nrec) - starts[rm[order_]]
    stats = _stats(backend, steps=S, order=order, start=start)
    stats.compile_time, stats.compiled = plan.compile_time, True
    steps_t = torch.from_numpy(steps.copy())
    if not per_traj:
        # shared steps: every member has the same times; a 1-D t as for unbatched solves
        tt = np.concatenate([[t0], (rec_t[:nrec] + rec_h[:nrec] * (1 if t1 > t0 else -1))[rm == 0]])
        tt[-1] = t1
        Tt, Yt, C = _assemble_per_trajectory(B, S, steps_t, t0, t1, torch.from_numpy(yb), torch.from_numpy(rm.copy()),
                                             torch.from_numpy(k_of), torch.zeros(nrec), (torch.from_numpy(rec_c) if dense else None),
                                             torch.from_numpy(rec_y), order, torch.float64)
        stats.accepted_steps = S
        return Solution(t=torch.from_numpy(tt), ys=Yt.reshape(S + 1, *y0.shape), stats=stats,
                        coefficients=C.reshape(S, order + 1, *y0.shape) if C is not None else None)
    direction = 1.0 if t1 > t0 else -1.0
    t_end = torch.from_numpy(rec_t[:nrec] + direction * rec_h[:nrec])
    Tt, Yt, C = _assemble_per_trajectory(B, S, steps_t, t0, t1, torch.from_numpy(yb), torch.from_numpy(rm.copy()),
                                         torch.from_numpy(k_of), t_end, (torch.from_numpy(rec_c) if dense else None),
                                         torch.from_numpy(rec_y), order, torch.float64)
    stats.steps_per_member = steps_t.reshape(bshape)
    stats.accepted_steps = int(steps.sum())
    return Solution(t=Tt.reshape(S + 1, *bshape), ys=Yt.reshape(S + 1, *y0.shape), stats=stats,
                    coefficients=C.reshape(S, order + 1, *y0.shape) if C is not None else None,
                    batch_ndim=len(bshape))


def _grow(a: np.ndarray, extra: int) -> np.ndarray:
    return np.concatenate([a, np.zeros((extra, *a.shape[1:]), dtype=a.dtype)])


def _member_times(T: np.ndarray, slot_member: np.ndarray, n_active: int, t1: float) -> np.ndarray:
    out = np.full(T.shape[0], t1)
    out[slot_member[:n_active]] = T[:n_active]
    return out
