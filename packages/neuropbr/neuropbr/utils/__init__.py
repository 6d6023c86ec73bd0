"""Data: the on-disk dataset, the synthetic materials and the renderer."""

from neuropbr.utils.dataset import PBRDataset, load_material, load_views, train_val_split
from neuropbr.utils.render import DEFAULT_SETUPS, ViewSetup, render_views
from neuropbr.utils.synthetic import SyntheticPBRDataset, make_material, make_sample

__all__ = [
    "DEFAULT_SETUPS", "PBRDataset", "SyntheticPBRDataset", "ViewSetup", "load_material", "load_views",
    "make_material", "make_sample", "render_views", "train_val_split",
]
