"""The report's figures, PNG and SVG side by side (matplotlib's Agg canvas: no pyplot, no display):

  trajectory       our top-1 per step (mean ± std over seeds) beside the paper's (Figure 2 style)
  learning_curves  top-1 and training loss per epoch of every step, from history.csv
  cost_accuracy    GFLOPs at 224 px vs top-1, ours beside the paper's
"""
from __future__ import annotations

import io
import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..files import atomic_write_bytes
from .paper import MAIN_ROADMAP
from .render import join as _join

PathLike = Union[str, Path]


def _uniq(values: Any) -> List[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


C_OURS, C_OURS_EDGE, C_PAPER, C_FAIL, C_BAND = "#4C72B0", "#2E4A7A", "#DD8452", "#B22222", "#F2F2F2"
# a run the health rule flags (docs/health.md): its own top-1 as a hollow red circle in every figure
FLAGGED = dict(marker="o", markersize=7.5, markerfacecolor="white", markeredgecolor=C_FAIL, markeredgewidth=1.6,
               linestyle="none", zorder=5)
FLAGGED_LABEL = "a run flagged unhealthy (its own top-1; docs/health.md)"


def _flagged_handle() -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], **{k: v for k, v in FLAGGED.items() if k != "zorder"}, label=FLAGGED_LABEL)


def flagged_top1(r: Dict[str, Any], metric: str) -> List[float]:
    """The top-1 of each finished run of row `r` that the health rule flags."""
    return [float(run[f"top1_{metric}"]) for run in r.get("runs") or [] if run["status"] == "finished"
            and (run.get("health") or {}).get("verdict", "ok") != "ok" and run.get(f"top1_{metric}") is not None]


def save_png_svg(fig: Any, out_dir: Path, stem: str) -> Tuple[Path, Path]:
    """<stem>.png and <stem>.svg in out_dir, written atomically; the SVG without a date and with ids
    seeded by the stem, so that a rebuild from the same runs is byte-identical."""
    import matplotlib

    paths = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": stem}):
            fig.savefig(buf, format=ext, dpi=150 if ext == "png" else None, metadata={"Date": None} if ext == "svg" else None)
        paths.append(atomic_write_bytes(out_dir / f"{stem}.{ext}", buf.getvalue()))
    return paths[0], paths[1]


def _style_top1_axis(ax: Any) -> None:
    """A trajectory panel: top-1 on x, no y ticks (the rows are labelled once), light vertical grid."""
    ax.set_xlabel("top-1 accuracy (%)", fontsize=10.5)
    ax.tick_params(axis="y", left=False, labelleft=False)
    ax.tick_params(axis="x", labelsize=9.5)
    ax.grid(axis="x", color="#DDDDDD", lw=0.7, zorder=1)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


_FS_LABEL, _FS_GROUP, _FS_VAL, _FS_NOTE, _PAD_FRAC = 10.5, 9.5, 9.5, 9, 0.012


def _text_width(fig: Any, renderer: Any, s: str, **kw: Any) -> float:
    """Width in inches of `s` drawn on `fig` with the text properties `kw` (a probe, removed again)."""
    t = fig.text(0, 0, s, **kw)
    w = t.get_window_extent(renderer).width / fig.dpi
    t.remove()
    return w


@dataclass
class _TrajectoryFigure:
    """The trajectory figure being drawn: canvas, row labels, sizes (inches unless noted), panels."""
    fig: Any
    renderer: Any
    n: int
    labels: List[str]
    wrapped: Dict[str, str]  # group name -> its wrapped form
    width: float
    height: float
    x_bracket: float
    left: float
    w_ours: float
    w_paper: float
    bottom: float  # figure fraction
    h: float  # figure fraction
    ax_o: Any
    ax_p: Any  # None where no row has the paper's top-1

    def text_width(self, s: str, **kw: Any) -> float:
        """Width in inches of `s` drawn with the text properties `kw`."""
        return _text_width(self.fig, self.renderer, s, **kw)

    def fig_y(self, y: float) -> float:
        """Figure y of data row `y` (the rows fill the panels' height, the first on top)."""
        return self.bottom + self.h * (self.n - 0.5 - y) / max(self.n, 1)


def _trajectory_figure(rows: List[Dict[str, Any]]) -> _TrajectoryFigure:
    """The figure and its panels, sized to the rows and to the widest step and group labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global state, no display

    n = len(rows)
    has_paper = any(r["paper_top1"] is not None for r in rows)
    row_h, top_in, bottom_in = 0.42, 1.05, 0.95
    height = top_in + bottom_in + row_h * max(n, 1)
    width = 13.0 if has_paper else 10.5
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    labels = [r["label"] + (" (branch)" if r["branch"] else "") for r in rows]
    groups = _uniq(r["group"] for r in rows)
    wrapped = {g: "\n".join(textwrap.wrap(g, 11)) for g in groups}
    w_step = max([_text_width(fig, renderer, s, fontsize=_FS_LABEL) for s in labels] + [0.5])
    w_group = max([_text_width(fig, renderer, wrapped[g], fontsize=_FS_GROUP, fontweight="bold")
                   for g in groups] + [0.3])
    # columns in inches: group names | bracket | step labels | ours | paper
    x_bracket = 0.08 + w_group + 0.08
    left = x_bracket + 0.1 + w_step + 0.12
    panels = width - left - 0.15
    w_ours = panels * (0.6 if has_paper else 1.0) - (0.2 if has_paper else 0)
    w_paper = (panels - w_ours - 0.4)
    bottom, h = bottom_in / height, (row_h * max(n, 1)) / height
    ax_o = fig.add_axes([left / width, bottom, w_ours / width, h])
    ax_p = fig.add_axes([(left + w_ours + 0.4) / width, bottom, w_paper / width, h],
                        sharey=ax_o) if has_paper else None
    ax_o.set_ylim(n - 0.5, -0.5)  # first step on top
    return _TrajectoryFigure(fig, renderer, n, labels, wrapped, width, height, x_bracket, left, w_ours, w_paper,
                             bottom, h, ax_o, ax_p)


def _draw_step_labels(tf: _TrajectoryFigure, rows: List[Dict[str, Any]]) -> None:
    """The step labels, right-aligned left of the panels (side branches in grey italics)."""
    for y, (r, s) in enumerate(zip(rows, tf.labels)):
        style = dict(fontsize=_FS_LABEL, ha="right", va="center")
        if r["branch"]:
            style.update(fontstyle="italic", color="#555555")
        tf.fig.text((tf.left - 0.12) / tf.width, tf.fig_y(y), s, **style)


def _group_spans(rows: List[Dict[str, Any]]) -> List[Tuple[str, int, int]]:
    """Runs of consecutive rows of one group as (group, first row, last row)."""
    spans: List[Tuple[str, int, int]] = []
    for y, r in enumerate(rows):
        if spans and spans[-1][0] == r["group"]:
            spans[-1] = (r["group"], spans[-1][1], y)
        else:
            spans.append((r["group"], y, y))
    return spans


def _draw_groups(tf: _TrajectoryFigure, rows: List[Dict[str, Any]]) -> Dict[int, str]:
    """Group brackets and names, every other group banded; returns each row's background colour."""
    from matplotlib.lines import Line2D

    axes = [a for a in (tf.ax_o, tf.ax_p) if a is not None]
    band = {}
    for k, (group, y0, y1) in enumerate(_group_spans(rows)):
        band.update({y: C_BAND if k % 2 == 1 else "white" for y in range(y0, y1 + 1)})
        xb, tick = tf.x_bracket / tf.width, 0.06 / tf.width
        ya, yb = tf.fig_y(y0 - 0.4), tf.fig_y(y1 + 0.4)
        tf.fig.add_artist(Line2D([xb + tick, xb, xb, xb + tick], [ya, ya, yb, yb], color="#444444", lw=1.1))
        tf.fig.text(xb - 0.05 / tf.width, tf.fig_y((y0 + y1) / 2), tf.wrapped[group], ha="right", va="center",
                    fontsize=_FS_GROUP, fontweight="bold", color="#333333", linespacing=1.0)
        if k % 2 == 1:
            for a in axes:
                a.axhspan(y0 - 0.5, y1 + 0.5, color=C_BAND, zorder=0, lw=0)
    return band


def _ours_note(r: Dict[str, Any], meta: Dict[str, Any], max_n: int) -> str:
    """The text right of a bar: Δ (ablations), GFLOPs, and the seed count where some are missing."""
    note = [f"{r['gflops_224']:.2f} GFLOPs"] if r["gflops_224"] is not None else []
    if r.get("init"):
        note.append(f"init {r['init']}")
    if meta["ablation_mode"] and r["top1_delta"] is not None:
        note.insert(0, f"Δ {r['top1_delta']:+.1f}")
    if r["n"] < max_n or r["state"] == "partial":
        extra = [f"{r[k]} {w}" for k, w in (("n_failed", "failed"), ("n_running", "running"),
                                             ("n_stopped", "stopped")) if r.get(k)]
        note.append(f"n={r['n']}" + "".join(f", {e}" for e in extra))
    if r.get("n_unhealthy"):
        note.append(f"{r['n_unhealthy']} flagged")
    return "  ".join(note)


def _ours_xlim(tf: _TrajectoryFigure, rows: List[Dict[str, Any]], meta: Dict[str, Any],
               max_n: int) -> Tuple[float, float]:
    """Our panel's x-limits: from below the lowest bar to where the text right of every bar fits."""
    done = [r for r in rows if r["top1_mean"] is not None]
    if not done:
        return 0.0, 100.0
    metric = meta.get("metric", "last")
    lo = min([r["top1_mean"] - (r["top1_std"] or 0) for r in done] + [v for r in done for v in flagged_top1(r, metric)])
    hi = max(r["top1_mean"] + (r["top1_std"] or 0) for r in done)
    span = max(hi - lo, 2.0)
    x0 = max(0.0, math.floor(lo - 0.3 * span))
    # wide enough that the text right of every bar fits inside the panel
    need = (hi - x0) * 1.05
    for r in done:
        tw = tf.text_width(_ours_note(r, meta, max_n), fontsize=_FS_NOTE) + 0.05
        if r["top1_mean"] - (r["top1_std"] or 0) - x0 < 0.15 * span:  # value printed outside the bar
            tw += tf.text_width(f"{r['top1_mean']:.1f} ", fontsize=_FS_VAL, fontweight="bold")
        frac = 1 - 2 * _PAD_FRAC - tw / tf.w_ours
        need = max(need, (r["top1_mean"] + (r["top1_std"] or 0) - x0) / max(frac, 0.2))
    return x0, x0 + need


def _draw_ours_bar(tf: _TrajectoryFigure, y: int, r: Dict[str, Any], note: str, bg: str,
                   x0: float, pad: float, per_inch: float) -> None:
    """A row with a mean: its bar, error bar, value (inside the bar where it fits) and note."""
    ax_o, m = tf.ax_o, r["top1_mean"]
    kw = dict(height=0.66, left=x0, zorder=2, linewidth=1.0)
    if r["branch"]:
        ax_o.barh(y, m - x0, color="#C9D6EA", edgecolor=C_OURS_EDGE, hatch="///", **kw)
    else:
        ax_o.barh(y, m - x0, color=C_OURS, edgecolor=C_OURS_EDGE, **kw)
    sd = r["top1_std"] or 0.0
    if r["top1_std"] is not None:
        ax_o.errorbar(m, y, xerr=sd, fmt="none", ecolor="black", elinewidth=1.1, capsize=3.5, zorder=3)
    value = f"{m:.1f}"
    w_val = tf.text_width(value, fontsize=_FS_VAL, fontweight="bold") * per_inch
    inside = m - sd - 2 * pad - w_val > x0
    x_note = m + sd + pad
    if inside:  # inside the bar, left of the error bar
        box = dict(facecolor="white", edgecolor="none", pad=0.6, alpha=0.85) if r["branch"] else None
        ax_o.text(m - sd - pad, y, value, ha="right", va="center", fontsize=_FS_VAL, fontweight="bold",
                  color=C_OURS_EDGE if r["branch"] else "white", zorder=4, bbox=box)
    else:
        ax_o.text(x_note, y, value, ha="left", va="center", fontsize=_FS_VAL, fontweight="bold", zorder=4)
        x_note += w_val + pad
    ax_o.text(x_note, y, note, ha="left", va="center", fontsize=_FS_NOTE, color="#333333", zorder=4,
              bbox=dict(facecolor=bg, edgecolor="none", pad=1.0))


def _draw_ours_unfinished(ax_o: Any, y: int, r: Dict[str, Any], x0: float, x1: float, pad: float) -> None:
    """A row without a mean: an empty dashed (failed) or dotted (running) bar, else 'missing'."""
    state = r["state"]
    if state in ("failed", "running", "stopped"):
        red = state in ("failed", "stopped")
        ax_o.barh(y, 0.45 * (x1 - x0), left=x0, height=0.66, fill=False, zorder=2,
                  edgecolor=C_FAIL if red else "#777777", linestyle="--" if red else ":", linewidth=1.3)
        text = "failed" if state == "failed" else "stopped: unhealthy" if state == "stopped" else \
            (r["status"].replace(" of ", "/") if r["status"].startswith("running (") else "running")
        ax_o.text(x0 + pad, y, text, ha="left", va="center", fontsize=_FS_VAL, fontweight="bold",
                  color=C_FAIL if red else "#555555", zorder=4)
    else:
        ax_o.text(x0 + pad, y, "missing", ha="left", va="center", fontsize=_FS_VAL,
                  fontstyle="italic", color="#777777", zorder=4)


def _ours_title(meta: Dict[str, Any]) -> str:
    """Our panel's title: dataset, scale, image size, width, epochs and seeds."""
    seeds = _join(meta["seeds"])
    return (f"Ours: {meta['dataset']}"
            + (f" ({meta['num_classes']} classes)" if meta.get("num_classes") else "")
            + f", {meta['scale']} scale\n{_join(meta['img_size'])} px, width ×{_join(meta['width_mult'])}, "
            f"{_join(meta['epochs'])} epoch{'s' if meta['epochs'] != [1] else ''}, "
            f"seed{'s' if len(meta['seeds']) != 1 else ''} {seeds}")


def _draw_ours(tf: _TrajectoryFigure, rows: List[Dict[str, Any]], meta: Dict[str, Any],
               band: Dict[int, str]) -> None:
    """Our panel: x-limits, one bar (or empty row) per step, style, title, the full model's line."""
    max_n = max((r["n"] for r in rows), default=0)
    x0, x1 = _ours_xlim(tf, rows, meta, max_n)
    tf.ax_o.set_xlim(x0, x1)
    pad = _PAD_FRAC * (x1 - x0)
    per_inch = (x1 - x0) / tf.w_ours
    for y, r in enumerate(rows):
        if r["top1_mean"] is not None:
            _draw_ours_bar(tf, y, r, _ours_note(r, meta, max_n), band.get(y, "white"), x0, pad, per_inch)
            for v in flagged_top1(r, meta.get("metric", "last")):
                tf.ax_o.plot([v], [y], **FLAGGED)
        else:
            _draw_ours_unfinished(tf.ax_o, y, r, x0, x1, pad)
    _style_top1_axis(tf.ax_o)
    tf.ax_o.set_title(_ours_title(meta), fontsize=10.5, loc="left")
    if meta["ablation_mode"]:
        full = next((r for r in rows if r["ablation"] == "none" and r["top1_mean"] is not None), None)
        if full is not None:
            tf.ax_o.axvline(full["top1_mean"], color="#333333", ls="--", lw=1, zorder=1.5)


def _draw_paper(tf: _TrajectoryFigure, rows: List[Dict[str, Any]], meta: Dict[str, Any],
                band: Dict[int, str]) -> None:
    """The paper's panel: its top-1 per step as markers (main path joined), values, Swin's line."""
    ax_p = tf.ax_p
    pv = [(y, r) for y, r in enumerate(rows) if r["paper_top1"] is not None]
    vals = [r["paper_top1"] for _, r in pv]
    swin = meta.get("swin") or {}
    lo, hi = min(vals), max(vals + ([swin["top1"]] if swin.get("top1") else []))
    p0 = math.floor(lo - 0.6)
    need = (hi - p0) * 1.05
    for _, r in pv:
        tw = tf.text_width(f"{r['paper_top1']:.2f}  ({r['paper_gflops'] or 0:.2f} GF)", fontsize=9) + 0.05
        need = max(need, (r["paper_top1"] - p0) / max(1 - 0.035 - tw / tf.w_paper, 0.2))
    p1 = p0 + need
    ax_p.set_xlim(p0, p1)
    main_pts = [(r["paper_top1"], y) for y, r in pv if not r["branch"]]
    if len(main_pts) > 1:
        ax_p.plot([x for x, _ in main_pts], [y for _, y in main_pts], color=C_PAPER, lw=1.0, alpha=0.55, zorder=2)
    for y, r in pv:
        ax_p.plot([r["paper_top1"]], [y], marker="D", markersize=7.5, zorder=3, linestyle="none",
                  markerfacecolor="white" if r["branch"] else C_PAPER, markeredgecolor=C_PAPER, markeredgewidth=1.5)
        text = f"{r['paper_top1']:.2f}"
        if r["paper_gflops"] is not None:
            text += f"  ({r['paper_gflops']:.2f} GF)"
        ax_p.text(r["paper_top1"] + 0.035 * (p1 - p0), y, text, ha="left", va="center", fontsize=9,
                  color="#333333", zorder=4, bbox=dict(facecolor=band.get(y, "white"), edgecolor="none", pad=1.0))
    if swin.get("top1"):
        ax_p.axvline(swin["top1"], color="#777777", ls="--", lw=1.0, zorder=1.5)
    _style_top1_axis(ax_p)
    ax_p.set_title(f"Paper: ImageNet-1K, 224 px\n({meta['paper_cite_short']})", fontsize=10.5, loc="left")


def _trajectory_suptitle(meta: Dict[str, Any]) -> str:
    """The figure's title: the ablation, another roadmap's endpoints, or the main roadmap's."""
    ends = meta["endpoints"]
    if meta["ablation_mode"]:
        return "Leave-one-out ablation: ConvNeXt with each change reverted alone"
    if any(r != MAIN_ROADMAP for r in meta["roadmaps"]):
        other = meta.get("other_endpoints")
        return f"{other['start']} → {other['end']}, step by step" if other else \
            "Roadmap trajectory (" + ", ".join(meta["roadmaps"]) + ")"
    return f"Modernizing a ConvNet: {ends.get('start', 'ResNet')} → {ends.get('end', 'ConvNeXt')}, step by step"


def _trajectory_legend(fig: Any, rows: List[Dict[str, Any]], meta: Dict[str, Any], has_paper: bool) -> None:
    """The legend below the panels: only the entries the figure shows."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=C_OURS, edgecolor=C_OURS_EDGE, label=f"ours: mean top-1 over seeds ({meta.get('metric', 'last')} epoch)"),
               Line2D([], [], color="black", marker="|", markersize=9, lw=1.1, label="±1 std over seeds (ddof=1)")]
    if any(r["branch"] for r in rows):
        handles.append(Patch(facecolor="#C9D6EA", edgecolor=C_OURS_EDGE, hatch="///", label="side branch (kernel size)"))
    if meta["ablation_mode"] and any(r["ablation"] == "none" and r["top1_mean"] is not None for r in rows):
        handles.append(Line2D([], [], color="#333333", ls="--", lw=1, label="full model (mean)"))
    if any(r["state"] == "failed" for r in rows):
        handles.append(Patch(fill=False, edgecolor=C_FAIL, linestyle="--", label="failed step"))
    if any(r["state"] == "stopped" for r in rows):
        handles.append(Patch(fill=False, edgecolor=C_FAIL, linestyle="--", label="stopped as unhealthy (scale.on_unhealthy=stop)"))
    if any(flagged_top1(r, meta.get("metric", "last")) for r in rows):
        handles.append(_flagged_handle())
    if has_paper:
        handles.append(Line2D([], [], color=C_PAPER, marker="D", linestyle="none", markersize=7, label="paper top-1"))
        if meta.get("swin"):
            handles.append(Line2D([], [], color="#777777", ls="--", lw=1,
                                  label=f"paper: {meta['swin']['name']} ({meta['swin']['top1']:.1f})"))
    handles.append(Line2D([], [], color="none", label="beside bars: GFLOPs at 224 px, full width (fvcore); the runs' init"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=9.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=1.8, columnspacing=1.6)


def plot_trajectory(rows: List[Dict[str, Any]], meta: Dict[str, Any], out_dir: PathLike) -> Tuple[Path, Path]:
    """trajectory.png and .svg: labels | our bars (mean ± std) | the paper's top-1 as markers."""
    out_dir = Path(out_dir)
    tf = _trajectory_figure(rows)
    _draw_step_labels(tf, rows)
    band = _draw_groups(tf, rows)
    _draw_ours(tf, rows, meta, band)
    if tf.ax_p is not None:
        _draw_paper(tf, rows, meta, band)
    tf.fig.suptitle(_trajectory_suptitle(meta), fontsize=13, fontweight="bold", x=0.01, ha="left",
                    y=1 - 0.12 / tf.height)
    _trajectory_legend(tf.fig, rows, meta, has_paper=tf.ax_p is not None)
    return save_png_svg(tf.fig, out_dir, "trajectory")


# =============================================================================================
# Shared by the learning curves and the cost-accuracy plot: one colour per step, roadmap order
# =============================================================================================
def step_colours(rows: Sequence[Dict[str, Any]]) -> Dict[int, Any]:
    """Row position -> colour, from dark (first step) to light (last) along viridis (its too-light
    yellow end left out), so a step's place on the roadmap reads from its colour in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = len(rows)
    return {i: cmap(0.88 * i / max(n - 1, 1)) for i in range(n)}


def _tag(r: Dict[str, Any]) -> str:
    return str(r["order"]) if r["order"] >= 0 else "·"


def _scale_line(meta: Dict[str, Any]) -> str:
    return (f"{meta['dataset']}, {meta['scale']} scale ({_join(meta['img_size'])} px, width ×{_join(meta['width_mult'])}, "
            f"seed{'s' if len(meta['seeds']) != 1 else ''} {_join(meta['seeds'])})")


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Any) -> None:
    ax.grid(color="#DDDDDD", lw=0.7, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9.5)


# =============================================================================================
# Learning curves
# =============================================================================================
def _mean_band(series: List[List[Tuple[int, float]]]) -> Tuple[List[int], List[float], List[float], List[float], List[int]]:
    """Per epoch over the runs that have it: epochs, mean, min, max, count."""
    by_epoch: Dict[int, List[float]] = defaultdict(list)
    for s in series:
        for e, v in s:
            by_epoch[e].append(v)
    es = sorted(by_epoch)
    return (es, [sum(by_epoch[e]) / len(by_epoch[e]) for e in es], [min(by_epoch[e]) for e in es],
            [max(by_epoch[e]) for e in es], [len(by_epoch[e]) for e in es])


def _draw_flagged_curves(ax: Any, runs: List[Dict[str, Any]], key: str, colour: Any) -> None:
    """Each flagged run's own curve over its step's mean: thin, dotted, hollow red markers."""
    for run in runs:
        if (run.get("health") or {}).get("verdict", "ok") != "ok" and run["curves"][key]:
            xs, ys = zip(*run["curves"][key])
            ax.plot(xs, ys, color=colour, lw=1.0, ls=":", zorder=4)
            ax.plot(xs, ys, **{**FLAGGED, "markersize": 5.5})


def plot_learning_curves(rows: List[Dict[str, Any]], meta: Dict[str, Any], out_dir: PathLike) -> Tuple[Path, Path]:
    """learning_curves.png/.svg: validation top-1 (evaluated epochs) and training loss per epoch,
    one line per step (mean over its finished seeds, band min–max), coloured in roadmap order."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    colours = step_colours(rows)
    fig = _new_figure(14.0, 6.2)
    ax_top, ax_loss = fig.add_axes([0.055, 0.13, 0.34, 0.72]), fig.add_axes([0.45, 0.13, 0.34, 0.72])
    drawn: List[Tuple[int, Dict[str, Any]]] = []
    for i, r in enumerate(rows):
        fin = [run for run in r["runs"] if run["status"] == "finished" and run.get("curves")]
        if not fin:
            continue
        style = dict(color=colours[i], lw=1.8 if not r["branch"] else 1.4, ls="--" if r["branch"] else "-",
                     zorder=3, alpha=0.95)
        any_line = False
        for ax, key, marker in ((ax_top, "top1", "o"), (ax_loss, "train_loss", None)):
            es, mean, lo, hi, k = _mean_band([run["curves"][key] for run in fin])
            if not es:
                continue
            any_line = True
            ax.plot(es, mean, marker=marker, markersize=4.5 if marker else 0, **style)
            if max(k) > 1:
                ax.fill_between(es, lo, hi, color=colours[i], alpha=0.13, lw=0, zorder=2)
            _draw_flagged_curves(ax, fin, key, colours[i])
        if any_line:
            drawn.append((i, r))
    chance = 100.0 / meta["num_classes"] if meta.get("num_classes") else None
    if chance is not None:
        ax_top.axhline(chance, color="#777777", ls=":", lw=1.2, zorder=1)
        ax_top.annotate(f"chance {chance:.0f} %", xy=(0.01, chance), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=9, color="#555555")
    metric_note = "evaluated epochs" + (f"; the table uses the {meta.get('metric', 'last')} one" if meta.get("metric") else "")
    ax_top.set_title(f"validation top-1 (%) ({metric_note})", fontsize=11, loc="left")
    ax_loss.set_title("training loss (mean over the epoch's batches)", fontsize=11, loc="left")
    for ax in (ax_top, ax_loss):
        _style(ax)
        ax.set_xlabel("epoch", fontsize=10.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not drawn:
        for ax in (ax_top, ax_loss):
            ax.text(0.5, 0.5, "no history.csv in the finished runs", ha="center", va="center",
                    transform=ax.transAxes, fontsize=11, color="#777777")
    handles = [Line2D([], [], color=colours[i], lw=2, ls="--" if r["branch"] else "-",
                      label=f"{_tag(r)}  {r['label']}" + (" (branch)" if r["branch"] else "")) for i, r in drawn]
    if any(r.get("n_unhealthy") for _, r in drawn):
        handles.append(_flagged_handle())
    if handles:
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.805, 0.86), fontsize=9.5, frameon=False,
                   title="step (roadmap order)", title_fontsize=10, alignment="left", handlelength=2.2)
    seeds = "mean over seeds, band: min–max over seeds" if any(r["n"] > 1 for _, r in drawn) else "one seed per step"
    fig.suptitle(f"Learning curves: {_scale_line(meta)}", fontsize=13, fontweight="bold", x=0.01, ha="left", y=0.975)
    fig.text(0.01, 0.905, f"Every step of the sweep, coloured from the first (dark) to the last (light); {seeds}.",
             fontsize=10, color="#333333")
    return save_png_svg(fig, out_dir, "learning_curves")


# =============================================================================================
# Cost vs accuracy
# =============================================================================================
def _label_points(ax: Any, pts: List[Tuple[float, float, str]]) -> None:
    """Tag each point with its step number where the tag overlaps no other tag and no marker:
    right, left, above, below or diagonal of the point, the first free place (greedy, in display
    coordinates); where none is free, the least crowded."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.margins(x=0.1, y=0.06)  # room for the tags of the outermost points
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())  # freeze the limits: the placement is in display coordinates
    ax.set_ylim(ax.get_ylim())
    to_px = ax.transData.transform
    scale = fig.dpi / 72.0
    r_marker = 6.0 * scale
    markers = [to_px((x, y)) for x, y, _ in pts]
    placed: List[Tuple[float, float, float, float]] = []
    candidates = [(9, 0, "left", "center"), (-9, 0, "right", "center"), (0, 10, "center", "bottom"),
                  (0, -10, "center", "top"), (8, 8, "left", "bottom"), (-8, 8, "right", "bottom"),
                  (8, -8, "left", "top"), (-8, -8, "right", "top"), (16, 0, "left", "center"),
                  (-16, 0, "right", "center")]

    def overlap(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    for k, (x, y, tag) in enumerate(pts):
        probe = ax.text(0, 0, tag, fontsize=9.5, fontweight="bold")
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width, ext.height
        px, py = markers[k]
        best, best_cost = None, None
        for dx, dy, ha, va in candidates:
            ox, oy = px + dx * scale, py + dy * scale
            x0 = ox if ha == "left" else ox - w if ha == "right" else ox - w / 2
            y0 = oy if va == "bottom" else oy - h if va == "top" else oy - h / 2
            box = (x0, y0, x0 + w, y0 + h)
            cost = sum(overlap(box, b) for b in placed)
            cost += sum(overlap(box, (mx - r_marker, my - r_marker, mx + r_marker, my + r_marker))
                        for j, (mx, my) in enumerate(markers) if j != k)
            if best_cost is None or cost < best_cost:
                best, best_cost = (dx, dy, ha, va, box), cost
            if cost == 0:
                break
        dx, dy, ha, va, box = best
        placed.append(box)
        ax.annotate(tag, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=9.5, fontweight="bold",
                    color="#222222", ha=ha, va=va, zorder=5)


def swin_point(meta: Dict[str, Any]) -> Optional[Tuple[float, float, str]]:
    swin = meta.get("swin") or {}
    return (swin["gflops"], swin["top1"], swin["name"]) if swin.get("top1") and swin.get("gflops") else None


def plot_cost_accuracy(rows: List[Dict[str, Any]], meta: Dict[str, Any], out_dir: PathLike) -> Tuple[Path, Path]:
    """cost_accuracy.png/.svg: GFLOPs at 224 px (x) vs top-1 (y) per step, our panel beside the
    paper's (ablations: ours only); main-path steps joined in roadmap order, branches hollow."""
    from matplotlib.lines import Line2D

    out_dir = Path(out_dir)
    colours = step_colours(rows)
    has_paper = any(r["paper_top1"] is not None and r["paper_gflops"] is not None for r in rows)
    fig = _new_figure(15.0 if has_paper else 11.0, 6.6)
    if has_paper:
        ax_o, ax_p = fig.add_axes([0.05, 0.11, 0.31, 0.70]), fig.add_axes([0.42, 0.11, 0.31, 0.70])
    else:
        ax_o, ax_p = fig.add_axes([0.07, 0.11, 0.55, 0.70]), None
    panels = [(ax_o, "gflops_224", "top1_mean", "top1_std")] + ([(ax_p, "paper_gflops", "paper_top1", None)] if ax_p else [])
    for ax, xk, yk, ek in panels:
        pts = [(i, r) for i, r in enumerate(rows) if r.get(xk) is not None and r.get(yk) is not None]
        path = [(r[xk], r[yk]) for _, r in pts if not r["branch"]]
        if len(path) > 1:
            ax.plot([x for x, _ in path], [y for _, y in path], color="#999999", lw=1.0, zorder=2)
        for i, r in pts:
            if ek and r.get(ek) is not None:
                ax.errorbar(r[xk], r[yk], yerr=r[ek], fmt="none", ecolor="#555555", elinewidth=1.0, capsize=3, zorder=3)
            for v in flagged_top1(r, meta.get("metric", "last")) if ek else []:
                ax.plot([r[xk]], [v], **FLAGGED)
            ax.plot([r[xk]], [r[yk]], marker="o" if ek else "D", markersize=9 if ek else 8, linestyle="none", zorder=4,
                    markerfacecolor="white" if r["branch"] else colours[i], markeredgecolor=colours[i],
                    markeredgewidth=1.8)
        _style(ax)
        if ax is ax_p and swin_point(meta):
            sx, sy, name = swin_point(meta)
            ax.plot([sx], [sy], marker="*", markersize=12, color="#777777", linestyle="none", zorder=4)
            ax.annotate(name, (sx, sy), xytext=(0, -11), textcoords="offset points", fontsize=9.5, color="#555555",
                        ha="center", va="top")
        _label_points(ax, [(r[xk], r[yk], _tag(r)) for _, r in pts])
        ax.set_xlabel("GFLOPs at 224 px, width ×1, 1000 classes" + (" (fvcore)" if ek else ""), fontsize=10.5)
        ax.set_ylabel("top-1 (%)", fontsize=10.5)
        if not pts:
            ax.text(0.5, 0.5, "no finished step", ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax_o.set_title(f"Ours: {meta['dataset']}, {meta['scale']} scale\nmean top-1 ({meta.get('metric', 'last')} epoch) "
                   f"± std over seeds", fontsize=10.5, loc="left")
    if ax_p is not None:
        ax_p.set_title(f"Paper: ImageNet-1K, 224 px\n({meta['paper_cite_short']})", fontsize=10.5, loc="left")
    key = [r for r in rows if r.get("gflops_224") is not None or r.get("paper_gflops") is not None]
    handles = [Line2D([], [], marker="o", linestyle="none", markersize=8, markeredgewidth=1.6,
                      markerfacecolor="white" if r["branch"] else colours[rows.index(r)],
                      markeredgecolor=colours[rows.index(r)],
                      label=f"{_tag(r)}  {r['label']}" + (" (branch)" if r["branch"] else "")) for r in key]
    if any(flagged_top1(r, meta.get("metric", "last")) for r in rows):
        handles.append(_flagged_handle())
    if handles:
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.755 if has_paper else 0.65, 0.86),
                   fontsize=9.5, frameon=False, title="step (roadmap order)", title_fontsize=10, alignment="left")
    fig.suptitle("Cost vs accuracy: " + ("ours beside the paper" if has_paper else _scale_line(meta)),
                 fontsize=13, fontweight="bold", x=0.01, ha="left", y=0.975)
    fig.text(0.01, 0.905, "x: the architecture's cost at the paper's size (not at the trained scale); grey line: the "
             "main path in roadmap order; hollow: side branch.", fontsize=10, color="#333333")
    return save_png_svg(fig, out_dir, "cost_accuracy")


def plot_all(rows: List[Dict[str, Any]], meta: Dict[str, Any], out_dir: PathLike) -> List[str]:
    """Every figure; returns their stems in the order trajectory.md shows them."""
    plot_trajectory(rows, meta, out_dir)
    plot_learning_curves(rows, meta, out_dir)
    plot_cost_accuracy(rows, meta, out_dir)
    return ["trajectory", "learning_curves", "cost_accuracy"]
