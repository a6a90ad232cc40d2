"""Kept runs -> W&B runs: `python -m roadmap.report results/<study> --wandb-import`.

A results study holds only the small files of its runs (`runs/<step>/seed<k>[,…]/`: metrics.json,
history.csv, config.yaml; see results.keep_run), gathered from any number of machines. This turns
each finished kept run into a W&B run, offline by default (`<out>/wandb/offline-run-*`, uploaded
later by the `wandb sync` command that `--wandb-dashboard` prints), through the very calls a live
run logs with (roadmap.tracking: run_identity, run_config, history_values, summary_values,
start_run), so the dashboard's panels read imported and live runs alike:

    config   the run's resolved config (metrics.json's, = config.yaml) + step_index, roadmap_step
    history  one row per epoch of history.csv (its numbers + step_index), W&B's step = the epoch
    summary  metrics.json's headline numbers (KEYS.summary) and the paper's figures for the step

Its W&B group is the study's name (one group per study, whichever sweeps its runs came from),
and its id is derived from the kept run (study, step, run folder: seed and variant), so importing
again makes no new run: an unchanged kept run is skipped (`wandb/kept-runs.json` records what
each offline run was made from), a changed one replaces its offline run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from omegaconf import OmegaConf

from ..files import read_json, write_json
from ..steps import step_info
from ..tracking import health_tags, history_values, run_config, run_identity, start_run, summary_values
from .collect import _history, collect_runs, display_path
from .results import KEPT_FILES, RUNS_DIR, is_study

log = logging.getLogger("roadmap")

PathLike = Union[str, Path]
ID_PREFIX = "kept-"
MANIFEST = "kept-runs.json"  # in <wandb_dir>/wandb/: run id -> {mode: the kept files' fingerprint}
TAG = "kept-run"
# an imported run is not the current checkout's: no git state, code, requirements or machine info
SETTINGS = dict(disable_git=True, save_code=False, x_save_requirements=False, x_disable_meta=True,
                x_disable_machine_info=True)


@dataclasses.dataclass
class Imported:
    run_dir: Path                 # the kept run (results/<study>/runs/<step>/<name>)
    run_id: str
    status: str                   # 'new', 'updated' (the kept files changed) or 'unchanged'
    offline_dir: Optional[Path]   # its offline W&B run directory (None online)


def kept_run_id(study: str, step: str, name: str) -> str:
    """The W&B id of a kept run: 'kept-' + 12 hex digits of (study, step folder, run folder)."""
    return ID_PREFIX + hashlib.sha1(f"{study}/{step}/{name}".encode()).hexdigest()[:12]


def kept_id(run_dir: PathLike) -> Optional[str]:
    """The W&B id of a run directory kept in a study (`<study>/runs/<step>/<name>`), else None."""
    d = Path(run_dir).resolve()
    if d.parent.parent.name != RUNS_DIR:
        return None
    return kept_run_id(d.parent.parent.parent.name, d.parent.name, d.name)


def offline_dirs(wandb_dir: PathLike, run_id: str) -> List[Path]:
    """The offline W&B run directories of `run_id` under `<wandb_dir>/wandb/`, oldest first."""
    return sorted(p for p in (Path(wandb_dir) / "wandb").glob(f"offline-run-*-{run_id}") if p.is_dir())


def fingerprint(run_dir: PathLike) -> str:
    """sha1 of the kept files (metrics.json, history.csv, config.yaml), in that order."""
    h = hashlib.sha1()
    for name in KEPT_FILES:
        path = Path(run_dir) / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return h.hexdigest()


def _number(text: Any) -> Optional[Union[int, float]]:
    """A history.csv cell as the number the live run logged (int or float), None if empty/not one."""
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return None


def history_rows(run_dir: PathLike, step: str) -> List[Tuple[int, Dict[str, Any]]]:
    """(W&B step, the row it logs) per epoch of history.csv: the row's numbers and `step_index`,
    as Tracker.log logs them; the step is the epoch (the row's position where the column is unclean)."""
    rows = [{k: _number(v) for k, v in r.items()} for r in _history(Path(run_dir))]
    index = step_info(step)["index"]
    epochs = [r.get("epoch") for r in rows]
    clean = all(isinstance(e, int) and e > 0 for e in epochs) and epochs == sorted(set(epochs))
    return [(e if clean else i + 1, history_values({**r, "step_index": index}))
            for i, (e, r) in enumerate(zip(epochs, rows))]


def import_run(run: Dict[str, Any], study: str, wandb_dir: PathLike, mode: str = "offline") -> Optional[Path]:
    """One kept run (a collect.read_run record) as a W&B run in `<wandb_dir>/wandb/`; returns its
    offline run directory (None online)."""
    config = run["config"]
    cfg = OmegaConf.create(config)
    ident = {**run_identity(cfg), "group": study}
    ident["tags"] = [*ident["tags"], TAG, *health_tags(run.get("health"))]  # the verdict: collect.read_run
    wrun = start_run(ident, run_config(config), kept_id(run["run_dir"]), mode, wandb_dir, **SETTINGS)
    try:
        for step, row in history_rows(run["run_dir"], config["step"]):
            wrun.log(row, step=step, commit=True)
        wrun.summary.update(summary_values(run, cfg))
        where = Path(wrun.dir).parent
    finally:
        wrun.finish()
    return where if mode == "offline" else None


def _kept_runs(study_dir: Path) -> List[Dict[str, Any]]:
    if not is_study(study_dir):
        raise FileNotFoundError(f"{study_dir} holds no {RUNS_DIR}/ folder: --wandb-import imports the kept runs of "
                                "a results study (results/<study>, filled by keep_runs=true)")
    runs = [r for r in collect_runs(study_dir) if r["status"] == "finished" and kept_id(r["run_dir"])]
    for r in runs:
        if not r.get("config") or not r["config"].get("step"):
            raise ValueError(f"{r['run_dir']}/metrics.json has no config and config.yaml none either: "
                             "copy the run's config.yaml next to it, or move the run out of the study")
    if not runs:
        raise FileNotFoundError(f"{study_dir}/{RUNS_DIR} holds no finished run (metrics.json): nothing to import")
    return runs


def import_study(study_dir: PathLike, wandb_dir: PathLike, mode: str = "offline") -> List[Imported]:
    """Every finished kept run of a results study as a W&B run (see the module's docstring), in
    `<wandb_dir>/wandb/`; a run imported before from the same files is skipped, one whose files
    changed is imported again in place of its old offline run."""
    study_dir, wandb_dir = Path(study_dir), Path(wandb_dir)
    study = study_dir.resolve().name
    manifest_path = wandb_dir / "wandb" / MANIFEST
    manifest: Dict[str, Any] = read_json(manifest_path) if manifest_path.is_file() else {}
    done: List[Imported] = []
    for run in _kept_runs(study_dir):
        run_id, fp = kept_id(run["run_dir"]), fingerprint(run["run_dir"])
        entry = manifest.setdefault(run_id, {})
        old = offline_dirs(wandb_dir, run_id) if mode == "offline" else []
        if entry.get(mode) == fp and (old or mode != "offline"):
            done.append(Imported(Path(run["run_dir"]), run_id, "unchanged", old[-1] if old else None))
            continue
        for d in old:  # our own offline copy of an older version of this kept run
            shutil.rmtree(d)
        status = "updated" if entry.get(mode) else "new"
        where = import_run(run, study, wandb_dir, mode)
        done.append(Imported(Path(run["run_dir"]), run_id, status, where))
        entry.update({mode: fp, "kept_run": display_path(run["run_dir"])})
        write_json(manifest_path, manifest)  # after each run: an interrupted import goes on where it stopped
    counts = {s: sum(i.status == s for i in done) for s in ("new", "updated", "unchanged")}
    log.info("W&B import (%s): %d kept runs of %s -> %s (%s); W&B group %s", mode, len(done), study,
             display_path(wandb_dir / "wandb"), ", ".join(f"{n} {s}" for s, n in counts.items()), study)
    return done
