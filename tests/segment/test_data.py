"""Dataset layouts (nnU-Net, MSD, image/mask folders) and the errors for bad data, each naming the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mambaeye.data import Geometry, read_image, write_image
from mambaeye.segment import SegConfig, train
from mambaeye.segment.data import open_source, read_case

from .conftest import TINY_2D, tiny_cfg


def _msd(root, mni3d, channels=2, declared=2):
    """A Decathlon folder from the MNI sub-volumes: 4D (X, Y, Z, C) images, 'modality', 'labels', 'training'."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for f in sorted((mni3d / "imagesTr").iterdir()):
        cid = f.name[: -len("_0000.nii.gz")]
        img, g = read_image(f)
        write_image(root / "imagesTr" / f"{cid}.nii.gz", np.stack([img * (c + 1) for c in range(channels)], -1), g)
        shutil.copy(mni3d / "labelsTr" / f"{cid}.nii.gz", root / "labelsTr" / f"{cid}.nii.gz")
        entries.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    info = {"name": "Brain", "tensorImageSize": "4D", "modality": {str(c): f"T1x{c + 1}" for c in range(declared)},
            "labels": {"0": "background", "1": "other", "2": "gray_matter", "3": "white_matter"},
            "numTraining": len(entries), "training": entries, "test": []}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def test_msd_layout_reads_4d_multichannel_images(mni3d, tmp_path):
    src = open_source(_msd(tmp_path / "Task01_Brain", mni3d))
    assert src.layout == "msd" and src.in_channels == 2 and src.num_classes == 4 and len(src.train) == 2
    image, label, geometry = read_case(src.train[0], src, 3)
    ref, g = read_image(mni3d / "imagesTr" / f"{src.train[0].case_id}_0000.nii.gz")
    assert image.shape == (2,) + ref.shape and np.allclose(image[1], 2 * ref) and label.shape == ref.shape
    assert geometry.allclose(g)


def test_msd_wrong_channel_count_names_the_file(mni3d, tmp_path):
    src = open_source(_msd(tmp_path / "Task02", mni3d, channels=3, declared=2))
    with pytest.raises(ValueError, match=r"imagesTr/.*\.nii\.gz: case .* has 3 channels, the dataset declares 2"):
        read_case(src.train[0], src, 3)


def _folder(root, mni2d, n=4, binary=True):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for f in sorted((mni2d / "imagesTr").iterdir())[:n]:
        cid = f.name[: -len("_0000.nii.gz")]
        img, _ = read_image(f)
        lab, _ = read_image(mni2d / "labelsTr" / f"{cid}.nii.gz")
        write_image(root / "images" / f"{cid}.png", (255 * img / img.max()).astype(np.uint8))
        mask = (lab > 0).astype(np.uint8) * 255 if binary else lab.astype(np.uint8)
        write_image(root / "masks" / f"{cid}.png", mask)
    return root


def test_image_mask_folders_read_and_train(mni2d, tmp_path):
    src = open_source(_folder(tmp_path / "brain", mni2d))
    assert src.layout == "folder" and src.in_channels == 1 and src.labels == {"background": 0, "class_1": 1}
    image, label, geometry = read_case(src.train[0], src, 2)
    assert image.shape[0] == 1 and set(np.unique(label)) == {0, 1}  # 0/255 masks read as binary
    assert geometry.spacing == (1.0, 1.0)
    result = train(tiny_cfg(TINY_2D, tmp_path / "brain", tmp_path / "run", epochs=1, iterations_per_epoch=1))
    assert result["evaluation"]["split"] == "val" and result["evaluation"]["classes"] == ["class_1"]


def test_bad_data_errors_name_the_file(mni2d, tmp_path):
    # image without a mask
    root = _folder(tmp_path / "f1", mni2d, n=2)
    (root / "masks" / sorted(p.name for p in (root / "masks").iterdir())[0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing mask for .*f1/images/.*\.png"):
        open_source(root)
    # image without a label, nnU-Net layout
    nn = tmp_path / "nn"
    shutil.copytree(mni2d, nn)
    victim = sorted((nn / "labelsTr").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing label for .*imagesTr.*expected .*{victim.name}"):
        open_source(nn)
    # empty folders
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty/images holds no images"):
        open_source(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a dataset folder"):
        open_source(tmp_path / "empty" / "images")

    def fresh(name):
        d = tmp_path / name
        shutil.copytree(mni2d, d)
        src = open_source(d)
        return d, src, src.train[0]

    # label shape differs from the image
    d, src, case = fresh("shape")
    lab, g = read_image(case.label)
    write_image(case.label, lab[:-1], g)
    with pytest.raises(ValueError, match=rf"{case.label.name}: label shape .* differs from image shape"):
        read_case(case, src, 2)
    # label spacing differs from the image
    d, src, case = fresh("spacing")
    lab, g = read_image(case.label)
    write_image(case.label, lab, Geometry((g.spacing[0] * 2, g.spacing[1]), g.origin, g.direction))
    with pytest.raises(ValueError, match=rf"{case.label.name}: label spacing .* differs from image spacing"):
        read_case(case, src, 2)
    # label values outside the declared classes
    d, src, case = fresh("values")
    lab, g = read_image(case.label)
    lab[0, 0] = 7
    write_image(case.label, lab, g)
    with pytest.raises(ValueError, match=rf"{case.label.name}: label values \[7\] are not among the dataset's"):
        read_case(case, src, 2)
    # unreadable image file
    d, src, case = fresh("garbage")
    case.images[0].write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match=rf"cannot read image .*{case.images[0].name}"):
        read_case(case, src, 2)
    # 3D data read as 2D
    with pytest.raises(ValueError, match=r"is not a 2D image"):
        d3 = tmp_path / "as3d"
        shutil.copytree(mni2d, d3)
        src = open_source(d3)
        img, g = read_image(src.train[0].images[0])
        write_image(src.train[0].images[0], np.stack([img, img], -1), None)
        read_case(src.train[0], src, 2)
    # and through train(): the error reaches the caller
    with pytest.raises(ValueError, match="label values"):
        train(tiny_cfg(TINY_2D, tmp_path / "values", tmp_path / "run"))


def test_predict_wrong_channel_count_names_the_file(mni2d, tmp_path):
    from mambaeye.segment import predict

    run = tmp_path / "run"
    train(tiny_cfg(TINY_2D, mni2d, run, epochs=1, iterations_per_epoch=1, val_cases=[]))
    rgb = tmp_path / "rgb.png"
    write_image(rgb, np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.png: has 3 channels, the model takes 1"):
        predict(run, [rgb], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        predict(run, [tmp_path / "missing.nii.gz"], tmp_path / "out")


def test_config_checks_and_shipped_configs():
    from pathlib import Path

    from mambaeye.segment import config_task, load_seg_config
    from mambaeye.train.config import ConfigError

    root = Path(__file__).resolve().parents[2] / "configs"
    for name, dims in (("seg_mni152_2d_umamba", 2), ("seg_dsb2018_swin_umamba", 2), ("seg_mni152_3d_umamba", 3)):
        assert config_task(root / f"{name}.yaml") == "segmentation"
        cfg = load_seg_config(root / f"{name}.yaml")
        assert cfg.spatial_dims == dims and cfg.dataset and len(cfg.patch_size) == dims
    assert config_task(root / "classification_digits.yaml") == "classification"
    with pytest.raises(ConfigError, match=r"unknown config key 'patchsize' .*did you mean 'patch_size'"):
        load_seg_config(None, {"dataset": "mni152_brain_2d", "patchsize": [8, 8]})
    with pytest.raises(ConfigError, match="'patch_size' needs 3 positive ints"):
        SegConfig(dataset="mni152_brain", spatial_dims=3, patch_size=[8, 8])
    with pytest.raises(ConfigError, match="exactly one of config keys 'dataset'"):
        SegConfig()
    with pytest.raises(ConfigError, match="'normalization'"):
        SegConfig(dataset="x", normalization="minmax")


def test_patch_size_must_fit_the_network_stride(mni2d, tmp_path):
    from mambaeye.train.config import ConfigError

    with pytest.raises(ConfigError, match=r"'patch_size' \[30, 32\] is not divisible by umamba_bot's total stride"):
        train(tiny_cfg(TINY_2D, mni2d, tmp_path / "run", patch_size=[30, 32]))
