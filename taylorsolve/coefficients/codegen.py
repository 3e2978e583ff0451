r"""Straight-line code for a traced tape, compiled with numba.

From a :class:`~taylorsolve.coefficients.tape.TraceResult` this module writes a Python module with one
function, ``coef1(t, y, order, U, K)``: the Taylor coefficients of one trajectory.  ``U[node, k]``
holds coefficient ``k`` of every tape node; the code is one statement block per node for the primal,
then a loop over the order ``k = 1 .. p-1`` whose body is again one block per node (the recurrences
of :mod:`taylorsolve.coefficients.tape`) followed by the ODE recursion ``c_{k+1} = f_k / (k+1)``.  One
code serves every order (the order is an argument), and the tape's numeric constants are read from
``K`` instead of being written into the code, so the code depends only on the *structure* of ``f``.

The stepping loops are not generated: they are written once in :mod:`taylorsolve.coefficients._loops`
and receive ``coef1`` as a first-class function.

Why this split (measured on this project's shared 2-core machine, numba 0.68; see the README):
compiling the straight-line ``coef1`` takes 0.3-1.5 s for Kepler-sized systems and grows with the tape
(~6 s for a 54-node tape under load), a batched (SIMD over members) variant 4-6x longer and the loops
another ~1 s each, so only ``coef1`` is compiled per ``f``.  A whole step costs ~0.9 us (Kepler, order
15; a prototype opcode interpreter compiled once took ~2.5 us for the coefficients alone) against
3-5 ms for the interpreted jets.  Compile
time is reported apart (``Solution.stats.compile_time``) and cached: in memory per structure, and on
disk (numba ``cache=True`` on the generated module, written to ``$TAYLORSOLVE_CACHE_DIR`` or
``~/.cache/taylorsolve``), so a second process loads it in milliseconds.
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

__all__ = ["generate", "load_module", "cache_dir", "module_for", "compile_coef", "constants"]

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
    """Writes the statements of one node (``U[i, k]``: coefficient ``k`` of node ``i``).

    Constants of the tape are not written into the code: they are read from ``K`` (``K[j]``), so the
    code depends only on the structure of ``f`` and a change of a captured constant reuses it.
    """

    def __init__(self, consts: dict[int, int], partner: dict[int, int]) -> None:
        self.consts = consts  # node index -> position in K
        self._partner = partner  # sin/sinh node -> its cos/cosh node

    def k(self, n: Node) -> str:
        return f"K[{self.consts[n.idx]}]"

    def u(self, i: int, k: str) -> str:
        return f"U[{i}, {k}]"

    def loop(self, body: list[str], ind: str) -> list[str]:
        return [ind + s for s in body]

    # ---- order 0 -----------------------------------------------------------------------------------
    def primal(self, n: Node, ind: str) -> list[str]:
        u = self.u
        i = n.idx
        a = [x.idx for x in n.args]
        p = [u(j, "0") for j in a]
        op = n.op
        c = self.k(n) if n.idx in self.consts else None
        if op == "time":
            return self.loop([f"{u(i, '0')} = t", f"{u(i, '1')} = 1.0"], ind)
        if op == "var":
            return self.loop([f"{u(i, '0')} = y[{n.const}]"], ind)
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
        out = [ind + f"acc = {init}", ind + f"for j in range({lo}, {hi}):"]
        out.append(ind + f"    acc += {term if weight is None else weight + ' * ' + term}")
        out.append(ind + f"{self.u(i, 'k')} = {final.format('acc') if final else 'acc'}")
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


def _coef_source(tr: TraceResult) -> list[str]:
    pos, vals = constants(tr)
    em = _Emitter(pos, {n.args[1].idx: n.idx for n in tr.tape.nodes if n.op in ("cos", "cosh")})
    name = "coef1"
    args = "t, y, order, U, K"
    L = ["@numba.njit(cache=CACHE, fastmath=False, error_model='numpy', nogil=True)", f"def {name}({args}):"]
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


def generate(tr: TraceResult) -> str:
    """The module text (the coefficient function) for a traced right-hand side."""
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
    return "\n".join(head + _coef_source(tr)) + "\n"


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


def compile_coef(mod: Any, dtype: str) -> float:
    """Compile (or load from numba's cache) ``coef1`` for ``dtype`` ("float64"/"float32"); seconds spent."""
    from ._loops import coef_signature

    key = (mod.__name__, dtype, "coef1")
    if key in _COMPILED:
        return 0.0
    start = time.perf_counter()
    mod.coef1.compile(coef_signature(dtype))
    _COMPILED.add(key)
    return time.perf_counter() - start
