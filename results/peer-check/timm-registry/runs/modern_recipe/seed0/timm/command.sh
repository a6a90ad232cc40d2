# timm train.py for step=modern_recipe scale=proxy64 seed=0 (recipe=modern, regime=resnet50, data=imagenette)
# flags of train.py at huggingface/pytorch-image-models@aa4b5850c1543fa488abf260f18390eda46cf85d (timm 1.0.29.dev0); train.py is not in timm's wheel: take it from that commit
# global batch 64 = 64 per process x 1 process(es) x 1 accumulation step(s)
# --lr 0.002 = recipe.lr 0.004 x (64/4096)^0.5 x lr_mult[modern] 4 (ours, already scaled: train.py's --lr-base route is not used)
# -c: values argparse cannot take on train.py's command line (int-typed flags, fractional values)
mkdir -p outputs/peer-check/registry
cat > outputs/peer-check/registry/modern_recipe-registry-proxy64-seed0.yaml <<'EOF'
warmup_epochs: 0.3333333333333333
EOF
/work/main/.venv/bin/python -m roadmap.timm_train /work/timm-train/train.py -c outputs/peer-check/registry/modern_recipe-registry-proxy64-seed0.yaml \
  --data-dir outputs/timm-data/imagenette-proxy64 \
  --train-split train \
  --val-split val \
  --num-classes 10 \
  --img-size 64 \
  --crop-pct 0.875 \
  --interpolation bicubic \
  --mean 0.485 0.456 0.406 \
  --std 0.229 0.224 0.225 \
  --model roadmap_modern_recipe \
  --model-kwargs width_mult=0.25 \
  --drop-path 0.1 \
  --batch-size 64 \
  --validation-batch-size 128 \
  --grad-accum-steps 1 \
  --opt adamw \
  --lr 0.002 \
  --opt-betas 0.9 0.999 \
  --weight-decay 0.05 \
  --sched-on-updates \
  --warmup-lr 1e-06 \
  --min-lr 1e-06 \
  --sched cosine \
  --epochs 5 \
  --train-interpolation bicubic \
  --aa rand-m9-mstd0.5-inc1 \
  --color-jitter 0.0 \
  --reprob 0.25 \
  --remode pixel \
  --recount 1 \
  --mixup 0.8 \
  --cutmix 1.0 \
  --mixup-prob 1.0 \
  --mixup-switch-prob 0.5 \
  --mixup-mode batch \
  --smoothing 0.1 \
  --seed 0 \
  --workers 2 \
  --val-interval 1 \
  --no-prefetcher \
  --device cpu \
  --channels-last \
  --output outputs/peer-check/registry \
  --experiment modern_recipe-registry-proxy64-seed0 \
  --checkpoint-hist 1
# Not expressible with train.py's flags (what you get instead):
#  - the warm-up (0.3333 epochs) as a prefix of the cosine: ours warms up, then runs the cosine over the remaining 4.667 epochs; train.py takes a fractional warm-up only through -c (argparse reads --warmup-epochs as an integer) and only without --warmup-prefix (with it train.py's epoch count becomes a float and its epoch loop fails), so its cosine spans all 5 epochs from update 0: after the warm-up its lr is up to 6.3 % of the peak below ours, and its summed lr is 93.4 % of ours
#  - per-sample seeding: ours seeds each sample's augmentation by (seed, epoch, index), the same for any number of loader workers; train.py seeds each loader worker (--worker-seeding all) and draws the order from the global RNG, so its draws depend on --workers; neither loop reproduces the other's order or augmentations: a seed of one is a new seed for the other
#  - the order of augmentation and Mixup: --no-prefetcher keeps ours (per sample: crop, flip, RandAugment, normalise, random erasing; then Mixup/CutMix on the float batch); train.py's default prefetcher, faster on a GPU, mixes uint8 images in its collate (rounded) and erases after mixing
#  - resuming: ours resumes inside an epoch from last.pt with every RNG restored; train.py's --resume restarts at an epoch boundary with its RNGs seeded afresh (utils.random_seed at start, no RNG state in its checkpoint), so the resumed epochs draw from the streams a fresh run's first epochs drew from
#  - a non-finite loss stops our run (failed.json); train.py goes on
#  - the record: ours writes history.csv and metrics.json (last and best top-1); train.py writes summary.csv (epochs from 0) and args.yaml: `python -m roadmap.timm_import` turns them into our run directory
