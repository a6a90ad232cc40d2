"""Rows and scores as files people and programs read: trajectory.csv (full precision, one row per
step), trajectory.md (what was run, the scores, the table, the figures) and the lines printed by
the CLI."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from .. import ridealong
from ..files import markdown_table
from .paper import BIG_STEP_MIN, MAIN_ROADMAP
from .stats import PAIRED_FORMULA, PI_FORMULA, PI_LEVEL, SE_FORMULA, STD_NOTE

# trajectory.csv columns, in order (new columns are appended, so older readers keep working)
FIELDS = [
    "order", "step", "label", "group", "branch", "roadmap", "ablation", "variant", "delta_vs",
    "top1_mean", "top1_std", "n", "seeds", "top1_delta", "top1_delta_se", "top5_mean",
    "paper_top1", "paper_delta", "gflops_224", "paper_gflops", "gflops", "img_size",
    "params", "params_224", "train_img_s", "eval_img_s", "wall_s_mean", "wall_s_total",
    "state", "status", "n_finished", "n_failed", "n_running", "n_missing",
    "top1_delta_paired", "top1_delta_paired_se", "n_pairs", "metric", "top1_last_mean", "top1_best_mean",
    "best_epoch_mean", "top1_pi_low", "top1_pi_high",
    # the health rule (docs/health.md): flagged runs, and the second set of numbers without them
    "init", "n_unhealthy", "n_stopped", "unhealthy", "top1_mean_healthy", "top1_std_healthy", "n_healthy",
    "top1_delta_paired_healthy", "top1_delta_paired_se_healthy",
]
# figures written next to trajectory.md: file stem -> what it shows
FIGURES = {
    "trajectory": "top-1 per step, ours beside the paper's (Figure 2 style)",
    "learning_curves": "top-1 and training loss per epoch of every step (history.csv; mean over seeds, band: min–max)",
    "cost_accuracy": "GFLOPs at 224 px vs top-1, ours beside the paper's",
}


def _r(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, nd)
    return x


def csv_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for r in rows:
        row = {k: _r(r.get(k)) for k in FIELDS}
        row["branch"] = int(bool(r["branch"]))
        out.append({k: ("" if v is None else v) for k, v in row.items()})
    return out


def fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _f(x: Optional[float], nd: int = 2, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def join(values: List[Any]) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


def _delta_cell(r: Dict[str, Any]) -> str:
    """Paired Δ ± SE where the two steps share seeds, else the difference of means ± its SE."""
    if r.get("n_pairs"):
        text = _f(r["top1_delta_paired"], sign=True)
        if r["top1_delta_paired_se"] is not None:
            text += f" ± {r['top1_delta_paired_se']:.2f}"
        if r["n_pairs"] != r["n"]:
            text += f" ({r['n_pairs']} pair{'s' if r['n_pairs'] != 1 else ''})"
        return text
    text = _f(r["top1_delta"], sign=True)
    if r["top1_delta"] is not None:
        if r["top1_delta_se"] is not None:
            text += f" ± {r['top1_delta_se']:.2f}"
        text += " (unpaired)"
    return text


def _md_rows(rows: List[Dict[str, Any]], ablation_mode: bool) -> List[Dict[str, Any]]:
    out = []
    for r in rows:
        label = r["label"].replace("|", "\\|")
        if r["branch"]:
            label = f"↳ *{label}* (branch)"
        top1 = "—" if r["top1_mean"] is None else f"{r['top1_mean']:.2f} ({r['n']})" if r["top1_std"] is None \
            else f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} ({r['n']})"
        out.append({
            "order": r["order"] if r["order"] >= 0 else "", "label": label, "step": f"`{r['step'] if not ablation_mode else r['ablation']}`",
            "top1": top1, "pi": "—" if r.get("top1_pi_low") is None else f"{r['top1_pi_low']:.1f} – {r['top1_pi_high']:.1f}",
            "delta": _delta_cell(r), "paper": _f(r["paper_top1"]), "paper_delta": _f(r["paper_delta"], sign=True),
            "g224": _f(r["gflops_224"]), "pg": _f(r["paper_gflops"]), "g": _f(r["gflops"], 3),
            "params": "—" if r["params"] is None else f"{r['params'] / 1e6:.2f}M",
            "params224": "—" if r["params_224"] is None else f"{r['params_224'] / 1e6:.2f}M",
            "ips": "—" if r["train_img_s"] is None else f"{r['train_img_s']:.0f}",
            "wall": fmt_seconds(r["wall_s_mean"]), "status": r["status"].replace("|", "\\|"),
            "init": r.get("init") or "—", "health": _health_cell(r),
        })
    return out


def _health_cell(r: Dict[str, Any]) -> str:
    """The per-step table's health column: ok, or the flagged runs and the mean without them."""
    if not r.get("unhealthy"):
        return "ok"
    text = "⚠ " + r["unhealthy"]
    if r.get("n_unhealthy"):
        m = r.get("top1_mean_healthy")
        text += f"; without: {m:.2f} ({r['n_healthy']})" if m is not None else "; without: —"
    return text.replace("|", "\\|")


def title(meta: Dict[str, Any]) -> str:
    ends = meta["endpoints"]
    text = "Leave-one-out ablation" if meta["ablation_mode"] else \
        f"{ends.get('start', 'ResNet')} → {ends.get('end', 'ConvNeXt')} trajectory"
    if any(r != MAIN_ROADMAP for r in meta["roadmaps"]):
        other = meta.get("other_endpoints")
        text = f"{other['start']} → {other['end']} trajectory" if other else \
            "Roadmap trajectory (" + ", ".join(meta["roadmaps"]) + ")"
    return text


def big_step_table(summary: Dict[str, Any]) -> List[str]:
    bs = summary.get("big_steps") or {}
    if not bs.get("steps"):
        return []
    rows = []
    for s in bs["steps"]:
        if s["ours"] is None:
            ours, beyond, agrees = "—", "—", "—"
        else:
            ours = f"{s['ours']:+.2f}" + (f" ± {s['se']:.2f}" if s["se"] is not None else "") + f" ({s['n']})"
            beyond = "—" if s["beyond_2se"] is None else ("yes" if s["beyond_2se"] else "no")
            agrees = "yes" if s["sign_agrees"] else "**no**"
        rows.append({"step": f"`{s['step']}`", "label": s["label"], "vs": f"`{s['vs']}`",
                     "paper": f"{s['paper_delta']:+.2f}", "ours": ours, "beyond": beyond, "agrees": agrees})
    return ["### Big steps", "",
            markdown_table(rows, ["step", "label", "vs", "paper", "ours", "beyond", "agrees"],
                           ["step", "", "Δ vs", "paper Δ", "our paired Δ ± SE (n seeds)", "beyond 2 SE",
                            "sign agrees"], align="lllrrll"),
            f"Big steps: the main-path steps whose paper Δ vs the previous main-path step is ≥ {BIG_STEP_MIN} "
            f"points (rounded to 0.01). Paired Δ: {PAIRED_FORMULA} (same seed: same initialisation and data "
            f"order). Beyond 2 SE: |Δ| > 2 SE; with one seed there is no SE.", ""]


def paper_differences(meta: Dict[str, Any]) -> str:
    """How the runs' setting differs from the paper's ImageNet-1K training (the report's header)."""
    cfg = meta.get("config") or {}
    out = []
    if meta["dataset"] != "imagenet":
        out.append(f"data {meta['dataset']}" + (f" ({meta['train_images']} train images)" if meta["train_images"] else ""))
    if any(s != 224 for s in meta["img_size"]):
        out.append(f"{join(meta['img_size'])} px instead of 224")
    if any(w != 1 for w in meta["width_mult"]):
        out.append(f"width × {join(meta['width_mult'])}")
    if meta["epochs"] and not set(meta["epochs"]) <= {90, 300}:
        out.append(f"{join(meta['epochs'])} epochs instead of the recipes' 90 (classic) / 300 (modern)")
    scale = cfg.get("scale") or {}
    if scale.get("augment") == "off":
        out.append("the recipe's RandAugment, Mixup/CutMix and random erasing off")
    if scale.get("regularization") == "budget":
        out.append("the recipe's regularisation scaled to the budget (scale.regularization=budget)")
    return "; ".join(out) or "none recorded"


def path_configs(rows: List[Dict[str, Any]]) -> List[Tuple[str, Dict[str, Any]]]:
    """(step, resolved config of its first finished run) along the path, side branches and variants left out."""
    out = []
    for r in rows:
        config = next((run["config"] for run in r["runs"] if run.get("status") == "finished" and run.get("config")), None)
        if config and not r["branch"] and not r["variant"]:
            out.append((r["step"], config))
    return out


def _header_lines(summary: Dict[str, Any], meta: Dict[str, Any], command: str) -> List[str]:
    """The bullets under the title: data, scale, how it differs from the paper, seeds, devices, time, runs."""
    img = join(meta["img_size"])
    devices = ", ".join(f"{d} ({n} runs)" for d, n in meta["devices"].most_common()) or "—"
    data = meta["dataset"]
    if meta["num_classes"]:
        data += f" ({meta['num_classes']} classes"
        if meta["train_images"]:
            data += f"; {meta['train_images']} train / {meta['val_images']} val images"
        data += ")"
    wall = f"{fmt_seconds(meta['wall_seconds'])} over {summary['runs']['finished']} finished runs"
    if meta["wall_seconds_partial"]:
        wall += f" (+ {fmt_seconds(meta['wall_seconds_partial'])} of training in unfinished runs)"
    counts = summary["runs"]
    metric = meta["metric"]
    lines = [
        f"# {title(meta)}: {meta['dataset']}, {meta['scale']} scale",
        "",
        f"- **Dataset:** {data}",
        f"- **Scale:** `{meta['scale']}`: {img} px, width × {join(meta['width_mult'])}, "
        f"{join(meta['epochs'])} epoch{'s' if meta['epochs'] != [1] else ''}" + (f", global batch {join(meta['global_batch'])}" if meta["global_batch"] else ""),
        f"- **Differs from the paper:** {paper_differences(meta)}",
        f"- **Regime:** `{meta['regime']}` (paper columns: {meta['paper_cite']}, ImageNet-1K at 224 px)",
        f"- **Metric:** `{metric}`: {meta['metric_note']}. The official ConvNeXt code reports the best epoch; "
        f"the report's option `--metric {'best' if metric == 'last' else 'last'}` gives the other.",
        f"- **Seeds:** {join(meta['seeds'])}",
        f"- **Device(s):** {devices}",
        f"- **Total wall time:** {wall}",
        f"- **Runs:** {counts['finished']} finished, {counts['failed']} failed, {counts['running']} running or "
        f"interrupted, {counts['missing']} missing" + (f", {counts['stopped']} stopped as unhealthy (not averaged)"
                                                        if counts.get("stopped") else ""),
        f"- **Health:** {health_line(summary)}",
        f"- **Sweep:** {', '.join(f'`{d}`' for d in meta['sweep_dirs'])}"
        + (f" (experiment `{meta['experiment']}`)" if meta["experiment"] else ""),
        f"- **Date:** report generated {meta['generated']}"
        + (f"; runs finished {meta['finished_range'][0]} – {meta['finished_range'][1]}" if meta["finished_range"] else "")
        + (f"; code {', '.join(meta['git_commits'])}" if meta["git_commits"] else ""),
    ]
    if command:
        lines.append(f"- **Report:** `{command}`")
    return lines


def _step_table(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> List[str]:
    """The per-step (or per-variant) table."""
    img, metric = join(meta["img_size"]), meta["metric"]
    lines = ["## Per variant" if meta["ablation_mode"] else "## Per step", ""]
    if meta["ablation_mode"]:
        fields = ["label", "step", "top1", "pi", "delta", "g224", "g", "params", "ips", "wall", "status"]
        headers = ["variant", "ablation", f"top-1 ({metric}) mean ± std (n)", "new seed, 95 %", "Δ vs full model", "GFLOPs@224",
                   f"GFLOPs@{img}", "params", "train img/s", "wall/run", "status"]
    else:
        fields = ["order", "label", "top1", "pi", "delta", "paper", "paper_delta", "g224", "pg", "g", "params",
                  "params224", "ips", "wall", "status"]
        headers = ["#", "step", f"top-1 ({metric}) mean ± std (n)", "new seed, 95 %", "Δ", "paper top-1", "paper Δ", "GFLOPs@224",
                   "paper GFLOPs", f"GFLOPs@{img}", "params", "params@224", "train img/s", "wall/run", "status"]
    fields, headers = fields + ["init", "health"], headers + ["init", "health (docs/health.md)"]
    lines.append(markdown_table(_md_rows(rows, meta["ablation_mode"]), fields, headers,
                                align="l" * 2 + "r" * (len(fields) - 5) + "lll"))
    return lines


def health_line(summary: Dict[str, Any]) -> str:
    """The header's count of the runs the health rule flags."""
    h = summary.get("health") or {}
    counts, n = summary["runs"], h.get("flagged", 0)
    if not n:
        return f"no run flagged by the health rule (docs/health.md) among {counts['finished']} finished"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted((h.get("by_verdict") or {}).items()))
    return (f"**{n} run{'s' if n != 1 else ''} flagged** by the health rule (docs/health.md): {kinds}; "
            f"{counts.get('unhealthy', 0)} of the {counts['finished']} finished runs. The primary numbers include "
            f"every finished run, as pre-registered; the same scores without the flagged runs follow them (Summary), "
            f"the runs are listed under Health")


def health_section(summary: Dict[str, Any]) -> List[str]:
    """Every flagged run: step, seed, status, verdict, epoch, top-1 and the rule's reason."""
    runs = (summary.get("health") or {}).get("runs") or []
    if not runs:
        return []
    rows = [{"step": f"`{r['step']}`" + (f" [{r['variant']}]" if r["variant"] else ""), "seed": r["seed"],
             "status": r["status"], "verdict": f"**{r['verdict']}**", "epoch": r["epoch"] if r["epoch"] else "—",
             "top1": _f(r.get("top1")), "reason": str(r["reason"]).replace("|", "\\|"),
             "dir": f"`{r['run_dir']}`"} for r in runs]
    return ["## Health", "",
            "Runs the health rule flags (roadmap/health.py; thresholds and calibration in docs/health.md). A finished "
            "flagged run counts in the primary numbers; a run stopped by `scale.on_unhealthy=stop` is not averaged.", "",
            markdown_table(rows, ["step", "seed", "status", "verdict", "epoch", "top1", "reason", "dir"],
                           ["step", "seed", "status", "verdict", "epoch", "top-1", "reason", "run"], align="lrllrrll"), ""]


def _notes(meta: Dict[str, Any]) -> List[str]:
    """How to read the table: the metric, the seed range, Δ, GFLOPs, speed."""
    img, metric = join(meta["img_size"]), meta["metric"]
    which = "last-epoch" if metric == "last" else "best-evaluated-epoch"
    return ["Notes:", "",
        f"- top-1 is the {which} validation top-1 (%); mean over seeds ± {STD_NOTE}; (n) = finished seeds.",
        f"- new seed, {PI_LEVEL * 100:.0f} %: where a rerun of the step with a seed not used here should land, "
        f"{PI_LEVEL * 100:.0f} % of the time (prediction interval {PI_FORMULA}, Student's t; needs 2 seeds). "
        "Check runs against it: `python -m roadmap.report.spread <this study> <run dir> ...`.",
        ("- Δ: vs the previous main-path step; a side branch (↳) is compared with the step it branches from (the "
         "kernel sizes with `move ↑ d. conv`, as in the paper's Table 10). The paper's Δ is computed the same way "
         "from its table." if not meta["ablation_mode"] else "- Δ: vs the unablated model (`none`).")
        + f" Where the two share seeds, Δ is paired: {PAIRED_FORMULA}; otherwise it is the difference of the "
          f"means ± {SE_FORMULA} (marked unpaired).",
        "- GFLOPs@224: our model at the paper's scale (width × 1, 1000 classes, 224 px) counted by fvcore "
        f"(one multiply-add = one FLOP, as the paper); GFLOPs@{img}: the model as trained. params: as trained; "
        "params@224: at the paper's scale.",
        "- train img/s: median over epochs, mean over seeds; wall/run: mean wall time of one run (all attempts).",
        "- init: the weight init the step's runs used, `init=auto` resolved (resnet for BatchNorm models, convnext "
        "for LayerNorm ones; runs recorded before `model.init` existed are `auto`).",
        "- health: the runs the health rule flags (docs/health.md), and the step's mean top-1 (n) without them; "
        "the figures draw each flagged run's own top-1 as a hollow red circle.",
        "- Full precision: `trajectory.csv`; scores: `summary.json`.",
    ]


def render_markdown(rows: List[Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any],
                    command: str = "", figures: Optional[List[str]] = None) -> str:
    """trajectory.md: header, summary, big steps, the step table, ride-alongs, figures, notes."""
    lines = _header_lines(summary, meta, command)
    lines += ["", "## Summary", ""] + summary_lines(summary) + [""]
    if summary.get("without_unhealthy"):
        n = (summary.get("health") or {}).get("runs") or []
        names = ", ".join(f"`{r['step']}` seed {r['seed']}" for r in n if r["status"] == "finished")
        lines += [f"### Without the runs the health rule flags (secondary: {names} left out)", "",
                  "Not pre-registered: the same scores over the finished runs the rule calls ok. The numbers above "
                  "are the study's.", ""] + summary_lines(summary["without_unhealthy"]) + [""]
    lines += big_step_table(summary)
    lines += _step_table(rows, meta)
    lines += [""] + health_section(summary)
    if not meta["ablation_mode"]:
        lines += [""] + ridealong.report_lines(path_configs(rows))
    for stem in figures if figures is not None else list(FIGURES):
        lines += [f"![{stem}]({stem}.png)", "", f"*{stem}.png* (and .svg): {FIGURES.get(stem, stem)}.", ""]
    return "\n".join(lines + _notes(meta)) + "\n"


def _pm(x: Optional[float], se: Optional[float], why: str = "") -> str:
    return f"{x:+.2f}" + (f" ± {se:.2f}" if se is not None else (f" (± undefined: {why})" if why else ""))


def summary_lines(summary: Dict[str, Any]) -> List[str]:
    """The headline scores as markdown bullets (trajectory.md's Summary; the CLI prints them)."""
    if summary["kind"] == "ablation":
        lines = []
        for a in summary["ablations"]:
            if a["delta_vs_full"] is None:
                lines.append(f"- {a['label']}: {a['status']}")
            elif a.get("n_pairs"):
                lines.append(f"- {a['label']}: {_pm(a['delta_paired'], a['delta_paired_se'])} top-1 vs the full "
                             f"model (paired, {a['n_pairs']} seeds)")
            else:
                lines.append(f"- {a['label']}: {_pm(a['delta_vs_full'], a['delta_se'])} top-1 vs the full model "
                             f"(unpaired, n={a['n']})")
        lines.append(f"- Uncertainty: paired SE ({PAIRED_FORMULA}); unpaired: {SE_FORMULA}, s = {STD_NOTE}.")
        return lines or ["- no finished runs"]
    lines = []
    bs = summary.get("big_steps") or {}
    if bs.get("measured"):
        of = f"the {bs['measured']} measured (of {bs['of']})" if bs["measured"] != bs["of"] else str(bs["of"])
        against = f"; {bs['disagree_beyond_2se']} disagree beyond 2 SE" if bs["disagree_beyond_2se"] else ""
        lines.append(f"- **Big steps** (main-path steps the paper moves by ≥ {bs['min_paper_delta']} points): "
                     f"**{bs['agree']} of {of} signs agree** with the paper, **{bs['agree_beyond_2se']} of them "
                     f"beyond 2 SE**{against} (paired Δ per step in the table below).")
    elif bs.get("of"):
        lines.append(f"- **Big steps:** none of the paper's {bs['of']} big steps has both of its steps finished.")
    for key, name in (("architecture_gain", "Architecture only"), ("gain", "Overall gain")):
        g = summary.get(key) or {}
        if g.get("ours") is not None:
            why = "needs ≥ 2 seeds that both steps finished" if g.get("paired") else "needs ≥ 2 seeds at both ends"
            how = f"paired over {g['n']} seed{'s' if g['n'] != 1 else ''}" if g.get("paired") else \
                f"unpaired ({SE_FORMULA}), n = {g['n_from']} and {g['n_to']} seeds"
            beyond = "" if g.get("beyond_2se") is None else (", beyond 2 SE" if g["beyond_2se"] else ", within 2 SE")
            paper = f"; paper: **{g['paper']:+.2f}**" if g.get("paper") is not None else ""
            lines.append(f"- **{name}** {g['from_label']} → {g['to_label']} (`{g['from']}` → `{g['to']}`): "
                         f"**{_pm(g['ours'], g.get('ours_se'), why)}** top-1 points (ours, {how}{beyond}){paper}.")
        elif key == "gain":
            lines.append("- **Overall gain:** needs at least two finished main-path steps.")
    rho = summary["spearman"]
    if rho["rho"] is not None:
        p = f", p = {rho['p']:.3g}" if rho["p"] is not None else ""
        lines.append(f"- **Spearman rank correlation** between our mean top-1 along the main path (cumulative: "
                     f"each step includes the ones before) and the paper's (n = {rho['n']} steps): "
                     f"**ρ = {rho['rho']:.2f}**{p} ({rho['method']}).")
    else:
        lines.append(f"- **Spearman rank correlation:** {rho['method']} (n = {rho['n']}).")
    s = summary["sign_agreement"]
    if s["of"]:
        lines.append(f"- Secondary, every step alike (including those the paper moves by less than "
                     f"{bs.get('min_paper_delta', BIG_STEP_MIN)} points, which mostly score noise): {s['agree']} of "
                     f"{s['of']} main-path steps change top-1 in the same direction as in the paper. Agree: "
                     f"{join([f'`{x}`' for x in s['steps_agree']])}. Disagree: {join([f'`{x}`' for x in s['steps_disagree']])}.")
    lines.append(f"- Uncertainties: paired SE = sd(ddof=1) of the per-seed differences / sqrt(n); unpaired "
                 f"(no shared seeds): {SE_FORMULA} with s = {STD_NOTE}.")
    return lines
