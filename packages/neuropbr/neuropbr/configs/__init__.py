"""Config files loadable by name (``--config high_quality``) or path (``--config configs/high_quality.py``)."""
