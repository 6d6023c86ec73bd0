from gansformer_inpaint.dataloader.loader import (
    SUPPORTED_EXTENSIONS,
    InpaintingDataset,
    SyntheticInpaintingDataset,
    load_pair,
)
from gansformer_inpaint.dataloader.masks import derive_mask, random_mask, resize_mask

__all__ = ["SUPPORTED_EXTENSIONS", "InpaintingDataset", "SyntheticInpaintingDataset",
           "derive_mask", "load_pair", "random_mask", "resize_mask"]
