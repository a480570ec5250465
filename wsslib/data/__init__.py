"""Data sets: the :class:`Sample` contract, the registry, synthetic data and the polyp loaders.

>>> from wsslib.data import get_dataset, to_tensors
>>> ds = get_dataset("synthetic", split="valid", n=40, size=64)
>>> to_tensors(ds).images.shape
torch.Size([6, 3, 64, 64])
"""

from __future__ import annotations

from wsslib.data.base import (
    Sample,
    TensorBatch,
    WSSDataset,
    find_root,
    get_dataset,
    list_datasets,
    load_splits,
    register_dataset,
    to_tensors,
)
from wsslib.data.fire import FireSegmentation
from wsslib.data.folder import FolderDataset
from wsslib.data.io import read_image, read_mask
from wsslib.data.nci_isbi import NCIISBI
from wsslib.data.pets import OxfordPets
from wsslib.data.polyp import KvasirSEG, PolypGen
from wsslib.data.sources import load_sources
from wsslib.data.synthetic import SyntheticDataset, generate_synthetic
from wsslib.data.tbx11k import TBX11K
from wsslib.data.volumes import BraTS2020, DecathlonProstate

__all__ = [
    "BraTS2020",
    "DecathlonProstate",
    "FireSegmentation",
    "FolderDataset",
    "KvasirSEG",
    "NCIISBI",
    "OxfordPets",
    "PolypGen",
    "Sample",
    "SyntheticDataset",
    "TensorBatch",
    "WSSDataset",
    "find_root",
    "generate_synthetic",
    "get_dataset",
    "list_datasets",
    "load_sources",
    "load_splits",
    "read_image",
    "read_mask",
    "register_dataset",
    "TBX11K",
    "to_tensors",
]
