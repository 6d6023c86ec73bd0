"""Train a NeuroPBR student by distillation from pre-computed teacher shards.

Usage (from packages/neuropbr):
    uv run --package neuropbr student/train.py --config configs/mobilenetv3_512.py \
        --shards-dir ./data/shards_1024 --input-dir ./data/input --output-dir ./data/output \
        --checkpoint-dir ./checkpoints_student
    uv run --package neuropbr student/train.py --config configs/convattn_student.py --synthetic \
        --shards-dir ./shards_synth --image-size 64 --epochs 2 --batch-size 2 --device cpu
    uv run --package neuropbr student/train.py --resume ./checkpoints_student/latest.pth
    uv run --package neuropbr torchrun --nproc_per_node 2 student/train.py --config configs/mobilenetv3_512.py \
        --shards-dir ./data/shards_1024 --input-dir ./data/input --output-dir ./data/output
"""

from neuropbr.student.train import main

if __name__ == "__main__":
    main()
