"""Atomic, human-readable result files: write to a temp file in the same folder, then rename.

A write that runs out of space (ENOSPC) or quota (EDQUOT) raises `DiskFull`: one line naming the
file, about how much it needed and how much is free, and what to do; its temp file is removed
first, so the file it was replacing stays intact. `reporting_full_disk` gives other writers
(checkpoints, the prepared cache) the same message. Tests inject the fault with
$ROADMAP_FAULT=enospc:<file name pattern>[@<n>] (roadmap/faults.py; see `injected_write_fault`).
"""
from __future__ import annotations

import csv
import errno
import fnmatch
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

from .faults import injected_write_fault

PathLike = Union[str, Path]
_UMASK = os.umask(0o022)
os.umask(_UMASK)


SPACE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
RERUN = "free space there and rerun the same command"


# ---------------------------------------------------------------------------------------------
# Storage faults: a full disk (or quota) is named, and tests can inject one
# ---------------------------------------------------------------------------------------------
class DiskFull(OSError):
    """A write ran out of space or quota. str() is the one-line message; `filename` the file.
    Made by `disk_full`; constructed as OSError(errno, message, path), so it pickles as one."""

    def __str__(self) -> str:
        return str(self.strerror)


def space_error(exc: Optional[BaseException]) -> Optional[int]:
    """ENOSPC or EDQUOT when `exc` or an exception it was raised from (torch's writer wraps the
    OSError in a RuntimeError) is one, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRORS:
            return exc.errno
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def mib(n: Optional[float]) -> str:
    if n is None:
        return "? MiB"
    x = n / 2 ** 20
    return f"{x:.0f} MiB" if x >= 10 else f"{x:.1f} MiB" if x >= 1 else f"{x:.3f} MiB"


def free_bytes(folder: PathLike) -> Optional[int]:
    """Bytes this user may still write on the file system of `folder` (or of its nearest parent)."""
    d = Path(folder)
    while not d.exists() and d != d.parent:
        d = d.parent
    try:
        return shutil.disk_usage(d).free
    except OSError:
        return None


def disk_full(path: PathLike, needed: Optional[int], code: int = errno.ENOSPC, hint: str = RERUN) -> DiskFull:
    path = Path(path)
    quota = " (the file system may have room, your quota has not)" if code == errno.EDQUOT else ""
    return DiskFull(code, f"{SPACE_ERRORS.get(code, os.strerror(code))} writing {path}: it needs about {mib(needed)}, "
                          f"{mib(free_bytes(path.parent))} free in {path.parent}{quota}; {hint}", str(path))


@contextmanager
def reporting_full_disk(path: PathLike, needed: Union[int, Callable[[], Optional[int]], None],
                        hint: str = RERUN) -> Iterator[None]:
    """Re-raise a write's ENOSPC/EDQUOT (however wrapped) as DiskFull naming `path`. The block must
    have removed its partial file by then: the free space is measured after it. `needed` may be
    a function, called only on failure."""
    try:
        yield
    except DiskFull:
        raise
    except BaseException as e:
        code = space_error(e)
        if code is None:
            raise
        try:
            n = needed() if callable(needed) else needed
        except Exception:  # estimating the size must not hide the message
            n = None
        raise disk_full(path, n, code, hint) from e


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------
def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    path = Path(path)
    with reporting_full_disk(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a result file gets the usual mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                injected_write_fault(path)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def write_csv(path: PathLike, rows: List[Dict[str, Any]], fields: Iterable[str] | None = None) -> Path:
    fields = list(fields or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: PathLike) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(rows: List[Dict[str, Any]], fields: List[str], headers: List[str] | None = None,
                   align: str | None = None) -> str:
    headers = headers or fields
    align = align or "l" + "r" * (len(fields) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(f, "")) for f in fields) + " |")
    return "\n".join(lines) + "\n"
