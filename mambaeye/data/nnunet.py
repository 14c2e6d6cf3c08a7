"""The nnU-Net v2 raw dataset layout: write ``dataset.json`` and read a dataset folder back.

    DatasetXXX_Name/
        dataset.json           channel_names, labels, numTraining, file_ending (+ free fields)
        imagesTr/{case}_{channel:04d}{file_ending}
        labelsTr/{case}{file_ending}
        imagesTs/, labelsTs/   optional held-out cases (labelsTs is a common extension, not nnU-Net's)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import Geometry, read_image

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}``, as nnU-Net names raw datasets."""
    if not 0 < dataset_id < 1000 or not re.fullmatch(r"[A-Za-z0-9]+", name):
        raise ValueError(f"need 0 < dataset_id < 1000 and an alphanumeric name, got {dataset_id}, {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def write_dataset_json(
    root: str | Path,
    channel_names: dict[str, str],
    labels: dict[str, int],
    num_training: int,
    file_ending: str = ".nii.gz",
    **extra,
) -> Path:
    """Write ``root/dataset.json`` (channel_names {"0": "T1"}, labels {"background": 0, ...}) and return its path."""
    if labels.get("background") != 0:
        raise ValueError(f"labels must map 'background' to 0, got {labels}")
    content = {
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": dict(labels),
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    path = Path(root) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class RawCase:
    """One case: ``images`` holds one file per channel, in channel order; ``label`` is None where absent."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class RawDataset:
    """A parsed nnU-Net raw dataset folder (one split)."""

    root: Path
    info: dict
    split: str
    cases: list[RawCase] = field(default_factory=list)

    @property
    def channel_names(self) -> dict[str, str]:
        return self.info["channel_names"]

    @property
    def labels(self) -> dict[str, int | list[int]]:
        return self.info["labels"]

    @property
    def file_ending(self) -> str:
        return self.info["file_ending"]

    @property
    def num_classes(self) -> int:
        """Number of label values (max integer label + 1); region-based (list) labels count their members."""
        values = [v for x in self.labels.values() for v in (x if isinstance(x, list) else [x])]
        return max(values) + 1

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> RawCase:
        return self.cases[i]


def read_nnunet_raw(root: str | Path, split: str = "train") -> RawDataset:
    """List the cases of an nnU-Net raw dataset folder.

    split: "train" (imagesTr + labelsTr, every case must have a label and numTraining must match) or "test"
    (imagesTs, with labelsTs where present). Errors name the offending file or folder.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    meta = root / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{root} is not an nnU-Net raw dataset: {meta} is missing")
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta}: not valid JSON ({e})") from e
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise ValueError(f"{meta}: missing fields {missing}")
    ending = info["file_ending"]
    n_channels = len(info["channel_names"])
    tag = "Tr" if split == "train" else "Ts"
    images_dir, labels_dir = root / f"images{tag}", root / f"labels{tag}"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} is missing")

    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending) + "$")
    channels: dict[str, dict[int, Path]] = {}
    for f in sorted(images_dir.iterdir()):
        if f.name.startswith("."):
            continue
        m = pattern.match(f.name)
        if m is None:
            raise ValueError(f"{f}: image names must look like CASE_0000{ending}")
        channels.setdefault(m.group(1), {})[int(m.group(2))] = f
    if not channels:
        raise ValueError(f"{images_dir} holds no images ending in {ending}")

    cases = []
    for case_id, files in channels.items():
        if sorted(files) != list(range(n_channels)):
            raise ValueError(
                f"case {case_id} in {images_dir}: has channels {sorted(files)}, dataset.json declares {n_channels}"
            )
        label = labels_dir / f"{case_id}{ending}"
        if not label.is_file():
            if split == "train":
                raise FileNotFoundError(f"missing label for {files[0]}: expected {label}")
            label = None
        cases.append(RawCase(case_id, tuple(files[c] for c in range(n_channels)), label))
    if split == "train" and len(cases) != info["numTraining"]:
        raise ValueError(f"{meta}: numTraining is {info['numTraining']} but {images_dir} holds {len(cases)} cases")
    return RawDataset(root, info, split, cases)


def load_case(case: RawCase, dataset: RawDataset | None = None) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Read a case: image (C, *spatial) float32, label (*spatial) integer array or None, and the geometry.

    Channels and label must share shape and geometry; with ``dataset`` given, label values must be declared
    in its dataset.json. Errors name the file.
    """
    arrays, geometry = [], None
    for f in case.images:
        a, g = read_image(f)
        if arrays and (a.shape != arrays[0].shape or not g.allclose(geometry)):
            raise ValueError(f"{f}: shape/geometry {a.shape} {g} differs from {case.images[0]}: {arrays[0].shape}")
        arrays.append(a.astype(np.float32, copy=False))
        geometry = g
    image = np.stack(arrays)
    label = None
    if case.label is not None:
        label, g = read_image(case.label)
        if label.shape != arrays[0].shape:
            raise ValueError(f"{case.label}: label shape {label.shape} differs from image shape {arrays[0].shape}")
        if not g.allclose(geometry):
            raise ValueError(f"{case.label}: label geometry {g} differs from image geometry {geometry}")
        if not np.issubdtype(label.dtype, np.integer):
            if not np.all(np.mod(label, 1) == 0):
                raise ValueError(f"{case.label}: label map holds non-integer values")
            label = label.astype(np.int16)
        if dataset is not None:
            allowed = np.arange(dataset.num_classes)
            bad = np.setdiff1d(np.unique(label), allowed)
            if bad.size:
                raise ValueError(f"{case.label}: labels {bad.tolist()} are not declared in dataset.json")
    return image, label, geometry
