"""Hydra callbacks (conf/config.yaml, hydra.callbacks): the report at the end of a sweep, and the
copy of every finished run into results/<study>/runs/ when `keep_runs=true`. Neither ever fails a
job or a sweep: a problem is a warning."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..files import read_json
from .build import write_report
from .collect import sweep_plan
from .results import keep_run, run_study

log = logging.getLogger("roadmap")


def _under_cwd(config: DictConfig, path: Any) -> Path:
    """A path from the config, relative to the directory the command was started in."""
    p = Path(str(path))
    cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
    return Path(cwd) / p if not p.is_absolute() and cwd else p


class ReportCallback(Callback):
    """Hydra callback: at the end of a multirun, write the sweep's report into
    `<results_dir>/<dataset>-<scale>[-suffix]/`. Never raises (a failure is a warning).

    Registered in conf/config.yaml as hydra.callbacks.report; turn it off with
    `hydra.callbacks.report.enabled=false` or $ROADMAP_REPORT=0. W&B follows the sweep's logger
    (offline unless logger=none / logger.mode=disabled) unless `wandb` is given here; `metric`
    is last (default) or best (hydra.callbacks.report.metric=best); `dashboard`: also build the W&B
    report + workspace offline (dashboard.json, publish commands printed)."""

    def __init__(self, enabled: bool = True, wandb: Optional[str] = None, metric: str = "last",
                 dashboard: bool = False) -> None:
        self.enabled = enabled
        self.wandb = wandb
        self.metric = metric
        self.dashboard = dashboard

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or os.environ.get("ROADMAP_REPORT", "1").lower() in ("0", "false", "no", "off"):
            return
        try:
            sweep_dir = _under_cwd(config, config.hydra.sweep.dir)
            results_dir = _under_cwd(config, OmegaConf.select(config, "results_dir", default="results") or "results")
            mode = self.wandb
            if mode is None:
                name = OmegaConf.select(config, "logger.name", default="none")
                mode = OmegaConf.select(config, "logger.mode", default="disabled") if name == "wandb" else "disabled"
            overrides = " ".join(str(o) for o in (OmegaConf.select(config, "hydra.overrides.task", default=[]) or []))
            out = write_report(sweep_dir, results_dir=results_dir, wandb_mode=mode, metric=self.metric,
                               dashboard=self.dashboard,
                               command=f"python -m roadmap -m {overrides}".strip() + "  (report at the end of the sweep)")
            log.info("report: %s", out / "trajectory.md")
            print(f"report: {out / 'trajectory.md'}\ntrajectory figure: {out / 'trajectory.png'}", flush=True)
        except Exception as e:  # a sweep never fails because of its report
            log.warning("report for the sweep failed (%s: %s); run `python -m roadmap.report <sweep dir>` by hand",
                        type(e).__name__, e)


class KeepRunCallback(Callback):
    """Hydra callback: with `keep_runs=true`, at the end of every job whose run finished
    (metrics.json written), copy its metrics.json, history.csv and config.yaml into
    `<results_dir>/<study>/runs/<step>/<run dir name>/` (results.keep_run). The study is the name
    the sweep's report gets by default (from multirun.yaml's steps and ablations in a sweep).

    on_job_end runs in the job's own process for every launcher (basic, joblib, submitit/SLURM):
    hydra.core.utils.run_job calls it. Only rank 0 copies (torchrun). A run already finished when
    the job starts is copied too, so rerunning an old sweep with keep_runs=true collects it."""

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0" or not OmegaConf.select(config, "keep_runs", default=False):
            return
        try:
            run_dir = Path(str(config.hydra.runtime.output_dir))
            if not (run_dir / "metrics.json").is_file():
                return
            metrics = read_json(run_dir / "metrics.json")
            cfg = metrics.get("config") or {}
            plan = None
            if str(OmegaConf.select(config, "hydra.mode", default="")).endswith("MULTIRUN"):
                plan = sweep_plan(_under_cwd(config, config.hydra.sweep.dir))
            results_dir = _under_cwd(config, OmegaConf.select(config, "results_dir", default=None) or
                                     cfg.get("results_dir") or "results")
            dest = keep_run(run_dir, results_dir / run_study(cfg, plan), step=metrics.get("step"))
            log.info("kept %s in %s", run_dir, dest)
        except Exception as e:  # never fail a finished run because of its copy
            log.warning("keep_runs: could not copy %s (%s: %s)", OmegaConf.select(config, "hydra.runtime.output_dir"),
                        type(e).__name__, e)
