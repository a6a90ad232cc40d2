"""write_report: runs -> rows -> scores -> files (csv, md, figures, summary.json) -> W&B run."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..files import atomic_write_text, write_csv, write_json
from .collect import _as_list, collect_with_context, describe, display_path
from .paper import get
from .plots import plot_all
from .render import FIELDS, csv_rows, render_markdown
from .results import default_out_dir, is_study
from .stats import summarize
from .wandb_import import import_study
from .wandb_run import log_wandb

log = logging.getLogger("roadmap")

PathLike = Union[str, Path]
WANDB_MODES = ("offline", "online", "disabled")


def health_summary(context: Dict[str, Any]) -> Dict[str, Any]:
    """summary.json's `health`: the rule, the counts by verdict, and every flagged run (finished, stopped, failed)."""
    flagged = [r for r in context["runs"] if (r.get("health") or {}).get("verdict", "ok") != "ok"]
    counts: Dict[str, int] = {}
    for r in flagged:
        counts[r["health"]["verdict"]] = counts.get(r["health"]["verdict"], 0) + 1
    return {"rule": "docs/health.md (roadmap/health.py)", "flagged": len(flagged), "by_verdict": counts,
            "runs": [{"step": r["step"], "seed": r.get("seed"), "variant": r.get("variant") or "", "status": r["status"],
                      "top1": r.get("top1"), **r["health"], "run_dir": display_path(r["run_dir"])}
                     for r in sorted(flagged, key=lambda r: (r["step"], str(r.get("variant")), r.get("seed") or 0))]}


def _check_import(inputs: List[Path], wandb_mode: str) -> None:
    """--wandb-import needs one results study and W&B on (one-line errors, before any work)."""
    if len(inputs) != 1 or not is_study(inputs[0]):
        raise ValueError(f"--wandb-import imports the kept runs of one results study (a folder holding runs/, "
                         f"e.g. results/<study>); got {', '.join(map(str, inputs))}: give one study")
    if wandb_mode == "disabled":
        raise ValueError("--wandb-import needs W&B: --wandb offline (the default) or online, not disabled")


def _collect(inputs: List[Path], out_dir: Optional[PathLike], results_dir: Optional[PathLike],
             metric: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any], PathLike]:
    """The rows, their context and the output folder (see write_report)."""
    rows, context = collect_with_context(inputs, metric)
    if not rows:
        raise FileNotFoundError(f"no run directories (metrics.json / failed.json / last.pt) under "
                                f"{', '.join(map(str, context['sweep_dirs']))} and no multirun.yaml listing steps")
    if out_dir is not None:
        return rows, context, out_dir
    if len(inputs) == 1 and is_study(inputs[0]):
        return rows, context, inputs[0]
    meta = describe(rows, context)
    results_dir = results_dir or get(context["plan_config"], "results_dir") or \
        get(meta["config"], "results_dir") or "results"
    out_dir = default_out_dir(rows, meta, results_dir)
    if is_study(out_dir) and all(Path(out_dir).resolve() != d.resolve() for d in inputs):
        # the study's report covers every run kept in it, not only this sweep's
        log.info("report: %s holds kept runs; the report covers them and the sweep's", out_dir)
        rows, context = collect_with_context([*inputs, Path(out_dir)], metric)
    return rows, context, out_dir


def write_report(sweep_dir: Union[PathLike, Sequence[PathLike]], out_dir: Optional[PathLike] = None,
                 wandb_mode: str = "offline", results_dir: Optional[PathLike] = None, command: str = "",
                 wandb_dir: Optional[PathLike] = None, metric: str = "last", dashboard: bool = False,
                 publish: bool = False, wandb_import: bool = False) -> Path:
    """Collect a sweep (or several, or a results study), write trajectory.{csv,md,png,svg},
    learning_curves.{png,svg}, cost_accuracy.{png,svg} and summary.json; return the output dir.

    out_dir defaults to the study folder itself when `sweep_dir` is one results study (it holds
    `runs/`: the report is rebuilt in place), else to `<results_dir>/<dataset>-<scale>[-suffix]`
    (results_dir: the sweep's `results_dir` config key, else 'results'); when that default folder
    holds kept runs (`runs/`), they join the report, so a study's report always covers all of them
    (the same run kept and in the sweep counts once). metric: 'last' (the last epoch's top-1) or
    'best' (the best evaluated epoch's). `dashboard`: also build the W&B report and workspace of the
    sweep offline (dashboard.py: dashboard.json + the publish commands); `publish`: and save them.

    A results study's W&B runs (the report's own, and with `wandb_import` every kept run, see
    wandb_import.py; W&B group: the study's name) go to `<out_dir>/wandb/`: nothing is written
    outside the output folder. A sweep's report run goes to the sweep's (or logger.dir's) wandb/."""
    if wandb_mode not in WANDB_MODES:
        raise ValueError(f"wandb_mode={wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")
    inputs = _as_list(sweep_dir)
    study_input = len(inputs) == 1 and is_study(inputs[0])
    if wandb_import:
        _check_import(inputs, wandb_mode)
    rows, context, out_dir = _collect(inputs, out_dir, results_dir, metric)
    meta = describe(rows, context)
    summary = summarize(rows, context["regime"], metric)
    summary["health"] = health_summary(context)
    if context.get("rows_healthy") is not None:  # the second, labelled set: the same scores without the flagged runs
        summary["without_unhealthy"] = summarize(context["rows_healthy"], context["regime"], metric)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "trajectory.csv", csv_rows(rows), FIELDS)
    figures = plot_all(rows, meta, out_dir)
    atomic_write_text(out_dir / "trajectory.md", render_markdown(rows, summary, meta, command, figures))
    info = {k: meta[k] for k in ("dataset", "scale", "regime", "seeds", "sweep_dirs", "experiment", "generated")}
    info.update({"devices": dict(meta["devices"]), "wall_seconds": round(meta["wall_seconds"], 1),
                 "img_size": meta["img_size"], "width_mult": meta["width_mult"], "epochs": meta["epochs"]})
    write_json(out_dir / "summary.json", {**summary, "sweep": info, "figures": [f"{f}.png" for f in figures]})
    if study_input:
        meta["study"] = inputs[0].resolve().name
        wandb_dir = Path(wandb_dir or out_dir)  # <out>/wandb/: git ignores wandb/ folders
    if wandb_import:
        import_study(inputs[0], wandb_dir, wandb_mode)
    if wandb_mode != "disabled":
        try:
            where = log_wandb(rows, summary, meta, out_dir, wandb_mode, wandb_dir, figures)
            log.info("report: W&B %s run in %s", wandb_mode, where)
        except Exception as e:  # the files are written; W&B is a convenience
            log.warning("report: W&B logging failed (%s: %s); files are in %s", type(e).__name__, e, out_dir)
    if dashboard or publish:
        from .dashboard import write_dashboard

        write_dashboard(rows, summary, meta, out_dir, publish_now=publish,
                        wandb_dir=Path(wandb_dir) if wandb_dir is not None else None)
    return out_dir
