"""The data path at proxy scale: loader img/s against model img/s, and one training epoch with the
prepared cache on and off."""
from __future__ import annotations

import gc
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .timing import Candidate, Settings, _log, measure_group


def proxy_overrides() -> List[str]:
    from ..config import CONF_DIR

    if (CONF_DIR / "scale" / "proxy.yaml").exists():
        return ["scale=proxy"]
    return ["scale=smoke", "scale.max_train_samples=null"]


def proxy_config(step: str, *extra: str) -> Any:
    from omegaconf import OmegaConf

    from ..config import validate
    from ..data import discover_num_classes
    from ..steps import compose_config

    cfg = compose_config([*proxy_overrides(), f"step={step}", "logger=none", *extra])
    discover_num_classes(cfg)
    OmegaConf.resolve(cfg)
    validate(cfg)
    return cfg


def loader_img_s(cfg: Any, batches: int, log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """img/s of the train loader of `cfg` (after its first batch, i.e. with workers started)."""
    from ..data import build_data

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
    from ..model import ModernizableResNet

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
    from ..data import build_data
    from ..model import ModernizableResNet
    from ..train import (Schedule, build_mixup_and_loss, build_optimizer, learning_rate, schedule_lengths,
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

