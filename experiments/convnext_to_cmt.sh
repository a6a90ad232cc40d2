#!/usr/bin/env bash
# The ConvNeXt -> CMT hybrid roadmap: 8 steps from ConvNeXt-T to CMT-S, one change at a time,
# as a Hydra multirun; the report lands in results/<dataset>-<scale>-convnext_to_cmt/.
#
#   bash experiments/convnext_to_cmt.sh                          # smoke scale, seed 0
#   SCALE=proxy SEEDS=0,1,2 bash experiments/convnext_to_cmt.sh [hydra overrides...]
#
# Rerunning skips finished runs and resumes unfinished ones.
set -euo pipefail
PY=${PYTHON:-python}
exec $PY -m roadmap -m experiment=convnext_to_cmt "scale=${SCALE:-smoke}" "seed=${SEEDS:-0}" "$@"
