"""Cross-view fusion blocks."""

from neuropbr.models.transformers.vision_transformer import CrossViewFusion, TransformerBlock

__all__ = ["CrossViewFusion", "TransformerBlock"]
