"""What changes between consecutive main-path presets, and which of it the step names.

    python -m roadmap.ridealong                      # Markdown table: every difference, toggle or ride-along
    python -m roadmap.ridealong --json               # the same rows as JSON
    python -m roadmap.ridealong --regime resnet200   # the ResNet-200 -> ConvNeXt-B path

For each main-path step it compares the step's fully resolved config with the previous step's
(`model.*` and `recipe.*`, the same compose as `python -m roadmap step=...`), plus what the config
resolves to but does not spell out:

* `effective.init`: what `init=auto` means for this model (`model.effective_init`);
* `effective.branch_gain`: how the residual branch's gain starts (zero-initialised last BN, layer
  scale, or 1);
* `built.<module pattern>`: the layer types the model builds there (block and stage indices
  collapsed to `*`, Identity = absent), so that a norm the model adds implicitly (the head norm of
  `downsample=separate`) shows up even though no config key names it.

Every difference is then classified by `ridealongs.yaml` beside this file: `toggle` (the key the
step names), `part` (a direct consequence of the toggle, e.g. the stem's own layers), or `ride-along`
(anything else: flagged). Each `part` and `ride-along` entry carries its source (the paper, the
official code, or "the paper is silent: our choice, because ..."). A difference the file does not
list is `UNDOCUMENTED`, and `tests/test_ridealong.py` fails on it, so the list cannot go stale.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch.nn as nn
import yaml
from omegaconf import OmegaConf

from .config import CONF_DIR, LEGACY, effective_init, to_container
from .model import ModernizableResNet
from .steps import MAIN_PATH, compose_config

SOURCES_PATH = CONF_DIR.parent / "ridealongs.yaml"
RECIPE_TOGGLE = "recipe"  # a step whose toggle is the recipe names every recipe.* key


@functools.lru_cache(maxsize=None)
def sources() -> Dict[str, Any]:
    with open(SOURCES_PATH) as f:
        return yaml.safe_load(f)


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """A nested config as {'a.b.c': value} (keys under `prefix`, if given)."""
    if isinstance(tree, dict):
        out: Dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def built(model: nn.Module) -> Dict[str, str]:
    """Leaf module patterns -> the layer types there ('+'-joined, sorted; Identity dropped)."""
    kinds: Dict[str, set] = {}
    for name, m in model.named_modules():
        if any(True for _ in m.children()):
            continue
        kinds.setdefault(re.sub(r"\.\d+", ".*", name), set()).add(type(m).__name__)
    return {f"built.{p}": "+".join(sorted(k - {"Identity"})) or "-" for p, k in kinds.items()}


def branch_gain(model: ModernizableResNet) -> str:
    cfg = model.cfg
    if cfg.layer_scale:
        return f"layer scale {cfg.layer_scale:g}"
    zero = (effective_init(cfg) == "resnet" and cfg.zero_init_last
            and any(hasattr(getattr(m, "norm_out", None), "weight") for m in model.modules()))
    return "zero-init last BN" if zero else "1"


def resolved(step: str, regime: str = "resnet50") -> Dict[str, Any]:
    """Every key that can differ between presets: config, effective values, built layers."""
    cfg = compose_config([f"step={step}", f"regime={regime}", "scale=paper", "data=synthetic"])
    OmegaConf.resolve(cfg)
    keys = config_keys(to_container(cfg))
    model = ModernizableResNet(OmegaConf.merge(cfg.model, {"width_mult": 0.125, "num_classes": 10}))  # layer types only
    keys["effective.branch_gain"] = branch_gain(model)
    keys.update(built(model))
    return keys


def classify(step: str, key: str) -> Dict[str, str]:
    entry = (sources().get("steps") or {}).get(step) or {}
    toggles = entry.get("toggle") or []
    if key in toggles or (RECIPE_TOGGLE in toggles and key.startswith("recipe.")):
        return {"kind": "toggle", "source": "", "why": ""}
    for kind in ("part", "ride-along"):
        item = (entry.get(kind) or {}).get(key)
        if item:
            return {"kind": kind, "source": item.get("source", ""), "why": item.get("why", "")}
    return {"kind": "UNDOCUMENTED", "source": "", "why": ""}


def fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else ("null" if v is None else str(v))


def classified_changes(items: Sequence[Tuple[str, Dict[str, Any]]]) -> List[Dict[str, str]]:
    """One row per key that changes from each (step, keys) to the next, classified."""
    rows: List[Dict[str, str]] = []
    for (before, old), (step, new) in zip(items, items[1:]):
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key, "-"), new.get(key, "-")
            if a != b:
                rows.append({"step": step, "previous": before, "key": key, "from": fmt(a), "to": fmt(b),
                             **classify(step, key)})
    return rows


def differences(steps: Sequence[str] = tuple(MAIN_PATH), regime: str = "resnet50") -> List[Dict[str, str]]:
    """Every difference between consecutive presets: config, effective values and built layers."""
    return classified_changes([(step, resolved(step, regime)) for step in steps])


def stale_entries(rows: Iterable[Dict[str, str]]) -> List[str]:
    """Entries of ridealongs.yaml that no longer match a difference (stale the other way)."""
    seen = {(r["step"], r["key"]) for r in rows}
    stale = []
    for step, entry in (sources().get("steps") or {}).items():
        for kind in ("toggle", "part", "ride-along"):
            keys = entry.get(kind) or []
            for key in (keys if isinstance(keys, list) else keys.keys()):
                if key != RECIPE_TOGGLE and (step, key) not in seen:
                    stale.append(f"{step}: {key} ({kind})")
    return stale


def config_keys(config: Dict[str, Any]) -> Dict[str, Any]:
    """A run's resolved config as the keys `resolved` compares, less the built layers."""
    keys = {**flatten(config.get("model") or {}, "model"), **flatten(config.get("recipe") or {}, "recipe")}
    for key in ("model.num_classes", "model.width_mult"):
        keys.pop(key, None)
    for key, value in LEGACY.items():  # a run recorded before the key existed trained with this value
        if key.split(".")[0] in ("model", "recipe"):
            keys.setdefault(key, value)
    if config.get("model"):
        keys["effective.init"] = effective_init(OmegaConf.create(config["model"]))
    return keys


def run_differences(configs: Sequence[Tuple[str, Dict[str, Any]]]) -> List[Dict[str, str]]:
    """The differences between consecutive runs' resolved configs ((step, config) in path order):
    model.*, recipe.* and effective.init, classified like `differences` (no built layers: a report
    reads files, it builds no model)."""
    return classified_changes([(step, config_keys(config)) for step, config in configs])


def report_lines(configs: Sequence[Tuple[str, Dict[str, Any]]]) -> List[str]:
    """The report's section: what changes at each step besides its toggle (trajectory.md)."""
    rows = [r for r in run_differences(configs) if r["kind"] in ("ride-along", "UNDOCUMENTED")]
    lines = ["## Ride-alongs", "",
             "Settings of the trained runs that change at a step without being the step's toggle "
             "(resolved config, `model.*` / `recipe.*`, and what `init=auto` resolved to); their sources are in "
             "`roadmap/ridealongs.yaml`, and `python -m roadmap.ridealong` lists every difference between the "
             "presets, built layers included.", ""]
    return lines + ([markdown(rows), ""] if rows else ["None: every difference is a step's toggle or part of it.", ""])


def markdown(rows: List[Dict[str, str]]) -> str:
    lines = ["| step | key | from → to | kind | source / why |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        flag = "**ride-along**" if r["kind"] == "ride-along" else ("**UNDOCUMENTED**" if r["kind"] == "UNDOCUMENTED"
                                                                   else r["kind"])
        why = "; ".join(x for x in (r["source"], r["why"]) if x)
        lines.append(f"| `{r['step']}` | `{r['key']}` | `{r['from']}` → `{r['to']}` | {flag} | {why} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.ridealong", description=__doc__.split("\n\n")[0])
    p.add_argument("--regime", default="resnet50", choices=("resnet50", "resnet200"))
    p.add_argument("--json", action="store_true", help="JSON rows instead of a Markdown table")
    p.add_argument("--ride-alongs-only", action="store_true", help="only the flagged rows")
    a = p.parse_args(argv)
    rows = differences(regime=a.regime)
    if a.ride_alongs_only:
        rows = [r for r in rows if r["kind"] in ("ride-along", "UNDOCUMENTED")]
    sys.stdout.write(json.dumps(rows, indent=1) + "\n" if a.json else markdown(rows))
    return 1 if any(r["kind"] == "UNDOCUMENTED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
