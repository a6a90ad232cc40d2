"""The W&B summary run of a report (job_type 'report', the sweep's project and group): the
trajectory as a wandb.Table, a bar chart, the figures as images and the scores in its summary.
Offline by default: no network or API key needed (`wandb sync` later)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from omegaconf import OmegaConf

from .paper import get
from .render import FIELDS, _r

PathLike = Union[str, Path]


def summary_scalars(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The scores of summary.json as flat W&B summary keys (None values left out)."""
    flat: Dict[str, Any] = {"runs_" + k: v for k, v in summary["runs"].items()}
    if summary["kind"] == "trajectory":
        g, a, bs = summary["gain"], summary.get("architecture_gain") or {}, summary.get("big_steps") or {}
        flat.update({"gain": g.get("ours"), "gain_se": g.get("ours_se"), "paper_gain": g.get("paper"),
                     "arch_gain": a.get("ours"), "arch_gain_se": a.get("ours_se"), "paper_arch_gain": a.get("paper"),
                     "big_steps_agree": bs.get("agree"), "big_steps_measured": bs.get("measured"),
                     "big_steps_of": bs.get("of"), "big_steps_agree_beyond_2se": bs.get("agree_beyond_2se"),
                     "big_steps_disagree_beyond_2se": bs.get("disagree_beyond_2se"),
                     "sign_agree": summary["sign_agreement"]["agree"], "sign_of": summary["sign_agreement"]["of"],
                     "spearman_rho": summary["spearman"]["rho"], "spearman_n": summary["spearman"]["n"]})
        for s in bs.get("steps", []):
            flat.update({f"big/{s['step']}/delta": s["ours"], f"big/{s['step']}/se": s["se"],
                         f"big/{s['step']}/paper_delta": s["paper_delta"]})
    return {k: v for k, v in flat.items() if v is not None}


def report_run_id(meta: Dict[str, Any]) -> str:
    """The W&B id of a report's own run: from the study's name for a results study (the same on
    every machine), else from the first sweep directory's path."""
    key = f"study:{meta['study']}" if meta.get("study") else str(Path(meta["sweep_dirs"][0]).resolve())
    return "report-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def log_wandb(rows: List[Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any], out_dir: Path,
              mode: str = "offline", wandb_dir: Optional[PathLike] = None,
              figures: Sequence[str] = ("trajectory",)) -> Optional[str]:
    """One summary run: the trajectory table, a bar chart, every figure of `figures` (png in
    out_dir) as an image, the scores in the summary. Returns the run's local directory (older
    offline copies of the same report run there are removed: each holds the whole table). Its W&B
    group is the study's name for a results study (`meta['study']`, the group its imported runs
    get), else the sweep's (run_identity)."""
    if mode == "disabled":
        return None
    from ..tracking import run_identity, start_run

    cfg = dict(meta.get("config") or {})
    try:
        ident = run_identity(OmegaConf.create({**cfg, "step": cfg.get("step") or rows[0]["step"]}))
        project, entity, group = ident["project"], ident["entity"], ident["group"]
        wdir = get(cfg, "logger.dir")
    except Exception:
        project, entity, wdir = "roadmap", None, None
        group = meta["sweep_ids"][0] if meta["sweep_ids"] else f"{meta['dataset']}-{meta['scale']}-{meta['regime']}"
    group = meta.get("study") or group
    wdir = Path(wandb_dir or wdir or meta["sweep_dirs"][0])
    run_id = report_run_id(meta)
    ident = {"project": project, "entity": entity, "group": group, "name": f"report-{group}", "job_type": "report",
             "tags": [meta["regime"], meta["scale"], meta["dataset"], "report"]}
    config = {"sweep_dirs": meta["sweep_dirs"], "dataset": meta["dataset"], "scale": meta["scale"],
              "regime": meta["regime"], "seeds": meta["seeds"], "results": str(out_dir),
              "metric": meta.get("metric", "last")}
    run = start_run(ident, config, run_id, mode, wdir)
    try:
        _log_report(run, rows, summary, out_dir, figures)
        where = Path(run.dir).parent
    finally:
        run.finish()
    for old in (wdir / "wandb").glob(f"offline-run-*-{run_id}"):  # each report run holds the whole table
        if old.is_dir() and old.resolve() != where.resolve():
            shutil.rmtree(old)
    return str(where)


def _log_report(run: Any, rows: List[Dict[str, Any]], summary: Dict[str, Any], out_dir: Path,
                figures: Sequence[str]) -> None:
    import wandb

    cols = list(FIELDS)
    data = [[_r(r.get(c)) for c in cols] for r in rows]
    table = wandb.Table(columns=cols, data=data, allow_mixed_types=True)
    done = [r for r in rows if r["top1_mean"] is not None]
    bars = wandb.Table(columns=["step", "top1_mean", "paper_top1"],
                       data=[[f"{r['order']:02d} {r['label']}", r["top1_mean"], r["paper_top1"]] for r in done],
                       allow_mixed_types=True)
    logged: Dict[str, Any] = {
        "trajectory": table,
        "trajectory_top1": wandb.plot.bar(bars, "step", "top1_mean", title="top-1 per step (ours, mean over seeds)")}
    for stem in figures:
        if (out_dir / f"{stem}.png").exists():
            logged[f"{stem}_chart"] = wandb.Image(str(out_dir / f"{stem}.png"))
    run.log(logged)
    run.summary.update(summary_scalars(summary))
