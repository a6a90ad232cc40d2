"""A comparison's figures, PNG + SVG (plots.save_png_svg: a rebuild from the same runs is byte-identical):

  contrasts   each contrast's Δ ± 2 SE per study, one panel per group of studies: against a numeric axis
              of the studies (epochs, lr, ...; a line and a band) or one slot per study (categories);
              the paper's Δ dashed
  trajectory  mean top-1 per main-path step of several studies in one panel (bars: min–max over seeds),
              the paper's top-1 per step in a panel below on the same steps
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ...steps import step_info
from ..paper import PAPER_TABLE, paper_top1
from ..plots import C_PAPER, save_png_svg
from .analysis import trajectory
from .spec import Figure, Panel, Spec

PALETTE = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:grey")


def _positions(panel: Panel, spec: Spec) -> List[Tuple[float, str, str]]:
    """(x, study, label) of a panel's points: the study's number on the panel's axis, else its slot."""
    return [(spec.studies[p[0]].axes[panel.x] if panel.x else i, p[0], p[1])
            for i, p in enumerate(panel.points) if p is not None]


def _draw_panel(ax: Any, panel: Panel, fig: Figure, result: Dict[str, Any], spec: Spec) -> None:
    at = _positions(panel, spec)
    studies = result["studies"]
    if not any(studies[s]["contrasts"].get(c) for _, s, _ in at for c in fig.contrasts):
        ax.text(0.5, 0.5, panel.empty, transform=ax.transAxes, ha="center", va="center", color="grey", fontsize=11)
    for i, c in enumerate(fig.contrasts):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(x, studies[s]["contrasts"][c]) for x, s, _ in at if studies[s]["contrasts"].get(c)]
        pts.sort(key=lambda t: t[0])
        xs = [x for x, _ in pts]
        ys = [v["delta"] for _, v in pts]
        err = [2 * (v["se"] or 0) for _, v in pts]
        if panel.x is None:  # side by side within a slot
            xs = [x + 0.15 * (i - (len(fig.contrasts) - 1) / 2) for x in xs]
        elif len(pts) > 1:
            ax.plot(xs, ys, "-", color=colour)
            ax.fill_between(xs, [y - e for y, e in zip(ys, err)], [y + e for y, e in zip(ys, err)],
                            color=colour, alpha=0.18, linewidth=0)
        if pts:
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=colour, capsize=3, label=spec.contrasts[c].label)
        if spec.contrasts[c].paper is not None:
            ax.axhline(spec.contrasts[c].paper, color=colour, linestyle="--", linewidth=1)
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_title(panel.title, fontsize=10)
    ax.grid(alpha=0.3)
    if panel.x is None:
        ticks = {x: label for x, _, label in at}
        ax.set_xticks(sorted(ticks), [ticks[k] for k in sorted(ticks)], rotation=30, ha="right", fontsize=8)
        if panel.xlim:
            ax.set_xlim(*panel.xlim)
        return
    if panel.xscale == "log2":
        ax.set_xscale("log", base=2)
    ticks = panel.ticks or sorted({x for x, _, _ in at})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    if panel.xlim:
        ax.set_xlim(*panel.xlim)
    ax.set_xlabel(panel.x)


def plot_contrasts(fig_spec: Figure, result: Dict[str, Any], spec: Spec, out_dir: Path) -> Tuple[Path, Path]:
    """The contrasts figure: one panel per `panels` entry, the contrasts in colour, ± 2 SE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fig_spec.panels)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.6), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], fig_spec.panels):
        _draw_panel(ax, panel, fig_spec, result, spec)
    axes[0][0].set_ylabel(fig_spec.ylabel)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(fig_spec.title, fontsize=11)
    fig.tight_layout()
    paths = save_png_svg(fig, out_dir, fig_spec.name)
    plt.close(fig)
    return paths


def _study_label(study: Dict[str, Any], steps: List[str]) -> str:
    """The legend entry: label, then ρ and k where every step is measured, else how many steps are."""
    s, label = study.get("scores"), study["label"]
    measured = sum(st in study["top1"] for st in steps)
    if not measured:
        return f"{label}: not run"
    if measured < len(steps):
        return f"{label}: {measured} of {len(steps)} steps so far"
    if s and s["rho"] is not None and s["steps"] == len(steps):
        label += f": ρ {s['rho']:+.2f}, {s['k']} of {s['of']} big-step signs agree"
    return label


def plot_trajectories(fig_spec: Figure, result: Dict[str, Any], spec: Spec, out_dir: Path) -> Tuple[Path, Path]:
    """Several studies' mean top-1 per step in one panel, the paper's below (same steps, own scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    steps, k = fig_spec.steps, len(fig_spec.studies)
    fig = MplFigure(figsize=(max(9.0, 0.62 * len(steps) + 3.5), 7.6))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=[3.0, 1.25], hspace=0.06)
    ax, axp = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    xs = list(range(len(steps)))
    for i, name in enumerate(fig_spec.studies):
        study, colour = result["studies"][name], PALETTE[i % len(PALETTE)]
        pts = trajectory(study, steps)
        dx = 0.09 * (i - (k - 1) / 2)  # the studies side by side at each step
        ys = [p["mean"] if p else math.nan for p in pts]
        ax.plot([x + dx for x in xs], ys, "-o", color=colour, lw=1.6, markersize=4.5, zorder=3,
                label=_study_label(study, steps))
        for x, p in zip(xs, pts):
            if p and p["n"] > 1:
                ax.vlines(x + dx, p["min"], p["max"], color=colour, lw=1.2, zorder=2)
    paper = [paper_top1(s, spec.regime) for s in steps]
    known = [v for v in paper if v is not None]
    axp.plot([x for x, v in zip(xs, paper) if v is not None], known, "-D", color=C_PAPER, markersize=5, lw=1.2,
             label=f"paper: ImageNet-1K, 224 px (Liu et al. 2022, {PAPER_TABLE.get(spec.regime, 'the paper')})")
    for x, v in zip(xs, paper):
        if v is not None:
            axp.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7.5)
    if known:
        axp.set_ylim(min(known) - 0.8, max(known) + 1.2)
    for a in (ax, axp):
        a.grid(color="#DDDDDD", lw=0.7)
        a.set_axisbelow(True)
        a.set_xlim(-0.5, len(steps) - 0.5)
        a.set_xticks(xs)
    ax.tick_params(labelbottom=False)
    axp.set_xticks(xs, [step_info(s)["label"] for s in steps], rotation=35, ha="right", fontsize=9)
    seeds = sorted({k for name in fig_spec.studies for k in result["studies"][name]["seeds"]})
    ax.set_ylabel(f"ours: top-1 (%), mean over seeds {', '.join(map(str, seeds))}\nbars: min–max", fontsize=9.5)
    axp.set_ylabel("paper: top-1 (%)", fontsize=9.5)
    ax.legend(fontsize=8.5, loc="best", frameon=False)
    axp.legend(fontsize=8.5, loc="lower right", frameon=False)
    ax.set_title(fig_spec.title, fontsize=11.5, loc="left")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.2)
    return save_png_svg(fig, out_dir, fig_spec.name)


def plot_all(result: Dict[str, Any], spec: Spec, out_dir: Path) -> List[Path]:
    paths: List[Path] = []
    for fig in spec.figures.values():
        paths += plot_contrasts(fig, result, spec, out_dir) if fig.kind == "contrasts" else \
            plot_trajectories(fig, result, spec, out_dir)
    return paths
