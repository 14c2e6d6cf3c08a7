"""Medical image data: NIfTI/PNG/TIFF IO with geometry, the nnU-Net v2 raw layout, and built-in real datasets
that install offline (:func:`prepare_builtin`). nibabel, Pillow and tifffile are imported only when used."""

from __future__ import annotations

from .builtin import BUILTIN_DATASETS, list_builtin, mni152_volume, prepare_builtin
from .io import Geometry, read_image, write_image
from .nnunet import RawCase, RawDataset, dataset_folder_name, load_case, read_nnunet_raw, write_dataset_json

__all__ = [
    "BUILTIN_DATASETS",
    "Geometry",
    "RawCase",
    "RawDataset",
    "dataset_folder_name",
    "list_builtin",
    "load_case",
    "mni152_volume",
    "prepare_builtin",
    "read_image",
    "read_nnunet_raw",
    "write_dataset_json",
    "write_image",
]
