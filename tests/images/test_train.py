"""Training: exact resume (in process and after SIGTERM), NaN stop, DDP on CPU, named errors, learning."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import images.train as train_mod
from images.checkpoint import CHECKPOINT_NAME, load_model, read_metadata
from images.cli import main as cli_main
from images.errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    NonFiniteLossError,
    ResumeError,
)
from images.train import train

from _images_helpers import TINY_KW, cli_env, python, train_args


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / CHECKPOINT_NAME))


def _assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    assert any(k.startswith("optim.") for k in a) and any(k.startswith("ema.") for k in a)
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"tensors differ: {bad[:5]}"


def test_resume_is_bit_exact(tmp_path):
    kw = dict(steps=12, dropout=0.1)  # dropout on: its masks must be reproduced too
    train(train_args(tmp_path / "a", **kw))
    r1 = train(train_args(tmp_path / "b", **kw), stop_after=6)
    assert r1["step"] == 6 and read_metadata(tmp_path / "b")["step"] == 6
    r2 = train(train_args(tmp_path / "b", resume=True, **kw))
    assert r2["start_step"] == 6 and r2["step"] == 12
    _assert_bit_equal(_tensors(tmp_path / "a"), _tensors(tmp_path / "b"))
    # the uninterrupted run really moved: the weights differ from their initial values
    first = _tensors(tmp_path / "a")
    torch.manual_seed(3)
    assert read_metadata(tmp_path / "a")["train_seconds"] > 0 and first["model.conv_in.weight"].abs().sum() > 0


def _cli_train(out: Path, steps: int, *extra: str) -> list[str]:
    return [python(), "-m", "images", "train", "--dataset", "gaussian", "--config", "tiny", "--model-kwargs",
            json.dumps(TINY_KW), "--steps", str(steps), "--batch-size", "8", "--seed", "3", "--out", str(out),
            "--checkpoint-every", "1000000", "--threads", "1", "--no-progress", "--warmup", "2", "--lr", "2e-3", *extra]


def test_sigterm_writes_checkpoint_and_resume_matches_uninterrupted(tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli_train(run, 100000), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not (run / "run.json").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.5)  # let it take some steps
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err
    k = read_metadata(run)["step"]
    assert k >= 1
    done = subprocess.run(_cli_train(run, k + 3, "--resume"), env=cli_env(), capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    train(train_args(tmp_path / "straight", steps=k + 3, checkpoint_every=1000000))
    _assert_bit_equal(_tensors(run), _tensors(tmp_path / "straight"))
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert [s["start_step"] for s in sessions] == [0, k]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real = train_mod.dsm_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 7 else loss  # step 6 (0-based)

    monkeypatch.setattr(train_mod, "dsm_loss", flaky)
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as e:
        train(train_args(run, steps=12, checkpoint_every=4))
    assert e.value.step == 6 and e.value.last_checkpoint_step == 4
    assert "step 6" in str(e.value) and "step 4" in str(e.value) and str(run / CHECKPOINT_NAME) in str(e.value)
    assert read_metadata(run)["step"] == 4
    # the kept checkpoint is the one a clean run writes at step 4
    monkeypatch.setattr(train_mod, "dsm_loss", real)
    train(train_args(tmp_path / "clean", steps=4, checkpoint_every=4))
    _assert_bit_equal(_tensors(run), _tensors(tmp_path / "clean"))
    # the CLI reports it with exit status 3
    calls["n"] = 0
    monkeypatch.setattr(train_mod, "dsm_loss", flaky)
    rc = cli_main(["train", "--dataset", "gaussian", "--model-kwargs", json.dumps(TINY_KW), "--steps", "12", "--batch-size",
                   "8", "--out", str(tmp_path / "nan_cli"), "--checkpoint-every", "4", "--no-progress", "--threads", "1"])
    assert rc == 3


def test_resume_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(ResumeError, match="no checkpoint in"):
        train(train_args(tmp_path / "empty", resume=True))
    with pytest.raises(ResumeError, match="already holds a checkpoint"):
        train(train_args(tiny_checkpoint))
    with pytest.raises(CheckpointMismatchError) as e:
        train(train_args(tiny_checkpoint, resume=True, steps=10, model_kwargs={**TINY_KW, "ch": 16}, seed=4))
    msg = str(e.value)
    assert "model_config.ch: checkpoint 8 vs now 16" in msg and "seed: checkpoint 3 vs now 4" in msg


def test_checkpoint_errors_name_the_file(tmp_path, tiny_checkpoint):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointNotFoundError, match=str(missing)):
        load_model(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(os.urandom(300))
    with pytest.raises(CorruptCheckpointError, match=str(corrupt)):
        load_model(corrupt)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CorruptCheckpointError, match="not written by `python -m images`"):
        load_model(foreign)
    # weights of another config: missing / unexpected keys and shape mismatches listed
    from images.unet import get_config

    other = get_config("tiny", in_channels=1, resolution=8, **{**TINY_KW, "ch": 16, "ch_mult": (1, 2, 2)})
    with pytest.raises(CheckpointMismatchError) as e:
        load_model(tiny_checkpoint, config=other)
    msg = str(e.value)
    assert "missing keys" in msg and "shape mismatches" in msg and "conv_in.weight: checkpoint (8, 1, 3, 3) vs model (16, 1, 3, 3)" in msg


def test_cli_named_errors(tmp_path, capsys):
    assert cli_main(["train", "--dataset", "imagenet", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "known datasets: digits, patches, cifar10, mnist, folder" in capsys.readouterr().err
    assert cli_main(["train", "--config", "huge", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "known configs: tiny, small, cifar" in capsys.readouterr().err
    d = tmp_path / "no_cifar"
    assert cli_main(["train", "--dataset", "cifar10", "--data-dir", str(d), "--steps", "1", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert str(d) in err and "data_batch_1" in err
    assert cli_main(["train", "--resume", "--steps", "1", "--out", str(tmp_path / "z")]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert not (tmp_path / "z" / CHECKPOINT_NAME).exists()


def test_learns_a_single_gaussian(tmp_path):
    """A few hundred steps on N(mu, s^2 I) images: eps error far below the zero predictor's."""
    from images.data import GaussianImages
    from taylorsolve.diffusion import LinearVPSchedule

    run = tmp_path / "gauss"
    train(train_args(run, steps=200, batch_size=32, checkpoint_every=200, dropout=0.0, ema=0.98, warmup=20, lr=3e-3))
    model = load_model(run)
    ds = GaussianImages()
    g = torch.Generator().manual_seed(0)
    x0 = ds.draw(g, 512)
    t = 0.02 + 0.98 * torch.rand(512, generator=g, dtype=torch.float64)
    s = LinearVPSchedule()
    a, sg = s.alpha(t).float()[:, None, None, None], s.sigma(t).float()[:, None, None, None]
    xt = a * x0 + sg * torch.randn(x0.shape, generator=g)
    exact = ds.exact_eps(xt, a, sg)
    with torch.no_grad():
        pred = model(xt, t)
    err_model = float((pred - exact).square().mean())
    err_zero = float(exact.square().mean())
    assert err_model < 0.1 * err_zero, (err_model, err_zero)


def test_ddp_two_processes_on_cpu_matches_one_process(tmp_path):
    run = tmp_path / "ddp"
    cmd = [python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "images", "train",
           "--dataset", "gaussian", "--model-kwargs", json.dumps(TINY_KW), "--steps", "4", "--batch-size", "8", "--seed", "3",
           "--out", str(run), "--checkpoint-every", "2", "--threads", "1", "--no-progress", "--warmup", "2", "--lr", "2e-3",
           "--dropout", "0"]
    res = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = read_metadata(run)
    assert meta["step"] == 4 and meta["world_size"] == "2"
    model = load_model(run)
    assert model(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 1, 8, 8)
    # same global batch in one process: the same run up to summation order
    train(train_args(tmp_path / "single", steps=4, checkpoint_every=2, dropout=0.0))
    a, b = _tensors(run), _tensors(tmp_path / "single")
    for k in a:
        if k.startswith(("model.", "ema.")):
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a)
