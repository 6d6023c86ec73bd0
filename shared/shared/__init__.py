"""Shared library of the workspace: device, seeding, DDP, AMP, tiling, checkpoints, tracking, the run
scaffold, images, PSNR/SSIM metrics, CLI jobs.

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
from shared.cli import Job, format_table, report_metrics, resolve_jobs, run_jobs, write_json
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
from shared.errors import (
    EXIT_SOME_FAILED,
    ConfigError,
    DataError,
    InputsFailed,
    UserError,
    cli_entry,
    unwrap_worker_error,
)
from shared.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    describe_conversions,
    image_bit_depth,
    list_images,
    make_grid,
    match_by_stem,
    pair_by_stem,
    read_image,
    save_image,
    save_image_grid,
    to_numpy_image,
    to_tensor,
)
from shared.metrics import PSNR_CAP, psnr, ssim, ssim_map
from shared.preemption import EXIT_PREEMPTED, GracefulStop
from shared.pretrained import TORCHVISION_FILES, find_weights, hub_checkpoints_dir, load_torchvision_weights
from shared.sampler import EpochSampler, epoch_permutation
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
from shared.tracking import TRACKERS, OfflineRun, Tracker, create_tracker, read_offline_wandb
from shared.training import (
    Budget,
    RunningMeans,
    TrainingRun,
    add_run_arguments,
    resolve_resume,
    validation_line,
    validation_metrics,
)

__all__ = [
    "Budget", "EpochSampler", "RunningMeans", "TrainingRun", "add_run_arguments", "epoch_permutation",
    "resolve_resume", "validation_line", "validation_metrics",
    "DEVICE_CHOICES", "EXIT_PREEMPTED", "EXIT_SOME_FAILED", "IMAGE_EXTENSIONS", "PRECISIONS", "TRACKERS",
    "PSNR_CAP", "psnr", "ssim", "ssim_map",
    "TORCHVISION_FILES", "find_weights", "hub_checkpoints_dir", "load_torchvision_weights",
    "CheckpointError", "CheckpointManager", "ConfigError", "DataError", "DistInfo", "GracefulStop",
    "ImageReadError", "InputsFailed", "describe_conversions", "image_bit_depth", "Job", "MixedPrecision", "NonFiniteError", "ResumeInfo", "StepResult",
    "OfflineRun", "Tracker", "UserError", "all_reduce_mean", "autocast", "barrier", "capture_rng_state",
    "cleanup_distributed", "cli_entry", "create_blend_weight", "create_tracker", "extract_patch",
    "format_table", "get_local_rank", "get_rank", "get_world_size", "init_distributed", "is_distributed",
    "is_main_process", "list_images", "match_by_stem", "load_checkpoint", "make_generator", "make_grid", "make_sampler",
    "make_training_state", "pair_by_stem", "patch_grid", "read_image", "report_metrics", "resolve_device",
    "read_offline_wandb", "resolve_jobs", "restore_rng_state", "restore_training_state", "run_jobs", "save_checkpoint",
    "save_image", "save_image_grid", "seed_everything", "seed_worker", "set_sampler_epoch", "stitch_tiles",
    "tile_positions", "tile_tensor", "tiled_forward", "to_numpy_image", "to_tensor", "unwrap_model",
    "unwrap_worker_error", "wrap_ddp", "write_json",
]
