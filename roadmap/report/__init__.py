"""The trajectory report of a sweep: our per-step accuracy beside the paper's (Figure 2 / Table 10).

    python -m roadmap.report outputs/sweeps/roadmap_path-imagenette-proxy-resnet50
    python -m roadmap.report results/imagenette-proxy            # rebuilt from results/<study>/runs/
    python -m roadmap.report <dir> [<dir> ...] [--out results/<name>] [--metric last|best] [--wandb offline|online|disabled]
    python -m roadmap.report results/<study> --out DIR --wandb-import --wandb-dashboard   # the study in W&B

Also run at the end of every Hydra multirun by :class:`ReportCallback` (hydra.callbacks.report in
conf/config.yaml; `hydra.callbacks.report.enabled=false` or `$ROADMAP_REPORT=0` turns it off);
with `keep_runs=true`, :class:`KeepRunCallback` copies every finished run's small files into
`<results_dir>/<study>/runs/` so the report can be rebuilt from there alone.

The package's files are its seams:

    paper.py      reference.yaml: steps, Δ references, the paper's top-1/GFLOPs, the big steps
    collect.py    run directories -> run records -> one row per step; the sweep's description
    stats.py      means, std (ddof=1), the range for a new seed (t prediction interval), paired Δ and SE,
                  Spearman (scipy), summarize -> the scores
    render.py     trajectory.csv, trajectory.md, the CLI's summary lines
    plots.py      trajectory, learning_curves, cost_accuracy (.png and .svg)
    wandb_run.py  the W&B summary run (table, bar chart, figures, scores)
    wandb_import.py  a study's kept runs -> W&B runs (offline; config, per-epoch history, summary)
    dashboard.py  the W&B report and workspace view (wandb-workspaces; dashboard.json, --publish)
    results.py    study names / default out dir; keep_run -> results/<study>/runs/
    build.py      write_report (all of the above)
    callbacks.py  ReportCallback (end of a sweep), KeepRunCallback (end of every job)
    cli.py        python -m roadmap.report
    spread.py     python -m roadmap.report.spread: does a rerun with a new seed land in the study's spread?
    health.py     python -m roadmap.report.health: every run's health verdict (roadmap/health.py, docs/health.md)

Output files, in `<results_dir>/<dataset>-<scale>[-suffix]/` by default:

    trajectory.csv        one row per step, in roadmap order (machine-readable, full precision)
    trajectory.md         what was run (header), the scores, the table, the figures
    trajectory.png/.svg   Figure-2-style chart
    learning_curves.png/.svg   top-1 and training loss per epoch of every step
    cost_accuracy.png/.svg     GFLOPs at 224 px vs top-1, ours beside the paper's
    summary.json          the scores (see stats.py), the metric, the run counts
"""
from .build import write_report
from .callbacks import KeepRunCallback, ReportCallback
from .cli import main
from .collect import collect, collect_runs, collect_with_context, describe, find_run_dirs, read_run, sweep_plan
from .paper import BIG_STEP_MIN, architecture_start, big_steps, delta_reference, roadmap_steps
from .plots import plot_all, plot_cost_accuracy, plot_learning_curves, plot_trajectory
from .render import FIELDS, csv_rows, render_markdown, summary_lines
from .results import default_out_dir, keep_run, report_name, run_study, study_name
from .stats import METRICS, paired, spearman, summarize
from .wandb_import import import_study
from .wandb_run import log_wandb

__all__ = [
    "BIG_STEP_MIN", "FIELDS", "KeepRunCallback", "METRICS", "ReportCallback", "architecture_start", "big_steps",
    "collect", "collect_runs", "collect_with_context", "csv_rows", "default_out_dir", "delta_reference",
    "describe", "find_run_dirs", "import_study", "keep_run", "log_wandb", "main", "paired", "plot_all", "plot_cost_accuracy",
    "plot_learning_curves", "plot_trajectory", "read_run", "render_markdown", "report_name", "roadmap_steps",
    "run_study", "spearman", "study_name", "summarize", "summary_lines", "sweep_plan", "write_report",
]
