"""Models under test and how they are timed: interleaved repeats, medians, peak memory."""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import platform
import re
import statistics
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# Our endpoint step -> the timm model it is compared with.
ENDPOINTS: Dict[str, str] = {"baseline": "resnet50", "separate_downsampling": "convnext_tiny"}
TIMM_MODELS = tuple(ENDPOINTS.values())
MIN_REPEATS = 5
NUM_CLASSES = 1000


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_bf16_flags() -> List[str]:
    """The CPU's bf16 matrix instructions (/proc/cpuinfo flags); without them bf16 is emulated (slow)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in BF16_FLAGS if f in have]
    except OSError:
        pass
    return []


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


def build_ours(step: str, num_classes: int = NUM_CLASSES, width_mult: float = 1.0) -> nn.Module:
    from ..model import build_model

    return build_model(step, num_classes=num_classes, width_mult=width_mult)


def build_timm(name: str, num_classes: int = NUM_CLASSES, width_mult: float = 1.0,
               drop_path_rate: float = 0.0) -> nn.Module:
    """timm's model, random init; at width_mult != 1 with the same stage widths as our endpoint
    (timm's plain ResNet stem stays 64 wide: its `stem_width` acts on deep stems only)."""
    import timm

    from ..model import stage_widths
    from ..steps import model_config

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
    """One model under test: its name, how to build it, and (for the levers) its own settings."""
    name: str                      # step name or timm model name
    source: str                    # "ours" | "timm"
    build: Callable[[], nn.Module]
    settings: Optional["Settings"] = None  # None: the run's settings
    lever: str = ""                # name of the settings, e.g. "bf16" (levers mode)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source}{', ' + self.lever if self.lever else ''})"


def candidate_groups(steps: Sequence[str], num_classes: int, width_mult: float,
                     endpoints_only: bool = False) -> List[List[Candidate]]:
    """Groups measured interleaved: [our endpoint, its timm model], then every other step alone."""
    from ..steps import model_config

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
        s = cand.settings or s
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
    lever: str = ""                                    # levers mode: the settings' name
    warmup_s: Optional[float] = None                   # the untimed warm-up steps (with compile: compiling)

    @property
    def median(self) -> float:
        return statistics.median(self.img_s)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source}{', ' + self.lever if self.lever else ''})"


def measure_group(group: List[Candidate], mode: str, batch: int, img: int, s: Settings,
                  log: Callable[[str], None] = _log) -> List[Measurement]:
    """Interleave the group's models repeat by repeat (order reversed every other repeat)."""
    runners = [Runner(c, batch, img, s) for c in group]
    try:
        warm = []
        for r in runners:  # warm-up (and, with --compile, compilation) outside the timing
            r.set_mode(mode)
            t0 = time.perf_counter()
            for _ in range(max(1, s.warmup)):
                r.step(mode)
            r._sync()
            warm.append(time.perf_counter() - t0)
        iters = s.iters
        if iters <= 0:  # enough steps for min_time seconds with the slowest model of the group
            per_step = max(r.timed(mode, 1) for r in runners)
            iters = max(1, int(round(s.min_time / max(per_step, 1e-6))))
        out = [Measurement(c.name, c.source, mode, img, batch, iters, lever=c.lever, warmup_s=w)
               for c, w in zip(group, warm)]
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
    lever: str = ""       # levers mode: both sides under these settings


def endpoint_ratios(results: List[Measurement]) -> List[Ratio]:
    out = []
    for m in results:
        if m.source == "ours" and m.name in ENDPOINTS:
            t = next((r for r in results if r.source == "timm" and r.name == ENDPOINTS[m.name]
                      and r.mode == m.mode and r.img_size == m.img_size and r.lever == m.lever), None)
            if t is None:
                continue
            per = [a / b for a, b in zip(m.img_s, t.img_s)]
            out.append(Ratio(m.name, t.name, m.mode, m.img_size, m.batch, m.median / t.median, min(per), max(per),
                             m.lever))
    return out

