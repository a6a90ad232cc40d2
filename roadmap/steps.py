"""Step presets: the roadmap's order, and composing a step's config with Hydra's compose API.

The presets themselves live in `conf/step/*.yaml` (each is the previous step plus one change);
their order and the paper's figures live in `reference.yaml`. This module only reads them.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from .config import CONF_DIR, ConfigError, ModelConfig, option_names, reference, register_configs, step_names

# Roadmaps in reference.yaml: (section, offset of its step indices). The ConvNeXt roadmap is
# 0..16; other roadmaps (e.g. the ConvNeXt -> CMT hybrid roadmap) list theirs under
# `<section>.steps` with the same keys (name, group, label, optional branch).
ROADMAPS = (("convnext", 0), ("cmt", 100))


def step_info(step: str) -> Dict[str, Any]:
    """Order, group and label of a step: {'index', 'branch', 'name', 'group', 'label', 'roadmap'}."""
    ref = reference()
    for section, offset in ROADMAPS:
        for i, s in enumerate(ref.get(section, {}).get("steps", [])):
            if s["name"] == step:
                return {"index": offset + i, "branch": bool(s.get("branch", False)), "roadmap": section, **s}
    return {"index": 999, "branch": False, "name": step, "group": "other", "label": step, "roadmap": "other"}


def ablation_info(name: str) -> Dict[str, Any]:
    """Order and label of a leave-one-out ablation ('none' is the unablated model, index -1)."""
    if name in (None, "none"):
        return {"index": -1, "name": "none", "reverts": None, "label": "ConvNeXt (all changes)"}
    for i, a in enumerate(reference()["convnext"]["ablations"]):
        if a["name"] == name:
            return {"index": i, "label": f"- {step_info(a['reverts'])['label']}", **a}
    return {"index": 999, "name": name, "reverts": None, "label": name}


MAIN_PATH: List[str] = [s["name"] for s in reference()["convnext"]["steps"] if not s.get("branch")]
BRANCHES: List[str] = [s["name"] for s in reference()["convnext"]["steps"] if s.get("branch")]


def check_choice(group: str, value: str) -> None:
    allowed = step_names() if group == "step" else option_names(group)
    if value not in allowed:
        raise ConfigError(f"{group}={value!r} is unknown; allowed: {', '.join(allowed)}")


@contextmanager
def _isolated_hydra() -> Iterator[None]:
    """Compose our configs even inside another running Hydra app (restores its state after)."""
    gh = GlobalHydra.instance()
    saved = gh.hydra
    gh.clear()
    try:
        register_configs()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().hydra = saved


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The full run config, as `python -m roadmap <overrides>` would see it."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key in ("step", "regime", "recipe", "data", "scale", "logger", "experiment", "ablation"):
            check_choice(key, value)
    with _isolated_hydra():
        return compose(config_name="config", overrides=list(overrides))


def model_config(step: str, regime: str = "resnet50", num_classes: Optional[int] = None,
                 **overrides: Any) -> DictConfig:
    """The resolved `ModelConfig` of a step at full scale (width_mult 1 unless overridden)."""
    cfg = compose_config([f"step={step}", f"regime={regime}", "scale=paper"])
    OmegaConf.resolve(cfg)
    model = cfg.model
    if num_classes is not None:
        model.num_classes = num_classes
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for k, v in overrides.items():
        if k not in fields:
            raise ConfigError(f"model.{k} is not a model option; allowed: {', '.join(sorted(fields))}")
        model[k] = v
    return model
