"""The numbers of a comparison: each study's contrasts (Δ ± SE, paired by seed), its scores against the
paper (Spearman's ρ, big-step signs), and every hypothesis's measurement and verdict by its rule.

Definitions (docs/compare.md): Δ of a contrast in a study = mean over the seeds both steps finished of
top-1(to) − top-1(from), SE = sd(ddof=1)/√n (stats.paired); a change between studies D = Δ(to) − Δ(from),
SE_D = √(SE_from² + SE_to²) (different runs: independent); top-1 across studies at one step is paired by
seed the same way, and over several steps the mean with SE = √(Σ SE²)/k.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from .. import stats
from ..paper import MAIN_ROADMAP, main_path, paper_top1
from .rules import RULES
from .spec import Contrast, Hypothesis, Spec

NOT_RUN = "not run"


def contrast_of(study: Dict[str, Any], c: Contrast) -> Optional[Dict[str, Any]]:
    """Δ ± SE of a contrast in one study (None where a step or every pair is missing)."""
    top1 = study["top1"]
    if c.frm not in top1 or c.to not in top1:
        return None
    p = stats.paired(top1[c.to], top1[c.frm])
    return p if p["n"] else None


def scores_of(study: Dict[str, Any], regime: str) -> Dict[str, Any]:
    """Spearman's ρ of the mean top-1 along the main path with the paper's, and k of the big steps whose
    paired Δ has the paper's sign (stats.spearman, stats.big_step_scores), over the steps measured;
    `done`: every main-path step has a finished or failed run of every seed."""
    path, top1 = main_path(MAIN_ROADMAP), study["top1"]
    measured = [s for s in path if s in top1]
    rows = [{"step": s, "variant": "", "ablation": "none", "roadmap": MAIN_ROADMAP, "by_seed": top1[s]} for s in measured]
    big = stats.big_step_scores(rows, regime)
    rho, p, method = stats.spearman([stats.mean(list(top1[s].values())) for s in measured],
                                    [paper_top1(s, regime) for s in measured])
    runs_done = sum(len(set(top1.get(s, {})) | set(study["failed"].get(s, []))) for s in path)
    return {"rho": rho, "p": p, "method": method, "steps": len(measured), "of_steps": len(path),
            "k": big["agree"], "of": big["of"], "measured": big["measured"], "agree_beyond_2se": big["agree_beyond_2se"],
            "disagree_beyond_2se": big["disagree_beyond_2se"], "runs_done": runs_done,
            "runs_planned": len(path) * len(study["seeds"]), "n": min((len(top1[s]) for s in measured), default=0),
            "big_steps": big["steps"]}


# =============================================================================================
# Measurements, one per measure
# =============================================================================================
def _change(studies: Dict[str, Any], h: Hypothesis) -> Dict[str, Any]:
    new, old = (studies[h.to]["contrasts"].get(h.contrast), studies[h.frm]["contrasts"].get(h.contrast))
    if not new or not old:
        return {"D": None, "se": None, "n": 0, "status": NOT_RUN}
    if new["se"] is None or old["se"] is None:
        return {"D": None, "se": None, "n": min(new["n"], old["n"])}
    return {"D": new["delta"] - old["delta"], "se": math.hypot(new["se"], old["se"]), "n": min(new["n"], old["n"])}


def _across(studies: Dict[str, Any], h: Hypothesis) -> Dict[str, Any]:
    a, b = studies[h.frm]["top1"], studies[h.to]["top1"]
    per = {s: stats.paired(b.get(s, {}), a.get(s, {})) for s in h.steps}
    if not any(p["n"] for p in per.values()):
        return {"D": None, "se": None, "n": 0, "of": len(h.steps), "status": NOT_RUN}
    if len(h.steps) == 1:
        p = per[h.steps[0]]
        return {"D": p["delta"], "se": p["se"], "n": p["n"], "of": 1, "steps": per}
    ok = {s: p for s, p in per.items() if p["n"] and p["se"] is not None}
    if len(ok) < len(h.steps):
        return {"D": None, "se": None, "n": 0, "of": len(h.steps), "steps": ok,
                "status": f"undecided ({len(ok)} of {len(h.steps)} steps paired)"}
    mean = sum(p["delta"] for p in ok.values()) / len(ok)
    se = math.sqrt(sum(p["se"] ** 2 for p in ok.values())) / len(ok)
    return {"D": mean, "se": se, "n": min(p["n"] for p in ok.values()), "of": len(ok), "steps": ok}


def _scores(studies: Dict[str, Any], h: Hypothesis) -> Dict[str, Any]:
    a, b = studies[h.frm], studies[h.to]
    if not a["finished"] or not b["finished"]:
        return {"D_rho": None, "D_k": None, "n": 0, "status": NOT_RUN}
    sa, sb = a["scores"], b["scores"]
    short = [f"{name}: {s['runs_done']} of {s['runs_planned']} main-path runs done"
             for name, s in ((h.frm, sa), (h.to, sb)) if s["runs_done"] < s["runs_planned"] or s["rho"] is None]
    if short:
        return {"D_rho": None, "D_k": None, "n": 0, "status": f"undecided ({'; '.join(short)})"}
    return {"D_rho": sb["rho"] - sa["rho"], "D_k": sb["k"] - sa["k"], "n": min(sa["n"], sb["n"]),
            "rho": {h.frm: sa["rho"], h.to: sb["rho"]}, "k": {h.frm: sa["k"], h.to: sb["k"]}, "of": sb["of"]}


def _pick(studies: Dict[str, Any], h: Hypothesis, axes: Dict[str, Any]) -> Dict[str, Any]:
    picks: Dict[str, Any] = {}
    table: Dict[str, Dict[str, Any]] = {}
    short = []
    for step in h.steps:
        vals: Dict[Any, float] = {}
        for s in h.studies:
            t = studies[s]["top1"].get(step, {}).get(h.seed)
            if t is None and h.seed in studies[s]["failed"].get(step, []):
                t = -math.inf  # a failed run scores lowest
            if t is not None:
                vals[axes[s]] = t
        table[step] = {str(v): (t if t > -math.inf else "failed") for v, t in sorted(vals.items())}
        if len(vals) < len(h.studies):
            short.append(f"{step}: {len(vals)} of {len(h.studies)} runs")
            continue
        best = max(vals.values())
        picks[step] = min(v for v, t in vals.items() if t >= best - h.tie)
    status = NOT_RUN if not any(table.values()) else f"undecided ({'; '.join(short)})" if short else None
    return {"picks": picks, "top1": table, "n": 1, **({"status": status} if status else {})}


def measure(h: Hypothesis, studies: Dict[str, Any], spec: Spec) -> Dict[str, Any]:
    if h.measure == "change":
        return _change(studies, h)
    if h.measure == "across":
        return _across(studies, h)
    if h.measure == "scores":
        return _scores(studies, h)
    return _pick(studies, h, {s: spec.studies[s].axes[h.axis] for s in h.studies})


def _condition(h: Hypothesis, done: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """Why a conditional hypothesis is not measured (None: its condition holds)."""
    if h.when is None:
        return None
    on, step, want = h.when["hypothesis"], h.when["step"], h.when["picked"]
    got = done[on].get("picks", {}).get(step)
    if got is None:
        return f"not run (waits for {on}'s pick on {step})"
    return None if got == want else f"not applicable ({on} picked {got:g} on {step}, not {want:g})"


def decide(h: Hypothesis, studies: Dict[str, Any], spec: Spec, done: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A hypothesis's measurement and verdict: 'not run' / 'undecided (…)' where the runs cannot decide it,
    otherwise its rule's."""
    out: Dict[str, Any] = {"measure": h.measure, "rule": h.rule, **({"params": h.params} if h.params else {}),
                           "what": h.what, **{k: v for k, v in (("from", h.frm), ("to", h.to), ("contrast", h.contrast))
                                              if v is not None}}
    blocked = _condition(h, done)
    if blocked:
        return {**out, "verdict": blocked}
    m = measure(h, studies, spec)
    verdict = m.pop("status", None) or RULES[h.rule].decide(m, **h.params)
    return {**out, **m, "verdict": verdict}


def analyse(spec: Spec, studies: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Contrasts and scores per study, then every hypothesis in the spec's order."""
    for name, study in studies.items():
        study["contrasts"] = {c: contrast_of(study, con) for c, con in spec.contrasts.items()}
        if name in spec.scores or any(h.measure == "scores" and name in (h.frm, h.to) for h in spec.hypotheses.values()):
            study["scores"] = scores_of(study, spec.regime)
    done: Dict[str, Dict[str, Any]] = {}
    for name, h in spec.hypotheses.items():
        done[name] = decide(h, studies, spec, done)
    return {"contrasts": {n: {"from": c.frm, "to": c.to, "label": c.label, "paper": c.paper}
                          for n, c in spec.contrasts.items()},
            "studies": studies, "hypotheses": done}


def trajectory(study: Dict[str, Any], steps: List[str]) -> List[Optional[Dict[str, float]]]:
    """Mean, min and max top-1 over seeds per step (None where the step has no finished run)."""
    out: List[Optional[Dict[str, float]]] = []
    for s in steps:
        vals = list(study["top1"].get(s, {}).values())
        out.append({"mean": stats.mean(vals), "min": min(vals), "max": max(vals), "n": len(vals)} if vals else None)
    return out
