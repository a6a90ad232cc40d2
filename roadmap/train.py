"""Train and evaluate one roadmap step; everything a run leaves behind lives in its run directory.

Run directory (only rank 0 writes; roadmap/rundir.py holds the lock, checkpoint and signal parts):
  run.lock       host, pid, start time of the process running it; a second process refuses
  config.yaml    the resolved config; rerunning with another config here is refused
  last.pt        checkpoint at every epoch end, every scale.checkpoint_every_min minutes inside an
                 epoch, and on SIGTERM/SIGUSR1/submitit's signal (position inside the epoch, every
                 RNG, optimizer, scheduler, EMA, loss sums); prev.pt the one before, kept until
                 last.pt is complete. Rerunning resumes exactly where the checkpoint left off.
  history.csv    one row per epoch
  metrics.json   written once, at the end: its presence means the run finished (status `finished`), or
                 that scale.on_unhealthy=stop ended it early (status `stopped_unhealthy`); either way
                 it is not repeated. `health`: the verdict of roadmap/health.py's rule
  failed.json    why the last attempt failed (removed when a later attempt finishes)
  train.log      the log
"""
from __future__ import annotations

import logging
import math
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import faults, health
from .config import LEGACY, ConfigError, apply_scale_augment, to_container, validate
from .data import build_data, discover_num_classes
from .files import atomic_write_text, read_json, write_csv, write_json
from .images import REFUSED_LIST
from .measure import count_gflops, count_params
from .model import ModernizableResNet
from .rundir import (EXIT_PREEMPTED, STOP, Preempted, RunLock, RunLocked, RunRefused, StopSignals,  # noqa: F401
                     load_checkpoint as load_run_checkpoint, remove_previous, save_checkpoint as save_run_checkpoint)
from .steps import step_info
from .tracking import Tracker

log = logging.getLogger("roadmap")

# Keys that may change between an interrupted run and its resumption (they do not change results).
NOT_IDENTITY = ("logger", "scale.workers", "data.root", "data.cache_dir", "out_dir", "sweep_id", "results_dir",
                "keep_runs", "scale.checkpoint_every_min", "scale.imagenet_only", "scale.threads",
                "scale.health", "scale.on_unhealthy")  # the health rule judges a run; it changes no update

DDP_STOP_CHECK = 8  # under DDP, stop requests and the checkpoint timer are agreed every 8 updates


class NonFiniteLoss(RuntimeError):
    """A non-finite training loss: the run fails; its health verdict is `diverged` (`epoch`: 1-based)."""
    epoch: Optional[int] = None


# ---------------------------------------------------------------------------------------------
# Process, device, determinism
# ---------------------------------------------------------------------------------------------
@dataclass
class Env:
    rank: int
    world: int
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    channels_last: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def _submitit_ddp_env() -> None:
    """A submitit job with several tasks (hydra.launcher.tasks_per_node=8 under SLURM): export the
    torch.distributed variables torchrun would set (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK)."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_FOLDER" not in os.environ:
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def setup_env(scale: Any) -> Env:
    _submitit_ddp_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want = scale.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("scale.device='cuda' but no CUDA device is visible; allowed here: cpu, auto")
    if want == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
        if scale.threads:
            torch.set_num_threads(int(scale.threads))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp = scale.amp if scale.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    cl = scale.channels_last == "on" or (scale.channels_last == "auto" and device.type == "cuda")
    return Env(rank, world, device, torch.bfloat16 if amp == "bf16" else None, cl)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": [list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    words, gauss = state["python"]
    random.setstate((3, tuple(words), gauss))
    key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Recipe: timm's optimizer, scheduler, mixup and losses
# ---------------------------------------------------------------------------------------------
def schedule_lengths(cfg: Any, updates_per_epoch: int) -> Dict[str, Any]:
    """Epochs come from the scale (or the recipe); warmup and milestones keep their fraction."""
    recipe = cfg.recipe
    epochs = cfg.scale.epochs or recipe.epochs
    frac = epochs / recipe.epochs
    return {"epochs": epochs, "warmup_epochs": recipe.warmup_epochs * frac,
            "milestones": [m * frac for m in recipe.decay_milestones], "updates_per_epoch": updates_per_epoch}


def accumulation(global_batch: Optional[int], batch_size: int, world: int) -> Tuple[int, int]:
    """(global batch, gradient-accumulation steps): scale.global_batch exactly, or a one-line refusal.

    Without scale.global_batch one update sees batch_size x world images. The learning rate is
    always computed from the global batch returned here, the one the updates really see.
    """
    per_step = batch_size * world
    if global_batch is None:
        return per_step, 1
    if global_batch % per_step == 0:
        return global_batch, global_batch // per_step
    fits = [b for b in range(batch_size, 0, -1) if global_batch % (b * world) == 0]
    lo = global_batch // per_step * per_step
    hint = (f"scale.batch_size={fits[0]} ({global_batch // (fits[0] * world)} accumulation steps)" if fits else
            f"scale.global_batch={lo or per_step} or {lo + per_step} (the learning rate follows it)")
    raise ConfigError(f"scale.global_batch={global_batch} is not a multiple of scale.batch_size={batch_size} x "
                      f"{world} process{'es' if world > 1 else ''} = {per_step}; allowed: a per-process batch that "
                      f"divides it, e.g. {hint}")


def learning_rate(recipe: Any, scale: Any, global_batch: int) -> float:
    """The recipe's lr scaled to the global batch, linearly (the paper) or by the square root, times the
    scale's multiplier for this recipe (a proxy's lr, chosen once per recipe; 1 when absent)."""
    ratio = global_batch / recipe.lr_base_batch
    mult = float((scale.get("lr_mult") or {}).get(recipe.name, 1.0)) if hasattr(scale, "get") else 1.0
    return recipe.lr * (ratio if scale.lr_scaling == "linear" else math.sqrt(ratio)) * mult


def build_optimizer(model: nn.Module, recipe: Any, lr: float) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: Dict[str, Any] = {}
    if recipe.opt == "adamw":
        kwargs["betas"] = tuple(recipe.betas)
    # timm's 'sgd' is Nesterov; torchvision's ResNet recipe uses plain momentum ('momentum').
    return create_optimizer_v2(model, opt="adamw" if recipe.opt == "adamw" else "momentum", lr=lr,
                               weight_decay=recipe.weight_decay, momentum=recipe.momentum,
                               filter_bias_and_bn=recipe.no_wd_norm_bias, **kwargs)


class Schedule:
    """Per-update learning rate: linear warmup, then cosine or step decay (timm's schedulers)."""

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Any, lengths: Dict[str, Any]):
        from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

        upe = lengths["updates_per_epoch"]
        total = max(1, int(round(lengths["epochs"] * upe)))
        warmup = int(round(lengths["warmup_epochs"] * upe))
        common = dict(warmup_t=warmup, warmup_lr_init=recipe.warmup_lr, t_in_epochs=False)
        if recipe.sched == "cosine":
            # warmup, then cosine over the remaining updates (ends at min_lr after `epochs`, as ConvNeXt's code)
            self.sched = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=recipe.min_lr,
                                           warmup_prefix=True, **common)
        else:
            # timm decays once t + 1 >= decay_t: +1 makes the decay start at update m * upe exactly
            steps = [max(1, int(round(m * upe))) + 1 for m in lengths["milestones"]]
            self.sched = MultiStepLRScheduler(optimizer, decay_t=steps, decay_rate=recipe.decay_rate, **common)
        self.total, self.warmup = total, warmup

    def step(self, num_updates: int) -> None:
        self.sched.step_update(num_updates)

    def state_dict(self) -> Dict[str, Any]:
        return self.sched.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sched.load_state_dict(state)


def build_mixup_and_loss(recipe: Any, num_classes: int) -> Tuple[Any, nn.Module]:
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if recipe.mixup > 0 or recipe.cutmix > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                      switch_prob=recipe.mixup_switch_prob, mode="batch", label_smoothing=recipe.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if recipe.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(recipe.smoothing)
    return None, nn.CrossEntropyLoss()


# ---------------------------------------------------------------------------------------------
# Checkpoints and run-directory bookkeeping
# ---------------------------------------------------------------------------------------------
def load_checkpoint(path: Path) -> Dict[str, Any]:
    """One checkpoint file (a last.pt or a state dict), tensors only (`weights_only=True`)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def identity_config(cfg: DictConfig) -> Dict[str, Any]:
    c = to_container(cfg)
    for key in NOT_IDENTITY:
        node, *rest = key.split(".")
        if rest:
            c.get(node, {}).pop(rest[0], None)
        else:
            c.pop(node, None)
    return c


_ABSENT = object()


def _diff(a: Any, b: Any, prefix: str = "") -> List[str]:
    """Keys whose values differ; a key absent from `a` (an older run) matches its LEGACY value."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.")]
    key = prefix.rstrip(".")
    if a is _ABSENT and key in LEGACY:
        a = LEGACY[key]
    return [] if a == b else [key]


def _without_not_identity(c: Dict[str, Any]) -> Dict[str, Any]:
    for key in NOT_IDENTITY:
        node, *rest = key.split(".")
        (c.get(node, {}).pop(rest[0], None) if rest else c.pop(node, None))
    return c


def check_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume a run directory that holds a run of another config."""
    saved = run_dir / "config.yaml"
    if saved.exists():
        old = _without_not_identity(OmegaConf.to_container(OmegaConf.load(saved)))
        diff = _diff(old, identity_config(cfg))
        if diff:
            raise RunRefused(f"run directory {run_dir} holds a run with another config (differs in: "
                             f"{', '.join(diff[:6])}); use another out_dir or hydra.run.dir, or delete it")


def check_checkpoint_config(ck: Dict[str, Any], cfg: DictConfig, path: Path) -> None:
    """A checkpoint carries the identity config it was written under; another config is refused."""
    if ck.get("config") is None:  # written before checkpoints carried their config
        return
    diff = _diff(_without_not_identity(dict(ck["config"])), identity_config(cfg))
    if diff:
        raise RunRefused(f"checkpoint {path} was written under another config (differs in: {', '.join(diff[:6])}); "
                         f"use another out_dir, or delete it to start this run from scratch")


def git_commit() -> str:
    try:
        repo = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------------------------
def _autocast(env: Env):
    if env.amp_dtype is None:
        return nullcontext()
    return torch.autocast(env.device.type, dtype=env.amp_dtype)


@dataclass
class EpochPosition:
    """Where a run stands inside an epoch, after an update: what a mid-epoch checkpoint records."""
    step: int                  # batches of this epoch consumed (a multiple of the accumulation steps)
    loss_sum: torch.Tensor     # sum of per-sample training losses so far in this epoch (this rank)
    n_seen: int                # samples seen so far in this epoch (this rank)
    seconds: float             # training seconds so far in this epoch


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, schedule: Schedule,
                    criterion: nn.Module, mixup: Any, env: Env, accum: int, num_updates: int, epoch: int,
                    epochs: int, max_steps: Optional[int], grad_clip: Optional[float], ema: Any,
                    step_name: str, position: Optional[EpochPosition] = None,
                    after_update: Optional[Callable[[EpochPosition, int], None]] = None) -> Tuple[Dict[str, float], int]:
    """One epoch, or its rest from `position` (the loader's sampler then skips the batches already
    consumed). `after_update(position, num_updates)` runs after every optimizer update: mid-epoch
    checkpoints and stop requests happen there, at update boundaries only."""
    model.train()
    start = position.step if position is not None else 0
    loss_sum = position.loss_sum.to(env.device) if position is not None else torch.zeros((), device=env.device)
    n_seen = position.n_seen if position is not None else 0
    t0 = time.perf_counter() - (position.seconds if position is not None else 0.0)
    total = len(loader) + start  # the loader yields what is left of the epoch
    steps = min(total, max_steps) if max_steps else total
    steps -= steps % accum
    bar = tqdm(total=steps, initial=min(start, steps), desc=f"epoch {epoch + 1}/{epochs}",
               disable=not (env.main and sys.stderr.isatty()), leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    poison = faults.fault("nan", step_name)
    frozen = faults.fault("zero_grad", step_name)
    for i, (x, y) in enumerate(loader, start=start):
        if i >= steps:
            break
        x = x.to(env.device, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        if env.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            x, y = mixup(x, y)
        sync = (i + 1) % accum == 0
        ctx = model.no_sync() if (env.world > 1 and not sync and hasattr(model, "no_sync")) else nullcontext()
        with ctx:
            loss = _finite_loss(model, criterion, x, y, env, poison, epoch, i)
            (loss / accum).backward()
        loss_sum += loss.detach() * x.shape[0]
        n_seen += x.shape[0]
        if sync:
            if frozen:  # fault injection: the update learns nothing (a run made to stall)
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.zero_()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            schedule.step(num_updates)
            if ema is not None:
                ema.update(model, step=num_updates)
            if after_update is not None:
                after_update(EpochPosition(i + 1, loss_sum, n_seen, time.perf_counter() - t0), num_updates)
        if bar.disable is False and (i % 10 == 0 or i == steps - 1):
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{n_seen * env.world / (time.perf_counter() - t0):.0f}")
        bar.update(1)
    bar.close()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    return _epoch_row(loss_sum, n_seen, time.perf_counter() - t0, env, optimizer), num_updates


def _finite_loss(model: nn.Module, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor, env: Env,
                 poison: bool, epoch: int, i: int) -> torch.Tensor:
    """The batch's training loss under the run's autocast; NonFiniteLoss (naming epoch and step) if it is
    not finite. `poison`: fault injection, the loss made NaN."""
    with _autocast(env):
        loss = criterion(model(x), y)
        if poison:
            loss = loss * float("nan")
    if not torch.isfinite(loss):
        err = NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}")
        err.epoch = epoch + 1
        raise err
    return loss


def _epoch_row(loss_sum: torch.Tensor, n_seen: int, seconds: float, env: Env,
               optimizer: torch.optim.Optimizer) -> Dict[str, float]:
    """The epoch's training numbers, summed over the ranks."""
    stats = torch.stack([loss_sum.float(), torch.tensor(float(n_seen), device=env.device)])
    if env.world > 1:
        dist.all_reduce(stats)
    return {"train_loss": (stats[0] / stats[1].clamp(min=1)).item(), "train_img_s": stats[1].item() / seconds,
            "lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, env: Env) -> Dict[str, float]:
    model.eval()
    t0 = time.perf_counter()
    totals = torch.zeros(4, device=env.device, dtype=torch.float64)  # correct@1, correct@5, loss, n
    for x, y in loader:
        x = x.to(env.device, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        if env.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(env):
            logits = model(x).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        totals += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), F.cross_entropy(logits, y, reduction="sum"),
                               torch.tensor(y.numel(), device=env.device)]).double()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if env.world > 1:
        dist.all_reduce(totals)
    c1, c5, loss, n = totals.tolist()
    return {"top1": 100 * c1 / n, "top5": 100 * c5 / n, "val_loss": loss / n, "eval_img_s": n / seconds, "val_n": int(n)}


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------
def _log_to_file(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "train.log")
    h.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(h)
    return h


def run(cfg: DictConfig, run_dir: Path | str) -> Dict[str, Any]:
    """Train and evaluate `cfg` in `run_dir`, resuming from its checkpoint; return the metrics.

    A finished run (metrics.json present) is not repeated. The run directory is locked for the
    run's lifetime (one writer). On failure, failed.json records why and the exception propagates;
    on a stop signal the run checkpoints at the next update and raises `Preempted` (no failure).
    """
    run_dir = Path(run_dir)
    discover_num_classes(cfg)  # before resolving, so model.num_classes=${data.num_classes} follows it
    OmegaConf.resolve(cfg)
    validate(cfg)
    apply_scale_augment(cfg)
    env = setup_env(cfg.scale)
    accumulation(cfg.scale.global_batch, cfg.scale.batch_size, env.world)  # exact, or refused before any write
    lock = _claim(cfg, run_dir, env)
    try:
        if (run_dir / "metrics.json").exists():  # finished before, or by the previous holder meanwhile
            return _finished(cfg, run_dir) if env.main else read_json(run_dir / "metrics.json")
        return _attempt(cfg, run_dir, env)
    finally:
        if lock is not None:
            lock.release()


def _claim(cfg: DictConfig, run_dir: Path, env: Env) -> Optional[RunLock]:
    """Rank 0 checks the run directory (same config or refused) and takes its lock unless the run
    has finished; every rank learns the outcome. Raises RunRefused / RunLocked."""
    lock: Optional[RunLock] = None
    status: List[Any] = ["run", None]  # rank 0 decides: run | finished | refused (with the message) | locked
    if env.main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            check_run_dir(run_dir, cfg)
            if (run_dir / "metrics.json").exists():
                status = ["finished", None]
            else:
                lock = RunLock(run_dir).acquire()
        except RunRefused as e:
            status = ["locked" if isinstance(e, RunLocked) else "refused", str(e)]
            if env.world == 1:
                raise
    if env.world > 1:  # the other ranks learn what rank 0 found
        dist.broadcast_object_list(status, src=0)
    if status[0] in ("refused", "locked"):
        raise (RunLocked if status[0] == "locked" else RunRefused)(status[1])
    return lock


def _attempt(cfg: DictConfig, run_dir: Path, env: Env) -> Dict[str, Any]:
    """One attempt at the run, under the stop signals: finished, preempted (checkpoint written) or
    failed (failed.json says why); the log file and the W&B run are closed in every case."""
    handler = _log_to_file(run_dir) if env.main else None
    tracker = Tracker(cfg, run_dir, enabled=env.main)
    try:
        with StopSignals():
            metrics = _run(cfg, run_dir, env, tracker)
        (run_dir / "failed.json").unlink(missing_ok=True)
        tracker.finish(0)
        return metrics
    except Preempted as e:
        if env.main:
            log.warning("%s %s", cfg.step, e)
        tracker.finish(EXIT_PREEMPTED)
        raise
    except BaseException as e:
        verdict = _diverged(cfg, e, tracker) if env.main and isinstance(e, NonFiniteLoss) else {}
        if env.main and not isinstance(e, (KeyboardInterrupt, RunRefused)):
            try:
                write_json(run_dir / "failed.json", {
                    "step": cfg.step, "error": type(e).__name__, "reason": str(e).splitlines()[0] if str(e) else type(e).__name__,
                    "traceback": traceback.format_exc().splitlines()[-12:], "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                    **verdict})
            except OSError as why:  # a full disk must not hide the run's own error
                log.warning("could not write %s: %s", run_dir / "failed.json", why)
        tracker.finish(1)
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _finished(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    metrics = read_json(run_dir / "metrics.json")
    if metrics.get("status") == health.STOPPED:
        h = metrics.get("health") or {}
        log.info("%s was stopped as unhealthy (%s at epoch %s): %s; it is not repeated (delete the run directory to "
                 "train it again)", cfg.step, h.get("verdict"), h.get("epoch"), run_dir / "metrics.json")
    else:
        log.info("%s already finished: %s (top-1 %.2f)", cfg.step, run_dir / "metrics.json", metrics["top1"])
    return metrics


def _warn_unhealthy(cfg: DictConfig, h: health.Health, action: str) -> None:
    """The one line that says a run turned unhealthy (console and train.log): verdict, epoch, the numbers."""
    log.warning("UNHEALTHY %s seed %s: %s at epoch %s: %s; %s", cfg.step, cfg.seed, h.verdict, h.epoch, h.reason, action)


def _diverged(cfg: DictConfig, e: NonFiniteLoss, tracker: Tracker) -> Dict[str, Any]:
    """A non-finite loss fails the run (as before the health rule): its verdict, warned, tagged, for failed.json."""
    h = health.Health("diverged", f"train {e}", e.epoch)
    _warn_unhealthy(cfg, h, "the run fails (a non-finite loss cannot be trained on)")
    tracker.health(h)
    return {"health": h.as_dict()}


class Run:
    """One run's state and its phases, in the order `run` calls them: build (data, model, recipe),
    resume (from the run directory's checkpoint), the epoch loop with its checkpoint and stop
    policy, finish (metrics.json). Fault-injection hooks: roadmap/faults.py."""

    def __init__(self, cfg: DictConfig, run_dir: Path, env: Env, tracker: Tracker) -> None:
        self.cfg, self.run_dir, self.env, self.tracker = cfg, run_dir, env, tracker
        self.t_start = time.perf_counter()
        faults.raise_if_injected(cfg.step)
        seed_all(cfg.seed + env.rank)
        self.info = step_info(cfg.step)
        self.data = build_data(cfg, env.rank, env.world, log_fn=log.info if env.main else lambda *_: None,
                               refused_list=run_dir / REFUSED_LIST)
        self._build_model()
        self._build_recipe()
        self.start_epoch, self.num_updates, self.history = 0, 0, []
        self.resume_at: Optional[EpochPosition] = None
        self.rng_saved: Optional[Dict[str, Any]] = None
        self.every_s = cfg.scale.checkpoint_every_min * 60 if cfg.scale.checkpoint_every_min else None
        self.last_save = time.monotonic()
        self.slow = faults.slow_update_seconds()
        self.health = health.Health("ok", "no epochs recorded", None)  # the verdict so far (health.assess)
        self.stopped = False  # scale.on_unhealthy=stop ended the run

    # -- build ------------------------------------------------------------------------------------
    def _build_model(self) -> None:
        cfg, env = self.cfg, self.env
        model = ModernizableResNet(cfg.model)
        if cfg.scale.channels_last == "auto" and env.device.type == "cpu":
            env.channels_last = not model.nhwc_blocks  # CPU: NCHW conv + BN blocks gain 1.4x (docs/speed.md)
        self.gflops_train = count_gflops(model, cfg.scale.img_size)
        self.params = count_params(model)
        if cfg.init_from:
            _init_from(model, cfg.init_from)
        model.to(env.device)
        if env.channels_last:
            model.to(memory_format=torch.channels_last)
        train_model: nn.Module = model
        if env.world > 1:
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        if cfg.scale.compile:
            train_model = torch.compile(train_model)
        self.model, self.train_model = model, train_model

    def _build_recipe(self) -> None:
        cfg = self.cfg
        self.global_batch, self.accum = accumulation(cfg.scale.global_batch, cfg.scale.batch_size, self.env.world)
        self.lr = learning_rate(cfg.recipe, cfg.scale, self.global_batch)  # the global batch the updates really see
        self.optimizer = build_optimizer(self.model, cfg.recipe, self.lr)
        max_steps = cfg.scale.max_steps_per_epoch
        steps = min(len(self.data.train), max_steps) if max_steps else len(self.data.train)
        self.steps_per_epoch = steps - steps % self.accum
        self.updates_per_epoch = max(1, self.steps_per_epoch // self.accum)
        lengths = schedule_lengths(cfg, self.updates_per_epoch)
        self.epochs = lengths["epochs"]
        self.health_ctx = health.Context(self.data.num_classes, self.epochs, lengths["warmup_epochs"],
                                         health.rule_of(to_container(cfg)))
        self.schedule = Schedule(self.optimizer, cfg.recipe, lengths)
        self.mixup, self.criterion = build_mixup_and_loss(cfg.recipe, self.data.num_classes)
        self.ema = None
        if cfg.recipe.ema:
            from timm.utils import ModelEmaV3
            self.ema = ModelEmaV3(self.model, decay=cfg.recipe.ema_decay)

    # -- resume -----------------------------------------------------------------------------------
    def resume(self) -> None:
        """Load the run directory's checkpoint, if any; write config.yaml on a first start."""
        env, cfg = self.env, self.cfg
        ck, ck_path = load_run_checkpoint(self.run_dir)
        if ck is not None:
            check_checkpoint_config(ck, cfg, ck_path)
            _load_model(self.model, ck["model"], ck_path)
            self.optimizer.load_state_dict(ck["optimizer"])
            self.schedule.load_state_dict(ck["scheduler"])
            if self.ema is not None and ck.get("ema") is not None:
                self.ema.module.load_state_dict(ck["ema"])
            self.start_epoch, self.num_updates, self.history = ck["epoch"], ck["num_updates"], ck["history"]
            self.health = health.assess(self.history, self.health_ctx, final=False)  # warned by an earlier attempt
            self.t_start -= ck.get("wall_seconds", 0.0)  # wall time counts every attempt
            rank = env.rank if env.rank < len(ck["rng"]) else 0
            self.rng_saved = ck["rng"][rank]
            if ck.get("step_in_epoch"):
                self.resume_at = EpochPosition(ck["step_in_epoch"], ck["epoch_loss_sum"][rank].clone(),
                                               ck["epoch_n_seen"], ck["epoch_seconds"])
            self.schedule.step(self.num_updates)
            if env.main:
                at = self.resume_at
                where = f"epoch {self.start_epoch}/{self.epochs}" + (
                    f" + {at.step}/{self.steps_per_epoch} steps of epoch {self.start_epoch + 1}" if at else "")
                log.info("resumed %s from %s at %s", cfg.step, ck_path, where)
            del ck
        if env.main and not (self.run_dir / "config.yaml").exists():
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def start(self) -> None:
        cfg, env = self.cfg, self.env
        if env.main:
            log.info("%s [%s, %s]: %s params, %.3f GFLOPs at %d px; %d epochs x %d updates, global batch %d "
                     "(accum %d), lr %.2e, %s, world %d", cfg.step, cfg.regime.name, cfg.scale.name, f"{self.params:,}",
                     self.gflops_train, cfg.scale.img_size, self.epochs, self.updates_per_epoch, self.global_batch,
                     self.accum, self.lr, device_name(env.device), env.world)
        self.tracker.start()
        if env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(env.device)
        if self.rng_saved is not None:  # last: nothing between here and the first update draws random numbers
            set_rng_state(self.rng_saved)

    # -- checkpoint and stop policy ---------------------------------------------------------------
    def checkpoint(self, epochs_done: int, pos: Optional[EpochPosition], updates: int) -> Path:
        """Every rank's RNG (and loss sum) gathered; rank 0 writes. A collective: all ranks call it."""
        env = self.env
        mine = {"rng": rng_state(), "loss_sum": (pos.loss_sum.detach().float().cpu() if pos else torch.zeros(()))}
        if env.world > 1:
            states: List[Any] = [None] * env.world
            dist.all_gather_object(states, mine)
        else:
            states = [mine]
        if env.main:
            save_run_checkpoint(self.run_dir, {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None, "epoch": epochs_done,
                "num_updates": updates, "history": self.history, "rng": [st["rng"] for st in states],
                "step": self.cfg.step, "step_in_epoch": pos.step if pos else 0,
                "epoch_loss_sum": [st["loss_sum"] for st in states], "epoch_n_seen": pos.n_seen if pos else 0,
                "epoch_seconds": pos.seconds if pos else 0.0, "wall_seconds": time.perf_counter() - self.t_start,
                "num_classes": self.data.num_classes, "config": identity_config(self.cfg)})
        self.last_save = time.monotonic()
        return self.run_dir / "last.pt"

    def stop_flags(self, timer: bool) -> Tuple[bool, bool]:
        """(stop, checkpoint now), agreed by all ranks: any rank's signal or timer counts. Under DDP
        the ranks compare notes every DDP_STOP_CHECK updates (a device sync each time)."""
        env = self.env
        flags = [STOP.signum is not None,
                 timer and self.every_s is not None and time.monotonic() - self.last_save >= self.every_s]
        if env.world > 1:
            t = torch.tensor([float(f) for f in flags], device=env.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = [bool(v) for v in t.tolist()]
        return flags[0], flags[1]

    def stop(self, where: str, path: Optional[Path]) -> None:
        if self.env.world > 1:
            dist.barrier()  # rank 0 has written the checkpoint before any rank exits
        raise Preempted(STOP.signum or signal.SIGTERM, where, path)

    def after_update(self, epoch: int) -> Callable[[EpochPosition, int], None]:
        """What runs after every update of `epoch`: the timer's checkpoint, a stop signal's checkpoint and stop."""
        def hook(pos: EpochPosition, updates: int) -> None:
            if self.slow:
                STOP.event.wait(self.slow)  # fault injection: a slow update that a signal cuts short
            if self.env.world > 1 and updates % DDP_STOP_CHECK:
                return
            halt, due = self.stop_flags(timer=True)
            if halt or due:
                path = self.checkpoint(epoch, pos, updates)
                if self.env.main and not halt:
                    log.info("%s checkpoint at epoch %d step %d/%d (every %s min)", self.cfg.step, epoch + 1, pos.step,
                             self.steps_per_epoch, self.cfg.scale.checkpoint_every_min)
                if halt:
                    self.stop(f"in epoch {epoch + 1}/{self.epochs} after step {pos.step}/{self.steps_per_epoch} "
                              f"(update {updates}); checkpoint written", path)
        return hook

    # -- the epoch loop ---------------------------------------------------------------------------
    def train(self) -> None:
        for epoch in range(self.start_epoch, self.epochs):
            position = self.resume_at if epoch == self.start_epoch else None
            if self.stop_flags(timer=False)[0]:
                last = self.run_dir / "last.pt"
                self.stop(f"before epoch {epoch + 1}/{self.epochs}" + (f" step {position.step}" if position else ""),
                          last if last.exists() else None)
            ck_path = self.epoch(epoch, position)
            faults.exit_after_epoch(epoch + 1)
            if self.env.world > 1:
                dist.barrier()
            if self.stopped:  # scale.on_unhealthy=stop: every rank assessed the same history
                return
            if epoch + 1 < self.epochs and self.stop_flags(timer=False)[0]:
                self.stop(f"after epoch {epoch + 1}/{self.epochs}; checkpoint written", ck_path)

    def epoch(self, epoch: int, position: Optional[EpochPosition]) -> Path:
        """Train one epoch (or its rest), evaluate when due, record the row, checkpoint."""
        cfg, env = self.cfg, self.env
        self.data.train_sampler.set_epoch(epoch, skip=position.step * cfg.scale.batch_size if position else 0)
        tr, self.num_updates = train_one_epoch(
            self.train_model, self.data.train, self.optimizer, self.schedule, self.criterion, self.mixup, env,
            self.accum, self.num_updates, epoch, self.epochs, cfg.scale.max_steps_per_epoch, cfg.recipe.grad_clip,
            self.ema, cfg.step, position=position, after_update=self.after_update(epoch))
        ev = self.evaluate() if epoch + 1 == self.epochs or (epoch + 1) % cfg.scale.eval_every == 0 else {}
        row = {"epoch": epoch + 1, **_rounded({**tr, **ev})}
        self.history.append(row)
        turned = self.assess_health(epoch)
        if self.stopped and "top1" not in row:  # a stopped run ends on an evaluated epoch
            row.update(_rounded(self.evaluate()))
        ck_path = self.checkpoint(epoch + 1, None, self.num_updates)
        if env.main:
            write_csv(self.run_dir / "history.csv", self.history, _history_fields(self.history))
            ema_s = f"  EMA top-1 {row['ema_top1']:.2f}" if "ema_top1" in row else ""
            log.info("%s epoch %d/%d  loss %.4f  top-1 %s%s  lr %.2e  %.0f img/s  %.1f s", cfg.step, epoch + 1,
                     self.epochs, tr["train_loss"], f"{row['top1']:.2f}" if "top1" in row else "-", ema_s, tr["lr"],
                     tr["train_img_s"], tr["train_seconds"])
            self.tracker.log({**row, "step_index": self.info["index"]}, step=epoch + 1)
            if turned is not None:
                _warn_unhealthy(cfg, turned, "the run stops here (scale.on_unhealthy=stop)" if self.stopped else
                                "the run goes on (scale.on_unhealthy=continue)")
                self.tracker.health(turned)
        return ck_path

    def assess_health(self, epoch: int) -> Optional[health.Health]:
        """The health rule on the history so far (roadmap/health.py): the verdict when the run turns unhealthy
        at this epoch, else None; sets `stopped` when scale.on_unhealthy=stop ends the run here."""
        final = epoch + 1 == self.epochs
        now = health.assess(self.history, self.health_ctx, final=final)
        turned = now if self.health.healthy and not now.healthy else None
        if not now.healthy or final:  # the first finding stays first: each depends only on the epochs up to it
            self.health = now
        self.stopped = not self.health.healthy and not final and self.cfg.scale.on_unhealthy == "stop"
        return turned

    def evaluate(self) -> Dict[str, float]:
        ev = evaluate(self.model, self.data.val, self.env)
        if self.ema is not None:  # the EMA weights, evaluated like the raw ones (official ConvNeXt: --model_ema_eval)
            ev.update({f"ema_{k}": v for k, v in evaluate(self.ema.module, self.data.val, self.env).items()
                       if k in ("top1", "top5", "val_loss")})
        return ev

    # -- finish -----------------------------------------------------------------------------------
    def finish(self) -> Dict[str, Any]:
        cfg = self.cfg
        metrics = _metrics(cfg, self.env, self.history, self.params, self.gflops_train, self.data, self.t_start,
                           self.global_batch, self.accum, self.lr, self.epochs)
        if not self.stopped:  # the complete record (also after a resume at its very end): the same first finding
            self.health = health.assess(self.history, self.health_ctx, final=True)
        metrics.update(status=health.STOPPED if self.stopped else "finished", health=self.health.as_dict())
        if self.env.main:
            write_json(self.run_dir / "metrics.json", metrics)
            remove_previous(self.run_dir)
            self.tracker.summary(metrics)  # the keys of tracking.KEYS.summary, and the paper's figures
            done = (f"stopped as unhealthy ({self.health.verdict}) after epoch {len(self.history)} of {self.epochs}"
                    if self.stopped else "finished")
            log.info("%s %s: top-1 %.2f (best %.2f at epoch %d)  top-5 %.2f  in %.0f s -> %s", cfg.step, done,
                     metrics["top1"], metrics["top1_best"], metrics["best_epoch"], metrics["top5"],
                     metrics["wall_seconds"], self.run_dir / "metrics.json")
        return metrics


def _run(cfg: DictConfig, run_dir: Path, env: Env, tracker: Tracker) -> Dict[str, Any]:
    """Build, resume, train, finish (see `Run`)."""
    r = Run(cfg, run_dir, env, tracker)
    r.resume()
    r.start()
    r.train()
    return r.finish()


def _rounded(values: Dict[str, Any]) -> Dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}


def _history_fields(history: List[Dict[str, Any]]) -> List[str]:
    return list(dict.fromkeys(k for row in history for k in row))


def _load_model(model: nn.Module, state: Dict[str, torch.Tensor], source: Path | str) -> None:
    own = model.state_dict()
    bad = [k for k in state if k in own and state[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        what = "classes" if k.startswith("head.fc") else "shape"
        raise ConfigError(f"checkpoint {source} does not fit the model: {k} is {tuple(state[k].shape)} there, "
                          f"{tuple(own[k].shape)} here ({what}); check model.num_classes / the step")
    missing = set(own) - set(state)
    if missing:
        raise ConfigError(f"checkpoint {source} lacks {len(missing)} of the model's tensors (e.g. {sorted(missing)[0]}); "
                          "it is from another step")
    model.load_state_dict(state)


def _init_from(model: nn.Module, path: str) -> None:
    if not Path(path).exists():
        raise ConfigError(f"init_from={path!r} does not exist; allowed: a last.pt or a state dict saved with torch.save")
    ck = load_checkpoint(Path(path))
    _load_model(model, ck.get("model", ck), path)


def best_and_last(history: List[Dict[str, Any]], prefix: str = "") -> Dict[str, Any]:
    """Last-epoch and best-epoch top-1 over the evaluated epochs (the official ConvNeXt code
    reports the best epoch: 'Max accuracy' / 'Max EMA accuracy'); ties go to the earlier epoch."""
    evaluated = [(h[f"{prefix}top1"], h["epoch"]) for h in history if h.get(f"{prefix}top1") is not None]
    best, epoch = max(evaluated, key=lambda t: (t[0], -t[1]))
    return {f"{prefix}top1_last": evaluated[-1][0], f"{prefix}top1_best": best, f"{prefix}best_epoch": epoch}


def _metrics(cfg, env, history, params, gflops_train, data, t_start, global_batch, accum, lr, epochs) -> Dict[str, Any]:
    import timm

    final = history[-1]
    skipped = data.skipped_by_split()  # refused image files (roadmap.images), listed in refused_images.tsv
    paper_model = ModernizableResNet(OmegaConf.merge(cfg.model, {"width_mult": 1.0, "num_classes": 1000}))
    train_rates = [h["train_img_s"] for h in history if "train_img_s" in h]
    eval_rates = [h["eval_img_s"] for h in history if "eval_img_s" in h]
    info = step_info(cfg.step)
    return {
        "step": cfg.step, "step_index": info["index"], "branch": info["branch"], "group": info["group"],
        "label": info["label"], "roadmap": info["roadmap"], "ablation": cfg.ablation,
        "regime": cfg.regime.name, "scale": cfg.scale.name, "dataset": cfg.data.name, "seed": cfg.seed,
        "status": "finished",
        "top1": final["top1"], "top5": final["top5"], "val_loss": final["val_loss"],
        **best_and_last(history),
        **({"ema_top1": final["ema_top1"], "ema_top5": final["ema_top5"], "ema_val_loss": final.get("ema_val_loss")}
           if "ema_top1" in final else {}),
        **(best_and_last(history, "ema_") if "ema_top1" in final else {}),
        "train_loss": final["train_loss"], "epochs": epochs, "epochs_done": len(history),
        "params": params, "gflops": round(gflops_train, 4), "img_size": cfg.scale.img_size,
        "gflops_224": round(count_gflops(paper_model, 224), 4), "params_224": count_params(paper_model),
        "train_img_s": float(np.median(train_rates)), "eval_img_s": float(np.median(eval_rates)) if eval_rates else None,
        "peak_memory_mb": round(peak_memory_mb(env.device), 1), "wall_seconds": round(time.perf_counter() - t_start, 1),
        "device": device_name(env.device), "world_size": env.world, "global_batch": global_batch,
        "grad_accum": accum, "lr": lr, "amp": str(env.amp_dtype).replace("torch.", "") if env.amp_dtype else "fp32",
        "channels_last": env.channels_last, "compile": bool(cfg.scale.compile),
        "train_images": data.info["train_images"], "val_images": data.info["val_images"],
        "skipped_files": sum(skipped.values()), "skipped_by_split": skipped, "data": data.info,
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "git_commit": git_commit(), "hostname": platform.node(), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": to_container(cfg),
    }
