"""The trajectory report of a sweep: our per-step accuracy beside the paper's (Figure 2 / Table 10).

    python -m roadmap.report outputs/sweeps/roadmap_path-imagenette-proxy-resnet50
    python -m roadmap.report <sweep dir> [<sweep dir> ...] [--out results/<name>] [--wandb offline|online|disabled]

Also run at the end of every Hydra multirun by :class:`ReportCallback` (registered in
conf/config.yaml under ``hydra.callbacks.report``; ``hydra.callbacks.report.enabled=false`` or
``$ROADMAP_REPORT=0`` turns it off).

It reads every run directory under the sweep directory (``metrics.json``: finished;
``failed.json``: failed; ``last.pt`` / ``history.csv`` / ``config.yaml`` only: running or
interrupted), groups the runs by step (by ablation for the leave-one-out experiment) and writes,
into ``<results_dir>/<dataset>-<scale>[-suffix]/``:

    trajectory.csv   one row per step, in roadmap order (machine-readable, full precision)
    trajectory.md    what was run (header), the summary, the table, the chart
    trajectory.png   Figure-2-style chart (and trajectory.svg)
    summary.json     overall gain with its uncertainty, sign agreement, Spearman's rho

Definitions (also written into trajectory.md):
  * mean and std are over seeds; std is the sample standard deviation (ddof=1; empty for n=1).
  * Δ of a main-path step is its mean minus the mean of the previous main-path step; a side
    branch (kernel_5/9/11) is compared with the step it branches from (move_up_dwconv). The
    paper's Δ is computed the same way from its Table 10/11 numbers. In the ablation report Δ is
    against the unablated model (ablation=none) and there are no paper columns.
  * the uncertainty of a difference of two means is sqrt(s_a²/n_a + s_b²/n_b).
  * Spearman's rho: over the main-path steps that have both our mean and the paper's top-1
    (scipy.stats.spearmanr, ties get their average rank).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import io
import logging
import math
import os
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .files import atomic_write_bytes, atomic_write_text, markdown_table, read_csv, read_json, write_csv, write_json
from .steps import ablation_info, reference, step_info

log = logging.getLogger("roadmap")

PathLike = Union[str, Path]
MAIN_ROADMAP = "convnext"
DEFAULT_REGIME = "resnet50"
RUN_MARKERS = ("metrics.json", "failed.json", "last.pt", "history.csv", "config.yaml")
SKIP_DIRS = {"wandb", ".hydra", "__pycache__"}
STD_NOTE = "sample standard deviation over seeds (ddof=1)"
SE_FORMULA = "sqrt(s_a²/n_a + s_b²/n_b)"
PAPER_TABLE = {"resnet50": "Table 10", "resnet200": "Table 11"}

# trajectory.csv columns, in order
FIELDS = [
    "order", "step", "label", "group", "branch", "roadmap", "ablation", "variant", "delta_vs",
    "top1_mean", "top1_std", "n", "seeds", "top1_delta", "top1_delta_se", "top5_mean",
    "paper_top1", "paper_delta", "gflops_224", "paper_gflops", "gflops", "img_size",
    "params", "params_224", "train_img_s", "eval_img_s", "wall_s_mean", "wall_s_total",
    "state", "status", "n_finished", "n_failed", "n_running", "n_missing",
]


# =============================================================================================
# Reading run directories
# =============================================================================================
def _load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
        return data if isinstance(data, dict) else {}
    except Exception:
        return {}


def _get(d: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def _split_overrides(text: str) -> List[str]:
    """'ablation=no_gelu,model.depths=[3,3,9,3]' -> two items (commas inside values survive)."""
    return [p for p in re.split(r",(?=[\w.+~/-]+=)", text) if p] if text else []


def _parse_run_dirname(name: str) -> Tuple[Optional[int], Optional[str], str]:
    """Seed, ablation and other overrides from the sweep subdir `seed<N>[,key=value,...]`.

    The other overrides make a variant of a step only where they differ between the sweep's runs
    (see `_strip_common_overrides`); overrides given to the whole sweep are in every run's name."""
    m = re.match(r"seed(-?\d+)(?:,(.*))?$", name)
    if not m:
        return None, None, ""
    ablation, rest = None, []
    for item in _split_overrides(m.group(2) or ""):
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "ablation":
            ablation = value
        else:
            rest.append(item)
    return int(m.group(1)), ablation, ",".join(rest)


def _history(run_dir: Path) -> List[Dict[str, str]]:
    try:
        return read_csv(run_dir / "history.csv") if (run_dir / "history.csv").exists() else []
    except Exception:
        return []


def _epochs_of(config: Dict[str, Any]) -> Optional[int]:
    epochs = _get(config, "scale.epochs") or _get(config, "recipe.epochs")
    return int(epochs) if isinstance(epochs, (int, float)) else None


def read_run(run_dir: PathLike) -> Dict[str, Any]:
    """One run directory as a flat record with status 'finished', 'failed' or 'running'."""
    run_dir = Path(run_dir)
    seed_d, ablation_d, variant = _parse_run_dirname(run_dir.name)
    config = _load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else {}
    rec: Dict[str, Any] = {"run_dir": str(run_dir), "variant": variant}
    metrics = None
    if (run_dir / "metrics.json").exists():
        try:
            metrics = read_json(run_dir / "metrics.json")
        except Exception as e:  # metrics.json is written atomically; a broken one is not ours
            log.warning("report: cannot read %s: %s", run_dir / "metrics.json", e)
    if metrics is not None:
        config = metrics.get("config") or config
        rec.update({k: v for k, v in metrics.items() if k != "config"})
        rec["status"] = "finished"
        rec["width_mult"] = _get(config, "scale.width_mult")
    else:
        failed = None
        if (run_dir / "failed.json").exists():
            try:
                failed = read_json(run_dir / "failed.json")
            except Exception:
                failed = {"reason": "failed.json unreadable"}
        # a retry that has written a checkpoint since the failure is running again
        ckpt = run_dir / "last.pt"
        retrying = failed is not None and ckpt.exists() and \
            ckpt.stat().st_mtime > (run_dir / "failed.json").stat().st_mtime
        hist = _history(run_dir)
        if failed is not None and not retrying:
            rec.update({"status": "failed", "error": failed.get("error"),
                        "reason": failed.get("reason") or failed.get("error") or "unknown",
                        "step": failed.get("step")})
        else:
            rec.update({"status": "running", "epochs_done": len(hist), "epochs": _epochs_of(config)})
        rec["epochs_done"] = len(hist)
        rec.setdefault("epochs", _epochs_of(config))
        if hist:
            try:
                rec["wall_seconds_partial"] = sum(float(h.get("train_seconds") or 0) for h in hist)
            except ValueError:
                pass
    rec["step"] = rec.get("step") or config.get("step") or run_dir.parent.name
    seed = rec.get("seed", config.get("seed", seed_d))
    rec["seed"] = int(seed) if seed is not None else None
    rec["ablation"] = rec.get("ablation") or config.get("ablation") or ablation_d or "none"
    rec.setdefault("dataset", _get(config, "data.name"))
    rec.setdefault("scale", _get(config, "scale.name"))
    rec.setdefault("regime", _get(config, "regime.name"))
    rec.setdefault("img_size", _get(config, "scale.img_size"))
    rec.setdefault("width_mult", _get(config, "scale.width_mult"))
    rec["config"] = config
    return rec


def find_run_dirs(sweep_dir: PathLike) -> List[Path]:
    """Every directory under `sweep_dir` that holds a run's files (metrics/failed/last.pt/...)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(sweep_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        names = set(filenames)
        if names & set(RUN_MARKERS):
            if "config.yaml" in names and not (names & set(RUN_MARKERS[:4])) and \
                    "step" not in _load_yaml(Path(dirpath) / "config.yaml"):
                continue  # some other yaml file, not a run's config
            found.append(Path(dirpath))
    return found


def _values(text: Any) -> Optional[List[str]]:
    """Values of a sweep parameter: 'a,b,c', 'range(0,3)' or a single value; None if unknown."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        return [str(t) for t in text]
    text = str(text).strip()
    m = re.fullmatch(r"range\((-?\d+)\s*,\s*(-?\d+)(?:\s*,\s*(-?\d+))?\)", text)
    if m:
        a, b, c = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        return [str(v) for v in range(a, b, c)]
    if re.match(r"\w+\(", text):  # choice(...), glob(...), interval(...): not expanded here
        return None
    return [v.strip() for v in text.split(",") if v.strip()]


def sweep_plan(sweep_dir: PathLike) -> Dict[str, Any]:
    """What the sweep asked for, from its multirun.yaml: steps, seeds, ablations and its config."""
    path = Path(sweep_dir) / "multirun.yaml"
    plan: Dict[str, Any] = {"steps": None, "seeds": None, "ablations": None, "config": {}}
    if not path.exists():
        return plan
    try:
        raw = OmegaConf.load(path)
        hydra_node = OmegaConf.to_container(raw.get("hydra", {}), resolve=False) or {}
        params: Dict[str, Any] = dict(_get(hydra_node, "sweeper.params") or {})
        for item in _get(hydra_node, "overrides.task") or []:
            key, _, value = str(item).partition("=")
            params[key.lstrip("+~")] = value
        job = OmegaConf.create({k: v for k, v in raw.items() if k != "hydra"})
        config = OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
    except Exception as e:
        log.warning("report: cannot read %s: %s", path, e)
        return plan
    plan["config"] = config
    plan["steps"] = _values(params.get("step")) or ([config["step"]] if config.get("step") else None)
    seeds = _values(params.get("seed"))
    plan["seeds"] = [int(s) for s in seeds] if seeds else ([int(config["seed"])] if "seed" in config else None)
    plan["ablations"] = _values(params.get("ablation"))
    return plan


def collect_runs(sweep_dirs: Union[PathLike, Sequence[PathLike]]) -> List[Dict[str, Any]]:
    """Every run record under the sweep directories."""
    return _strip_common_overrides([read_run(d) for s in _as_list(sweep_dirs) for d in find_run_dirs(s)])


def _strip_common_overrides(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Keep in `variant` only the overrides that not every run shares (e.g. a swept
    model.kernel_size=3,5), not those the whole sweep was launched with (data.root=..., scale.epochs=1)."""
    items = [_split_overrides(r.get("variant") or "") for r in runs]
    common = set.intersection(*(set(i) for i in items)) if items else set()
    for r, its in zip(runs, items):
        r["variant"] = ",".join(i for i in its if i not in common)
    return runs


def _as_list(sweep_dirs: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    if isinstance(sweep_dirs, (str, Path)):
        return [Path(sweep_dirs)]
    return [Path(s) for s in sweep_dirs]


# =============================================================================================
# Aggregation: one row per step (or ablation)
# =============================================================================================
def _mean(xs: Sequence[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


def _std(xs: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (ddof=1); None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _diff_se(a: Dict[str, Any], b: Dict[str, Any]) -> Optional[float]:
    """sqrt(s_a²/n_a + s_b²/n_b); None when a std is undefined (n < 2)."""
    if a.get("top1_std") is None or b.get("top1_std") is None:
        return None
    return math.sqrt(a["top1_std"] ** 2 / a["n"] + b["top1_std"] ** 2 / b["n"])


def _regime_ref(roadmap: str, regime: str) -> Dict[str, Any]:
    return _get(reference(), f"{roadmap}.regimes.{regime}") or {}


def roadmap_steps(roadmap: str) -> List[Dict[str, Any]]:
    return list(_get(reference(), f"{roadmap}.steps") or [])


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


def _status(runs: List[Dict[str, Any]], missing_seeds: List[int]) -> Tuple[str, str]:
    """(state, status): state is finished/partial/failed/running/missing; status is for people."""
    def describe(r: Dict[str, Any]) -> str:
        if r["status"] == "failed":
            return f"failed: {r.get('reason')}"
        k, n = r.get("epochs_done") or 0, r.get("epochs")
        return f"running (epoch {k} of {n if n is not None else '?'})"

    total = len(runs) + len(missing_seeds)
    fin = [r for r in runs if r["status"] == "finished"]
    other = sorted((r for r in runs if r["status"] != "finished"), key=lambda r: (r.get("seed") is None, r.get("seed")))
    if total == 0 or (not runs):
        return "missing", "missing"
    if len(fin) == total:
        return "finished", "finished"
    descs = [(r.get("seed"), describe(r)) for r in other] + [(s, "missing") for s in missing_seeds]
    if not fin:
        kinds = {r["status"] for r in other}
        state = "running" if "running" in kinds else "failed"
        unique = list(dict.fromkeys(d for _, d in descs))
        if len(unique) == 1 and not missing_seeds:
            return state, unique[0]
        return state, "; ".join(f"seed {s} {d}" for s, d in descs)
    return "partial", "; ".join([f"finished ({len(fin)} of {total} seeds)"] + [f"seed {s} {d}" for s, d in descs])


def _aggregate(key: Tuple[str, str, str], runs: List[Dict[str, Any]], expected_seeds: Optional[List[int]],
               ablation_mode: bool, regime: str) -> Dict[str, Any]:
    step, ablation, variant = key
    info = step_info(step)
    if ablation_mode:
        ainfo = ablation_info(ablation)
        order = ainfo["index"]
        reverted = re.sub(r"^ResNet \((.*)\)$", r"\1", step_info(ainfo["reverts"])["label"]) if ainfo.get("reverts") else None
        label = "ConvNeXt (all changes)" if ablation == "none" else f"− {reverted}" if reverted else ainfo["label"]
        group = "full model" if ablation == "none" else (step_info(ainfo["reverts"])["group"] if ainfo.get("reverts") else "other")
        branch = False
    else:
        order, label, group, branch = info["index"], info["label"], info["group"], info["branch"]
    if variant:
        label = f"{label} [{variant}]"
    fin = sorted((r for r in runs if r["status"] == "finished"), key=lambda r: (r.get("seed") is None, r.get("seed")))
    top1 = [float(r["top1"]) for r in fin]
    seen = {r.get("seed") for r in runs}
    missing_seeds = [s for s in (expected_seeds or []) if s not in seen]
    state, status = _status(runs, missing_seeds)

    def mean_of(k: str) -> Optional[float]:
        vals = [float(r[k]) for r in fin if isinstance(r.get(k), (int, float))]
        return _mean(vals)

    def first_of(k: str) -> Any:
        for r in fin + runs:
            if r.get(k) is not None:
                return r[k]
        return None

    walls = [float(r["wall_seconds"]) for r in fin if isinstance(r.get("wall_seconds"), (int, float))]
    ref = _regime_ref(info["roadmap"], regime)
    paper_top1 = None if ablation_mode or variant else _get(ref, f"top1.{step}")
    paper_gflops = None if ablation_mode or variant else _get(ref, f"gflops.{step}")
    return {
        "order": order, "step": step, "label": label, "group": group, "branch": branch,
        "roadmap": info["roadmap"], "ablation": ablation, "variant": variant, "delta_vs": None,
        "top1_mean": _mean(top1), "top1_std": _std(top1), "n": len(top1),
        "seeds": " ".join(str(r.get("seed")) for r in fin),
        "top1_delta": None, "top1_delta_se": None, "top5_mean": mean_of("top5"),
        "paper_top1": paper_top1, "paper_delta": None,
        "gflops_224": first_of("gflops_224"), "paper_gflops": paper_gflops, "gflops": first_of("gflops"),
        "img_size": first_of("img_size"), "params": first_of("params"), "params_224": first_of("params_224"),
        "train_img_s": mean_of("train_img_s"), "eval_img_s": mean_of("eval_img_s"),
        "wall_s_mean": _mean(walls), "wall_s_total": sum(walls) if walls else None,
        "state": state, "status": status, "n_finished": len(fin),
        "n_failed": sum(r["status"] == "failed" for r in runs),
        "n_running": sum(r["status"] == "running" for r in runs), "n_missing": len(missing_seeds),
        "runs": runs,
    }


def _most_common(values: Iterable[Any]) -> Any:
    c = Counter(v for v in values if v is not None)
    return c.most_common(1)[0][0] if c else None


def _build_rows(runs: List[Dict[str, Any]], plans: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    plan_cfg = next((p["config"] for p in plans if p["config"]), {})
    regime = _most_common(r.get("regime") for r in runs) or _get(plan_cfg, "regime.name") or DEFAULT_REGIME
    regimes = {r.get("regime") for r in runs if r.get("regime")}
    if len(regimes) > 1:
        log.warning("report: the sweep mixes regimes %s; paper columns use %s", sorted(regimes), regime)
    planned_ablations = [a for p in plans for a in (p["ablations"] or [])]
    ablation_mode = any(r.get("ablation") not in (None, "none") for r in runs) or \
        any(a != "none" for a in planned_ablations)
    seeds_expected: Optional[List[int]] = None
    for p in plans:
        if p["seeds"]:
            seeds_expected = sorted(set((seeds_expected or []) + p["seeds"]))

    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["step"], r.get("ablation") or "none", r.get("variant") or ""), []).append(r)
    # planned but absent: rows marked missing
    for p in plans:
        if ablation_mode:
            step = (p["steps"] or ["separate_downsampling"])[0]
            for a in p["ablations"] or []:
                groups.setdefault((step, a, ""), [])
        else:
            for s in p["steps"] or []:
                groups.setdefault((s, "none", ""), [])

    rows = [_aggregate(k, v, seeds_expected, ablation_mode, regime) for k, v in groups.items()]
    rows.sort(key=lambda r: (r["order"], r["variant"], r["step"], r["ablation"]))

    by_key = {(r["step"], r["ablation"]): r for r in rows if not r["variant"]}
    for r in rows:
        if ablation_mode:
            if r["ablation"] == "none":
                continue
            base = by_key.get((r["step"], "none"))
            r["delta_vs"] = "none"
        else:
            if r["variant"]:  # a variant of a step is compared with the step itself
                r["delta_vs"] = r["step"]
            else:
                r["delta_vs"] = delta_reference(r["step"])
            base = by_key.get((r["delta_vs"], "none")) if r["delta_vs"] else None
            ref = _regime_ref(r["roadmap"], regime)
            if r["paper_top1"] is not None and r["delta_vs"] and _get(ref, f"top1.{r['delta_vs']}") is not None:
                r["paper_delta"] = r["paper_top1"] - _get(ref, f"top1.{r['delta_vs']}")
        if base is not None and r["top1_mean"] is not None and base["top1_mean"] is not None:
            r["top1_delta"] = r["top1_mean"] - base["top1_mean"]
            r["top1_delta_se"] = _diff_se(r, base)
    context = {"regime": regime, "ablation_mode": ablation_mode, "plan_config": plan_cfg,
               "seeds_expected": seeds_expected}
    return rows, context


def collect(sweep_dir: Union[PathLike, Sequence[PathLike]]) -> List[Dict[str, Any]]:
    """Per-step rows of a sweep (or several), in roadmap order, with Δs and the paper's columns.

    Each row also carries `runs` (the run records it aggregates)."""
    rows, _ = _collect(sweep_dir)
    return rows


def _collect(sweep_dir: Union[PathLike, Sequence[PathLike]]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    dirs = _as_list(sweep_dir)
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"sweep directory {d} does not exist")
    runs = collect_runs(dirs)
    plans = [sweep_plan(d) for d in dirs]
    rows, context = _build_rows(runs, plans)
    context.update({"runs": runs, "sweep_dirs": dirs, "plans": plans})
    return rows, context


# =============================================================================================
# Summary
# =============================================================================================
def _ranks(xs: Sequence[float]) -> List[float]:
    """1-based ranks, ties get their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> Tuple[Optional[float], Optional[float], str]:
    """Spearman's rho and its p-value (scipy.stats.spearmanr; by hand if scipy is missing)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None, "undefined (fewer than 3 steps or constant values)"
    try:
        from scipy.stats import spearmanr

        res = spearmanr(x, y)
        return float(res.statistic), float(res.pvalue), "scipy.stats.spearmanr; ties get their average rank"
    except ImportError:
        rx, ry = _ranks(x), _ranks(y)
        mx, my = _mean(rx), _mean(ry)
        cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
        rho = cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
        return rho, None, "Pearson correlation of average ranks, by hand (scipy not installed)"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Overall gain ± uncertainty, sign agreement of the main-path Δs, Spearman's rho, run counts."""
    counts = {"finished": sum(r["n_finished"] for r in rows), "failed": sum(r["n_failed"] for r in rows),
              "running": sum(r["n_running"] for r in rows), "missing": sum(r["n_missing"] for r in rows)}
    out: Dict[str, Any] = {"runs": counts, "steps": len(rows),
                           "std": STD_NOTE, "uncertainty_formula": SE_FORMULA}
    ablation_mode = any(r["ablation"] != "none" for r in rows)
    if ablation_mode:
        out["kind"] = "ablation"
        out["ablations"] = [{"ablation": r["ablation"], "label": r["label"], "top1_mean": r["top1_mean"],
                             "n": r["n"], "delta_vs_full": r["top1_delta"], "delta_se": r["top1_delta_se"],
                             "status": r["status"]} for r in rows if r["ablation"] != "none"]
        return out
    out["kind"] = "trajectory"
    main = [r for r in rows if not r["branch"] and not r["variant"]]
    done = [r for r in main if r["top1_mean"] is not None]
    # endpoints: the roadmap's first and last main-path steps, else the first/last finished ones
    gain: Dict[str, Any] = {"from": None, "to": None}
    if len(done) >= 2:
        roadmap = done[0]["roadmap"]
        path = [s["name"] for s in roadmap_steps(roadmap) if not s.get("branch")]
        a = next((r for r in done if path and r["step"] == path[0]), done[0])
        b = next((r for r in done if path and r["step"] == path[-1]), done[-1])
        if a is b:
            a, b = done[0], done[-1]
        se = _diff_se(b, a)
        gain = {"from": a["step"], "to": b["step"], "from_label": a["label"], "to_label": b["label"],
                "ours": b["top1_mean"] - a["top1_mean"], "ours_se": se, "n_from": a["n"], "n_to": b["n"],
                "paper": (b["paper_top1"] - a["paper_top1"]) if a["paper_top1"] is not None and b["paper_top1"] is not None else None,
                "formula": f"mean_to - mean_from ± {SE_FORMULA} (s: {STD_NOTE})"}
        if se is None:
            gain["note"] = "uncertainty needs at least 2 seeds at both endpoints"
    out["gain"] = gain
    comparable = [r for r in main if r["top1_delta"] is not None and r["paper_delta"] is not None]
    agree = [r["step"] for r in comparable if _sign(r["top1_delta"]) == _sign(r["paper_delta"])]
    out["sign_agreement"] = {"agree": len(agree), "of": len(comparable), "steps_agree": agree,
                             "steps_disagree": [r["step"] for r in comparable if r["step"] not in agree],
                             "note": "main-path steps whose Δ vs the previous main-path step has the paper's sign"}
    paired = [r for r in main if r["top1_mean"] is not None and r["paper_top1"] is not None]
    rho, p, method = spearman([r["top1_mean"] for r in paired], [r["paper_top1"] for r in paired])
    out["spearman"] = {"rho": rho, "p": p, "n": len(paired), "steps": [r["step"] for r in paired], "method": method}
    return out


# =============================================================================================
# Sweep description (trajectory.md header)
# =============================================================================================
def _fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _display_path(p: PathLike) -> str:
    """Relative to the working directory when under it (reports are committed), else absolute."""
    p = Path(p).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _uniq(values: Iterable[Any]) -> List[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def describe(rows: List[Dict[str, Any]], context: Dict[str, Any]) -> Dict[str, Any]:
    runs, plan_cfg = context["runs"], context["plan_config"]
    fin = [r for r in runs if r["status"] == "finished"]
    cfgs = [r["config"] for r in runs if r.get("config")] or ([plan_cfg] if plan_cfg else [])
    dataset = _most_common(r.get("dataset") for r in runs) or _get(plan_cfg, "data.name")
    scale = _most_common(r.get("scale") for r in runs) or _get(plan_cfg, "scale.name")
    if not dataset or not scale:  # sweep id: <experiment>-<dataset>-<scale>-<regime>
        parts = context["sweep_dirs"][0].name.split("-")
        if len(parts) >= 4:
            dataset, scale = dataset or parts[-3], scale or parts[-2]
    regime = context["regime"]
    roadmaps = _uniq(r["roadmap"] for r in rows)
    ref = _regime_ref(MAIN_ROADMAP, regime)
    finished_at = sorted(r["finished_at"] for r in fin if r.get("finished_at"))
    return {
        "dataset": dataset or "unknown", "scale": scale or "unknown", "regime": regime,
        "num_classes": _most_common(_get(c, "data.num_classes") for c in cfgs),
        "train_images": _most_common(r.get("train_images") for r in fin),
        "val_images": _most_common(r.get("val_images") for r in fin),
        "img_size": _uniq(r.get("img_size") for r in runs) or _uniq([_get(plan_cfg, "scale.img_size")]),
        "width_mult": _uniq(r.get("width_mult") for r in runs) or _uniq([_get(plan_cfg, "scale.width_mult")]),
        "epochs": _uniq(sorted({r.get("epochs") for r in (fin or runs) if r.get("epochs") is not None})),
        "global_batch": _uniq(sorted({r.get("global_batch") for r in fin if r.get("global_batch")})),
        "seeds": sorted({r["seed"] for r in runs if r.get("seed") is not None}),
        "devices": Counter(r.get("device") for r in fin if r.get("device")),
        "wall_seconds": sum(float(r.get("wall_seconds") or 0) for r in fin),
        "wall_seconds_partial": sum(float(r.get("wall_seconds_partial") or 0) for r in runs if r["status"] != "finished"),
        "sweep_dirs": [_display_path(d) for d in context["sweep_dirs"]],
        "sweep_ids": _uniq([_get(c, "sweep_id") for c in cfgs] + [d.name for d in context["sweep_dirs"]])[:3],
        "experiment": _most_common(_get(c, "experiment_name") for c in cfgs),
        "roadmaps": roadmaps, "ablation_mode": context["ablation_mode"],
        "endpoints": ref.get("endpoints", {}), "swin": ref.get("swin"),
        "paper_table": PAPER_TABLE.get(regime, "the paper"),
        "paper_cite": f"Liu et al. 2022, {PAPER_TABLE.get(regime, 'the paper')}"
                      + ("; CMT-S: Guo et al. 2022, Table 2" if "cmt" in roadmaps else ""),
        "paper_cite_short": "Liu et al. 2022; Guo et al. 2022" if "cmt" in roadmaps
                            else f"Liu et al. 2022, {PAPER_TABLE.get(regime, 'the paper')}",
        "other_endpoints": next((_regime_ref(r, regime).get("endpoints") for r in roadmaps
                                 if r not in (MAIN_ROADMAP, "other") and _regime_ref(r, regime).get("endpoints")), None),
        "git_commits": _uniq(r.get("git_commit") for r in fin),
        "finished_range": (finished_at[0], finished_at[-1]) if finished_at else None,
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "config": next((c for c in cfgs if c), {}),
    }


def report_name(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    """`<dataset>-<scale>` for the ConvNeXt trajectory; other roadmaps, ablations, branch-only
    sweeps and other regimes get a suffix so they never overwrite the main trajectory."""
    name = f"{meta['dataset']}-{meta['scale']}"
    roadmaps = [r for r in meta["roadmaps"] if r != MAIN_ROADMAP]
    if meta["ablation_mode"]:
        name += "-ablation"
    elif roadmaps:
        name += "-" + "-".join(f"convnext_to_{r}" for r in roadmaps)
    elif rows and all(r["branch"] for r in rows):
        name += "-kernel_branches"
    if meta["regime"] != DEFAULT_REGIME:
        name += f"-{meta['regime']}"
    return name


def default_out_dir(rows: List[Dict[str, Any]], meta: Dict[str, Any], results_dir: PathLike = "results") -> Path:
    return Path(results_dir) / report_name(rows, meta)


# =============================================================================================
# Writing: csv, md, json
# =============================================================================================
def _r(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, nd)
    return x


def csv_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for r in rows:
        row = {k: _r(r.get(k)) for k in FIELDS}
        row["branch"] = int(bool(r["branch"]))
        out.append({k: ("" if v is None else v) for k, v in row.items()})
    return out


def _f(x: Optional[float], nd: int = 2, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def _md_rows(rows: List[Dict[str, Any]], ablation_mode: bool) -> List[Dict[str, Any]]:
    out = []
    for r in rows:
        label = r["label"].replace("|", "\\|")
        if r["branch"]:
            label = f"↳ *{label}* (branch)"
        top1 = "—" if r["top1_mean"] is None else f"{r['top1_mean']:.2f} ({r['n']})" if r["top1_std"] is None \
            else f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} ({r['n']})"
        delta = _f(r["top1_delta"], sign=True)
        if r["top1_delta"] is not None and r["top1_delta_se"] is not None:
            delta += f" ± {r['top1_delta_se']:.2f}"
        out.append({
            "order": r["order"] if r["order"] >= 0 else "", "label": label, "step": f"`{r['step'] if not ablation_mode else r['ablation']}`",
            "top1": top1, "delta": delta, "paper": _f(r["paper_top1"]), "paper_delta": _f(r["paper_delta"], sign=True),
            "g224": _f(r["gflops_224"]), "pg": _f(r["paper_gflops"]), "g": _f(r["gflops"], 3),
            "params": "—" if r["params"] is None else f"{r['params'] / 1e6:.2f}M",
            "params224": "—" if r["params_224"] is None else f"{r['params_224'] / 1e6:.2f}M",
            "ips": "—" if r["train_img_s"] is None else f"{r['train_img_s']:.0f}",
            "wall": _fmt_seconds(r["wall_s_mean"]), "status": r["status"].replace("|", "\\|"),
        })
    return out


def _join(values: List[Any]) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


def render_markdown(rows: List[Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any],
                    command: str = "") -> str:
    ends = meta["endpoints"]
    title = "Leave-one-out ablation" if meta["ablation_mode"] else \
        f"{ends.get('start', 'ResNet')} → {ends.get('end', 'ConvNeXt')} trajectory"
    if any(r != MAIN_ROADMAP for r in meta["roadmaps"]):
        other = meta.get("other_endpoints")
        title = f"{other['start']} → {other['end']} trajectory" if other else \
            "Roadmap trajectory (" + ", ".join(meta["roadmaps"]) + ")"
    img = _join(meta["img_size"])
    devices = ", ".join(f"{d} ({n} runs)" for d, n in meta["devices"].most_common()) or "—"
    data = meta["dataset"]
    if meta["num_classes"]:
        data += f" ({meta['num_classes']} classes"
        if meta["train_images"]:
            data += f"; {meta['train_images']} train / {meta['val_images']} val images"
        data += ")"
    wall = f"{_fmt_seconds(meta['wall_seconds'])} over {summary['runs']['finished']} finished runs"
    if meta["wall_seconds_partial"]:
        wall += f" (+ {_fmt_seconds(meta['wall_seconds_partial'])} of training in unfinished runs)"
    counts = summary["runs"]
    lines = [
        f"# {title}: {meta['dataset']}, {meta['scale']} scale",
        "",
        f"- **Dataset:** {data}",
        f"- **Scale:** `{meta['scale']}`: {img} px, width × {_join(meta['width_mult'])}, "
        f"{_join(meta['epochs'])} epoch{'s' if meta['epochs'] != [1] else ''}" + (f", global batch {_join(meta['global_batch'])}" if meta["global_batch"] else ""),
        f"- **Regime:** `{meta['regime']}` (paper columns: {meta['paper_cite']}, ImageNet-1K at 224 px)",
        f"- **Seeds:** {_join(meta['seeds'])}",
        f"- **Device(s):** {devices}",
        f"- **Total wall time:** {wall}",
        f"- **Runs:** {counts['finished']} finished, {counts['failed']} failed, {counts['running']} running or "
        f"interrupted, {counts['missing']} missing",
        f"- **Sweep:** {', '.join(f'`{d}`' for d in meta['sweep_dirs'])}"
        + (f" (experiment `{meta['experiment']}`)" if meta["experiment"] else ""),
        f"- **Date:** report generated {meta['generated']}"
        + (f"; runs finished {meta['finished_range'][0]} – {meta['finished_range'][1]}" if meta["finished_range"] else "")
        + (f"; code {', '.join(meta['git_commits'])}" if meta["git_commits"] else ""),
    ]
    if command:
        lines.append(f"- **Report:** `{command}`")
    lines += ["", "## Summary", ""] + summary_lines(summary) + [""]
    lines += ["## Per variant" if meta["ablation_mode"] else "## Per step", ""]
    if meta["ablation_mode"]:
        fields = ["label", "step", "top1", "delta", "g224", "g", "params", "ips", "wall", "status"]
        headers = ["variant", "ablation", "top-1 mean ± std (n)", "Δ vs full model", "GFLOPs@224",
                   f"GFLOPs@{img}", "params", "train img/s", "wall/run", "status"]
    else:
        fields = ["order", "label", "top1", "delta", "paper", "paper_delta", "g224", "pg", "g", "params",
                  "params224", "ips", "wall", "status"]
        headers = ["#", "step", "top-1 mean ± std (n)", "Δ", "paper top-1", "paper Δ", "GFLOPs@224",
                   "paper GFLOPs", f"GFLOPs@{img}", "params", "params@224", "train img/s", "wall/run", "status"]
    lines.append(markdown_table(_md_rows(rows, meta["ablation_mode"]), fields, headers,
                                align="l" * 2 + "r" * (len(fields) - 3) + "l"))
    lines += ["![trajectory](trajectory.png)", "", "Notes:", ""]
    lines += [
        f"- top-1 is the final-epoch validation top-1 (%); mean over seeds ± {STD_NOTE}; (n) = finished seeds.",
        "- Δ: mean minus the mean of the previous main-path step; a side branch (↳) is compared with the step it "
        "branches from (the kernel sizes with `move ↑ d. conv`, as in the paper's Table 10). The paper's Δ is computed "
        "the same way from its table. ± after Δ: " + SE_FORMULA + "." if not meta["ablation_mode"] else
        "- Δ: mean minus the mean of the unablated model (`none`); ± " + SE_FORMULA + ".",
        "- GFLOPs@224: our model at the paper's scale (width × 1, 1000 classes, 224 px) counted by fvcore "
        f"(one multiply-add = one FLOP, as the paper); GFLOPs@{img}: the model as trained. params: as trained; "
        "params@224: at the paper's scale.",
        "- train img/s: median over epochs, mean over seeds; wall/run: mean wall time of one run (all attempts).",
        "- Full precision: `trajectory.csv`; summary: `summary.json`.",
    ]
    return "\n".join(lines) + "\n"


def summary_lines(summary: Dict[str, Any]) -> List[str]:
    if summary["kind"] == "ablation":
        lines = []
        for a in summary["ablations"]:
            if a["delta_vs_full"] is None:
                lines.append(f"- {a['label']}: {a['status']}")
            else:
                se = f" ± {a['delta_se']:.2f}" if a["delta_se"] is not None else ""
                lines.append(f"- {a['label']}: {a['delta_vs_full']:+.2f}{se} top-1 vs the full model (n={a['n']})")
        lines.append(f"- Uncertainty: {SE_FORMULA}, s = {STD_NOTE}.")
        return lines or ["- no finished runs"]
    g, s, rho = summary["gain"], summary["sign_agreement"], summary["spearman"]
    lines = []
    if g.get("ours") is not None:
        se = f" ± {g['ours_se']:.2f}" if g.get("ours_se") is not None else " (± undefined: needs ≥ 2 seeds at both ends)"
        paper = f"; paper: **{g['paper']:+.2f}**" if g.get("paper") is not None else ""
        lines.append(f"- **Overall gain** {g['from_label']} → {g['to_label']} (`{g['from']}` → `{g['to']}`): "
                     f"**{g['ours']:+.2f}{se}** top-1 points (ours){paper}. Uncertainty: {SE_FORMULA} with "
                     f"s = {STD_NOTE}, n = {g['n_from']} and {g['n_to']} seeds.")
    else:
        lines.append("- **Overall gain:** needs at least two finished main-path steps.")
    if s["of"]:
        lines.append(f"- **Sign agreement:** {s['agree']} of {s['of']} main-path steps change top-1 in the same "
                     f"direction as in the paper (Δ vs the previous main-path step). Agree: "
                     f"{_join([f'`{x}`' for x in s['steps_agree']])}. Disagree: {_join([f'`{x}`' for x in s['steps_disagree']])}.")
    else:
        lines.append("- **Sign agreement:** no main-path step has both Δs.")
    if rho["rho"] is not None:
        p = f", p = {rho['p']:.3g}" if rho["p"] is not None else ""
        lines.append(f"- **Spearman rank correlation** between our per-step mean top-1 and the paper's "
                     f"(main path, n = {rho['n']} steps): **ρ = {rho['rho']:.2f}**{p} ({rho['method']}).")
    else:
        lines.append(f"- **Spearman rank correlation:** {rho['method']} (n = {rho['n']}).")
    return lines


# =============================================================================================
# Chart (Figure 2 style)
# =============================================================================================
C_OURS, C_OURS_EDGE, C_PAPER, C_FAIL, C_BAND = "#4C72B0", "#2E4A7A", "#DD8452", "#B22222", "#F2F2F2"


def _png_svg(fig: Any, out_dir: Path) -> Tuple[Path, Path]:
    paths = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150 if ext == "png" else None, metadata={"Date": None} if ext == "svg" else None)
        paths.append(atomic_write_bytes(out_dir / f"trajectory.{ext}", buf.getvalue()))
    return paths[0], paths[1]


def plot_trajectory(rows: List[Dict[str, Any]], meta: Dict[str, Any], out_dir: PathLike) -> Tuple[Path, Path]:
    """trajectory.png and .svg: labels | our bars (mean ± std) | the paper's top-1 as markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global state, no display
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    out_dir = Path(out_dir)
    n = len(rows)
    has_paper = any(r["paper_top1"] is not None for r in rows)
    fs_label, fs_group = 10.5, 9.5
    row_h, top_in, bottom_in = 0.42, 1.05, 0.95
    height = top_in + bottom_in + row_h * max(n, 1)
    width = 13.0 if has_paper else 10.5
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()

    def text_width(s: str, **kw: Any) -> float:  # inches
        t = fig.text(0, 0, s, **kw)
        w = t.get_window_extent(renderer).width / fig.dpi
        t.remove()
        return w

    labels = [r["label"] + (" (branch)" if r["branch"] else "") for r in rows]
    groups = _uniq(r["group"] for r in rows)
    wrapped = {g: "\n".join(textwrap.wrap(g, 11)) for g in groups}
    w_step = max([text_width(s, fontsize=fs_label) for s in labels] + [0.5])
    w_group = max([text_width(wrapped[g], fontsize=fs_group, fontweight="bold") for g in groups] + [0.3])
    # columns in inches: group names | bracket | step labels | ours | paper
    x_bracket = 0.08 + w_group + 0.08
    left = x_bracket + 0.1 + w_step + 0.12
    panels = width - left - 0.15
    w_ours = panels * (0.6 if has_paper else 1.0) - (0.2 if has_paper else 0)
    bottom, h = bottom_in / height, (row_h * max(n, 1)) / height
    ax_o = fig.add_axes([left / width, bottom, w_ours / width, h])
    ax_p = fig.add_axes([(left + w_ours + 0.4) / width, bottom, (panels - w_ours - 0.4) / width, h],
                        sharey=ax_o) if has_paper else None
    ys = list(range(n))
    ax_o.set_ylim(n - 0.5, -0.5)  # first step on top

    # ---- labels and group brackets (figure coordinates from the data rows) ------------------------
    def fig_y(y: float) -> float:
        return bottom + h * (n - 0.5 - y) / max(n, 1)

    for y, r, s in zip(ys, rows, labels):
        style = dict(fontsize=fs_label, ha="right", va="center")
        if r["branch"]:
            style.update(fontstyle="italic", color="#555555")
        fig.text((left - 0.12) / width, fig_y(y), s, **style)
    spans: List[Tuple[str, int, int]] = []
    for y, r in zip(ys, rows):
        if spans and spans[-1][0] == r["group"]:
            spans[-1] = (r["group"], spans[-1][1], y)
        else:
            spans.append((r["group"], y, y))
    axes = [a for a in (ax_o, ax_p) if a is not None]
    band = {}
    for k, (group, y0, y1) in enumerate(spans):
        band.update({y: C_BAND if k % 2 == 1 else "white" for y in range(y0, y1 + 1)})
        xb, tick = x_bracket / width, 0.06 / width
        ya, yb = fig_y(y0 - 0.4), fig_y(y1 + 0.4)
        fig.add_artist(Line2D([xb + tick, xb, xb, xb + tick], [ya, ya, yb, yb], color="#444444", lw=1.1))
        fig.text(xb - 0.05 / width, fig_y((y0 + y1) / 2), wrapped[group], ha="right", va="center",
                 fontsize=fs_group, fontweight="bold", color="#333333", linespacing=1.0)
        if k % 2 == 1:
            for a in axes:
                a.axhspan(y0 - 0.5, y1 + 0.5, color=C_BAND, zorder=0, lw=0)

    # ---- ours -----------------------------------------------------------------------------------
    max_n = max((r["n"] for r in rows), default=0)
    fs_val, fs_note, pad_frac = 9.5, 9, 0.012

    def note_of(r: Dict[str, Any]) -> str:
        note = [f"{r['gflops_224']:.2f} GFLOPs"] if r["gflops_224"] is not None else []
        if meta["ablation_mode"] and r["top1_delta"] is not None:
            note.insert(0, f"Δ {r['top1_delta']:+.1f}")
        if r["n"] < max_n or r["state"] == "partial":
            extra = [f"{r[k]} {w}" for k, w in (("n_failed", "failed"), ("n_running", "running")) if r[k]]
            note.append(f"n={r['n']}" + "".join(f", {e}" for e in extra))
        return "  ".join(note)

    done = [r for r in rows if r["top1_mean"] is not None]
    if done:
        lo = min(r["top1_mean"] - (r["top1_std"] or 0) for r in done)
        hi = max(r["top1_mean"] + (r["top1_std"] or 0) for r in done)
        span = max(hi - lo, 2.0)
        x0 = max(0.0, math.floor(lo - 0.3 * span))
        # wide enough that the text right of every bar fits inside the panel
        need = (hi - x0) * 1.05
        for r in done:
            tw = text_width(note_of(r), fontsize=fs_note) + 0.05
            if r["top1_mean"] - (r["top1_std"] or 0) - x0 < 0.15 * span:  # value printed outside the bar
                tw += text_width(f"{r['top1_mean']:.1f} ", fontsize=fs_val, fontweight="bold")
            frac = 1 - 2 * pad_frac - tw / w_ours
            need = max(need, (r["top1_mean"] + (r["top1_std"] or 0) - x0) / max(frac, 0.2))
        x1 = x0 + need
    else:
        x0, x1 = 0.0, 100.0
    ax_o.set_xlim(x0, x1)
    pad = pad_frac * (x1 - x0)
    per_inch = (x1 - x0) / w_ours
    for y, r in zip(ys, rows):
        m = r["top1_mean"]
        if m is not None:
            kw = dict(height=0.66, left=x0, zorder=2, linewidth=1.0)
            if r["branch"]:
                ax_o.barh(y, m - x0, color="#C9D6EA", edgecolor=C_OURS_EDGE, hatch="///", **kw)
            else:
                ax_o.barh(y, m - x0, color=C_OURS, edgecolor=C_OURS_EDGE, **kw)
            sd = r["top1_std"] or 0.0
            if r["top1_std"] is not None:
                ax_o.errorbar(m, y, xerr=sd, fmt="none", ecolor="black", elinewidth=1.1, capsize=3.5, zorder=3)
            value = f"{m:.1f}"
            w_val = text_width(value, fontsize=fs_val, fontweight="bold") * per_inch
            inside = m - sd - 2 * pad - w_val > x0
            x_note = m + sd + pad
            if inside:  # inside the bar, left of the error bar
                box = dict(facecolor="white", edgecolor="none", pad=0.6, alpha=0.85) if r["branch"] else None
                ax_o.text(m - sd - pad, y, value, ha="right", va="center", fontsize=fs_val, fontweight="bold",
                          color=C_OURS_EDGE if r["branch"] else "white", zorder=4, bbox=box)
            else:
                ax_o.text(x_note, y, value, ha="left", va="center", fontsize=fs_val, fontweight="bold", zorder=4)
                x_note += w_val + pad
            ax_o.text(x_note, y, note_of(r), ha="left", va="center", fontsize=fs_note, color="#333333", zorder=4,
                      bbox=dict(facecolor=band.get(y, "white"), edgecolor="none", pad=1.0))
        else:
            state = r["state"]
            if state in ("failed", "running"):
                ax_o.barh(y, 0.45 * (x1 - x0), left=x0, height=0.66, fill=False, zorder=2,
                          edgecolor=C_FAIL if state == "failed" else "#777777",
                          linestyle="--" if state == "failed" else ":", linewidth=1.3)
                text = "failed" if state == "failed" else \
                    (r["status"].replace(" of ", "/") if r["status"].startswith("running (") else "running")
                ax_o.text(x0 + pad, y, text, ha="left", va="center", fontsize=fs_val, fontweight="bold",
                          color=C_FAIL if state == "failed" else "#555555", zorder=4)
            else:
                ax_o.text(x0 + pad, y, "missing", ha="left", va="center", fontsize=fs_val,
                          fontstyle="italic", color="#777777", zorder=4)
    ax_o.set_xlabel("top-1 accuracy (%)", fontsize=10.5)
    ax_o.tick_params(axis="y", left=False, labelleft=False)
    ax_o.tick_params(axis="x", labelsize=9.5)
    ax_o.grid(axis="x", color="#DDDDDD", lw=0.7, zorder=1)
    ax_o.set_axisbelow(True)
    for side in ("top", "right"):
        ax_o.spines[side].set_visible(False)
    seeds = _join(meta["seeds"])
    ax_o.set_title(f"Ours: {meta['dataset']}"
                   + (f" ({meta['num_classes']} classes)" if meta.get("num_classes") else "")
                   + f", {meta['scale']} scale\n{_join(meta['img_size'])} px, width ×{_join(meta['width_mult'])}, "
                   f"{_join(meta['epochs'])} epoch{'s' if meta['epochs'] != [1] else ''}, "
                   f"seed{'s' if len(meta['seeds']) != 1 else ''} {seeds}", fontsize=10.5, loc="left")
    if meta["ablation_mode"]:
        full = next((r for r in rows if r["ablation"] == "none" and r["top1_mean"] is not None), None)
        if full is not None:
            ax_o.axvline(full["top1_mean"], color="#333333", ls="--", lw=1, zorder=1.5)

    # ---- paper ----------------------------------------------------------------------------------
    if ax_p is not None:
        pv = [(y, r) for y, r in zip(ys, rows) if r["paper_top1"] is not None]
        vals = [r["paper_top1"] for _, r in pv]
        swin = meta.get("swin") or {}
        lo, hi = min(vals), max(vals + ([swin["top1"]] if swin.get("top1") else []))
        p0 = math.floor(lo - 0.6)
        w_paper = (panels - w_ours - 0.4)
        need = (hi - p0) * 1.05
        for _, r in pv:
            tw = text_width(f"{r['paper_top1']:.2f}  ({r['paper_gflops'] or 0:.2f} GF)", fontsize=9) + 0.05
            need = max(need, (r["paper_top1"] - p0) / max(1 - 0.035 - tw / w_paper, 0.2))
        p1 = p0 + need
        ax_p.set_xlim(p0, p1)
        main_pts = [(r["paper_top1"], y) for y, r in pv if not r["branch"]]
        if len(main_pts) > 1:
            ax_p.plot([x for x, _ in main_pts], [y for _, y in main_pts], color=C_PAPER, lw=1.0, alpha=0.55, zorder=2)
        for y, r in pv:
            ax_p.plot([r["paper_top1"]], [y], marker="D", markersize=7.5, zorder=3, linestyle="none",
                      markerfacecolor="white" if r["branch"] else C_PAPER, markeredgecolor=C_PAPER, markeredgewidth=1.5)
            text = f"{r['paper_top1']:.2f}"
            if r["paper_gflops"] is not None:
                text += f"  ({r['paper_gflops']:.2f} GF)"
            ax_p.text(r["paper_top1"] + 0.035 * (p1 - p0), y, text, ha="left", va="center", fontsize=9,
                      color="#333333", zorder=4, bbox=dict(facecolor=band.get(y, "white"), edgecolor="none", pad=1.0))
        if swin.get("top1"):
            ax_p.axvline(swin["top1"], color="#777777", ls="--", lw=1.0, zorder=1.5)
        ax_p.set_xlabel("top-1 accuracy (%)", fontsize=10.5)
        ax_p.tick_params(axis="y", left=False, labelleft=False)
        ax_p.tick_params(axis="x", labelsize=9.5)
        ax_p.grid(axis="x", color="#DDDDDD", lw=0.7, zorder=1)
        ax_p.set_axisbelow(True)
        for side in ("top", "right"):
            ax_p.spines[side].set_visible(False)
        ax_p.set_title(f"Paper: ImageNet-1K, 224 px\n({meta['paper_cite_short']})", fontsize=10.5, loc="left")

    ends = meta["endpoints"]
    if meta["ablation_mode"]:
        suptitle = "Leave-one-out ablation: ConvNeXt with each change reverted alone"
    elif any(r != MAIN_ROADMAP for r in meta["roadmaps"]):
        other = meta.get("other_endpoints")
        suptitle = f"{other['start']} → {other['end']}, step by step" if other else \
            "Roadmap trajectory (" + ", ".join(meta["roadmaps"]) + ")"
    else:
        suptitle = f"Modernizing a ConvNet: {ends.get('start', 'ResNet')} → {ends.get('end', 'ConvNeXt')}, step by step"
    fig.suptitle(suptitle, fontsize=13, fontweight="bold", x=0.01, ha="left", y=1 - 0.12 / height)

    handles = [Patch(facecolor=C_OURS, edgecolor=C_OURS_EDGE, label="ours: mean top-1 over seeds"),
               Line2D([], [], color="black", marker="|", markersize=9, lw=1.1, label="±1 std over seeds (ddof=1)")]
    if any(r["branch"] for r in rows):
        handles.append(Patch(facecolor="#C9D6EA", edgecolor=C_OURS_EDGE, hatch="///", label="side branch (kernel size)"))
    if meta["ablation_mode"] and any(r["ablation"] == "none" and r["top1_mean"] is not None for r in rows):
        handles.append(Line2D([], [], color="#333333", ls="--", lw=1, label="full model (mean)"))
    if any(r["state"] == "failed" for r in rows):
        handles.append(Patch(fill=False, edgecolor=C_FAIL, linestyle="--", label="failed step"))
    if has_paper:
        handles.append(Line2D([], [], color=C_PAPER, marker="D", linestyle="none", markersize=7, label="paper top-1"))
        if meta.get("swin"):
            handles.append(Line2D([], [], color="#777777", ls="--", lw=1,
                                  label=f"paper: {meta['swin']['name']} ({meta['swin']['top1']:.1f})"))
    handles.append(Line2D([], [], color="none", label="beside bars: GFLOPs at 224 px, full width (fvcore)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=9.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=1.8, columnspacing=1.6)
    return _png_svg(fig, out_dir)


# =============================================================================================
# W&B
# =============================================================================================
def log_wandb(rows: List[Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any], out_dir: Path,
              mode: str = "offline", wandb_dir: Optional[PathLike] = None) -> Optional[str]:
    """One summary run (job_type 'report', the sweep's project and group): the trajectory as a
    wandb.Table, a bar chart and the chart image. Returns the run's local directory."""
    if mode == "disabled":
        return None
    import wandb

    from .tracking import run_identity

    os.environ.setdefault("WANDB_SILENT", "true")
    cfg = dict(meta.get("config") or {})
    try:
        ident = run_identity(OmegaConf.create({**cfg, "step": cfg.get("step") or rows[0]["step"]}))
        project, entity, group = ident["project"], ident["entity"], ident["group"]
        wdir = _get(cfg, "logger.dir")
    except Exception:
        project, entity, wdir = "roadmap", None, None
        group = meta["sweep_ids"][0] if meta["sweep_ids"] else f"{meta['dataset']}-{meta['scale']}-{meta['regime']}"
    wdir = Path(wandb_dir or wdir or meta["sweep_dirs"][0])
    wdir.mkdir(parents=True, exist_ok=True)
    run_id = "report-" + hashlib.sha1(str(Path(meta["sweep_dirs"][0]).resolve()).encode()).hexdigest()[:10]
    run = wandb.init(project=project, entity=entity, group=group, name=f"report-{group}", job_type="report",
                     tags=[meta["regime"], meta["scale"], meta["dataset"], "report"], mode=mode, dir=str(wdir),
                     id=run_id, resume="allow", reinit="finish_previous",
                     config={"sweep_dirs": meta["sweep_dirs"], "dataset": meta["dataset"], "scale": meta["scale"],
                             "regime": meta["regime"], "seeds": meta["seeds"], "results": str(out_dir)},
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    try:
        cols = [c for c in FIELDS]
        data = [[_r(r.get(c)) for c in cols] for r in rows]
        table = wandb.Table(columns=cols, data=data, allow_mixed_types=True)
        done = [r for r in rows if r["top1_mean"] is not None]
        bars = wandb.Table(columns=["step", "top1_mean", "paper_top1"],
                           data=[[f"{r['order']:02d} {r['label']}", r["top1_mean"], r["paper_top1"]] for r in done],
                           allow_mixed_types=True)
        run.log({"trajectory": table,
                 "trajectory_top1": wandb.plot.bar(bars, "step", "top1_mean", title="top-1 per step (ours, mean over seeds)"),
                 "trajectory_chart": wandb.Image(str(out_dir / "trajectory.png"))})
        flat: Dict[str, Any] = {"runs_" + k: v for k, v in summary["runs"].items()}
        if summary["kind"] == "trajectory":
            g = summary["gain"]
            flat.update({"gain": g.get("ours"), "gain_se": g.get("ours_se"), "paper_gain": g.get("paper"),
                         "sign_agree": summary["sign_agreement"]["agree"], "sign_of": summary["sign_agreement"]["of"],
                         "spearman_rho": summary["spearman"]["rho"], "spearman_n": summary["spearman"]["n"]})
        run.summary.update({k: v for k, v in flat.items() if v is not None})
        return str(Path(run.dir).parent)
    finally:
        run.finish()


# =============================================================================================
# Entry points
# =============================================================================================
def write_report(sweep_dir: Union[PathLike, Sequence[PathLike]], out_dir: Optional[PathLike] = None,
                 wandb_mode: str = "offline", results_dir: Optional[PathLike] = None, command: str = "",
                 wandb_dir: Optional[PathLike] = None, dashboard: bool = False, publish: bool = False) -> Path:
    """Collect a sweep, write trajectory.{csv,md,png,svg} and summary.json; return the output dir.

    out_dir defaults to `<results_dir>/<dataset>-<scale>[-suffix]` (results_dir: the sweep's
    `results_dir` config key, else 'results'). `dashboard`: also build the W&B report and workspace
    (roadmap/dashboard.py: dashboard.json + the publish commands); `publish`: and save them to W&B."""
    if wandb_mode not in ("offline", "online", "disabled"):
        raise ValueError(f"wandb_mode={wandb_mode!r}; allowed: offline, online, disabled")
    rows, context = _collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no run directories (metrics.json / failed.json / last.pt) under "
                                f"{', '.join(map(str, context['sweep_dirs']))} and no multirun.yaml listing steps")
    meta = describe(rows, context)
    summary = summarize(rows)
    if out_dir is None:
        results_dir = results_dir or _get(context["plan_config"], "results_dir") or \
            _get(meta["config"], "results_dir") or "results"
        out_dir = default_out_dir(rows, meta, results_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "trajectory.csv", csv_rows(rows), FIELDS)
    plot_trajectory(rows, meta, out_dir)
    atomic_write_text(out_dir / "trajectory.md", render_markdown(rows, summary, meta, command))
    info = {k: meta[k] for k in ("dataset", "scale", "regime", "seeds", "sweep_dirs", "experiment", "generated")}
    info.update({"devices": dict(meta["devices"]), "wall_seconds": round(meta["wall_seconds"], 1),
                 "img_size": meta["img_size"], "width_mult": meta["width_mult"], "epochs": meta["epochs"]})
    write_json(out_dir / "summary.json", {**summary, "sweep": info})
    if wandb_mode != "disabled":
        try:
            where = log_wandb(rows, summary, meta, out_dir, wandb_mode, wandb_dir)
            log.info("report: W&B %s run in %s", wandb_mode, where)
        except Exception as e:  # the files are written; W&B is a convenience
            log.warning("report: W&B logging failed (%s: %s); files are in %s", type(e).__name__, e, out_dir)
    if dashboard or publish:
        from .dashboard import write_dashboard

        write_dashboard(rows, summary, meta, out_dir, publish_now=publish)
    return out_dir


class ReportCallback(Callback):
    """Hydra callback: at the end of a multirun, write the sweep's report into
    `<results_dir>/<dataset>-<scale>[-suffix]/`. Never raises (a failure is a warning).

    Registered in conf/config.yaml as hydra.callbacks.report; turn it off with
    `hydra.callbacks.report.enabled=false` or $ROADMAP_REPORT=0. W&B follows the sweep's logger
    (offline unless logger=none / logger.mode=disabled) unless `wandb` is given here. `dashboard`:
    also build the W&B report + workspace offline (dashboard.json, publish commands printed)."""

    def __init__(self, enabled: bool = True, wandb: Optional[str] = None, dashboard: bool = False) -> None:
        self.enabled = enabled
        self.wandb = wandb
        self.dashboard = dashboard

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or os.environ.get("ROADMAP_REPORT", "1").lower() in ("0", "false", "no", "off"):
            return
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
            if not sweep_dir.is_absolute() and cwd:
                sweep_dir = Path(cwd) / sweep_dir
            results_dir = Path(str(OmegaConf.select(config, "results_dir", default="results") or "results"))
            if not results_dir.is_absolute() and cwd:
                results_dir = Path(cwd) / results_dir
            mode = self.wandb
            if mode is None:
                name = OmegaConf.select(config, "logger.name", default="none")
                mode = OmegaConf.select(config, "logger.mode", default="disabled") if name == "wandb" else "disabled"
            overrides = " ".join(str(o) for o in (OmegaConf.select(config, "hydra.overrides.task", default=[]) or []))
            out = write_report(sweep_dir, results_dir=results_dir, wandb_mode=mode, dashboard=self.dashboard,
                               command=f"python -m roadmap -m {overrides}".strip() + "  (report at the end of the sweep)")
            log.info("report: %s", out / "trajectory.md")
            print(f"report: {out / 'trajectory.md'}", flush=True)
        except Exception as e:  # a sweep never fails because of its report
            log.warning("report for the sweep failed (%s: %s); run `python -m roadmap.report <sweep dir>` by hand",
                        type(e).__name__, e)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roadmap.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", nargs="+", help="sweep directory (outputs/sweeps/<sweep id>); several are merged")
    p.add_argument("--out", default=None, help="output directory (default: <results-dir>/<dataset>-<scale>[-suffix])")
    p.add_argument("--results-dir", default=None, help="parent of the default output directory "
                                                       "(default: the sweep's results_dir, else 'results')")
    p.add_argument("--wandb", default="offline", choices=["offline", "online", "disabled"],
                   help="log a summary run to W&B (default: offline, no network or API key needed)")
    p.add_argument("--wandb-dashboard", action="store_true",
                   help="also build a W&B report + workspace view of the sweep offline (dashboard.json) "
                        "and print the commands that publish it")
    p.add_argument("--publish", action="store_true",
                   help="with --wandb-dashboard: save the report and the workspace to W&B and print their URLs "
                        "(needs the network and an API key; `wandb sync` the runs first)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m roadmap.report " + " ".join(sys.argv[1:] if argv is None else argv)
    from . import dashboard

    problem = dashboard.publish_problem(probe=True) if args.publish else None
    if problem:  # before any work: one line (offline, no API key, no server)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        out = write_report(args.sweep_dir, args.out, args.wandb, args.results_dir, command=command,
                           dashboard=args.wandb_dashboard, publish=args.publish)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except dashboard.PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = read_json(out / "summary.json")
    print(f"report: {out}/trajectory.md (.csv, .png, .svg, summary.json)")
    for line in summary_lines(summary):
        print(line.replace("**", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
