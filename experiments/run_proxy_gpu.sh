#!/usr/bin/env bash
# The GPU proxy study on one GPU, without a time limit: the 14-step main path x SEEDS at
# scale=proxy_gpu, SLOTS runs at a time side by side on the GPU (python -m roadmap.packed: a
# 64-px model alone leaves most of an H100 idle), then the report (results/imagenette-proxy_gpu/).
#
#   bash experiments/run_proxy_gpu.sh [hydra overrides...]        e.g. data.root=/data/imagenette
#   SEEDS="0 1" SLOTS=6 bash experiments/run_proxy_gpu.sh
#   STEPS="move_up_dwconv kernel_5 kernel_9 kernel_11" bash experiments/run_proxy_gpu.sh   # the kernel branches
#
# Rerunning skips finished runs and resumes unfinished ones (each run dir has last.pt).
# experiments/device_check.sh runs the same path inside a lent machine's time budget.
set -euo pipefail
SEEDS=${SEEDS:-"0 1 2"}
SLOTS=${SLOTS:-4}
STEPS=${STEPS:-}
PY=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-outputs}
SWEEP="$OUT_DIR/sweeps/roadmap_path-imagenette-proxy_gpu-resnet50"
start=$(date +%s)
status=0
$PY -m roadmap.packed --sweep-dir "$SWEEP" --slots "$SLOTS" --seeds $SEEDS ${STEPS:+--steps $STEPS} -- \
  scale=proxy_gpu experiment_name=roadmap_path "out_dir=$OUT_DIR" "$@" || status=$?
$PY -m roadmap.report "$SWEEP"
echo "proxy_gpu study (seeds $SEEDS, $SLOTS at a time) took $(( $(date +%s) - start )) s; exit status $status"
exit $status
