"""The health of a run: one rule, written once, read from the per-epoch record (history.csv).

`assess(history, context)` gives one verdict per run. The same function runs live, after every epoch
of `roadmap.train` (the warning line, `metrics.json`'s `health`, W&B's summary and tag,
`scale.on_unhealthy=stop`), and afterwards on any run directory, committed ones included
(`roadmap/report/health.py`, the trajectory report). Thresholds: `scale.health` (config.HealthConfig);
their justification and the calibration on the committed runs: docs/health.md.

Verdicts (a run's verdict is the first finding in epoch order; on the same epoch the one listed first):

  diverged   a non-finite training loss (train.NonFiniteLoss fails the run there)
  collapsed  back at chance after it had learned: an evaluated top-1 <= (1 + top1_margin) x chance
             after one >= learned_factor x chance, or a stall (below) that starts after it had learned
  stalled    after warm-up, the epoch's training loss stays at the chance loss (>= ln K - loss_margin)
             for N = max(stall_epochs, ceil(stall_fraction x epochs)) epochs in a row
  unstable   an epoch's training loss above spike_factor x the lowest epoch loss before it
  chance     at the end, the last evaluated top-1 <= (1 + top1_margin) x chance
  ok         none of the above

The chance loss is ln K: a constant uniform prediction has cross-entropy ln K against any target
that sums to one, Mixup/CutMix-mixed and label-smoothed ones included; the best constant prediction
(the mean target) does at most a few thousandths of a nat better on a near-balanced training set.
`python -m roadmap.chance step=... scale=...` measures both, and the loss of a perfect
prediction (the mean entropy of the targets), by running the recipe's timm Mixup on real batches.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import HealthConfig

VERDICTS = ("ok", "diverged", "collapsed", "stalled", "unstable", "chance")  # severity order, after ok
UNHEALTHY = VERDICTS[1:]
STOPPED = "stopped_unhealthy"  # the status of a run that scale.on_unhealthy=stop ended early


@dataclass(frozen=True)
class Context:
    """What the rule needs besides the per-epoch record: the class count (chance), the planned epochs
    (the stall window) and the warm-up (in epochs), and the thresholds."""
    num_classes: Optional[int]
    epochs: int
    warmup_epochs: float = 0.0
    rule: HealthConfig = field(default_factory=HealthConfig)

    @property
    def chance_loss(self) -> Optional[float]:
        return math.log(self.num_classes) if self.num_classes else None

    @property
    def chance_top1(self) -> Optional[float]:
        return 100.0 / self.num_classes if self.num_classes else None

    @property
    def first_after_warmup(self) -> int:
        """The first epoch (1-based) that starts after the warm-up: epoch e covers [e - 1, e)."""
        return math.ceil(self.warmup_epochs) + 1

    @property
    def stall_window(self) -> int:
        return max(self.rule.stall_epochs, math.ceil(self.rule.stall_fraction * self.epochs))


@dataclass(frozen=True)
class Finding:
    verdict: str
    epoch: int
    reason: str


@dataclass(frozen=True)
class Health:
    verdict: str
    reason: str
    epoch: Optional[int]
    findings: Tuple[Finding, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.verdict == "ok"

    def as_dict(self) -> Dict[str, Any]:
        """metrics.json's `health`: verdict, reason, epoch (null when ok), and every finding when several."""
        out: Dict[str, Any] = {"verdict": self.verdict, "reason": self.reason, "epoch": self.epoch}
        if len(self.findings) > 1:
            out["findings"] = [asdict(f) for f in self.findings]
        return out


# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------
def _num(x: Any) -> Optional[float]:
    try:
        return float(x) if x not in (None, "") else None
    except (TypeError, ValueError):
        return None


def series(history: Sequence[Mapping[str, Any]]) -> List[Tuple[int, Optional[float], Optional[float]]]:
    """(epoch, train loss, top-1 or None) per row; the rows' own epoch numbers, else their order."""
    epochs = [int(_num(h.get("epoch")) or 0) for h in history]
    if len(set(epochs)) != len(epochs) or 0 in epochs:
        epochs = list(range(1, len(history) + 1))
    return [(e, _num(h.get("train_loss")), _num(h.get("top1"))) for e, h in zip(epochs, history)]


def _f(x: float) -> str:
    return f"{x:.3f}"


def _diverged(rows: List[Tuple[int, Optional[float], Optional[float]]]) -> List[Finding]:
    for e, loss, _ in rows:
        if loss is not None and not math.isfinite(loss):
            return [Finding("diverged", e, f"train loss {loss} at epoch {e} (non-finite)")]
    return []


def _learned_by(rows: List[Tuple[int, Optional[float], Optional[float]]], ctx: Context) -> Optional[Tuple[int, float]]:
    """The first (epoch, top-1) at which the run had learned: top-1 >= learned_factor x chance."""
    level = ctx.rule.learned_factor * ctx.chance_top1
    return next(((e, t) for e, _, t in rows if t is not None and t >= level), None)


def _stalls(rows: List[Tuple[int, Optional[float], Optional[float]]], ctx: Context) -> List[Finding]:
    """Stalled (or collapsed, after learning): the first N post-warm-up epochs in a row at the chance loss."""
    limit, n, first = ctx.chance_loss - ctx.rule.loss_margin, ctx.stall_window, ctx.first_after_warmup
    learned = _learned_by(rows, ctx)
    streak: List[Tuple[int, float]] = []
    for e, loss, _ in rows:
        if e >= first and loss is not None and math.isfinite(loss) and loss >= limit:
            streak.append((e, loss))
        else:
            streak = []
        if len(streak) == n:
            lo, hi = min(v for _, v in streak), max(v for _, v in streak)
            where = (f"train loss {_f(lo)}–{_f(hi)} at the chance loss (≥ ln {ctx.num_classes} − {ctx.rule.loss_margin:g} = "
                     f"{_f(limit)}) for {n} epochs in a row, epochs {streak[0][0]}–{e}")
            if learned is not None and learned[0] < streak[0][0]:
                return [Finding("collapsed", e, f"{where}, after top-1 {learned[1]:.2f} % at epoch {learned[0]}")]
            return [Finding("stalled", e, f"{where}, after a warm-up of {ctx.warmup_epochs:.2f} epochs "
                                          f"(window max({ctx.rule.stall_epochs}, ⌈{ctx.rule.stall_fraction:g} × "
                                          f"{ctx.epochs}⌉) = {n})")]
    return []


def _top1_collapse(rows: List[Tuple[int, Optional[float], Optional[float]]], ctx: Context) -> List[Finding]:
    learned = _learned_by(rows, ctx)
    if learned is None:
        return []
    level = (1 + ctx.rule.top1_margin) * ctx.chance_top1
    for e, _, t in rows:
        if e > learned[0] and t is not None and t <= level:
            return [Finding("collapsed", e, f"top-1 {t:.2f} % at epoch {e} is back at chance (≤ {level:.2f} %, chance "
                                            f"{ctx.chance_top1:.2f} %) after {learned[1]:.2f} % at epoch {learned[0]}")]
    return []


def _spikes(rows: List[Tuple[int, Optional[float], Optional[float]]], ctx: Context) -> List[Finding]:
    best: Optional[Tuple[int, float]] = None
    for e, loss, _ in rows:
        if loss is None or not math.isfinite(loss):
            continue
        if best is not None and best[1] > 0 and loss > ctx.rule.spike_factor * best[1]:
            return [Finding("unstable", e, f"train loss {_f(loss)} at epoch {e} is {loss / best[1]:.2f} × the lowest "
                                           f"before it ({_f(best[1])} at epoch {best[0]}; limit "
                                           f"{ctx.rule.spike_factor:g} ×)")]
        if best is None or loss < best[1]:
            best = (e, loss)
    return []


def _at_chance(rows: List[Tuple[int, Optional[float], Optional[float]]], ctx: Context) -> List[Finding]:
    evaluated = [(e, t) for e, _, t in rows if t is not None]
    if not evaluated:
        return []
    e, t = evaluated[-1]
    level = (1 + ctx.rule.top1_margin) * ctx.chance_top1
    if t > level:
        return []
    return [Finding("chance", rows[-1][0], f"final top-1 {t:.2f} % is at chance (≤ {level:.2f} % = "
                                           f"{1 + ctx.rule.top1_margin:g} × chance {ctx.chance_top1:.2f} % for "
                                           f"{ctx.num_classes} classes)")]


def assess(history: Sequence[Mapping[str, Any]], ctx: Context, final: bool = True) -> Health:
    """The verdict on a run's per-epoch record (history.csv's rows or train.py's `history`).

    `final`: the record is complete (the chance check looks at the last evaluated top-1); live, every
    epoch but the last is assessed with final=False. Each finding at epoch e depends only on the
    rows up to e, so the verdict of a run never changes once given (but `chance`, judged at the end)."""
    rows = series(history)
    if not rows:
        return Health("ok", "no epochs recorded", None)
    found = _diverged(rows) + _spikes(rows, ctx)
    if ctx.num_classes:
        found += _stalls(rows, ctx) + _top1_collapse(rows, ctx) + (_at_chance(rows, ctx) if final else [])
    if not found:
        why = "" if ctx.num_classes else " (class count unknown: only divergence and spikes checked)"
        return Health("ok", f"no finding in {len(rows)} epochs{why}", None)
    found.sort(key=lambda f: (f.epoch, VERDICTS.index(f.verdict)))
    unique = tuple(f for k, f in enumerate(found) if f.verdict not in {g.verdict for g in found[:k]})
    return Health(unique[0].verdict, unique[0].reason, unique[0].epoch, unique)


# ---------------------------------------------------------------------------------------------
# The context of a run, from its config (a live DictConfig or a run directory's config dict)
# ---------------------------------------------------------------------------------------------
def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def rule_of(config: Mapping[str, Any]) -> HealthConfig:
    """The thresholds a run recorded (scale.health), the defaults for the keys it lacks (older runs)."""
    given = _get(config, "scale.health") or {}
    return HealthConfig(**{f.name: given[f.name] for f in fields(HealthConfig) if given.get(f.name) is not None})


def context_of(config: Any, epochs_recorded: int = 0, rule: Optional[HealthConfig] = None) -> Context:
    """The rule's context from a run's config (as train.py's warm-up: the recipe's warm-up scaled to the
    scale's epochs); a config without the keys gives the record's own length and no warm-up."""
    if not isinstance(config, Mapping):  # a DictConfig
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=True)
    recipe_epochs = _num(_get(config, "recipe.epochs"))
    epochs = _num(_get(config, "scale.epochs")) or recipe_epochs or epochs_recorded or 1
    warmup = (_num(_get(config, "recipe.warmup_epochs")) or 0.0) * (epochs / recipe_epochs if recipe_epochs else 1.0)
    k = _num(_get(config, "data.num_classes")) or _num(_get(config, "model.num_classes"))
    return Context(int(k) if k else None, int(epochs), warmup, rule or rule_of(config))


# ---------------------------------------------------------------------------------------------
# The chance loss, measured: the recipe's timm Mixup/CutMix and label smoothing on real batches
# ---------------------------------------------------------------------------------------------
def target_losses(targets: Any) -> Dict[str, float]:
    """Losses of three predictions on soft targets (rows summing to one, e.g. timm Mixup's): the
    constant uniform one, the best constant one (the mean target) and a perfect one (the target)."""
    import torch

    t = targets.double()
    k = t.shape[1]
    mean = t.mean(0)
    xlogy = torch.special.xlogy
    return {"uniform": float((-(t * math.log(1.0 / k)).sum(1)).mean()),
            "best_constant": float(-(xlogy(mean, mean)).sum()),
            "floor": float((-xlogy(t, t).sum(1)).mean()),
            "samples": t.shape[0], "ln_k": math.log(k)}
