"""GANsformer face inpainting: a U-Net generator with bipartite attention in its bottleneck."""

__version__ = "0.1.0"
