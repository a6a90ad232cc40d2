"""Train and evaluate one roadmap step; everything a run leaves behind lives in its run directory.

Run directory (only rank 0 writes):
  config.yaml    the resolved config; rerunning with another config here is refused
  last.pt        checkpoint after every epoch (temp file + rename); rerunning resumes from it
  history.csv    one row per epoch
  metrics.json   written once, at the end: its presence means the run finished
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
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .config import ConfigError, to_container, validate
from .data import build_data, discover_num_classes
from .files import read_json, write_csv, write_json
from .measure import count_gflops, count_params
from .model import ModernizableResNet
from .steps import step_info
from .tracking import Tracker

log = logging.getLogger("roadmap")

# Keys that may change between an interrupted run and its resumption (they do not change results).
NOT_IDENTITY = ("logger", "scale.workers", "data.root", "data.cache_dir", "out_dir", "sweep_id")


class NonFiniteLoss(RuntimeError):
    pass


class RunRefused(ConfigError):
    pass


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


def setup_env(scale: Any) -> Env:
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


def fault(kind: str, step: str) -> bool:
    """Fault injection for tests: $ROADMAP_FAULT = 'raise:<step>', 'nan:<step>' or 'exit_after_epoch:<n>'."""
    for item in os.environ.get("ROADMAP_FAULT", "").split(","):
        k, _, v = item.partition(":")
        if k == kind and v in (step, "*"):
            return True
    return False


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
def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
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


def _diff(a: Any, b: Any, prefix: str = "") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def check_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume a run directory that holds a run of another config."""
    saved = run_dir / "config.yaml"
    if saved.exists():
        old = OmegaConf.to_container(OmegaConf.load(saved))
        for key in NOT_IDENTITY:
            node, *rest = key.split(".")
            (old.get(node, {}).pop(rest[0], None) if rest else old.pop(node, None))
        diff = _diff(old, identity_config(cfg))
        if diff:
            raise RunRefused(f"run directory {run_dir} holds a run with another config (differs in: "
                             f"{', '.join(diff[:6])}); use another out_dir or hydra.run.dir, or delete it")


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


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, schedule: Schedule,
                    criterion: nn.Module, mixup: Any, env: Env, accum: int, num_updates: int, epoch: int,
                    epochs: int, max_steps: Optional[int], grad_clip: Optional[float], ema: Any,
                    step_name: str) -> Tuple[Dict[str, float], int]:
    model.train()
    loss_sum, n_seen, t0 = torch.zeros((), device=env.device), 0, time.perf_counter()
    steps = len(loader) if not max_steps else min(len(loader), max_steps)
    steps -= steps % accum
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not (env.main and sys.stderr.isatty()),
               leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    poison = fault("nan", step_name)
    for i, (x, y) in enumerate(loader):
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
        with ctx, _autocast(env):
            loss = criterion(model(x), y)
            if poison:
                loss = loss * float("nan")
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}")
        (loss / accum).backward()
        if sync:
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            schedule.step(num_updates)
            if ema is not None:
                ema.update(model, step=num_updates)
        loss_sum += loss.detach() * x.shape[0]
        n_seen += x.shape[0]
        if bar.disable is False and (i % 10 == 0 or i == steps - 1):
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{n_seen * env.world / (time.perf_counter() - t0):.0f}")
        bar.update(1)
    bar.close()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    stats = torch.stack([loss_sum.float(), torch.tensor(float(n_seen), device=env.device)])
    if env.world > 1:
        dist.all_reduce(stats)
    return {"train_loss": (stats[0] / stats[1].clamp(min=1)).item(), "train_img_s": stats[1].item() / seconds,
            "lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds}, num_updates


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
    """Train and evaluate `cfg` in `run_dir`, resuming from its last.pt; return the metrics.

    A finished run (metrics.json present) is not repeated. On failure, failed.json records why
    and the exception propagates.
    """
    run_dir = Path(run_dir)
    discover_num_classes(cfg)  # before resolving, so model.num_classes=${data.num_classes} follows it
    OmegaConf.resolve(cfg)
    validate(cfg)
    env = setup_env(cfg.scale)
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_run_dir(run_dir, cfg)
    if (run_dir / "metrics.json").exists():
        metrics = read_json(run_dir / "metrics.json")
        if env.main:
            log.info("%s already finished: %s (top-1 %.2f)", cfg.step, run_dir / "metrics.json", metrics["top1"])
        return metrics
    handler = _log_to_file(run_dir) if env.main else None
    tracker = Tracker(cfg, run_dir, enabled=env.main)
    try:
        metrics = _run(cfg, run_dir, env, tracker)
        (run_dir / "failed.json").unlink(missing_ok=True)
        tracker.finish(0)
        return metrics
    except BaseException as e:
        if env.main and not isinstance(e, (KeyboardInterrupt, RunRefused)):
            write_json(run_dir / "failed.json", {
                "step": cfg.step, "error": type(e).__name__, "reason": str(e).splitlines()[0] if str(e) else type(e).__name__,
                "traceback": traceback.format_exc().splitlines()[-12:], "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        tracker.finish(1)
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _run(cfg: DictConfig, run_dir: Path, env: Env, tracker: Tracker) -> Dict[str, Any]:
    t_start = time.perf_counter()
    if fault("raise", cfg.step):
        raise RuntimeError(f"injected failure in step {cfg.step} (ROADMAP_FAULT)")
    seed_all(cfg.seed + env.rank)
    info = step_info(cfg.step)

    data = build_data(cfg, env.rank, env.world, log_fn=log.info if env.main else lambda *_: None)
    model = ModernizableResNet(cfg.model)
    if cfg.scale.channels_last == "auto" and env.device.type == "cpu":
        env.channels_last = not model.nhwc_blocks  # CPU: NCHW conv + BN blocks gain 1.4x (README "Speed")
    gflops_train = count_gflops(model, cfg.scale.img_size)
    params = count_params(model)
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

    global_batch = cfg.scale.global_batch or cfg.scale.batch_size * env.world
    accum = max(1, global_batch // (cfg.scale.batch_size * env.world))
    lr = learning_rate(cfg.recipe, cfg.scale, global_batch)
    optimizer = build_optimizer(model, cfg.recipe, lr)
    max_steps = cfg.scale.max_steps_per_epoch
    steps_per_epoch = min(len(data.train), max_steps) if max_steps else len(data.train)
    updates_per_epoch = max(1, steps_per_epoch // accum)
    lengths = schedule_lengths(cfg, updates_per_epoch)
    epochs = lengths["epochs"]
    schedule = Schedule(optimizer, cfg.recipe, lengths)
    mixup, criterion = build_mixup_and_loss(cfg.recipe, data.num_classes)
    ema = None
    if cfg.recipe.ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.recipe.ema_decay)

    start_epoch, num_updates, history = 0, 0, []
    ckpt_path = run_dir / "last.pt"
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        _load_model(model, ck["model"], ckpt_path)
        optimizer.load_state_dict(ck["optimizer"])
        schedule.load_state_dict(ck["scheduler"])
        if ema is not None and ck.get("ema") is not None:
            ema.module.load_state_dict(ck["ema"])
        start_epoch, num_updates, history = ck["epoch"], ck["num_updates"], ck["history"]
        t_start -= ck.get("wall_seconds", 0.0)  # wall time counts every attempt
        set_rng_state(ck["rng"][env.rank] if env.rank < len(ck["rng"]) else ck["rng"][0])
        schedule.step(num_updates)
        if env.main:
            log.info("resumed %s from %s at epoch %d/%d", cfg.step, ckpt_path, start_epoch, epochs)
    elif env.main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    if env.main:
        log.info("%s [%s, %s]: %s params, %.3f GFLOPs at %d px; %d epochs x %d updates, global batch %d "
                 "(accum %d), lr %.2e, %s, world %d", cfg.step, cfg.regime.name, cfg.scale.name, f"{params:,}",
                 gflops_train, cfg.scale.img_size, epochs, updates_per_epoch, global_batch, accum, lr,
                 device_name(env.device), env.world)
    tracker.start()
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)

    ev: Dict[str, float] = history[-1] if history else {}
    for epoch in range(start_epoch, epochs):
        data.train_sampler.set_epoch(epoch)
        tr, num_updates = train_one_epoch(train_model, data.train, optimizer, schedule, criterion, mixup, env,
                                          accum, num_updates, epoch, epochs, max_steps, cfg.recipe.grad_clip,
                                          ema, cfg.step)
        last = epoch + 1 == epochs
        if last or (epoch + 1) % cfg.scale.eval_every == 0:
            ev = evaluate(model, data.val, env)
            if ema is not None:
                ev.update({f"ema_{k}": v for k, v in evaluate(ema.module, data.val, env).items() if k in ("top1", "top5")})
        row = {"epoch": epoch + 1, **{k: round(v, 6) if isinstance(v, float) else v for k, v in {**tr, **ev}.items()}}
        history.append(row)
        if env.world > 1:  # every rank's RNG state, so a resumed DDP run continues each one
            states: List[Any] = [None] * env.world
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if env.main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None, "epoch": epoch + 1,
                "num_updates": num_updates, "history": history, "rng": states, "step": cfg.step,
                "wall_seconds": time.perf_counter() - t_start,
                "num_classes": data.num_classes})
            write_csv(run_dir / "history.csv", history, _history_fields(history))
            log.info("%s epoch %d/%d  loss %.4f  top-1 %s  lr %.2e  %.0f img/s  %.1f s", cfg.step, epoch + 1, epochs,
                     tr["train_loss"], f"{ev['top1']:.2f}" if "top1" in ev else "-", tr["lr"], tr["train_img_s"],
                     tr["train_seconds"])
            tracker.log({**row, "step_index": info["index"]}, step=epoch + 1)
        if fault("exit_after_epoch", str(epoch + 1)):
            os._exit(17)  # simulate a killed process (tests of resume)
        if env.world > 1:
            dist.barrier()

    metrics = _metrics(cfg, env, history, params, gflops_train, data, t_start, global_batch, accum, lr, epochs)
    if env.main:
        write_json(run_dir / "metrics.json", metrics)
        tracker.summary({k: metrics[k] for k in ("top1", "top5", "gflops", "gflops_224", "params", "train_img_s", "eval_img_s")})
        log.info("%s finished: top-1 %.2f  top-5 %.2f  in %.0f s -> %s", cfg.step, metrics["top1"], metrics["top5"],
                 metrics["wall_seconds"], run_dir / "metrics.json")
    return metrics


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


def _metrics(cfg, env, history, params, gflops_train, data, t_start, global_batch, accum, lr, epochs) -> Dict[str, Any]:
    import timm

    final = history[-1]
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
        **({"ema_top1": final["ema_top1"], "ema_top5": final["ema_top5"]} if "ema_top1" in final else {}),
        "train_loss": final["train_loss"], "epochs": epochs, "epochs_done": len(history),
        "params": params, "gflops": round(gflops_train, 4), "img_size": cfg.scale.img_size,
        "gflops_224": round(count_gflops(paper_model, 224), 4), "params_224": count_params(paper_model),
        "train_img_s": float(np.median(train_rates)), "eval_img_s": float(np.median(eval_rates)) if eval_rates else None,
        "peak_memory_mb": round(peak_memory_mb(env.device), 1), "wall_seconds": round(time.perf_counter() - t_start, 1),
        "device": device_name(env.device), "world_size": env.world, "global_batch": global_batch,
        "grad_accum": accum, "lr": lr, "amp": str(env.amp_dtype).replace("torch.", "") if env.amp_dtype else "fp32",
        "channels_last": env.channels_last, "compile": bool(cfg.scale.compile),
        "train_images": data.info["train_images"], "val_images": data.info["val_images"],
        "skipped_files": data.skipped_files, "data": data.info,
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "git_commit": git_commit(), "hostname": platform.node(), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": to_container(cfg),
    }
