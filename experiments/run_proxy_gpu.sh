#!/usr/bin/env bash
# A proxy study on one GPU: every step of an experiment (default: roadmap_full, the
# 14-step main path plus the 3 kernel branches) x 3 seeds at scale=proxy_gpu, one process per seed
# running in parallel (a 64-px model leaves most of an H100 idle), then the report.
#
#   bash experiments/run_proxy_gpu.sh [hydra overrides...]        e.g. data.root=/data/imagenette
#   SEEDS="0 1" EXPERIMENT=roadmap_path bash experiments/run_proxy_gpu.sh
#
# Rerunning skips finished runs and resumes unfinished ones (each run dir has last.pt).
set -euo pipefail
SEEDS=${SEEDS:-"0 1 2"}
EXPERIMENT=${EXPERIMENT:-roadmap_full}
PY=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-outputs}
LOGS="$OUT_DIR/logs"
mkdir -p "$LOGS"
# Build the prepared caches once, before the seeds race to build them.
$PY - "$@" <<'PY'
import sys
from roadmap.data import base_datasets
from roadmap.steps import compose_config
base_datasets(compose_config(["scale=proxy_gpu", *(a for a in sys.argv[1:] if "," not in a)]))  # not sweep lists
PY
start=$(date +%s)
pids=()
for s in $SEEDS; do
  $PY -m roadmap -m "experiment=$EXPERIMENT" scale=proxy_gpu "seed=$s" "out_dir=$OUT_DIR" "$@" \
    > "$LOGS/$EXPERIMENT-seed$s.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
echo "sweep of $EXPERIMENT (seeds $SEEDS) took $(( $(date +%s) - start )) s; exit status $status"
exit $status
