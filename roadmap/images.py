"""One image file read as RGB, or refused with a one-line reason; the list of refused files.

Every way a file can be refused takes one path, `Refused(reason)`: the decoders (not an image, a
truncated or corrupt file), PIL's own guards (a decompression bomb: over `Image.MAX_IMAGE_PIXELS`
pixels is refused, where PIL itself would only warn below twice that: its DecompressionBombWarning
is filtered out, so that no Python warning names the file instead), modes with no 8-bit
reading (32-bit float), the file system (not a regular file: a FIFO would block the loader for
ever; empty; any OSError, its errno named: permission, I/O error, a dangling or looping link).
Images of more than 8 bits per channel (I;16, I) are read as 16-bit and scaled to 8 bits (PIL's
own conversion clips them: a white image); palette images with transparency go through RGBA (as
PIL advises, without its warning); every other mode is PIL's `convert("RGB")`, as torchvision's
ImageFolder does.

The callers (roadmap.data) skip a refused file, count it per split, name it in one log line and
list it in the run directory's `refused_images.tsv` (split, file, reason): one line per file,
appended with a single write by whichever loader process meets it, or written at once when the
prepared cache already knows them all. Names are shown printable: bytes that are not UTF-8 and
control characters (a newline in a file name) as backslash escapes, so a name is one field of one line.
"""
from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import IO, Dict, Iterable, Mapping, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import atomic_write_text

REFUSED_LIST = "refused_images.tsv"
_HEADER = "split\tfile\treason"
NAMED_IN_LINE = 20  # a summary line names this many refused files; the list names all
_NO_BOMB_WARNING = ("ignore", None, Image.DecompressionBombWarning, None, 0)  # a warnings.filters entry


def _filter_bomb_warning() -> None:
    """PIL warns (and decodes) between MAX_IMAGE_PIXELS and twice that; read_rgb refuses those files
    itself. Checked at every read, not set once at import: a catch_warnings block around the import
    (pytest's collection, for one) would have taken the filter away again. Changing the filters on
    every read instead (catch_warnings per read) would reset the once-only record of every warning,
    and a loader process would then print a transform's warning for every image."""
    if _NO_BOMB_WARNING not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class Refused(Exception):
    """This file cannot be used as an image; str() is the reason, one line."""


def printable(text: str) -> str:
    """`text` as one printable line: undecodable bytes and control characters backslash-escaped."""
    s = os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else str(text)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _refuse_special(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise Refused(f"not a regular file ({next((k for is_, k in _KINDS if is_(mode)), 'a special file')})")


def _open_regular(path: str) -> IO[bytes]:
    """The file opened for reading, if it is a non-empty regular file. O_NONBLOCK: opening a FIFO
    returns at once (and is then refused) instead of waiting for a writer that never comes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:  # a socket cannot be opened at all (ENXIO): say what it is
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise e from None
        _refuse_special(mode)
        raise
    try:
        _refuse_special(os.fstat(fd).st_mode)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    try:
        if not f.read(1):  # read, not st_size: /proc and /sys files say 0 bytes and are not empty
            raise Refused("empty file (0 bytes)")
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


def _reason(e: BaseException, path: str) -> str:
    if isinstance(e, Image.DecompressionBombError):
        return f"PIL's decompression-bomb guard: {str(e).split(', could be')[0]} (Image.MAX_IMAGE_PIXELS)"
    if isinstance(e, UnidentifiedImageError):
        return "not an image PIL can identify"
    if isinstance(e, OSError) and e.errno:
        code = errno.errorcode.get(e.errno, str(e.errno))
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"a symbolic link to a missing file ({code})"
        return f"{e.strerror or os.strerror(e.errno)} ({code})"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text if isinstance(e, OSError) and text else f"{type(e).__name__}: {text}".rstrip(": ")
    return text[:160]


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "F":
        raise Refused("32-bit float pixels (mode F): no 8-bit range to read them in")
    if img.mode == "I" or img.mode.startswith("I;16"):  # 16-bit: scale, where PIL's convert would clip at 255
        levels = np.clip(np.asarray(img).astype(np.int64), 0, 65535) // 257
        return Image.fromarray(levels.astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def read_rgb(path: str, draft: Optional[int] = None) -> Image.Image:
    """The image at `path` as RGB (JPEG: decoded at a reduced scale when `draft` px suffice), or
    Refused with the reason. Catches every Exception of a read: any one means this file is unusable."""
    _filter_bomb_warning()
    try:
        with _open_regular(path) as f:
            img = Image.open(f)
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:  # PIL's limit, refused like its error at twice that
                raise Refused(f"PIL's decompression-bomb guard: Image size ({img.width * img.height} pixels) "
                              f"exceeds limit of {limit} pixels (Image.MAX_IMAGE_PIXELS)")
            if draft:
                img.draft("RGB", (draft, draft))
            img.load()
        return _as_rgb(img)
    except Refused:
        raise
    except Exception as e:
        raise Refused(_reason(e, path)) from None


# ---------------------------------------------------------------------------------------------
# The list of refused files (a run directory's refused_images.tsv)
# ---------------------------------------------------------------------------------------------
def _line(split: str, path: str, reason: str) -> str:
    return f"{split}\t{printable(path)}\t{printable(reason)}\n"


def append_refused(listing: Path, split: str, path: str, reason: str) -> None:
    """One line added with one write(2) in append mode: whole lines from any number of processes."""
    fd = os.open(listing, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        head = _HEADER + "\n" if os.fstat(fd).st_size == 0 else ""
        os.write(fd, (head + _line(split, path, reason)).encode())
    finally:
        os.close(fd)


def write_refused(listing: Path, refused: Mapping[str, Mapping[str, str]]) -> None:
    """The whole list at once (atomic), from {split: {path: reason}}."""
    atomic_write_text(listing, _HEADER + "\n" + "".join(
        _line(split, p, r) for split, files in refused.items() for p, r in sorted(files.items())))


def read_refused(listing: Path) -> Dict[str, Dict[str, str]]:
    """{split: {file: reason}} of a list (a file met twice, by two processes or attempts, counts once)."""
    out: Dict[str, Dict[str, str]] = {}
    for line in listing.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and line != _HEADER:
            out.setdefault(parts[0], {}).setdefault(parts[1], parts[2])
    return out


def naming(refused: Mapping[str, str], relative_to: Optional[str] = None, limit: int = NAMED_IN_LINE) -> str:
    """'a.jpg (reason), b.png (reason)[, and N more]' for a summary line."""
    def shown(p: str) -> str:
        return printable(os.path.relpath(p, relative_to) if relative_to else p)

    items: Iterable[str] = (f"{shown(p)} ({r})" for p, r in sorted(refused.items())[:limit])
    more = len(refused) - limit
    return ", ".join(items) + (f", and {more} more" if more > 0 else "")
