"""The comparison spec: a YAML file naming the studies, contrasts, hypotheses, figures and cap of one
comparison, read and validated here before anything is read from a run or written (docs/compare.md).

Every invalid value raises `SpecError` with one line naming the key (dotted, e.g.
`studies.auto.runs[0].steps`) and what is allowed.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from ...config import step_names
from ..paper import MAIN_ROADMAP, PAPER_TABLE, main_path, named_contrasts, paper_delta
from ..stats import METRICS
from .rules import MEASURES, RULES

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$")
MAIN_PATH_WORD = "main_path"  # `steps: main_path` is the roadmap's main path, in order
TOP_KEYS = ("name", "title", "design", "results", "metric", "regime", "seeds", "steps", "page_block", "contrasts",
            "studies", "table", "scores", "hypotheses", "figures", "cap")
STUDY_KEYS = ("label", "axes", "seeds", "steps", "runs", "expect")
SOURCE_KEYS = ("dir", "steps", "variant", "seeds", "after", "before", "expect")
HYPOTHESIS_KEYS = {  # per measure: required keys, optional keys (besides measure, rule, what, when, the rule's)
    "change": (("from", "to", "contrast"), ()),
    "across": (("from", "to", "steps"), ()),
    "scores": (("from", "to"), ()),
    "pick": (("studies", "axis", "steps"), ("seed", "tie")),
}
FIGURE_KINDS = ("contrasts", "trajectory")


class SpecError(ValueError):
    """A comparison spec is invalid. The message is one line meant for the user."""


@dataclass
class Source:
    """Where some of a study's runs are: a folder and the filters that pick runs in it."""
    dir: str
    steps: Optional[List[str]] = None
    variant: Optional[str] = None  # the run folder's name after `seed<k>,` ('' = a plain `seed<k>`); None = any
    seeds: Optional[List[int]] = None
    after: Optional[str] = None   # finished_at on or after
    before: Optional[str] = None  # finished_at before
    expect: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Study:
    name: str
    label: str
    axes: Dict[str, Any]
    seeds: List[int]
    steps: Optional[List[str]]
    sources: List[Source]
    expect: Dict[str, Any]


@dataclass
class Contrast:
    name: str
    frm: str
    to: str
    label: str
    paper: Optional[float]


@dataclass
class Hypothesis:
    name: str
    measure: str
    rule: str
    what: str
    params: Dict[str, Any]
    frm: Optional[str] = None
    to: Optional[str] = None
    contrast: Optional[str] = None
    steps: List[str] = field(default_factory=list)
    studies: List[str] = field(default_factory=list)
    axis: Optional[str] = None
    seed: int = 0
    tie: float = 0.5
    when: Optional[Dict[str, Any]] = None


@dataclass
class Panel:
    title: str
    points: List[Optional[Tuple[str, str]]]  # (study, label) in order; None leaves a gap (categorical panels)
    x: Optional[str] = None  # a numeric axis of the studies; None: one slot per point, in order
    xscale: str = "linear"
    ticks: Optional[List[float]] = None
    xlim: Optional[Tuple[float, float]] = None
    empty: str = "not run yet"


@dataclass
class Figure:
    name: str
    kind: str
    title: str
    ylabel: str = ""
    contrasts: List[str] = field(default_factory=list)
    panels: List[Panel] = field(default_factory=list)
    studies: List[str] = field(default_factory=list)
    steps: List[str] = field(default_factory=list)


@dataclass
class Cap:
    minutes: float
    lanes: int
    folders: List[str]
    after: Optional[str] = None
    before: Optional[str] = None


@dataclass
class Spec:
    path: Path
    name: str
    title: str
    design: Optional[str]
    results: str
    metric: str
    regime: str
    page_block: Optional[str]
    contrasts: Dict[str, Contrast]
    studies: Dict[str, Study]
    table: List[str]
    scores: List[str]
    hypotheses: Dict[str, Hypothesis]
    figures: Dict[str, Figure]
    cap: Optional[Cap]

    def markers(self) -> Tuple[str, str]:
        return f"<!-- {self.page_block}:begin -->", f"<!-- {self.page_block}:end -->"


# =============================================================================================
# Small checks, each raising one line
# =============================================================================================
def _show(x: Any) -> str:
    return repr(x) if not isinstance(x, (dict, list)) else type(x).__name__


def _mapping(node: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Dict[str, Any]:
    if not isinstance(node, dict):
        raise SpecError(f"{where}: expected a mapping, got {_show(node)}")
    for k in node:
        if k not in allowed:
            raise SpecError(f"{where}: unknown key {k!r}; allowed: {', '.join(allowed)}")
    for k in required:
        if k not in node:
            raise SpecError(f"{where}: {k!r} is required")
    return node


def _text(node: Any, where: str) -> str:
    if isinstance(node, bool) or not isinstance(node, (str, int, float)) or str(node) == "":
        raise SpecError(f"{where}: expected a text, got {_show(node)}")
    return str(node)


def _name(node: Any, where: str) -> str:
    if not isinstance(node, str) or not NAME.match(node):
        raise SpecError(f"{where}: expected a name of letters, digits and _ . + - , got {_show(node)}")
    return node


def _number(node: Any, where: str, lo: Optional[float] = None) -> float:
    if isinstance(node, bool) or not isinstance(node, (int, float)) or (lo is not None and node < lo):
        raise SpecError(f"{where}: expected a number" + (f" ≥ {lo:g}" if lo is not None else "") + f", got {_show(node)}")
    return node


def _int(node: Any, where: str, lo: Optional[int] = None) -> int:
    if isinstance(node, bool) or not isinstance(node, int) or (lo is not None and node < lo):
        raise SpecError(f"{where}: expected an integer" + (f" ≥ {lo}" if lo is not None else "") + f", got {_show(node)}")
    return node


def _list(node: Any, where: str) -> List[Any]:
    if not isinstance(node, list) or not node:
        raise SpecError(f"{where}: expected a non-empty list, got {_show(node)}")
    return node


def _seeds(node: Any, where: str) -> List[int]:
    seeds = [_int(s, f"{where}[{i}]", 0) for i, s in enumerate(_list(node, where))]
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: a seed is listed twice ({seeds})")
    return seeds


def _choice(node: Any, where: str, allowed: Sequence[str]) -> str:
    if node not in allowed:
        raise SpecError(f"{where}: {node!r} is not allowed; allowed: {', '.join(allowed)}")
    return node


def _steps(node: Any, where: str) -> List[str]:
    if node == MAIN_PATH_WORD:
        return main_path(MAIN_ROADMAP)
    known = step_names()
    return [_choice(s, f"{where}[{i}]", known) for i, s in enumerate(_list(node, where))]


def _stamp(node: Any, where: str) -> str:
    """A date or date and time as runs record `finished_at` ('2026-12-07' or '2026-12-07 03:10[:37]')."""
    if isinstance(node, _dt.datetime):
        return node.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(node, _dt.date):
        return node.isoformat()
    if not isinstance(node, str) or not STAMP.match(node):
        raise SpecError(f"{where}: expected a date 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM[:SS]', got {_show(node)}")
    return node


def _expect(node: Any, where: str) -> Dict[str, Any]:
    """Config keys (dotted, e.g. scale.lr_mult.modern) or `effective_init` -> the value every run must have."""
    node = _mapping(node, where, list(node) if isinstance(node, dict) else [])
    for k, v in node.items():
        if not isinstance(k, str) or not re.match(r"^[A-Za-z_][\w]*(\.[\w]+)*$", k):
            raise SpecError(f"{where}: {k!r} is not a config key (dotted, e.g. model.init) or effective_init")
        if isinstance(v, (dict, list)):
            raise SpecError(f"{where}.{k}: expected one value, got {_show(v)}")
    return dict(node)


# =============================================================================================
# Sections
# =============================================================================================
def _source(node: Any, where: str) -> Source:
    if isinstance(node, str):
        node = {"dir": node}
    node = _mapping(node, where, SOURCE_KEYS, ("dir",))
    variant = node.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise SpecError(f"{where}.variant: expected the run folder's overrides as text ('' = none), got {_show(variant)}")
    return Source(dir=_text(node["dir"], f"{where}.dir"),
                  steps=_steps(node["steps"], f"{where}.steps") if "steps" in node else None, variant=variant,
                  seeds=_seeds(node["seeds"], f"{where}.seeds") if "seeds" in node else None,
                  after=_stamp(node["after"], f"{where}.after") if "after" in node else None,
                  before=_stamp(node["before"], f"{where}.before") if "before" in node else None,
                  expect=_expect(node.get("expect", {}), f"{where}.expect"))


def _study(name: str, node: Any, where: str, seeds: Optional[List[int]], steps: Optional[List[str]]) -> Study:
    node = _mapping(node, where, STUDY_KEYS, ("runs",))
    axes = _mapping(node.get("axes", {}), f"{where}.axes", list(node.get("axes") or {}))
    for k, v in axes.items():
        if isinstance(v, (dict, list)) or v is None:
            raise SpecError(f"{where}.axes.{k}: expected one value (a number or a text), got {_show(v)}")
    study_seeds = _seeds(node["seeds"], f"{where}.seeds") if "seeds" in node else seeds
    if study_seeds is None:
        raise SpecError(f"{where}: 'seeds' is required (here or at the top of the spec)")
    sources = [_source(s, f"{where}.runs[{i}]") for i, s in enumerate(_list(node["runs"], f"{where}.runs"))]
    if "steps" in node:
        steps = _steps(node["steps"], f"{where}.steps")
    elif all(s.steps for s in sources):  # the steps its sources name, in roadmap order
        named = {x for s in sources for x in s.steps or []}
        steps = [x for x in step_names() if x in named]
    return Study(name=name, label=_text(node.get("label", name), f"{where}.label"), axes=dict(axes),
                 seeds=study_seeds, steps=steps, sources=sources, expect=_expect(node.get("expect", {}), f"{where}.expect"))


def _contrasts(node: Any, extra: Sequence[str], regime: str) -> Dict[str, Contrast]:
    """The spec's contrasts, in order: names from reference.yaml or {name: {from, to, label}}; then `extra`
    ('name=from:to' from the command line)."""
    known = named_contrasts(MAIN_ROADMAP)
    out: Dict[str, Contrast] = {}

    def add(name: str, body: Dict[str, Any], where: str) -> None:
        body = _mapping(body, where, ("from", "to", "label"), ("from", "to"))
        frm, to = (_choice(body[k], f"{where}.{k}", step_names()) for k in ("from", "to"))
        if name in out:
            raise SpecError(f"{where}: contrast {name!r} is declared twice")
        out[name] = Contrast(name, frm, to, _text(body.get("label", name), f"{where}.label"), paper_delta(to, frm, regime))

    for i, item in enumerate(node or []):
        where = f"contrasts[{i}]"
        if isinstance(item, str):
            add(item, known.get(_choice(item, where, list(known)), {}), where)
        elif isinstance(item, dict) and len(item) == 1:
            name, body = next(iter(item.items()))
            add(_name(name, where), body, f"{where}.{name}")
        else:
            raise SpecError(f"{where}: expected a contrast of reference.yaml ({', '.join(known)}) or "
                            f"{{name: {{from: <step>, to: <step>, label: <text>}}}}, got {_show(item)}")
    for item in extra:
        m = re.fullmatch(r"([A-Za-z0-9][\w.+-]*)=([\w]+):([\w]+)", item)
        if not m:
            raise SpecError(f"--contrast {item!r}: expected NAME=FROM_STEP:TO_STEP (e.g. arch=modern_recipe:separate_downsampling)")
        add(m.group(1), {"from": m.group(2), "to": m.group(3)}, f"--contrast {m.group(1)}")
    return out


def _rule_params(node: Dict[str, Any], where: str, measure: str) -> Tuple[str, Dict[str, Any]]:
    rule = _choice(node["rule"], f"{where}.rule", list(RULES))
    spec = RULES[rule]
    if measure not in spec.measures:
        raise SpecError(f"{where}.rule: {rule!r} does not decide a {measure!r} measure; rules for it: "
                        f"{', '.join(r for r, s in RULES.items() if measure in s.measures)}")
    params = {}
    for k, (default, allowed) in spec.params.items():
        if k not in node:
            if default is None:
                raise SpecError(f"{where}: {k!r} is required by rule {rule!r}"
                                + (f" ({', '.join(allowed)})" if isinstance(allowed, tuple) else ""))
            params[k] = default
        elif isinstance(allowed, tuple):
            params[k] = _choice(node[k], f"{where}.{k}", allowed)
        else:
            params[k] = _number(node[k], f"{where}.{k}", 0) if allowed == "number" else _int(node[k], f"{where}.{k}", 1)
    return rule, params


def _when(node: Any, where: str, earlier: Dict[str, Hypothesis]) -> Dict[str, Any]:
    node = _mapping(node, where, ("hypothesis", "step", "picked"), ("hypothesis", "step", "picked"))
    picks = [h for h, v in earlier.items() if v.measure == "pick"]
    h = _choice(node["hypothesis"], f"{where}.hypothesis", picks or ["(no earlier pick hypothesis)"])
    _choice(node["step"], f"{where}.step", earlier[h].steps)
    return {"hypothesis": h, "step": node["step"], "picked": _number(node["picked"], f"{where}.picked")}


def _hypothesis(name: str, node: Any, where: str, spec: Dict[str, Any], earlier: Dict[str, Hypothesis]) -> Hypothesis:
    if not isinstance(node, dict) or "measure" not in node:
        raise SpecError(f"{where}: expected a mapping with 'measure' ({', '.join(MEASURES)})")
    measure = _choice(node["measure"], f"{where}.measure", list(MEASURES))
    need, optional = HYPOTHESIS_KEYS[measure]
    rule_params = list(RULES[node["rule"]].params) if node.get("rule") in RULES else []
    _mapping(node, where, ("measure", "rule", "what", "when", *need, *optional, *rule_params), (*need, "rule"))
    rule, params = _rule_params(node, where, measure)
    studies, contrasts = spec["studies"], spec["contrasts"]
    h = Hypothesis(name=name, measure=measure, rule=rule, what="", params=params)
    for k in ("from", "to"):
        if k in node:
            setattr(h, "frm" if k == "from" else "to", _choice(node[k], f"{where}.{k}", list(studies)))
    if "contrast" in node:
        if node["contrast"] not in contrasts:
            raise SpecError(f"{where}.contrast: {node['contrast']!r} is not a contrast of this spec; declared: "
                            f"{', '.join(contrasts) or 'none'} (add it under 'contrasts': reference.yaml has "
                            f"{', '.join(named_contrasts(MAIN_ROADMAP))}, or {{name: {{from, to}}}})")
        h.contrast = node["contrast"]
    if "steps" in node:
        h.steps = _steps(node["steps"], f"{where}.steps")
    if "studies" in node:
        h.studies = [_choice(s, f"{where}.studies[{i}]", list(studies)) for i, s in enumerate(_list(node["studies"], f"{where}.studies"))]
        h.axis = _text(node["axis"], f"{where}.axis")
        for s in h.studies:
            if not isinstance(studies[s].axes.get(h.axis), (int, float)):
                raise SpecError(f"{where}.axis: study {s!r} has no number on axis {h.axis!r} (axes.{h.axis})")
        h.seed = _int(node.get("seed", 0), f"{where}.seed", 0)
        h.tie = _number(node.get("tie", 0.5), f"{where}.tie", 0)
    if "when" in node:
        h.when = _when(node["when"], f"{where}.when", earlier)
    h.what = _text(node["what"], f"{where}.what") if "what" in node else default_what(h, contrasts)
    return h


def default_what(h: Hypothesis, contrasts: Dict[str, Contrast]) -> str:
    if h.measure == "change":
        return f"Δ_{h.contrast}({h.to}) − Δ_{h.contrast}({h.frm})"
    if h.measure == "across":
        where = f"at {h.steps[0]}" if len(h.steps) == 1 else f"mean over {len(h.steps)} steps"
        return f"top-1({h.to}) − top-1({h.frm}), {where}"
    if h.measure == "scores":
        return f"Spearman's ρ and big-step signs with the paper: {h.to} − {h.frm}"
    return f"the {h.axis} with the highest seed-{h.seed} top-1 on each step (ties within {h.tie:g} to the smaller)"


def _panel(node: Any, where: str, studies: Dict[str, Study]) -> Panel:
    node = _mapping(node, where, ("title", "x", "xscale", "ticks", "xlim", "studies", "empty"), ("studies",))
    points: List[Optional[Tuple[str, str]]] = []
    for i, item in enumerate(_list(node["studies"], f"{where}.studies")):
        w = f"{where}.studies[{i}]"
        if item is None:
            points.append(None)
            continue
        if not isinstance(item, str) and not (isinstance(item, dict) and len(item) == 1):
            raise SpecError(f"{w}: expected a study, {{study: label}} or null (a gap), got {_show(item)}")
        name, label = (item, item) if isinstance(item, str) else next(iter(item.items()))
        points.append((_choice(name, w, list(studies)), _text(label, w)))
    p = Panel(title=_text(node.get("title", ""), f"{where}.title") if node.get("title") else "", points=points,
              xscale=_choice(node.get("xscale", "linear"), f"{where}.xscale", ("linear", "log2")),
              empty=_text(node.get("empty", "not run yet"), f"{where}.empty"))
    if "x" in node:
        p.x = _text(node["x"], f"{where}.x")
        for pt in points:
            if pt is None or not isinstance(studies[pt[0]].axes.get(p.x), (int, float)):
                raise SpecError(f"{where}.x: every point of a panel with x needs a number on axis {p.x!r}"
                                + (f" (study {pt[0]!r} has none)" if pt else " (no gaps)"))
    if "ticks" in node:
        p.ticks = [_number(t, f"{where}.ticks[{i}]") for i, t in enumerate(_list(node["ticks"], f"{where}.ticks"))]
    if "xlim" in node:
        lim = _list(node["xlim"], f"{where}.xlim")
        if len(lim) != 2:
            raise SpecError(f"{where}.xlim: expected [low, high], got {lim}")
        p.xlim = (_number(lim[0], f"{where}.xlim[0]"), _number(lim[1], f"{where}.xlim[1]"))
    return p


def _figure(name: str, node: Any, where: str, spec: Dict[str, Any]) -> Figure:
    if not isinstance(node, dict) or "kind" not in node:
        raise SpecError(f"{where}: expected a mapping with 'kind' ({', '.join(FIGURE_KINDS)})")
    kind = _choice(node["kind"], f"{where}.kind", FIGURE_KINDS)
    studies = spec["studies"]
    if kind == "contrasts":
        node = _mapping(node, where, ("kind", "title", "ylabel", "contrasts", "panels"), ("panels",))
        names = [_choice(c, f"{where}.contrasts[{i}]", list(spec["contrasts"]))
                 for i, c in enumerate(node.get("contrasts") or list(spec["contrasts"]))]
        if not names:
            raise SpecError(f"{where}: a contrasts figure needs contrasts (declare them under 'contrasts')")
        return Figure(name=name, kind=kind, title=_text(node.get("title", name), f"{where}.title"),
                      ylabel=_text(node.get("ylabel", "paired Δ top-1 (points), bars ± 2 SE; dashed: paper"), f"{where}.ylabel"),
                      contrasts=names, panels=[_panel(p, f"{where}.panels[{i}]", studies)
                                               for i, p in enumerate(_list(node["panels"], f"{where}.panels"))])
    node = _mapping(node, where, ("kind", "title", "studies", "steps"), ("studies",))
    return Figure(name=name, kind=kind, title=_text(node.get("title", name), f"{where}.title"),
                  studies=[_choice(s, f"{where}.studies[{i}]", list(studies)) for i, s in enumerate(_list(node["studies"], f"{where}.studies"))],
                  steps=_steps(node.get("steps", MAIN_PATH_WORD), f"{where}.steps"))


def _cap(node: Any) -> Cap:
    node = _mapping(node, "cap", ("minutes", "lanes", "folders", "after", "before"), ("minutes", "lanes", "folders"))
    return Cap(minutes=_number(node["minutes"], "cap.minutes", 0), lanes=_int(node["lanes"], "cap.lanes", 1),
               folders=[_text(f, f"cap.folders[{i}]") for i, f in enumerate(_list(node["folders"], "cap.folders"))],
               after=_stamp(node["after"], "cap.after") if "after" in node else None,
               before=_stamp(node["before"], "cap.before") if "before" in node else None)


def _study_list(raw: Dict[str, Any], key: str, studies: Dict[str, Study], default: List[str]) -> List[str]:
    if key not in raw:
        return default
    return [_choice(s, f"{key}[{i}]", list(studies)) for i, s in enumerate(_list(raw[key], key))]


def parse(raw: Any, path: Path, extra_contrasts: Sequence[str] = ()) -> Spec:
    """A validated Spec from the YAML's data (SpecError: one line naming the key)."""
    raw = _mapping(raw, "spec", TOP_KEYS, ("name", "studies"))
    name = _name(raw["name"], "name")
    metric = _choice(raw.get("metric", "last"), "metric", METRICS)
    regime = _choice(raw.get("regime", "resnet50"), "regime", list(PAPER_TABLE))
    seeds = _seeds(raw["seeds"], "seeds") if "seeds" in raw else None
    steps = _steps(raw["steps"], "steps") if "steps" in raw else None
    studies_raw = _mapping(raw["studies"], "studies", list(raw["studies"]) if isinstance(raw["studies"], dict) else [])
    studies = {_name(k, "studies"): _study(k, v, f"studies.{k}", seeds, steps) for k, v in studies_raw.items()}
    contrasts = _contrasts(raw.get("contrasts"), extra_contrasts, regime)
    ctx = {"studies": studies, "contrasts": contrasts}
    hyps: Dict[str, Hypothesis] = {}
    hyp_raw = raw.get("hypotheses") or {}
    for k, v in _mapping(hyp_raw, "hypotheses", list(hyp_raw) if isinstance(hyp_raw, dict) else []).items():
        hyps[str(k)] = _hypothesis(str(k), v, f"hypotheses.{k}", ctx, hyps)
    fig_raw = raw.get("figures") or {}
    figures = {_name(k, "figures"): _figure(k, v, f"figures.{k}", ctx)
               for k, v in _mapping(fig_raw, "figures", list(fig_raw) if isinstance(fig_raw, dict) else []).items()}
    return Spec(path=path, name=name, title=_text(raw.get("title", name), "title"),
                design=_text(raw["design"], "design") if "design" in raw else None,
                results=_text(raw.get("results", "results"), "results"), metric=metric, regime=regime,
                page_block=_name(raw["page_block"], "page_block") if "page_block" in raw else None,
                contrasts=contrasts, studies=studies,
                table=_study_list(raw, "table", studies, list(studies)), scores=_study_list(raw, "scores", studies, []),
                hypotheses=hyps, figures=figures, cap=_cap(raw["cap"]) if "cap" in raw else None)


def load_spec(path: Path, extra_contrasts: Sequence[str] = ()) -> Spec:
    """Read and validate a spec file (SpecError for a missing file, bad YAML or a bad value)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SpecError(f"{path}: not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    try:
        return parse(raw, path, extra_contrasts)
    except SpecError as e:
        raise SpecError(f"{path.as_posix()}: {e}") from None
