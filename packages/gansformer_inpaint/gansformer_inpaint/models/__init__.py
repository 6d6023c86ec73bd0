from gansformer_inpaint.models.bipartite import BipartiteAttention, GANsformerBlock
from gansformer_inpaint.models.discriminator import Discriminator
from gansformer_inpaint.models.generator import Generator, compose

__all__ = ["BipartiteAttention", "Discriminator", "GANsformerBlock", "Generator", "compose"]
