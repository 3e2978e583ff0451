"""The U-Net eps-model: interface, forward-mode AD in x and t against finite differences, hooks, labels."""
from __future__ import annotations

import math
import re

import pytest
import torch

import images.unet as unet_mod
from images.errors import UnknownNameError
from images.unet import CONFIGS, UNet, build_unet, get_config, noise_conditioning

SMALL = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, emb_mult=2)


def _model(seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    m = build_unet("tiny", in_channels=1, resolution=8, **{**SMALL, **kw})
    # the residual branches and the output start near zero (DDPM++ init); re-initialise every
    # convolution so that eps depends on x and t as in a trained network
    torch.manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.reset_parameters()
    return m.to(dtype).eval()


def test_interface_times_and_dtypes():
    m = _model()
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.1, 0.5, 0.9])
    out = m(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32
    # 0-d and python float times broadcast; float64 t and x accepted, output in x's dtype
    assert torch.allclose(m(x, torch.tensor(0.5)), m(x, torch.full((3,), 0.5)))
    assert torch.allclose(m(x, 0.5), m(x, torch.full((3,), 0.5, dtype=torch.float64)))
    o64 = m(x.double(), t.double())
    assert o64.dtype == torch.float64 and torch.allclose(o64.float(), out, atol=1e-5)
    with pytest.raises(ValueError, match="one time per image"):
        m(x, torch.rand(2))
    with pytest.raises(TypeError, match="continuous"):
        m(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        m(torch.randn(3, 3, 8, 8), t)


def test_noise_conditioning_values():
    t = torch.tensor([1e-3, 0.3, 1.0], dtype=torch.float64)
    g = torch.sqrt(torch.expm1(0.1 * t + 9.95 * t * t))  # gamma_t of beta(t) = 0.1 + 19.9 t
    assert torch.allclose(noise_conditioning(t, "log_gamma"), 0.25 * torch.log(g), rtol=1e-12)
    assert torch.allclose(noise_conditioning(t, "sinusoidal_t"), 1000 * t)
    with pytest.raises(UnknownNameError, match="log_gamma"):
        noise_conditioning(t, "fourier")


@pytest.mark.parametrize("conditioning", ["log_gamma", "sinusoidal_t"])
def test_jvp_matches_finite_differences_float64(conditioning):
    m = _model(conditioning=conditioning, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.7], dtype=torch.float64)
    with torch.no_grad():
        _, jx = torch.func.jvp(lambda a: m(a, t), (x,), (v,))
        _, jt = torch.func.jvp(lambda s: m(x, s), (t,), (torch.ones_like(t),))
        h = 1e-6
        fx = (m(x + h * v, t) - m(x - h * v, t)) / (2 * h)
        ft = (m(x, t + h) - m(x, t - h)) / (2 * h)
    assert float((jx - fx).abs().max()) < 1e-6 * float(jx.abs().max())
    assert float((jt - ft).abs().max()) < 1e-5 * float(jt.abs().max())


def test_jvp_in_x_and_t_float32_against_float64_finite_differences():
    """fp32 forward-mode AD through the whole network (tangents in x and t at once) agrees with a
    finite difference of the same weights in float64 to fp32 accuracy."""
    m32 = _model()
    m64 = _model(dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 8, 8, generator=g)
    v = torch.randn(x.shape, generator=g)
    t = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        _, j32 = torch.func.jvp(lambda a, s: m32(a, s), (x, t), (v, torch.ones_like(t)))
        h = 1e-5
        xd, vd, td = x.double(), v.double(), t.double()
        fd = (m64(xd + h * vd, td + h) - m64(xd - h * vd, td - h)) / (2 * h)
    assert j32.dtype == torch.float32
    assert float((j32.double() - fd).abs().max()) < 1e-3 * float(fd.abs().max())
    # and a plain fp32 finite difference with a moderate step agrees to its own accuracy
    with torch.no_grad():
        h = 1e-2
        f32 = (m32(x + h * v, t + h) - m32(x - h * v, t - h)) / (2 * h)
    assert float((j32 - f32).abs().max()) < 2e-2 * float(j32.abs().max())


def test_hooks_capture_time_embedding_and_last_features_without_changing_the_output():
    m = _model()
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    before = m(x, t)
    got = {}
    hs = [m.time_embed.register_forward_hook(lambda mod, i, o: got.__setitem__("temb", o)),
          m.embedding.register_forward_hook(lambda mod, i, o: got.__setitem__("emb", o)),
          m.last_features.register_forward_hook(lambda mod, i, o: got.__setitem__("feat", o))]
    after = m(x, t)
    for h in hs:
        h.remove()
    assert torch.equal(before, after)
    assert got["temb"].shape == (4, m.emb_dim) and torch.equal(got["temb"], got["emb"])
    assert got["feat"].shape == (4, m.feature_channels, 8, 8) and m.feature_channels == SMALL["ch"] * SMALL["ch_mult"][0]
    # the last features determine eps: norm, SiLU, conv of them
    eps = m.conv_out(torch.nn.functional.silu(m.norm_out(got["feat"])))
    assert torch.allclose(eps, after, atol=1e-6)


def test_class_labels():
    m = _model(num_classes=3)
    with torch.no_grad():
        m.class_embed.weight.normal_(0, 1.0)
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    a = m(x, t, torch.tensor([0, 1, 2]))
    b = m(x, t, torch.tensor([0, 0, 0]))
    assert torch.allclose(a[0], b[0], atol=1e-6) and not torch.allclose(a[1], b[1])
    assert torch.allclose(m(x, t), m(x, t, torch.tensor([3, 3, 3])))  # None = the "no label" embedding
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        m(x, t, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="unconditional"):
        _model()(x, t, torch.tensor([0, 1, 2]))


def test_unknown_config_and_conditioning_list_known():
    with pytest.raises(UnknownNameError, match="tiny, small, cifar"):
        get_config("huge")
    with pytest.raises(UnknownNameError, match="log_gamma, sinusoidal_t"):
        get_config("tiny", conditioning="fourier")


def test_docstring_table_matches_parameter_counts():
    """The config table in images/unet.py's docstring states the parameter counts; check them."""
    doc = unet_mod.__doc__
    for name in ("tiny", "small"):
        row = next(line for line in doc.splitlines() if line.startswith(f"``{name}``"))
        stated = float(re.search(r"([\d.]+) M", row).group(1))
        cfg = CONFIGS[name]
        shape = (1, 16) if name == "tiny" else (3, 32)
        n = UNet(get_config(name, in_channels=shape[0], resolution=shape[1])).num_parameters()
        assert math.isclose(n / 1e6, stated, abs_tol=0.06), (name, n, stated, cfg)


def test_dropout_is_off_in_eval_mode():
    m = _model(dropout=0.5)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert torch.equal(m(x, t), m(x, t))
    m.train()
    assert not torch.equal(m(x, t), m(x, t))
