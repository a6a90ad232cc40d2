"""Runs -> rows: read every run directory of a sweep (or of a results study, results/<study>/runs/),
then aggregate them into one row per step (per ablation in the leave-one-out experiment), in
roadmap order, with our Δs (difference of means and paired) beside the paper's columns.

A run directory holds `metrics.json` (finished, or stopped as unhealthy by scale.on_unhealthy=stop),
`failed.json` (failed) or only `last.pt` / `history.csv` / `config.yaml` (running or interrupted).
Every record carries the run's health verdict (roadmap/health.py): the one the run recorded, else
the rule applied to its history.csv now (runs from before the rule), and the init it used."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import yaml
from omegaconf import OmegaConf

from .. import health
from ..config import effective_init
from ..files import read_csv, read_json
from ..steps import ablation_info, step_info
from . import stats
from .stats import METRIC_NOTES, METRICS
from .paper import DEFAULT_REGIME, MAIN_ROADMAP, PAPER_TABLE, delta_reference, get, regime_ref

log = logging.getLogger("roadmap")

PathLike = Union[str, Path]
RUN_MARKERS = ("metrics.json", "failed.json", "last.pt", "history.csv", "config.yaml")
SKIP_DIRS = {"wandb", ".hydra", "__pycache__"}


# =============================================================================================
# One run directory
# =============================================================================================
def _load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
        return data if isinstance(data, dict) else {}
    except Exception:
        return {}


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


def _num(x: Any) -> Optional[float]:
    try:
        return float(x) if x not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _epochs_of(config: Dict[str, Any]) -> Optional[int]:
    epochs = get(config, "scale.epochs") or get(config, "recipe.epochs")
    return int(epochs) if isinstance(epochs, (int, float)) else None


def curves(history: List[Dict[str, str]], config: Dict[str, Any]) -> Dict[str, List[Tuple[int, float]]]:
    """Per-epoch series from history.csv: {'train_loss': [(epoch, v)], 'top1': [(epoch, v)]}.

    top-1 only on the epochs that were evaluated: a row with a top1 value, and, where the config
    says how often the run evaluated (scale.eval_every), only epochs k with k % eval_every == 0 or
    the last one (history.csv repeats the previous evaluation on the epochs in between)."""
    every = get(config, "scale.eval_every")
    last = _epochs_of(config)
    epochs = [int(_num(h.get("epoch")) or 0) for h in history]
    if len(set(epochs)) != len(epochs) or 0 in epochs:  # not a clean epoch column: rows in order
        epochs = list(range(1, len(history) + 1))
    out: Dict[str, List[Tuple[int, float]]] = {"train_loss": [], "top1": []}
    for e, h in zip(epochs, history):
        loss = _num(h.get("train_loss"))
        if loss is not None:
            out["train_loss"].append((e, loss))
        top1 = _num(h.get("top1"))
        evaluated = not isinstance(every, int) or every <= 1 or e % every == 0 or e == last
        if top1 is not None and evaluated:
            out["top1"].append((e, top1))
    return out


def _read_metrics(run_dir: Path) -> Optional[Dict[str, Any]]:
    """metrics.json of a run, None where it has none or it cannot be read (logged)."""
    if not (run_dir / "metrics.json").exists():
        return None
    try:
        return read_json(run_dir / "metrics.json")
    except Exception as e:  # metrics.json is written atomically; a broken one is not ours
        log.warning("report: cannot read %s: %s", run_dir / "metrics.json", e)
        return None


def _add_unfinished(rec: Dict[str, Any], run_dir: Path, config: Dict[str, Any],
                    hist: List[Dict[str, str]]) -> None:
    """A run without metrics.json: failed (failed.json, unless retried since) or running; epochs so far."""
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
    if failed is not None and not retrying:
        rec.update({"status": "failed", "error": failed.get("error"),
                    "reason": failed.get("reason") or failed.get("error") or "unknown",
                    "step": failed.get("step")})
        if failed.get("health"):
            rec["health"] = failed["health"]
    else:
        rec.update({"status": "running", "epochs_done": len(hist), "epochs": _epochs_of(config)})
    rec["epochs_done"] = len(hist)
    rec.setdefault("epochs", _epochs_of(config))
    if hist:
        try:
            rec["wall_seconds_partial"] = sum(float(h.get("train_seconds") or 0) for h in hist)
        except ValueError:
            pass


def _add_top1_last_best(rec: Dict[str, Any]) -> None:
    """A finished run's top1_last, top1_best and best_epoch (see read_run)."""
    last = _num(rec.get("top1_last"))
    rec["top1_last"] = last = last if last is not None else _num(rec.get("top1"))
    best, best_epoch = _num(rec.get("top1_best")), rec.get("best_epoch")
    if best is None:
        for e, v in rec["curves"]["top1"]:  # the earliest evaluated epoch with the highest top-1
            if best is None or v > best:
                best, best_epoch = v, e
        if last is not None and (best is None or last > best):  # no history.csv: the last epoch
            best, best_epoch = last, rec.get("epochs_done") or rec.get("epochs")
    rec["top1_best"], rec["best_epoch"] = best, best_epoch


def _add_identity(rec: Dict[str, Any], config: Dict[str, Any], run_dir: Path, seed_d: Optional[int],
                  ablation_d: Optional[str]) -> None:
    """Step, seed, ablation, dataset, scale, regime, image size and width: the record's, else the config's/dir's."""
    rec["step"] = rec.get("step") or config.get("step") or run_dir.parent.name
    seed = rec.get("seed", config.get("seed", seed_d))
    rec["seed"] = int(seed) if seed is not None else None
    rec["ablation"] = rec.get("ablation") or config.get("ablation") or ablation_d or "none"
    rec.setdefault("dataset", get(config, "data.name"))
    rec.setdefault("scale", get(config, "scale.name"))
    rec.setdefault("regime", get(config, "regime.name"))
    rec.setdefault("img_size", get(config, "scale.img_size"))
    rec.setdefault("width_mult", get(config, "scale.width_mult"))


def _add_health(rec: Dict[str, Any], config: Dict[str, Any], hist: List[Dict[str, str]]) -> None:
    """The record's `health` ({verdict, reason, epoch}): the run's own, else the rule on its history.csv
    (complete for a finished run); `init`: the init it used, resolved (no model.init: `auto`)."""
    if not rec.get("health"):
        if rec["status"] == "failed" and rec.get("error") == "NonFiniteLoss":
            rec["health"] = {"verdict": "diverged", "reason": f"train {rec.get('reason')}", "epoch": len(hist) + 1}
        else:
            ctx = health.context_of(config, len(hist))
            rec["health"] = health.assess(hist, ctx, final=rec["status"] == "finished").as_dict()
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    rec["init"] = effective_init(SimpleNamespace(init=model.get("init", "auto"), norm_type=model.get("norm_type", "bn"))) \
        if model else None


def unhealthy(rec: Dict[str, Any]) -> bool:
    """The health rule flags this run (any verdict but ok)."""
    return (rec.get("health") or {}).get("verdict", "ok") != "ok"


def read_run(run_dir: PathLike) -> Dict[str, Any]:
    """One run directory as a flat record with status 'finished', 'stopped' (scale.on_unhealthy=stop
    ended it early: not averaged, like a failed run), 'failed' or 'running'.

    A finished run also gets `top1_last`, `top1_best` and `best_epoch`: from metrics.json where it
    records them, else top1_last = metrics' `top1` (the last epoch) and the best over the epochs
    history.csv shows evaluated (the last epoch where it has none)."""
    run_dir = Path(run_dir)
    seed_d, ablation_d, variant = _parse_run_dirname(run_dir.name)
    config = _load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else {}
    rec: Dict[str, Any] = {"run_dir": str(run_dir), "variant": variant}
    metrics = _read_metrics(run_dir)
    hist = _history(run_dir)
    if metrics is not None:
        config = metrics.get("config") or config
        rec.update({k: v for k, v in metrics.items() if k != "config"})
        rec["status"] = "stopped" if metrics.get("status") == health.STOPPED else "finished"
        rec["width_mult"] = get(config, "scale.width_mult")
    else:
        _add_unfinished(rec, run_dir, config, hist)
    rec["curves"] = curves(hist, config)
    if rec["status"] == "finished":
        _add_top1_last_best(rec)
    _add_identity(rec, config, run_dir, seed_d, ablation_d)
    _add_health(rec, config, hist)
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


# =============================================================================================
# What the sweep asked for (multirun.yaml)
# =============================================================================================
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
        params: Dict[str, Any] = dict(get(hydra_node, "sweeper.params") or {})
        for item in get(hydra_node, "overrides.task") or []:
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


def _as_list(sweep_dirs: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    if isinstance(sweep_dirs, (str, Path)):
        return [Path(sweep_dirs)]
    return [Path(s) for s in sweep_dirs]


def _strip_common_overrides(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Keep in `variant` only the overrides that not every run shares (e.g. a swept
    model.kernel_size=3,5), not those the whole sweep was launched with (data.root=..., scale.epochs=1)."""
    items = [_split_overrides(r.get("variant") or "") for r in runs]
    common = set.intersection(*(set(i) for i in items)) if items else set()
    for r, its in zip(runs, items):
        r["variant"] = ",".join(i for i in its if i not in common)
    return runs


def _dedupe(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per (step, ablation, variant, seed): a sweep directory and the results study it
    was kept into hold the same run twice. A finished record wins over a running or failed one,
    otherwise the first one read."""
    rank = {"finished": 0, "stopped": 1, "running": 2, "failed": 3}
    out: List[Dict[str, Any]] = []
    where: Dict[Tuple[Any, ...], int] = {}
    for r in runs:
        key = (r["step"], r.get("ablation"), r.get("variant"), r.get("seed"))
        if r.get("seed") is None or key not in where:
            where.setdefault(key, len(out))
            out.append(r)
            continue
        old = out[where[key]]
        if rank[r["status"]] < rank[old["status"]]:
            out[where[key]] = r
        elif r["status"] == old["status"] == "finished" and r.get("top1") != old.get("top1"):
            log.warning("report: %s and %s hold the same run (step %s, seed %s) with different top-1 (%s, %s); "
                        "the first is used", old["run_dir"], r["run_dir"], r["step"], r["seed"], old.get("top1"), r.get("top1"))
    return out


def collect_runs(sweep_dirs: Union[PathLike, Sequence[PathLike]]) -> List[Dict[str, Any]]:
    """Every run record under the sweep directories (or results studies), one per run."""
    runs = _strip_common_overrides([read_run(d) for s in _as_list(sweep_dirs) for d in find_run_dirs(s)])
    return _dedupe(runs)


# =============================================================================================
# Aggregation: one row per step (or ablation)
# =============================================================================================
def _status(runs: List[Dict[str, Any]], missing_seeds: List[int]) -> Tuple[str, str]:
    """(state, status): state is finished/partial/failed/running/missing; status is for people."""
    def describe_run(r: Dict[str, Any]) -> str:
        if r["status"] == "failed":
            return f"failed: {r.get('reason')}"
        if r["status"] == "stopped":
            h = r.get("health") or {}
            return f"stopped as unhealthy: {h.get('verdict')} at epoch {h.get('epoch')}"
        k, n = r.get("epochs_done") or 0, r.get("epochs")
        return f"running (epoch {k} of {n if n is not None else '?'})"

    total = len(runs) + len(missing_seeds)
    fin = [r for r in runs if r["status"] == "finished"]
    other = sorted((r for r in runs if r["status"] != "finished"), key=lambda r: (r.get("seed") is None, r.get("seed")))
    if total == 0 or (not runs):
        return "missing", "missing"
    if len(fin) == total:
        return "finished", "finished"
    descs = [(r.get("seed"), describe_run(r)) for r in other] + [(s, "missing") for s in missing_seeds]
    if not fin:
        kinds = {r["status"] for r in other}
        state = "running" if "running" in kinds else "failed" if "failed" in kinds else "stopped"
        unique = list(dict.fromkeys(d for _, d in descs))
        if len(unique) == 1 and not missing_seeds:
            return state, unique[0]
        return state, "; ".join(f"seed {s} {d}" for s, d in descs)
    return "partial", "; ".join([f"finished ({len(fin)} of {total} seeds)"] + [f"seed {s} {d}" for s, d in descs])


def _aggregate(key: Tuple[str, str, str], runs: List[Dict[str, Any]], expected_seeds: Optional[List[int]],
               ablation_mode: bool, regime: str, metric: str) -> Dict[str, Any]:
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
    top1 = [float(r[f"top1_{metric}"]) for r in fin]
    seen = {r.get("seed") for r in runs}
    missing_seeds = [s for s in (expected_seeds or []) if s not in seen]
    state, status = _status(runs, missing_seeds)

    def mean_of(k: str) -> Optional[float]:
        return stats.mean([float(r[k]) for r in fin if isinstance(r.get(k), (int, float))])

    def first_of(k: str) -> Any:
        for r in fin + runs:
            if r.get(k) is not None:
                return r[k]
        return None

    walls = [float(r["wall_seconds"]) for r in fin if isinstance(r.get("wall_seconds"), (int, float))]
    ref = regime_ref(info["roadmap"], regime)
    pi = stats.prediction_interval(top1)
    paper_top1 = None if ablation_mode or variant else get(ref, f"top1.{step}")
    paper_gflops = None if ablation_mode or variant else get(ref, f"gflops.{step}")
    return {
        "order": order, "step": step, "label": label, "group": group, "branch": branch,
        "roadmap": info["roadmap"], "ablation": ablation, "variant": variant, "delta_vs": None,
        "top1_mean": stats.mean(top1), "top1_std": stats.std(top1), "n": len(top1),
        "seeds": " ".join(str(r.get("seed")) for r in fin),
        "top1_delta": None, "top1_delta_se": None, "top5_mean": mean_of("top5"),
        "paper_top1": paper_top1, "paper_delta": None,
        "gflops_224": first_of("gflops_224"), "paper_gflops": paper_gflops, "gflops": first_of("gflops"),
        "img_size": first_of("img_size"), "params": first_of("params"), "params_224": first_of("params_224"),
        "train_img_s": mean_of("train_img_s"), "eval_img_s": mean_of("eval_img_s"),
        "wall_s_mean": stats.mean(walls), "wall_s_total": sum(walls) if walls else None,
        "state": state, "status": status, "n_finished": len(fin),
        "n_failed": sum(r["status"] == "failed" for r in runs),
        "n_running": sum(r["status"] == "running" for r in runs), "n_missing": len(missing_seeds),
        "n_stopped": sum(r["status"] == "stopped" for r in runs),
        "n_unhealthy": sum(unhealthy(r) for r in fin), "unhealthy": flagged_text(runs),
        "init": "/".join(_uniq(r.get("init") for r in sorted(runs, key=lambda r: r.get("init") or ""))) or None,
        "top1_delta_paired": None, "top1_delta_paired_se": None, "n_pairs": 0,
        "top1_last_mean": mean_of("top1_last"), "top1_best_mean": mean_of("top1_best"),
        "best_epoch_mean": mean_of("best_epoch"), "metric": metric, "regime": regime,
        "top1_pi_low": pi[0] if pi else None, "top1_pi_high": pi[1] if pi else None,
        "by_seed": {r["seed"]: float(r[f"top1_{metric}"]) for r in fin if r.get("seed") is not None},
        "runs": runs,
    }


def flagged_text(runs: List[Dict[str, Any]]) -> str:
    """The runs of a row the health rule flags, for people: 'seed 0 stalled (epoch 7)'."""
    def one(r: Dict[str, Any]) -> str:
        h = r["health"]
        return (f"seed {r.get('seed')} {h['verdict']}" + (f" (epoch {h['epoch']})" if h.get("epoch") else "")
                + (", stopped" if r["status"] == "stopped" else ", failed" if r["status"] == "failed" else ""))
    flagged = sorted((r for r in runs if unhealthy(r)), key=lambda r: (r.get("seed") is None, r.get("seed")))
    return "; ".join(one(r) for r in flagged)


def _most_common(values: Iterable[Any]) -> Any:
    c = Counter(v for v in values if v is not None)
    return c.most_common(1)[0][0] if c else None


def _uniq(values: Iterable[Any]) -> List[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def _build_rows(runs: List[Dict[str, Any]], plans: List[Dict[str, Any]],
                metric: str = "last") -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    plan_cfg = next((p["config"] for p in plans if p["config"]), {})
    regime = _most_common(r.get("regime") for r in runs) or get(plan_cfg, "regime.name") or DEFAULT_REGIME
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

    rows = [_aggregate(k, v, seeds_expected, ablation_mode, regime, metric) for k, v in groups.items()]
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
            ref = regime_ref(r["roadmap"], regime)
            if r["paper_top1"] is not None and r["delta_vs"] and get(ref, f"top1.{r['delta_vs']}") is not None:
                r["paper_delta"] = r["paper_top1"] - get(ref, f"top1.{r['delta_vs']}")
        if base is not None and r["top1_mean"] is not None and base["top1_mean"] is not None:
            r["top1_delta"] = r["top1_mean"] - base["top1_mean"]
            r["top1_delta_se"] = stats.diff_se(r, base)
        if base is not None:
            p = stats.paired(r["by_seed"], base["by_seed"])
            r.update({"top1_delta_paired": p["delta"], "top1_delta_paired_se": p["se"], "n_pairs": p["n"]})
    context = {"regime": regime, "ablation_mode": ablation_mode, "plan_config": plan_cfg,
               "seeds_expected": seeds_expected, "metric": metric}
    return rows, context


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; allowed: {', '.join(METRICS)}")


def collect(sweep_dir: Union[PathLike, Sequence[PathLike]], metric: str = "last") -> List[Dict[str, Any]]:
    """Per-step rows of a sweep (or several, or a results study), in roadmap order, with Δs and
    the paper's columns; top-1 is `metric` ('last' epoch or 'best' evaluated epoch).

    Each row also carries `runs` (the run records it aggregates) and `by_seed` (seed -> top-1)."""
    rows, _ = collect_with_context(sweep_dir, metric)
    return rows


def collect_with_context(sweep_dir: Union[PathLike, Sequence[PathLike]],
                         metric: str = "last") -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    _check_metric(metric)
    dirs = _as_list(sweep_dir)
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"sweep directory {d} does not exist")
    runs = collect_runs(dirs)
    plans = [sweep_plan(d) for d in dirs]
    rows, context = _build_rows(runs, plans, metric)
    flagged = [r for r in runs if r["status"] == "finished" and unhealthy(r)]
    healthy_rows = _build_rows([r for r in runs if not any(r is f for f in flagged)], plans, metric)[0] if flagged else None
    _attach_healthy(rows, healthy_rows)
    context.update({"runs": runs, "sweep_dirs": dirs, "plans": plans, "flagged": flagged, "rows_healthy": healthy_rows})
    return rows, context


HEALTHY_FIELDS = {"top1_mean": "top1_mean_healthy", "top1_std": "top1_std_healthy", "n": "n_healthy",
                  "top1_delta_paired": "top1_delta_paired_healthy", "top1_delta_paired_se": "top1_delta_paired_se_healthy"}


def _attach_healthy(rows: List[Dict[str, Any]], healthy_rows: Optional[List[Dict[str, Any]]]) -> None:
    """Each row's second, labelled set of numbers without the runs the health rule flags (`*_healthy`;
    the same as the primary ones where the study has no flagged run)."""
    by_key = {(r["step"], r["ablation"], r["variant"]): r for r in healthy_rows or []}
    for r in rows:
        # a row whose every run is flagged has no row among the healthy ones: nothing left
        h = r if healthy_rows is None else by_key.get((r["step"], r["ablation"], r["variant"]), {"n": 0})
        r.update({new: h.get(old) for old, new in HEALTHY_FIELDS.items()})


# =============================================================================================
# What was run (the header of trajectory.md, titles of the figures)
# =============================================================================================
def display_path(p: PathLike) -> str:
    """Relative to the working directory when under it (reports are committed), else absolute."""
    p = Path(p).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def describe(rows: List[Dict[str, Any]], context: Dict[str, Any]) -> Dict[str, Any]:
    runs, plan_cfg = context["runs"], context["plan_config"]
    fin = [r for r in runs if r["status"] == "finished"]
    cfgs = [r["config"] for r in runs if r.get("config")] or ([plan_cfg] if plan_cfg else [])
    dataset = _most_common(r.get("dataset") for r in runs) or get(plan_cfg, "data.name")
    scale = _most_common(r.get("scale") for r in runs) or get(plan_cfg, "scale.name")
    if not dataset or not scale:  # sweep id: <experiment>-<dataset>-<scale>-<regime>
        parts = context["sweep_dirs"][0].name.split("-")
        if len(parts) >= 4:
            dataset, scale = dataset or parts[-3], scale or parts[-2]
    regime = context["regime"]
    roadmaps = _uniq(r["roadmap"] for r in rows)
    ref = regime_ref(MAIN_ROADMAP, regime)
    finished_at = sorted(r["finished_at"] for r in fin if r.get("finished_at"))
    metric = context.get("metric", "last")
    return {
        "dataset": dataset or "unknown", "scale": scale or "unknown", "regime": regime,
        "metric": metric, "metric_note": METRIC_NOTES[metric],
        "num_classes": _most_common(get(c, "data.num_classes") for c in cfgs),
        "train_images": _most_common(r.get("train_images") for r in fin),
        "val_images": _most_common(r.get("val_images") for r in fin),
        "img_size": _uniq(r.get("img_size") for r in runs) or _uniq([get(plan_cfg, "scale.img_size")]),
        "width_mult": _uniq(r.get("width_mult") for r in runs) or _uniq([get(plan_cfg, "scale.width_mult")]),
        "epochs": _uniq(sorted({r.get("epochs") for r in (fin or runs) if r.get("epochs") is not None})),
        "global_batch": _uniq(sorted({r.get("global_batch") for r in fin if r.get("global_batch")})),
        "seeds": sorted({r["seed"] for r in runs if r.get("seed") is not None}),
        "devices": Counter(r.get("device") for r in fin if r.get("device")),
        "wall_seconds": sum(float(r.get("wall_seconds") or 0) for r in fin),
        "wall_seconds_partial": sum(float(r.get("wall_seconds_partial") or 0) for r in runs if r["status"] != "finished"),
        "sweep_dirs": [display_path(d) for d in context["sweep_dirs"]],
        "sweep_ids": _uniq([get(c, "sweep_id") for c in cfgs] + [d.name for d in context["sweep_dirs"]])[:3],
        "experiment": _most_common(get(c, "experiment_name") for c in cfgs),
        "roadmaps": roadmaps, "ablation_mode": context["ablation_mode"],
        "endpoints": ref.get("endpoints", {}), "swin": ref.get("swin"),
        "paper_table": PAPER_TABLE.get(regime, "the paper"),
        "paper_cite": f"Liu et al. 2022, {PAPER_TABLE.get(regime, 'the paper')}"
                      + ("; CMT-S: Guo et al. 2022, Table 2" if "cmt" in roadmaps else ""),
        "paper_cite_short": "Liu et al. 2022; Guo et al. 2022" if "cmt" in roadmaps
                            else f"Liu et al. 2022, {PAPER_TABLE.get(regime, 'the paper')}",
        "other_endpoints": next((regime_ref(r, regime).get("endpoints") for r in roadmaps
                                 if r not in (MAIN_ROADMAP, "other") and regime_ref(r, regime).get("endpoints")), None),
        "git_commits": _uniq(r.get("git_commit") for r in fin),
        "finished_range": (finished_at[0], finished_at[-1]) if finished_at else None,
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "config": next((c for c in cfgs if c), {}),
    }
