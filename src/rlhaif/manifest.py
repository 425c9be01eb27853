"""Stage manifests: ``manifest.json`` beside a stage's outputs (config, input hashes, versions, seed, time).

A stage whose manifest matches (same config and input hashes) is skipped on re-run; the manifest is
written last, so its presence means the stage finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhaif.data.io import atomic_write

MANIFEST = "manifest.json"
_PACKAGES = ("rlhaif", "torch", "transformers", "peft", "accelerate")


def hash_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            h.update(str(f.relative_to(path)).encode())
            h.update(hash_path(f).encode())
    elif path.exists():
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(f"missing:{path}".encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def fingerprint(stage: str, config: dict[str, Any], inputs: dict[str, str | os.PathLike | None]) -> dict[str, Any]:
    """What decides whether a finished stage can be reused: its config and the hashes of its inputs."""
    return {"stage": stage, "config": config,
            "inputs": {k: (hash_path(v) if v and Path(str(v)).exists() else str(v)) for k, v in inputs.items()}}


def write_manifest(out_dir: str | os.PathLike, fp: dict[str, Any], seed: int | None = None,
                   wall_time_s: float | None = None, outputs: dict[str, Any] | None = None) -> Path:
    path = Path(out_dir) / MANIFEST
    body = {**fp, "seed": seed, "wall_time_s": wall_time_s, "outputs": outputs or {}, "versions": versions()}
    with atomic_write(path) as f:
        json.dump(body, f, indent=2, default=str)
    return path


def manifest_matches(out_dir: str | os.PathLike, fp: dict[str, Any]) -> bool:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return all(json.dumps(old.get(k), sort_keys=True, default=str) == json.dumps(fp[k], sort_keys=True, default=str)
               for k in ("stage", "config", "inputs"))


def config_inputs(value: Any, exclude: Path) -> dict[str, str]:
    """Existing files and folders named by a config's string values (not the stage's own output folder)."""
    found: dict[str, str] = {}

    def walk(v: Any, key: str) -> None:
        if isinstance(v, str) and v and len(v) < 4096:
            # a path, or a path inside 'kind:path' / 'file.py:function' (e.g. reward_model:runs/x/gold_rm)
            for cand in (v, *v.split(":", 1)) if ":" in v else (v,):
                if cand and Path(cand).exists():
                    p = Path(cand).resolve()
                    if p != exclude and exclude not in p.parents and p not in exclude.parents:
                        found[key] = cand
                    break
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{key}.{k}" if key else k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{key}[{i}]")

    walk(value, "")
    return found


def stage_fingerprint(stage: str, cfg) -> dict[str, Any]:
    """The fingerprint of a stage config (a StageConfig with ``output_dir``): its settings and the hashes of
    every existing file or folder they name outside its own output folder. The runner and a stage run
    alone compute it the same way, so a standalone run's manifest also lets a recipe skip it."""
    config = cfg.model_dump(mode="json")
    return fingerprint(stage, config, config_inputs(config, Path(cfg.output_dir).resolve()))


def stage_outputs(result: Any) -> dict[str, Any]:
    """What a stage returned, as the JSON object its manifest keeps under ``outputs`` (what a recipe's
    ``${name.key}`` reads): a stage's result record (a frozen dataclass beside the stage) field by field, or
    a mapping as it is (a ``module:function`` stage of your own may return one); None gives {}."""
    if result is None:
        return {}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    return json.loads(json.dumps(dict(result), default=str))


def write_stage_manifest(stage: str, cfg, result: Any = None, wall_time_s: float | None = None) -> Path | None:
    """What every stage calls last, alone or in a recipe: ``manifest.json`` in ``cfg.output_dir`` with the
    stage's ``result`` as its ``outputs`` (``stage_outputs``); main process only (returns None elsewhere)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return write_manifest(cfg.output_dir, stage_fingerprint(stage, cfg), seed=getattr(cfg, "seed", None),
                          wall_time_s=wall_time_s, outputs=stage_outputs(result))
