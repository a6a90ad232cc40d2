"""Running a sweep's runs side by side on one machine (`hydra/launcher=parallel`, hydra-joblib-launcher):
the check that keeps the cores from being oversubscribed, and the callback that ends the worker
processes with the sweep."""
from __future__ import annotations

import os
import sys
from typing import Any

from hydra.experimental.callback import Callback

from .config import ConfigError


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_n_jobs(value: str) -> None:
    """hydra/launcher=parallel splits the cores between its runs: more runs than cores would oversubscribe."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n != -1 and not 1 <= n <= cores():
        raise ConfigError(f"hydra.launcher.n_jobs={value} is out of range; allowed: 1..{cores()} (this machine's cores; "
                          f"each run side by side gets cores // n_jobs threads) or -1 (one run per core)")


class ShutdownWorkers(Callback):
    """joblib's loky executor keeps its worker processes for minutes after the last job; end them with the
    sweep so that the command leaves nothing running (a no-op with any other launcher)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if "joblib.externals.loky" in sys.modules:
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True, kill_workers=True)
