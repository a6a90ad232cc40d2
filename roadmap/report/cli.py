"""python -m roadmap.report: the command line of the report."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..files import read_json
from . import dashboard
from .build import WANDB_MODES, write_report
from .render import summary_lines
from .stats import METRICS

USAGE = """\
    python -m roadmap.report outputs/sweeps/roadmap_path-imagenette-proxy-resnet50
    python -m roadmap.report results/imagenette-proxy        # a results study: rebuilt from its runs/
    python -m roadmap.report results/                        # the folder of studies: every run the health rule flags
    python -m roadmap.report <dir> [<dir> ...] [--out DIR] [--metric last|best] [--wandb offline|online|disabled]
    python -m roadmap.report <dir> --wandb-dashboard [--publish]   # + the W&B report and workspace
    python -m roadmap.report results/<study> --out DIR --wandb-import --wandb-dashboard   # kept runs -> W&B runs
"""


def _list_flagged(root: str) -> int:
    """A folder of results studies (results/): one report per study would mix scales, so this lists, per
    study, every run the health rule flags (docs/health.md); each study's report is rebuilt on its own."""
    from .health import flagged_lines, studies_under

    print(f"{root}: a folder of {len(studies_under(root))} results studies; the runs the health rule flags "
          f"(docs/health.md):")
    for line in flagged_lines(root):
        print(line)
    print(f"every run's verdict: python -m roadmap.report.health {root}; a study's report: "
          f"python -m roadmap.report {root.rstrip('/')}/<study>")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report", epilog=USAGE,
                                description="The trajectory report of a sweep: our per-step accuracy beside the "
                                            "paper's (Figure 2 / Table 10), the scores, learning curves and cost.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", nargs="+", help="sweep directory (outputs/sweeps/<sweep id>) or results study "
                                                "(results/<study>, holding runs/); several are merged")
    p.add_argument("--out", default=None, help="output directory (default: a results study itself, else "
                                               "<results-dir>/<dataset>-<scale>[-suffix])")
    p.add_argument("--results-dir", default=None, help="parent of the default output directory "
                                                       "(default: the sweep's results_dir, else 'results')")
    p.add_argument("--metric", default="last", choices=METRICS,
                   help="which top-1 of a run: the last epoch's (default; the best of several evaluations is "
                        "biased upward) or the best evaluated epoch's (what the official ConvNeXt code reports)")
    p.add_argument("--wandb", default="offline", choices=WANDB_MODES,
                   help="log a summary run to W&B (default: offline, no network or API key needed)")
    p.add_argument("--wandb-dashboard", action="store_true",
                   help="also build a W&B report + workspace view of the sweep offline (dashboard.json) "
                        "and print the commands that publish it")
    p.add_argument("--wandb-import", action="store_true",
                   help="a results study: turn each kept run (metrics.json, history.csv, config.yaml) into a W&B "
                        "run in <out>/wandb/ (offline unless --wandb online; W&B group: the study's name; "
                        "importing again makes no duplicate)")
    p.add_argument("--publish", action="store_true",
                   help="with --wandb-dashboard: save the report and the workspace to W&B and print their URLs "
                        "(needs the network and an API key; `wandb sync` the runs first)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .health import is_results_root

    if len(args.sweep_dir) == 1 and is_results_root(args.sweep_dir[0]) and args.out is None:
        return _list_flagged(args.sweep_dir[0])
    command = "python -m roadmap.report " + " ".join(sys.argv[1:] if argv is None else argv)
    problem = dashboard.publish_problem(probe=True) if args.publish else None
    if args.wandb_import and args.wandb == "online" and not problem:
        problem = dashboard.publish_problem(probe=True)
        problem = problem and problem.replace("--publish", "--wandb-import --wandb online", 1)
    if problem:  # before any work: one line (offline, no API key, no server)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        out = write_report(args.sweep_dir, args.out, args.wandb, args.results_dir, command=command, metric=args.metric,
                           dashboard=args.wandb_dashboard, publish=args.publish, wandb_import=args.wandb_import)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except dashboard.PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = read_json(out / "summary.json")
    print(f"report: {out}/trajectory.md (.csv, {', '.join(summary.get('figures', []))} + .svg, summary.json)")
    for line in summary_lines(summary):
        print(line.replace("**", ""))
    return 0
