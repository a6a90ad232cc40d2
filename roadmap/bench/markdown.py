"""The benchmark's markdown report (results/bench-<device>.md) and console table."""
from __future__ import annotations

import os
import platform
import shlex
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from .timing import Measurement, Ratio, Settings, cpu_bf16_flags, cpu_model, device_slug, endpoint_ratios


def _fmt(v: Optional[float], nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


def results_table(results: List[Measurement], s: Settings) -> List[str]:
    mem = "peak MB" if s.device == "cuda" else "peak MB (RSS est.)"
    lines = [f"| model | source | lever | mode | px | batch | img/s (median) | min–max | {mem} | warm-up s |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in results:
        lines.append(f"| {m.name} | {m.source} | {m.lever or s.dtype} | {m.mode} | {m.img_size} | {m.batch} | {m.median:.1f} | "
                     f"{min(m.img_s):.1f}–{max(m.img_s):.1f} | {_fmt(m.peak_mb, 0)} | {_fmt(m.warmup_s, 1)} |")
    return lines


def ratio_table(ratios: List[Ratio]) -> List[str]:
    lines = ["| ours | timm | lever | mode | px | batch | ours/timm (ratio of medians) | per-repeat min–max | ≥ 0.97 |",
             "|---|---|---|---|---:|---:|---:|---:|:---:|"]
    for r in ratios:
        lines.append(f"| {r.ours} | {r.timm} | {r.lever or '-'} | {r.mode} | {r.img_size} | {r.batch} | {r.ratio:.3f} | "
                     f"{r.lo:.3f}–{r.hi:.3f} | {'yes' if r.ratio >= 0.97 else 'NO'} |")
    return lines


def loader_section(res: Dict[str, Any]) -> List[str]:
    lines = [f"## Data path: loader vs model at proxy scale (`{' '.join(res['overrides'])}`)", "",
             f"{res['img_size']} px, batch {res['batch']}, width x{res['width_mult']}. Loader: the prepared-cache "
             f"train loader of `build_data` (timm's train transform of the step's recipe on cached uint8 images), "
             f"{res['batches']} batches timed after the first; `workers=0` is the loader alone in the main process "
             f"(one core). Model: train img/s at the same scale (same device and threads as above), median of the "
             f"repeats. The loader and the model were measured separately; in training they share the cores.", "",
             "| loader recipe | workers | img/s | first batch s |", "|---|---:|---:|---:|"]
    for l in res["loaders"]:
        lines.append(f"| {l['recipe']} | {l['workers']} | {l['img_s']:.0f} | {l['first_batch_s']:.1f} |")
    lines += ["", "| step | recipe | model train img/s (min–max) | loader img/s (workers) | loader / model | ≥ 3x |",
              "|---|---|---:|---:|---:|:---:|"]
    for m in res["models"]:
        l = next(x for x in res["loaders"] if x["recipe"] == m["recipe"] and x["workers"] == res["workers"])
        r = l["img_s"] / m["img_s"]
        lines.append(f"| {m['step']} | {m['recipe']} | {m['img_s']:.0f} ({m['min']:.0f}–{m['max']:.0f}) | "
                     f"{l['img_s']:.0f} ({l['workers']}) | {r:.1f} | {'yes' if r >= 3 else 'NO'} |")
    return lines


def epoch_section(res: Dict[str, Any]) -> List[str]:
    on, off = res["on"], res["off"]
    med_on, med_off = statistics.median(on), statistics.median(off)
    inf = res["info"].get("on", res["info"].get("off", {}))
    lines = [f"## Epoch time: `{res['step']}`, one proxy-scale training epoch, cache on vs off", "",
             f"`{' '.join(res['overrides'])}`: {res['img_size']} px, width x{res['width_mult']}, batch {res['batch']}, "
             f"recipe {res['recipe']}, {inf.get('steps', '?')} steps = {inf.get('images', '?')} of "
             f"{inf.get('train_images', '?')} train images, {inf.get('workers', '?')} loader workers; "
             f"the train loop of `roadmap.train.train_one_epoch` (wall time including loader start-up, "
             f"excluding evaluation and the one-off cache build). Runs alternate on/off.", "",
             "| data.cache | epoch seconds (median) | runs |", "|---|---:|---|",
             f"| true (prepared uint8 cache) | {med_on:.1f} | {', '.join(f'{t:.1f}' for t in on)} |",
             f"| false (JPEG decode every epoch) | {med_off:.1f} | {', '.join(f'{t:.1f}' for t in off)} |", "",
             f"Speed-up from the cache: {med_off / med_on:.2f}x."]
    return lines


def write_markdown(path: Path, results: List[Measurement], s: Settings, argv: Sequence[str],
                   loader: Optional[Dict[str, Any]] = None, epoch: Optional[Dict[str, Any]] = None,
                   started: Optional[str] = None, seconds: Optional[float] = None,
                   procs: Optional[List[Any]] = None) -> None:
    import timm

    ratios = endpoint_ratios(results)
    levers = any(m.lever for m in results)
    threads = torch.get_num_threads()
    dev = "CPU: " + cpu_model() if s.device == "cpu" else "GPU: " + torch.cuda.get_device_name(0)
    lines = [f"# Benchmark: ours vs timm ({device_slug(s.device)})", "",
             f"Produced by `{' '.join(shlex.quote(a) for a in argv)}`"
             + (f" on {started}" + (f" ({seconds / 60:.0f} min)" if seconds else "") if started else "") + ".", "",
             "## Settings", "",
             f"- device: {dev}" + (f", {os.cpu_count()} logical CPUs; bf16 instructions: "
                                   f"{', '.join(cpu_bf16_flags()) or 'none (no avx512_bf16 / amx in /proc/cpuinfo)'}"
                                   if s.device == "cpu" else ""),
             f"- threads: {threads} (torch.set_num_threads)" if s.device == "cpu" else f"- CPU threads: {threads}",
             (f"- dtype, memory format, compile: per lever (below)" if levers else
              f"- dtype: {s.dtype}; memory format: {'channels_last' if s.channels_last else 'NCHW (contiguous)'}; "
              f"torch.compile: {'on' if s.compile else 'off'}"),
             f"- repeats: {s.repeats} timed blocks per figure after {s.warmup} warm-up steps; "
             f"steps per block: {s.iters or f'auto (>= {s.min_time:g} s)'}; figure = median, spread = min–max",
             f"- train step: forward + cross-entropy + backward + AdamW step (train mode); "
             f"infer: eval mode under no_grad; {s.num_classes} classes; width x{s.width_mult:g}; random init "
             f"(timm: pretrained=False, the same stochastic depth as ours)",
             "- interleaving: a step and its timm counterpart alternate block by block (order reversed every "
             "other repeat), so both see the same background load",
             "- peak memory (one extra untimed step after the timing): " + (
                 "CUDA max_memory_allocated growth during the step + the model's resident tensors" if s.device == "cuda"
                 else "an estimate: RSS growth during the step (sampled every 2 ms after malloc_trim) + "
                      "parameters, buffers, optimizer state and the batch"),
             f"- torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}",
             f"- load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} (other processes ran on "
             f"this machine; interleaving spreads their load over both sides)" if hasattr(os, "getloadavg") else "",
             ""]
    if levers:
        lines += [*levers_section(results, s), ""]
    if procs:
        lines += [*processes_section(procs), ""]
    if ratios:
        lines += ["## Endpoint ratios (ours / timm img/s; > 1 means ours is faster)", "", *ratio_table(ratios), ""]
    if results:
        lines += ["## All measurements", "", *results_table(results, s), ""]
    if loader:
        lines += [*loader_section(loader), ""]
    if epoch:
        lines += [*epoch_section(epoch), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(l for l in lines if l is not None) + "\n")
    os.replace(tmp, path)


def print_table(results: List[Measurement]) -> None:
    print(f"\n{'model':<50}{'mode':<7}{'px':>5}{'batch':>7}{'img/s':>10}{'min':>9}{'max':>9}{'peak MB':>10}")
    for m in results:
        print(f"{m.label:<50}{m.mode:<7}{m.img_size:>5}{m.batch:>7}{m.median:>10.1f}{min(m.img_s):>9.1f}"
              f"{max(m.img_s):>9.1f}{_fmt(m.peak_mb, 0):>10}")
    ratios = endpoint_ratios(results)
    if ratios:
        print(f"\n{'ours / timm':<58}{'mode':<7}{'px':>5}{'ratio':>8}{'min':>8}{'max':>8}")
        for r in ratios:
            print(f"{r.ours + ' / ' + r.timm + (' [' + r.lever + ']' if r.lever else ''):<58}{r.mode:<7}{r.img_size:>5}{r.ratio:>8.3f}{r.lo:>8.3f}{r.hi:>8.3f}")


def levers_section(results: List[Measurement], s: Settings) -> List[str]:
    """Per model and mode: img/s under every lever and its ratio to the first lever (fp32, NCHW, eager)."""
    from .levers import lever_ratios

    levers = list(dict.fromkeys(m.lever for m in results))
    base = levers[0]
    ratios = {(r.name, r.source, r.mode, r.img_size, r.lever): r for r in lever_ratios(results, base)}
    lines = [f"## Speed levers (img/s, and the ratio to `{base}` measured in the same interleaved repeats)", "",
             f"Every lever of a model is measured in one process, block by block in alternation (order reversed "
             f"every other repeat); ratio = median(lever) / median({base}), spread = min–max of the per-repeat "
             f"ratios. `bf16` is `torch.autocast(dtype=bfloat16)` around forward and loss; `channels_last` puts "
             f"model and batch in NHWC; `compile` is `torch.compile` (default inductor), compiled in the warm-up.",
             "", "| model | mode | px | batch | " + " | ".join(levers) + " | " +
             " | ".join(f"{lv} / {base}" for lv in levers[1:]) + " |",
             "|---|---|---:|---:|" + "---:|" * len(levers) + "---:|" * (len(levers) - 1)]
    keys = list(dict.fromkeys((m.name, m.source, m.mode, m.img_size, m.batch) for m in results))
    for name, source, mode, img, batch in keys:
        row = {m.lever: m for m in results if (m.name, m.source, m.mode, m.img_size) == (name, source, mode, img)}
        cells = [f"{row[lv].median:.1f}" if lv in row else "n/a" for lv in levers]
        rcells = []
        for lv in levers[1:]:
            r = ratios.get((name, source, mode, img, lv))
            rcells.append(f"**{r.ratio:.2f}** ({r.lo:.2f}–{r.hi:.2f})" if r else "n/a")
        label = name if source == "ours" else f"{name} (timm)"
        lines.append(f"| {label} | {mode} | {img} | {batch} | " + " | ".join(cells) + " | " + " | ".join(rcells) + " |")
    return lines


def processes_section(procs: List[Any]) -> List[str]:
    if not procs:
        return []
    p0 = procs[0]
    lines = [f"## Processes: one run with {p0.cores} threads vs {p0.procs} runs side by side "
             f"({p0.cores // p0.procs} thread(s) each)", "",
             f"Training steps as above (lever per row), each process training for {p0.seconds:g} s per turn; the "
             f"processes are started once, warm up, then take turns (single, side by side, side by side, single, "
             f"...). Side-by-side img/s is the sum over the processes; ratio = median(side by side) / "
             f"median(single), spread = min–max of the per-repeat ratios. The OpenMP pool of each process is "
             f"sized before torch starts (OMP_NUM_THREADS), so nothing is oversubscribed.", "",
             "| model | lever | px | batch | 1 process img/s (median) | side by side img/s (median) | ratio | min–max |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in procs:
        per = p.per_repeat
        lines.append(f"| {p.step} | {p.lever} | {p.img_size} | {p.batch} | {statistics.median(p.single):.1f} | "
                     f"{statistics.median(p.side_by_side):.1f} | **{p.ratio:.2f}** | {min(per):.2f}–{max(per):.2f} |")
    return lines
