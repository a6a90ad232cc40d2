"""`python -m roadmap.timm_train /path/to/train.py [train.py args]`: timm's training script with every
roadmap step in timm's registry (`--model roadmap_<step>`, `roadmap200_<step>`).

    python -m roadmap.timm_train ~/timm/train.py --data-dir DIR --model roadmap_kernel_7 --model-kwargs width_mult=0.25
    torchrun --nproc_per_node=8 -m roadmap.timm_train ~/timm/train.py ...      # one process per GPU

It imports `roadmap` (which registers the steps with timm), then runs the script as `python train.py
...` would: as `__main__`, with its own arguments in sys.argv and its folder first on sys.path. timm's
wheel has no train.py: take it from the timm repository (the commit `python -m roadmap.timm_command`
names). `$TIMM_TRAIN` stands in for the path when the first argument is not a .py file.
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple


def script_and_args(argv: Sequence[str]) -> Tuple[Path, list]:
    argv = list(argv)
    if argv and argv[0].endswith(".py"):
        return Path(argv[0]), argv[1:]
    if os.environ.get("TIMM_TRAIN"):
        return Path(os.environ["TIMM_TRAIN"]), argv
    raise SystemExit("error: give the path of timm's train.py first (or set $TIMM_TRAIN); it is not in timm's "
                     "wheel: take it from github.com/huggingface/pytorch-image-models")


def main(argv: Optional[Sequence[str]] = None) -> None:
    script, args = script_and_args(sys.argv[1:] if argv is None else argv)
    if not script.is_file():
        raise SystemExit(f"error: {script} does not exist; allowed: the path of timm's train.py")
    import roadmap  # noqa: F401  (registers roadmap_<step> / roadmap200_<step> with timm)

    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.resolve().parent))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
