"""W&B comparison dashboards of a sweep, built by the harness with wandb-workspaces.

    python -m roadmap.report <sweep dir> --wandb-dashboard             # offline: writes dashboard.json, prints:
    wandb sync <the runs' offline run dirs> <the report run's dir>      #   1. upload the runs
    python -m roadmap.report <sweep dir> --wandb-dashboard --publish   #   2. save the report + workspace, print URLs

A results study (results/<study>, kept runs only) is seen the same way once its kept runs are
imported (`--wandb-import`, wandb_import.py: W&B group = the study's name, runs in <out>/wandb/):

    python -m roadmap.report results/<study> --out DIR --wandb-import --wandb-dashboard

From the report's rows (one per step, in roadmap order, each carrying its runs and their configs)
and its summary, this builds

* a **W&B Report** for the sweep: the trajectory (ours, mean ± std over seeds, beside the paper's
  top-1, one bar pair per step in roadmap order) and the report run's trajectory table; per-step
  learning curves (seeds aggregated); the toggles that change between consecutive steps (a table
  computed from the runs' configs, a run comparer showing only differing keys, a parallel-coordinates
  panel of the toggles against top-1); cost versus accuracy (GFLOPs at 224 px vs top-1, ours and
  the paper's);
* a **saved workspace view** of the project with the same panels, its runs filtered to the sweep's
  W&B group(s) and grouped by step (`roadmap_step`, whose alphabetical order is the roadmap's).

Their title and name say what the study is (roadmap, dataset, scale, regime, seeds), never which
W&B groups its runs came from, and are cut at a word to fit W&B's limits.

Every metric and config key a panel uses comes from `roadmap.tracking.KEYS` (the registry of what
the runs log); `panel_keys` lists them per panel, and the tests check them against real offline runs.

Offline first: building needs no network and no API key (wandb-workspaces builds the objects
locally; only `save()` talks to W&B). The specification (`dashboard.json`, next to the report)
holds the serialised report and workspace exactly as they would be sent, the keys of every
panel, the toggle changes and the publish commands. `--publish` refuses at once, with one line,
when W&B is offline (WANDB_MODE=offline/disabled), no API key is configured or the server cannot
be reached, and gives up after `PUBLISH_TIMEOUT_S` rather than hang.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from ..files import atomic_write_text, read_json
from ..tracking import KEYS, run_identity, wandb_run_id
from .collect import display_path
from .paper import get
from .results import report_name
from .wandb_import import kept_id, offline_dirs
from .wandb_run import report_run_id

SPEC_NAME = "dashboard.json"
PUBLISH_TIMEOUT_S = 180
CONNECT_TIMEOUT_S = 5
Key = Tuple[str, str]  # (section, name): section is history | summary | config | toggles | report


class PublishError(RuntimeError):
    """Publishing is impossible or failed; the message is one line."""


@dataclasses.dataclass
class Dashboard:
    report: Any                        # wandb_workspaces.reports.v2.Report
    workspace: Any                     # wandb_workspaces.workspaces.Workspace
    project: str
    entity: Optional[str]              # None: the API key's default entity, resolved when publishing
    groups: List[str]                  # the sweep's W&B run groups
    panels: List[Dict[str, Any]]       # where, kind, title, keys of every panel (report and workspace)
    runsets: List[Dict[str, Any]]      # name, filters, grouping and their keys
    changes: List[Dict[str, Any]]      # toggles that change at each step
    sync_dirs: List[Path]              # the offline run directories `wandb sync` must upload
    report_command: str                # `python -m roadmap.report <sweep dirs> --out <out dir>`
    study: Optional[str] = None        # a results study's name (its runs are imported: --wandb-import)


# =============================================================================================
# What the rows hold
# =============================================================================================
_get = get  # d['a']['b'] for 'a.b' (report/paper.py)


def _runs(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [run for r in rows for run in r.get("runs") or []]


def _row_config(row: Dict[str, Any]) -> Dict[str, Any]:
    """The config of a row's runs (a finished one's first)."""
    runs = sorted(row.get("runs") or [], key=lambda r: r.get("status") != "finished")
    return next((r["config"] for r in runs if r.get("config")), {})


def _identity(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """W&B project/entity/group of a run, by the rule the runs were logged with (run_identity)."""
    from omegaconf import OmegaConf

    try:
        ident = run_identity(OmegaConf.create(config))
        return ident if ident.get("group") and ident.get("project") else None
    except Exception:
        return None


def target(rows: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> Tuple[str, Optional[str], List[str]]:
    """(project, entity, groups) of the sweep's runs; a results study's runs are its imported ones,
    whose one group is the study's name (wandb_import.py)."""
    idents = [i for i in (_identity(r["config"]) for r in _runs(rows) if r.get("config")) if i]
    groups = list(dict.fromkeys(i["group"] for i in idents)) or list(meta.get("sweep_ids") or [])[:1]
    if meta.get("study"):
        groups = [meta["study"]]
    project = next((i["project"] for i in idents), None) or "roadmap"
    entity = next((i["entity"] for i in idents if i.get("entity")), None)
    return project, entity, groups or ["roadmap"]


def _toggles(config: Dict[str, Any]) -> Dict[str, Any]:
    missing = object()
    values = {k: _get(config, k, missing) for k in KEYS.toggles}
    return {k: v for k, v in values.items() if v is not missing}


def toggle_changes(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """For each row (in roadmap order): the toggles (`KEYS.toggles`) whose value differs from the
    row it is compared with, the same one as the report's Δ (the previous main-path step; a side
    branch's parent; an ablation's unablated model; a variant's step), else the previous row."""
    index = {(r["step"], r.get("ablation") or "none", r.get("variant") or ""): r for r in rows}
    out, prev = [], None
    for r in rows:
        if (r.get("ablation") or "none") != "none" or r.get("variant"):
            ref = index.get((r["step"], "none", ""))
        else:
            ref = index.get((r.get("delta_vs") or "", "none", "")) if r.get("delta_vs") else None
        ref = ref if ref is not None and ref is not r else prev
        new = _toggles(_row_config(r))
        old = _toggles(_row_config(ref)) if ref is not None else {}
        changes = [(k, old.get(k), new.get(k)) for k in KEYS.toggles
                   if ref is not None and (k in old or k in new) and old.get(k) != new.get(k)]
        out.append({"order": r.get("order"), "step": r["step"], "ablation": r.get("ablation") or "none",
                    "variant": r.get("variant") or "", "label": r.get("label") or r["step"],
                    "vs": None if ref is None else (ref.get("label") or ref["step"]),
                    "changes": [{"key": k, "from": a, "to": b} for k, a, b in changes]})
        if not r.get("branch"):
            prev = r
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "-".join(str(x) for x in v) if all(isinstance(x, (int, float)) for x in v) else ",".join(map(str, v))
    return "—" if v is None else str(v)


def changes_markdown(changes: Sequence[Dict[str, Any]]) -> str:
    lines = ["| # | step | compared with | toggles that change |", "| ---: | --- | --- | --- |"]
    for c in changes:
        what = "; ".join(f"`{x['key']}`: {_fmt(x['from'])} → {_fmt(x['to'])}" for x in c["changes"])
        if c["vs"] is None:
            what = "(start of the sweep)"
        lines.append(f"| {c['order'] if c['order'] is not None else ''} | {c['label'].replace('|', '/')} | "
                     f"{(c['vs'] or '—').replace('|', '/')} | {what or 'nothing (same toggles)'} |")
    return "\n".join(lines)


def varying_toggles(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Scalar toggles with more than one value across the sweep: the parallel-coordinates axes
    (list-valued toggles such as model.depths are in the table and the run comparer instead)."""
    values: Dict[str, set] = {}
    for run in _runs(rows):
        for k, v in _toggles(run.get("config") or {}).items():
            if isinstance(v, (str, int, float, bool)) or v is None:
                values.setdefault(k, set()).add(v)
    return [k for k in KEYS.toggles if len(values.get(k, ())) > 1]


def offline_run_dirs(rows: Sequence[Dict[str, Any]], meta: Dict[str, Any],
                     wandb_dir: Optional[Path] = None) -> List[Path]:
    """The sweep's offline W&B run directories: each run's (Tracker: `<logger.dir or run dir>/wandb/
    offline-run-*-<id>`, one per attempt of a resumed run), each kept run's imported one
    (`<wandb_dir>/wandb/offline-run-*-kept-<id>`, wandb_import.py) and the report run's newest
    (`<wandb_dir, sweep dir or logger.dir>/wandb/offline-run-*-report-<id>`: each report logs
    the whole table again)."""
    found: List[Path] = []
    wandb_dirs = {Path(wandb_dir) / "wandb"} if wandb_dir is not None else set()
    for run in _runs(rows):
        config = run.get("config") or {}
        wdir = Path(_get(config, "logger.dir") or run["run_dir"]) / "wandb"
        wandb_dirs.add(wdir)
        found += sorted(wdir.glob(f"offline-run-*-{wandb_run_id(run['run_dir'])}"))
        kept = kept_id(run["run_dir"]) if wandb_dir is not None else None
        found += offline_dirs(wandb_dir, kept)[-1:] if kept else []
    sweeps = [Path(d) for d in meta.get("sweep_dirs") or []]
    if sweeps:
        report_id = report_run_id(meta)
        found += sorted((p for wdir in wandb_dirs | {sweeps[0] / "wandb"}
                         for p in wdir.glob(f"offline-run-*-{report_id}")), key=lambda p: p.name)[-1:]
    return [p for p in dict.fromkeys(found) if p.is_dir()]


# =============================================================================================
# Panels, run sets, report, workspace
# =============================================================================================
def _panels(n: int, toggles: Sequence[str], changes_md: str) -> Dict[str, List[Any]]:
    """The panels by section (fresh objects each call: the report and the workspace own theirs)."""
    import wandb_workspaces.reports.v2 as wr

    step = wr.Config(KEYS("config", "roadmap_step"))
    top1 = KEYS("summary", "top1")
    seeds = dict(groupby=step, groupby_aggfunc="mean", groupby_rangefunc="stddev", max_runs_to_show=n)

    def curve(key: str, title: str, y_title: str) -> Any:
        return wr.LinePlot(title=title, x=KEYS("history", "epoch"), y=[KEYS("history", key)], title_x="epoch",
                           title_y=y_title, legend_position="east", layout=wr.Layout(w=8, h=8), **seeds)

    columns = [wr.ParallelCoordinatesPlotColumn(wr.Config(KEYS("toggles", t)), display_name=t.removeprefix("model."))
               for t in toggles]
    columns.append(wr.ParallelCoordinatesPlotColumn(wr.SummaryMetric(top1), display_name="top-1 (%)"))
    return {
        "trajectory": [
            wr.BarPlot(title="top-1 per step in roadmap order: ours (mean ± std over seeds) vs the paper "
                             "(ImageNet, 224 px)",
                       metrics=[top1, KEYS("summary", "paper_top1")], orientation="h", title_x="top-1 (%)",
                       max_bars_to_show=2 * n, layout=wr.Layout(w=24, h=max(8, n)), **seeds),
        ],
        "table": [wr.WeavePanelSummaryTable(table_name=KEYS("report", "trajectory"), layout=wr.Layout(w=24, h=12))],
        "curves": [
            curve("top1", "validation top-1 per epoch (mean ± std over seeds)", "top-1 (%)"),
            curve("val_loss", "validation loss per epoch (mean ± std over seeds)", "loss"),
            curve("train_loss", "training loss per epoch (mean ± std over seeds)", "loss"),
        ],
        "toggles": [
            wr.MarkdownPanel(markdown="#### Toggles that change at each step\n\n" + changes_md,
                             layout=wr.Layout(w=24, h=10)),
            wr.RunComparer(diff_only="split", layout=wr.Layout(w=24, h=12)),
            wr.ParallelCoordinatesPlot(title="toggles vs top-1 (each run)", columns=columns,
                                       layout=wr.Layout(w=24, h=9)),
        ],
        "cost": [
            wr.ScatterPlot(title="cost vs accuracy: GFLOPs at 224 px (1000 classes) vs top-1, each run",
                           x=wr.SummaryMetric(KEYS("summary", "gflops_224")), y=wr.SummaryMetric(top1),
                           layout=wr.Layout(w=12, h=9)),
            wr.ScatterPlot(title="the paper: GFLOPs vs ImageNet top-1 of each step",
                           x=wr.SummaryMetric(KEYS("summary", "paper_gflops")),
                           y=wr.SummaryMetric(KEYS("summary", "paper_top1")),
                           layout=wr.Layout(w=12, h=9)),
        ],
    }


SECTIONS = {  # section -> (heading, what it shows, which run set)
    "trajectory": ("Trajectory: ours vs the paper, in roadmap order",
                   "Mean top-1 over seeds (± sample std) beside the paper's top-1 for each step.", "by_step"),
    "table": ("The trajectory table", "The report run's table: one row per step with Δs, the paper's "
              "numbers, GFLOPs, params and throughput.", "report"),
    "curves": ("Learning curves per step", "Validation top-1 and losses per epoch; each line is one step, "
               "the band its ± std over seeds.", "by_step"),
    "toggles": ("What changes between consecutive steps", "Toggles per step (from the runs' configs), a run "
                "comparer of one seed per step showing only the keys that differ, and the toggles against "
                "top-1.", "one_seed"),
    "cost": ("Cost versus accuracy", "fvcore GFLOPs at 224 px and 1000 classes (full width) against top-1, ours "
             "and the paper's.", "runs"),
}


def _runsets(groups: Sequence[str], seed: Optional[int]) -> Dict[str, Dict[str, Any]]:
    """Run sets as plain data (name, filters, grouping, order, the keys they read): the report
    and the workspace build theirs from these."""
    group = f"Metric('Group') == {groups[0]!r}" if len(groups) == 1 else f"Metric('Group') in {list(groups)!r}"
    runs = f"{group} and Metric('JobType') != 'report'"
    order = ("summary", KEYS("summary", "step_index"))
    by_step = ("config", KEYS("config", "roadmap_step"))

    def runset(name: str, filters: str, groupby: Optional[Key] = None, extra: Sequence[Key] = ()) -> Dict[str, Any]:
        return {"name": name, "filters": filters, "groupby": groupby, "order": order,
                "keys": [k for k in (groupby, order) if k] + list(extra)}

    one_seed = runset("one run per step", runs)
    if seed is not None:
        seed_key = KEYS("config", "seed")
        one_seed = runset(f"one run per step (seed {seed})", f"{runs} and Config('{seed_key}') == {seed}",
                          extra=[("config", seed_key)])
    return {"by_step": runset("runs grouped by step", runs, by_step), "runs": runset("runs", runs),
            "one_seed": one_seed, "report": runset("the report run", f"{group} and Metric('JobType') == 'report'")}


def _wr_runset(spec: Dict[str, Any]) -> Any:
    import wandb_workspaces.reports.v2 as wr

    section, name = spec["order"]
    order = wr.OrderBy(wr.SummaryMetric(name) if section == "summary" else wr.Config(name), ascending=True)
    return wr.Runset(name=spec["name"], filters=spec["filters"], order=[order],
                     groupby=[f"{spec['groupby'][0]}.{spec['groupby'][1]}"] if spec["groupby"] else [])


def panel_keys(panel: Any) -> List[Key]:
    """The (section, key) pairs a panel reads: history for line plots, summary for bars/scatter,
    config for groupings and parallel-coordinates axes, report for the report run's table."""
    import wandb_workspaces.reports.v2 as wr

    def key(m: Any, default: str) -> Key:
        if isinstance(m, wr.Config):
            return ("config", m.name)
        if isinstance(m, wr.SummaryMetric):
            return ("summary", m.name)
        return (default, m.name if isinstance(m, wr.Metric) else m)

    group = [key(panel.groupby, "config")] if getattr(panel, "groupby", None) is not None else []
    if isinstance(panel, wr.LinePlot):
        return [key(panel.x, "history")] + [key(y, "history") for y in panel.y] + group
    if isinstance(panel, wr.BarPlot):
        return [key(m, "summary") for m in panel.metrics] + group
    if isinstance(panel, wr.ScatterPlot):
        return [key(m, "summary") for m in (panel.x, panel.y, panel.z) if m is not None]
    if isinstance(panel, wr.ParallelCoordinatesPlot):
        return [key(c.metric, "summary") for c in panel.columns]
    if isinstance(panel, wr.WeavePanelSummaryTable):
        return [("report", panel.table_name)]
    return []


def _clip(text: str, limit: int) -> str:
    """`text`, or its longest prefix ending at a word boundary + '…', within `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit - 1]
    return cut.rstrip(" ,;:(—-") + "…"


def seeds_label(seeds: Sequence[int]) -> str:
    """'seed 0', 'seeds 0–2' (consecutive), 'seeds 0, 3, 7'; 'no seeds'."""
    seeds = sorted(seeds)
    if not seeds:
        return "no seeds"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def names(rows: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> Tuple[str, str]:
    """(report title, workspace name), from the study: what roadmap, dataset, scale, regime, seeds and
    the study's suffix (ablation, an experiment's own name), never from W&B groups; within W&B's
    limits, cut at a word."""
    dataset, scale, regime = meta.get("dataset", "?"), meta.get("scale", "?"), meta.get("regime", "?")
    study = meta.get("study") or report_name(list(rows), meta)
    extra = [p for p in study.removeprefix(f"{dataset}-{scale}").split("-") if p and p != regime]
    ends = meta.get("endpoints") or {}
    what = "leave-one-out ablation" if meta.get("ablation_mode") else \
        f"{ends.get('start', 'ResNet')} → {ends.get('end', 'ConvNeXt')}"
    seeds = seeds_label(meta.get("seeds") or [])
    tail = f" ({', '.join(extra)})" if extra else ""
    return (_clip(f"roadmap {what}: {dataset}, {scale} scale, {regime} regime, {seeds}{tail}", 128),
            _clip(f"roadmap steps: {dataset} {scale} {regime}, {seeds}{tail}", 120))


def build(rows: Sequence[Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any],
          out_dir: Optional[Path] = None, wandb_dir: Optional[Path] = None) -> Dashboard:
    """The report and the workspace of a sweep, built offline (`wandb_dir`: where the report run and
    the imported runs of a results study are, `<wandb_dir>/wandb/`)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    project, entity, groups = target(rows, meta)
    runs = _runs(rows)
    seeds = sorted({r["seed"] for r in runs if r.get("seed") is not None})
    n = max(10, len(rows), len(runs))
    changes = toggle_changes(rows)
    changes_md = changes_markdown(changes)
    toggles = varying_toggles(rows)
    sets = _runsets(groups, seeds[0] if seeds else None)

    title, workspace_name = names(rows, meta)

    panels: List[Dict[str, Any]] = []
    blocks: List[Any] = [wr.MarkdownBlock(text=_summary_markdown(summary, meta, groups, out_dir))]
    sections = _panels(n, toggles, changes_md)
    for name, (heading, text, runset) in SECTIONS.items():
        blocks += [wr.H2(text=heading), wr.P(text=text)]
        ps = sections[name]
        if name == "toggles":  # in the report the table is a markdown block, not a panel
            blocks.append(wr.MarkdownBlock(text=changes_md))
            ps = [p for p in ps if not isinstance(p, wr.MarkdownPanel)]
        blocks.append(wr.PanelGrid(runsets=[_wr_runset(sets[runset])], panels=ps))
        panels += [{"where": f"report/{name}", "runset": sets[runset]["name"], "kind": type(p).__name__,
                    "title": getattr(p, "title", None), "keys": panel_keys(p)} for p in ps]
    report = wr.Report(project=project, entity=entity or "", title=title, width="fluid", blocks=blocks,
                       description=f"W&B group{'s' if len(groups) > 1 else ''} {', '.join(groups)}; built by "
                                   "`python -m roadmap.report --wandb-dashboard` (roadmap/report/dashboard.py)")

    ws_sections = []
    for name, (heading, _, _) in SECTIONS.items():
        if name == "table":  # the report run is filtered out of the workspace's runs
            continue
        ps = _panels(n, toggles, changes_md)[name]
        ws_sections.append(ws.Section(name=heading, panels=ps, is_open=True))
        panels += [{"where": f"workspace/{heading}", "runset": "workspace runs", "kind": type(p).__name__,
                    "title": getattr(p, "title", None), "keys": panel_keys(p)} for p in ps]
    by_step = sets["by_step"]
    pinned = [("summary", KEYS("summary", k)) for k in ("top1", "paper_top1", "gflops_224", "params_224")]
    workspace = ws.Workspace(
        entity=entity or "", project=project, name=workspace_name,
        sections=ws_sections, settings=ws.WorkspaceSettings(x_axis=KEYS("history", "epoch"), max_runs=n),
        runset_settings=ws.RunsetSettings(
            filters=by_step["filters"], groupby=[expr.Config(by_step["groupby"][1])],
            order=[expr.Ordering(expr.Summary(by_step["order"][1]), ascending=True)],
            pinned_columns=[f"{section}:{name}" for section, name in pinned]))
    runsets = list(sets.values()) + [{**by_step, "name": "workspace runs", "keys": by_step["keys"] + pinned}]
    command = ["python -m roadmap.report", *(shlex.quote(str(d)) for d in meta.get("sweep_dirs") or [])]
    if out_dir is not None:
        command += ["--out", shlex.quote(display_path(out_dir))]
    return Dashboard(report=report, workspace=workspace, project=project, entity=entity, groups=groups,
                     panels=panels, runsets=runsets, changes=changes,
                     sync_dirs=offline_run_dirs(rows, meta, wandb_dir), study=meta.get("study"),
                     report_command=" ".join(command))


def _summary_markdown(summary: Dict[str, Any], meta: Dict[str, Any], groups: Sequence[str],
                      out_dir: Optional[Path]) -> str:
    lines = [f"{'Study' if meta.get('study') else 'Sweep'}: {', '.join(f'`{d}`' for d in meta.get('sweep_dirs') or [])} (W&B group "
             f"{', '.join(f'`{g}`' for g in groups)}); seeds {', '.join(map(str, meta.get('seeds') or [])) or '—'}."]
    g = summary.get("gain") or {}
    if g.get("ours") is not None:
        se = f" ± {g['ours_se']:.2f}" if g.get("ours_se") is not None else ""
        paper = f" (paper: {g['paper']:+.2f})" if g.get("paper") is not None else ""
        lines.append(f"- Overall gain {g.get('from_label', g['from'])} → {g.get('to_label', g['to'])}: "
                     f"{g['ours']:+.2f}{se} top-1 points{paper}.")
    sa = summary.get("sign_agreement") or {}
    if sa.get("of"):
        lines.append(f"- Steps whose Δ has the paper's sign: {sa['agree']} of {sa['of']}.")
    sp = summary.get("spearman") or {}
    if sp.get("rho") is not None:
        lines.append(f"- Spearman's ρ between our and the paper's per-step top-1: {sp['rho']:.2f} (n = {sp['n']}).")
    runs = summary.get("runs") or {}
    if runs:
        lines.append(f"- Runs: {runs.get('finished', 0)} finished, {runs.get('failed', 0)} failed, "
                     f"{runs.get('running', 0)} running or interrupted, {runs.get('missing', 0)} missing.")
    flagged = (summary.get("health") or {}).get("runs") or []
    if flagged:  # the health rule (docs/health.md); their W&B runs carry the tag unhealthy-<verdict>
        lines.append(f"- Flagged unhealthy ({len(flagged)}; W&B tag `unhealthy-<verdict>`): " + "; ".join(
            f"{r['step']} seed {r['seed']} {r['verdict']} at epoch {r['epoch']}" for r in flagged) + ".")
    if out_dir is not None:
        lines.append(f"- The full table and definitions: `{display_path(Path(out_dir) / 'trajectory.md')}`.")
    return "\n".join(lines)


# =============================================================================================
# Specification, commands, publishing
# =============================================================================================


def _dump(model: Any) -> Dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def report_spec(dash: Dashboard) -> Dict[str, Any]:
    """The report as W&B's upsertView would receive it. Offline, the run sets name their project
    (and entity, if configured) here; W&B adds the project's internal id when the report is saved."""
    spec = _dump(dash.report._to_model())
    for block in spec["spec"]["blocks"]:
        for rs in (block.get("metadata") or {}).get("runSets") or []:
            rs["project"] = {"name": dash.project, "entityName": dash.entity or ""}
    return spec


def publish_commands(dash: Dashboard) -> List[str]:
    """`wandb sync <the offline run dirs>`, then the report command with --wandb-dashboard --publish."""
    why = "import the study's kept runs first: rerun with --wandb-import" if dash.study else \
        "were the runs logged with logger=wandb?"
    sync = "wandb sync " + " ".join(shlex.quote(display_path(p)) for p in dash.sync_dirs) if dash.sync_dirs else \
        f"wandb sync <the runs' wandb/offline-run-* directories>  (none found: {why})"
    return [sync, dash.report_command + " --wandb-dashboard --publish"]


def specification(dash: Dashboard) -> Dict[str, Any]:
    used: Dict[str, List[str]] = {}
    for item in dash.panels + dash.runsets:
        for section, name in item["keys"]:
            used.setdefault(section, [])
            if name not in used[section]:
                used[section].append(name)
    return {
        "what": "W&B Report and saved workspace view of this sweep (roadmap/report/dashboard.py); "
                "`report` and `workspace` are exactly what `--publish` sends (wandb-workspaces models)",
        "target": {"project": dash.project, "entity": dash.entity, "groups": dash.groups,
                   "entity_note": None if dash.entity else
                   "none configured (logger.entity): the API key's default entity"},
        "report_title": dash.report.title, "workspace_name": dash.workspace.name,
        "keys_used": used,
        "panels": [{**p, "keys": [":".join(k) for k in p["keys"]]} for p in dash.panels],
        "runsets": [{**r, "keys": [":".join(k) for k in r["keys"]]} for r in dash.runsets],
        "toggle_changes": dash.changes,
        "publish": {"sync_dirs": [display_path(p) for p in dash.sync_dirs], "commands": publish_commands(dash)},
        "report": report_spec(dash),
        "workspace": _dump(dash.workspace._to_model()),
    }


def _write_spec(path: Path, spec: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(spec, indent=2, ensure_ascii=False, default=str) + "\n")


def _base_url() -> str:
    from wandb import env
    from wandb.sdk import wandb_setup

    return env.get_base_url(wandb_setup.singleton().settings.base_url).rstrip("/")


def publish_problem(probe: bool = False) -> Optional[str]:
    """Why publishing cannot work here, found without the network (offline mode, no API key) and,
    with `probe`, by opening one TCP connection to the server (CONNECT_TIMEOUT_S); None if it may."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled") or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return (f"--publish needs W&B online but WANDB_MODE={mode or 'disabled'}; "
                "run `wandb sync` and the command without WANDB_MODE=offline (drop --publish to build offline)")
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib.wbauth import wbnetrc

    base = _base_url()
    if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
            or wbnetrc.read_netrc_auth(host=base) or wandb_setup.singleton().settings.api_key):
        return f"--publish needs a W&B API key for {base} (WANDB_API_KEY or `wandb login`); none is configured"
    return _unreachable(base) if probe else None


def _unreachable(url: str) -> Optional[str]:
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)),
                                 timeout=CONNECT_TIMEOUT_S).close()
        return None
    except OSError as e:
        return f"--publish cannot reach {url} within {CONNECT_TIMEOUT_S} s ({e.__class__.__name__}: {e})"


def _default_entity() -> Optional[str]:
    import wandb

    return wandb.Api(timeout=30).default_entity


def publish(dash: Dashboard, previous: Optional[Dict[str, Any]] = None,
            timeout: float = PUBLISH_TIMEOUT_S) -> Dict[str, str]:
    """Save the report and the workspace view to W&B and return their URLs and ids. A previous
    publication (ids in dashboard.json) is updated in place instead of duplicated."""
    problem = publish_problem(probe=True)
    if problem:
        raise PublishError(problem)
    result: Dict[str, Any] = {}

    def work() -> None:
        try:
            entity = dash.entity or _default_entity()
            if not entity:
                raise PublishError("the API key has no default entity; set logger.entity")
            dash.report.entity = dash.workspace.entity = entity
            for block in dash.report.blocks:
                for rs in getattr(block, "runsets", None) or []:
                    rs.entity, rs.project = entity, dash.project
            prev = previous or {}
            if prev.get("entity") == entity and prev.get("project") == dash.project:
                if prev.get("report_id"):
                    dash.report.id = prev["report_id"]
                if prev.get("workspace_name") and prev.get("workspace_id"):
                    object.__setattr__(dash.workspace, "_internal_name", prev["workspace_name"])
                    object.__setattr__(dash.workspace, "_internal_id", prev["workspace_id"])
            dash.report.save()
            dash.workspace.save()
            view = dash.workspace
            result.update({"entity": entity, "project": dash.project, "report_url": dash.report.url,
                           "report_id": dash.report.id, "workspace_url": view.url,
                           "workspace_name": view._internal_name, "workspace_id": view._internal_id})
        except BaseException as e:  # reported by the caller's thread
            result["error"] = e

    worker = threading.Thread(target=work, name="wandb-publish", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise PublishError(f"W&B did not finish saving within {timeout:.0f} s; the offline specification is unchanged")
    if "error" in result:
        e = result["error"]
        first = (str(e).strip().splitlines() or [""])[0]
        raise PublishError(first if isinstance(e, PublishError) else f"publishing to W&B failed: {type(e).__name__}: {first}")
    return result


def write_dashboard(rows: Sequence[Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any], out_dir: Path,
                    publish_now: bool = False, echo: Any = print, wandb_dir: Optional[Path] = None) -> Path:
    """Build the dashboard offline, write `<out_dir>/dashboard.json`, print the publish commands;
    with `publish_now`, save it to W&B and print the URLs (raises PublishError, one line)."""
    out_dir = Path(out_dir)
    path = out_dir / SPEC_NAME
    previous = None
    if path.exists():
        try:
            previous = read_json(path).get("published")
        except Exception:
            previous = None
    dash = build(rows, summary, meta, out_dir, wandb_dir)
    spec = specification(dash)
    if previous:
        spec["published"] = previous
    _write_spec(path, spec)
    n_report = sum(p["where"].startswith("report/") for p in dash.panels)
    echo(f"W&B dashboard (built offline): {display_path(path)}: report \"{dash.report.title}\" ({n_report} panels) and "
         f"workspace view \"{dash.workspace.name}\" for {dash.entity or '<default entity>'}/{dash.project}")
    if not publish_now:
        echo("publish it: upload the runs, then rerun with --publish:")
        sync = [shlex.quote(display_path(p)) for p in dash.sync_dirs]
        echo("  " + (" \\\n    ".join(["wandb sync", *sync]) if sync else spec["publish"]["commands"][0]))
        echo("  " + spec["publish"]["commands"][1])
        return path
    urls = publish(dash, previous)
    spec["published"] = urls
    _write_spec(path, spec)
    echo(f"W&B report: {urls['report_url']}")
    echo(f"W&B workspace: {urls['workspace_url']}")
    return path
