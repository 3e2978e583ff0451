"""The upsampler experiment (Table 3 form, sec. 5.4): outputs and their numbers on a tiny random 4 -> 8
upsampler over real held-out ``patches`` crops, PSNR by hand, GENIE (head) with a head that sees the
conditioning image (app. C.2.1), the target's verdict, and named errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
from _images_helpers import TINY_KW, randomized

from images.errors import CheckpointNotFoundError, ConfigError, HeadMismatchError, MissingConditioningError, \
    ResolutionMismatchError
from images.heads import attach_head, save_head, teacher_fingerprint
from images.sampling import run_sampler
from images.unet import build_unet
from images.upsample_exp import genie_vs_ddim, psnr, run_upsample
from images.upsampler import condition, downsample, upscale

F64 = torch.float64


def _upsampler(scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """A random 4 -> 8 RGB upsampler, float64 (so that the two references agree far below the errors);
    the output layer scaled down so that eps varies smoothly and the low-NFE errors stay moderate."""
    torch.manual_seed(seed)
    m = build_unet("tiny", in_channels=3, resolution=8, cond_channels=3, low_resolution=4, **{**TINY_KW, "dropout": 0.0})
    m = randomized(m, seed)
    with torch.no_grad():
        m.conv_out.weight.mul_(scale)
    return m.to(F64).eval()


def _cond(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return condition(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, 8, 0.01, generator=g)


def test_psnr_by_hand():
    x0 = torch.zeros(3, 3, 4, 4)
    x = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 3.0), torch.zeros(3, 4, 4)])
    x[2, 0, 0, 0] = -0.8                                    # one pixel of 48 off by 0.8
    p = psnr(x, x0)
    assert p[0] == pytest.approx(10 * math.log10(4 / 0.25))     # 12.04 dB
    assert p[1] == pytest.approx(10 * math.log10(4 / 1.0))      # clamped to 1 first: 6.02 dB, not 10 log10(4/9)
    assert p[2] == pytest.approx(10 * math.log10(4 / (0.64 / 48)))
    assert math.isinf(float(psnr(x0, x0)[0]))
    with pytest.raises(ResolutionMismatchError):
        psnr(x[:, :, :2], x0)


def test_run_upsample_writes_its_tables_and_its_numbers_hold(tmp_path):
    from PIL import Image

    from images.data import load_dataset

    res = run_upsample(tmp_path, checkpoint=_upsampler(), head=None, nfes=(5, 10), num=3, jvp_cost=1.0, quiet=True,
                       seed=4)
    for f in ("results.json", "upsample.csv", "upsample.md", "samples_nfe5.png", "samples_nfe10.png"):
        assert (tmp_path / f).is_file(), f
    assert json.loads((tmp_path / "results.json").read_text())["best"] == json.loads(json.dumps(res["best"]))
    best = {(b["method"], b["nfe_budget"]): b for b in res["best"]}
    # head=None: no GENIE (head) row, GENIE-AD instead; F-PNDM does not fit 5 or 10 NFE (the paper's N/A)
    assert {m for m, _ in best} == {"DDIM", "S-PNDM", "GENIE-AD"}
    assert sum(r["status"].startswith("n/a") for r in res["runs"] if r["method"] == "F-PNDM") == 4
    # DDIM's error falls with the budget; every run keeps within its budget, GENIE-AD's with its JVPs priced at
    # 1 NFE by sec. 5's rule: round(budget / (1 + 1)) evaluations, halves up
    assert best[("DDIM", 10)]["rmse"] < 0.8 * best[("DDIM", 5)]["rmse"]
    for r in res["runs"]:
        if r["status"] == "ok":
            ad = r["method"] == "GENIE-AD"
            assert r["nfe"] <= (math.floor(r["nfe_budget"] / 2 + 0.5) if ad else r["nfe_budget"]) and r["seconds"] > 0
            assert r["cost_nfe"] == r["nfe"] + r["jvp_passes"] and (r["jvp_passes"] > 0) == ad
    assert best[("GENIE-AD", 5)]["jvp_passes"] > 0
    # the reference row is the reference itself; the second reference agrees far below every error
    ctx = {c["method"]: c for c in res["context"]}
    assert ctx["reference (rk45)"]["rmse"] == 0.0
    assert 0 < ctx["reference (dpm3)"]["rmse"] < 0.1 * min(b["rmse"] for b in best.values())
    assert res["reference"]["ok"]
    # the bilinear row against a hand computation on the same held-out crops
    held, _ = load_dataset("patches", resolution=8).held_out()
    x0 = held[res["held_out_indices"]].double()
    up = upscale(downsample(x0.float(), 4), 8).double()
    mse = ((up.clamp(-1, 1) - x0) ** 2).mean((1, 2, 3))
    assert ctx["bilinear up-scaling (no noise)"]["psnr"] == pytest.approx(float((10 * torch.log10(4 / mse)).mean()),
                                                                          rel=1e-6)
    # the verdict compares the entries it names
    v = res["target_genie_nfe5_below_ddim_nfe10"]
    assert v["genie"] == "GENIE-AD" and v["ddim_nfe10_rmse"] == best[("DDIM", 10)]["rmse"]
    assert v["met"] == (best[("GENIE-AD", 5)]["rmse"] < best[("DDIM", 10)]["rmse"])
    # grids: 3 channels, rows low-res / DDIM / GENIE / reference / ground truth of 3 images (8x8 tiles, x16)
    img = Image.open(tmp_path / "samples_nfe5.png")
    assert img.mode == "RGB" and img.size == (16 * (3 * 9 + 1), 16 * (5 * 9 + 1))
    md = (tmp_path / "upsample.md").read_text()
    assert "| F-PNDM | n/a | n/a |" in md and "target" in md


def test_genie_head_sees_the_conditioning_image_end_to_end(tmp_path):
    from taylorsolve.diffusion import sample, steps_for_nfe

    m = _upsampler()
    c2 = _cond(2)
    headed = attach_head(m, extra_channels=3, extra_input="low_res", probe_kwargs=c2, overhead=None)
    # the head's first convolution receives [features, x_t, eps, low_res]: its last 3 channels are low_res
    seen = []
    hook = headed.head.conv_in.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x1 = torch.randn(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = sample(headed, x1, 3, method="genie", derivative="head", cond=c2)
    hook.remove()
    assert len(seen) >= 3 and torch.equal(seen[0][:, -3:], c2["low_res"].to(seen[0].dtype))
    ddim = sample(headed.base, x1, 3, method="ddim", cond=c2)
    rel = float((out.x - ddim.x).abs().max() / ddim.x.abs().max())
    assert 0 < rel < 0.05                                          # a small untrained head: near DDIM, not equal
    with pytest.raises(MissingConditioningError, match="low-resolution input"):
        sample(headed, x1, 3, method="genie", derivative="head")
    # through the experiment: the head file, its overhead measured on this model, budgets adjusted
    f = save_head(tmp_path / "head.safetensors", headed.head, teacher=teacher_fingerprint(m), hooks=headed.hooks)
    headed.remove()
    res = run_upsample(tmp_path / "exp", checkpoint=m, head=f, methods=("ddim", "genie-head"), nfes=(5, 10), num=3,
                       quiet=True)
    ov = res["head_overhead"]
    assert ov["source"] == "measured" and ov["head_sees_low_res"] and ov["overhead"] >= 0
    best = {(b["method"], b["nfe_budget"]): b for b in res["best"]}
    for n in (5, 10):
        g = best[("GENIE (head)", n)]
        assert g["steps"] == steps_for_nfe("genie", n, afs=g["afs"], overhead=ov["overhead"])
        assert g["cost_nfe"] == pytest.approx(g["nfe"] * (1 + ov["overhead"]), abs=0.01)
    assert res["target_genie_nfe5_below_ddim_nfe10"]["genie"] == "GENIE (head)"
    # a head built for another conditioning width is refused by name
    other = attach_head(m, extra_channels=1, extra_input="low_res", probe_kwargs=c2, overhead=None)
    g = save_head(tmp_path / "bad.safetensors", other.head, teacher=teacher_fingerprint(m), hooks=other.hooks)
    other.remove()
    with pytest.raises(HeadMismatchError, match="1-channel extra input"):
        run_upsample(tmp_path / "bad", checkpoint=m, head=g, nfes=(5,), num=2, quiet=True)


def test_verdict_compares_genie_at_5_with_ddim_at_10():
    def b(e):
        return {"rmse": e}

    best = {("DDIM", 5): b(0.1), ("DDIM", 10): b(0.05), ("DDIM", 15): b(0.04), ("S-PNDM", 15): b(0.02),
            ("GENIE (head)", 5): b(0.03), ("GENIE-AD", 5): b(0.5), ("GENIE (head)", 15): b(0.001)}
    v = genie_vs_ddim(best)
    assert v["genie"] == "GENIE (head)" and v["met"] is True and v["ratio"] == pytest.approx(0.6)
    assert v["beats_others_at_nfe15"] is False                      # S-PNDM at 15 (0.02) beats 0.03
    best[("GENIE (head)", 5)] = b(0.06)                               # below DDIM at 5, above DDIM at 10
    assert genie_vs_ddim(best)["met"] is False
    del best[("GENIE (head)", 5)]                                     # falls back to GENIE-AD
    v = genie_vs_ddim(best)
    assert v["genie"] == "GENIE-AD" and v["met"] is False
    del best[("DDIM", 10)]
    assert genie_vs_ddim(best)["met"] is None


def test_named_errors_through_the_experiment(tmp_path, capsys):
    m = _upsampler()
    x1 = torch.randn(2, 3, 8, 8, dtype=F64)
    with pytest.raises(MissingConditioningError, match="low-resolution input"):
        run_sampler(m, x1, "ddim", 2)                                  # the upsampler without its input
    from images.main_job import measure_jvp_cost

    with pytest.raises(MissingConditioningError):
        measure_jvp_cost(m, 2, warmup=0, repeats=1)
    assert measure_jvp_cost(m, 2, warmup=0, repeats=2, cond=_cond(2))["jvp_cost"] > 0   # GENIE-AD's price, conditioned
    plain = build_unet("tiny", in_channels=3, resolution=8, **TINY_KW)
    with pytest.raises(ConfigError, match="not an upsampler"):
        run_upsample(tmp_path, checkpoint=plain, head=None, num=2, quiet=True)
    with pytest.raises(ResolutionMismatchError, match="generates"):
        run_upsample(tmp_path, checkpoint=m, head=None, num=2, dataset="gaussian", quiet=True)   # 1-channel images
    with pytest.raises(CheckpointNotFoundError):
        run_upsample(tmp_path, checkpoint=tmp_path / "none.safetensors", head=None, num=2, quiet=True)
    from images.cli import main

    assert main(["upsample", "--checkpoint", str(tmp_path / "none.safetensors"), "--head", "none", "--nfe", "5",
                 "--num", "2", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.safetensors" in err and "--upsample-from 16" in err
