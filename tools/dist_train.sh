#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun.
#
#   tools/dist_train.sh CONFIG NUM_PROCS_PER_NODE [train.py args...]
#
# Environment (defaults): NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500).
# For several nodes run the same command on each one with its own NODE_RANK.
# Without GPUs tools/train.py switches to gloo on CPU by itself.
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS_PER_NODE [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
TOOLS=$(dirname "$0")

# cmt_mm importable from a source checkout that is not pip-installed.
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec torchrun \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"
