#!/usr/bin/env bash
# One command on a lent GPU machine: install the bundle's wheels, print nvidia-smi, run the bench,
# then the GPU proxy main path (2 seeds, runs packed on the GPU) with its report, then, with whatever
# time is left, the budget curves of issue 20 (its six steps at 20, then 40 epochs; docs/studies/
# proxy64-budgets.md), inside a time budget; leaves at most 8 files in OUT_DIR, laid out as the
# repository's results/:
#
#   OUT_DIR/device_check.log                               everything printed (versions, stages, timings)
#   OUT_DIR/results/bench-gpu.md                           ours vs timm, train + infer, 224 + 64 px, per setting
#   OUT_DIR/results/bench-gpu-compile.md                   torch.compile vs eager, ConvNeXt-T training at 64 px
#   OUT_DIR/results/imagenette-proxy_gpu/trajectory.md     the report (+ .csv, .png, summary.json)
#   OUT_DIR/results/imagenette-proxy_gpu/runs.tar.gz       per run (main path and budget curves): metrics.json,
#                                                          history.csv, config.yaml, train.log; packed.json per sweep;
#                                                          loader figures; other report files
#
#   make device-bundle                      # here, first: .device/ (wheels + Imagenette as WebP)
#   bash experiments/device_check.sh "$OUT" # there (device tool: carry [".device"], timeout_s 600)
#
# Stops itself in time: the bench passes have BENCH_S and COMPILE_S seconds, training stops starting runs that would not
# finish and stops the rest at BUDGET_S - REPORT_S; the report and the archive of what finished
# are written in any case. The same script runs on CPU in tests/test_device_check.py with tiny
# settings through these variables:
set -uo pipefail
OUT=${1:?usage: experiments/device_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUNDLE=${BUNDLE:-.device}                 # wheels/*.whl + imagenette-*.npz (make device-bundle)
BUDGET_S=${BUDGET_S:-530}                 # the whole command
BENCH_S=${BENCH_S:-90}                    # bench, eager settings (fp32, channels_last, bf16, bf16+channels_last)
COMPILE_S=${COMPILE_S:-60}                # bench, torch.compile pass (0: none)
REPORT_S=${REPORT_S:-40}                  # kept at the end for the report and the archive
SEEDS=${SEEDS:-"0 1"}
SLOTS=${SLOTS:-4}                         # runs side by side on the GPU (roadmap.packed)
STEPS=${STEPS:-}                          # default: the 14-step main path
DEVICE=${DEVICE:-cuda}
RUN_ARGS=${RUN_ARGS:-"scale=proxy_gpu"}   # hydra overrides of every run
BENCH_ARGS=${BENCH_ARGS:-"--levers --device $DEVICE --endpoints-only --img-size 224 64 --repeats 5 --min-time 0.1"}
COMPILE_ARGS=${COMPILE_ARGS:-"--levers bf16 bf16+compile --device $DEVICE --steps separate_downsampling --mode train --img-size 64 --repeats 5 --min-time 0.1"}
LOADER_S=${LOADER_S:-3}                   # seconds per recipe timing the on-device loader
STUDY=${STUDY:-imagenette-proxy_gpu}
CURVE_EPOCHS=${CURVE_EPOCHS:-"20 40"}     # budget curves after the main path, while time is left
CURVE_STEPS=${CURVE_STEPS:-"modern_recipe kernel_7 gelu fewer_norms layer_norm separate_downsampling"}
CURVE_SEEDS=${CURVE_SEEDS:-"0 1"}
CURVE_ARGS=${CURVE_ARGS:-"scale=proxy_gpu_e{E}"}  # hydra overrides of a curve's runs; {E}: its epochs
CURVE_MIN_S=${CURVE_MIN_S:-60}            # a curve starts only with at least this much time left
ARCHIVE_S=${ARCHIVE_S:-15}                # kept at the very end for the archive
WORK=${WORK:-$(mktemp -d /tmp/device_check.XXXXXX)}
START=$(date +%s)

mkdir -p "$OUT/results/$STUDY" "$WORK"
exec > >(tee -a "$OUT/device_check.log") 2>&1
TEE_PID=$!
finish() { exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null; exit "$1"; }  # the log is complete before we return
elapsed() { echo $(( $(date +%s) - START )); }
stage() { echo; echo "== [$(elapsed) s] $*"; }
status=0
fail() { echo "!! $*"; status=1; }

stage "device check: budget ${BUDGET_S} s, bench ${BENCH_S} + ${COMPILE_S} s, seeds ${SEEDS}, ${SLOTS} runs at a time; work dir $WORK"
git log -1 --format='commit %h %s' 2>/dev/null || true
cat "$BUNDLE/MANIFEST.json" 2>/dev/null || true

stage "wheels from $BUNDLE/wheels -> $WORK/site"
if ls "$BUNDLE"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$WORK/site" \
    "$BUNDLE"/wheels/*.whl || fail "wheel install failed"
  ls "$WORK/site"
else
  fail "no wheels in $BUNDLE/wheels (make device-bundle)"
fi
export PYTHONPATH="$PWD:$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled ROADMAP_REPORT=0

stage "nvidia-smi"
if command -v nvidia-smi >/dev/null; then timeout 30 nvidia-smi; else echo "(no nvidia-smi: CPU dry run)"; fi

stage "versions and imports"
"$PY" - <<'PY' || { fail "the device check's imports fail: nothing else can run"; finish 1; }
import platform, torch, torchvision, timm, hydra, omegaconf, fvcore, numpy, PIL
import roadmap.train, roadmap.report, roadmap.bench, roadmap.packed, roadmap.device_data  # the whole path
print(f"python {platform.python_version()}  torch {torch.__version__}  torchvision {torchvision.__version__}  "
      f"timm {timm.__version__}  hydra {hydra.__version__}  omegaconf {omegaconf.__version__}  numpy {numpy.__version__}  pillow {PIL.__version__}")
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "| cpus:", __import__("os").cpu_count())
PY

stage "data: $BUNDLE/imagenette-*.npz -> $WORK/imagenette"
NPZ=$(ls "$BUNDLE"/imagenette-*.npz 2>/dev/null | head -1)
[ -n "$NPZ" ] && "$PY" -m roadmap.bundle unpack "$NPZ" "$WORK/imagenette" || fail "no data in $BUNDLE"

stage "bench: eager settings (at most $BENCH_S s)"
timeout -k 10 "$BENCH_S" "$PY" -m roadmap.bench $BENCH_ARGS --out "$OUT/results/bench-gpu.md" \
  || fail "bench (eager settings) did not finish"
if [ "$COMPILE_S" -gt 0 ]; then
  stage "bench: torch.compile (at most $COMPILE_S s)"
  timeout -k 10 "$COMPILE_S" "$PY" -m roadmap.bench $COMPILE_ARGS --out "$WORK/bench-gpu-compile.md" \
    && cp "$WORK/bench-gpu-compile.md" "$OUT/results/" || echo "(the compile pass did not finish in $COMPILE_S s)"
fi

stage "device loader throughput"
"$PY" -m roadmap.device_data bench --device "$DEVICE" --seconds "$LOADER_S" --threads 1 | tee "$WORK/loader.txt" || fail "loader bench failed"

SWEEP="$WORK/sweeps/$STUDY"
TRAIN_S=$(( BUDGET_S - REPORT_S - $(elapsed) ))
stage "GPU proxy: main path, seeds $SEEDS, $SLOTS at a time, deadline in $TRAIN_S s"
"$PY" -m roadmap.packed --sweep-dir "$SWEEP" --slots "$SLOTS" --seeds $SEEDS ${STEPS:+--steps $STEPS} \
  --deadline-s "$TRAIN_S" -- $RUN_ARGS logger=none experiment_name=roadmap_path \
  "data.root=$WORK/imagenette" "data.cache_dir=$WORK/cache" || fail "not every run finished (see packed.json)"

stage "report"
REP="$OUT/results/$STUDY"
timeout -k 5 $(( REPORT_S * 3 / 4 )) "$PY" -m roadmap.report "$SWEEP" --out "$REP" --wandb disabled || fail "report failed"
mkdir -p "$WORK/extra"
for f in "$REP"/* "$REP"/.[!.]*; do  # keep md/csv/png/summary here; anything else goes into the archive
  case "$(basename "$f")" in trajectory.md|trajectory.csv|trajectory.png|summary.json|runs.tar.gz) ;;
    *) [ -e "$f" ] && mv "$f" "$WORK/extra/" ;; esac
done

for E in $CURVE_EPOCHS; do  # issue 20's budget curves (reports rebuilt from the archive afterwards)
  LEFT=$(( BUDGET_S - ARCHIVE_S - $(elapsed) ))
  if [ "$LEFT" -lt "$CURVE_MIN_S" ]; then echo; echo "(budget curves from $E epochs on: not run, $LEFT s left)"; break; fi
  stage "budget curve: $E epochs, steps $CURVE_STEPS, seeds $CURVE_SEEDS, deadline in $LEFT s"
  "$PY" -m roadmap.packed --sweep-dir "$WORK/sweeps/$STUDY-e$E" --slots "$SLOTS" --seeds $CURVE_SEEDS \
    --steps $CURVE_STEPS --deadline-s "$LEFT" -- ${CURVE_ARGS//\{E\}/$E} logger=none \
    "data.root=$WORK/imagenette" "data.cache_dir=$WORK/cache" || echo "(not every $E-epoch run finished: see its packed.json)"
done

stage "archive of the runs"
cp "$WORK/loader.txt" "$WORK/extra/" 2>/dev/null
(cd "$WORK" && find sweeps \( -name metrics.json -o -name history.csv -o -name config.yaml -o -name train.log \
   -o -name failed.json -o -name process.log -o -name packed.json \) -print0 | tar czf "$REP/runs.tar.gz" --null -T - extra) \
  || fail "archive failed"

stage "done in $(elapsed) s (budget $BUDGET_S s); files in $OUT:"
(cd "$OUT" && find . -type f | sort | xargs ls -l)
n=$(find "$OUT" -type f | wc -l)
[ "$n" -le 8 ] || fail "$n files in $OUT (at most 8 come back)"
finish $status
