"""A sweep's runs as processes packed side by side on one device, under a deadline.

    python -m roadmap.packed --sweep-dir outputs/sweeps/gpu --slots 4 --seeds 0 1 --deadline-s 330 \\
        -- scale=proxy_gpu data.root=/tmp/imagenette

Small models leave most of a big GPU idle (kernel launches, not arithmetic, bound a 64-px step), so
`--slots` runs train at once, each in its own process (`python -m roadmap step=<s> seed=<k> ...`,
run directory `<sweep dir>/<step>/seed<k>`, the layout of a Hydra sweep, so `roadmap.report` reads
it). Runs start seed by seed in roadmap order: if time runs short, the first seeds are complete.

Deadline: no run starts unless the median wall time of the finished runs still fits before it;
at the deadline the runs still going get SIGTERM (then SIGKILL after --grace-s), and whatever
finished is there for the report. `packed.json` in the sweep directory records every run: finished,
failed, killed at the deadline, or not started, with wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .files import write_json


@dataclass
class Job:
    step: str
    seed: int
    run_dir: str
    status: str = "pending"  # pending | running | finished | failed | killed | not started
    start: Optional[float] = None
    seconds: Optional[float] = None
    returncode: Optional[int] = None
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)


def plan(steps: Sequence[str], seeds: Sequence[int], sweep_dir: Path) -> List[Job]:
    return [Job(s, k, str(sweep_dir / s / f"seed{k}")) for k in seeds for s in steps]


def command(job: Job, overrides: Sequence[str], python: str = sys.executable) -> List[str]:
    return [python, "-m", "roadmap", f"step={job.step}", f"seed={job.seed}", *overrides,
            f"hydra.run.dir={job.run_dir}"]


def prepare_data(overrides: Sequence[str]) -> None:
    """Build the prepared caches once, before the runs race to build them."""
    from .data import base_datasets
    from .steps import compose_config

    base_datasets(compose_config([o for o in overrides if not o.startswith("hydra.")]), log_fn=print)


def run_packed(jobs: List[Job], overrides: Sequence[str], slots: int, deadline: float, grace_s: float = 20.0,
               log=print, env: Optional[Dict[str, str]] = None) -> List[Job]:
    """Run `jobs` `slots` at a time until done or `deadline` (time.monotonic())."""
    pending = list(jobs)
    running: List[Job] = []
    t0 = time.monotonic()

    def finished_walls() -> List[float]:
        return [j.seconds for j in jobs if j.status == "finished" and j.seconds]

    while pending or running:
        now = time.monotonic()
        for j in list(running):
            rc = j.proc.poll() if j.proc else None
            if rc is None:
                continue
            j.returncode, j.seconds = rc, round(now - j.start, 1)
            ok = rc == 0 and (Path(j.run_dir) / "metrics.json").exists()
            j.status = "finished" if ok else "failed"
            running.remove(j)
            log(f"[packed {now - t0:6.1f} s] {j.status}: {j.step} seed {j.seed} in {j.seconds:.1f} s (exit {rc})")
        if now >= deadline:
            break
        walls = finished_walls()
        need = statistics.median(walls) if walls else 0.0
        while pending and len(running) < slots:
            if now + need > deadline:  # it would not finish: stop starting runs
                for j in pending:
                    j.status = "not started"
                log(f"[packed {now - t0:6.1f} s] {len(pending)} runs not started: a run takes about {need:.0f} s, "
                    f"{deadline - now:.0f} s left")
                pending = []
                break
            j = pending.pop(0)
            Path(j.run_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(j.run_dir) / "process.log", "ab")
            j.proc = subprocess.Popen(command(j, overrides), stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env)
            out.close()
            j.start, j.status = time.monotonic(), "running"
            running.append(j)
            log(f"[packed {now - t0:6.1f} s] started: {j.step} seed {j.seed} (pid {j.proc.pid}, {len(running)} running)")
        if pending or running:
            time.sleep(0.5)
    if running:  # the deadline: stop what is left, SIGTERM first (a run may checkpoint on it)
        log(f"[packed {time.monotonic() - t0:6.1f} s] deadline: stopping {len(running)} runs")
        for j in running:
            _signal(j, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(j.proc.poll() is None for j in running):
            time.sleep(0.2)
        for j in running:
            if j.proc.poll() is None:
                _signal(j, signal.SIGKILL)
            j.proc.wait()
            j.returncode, j.seconds = j.proc.returncode, round(time.monotonic() - j.start, 1)
            j.status = "finished" if (Path(j.run_dir) / "metrics.json").exists() else "killed"
    for j in pending:
        j.status = "not started"
    return jobs


def _signal(job: Job, sig: int) -> None:
    try:
        os.killpg(job.proc.pid, sig)  # the run and any loader workers it started
    except ProcessLookupError:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: List[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, overrides = argv[:k], argv[k + 1:]
    p = argparse.ArgumentParser(prog="python -m roadmap.packed", description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep-dir", type=Path, required=True)
    p.add_argument("--slots", type=int, default=4, help="runs at a time")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", nargs="+", default=None, help="default: the 14-step main path")
    p.add_argument("--deadline-s", type=float, default=None, help="seconds from now; default: none")
    p.add_argument("--grace-s", type=float, default=20.0, help="SIGTERM -> SIGKILL at the deadline")
    p.add_argument("--no-prepare", action="store_true", help="do not build the prepared caches first")
    args = p.parse_args(argv)
    if args.slots < 1:
        p.error("--slots must be >= 1")
    from .steps import MAIN_PATH

    t0 = time.monotonic()
    deadline = t0 + args.deadline_s if args.deadline_s else float("inf")
    steps = args.steps or MAIN_PATH
    if not args.no_prepare:
        prepare_data([f"step={steps[0]}", *overrides])
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.slots)))
    env.setdefault("ROADMAP_REPORT", "0")
    jobs = run_packed(plan(steps, args.seeds, args.sweep_dir), overrides, args.slots, deadline, args.grace_s, env=env)
    counts = {s: sum(j.status == s for j in jobs) for s in ("finished", "failed", "killed", "not started")}
    wall = time.monotonic() - t0
    write_json(args.sweep_dir / "packed.json", {
        "slots": args.slots, "seeds": args.seeds, "steps": steps, "overrides": overrides,
        "deadline_s": args.deadline_s, "wall_seconds": round(wall, 1), "counts": counts,
        "runs": [{k: getattr(j, k) for k in ("step", "seed", "run_dir", "status", "seconds", "returncode")}
                 for j in jobs]})
    print(f"packed: {counts['finished']}/{len(jobs)} runs finished in {wall:.0f} s ({args.slots} at a time); "
          + ", ".join(f"{v} {k}" for k, v in counts.items() if v and k != "finished"), flush=True)
    return 0 if counts["finished"] == len(jobs) else 3


if __name__ == "__main__":
    sys.exit(main())
