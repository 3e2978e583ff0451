"""Datasets of the image pipeline: shapes, ranges, fixed splits, deterministic batches, local readers, errors."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from images.data import (
    PATCHES_HELD_OUT,
    PATCHES_TRAIN,
    GaussianImages,
    RandomPatches,
    load_dataset,
    load_digits,
)
from images.errors import DatasetNotFoundError, UnknownNameError


def test_digits_shape_range_split():
    ds = load_digits()
    x, y = ds.train_images()
    xt, yt = ds.held_out()
    assert x.shape == (1438, 1, 16, 16) and xt.shape == (359, 1, 16, 16)  # round(0.2 n_c) per class
    assert x.dtype == torch.float32 and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(x.min()) == -1.0 and float(x.max()) > 0.99  # the full range is used
    # stratified: every class about 20 % held out
    for c in range(10):
        n_tr, n_te = int((y == c).sum()), int((yt == c).sum())
        assert abs(n_te / (n_tr + n_te) - 0.2) < 0.01
    # fixed: a second load gives the same split
    xt2, _ = load_digits().held_out()
    assert torch.equal(xt, xt2)


def test_digits_images_and_labels_stay_aligned():
    """Each resized training image, pooled back to 8x8, is nearest to a raw digit of its own label."""
    from sklearn.datasets import load_digits as sk

    ds = load_digits()
    x, y = ds.train_images()
    x8 = torch.nn.functional.avg_pool2d(x[:50], 2)[:, 0]
    d = sk()
    raw = torch.from_numpy(d.images.astype(np.float32)) / 8 - 1
    nearest = (x8[:, None] - raw[None]).square().flatten(2).sum(-1).argmin(1)
    assert torch.equal(torch.from_numpy(d.target)[nearest], y[:50])


def test_batches_are_a_function_of_seed_and_step_and_cover_an_epoch():
    ds = load_digits()
    a, ya = ds.batch(3, 5, 64)
    b, yb = ds.batch(3, 5, 64)
    c, _ = ds.batch(3, 6, 64)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    n = len(ds)
    idx = torch.cat([ds.indices(0, s, 100) for s in range(n // 100)])
    assert len(set(idx.tolist())) == len(idx)  # no repeats within the first epoch


def test_patches_crops_flips_and_held_out_photographs():
    ds = RandomPatches()
    assert set(PATCHES_TRAIN).isdisjoint(PATCHES_HELD_OUT)
    x, y = ds.batch(0, 0, 16)
    assert y is None and x.shape == (16, 3, 32, 32)
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and float(x.std()) > 0.05
    held, _ = ds.held_out()
    assert held.shape[1:] == (3, 32, 32) and held.shape[0] > 50
    # flips: with flips off the same crops come out unflipped; some of the flipped ones differ
    ds2 = RandomPatches()
    ds2.flip = False
    x2, _ = ds2.batch(0, 0, 16)
    same = [bool(torch.equal(x[i], x2[i])) for i in range(16)]
    mirrored = [bool(torch.equal(x[i], x2[i].flip(-1))) for i in range(16)]
    assert all(s or m for s, m in zip(same, mirrored)) and 0 < sum(mirrored) < 16


def test_gaussian_dataset_exact_eps_is_the_posterior_mean():
    ds = GaussianImages()
    g = torch.Generator().manual_seed(0)
    x0 = ds.draw(g, 20000)
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    eps = torch.randn(x0.shape, generator=g)
    xt = a * x0 + s * eps
    pred = ds.exact_eps(xt, a, s)
    # E[eps | x_t] is the best predictor: its error is below that of small perturbations of it
    base = (pred - eps).square().mean()
    assert base < (1.05 * pred - eps).square().mean() and base < (0.95 * pred - eps).square().mean()


def test_cifar10_python_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(4, 3072)).astype(np.uint8)
        data[0, :] = 0
        data[1, :] = 255
        with open(base / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [0, 1, 2, 9]}, f)
    ds = load_dataset("cifar10", tmp_path)
    x, y = ds.train_images()
    assert x.shape == (20, 3, 32, 32) and y.tolist()[:4] == [0, 1, 2, 9]
    assert float(x[0].max()) == -1.0 and float(x[1].min()) == 1.0
    assert ds.flip and ds.num_classes == 10 and ds.held_out()[0].shape == (4, 3, 32, 32)


def _write_idx(path, arr, gz=False):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_idx_files(tmp_path):
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "train-images-idx3-ubyte", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([7, 1, 4]))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:2], gz=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 3]), gz=True)
    ds = load_dataset("mnist", tmp_path)
    x, y = ds.train_images()
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [7, 1, 4]
    assert torch.allclose(x[0, 0], torch.from_numpy(imgs[0]).float() / 127.5 - 1)
    assert ds.held_out()[1].tolist() == [3, 3]


def test_folder_per_class(tmp_path):
    from PIL import Image

    for k, cls in enumerate(["cat", "ant", "bee"]):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(np.full((12, 12, 3), 20 * k + i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset("folder", tmp_path)
    assert ds.class_names == ["ant", "bee", "cat"] and ds.num_classes == 3 and ds.channels == 3
    x, y = ds.train_images()
    xt, yt = ds.held_out()
    assert x.shape[1:] == (3, 12, 12) and len(x) + len(xt) == 30 and sorted(set(yt.tolist())) == [0, 1, 2]
    # "ant" (label 0) was written with value 20 * 1 + i
    assert float(((x[y == 0] + 1) * 127.5).min()) >= 20 - 1e-4


@pytest.mark.parametrize("name", ["cifar10", "mnist", "folder"])
def test_missing_folder_names_folder_and_layout(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset(name, missing)
    assert str(missing) in str(e.value) and "expected" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset(name, None)


def test_empty_cifar_folder_lists_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*test_batch"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_lists_known():
    with pytest.raises(UnknownNameError, match="digits.*patches.*cifar10.*mnist.*folder"):
        load_dataset("imagenet")
