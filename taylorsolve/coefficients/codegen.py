r"""Straight-line code for a traced tape, compiled with numba, and the compiled stepping loops.

From a :class:`~taylorsolve.coefficients.tape.TraceResult` this module writes a Python module whose
functions numba compiles:

* ``coef1(t, y, order, U)``: the Taylor coefficients of one trajectory.  ``U[node, k]`` holds
  coefficient ``k`` of every tape node; the code is one statement block per node for the primal,
  then a loop over the order ``k = 1 .. p-1`` whose body is again one block per node (the recurrences
  of :mod:`taylorsolve.coefficients.tape`) followed by the ODE recursion ``c_{k+1} = f_k / (k+1)``.
  One code serves every order (the order is an argument).
* ``coefB(t, Y, order, U, M)``: the same for ``M`` trajectories at once, ``U[node, k, m]`` with the
  member loop innermost (vectorised by LLVM).
* the stepping loops (:data:`LOOPS`): adaptive steps for one trajectory, per-trajectory (or shared)
  adaptive steps for a batch, and fixed grids.  Step sizes follow heyoka's rule for ``order="auto"``
  and the Jorba-Zou rule otherwise (see :mod:`taylorsolve.adaptive`), the Taylor polynomial is
  evaluated by Horner's rule, and every step's coefficients are stored for dense output.  The loops
  return to Python when their output buffers are full (or for a progress bar update) and resume.

Why numba and straight-line code: measured on Kepler (order 15, one trajectory; ``python
benchmarks/compare.py``), the straight-line function costs ~1 us a step against ~2.5 us for an
opcode interpreter compiled once, and a step of the interpreted jets costs ~1 ms (1,000 small torch
calls).  The price is a compile per (``f``, event shape, dtype): about a second, reported apart in
``Solution.stats.compile_time`` and cached in memory and on disk (numba ``cache=True`` on the generated
module, written to ``$TAYLORSOLVE_CACHE_DIR`` or ``~/.cache/taylorsolve``), so a second process
loads it in milliseconds.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .tape import Node, TraceResult

__all__ = ["generate", "load_module", "cache_dir", "LOOPS"]

_NUMBA_VERSION: str | None = None


def cache_dir() -> Path | None:
    """Where generated modules (and numba's cache of them) live; None if no writable place exists."""
    root = os.environ.get("TAYLORSOLVE_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "taylorsolve"
    path = path / "compiled"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return path
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# the coefficient functions
# --------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    r = repr(float(x))
    return r if r not in ("inf", "-inf", "nan") else f"float('{r}')"


class _Emitter:
    """Writes the statements of one node; ``batched`` selects ``U[i, k, m]`` with an inner member loop.

    Constants of the tape are not written into the code: they are read from ``K`` (``K[j]``), so the
    code depends only on the structure of ``f`` and a change of a captured constant reuses it.
    """

    def __init__(self, batched: bool, consts: dict[int, int]) -> None:
        self.b = batched
        self.consts = consts  # node index -> position in K

    def k(self, n: Node) -> str:
        return f"K[{self.consts[n.idx]}]"

    def u(self, i: int, k: str) -> str:
        return f"U[{i}, {k}, m]" if self.b else f"U[{i}, {k}]"

    def loop(self, body: list[str], ind: str) -> list[str]:
        if not self.b:
            return [ind + s for s in body]
        return [ind + "for m in range(M):"] + [ind + "    " + s for s in body]

    # ---- order 0 -----------------------------------------------------------------------------------
    def primal(self, n: Node, ind: str) -> list[str]:
        u = self.u
        i = n.idx
        a = [x.idx for x in n.args]
        p = [u(j, "0") for j in a]
        op = n.op
        c = self.k(n) if n.idx in self.consts else None
        if op == "time":
            return self.loop([f"{u(i, '0')} = {'t[m]' if self.b else 't'}", f"{u(i, '1')} = 1.0"], ind)
        if op == "var":
            return self.loop([f"{u(i, '0')} = {'Y[m, ' + str(n.const) + ']' if self.b else 'y[' + str(n.const) + ']'}"], ind)
        exprs = {
            "const": lambda: c,
            "add": lambda: f"{p[0]} + {p[1]}",
            "sub": lambda: f"{p[0]} - {p[1]}",
            "neg": lambda: f"-{p[0]}",
            "addc": lambda: f"{p[0]} + {c}",
            "rsubc": lambda: f"{c} - {p[0]}",
            "mulc": lambda: f"{p[0]} * {c}",
            "divc": lambda: f"{p[0]} / {c}",
            "mul": lambda: f"{p[0]} * {p[1]}",
            "sqr": lambda: f"{p[0]} * {p[0]}",
            "div": lambda: f"{p[0]} / {p[1]}",
            "rdivc": lambda: f"{c} / {p[0]}",
            "powc": lambda: f"{p[0]} ** {c}",
            "sqrt": lambda: f"math.sqrt({p[0]})",
            "exp": lambda: f"math.exp({p[0]})",
            "log": lambda: f"math.log({p[0]})",
            "chain": lambda: n.pfn.format(p[0]),
            "chainc": lambda: n.pfn.format(p[0]),
            "chain2": lambda: n.pfn.format(p[0], p[2]),
            "abs": lambda: f"abs({p[0]})",
            "select": lambda: f"{p[1]} if {p[0]} != 0.0 else {p[2]}",
            "pconst": lambda: n.pfn.format(p[0]),
            "setprimal": lambda: n.pfn.format(p[1]),
            "and": lambda: f"1.0 if ({p[0]} != 0.0 and {p[1]} != 0.0) else 0.0",
            "or": lambda: f"1.0 if ({p[0]} != 0.0 or {p[1]} != 0.0) else 0.0",
            "not": lambda: f"1.0 if {p[0]} == 0.0 else 0.0",
        }
        if op in ("sin", "sinh"):
            fs, fc = ("math.sin", "math.cos") if op == "sin" else ("math.sinh", "math.cosh")
            partner = self._partner[i]
            return self.loop([f"{u(i, '0')} = {fs}({p[0]})", f"{u(partner, '0')} = {fc}({p[0]})"], ind)
        if op in ("cos", "cosh"):
            return []
        if op == "cmp":
            sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}[n.const]
            return self.loop([f"{u(i, '0')} = 1.0 if {p[0]} {sym} {p[1]} else 0.0"], ind)
        if op == "pmax":
            e = p[0]
            for q in p[1:]:
                e = f"max({e}, {q})"
            return self.loop([f"{u(i, '0')} = {e}"], ind)
        return self.loop([f"{u(i, '0')} = {exprs[op]()}"], ind)

    # ---- order k ------------------------------------------------------------------------------------
    def _sum(self, i: int, init: str, lo: str, hi: str, term: str, final: str | None, ind: str,
             weight: str | None = None) -> list[str]:
        """``U[i,k] = final(init + sum_{j=lo}^{hi-1} weight * term)``."""
        u = self.u
        if not self.b:
            out = [ind + f"acc = {init}", ind + f"for j in range({lo}, {hi}):"]
            out.append(ind + f"    acc += {term if weight is None else weight + ' * ' + term}")
            out.append(ind + f"{u(i, 'k')} = {final.format('acc') if final else 'acc'}")
            return out
        out = [ind + "for m in range(M):", ind + f"    {u(i, 'k')} = {init}", ind + f"for j in range({lo}, {hi}):"]
        if weight is not None:
            out.append(ind + f"    w = {weight}")
            out += [ind + "    for m in range(M):", ind + f"        {u(i, 'k')} += w * {term}"]
        else:
            out += [ind + "    for m in range(M):", ind + f"        {u(i, 'k')} += {term}"]
        if final:
            out += [ind + "for m in range(M):", ind + f"    {u(i, 'k')} = {final.format(u(i, 'k'))}"]
        return out

    def order_k(self, n: Node, ind: str) -> list[str]:
        u = self.u
        i = n.idx
        a = [x.idx for x in n.args]
        op = n.op
        c = self.k(n) if n.idx in self.consts else None
        if op in ("time", "var", "const", "cmp", "and", "or", "not", "pconst", "pmax", "cos", "cosh"):
            return []
        lin = {
            "add": lambda: f"{u(a[0], 'k')} + {u(a[1], 'k')}",
            "sub": lambda: f"{u(a[0], 'k')} - {u(a[1], 'k')}",
            "neg": lambda: f"-{u(a[0], 'k')}",
            "addc": lambda: f"{u(a[0], 'k')}",
            "rsubc": lambda: f"-{u(a[0], 'k')}",
            "mulc": lambda: f"{u(a[0], 'k')} * {c}",
            "divc": lambda: f"{u(a[0], 'k')} / {c}",
            "chainc": lambda: f"{u(a[0], 'k')} * {c}",
            "setprimal": lambda: f"{u(a[0], 'k')}",
            "select": lambda: f"{u(a[1], 'k')} if {u(a[0], '0')} != 0.0 else {u(a[2], 'k')}",
            "abs": lambda: f"(1.0 if {u(a[0], '0')} > 0.0 else (-1.0 if {u(a[0], '0')} < 0.0 else 0.0)) * {u(a[0], 'k')}",
        }
        if op in lin:
            return self.loop([f"{u(i, 'k')} = {lin[op]()}"], ind)
        if op == "mul":
            return self._sum(i, "0.0", "0", "k + 1", f"{u(a[0], 'j')} * {u(a[1], 'k - j')}", None, ind)
        if op == "sqr":
            out = self._sum(i, "0.0", "0", "(k + 1) // 2", f"{u(a[0], 'j')} * {u(a[0], 'k - j')}", "2.0 * {0}", ind)
            out += [ind + "if k % 2 == 0:"]
            out += self.loop([f"{u(i, 'k')} += {u(a[0], 'k // 2')} * {u(a[0], 'k // 2')}"], ind + "    ")
            return out
        if op == "div":
            return self._sum(i, u(a[0], "k"), "0", "k", f"-{u(i, 'j')} * {u(a[1], 'k - j')}", "{0} / " + u(a[1], "0"), ind)
        if op == "rdivc":
            return self._sum(i, "0.0", "0", "k", f"-{u(i, 'j')} * {u(a[0], 'k - j')}", "{0} / " + u(a[0], "0"), ind)
        if op == "powc":
            return self._sum(i, "0.0", "1", "k + 1", f"{u(a[0], 'j')} * {u(i, 'k - j')}", "{0} / " + u(a[0], "0"), ind,
                             weight=f"(({c} + 1.0) * j / k - 1.0)")
        if op == "sqrt":
            return self._sum(i, u(a[0], "k"), "1", "k", f"-{u(i, 'j')} * {u(i, 'k - j')}", "{0} / (2.0 * " + u(i, "0") + ")", ind)
        if op == "exp":
            return self._sum(i, "0.0", "1", "k + 1", f"{u(a[0], 'j')} * {u(i, 'k - j')}", "{0} / k", ind, weight="j")
        if op == "chain":
            return self._sum(i, "0.0", "1", "k + 1", f"{u(a[0], 'j')} * {u(a[1], 'k - j')}", "{0} / k", ind, weight="j")
        if op == "log":
            return self._sum(i, "0.0", "1", "k", f"{u(i, 'j')} * {u(a[0], 'k - j')}",
                             f"({u(a[0], 'k')} - {{0}} / k) / {u(a[0], '0')}", ind, weight="j")
        if op == "chain2":
            out = self._sum(i, "0.0", "1", "k + 1", f"{u(a[0], 'j')} * {u(a[1], 'k - j')}", None, ind, weight="j")
            out += self._sum(i, u(i, "k"), "1", "k + 1", f"{u(a[2], 'j')} * {u(a[3], 'k - j')}", "{0} / k", ind, weight="j")
            return out
        if op in ("sin", "sinh"):
            s, cidx = i, self._partner[i]
            sign = "-" if op == "sin" else ""
            out = self._sum(s, "0.0", "1", "k + 1", f"{u(a[0], 'j')} * {u(cidx, 'k - j')}", "{0} / k", ind, weight="j")
            out += self._sum(cidx, "0.0", "1", "k + 1", f"{u(a[0], 'j')} * {u(s, 'k - j')}", sign + "{0} / k", ind, weight="j")
            return out
        raise AssertionError(f"no code for tape node {op}")  # pragma: no cover


_CONST_OPS = ("const", "addc", "rsubc", "mulc", "divc", "rdivc", "powc", "chainc")


def constants(tr: TraceResult) -> tuple[dict[int, int], list[float]]:
    """The tape's numeric constants: node index -> position in ``K``, and the values ``K`` (outputs last)."""
    pos: dict[int, int] = {}
    vals: list[float] = []
    for n in tr.tape.nodes:
        if n.op in _CONST_OPS:
            pos[n.idx] = len(vals)
            vals.append(float(n.const))
    for out in tr.outputs:
        if not isinstance(out, Node):
            vals.append(float(out))
    return pos, vals


def _coef_source(tr: TraceResult, batched: bool) -> list[str]:
    pos, vals = constants(tr)
    em = _Emitter(batched, pos)
    em._partner = {}
    for n in tr.tape.nodes:
        if n.op in ("cos", "cosh"):
            em._partner[n.args[1].idx] = n.idx
    name = "coefB" if batched else "coef1"
    args = "t, Y, order, U, M, K" if batched else "t, y, order, U, K"
    L = [f"@numba.njit(cache=CACHE, fastmath=False, error_model='numpy', nogil=True)", f"def {name}({args}):"]
    for n in tr.tape.nodes:
        L += em.primal(n, "    ")
    # c_1 = f_0 (constant outputs are the last entries of K)
    j = len(pos)
    for i, out in enumerate(tr.outputs):
        vi = tr.states[i].idx
        if isinstance(out, Node):
            rhs = em.u(out.idx, "0")
        else:
            rhs = f"K[{j}]"
            j += 1
        L += em.loop([f"{em.u(vi, '1')} = {rhs}"], "    ")
    L.append("    for k in range(1, order):")
    body: list[str] = []
    for n in tr.tape.nodes:
        body += em.order_k(n, "        ")
    for i, out in enumerate(tr.outputs):
        if isinstance(out, Node):
            vi = tr.states[i].idx
            body += em.loop([f"{em.u(vi, 'k + 1')} = {em.u(out.idx, 'k')} / (k + 1)"], "        ")
    L += body or ["        pass"]
    L.append("    return 0")
    return L


# --------------------------------------------------------------------------------------------------
# the stepping loops (the same text for every f; NS, NV0 = number and first index of state nodes)
# --------------------------------------------------------------------------------------------------
LOOPS = r'''
@numba.njit(cache=CACHE, error_model='numpy', nogil=True, inline='always')
def _rho(xmax, n1, n2, order, rule, rtol, atol):
    """Step size from max|c_0|, max|c_p|, max|c_{p-1}|: rule 1 = Jorba-Zou (tolerances), 2 = heyoka (order from tol)."""
    p = order
    if rule == 2:
        tol = min(rtol, atol) if (rtol > 0.0 and atol > 0.0) else max(rtol, atol)
        scale = max(atol, rtol * xmax) / tol
        fac = math.exp(-2.0) * (math.exp(-0.7 / (p - 1)) if p > 1 else 0.9)
    else:
        scale = atol + rtol * xmax
        fac = math.exp(-0.7 / (p - 1)) if p > 1 else 0.9
    h = math.inf
    if n1 > 0.0:
        h = min(h, (scale / n1) ** (1.0 / p))
    if p > 1 and n2 > 0.0:
        h = min(h, (scale / n2) ** (1.0 / (p - 1)))
    return h * fac


@numba.njit(cache=CACHE, error_model='numpy', nogil=True)
def _step_size1(U, order, rule, rtol, atol):
    xmax = 0.0
    n1 = 0.0
    n2 = 0.0
    for i in range(NS):
        xmax = max(xmax, abs(U[NV0 + i, 0]))
        n1 = max(n1, abs(U[NV0 + i, order]))
        if order > 1:
            n2 = max(n2, abs(U[NV0 + i, order - 1]))
    return _rho(xmax, n1, n2, order, rule, rtol, atol)


@numba.njit(cache=CACHE, error_model='numpy', nogil=True)
def _step_sizeB(U, order, rule, rtol, atol, s):
    xmax = 0.0
    n1 = 0.0
    n2 = 0.0
    for i in range(NS):
        xmax = max(xmax, abs(U[NV0 + i, 0, s]))
        n1 = max(n1, abs(U[NV0 + i, order, s]))
        if order > 1:
            n2 = max(n2, abs(U[NV0 + i, order - 1, s]))
    return _rho(xmax, n1, n2, order, rule, rtol, atol)


@numba.njit(cache=CACHE, error_model='numpy', nogil=True)
def adaptive1(t, t1, y, order, rule, rtol, atol, h_cap, max_steps, n, U, ts, ys, cs, hs, check, chunk, K, dense):
    """Steps from (t, y) (step n) toward t1; stops when done, out of buffer, after `chunk` steps or on failure.

    Returns (n, status): 0 done, 1 buffer full / chunk, 2 max_steps, 3 step-size underflow,
    4 non-finite coefficients, 5 non-finite state.  ts[n], ys[n] hold the start of step n.
    """
    direction = 1.0 if t1 > t else -1.0
    cap = hs.shape[0]
    todo = chunk
    while direction * (t1 - t) > 0.0:
        if n >= max_steps:
            return n, 2
        if n >= cap or todo == 0:
            return n, 1
        coef1(t, y, order, U, K)
        if check:
            for i in range(NS):
                for k in range(order + 1):
                    if not math.isfinite(U[NV0 + i, k]):
                        return n, 4
        h = min(_step_size1(U, order, rule, rtol, atol), h_cap)
        remaining = abs(t1 - t)
        if h >= remaining or remaining - h < 1e-12 * max(1.0, abs(t1)):
            tn = t1
            h = remaining
        else:
            if not (h > 1e-14 * max(1.0, abs(t))):
                hs[n] = h
                return n, 3
            tn = t + direction * h
        s = tn - t
        for i in range(NS):
            acc = U[NV0 + i, order]
            for k in range(order - 1, -1, -1):
                acc = acc * s + U[NV0 + i, k]
            if dense:
                for k in range(order + 1):
                    cs[n, k, i] = U[NV0 + i, k]
            ys[n + 1, i] = acc
            y[i] = acc
        if check:
            for i in range(NS):
                if not math.isfinite(y[i]):
                    hs[n] = h
                    ts[n + 1] = tn
                    return n + 1, 5
        hs[n] = h
        ts[n + 1] = tn
        t = tn
        n += 1
        todo -= 1
    return n, 0


@numba.njit(cache=CACHE, error_model='numpy', nogil=True)
def fixed1(grid, y, order, n, U, ys, cs, dense, check, K):
    """Fixed grid: steps n .. len(grid)-2.  Returns (n, status) as adaptive1 (4/5 on non-finite values)."""
    N = grid.shape[0] - 1
    while n < N:
        t = grid[n]
        coef1(t, y, order, U, K)
        if check:
            for i in range(NS):
                for k in range(order + 1):
                    if not math.isfinite(U[NV0 + i, k]):
                        return n, 4
        s = grid[n + 1] - t
        for i in range(NS):
            acc = U[NV0 + i, order]
            for k in range(order - 1, -1, -1):
                acc = acc * s + U[NV0 + i, k]
            if dense:
                for k in range(order + 1):
                    cs[n, k, i] = U[NV0 + i, k]
            ys[n + 1, i] = acc
            y[i] = acc
        n += 1
        if check:
            for i in range(NS):
                if not math.isfinite(y[i]):
                    return n, 5
    return n, 0


@numba.njit(cache=CACHE, error_model='numpy', nogil=True)
def fixedB(grid, Y, order, n, U, ys, cs, dense, check, bad, K):
    """Fixed grid for M members at once: Y [M, NS]; ys [N+1, M, NS]; cs [N, order+1, M, NS]."""
    N = grid.shape[0] - 1
    M = Y.shape[0]
    tt = np.empty(M)
    while n < N:
        for m in range(M):
            tt[m] = grid[n]
        coefB(tt, Y, order, U, M, K)
        if check:
            for i in range(NS):
                for k in range(order + 1):
                    for m in range(M):
                        if not math.isfinite(U[NV0 + i, k, m]):
                            bad[0] = m
                            return n, 4
        s = grid[n + 1] - grid[n]
        for i in range(NS):
            for m in range(M):
                acc = U[NV0 + i, order, m]
                for k in range(order - 1, -1, -1):
                    acc = acc * s + U[NV0 + i, k, m]
                Y[m, i] = acc
                ys[n + 1, m, i] = acc
            if dense:
                for k in range(order + 1):
                    for m in range(M):
                        cs[n, k, m, i] = U[NV0 + i, k, m]
        n += 1
        if check:
            for i in range(NS):
                for m in range(M):
                    if not math.isfinite(Y[m, i]):
                        bad[0] = m
                        return n, 5
    return n, 0


@numba.njit(cache=CACHE, error_model='numpy', nogil=True)
def adaptiveB(t1, order, rule, rtol, atol, h_cap, max_steps, shared, U, slot_member, n_active, T, Y, steps,
              rec_m, rec_t, rec_h, rec_c, rec_y, nrec, check, chunk, hbuf, fail, K, dense):
    """Per-trajectory (or shared) adaptive steps for a batch, in lockstep over the active members.

    ``slot_member[s]`` is the member in slot s < n_active; ``T[s]``, ``Y[s]`` its time and state.  Each
    lockstep iteration takes one step of every active member with its own step size (``shared``: the
    smallest) and appends one record (member, start time, h, coefficients, end state) per member;
    finished members are swapped out of the active slots (dropped from the computation).
    Returns (n_active, nrec, status) with status as adaptive1; ``fail`` = [member, step] on failure.
    """
    cap = rec_m.shape[0]
    todo = chunk
    direction = 1.0 if t1 > T[0] else -1.0
    while n_active > 0:
        if nrec + n_active > cap or todo == 0:
            return n_active, nrec, 1
        for s in range(n_active):
            if steps[slot_member[s]] >= max_steps:
                fail[0] = slot_member[s]
                fail[1] = steps[slot_member[s]]
                return n_active, nrec, 2
        coefB(T, Y, order, U, n_active, K)
        if check:
            for i in range(NS):
                for k in range(order + 1):
                    for s in range(n_active):
                        if not math.isfinite(U[NV0 + i, k, s]):
                            fail[0] = slot_member[s]
                            fail[1] = steps[slot_member[s]]
                            return n_active, nrec, 4
        hmin = math.inf
        for s in range(n_active):
            h = min(_step_sizeB(U, order, rule, rtol, atol, s), h_cap)
            hbuf[s] = h
            hmin = min(hmin, h)
        if shared:
            for s in range(n_active):
                hbuf[s] = hmin
        for s in range(n_active):
            t = T[s]
            h = hbuf[s]
            remaining = abs(t1 - t)
            if h >= remaining or remaining - h < 1e-12 * max(1.0, abs(t1)):
                tn = t1
                h = remaining
            else:
                if not (h > 1e-14 * max(1.0, abs(t))):
                    fail[0] = slot_member[s]
                    fail[1] = steps[slot_member[s]]
                    hbuf[0] = h
                    T[0] = t
                    return n_active, nrec, 3
                tn = t + direction * h
            hbuf[s] = tn - t
            rec_m[nrec + s] = slot_member[s]
            rec_t[nrec + s] = t
            rec_h[nrec + s] = h
            T[s] = tn
        for i in range(NS):
            for s in range(n_active):
                sv = hbuf[s]
                acc = U[NV0 + i, order, s]
                for k in range(order - 1, -1, -1):
                    acc = acc * sv + U[NV0 + i, k, s]
                Y[s, i] = acc
                rec_y[nrec + s, i] = acc
            if dense:
                for k in range(order + 1):
                    for s in range(n_active):
                        rec_c[nrec + s, k, i] = U[NV0 + i, k, s]
        nrec += n_active
        for s in range(n_active):
            steps[slot_member[s]] += 1
        if check:
            for s in range(n_active):
                for i in range(NS):
                    if not math.isfinite(Y[s, i]):
                        fail[0] = slot_member[s]
                        fail[1] = steps[slot_member[s]]
                        return n_active, nrec, 5
        # drop finished members: swap the last active slot into their place
        s = 0
        while s < n_active:
            if not (direction * (t1 - T[s]) > 0.0):
                last = n_active - 1
                if s != last:
                    slot_member[s], slot_member[last] = slot_member[last], slot_member[s]
                    T[s], T[last] = T[last], T[s]
                    for i in range(NS):
                        Y[s, i], Y[last, i] = Y[last, i], Y[s, i]
                n_active -= 1
            else:
                s += 1
        todo -= 1
    return n_active, nrec, 0
'''


def generate(tr: TraceResult) -> str:
    """The module text (coefficient functions + loops) for a traced right-hand side."""
    nv0 = tr.states[0].idx if tr.states else 1
    head = [
        f"# generated by taylorsolve.coefficients.codegen for a tape of {len(tr)} nodes, event shape {tr.event_shape}",
        "import math",
        "import numba",
        "import numpy as np",
        "CACHE = __CACHE__",
        f"NS = {tr.n_state}",
        f"NV0 = {nv0}",
        f"NNODES = {len(tr)}",
        "",
    ]
    body = _coef_source(tr, False) + [""] + _coef_source(tr, True)
    return "\n".join(head + body) + "\n" + LOOPS


_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}
_BY_STRUCTURE: dict[Any, tuple[Any, bool]] = {}
_COMPILED: set[tuple[str, str, str]] = set()


def structure_key(tr: TraceResult) -> tuple:
    """What the generated code depends on: the nodes' operations and wiring (not the constants' values)."""
    nodes = tuple((n.op, tuple(a.idx for a in n.args), n.pfn, n.const if n.op in ("var", "cmp") else None)
                  for n in tr.tape.nodes)
    outs = tuple(o.idx if isinstance(o, Node) else None for o in tr.outputs)
    return nodes, outs, tuple(s.idx for s in tr.states)


def module_for(tr: TraceResult) -> tuple[Any, bool]:
    """The compiled module of ``tr``'s structure (generated and imported once per process)."""
    key = structure_key(tr)
    hit = _BY_STRUCTURE.get(key)
    if hit is None:
        hit = _BY_STRUCTURE[key] = load_module(generate(tr))
    return hit


def load_module(source: str) -> tuple[Any, bool]:
    """Import the generated module (from the disk cache directory when writable); returns (module, disk_cached)."""
    global _NUMBA_VERSION
    import numba

    if _NUMBA_VERSION is None:
        _NUMBA_VERSION = numba.__version__
    digest = hashlib.sha256((source + _NUMBA_VERSION + sys.version).encode()).hexdigest()[:20]
    with _LOCK:
        mod = _LOADED.get(digest)
        if mod is not None:
            return mod, True
        name = f"taylorsolve_compiled_{digest}"
        d = cache_dir()
        if d is not None:
            path = d / f"{name}.py"
            if not path.exists():
                fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
                with os.fdopen(fd, "w") as fh:
                    fh.write(source.replace("__CACHE__", "True"))
                os.replace(tmp, path)  # atomic: concurrent processes see the whole file or none
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod  # numba's cache unpickles references to the module by name
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
            disk = True
        else:  # no writable cache directory: compile in memory
            import types

            mod = types.ModuleType(name)
            sys.modules[name] = mod
            exec(compile(source.replace("__CACHE__", "False"), f"<{name}>", "exec"), mod.__dict__)
            disk = False
        _LOADED[digest] = mod
        return mod, disk


def compile_functions(mod: Any, names: list[str], dtype: str) -> float:
    """Compile (or load from numba's cache) the named functions for ``dtype`` ("float64"/"float32"); seconds spent."""
    from numba import types as nt

    ft = getattr(nt, dtype)
    f64 = nt.float64
    i64 = nt.int64
    b1 = nt.boolean
    a1 = nt.Array(ft, 1, "C")
    a2 = nt.Array(ft, 2, "C")
    a3 = nt.Array(ft, 3, "C")
    a4 = nt.Array(ft, 4, "C")
    d1 = nt.Array(f64, 1, "C")
    i1 = nt.Array(i64, 1, "C")
    sigs = {
        "coef1": (f64, a1, i64, a2, d1),
        "coefB": (d1, a2, i64, a3, i64, d1),
        "adaptive1": (f64, f64, a1, i64, i64, f64, f64, f64, i64, i64, a2, d1, a2, a3, d1, b1, i64, d1, b1),
        "fixed1": (d1, a1, i64, i64, a2, a2, a3, b1, b1, d1),
        "fixedB": (d1, a2, i64, i64, a3, a3, a4, b1, b1, i1, d1),
        "adaptiveB": (f64, i64, i64, f64, f64, f64, i64, b1, a3, i1, i64, d1, a2, i1, i1, d1, d1, a3, a2, i64, b1,
                      i64, d1, i1, d1, b1),
    }
    start = time.perf_counter()
    for n in names:
        key = (mod.__name__, dtype, n)
        if key not in _COMPILED:
            getattr(mod, n).compile(sigs[n])  # compiles, or loads numba's on-disk cache
            _COMPILED.add(key)
    return time.perf_counter() - start
