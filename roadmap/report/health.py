"""python -m roadmap.report.health: the health verdict of every run under some folders (docs/health.md).

    python -m roadmap.report.health results/                     # every run of every committed study
    python -m roadmap.report.health results/<study> --flagged      # only the flagged runs
    python -m roadmap.report.health results/ --labels docs/health-labels.csv   # + the confusion table

A run's verdict is the one it recorded (metrics.json / failed.json `health`), else the rule of
roadmap/health.py applied to its history.csv now, with the thresholds its config recorded (the
defaults where it recorded none). `--labels`: a CSV of runs labelled by hand (columns run, label,
why; `run` as this command prints it, `label` ok or unhealthy): the rule's verdicts against those
labels, as the confusion table in docs/health.md (runs the CSV does not list are left out of it).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..files import markdown_table, read_csv
from ..health import VERDICTS
from .collect import collect_runs, display_path
from .results import RUNS_DIR, is_study

PathLike = Union[str, Path]


def studies_under(root: PathLike) -> List[Path]:
    """The results studies in a folder of studies (results/), in name order; a folder in it that is not a
    study but holds studies (results/peer-check/timm-registry, ...) counts with its studies."""
    out = []
    for p in sorted(q for q in Path(root).iterdir() if q.is_dir()):
        out += [p] if is_study(p) else sorted(q for q in p.iterdir() if q.is_dir() and is_study(q))
    return out


def is_results_root(folder: PathLike) -> bool:
    """A folder of results studies (results/): not a study itself, and at least one study in it."""
    return Path(folder).is_dir() and not is_study(folder) and bool(studies_under(folder))


def run_name(rec: Dict[str, Any]) -> str:
    """`<study>/<step>/<run dir>` for a kept run (results/<study>/runs/<step>/<seed...>), else its path."""
    p = Path(rec["run_dir"])
    if p.parent.parent.name == RUNS_DIR:
        return f"{p.parent.parent.parent.name}/{p.parent.name}/{p.name}"
    return display_path(p)


def verdicts(folders: Sequence[PathLike]) -> List[Dict[str, Any]]:
    """One row per run under the folders (a folder of studies counts as all of its studies)."""
    out = []
    for folder in folders:
        for study in (studies_under(folder) if is_results_root(folder) else [Path(folder)]):
            for rec in collect_runs(study):
                h = rec.get("health") or {}
                out.append({"run": run_name(rec), "status": rec["status"], "top1": rec.get("top1"),
                            "verdict": h.get("verdict", "ok"), "epoch": h.get("epoch"), "reason": h.get("reason", "")})
    return out


def flagged_lines(root: PathLike) -> List[str]:
    """For `python -m roadmap.report results/`: per study its run count and every flagged run."""
    lines = []
    for study in studies_under(root):
        runs = verdicts([study])
        bad = [r for r in runs if r["verdict"] != "ok"]
        lines.append(f"{study.relative_to(root)}: {len(runs)} runs, {len(bad)} flagged" + (":" if bad else ""))
        lines += [f"  {r['run']}: {r['verdict']} at epoch {r['epoch']} ({r['status']}, top-1 "
                  f"{'—' if r['top1'] is None else format(r['top1'], '.2f')}): {r['reason']}" for r in bad]
    return lines


def labels_of(labels_csv: PathLike) -> Dict[str, str]:
    """run -> label (ok or unhealthy) of a CSV of runs labelled by hand."""
    labels = {r["run"]: r["label"] for r in read_csv(labels_csv)}
    bad = sorted({v for v in labels.values()} - {"ok", "unhealthy"})
    if bad:
        raise ValueError(f"{labels_csv}: label {bad[0]!r}; allowed: ok, unhealthy")
    return labels


def confusion(rows: List[Dict[str, Any]], labels_csv: PathLike) -> str:
    """The rule's verdicts against labels by hand, over the runs the CSV labels, as Markdown."""
    labels = labels_of(labels_csv)
    unknown = sorted(set(labels) - {r["run"] for r in rows})
    if unknown:
        raise ValueError(f"{labels_csv} labels runs that are not there: {', '.join(unknown[:3])}")
    table = Counter((labels[r["run"]], r["verdict"]) for r in rows if r["run"] in labels)
    cols = [v for v in VERDICTS if any(k[1] == v for k in table)]
    body = [{"label": f"by hand: {lab}", **{v: table.get((lab, v), 0) for v in cols},
             "n": sum(table.get((lab, v), 0) for v in cols)} for lab in ("ok", "unhealthy")]
    return markdown_table(body, ["label", *cols, "n"], ["", *[f"rule: {v}" for v in cols], "runs"],
                          align="l" + "r" * (len(cols) + 1))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report.health", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="run directories, sweeps, results studies, or results/ (all studies)")
    p.add_argument("--flagged", action="store_true", help="only the runs the rule flags")
    p.add_argument("--labels", default=None, help="CSV of runs labelled by hand: print the confusion table")
    args = p.parse_args(argv)
    missing = [f for f in args.folders if not Path(f).is_dir()]
    if missing:
        print(f"error: {missing[0]} is not a folder", file=sys.stderr)
        return 2
    rows = verdicts(args.folders)
    shown = [r for r in rows if r["verdict"] != "ok"] if args.flagged else rows
    for r in shown:
        top1 = "—" if r["top1"] is None else f"{r['top1']:.2f}"
        where = f" at epoch {r['epoch']}" if r["epoch"] else ""
        print(f"{r['verdict']:<9} {r['run']}  ({r['status']}, top-1 {top1}){where}" +
              (f": {r['reason']}" if r["verdict"] != "ok" else ""))
    counts = Counter(r["verdict"] for r in rows)
    print(f"{len(rows)} runs: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]))
    if args.labels:
        try:
            print(confusion(rows, args.labels))
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
