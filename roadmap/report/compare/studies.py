"""A spec's studies read from run directories: each study's top-1 by step and seed, gathered from its
sources with their filters; the refusals (one run reached from two sources, a run that contradicts an
expectation); and what the kept runs cost against the spec's cap.

A source folder that does not exist yet gives no runs (its study reads "not run"); nothing is guessed.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ...config import LEGACY, effective_init
from ...files import read_json
from ..collect import display_path, read_run
from ..paper import get
from .spec import Cap, Source, Spec, Study

RUN_DIR = re.compile(r"^seed(-?\d+)(?:,(.*))?$")
_MISSING = object()


class Refused(ValueError):
    """The runs a spec names contradict it (a duplicate, an expectation). One line for the user."""


def _runs_root(results: Path, source: Source) -> Path:
    base = results / source.dir
    return base / "runs" if (base / "runs").is_dir() else base


def _candidates(results: Path, source: Source, study: Study) -> Iterator[Tuple[Path, int]]:
    """Run folders `<step>/seed<k>[,<variant>]` of a source that pass its and its study's filters."""
    root = _runs_root(results, source)
    if not root.is_dir():
        return
    steps = [s for s in (source.steps or study.steps or []) if not study.steps or s in study.steps]
    seeds = [k for k in study.seeds if source.seeds is None or k in source.seeds]
    for step_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if (source.steps or study.steps) and step_dir.name not in steps:
            continue
        for run_dir in sorted(p for p in step_dir.iterdir() if p.is_dir()):
            m = RUN_DIR.match(run_dir.name)
            if not m or int(m.group(1)) not in seeds:
                continue
            if source.variant is not None and (m.group(2) or "") != source.variant:
                continue
            yield run_dir, int(m.group(1))


def config_value(config: Dict[str, Any], key: str) -> Any:
    """A run's value of a dotted config key (a key older runs lack: its LEGACY value), or `effective_init`:
    what the run's model.init resolved to (roadmap.config.effective_init)."""
    if key == "effective_init":
        model = config.get("model") or {}
        if "init" not in model or "norm_type" not in model:
            return _MISSING
        return effective_init(SimpleNamespace(init=model["init"], norm_type=model["norm_type"]))
    value = get(config, key, _MISSING)
    return LEGACY.get(key, _MISSING) if value is _MISSING else value


def _check_expect(study: Study, source: Source, rec: Dict[str, Any]) -> None:
    for key, want in {**study.expect, **source.expect}.items():
        have = config_value(rec.get("config") or {}, key)
        where = f"studies.{study.name}: {display_path(rec['run_dir'])}"
        if have is _MISSING:
            raise Refused(f"{where}: its config records no {key}, so expect {key}={want!r} cannot be checked")
        if have != want:
            raise Refused(f"{where}: {key} is {have!r}, but the study expects {want!r}")


def _in_window(rec: Dict[str, Any], after: Optional[str], before: Optional[str]) -> bool:
    if after is None and before is None:
        return True
    stamp = rec.get("finished_at")
    return stamp is not None and (after is None or str(stamp) >= after) and (before is None or str(stamp) < before)


def read_study(results: Path, study: Study, metric: str) -> Dict[str, Any]:
    """One study: top-1 by step and seed (finished runs), failed seeds by step, what each source gave."""
    top1: Dict[str, Dict[int, float]] = {}
    failed: Dict[str, List[int]] = {}
    seen: Dict[Tuple[str, int], str] = {}
    sources = []
    for source in study.sources:
        n = 0
        for run_dir, seed in _candidates(results, source, study):
            rec = read_run(run_dir)
            if rec["status"] == "running" or not _in_window(rec, source.after, source.before):
                continue
            key = (rec["step"], seed)
            here = f"{source.dir}" + (f" ({run_dir.name})" if run_dir.name != f"seed{seed}" else "")
            if key in seen:
                raise Refused(f"studies.{study.name}: {rec['step']} seed {seed} comes from two runs, {seen[key]} and "
                              f"{here}; narrow a source (steps, variant, seeds)")
            seen[key] = here
            _check_expect(study, source, rec)
            n += 1
            if rec["status"] == "finished":
                top1.setdefault(rec["step"], {})[seed] = float(rec[f"top1_{metric}"])
            else:
                failed.setdefault(rec["step"], []).append(seed)
        sources.append({"dir": source.dir, "present": _runs_root(results, source).is_dir(), "runs": n})
    finished = sum(len(v) for v in top1.values())
    expected = len(study.steps) * len(study.seeds) if study.steps else None
    return {"label": study.label, "axes": study.axes, "seeds": study.seeds, "steps": study.steps,
            "sources": sources, "finished": finished, "failed_runs": sum(len(v) for v in failed.values()),
            "expected": expected, "top1": top1, "failed": failed}


def read_studies(spec: Spec, results: Path) -> Dict[str, Dict[str, Any]]:
    """Every study of the spec, in its order (Refused on the first contradiction)."""
    return {name: read_study(results, study, spec.metric) for name, study in spec.studies.items()}


def cost(results: Path, cap: Cap) -> Dict[str, Any]:
    """What the kept runs in the cap's folders cost: finished runs and their summed wall time (all
    attempts) per study folder; the cap used is that sum over the lanes, in minutes."""
    per: Dict[str, Dict[str, float]] = {}
    seen = set()
    for pattern in cap.folders:
        for f in sorted(results.glob(f"{pattern}/runs/*/*/metrics.json")):
            if f in seen:
                continue
            seen.add(f)
            try:
                m = read_json(f)
            except (OSError, ValueError):
                continue  # not finished as far as anyone can read
            if not _in_window(m, cap.after, cap.before):
                continue
            study = f.parents[3].name
            per.setdefault(study, {"runs": 0, "wall_s": 0.0})
            per[study]["runs"] += 1
            per[study]["wall_s"] += float(m.get("wall_seconds") or 0)
    total = sum(v["wall_s"] for v in per.values())
    return {"studies": per, "runs": sum(int(v["runs"]) for v in per.values()), "wall_s": total,
            "cap_used_min": total / cap.lanes / 60, "cap_min": cap.minutes, "lanes": cap.lanes}
