"""What both loader paths share: the epoch-aware sampler, the `Data` bundle the train loop takes,
and the side of the prepared cache's images.

`roadmap.data` builds the base datasets (folders, the prepared cache, CIFAR, random pixels) and
the CPU loaders (timm's transforms in worker processes); `roadmap.device_data` builds loaders that
augment whole batches on the training device. `roadmap.data.build_data` chooses between them, so
`data` imports `device_data`, and both import this module (never each other the other way round).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch.utils.data import DataLoader, Sampler

from .images import read_refused


def cache_size_for(img_size: int, crop_pct: float) -> int:
    """The side the cache stores: timm's eval resize (img_size / crop_pct), so eval is a centre
    crop of it and training crops have the same margin."""
    return int(math.floor(img_size / crop_pct))


class EpochSampler(Sampler):
    """Yields (index, epoch): shuffled by (seed, epoch), sharded across ranks (padded to equal length)."""

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1, pad: bool = True):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.pad = n, seed, shuffle, rank, world, pad
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Next iteration: epoch `epoch`'s order without its first `skip` samples (this rank's), so a
        run resumed inside an epoch sees exactly the batches an uninterrupted run would."""
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.pad and self.world > 1:
            total = math.ceil(self.n / self.world) * self.world
            idx = idx + idx[: total - self.n]
        return idx[self.rank::self.world][self.skip:]

    def __len__(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(i, self.epoch) for i in self._indices()])


@dataclass
class Data:
    """Everything the train loop needs: the loaders, the train sampler (for set_epoch), the classes."""
    train: DataLoader
    val: DataLoader
    train_sampler: EpochSampler
    num_classes: int
    classes: List[str]
    info: Dict[str, Any]

    def skipped_by_split(self) -> Dict[str, int]:
        """Refused image files per split: the run's list (roadmap.images; every loader process and rank,
        every attempt, each file once) where there is one, else what the base datasets know."""
        listing = self.info.get("refused_list")
        if listing and Path(listing).exists():
            listed = read_refused(Path(listing))
            return {split: len(listed.get(split, {})) for split in ("train", "val")}
        return {"train": _skipped(self.train), "val": _skipped(self.val)}

    @property
    def skipped_files(self) -> int:
        return sum(self.skipped_by_split().values())


def _skipped(loader: Any) -> int:
    base = getattr(loader, "base", None)  # a DeviceLoader's; a DataLoader's is its Augmented dataset's
    base = loader.dataset.base if base is None else base
    return int(getattr(base, "skipped_files", 0))
