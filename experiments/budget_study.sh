#!/usr/bin/env bash
# Issue 20's pre-registered study (docs/studies/proxy64-budgets.md): the queue, item by item, in order.
#   bash experiments/budget_study.sh queue [first_item]   # the items in ORDER from first_item on (default: all); resumes
#   bash experiments/budget_study.sh item N               # one item
# Two runs side by side, one thread each (hydra/launcher=parallel); every finished run is kept in
# results/imagenette-<preset>[-<experiment>]/runs/ (keep_runs=true); kept runs are not rerun (a sweep skips
# a finished run dir; a fresh clone has no run dirs, so each item first drops the runs already kept).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SIX=modern_recipe,kernel_7,gelu,fewer_norms,layer_norm,separate_downsampling
ENDS=modern_recipe,separate_downsampling
common=(logger=none hydra/launcher=parallel keep_runs=true)
# the queue's order: the design's 1..9, except the rerun check (9), which amendment 1 moved to right after
# item 2 (docs/studies/proxy64-budgets.md, "Amendment 1"); it needs item 2's runs
ORDER="1 2 9 3 4 5 6 7 8"

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

sweep() {  # sweep <preset> <steps> <seeds> [extra overrides...]: the steps that still need runs
  local preset=$1 steps=$2 seeds=$3; shift 3
  local left; left=$(todo "imagenette-$preset" "$steps" "$seeds")
  [ -z "$left" ] && { echo "item done: $preset ($steps)"; return; }
  $PY -m roadmap -m "step=$left" scale=$preset seed=$seeds "${common[@]}" "$@"
}

variant() {  # variant <step> <override>: an H5 ride-along run at proxy64, seeds 0,1
  local step=$1 ov=$2
  [ -z "$(todo imagenette-proxy64-ridealong "$step" 0,1 ",$ov")" ] && { echo "item done: $step $ov"; return; }
  $PY -m roadmap -m step=$step "$ov" scale=proxy64 seed=0,1 experiment_name=ridealong \
      hydra.callbacks.report.enabled=false "${common[@]}"
}

item() {
  case "$1" in
    1) sweep proxy64_e10 $SIX 0,1 ;;
    2) sweep proxy64_e20 $SIX 0,1 ;;
    3) variant layer_norm model.init=resnet
       variant fewer_norms model.init=convnext
       variant fewer_norms model.layer_scale=0 ;;
    4) sweep proxy64_reg $SIX 0,1 ;;
    5) sweep proxy64_e40 $ENDS 0,1 ;;
    6) sweep proxy64_d25 $ENDS 0,1; sweep proxy64_d50 $ENDS 0,1 ;;
    7) sweep proxy64_w050 $ENDS,fewer_norms,layer_norm 0,1; sweep proxy64_px96 $ENDS,fewer_norms,layer_norm 0,1 ;;
    8) sweep proxy64_e20_reg $SIX 0,1 ;;
    9) # the pre-registered rerun check (drawn before any run): seed 5, the two runs side by side (one
       # lane each: a one-run sweep would leave the other lane idle), then the spread check
       a= b=
       kept imagenette-proxy64_e20-seed_check fewer_norms seed5 || {
         $PY -m roadmap -m step=fewer_norms scale=proxy64_e20 seed=5 experiment_name=seed_check \
             hydra.callbacks.report.enabled=false "${common[@]}" & a=$!; }
       kept imagenette-proxy64_e10-seed_check kernel_7 seed5 || {
         $PY -m roadmap -m step=kernel_7 scale=proxy64_e10 seed=5 experiment_name=seed_check \
             hydra.callbacks.report.enabled=false "${common[@]}" & b=$!; }
       for pid in $a $b; do wait "$pid"; done
       for p in proxy64_e20 proxy64_e10; do  # a rerun outside its range is reported (exit 1), not a reason to stop
         $PY -m roadmap.report.spread results/imagenette-$p results/imagenette-$p-seed_check/runs || echo "(spread check: exit $?)"
       done ;;
    *) echo "usage: $0 queue [first_item] | item N (1..9; docs/studies/proxy64-budgets.md)" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  queue) from=${2:-1}; go=
         for n in $ORDER; do [ "$n" = "$from" ] && go=1; [ -n "$go" ] && { echo "== item $n"; item "$n"; }; done ;;
  item)  item "${2:?item number}" ;;
  *)     item x ;;
esac
