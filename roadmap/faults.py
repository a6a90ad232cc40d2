"""Fault injection for tests, all in one place: $ROADMAP_FAULT = 'kind:value[,kind:value...]'.

| kind | value | effect (where) |
| --- | --- | --- |
| raise | a step name or * | the run fails before building anything (train.Run) |
| nan | a step name or * | every training loss is NaN (train.train_one_epoch) |
| zero_grad | a step name or * | every update's gradients are zeroed: the run learns nothing, a stall (train.train_one_epoch) |
| slow_update | seconds | each update sleeps, cut short by a stop signal, so a test can signal mid-epoch (train.Run) |
| exit_after_epoch | n | the process dies (os._exit(17)) right after epoch n's checkpoint (train.Run) |
| enospc | file name pattern[@n] | the n-th and later writes of matching files fail with ENOSPC (files.py) |

Nothing here acts unless the variable is set; production code calls these hooks and nothing else.
"""
from __future__ import annotations

import errno
import fnmatch
import os
from pathlib import Path
from typing import Dict, Optional, Union


def fault_value(kind: str) -> Optional[str]:
    """The value of `kind` in $ROADMAP_FAULT, or None."""
    for item in os.environ.get("ROADMAP_FAULT", "").split(","):
        k, _, v = item.partition(":")
        if k == kind:
            return v
    return None


def fault(kind: str, step: str) -> bool:
    """Is fault `kind` injected for this step (its value is the step's name or '*')?"""
    return fault_value(kind) in (step, "*")


def raise_if_injected(step: str) -> None:
    if fault("raise", step):
        raise RuntimeError(f"injected failure in step {step} (ROADMAP_FAULT)")


def slow_update_seconds() -> float:
    """$ROADMAP_FAULT's slow_update: seconds each update sleeps (a stop signal cuts the sleep short), else 0."""
    return float(fault_value("slow_update") or 0)


def exit_after_epoch(epoch: int) -> None:
    """Simulate a killed process right after epoch `epoch` (1-based) was checkpointed (tests of resume)."""
    if fault("exit_after_epoch", str(epoch)):
        os._exit(17)


_WRITES: Dict[str, int] = {}  # writes per $ROADMAP_FAULT=enospc spec in this process


def injected_write_fault(path: Union[str, Path]) -> None:
    """$ROADMAP_FAULT=enospc:<pattern>[@<n>]: the n-th and every later write in this process of a
    file whose name matches the glob `pattern` (every one without @n) fails with ENOSPC. Writers
    call this after writing part of the file, where a real full disk would stop them."""
    spec = fault_value("enospc")
    if not spec:
        return
    pattern, _, nth = spec.partition("@")
    if not fnmatch.fnmatchcase(Path(path).name, pattern):
        return
    _WRITES[spec] = _WRITES.get(spec, 0) + 1
    if _WRITES[spec] >= int(nth or 1):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected: ROADMAP_FAULT=enospc:{spec})", str(path))
