"""Where reports go and results that accumulate.

A report's default folder is `<results_dir>/<study>/`, the study named `<dataset>-<scale>` with a
suffix for other roadmaps, ablations, branch-only sweeps and other regimes (so they never overwrite
the main trajectory). With `keep_runs=true` every finished run also copies its small text files
(metrics.json, history.csv, config.yaml; never checkpoints) into

    <results_dir>/<study>/runs/<step>/seed<k>[,<variant overrides>]/

so `python -m roadmap.report <results_dir>/<study>` rebuilds the whole report from those folders
alone, and seeds run later on any machine add up. The copy is made by :func:`keep_run`, called
once per finished run by the Hydra callback `KeepRunCallback.on_job_end` (every launcher runs a
job through hydra.core.utils.run_job, which calls it in the job's own process).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from ..files import atomic_write_bytes, read_json
from ..steps import step_info
from .paper import DEFAULT_REGIME, MAIN_ROADMAP, get

log = logging.getLogger("roadmap")

PathLike = Union[str, Path]
KEPT_FILES = ("metrics.json", "history.csv", "config.yaml")
RUNS_DIR = "runs"


def study_experiments() -> List[str]:
    """The experiment names whose runs join the study their steps name: a plain run (`adhoc`) and the
    built-in experiments (conf/experiment/*.yaml, each setting experiment_name to its file name)."""
    conf = Path(__file__).resolve().parent.parent / "conf" / "experiment"
    return ["adhoc"] + sorted(p.stem for p in conf.glob("*.yaml"))


def study_name(dataset: str, scale: str, regime: Optional[str], roadmaps: Iterable[str],
               ablation_mode: bool = False, branches_only: bool = False, experiment: Optional[str] = None) -> str:
    """`<dataset>-<scale>` for the ConvNeXt trajectory; `-ablation`, `-convnext_to_<roadmap>`,
    `-kernel_branches` and `-<regime>` (other than resnet50) suffixes for the others; a sweep given
    its own `experiment_name` (an lr grid, a seed check: not a built-in experiment) gets
    `-<experiment_name>` last, so its runs never mix with, or replace, the study's."""
    name = f"{dataset}-{scale}"
    others = [r for r in roadmaps if r != MAIN_ROADMAP]
    if ablation_mode:
        name += "-ablation"
    elif others:
        name += "-" + "-".join(f"convnext_to_{r}" for r in others)
    elif branches_only:
        name += "-kernel_branches"
    if regime and regime != DEFAULT_REGIME:
        name += f"-{regime}"
    if experiment and experiment not in study_experiments():
        name += f"-{experiment}"
    return name


def report_name(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    """The study name of a report's rows (see `study_name`)."""
    return study_name(meta["dataset"], meta["scale"], meta["regime"], meta["roadmaps"], meta["ablation_mode"],
                      bool(rows) and all(r["branch"] for r in rows), meta.get("experiment"))


def default_out_dir(rows: List[Dict[str, Any]], meta: Dict[str, Any], results_dir: PathLike = "results") -> Path:
    return Path(results_dir) / report_name(rows, meta)


def run_study(config: Dict[str, Any], plan: Optional[Dict[str, Any]] = None) -> str:
    """The study a run belongs to: the name its sweep's report gets by default. `config` is the
    run's resolved config; `plan` the sweep's (collect.sweep_plan), None for a single run."""
    plan = plan or {}
    steps = plan.get("steps") or [config.get("step")]
    ablations = plan.get("ablations") or []
    ablation_mode = config.get("ablation") not in (None, "none") or any(a != "none" for a in ablations)
    infos = [step_info(s) for s in steps if s]
    roadmaps = list(dict.fromkeys(i["roadmap"] for i in infos))
    return study_name(get(config, "data.name") or "unknown", get(config, "scale.name") or "unknown",
                      get(config, "regime.name"), roadmaps, ablation_mode,
                      bool(infos) and not ablation_mode and all(i["branch"] for i in infos),
                      config.get("experiment_name"))


def _sweep_id(metrics_json: Path) -> Optional[str]:
    try:
        return (read_json(metrics_json).get("config") or {}).get("sweep_id")
    except Exception:  # an unreadable copy is replaced
        return None


def is_study(folder: PathLike) -> bool:
    """A results study folder: it holds `runs/` (kept runs), from which its report is rebuilt."""
    return (Path(folder) / RUNS_DIR).is_dir()


def keep_run(run_dir: PathLike, study_dir: PathLike, step: Optional[str] = None) -> Optional[Path]:
    """Copy a finished run's metrics.json, history.csv and config.yaml (never checkpoints) into
    `<study_dir>/runs/<step>/<run dir name>/`, each file atomically. Returns that folder, or None
    when the run has not finished (no metrics.json), or when the study already keeps a run of that
    name from another sweep (a warning says so; that run is not replaced)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        return None
    dest = Path(study_dir) / RUNS_DIR / (step or run_dir.parent.name) / run_dir.name
    if (dest / "metrics.json").is_file():
        old, new = (_sweep_id(dest / "metrics.json"), _sweep_id(run_dir / "metrics.json"))
        if old and new and old != new:
            log.warning("keep_runs: not replacing %s (kept from sweep %s) with %s (sweep %s): the same step and seed "
                        "from another sweep; move one of them away to keep the other", dest, old, run_dir, new)
            return None
    for name in KEPT_FILES:
        if (run_dir / name).is_file():
            atomic_write_bytes(dest / name, (run_dir / name).read_bytes())
    return dest
