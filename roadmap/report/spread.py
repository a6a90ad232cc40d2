"""Does a rerun with a new seed land in a study's spread?

    python -m roadmap.report.spread results/imagenette-proxy64 outputs/sweeps/<sweep>/baseline/seed3 [...]
    python -m roadmap.report.spread results/imagenette-proxy64 outputs/sweeps/<sweep>      # every run under it

For every finished run given (a run directory, or a sweep/study holding several), the study's row of
the same step (and ablation, same metric) gives the 95 % prediction interval for one more seed,
mean ± t(0.975, n-1) · std · sqrt(1 + 1/n) over the study's seeds (stats.prediction_interval; the
"new seed, 95 %" column of trajectory.md). The run must use a seed the study did not, and the same
resolved config as the study's runs of that step in every key that can change a result (model, recipe,
data, scale, regime, ablation: all but the seed and where/how the run is stored, logged or threaded);
otherwise it is refused in one line naming the first key that differs.

Prints one line per run; exit status 0 when every run lands inside its interval, 1 when one does
not (it should happen 1 time in 20 by chance), 2 for a bad argument.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..config import LEGACY
from ..ridealong import flatten
from .collect import collect, find_run_dirs, read_run
from .stats import METRICS, PI_FORMULA, PI_LEVEL

# the run settings a new seed must share with the study (read from the runs' metrics.json; runs that
# kept no config are compared on these alone)
SAME = ("dataset", "scale", "img_size", "width_mult", "epochs", "regime")
# resolved-config keys (prefixes) that cannot change a run's result: the seed itself, where the run and
# its data live, logging, bookkeeping, thread and worker counts, the checkpoint timer
NOT_SETTINGS = ("seed", "logger.", "out_dir", "results_dir", "experiment_name", "sweep_id", "keep_runs",
                "data.root", "data.cache", "scale.threads", "scale.workers", "scale.checkpoint_every_min")

# settings that only act when another one has a given value (e.g. step-decay milestones under a cosine schedule)
ACTS_ONLY_IF = {"recipe.decay_milestones": ("recipe.sched", "step"), "recipe.decay_rate": ("recipe.sched", "step"),
                "recipe.ema_decay": ("recipe.ema", True)}


def setting_differences(study_config: Dict[str, Any], run_config: Dict[str, Any]) -> List[str]:
    """`key=<run's> but the study's runs have key=<study's>` for every setting both configs record and
    that differs. A key added after older runs were recorded counts with its LEGACY value (the value
    that reproduces the code before it); any other key only one of them has is not compared."""
    a = {**LEGACY, **flatten(study_config)} if study_config else {}
    b = {**LEGACY, **flatten(run_config)} if run_config else {}

    def acts(k: str) -> bool:
        key, value = ACTS_ONLY_IF.get(k, (None, None))
        return key is None or a.get(key) == value or b.get(key) == value

    keys = [k for k in a if k in b and a[k] != b[k] and not k.startswith(NOT_SETTINGS) and acts(k)]
    return [f"{k}={b[k]!r} but the study's runs have {k}={a[k]!r}" for k in keys]


def _runs_of(path: Path) -> List[Dict[str, Any]]:
    dirs = [path] if (path / "metrics.json").exists() or (path / "config.yaml").exists() else find_run_dirs(path)
    if not dirs:
        raise FileNotFoundError(f"{path} holds no run directory")
    return [read_run(d) for d in dirs]


def check(study: Path, run: Dict[str, Any], rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One run against the study's row of its step: {'step', 'seed', 'top1', 'low', 'high', 'inside', ...}."""
    name = f"{run['step']}" + (f" (ablation {run['ablation']})" if run.get("ablation") not in (None, "none") else "")
    if run["status"] != "finished":
        raise ValueError(f"{run['run_dir']}: the run is {run['status']}, not finished")
    row = next((r for r in rows if r["step"] == run["step"] and r["ablation"] == (run.get("ablation") or "none")
                and not r["variant"]), None)
    if row is None or not row["runs"]:
        raise ValueError(f"{run['run_dir']}: step {name} is not in {study}")
    ref = next(r for r in row["runs"] if r["status"] == "finished") if row["n"] else row["runs"][0]
    for k in SAME:
        if ref.get(k) is not None and run.get(k) is not None and ref.get(k) != run.get(k):
            raise ValueError(f"{run['run_dir']}: {k}={run.get(k)!r} but the study's runs have {k}={ref.get(k)!r}")
    differs = setting_differences(ref.get("config") or {}, run.get("config") or {})
    if differs:
        more = f" (and {len(differs) - 1} more)" if len(differs) > 1 else ""
        raise ValueError(f"{run['run_dir']}: {differs[0]}{more}; a rerun changes the seed only")
    if run["seed"] in row["by_seed"]:
        raise ValueError(f"{run['run_dir']}: seed {run['seed']} is one of the study's seeds for {name} "
                         f"({row['seeds']}); rerun with another seed")
    if row["top1_pi_low"] is None:
        raise ValueError(f"{run['run_dir']}: {study} has {row['n']} finished seed(s) of {name}; the range needs 2")
    top1 = float(run[f"top1_{row['metric']}"])
    return {"step": name, "seed": run["seed"], "top1": top1, "low": row["top1_pi_low"], "high": row["top1_pi_high"],
            "mean": row["top1_mean"], "std": row["top1_std"], "n": row["n"], "seeds": row["seeds"],
            "inside": row["top1_pi_low"] <= top1 <= row["top1_pi_high"], "run_dir": run["run_dir"]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report.spread", description=__doc__.split("\n\n")[0],
                                epilog=f"interval: {PI_FORMULA}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="the study (results/<study> or a sweep directory)")
    p.add_argument("runs", nargs="+", help="run directories with a new seed, or directories holding them")
    p.add_argument("--metric", default="last", choices=METRICS, help="which top-1 of a run (as the report)")
    args = p.parse_args(argv)
    study = Path(args.study)
    try:
        rows = collect(study, args.metric)
        results = [check(study, run, rows) for path in args.runs for run in _runs_of(Path(path))]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r['step']} seed {r['seed']}: top-1 {r['top1']:.2f} is {'inside' if r['inside'] else 'OUTSIDE'} "
              f"the {PI_LEVEL * 100:.0f} % range for a new seed, {r['low']:.2f} – {r['high']:.2f} "
              f"(study: {r['mean']:.2f} ± {r['std']:.2f} over seeds {r['seeds']})")
    outside = sum(not r["inside"] for r in results)
    print(f"{len(results) - outside} of {len(results)} inside ({args.metric} top-1; {PI_FORMULA})")
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
