"""The paper's side of the report: reference.yaml lookups (steps, Δ references, top-1 and GFLOPs
per regime) and the big steps, the main-path steps whose paper Δ is large enough to score."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..config import reference
from ..steps import step_info

MAIN_ROADMAP = "convnext"
DEFAULT_REGIME = "resnet50"
PAPER_TABLE = {"resnet50": "Table 10", "resnet200": "Table 11"}
BIG_STEP_MIN = 0.5     # a big step moves the paper's top-1 by at least this many points (|Δ|, rounded to 0.01)
RECIPE_GROUP = "training recipe"  # the steps that change the recipe, not the network


def get(d: Any, dotted: str, default: Any = None) -> Any:
    """d['a']['b'] for 'a.b'; `default` where any level is missing."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def regime_ref(roadmap: str, regime: str) -> Dict[str, Any]:
    return get(reference(), f"{roadmap}.regimes.{regime}") or {}


def roadmap_steps(roadmap: str) -> List[Dict[str, Any]]:
    return list(get(reference(), f"{roadmap}.steps") or [])


def main_path(roadmap: str = MAIN_ROADMAP) -> List[str]:
    return [s["name"] for s in roadmap_steps(roadmap) if not s.get("branch")]


def delta_reference(step: str) -> Optional[str]:
    """The step a step's Δ is measured against: the previous main-path step; for a side branch,
    the step it branches from (its `parent` in reference.yaml, else the main-path predecessor of
    its main-path sibling of the same name stem: kernel_5/9/11 -> kernel_7 -> move_up_dwconv)."""
    info = step_info(step)
    steps = roadmap_steps(info["roadmap"])
    names = [s["name"] for s in steps]
    if step not in names:
        return None
    if info.get("parent"):
        return info["parent"]
    main = [s["name"] for s in steps if not s.get("branch")]

    def main_before(name: str) -> Optional[str]:
        i = names.index(name)
        prev = [n for n in names[:i] if n in main]
        return prev[-1] if prev else None

    if not info["branch"]:
        return main_before(step)
    stem = step.rsplit("_", 1)[0]
    siblings = [n for n in main if n != step and n.rsplit("_", 1)[0] == stem and "_" in n]
    return main_before(siblings[0] if siblings else step)


def paper_top1(step: str, regime: str = DEFAULT_REGIME) -> Optional[float]:
    return get(regime_ref(step_info(step)["roadmap"], regime), f"top1.{step}")


def paper_delta(step: str, vs: Optional[str], regime: str = DEFAULT_REGIME) -> Optional[float]:
    """paper top-1 of `step` minus that of `vs`, rounded to 0.01 (the table's precision)."""
    a, b = paper_top1(step, regime), paper_top1(vs, regime) if vs else None
    return None if a is None or b is None else round(a - b, 2)


def big_steps(regime: str = DEFAULT_REGIME, roadmap: str = MAIN_ROADMAP,
              minimum: float = BIG_STEP_MIN) -> List[Dict[str, Any]]:
    """Main-path steps whose paper Δ vs the previous main-path step has |Δ| >= `minimum`
    (Δ rounded to 0.01 first, so 81.97 - 81.47 = 0.50 counts), in roadmap order:
    [{'step', 'vs', 'paper_delta'}]. For the ResNet-50 regime: modern_recipe +2.69,
    stage_ratio +0.54, depthwise_conv -1.23, increase_width +2.22, move_up_dwconv -0.72,
    kernel_7 +0.65, fewer_activations +0.65, separate_downsampling +0.50."""
    out = []
    for step in main_path(roadmap):
        vs = delta_reference(step)
        d = paper_delta(step, vs, regime)
        if d is not None and abs(d) >= minimum:
            out.append({"step": step, "vs": vs, "paper_delta": d})
    return out


def named_contrasts(roadmap: str = MAIN_ROADMAP) -> Dict[str, Dict[str, str]]:
    """The named paired contrasts of reference.yaml (`<roadmap>.contrasts`): name -> {'from', 'to', 'label'};
    their paper Δ is `paper_delta(to, from, regime)`."""
    return {k: dict(v) for k, v in (get(reference(), f"{roadmap}.contrasts") or {}).items()}


def architecture_start(roadmap: str = MAIN_ROADMAP) -> Optional[str]:
    """The last main-path step of the training-recipe group: from there on only the network
    changes (modern_recipe for the ConvNeXt roadmap); None for roadmaps without one."""
    recipe = [s["name"] for s in roadmap_steps(roadmap) if not s.get("branch") and s.get("group") == RECIPE_GROUP]
    return recipe[-1] if recipe else None
