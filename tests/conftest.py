import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ROADMAP_DATA", REPO.parent / "shared" / "data")) / "imagenette"


@pytest.fixture(scope="session")
def imagenette() -> Path:
    if not (DATA / "train").is_dir():
        pytest.skip(f"Imagenette not found at {DATA} (see ../shared/data/README.md)")
    return DATA
