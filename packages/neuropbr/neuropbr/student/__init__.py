"""Distilled students of the NeuroPBR teacher: models, shard loader, distillation loss, training."""
