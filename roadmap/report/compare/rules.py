"""The decision rules a comparison spec can name (`rule:` of a hypothesis), each a documented function
of one measurement, and the measures they decide.

A measurement is a dict: `D` and `se` (the value and its standard error), `n` (the fewest seeds behind
it); a `scores` measurement has `D_rho` and `D_k` instead; a `pick` measurement `picks` (step -> the
picked axis value). Before a rule is asked, the analysis has already answered "not run" (no run to
measure) and "undecided (k of K steps paired)" (a measure over several steps with a step missing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

MEASURES = {
    "change": "a contrast's Δ in study `to` minus in study `from`: D = Δ(to) − Δ(from), SE_D = √(SE_from² + SE_to²)",
    "across": "top-1 of study `to` minus study `from` at the same step, paired by seed; over several steps "
              "the mean, SE = √(Σ SE²) / k",
    "scores": "Spearman's ρ with the paper's trajectory and k (big-step signs that agree): `to` minus `from`",
    "pick": "per step: the study (its number on `axis`) with the highest top-1 of seed `seed`, ties within "
            "`tie` points to the smaller number; a failed run scores lowest",
}
DIRECTIONS = ("up", "down", "either")
EPS = 1e-9  # thresholds compare with this slack (ρ differences are floats)


def _provisional(verdict: str, n: int) -> str:
    return verdict + (f" — provisional ({n} seed{'s' if n != 1 else ''})" if n <= 2 else "")


def change_verdict(d: float, se: float, sign: int, n: int) -> str:
    """`moves` in the direction `sign` (+1 up, −1 down)."""
    if d * sign > 2 * se:
        v = "supported"
    elif d * sign < -2 * se:
        v = "refuted (moves the other way)"
    elif abs(d) < 1 and 2 * se < 1:
        v = "refuted (no change)"
    else:
        v = "undecided at this budget"
    return v if v.startswith("undecided") else _provisional(v, n)


def moves(m: Dict[str, Any], direction: str = "up") -> str:
    """The rule of docs/studies/proxy64-budgets.md for a change D ± SE in the stated `direction`: D beyond
    2 SE that way = **supported**; beyond 2 SE the other way = **refuted (moves the other way)**; |D| < 1
    point with 2 SE < 1 point = **refuted (no change)**; otherwise **undecided at this budget** (one seed:
    **undecided (one seed)**). With 2 seeds or fewer a decided verdict is provisional. `direction: either`
    (the sign is the finding): |D| beyond 2 SE = **supported (moves up/down)**, the other classes as above."""
    if m["se"] is None:
        return "undecided (one seed)"
    if direction != "either":
        return change_verdict(m["D"], m["se"], 1 if direction == "up" else -1, m["n"])
    if abs(m["D"]) > 2 * m["se"]:
        return _provisional(f"supported (moves {'up' if m['D'] > 0 else 'down'})", m["n"])
    return change_verdict(m["D"], m["se"], 1 if m["D"] >= 0 else -1, m["n"])


def moves_every_step(m: Dict[str, Any], direction: str = "up") -> str:
    """"Every model moves that way": an `across` measure over several steps is **refuted (<steps> trains
    worse)** (or better, for `down`) if any step moves against the direction beyond its own 2 SE;
    otherwise `moves` on the mean over the steps."""
    sign = 1 if direction == "up" else -1
    against = [s for s, p in m["steps"].items() if p["delta"] * sign < -2 * p["se"]]
    if against:
        return f"refuted ({', '.join(against)} trains {'worse' if sign > 0 else 'better'})"
    return change_verdict(m["D"], m["se"], sign, m["n"])


def beyond_2se(m: Dict[str, Any]) -> str:
    """Either way, the sign is reported, not judged: **moves beyond 2 SE** (an `across` measure at one
    step: "moves the step's Δ beyond 2 SE") if |D| > 2 SE, else **within 2 SE**; provisional with 2 seeds."""
    if m["se"] is None:
        return "1 seed: no SE yet"
    what = "moves the step's Δ" if m.get("of") == 1 else "moves"
    v = f"{what} beyond 2 SE" if abs(m["D"]) > 2 * m["se"] else "within 2 SE"
    return v + (" — provisional (2 seeds)" if m["n"] == 2 else "")


def toward_paper(m: Dict[str, Any], rho: float = 0.2, k: int = 2) -> str:
    """Toward the paper's trajectory (docs/studies/proxy64-init-lr.md): **supported** if ρ rises by at least `rho` and k
    (big-step signs that agree with the paper) does not fall; **refuted** if ρ falls by at least `rho` or
    k falls by at least `k`; otherwise **undecided**. ρ and k have no SE: descriptive thresholds; with 2
    seeds or fewer a decided verdict is provisional."""
    if m["D_rho"] >= rho - EPS and m["D_k"] >= 0:
        v = "supported"
    elif m["D_rho"] <= -rho + EPS or m["D_k"] <= -k:
        v = "refuted"
    else:
        return "undecided"
    return _provisional(v, m["n"])


def picks_differ(m: Dict[str, Any]) -> str:
    """Whether a rule picks differently on different steps: **supported (the picks differ)** if the steps'
    picks differ, **refuted (the same pick)** if not."""
    return "supported (the picks differ)" if len(set(m["picks"].values())) > 1 else "refuted (the same pick)"


@dataclass(frozen=True)
class Rule:
    decide: Callable[..., str]
    measures: Tuple[str, ...]
    params: Dict[str, Tuple[Any, Any]]  # name -> (default, allowed: a tuple of choices, or 'number' / 'count')


RULES: Dict[str, Rule] = {
    "moves": Rule(moves, ("change", "across"), {"direction": (None, DIRECTIONS)}),
    "moves_every_step": Rule(moves_every_step, ("across",), {"direction": (None, ("up", "down"))}),
    "beyond_2se": Rule(beyond_2se, ("change", "across"), {}),
    "toward_paper": Rule(toward_paper, ("scores",), {"rho": (0.2, "number"), "k": (2, "count")}),
    "picks_differ": Rule(picks_differ, ("pick",), {}),
}
