"""NIfTI/PNG IO keeps arrays and geometry (spacing, origin, direction) through a write and read."""

from __future__ import annotations

import numpy as np
import pytest

from mambaeye.data import Geometry, read_image, write_image

nib = pytest.importorskip("nibabel")


def _rotation(deg: float) -> np.ndarray:
    # rotation about the third axis, then a flip of the first: a direction no axis-aligned reader gets right
    t = np.deg2rad(deg)
    r = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    return r @ np.diag([-1.0, 1.0, 1.0])


def test_nifti_3d_geometry_round_trip(tmp_path):
    geometry = Geometry((0.7, 1.3, 2.5), (-10.5, 20.0, 3.25), tuple(map(tuple, _rotation(30.0))))
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    path = write_image(tmp_path / "sub" / "case.nii.gz", array, geometry)
    back, g = read_image(path)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == np.int16
    assert g.allclose(geometry, atol=1e-5)
    # what another NIfTI reader sees: zooms are the spacing, the affine maps voxel (1, 2, 3) as ours does
    img = nib.load(str(path))
    np.testing.assert_allclose(img.header.get_zooms(), geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, [1, 2, 3]), geometry.index_to_world([1, 2, 3]),
                               atol=1e-4)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_nifti_2d_and_float_round_trip(tmp_path):
    geometry = Geometry((0.5, 2.0), (1.0, -4.0), ((0.0, 1.0), (1.0, 0.0)))
    array = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32)
    back, g = read_image(write_image(tmp_path / "slice.nii", array, geometry))
    np.testing.assert_array_equal(back, array)
    assert g.allclose(geometry) and g.ndim == 2


def test_png_round_trip_has_identity_geometry(tmp_path):
    pytest.importorskip("PIL")
    array = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    back, g = read_image(write_image(tmp_path / "mask.png", array, Geometry((2.0, 2.0), (0.0, 0.0),
                                                                            ((1.0, 0.0), (0.0, 1.0)))))
    np.testing.assert_array_equal(back, array)
    assert g == Geometry.identity(2)


def test_io_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported file type"):
        write_image(tmp_path / "x.mha", np.zeros((2, 2)))
    with pytest.raises(FileNotFoundError, match="no such image"):
        read_image(tmp_path / "absent.nii.gz")
    with pytest.raises(ValueError, match="2D geometry does not fit"):
        write_image(tmp_path / "x.nii.gz", np.zeros((2, 2, 2)), Geometry.identity(2))
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        read_image(tmp_path / "broken.nii.gz")
    with pytest.raises(ValueError, match="spacing must be positive"):
        Geometry((0.0, 1.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
