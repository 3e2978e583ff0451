"""The compiled stepping loops, written once for every ``f``: they call the generated coefficient function.

Each loop takes the per-``f`` straight-line function ``coef(t, y, order, U, K)`` (see
:mod:`taylorsolve.coefficients.codegen`) as a numba first-class function, so the loops are compiled
once per dtype and cached on disk by numba, and a new ``f`` only compiles its own coefficient code.
Calling through the function pointer costs ~0.1 us a step (measured), against ~1 us for Kepler's
coefficients at order 15.

``U[node, k]`` is the coefficient work array of the tape; the state nodes are ``1 .. NS`` (node 0 is
``t``), so ``U[1 + i, k]`` is coefficient ``k`` of state component ``i``.

Step-size rules (``rule``): 1 = Jorba-Zou with the tolerances, 2 = heyoka (order from the tolerance);
see :mod:`taylorsolve.adaptive`.  Status codes: 0 done, 1 out of buffer (or a progress chunk), 2
``max_steps`` reached, 3 step-size underflow, 4 non-finite coefficients, 5 non-finite state.
"""
from __future__ import annotations

import math
import threading

__all__ = ["get", "coef_signature"]


def _rho(xmax, n1, n2, order, rule, rtol, atol):
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


def _step_size(C, ns, order, rule, rtol, atol):
    """``C[k, i]``: coefficient k of component i (one member)."""
    xmax = 0.0
    n1 = 0.0
    n2 = 0.0
    for i in range(ns):
        xmax = max(xmax, abs(C[0, i]))
        n1 = max(n1, abs(C[order, i]))
        if order > 1:
            n2 = max(n2, abs(C[order - 1, i]))
    return _rho(xmax, n1, n2, order, rule, rtol, atol)


def _load(U, C, ns, order):
    for k in range(order + 1):
        for i in range(ns):
            C[k, i] = U[1 + i, k]


def _finite(C, ns, order):
    for k in range(order + 1):
        for i in range(ns):
            if not math.isfinite(C[k, i]):
                return False
    return True


def _advance(C, ns, order, s, y, ylo):
    """``y += sum_{k>=1} c_k s^k`` with compensated summation: ``ylo`` carries the bits the sum drops.

    The increment is small against ``y`` over most steps, so a plain ``c_0 + ...`` loses up to half an
    ulp of ``y`` per step; carrying the rounding error (Fast2Sum, |y| >= |increment|) keeps the state
    accurate to far below an ulp over thousands of steps (the coefficients use ``y`` itself).
    """
    for i in range(ns):
        acc = C[order, i]
        for k in range(order - 1, 0, -1):
            acc = acc * s + C[k, i]
        corr = acc * s + ylo[i]
        hi = y[i]
        new = hi + corr
        if abs(hi) >= abs(corr):
            ylo[i] = corr - (new - hi)
        else:
            ylo[i] = hi - (new - corr)
        y[i] = new


def _adaptive1(coef, t, t1, y, order, rule, rtol, atol, h_cap, h_min, max_steps, n, U, K, ts, ys, cs, hs, check, chunk,
               dense, Cw, ylo):
    """One trajectory from (t, y) at step n toward t1 (ts[n], ys[n] hold the start of step n)."""
    ns = y.shape[0]
    direction = 1.0 if t1 > t else -1.0
    cap = hs.shape[0]
    todo = chunk
    while direction * (t1 - t) > 0.0:
        if n >= max_steps:
            return n, 2
        if n >= cap or todo == 0:
            return n, 1
        coef(t, y, order, U, K)
        C = cs[n] if dense else Cw
        _load(U, C, ns, order)
        if check and not _finite(C, ns, order):
            return n, 4
        h = min(_step_size(C, ns, order, rule, rtol, atol), h_cap)
        remaining = abs(t1 - t)
        if h >= remaining or remaining - h < 1e-12 * max(1.0, abs(t1)):
            tn = t1
            h = remaining
        else:
            if not (h > 1e-14 * max(1.0, abs(t))) or h < h_min:
                hs[n] = h
                return n, 3
            tn = t + direction * h
        _advance(C, ns, order, tn - t, y, ylo)
        for i in range(ns):
            ys[n + 1, i] = y[i]
        hs[n] = h
        ts[n + 1] = tn
        t = tn
        n += 1
        todo -= 1
        if check:
            for i in range(ns):
                if not math.isfinite(y[i]):
                    return n, 5
    return n, 0


def _fixed(coef, grid, Y, order, n, U, K, ys, cs, dense, check, bad, Cw, Ylo):
    """A fixed grid for M members (``Y [M, NS]``); ``ys [N+1, M, NS]``, ``cs [N, order+1, M, NS]``."""
    N = grid.shape[0] - 1
    M = Y.shape[0]
    ns = Y.shape[1]
    while n < N:
        t = grid[n]
        s = grid[n + 1] - t
        for m in range(M):
            coef(t, Y[m], order, U, K)
            _load(U, Cw, ns, order)
            if check and not _finite(Cw, ns, order):
                bad[0] = m
                return n, 4
            if dense:
                for k in range(order + 1):
                    for i in range(ns):
                        cs[n, k, m, i] = Cw[k, i]
            _advance(Cw, ns, order, s, Y[m], Ylo[m])
            for i in range(ns):
                ys[n + 1, m, i] = Y[m, i]
                if check and not math.isfinite(Y[m, i]):
                    bad[0] = m
                    return n + 1, 5
        n += 1
    return n, 0


def _adaptiveB(coef, t1, order, rule, rtol, atol, h_cap, h_min, max_steps, shared, U, K, slot_member, n_active, T, Y,
               steps,
               rec_m, rec_t, rec_h, rec_c, rec_y, nrec, check, chunk, hbuf, fail, dense, Cb, Ylo):
    """Per-trajectory (or shared) adaptive steps for a batch, in lockstep over the active members.

    ``slot_member[s]`` is the member in slot s < n_active; ``T[s]``, ``Y[s]`` its time and state.  Each
    lockstep iteration takes one step of every active member with its own step size (``shared``: the
    smallest) and appends one record (member, start time, h, coefficients, end state) per member;
    finished members are swapped out of the active slots (dropped from the computation).
    Returns (n_active, nrec, status); ``fail`` = [member, step] on failure.
    """
    ns = Y.shape[1]
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
        hmin = math.inf
        for s in range(n_active):
            coef(T[s], Y[s], order, U, K)
            C = rec_c[nrec + s] if dense else Cb[s]
            _load(U, C, ns, order)
            if check and not _finite(C, ns, order):
                fail[0] = slot_member[s]
                fail[1] = steps[slot_member[s]]
                return n_active, nrec, 4
            h = min(_step_size(C, ns, order, rule, rtol, atol), h_cap)
            hbuf[s] = h
            hmin = min(hmin, h)
        for s in range(n_active):
            t = T[s]
            h = hmin if shared else hbuf[s]
            remaining = abs(t1 - t)
            if h >= remaining or remaining - h < 1e-12 * max(1.0, abs(t1)):
                tn = t1
                h = remaining
            else:
                if not (h > 1e-14 * max(1.0, abs(t))) or h < h_min:
                    fail[0] = slot_member[s]
                    fail[1] = steps[slot_member[s]]
                    hbuf[0] = h
                    T[0] = t
                    return n_active, nrec, 3
                tn = t + direction * h
            C = rec_c[nrec + s] if dense else Cb[s]
            _advance(C, ns, order, tn - t, Y[s], Ylo[s])
            rec_m[nrec + s] = slot_member[s]
            rec_t[nrec + s] = t
            rec_h[nrec + s] = h
            for i in range(ns):
                rec_y[nrec + s, i] = Y[s, i]
            T[s] = tn
            steps[slot_member[s]] += 1
        nrec += n_active
        if check:
            for s in range(n_active):
                for i in range(ns):
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
                    for i in range(ns):
                        Y[s, i], Y[last, i] = Y[last, i], Y[s, i]
                        Ylo[s, i], Ylo[last, i] = Ylo[last, i], Ylo[s, i]
                n_active -= 1
            else:
                s += 1
        todo -= 1
    return n_active, nrec, 0


def _coefficients(coef, t, Y, order, U, K, out):
    """``out [M, order+1, NS]``: the coefficients of every member of ``Y`` at time ``t``."""
    M = Y.shape[0]
    ns = Y.shape[1]
    for m in range(M):
        coef(t, Y[m], order, U, K)
        _load(U, out[m], ns, order)
    return 0


_PY = {"adaptive1": _adaptive1, "fixed": _fixed, "adaptiveB": _adaptiveB, "coefficients": _coefficients}
_HELPERS = (_rho, _step_size, _load, _finite, _advance)
_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
_JITTED = False


def coef_signature(dtype: str):
    """numba signature of the generated ``coef(t, y, order, U, K) -> int64`` for ``dtype``."""
    from numba import types as nt

    ft = getattr(nt, dtype)
    return nt.int64(nt.float64, nt.Array(ft, 1, "C"), nt.int64, nt.Array(ft, 2, "C"), nt.Array(nt.float64, 1, "C"))


def _signature(name: str, dtype: str):
    from numba import types as nt

    ft = getattr(nt, dtype)
    F = nt.FunctionType(coef_signature(dtype))
    f64, i64, b1 = nt.float64, nt.int64, nt.boolean
    a1, a2, a3, a4 = (nt.Array(ft, d, "C") for d in (1, 2, 3, 4))
    d1 = nt.Array(f64, 1, "C")
    i1 = nt.Array(i64, 1, "C")
    tup2 = nt.UniTuple(i64, 2)
    tup3 = nt.UniTuple(i64, 3)
    sigs = {
        "adaptive1": tup2(F, f64, f64, a1, i64, i64, f64, f64, f64, f64, i64, i64, a2, d1, d1, a2, a3, d1, b1, i64, b1, a2,
                          a1),
        "fixed": tup2(F, d1, a2, i64, i64, a2, d1, a3, a4, b1, b1, i1, a2, a2),
        "adaptiveB": tup3(F, f64, i64, i64, f64, f64, f64, f64, i64, b1, a2, d1, i1, i64, d1, a2, i1, i1, d1, d1, a3, a2,
                          i64, b1, i64, d1, i1, b1, a3, a2),
        "coefficients": i64(F, f64, a2, i64, a2, d1, a3),
    }
    return sigs[name]


def get(name: str, dtype: str):
    """The compiled loop ``name`` for ``dtype`` ("float64"/"float32"), compiled once per process or loaded from
    numba's on-disk cache."""
    key = (name, dtype)
    fn = _CACHE.get(key)
    if fn is None:
        import numba

        global _JITTED
        with _LOCK:
            if not _JITTED:  # the helpers are inlined into the loops
                g = globals()
                for h in _HELPERS:
                    g[h.__name__] = numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")(h)
                _JITTED = True
            fn = _CACHE.get(key)
            if fn is None:
                fn = numba.njit(_signature(name, dtype), cache=True, error_model="numpy", nogil=True)(_PY[name])
                _CACHE[key] = fn
    return fn
