"""Built-in real datasets, prepared small into tmp_path: nnU-Net layout, dataset.json, labels, geometry."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from mambaeye.data import load_case, mni152_volume, prepare_builtin, read_image, read_nnunet_raw

pytest.importorskip("nibabel")
needs_nilearn = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                   reason="pip install --no-deps nilearn")
needs_stardist = pytest.mark.skipif(
    importlib.util.find_spec("stardist") is None or importlib.util.find_spec("tifffile") is None,
    reason="pip install --no-deps stardist tifffile",
)


def _check_layout(root, n_train, n_test, labels, spatial_dims, channel):
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == n_train and meta["numTest"] == n_test and meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == labels and meta["channel_names"] == {"0": channel}
    assert meta["tensorImageSize"] == f"{spatial_dims}D"
    assert len(list((root / "imagesTr").glob("*_0000.nii.gz"))) == n_train
    assert len(list((root / "labelsTr").glob("*.nii.gz"))) == n_train
    assert len(list((root / "imagesTs").glob("*_0000.nii.gz"))) == n_test
    train, test = read_nnunet_raw(root), read_nnunet_raw(root, "test")
    assert len(train) == n_train and len(test) == n_test
    assert not {c.case_id for c in train.cases} & {c.case_id for c in test.cases}
    seen = set()
    for case in train.cases + test.cases:
        image, label, geometry = load_case(case, train)
        assert image.shape[0] == 1 and image.shape[1:] == label.shape and label.ndim == spatial_dims
        assert geometry.ndim == spatial_dims
        seen |= set(np.unique(label).tolist())
    assert seen == set(labels.values())
    return train, test


@needs_nilearn
def test_mni152_brain_3d(tmp_path):
    root = prepare_builtin("mni152_brain", tmp_path, downsample=4, grid=(1, 2, 2), num_test=1)
    assert root.name == "Dataset991_MNI152Brain3D"
    labels = {"background": 0, "other": 1, "gray_matter": 2, "white_matter": 3}
    train, test = _check_layout(root, 3, 1, labels, 3, "T1")

    # cases are the grid cells of the 4 mm volume, with origins at their first voxel's world position
    t1, label, geometry = mni152_volume(4)
    assert t1.shape == (49, 58, 47) and geometry.spacing == (4.0, 4.0, 4.0)
    # the 1 mm template starts at (-98, -134, -72); a 4 mm block's centre is 1.5 mm further on
    np.testing.assert_allclose(geometry.origin, (-96.5, -132.5, -70.5))
    image, lab, g = load_case(train[1])  # grid cell (0, 0, 1): z from 23
    np.testing.assert_array_equal(lab, label[:, :29, 23:])
    np.testing.assert_allclose(image[0], t1[:, :29, 23:])
    np.testing.assert_allclose(g.origin, geometry.index_to_world([0, 0, 23]), atol=1e-4)
    assert g.spacing == pytest.approx((4.0, 4.0, 4.0))
    # tissue rule: grey matter lies between "other" and white matter in T1 intensity
    means = [t1[label == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]
    assert float(t1.min()) >= 0.0 and float(t1.max()) <= 1.0

    with pytest.raises(FileExistsError, match="overwrite=True"):
        prepare_builtin("mni152_brain", tmp_path, downsample=4)
    prepare_builtin("mni152_brain", tmp_path, downsample=8, num_test=1, overwrite=True)
    assert read_nnunet_raw(root)[0].images[0].is_file()


@needs_nilearn
def test_mni152_brain_2d(tmp_path):
    root = prepare_builtin("mni152_brain_2d", tmp_path, downsample=4, num_slices=5, num_test=2)
    labels = {"background": 0, "other": 1, "gray_matter": 2, "white_matter": 3}
    _check_layout(root, 3, 2, labels, 2, "T1")
    _, g = read_image(next((root / "imagesTr").iterdir()))
    assert g.spacing == pytest.approx((4.0, 4.0))
    np.testing.assert_allclose(g.origin, (-96.5, -132.5))


@needs_stardist
def test_dsb2018_nuclei(tmp_path):
    import tifffile

    root = prepare_builtin("dsb2018_nuclei", tmp_path, tile=256, num_test=1)
    assert root.name == "Dataset993_DSB2018Nuclei"
    train, _ = _check_layout(root, 3, 1, {"background": 0, "nucleus": 1}, 2, "fluorescence")
    # tile 1 is the top-right quarter of the original image, pixel for pixel
    src = importlib.util.find_spec("stardist").origin
    original = tifffile.imread(src.replace("__init__.py", "data/images/img2d.tif"))
    mask = tifffile.imread(src.replace("__init__.py", "data/images/mask2d.tif"))
    image, label, _ = load_case(train[1])
    np.testing.assert_array_equal(image[0], original[:256, 256:])
    np.testing.assert_array_equal(label, mask[:256, 256:] > 0)


def test_prepare_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown built-in dataset 'nope'"):
        prepare_builtin("nope", tmp_path)
    if importlib.util.find_spec("stardist") is not None:
        with pytest.raises(ValueError, match="num_test"):
            prepare_builtin("dsb2018_nuclei", tmp_path, tile=256, num_test=4)
