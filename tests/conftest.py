import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
# Under pytest-xdist (`make test`: one worker per core, whole files per worker) the cores are split
# between the workers, and the runs a test starts in a subprocess inherit the share through
# OMP_NUM_THREADS: never more threads than cores (two oversubscribed OpenMP pools run ~10x slower).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ROADMAP_DATA", REPO.parent / "shared" / "data")) / "imagenette"


@pytest.fixture(autouse=True)
def _isolated_process_state():
    """What one test sets in this process does not leak into the next: torch's thread count (the bench
    sets it), and W&B's service address. An in-process wandb run exports WANDB_SERVICE, and every
    process a later test starts would inherit it and talk to this process's W&B service instead of
    its own (a subprocess's offline run then came out without its run-*.wandb file)."""
    os.environ.pop("WANDB_SERVICE", None)
    yield
    torch.set_num_threads(THREADS)
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture(scope="session")
def imagenette() -> Path:
    if not (DATA / "train").is_dir():
        pytest.skip(f"Imagenette not found at {DATA} (see ../shared/data/README.md)")
    return DATA
