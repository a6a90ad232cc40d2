"""The run directory's lifecycle: one writer (a lock), crash-safe checkpoints, and stop signals.

    lock = RunLock(run_dir).acquire()      # refuses while another live process holds it
    with StopSignals() as stop:            # SIGTERM / SIGUSR1 / submitit's signal set a flag
        ... save_checkpoint(run_dir, state) ... if stop.requested: raise Preempted(...)
    lock.release()

Files (only rank 0 writes them):
  run.lock   host, pid, start time of the process that holds the run (JSON); an flock is held on it
             for the process's lifetime, so a crashed holder never blocks the next one on this host
  last.pt    the newest checkpoint; prev.pt the one before it, kept until last.pt is complete; a
             full disk while writing it raises files.DiskFull (one line) and leaves both as they were
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .config import ConfigError
from .faults import injected_write_fault
from .files import RERUN, reporting_full_disk

log = logging.getLogger("roadmap")

LOCK_NAME = "run.lock"
LAST, PREV = "last.pt", "prev.pt"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped on request; rerun the same command to resume


class RunRefused(ConfigError):
    """This run directory cannot be used by this process (another config, another live writer)."""


class RunLocked(RunRefused):
    pass


class CheckpointError(ConfigError):
    """No readable checkpoint where one is expected. One line naming the files and the choices."""


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; rerunning resumes it."""

    def __init__(self, signum: int, where: str, checkpoint: Optional[Path]):
        self.signum, self.where, self.checkpoint = signum, where, checkpoint
        super().__init__(f"stopped by {signal_name(signum)} {where}; rerun the same command to resume"
                         + (f" from {checkpoint}" if checkpoint else ""))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ---------------------------------------------------------------------------------------------
# One run, one writer
# ---------------------------------------------------------------------------------------------
def _proc_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): a pid
    that was reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start: Optional[str] = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    if start is not None:
        now = _proc_start(pid)
        return now is None or now == start
    return True


class RunLock:
    """`run.lock` in the run directory: JSON with host, pid, start time (and the SLURM job id).

    An exclusive flock is held on the file while the run lives; the kernel drops it when the
    process dies, however it dies. A second process refuses with one line naming the holder.
    A lock left behind by a dead process is taken over with a warning: dead means its flock is
    free and, on this host, its pid is gone (or is another process now); on another host only
    the same SLURM job (a requeued job) may take it over, since a pid there cannot be checked.
    """

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: Optional[int] = None

    def _me(self) -> Dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}

    @staticmethod
    def describe(holder: Dict[str, Any]) -> str:
        job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
        return f"host {holder.get('host', '?')} pid {holder.get('pid', '?')} since {holder.get('since', '?')}{job}"

    def _read(self, fd: int) -> Dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            raw += chunk
        try:
            holder = json.loads(raw.decode() or "{}")
            return holder if isinstance(holder, dict) else {}
        except ValueError:
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = self._me()
        for _ in range(20):  # retried only if the file was replaced while we opened it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                flock = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = self._read(fd)
                    raise RunLocked(f"run directory {self.path.parent} is in use by {self.describe(holder)} "
                                    f"(lock {self.path}); wait for that run or stop it, or use another out_dir") from None
                except OSError as e:  # a file system without flock: the pid check alone decides
                    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    flock = False
                try:  # the holder may have released (and removed) the file while we opened it
                    if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                        os.close(fd)
                        continue
                except FileNotFoundError:
                    os.close(fd)
                    continue
                holder = self._read(fd)
                if holder and (holder.get("host"), holder.get("pid")) != (me["host"], me["pid"]):
                    self._check_stale(holder, me, flock)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(me) + "\n").encode())
                os.fsync(fd)
                self.fd = fd
                return self
            except BaseException:
                if self.fd != fd:
                    os.close(fd)
                raise
        raise RunLocked(f"could not take the lock {self.path}: it keeps being replaced by another process")

    def _check_stale(self, holder: Dict[str, Any], me: Dict[str, Any], flock: bool) -> None:
        where = self.describe(holder)
        if holder.get("host") == me["host"]:
            if flock or not pid_alive(int(holder.get("pid", -1)), holder.get("pid_start")):
                log.warning("taking over the stale lock of %s: that process is gone (%s)", where, self.path)
                return
        elif holder.get("slurm_job_id") and holder.get("slurm_job_id") == me["slurm_job_id"]:
            log.warning("taking over the lock of %s: the same SLURM job, requeued (%s)", where, self.path)
            return
        raise RunLocked(f"run directory {self.path.parent} is locked by {where} (lock {self.path}); "
                        f"that host's process cannot be checked from here: if it is gone, delete the lock file")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlink while still holding the flock (see acquire's inode check)
        finally:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------------
# Crash-safe checkpoints: temp file + fsync, then last.pt -> prev.pt, temp -> last.pt
# ---------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _ByteCounter:
    """A file-like sink that only counts: how big a checkpoint is, without writing it anywhere."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, b: Any) -> int:
        k = memoryview(b).nbytes
        self.n += k
        return k

    def flush(self) -> None:
        pass


def checkpoint_bytes(state: Dict[str, Any]) -> int:
    counter = _ByteCounter()
    torch.save(state, counter)
    return counter.n


def save_checkpoint(run_dir: Path, state: Dict[str, Any]) -> Path:
    """Write `state` as last.pt; the previous last.pt becomes prev.pt only once the new one is
    complete on disk, so at every moment one complete checkpoint exists. A full disk (or quota)
    raises DiskFull naming last.pt, the size it needed and the space free; the partial file is
    removed and the previous checkpoint is left as it was, to resume from once there is room."""
    run_dir = Path(run_dir)
    last, prev, tmp = run_dir / LAST, run_dir / PREV, run_dir / f".{LAST}.tmp"
    hint = (f"the previous checkpoint {last} is intact: {RERUN} to resume from it" if last.exists() else RERUN)
    partial = [0]

    def needed() -> int:
        try:
            return checkpoint_bytes(state)
        except Exception:  # at least what was written before the disk filled up
            return partial[0]

    with reporting_full_disk(last, needed, hint):
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                injected_write_fault(last)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            partial[0] = tmp.stat().st_size if tmp.exists() else 0
            tmp.unlink(missing_ok=True)
            raise
    if last.exists():
        os.replace(last, prev)
    os.replace(tmp, last)
    _fsync_dir(run_dir)
    return last


def _load(path: Path) -> Dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError("not a roadmap checkpoint (no 'model' entry)")
    return state


def load_checkpoint(run_dir: Path) -> Tuple[Optional[Dict[str, Any]], Optional[Path]]:
    """The newest readable checkpoint of the run and its path, or (None, None) when there is none.

    An unreadable last.pt (truncated copy, full disk) falls back to prev.pt with a warning; when
    checkpoints exist but none is readable, CheckpointError says which and what to do.
    """
    run_dir = Path(run_dir)
    present = [p for p in (run_dir / LAST, run_dir / PREV) if p.exists()]
    errors: List[str] = []
    if present and present[0].name == PREV:  # killed between the two renames of save_checkpoint
        errors.append(f"{LAST} (missing)")
        log.warning("checkpoint %s is missing (the run stopped while replacing it)", run_dir / LAST)
    for path in present:
        try:
            state = _load(path)
        except Exception as e:  # truncated zip, bad pickle, empty file ...
            reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
            errors.append(f"{path.name} ({type(e).__name__}: {reason})")
            log.warning("checkpoint %s is unreadable (%s: %s)", path, type(e).__name__, reason)
            continue
        if errors:
            log.warning("resuming from the previous checkpoint %s instead (epoch %s, step %s of it)", path,
                        state.get("epoch"), state.get("step_in_epoch", 0))
        return state, path
    if present:
        files = " ".join(str(p) for p in present)
        raise CheckpointError(f"no readable checkpoint in {run_dir}: {'; '.join(errors)}; to restart this run from "
                              f"scratch delete them (rm {files}), or put back a good copy of {LAST}")
    return None, None


def remove_previous(run_dir: Path) -> None:
    """A finished run keeps last.pt only."""
    (Path(run_dir) / PREV).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Stop signals: SIGTERM (SLURM before preemption / at the time limit, torchrun, docker stop),
# SIGUSR1, and submitit's preemption signal (SIGUSR2 unless $SUBMITIT_PREEMPT_SIGNAL says otherwise)
# ---------------------------------------------------------------------------------------------
def submitit_signal() -> int:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


def stop_signals() -> List[int]:
    return list(dict.fromkeys([signal.SIGTERM, signal.SIGUSR1, submitit_signal()]))


class _StopState:
    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.event = threading.Event()

    def set(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()


STOP = _StopState()  # process-wide: a stop requested during one run of a sweep also stops the sweep


def stop_requested() -> Optional[int]:
    return STOP.signum


def _handler(signum: int, frame: Any) -> None:
    STOP.set(signum)  # nothing else here: the train loop stops at the next update boundary


class StopSignals:
    """Install the stop handlers for the duration of a run (main thread only) and remember what
    they replace: submitit's own handler (checkpoint + requeue) is called after our checkpoint."""

    def __init__(self) -> None:
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in stop_signals():
                self.previous[sig] = signal.signal(sig, _handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous = {}

    @property
    def requested(self) -> Optional[int]:
        return STOP.signum


def submitit_requeue_handler() -> Any:
    """submitit's checkpoint-and-requeue handler when this process is a submitit job, else None."""
    handler = signal.getsignal(submitit_signal())
    owner = getattr(handler, "__self__", None)
    if owner is not None and type(owner).__module__.startswith("submitit") and hasattr(owner, "checkpoint_and_try_requeue"):
        return owner.checkpoint_and_try_requeue
    return None


def ignore_stop_signals_in_worker(worker_id: int = 0) -> None:
    """DataLoader workers: SLURM and Ctrl-Z/killpg signal the whole process group; a worker must
    neither die of SIGTERM/SIGUSR* (the loader would fail mid-update) nor run submitit's requeue
    handler it inherited. The main process stops them when it is done."""
    for sig in stop_signals():
        signal.signal(sig, signal.SIG_IGN)
