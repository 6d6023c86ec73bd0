"""Shim for the spec's snippet ``from utils.dataset import PBRDataset`` (run from this folder)."""

from neuropbr.utils.dataset import *  # noqa: F403
from neuropbr.utils.dataset import PBRDataset, load_material, load_views, train_val_split  # noqa: F401
