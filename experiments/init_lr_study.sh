#!/usr/bin/env bash
# Issue 31's pre-registered study (docs/studies/proxy64-init-lr.md): the queue, item by item, in order.
#   bash experiments/init_lr_study.sh queue [first_item]   # the items from first_item on (default: all); resumes
#   bash experiments/init_lr_study.sh item N               # one item
#   bash experiments/init_lr_study.sh lr-pick              # L1's rule on both ends (JSON, one line each)
# Two runs side by side, one thread each (hydra/launcher=parallel); every finished run is kept in
# results/imagenette-<preset>[-<experiment>]/runs/ (keep_runs=true); kept runs are not rerun (a fresh clone
# has no run dirs, so each item first drops the runs already kept). Runs the design's code: start it from a
# worktree at the design commit (PYTHONPATH=<worktree>), as the budget study did.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# the main path less the steps whose effective init the pin does not change (reused: see the design)
CONVNEXT_NEW=baseline,modern_recipe,stage_ratio,patchify_stem,depthwise_conv,increase_width,inverted_bottleneck,move_up_dwconv,kernel_7,gelu,fewer_activations
ENDS=modern_recipe,separate_downsampling
PAIR4=modern_recipe,fewer_norms,layer_norm,separate_downsampling
common=(logger=none hydra/launcher=parallel keep_runs=true hydra.callbacks.report.enabled=false)

kept() {  # kept <study> <step> <run dir name>: is that run kept already?
  [ -f "results/$1/runs/$2/$3/metrics.json" ]
}

todo() {  # todo <study> <steps,> <seeds,> [variant]: the steps with a seed not kept yet (comma list)
  local study=$1 steps=$2 seeds=$3 variant=${4:-} out=() s k
  for s in ${steps//,/ }; do
    for k in ${seeds//,/ }; do kept "$study" "$s" "seed$k$variant" || { out+=("$s"); break; }; done
  done
  local IFS=,; echo "${out[*]}"
}

pinned() {  # pinned <resnet|convnext> <steps>: the steps with model.init pinned, seeds 0,1
  local init=$1 steps=$2 left
  left=$(todo "imagenette-proxy64-init_$init" "$steps" 0,1 ",model.init=$init")
  [ -z "$left" ] && { echo "item done: init=$init ($steps)"; return; }
  $PY -m roadmap -m "step=$left" "model.init=$init" scale=proxy64 seed=0,1 "experiment_name=init_$init" "${common[@]}"
}

lr_runs() {  # lr_runs <experiment> <steps> <mults,> <seeds,>: modern-recipe lr multipliers at proxy64
  local exp=$1 steps=$2 mults=$3 seeds=$4 m left
  for m in ${mults//,/ }; do
    left=$(todo "imagenette-proxy64-$exp" "$steps" "$seeds" ",scale.lr_mult.modern=$m")
    [ -z "$left" ] && { echo "item done: $exp x$m ($steps)"; continue; }
    $PY -m roadmap -m "step=$left" "scale.lr_mult.modern=$m" scale=proxy64 "seed=$seeds" "experiment_name=$exp" "${common[@]}"
  done
}

sweep() {  # sweep <preset> <steps> <seeds>: a scale preset's runs (H6)
  local preset=$1 steps=$2 seeds=$3 left
  left=$(todo "imagenette-$preset" "$steps" "$seeds")
  [ -z "$left" ] && { echo "item done: $preset ($steps)"; return; }
  $PY -m roadmap -m "step=$left" scale=$preset seed=$seeds "${common[@]}"
}

pick() {  # pick <row>: L1's rule over x1, x2, x4, x8 on one end (the grid is split across two folders)
  $PY experiments/select_lr.py results/imagenette-proxy64-lr_select results/imagenette-proxy64 modern --row "$1"
}

item() {
  case "$1" in
    1) pinned resnet separate_downsampling ;;
    2) pinned convnext $CONVNEXT_NEW ;;
    3) # the pre-registered rerun check (drawn before any run): seed 7, the two runs side by side
       a= b=
       for s in fewer_activations depthwise_conv; do
         kept imagenette-proxy64-init_seed_check $s "seed7,model.init=convnext" && continue
         $PY -m roadmap -m step=$s model.init=convnext scale=proxy64 seed=7 experiment_name=init_seed_check "${common[@]}" &
         if [ -z "$a" ]; then a=$!; else b=$!; fi
       done
       for pid in $a $b; do wait "$pid"; done
       $PY -m roadmap.report.spread results/imagenette-proxy64-init_convnext results/imagenette-proxy64-init_seed_check/runs \
         || echo "(spread check: exit $?)" ;;  # outside its range is reported, not a reason to stop
    4) # L1: x1, x2, x8 on ConvNeXt-T and x8 on ResNet-50, seed 0 (x1, x2, x4 on ResNet-50 and x4 on
       # ConvNeXt-T are committed); the two x8 runs first, side by side
       lr_runs lr_select $ENDS 8 0
       lr_runs lr_select separate_downsampling 1,2 0
       pick modern_recipe; pick separate_downsampling ;;
    5) # L2: only if ConvNeXt-T's pick is not the proxy's x4
       m=$(pick separate_downsampling | $PY -c 'import json,sys; print("%g" % json.load(sys.stdin)["chosen"])')
       if [ "$m" = 4 ]; then echo "item 5 not run: L1's ConvNeXt-T pick is x4, the proxy's multiplier"; return; fi
       # the ends' seed 0 at x$m are L1's runs (lr_select), reused: the ends get seed 1, the BN -> LN pair both
       lr_runs "lr_x$m" $ENDS "$m" 1
       lr_runs "lr_x$m" fewer_norms,layer_norm "$m" 0,1 ;;
    6) sweep proxy64_w050 $PAIR4 0,1; sweep proxy64_px96 $PAIR4 0,1 ;;
    *) echo "usage: $0 queue [first_item] | item N (1..6) | lr-pick (docs/studies/proxy64-init-lr.md)" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  queue)   for n in $(seq "${2:-1}" 6); do echo "== item $n"; item "$n"; done ;;
  item)    item "${2:?item number}" ;;
  lr-pick) pick modern_recipe; pick separate_downsampling ;;
  *)       item x ;;
esac
