"""Shared library of the workspace: device, seeding, DDP, AMP, tiling, checkpoints, tracking, images.

Each module is small and free of any package's domain code; see ``docs/architecture.md``.
"""

from shared.amp import PRECISIONS, MixedPrecision, NonFiniteError, StepResult, autocast
from shared.checkpoint import (
    CheckpointError,
    CheckpointManager,
    ResumeInfo,
    load_checkpoint,
    make_training_state,
    restore_training_state,
    save_checkpoint,
)
from shared.device import DEVICE_CHOICES, resolve_device
from shared.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    get_local_rank,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    make_sampler,
    set_sampler_epoch,
    unwrap_model,
    wrap_ddp,
)
from shared.errors import ConfigError, DataError, UserError, cli_entry, unwrap_worker_error
from shared.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    list_images,
    make_grid,
    pair_by_stem,
    read_image,
    save_image,
    save_image_grid,
    to_numpy_image,
    to_tensor,
)
from shared.preemption import EXIT_PREEMPTED, GracefulStop
from shared.seed import capture_rng_state, make_generator, restore_rng_state, seed_everything, seed_worker
from shared.tiling import (
    create_blend_weight,
    extract_patch,
    patch_grid,
    stitch_tiles,
    tile_positions,
    tile_tensor,
    tiled_forward,
)
from shared.tracking import TRACKERS, Tracker, create_tracker

__all__ = [
    "DEVICE_CHOICES", "EXIT_PREEMPTED", "IMAGE_EXTENSIONS", "PRECISIONS", "TRACKERS",
    "CheckpointError", "CheckpointManager", "ConfigError", "DataError", "DistInfo", "GracefulStop",
    "ImageReadError", "MixedPrecision", "NonFiniteError", "ResumeInfo", "StepResult", "Tracker", "UserError",
    "all_reduce_mean", "autocast", "barrier", "capture_rng_state", "cleanup_distributed", "cli_entry",
    "create_blend_weight", "create_tracker", "extract_patch", "get_local_rank", "get_rank", "get_world_size",
    "init_distributed", "is_distributed", "is_main_process", "list_images", "load_checkpoint", "make_generator",
    "make_grid", "make_sampler", "make_training_state", "pair_by_stem", "patch_grid", "read_image",
    "resolve_device", "restore_rng_state", "restore_training_state", "save_checkpoint", "save_image",
    "save_image_grid", "seed_everything", "seed_worker", "set_sampler_epoch", "stitch_tiles", "tile_positions",
    "tile_tensor", "tiled_forward", "to_numpy_image", "to_tensor", "unwrap_model", "unwrap_worker_error", "wrap_ddp",
]
