"""`python -m roadmap [group=option ...] [key=value ...]` (also the `roadmap` console script).

    python -m roadmap step=inverted_bottleneck                 # train + evaluate one step
    python -m roadmap step=kernel_7 model.kernel_size=9        # any toggle on top of a step
    python -m roadmap -m experiment=roadmap_path seed=0,1,2    # a sweep (Hydra multirun)
    torchrun --nproc_per_node 2 -m roadmap scale=smoke         # DDP
    python -m roadmap --help | --cfg job

Run directories are a function of the config (see conf/config.yaml), so rerunning a command
resumes it, and rerunning a sweep skips finished steps.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import (Config, ConfigError, DataConfig, HealthConfig, LoggerConfig, ModelConfig, RecipeConfig,
                     RegimeConfig, ScaleConfig, option_names, register_configs)
from .files import write_json
from .launch import check_n_jobs
from .steps import check_choice

log = logging.getLogger("roadmap")

GROUPS = ("step", "regime", "recipe", "data", "scale", "logger", "experiment", "ablation")
SCHEMAS = {"model": ModelConfig, "recipe": RecipeConfig, "data": DataConfig, "scale": ScaleConfig,
           "logger": LoggerConfig, "regime": RegimeConfig}
TOP_KEYS = {f.name for f in dataclasses.fields(Config)}
BOOLS = {"true", "false", "yes", "no", "on", "off", "y", "n", "1", "0"}  # what OmegaConf reads as a bool


def _variant(override_dirname: str) -> str:
    return f",{override_dirname}" if override_dirname else ""


OmegaConf.register_new_resolver("roadmap.variant", _variant, replace=True)
register_configs()


def precheck(argv: List[str]) -> None:
    """One clear line for a typo on the command line, before Hydra composes anything."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hydra.launcher.n_jobs":
            check_n_jobs(value)
        if key.startswith("hydra") or key.startswith("/"):
            continue
        if key in GROUPS:
            for v in value.split(","):
                if v and not v.startswith(("range(", "choice(", "glob(")):
                    check_choice(key, v)
            continue
        node, _, field = key.partition(".")
        if node in SCHEMAS:
            names = [f.name for f in dataclasses.fields(SCHEMAS[node])]
            if field.split(".")[0] not in names:
                raise ConfigError(f"{key} is not an option; allowed {node}.*: {', '.join(names)}")
            if key.startswith("scale.lr_mult."):
                recipes = option_names("recipe")
                if key.split(".")[2] not in recipes:
                    raise ConfigError(f"{key} is not an option; allowed scale.lr_mult.*: {', '.join(recipes)}")
            if key.startswith("scale.health."):
                names = [f.name for f in dataclasses.fields(HealthConfig)]
                if key.split(".")[2] not in names:
                    raise ConfigError(f"{key} is not an option; allowed scale.health.*: {', '.join(names)}")
        elif key not in TOP_KEYS:
            raise ConfigError(f"{key} is not an option; allowed: {', '.join(sorted(TOP_KEYS | set(SCHEMAS)))} "
                              f"and the groups {', '.join(GROUPS)}")
        ftype = next((f.type for f in dataclasses.fields(SCHEMAS.get(node, Config))
                      if f.name == (field if node in SCHEMAS else key)), None)
        if ftype in (bool, "bool") and any(v.strip().lower() not in BOOLS for v in value.split(",")):
            raise ConfigError(f"{key}={value} is invalid; allowed: true, false")


def _is_multirun() -> bool:
    try:
        from hydra.types import RunMode
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> Any:
    from .rundir import Preempted, stop_requested
    from .train import RunRefused, run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _is_multirun()
    try:
        metrics = run(cfg, run_dir)
        if os.environ.get("RANK", "0") == "0":
            n = int(cfg.data.num_classes)  # resolved by run()
            h = metrics.get("health") or {}
            verdict = "" if h.get("verdict", "ok") == "ok" else f"; unhealthy: {h['verdict']} at epoch {h.get('epoch')}" + (
                ", stopped there" if metrics.get("status") == "stopped_unhealthy" else "")
            print(f"metrics: {run_dir / 'metrics.json'}  (top-1 {metrics['top1']:.2f} % on {metrics.get('val_images', '?')} "
                  f"val images; chance {100 / n:.1f} % for {n} classes{verdict})", flush=True)
        if stop_requested() is not None:  # the signal came while the run was finishing: stop the sweep here
            _stop(stop_requested(), run_dir)
        return metrics
    except KeyboardInterrupt:
        raise
    except Preempted as e:
        _stop(e.signum, run_dir)
    except ConfigError as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            _remove_empty(run_dir)
            sys.exit(2)
        if isinstance(e, RunRefused):  # another config or another live writer: nothing of ours to record
            log.error("step %s refused: %s", cfg.step, e)
            return None
        _record_failure(run_dir, cfg, e)
    except Exception as e:
        _record_failure(run_dir, cfg, e)
        if not multirun:
            print(f"error: step {cfg.step} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  f"(details: {run_dir / 'failed.json'})", file=sys.stderr)
            sys.exit(1)
    log.error("step %s failed; the sweep goes on (details: %s)", cfg.step, run_dir / "failed.json")
    return None


def _stop(signum: int, run_dir: Path) -> None:
    """After a stop signal and its checkpoint: under submitit (hydra/launcher=slurm|local) hand over
    to submitit's own handler, which pickles the job again (the launcher's `checkpoint()`) and
    requeues it; otherwise exit with EXIT_PREEMPTED. Either way this process ends here."""
    from .rundir import EXIT_PREEMPTED, signal_name, stop_signals, submitit_requeue_handler, submitit_signal

    requeue = submitit_requeue_handler()
    for sig in stop_signals():  # a second signal (SLURM sends SIGTERM, then USR2) must not requeue twice
        signal.signal(sig, signal.SIG_IGN)
    if requeue is not None:
        log.warning("stopped by %s: requeueing through submitit; the job resumes from %s", signal_name(signum),
                    run_dir / "last.pt")
        requeue(submitit_signal(), None)  # exits (requeued), or raises if the job may not be requeued
    if os.environ.get("RANK", "0") == "0":
        print(f"stopped by {signal_name(signum)}; checkpoint in {run_dir}; rerun the same command to resume "
              f"(exit status {EXIT_PREEMPTED})", file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)


def _remove_empty(run_dir: Path) -> None:
    """A refused single run leaves nothing: remove the folders Hydra made for it if they are empty."""
    if os.environ.get("RANK", "0") != "0":
        return
    stop = Path.cwd().resolve()
    d = run_dir.resolve()
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def _record_failure(run_dir: Path, cfg: DictConfig, e: BaseException) -> None:
    if os.environ.get("RANK", "0") != "0" or (run_dir / "failed.json").exists():
        return
    write_json(run_dir / "failed.json", {"step": cfg.get("step"), "error": type(e).__name__,
                                         "reason": str(e).splitlines()[0] if str(e) else type(e).__name__})


def main() -> None:
    try:
        precheck(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
