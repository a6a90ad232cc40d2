"""Issue 20's budget study (docs/studies/proxy64-budgets.md), from the kept runs alone:

    python -m roadmap.report.budget results            # -> results/proxy64-budgets/{budget.png,.svg,verdicts.md,budget.json}
    python -m roadmap.report.budget results --wandb offline   # + a W&B report run logging the figure and the table

It reads `results/imagenette-<preset>/runs/<step>/seed<k>/` for the presets the design names, pairs
runs by seed, and computes the three contrasts (architecture-only gain, BN→LN, ReLU→GELU) per preset,
the changes between presets that decide H1-H7 by the pre-registered rules, and draws each contrast
against epochs (one panel per regularisation rule, one for the other reductions) with ± 2 SE bands
and the paper's Δ as a line. A preset with no kept runs is "not run"; nothing is extrapolated.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..files import atomic_write_text, markdown_table, write_json
from . import stats
from .collect import read_run
from .paper import regime_ref
from .plots import save_png_svg

STUDY = "imagenette-{}"
OUT = "proxy64-budgets"
CONTRASTS = {  # name: (earlier step, later step, label)
    "arch": ("modern_recipe", "separate_downsampling", "architecture-only gain"),
    "ln": ("fewer_norms", "layer_norm", "BN → LN"),
    "gelu": ("kernel_7", "gelu", "ReLU → GELU"),
}
# preset: (panel, x position, label); the recipe panel's x is epochs
PRESETS = {
    "proxy64": ("recipe", 5, "5 epochs"), "proxy64_e10": ("recipe", 10, "10 epochs"),
    "proxy64_e20": ("recipe", 20, "20 epochs"), "proxy64_e40": ("recipe", 40, "40 epochs"),
    "proxy64_reg": ("budget", 5, "5 epochs"), "proxy64_e20_reg": ("budget", 20, "20 epochs"),
    "proxy64_w050": ("other", 1, "width ×0.5 (5 ep)"), "proxy64_px96": ("other", 2, "96 px (5 ep)"),
    "proxy64_d25": ("other", 4, "data 25 % (1,480 upd.)"), "proxy64_d50": ("other", 5, "data 50 % (1,480 upd.)"),
}
OTHER_BASES = {"proxy64": (0, "proxy64 (5 ep)"), "proxy64_e10": (6, "data 100 % (1,470 upd.)")}
RIDEALONGS = [("layer_norm", "model.init=resnet"), ("fewer_norms", "model.init=convnext"),
              ("fewer_norms", "model.layer_scale=0")]
SIX = ["modern_recipe", "kernel_7", "gelu", "fewer_norms", "layer_norm", "separate_downsampling"]
CAP_MIN, LANES = 600, 2  # the design's cap: 10 h of this 2-core machine's wall time, two 1-thread lanes
# the study's own run folders (proxy64 itself is the committed earlier study, not counted against the cap)
STUDY_GLOBS = ("imagenette-proxy64_*", "imagenette-proxy64-ridealong")


def paper_delta(name: str) -> float:
    top1 = regime_ref("convnext", "resnet50")["top1"]
    a, b, _ = CONTRASTS[name]
    return round(top1[b] - top1[a], 2)


def top1_by_seed(runs_dir: Path, step: str, variant: str = "") -> Dict[int, float]:
    """Finished runs of a step: seed -> last-epoch top-1 (run folders seed<k>[,<variant>] only)."""
    out: Dict[int, float] = {}
    for d in sorted((runs_dir / step).glob("seed*")):
        m = re.fullmatch(r"seed(\d+)(?:,(.*))?", d.name)
        if not m or (m.group(2) or "") != variant:
            continue
        r = read_run(d)
        if r.get("status") == "finished" and r.get("top1") is not None:
            out[int(m.group(1))] = float(r["top1"])
    return out


def load(results: Path) -> Dict[str, Dict[str, Dict[int, float]]]:
    """preset -> step -> seed -> top-1, for every preset with kept runs; ride-along variants under 'ridealong'."""
    data: Dict[str, Dict[str, Dict[int, float]]] = {}
    for preset in PRESETS:
        runs = results / STUDY.format(preset) / "runs"
        if runs.is_dir():
            data[preset] = {s: v for s in SIX if (v := top1_by_seed(runs, s))}
    runs = results / (STUDY.format("proxy64") + "-ridealong") / "runs"
    data["ridealong"] = {f"{s},{v}": t for s, v in RIDEALONGS if runs.is_dir() and (t := top1_by_seed(runs, s, v))}
    return data


def cost(results: Path) -> Dict[str, Any]:
    """What the kept runs cost against the cap: runs and summed wall time (all attempts) per study folder;
    cap used = the sum over the two lanes."""
    per: Dict[str, Dict[str, float]] = {}
    for pattern in STUDY_GLOBS:
        for f in sorted(results.glob(f"{pattern}/runs/*/*/metrics.json")):
            r = read_run(f.parent)
            if r.get("status") == "finished":
                study = f.parents[3].name
                per.setdefault(study, {"runs": 0, "wall_s": 0.0})
                per[study]["runs"] += 1
                per[study]["wall_s"] += float(r.get("wall_seconds") or 0)
    total = sum(v["wall_s"] for v in per.values())
    return {"studies": per, "runs": sum(int(v["runs"]) for v in per.values()), "wall_s": total,
            "cap_used_min": total / LANES / 60, "cap_min": CAP_MIN}


def contrast(steps: Dict[str, Dict[int, float]], name: str) -> Optional[Dict[str, Any]]:
    a, b, _ = CONTRASTS[name]
    if a not in steps or b not in steps:
        return None
    p = stats.paired(steps[b], steps[a])
    return p if p["n"] else None


def change(new: Optional[Dict[str, Any]], old: Optional[Dict[str, Any]], direction: int = 1) -> Dict[str, Any]:
    """D = new - old (different runs: SE_D = sqrt(se_new^2 + se_old^2)) and the pre-registered verdict."""
    if not new or not old or new["se"] is None or old["se"] is None:
        return {"D": None, "se": None, "verdict": "not run" if not new or not old else "undecided (one seed)"}
    d, se = new["delta"] - old["delta"], math.hypot(new["se"], old["se"])
    return {"D": d, "se": se, "verdict": verdict(d, se, direction, min(new["n"], old["n"]))}


def verdict(d: float, se: float, direction: int, n: int) -> str:
    """The design's rule: moves (> 2 SE in the stated direction) = supported; > 2 SE the other way, or
    |D| < 1 with 2 SE < 1 = refuted; otherwise undecided. Two seeds: provisional."""
    if d * direction > 2 * se:
        v = "supported"
    elif d * direction < -2 * se:
        v = "refuted (moves the other way)"
    elif abs(d) < 1 and 2 * se < 1:
        v = "refuted (no change)"
    else:
        v = "undecided at this budget"
    return v + (" — provisional (2 seeds)" if n <= 2 and not v.startswith("undecided") else "")


def per_step_gain(data: Dict[str, Any], rule: str, base: str) -> Dict[str, Any]:
    """H4a: top-1 under the rule minus under the recipe, per step (paired), and their mean."""
    if rule not in data or base not in data:
        return {"verdict": "not run", "steps": {}}
    steps = {s: stats.paired(data[rule][s], data[base][s]) for s in SIX if s in data[rule] and s in data[base]}
    steps = {s: p for s, p in steps.items() if p["n"] and p["se"] is not None}
    if len(steps) < len(SIX):
        return {"verdict": f"undecided ({len(steps)} of 6 steps paired)", "steps": steps}
    mean = sum(p["delta"] for p in steps.values()) / len(steps)
    se = math.sqrt(sum(p["se"] ** 2 for p in steps.values())) / len(steps)
    down = [s for s, p in steps.items() if p["delta"] < -2 * p["se"]]
    n = min(p["n"] for p in steps.values())
    v = verdict(mean, se, 1, n) if not down else f"refuted ({', '.join(down)} trains worse)"
    return {"mean": mean, "se": se, "verdict": v, "steps": steps}


def analyse(data: Dict[str, Any]) -> Dict[str, Any]:
    """Contrasts per preset and every hypothesis's measurement and verdict."""
    table = {p: {c: contrast(steps, c) for c in CONTRASTS} for p, steps in data.items() if p in PRESETS}
    get = lambda p, c: (table.get(p) or {}).get(c)  # noqa: E731
    hyp: Dict[str, Dict[str, Any]] = {
        "H1": {**change(get("proxy64_e20", "arch"), get("proxy64", "arch")), "what": "Δ_arch(20 ep) − Δ_arch(5 ep)"},
        "H1 (40 ep)": {**change(get("proxy64_e40", "arch"), get("proxy64_e20", "arch")),
                       "what": "Δ_arch(40 ep) − Δ_arch(20 ep)"},
        "H2": {**change(get("proxy64_e20", "ln"), get("proxy64", "ln")), "what": "Δ_LN(20 ep) − Δ_LN(5 ep)"},
        "H3": {**change(get("proxy64_e20", "gelu"), get("proxy64", "gelu")), "what": "Δ_GELU(20 ep) − Δ_GELU(5 ep)"},
        "H4b (5 ep)": {**change(get("proxy64_reg", "arch"), get("proxy64", "arch")),
                       "what": "Δ_arch(budget rule) − Δ_arch(recipe), 5 ep"},
        "H4b (20 ep)": {**change(get("proxy64_e20_reg", "arch"), get("proxy64_e20", "arch")),
                        "what": "Δ_arch(budget rule) − Δ_arch(recipe), 20 ep"},
        "H6 width": {**change(get("proxy64_w050", "arch"), get("proxy64", "arch")), "what": "Δ_arch(×0.5) − Δ_arch(×0.25)"},
        "H6 width, LN": {**change(get("proxy64_w050", "ln"), get("proxy64", "ln")), "what": "Δ_LN(×0.5) − Δ_LN(×0.25)"},
        "H6 96 px": {**change(get("proxy64_px96", "arch"), get("proxy64", "arch")), "what": "Δ_arch(96 px) − Δ_arch(64 px)"},
        "H6 96 px, LN": {**change(get("proxy64_px96", "ln"), get("proxy64", "ln")), "what": "Δ_LN(96 px) − Δ_LN(64 px)"},
        "H7": {**change(get("proxy64_e10", "arch"), get("proxy64_d25", "arch")),
               "what": "Δ_arch(100 % data) − Δ_arch(25 %), 1,470-1,480 updates"},
    }
    for rule, base, key in (("proxy64_reg", "proxy64", "H4a (5 ep)"), ("proxy64_e20_reg", "proxy64_e20", "H4a (20 ep)")):
        g = per_step_gain(data, rule, base)
        hyp[key] = {"D": g.get("mean"), "se": g.get("se"), "verdict": g["verdict"],
                    "what": "mean over the six steps of top-1(budget rule) − top-1(recipe)"}
    for step, variant in RIDEALONGS:  # every pre-registered variant gets a row, run or not
        name = f"{step},{variant}"
        p = stats.paired(data.get("ridealong", {}).get(name, {}), data.get("proxy64", {}).get(step, {}))
        v = "not run" if not p["n"] else "1 seed: no SE yet" if p["se"] is None else (
            "moves the step's Δ beyond 2 SE" if abs(p["delta"]) > 2 * p["se"] else "within 2 SE")
        v += " — provisional (2 seeds)" if p["n"] == 2 else ""
        hyp[f"H5 {name}"] = {"D": p["delta"], "se": p["se"], "verdict": v, "what": f"top-1({name}) − top-1({step})"}
    return {"contrasts": table, "hypotheses": hyp}


def _fmt(x: Optional[float], se: Optional[float] = None) -> str:
    if x is None:
        return "—"
    return f"{x:+.2f}" + (f" ± {se:.2f}" if se is not None else "")


def tables(result: Dict[str, Any]) -> Tuple[str, str]:
    """The contrasts per preset and the hypotheses with their verdicts, as two markdown tables."""
    rows = []
    for preset, cs in result["contrasts"].items():
        panel, _, label = PRESETS[preset]
        cells = {c: cs.get(c) for c in CONTRASTS}
        rows.append({"preset": f"`{preset}`", "setting": f"{panel}: {label}",
                     **{c: _fmt(v["delta"], v["se"]) + f" ({v['n']})" if v else "not run" for c, v in cells.items()}})
    fields = ["preset", "setting", *CONTRASTS]
    headers = ["preset", "rule / reduction", *(f"{CONTRASTS[c][2]} Δ ± SE (seeds); paper {paper_delta(c):+.2f}"
                                              for c in CONTRASTS)]
    hyp = [{"h": k, "what": v["what"], "value": _fmt(v.get("D"), v.get("se")), "verdict": v["verdict"]}
           for k, v in result["hypotheses"].items()]
    return (markdown_table(rows, fields, headers),
            markdown_table(hyp, ["h", "what", "value", "verdict"], ["", "measurement", "value ± SE", "verdict (pre-registered rule)"]))


def markdown(result: Dict[str, Any]) -> str:
    """verdicts.md: the two tables, the figure, the cost against the cap."""
    contrasts, hypotheses = tables(result)
    return "\n".join([
        "# Budget study (issue 20): contrasts and verdicts", "",
        "Generated by `python -m roadmap.report.budget results` from the kept runs alone; the design and the "
        "decision rules are in [docs/studies/proxy64-budgets.md](../../docs/studies/proxy64-budgets.md). "
        "Δ: paired by seed, last-epoch top-1 (points); SE over seeds; D between presets: SE = √(SE₁² + SE₂²).", "",
        "## Contrasts per preset", "", contrasts, "",
        "## Hypotheses", "", hypotheses, "",
        "![budget](budget.png)", "", *_cost_lines(result.get("cost")), ""])


def _cost_lines(c: Optional[Dict[str, Any]]) -> List[str]:
    if not c:
        return []
    rows = [{"study": f"`{k}`", "runs": int(v["runs"]), "wall": f"{v['wall_s'] / 60:.0f} min"} for k, v in c["studies"].items()]
    return ["## Runs and the cap", "",
            f"{c['runs']} kept runs, {c['wall_s'] / 60:.0f} min of run wall time (all attempts) on {LANES} lanes: "
            f"**{c['cap_used_min']:.0f} of the {c['cap_min']} min cap used**.", "",
            markdown_table(rows, ["study", "runs", "wall"], ["study folder", "kept runs", "summed wall time"])]


def plot(result: Dict[str, Any], out_dir: Path) -> Tuple[Path, Path]:
    """Each contrast against epochs with its ± 2 SE band and the paper's Δ as a line: a panel per
    regularisation rule and one for the other reductions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"arch": "tab:blue", "ln": "tab:red", "gelu": "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    panels = [("recipe", "the recipe's regularisation (300-epoch)"), ("budget", "regularisation scaled to the budget"),
              ("other", "other reductions")]
    for ax, (panel, title) in zip(axes, panels):
        if not any(PRESETS[p][0] == panel and any(v.values()) for p, v in result["contrasts"].items()):
            ax.text(0.5, 0.5, ("the reductions" if panel == "other" else "this rule") + ": not run yet",
                    transform=ax.transAxes, ha="center", va="center", color="grey", fontsize=11)
        for c, (_, _, label) in CONTRASTS.items():
            pts = [(PRESETS[p][1], v[c]) for p, v in result["contrasts"].items() if PRESETS[p][0] == panel and v[c]]
            if panel == "other":
                pts += [(OTHER_BASES[p][0], v[c]) for p, v in result["contrasts"].items() if p in OTHER_BASES and v[c]]
            pts.sort(key=lambda t: t[0])
            xs = [x for x, _ in pts]
            ys = [v["delta"] for _, v in pts]
            err = [2 * (v["se"] or 0) for _, v in pts]
            if panel == "other":  # side by side within a category
                xs = [x + 0.15 * (list(CONTRASTS).index(c) - 1) for x in xs]
            elif len(pts) > 1:
                ax.plot(xs, ys, "-", color=colours[c])
                ax.fill_between(xs, [y - e for y, e in zip(ys, err)], [y + e for y, e in zip(ys, err)],
                                color=colours[c], alpha=0.18, linewidth=0)
            if pts:
                ax.errorbar(xs, ys, yerr=err, fmt="o", color=colours[c], capsize=3, label=label)
            ax.axhline(paper_delta(c), color=colours[c], linestyle="--", linewidth=1)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if panel == "other":
            ticks = {**{x: l for x, l in OTHER_BASES.values()}, **{PRESETS[p][1]: PRESETS[p][2] for p in PRESETS
                                                                   if PRESETS[p][0] == "other"}}
            ax.set_xticks(sorted(ticks), [ticks[k] for k in sorted(ticks)], rotation=30, ha="right", fontsize=8)
        else:
            ax.set_xscale("log", base=2)
            ax.set_xticks([5, 10, 20, 40], ["5", "10", "20", "40"])
            ax.set_xlim(4.2, 48)
            ax.set_xlabel("epochs")
    axes[0].set_ylabel("paired Δ top-1 (points), band ± 2 SE; dashed: paper")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Why the CPU proxy disagrees: contrasts vs budget (Imagenette, 64 px, width ×0.25 unless noted)",
                 fontsize=11)
    fig.tight_layout()
    paths = save_png_svg(fig, out_dir, "budget")
    plt.close(fig)
    return paths


def log_wandb(result: Dict[str, Any], out_dir: Path, mode: str) -> None:
    """The W&B report run of the budget study: the figure and the verdict table (offline by default)."""
    import wandb

    run = wandb.init(project="roadmap", id="report-proxy64-budgets", name="report: proxy64 budgets",
                     job_type="report", group="proxy64-budgets", dir=str(out_dir), mode=mode, resume="allow",
                     reinit=True)
    try:
        table = wandb.Table(columns=["hypothesis", "measurement", "value", "se", "verdict"],
                            data=[[k, v["what"], v.get("D"), v.get("se"), v["verdict"]]
                                  for k, v in result["hypotheses"].items()])
        run.log({"budget/figure": wandb.Image(str(out_dir / "budget.png")), "budget/verdicts": table})
    finally:
        run.finish()


BEGIN, END = "<!-- budget-report:begin -->", "<!-- budget-report:end -->"


def check_page(page: Path) -> str:
    """The page's text, if it has exactly one block to fill (else ValueError, before anything is written)."""
    if not page.is_file():
        raise ValueError(f"--page {page}: no such file")
    text = page.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"--page {page} has no single '{BEGIN}' ... '{END}' block to fill")
    return text


def update_page(page: Path, result: Dict[str, Any], out: Path) -> None:
    """Rewrite the block between BEGIN and END of a study page: the figure, the verdict table and the
    contrasts, with links relative to the page (the page's prose around it is left alone)."""
    import os

    text = check_page(page)
    rel = Path(os.path.relpath(out, page.parent)).as_posix()
    contrasts, hypotheses = tables(result)
    c = result.get("cost") or {}
    block = [BEGIN, f"*Rebuilt from the kept runs by `python -m roadmap.report.budget results --page {page.as_posix()}`; "
             f"do not edit by hand. {c.get('runs', 0)} kept runs, {c.get('cap_used_min', 0):.0f} of the "
             f"{c.get('cap_min', CAP_MIN)} min cap used.*", "", f"![budget figure]({rel}/budget.png)", "",
             hypotheses, "", contrasts, "", f"Full table and cost per study folder: [{rel}/verdicts.md]({rel}/verdicts.md).", END]
    head, rest = text.split(BEGIN, 1)
    atomic_write_text(page, head + "\n".join(block) + rest.split(END, 1)[1])


def build(results: Path, out: Optional[Path] = None, wandb_mode: str = "disabled", page: Optional[Path] = None) -> Path:
    out = Path(out or results / OUT)
    out.mkdir(parents=True, exist_ok=True)
    result = {**analyse(load(Path(results))), "cost": cost(Path(results))}
    plot(result, out)
    atomic_write_text(out / "verdicts.md", markdown(result))
    write_json(out / "budget.json", result)
    if page is not None:
        update_page(Path(page), result, out)
    if wandb_mode != "disabled":
        log_wandb(result, out, wandb_mode)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, nargs="?", default=Path("results"), help="the results folder (default results)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default <results>/{OUT})")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default="disabled")
    p.add_argument("--page", type=Path, default=None,
                   help=f"also rewrite the '{BEGIN}' block of this study page (docs/studies/proxy64-budgets.md)")
    a = p.parse_args(argv)
    if not (a.results / STUDY.format("proxy64") / "runs").is_dir():
        print(f"error: {a.results / STUDY.format('proxy64') / 'runs'} not found; give the results folder that holds "
              "the proxy64 study", file=sys.stderr)
        return 2
    try:
        if a.page is not None:
            check_page(a.page)
        out = build(a.results, a.out, a.wandb, a.page)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"budget study: {out / 'verdicts.md'}\nbudget figure: {out / 'budget.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
