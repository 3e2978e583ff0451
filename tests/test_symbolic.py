"""The symbolic (SymPy) coefficient backend: agreement with autodiff, closed forms, batching, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import taylorsolve.math as tm
from taylorsolve._symbolic_array import SymbolicArray
from taylorsolve.coefficients import available_backends, get_backend
from taylorsolve.coefficients.symbolic import SymbolicBackend, clear_cache, derive
from taylorsolve.errors import SymbolicBackendError, TaylorSolveError

F64 = torch.float64


def _assert_coeffs_close(got, ref, rtol=1e-12):
    assert len(got) == len(ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        scale = max(1.0, float(b.abs().max()))
        err = float((a - b).abs().max())
        assert err <= rtol * scale, f"order {k}: max abs error {err:.3e} (scale {scale:.3e})"


def _reference(f, t, y, order):
    """Coefficients by the autodiff backend, or by nested JVPs if it is unavailable."""
    if "autodiff" in available_backends():
        return get_backend("autodiff").coefficients(f, t, y, order)
    derivs = [lambda t_, y_: f(t_, y_)]
    for _ in range(order - 1):
        prev = derivs[-1]
        derivs.append(
            (lambda g: lambda t_, y_: torch.func.jvp(g, (t_, y_), (torch.ones_like(t_), f(t_, y_)))[1])(prev)
        )
    return [y] + [d(t, y) / math.factorial(k) for k, d in enumerate(derivs, 1)]


# ---- a zoo of right-hand sides written once with plain torch calls --------------------------------
def harmonic(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def logistic(t, y):
    return 1.3 * y * (1 - y)


def pendulum(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)


def van_der_pol(t, y):
    mu = 1.5
    return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)


def lotka_volterra(t, y):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([0.7 * x - 1.1 * x * z, -0.4 * z + 0.9 * x * z], dim=-1)


def time_dependent(t, y):
    return torch.cos(t) * y


def smooth_zoo(t, y):
    a = torch.softmax(y, dim=-1)
    b = torch.logsumexp(y, dim=-1, keepdim=True)
    return torch.exp(-y**2) * torch.tanh(y) + torch.sigmoid(y) * a - 0.3 * b + torch.sin(t) * torch.sqrt(1 + y**2)


def exp_tanh_sigmoid(t, y):
    return torch.stack([torch.exp(-y[..., 1]) - torch.tanh(y[..., 0]), torch.sigmoid(y[..., 0] * y[..., 1])], dim=-1)


W = torch.tensor([[0.2, -0.5], [0.4, 0.3]], dtype=F64)


def linear_layer(t, y):
    return torch.tanh(y @ W.T + 0.1) - 0.5 * y


def with_math_module(t, y):
    return tm.stack([tm.pow(y[..., 1], 2) - tm.log(1 + y[..., 0] ** 2), tm.cos(y[..., 0] * t)], dim=-1)


# (name, f, states, order): expression swell makes softmax/tanh-heavy right-hand sides expensive at
# order 5 (about 10x more SymPy operations per order), so those run at order 3-4.
ZOO = [
    ("harmonic", harmonic, [[1.0, 0.0], [0.3, -0.8]], 5),
    ("logistic", logistic, [[0.2], [0.7]], 5),
    ("pendulum", pendulum, [[0.4, 0.1], [2.0, -0.3]], 5),
    ("van_der_pol", van_der_pol, [[1.2, -0.4], [-0.5, 0.9]], 5),
    ("lotka_volterra", lotka_volterra, [[1.0, 0.5], [0.3, 1.7]], 5),
    ("time_dependent", time_dependent, [[0.5, -1.0], [2.0, 0.1]], 5),
    ("exp_tanh_sigmoid", exp_tanh_sigmoid, [[0.3, -0.2], [1.0, 0.4]], 4),
    ("smooth_zoo_softmax", smooth_zoo, [[0.3, -0.2], [1.0, 0.4]], 3),
    ("linear_layer", linear_layer, [[0.3, -0.2], [1.0, 0.4]], 4),
    ("with_math_module", with_math_module, [[0.3, -0.2], [1.0, 0.4]], 5),
]


@pytest.mark.parametrize("name,f,y0,order", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_agrees_with_autodiff(name, f, y0, order):
    y = torch.tensor(y0, dtype=F64)
    t = torch.tensor(0.37, dtype=F64)
    got = get_backend("symbolic").coefficients(f, t, y, order)
    _assert_coeffs_close(got, _reference(f, t, y, order))


def test_simplify_option_keeps_values_and_shrinks_polynomial_expressions():
    y = torch.tensor([[1.2, -0.4], [-0.5, 0.9]], dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    got = get_backend("symbolic", cache=False, simplify=sp.expand).coefficients(van_der_pol, t, y, 5)
    _assert_coeffs_close(got, _reference(van_der_pol, t, y, 5))
    plain = derive(van_der_pol, (2,), 6, cache=False)
    expanded = derive(van_der_pol, (2,), 6, cache=False, simplify=sp.expand)
    assert expanded.operation_counts[-1] < plain.operation_counts[-1]


# ---- closed forms ----------------------------------------------------------------------------------
def test_exponential_closed_form():
    y0 = torch.tensor([0.5, -1.25, 2.0], dtype=F64)
    got = get_backend("symbolic").coefficients(lambda t, y: y, torch.tensor(0.0, dtype=F64), y0, 7)
    for k, c in enumerate(got):
        torch.testing.assert_close(c, y0 / math.factorial(k), rtol=1e-15, atol=0)


def test_quadratic_closed_form_scalar_state():
    # y' = y^2, y(0) = y0 has y = y0 / (1 - y0 t) = sum_k y0^(k+1) t^k
    y0 = torch.tensor(0.7, dtype=F64)  # 0-d: event shape ()
    got = get_backend("symbolic").coefficients(lambda t, y: y**2, torch.tensor(0.0, dtype=F64), y0, 6)
    for k, c in enumerate(got):
        assert c.shape == ()
        torch.testing.assert_close(c, y0 ** (k + 1), rtol=1e-14, atol=0)


def test_time_only_and_constant_rhs_broadcast_to_batch():
    y = torch.zeros(4, 2, dtype=F64)
    t = torch.tensor(0.5, dtype=F64)
    got = get_backend("symbolic").coefficients(lambda t, y: torch.ones_like(y) * t**2, t, y, 3)
    expected = [torch.zeros(4, 2, dtype=F64), torch.full((4, 2), 0.25, dtype=F64),
                torch.full((4, 2), 0.5, dtype=F64), torch.full((4, 2), 1.0 / 3.0, dtype=F64)]
    for c, e in zip(got, expected):
        torch.testing.assert_close(c, e, rtol=1e-15, atol=1e-15)
    # a right-hand side with a numeric constant like sqrt(2) (folded before compiling to torch)
    got = get_backend("symbolic").coefficients(
        lambda t, y: [sp.sqrt(2) + 0 * y[0], sp.exp(sp.Rational(1, 3)) * y[0]], t, torch.ones(3, 2, dtype=F64), 2
    )
    torch.testing.assert_close(got[1][:, 0], torch.full((3,), math.sqrt(2), dtype=F64))
    torch.testing.assert_close(got[2][:, 1], torch.full((3,), math.exp(1 / 3) * math.sqrt(2) / 2, dtype=F64))


# ---- hypothesis: random polynomial, rational and trigonometric right-hand sides ---------------------
coef = st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def polynomial_rhs(draw, n, max_exponent=3):
    expo = st.integers(0, max_exponent)
    terms = draw(
        st.lists(
            st.lists(st.tuples(coef, st.lists(expo, min_size=n, max_size=n), st.integers(0, 2)), min_size=1, max_size=3),
            min_size=n,
            max_size=n,
        )
    )

    def poly(t, y, comp_terms):
        acc = 0.0
        for c, exps, et in comp_terms:
            term = c * t**et
            for j, e in enumerate(exps):
                if e:
                    term = term * y[..., j] ** e
            acc = acc + term
        return acc

    def f(t, y):
        return torch.stack([poly(t, y, terms[i]) + 0 * y[..., i] for i in range(n)], dim=-1)

    return f, terms, poly


@st.composite
def state(draw, n, batch=2):
    vals = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=n * batch, max_size=n * batch))
    return torch.tensor(vals, dtype=F64).reshape(batch, n)


@settings(deadline=None)  # example count from the hypothesis profile (tests/conftest.py)
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(polynomial_rhs(n), state(n), st.floats(-1, 1))))
def test_random_polynomial_rhs_agrees(case):
    (f, _, _), y, t = case
    t = torch.tensor(t, dtype=F64)
    got = get_backend("symbolic", cache=False).coefficients(f, t, y, 4)
    _assert_coeffs_close(got, _reference(f, t, y, 4))


@settings(deadline=None)  # example count from the hypothesis profile (tests/conftest.py)
@given(st.integers(1, 2).flatmap(lambda n: st.tuples(polynomial_rhs(n, 2), polynomial_rhs(n, 1), state(n), st.floats(-1, 1))))
def test_random_rational_rhs_agrees(case):
    (_, num_terms, poly), (_, den_terms, _), y, t = case
    n = y.shape[-1]

    def f(t, y):
        comps = []
        for i in range(n):
            den = 1.5 + poly(t, y, den_terms[i]) ** 2  # bounded away from 0
            comps.append(poly(t, y, num_terms[i]) / den + 0 * y[..., i])
        return torch.stack(comps, dim=-1)

    t = torch.tensor(t, dtype=F64)
    got = get_backend("symbolic", cache=False).coefficients(f, t, y, 3)
    _assert_coeffs_close(got, _reference(f, t, y, 3), rtol=1e-12)


@settings(deadline=None)  # example count from the hypothesis profile (tests/conftest.py)
@given(
    st.integers(1, 2).flatmap(
        lambda n: st.tuples(
            st.lists(st.tuples(coef, coef, st.lists(coef, min_size=n, max_size=n), st.booleans()), min_size=n, max_size=n),
            state(n),
            st.floats(-1, 1),
        )
    )
)
def test_random_trigonometric_rhs_agrees(case):
    params, y, t = case

    def f(t, y):
        comps = []
        for i, (amp, freq_t, freqs, use_sin) in enumerate(params):
            arg = freq_t * t + sum(w * y[..., j] for j, w in enumerate(freqs))
            comps.append(amp * (torch.sin(arg) if use_sin else torch.cos(arg)) + 0 * y[..., i])
        return torch.stack(comps, dim=-1)

    t = torch.tensor(t, dtype=F64)
    got = get_backend("symbolic", cache=False).coefficients(f, t, y, 4)
    _assert_coeffs_close(got, _reference(f, t, y, 4))


# ---- batching, dtypes, event shapes ----------------------------------------------------------------
def test_batched_equals_each_member_alone():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 4, 2, generator=g, dtype=F64)
    t = torch.tensor(0.2, dtype=F64)
    backend = get_backend("symbolic")
    batched = backend.coefficients(van_der_pol, t, y, 4)
    for i in range(3):
        for j in range(4):
            alone = backend.coefficients(van_der_pol, t, y[i, j], 4)
            for cb, ca in zip(batched, alone):
                torch.testing.assert_close(cb[i, j], ca, rtol=0, atol=0)


def test_float32_state_with_float64_time():
    y64 = torch.tensor([[0.4, 0.1], [1.0, -0.5]], dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    got32 = get_backend("symbolic").coefficients(time_dependent, t, y64.float(), 4)
    got64 = get_backend("symbolic").coefficients(time_dependent, t, y64, 4)
    for c32, c64 in zip(got32, got64):
        assert c32.dtype == torch.float32 and c32.shape == y64.shape
        torch.testing.assert_close(c32.double(), c64, rtol=1e-5, atol=1e-6)


def coupled_matrix_rhs(t, y):
    return y @ torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.5], [0.0, -0.5, 0.0]], dtype=F64) - y.sum(0) * 0.1


def test_event_shape_option_and_wrong_default_is_caught():
    y = torch.tensor([[0.5, -0.2, 0.3], [0.1, 0.9, -0.4]], dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    # the default treats dim 0 as a batch, but f couples the rows through y.sum(0)
    with pytest.raises(SymbolicBackendError, match="event_shape"):
        get_backend("symbolic").coefficients(coupled_matrix_rhs, t, y, 3)
    got = get_backend("symbolic", event_shape=(2, 3)).coefficients(coupled_matrix_rhs, t, y, 3)
    _assert_coeffs_close(got, _reference(coupled_matrix_rhs, t, y, 3))
    with pytest.raises(TaylorSolveError, match="event_shape"):
        get_backend("symbolic", event_shape=(4,)).coefficients(coupled_matrix_rhs, t, y, 3)


def test_rhs_returning_sympy_list_or_matrix():
    t = torch.tensor(0.1, dtype=F64)
    y = torch.tensor([[0.3, 0.6]], dtype=F64)

    def as_list(t, y):
        y0, y1 = y[0].item(), y[1].item()
        return [y1, -sp.sin(y0)]

    def as_matrix(t, y):
        y0, y1 = y[0].item(), y[1].item()
        return sp.Matrix([y1, -sp.sin(y0)])

    ref = get_backend("symbolic").coefficients(pendulum, t, y, 4)
    for f in (as_list, as_matrix):
        _assert_coeffs_close(get_backend("symbolic").coefficients(f, t, y, 4), ref, rtol=1e-15)


def test_where_rhs_agrees_away_from_the_switch():
    def f(t, y):
        return torch.where(y > 0, -y**3, torch.abs(y) * y)

    y = torch.tensor([[0.5, -0.7, 1.3]], dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    _assert_coeffs_close(get_backend("symbolic").coefficients(f, t, y, 4), _reference(f, t, y, 4))


# ---- errors ----------------------------------------------------------------------------------------
def test_unsupported_function_names_it():
    def f(t, y):
        return torch.erfinv(y)

    with pytest.raises(SymbolicBackendError, match=r"torch\.erfinv is not supported by the symbolic backend"):
        get_backend("symbolic").coefficients(f, torch.tensor(0.0), torch.zeros(2), 2)

    def g(t, y):
        return torch.special.bessel_j0(y)

    with pytest.raises(SymbolicBackendError, match=r"bessel_j0"):
        derive(g, (2,), 1)


def test_data_dependent_branch_and_number_conversion_raise():
    def branchy(t, y):
        if y[0] > 0:
            return y
        return -y

    def to_float(t, y):
        return torch.tensor([float(y[0]), 1.0])

    with pytest.raises(SymbolicBackendError, match="torch.where"):
        derive(branchy, (2,), 1, cache=False)
    with pytest.raises(SymbolicBackendError, match="number"):
        derive(to_float, (2,), 1, cache=False)
    with pytest.raises(SymbolicBackendError, match="shape"):
        derive(lambda t, y: torch.stack([y[0], y[1], y[0]]), (2,), 1, cache=False)
    with pytest.raises(SymbolicBackendError, match="symbols"):
        derive(lambda t, y: y * sp.Symbol("k"), (2,), 1, cache=False)


# ---- caching, counters, registry --------------------------------------------------------------------
def test_derivation_is_cached_and_counters_count():
    clear_cache()
    calls = {"symbolic": 0, "numeric": 0}

    def f(t, y):
        calls["symbolic" if isinstance(y, SymbolicArray) else "numeric"] += 1
        return -0.5 * y + torch.sin(t)

    backend = get_backend("symbolic")
    y = torch.tensor([1.0, 2.0], dtype=F64)
    for i in range(5):
        backend.coefficients(f, torch.tensor(0.1 * i, dtype=F64), y, 3)
    assert calls["symbolic"] == 1  # derived once
    assert calls["numeric"] == 1  # one validation evaluation (no f0 given)
    assert backend.counters.derivative_evals == 5
    assert backend.counters.f_evals == 1
    # a higher order extends the cached derivation instead of re-deriving
    backend.coefficients(f, torch.tensor(0.0, dtype=F64), y, 5)
    assert calls["symbolic"] == 1
    # with f0 supplied no extra evaluation of f happens
    b2 = get_backend("symbolic")
    b2.coefficients(f, torch.tensor(0.0, dtype=F64), y, 2, f0=f(torch.tensor(0.0, dtype=F64), y))
    assert b2.counters.f_evals == 0 and b2.counters.derivative_evals == 1
    # cache=False re-derives
    b3 = get_backend("symbolic", cache=False)
    b3.coefficients(f, torch.tensor(0.0, dtype=F64), y, 2)
    assert calls["symbolic"] == 2


def test_registry():
    assert "symbolic" in available_backends()
    b = get_backend("symbolic")
    assert isinstance(b, SymbolicBackend) and b.name == "symbolic"


# ---- derive() for tutorials ------------------------------------------------------------------------
def test_derive_expressions_and_display():
    d = derive(pendulum, (2,), 3)
    y0, y1 = d.state_symbols
    y2 = d.expressions[1]
    assert sp.simplify(y2[0] + sp.sin(y0)) == 0
    assert sp.simplify(y2[1] + y1 * sp.cos(y0)) == 0
    assert d.order == 3 and len(d.expressions) == 3
    text = str(d)
    assert "y'' = " in text and "sin(y_0)" in text
    assert d._repr_latex_().startswith("$$") and "\\sin" in d._repr_latex_()
    replacements, reduced = d.cse
    assert len(reduced) == 3 * 2 and len(replacements) >= 1
    assert d.operation_counts[0] < d.operation_counts[-1]


def test_derive_numpy_and_torch_functions_agree():
    d = derive(van_der_pol, 2, 4)
    y = np.array([[0.3, -0.4], [1.1, 0.2]])
    num = d.compile("numpy")(0.0, y)
    tor = d.compile("torch")(torch.tensor(0.0, dtype=F64), torch.from_numpy(y))
    assert len(num) == len(tor) == 4
    for a, b in zip(num, tor):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-14, atol=1e-14)
    # and against autodiff: compiled y^(k) = k! c_k
    ref = _reference(van_der_pol, torch.tensor(0.0, dtype=F64), torch.from_numpy(y), 4)
    for k in range(1, 5):
        np.testing.assert_allclose(num[k - 1] / math.factorial(k), ref[k].numpy(), rtol=1e-12, atol=1e-12)


def test_scalar_event_shape_symbol_and_lower_order_view():
    d = derive(lambda t, y: y**2, (), 4)
    (y,) = d.state_symbols
    assert d.derivative(3) == 6 * y**4
    d2 = derive(lambda t, y: y**2, (), 2)  # a different f object; fresh derivation
    assert d2.order == 2 and d2.expressions[1] == 2 * y**3
