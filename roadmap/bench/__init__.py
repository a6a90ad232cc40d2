"""Speed of our models against timm's, measured side by side: `python -m roadmap.bench`.

    python -m roadmap.bench                                   # every main-path step, 64 and 128 px, CPU
    python -m roadmap.bench --endpoints-only --img-size 64 128 --batch-size 64 32
    python -m roadmap.bench --device cuda --bf16 --channels-last [--compile]
    python -m roadmap.bench --endpoints-only --loader --epoch-time   # + the data path at proxy scale
    python -m roadmap.bench --levers --steps baseline inverted_bottleneck separate_downsampling \
        --img-size 64 --batch-size 64 --width-mult 0.25 --compile-too --processes 2   # the speed levers

For every chosen step and for timm's `resnet50` and `convnext_tiny` (random init, the same number
of classes, the same stochastic depth) it measures

* train img/s: forward + cross-entropy + backward + AdamW step, model in train mode;
* infer img/s: forward in eval mode under `torch.no_grad()`;
* peak memory, in one extra untimed step after the timing: the model's resident tensors (weights,
  buffers, optimizer state, batch) plus the step's transient growth -- CUDA `max_memory_allocated`,
  or on CPU the resident-set growth sampled every 2 ms (an estimate, labelled as such).

Each figure is the median of `--repeats` (>= 5) timed blocks of `iters` steps after `--warmup`
untimed steps, with the same batch, resolution, dtype, memory format and thread count for every
model. A step and its timm counterpart (baseline / resnet50, separate_downsampling /
convnext_tiny) are measured interleaved -- ours, timm, timm, ours, ... -- so that load from other
processes hits both alike; the ratio ours/timm is the ratio of the medians and its spread is the
min-max of the per-repeat ratios.

`--loader` compares the prepared-cache train loader of the proxy scale with the train img/s of
the models at that scale (the issue asks for loader >= 3x model); `--epoch-time` times one
proxy-scale training epoch of `separate_downsampling` on Imagenette with the cache on and off.
`--levers` measures each model under fp32 / channels_last / bf16 autocast / bf16 + channels_last
(`--compile-too`: + torch.compile, eager vs compiled), all interleaved in one process (with
`--endpoints-only`, timm's counterparts too, so ours/timm comes out per lever); `--processes N`
compares one training process with every thread against N side by side with the threads split.
Everything goes into `results/bench-<device>.md` (`--out`).

Layout: timing.py (models, interleaved timing), levers.py (speed levers, processes side by side),
datapath.py (loader and epoch at proxy scale), markdown.py (the report), this file (entry point).
"""
from __future__ import annotations

from .datapath import loader_img_s, proxy_config, proxy_overrides, run_epoch_time, run_loader
from .levers import (COMPILE_LEVERS, DEFAULT_LEVERS, LEVERS, LeverRatio, ProcResult, best_levers, lever_ratios,
                     run_levers, run_processes)
from .markdown import print_table, write_markdown
from .timing import (ENDPOINTS, MIN_REPEATS, NUM_CLASSES, TIMM_MODELS, Candidate, Measurement, Ratio, Runner,
                     Settings, _default_batch, _log, build_ours, build_timm, candidate_groups, cpu_model,
                     device_slug, endpoint_ratios, measure_group, run_models)
from .suite import bench
from .cli import main
