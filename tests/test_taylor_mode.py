"""Tests of the taylor_mode (jet) coefficient backend.

Closed-form Taylor series to order 20, and agreement with an independent reference that
differentiates ``s -> f(t0 + s, sum_j c_j s^j)`` k times with nested ``torch.func.jvp``.
"""
from __future__ import annotations

import math

import mpmath
import pytest
import sympy
import torch
import torch.nn.functional as F

from taylorsolve.coefficients import get_backend
from taylorsolve.coefficients.taylor_mode import Jet, TaylorModeBackend, supported_operations
from taylorsolve.errors import TaylorSolveError

D = torch.float64


def tm(f, t0, y0, order):
    return TaylorModeBackend().coefficients(f, torch.as_tensor(t0, dtype=D), y0, order)


# ---------------------------------------------------------------------------------------------
# reference: nested forward-mode derivatives of s -> f(t0 + s, poly(s))
# ---------------------------------------------------------------------------------------------
def _nth_derivative(g, k):
    if k == 0:
        return g
    inner = _nth_derivative(g, k - 1)
    return lambda s: torch.func.jvp(inner, (s,), (torch.ones_like(s),))[1]


def reference_coefficients(f, t0, y0, order):
    """c_{k+1} = (1/(k+1)) (1/k!) d^k/ds^k f(t0 + s, sum_{j<=k} c_j s^j) at s = 0 (cost ~2^k)."""
    t0 = torch.as_tensor(t0, dtype=y0.dtype)
    cs = [y0]
    for k in range(order):
        frozen = list(cs)

        def g(s, frozen=frozen):
            ys = frozen[-1]
            for c in reversed(frozen[:-1]):  # Horner
                ys = ys * s + c
            return f(t0 + s, ys)

        d = _nth_derivative(g, k)(torch.zeros((), dtype=y0.dtype))
        cs.append(d / math.factorial(k) / (k + 1))
    return cs


def assert_coeffs_close(got, ref, rtol=1e-12):
    assert len(got) == len(ref)
    scale = max(float(r.abs().max()) for r in ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, k
        err = float((a - b).abs().max())
        assert err <= rtol * scale, f"coefficient {k}: error {err:.3e} vs scale {scale:.3e}"


# ---------------------------------------------------------------------------------------------
# closed forms, high order
# ---------------------------------------------------------------------------------------------
def test_registered_and_counters():
    b = get_backend("taylor_mode")
    assert isinstance(b, TaylorModeBackend) and b.name == "taylor_mode"
    y0 = torch.tensor([0.3, -0.2], dtype=D)
    cs = b.coefficients(lambda t, y: -y, torch.tensor(0.0, dtype=D), y0, 6)
    assert len(cs) == 7
    assert b.counters.f_evals == 1 and b.counters.derivative_evals == 1
    b.coefficients(lambda t, y: -y, torch.tensor(0.0, dtype=D), y0, 3)
    assert b.counters.f_evals == 2 and b.counters.derivative_evals == 2
    torch.testing.assert_close(cs[0], y0)
    for k in range(7):
        torch.testing.assert_close(cs[k], y0 * (-1) ** k / math.factorial(k))


def test_exponential_order_20():
    y0 = torch.tensor([0.5, -1.25, 3.0], dtype=D)
    cs = tm(lambda t, y: y, 0.0, y0, 20)
    for k, c in enumerate(cs):
        torch.testing.assert_close(c, y0 / math.factorial(k), rtol=1e-14, atol=0)


def test_riccati_square_order_20():
    # y' = y^2, y = y0 / (1 - y0 t): c_k = y0^(k+1)
    y0 = torch.tensor([0.5, -0.9, 1.1], dtype=D)
    for f in (lambda t, y: y * y, lambda t, y: y**2, lambda t, y: torch.square(y)):
        cs = tm(f, 0.0, y0, 20)
        for k, c in enumerate(cs):
            torch.testing.assert_close(c, y0 ** (k + 1), rtol=1e-13, atol=0)


def test_riccati_at_zero_uses_products():
    # y' = y^3 + 1 at y0 = 0 needs u^3 at u_0 = 0 (a pow recurrence would divide by zero)
    cs = tm(lambda t, y: y**3 + 1, 0.0, torch.zeros(1, dtype=D), 8)
    assert all(torch.isfinite(c).all() for c in cs)
    assert float(cs[1]) == 1.0 and float(cs[4]) == pytest.approx(0.25)  # y = t + t^4/4 + ...


def test_time_dependent_order_20():
    # y' = -t y: y = y0 exp(-t^2 / 2)
    y0 = torch.tensor([2.0, -0.5], dtype=D)
    cs = tm(lambda t, y: -t * y, 0.0, y0, 20)
    for k, c in enumerate(cs):
        want = y0 * ((-0.5) ** (k // 2) / math.factorial(k // 2) if k % 2 == 0 else 0.0)
        torch.testing.assert_close(c, want, rtol=1e-14, atol=1e-300)


def test_time_dependent_nonzero_t0():
    # y' = cos(t): y = y0 + sin(t) - sin(t0); c_k = sin^(k)(t0) / k! for k >= 1
    t0 = 0.7
    cs = tm(lambda t, y: torch.cos(t) * torch.ones_like(y), t0, torch.tensor([1.0], dtype=D), 20)
    for k in range(1, 21):
        want = math.sin(t0 + k * math.pi / 2) / math.factorial(k)
        assert float(cs[k]) == pytest.approx(want, rel=1e-12, abs=1e-30)


def test_harmonic_oscillator_order_20():
    x0, v0 = 0.8, -0.3
    y0 = torch.tensor([[x0, v0], [0.0, 1.0]], dtype=D)  # batch of two
    f = lambda t, y: torch.stack([y[..., 1], -y[..., 0]], dim=-1)  # noqa: E731
    cs = tm(f, 0.0, y0, 20)
    for k, c in enumerate(cs):
        ck = (1, 0, -1, 0)[k % 4] / math.factorial(k)  # cos^(k)(0)/k!
        sk = (0, 1, 0, -1)[k % 4] / math.factorial(k)
        want_x = torch.tensor([x0 * ck + v0 * sk, sk], dtype=D)
        torch.testing.assert_close(c[..., 0], want_x, rtol=1e-13, atol=1e-30)


def test_tangent_order_20():
    # y' = 1 + y^2, y(0) = 0: y = tan(t)
    x = sympy.Symbol("x")
    ser = sympy.series(sympy.tan(x), x, 0, 21).removeO()
    want = [float(ser.coeff(x, k)) for k in range(21)]
    cs = tm(lambda t, y: 1 + y**2, 0.0, torch.zeros(1, dtype=D), 20)
    for k in range(21):
        assert float(cs[k]) == pytest.approx(want[k], rel=1e-13, abs=1e-300)
    # and through torch.tan of the time jet: y' = tan(t) ... y = -log(cos t)
    ser2 = sympy.series(-sympy.log(sympy.cos(x)), x, 0, 21).removeO()
    cs2 = tm(lambda t, y: torch.tan(t) + 0 * y, 0.0, torch.zeros(1, dtype=D), 20)
    for k in range(21):
        assert float(cs2[k]) == pytest.approx(float(ser2.coeff(x, k)), rel=1e-13, abs=1e-300)


@pytest.mark.parametrize(
    "fn, ref",
    [
        (torch.exp, mpmath.exp),
        (torch.sin, mpmath.sin),
        (torch.cos, mpmath.cos),
        (torch.tan, mpmath.tan),
        (torch.tanh, mpmath.tanh),
        (torch.sigmoid, lambda z: 1 / (1 + mpmath.exp(-z))),
        (torch.sqrt, mpmath.sqrt),
        (torch.log, mpmath.log),
        (torch.log1p, lambda z: mpmath.log(1 + z)),
        (torch.atan, mpmath.atan),
        (torch.asin, mpmath.asin),
        (torch.acos, mpmath.acos),
        (torch.asinh, mpmath.asinh),
        (torch.atanh, mpmath.atanh),
        (lambda z: torch.acosh(1 + z), lambda z: mpmath.acosh(1 + z)),
        (torch.erf, mpmath.erf),
        (torch.erfc, mpmath.erfc),
        (torch.sinh, mpmath.sinh),
        (torch.cosh, mpmath.cosh),
        (lambda z: z ** (-1.5), lambda z: z ** mpmath.mpf(-1.5)),
        (lambda z: 1.0 / z, lambda z: 1 / z),
        (torch.rsqrt, lambda z: 1 / mpmath.sqrt(z)),
        (lambda z: 2.0**z, lambda z: 2**z),
        (F.softplus, lambda z: mpmath.log(1 + mpmath.exp(z))),
    ],
)
def test_elementary_functions_of_time_order_12(fn, ref):
    # y' = g(t) integrates to y = int g: c_{k+1} = g_k / (k+1), g_k from mpmath's Taylor expansion
    with mpmath.workdps(40):
        want = [float(c) for c in mpmath.taylor(ref, mpmath.mpf(3) / 10, 12)]
    cs = tm(lambda t, y: fn(t) * torch.ones_like(y), 0.3, torch.zeros(1, dtype=D), 12)
    for k in range(12):
        assert float(cs[k + 1]) == pytest.approx(want[k] / (k + 1), rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# agreement with nested JVPs
# ---------------------------------------------------------------------------------------------
def pendulum(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)


def kepler(t, y):
    q, p = y[..., :2], y[..., 2:]
    r2 = (q * q).sum(-1, keepdim=True)
    return torch.cat([p, -q * r2 ** (-1.5)], dim=-1)


def lotka_volterra(t, y):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([1.1 * x - 0.4 * x * z, 0.1 * x * z - 0.4 * z], dim=-1)


def van_der_pol(t, y):
    x, v = y.unbind(-1)
    return torch.stack([v, 2.0 * (1 - x**2) * v - x], dim=-1)


def softmax_rhs(t, y):
    return torch.softmax(y, dim=-1) - 0.5 * y + 0.1 * torch.logsumexp(y, dim=-1, keepdim=True) * torch.cos(t)


def tanh_sigmoid(t, y):
    W = torch.tensor([[0.3, -1.2, 0.5], [0.8, 0.1, -0.4], [-0.6, 0.7, 0.2]], dtype=y.dtype)
    return torch.tanh(y @ W.T) - torch.sigmoid(y) * t + F.silu(y) * 0.1


A_CONST = torch.tensor([[0.0, 1.0, 0.2], [-1.0, 0.1, 0.0], [0.3, -0.2, -0.5]], dtype=D)
B_CONST = torch.tensor([0.1, -0.3, 0.2], dtype=D)


def matmul_const(t, y):
    return (A_CONST @ y.unsqueeze(-1)).squeeze(-1) + torch.exp(-t) * B_CONST + torch.matmul(y, A_CONST) * 0.1


def manual_layer_norm(x, shape, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    return xc * ((xc * xc).mean(-1, keepdim=True) + eps) ** -0.5


def kitchen_sink(t, y, layer_norm=F.layer_norm):
    a, b, c = y[0], y[1], y[2]
    out = torch.zeros_like(y)
    out[0] = a / (1.5 + b * b) + torch.tan(0.3 * c) - abs(b - 3.0) * 0.1
    out[1] = torch.log1p(a * a) * torch.expm1(0.2 * c) + (2.0 + a) ** (1.0 + 0.1 * b)
    v = torch.cat([y, torch.tensor([0.5], dtype=y.dtype)])
    m = torch.outer(v, v)  # jet x jet outer product
    out[2] = (m.sum() / torch.linalg.vector_norm(v)) * 0.05 + torch.where(y > 0, y, -y).mean()
    out = out + 0.01 * torch.atan2(a, b + 2.0) + 0.01 * torch.cosh(c) * torch.sinh(t)
    out = out + 0.01 * layer_norm(y * torch.tensor([1.0, 2.0, 3.0], dtype=y.dtype), (3,))
    out = out + 0.01 * (y @ y) + 0.01 * torch.sqrt(2.0 + y).flip(0) - 0.01 * y.reshape(3, 1).squeeze(1)
    return out + 0.01 * torch.einsum("i,i->", y, y) + 0.01 * torch.erf(y) + 0.01 * F.softplus(y)


CASES = {
    "pendulum": (pendulum, [1.2, -0.4]),
    "kepler": (kepler, [1.0, 0.1, 0.2, 0.9]),
    "lotka_volterra": (lotka_volterra, [1.3, 0.7]),
    "van_der_pol": (van_der_pol, [1.5, -0.3]),
    "softmax": (softmax_rhs, [0.3, -1.0, 2.0, 0.5]),
    "tanh_sigmoid": (tanh_sigmoid, [0.3, -0.8, 1.1]),
    "matmul_const": (matmul_const, [0.3, -0.8, 1.1]),
    "kitchen_sink": (kitchen_sink, [0.4, -0.3, 0.8]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_nested_jvp_reference(name):
    f, y0 = CASES[name]
    y0 = torch.tensor(y0, dtype=D)
    t0 = 0.37
    order = 5
    # torch's own forward-mode AD of the fused F.layer_norm is wrong beyond second order (torch 2.13),
    # so the reference evaluates the same normalization written out in elementary operations.
    f_ref = (lambda t, y: kitchen_sink(t, y, layer_norm=manual_layer_norm)) if name == "kitchen_sink" else f
    ref = reference_coefficients(f_ref, t0, y0, order)
    got = tm(f, t0, y0, order)
    assert_coeffs_close(got, ref, rtol=1e-12)


def test_fused_layer_norm_equals_elementary_layer_norm():
    y0 = torch.tensor([[0.4, -0.3, 0.8], [1.0, 2.0, -0.5]], dtype=D)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    got = tm(lambda t, y: F.layer_norm(y * w, (3,)) * torch.cos(t), 0.2, y0, 8)
    want = tm(lambda t, y: manual_layer_norm(y * w, (3,)) * torch.cos(t), 0.2, y0, 8)
    ref = reference_coefficients(lambda t, y: manual_layer_norm(y * w, (3,)) * torch.cos(t), 0.2, y0, 4)
    assert_coeffs_close(got[:5], ref)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_low_orders_are_prefixes_of_high_orders():
    y0 = torch.tensor([1.0, 0.1, 0.2, 0.9], dtype=D)
    hi = tm(kepler, 0.0, y0, 15)
    lo = tm(kepler, 0.0, y0, 3)
    for a, b in zip(lo, hi):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_kepler_high_order_energy_series():
    # The energy H = |p|^2/2 - 1/|q| is conserved: its Taylor series along the solution vanishes
    # beyond order 0.  Build H(s) from the order-15 coefficients by truncated series arithmetic.
    y0 = torch.tensor([1.0, 0.0, 0.0, 1.2], dtype=D)
    cs = torch.stack(tm(kepler, 0.0, y0, 15))  # [16, 4]
    n = cs.shape[0]

    def mul(a, b):
        return torch.stack([sum(a[j] * b[k - j] for j in range(k + 1)) for k in range(n)])

    q, p = cs[:, :2], cs[:, 2:]
    r2 = sum(mul(q[:, i], q[:, i]) for i in range(2))
    kin = 0.5 * sum(mul(p[:, i], p[:, i]) for i in range(2))
    # 1/sqrt(r2) via the pow recurrence, independently coded here
    v = torch.zeros(n, dtype=D)
    v[0] = r2[0] ** -0.5
    for k in range(1, n):
        v[k] = sum(((-0.5 + 1) * j / k - 1) * r2[j] * v[k - j] for j in range(1, k + 1)) / r2[0]
    H = kin - v
    assert float(H[1:].abs().max()) < 1e-12


# ---------------------------------------------------------------------------------------------
# batching, dtypes, time
# ---------------------------------------------------------------------------------------------
def test_batched_equals_per_member():
    torch.manual_seed(0)
    y0 = torch.tensor([1.0, 0.1, 0.2, 0.9], dtype=D) + 0.1 * torch.randn(2, 3, 4, dtype=D)
    batched = tm(kepler, 0.2, y0, 8)
    for i in range(2):
        for j in range(3):
            single = tm(kepler, 0.2, y0[i, j], 8)
            for a, b in zip(batched, single):
                torch.testing.assert_close(a[i, j], b, rtol=1e-14, atol=1e-14)


def test_float32_state_with_float64_time():
    y64 = torch.tensor([1.0, 0.1, 0.2, 0.9], dtype=D)
    y32 = y64.float()
    b = TaylorModeBackend()
    cs32 = b.coefficients(kepler, torch.tensor(0.25, dtype=torch.float64), y32, 10)
    cs64 = tm(kepler, 0.25, y64, 10)
    assert all(c.dtype == torch.float32 and c.shape == y32.shape for c in cs32)
    scale = max(float(c.abs().max()) for c in cs64)
    for a, b_ in zip(cs32, cs64):
        assert float((a.double() - b_).abs().max()) < 1e-5 * scale
    # time enters as float32 too: f returns float32 even though t was float64
    cs = TaylorModeBackend().coefficients(lambda t, y: y * t, torch.tensor(1.0, dtype=torch.float64), y32, 3)
    assert cs[1].dtype == torch.float32


def test_plain_tensor_output_and_order_1():
    y0 = torch.tensor([1.0, 2.0], dtype=D)
    cs = tm(lambda t, y: torch.tensor([3.0, -1.0], dtype=D), 0.0, y0, 4)
    torch.testing.assert_close(cs[1], torch.tensor([3.0, -1.0], dtype=D))
    assert all(float(c.abs().max()) == 0.0 for c in cs[2:])
    cs = tm(pendulum, 0.0, y0, 1)
    assert len(cs) == 2
    torch.testing.assert_close(cs[1], pendulum(None, y0))


def test_nn_module_rhs_matches_reference():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.GELU(),
                              torch.nn.Linear(8, 3)).double()

    def f(t, y):
        return net(y) * torch.sigmoid(t)

    y0 = torch.tensor([0.2, -0.5, 0.9], dtype=D)
    with torch.no_grad():
        got = tm(f, 0.1, y0, 4)
    ref = reference_coefficients(lambda t, y: net(y) * torch.sigmoid(t), 0.1, y0, 4)
    assert_coeffs_close(got, [r.detach() for r in ref], rtol=1e-11)


def test_taylorsolve_math_functions():
    tmath = pytest.importorskip("taylorsolve.math")
    f = lambda t, y: tmath.sin(y) * tmath.exp(-t)  # noqa: E731
    y0 = torch.tensor([0.4, 1.0], dtype=D)
    assert_coeffs_close(tm(f, 0.0, y0, 5), reference_coefficients(f, 0.0, y0, 5))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_unsupported_function_is_named():
    y0 = torch.tensor([0.1, 0.2], dtype=D)
    with pytest.raises(TaylorSolveError, match=r"torch\.erfinv is not supported by the taylor_mode backend"):
        tm(lambda t, y: torch.erfinv(y), 0.0, y0, 3)
    with pytest.raises(TaylorSolveError, match=r"torch\.Tensor\.cumprod is not supported"):
        tm(lambda t, y: y.cumprod(0), 0.0, y0, 3)
    with pytest.raises(TaylorSolveError, match="float"):
        tm(lambda t, y: y * float(y[0]), 0.0, y0, 3)
    with pytest.raises(TaylorSolveError, match="plain tensor"):

        def f(t, y):
            out = torch.zeros(2, dtype=D)
            out[0] = y[1]
            return out

        tm(f, 0.0, y0, 3)


def test_bad_output_is_reported():
    y0 = torch.tensor([0.1, 0.2], dtype=D)
    with pytest.raises(TaylorSolveError, match="shape"):
        tm(lambda t, y: y.sum(), 0.0, y0, 3)
    with pytest.raises(TaylorSolveError, match="dtype"):
        tm(lambda t, y: y.float(), 0.0, y0, 3)
    with pytest.raises(TaylorSolveError, match="must return a torch.Tensor"):
        tm(lambda t, y: 1.0, 0.0, y0, 3)
    with pytest.raises(TaylorSolveError, match="order"):
        tm(lambda t, y: y, 0.0, y0, 0)


def test_comparisons_give_primal_masks_and_operation_list():
    seen = {}

    def f(t, y):
        seen["mask"] = y > 0
        assert isinstance(y, Jet)
        return torch.where(y > 0, y, 2 * y)

    y0 = torch.tensor([0.5, -0.5], dtype=D)
    cs = tm(f, 0.0, y0, 6)
    assert seen["mask"].tolist() == [True, False]
    for k, c in enumerate(cs):
        torch.testing.assert_close(c, torch.tensor([0.5 / math.factorial(k), -0.5 * 2**k / math.factorial(k)], dtype=D))
    ops = supported_operations()
    for name in ("exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "softmax", "logsumexp", "matmul", "pow"):
        assert name in ops


def structural(t, y):
    # y: [2, 3]; views (getitem, transpose, permute, reshape, unsqueeze, expand, split, unbind) and copies
    a, b = y.unbind(0)
    c1, c2 = y.split([1, 2], dim=-1)
    z = y.transpose(0, 1).reshape(6).view(3, 2).permute(1, 0)  # a permutation of y's entries
    w = y[:, None, :].expand(2, 2, 3).sum(1) * 0.5 + y.unsqueeze(0).squeeze(0)[..., [2, 0, 1]] * 0.1
    top = torch.stack([b * a, torch.cat([c1.squeeze(-1).unsqueeze(-1), c2 * t], -1)[0]])
    m = torch.tanh(y.T @ y)  # jet @ jet
    return top + z * 0.3 + w - y.mean(dim=1, keepdim=True) + m.sum(0, keepdim=True).expand(2, 3) * 0.05


def test_views_and_structure_match_reference():
    y0 = torch.tensor([[0.4, -0.3, 0.8], [0.2, 0.7, -0.5]], dtype=D)
    assert_coeffs_close(tm(structural, 0.2, y0, 5), reference_coefficients(structural, 0.2, y0, 5))
