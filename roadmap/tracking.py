"""Weights & Biases, offline by default: no network and no API key needed (`wandb sync` later).

Project/group/name/tags come from the regime, sweep, step and seed; the config is the resolved
container plus the step's index on the roadmap, so W&B tables sort in roadmap order.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from .config import to_container
from .steps import step_info

log = logging.getLogger("roadmap")


def run_identity(cfg: DictConfig) -> Dict[str, Any]:
    info = step_info(cfg.step)
    group = cfg.sweep_id or f"{cfg.data.name}-{cfg.scale.name}-{cfg.regime.name}"
    return {
        "project": cfg.logger.project, "entity": cfg.logger.entity, "group": cfg.logger.group or group,
        "name": f"{info['index']:02d}-{cfg.step}-s{cfg.seed}",
        "tags": [cfg.regime.name, cfg.step, cfg.scale.name, cfg.data.name, info["group"], *cfg.logger.tags],
        "job_type": "branch" if info["branch"] else "path",
    }


class Tracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, enabled: bool = True):
        self.cfg, self.run_dir = cfg, run_dir
        self.enabled = enabled and cfg.logger.name == "wandb" and cfg.logger.mode != "disabled"
        self.run: Optional[Any] = None

    def start(self) -> None:
        if not self.enabled or self.run is not None:
            return
        import wandb

        ident = run_identity(self.cfg)
        config = to_container(self.cfg)
        config["step_index"] = step_info(self.cfg.step)["index"]
        run_id = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:12]
        wdir = Path(self.cfg.logger.dir or self.run_dir)
        wdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=ident["project"], entity=ident["entity"], group=ident["group"],
                              name=ident["name"], tags=ident["tags"], job_type=ident["job_type"],
                              config=config, mode=self.cfg.logger.mode, dir=str(wdir), id=run_id,
                              resume="allow", reinit="finish_previous",
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def log(self, row: Dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, values: Dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as e:  # never hide the run's own outcome behind a logging failure
                log.warning("wandb.finish failed: %s", e)
            self.run = None


def read_offline_run(path: Path | str) -> Dict[str, Dict[str, Any]]:
    """Config and summary stored in an offline W&B run (`wandb/offline-run-*/run-*.wandb`).

    The file is W&B's record log (LevelDB log format: 32 KiB blocks of records with a
    crc/length/type header; a 7-byte ':W&B' file header) of protobuf `Record`s. Recent wandb
    versions keep the summary only there until `wandb sync`, so tests and users read it here.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        path = next(path.glob("run-*.wandb"))
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run log")
    block, pos, parts, payloads = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding at the end of the file
            break
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: one record is complete
            payloads.append(b"".join(parts))
            parts = []
    config: Dict[str, Any] = {}
    summary: Dict[str, Any] = {}
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        items = {"run": lambda: record.run.config.update, "config": lambda: record.config.update,
                 "summary": lambda: record.summary.update}.get(kind)
        if items is None:
            continue
        target = summary if kind == "summary" else config
        for item in items():
            target[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"config": config, "summary": summary}
