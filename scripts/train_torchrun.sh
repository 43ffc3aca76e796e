#!/bin/sh
# Multi-GPU (one node): the R50 DeepLabV2 recipe with DDP + SyncBatchNorm over NGPU processes.
# --batchsize is per process, so the global batch is NGPU x 16 here; the lr is used as given.
# The authors multiplied the lr by the number of GPUs: pass e.g. --lr 4e-3 for 4 GPUs to do the
# same, or --batchsize 4 with NGPU=4 to keep the paper's global batch of 16 at lr 1e-3.
# Multi-node: replace --standalone with --nnodes N --node_rank R --rdzv_endpoint HOST:PORT.
#   NGPU  processes on this node (default: all visible GPUs)
# Other variables as in scripts/train_r50_deeplabv2.sh; extra arguments go to train.py.
. "$(dirname -- "$0")/env.sh"
NGPU="${NGPU:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
torchrun --standalone --nproc_per_node "$NGPU" train.py \
    --model_type deeplabv2 --layers 50 \
    --dataset_path "${DATA:-dataset/ScribbleSup/VOC2012}" --pseudo_path "${PSEUDO:-BMP}" \
    --distancemap_c "${DIST_C:-distance_pseudo}" \
    --batchsize 16 --lr 1e-3 --epochs 50 --warmup 5 --workers "${WORKERS:-8}" \
    --pretrained "${PRETRAINED:-imagenet}" --logdir "${LOGDIR:-log/train_r50_deeplabv2_ddp}" "$@"
