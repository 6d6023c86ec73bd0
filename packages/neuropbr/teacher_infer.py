"""Generate distillation shards: the trained teacher's predictions, float16, with an index.

Usage (from packages/neuropbr):
    uv run --package neuropbr teacher_infer.py --checkpoint checkpoints/best_model.pth \
        --data-root ./data --shards-dir ./data/shards_1024 --shard-output-size 1024
    uv run --package neuropbr teacher_infer.py --checkpoint checkpoints/latest.pth --synthetic \
        --shards-dir ./shards_synth --shard-output-size 128 --device cpu
Inference only: run it as one process (torchrun is not needed); rerun the same command to resume.
"""

from neuropbr.teacher_infer import main

if __name__ == "__main__":
    main()
