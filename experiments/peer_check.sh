#!/usr/bin/env bash
# Issue 33's peer check (docs/studies/peer-check.md): the two ends of the roadmap at scale=proxy64,
# seeds 0 and 1, trained by timm's train.py in two variants: our networks from timm's registry
# (roadmap_<step>, "registry") and timm's own resnet50 / convnext_tiny at our widths ("own").
# 8 runs on two 1-thread lanes; train.py reads the 73-px images of our prepared cache (roadmap.timm_data);
# each finished run is imported into results/peer-check/timm-<variant>/runs/<step>/seed<k>/.
#
#   TIMM_TRAIN=/path/to/train.py bash experiments/peer_check.sh          # the 8 runs, then the verdict
#   TIMM_TRAIN=/path/to/train.py bash experiments/peer_check.sh tiny     # the pipeline on 2 tiny runs (scale=smoke)
#   bash experiments/peer_check.sh verdict                               # reports + the declared rule only
#
# train.py: from huggingface/pytorch-image-models at the commit named in roadmap/timm_train_flags.txt
# (not in timm's wheel). Rerunning skips imported runs; an unfinished train.py run is started again from
# scratch (train.py's --resume re-seeds its RNGs: docs/studies/peer-check.md). train.py's own folders
# (checkpoints, logs, the command that ran) stay under $OUT; results/ gets the small files only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
MODE=${1:-runs}
OUT=${OUT:-outputs/peer-check}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline

if [ "$MODE" = tiny ]; then
    SCALE=smoke; RES=${RES:-$OUT/tiny-results}; OUT=$OUT/tiny
    JOBS="registry:modern_recipe:0 own:separate_downsampling:0"
else
    SCALE=proxy64; RES=${RES:-results/peer-check}
    JOBS="registry:modern_recipe:0 registry:separate_downsampling:0 own:modern_recipe:0 own:separate_downsampling:0
          registry:modern_recipe:1 registry:separate_downsampling:1 own:modern_recipe:1 own:separate_downsampling:1"
fi
DATA=${DATA:-outputs/timm-data/imagenette-$SCALE}

verdict() {
    for v in registry own; do
        [ -d "$RES/timm-$v/runs" ] && $PY -m roadmap.report "$RES/timm-$v" --wandb disabled || true
    done
    $PY -m roadmap.report.peer results/imagenette-proxy64 "$RES/timm-registry" "$RES/timm-own" --out "$RES/verdict.json"
}

one_run() {  # one_run VARIANT STEP SEED: train (unless imported already), import
    local variant=$1 step=$2 seed=$3 own=()
    [ "$variant" = own ] && own=(--timm-model)
    local run_dir=$RES/timm-$variant/runs/$step/seed$seed
    [ -f "$run_dir/metrics.json" ] && { echo "skip $variant $step seed $seed (imported)"; return 0; }
    local args=(step="$step" scale=$SCALE seed="$seed") name=$step-$variant-$SCALE-seed$seed
    local timm_dir=$OUT/$variant/$name
    rm -rf "$timm_dir"  # unfinished before: start again (no --resume, see above)
    mkdir -p "$OUT/$variant"
    $PY -m roadmap.timm_command "${args[@]}" "${own[@]}" --device cpu --data-dir "$DATA" --train-py "$TIMM_TRAIN" \
        --python "$PY" --output "$OUT/$variant" --experiment "$name" -- --checkpoint-hist 1 > "$timm_dir.sh"
    echo "start $variant $step seed $seed: $timm_dir ($(date +%T))"
    local t0; t0=$(date +%s)
    bash "$timm_dir.sh" > "$timm_dir.log" 2>&1 || { echo "FAILED $variant $step seed $seed: see $timm_dir.log"; return 1; }
    echo $(( $(date +%s) - t0 )) > "$timm_dir/wall_seconds.txt"
    $PY -m roadmap.timm_import "$timm_dir" "$run_dir" "${args[@]}" "${own[@]}"
    cp "$timm_dir.sh" "$run_dir/timm/command.sh"
}

lane() {  # every job not yet claimed by the other lane of this invocation
    local claims=$1 job
    for job in $JOBS; do
        mkdir "$claims/${job//:/-}" 2>/dev/null || continue
        one_run ${job//:/ } || true
    done
}

[ "$MODE" = verdict ] && { verdict; exit $?; }
: "${TIMM_TRAIN:?set TIMM_TRAIN to the path of timm train.py (see roadmap/timm_train_flags.txt for the commit)}"
mkdir -p "$OUT"
$PY -m roadmap.timm_data "$DATA" step=modern_recipe scale=$SCALE
claims=$(mktemp -d "$OUT/.claims-XXXX")
t0=$(date +%s)
if [ "$MODE" = tiny ]; then lane "$claims"; else lane "$claims" & lane "$claims" & wait; fi
rm -rf "$claims"
echo "all runs: $(( $(date +%s) - t0 )) s"
[ "$MODE" = tiny ] && exit 0
verdict
