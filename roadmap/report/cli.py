"""python -m roadmap.report: the command line of the report."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..files import read_json
from .build import WANDB_MODES, write_report
from .render import summary_lines
from .stats import METRICS

USAGE = """\
    python -m roadmap.report outputs/sweeps/roadmap_path-imagenette-proxy-resnet50
    python -m roadmap.report results/imagenette-proxy        # a results study: rebuilt from its runs/
    python -m roadmap.report <dir> [<dir> ...] [--out DIR] [--metric last|best] [--wandb offline|online|disabled]
"""


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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m roadmap.report " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        out = write_report(args.sweep_dir, args.out, args.wandb, args.results_dir, command=command, metric=args.metric)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = read_json(out / "summary.json")
    print(f"report: {out}/trajectory.md (.csv, {', '.join(summary.get('figures', []))} + .svg, summary.json)")
    for line in summary_lines(summary):
        print(line.replace("**", ""))
    return 0
