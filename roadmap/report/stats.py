"""Statistics of the report: means and sample standard deviations over seeds, differences of
means and paired differences with their standard errors, Spearman's rho (scipy), and the scores
the noise can support (summary.json).

Definitions (also written into trajectory.md):
  * std: sample standard deviation over seeds (ddof=1); undefined for n = 1.
  * difference of means a - b: uncertainty sqrt(s_a²/n_a + s_b²/n_b) (the per-step table's Δ
    where no seed is shared).
  * paired Δ of a vs b: for every seed s both finished, d_s = top1(a, s) - top1(b, s) (same seed:
    same initialisation seed and data order); Δ = mean(d_s), SE = sd(d_s, ddof=1) / sqrt(n);
    no SE for n = 1. "Beyond 2 SE": |Δ| > 2 SE.
  * the range for a new seed: the 95 % prediction interval of one more run of a step with a seed
    the study did not use, mean ± t(0.975, n-1) · std · sqrt(1 + 1/n) (Student's t, scipy); needs
    n ≥ 2. A rerun with an unused seed should land inside it 19 times in 20.
  * big steps: the main-path steps whose paper Δ vs the previous main-path step is at least 0.5
    points (paper.big_steps); the headline score is how many of them have our paired Δ with the
    paper's sign, and how many of those are beyond 2 SE.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..steps import step_info
from .paper import BIG_STEP_MIN, DEFAULT_REGIME, architecture_start, big_steps, main_path

STD_NOTE = "sample standard deviation over seeds (ddof=1)"
SE_FORMULA = "sqrt(s_a²/n_a + s_b²/n_b)"
PAIRED_FORMULA = "mean over shared seeds s of top1(a, s) - top1(b, s); SE = sd(differences, ddof=1) / sqrt(n)"
METRICS = ("last", "best")
METRIC_NOTES = {
    "last": "top-1 at the last epoch (the default: the best of several evaluations of one run is biased upward)",
    "best": "top-1 at the best evaluated epoch, as the official ConvNeXt code reports it (biased upward: "
            "the maximum of several noisy evaluations)",
}


def mean(xs: Sequence[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def std(xs: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (ddof=1); None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


PI_LEVEL = 0.95
PI_FORMULA = "mean ± t(0.975, n-1) · std · sqrt(1 + 1/n)"


def prediction_interval(xs: Sequence[float], level: float = PI_LEVEL) -> Optional[Tuple[float, float]]:
    """Where one more run (a seed not among xs) lands with probability `level`, if the runs' top-1 is
    normal: mean ± t((1+level)/2, n-1) · std · sqrt(1 + 1/n). None for fewer than two values."""
    sd = std(xs)
    if sd is None:
        return None
    from scipy.stats import t

    n, m = len(xs), sum(xs) / len(xs)
    half = float(t.ppf((1 + level) / 2, n - 1)) * sd * math.sqrt(1 + 1 / n)
    return m - half, m + half


def diff_se(a: Mapping[str, Any], b: Mapping[str, Any]) -> Optional[float]:
    """sqrt(s_a²/n_a + s_b²/n_b) of two rows; None when a std is undefined (n < 2)."""
    if a.get("top1_std") is None or b.get("top1_std") is None:
        return None
    return math.sqrt(a["top1_std"] ** 2 / a["n"] + b["top1_std"] ** 2 / b["n"])


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Dict[str, Any]:
    """Paired difference a - b over the seeds both have: {'delta', 'se', 'n', 'seeds', 'beyond_2se'}."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    delta = mean(diffs)
    sd = std(diffs)
    se = sd / math.sqrt(len(diffs)) if sd is not None else None
    beyond = abs(delta) > 2 * se if delta is not None and se is not None else None
    return {"delta": delta, "se": se, "n": len(diffs), "seeds": seeds, "beyond_2se": beyond}


def spearman(x: Sequence[float], y: Sequence[float]) -> Tuple[Optional[float], Optional[float], str]:
    """Spearman's rho and its p-value (scipy.stats.spearmanr; ties get their average rank)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None, "undefined (fewer than 3 steps or constant values)"
    from scipy.stats import spearmanr

    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), "scipy.stats.spearmanr; ties get their average rank"


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _gain(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """b - a for two rows: paired over their shared seeds, else the difference of the means."""
    if a is None or b is None or a["top1_mean"] is None or b["top1_mean"] is None:
        return {"from": a["step"] if a else None, "to": b["step"] if b else None, "ours": None}
    p = paired(b["by_seed"], a["by_seed"])
    g: Dict[str, Any] = {"from": a["step"], "to": b["step"], "from_label": a["label"], "to_label": b["label"],
                         "n_from": a["n"], "n_to": b["n"], "n": p["n"], "seeds": p["seeds"]}
    if p["n"]:
        g.update({"ours": p["delta"], "ours_se": p["se"], "paired": True, "beyond_2se": p["beyond_2se"],
                  "formula": PAIRED_FORMULA})
        if p["se"] is None:
            g["note"] = "the SE needs at least 2 seeds that both steps finished"
    else:
        se = diff_se(b, a)
        g.update({"ours": b["top1_mean"] - a["top1_mean"], "ours_se": se, "paired": False,
                  "beyond_2se": abs(b["top1_mean"] - a["top1_mean"]) > 2 * se if se is not None else None,
                  "formula": f"mean_to - mean_from ± {SE_FORMULA} (no shared seed to pair; s: {STD_NOTE})"})
    g["paper"] = (b["paper_top1"] - a["paper_top1"]) \
        if a["paper_top1"] is not None and b["paper_top1"] is not None else None
    return g


def _regime_of(rows: List[Dict[str, Any]]) -> str:
    return next((r["regime"] for r in rows if r.get("regime")), DEFAULT_REGIME)


def big_step_scores(rows: List[Dict[str, Any]], regime: Optional[str] = None) -> Dict[str, Any]:
    """Our paired Δ on each of the paper's big steps, its SE, beyond 2 SE, sign agreement."""
    regime = regime or _regime_of(rows)
    by_step = {r["step"]: r for r in rows if not r["variant"] and r["ablation"] == "none"}
    # the roadmaps this report follows: two or more of their main-path steps among the rows (the
    # ConvNeXt -> CMT report starts at separate_downsampling: the ResNet path's big steps are not its own)
    roadmaps = {m for m in {r["roadmap"] for r in by_step.values()}
                if sum(s in by_step for s in main_path(m)) >= 2}
    out: List[Dict[str, Any]] = []
    for roadmap in sorted(roadmaps):
        for bs in big_steps(regime, roadmap):
            a, b = by_step.get(bs["step"]), by_step.get(bs["vs"])
            p = paired(a["by_seed"], b["by_seed"]) if a is not None and b is not None else paired({}, {})
            out.append({"step": bs["step"], "label": step_info(bs["step"])["label"], "vs": bs["vs"],
                        "paper_delta": bs["paper_delta"], "ours": p["delta"], "se": p["se"], "n": p["n"],
                        "seeds": p["seeds"], "beyond_2se": p["beyond_2se"],
                        "sign_agrees": sign(p["delta"]) == sign(bs["paper_delta"]) if p["delta"] is not None else None})
    measured = [s for s in out if s["ours"] is not None]
    agree = [s for s in measured if s["sign_agrees"]]
    return {
        "min_paper_delta": BIG_STEP_MIN, "of": len(out), "measured": len(measured), "agree": len(agree),
        "agree_beyond_2se": sum(bool(s["beyond_2se"]) for s in agree),
        "disagree_beyond_2se": sum(bool(s["beyond_2se"]) for s in measured if not s["sign_agrees"]),
        "steps": out,
        "note": f"main-path steps whose paper Δ vs the previous main-path step is ≥ {BIG_STEP_MIN} points "
                f"(rounded to 0.01); ours: paired Δ ({PAIRED_FORMULA}); beyond 2 SE: |Δ| > 2 SE",
    }


def summarize(rows: List[Dict[str, Any]], regime: Optional[str] = None, metric: Optional[str] = None) -> Dict[str, Any]:
    """Run counts; for a trajectory the scores: big steps, architecture-only and overall gain
    (paired), Spearman's rho over the main-path accuracies, all-steps sign agreement (secondary)."""
    regime = regime or _regime_of(rows)
    metric = metric or next((r["metric"] for r in rows if r.get("metric")), "last")
    counts = {"finished": sum(r["n_finished"] for r in rows), "failed": sum(r["n_failed"] for r in rows),
              "running": sum(r["n_running"] for r in rows), "missing": sum(r["n_missing"] for r in rows),
              "stopped": sum(r.get("n_stopped", 0) for r in rows), "unhealthy": sum(r.get("n_unhealthy", 0) for r in rows)}
    out: Dict[str, Any] = {"runs": counts, "steps": len(rows), "metric": metric, "metric_note": METRIC_NOTES[metric],
                           "std": STD_NOTE, "uncertainty_formula": SE_FORMULA, "paired_formula": PAIRED_FORMULA}
    ablation_mode = any(r["ablation"] != "none" for r in rows)
    if ablation_mode:
        out["kind"] = "ablation"
        out["ablations"] = [{"ablation": r["ablation"], "label": r["label"], "top1_mean": r["top1_mean"],
                             "n": r["n"], "delta_vs_full": r["top1_delta"], "delta_se": r["top1_delta_se"],
                             "delta_paired": r["top1_delta_paired"], "delta_paired_se": r["top1_delta_paired_se"],
                             "n_pairs": r["n_pairs"], "status": r["status"]} for r in rows if r["ablation"] != "none"]
        return out
    out["kind"] = "trajectory"
    main = [r for r in rows if not r["branch"] and not r["variant"]]
    done = [r for r in main if r["top1_mean"] is not None]
    by_step = {r["step"]: r for r in done}
    out["big_steps"] = big_step_scores(rows, regime)
    # architecture only: from the last recipe step (modern_recipe) to the end of the path
    roadmap = done[0]["roadmap"] if done else None
    path = main_path(roadmap) if roadmap else []
    start = architecture_start(roadmap) if roadmap else None
    arch = _gain(by_step.get(start), by_step.get(path[-1])) if start and path else {"ours": None}
    arch["note"] = "only the network changes between these steps (same recipe)"
    out["architecture_gain"] = arch
    # overall: the roadmap's first and last main-path steps, else the first/last finished ones
    gain: Dict[str, Any] = {"from": None, "to": None, "ours": None}
    if len(done) >= 2:
        a = next((r for r in done if path and r["step"] == path[0]), done[0])
        b = next((r for r in done if path and r["step"] == path[-1]), done[-1])
        if a is b:
            a, b = done[0], done[-1]
        gain = _gain(a, b)
    out["gain"] = gain
    paired_rows = [r for r in main if r["top1_mean"] is not None and r["paper_top1"] is not None]
    rho, p, method = spearman([r["top1_mean"] for r in paired_rows], [r["paper_top1"] for r in paired_rows])
    out["spearman"] = {"rho": rho, "p": p, "n": len(paired_rows), "steps": [r["step"] for r in paired_rows],
                       "method": method, "note": "mean top-1 of each main-path step (cumulative: every step "
                                                 "includes the changes before it) vs the paper's"}
    comparable = [r for r in main if r["top1_delta"] is not None and r["paper_delta"] is not None]
    agree = [r["step"] for r in comparable if sign(r["top1_delta"]) == sign(r["paper_delta"])]
    out["sign_agreement"] = {"agree": len(agree), "of": len(comparable), "steps_agree": agree,
                             "steps_disagree": [r["step"] for r in comparable if r["step"] not in agree],
                             "note": "secondary: every main-path step whose Δ vs the previous main-path step has "
                                     "the paper's sign, including the steps the paper moves by 0.15 points or less "
                                     "(mostly noise at our scale)"}
    return out
