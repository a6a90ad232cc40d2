"""Speed levers measured side by side: dtype (fp32 / bf16 autocast), memory format (NCHW /
channels_last), execution (eager / torch.compile) in one process, interleaved repeat by repeat; and
processes (one run with every thread against N runs side by side with the threads split), in
persistent worker processes that take turns.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .timing import (ENDPOINTS, Candidate, Measurement, Runner, Settings, _default_batch, _log, build_ours,
                     build_timm, measure_group)

# name -> the Settings fields it turns on (everything else off)
LEVERS: Dict[str, Dict[str, bool]] = {
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"bf16": True},
    "bf16+channels_last": {"bf16": True, "channels_last": True},
    "compile": {"compile": True},
    "bf16+compile": {"bf16": True, "compile": True},
}
DEFAULT_LEVERS = ("fp32", "channels_last", "bf16", "bf16+channels_last")
COMPILE_LEVERS = ("compile", "bf16+compile")


def lever_settings(s: Settings, name: str) -> Settings:
    if name not in LEVERS:
        raise ValueError(f"unknown lever {name!r}; allowed: {', '.join(LEVERS)}")
    return dataclasses.replace(s, **{"bf16": False, "channels_last": False, "compile": False, **LEVERS[name]})


def lever_groups(steps: Sequence[str], levers: Sequence[str], s: Settings, with_timm: bool) -> List[List[Candidate]]:
    """One group per model: the model under every lever (and, for an endpoint with `with_timm`, timm's
    counterpart under every lever), all interleaved repeat by repeat."""
    from ..steps import model_config

    groups = []
    for step in steps:
        group = [Candidate(step, "ours", lambda st=step: build_ours(st, s.num_classes, s.width_mult),
                           settings=lever_settings(s, lv), lever=lv) for lv in levers]
        if with_timm and step in ENDPOINTS:
            name, dpr = ENDPOINTS[step], float(model_config(step).drop_path_rate)
            group += [Candidate(name, "timm", lambda n=name, d=dpr: build_timm(n, s.num_classes, s.width_mult, d),
                                settings=lever_settings(s, lv), lever=lv)
                      for lv in levers if not LEVERS[lv].get("compile")]  # compiling timm's too costs minutes each
        groups.append(group)
    return groups


def run_levers(steps: Sequence[str], img_sizes: Sequence[int], batch_sizes: Optional[Sequence[int]],
               modes: Sequence[str], s: Settings, levers: Sequence[str], with_timm: bool = False,
               log: Callable[[str], None] = _log) -> List[Measurement]:
    results: List[Measurement] = []
    for k, img in enumerate(img_sizes):
        batch = (batch_sizes[k] if batch_sizes and len(batch_sizes) > 1 else
                 batch_sizes[0] if batch_sizes else _default_batch(img, s.device))
        for group in lever_groups(steps, levers, s, with_timm):
            for mode in modes:
                log(f"levers of {group[0].name}: {', '.join(levers)}; {mode}, {img} px, batch {batch}")
                results += measure_group(group, mode, batch, img, s, log)
    return results


@dataclass
class LeverRatio:
    name: str
    source: str
    mode: str
    img_size: int
    batch: int
    lever: str
    base: str
    ratio: float          # median(lever) / median(base)
    lo: float
    hi: float


def lever_ratios(results: List[Measurement], base: str = "fp32") -> List[LeverRatio]:
    """Each lever against `base` for the same model, mode and size (ratio of medians; per-repeat spread)."""
    out = []
    for m in results:
        if m.lever == base:
            continue
        b = next((r for r in results if r.lever == base and (r.name, r.source, r.mode, r.img_size) ==
                  (m.name, m.source, m.mode, m.img_size)), None)
        if b is None:
            continue
        per = [x / y for x, y in zip(m.img_s, b.img_s)]
        out.append(LeverRatio(m.name, m.source, m.mode, m.img_size, m.batch, m.lever, base, m.median / b.median,
                              min(per), max(per)))
    return out


def best_levers(ratios: List[LeverRatio], mode: str = "train", margin: float = 1.05) -> Dict[str, str]:
    """Per model: the lever with the highest train ratio if it beats the base by `margin`, else the base."""
    best: Dict[str, str] = {}
    for name in dict.fromkeys(r.name for r in ratios if r.source == "ours"):
        rs = [r for r in ratios if r.name == name and r.source == "ours" and r.mode == mode]
        top = max(rs, key=lambda r: r.ratio, default=None)
        best[name] = top.lever if top is not None and top.ratio >= margin else (rs[0].base if rs else "fp32")
    return best


# ---- processes side by side ------------------------------------------------------------------
def _proc_worker(conn: Any, step: str, lever: str, threads: int, batch: int, img: int, width_mult: float,
                 num_classes: int, warmup: int) -> None:
    """A training loop in its own process: builds the model, warms up, then on each ('run', seconds)
    trains for that long and answers its img/s; None ends it."""
    import torch

    torch.set_num_threads(threads)
    s = lever_settings(Settings(device="cpu", threads=threads, width_mult=width_mult, num_classes=num_classes), lever)
    r = Runner(Candidate(step, "ours", lambda: build_ours(step, num_classes, width_mult)), batch, img, s)
    r.set_mode("train")
    for _ in range(max(1, warmup)):
        r.step("train")
    conn.send("ready")
    import time
    while True:
        seconds = conn.recv()
        if seconds is None:
            break
        n, t0 = 0, time.perf_counter()
        while True:
            r.step("train")
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        conn.send(n * batch / dt)
    conn.close()


@dataclass
class ProcResult:
    step: str
    lever: str
    img_size: int
    batch: int
    cores: int
    procs: int
    seconds: float
    single: List[float]        # img/s of one process with `cores` threads, per repeat
    side_by_side: List[float]  # summed img/s of `procs` processes with cores // procs threads each, per repeat

    @property
    def ratio(self) -> float:
        return statistics.median(self.side_by_side) / statistics.median(self.single)

    @property
    def per_repeat(self) -> List[float]:
        return [b / a for a, b in zip(self.single, self.side_by_side)]


def run_processes(steps: Sequence[str], img: int, batch: int, s: Settings, lever: Any = "fp32", procs: int = 2,
                  cores: Optional[int] = None, seconds: float = 8.0, repeats: int = 5,
                  log: Callable[[str], None] = _log) -> List[ProcResult]:
    """One process with `cores` threads against `procs` processes with cores // procs threads each,
    training side by side; they take turns (single, side by side, side by side, single, ...)."""
    cores = cores or s.threads or os.cpu_count() or 1
    if cores % procs:
        raise ValueError(f"{cores} cores do not split into {procs} processes")
    ctx = mp.get_context("spawn")
    out = []
    for step in steps:
        lv = lever.get(step, "fp32") if isinstance(lever, dict) else lever  # a dict: each model's own lever
        workers = []
        saved = os.environ.get("OMP_NUM_THREADS")
        try:
            for threads in [cores] + [cores // procs] * procs:
                os.environ["OMP_NUM_THREADS"] = str(threads)  # the child's OpenMP pool starts at this size
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_proc_worker, args=(child, step, lv, threads, batch, img, s.width_mult,
                                                           s.num_classes, s.warmup), daemon=True)
                p.start()
                workers.append((p, parent))
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        try:
            for _, conn in workers:
                if conn.recv() != "ready":
                    raise RuntimeError("bench worker failed to start")
            single, pair = [], []
            for rep in range(repeats):
                for which in (("single", "pair") if rep % 2 == 0 else ("pair", "single")):
                    group = workers[:1] if which == "single" else workers[1:]
                    for _, conn in group:
                        conn.send(seconds)
                    rates = [conn.recv() for _, conn in group]
                    (single if which == "single" else pair).append(sum(rates))
                log(f"  {step} [{lv}]: 1 x {cores} threads {single[-1]:.1f} img/s, {procs} x {cores // procs} "
                    f"thread(s) side by side {pair[-1]:.1f} img/s  [repeat {rep + 1}/{repeats}]")
            out.append(ProcResult(step, lv, img, batch, cores, procs, seconds, single, pair))
        finally:
            for p, conn in workers:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
            for p, _ in workers:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
    return out
