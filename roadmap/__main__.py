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
import sys
from pathlib import Path
from typing import Any, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import (Config, ConfigError, DataConfig, LoggerConfig, ModelConfig, RecipeConfig, RegimeConfig,
                     ScaleConfig, register_configs)
from .files import write_json
from .launch import check_n_jobs
from .steps import check_choice, option_names

log = logging.getLogger("roadmap")

GROUPS = ("step", "regime", "recipe", "data", "scale", "logger", "experiment", "ablation")
SCHEMAS = {"model": ModelConfig, "recipe": RecipeConfig, "data": DataConfig, "scale": ScaleConfig,
           "logger": LoggerConfig, "regime": RegimeConfig}
TOP_KEYS = {f.name for f in dataclasses.fields(Config)}


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
        elif key not in TOP_KEYS:
            raise ConfigError(f"{key} is not an option; allowed: {', '.join(sorted(TOP_KEYS | set(SCHEMAS)))} "
                              f"and the groups {', '.join(GROUPS)}")


def _is_multirun() -> bool:
    try:
        from hydra.types import RunMode
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> Any:
    from .train import RunRefused, run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _is_multirun()
    try:
        metrics = run(cfg, run_dir)
        if os.environ.get("RANK", "0") == "0":
            print(f"metrics: {run_dir / 'metrics.json'}  (top-1 {metrics['top1']:.2f})", flush=True)
        return metrics
    except KeyboardInterrupt:
        raise
    except ConfigError as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if not isinstance(e, RunRefused):
            _record_failure(run_dir, cfg, e)
    except Exception as e:
        _record_failure(run_dir, cfg, e)
        if not multirun:
            print(f"error: step {cfg.step} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  f"(details: {run_dir / 'failed.json'})", file=sys.stderr)
            sys.exit(1)
    log.error("step %s failed; the sweep goes on (details: %s)", cfg.step, run_dir / "failed.json")
    return None


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
