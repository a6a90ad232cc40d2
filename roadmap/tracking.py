"""Weights & Biases, offline by default: no network and no API key needed (`wandb sync` later).

Project/group/name/tags come from the regime, sweep, step and seed; the config is the resolved
container plus the step's index on the roadmap and `roadmap_step` (a group key that sorts in
roadmap order), so W&B tables and groups sort in roadmap order.

`KEYS` below is the one registry of the keys the runs log (per epoch, in the summary, in the
config). The dashboards (roadmap/report/dashboard.py) take every panel key from it, and a test checks
the registry against what a real offline run logs, so renaming a metric cannot silently break
a panel. A live run (`Tracker`) and a kept run imported later (roadmap/report/wandb_import.py) log
through the same functions, `run_config`, `history_values`, `summary_values` and `start_run`, so
the panels read both alike.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from .config import ModelConfig, reference, to_container
from .steps import ablation_info, step_info

log = logging.getLogger("roadmap")


# ---------------------------------------------------------------------------------------------
# What the runs log: the registry the dashboards' panels take their keys from
# ---------------------------------------------------------------------------------------------
# model fields that are plumbing of the scale / data, not roadmap toggles
_NOT_TOGGLES = {"width_mult", "num_classes", "in_chans"}


@dataclasses.dataclass(frozen=True)
class LoggedKeys:
    """Keys every finished run of `roadmap.train` logs to W&B (see `Tracker`).

    history: logged every epoch (`Tracker.log`; W&B's step is the epoch, 1-based);
    summary: set once at the end (`Tracker.summary`; the history keys' last values are there too);
    config:  dotted paths into the run's config (the resolved Hydra config + `step_index`,
             `roadmap_step`); `toggles` are the config paths a roadmap step changes;
    report:  summary keys of the sweep report's own run (job_type 'report', `roadmap.report`)."""

    history: Tuple[str, ...]
    summary: Tuple[str, ...]
    config: Tuple[str, ...]
    toggles: Tuple[str, ...]
    report: Tuple[str, ...]

    def __call__(self, section: str, name: str) -> str:
        """`name`, checked against the registry (a panel can only use a key the runs log)."""
        known = getattr(self, section)
        if name not in known:
            raise KeyError(f"{section} key {name!r} is not logged by the runs; logged: {', '.join(known)}")
        return name


KEYS = LoggedKeys(
    # train_one_epoch's and evaluate's row (roadmap/train.py) + the step's index
    history=("epoch", "train_loss", "lr", "train_img_s", "train_seconds", "top1", "top5", "val_loss",
             "eval_img_s", "val_n", "step_index"),
    # metrics.json's headline numbers + the paper's figures for the step preset (reference.yaml)
    summary=("top1", "top1_last", "top1_best", "best_epoch", "top5", "val_loss", "train_loss", "gflops", "gflops_224", "params", "params_224",
             "train_img_s", "eval_img_s", "wall_seconds", "paper_top1", "paper_gflops", "step_index",
             "health"),  # the health rule's verdict (roadmap/health.py): ok, stalled, ...
    config=("step", "step_index", "roadmap_step", "seed", "ablation", "recipe.name", "scale.name", "data.name",
            "regime.name", "sweep_id",
            *(f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name not in _NOT_TOGGLES)),
    toggles=("recipe.name", *(f"model.{f.name}" for f in dataclasses.fields(ModelConfig)
                              if f.name not in _NOT_TOGGLES)),
    # the trajectory table (one row per step: ours, the paper, Δs) and its bar chart
    report=("trajectory", "trajectory_top1_table"),
)
SUMMARY_FROM_METRICS = tuple(k for k in KEYS.summary if not k.startswith("paper_") and k != "health")
HEALTH_TAG = "unhealthy-{verdict}"  # the tag of a run the health rule flags, e.g. unhealthy-stalled


def health_values(health: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The summary's `health` (the verdict) and, for a flagged run, `health_epoch` and `health_reason`."""
    if not health:
        return {}
    out = {KEYS("summary", "health"): health["verdict"]}
    if health["verdict"] != "ok":
        out.update(health_epoch=health.get("epoch"), health_reason=health.get("reason"))
    return out


def health_tags(health: Optional[Dict[str, Any]]) -> List[str]:
    return [HEALTH_TAG.format(verdict=health["verdict"])] if health and health["verdict"] != "ok" else []


def roadmap_step(step: str, ablation: Optional[str] = "none") -> str:
    """W&B group key of a step: '003-patchify_stem' (ablations: '016-separate_downsampling/02-no_patchify_stem');
    its alphabetical order is the roadmap's order."""
    key = f"{step_info(step)['index']:03d}-{step}"
    if ablation not in (None, "none"):
        key += f"/{ablation_info(ablation)['index']:02d}-{ablation}"
    return key


def paper_figures(cfg: DictConfig) -> Dict[str, float]:
    """The paper's top-1 and GFLOPs of the run's step preset (reference.yaml), for the unablated
    step presets that the paper reports (none for ablations or steps it does not list)."""
    if cfg.get("ablation") not in (None, "none"):
        return {}
    info = step_info(cfg.step)
    regime = (reference().get(info["roadmap"], {}).get("regimes", {}) or {}).get(cfg.regime.name, {}) or {}
    out = {"paper_top1": (regime.get("top1") or {}).get(cfg.step),
           "paper_gflops": (regime.get("gflops") or {}).get(cfg.step)}
    return {k: float(v) for k, v in out.items() if v is not None}


def run_identity(cfg: DictConfig) -> Dict[str, Any]:
    info = step_info(cfg.step)
    group = cfg.sweep_id or f"{cfg.data.name}-{cfg.scale.name}-{cfg.regime.name}"
    return {
        "project": cfg.logger.project, "entity": cfg.logger.entity, "group": cfg.logger.group or group,
        "name": f"{info['index']:02d}-{cfg.step}-s{cfg.seed}",
        "tags": [cfg.regime.name, cfg.step, cfg.scale.name, cfg.data.name, info["group"], *cfg.logger.tags],
        "job_type": "branch" if info["branch"] else "path",
    }


def wandb_run_id(run_dir: Path | str) -> str:
    """The W&B run id of a run directory (stable: a resumed run continues the same W&B run)."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def run_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """The W&B config of a run: its resolved config (a plain dict) plus `step_index` and
    `roadmap_step` (KEYS.config), the same for a live run (Tracker) and an imported kept run."""
    step = config["step"]
    return {**config, KEYS("config", "step_index"): step_info(step)["index"],
            KEYS("config", "roadmap_step"): roadmap_step(step, config.get("ablation"))}


def history_values(row: Dict[str, Any]) -> Dict[str, Any]:
    """The numbers of one epoch's row (history.csv's columns, `step_index`): what W&B logs per epoch."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float))}


def summary_values(metrics: Dict[str, Any], cfg: DictConfig) -> Dict[str, Any]:
    """A finished run's summary: its headline numbers (`KEYS.summary`, from metrics.json) and the
    paper's figures for its step preset."""
    values = {k: metrics[k] for k in SUMMARY_FROM_METRICS if metrics.get(k) is not None}
    return {**values, **health_values(metrics.get("health")), **paper_figures(cfg)}


def start_run(ident: Dict[str, Any], config: Dict[str, Any], run_id: str, mode: str, wdir: Path | str,
              **settings: Any) -> Any:
    """wandb.init of one roadmap run (project/entity/group/name/tags/job_type from `ident`, see
    run_identity), into `<wdir>/wandb/`; `resume='allow'`, so the same id continues the same run."""
    import wandb

    wdir = Path(wdir)
    wdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(project=ident["project"], entity=ident["entity"], group=ident["group"], name=ident["name"],
                      tags=ident["tags"], job_type=ident["job_type"], config=config, mode=mode, dir=str(wdir),
                      id=run_id, resume="allow", reinit="finish_previous",
                      settings=wandb.Settings(console="off", x_disable_stats=True, **settings))


class Tracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, enabled: bool = True):
        self.cfg, self.run_dir = cfg, run_dir
        self.enabled = enabled and cfg.logger.name == "wandb" and cfg.logger.mode != "disabled"
        self.run: Optional[Any] = None

    def start(self) -> None:
        if not self.enabled or self.run is not None:
            return
        self.run = start_run(run_identity(self.cfg), run_config(to_container(self.cfg)), wandb_run_id(self.run_dir),
                             self.cfg.logger.mode, self.cfg.logger.dir or self.run_dir)

    def log(self, row: Dict[str, Any], step: int) -> None:
        """One epoch (W&B's step), committed at once: the summary set after the last epoch is final."""
        if self.run is not None:
            self.run.log(history_values(row), step=step, commit=True)

    def summary(self, metrics: Dict[str, Any]) -> None:
        """The run's headline numbers (`KEYS.summary`) from its metrics, and the paper's figures."""
        if self.run is not None:
            self.run.summary.update(summary_values(metrics, self.cfg))

    def health(self, health: Any) -> None:
        """A run turned unhealthy (roadmap/health.py): its verdict in the summary and a tag, at once."""
        if self.run is not None:
            values = health.as_dict()
            self.run.summary.update(health_values(values))
            self.run.tags = tuple(dict.fromkeys([*(self.run.tags or ()), *health_tags(values)]))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as e:  # never hide the run's own outcome behind a logging failure
                log.warning("wandb.finish failed: %s", e)
            self.run = None


# ---------------------------------------------------------------------------------------------
# Reading offline runs back
# ---------------------------------------------------------------------------------------------
def offline_run_file(path: Path | str) -> Path:
    """The `run-*.wandb` file of an offline run directory (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if len(files) != 1:
            raise FileNotFoundError(f"{path} holds {len(files)} run-*.wandb files; expected one")
        path = files[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def _leet_inspect(path: Path, *flags: str, timeout: float = 120) -> str:
    """`wandb leet inspect <flags> <file>`: W&B's own reader of a run's .wandb transaction log
    (run by wandb-core). Always offline: WANDB_MODE=offline makes it skip its telemetry upload."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(path)],
                         env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {path} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return out.stdout


def read_offline_run(path: Path | str, history: bool = False) -> Dict[str, Any]:
    """What an offline W&B run (`wandb/offline-run-*/` or its `run-*.wandb`) holds, read with W&B's
    own reader, `wandb leet inspect --summary --json` (wandb >= 0.2x; wandb-core decodes the record
    log): {'config': nested dict, 'summary': nested dict, 'run': {run_id, project, entity, name,
    state, exit_code, tags}} and, with `history=True`, 'history': one dict per logged step (the
    `history` records of `wandb leet inspect --json`) and the run's group, job_type and display_name.

    wandb 0.31 has no Python reader of these files any more (`wandb.sdk.internal.datastore` is
    gone; `wandb sync` hands the file to wandb-core), so the CLI is the API."""
    file = offline_run_file(path)
    data = json.loads(_leet_inspect(file, "--summary", "--json"))
    out: Dict[str, Any] = {
        "config": {k: v for k, v in (data.get("config") or {}).items()},
        "summary": data.get("summary") or {},
        "run": {k: data.get(k) for k in ("run_id", "project", "entity", "name", "state", "exit_code", "tags")},
    }
    if history:
        rows: List[Dict[str, Any]] = []
        for line in _leet_inspect(file, "--json").splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get("type") == "history":
                rows.append(record["history"].get("item") or {})
            elif record.get("type") == "run":
                run = record["run"]
                out["run"].update({k: run[k] for k in ("job_type", "display_name") if run.get(k)})
                if run.get("run_group"):
                    out["run"]["group"] = run["run_group"]
        out["history"] = rows
    return out


def flat_keys(d: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted paths of a nested dict's leaves (and of its dict nodes): {'model': {'act': 1}} ->
    ['model', 'model.act']."""
    keys = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        keys.append(key)
        if isinstance(v, dict):
            keys += flat_keys(v, key + ".")
    return keys
