"""The cascaded upsampler's conditioning (sec. 5.4, app. C): down/up-scaling, noise augmentation, the
conditioning input of the U-Net, and the named errors (no low-resolution input, mismatched resolutions)."""
from __future__ import annotations

import pytest
import torch
from _images_helpers import TINY_KW, randomized, train_args

from images.errors import ConfigError, MissingConditioningError, ResolutionMismatchError
from images.sampling import diffusion_model
from images.unet import build_unet
from images.upsampler import augment, condition, downsample, upscale
from taylorsolve.diffusion import sample
from taylorsolve.diffusion.schedules import LinearVPSchedule

F64 = torch.float64
SCH = LinearVPSchedule()


def _upsampler(dtype=F64, seed=0):
    torch.manual_seed(seed)
    m = build_unet("tiny", in_channels=3, resolution=8, cond_channels=3, low_resolution=4, **{**TINY_KW, "dropout": 0.0})
    m = randomized(m, seed)
    with torch.no_grad():
        m.conv_out.weight.mul_(0.3)
    return m.to(dtype).eval()


def test_down_and_up_scaling_and_augmentation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    low = downsample(x, 4)
    assert low.shape == (5, 3, 4, 4)
    # antialiased 2x bilinear down-scaling of a constant image is the constant; of any image, the 2x2 means
    # up to the antialiasing filter's wider support: check the mean is kept
    assert torch.allclose(low.mean((2, 3)), x.mean((2, 3)), atol=0.05)
    up = upscale(low, 8)
    assert up.shape == (5, 3, 8, 8)
    c = torch.full((1, 3, 4, 4), 0.3)
    assert torch.allclose(upscale(c, 8), torch.full((1, 3, 8, 8), 0.3))
    # augmentation: alpha_s up + sigma_s n; s = 0 is the identity
    n = torch.randn(up.shape, generator=g)
    assert torch.equal(augment(up, 0.0, n), up)
    s = torch.tensor([0.0, 0.05, 0.1, 0.3, 1.0], dtype=F64)
    z = augment(up, s, n)
    sch = LinearVPSchedule()
    a, sg = sch.alpha(s).float(), sch.sigma(s).float()
    assert torch.allclose(z, a[:, None, None, None] * up + sg[:, None, None, None] * n, atol=1e-6)
    cond = condition(low, 8, 0.05, generator=torch.Generator().manual_seed(1))
    resid = (cond["low_res"] - float(sch.alpha(torch.tensor(0.05, dtype=F64))) * up) / float(sch.sigma(torch.tensor(0.05, dtype=F64)))
    assert abs(float(resid.std()) - 1.0) < 0.1 and torch.equal(cond["aug_level"], torch.full((5,), 0.05, dtype=F64))


def test_the_upsampler_is_conditioned_on_its_input_and_sampling_holds_it_fixed():
    m = _upsampler()
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(3, 3, 8, 8, dtype=F64, generator=g)
    low = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    c1 = condition(low, 8, 0.01, generator=torch.Generator().manual_seed(3))
    c2 = condition(-low, 8, 0.01, generator=torch.Generator().manual_seed(3))
    a = sample(diffusion_model(m), x1, 4, method="ddim", cond=c1)
    b = sample(diffusion_model(m), x1, 4, method="ddim", cond=c1)
    c = sample(diffusion_model(m), x1, 4, method="ddim", cond=c2)
    assert torch.equal(a.x, b.x)                                  # deterministic: the conditioning is fixed
    assert float((a.x - c.x).abs().max()) > 1e-3                 # and it matters
    # the augmentation level enters the embedding
    t = torch.full((3,), 0.5, dtype=F64)
    with torch.no_grad():
        e0 = m(x1, t, low_res=c1["low_res"], aug_level=torch.zeros(3, dtype=F64))
        e1 = m(x1, t, low_res=c1["low_res"], aug_level=torch.full((3,), 0.1, dtype=F64))
    assert float((e0 - e1).abs().max()) > 1e-4


def test_named_errors_missing_input_and_mismatched_resolutions(tmp_path):
    m = _upsampler()
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    t = torch.full((2,), 0.5, dtype=F64)
    with pytest.raises(MissingConditioningError, match="low-resolution input"):
        m(x, t)
    with pytest.raises(MissingConditioningError, match="low-resolution input"):
        sample(diffusion_model(m), x, 2, method="ddim")
    with pytest.raises(ResolutionMismatchError, match="up-scale it first"):
        m(x, t, low_res=torch.zeros(2, 3, 4, 4, dtype=F64))      # the 4x4 input itself, not up-scaled
    with pytest.raises(ResolutionMismatchError, match="generates 8x8"):
        m(torch.randn(2, 3, 16, 16, dtype=F64), t, low_res=torch.zeros(2, 3, 16, 16, dtype=F64))
    with pytest.raises(ResolutionMismatchError, match=r"\[2, 3, 8, 8\]"):
        m(x, t, low_res=torch.zeros(2, 1, 8, 8, dtype=F64))
    with pytest.raises(ResolutionMismatchError, match="smaller divisor"):
        downsample(torch.zeros(1, 3, 8, 8), 3)
    with pytest.raises(ResolutionMismatchError, match="larger multiple"):
        upscale(torch.zeros(1, 3, 4, 4), 6)
    with pytest.raises(ResolutionMismatchError, match="must divide"):
        build_unet("tiny", in_channels=3, resolution=8, cond_channels=3, low_resolution=3, **TINY_KW)
    with pytest.raises(ConfigError, match="both cond_channels and low_resolution"):
        build_unet("tiny", in_channels=3, resolution=8, cond_channels=3, **TINY_KW)
    plain = build_unet("tiny", in_channels=3, resolution=8, **TINY_KW)
    with pytest.raises(ConfigError, match="not an upsampler"):
        plain(x.float(), t.float(), low_res=torch.zeros(2, 3, 8, 8))
    from images.train import train

    with pytest.raises(ResolutionMismatchError, match="--upsample-from 3"):
        train(train_args(tmp_path / "bad", steps=1, upsample_from=3))


def test_upsampler_training_run_resumes_exactly(tmp_path):
    """An upsampler run (its augmentation noise drawn from its own (seed, step) stream) stopped and resumed
    reaches the uninterrupted run's weights bit for bit; its checkpoint rebuilds the upsampler."""
    from images.checkpoint import load_model
    from images.train import train

    kw = dict(dataset="gaussian", upsample_from=4, aug_max=0.2)
    train(train_args(tmp_path / "a", steps=4, **kw))
    train(train_args(tmp_path / "b", steps=4, **kw), stop_after=2)
    train(train_args(tmp_path / "b", steps=4, resume=True, **kw))
    ma, mb = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    assert ma.config.cond_channels == 1 and ma.config.low_resolution == 4
    for (k, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(va, vb), k
    raw = load_model(tmp_path / "a", weights="model")
    assert any(float(p.detach().abs().sum()) > 0 for n, p in raw.named_parameters() if n.startswith("aug_embed"))


def test_an_upsampler_head_sees_the_conditioning_image_and_its_file_says_so(tmp_path):
    """App. C.2.1: the upsampler's head is conditioned on the (noisy, up-scaled) low-resolution image too;
    distillation draws that conditioning from the training images, and the head file records the input."""
    from images.data import GaussianImages
    from images.distill import Conditioner, DistillArgs, build_pool, distill
    from images.heads import attach_head

    m = _upsampler(dtype=torch.float32)
    ds = GaussianImages(resolution=8, channels=3)
    args = DistillArgs(aug_max=0.1)
    cnd = Conditioner(m, args)
    assert cnd.extra_input == "low_res" and cnd.extra_channels == 3
    headed = attach_head(m, overhead=None, extra_channels=3, extra_input="low_res")
    pool = build_pool(headed, ds, 8, batch=8, conditioner=cnd)
    s = pool["cond.aug_level"]
    assert float(s.min()) >= 0 and float(s.max()) <= 0.1 and float(s.std()) > 0
    assert torch.equal(pool["extra"], pool["cond.low_res"])
    res = distill(DistillArgs(out=str(tmp_path / "h"), steps=10, batch_size=8, pool=16, threads=1, progress=False,
                              eval_samples=16, checkpoint_every=10), dataset=ds, teacher=m)
    assert res["head_config"]["extra_channels"] == 3
    h = attach_head(m, head=res["checkpoint"], overhead=None)          # the input name comes from the file
    assert h.extra_input == "low_res"
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(2, 3, 8, 8, dtype=F64, generator=g)
    low = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    c = condition(low, 8, 0.01, generator=torch.Generator().manual_seed(6))
    t = torch.full((2,), 0.5, dtype=F64)
    with torch.no_grad():
        _, eps, feats, emb = h.features(x1.float(), t, **c)
        gam = SCH.gamma(t)
        k1 = h.head(feats, emb, x1.float(), eps, gam, extra=c["low_res"])
        k2 = h.head(feats, emb, x1.float(), eps, gam, extra=-c["low_res"])
        assert torch.equal(h.net(x1.float(), t, **c)[1], k1)          # the headed model feeds it low_res
    assert float((k1 - k2).abs().max()) > 1e-4                          # with the same features, low_res matters
    out = sample(h, x1, 3, method="genie", derivative="head", cond=c)
    assert out.stats.nfe == 3 and bool(torch.isfinite(out.x).all())
    with pytest.raises(MissingConditioningError):
        sample(h, x1, 3, method="genie", derivative="head")
