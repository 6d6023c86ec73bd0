from gansformer_inpaint.config.config import Config

__all__ = ["Config"]
