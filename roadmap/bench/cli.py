"""`python -m roadmap.bench` command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..config import step_names
from ..steps import MAIN_PATH
from . import suite
from .levers import COMPILE_LEVERS, DEFAULT_LEVERS, LEVERS
from .timing import MIN_REPEATS, NUM_CLASSES, Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m roadmap.bench", description=suite.__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", nargs="+", default=None, metavar="STEP",
                   help=f"roadmap steps to measure (default: the main path, {len(MAIN_PATH)} steps)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", nargs="+", type=int, default=None,
                   help="one value, or one per --img-size (default: CPU 64 at <= 64 px else 32; CUDA 256 / 128)")
    p.add_argument("--img-size", nargs="+", type=int, default=[64, 128])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 2 on CPU, torch's default on CUDA)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (compiled during warm-up)")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"timed repeats per figure (>= {MIN_REPEATS})")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing (at least 1)")
    p.add_argument("--iters", type=int, default=0, help="steps per timed repeat (default: enough for --min-time)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed repeat when --iters is 0")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier (timm models get the same stage widths; timm's ResNet stem stays 64)")
    p.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--endpoints-only", action="store_true", help="only baseline and separate_downsampling (+ timm)")
    p.add_argument("--loader", action="store_true",
                   help="also: proxy-scale loader img/s vs the steps' train img/s at that scale")
    p.add_argument("--loader-steps", nargs="+", default=None, metavar="STEP",
                   help="steps whose proxy-scale train img/s the loader is compared with (default: the main path)")
    p.add_argument("--loader-batches", type=int, default=60, help="batches timed per loader")
    p.add_argument("--epoch-time", action="store_true",
                   help="also: one proxy-scale epoch of separate_downsampling with data.cache on vs off")
    p.add_argument("--epoch-repeats", type=int, default=1, help="epochs per setting (alternated on/off)")
    p.add_argument("--epoch-max-steps", type=int, default=None, help="cap the epoch (default: the full epoch)")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                   help="Hydra overrides for the --loader / --epoch-time configs, e.g. data.root=... data.cache_dir=...")
    p.add_argument("--levers", nargs="*", default=None, metavar="LEVER",
                   help=f"measure every model under these settings, interleaved (default with no names: "
                        f"{' '.join(DEFAULT_LEVERS)}; all: {' '.join(LEVERS)})")
    p.add_argument("--compile-too", action="store_true", help="--levers: add " + " and ".join(COMPILE_LEVERS))
    p.add_argument("--processes", type=int, default=0, metavar="N",
                   help="also: one training process with --threads threads vs N side by side (threads split)")
    p.add_argument("--process-lever", default="fp32", choices=(*LEVERS, "best"),
                   help="settings for --processes; best: each model's fastest lever of --levers (>= 1.05x fp32)")
    p.add_argument("--process-seconds", type=float, default=8.0, help="seconds each process trains per turn")
    p.add_argument("--out", type=Path, default=None, help="markdown report (default: results/bench-<device>.md)")
    return p


def _checked_levers(p: argparse.ArgumentParser, a: argparse.Namespace) -> Optional[List[str]]:
    """Check the arguments (p.error: one line, exit 2); the levers to measure, or None."""
    if a.repeats < MIN_REPEATS:
        p.error(f"--repeats {a.repeats}: at least {MIN_REPEATS} (the figures are medians of >= {MIN_REPEATS} repeats)")
    unknown = [x for x in [*(a.steps or ()), *(a.loader_steps or ())] if x not in step_names()]
    if unknown:
        p.error(f"unknown step(s) {', '.join(unknown)}; allowed: {', '.join(step_names())}")
    if a.iters < 0 or a.warmup < 0:
        p.error("--iters and --warmup must be >= 0")
    levers = None
    if a.levers is not None:
        levers = list(a.levers or DEFAULT_LEVERS) + (list(COMPILE_LEVERS) if a.compile_too else [])
        bad = [x for x in levers if x not in LEVERS]
        if bad:
            p.error(f"unknown lever(s) {', '.join(bad)}; allowed: {', '.join(LEVERS)}")
        levers = list(dict.fromkeys(levers))
    if a.processes and a.device != "cpu":
        p.error("--processes compares CPU thread splits; allowed with --device cpu only")
    return levers


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    levers = _checked_levers(p, a)
    threads = a.threads if a.threads is not None else (2 if a.device == "cpu" else None)
    s = Settings(device=a.device, threads=threads, channels_last=a.channels_last, bf16=a.bf16, compile=a.compile,
                 repeats=a.repeats, warmup=a.warmup, iters=a.iters, min_time=a.min_time, width_mult=a.width_mult,
                 num_classes=a.num_classes)
    cmd = ["python", "-m", "roadmap.bench", *(sys.argv[1:] if argv is None else argv)]
    suite.bench(a.steps, a.device, a.img_size, a.batch_size, a.mode, a.out, a.endpoints_only,
          a.loader_batches if a.loader else 0, a.epoch_repeats if a.epoch_time else 0, a.epoch_max_steps,
          cmd, s, a.override, a.loader_steps or list(MAIN_PATH), levers=levers, processes=a.processes,
          process_lever=a.process_lever, process_seconds=a.process_seconds)
    return 0

