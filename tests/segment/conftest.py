"""Small real datasets for the segmentation tests (the MNI152 template from the nilearn wheel, 4 mm) and tiny
network settings, so that each end-to-end run takes seconds on a CPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mambaeye.segment import SegConfig

# 2D: U-Mamba_Bot with 3 stages (total stride 4) and 4..16 features
TINY_2D = dict(model="umamba_bot", model_kwargs={"features_per_stage": [4, 8, 16], "strides": [1, 2, 2],
                                                 "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1},
               spatial_dims=2, patch_size=[32, 32], batch_size=2, epochs=2, iterations_per_epoch=2, lr=0.01,
               sw_batch_size=2, max_overlays=2, progress=False, seed=0)
TINY_3D = dict(model="umamba_bot", model_kwargs={"features_per_stage": [4, 8], "strides": [1, 2],
                                                 "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1},
               spatial_dims=3, patch_size=[16, 16, 8], batch_size=2, epochs=1, iterations_per_epoch=2,
               sw_batch_size=4, mirror=False, max_overlays=1, progress=False, seed=0)


def need_nilearn():
    if importlib.util.find_spec("nilearn") is None or importlib.util.find_spec("nibabel") is None:
        pytest.skip("the MNI152 files ship with nilearn: pip install --no-deps nilearn nibabel")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread: tiny models gain nothing from two, and two threads spin badly when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def mni2d(tmp_path_factory):
    """nnU-Net raw folder: 6 axial slices (~49x58 at 4 mm), 4 for training, 2 held out."""
    need_nilearn()
    from mambaeye.data import prepare_builtin

    return prepare_builtin("mni152_brain_2d", tmp_path_factory.mktemp("mni2d"), num_test=2, downsample=4,
                           num_slices=6)


@pytest.fixture(scope="session")
def mni3d(tmp_path_factory):
    """nnU-Net raw folder: 3 sub-volumes (49x58x15 at 4 mm), 2 for training, 1 held out."""
    need_nilearn()
    from mambaeye.data import prepare_builtin

    return prepare_builtin("mni152_brain", tmp_path_factory.mktemp("mni3d"), num_test=1, downsample=4,
                           grid=(1, 1, 3))


def tiny_cfg(base: dict, data_dir, out, **kw) -> SegConfig:
    return SegConfig.from_dict({**base, "data_dir": str(data_dir), "output_dir": str(out), **kw})
