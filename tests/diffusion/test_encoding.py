"""Encoding (ODE from t_cutoff up to 1) and decoding (app. F.4)."""
from __future__ import annotations

import math

import pytest
import torch

from taylorsolve.errors import TaylorSolveError
from taylorsolve.diffusion import providers as P
from taylorsolve.diffusion.encoding import decode, encode
from taylorsolve.diffusion.schedules import LinearVPSchedule

F64 = torch.float64
SCH = LinearVPSchedule()
M = torch.tensor([0.5, -1.0], dtype=F64)
S = 0.5
X0 = torch.tensor([0.3, -1.2], dtype=F64)
XC = torch.tensor([[0.4, -0.8], [0.9, -1.3], [0.1, -0.2]], dtype=F64)  # states at t_cutoff


def eps_gauss(x, t):
    a, s = SCH.alpha(t), SCH.sigma(t)
    return s * (x - a * M) / (a * a * S * S + s * s)


def eps_point(x, t):
    return (x - SCH.alpha(t) * X0) / SCH.sigma(t)


def gauss_derivatives(xbar, gamma, eps, order):
    g = torch.as_tensor(gamma, dtype=F64)
    r2 = S * S + g * g
    return [(xbar - M) / torch.sqrt(r2) * S * S * r2**-1.5]


def exact_latent(x, t_from, t_to):
    g0, g = SCH.gamma(t_from), SCH.gamma(t_to)
    u = (x * torch.sqrt(1 + g0 * g0) - M) * torch.sqrt((S * S + g * g) / (S * S + g0 * g0))
    return (u + M) / torch.sqrt(1 + g * g)


def test_encode_decode_genie_roundtrip_error_is_second_order():
    """The latent is second-order accurate; the round trip at least second order (measured ~3: the
    leading local error of TTM-2, (h^3/6) y^(3), is odd in h, so encode and decode errors cancel at h^2)."""
    errs, lat_errs = [], []
    for n in (8, 16, 32):
        enc = encode(eps_gauss, XC, n, method="genie", derivative=P.exact(gauss_derivatives))
        assert enc.times[0] < enc.times[-1] and float(enc.times[-1]) == 1.0
        lat_errs.append(float((enc.x - exact_latent(XC, enc.times[0], enc.times[-1])).abs().max()))
        dec = decode(eps_gauss, enc.x, n, method="genie", derivative=P.exact(gauss_derivatives), denoise=False)
        errs.append(float((dec.x - XC).abs().max()))
    p_lat = math.log2(lat_errs[-2] / lat_errs[-1])
    assert abs(p_lat - 2) <= 0.3, lat_errs
    assert math.log2(errs[0] / errs[1]) >= 1.7 and math.log2(errs[1] / errs[2]) >= 1.7, errs
    ddim = decode(eps_gauss, encode(eps_gauss, XC, 32, method="ddim").x, 32, method="ddim", denoise=False)
    assert float((ddim.x - XC).abs().max()) > 10 * errs[-1]


def test_encode_with_autodiff_genie_matches_exact_derivative():
    a = encode(eps_gauss, XC, 6, method="genie")
    b = encode(eps_gauss, XC, 6, method="genie", derivative=P.exact(gauss_derivatives))
    assert torch.allclose(a.x, b.x, rtol=1e-10)
    assert a.stats.nfe == 6 and a.stats.jvp_passes == 6


@pytest.mark.parametrize("method", ["ddim", "genie", "heun", "dpm-solver-2", "deis", "s-pndm"])
def test_single_point_encoding_is_exact(method):
    """The single point's DDIM ODE is a straight line: encode/decode reconstruct to rounding."""
    enc = encode(eps_point, XC, 4, method=method)
    dec = decode(eps_point, enc.x, 4, method=method, denoise=False)
    assert float((dec.x - XC).abs().max()) < 1e-11
    # and with denoising the decoder returns the data point itself
    assert torch.allclose(decode(eps_point, enc.x, 4, method=method).x, X0.expand_as(XC), atol=1e-11)


def test_diffuse_uses_generator_and_tensor_grids_in_either_direction():
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = encode(eps_gauss, XC, 3, method="ddim", diffuse=True, generator=g(0))
    b = encode(eps_gauss, XC, 3, method="ddim", diffuse=True, generator=g(0))
    c = encode(eps_gauss, XC, 3, method="ddim")
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)
    times = torch.tensor([1.0, 0.5, 0.1, 0.001], dtype=F64)
    d = encode(eps_gauss, XC, None, method="dpm-solver++2m", grid=times)
    e = encode(eps_gauss, XC, None, method="dpm-solver++2m", grid=times.flip(0))
    assert torch.equal(d.x, e.x) and torch.equal(d.times, times.flip(0))


def test_encoding_bad_inputs():
    with pytest.raises(TaylorSolveError, match="deterministic"):
        encode(eps_gauss, XC, 3, method="euler-maruyama")
    with pytest.raises(TaylorSolveError, match="unknown method"):
        encode(eps_gauss, XC, 3, method="nope")
    with pytest.raises(TaylorSolveError):
        encode(eps_gauss, XC, 0)
    with pytest.raises(TaylorSolveError):
        encode(eps_gauss, XC, 3, t_cutoff=0.0)
