#!/usr/bin/env bash
# The pre-registered CPU proxy study (README "CPU proxy study"), phase by phase; every phase resumes.
#   bash experiments/cpu_proxy_study.sh lr <scale> <recipe>     # the lr grid {1,2,4} on that recipe's ResNet-50 row
#   bash experiments/cpu_proxy_study.sh path <scale> <seeds> [steps]  # the main path with the chosen lr
# Runs go side by side, the cores split between them (hydra/launcher=parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
phase=$1; scale=$2
common=(logger=none hydra/launcher=parallel keep_runs=true)   # finished runs copied to results/<study>/runs/
case "$phase" in
  lr)
    recipe=$3
    row=$([ "$recipe" = classic ] && echo baseline || echo modern_recipe)
    $PY -m roadmap -m step=$row scale=$scale "scale.lr_mult.$recipe=1,2,4" seed=0 experiment_name=lr_select \
        hydra.callbacks.report.enabled=false "${common[@]}"
    $PY experiments/select_lr.py "outputs/sweeps/lr_select-imagenette-$scale-resnet50" "$recipe" ;;
  path)
    seeds=$3
    steps=${4:-baseline,modern_recipe,stage_ratio,patchify_stem,depthwise_conv,increase_width,inverted_bottleneck,move_up_dwconv,kernel_7,gelu,fewer_activations,fewer_norms,layer_norm,separate_downsampling}
    $PY -m roadmap -m experiment=roadmap_path "step=$steps" scale=$scale seed=$seeds "${common[@]}" ;;
  *) echo "usage: $0 lr <scale> <recipe> | path <scale> <seeds> [steps]" >&2; exit 2 ;;
esac
