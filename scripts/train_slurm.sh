#!/bin/sh
#SBATCH --job-name=cdsp-r50-deeplabv2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
# Several nodes under SLURM: the R50 DeepLabV2 recipe with DDP + SyncBatchNorm, one torchrun
# per node (srun, one task a node), NGPU processes on each, c10d rendezvous on the first node.
# Submit from the repo root, after `sh scripts/env.sh` once on the login node (it creates .venv;
# the nodes only use it):
#   sbatch scripts/train_slurm.sh                       # 2 nodes x 4 GPUs: global batch 8 x 16
#   sbatch --nodes 4 scripts/train_slurm.sh --batchsize 1   # 16 GPUs, the paper's global batch 16
# --batchsize is per process; the lr is used as given (see scripts/train_torchrun.sh).
# A worker that dies (node fault, OOM kill) makes torchrun restart the whole group, up to
# MAX_RESTARTS times; a preempted or requeued job starts again. Both continue from the last
# checkpoint because of --resume auto, so LOGDIR must be on a filesystem every node sees.
#   NGPU          processes per node (default: SLURM_GPUS_ON_NODE, else 1)
#   PORT          rendezvous port on the first node (default 29500)
#   MAX_RESTARTS  torchrun --max-restarts (default 3)
#   PRETRAINED    imagenet (default; every rank reads torchvision's cache, so on nodes without
#                 network download once on the login node first) or a local .pth, or none
# Other variables as in scripts/train_r50_deeplabv2.sh; extra arguments go to train.py.
set -e
cd "${SLURM_SUBMIT_DIR:-$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)}"  # sbatch runs a copy of this file
if [ ! -x .venv/bin/torchrun ]; then
    echo "error: $(pwd)/.venv is missing: run 'sh scripts/env.sh' once on the login node, then sbatch again" >&2
    exit 1
fi
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
NGPU="${NGPU:-${SLURM_GPUS_ON_NODE:-1}}"
srun --kill-on-bad-exit=1 .venv/bin/torchrun --nnodes "$SLURM_NNODES" --nproc_per_node "$NGPU" \
    --rdzv_backend c10d --rdzv_endpoint "$HEAD_NODE:${PORT:-29500}" --rdzv_id "$SLURM_JOB_ID" \
    --max-restarts "${MAX_RESTARTS:-3}" \
    train.py --model_type deeplabv2 --layers 50 \
    --dataset_path "${DATA:-dataset/ScribbleSup/VOC2012}" --pseudo_path "${PSEUDO:-BMP}" \
    --distancemap_c "${DIST_C:-distance_pseudo}" \
    --batchsize 16 --lr 1e-3 --epochs 50 --warmup 5 --workers "${WORKERS:-8}" \
    --pretrained "${PRETRAINED:-imagenet}" --logdir "${LOGDIR:-log/train_r50_deeplabv2_slurm}" \
    --resume auto "$@"
