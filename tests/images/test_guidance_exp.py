"""The guidance experiment (python -m images guidance) end to end on a tiny random class-conditional model
with briefly distilled heads, and its verdict logic."""
from __future__ import annotations

import json

import pytest
import torch
from _images_helpers import TINY_KW, randomized

from images.checkpoint import load_model
from images.data import load_digits
from images.distill import DistillArgs, distill
from images.errors import CheckpointNotFoundError
from images.guidance_exp import TRAJ_METHODS, guidance_verdicts, run_guidance
from images.unet import build_unet


def _write_cond_dir(tmp_path):
    from images.checkpoint import FORMAT, atomic_save

    torch.manual_seed(0)
    m = randomized(build_unet("tiny", in_channels=1, resolution=16, num_classes=10, **{**TINY_KW, "dropout": 0.0}))
    with torch.no_grad():
        m.conv_out.weight.mul_(0.3)
        m.class_embed.weight.normal_(0.0, 1.0)
    d = tmp_path / "cond"
    d.mkdir()
    atomic_save({f"ema.{k}": v.contiguous() for k, v in m.state_dict().items()}, d / "model.safetensors",
                {"format": FORMAT, "kind": "weights", "model_config": json.dumps(m.config.to_dict()),
                 "train_args": json.dumps({"dataset": "digits"})})
    m = load_model(d / "model.safetensors")
    ds = load_digits()
    kw = dict(steps=4, batch_size=8, pool=16, threads=1, progress=False, eval_samples=0, checkpoint_every=4)
    for name, extra in (("eq81", {}), ("guided", {"guidance": "0:4"})):
        r = distill(DistillArgs(out=str(tmp_path / name), **kw, **extra), dataset=ds, teacher=m)
        (d / "heads").mkdir(exist_ok=True)
        (d / "heads" / f"{name}.safetensors").write_bytes(open(r["checkpoint"], "rb").read())
    return d


def test_guidance_experiment_end_to_end(tmp_path):
    d = _write_cond_dir(tmp_path)
    res = run_guidance(tmp_path / "out", cond_dir=d, ws=(0.0, 2.0), nfes=(4,), num=4, num_fd=20, threads=1, quiet=True)
    for f in ("results.json", "trajectory.csv", "equal_steps.csv", "fig6.csv", "guidance.md", "guidance.png", "samples_w0.png",
              "samples_w2.png"):
        assert (tmp_path / "out" / f).is_file(), f
    rows = {(r["method"], r["w"]): r for r in res["trajectory"]}
    assert len(rows) == 2 * len(TRAJ_METHODS)
    # w = 0: the eq. (81) heads reduce to the conditional head; every run kept its NFE budget
    assert all(r["actual_nfe"] <= 4 for r in res["trajectory"])
    # equal steps: no cost counted, so the exact guided derivative (a second-order step) beats DDIM
    eq = {(r["method"], r["w"], r["steps"]): r["rmse"] for r in res["equal_steps"]}
    assert eq[(TRAJ_METHODS[3][0], 2.0, 20)] < eq[(TRAJ_METHODS[0][0], 2.0, 20)]
    # the two references agree far better than any sampler is from them
    for w, ref in res["references"].items():
        assert ref["agreement_rmse"] < 0.1 * min(r["rmse"] for r in res["trajectory"] if r["w"] == float(w))
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["fd"] > 0 for r in res["fig6"])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["verdicts"] == res["verdicts"]


def test_guidance_verdicts_compare_the_right_rows():
    (dd, _, _), (e, _, _), (g, _, _), (ad, _, _) = TRAJ_METHODS[:4]
    rows = []
    for w, (ed, ee, eg) in {0.0: (3.0, 2.0, 2.0), 2.0: (3.0, 2.5, 1.0), 4.0: (3.0, 1.0, 2.0)}.items():
        for n in (10, 20):
            rows += [{"method": dd, "w": w, "nfe": n, "rmse": ed}, {"method": e, "w": w, "nfe": n, "rmse": ee},
                     {"method": g, "w": w, "nfe": n, "rmse": eg}, {"method": ad, "w": w, "nfe": n, "rmse": 0.1}]
    v = guidance_verdicts(rows, (0.0, 2.0, 4.0))
    assert v["guided_head_at_most_eq81"] == {"w=2,nfe=10": True, "w=2,nfe=20": True, "w=4,nfe=10": False,
                                             "w=4,nfe=20": False}
    assert not v["guided_head_at_most_eq81_all"] and v["genie_below_ddim_nfe10_all"]


def test_missing_models_are_named(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="README"):
        run_guidance(tmp_path / "o", cond_dir=tmp_path / "nothing", num=2, num_fd=2, quiet=True)


def test_all_full_runs_the_four_experiments(monkeypatch, tmp_path):
    """`python -m images all --full` runs guidance, encode, interpolate and upsample (each its defaults,
    into out/<command>) after the main job, and records the seconds each took."""
    from images import commands
    from images.cli import build_parser

    assert build_parser().parse_args(["all", "--full"]).full
    called = []
    for mod in commands._EXPERIMENTS():
        monkeypatch.setattr(mod, "run", lambda a, _m=mod: called.append((a.command, a.out)) or 0)
    times = commands.run_full_experiments(tmp_path, quiet=True)
    assert [c for c, _ in called] == ["guidance", "encode", "interpolate", "upsample"]
    assert all(out == str(tmp_path / c) for c, out in called)
    assert set(json.loads((tmp_path / "full_times.json").read_text())) == set(times) == {c for c, _ in called}
