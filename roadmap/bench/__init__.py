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

import datetime
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from .datapath import loader_img_s, proxy_config, proxy_overrides, run_epoch_time, run_loader
from .levers import (COMPILE_LEVERS, DEFAULT_LEVERS, LEVERS, LeverRatio, ProcResult, best_levers, lever_ratios,
                     run_levers, run_processes)
from .markdown import print_table, write_markdown
from .timing import (ENDPOINTS, MIN_REPEATS, NUM_CLASSES, TIMM_MODELS, Candidate, Measurement, Ratio, Runner,
                     Settings, _default_batch, _log, build_ours, build_timm, candidate_groups, cpu_model,
                     device_slug, endpoint_ratios, measure_group, run_models)
from .cli import main


def bench(steps: Optional[Sequence[str]] = None, device: str = "cpu", img_sizes: Sequence[int] = (64, 128),
          batch_sizes: Optional[Sequence[int]] = None, mode: str = "both", out: Optional[Path] = None,
          endpoints_only: bool = False, loader_batches: int = 0, epoch_repeats: int = 0,
          epoch_max_steps: Optional[int] = None, argv: Sequence[str] = (), settings: Optional[Settings] = None,
          overrides: Sequence[str] = (), loader_steps: Optional[Sequence[str]] = None,
          log: Callable[[str], None] = _log, levers: Optional[Sequence[str]] = None, processes: int = 0,
          process_lever: str = "fp32", process_seconds: float = 8.0) -> Dict[str, Any]:
    """Measure, print and write the report; returns {'results', 'ratios', 'levers', 'processes', 'loader',
    'epoch', 'out'}. With `levers`, every model is measured under each of them (see levers.py)."""
    from ..steps import MAIN_PATH

    s = settings or Settings(device=device)
    s.device = device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    if s.threads:
        torch.set_num_threads(s.threads)
    steps = list(steps) if steps else list(MAIN_PATH)
    modes = ["train", "infer"] if mode == "both" else [mode]
    started, t0 = datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    if levers:
        lsteps = [x for x in steps if x in ENDPOINTS] if endpoints_only else steps
        results = run_levers(lsteps, img_sizes, batch_sizes, modes, s, levers, endpoints_only, log)
    else:
        results = run_models(steps, img_sizes, batch_sizes, modes, s, endpoints_only, log)
    procs = None
    if processes:
        batch = batch_sizes[0] if batch_sizes else _default_batch(img_sizes[0], device)
        psteps = [x for x in steps if x in ENDPOINTS] if endpoints_only else steps
        plever: Any = process_lever
        if process_lever == "best":  # each model under its winning lever (train ratio >= 1.05 over fp32)
            plever = best_levers(lever_ratios(results, levers[0])) if levers else "fp32"
        procs = run_processes(psteps, img_sizes[0], batch, s, plever, processes, s.threads,
                              process_seconds, s.repeats, log)
    loader = run_loader(list(loader_steps or steps), loader_batches, s, overrides, log) if loader_batches else None
    epoch = run_epoch_time("separate_downsampling", epoch_repeats, epoch_max_steps, s, overrides, log) \
        if epoch_repeats else None
    out = Path(out) if out else Path("results") / f"bench-{device_slug(device)}.md"
    write_markdown(out, results, s, argv, loader, epoch, started, time.perf_counter() - t0, procs)
    print_table(results)
    print(f"\nwrote {out}")
    return {"results": results, "ratios": endpoint_ratios(results),
            "levers": lever_ratios(results, levers[0]) if levers else [], "processes": procs or [],
            "loader": loader, "epoch": epoch, "out": out}
