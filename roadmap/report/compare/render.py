"""A comparison in Markdown: `verdicts.md` (contrasts per study, hypotheses and verdicts, scores, the
figures, the cost against the cap, the studies' runs, the rules used) and the generated block of a study
page between the spec's begin/end markers (the prose around it is left alone)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...files import atomic_write_text, markdown_table
from .rules import RULES
from .spec import Spec


def fmt(x: Optional[float], se: Optional[float] = None) -> str:
    if x is None:
        return "—"
    return f"{x:+.2f}" + (f" ± {se:.2f}" if se is not None else "")


def _value(h: Dict[str, Any]) -> str:
    """A hypothesis's value column: D ± SE, the scores' differences, or the picks."""
    if h["measure"] == "scores":
        return "—" if h.get("D_rho") is None else f"Δρ {h['D_rho']:+.2f}, Δk {h['D_k']:+d}"
    if h["measure"] == "pick":
        picks = h.get("picks") or {}
        return "; ".join(f"{s}: {v:g}" for s, v in picks.items()) or "—"
    return fmt(h.get("D"), h.get("se"))


def contrasts_table(result: Dict[str, Any], spec: Spec) -> str:
    rows = []
    for name in spec.table:
        study = result["studies"][name]
        cells = {c: study["contrasts"].get(c) for c in spec.contrasts}
        rows.append({"study": f"`{name}`", "setting": study["label"],
                     **{c: fmt(v["delta"], v["se"]) + f" ({v['n']})" if v else "not run" for c, v in cells.items()}})
    headers = ["study", "setting", *(f"{c.label} Δ ± SE (seeds); paper {fmt(c.paper)}" for c in spec.contrasts.values())]
    return markdown_table(rows, ["study", "setting", *spec.contrasts], headers)


def hypotheses_table(result: Dict[str, Any]) -> str:
    rows = [{"h": k, "what": v["what"], "value": _value(v), "verdict": v["verdict"]} for k, v in result["hypotheses"].items()]
    return markdown_table(rows, ["h", "what", "value", "verdict"], ["", "measurement", "value ± SE", "verdict (declared rule)"])


def scores_table(result: Dict[str, Any], spec: Spec) -> str:
    rows = []
    for name in spec.scores:
        study = result["studies"][name]
        s = study.get("scores") or {}
        if not study["finished"]:
            rows.append({"study": f"`{name}`", "setting": study["label"], "rho": "not run", "k": "not run", "runs": "0"})
            continue
        rows.append({"study": f"`{name}`", "setting": study["label"],
                     "rho": "—" if s["rho"] is None else f"{s['rho']:+.2f} (p {s['p']:.3f}, {s['steps']} steps)",
                     "k": f"{s['k']} of {s['of']} ({s['agree_beyond_2se']} beyond 2 SE; {s['disagree_beyond_2se']} "
                          f"disagree beyond 2 SE)",
                     "runs": f"{s['runs_done']} of {s['runs_planned']}"})
    return markdown_table(rows, ["study", "setting", "rho", "k", "runs"],
                          ["study", "setting", "Spearman's ρ with the paper (p, main-path steps)",
                           "big-step signs that agree", "main-path runs done"])


def studies_table(result: Dict[str, Any]) -> str:
    rows = []
    for name, s in result["studies"].items():
        sources = "; ".join(f"`{x['dir']}`" + ("" if x["present"] else " (absent)") + f": {x['runs']}" for x in s["sources"])
        runs = f"{s['finished']}" + (f" of {s['expected']}" if s["expected"] else "") + \
            (f", {s['failed_runs']} failed" if s["failed_runs"] else "")
        rows.append({"study": f"`{name}`", "setting": s["label"], "axes": ", ".join(f"{k} {v}" for k, v in s["axes"].items()),
                     "seeds": " ".join(map(str, s["seeds"])), "sources": sources, "runs": runs if s["finished"] else "not run"})
    return markdown_table(rows, ["study", "setting", "axes", "seeds", "sources", "runs"],
                          ["study", "setting", "axes", "seeds", "sources (runs taken from each)", "finished runs"])


def rules_lines(spec: Spec) -> List[str]:
    used = list(dict.fromkeys(h.rule for h in spec.hypotheses.values()))
    lines = ["## Rules", ""]
    for r in used:
        doc = " ".join((RULES[r].decide.__doc__ or "").split())
        lines.append(f"- `{r}`: {doc}")
    return lines + [""] if used else []


def _cost_lines(c: Optional[Dict[str, Any]]) -> List[str]:
    if not c:
        return []
    rows = [{"study": f"`{k}`", "runs": int(v["runs"]), "wall": f"{v['wall_s'] / 60:.0f} min"} for k, v in c["studies"].items()]
    table = markdown_table(rows, ["study", "runs", "wall"], ["study folder", "kept runs", "summed wall time"]) \
        if rows else "No kept run in the cap's folders yet.\n"
    return ["## Runs and the cap", "",
            f"{c['runs']} kept runs, {c['wall_s'] / 60:.0f} min of run wall time (all attempts) on {c['lanes']} lanes: "
            f"**{c['cap_used_min']:.0f} of the {c['cap_min']:g} min cap used**.", "", table]


def markdown(result: Dict[str, Any], spec: Spec, out: Path, command: str) -> str:
    """verdicts.md."""
    design = f"; the design and the decision rules are in [{spec.design}]({Path(os.path.relpath(spec.design, out)).as_posix()})" \
        if spec.design else ""
    scores = ["## Scores against the paper", "", scores_table(result, spec), ""] if spec.scores else []
    figures = [f"![{name}]({name}.png)" for name in spec.figures]
    return "\n".join([
        f"# {spec.title}", "",
        f"Generated by `{command}` from the kept runs alone{design}. Δ: paired by seed, {spec.metric}-epoch top-1 "
        "(points); SE over seeds; D between studies: SE = √(SE₁² + SE₂²).", "",
        "## Contrasts per study", "", contrasts_table(result, spec), "",
        "## Hypotheses", "", hypotheses_table(result), "", *scores,
        *[x for f in figures for x in (f, "")], *_cost_lines(result.get("cost")), "",
        "## Studies and their runs", "", studies_table(result), "", *rules_lines(spec)])


def check_page(page: Path, spec: Spec) -> str:
    """The page's text, if it has exactly one block to fill (else ValueError, before anything is written)."""
    if spec.page_block is None:
        raise ValueError(f"--page {page}: the spec names no page_block (the markers of the block to fill)")
    begin, end = spec.markers()
    if not page.is_file():
        raise ValueError(f"--page {page}: no such file")
    text = page.read_text()
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"--page {page} has no single '{begin}' ... '{end}' block to fill")
    return text


def _runs_line(result: Dict[str, Any]) -> str:
    c = result.get("cost")
    if c:
        return f"{c['runs']} kept runs, {c['cap_used_min']:.0f} of the {c['cap_min']:g} min cap used."
    return f"{sum(s['finished'] for s in result['studies'].values())} finished runs over {len(result['studies'])} studies."


def page_block(result: Dict[str, Any], spec: Spec, rel: str, command: str) -> Tuple[str, str, List[str]]:
    begin, end = spec.markers()
    scores = [scores_table(result, spec), ""] if spec.scores else []
    figures = [f"![{name} figure]({rel}/{name}.png)" for name in spec.figures]
    return begin, end, [
        begin, f"*Rebuilt from the kept runs by `{command}`; do not edit by hand. {_runs_line(result)}*", "",
        *[x for f in figures for x in (f, "")], hypotheses_table(result), "", contrasts_table(result, spec), "", *scores,
        f"Full table and cost per study folder: [{rel}/verdicts.md]({rel}/verdicts.md).", end]


def update_page(page: Path, result: Dict[str, Any], spec: Spec, out: Path, command: str) -> None:
    """Rewrite the block between the spec's markers with links relative to the page."""
    text = check_page(page, spec)
    rel = Path(os.path.relpath(out, page.parent)).as_posix()
    begin, end, block = page_block(result, spec, rel, command)
    head, rest = text.split(begin, 1)
    atomic_write_text(page, head + "\n".join(block) + rest.split(end, 1)[1])
