"""The nnU-Net raw reader on small synthetic folders, including each bad-data error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mambaeye.data import Geometry, load_case, read_nnunet_raw, write_dataset_json, write_image

pytest.importorskip("nibabel")

GEOM = Geometry((1.5, 1.5, 3.0), (10.0, -5.0, 2.0), ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)))


def _make(root, n_cases=3, channels=2):
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        for c in range(channels):
            write_image(root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz", rng.random((6, 5, 4), np.float32), GEOM)
        write_image(root / "labelsTr" / f"case_{i:03d}.nii.gz", rng.integers(0, 3, (6, 5, 4)).astype(np.uint8), GEOM)
    write_dataset_json(root, {"0": "T1", "1": "T2"}, {"background": 0, "a": 1, "b": 2}, n_cases)
    return root


def test_reader_lists_and_loads_cases(tmp_path):
    ds = read_nnunet_raw(_make(tmp_path / "Dataset001_Toy"))
    assert [c.case_id for c in ds.cases] == ["case_000", "case_001", "case_002"]
    assert [p.name for p in ds[1].images] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert ds.num_classes == 3 and ds.file_ending == ".nii.gz" and ds.channel_names == {"0": "T1", "1": "T2"}
    image, label, geometry = load_case(ds[0], ds)
    assert image.shape == (2, 6, 5, 4) and image.dtype == np.float32
    assert label.shape == (6, 5, 4) and set(np.unique(label)) <= {0, 1, 2}
    assert geometry.allclose(GEOM)


def test_reader_errors(tmp_path):
    root = _make(tmp_path / "Dataset001_Toy")
    with pytest.raises(FileNotFoundError, match="dataset.json is missing"):
        read_nnunet_raw(tmp_path)
    with pytest.raises(FileNotFoundError, match="imagesTs is missing"):
        read_nnunet_raw(root, "test")

    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 5}))
    with pytest.raises(ValueError, match="numTraining is 5"):
        read_nnunet_raw(root)
    (root / "dataset.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "labels"}))
    with pytest.raises(ValueError, match="missing fields \\['labels'\\]"):
        read_nnunet_raw(root)
    (root / "dataset.json").write_text(json.dumps(meta))

    (root / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing label for .*case_002_0000.nii.gz"):
        read_nnunet_raw(root)
    write_image(root / "labelsTr" / "case_002.nii.gz", np.full((6, 5, 4), 7, np.uint8), GEOM)
    ds = read_nnunet_raw(root)
    with pytest.raises(ValueError, match=r"case_002.nii.gz: labels \[7\] are not declared"):
        load_case(ds[2], ds)

    write_image(root / "labelsTr" / "case_002.nii.gz", np.zeros((6, 5, 4), np.uint8), Geometry.identity(3))
    with pytest.raises(ValueError, match="case_002.nii.gz: label geometry"):
        load_case(read_nnunet_raw(root)[2])
    write_image(root / "labelsTr" / "case_002.nii.gz", np.zeros((6, 5, 3), np.uint8), GEOM)
    with pytest.raises(ValueError, match="case_002.nii.gz: label shape"):
        load_case(read_nnunet_raw(root)[2])

    (root / "imagesTr" / "case_001_0001.nii.gz").unlink()
    with pytest.raises(ValueError, match="case case_001 .* has channels \\[0\\], dataset.json declares 2"):
        read_nnunet_raw(root)
    (root / "imagesTr" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: image names must look like"):
        read_nnunet_raw(root)
