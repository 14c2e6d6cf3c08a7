"""Built-in real datasets that install offline with pip, prepared into the nnU-Net v2 raw layout.

- ``mni152_brain`` (3D) and ``mni152_brain_2d`` (2D axial slices): the MNI ICBM152 2009 T1 template (1 mm,
  197x233x189, skull-stripped) shipped in the ``nilearn`` wheel, with 4 tissue labels from its GM/WM probability
  maps: 0 background (T1 <= 0.2 of its maximum, nilearn's own brain-mask rule), and inside that mask the argmax
  of (1 - p_gm - p_wm, p_gm, p_wm): 1 other (about 2% of voxels: CSF and partial-volume voxels, mostly at the
  brain's surface and ventricles), 2 grey matter (13%), 3 white matter (7%).
  Files are read by path: ``pip install --no-deps nilearn nibabel``.
- ``dsb2018_nuclei`` (2D): the 512x512 DSB2018 fluorescence image and instance mask shipped in the
  ``stardist`` wheel, cut into tiles with binary labels 0 background, 1 nucleus.
  ``pip install --no-deps stardist tifffile nibabel`` (stardist is never imported).

The last ``num_test`` cases of each go to imagesTs/labelsTs as held-out cases; the rest to imagesTr/labelsTr.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._optional import require
from .io import Geometry, write_image
from .nnunet import dataset_folder_name, write_dataset_json

_MNI_DIR = ("datasets", "data")
_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MNI_LABELS = {"background": 0, "other": 1, "gray_matter": 2, "white_matter": 3}
_MNI_REFERENCE = "MNI ICBM152 2009c nonlinear symmetric template (Fonov et al. 2011), via nilearn"


def _package_dir(package: str, install: str) -> Path:
    # find_spec on a top-level name locates the package without running its __init__ (stardist's pulls TF)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"this built-in dataset reads files shipped with {package}: {install}")
    return Path(spec.origin).parent


def _block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping factor^n blocks (the trailing remainder is dropped)."""
    if factor == 1:
        return a.astype(np.float32)
    crop = tuple(slice(0, s - s % factor) for s in a.shape)
    a = a[crop].astype(np.float32)
    shape = [v for s in a.shape for v in (s // factor, factor)]
    return a.reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2)))


def mni152_volume(downsample: int = 2) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """The MNI152 T1 (X, Y, Z) float32 in [0, 1], its 4-class tissue labels uint8 and geometry, averaged over
    ``downsample``^3 blocks (labels are computed from the averaged maps)."""
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    nib = require("nibabel", "the MNI152 built-in dataset")
    root = _package_dir("nilearn", "pip install --no-deps nilearn").joinpath(*_MNI_DIR)
    imgs = {}
    for key, fname in _MNI_FILES.items():
        path = root / fname
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: this nilearn version does not ship the MNI152 template")
        imgs[key] = nib.load(str(path))
    t1, gm, wm = (_block_mean(np.asarray(imgs[k].dataobj), downsample) for k in ("t1", "gm", "wm"))
    t1 /= t1.max()
    gm, wm = gm / 255.0, wm / 255.0
    other = np.clip(1.0 - gm - wm, 0.0, 1.0)
    label = (np.argmax(np.stack([other, gm, wm]), axis=0) + 1).astype(np.uint8)
    label[t1 <= 0.2] = 0
    full = Geometry.from_affine(imgs["t1"].affine, 3)
    # a block's centre sits (factor - 1) / 2 voxels in from its first voxel
    origin = full.index_to_world(np.full(3, (downsample - 1) / 2))
    geometry = Geometry(tuple(s * downsample for s in full.spacing), tuple(origin.tolist()), full.direction)
    return t1, label, geometry


def _crop_geometry(geometry: Geometry, start) -> Geometry:
    return Geometry(geometry.spacing, tuple(geometry.index_to_world(np.asarray(start)).tolist()), geometry.direction)


def _mni_3d(downsample: int = 2, grid: tuple[int, int, int] = (1, 2, 3)):
    """Cut the volume into a grid of sub-volumes. The template is left-right symmetric, so the default does not
    split the first (left-right) axis: a held-out case is never the mirror image of a training case."""
    t1, label, geometry = mni152_volume(downsample)
    bounds = [np.linspace(0, s, g + 1).astype(int) for s, g in zip(t1.shape, grid, strict=True)]
    for i in range(grid[0]):
        for j in range(grid[1]):
            for k in range(grid[2]):
                lo = (bounds[0][i], bounds[1][j], bounds[2][k])
                sl = tuple(slice(a, b[n + 1]) for a, b, n in zip(lo, bounds, (i, j, k), strict=True))
                yield t1[sl], label[sl], _crop_geometry(geometry, lo)


def _mni_2d(downsample: int = 2, num_slices: int = 12):
    """Axial (third-axis) slices spread evenly over the slices that hold brain tissue; each is a 2D case whose
    geometry keeps the in-plane spacing, origin and direction (the slice's z position is dropped)."""
    t1, label, geometry = mni152_volume(downsample)
    zs = np.nonzero((label >= 2).any(axis=(0, 1)))[0]
    picks = np.unique(np.linspace(zs[0], zs[-1], num_slices + 2).round().astype(int)[1:-1])
    g2 = Geometry(geometry.spacing[:2], geometry.origin[:2], tuple(r[:2] for r in geometry.direction[:2]))
    for z in picks:
        yield t1[:, :, z], label[:, :, z], g2


def _dsb2018(tile: int = 128):
    """Non-overlapping ``tile`` x ``tile`` tiles of the 512x512 image (uint16) with binary nucleus labels; pixel
    size is not recorded with the image, so spacing is 1."""
    tifffile = require("tifffile", "the DSB2018 built-in dataset")
    root = _package_dir("stardist", "pip install --no-deps stardist tifffile") / "data" / "images"
    image = np.asarray(tifffile.imread(root / "img2d.tif"))
    label = (np.asarray(tifffile.imread(root / "mask2d.tif")) > 0).astype(np.uint8)
    if tile < 8 or tile > min(image.shape):
        raise ValueError(f"tile must be in [8, {min(image.shape)}], got {tile}")
    for r in range(0, image.shape[0] - tile + 1, tile):
        for c in range(0, image.shape[1] - tile + 1, tile):
            yield image[r : r + tile, c : c + tile], label[r : r + tile, c : c + tile], Geometry.identity(2)


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    dataset_id: int
    folder_name: str
    spatial_dims: int
    channel_names: dict[str, str]
    labels: dict[str, int]
    num_test: int
    cases: Callable
    description: str
    reference: str
    licence: str


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    d.name: d
    for d in (
        BuiltinDataset("mni152_brain", 991, "MNI152Brain3D", 3, {"0": "T1"}, _MNI_LABELS, 2, _mni_3d,
                       "MNI152 T1 template sub-volumes with background/other/GM/WM labels", _MNI_REFERENCE,
                       "MNI template: permissive with attribution (see nilearn)"),
        BuiltinDataset("mni152_brain_2d", 992, "MNI152Brain2D", 2, {"0": "T1"}, _MNI_LABELS, 3, _mni_2d,
                       "MNI152 T1 template axial slices with background/other/GM/WM labels", _MNI_REFERENCE,
                       "MNI template: permissive with attribution (see nilearn)"),
        BuiltinDataset("dsb2018_nuclei", 993, "DSB2018Nuclei", 2, {"0": "fluorescence"},
                       {"background": 0, "nucleus": 1}, 4, _dsb2018,
                       "Kaggle DSB2018 fluorescence nuclei tiles with binary labels",
                       "Kaggle Data Science Bowl 2018 stage 1, via the stardist wheel", "CC0"),
    )
}


def list_builtin() -> list[str]:
    """Names accepted by :func:`prepare_builtin`."""
    return sorted(BUILTIN_DATASETS)


def prepare_builtin(
    name: str, out_dir: str | Path, *, num_test: int | None = None, overwrite: bool = False, **options
) -> Path:
    """Write built-in dataset ``name`` as ``out_dir/DatasetXXX_Name`` in the nnU-Net raw layout; returns that folder.

    num_test: cases kept back in imagesTs/labelsTs (default per dataset: 2, 3, 4).
    options go to the dataset's case generator: mni152_brain ``downsample=2, grid=(1, 2, 3)``;
    mni152_brain_2d ``downsample=2, num_slices=12``; dsb2018_nuclei ``tile=128``.
    An existing dataset folder raises FileExistsError unless ``overwrite``.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in dataset {name!r}; choose from {list_builtin()}")
    spec = BUILTIN_DATASETS[name]
    require("nibabel", f"writing the {name} dataset")
    root = Path(out_dir) / dataset_folder_name(spec.dataset_id, spec.folder_name)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} exists; pass overwrite=True to replace it")
        shutil.rmtree(root)
    cases = list(spec.cases(**options))
    num_test = spec.num_test if num_test is None else num_test
    if not 0 <= num_test < len(cases):
        raise ValueError(f"num_test must be in [0, {len(cases) - 1}] for {len(cases)} cases, got {num_test}")
    n_train = len(cases) - num_test
    prefix = spec.folder_name.lower()
    for idx, (image, label, geometry) in enumerate(cases):
        tag = "Tr" if idx < n_train else "Ts"
        case_id = f"{prefix}_{idx:03d}"
        write_image(root / f"images{tag}" / f"{case_id}_0000.nii.gz", image, geometry)
        write_image(root / f"labels{tag}" / f"{case_id}.nii.gz", label.astype(np.uint8), geometry)
    write_dataset_json(
        root, spec.channel_names, spec.labels, n_train, ".nii.gz",
        name=spec.folder_name, description=spec.description, reference=spec.reference, licence=spec.licence,
        numTest=num_test, tensorImageSize=f"{spec.spatial_dims}D",
    )
    return root
