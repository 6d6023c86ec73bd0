"""Training loop and losses."""
