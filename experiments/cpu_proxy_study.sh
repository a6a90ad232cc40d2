#!/usr/bin/env bash
# The pre-registered CPU proxy study (docs/studies/proxy64.md), phase by phase; every phase resumes.
#   bash experiments/cpu_proxy_study.sh lr <scale> <recipe>     # the lr grid {1,2,4} on that recipe's ResNet-50 row
#   bash experiments/cpu_proxy_study.sh path <scale> <seeds> [steps]  # the main path with the chosen lr
#   bash experiments/cpu_proxy_study.sh cmt <scale> <seeds>           # the ConvNeXt -> CMT hybrid roadmap
#   bash experiments/cpu_proxy_study.sh check <scale> <steps> <seed>  # rerun steps with a seed the study did not
#                                                                       use; does each land in the study's spread?
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
  cmt)
    $PY -m roadmap -m experiment=convnext_to_cmt scale=$scale seed=$3 "${common[@]}" ;;
  check)
    steps=$3; seed=$4
    $PY -m roadmap -m "step=$steps" scale=$scale seed=$seed experiment_name=seed_check \
        hydra.callbacks.report.enabled=false "${common[@]}"
    $PY -m roadmap.report.spread "results/imagenette-$scale" "results/imagenette-$scale-seed_check/runs" ;;
  *) echo "usage: $0 lr <scale> <recipe> | path <scale> <seeds> [steps] | cmt <scale> <seeds> | check <scale> <steps> <seed>" >&2
     exit 2 ;;
esac
