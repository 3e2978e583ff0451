"""Shared pieces of the toy experiments: fast exact derivatives, reference solves, output helpers.

Conventions follow ``docs/CONVENTIONS.md`` and the GENIE paper: the DDIM ODE ``d xbar / d gamma = eps``
(eq. (6)) in ``(xbar, gamma)`` coordinates, ``x = xbar / sqrt(1 + gamma^2)`` (VP).
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from taylorsolve.diffusion import LinearVPSchedule, providers

F64 = torch.float64
DEFAULT_OUT = Path("results") / "toy"

__all__ = [
    "F64",
    "DEFAULT_OUT",
    "iso_eps_derivatives",
    "exact_provider",
    "reference_solve",
    "atomic_write_text",
    "write_csv",
    "write_json",
    "save_figure",
    "progress",
    "loglog_slope",
]


# ------------------------------------------------------------------------------------------------
# exact derivatives along the DDIM ODE for isotropic mixtures (closed form, orders <= 2)
# ------------------------------------------------------------------------------------------------
def iso_eps_derivatives(mix: Any, xbar: torch.Tensor, gamma: Any, order: int) -> list[torch.Tensor]:
    r"""``[eps, d eps/d gamma, d^2 eps/d gamma^2][:order + 1]`` along the DDIM ODE (eq. (6)), closed form.

    For an isotropic mixture ``sum_k w_k N(m_k, s_k^2 I)`` in ``(xbar, gamma)`` coordinates
    (``toy.mixture``): with ``u_k = xbar - m_k``, ``v_k = s_k^2 + gamma^2``, ``a_k = u_k / v_k`` and the
    responsibilities ``r_k = softmax_k(l_k)``, ``l_k = log w_k - |u_k|^2 / (2 v_k) - (d/2) log v_k``,

        eps = gamma A,   A = sum_k r_k a_k.

    ``D`` is the total derivative along the ODE (``D xbar = eps``, ``D gamma = 1``):

        D a_k = b_k = (eps - 2 gamma a_k) / v_k,
        D l_k = lam_k = -a_k . eps + gamma |a_k|^2 - d gamma / v_k,      D r_k = r_k (lam_k - sum_j r_j lam_j),
        D eps = A + gamma D A,        D A = sum_k (D r_k) a_k + r_k b_k,
        D^2 eps = 2 D A + gamma D^2 A,
        D^2 A = sum_k (D^2 r_k) a_k + 2 (D r_k) b_k + r_k D b_k,   D b_k = (D eps - 2 a_k - 4 gamma b_k) / v_k,
        D lam_k = -b_k . eps - a_k . D eps + |a_k|^2 + 2 gamma a_k . b_k - d (v_k - 2 gamma^2) / v_k^2,
        D^2 r_k = (D r_k)(lam_k - lam_bar) + r_k (D lam_k - sum_j [(D r_j) lam_j + r_j D lam_j]).

    Elementwise work on ``[B, K, d]`` arrays: a few times the cost of one eps evaluation, much cheaper
    than the generic Taylor-mode / autodiff backends.  Checked against
    ``GaussianMixture.eps_derivatives`` in ``tests/toy/test_experiments.py``.
    """
    if not mix.is_isotropic:
        raise ValueError("iso_eps_derivatives needs an isotropic mixture (stds=...)")
    if order > 2:
        raise ValueError("iso_eps_derivatives gives orders <= 2 (use mix.eps_derivatives for more)")
    g = torch.as_tensor(gamma, dtype=F64)
    xbar = xbar.to(F64)
    d = mix.dim
    means = mix.means  # [K, d]
    var = mix.stds ** 2  # [K]
    v = var + g * g  # [K]
    u = xbar.unsqueeze(-2) - means  # [B, K, d]
    a = u / v[:, None]
    logits = torch.log(mix.weights) - 0.5 * (u * u).sum(-1) / v - 0.5 * d * torch.log(v)
    r = torch.softmax(logits, dim=-1)  # [B, K]
    A = (r.unsqueeze(-1) * a).sum(-2)
    eps = g * A
    out = [eps]
    if order == 0:
        return out
    e_ = eps.unsqueeze(-2)
    b = (e_ - 2.0 * g * a) / v[:, None]
    aa = (a * a).sum(-1)
    lam = -(a * e_).sum(-1) + g * aa - d * g / v
    lam_c = lam - (r * lam).sum(-1, keepdim=True)
    dr = r * lam_c
    dA = (dr.unsqueeze(-1) * a + r.unsqueeze(-1) * b).sum(-2)
    deps = A + g * dA
    out.append(deps)
    if order == 1:
        return out
    de_ = deps.unsqueeze(-2)
    db = (de_ - 2.0 * a - 4.0 * g * b) / v[:, None]
    dlam = (-(b * e_).sum(-1) - (a * de_).sum(-1) + aa + 2.0 * g * (a * b).sum(-1)
            - d * (v - 2.0 * g * g) / (v * v))
    dlam_bar = (dr * lam + r * dlam).sum(-1, keepdim=True)
    d2r = dr * lam_c + r * (dlam - dlam_bar)
    d2A = (d2r.unsqueeze(-1) * a + 2.0 * dr.unsqueeze(-1) * b + r.unsqueeze(-1) * db).sum(-2)
    out.append(2.0 * dA + g * d2A)
    return out


def exact_provider(mix: Any) -> Any:
    """A fresh ``taylorsolve.diffusion.providers.exact`` provider with the mixture's exact derivatives.

    Isotropic mixtures use the closed form :func:`iso_eps_derivatives` (orders <= 2, i.e. up to TTM-3);
    otherwise ``mix.eps_derivatives(..., backend="taylor_mode")``.
    """

    def fn(xbar: torch.Tensor, gamma: torch.Tensor, eps: torch.Tensor, n: int) -> list[torch.Tensor]:
        if mix.is_isotropic and n <= 2:
            ders = iso_eps_derivatives(mix, xbar, gamma, n)
        else:
            ders = mix.eps_derivatives(xbar, gamma, n, backend="taylor_mode")
        return [dd.to(xbar.dtype) for dd in ders[1:]]

    return providers.exact(fn)


# ------------------------------------------------------------------------------------------------
# coordinates and reference solutions of the DDIM ODE
# ------------------------------------------------------------------------------------------------
def reference_solve(mix: Any, xbar0: torch.Tensor, gamma0: float, gammas: Sequence[float], *,
                    rtol: float = 1e-11, atol: float = 1e-12) -> torch.Tensor:
    r"""Very accurate solution of the DDIM ODE (eq. (6)) from ``xbar(gamma0) = xbar0`` at ``gammas``.

    scipy ``solve_ivp(method="DOP853")`` in ``s = log gamma`` (``d xbar/d s = gamma eps``), since gamma
    spans four orders of magnitude; the whole batch is one state (joint step control, which only makes
    it more accurate per point).  Returns ``[len(gammas), *xbar0.shape]`` (float64).
    """
    from scipy.integrate import solve_ivp

    shape = xbar0.shape
    gam = np.asarray(gammas, dtype=np.float64)
    s_eval = np.log(gam)
    s0 = math.log(float(gamma0))

    def fun(s: float, y: np.ndarray) -> np.ndarray:
        g = math.exp(s)
        xb = torch.from_numpy(y).reshape(shape)
        return (g * mix.eps_gamma(xb, torch.tensor(g, dtype=F64))).reshape(-1).numpy()

    s_end = float(s_eval.min()) if s_eval.min() < s0 else float(s_eval.max())
    if abs(s_end - s0) == 0.0:
        return xbar0.to(F64).expand(len(gam), *shape).clone()
    sol = solve_ivp(fun, (s0, s_end), xbar0.to(F64).reshape(-1).numpy().copy(), method="DOP853",
                    rtol=rtol, atol=atol, dense_output=True)
    if not sol.success:  # pragma: no cover
        raise RuntimeError(f"reference solve failed: {sol.message}")
    ys = sol.sol(s_eval)  # [n_state, len(gammas)]
    return torch.from_numpy(np.ascontiguousarray(ys.T)).reshape(len(gam), *shape)


def linear_vp() -> LinearVPSchedule:
    return LinearVPSchedule()


def gamma_of(t: Any, schedule: Any = None) -> float:
    sch = schedule or LinearVPSchedule()
    return float(sch.gamma(torch.as_tensor(t, dtype=F64)))


# ------------------------------------------------------------------------------------------------
# output helpers (atomic writes)
# ------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``
    (an interrupted run never leaves a truncated result behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the result the usual permissions
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write_bytes` for text (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return v


def write_csv(path: Path | str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    import io

    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in cols})
    return atomic_write_text(path, buf.getvalue())


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, torch.Tensor):
        return _jsonable(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, (np.bool_,)):
        return bool(o)
    return o


def write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def save_figure(fig: Any, path: Path | str, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def progress(iterable: Iterable, *, desc: str, total: int | None = None, quiet: bool = False) -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=quiet, leave=False, dynamic_ncols=True)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (NaN with fewer than two usable points)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
