r"""Image datasets for the pipeline, all offline: nothing is ever downloaded.

Every dataset gives images as ``float32`` tensors ``[N, C, H, W]`` in ``[-1, 1]`` (the scale of the
diffusion models, GENIE app. C.1) and, where it has them, integer class labels.

========== ============================================================================ ===========
name        source                                                                       size
========== ============================================================================ ===========
``digits``  scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels, labels 0-9),    1 x 16 x 16
            bilinearly resized to 16x16; fixed held-out split (20 % of each class)
``patches`` random 32x32 RGB crops (random horizontal flips) of the photographs that      3 x 32 x 32
            scikit-image and scikit-learn ship, downscaled by ``scale`` (default 1/2);
            the photographs in :data:`PATCHES_HELD_OUT` are held out whole (their
            non-overlapping crops are the evaluation set); unlabelled
``cifar10`` the python batches (``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``)  3 x 32 x 32
            read from ``--data-dir``; training draws random horizontal flips
``mnist``   the idx files (``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``,      1 x 28 x 28
            optionally ``.gz``) read from ``--data-dir``
``folder``  ``--data-dir/<class name>/<image files>`` (Pillow), one folder per class,       C x R x R
            resized to ``resolution``; a fixed 10 % of each class held out
``gaussian`` a single Gaussian image distribution ``N(mu, s^2 I)`` with an exact eps       1 x 8 x 8
            (:meth:`GaussianImages.exact_eps`), for learning checks
========== ============================================================================ ===========

Training batches are a pure function of ``(seed, step)`` (:meth:`ImageDataset.batch`): finite sets are
read in epoch order with a fresh permutation per epoch (seeded by ``(seed, epoch)``), the on-the-fly
sets draw from a generator seeded by ``(seed, step)``.  So a resumed run sees exactly the batches
of an uninterrupted one, and ``torchrun`` ranks take disjoint slices of the same global batch.

scikit-learn and scikit-image are needed only for ``digits`` and ``patches`` (the ``images`` extra).
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, DatasetNotFoundError, UnknownNameError

__all__ = [
    "DATASETS",
    "ImageDataset",
    "TensorImages",
    "RandomPatches",
    "GaussianImages",
    "load_dataset",
    "derived_seed",
    "step_generator",
    "PATCHES_TRAIN",
    "PATCHES_HELD_OUT",
]

#: photographs used for ``patches`` training (scikit-image names; ``china`` / ``flower`` are scikit-learn's)
PATCHES_TRAIN = ("astronaut", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel", "china")
#: photographs held out whole for evaluation
PATCHES_HELD_OUT = ("coffee", "flower")


# ------------------------------------------------------------------------------------------------
# seeding: every random draw of training is a function of (seed, step, stream)
# ------------------------------------------------------------------------------------------------
def derived_seed(*keys: int) -> int:
    """A 63-bit seed from integers (numpy's ``SeedSequence``: well mixed, stable across versions)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by ``(seed, step, stream)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(seed, step, stream))
    return g


# ------------------------------------------------------------------------------------------------
# base class
# ------------------------------------------------------------------------------------------------
class ImageDataset:
    """A training distribution of images in ``[-1, 1]`` plus a fixed held-out evaluation set.

    Attributes: ``name``, ``channels``, ``resolution``, ``num_classes`` (0: unlabelled), ``flip``
    (random horizontal flips in training batches).
    """

    name: str = "dataset"
    channels: int = 1
    resolution: int = 16
    num_classes: int = 0
    flip: bool = False

    def batch(self, seed: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The global training batch of ``step``: ``(x [size, C, H, W] float32, labels [size] or None)``."""
        raise NotImplementedError

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fixed evaluation set ``(x, labels or None)`` (never used in training)."""
        raise NotImplementedError

    def train_images(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A fixed set of training images (all of a finite set; a fixed draw of an on-the-fly one)."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "num_classes": self.num_classes, "flip": self.flip}

    def _maybe_flip(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not self.flip:
            return x
        mask = torch.rand(x.shape[0], generator=gen, dtype=torch.float32) < 0.5
        return torch.where(mask[:, None, None, None], x.flip(-1), x)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]``; float tensors are returned as float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 127.5 - 1.0
    return images.to(torch.float32)


class TensorImages(ImageDataset):
    """A finite dataset held in memory (uint8 or float32 ``[N, C, H, W]``), read in epoch order.

    The sample at global position ``k = step * size + i`` of the stream is
    ``perm_e[k mod N]`` with ``e = k div N`` and ``perm_e`` a permutation seeded by ``(seed, e)``.
    """

    def __init__(self, name: str, train: torch.Tensor, train_labels: torch.Tensor | None, test: torch.Tensor,
                 test_labels: torch.Tensor | None, num_classes: int, flip: bool = False):
        if train.ndim != 4 or train.shape[-1] != train.shape[-2]:
            raise ValueError(f"{name}: images must be square [N, C, H, W], got {tuple(train.shape)}")
        self.name = name
        self.train, self.train_labels = train, train_labels
        self.test, self.test_labels = test, test_labels
        self.channels, self.resolution = int(train.shape[1]), int(train.shape[-1])
        self.num_classes = int(num_classes)
        self.flip = bool(flip)
        self._perm_cache: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self.train.shape[0])

    def _perm(self, seed: int, epoch: int) -> torch.Tensor:
        key = (seed, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            g = torch.Generator().manual_seed(derived_seed(seed, epoch, 17))
            self._perm_cache[key] = torch.randperm(len(self), generator=g)
        return self._perm_cache[key]

    def indices(self, seed: int, step: int, size: int) -> torch.Tensor:
        """Dataset indices of the global batch of ``step`` (epoch order, see the class docstring)."""
        n = len(self)
        pos = torch.arange(step * size, (step + 1) * size, dtype=torch.int64)
        epochs = pos // n
        out = torch.empty(size, dtype=torch.int64)
        for e in torch.unique(epochs).tolist():
            m = epochs == e
            out[m] = self._perm(seed, int(e))[pos[m] % n]
        return out

    def batch(self, seed: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.indices(seed, step, size)
        x = _to_float(self.train[idx])
        x = self._maybe_flip(x, step_generator(seed, step, 18))
        y = None if self.train_labels is None else self.train_labels[idx]
        return x, y

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _to_float(self.test), self.test_labels

    def train_images(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _to_float(self.train), self.train_labels


def _stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-class split: ``round(fraction * n_c)`` of each class held out (numpy ``RandomState(seed)``)."""
    rs = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rs.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------
def load_digits(resolution: int = 16, held_out_fraction: float = 0.2) -> TensorImages:
    """scikit-learn's digits in ``[-1, 1]`` (``x / 8 - 1``), bilinearly resized to ``resolution``."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as exc:  # pragma: no cover - the images extra
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install 'taylorsolve[images]'") from exc
    d = _sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32))[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(-1, 1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    tr, te = _stratified_split(d.target, held_out_fraction, seed=0)
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return TensorImages("digits", x[tr_t].contiguous(), labels[tr_t], x[te_t].contiguous(), labels[te_t], 10)


# ------------------------------------------------------------------------------------------------
# patches of the bundled photographs
# ------------------------------------------------------------------------------------------------
def _photograph(name: str) -> np.ndarray:
    """An RGB uint8 photograph shipped with scikit-image (or scikit-learn: ``china``, ``flower``)."""
    if name in ("china", "flower"):
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as exc:  # pragma: no cover
            raise ImportError("the 'patches' dataset needs scikit-learn: pip install 'taylorsolve[images]'") from exc
        return load_sample_image(f"{name}.jpg")
    try:
        import skimage.data as skd
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the 'patches' dataset needs scikit-image: pip install 'taylorsolve[images]'") from exc
    img = getattr(skd, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def _photo_tensor(name: str, scale: float) -> torch.Tensor:
    img = torch.from_numpy(np.array(_photograph(name), dtype=np.uint8, copy=True)).permute(2, 0, 1).to(torch.float32)
    img = img / 127.5 - 1.0
    if scale != 1.0:
        h, w = img.shape[-2:]
        size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return img.clamp(-1, 1).contiguous()


class RandomPatches(ImageDataset):
    """Random ``size x size`` crops with random horizontal flips of the bundled photographs.

    Training crops come from :data:`PATCHES_TRAIN`, a photograph chosen with probability
    proportional to its number of crop positions; the held-out set is every non-overlapping crop of
    the photographs in :data:`PATCHES_HELD_OUT`.
    """

    name = "patches"
    channels = 3
    flip = True

    def __init__(self, resolution: int = 32, scale: float = 0.5, train_photos: tuple[str, ...] = PATCHES_TRAIN,
                 held_out_photos: tuple[str, ...] = PATCHES_HELD_OUT):
        self.resolution = int(resolution)
        self.scale = float(scale)
        self.photos = [_photo_tensor(n, scale) for n in train_photos]
        self.photo_names, self.held_out_names = tuple(train_photos), tuple(held_out_photos)
        r = self.resolution
        for n, p in zip(train_photos, self.photos):
            if p.shape[-1] < r or p.shape[-2] < r:
                raise ConfigError(f"photograph {n!r} at scale {scale} is smaller than a {r}x{r} crop")
        counts = torch.tensor([(p.shape[-2] - r + 1) * (p.shape[-1] - r + 1) for p in self.photos], dtype=torch.float64)
        self._weights = counts / counts.sum()
        self._held_out: torch.Tensor | None = None

    def draw(self, gen: torch.Generator, n: int) -> torch.Tensor:
        r = self.resolution
        which = torch.multinomial(self._weights, n, replacement=True, generator=gen)
        out = torch.empty(n, 3, r, r, dtype=torch.float32)
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        for i in range(n):
            p = self.photos[int(which[i])]
            top = int(u[i, 0] * (p.shape[-2] - r + 1))
            left = int(u[i, 1] * (p.shape[-1] - r + 1))
            out[i] = p[:, top:top + r, left:left + r]
        return self._maybe_flip(out, gen)

    def batch(self, seed: int, step: int, size: int) -> tuple[torch.Tensor, None]:
        return self.draw(step_generator(seed, step, 19), size), None

    def held_out(self) -> tuple[torch.Tensor, None]:
        if self._held_out is None:
            r = self.resolution
            crops = []
            for n in self.held_out_names:
                p = _photo_tensor(n, self.scale)
                for top in range(0, p.shape[-2] - r + 1, r):
                    for left in range(0, p.shape[-1] - r + 1, r):
                        crops.append(p[:, top:top + r, left:left + r])
            self._held_out = torch.stack(crops)
        return self._held_out, None

    def train_images(self) -> tuple[torch.Tensor, None]:
        return self.draw(torch.Generator().manual_seed(12345), 2048), None


# ------------------------------------------------------------------------------------------------
# a single Gaussian image distribution (exact eps), for learning checks
# ------------------------------------------------------------------------------------------------
class GaussianImages(ImageDataset):
    r"""``x_0 ~ N(mu, s^2 I)`` with a smooth mean image ``mu`` (a product of sines, amplitude 0.5).

    Under ``x_t = alpha x_0 + sigma eps`` the exact eps-prediction (the DSM minimiser) is
    ``E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2)``.
    """

    name = "gaussian"

    def __init__(self, resolution: int = 8, channels: int = 1, std: float = 0.3):
        self.resolution, self.channels, self.std = int(resolution), int(channels), float(std)
        u = torch.linspace(0.0, math.pi, self.resolution, dtype=torch.float32)
        mu = 0.5 * torch.sin(u)[:, None] * torch.sin(2 * u)[None, :]
        self.mean = mu.expand(self.channels, -1, -1).contiguous()

    def draw(self, gen: torch.Generator, n: int) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, *self.shape, generator=gen, dtype=torch.float32)

    def batch(self, seed: int, step: int, size: int) -> tuple[torch.Tensor, None]:
        return self.draw(step_generator(seed, step, 20), size), None

    def held_out(self) -> tuple[torch.Tensor, None]:
        return self.draw(torch.Generator().manual_seed(54321), 512), None

    def train_images(self) -> tuple[torch.Tensor, None]:
        return self.draw(torch.Generator().manual_seed(12345), 512), None

    def exact_eps(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``E[eps | x_t]``; ``alpha``, ``sigma`` broadcastable to ``x`` (e.g. ``[B, 1, 1, 1]``)."""
        mean = self.mean.to(x)
        return sigma * (x - alpha * mean) / (alpha**2 * self.std**2 + sigma**2)


# ------------------------------------------------------------------------------------------------
# datasets read from --data-dir
# ------------------------------------------------------------------------------------------------
_CIFAR_LAYOUT = (
    "the CIFAR-10 python version: <data-dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5 and test_batch "
    "(or those files directly in <data-dir>), as unpacked from cifar-10-python.tar.gz"
)
_MNIST_LAYOUT = (
    "the MNIST idx files in <data-dir> (or <data-dir>/MNIST/raw): train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz)"
)
_FOLDER_LAYOUT = "one sub-folder per class, <data-dir>/<class name>/<image>.png|jpg|jpeg|bmp|gif|webp (read with Pillow)"


def _need_dir(data_dir: str | os.PathLike | None, dataset: str, layout: str) -> Path:
    if data_dir is None:
        raise DatasetNotFoundError(f"dataset {dataset!r} is read from a local folder: pass --data-dir DIR holding {layout}")
    p = Path(data_dir)
    if not p.is_dir():
        raise DatasetNotFoundError(f"dataset {dataset!r}: folder {str(p)!r} does not exist; expected {layout}")
    return p


def load_cifar10(data_dir: str | os.PathLike | None) -> TensorImages:
    """CIFAR-10 from its python batches (pickled dicts with ``b'data'`` uint8 ``[10000, 3072]``, ``b'labels'``)."""
    root = _need_dir(data_dir, "cifar10", _CIFAR_LAYOUT)
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset 'cifar10': {', '.join(missing)} not found in {str(base)!r}; expected {_CIFAR_LAYOUT}"
        )

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(base / name, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return data, np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as exc:  # noqa: BLE001
            raise DatasetNotFoundError(f"dataset 'cifar10': cannot read {str(base / name)!r} ({exc}); expected {_CIFAR_LAYOUT}") from exc

    parts = [read(n) for n in names[:5]]
    tx, ty = read("test_batch")
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImages("cifar10", x, y, torch.from_numpy(tx), torch.from_numpy(ty), 10, flip=True)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"not an unsigned-byte idx file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"idx file holds {arr.size} bytes, header says {dims}")
    return arr.reshape(dims)


def load_mnist(data_dir: str | os.PathLike | None) -> TensorImages:
    """MNIST from its idx files (big-endian header, uint8 payload)."""
    root = _need_dir(data_dir, "mnist", _MNIST_LAYOUT)
    bases = [root, root / "MNIST" / "raw", root / "raw"]
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

    def find(stem: str) -> Path | None:
        for b in bases:
            for suffix in ("", ".gz"):
                p = b / (stem + suffix)
                if p.is_file():
                    return p
        return None

    paths = {s: find(s) for s in stems}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise DatasetNotFoundError(f"dataset 'mnist': {', '.join(missing)} not found under {str(root)!r}; expected {_MNIST_LAYOUT}")
    try:
        arrs = {s: _read_idx(p) for s, p in paths.items()}  # type: ignore[arg-type]
    except (ValueError, OSError) as exc:
        raise DatasetNotFoundError(f"dataset 'mnist': cannot read the idx files under {str(root)!r} ({exc})") from exc
    tx = torch.from_numpy(arrs[stems[0]].copy())[:, None]
    ty = torch.from_numpy(arrs[stems[1]].astype(np.int64))
    vx = torch.from_numpy(arrs[stems[2]].copy())[:, None]
    vy = torch.from_numpy(arrs[stems[3]].astype(np.int64))
    return TensorImages("mnist", tx, ty, vx, vy, 10)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_folder(data_dir: str | os.PathLike | None, resolution: int | None = None, channels: int | None = None,
                held_out_fraction: float = 0.1) -> TensorImages:
    """Images in one folder per class (sorted class names are the labels 0..K-1), resized to ``resolution``.

    ``channels`` 1 (grey) or 3 (RGB); default 1 if every image is greyscale, else 3.  Without
    ``resolution`` all images must share one square size.
    """
    from PIL import Image

    root = _need_dir(data_dir, "folder", _FOLDER_LAYOUT)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for k, c in enumerate(classes):
        files += [(p, k) for p in sorted((root / c).iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise DatasetNotFoundError(f"dataset 'folder': no images found in {str(root)!r}; expected {_FOLDER_LAYOUT}")
    images = []
    for p, _ in files:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
        except Exception as exc:  # noqa: BLE001 - Pillow raises several types
            raise DatasetNotFoundError(f"dataset 'folder': cannot read image {str(p)!r} ({exc})") from exc
    if channels is None:
        channels = 1 if all(im.mode in ("L", "1", "I;16", "I") for im in images) else 3
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    if resolution is None:
        sizes = {im.size for im in images}
        if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
            raise ConfigError(
                f"dataset 'folder': images in {str(root)!r} have sizes {sorted(sizes)[:4]}...; pass --resolution R "
                "to resize them to R x R"
            )
        resolution = next(iter(sizes))[0]
    arrs = []
    for im in images:
        im = im.convert(mode)
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.BICUBIC)
        a = np.asarray(im, dtype=np.uint8)
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrs))
    labels = np.array([k for _, k in files], dtype=np.int64)
    tr, te = _stratified_split(labels, held_out_fraction, seed=0)
    y = torch.from_numpy(labels)
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    ds = TensorImages("folder", x[tr_t], y[tr_t], x[te_t], y[te_t], len(classes))
    ds.class_names = classes  # type: ignore[attr-defined]
    return ds


#: dataset name -> loader ``f(data_dir=None, **options)``
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": lambda data_dir=None, **kw: load_digits(**kw),
    "patches": lambda data_dir=None, **kw: RandomPatches(**kw),
    "cifar10": lambda data_dir=None, **kw: load_cifar10(data_dir, **kw),
    "mnist": lambda data_dir=None, **kw: load_mnist(data_dir, **kw),
    "folder": lambda data_dir=None, **kw: load_folder(data_dir, **kw),
    "gaussian": lambda data_dir=None, **kw: GaussianImages(**kw),
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> ImageDataset:
    """The dataset ``name`` (see the module table); ``data_dir`` for ``cifar10``, ``mnist``, ``folder``.

    Raises :class:`UnknownNameError` (known names listed) and :class:`DatasetNotFoundError` (folder and
    expected layout named).
    """
    if name not in DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name](data_dir=data_dir, **options)
