"""Speed of our models against timm's, measured side by side: `python -m roadmap.bench`.

    python -m roadmap.bench                                   # every main-path step, 64 and 128 px, CPU
    python -m roadmap.bench --endpoints-only --img-size 64 128 --batch-size 64 32
    python -m roadmap.bench --device cuda --bf16 --channels-last [--compile]
    python -m roadmap.bench --endpoints-only --loader --epoch-time   # + the data path at proxy scale

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
Everything goes into `results/bench-<device>.md` (`--out`).
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import os
import platform
import re
import shlex
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# Our endpoint step -> the timm model it is compared with.
ENDPOINTS: Dict[str, str] = {"baseline": "resnet50", "separate_downsampling": "convnext_tiny"}
TIMM_MODELS = tuple(ENDPOINTS.values())
MIN_REPEATS = 5
NUM_CLASSES = 1000


# ---------------------------------------------------------------------------------------------
# Environment facts
# ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: str) -> str:
    """'cpu', or a short slug of the GPU's name ('NVIDIA H100 80GB HBM3' -> 'h100')."""
    if device == "cpu":
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    m = re.search(r"\b([a-z]{1,2}\d{2,4}[a-z]?)\b", name.replace("nvidia", ""))
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cuda"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    """Give freed heap back to the OS so that RSS growth during a step is visible (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler:
    """Peak resident set size in a background thread (torch ops release the GIL)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self) -> "RssSampler":
        self.start = _rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _log(msg: str) -> None:
    print(msg, flush=True)


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def build_ours(step: str, num_classes: int = NUM_CLASSES, width_mult: float = 1.0) -> nn.Module:
    from .model import build_model

    return build_model(step, num_classes=num_classes, width_mult=width_mult)


def build_timm(name: str, num_classes: int = NUM_CLASSES, width_mult: float = 1.0,
               drop_path_rate: float = 0.0) -> nn.Module:
    """timm's model, random init; at width_mult != 1 with the same stage widths as our endpoint
    (timm's plain ResNet stem stays 64 wide: its `stem_width` acts on deep stems only)."""
    import timm

    from .model import stage_widths
    from .steps import model_config

    kwargs: Dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path_rate}
    if width_mult != 1:
        step = next(s for s, t in ENDPOINTS.items() if t == name)
        widths = stage_widths(model_config(step, width_mult=width_mult))
        if name == "resnet50":
            kwargs.update(channels=tuple(widths))
        else:
            kwargs.update(dims=tuple(widths))
    return timm.create_model(name, pretrained=False, **kwargs)


@dataclass
class Candidate:
    """One model under test: its name, how to build it, and what it is compared with."""
    name: str                      # step name or timm model name
    source: str                    # "ours" | "timm"
    build: Callable[[], nn.Module]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source})"


def candidate_groups(steps: Sequence[str], num_classes: int, width_mult: float,
                     endpoints_only: bool = False) -> List[List[Candidate]]:
    """Groups measured interleaved: [our endpoint, its timm model], then every other step alone."""
    from .steps import model_config

    steps = [s for s in steps if s in ENDPOINTS] if endpoints_only else list(steps)
    groups: List[List[Candidate]] = []
    for step, timm_name in ENDPOINTS.items():
        dpr = float(model_config(step).drop_path_rate)  # the recipe's stochastic depth, both sides
        t = Candidate(timm_name, "timm", lambda n=timm_name, d=dpr: build_timm(n, num_classes, width_mult, d))
        if step in steps:
            groups.append([Candidate(step, "ours", lambda s=step: build_ours(s, num_classes, width_mult)), t])
        else:
            groups.append([t])
    for step in steps:
        if step not in ENDPOINTS:
            groups.append([Candidate(step, "ours", lambda s=step: build_ours(s, num_classes, width_mult))])
    return groups


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
@dataclass
class Settings:
    device: str = "cpu"
    threads: Optional[int] = 2
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    repeats: int = MIN_REPEATS
    warmup: int = 2
    iters: int = 0                 # steps per timed repeat; 0: enough for `min_time` seconds
    min_time: float = 1.0
    width_mult: float = 1.0
    num_classes: int = NUM_CLASSES

    @property
    def dtype(self) -> str:
        return "bf16 autocast" if self.bf16 else "fp32"


class Runner:
    """A model with its optimizer and a fixed random batch; times train and infer steps."""

    def __init__(self, cand: Candidate, batch: int, img: int, s: Settings):
        self.cand, self.s = cand, s
        self.dev = torch.device(s.device)
        gen = torch.Generator().manual_seed(0)
        self.model = cand.build().to(self.dev)
        mf = torch.channels_last if s.channels_last else torch.contiguous_format
        if s.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.x = torch.randn(batch, 3, img, img, generator=gen).to(self.dev).contiguous(memory_format=mf)
        self.y = torch.randint(0, s.num_classes, (batch,), generator=gen).to(self.dev)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)
        self.fn: nn.Module = torch.compile(self.model) if s.compile else self.model
        self.batch = batch

    def _autocast(self) -> Any:
        return torch.autocast(self.dev.type, dtype=torch.bfloat16) if self.s.bf16 else nullcontext()

    def step(self, mode: str) -> None:
        if mode == "train":
            with self._autocast():
                loss = F.cross_entropy(self.fn(self.x), self.y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), self._autocast():
                self.fn(self.x)

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def static_bytes(self) -> int:
        """What the model holds between steps: parameters, buffers, optimizer state, the batch."""
        opt_state = [t for st in self.opt.state.values() for t in st.values()]
        return _tensor_bytes([*self.model.parameters(), *self.model.buffers(), *opt_state, self.x, self.y])

    def set_mode(self, mode: str) -> None:
        self.model.train(mode == "train")

    def timed(self, mode: str, iters: int) -> float:
        """Seconds for `iters` steps (nothing else runs in this process meanwhile)."""
        self.set_mode(mode)
        self._sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            self.step(mode)
        self._sync()
        return time.perf_counter() - t0

    def peak_bytes(self, mode: str) -> int:
        """Peak memory of one step, measured in an untimed step after the timing: the tensors the
        model holds between steps plus the step's transient growth (CUDA allocator, or sampled RSS)."""
        self.set_mode(mode)
        self._sync()
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
            before = torch.cuda.memory_allocated(self.dev)
            self.step(mode)
            self._sync()
            transient = torch.cuda.max_memory_allocated(self.dev) - before
        else:
            gc.collect()
            _malloc_trim()
            with RssSampler() as rss:
                self.step(mode)
            transient = rss.peak - rss.start
        return self.static_bytes() + max(0, transient)


@dataclass
class Measurement:
    name: str
    source: str
    mode: str
    img_size: int
    batch: int
    iters: int
    img_s: List[float] = field(default_factory=list)   # one per repeat, in order
    peak_mb: Optional[float] = None

    @property
    def median(self) -> float:
        return statistics.median(self.img_s)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source})"


def measure_group(group: List[Candidate], mode: str, batch: int, img: int, s: Settings,
                  log: Callable[[str], None] = _log) -> List[Measurement]:
    """Interleave the group's models repeat by repeat (order reversed every other repeat)."""
    runners = [Runner(c, batch, img, s) for c in group]
    try:
        for r in runners:  # warm-up (and, with --compile, compilation) outside the timing
            r.set_mode(mode)
            for _ in range(max(1, s.warmup)):
                r.step(mode)
            r._sync()
        iters = s.iters
        if iters <= 0:  # enough steps for min_time seconds with the slowest model of the group
            per_step = max(r.timed(mode, 1) for r in runners)
            iters = max(1, int(round(s.min_time / max(per_step, 1e-6))))
        out = [Measurement(c.name, c.source, mode, img, batch, iters) for c in group]
        for rep in range(s.repeats):
            order = list(range(len(runners)))
            if rep % 2:
                order.reverse()
            for i in order:
                dt = runners[i].timed(mode, iters)
                out[i].img_s.append(batch * iters / dt)
            log("  " + "  ".join(f"{m.label} {m.img_s[-1]:.1f}" for m in out) + f"  img/s  [{mode} {img}px, repeat {rep + 1}/{s.repeats}]")
        for m, r in zip(out, runners):
            m.peak_mb = r.peak_bytes(mode) / 2 ** 20
        return out
    finally:
        del runners
        gc.collect()
        if s.device == "cuda":
            torch.cuda.empty_cache()


def _default_batch(img: int, device: str) -> int:
    if device == "cuda":
        return 256 if img <= 64 else 128
    return 64 if img <= 64 else 32


def run_models(steps: Sequence[str], img_sizes: Sequence[int], batch_sizes: Optional[Sequence[int]],
               modes: Sequence[str], s: Settings, endpoints_only: bool = False,
               log: Callable[[str], None] = _log) -> List[Measurement]:
    if batch_sizes and len(batch_sizes) not in (1, len(img_sizes)):
        raise ValueError(f"--batch-size takes one value or one per --img-size ({len(img_sizes)})")
    groups = candidate_groups(steps, s.num_classes, s.width_mult, endpoints_only)
    results: List[Measurement] = []
    for k, img in enumerate(img_sizes):
        batch = (batch_sizes[k] if batch_sizes and len(batch_sizes) > 1 else
                 batch_sizes[0] if batch_sizes else _default_batch(img, s.device))
        for group in groups:
            for mode in modes:
                log(f"{' vs '.join(c.label for c in group)}: {mode}, {img} px, batch {batch}")
                results += measure_group(group, mode, batch, img, s, log)
    return results


@dataclass
class Ratio:
    ours: str
    timm: str
    mode: str
    img_size: int
    batch: int
    ratio: float          # median(ours) / median(timm)
    lo: float             # min of the per-repeat ratios
    hi: float             # max of the per-repeat ratios


def endpoint_ratios(results: List[Measurement]) -> List[Ratio]:
    out = []
    for m in results:
        if m.source == "ours" and m.name in ENDPOINTS:
            t = next((r for r in results if r.source == "timm" and r.name == ENDPOINTS[m.name]
                      and r.mode == m.mode and r.img_size == m.img_size), None)
            if t is None:
                continue
            per = [a / b for a, b in zip(m.img_s, t.img_s)]
            out.append(Ratio(m.name, t.name, m.mode, m.img_size, m.batch, m.median / t.median, min(per), max(per)))
    return out


# ---------------------------------------------------------------------------------------------
# Data path at proxy scale: loader img/s vs model img/s, and epoch time with / without the cache
# ---------------------------------------------------------------------------------------------
def proxy_overrides() -> List[str]:
    from .config import CONF_DIR

    if (CONF_DIR / "scale" / "proxy.yaml").exists():
        return ["scale=proxy"]
    return ["scale=smoke", "scale.max_train_samples=null"]


def proxy_config(step: str, *extra: str) -> Any:
    from omegaconf import OmegaConf

    from .config import validate
    from .data import discover_num_classes
    from .steps import compose_config

    cfg = compose_config([*proxy_overrides(), f"step={step}", "logger=none", *extra])
    discover_num_classes(cfg)
    OmegaConf.resolve(cfg)
    validate(cfg)
    return cfg


def loader_img_s(cfg: Any, batches: int, log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """img/s of the train loader of `cfg` (after its first batch, i.e. with workers started)."""
    from .data import build_data

    t0 = time.perf_counter()
    data = build_data(cfg, log_fn=log)
    setup = time.perf_counter() - t0
    data.train_sampler.set_epoch(0)
    it = iter(data.train)
    t1 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t1
    n, t2 = 0, time.perf_counter()
    for i, (x, _) in enumerate(it):
        n += x.shape[0]
        if i + 1 >= batches:
            break
    dt = time.perf_counter() - t2
    del it, data
    gc.collect()
    return {"img_s": n / dt, "images": n, "seconds": dt, "first_batch_s": first, "setup_s": setup}


def run_loader(steps: Sequence[str], batches: int, s: Settings, overrides: Sequence[str] = (),
               log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """The prepared-cache train loader of the proxy scale vs each step's train img/s there."""
    from .model import ModernizableResNet

    loaders: Dict[Tuple[str, int], Dict[str, Any]] = {}
    models: List[Dict[str, Any]] = []
    for step in steps:
        cfg = proxy_config(step, *overrides)
        recipe = str(cfg.recipe.name)
        for workers in sorted({int(cfg.scale.workers), 0}, reverse=True):
            if (recipe, workers) not in loaders:
                log(f"loader: recipe={recipe}, workers={workers}, {batches} batches of {cfg.scale.batch_size} ...")
                res = loader_img_s(proxy_config(step, *overrides, "data.cache=true", f"scale.workers={workers}"),
                                   batches, log)
                loaders[(recipe, workers)] = {"recipe": recipe, "workers": workers, "step": step, **res}
                log(f"  {res['img_s']:.0f} img/s")
        ms = Settings(**{**s.__dict__, "width_mult": float(cfg.scale.width_mult),
                         "num_classes": int(cfg.model.num_classes)})
        cand = Candidate(step, "ours", lambda c=cfg: ModernizableResNet(c.model))
        m = measure_group([cand], "train", int(cfg.scale.batch_size), int(cfg.scale.img_size), ms, log)[0]
        models.append({"step": step, "recipe": recipe, "img_s": m.median, "min": min(m.img_s), "max": max(m.img_s),
                       "batch": m.batch, "img_size": m.img_size, "width_mult": ms.width_mult})
    cfg = proxy_config(steps[0], *overrides)
    return {"scale": str(cfg.scale.name), "overrides": [*proxy_overrides(), *overrides], "img_size": int(cfg.scale.img_size),
            "batch": int(cfg.scale.batch_size), "width_mult": float(cfg.scale.width_mult),
            "workers": int(cfg.scale.workers), "batches": batches,
            "loaders": list(loaders.values()), "models": models}


def run_epoch_time(step: str, repeats: int, max_steps: Optional[int], s: Settings, overrides: Sequence[str] = (),
                   log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """One proxy-scale training epoch (the train loop of roadmap.train) with data.cache on and off,
    alternated (on, off, off, on, ...)."""
    from .data import build_data
    from .model import ModernizableResNet
    from .train import (Schedule, build_mixup_and_loss, build_optimizer, learning_rate, schedule_lengths,
                        seed_all, setup_env, train_one_epoch)

    times: Dict[bool, List[float]] = {True: [], False: []}
    info: Dict[bool, Dict[str, Any]] = {}
    for rep in range(repeats):
        for cache in ((True, False) if rep % 2 == 0 else (False, True)):
            extra = [*overrides, f"data.cache={str(cache).lower()}", f"scale.device={s.device}"]
            if max_steps:
                extra.append(f"scale.max_steps_per_epoch={max_steps}")
            cfg = proxy_config(step, *extra)
            env = setup_env(cfg.scale)
            seed_all(cfg.seed)
            data = build_data(cfg, log_fn=log)  # builds the cache if it is missing (not timed)
            model = ModernizableResNet(cfg.model).to(env.device)
            if env.channels_last:
                model = model.to(memory_format=torch.channels_last)
            lr = learning_rate(cfg.recipe, cfg.scale, cfg.scale.batch_size)
            opt = build_optimizer(model, cfg.recipe, lr)
            steps = min(len(data.train), max_steps) if max_steps else len(data.train)
            schedule = Schedule(opt, cfg.recipe, schedule_lengths(cfg, steps))
            mixup, criterion = build_mixup_and_loss(cfg.recipe, data.num_classes)
            t0 = time.perf_counter()
            tr, _ = train_one_epoch(model, data.train, opt, schedule, criterion, mixup, env, 1, 0, 0, 1,
                                    max_steps, cfg.recipe.grad_clip, None, step)
            wall = time.perf_counter() - t0
            times[cache].append(wall)
            info[cache] = {"steps": steps, "images": steps * int(cfg.scale.batch_size),
                           "train_images": data.info["train_images"], "workers": int(cfg.scale.workers)}
            log(f"epoch of {step}, cache {'on' if cache else 'off'}: {wall:.1f} s ({tr['train_img_s']:.0f} img/s)")
            del data, model, opt
            gc.collect()
    cfg = proxy_config(step, *overrides)
    return {"step": step, "scale": str(cfg.scale.name), "overrides": [*proxy_overrides(), *overrides],
            "img_size": int(cfg.scale.img_size), "batch": int(cfg.scale.batch_size),
            "width_mult": float(cfg.scale.width_mult), "recipe": str(cfg.recipe.name), "max_steps": max_steps,
            "on": times[True], "off": times[False], "info": {("on" if k else "off"): v for k, v in info.items()}}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _fmt(v: Optional[float], nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


def results_table(results: List[Measurement], s: Settings) -> List[str]:
    mem = "peak MB" if s.device == "cuda" else "peak MB (RSS est.)"
    lines = [f"| model | source | mode | px | batch | img/s (median) | min–max | {mem} |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for m in results:
        lines.append(f"| {m.name} | {m.source} | {m.mode} | {m.img_size} | {m.batch} | {m.median:.1f} | "
                     f"{min(m.img_s):.1f}–{max(m.img_s):.1f} | {_fmt(m.peak_mb, 0)} |")
    return lines


def ratio_table(ratios: List[Ratio]) -> List[str]:
    lines = ["| ours | timm | mode | px | batch | ours/timm (ratio of medians) | per-repeat min–max | ≥ 0.97 |",
             "|---|---|---|---:|---:|---:|---:|:---:|"]
    for r in ratios:
        lines.append(f"| {r.ours} | {r.timm} | {r.mode} | {r.img_size} | {r.batch} | {r.ratio:.3f} | "
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
                   started: Optional[str] = None, seconds: Optional[float] = None) -> None:
    import timm

    ratios = endpoint_ratios(results)
    threads = torch.get_num_threads()
    dev = "CPU: " + cpu_model() if s.device == "cpu" else "GPU: " + torch.cuda.get_device_name(0)
    lines = [f"# Benchmark: ours vs timm ({device_slug(s.device)})", "",
             f"Produced by `{' '.join(shlex.quote(a) for a in argv)}`"
             + (f" on {started}" + (f" ({seconds / 60:.0f} min)" if seconds else "") if started else "") + ".", "",
             "## Settings", "",
             f"- device: {dev}" + (f", {os.cpu_count()} logical CPUs" if s.device == "cpu" else ""),
             f"- threads: {threads} (torch.set_num_threads)" if s.device == "cpu" else f"- CPU threads: {threads}",
             f"- dtype: {s.dtype}; memory format: {'channels_last' if s.channels_last else 'NCHW (contiguous)'}; "
             f"torch.compile: {'on' if s.compile else 'off'}",
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
    if ratios:
        lines += ["## Endpoint ratios (ours / timm img/s; > 1 means ours is faster)", "", *ratio_table(ratios), ""]
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
    print(f"\n{'model':<34}{'mode':<7}{'px':>5}{'batch':>7}{'img/s':>10}{'min':>9}{'max':>9}{'peak MB':>10}")
    for m in results:
        print(f"{m.label:<34}{m.mode:<7}{m.img_size:>5}{m.batch:>7}{m.median:>10.1f}{min(m.img_s):>9.1f}"
              f"{max(m.img_s):>9.1f}{_fmt(m.peak_mb, 0):>10}")
    ratios = endpoint_ratios(results)
    if ratios:
        print(f"\n{'ours / timm':<40}{'mode':<7}{'px':>5}{'ratio':>8}{'min':>8}{'max':>8}")
        for r in ratios:
            print(f"{r.ours + ' / ' + r.timm:<40}{r.mode:<7}{r.img_size:>5}{r.ratio:>8.3f}{r.lo:>8.3f}{r.hi:>8.3f}")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def bench(steps: Optional[Sequence[str]] = None, device: str = "cpu", img_sizes: Sequence[int] = (64, 128),
          batch_sizes: Optional[Sequence[int]] = None, mode: str = "both", out: Optional[Path] = None,
          endpoints_only: bool = False, loader_batches: int = 0, epoch_repeats: int = 0,
          epoch_max_steps: Optional[int] = None, argv: Sequence[str] = (), settings: Optional[Settings] = None,
          overrides: Sequence[str] = (), loader_steps: Optional[Sequence[str]] = None,
          log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """Measure, print and write the report; returns {'results', 'ratios', 'loader', 'epoch', 'out'}."""
    from .steps import MAIN_PATH

    s = settings or Settings(device=device)
    s.device = device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    if s.threads:
        torch.set_num_threads(s.threads)
    steps = list(steps) if steps else list(MAIN_PATH)
    modes = ["train", "infer"] if mode == "both" else [mode]
    started, t0 = datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    results = run_models(steps, img_sizes, batch_sizes, modes, s, endpoints_only, log)
    loader = run_loader(list(loader_steps or steps), loader_batches, s, overrides, log) if loader_batches else None
    epoch = run_epoch_time("separate_downsampling", epoch_repeats, epoch_max_steps, s, overrides, log) \
        if epoch_repeats else None
    out = Path(out) if out else Path("results") / f"bench-{device_slug(device)}.md"
    write_markdown(out, results, s, argv, loader, epoch, started, time.perf_counter() - t0)
    print_table(results)
    print(f"\nwrote {out}")
    return {"results": results, "ratios": endpoint_ratios(results), "loader": loader, "epoch": epoch, "out": out}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .steps import MAIN_PATH, step_names

    p = argparse.ArgumentParser(prog="python -m roadmap.bench", description=__doc__.split("\n\n")[0],
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
    p.add_argument("--out", type=Path, default=None, help="markdown report (default: results/bench-<device>.md)")
    a = p.parse_args(argv)
    if a.repeats < MIN_REPEATS:
        p.error(f"--repeats {a.repeats}: at least {MIN_REPEATS} (the figures are medians of >= {MIN_REPEATS} repeats)")
    unknown = [x for x in [*(a.steps or ()), *(a.loader_steps or ())] if x not in step_names()]
    if unknown:
        p.error(f"unknown step(s) {', '.join(unknown)}; allowed: {', '.join(step_names())}")
    if a.iters < 0 or a.warmup < 0:
        p.error("--iters and --warmup must be >= 0")
    threads = a.threads if a.threads is not None else (2 if a.device == "cpu" else None)
    s = Settings(device=a.device, threads=threads, channels_last=a.channels_last, bf16=a.bf16, compile=a.compile,
                 repeats=a.repeats, warmup=a.warmup, iters=a.iters, min_time=a.min_time, width_mult=a.width_mult,
                 num_classes=a.num_classes)
    cmd = ["python", "-m", "roadmap.bench", *(sys.argv[1:] if argv is None else argv)]
    bench(a.steps, a.device, a.img_size, a.batch_size, a.mode, a.out, a.endpoints_only,
          a.loader_batches if a.loader else 0, a.epoch_repeats if a.epoch_time else 0, a.epoch_max_steps,
          cmd, s, a.override, a.loader_steps or list(MAIN_PATH))
    return 0


if __name__ == "__main__":
    sys.exit(main())
