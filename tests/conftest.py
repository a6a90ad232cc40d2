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
def _thread_share():
    """A test that sets torch's thread count (the bench does) does not leak it into the next test."""
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def imagenette() -> Path:
    if not (DATA / "train").is_dir():
        pytest.skip(f"Imagenette not found at {DATA} (see ../shared/data/README.md)")
    return DATA
