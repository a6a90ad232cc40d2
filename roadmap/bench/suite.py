"""Speed of our models against timm's, measured side by side (`python -m roadmap.bench`; the
package's docstring says what each option measures)."""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from ..steps import MAIN_PATH
from .datapath import run_epoch_time, run_loader
from .levers import best_levers, lever_ratios, run_levers, run_processes
from .markdown import print_table, write_markdown
from .timing import ENDPOINTS, Settings, _default_batch, _log, device_slug, endpoint_ratios, run_models


def bench(steps: Optional[Sequence[str]] = None, device: str = "cpu", img_sizes: Sequence[int] = (64, 128),
          batch_sizes: Optional[Sequence[int]] = None, mode: str = "both", out: Optional[Path] = None,
          endpoints_only: bool = False, loader_batches: int = 0, epoch_repeats: int = 0,
          epoch_max_steps: Optional[int] = None, argv: Sequence[str] = (), settings: Optional[Settings] = None,
          overrides: Sequence[str] = (), loader_steps: Optional[Sequence[str]] = None,
          log: Callable[[str], None] = _log, levers: Optional[Sequence[str]] = None, processes: int = 0,
          process_lever: str = "fp32", process_seconds: float = 8.0) -> Dict[str, Any]:
    """Measure, print and write the report; returns {'results', 'ratios', 'levers', 'processes', 'loader',
    'epoch', 'out'}. With `levers`, every model is measured under each of them (see levers.py)."""
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
