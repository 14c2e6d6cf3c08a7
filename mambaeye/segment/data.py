"""Where segmentation cases come from: the nnU-Net raw layout, the Medical Segmentation Decathlon (MSD) layout and
2D image/mask folders, read into one list of :class:`CaseFiles`; :func:`read_case` loads one case with checks.

    nnU-Net:  dataset.json (channel_names, labels, numTraining, file_ending), imagesTr/CASE_0000.nii.gz,
              labelsTr/CASE.nii.gz, optional imagesTs/ + labelsTs/ (held-out cases)
    MSD:      dataset.json with "modality" {"0": "T1", ...}, "labels" {"0": "background", ...},
              "training" [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}], "test" [...];
              images are 3D (one modality) or 4D (X, Y, Z, C) NIfTI
    folder:   images/NAME.png|.tif|.tiff and masks/NAME.* with the same stem (2D); masks hold class indices
              (a mask of only 0 and 255 is read as binary 0/1); the classes are 0..max over all masks

Every error names the offending file or folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mambaeye.data.io import NIFTI_SUFFIXES, PLAIN_2D_SUFFIXES, Geometry, read_image
from mambaeye.data.nnunet import read_nnunet_raw

__all__ = ["CaseFiles", "SegSource", "open_source", "read_case", "read_image_file", "strip_suffix", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = NIFTI_SUFFIXES + PLAIN_2D_SUFFIXES


@dataclass(frozen=True)
class CaseFiles:
    """One case: one file per channel (``channels_last``: one file holding all channels on its last axis)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    channels_last: bool = False


@dataclass
class SegSource:
    """A dataset on disk: its layout, channel names, labels (name -> value), training and held-out cases."""

    root: Path
    layout: str  # nnunet | msd | folder
    channel_names: list[str]
    labels: dict[str, int]
    train: list[CaseFiles] = field(default_factory=list)
    test: list[CaseFiles] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return max(self.labels.values()) + 1

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)


def strip_suffix(name: str) -> str:
    low = name.lower()
    for s in IMAGE_SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if not f.name.startswith(".") and f.name.lower().endswith(IMAGE_SUFFIXES))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _nnunet(root: Path) -> SegSource:
    train = read_nnunet_raw(root, "train")
    labels = {k: int(v) for k, v in train.labels.items() if not isinstance(v, list)}
    if len(labels) != len(train.labels):
        raise ValueError(f"{root / 'dataset.json'}: region-based labels (lists) are not supported")
    test = []
    if (root / "imagesTs").is_dir() and _image_files(root / "imagesTs"):
        test = [CaseFiles(c.case_id, c.images, c.label) for c in read_nnunet_raw(root, "test").cases]
    names = [train.channel_names[str(i)] for i in range(len(train.channel_names))]
    return SegSource(root, "nnunet", names, labels, [CaseFiles(c.case_id, c.images, c.label) for c in train.cases],
                     test)


def _msd(root: Path, info: dict) -> SegSource:
    meta = root / "dataset.json"
    for key in ("modality", "labels", "training"):
        if key not in info:
            raise ValueError(f"{meta}: missing field '{key}' (Decathlon layout)")
    try:
        labels = {str(name): int(value) for value, name in info["labels"].items()}
    except ValueError:
        raise ValueError(f"{meta}: 'labels' must map integer strings to names, got {info['labels']}") from None
    if labels.get("background", 0) != 0 or 0 not in labels.values():
        raise ValueError(f"{meta}: 'labels' must declare 0 (background), got {info['labels']}")
    names = [info["modality"][str(i)] for i in range(len(info["modality"]))]

    def case(image: str, label: str | None) -> CaseFiles:
        img = (root / image).resolve()
        if not img.is_file():
            raise FileNotFoundError(f"{meta} lists {image}, but {img} is missing")
        lab = None
        if label is not None:
            lab = (root / label).resolve()
            if not lab.is_file():
                raise FileNotFoundError(f"missing label for {img}: {meta} lists {label}, but {lab} is missing")
        return CaseFiles(strip_suffix(img.name), (img,), lab, channels_last=True)

    train = []
    for entry in info["training"]:
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{meta}: each 'training' entry needs 'image' and 'label', got {entry!r}")
        if not entry.get("label"):
            raise FileNotFoundError(f"{meta}: training image {entry['image']} has no label")
        train.append(case(entry["image"], entry["label"]))
    if not train:
        raise ValueError(f"{meta}: 'training' lists no cases")
    test = []
    for entry in info.get("test", []):
        image = entry if isinstance(entry, str) else entry.get("image")
        label = None if isinstance(entry, str) else entry.get("label")
        test.append(case(image, label))
    return SegSource(root, "msd", names, labels, train, test)


def _folder(root: Path) -> SegSource:
    images_dir, masks_dir = root / "images", root / "masks"
    files = _image_files(images_dir)
    if not files:
        raise ValueError(f"{images_dir} holds no images ({', '.join(PLAIN_2D_SUFFIXES + NIFTI_SUFFIXES)})")
    masks = {strip_suffix(f.name): f for f in _image_files(masks_dir)} if masks_dir.is_dir() else {}
    cases = []
    for f in files:
        stem = strip_suffix(f.name)
        if stem not in masks:
            raise FileNotFoundError(f"missing mask for {f}: expected {masks_dir}/{stem}.png (or .tif/.tiff)")
        cases.append(CaseFiles(stem, (f,), masks[stem], channels_last=True))
    # the classes and channel count come from the files themselves
    top, channels = 0, None
    for c in cases:
        label = _read_label(c.label)
        top = max(top, int(label.max()))
        a, _ = read_image(c.images[0])
        n = 1 if a.ndim == 2 else a.shape[-1]
        if channels is not None and n != channels:
            raise ValueError(f"{c.images[0]}: has {n} channels, {cases[0].images[0]} has {channels}")
        channels = n
    labels = {"background": 0, **{f"class_{k}": k for k in range(1, max(top, 1) + 1)}}
    return SegSource(root, "folder", [f"channel_{i}" for i in range(channels)], labels, cases, [])


def open_source(path: str | Path) -> SegSource:
    """Detect the layout of ``path`` (nnU-Net, MSD or image/mask folder) and list its cases."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    meta = root / "dataset.json"
    if meta.is_file():
        info = _read_json(meta)
        if "training" in info and "modality" in info:
            return _msd(root, info)
        return _nnunet(root)
    if (root / "images").is_dir():
        return _folder(root)
    raise FileNotFoundError(f"{root}: not a dataset folder: expected dataset.json (nnU-Net or Decathlon layout) "
                            f"or images/ + masks/ (2D folders)")


def _read_label(path: Path) -> np.ndarray:
    label, _ = read_image(path)
    if label.ndim == 3 and path.name.lower().endswith(PLAIN_2D_SUFFIXES) and label.shape[-1] in (3, 4):
        if not (label[..., :3] == label[..., :1]).all():
            raise ValueError(f"{path}: a mask must be single-channel, got a colour image of shape {label.shape}")
        label = label[..., 0]
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.mod(label, 1) == 0):
            raise ValueError(f"{path}: label map holds non-integer values")
        label = label.astype(np.int64)
    if label.size and label.min() < 0:
        raise ValueError(f"{path}: label map holds negative values")
    if path.name.lower().endswith(PLAIN_2D_SUFFIXES):
        values = np.unique(label)
        if 255 in values and set(values.tolist()) <= {0, 255}:
            label = label // 255
    return label.astype(np.int64)


def read_image_file(path: Path, spatial_dims: int, channels_last: bool = False) -> tuple[np.ndarray, Geometry]:
    """One image file -> (C, *S) float32 and its geometry. With ``channels_last`` a file with spatial_dims + 1
    axes holds its channels on the last axis (4D NIfTI, RGB PNG); else a file is one channel."""
    a, g = read_image(path)
    if a.ndim == spatial_dims:
        a = a[None]
    elif a.ndim == spatial_dims + 1 and (channels_last or a.shape[-1] == 1):
        a = np.moveaxis(a, -1, 0)
    else:
        layout = "with its channels on the last axis" if channels_last else "with one channel per file"
        raise ValueError(f"{path}: array of shape {a.shape} is not a {spatial_dims}D image {layout} "
                         f"(check spatial_dims)")
    if g.ndim != spatial_dims:
        g = Geometry(g.spacing[:spatial_dims], g.origin[:spatial_dims],
                     tuple(r[:spatial_dims] for r in g.direction[:spatial_dims]))
    return a.astype(np.float32, copy=False), g


def read_case(case: CaseFiles, source: SegSource, spatial_dims: int) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Load a case: image (C, *S) float32, label (*S) int64 (None where absent) and geometry, checking the channel
    count, that image and label agree in shape and spacing, and that the label values are declared."""
    arrays, geometry = [], None
    for f in case.images:
        a, g = read_image_file(f, spatial_dims, case.channels_last)
        if arrays and (a.shape[1:] != arrays[0].shape[1:] or not np.allclose(g.spacing, geometry.spacing, atol=1e-4)):
            raise ValueError(f"{f}: shape {a.shape[1:]} / spacing {g.spacing} differs from {case.images[0]}: "
                             f"{arrays[0].shape[1:]} / {geometry.spacing}")
        arrays.append(a)
        geometry = geometry or g
    image = np.concatenate(arrays)
    if image.shape[0] != source.in_channels:
        raise ValueError(f"{case.images[0]}: case {case.case_id} has {image.shape[0]} channels, the dataset declares "
                         f"{source.in_channels} ({', '.join(source.channel_names)})")
    label = None
    if case.label is not None:
        label = _read_label(case.label)
        _, lg = read_image(case.label)
        if label.shape != image.shape[1:]:
            raise ValueError(f"{case.label}: label shape {label.shape} differs from image shape {image.shape[1:]} "
                             f"of {case.images[0]}")
        if not np.allclose(lg.spacing[:spatial_dims], geometry.spacing, rtol=1e-3, atol=1e-4):
            raise ValueError(f"{case.label}: label spacing {lg.spacing} differs from image spacing "
                             f"{geometry.spacing} of {case.images[0]}")
        bad = np.setdiff1d(np.unique(label), sorted(source.labels.values()))
        if bad.size:
            raise ValueError(f"{case.label}: label values {bad.tolist()} are not among the dataset's declared "
                             f"classes {sorted(source.labels.values())}")
    return image, label, geometry
