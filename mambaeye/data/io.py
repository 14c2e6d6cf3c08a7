"""Read and write NIfTI, PNG and TIFF images with their geometry (spacing, origin, direction).

Conventions: arrays keep the file's own axis order (nibabel's i, j, k for NIfTI; rows, columns for PNG/TIFF),
nothing is transposed. For NIfTI the geometry is the voxel-to-world affine split into parts, in the file's
RAS+ world frame (mm): ``affine[:n, :n] = direction @ diag(spacing)`` and ``affine[:n, n] = origin``, where
column ``a`` of ``direction`` is the unit vector of array axis ``a``. This is *not* ITK/SimpleITK's LPS frame
with reversed axes; convert there if mixing tools. PNG and TIFF carry no geometry: they read as 1 mm spacing,
zero origin, identity direction, and writing them drops the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._optional import require

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PLAIN_2D_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of an image lie in the world, for its ``ndim`` spatial axes.

    spacing: (ndim,) voxel size in mm; origin: (ndim,) world position (mm) of voxel 0;
    direction: (ndim, ndim) with column ``a`` the unit direction of array axis ``a``.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]

    def __post_init__(self):
        n = len(self.spacing)
        if len(self.origin) != n or np.shape(self.direction) != (n, n):
            raise ValueError(
                f"geometry parts disagree: spacing {self.spacing}, origin {self.origin}, "
                f"direction of shape {np.shape(self.direction)}"
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @classmethod
    def identity(cls, ndim: int) -> Geometry:
        return cls((1.0,) * ndim, (0.0,) * ndim, tuple(tuple(r) for r in np.eye(ndim).tolist()))

    @classmethod
    def from_affine(cls, affine: np.ndarray, ndim: int = 3) -> Geometry:
        """From a 4x4 NIfTI affine, keeping the first ``ndim`` axes (2 for a 2D image)."""
        a = np.asarray(affine, dtype=np.float64)
        m = a[:ndim, :ndim]
        spacing = np.linalg.norm(m, axis=0)
        direction = m / spacing
        return cls(tuple(spacing.tolist()), tuple(a[:ndim, 3].tolist()), tuple(tuple(r) for r in direction.tolist()))

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 NIfTI affine; a 2D geometry lies in the z = 0 plane with 1 mm along the third axis."""
        n = self.ndim
        a = np.eye(4)
        a[:n, :n] = np.asarray(self.direction) * np.asarray(self.spacing)
        a[:n, 3] = self.origin
        return a

    def index_to_world(self, index) -> np.ndarray:
        """World position (mm) of a voxel index (..., ndim)."""
        idx = np.asarray(index, dtype=np.float64)
        m = np.asarray(self.direction) * np.asarray(self.spacing)
        return idx @ m.T + np.asarray(self.origin)

    def allclose(self, other: Geometry, atol: float = 1e-4) -> bool:
        return (
            self.ndim == other.ndim
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in NIFTI_SUFFIXES + PLAIN_2D_SUFFIXES:
        if name.endswith(s):
            return s
    raise ValueError(f"{path}: unsupported file type; expected one of {NIFTI_SUFFIXES + PLAIN_2D_SUFFIXES}")


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read an image and its geometry.

    Returns (array, geometry): a NIfTI array as stored (X, Y[, Z][, ...]) with geometry for its first
    min(ndim, 3) axes; a PNG/TIFF (H, W) or (H, W, C) array with identity geometry for (H, W).
    Raises FileNotFoundError or ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    suffix = _suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            nib = require("nibabel", "reading NIfTI")
            img = nib.load(str(path))
            array = np.asarray(img.dataobj)
            return array, Geometry.from_affine(img.affine, ndim=min(array.ndim, 3))
        if suffix == ".png":
            image_mod = require("PIL.Image", "reading PNG")
            with image_mod.open(path) as im:
                array = np.asarray(im)
        else:
            array = np.asarray(require("tifffile", "reading TIFF").imread(path))
    except (ImportError, FileNotFoundError):
        raise
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return array, Geometry.identity(2)


def write_image(path: str | Path, array: np.ndarray, geometry: Geometry | None = None) -> Path:
    """Write ``array`` to ``path`` (type from the suffix), with ``geometry`` for NIfTI.

    NIfTI keeps dtype and geometry (sform and qform set, code 1 = scanner); PNG takes a 2D uint8/uint16 array or
    (H, W, 3|4) uint8 and ignores geometry. Parent folders are created.
    """
    path = Path(path)
    suffix = _suffix(path)
    array = np.asarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in NIFTI_SUFFIXES:
        nib = require("nibabel", "writing NIfTI")
        n = min(array.ndim, 3)
        geometry = geometry or Geometry.identity(n)
        if geometry.ndim != n:
            raise ValueError(f"{path}: a {geometry.ndim}D geometry does not fit an array of shape {array.shape}")
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        if array.dtype == np.int64:
            # NIfTI readers (ITK among them) often refuse int64
            array = array.astype(np.int32)
        img = nib.Nifti1Image(array, geometry.affine)
        img.set_sform(geometry.affine, code=1)
        img.set_qform(geometry.affine, code=1)
        nib.save(img, str(path))
    elif suffix == ".png":
        image_mod = require("PIL.Image", "writing PNG")
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
            raise ValueError(f"{path}: PNG needs (H, W) or (H, W, 3|4), got shape {array.shape}")
        if array.dtype not in (np.uint8, np.uint16) or (array.ndim == 3 and array.dtype != np.uint8):
            raise ValueError(f"{path}: PNG needs uint8 (or 2D uint16), got {array.dtype}")
        image_mod.fromarray(array).save(path)
    else:
        require("tifffile", "writing TIFF").imwrite(path, array)
    return path
