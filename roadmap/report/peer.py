"""`python -m roadmap.report.peer OURS PEER [PEER ...]`: issue 33's peer check, by the rule declared in
docs/studies/peer-check.md before any run: does timm's train.py train the two ends as our loop does?

    python -m roadmap.report.peer results/imagenette-proxy64 results/peer-check/timm-registry \\
        results/peer-check/timm-own --out results/peer-check/verdict.json

OURS is the committed study (3 seeds per step); each PEER a study of imported train.py runs (seeds 0, 1;
`roadmap.timm_import`). For the two ends (`modern_recipe`, `separate_downsampling`) and their
architecture-only gain (paired by seed, as the report), with the last-epoch top-1:

  R1, per model: the mean of the peer's m seeds lies inside the prediction interval of the mean of m new
     seeds from ours, mean ± t(1 - a/2, n-1) · s · sqrt(1/n + 1/m), at a = 0.025 (0.05 shared by the
     two models, Bonferroni);
  R2, the gain: the peer's paired gain lies inside mean ± t(0.975, n-1) · s_d · sqrt(1/n + 1/m), s_d the
     sample std of our per-seed gains.

The loops agree when R1 holds for both models and R2 holds, on the first PEER (our networks through
timm's registry); the other PEERs (timm's own networks) are reported by the same numbers, no verdict.
Prints the tables (Markdown) and writes the numbers as JSON (--out).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..files import write_json
from . import stats
from .collect import collect

ENDS = ("modern_recipe", "separate_downsampling")
ALPHA_MODEL, ALPHA_GAIN = 0.025, 0.05


def mean_interval(xs: Sequence[float], m: int, alpha: float) -> Optional[tuple]:
    """Where the mean of m new seeds lands with probability 1 - alpha (normal top-1, ours' spread)."""
    sd = stats.std(list(xs))
    if sd is None or m < 1:
        return None
    from scipy.stats import t

    n, mu = len(xs), sum(xs) / len(xs)
    half = float(t.ppf(1 - alpha / 2, n - 1)) * sd * math.sqrt(1 / n + 1 / m)
    return mu - half, mu + half


def by_step(study: Path) -> Dict[str, Dict[str, Any]]:
    return {r["step"]: r for r in collect(study, "last") if not r["variant"] and r["ablation"] == "none"}


def model_check(ours: Dict[str, Any], peer: Dict[str, Any]) -> Dict[str, Any]:
    xs, ys = list(ours["by_seed"].values()), list(peer["by_seed"].values())
    lo_hi = mean_interval(xs, len(ys), ALPHA_MODEL)
    m = stats.mean(ys)
    return {"ours": ours["by_seed"], "peer": peer["by_seed"], "ours_mean": stats.mean(xs), "ours_std": stats.std(xs),
            "peer_mean": m, "low": lo_hi and lo_hi[0], "high": lo_hi and lo_hi[1],
            "inside": bool(lo_hi and m is not None and lo_hi[0] <= m <= lo_hi[1])}


def gain_check(ours: Dict[str, Dict[str, Any]], peer: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    a, b = ENDS
    d_ours = [ours[b]["by_seed"][s] - ours[a]["by_seed"][s] for s in sorted(set(ours[a]["by_seed"]) & set(ours[b]["by_seed"]))]
    p = stats.paired(peer[b]["by_seed"], peer[a]["by_seed"])
    lo_hi = mean_interval(d_ours, p["n"], ALPHA_GAIN)
    return {"ours": stats.mean(d_ours), "ours_se": (stats.std(d_ours) or 0) / math.sqrt(len(d_ours)) if d_ours else None,
            "peer": p["delta"], "peer_se": p["se"], "peer_n": p["n"], "low": lo_hi and lo_hi[0],
            "high": lo_hi and lo_hi[1], "inside": bool(lo_hi and p["delta"] is not None and lo_hi[0] <= p["delta"] <= lo_hi[1])}


def curves(row: Dict[str, Any]) -> Dict[int, float]:
    """Mean top-1 per epoch over a row's finished runs."""
    per: Dict[int, List[float]] = {}
    for r in row["runs"]:
        if r["status"] == "finished":
            for e, v in r["curves"]["top1"]:
                per.setdefault(e, []).append(v)
    return {e: sum(v) / len(v) for e, v in sorted(per.items())}


def check(ours_dir: Path, peer_dir: Path) -> Dict[str, Any]:
    ours, peer = by_step(ours_dir), by_step(peer_dir)
    missing = [s for s in ENDS if s not in peer or not peer[s]["by_seed"]]
    if missing:
        raise ValueError(f"{peer_dir} has no finished run of {missing[0]}")
    models = {s: model_check(ours[s], peer[s]) for s in ENDS}
    gain = gain_check(ours, peer)
    return {"peer": str(peer_dir), "models": models, "gain": gain,
            "curves": {s: {"ours": curves(ours[s]), "peer": curves(peer[s])} for s in ENDS},
            "agree": all(m["inside"] for m in models.values()) and gain["inside"]}


def markdown(result: Dict[str, Any]) -> List[str]:
    f = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    out = [f"#### {result['peer']}", "", "| model | ours (seeds) | ours mean ± sd | peer (seeds) | peer mean | "
           f"interval ({100 * (1 - ALPHA_MODEL):.1f} %) | inside |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for s, m in result["models"].items():
        seeds = lambda d: ", ".join(f"{v:.2f}" for _, v in sorted(d.items()))  # noqa: E731
        out.append(f"| `{s}` | {seeds(m['ours'])} | {f(m['ours_mean'])} ± {f(m['ours_std'])} | {seeds(m['peer'])} | "
                   f"{f(m['peer_mean'])} | {f(m['low'])} – {f(m['high'])} | {'yes' if m['inside'] else '**no**'} |")
    g = result["gain"]
    out += ["", f"Architecture-only gain (`{ENDS[1]}` − `{ENDS[0]}`, paired by seed): ours {f(g['ours'])} ± "
                f"{f(g['ours_se'])} (SE), peer {f(g['peer'])} ± {f(g['peer_se'])} (SE, {g['peer_n']} seeds); interval "
                f"{f(g['low'])} – {f(g['high'])}: {'inside' if g['inside'] else '**outside**'}.", "",
            "| epoch | " + " | ".join(f"`{s}` ours | `{s}` peer" for s in ENDS) + " |",
            "| --- |" + " --- | --- |" * len(ENDS)]
    epochs = sorted({e for s in ENDS for c in result["curves"][s].values() for e in c})
    for e in epochs:
        out.append(f"| {e} | " + " | ".join(f"{f(result['curves'][s]['ours'].get(e))} | {f(result['curves'][s]['peer'].get(e))}"
                                            for s in ENDS) + " |")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report.peer", description=__doc__.split("\n\n")[0])
    p.add_argument("ours", type=Path, help="our committed study (results/imagenette-proxy64)")
    p.add_argument("peers", type=Path, nargs="+", help="studies of imported train.py runs; the first one decides")
    p.add_argument("--out", type=Path, help="write the numbers and the verdict as JSON here")
    a = p.parse_args(argv)
    try:
        results = [check(a.ours, peer) for peer in a.peers]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print("\n".join(markdown(r)) + "\n")
    verdict = "agree" if results[0]["agree"] else "DISAGREE"
    print(f"verdict (declared rule, on {results[0]['peer']}): the loops {verdict}")
    if a.out:
        write_json(a.out, {"rule": "\n\n".join(__doc__.split("\n\n")[2:5]), "verdict": verdict, "results": results})
    return 0 if results[0]["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
