"""The pairs stage: gather preference feedback from files of any supported format (rlhaif pairs.jsonl from
people or an AI judge, TRL, hh-rlhf), take up to `limit` from each, and write one pairs.jsonl (how the recipes
feed a reward model or DPO, and how the CAI recipe mixes AI and human labels)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rlhaif.config import StageConfig


class PairsConfig(StageConfig):
    """Settings of the pairs stage (`stage: pairs` in a recipe)."""

    inputs: list[str]
    """Preference files, read with rlhaif.data.formats.read_pairs (format auto-detected)."""
    output_dir: str
    """Folder for pairs.jsonl and manifest.json."""
    limit: Optional[int] = None
    """Take at most this many pairs from each input (in file order)."""
    source: Optional[str] = None
    """Set the 'source' field of pairs that have none."""
    skip_invalid: bool = False
    """Drop hh-rlhf records whose last replies are empty (a handful exist in the public data)."""


@dataclass(frozen=True)
class PairsResult:
    """What the pairs stage made (also its manifest's ``outputs``)."""

    pairs: str
    """The pairs.jsonl written."""
    n_pairs: int
    per_input: dict[str, int]
    """Pairs taken from each input file."""


def run_pairs(cfg: PairsConfig) -> PairsResult:
    """Write <output_dir>/pairs.jsonl."""
    from rlhaif.data.formats import file_pairs_format, read_hh_rlhf, read_pairs
    from rlhaif.data.io import write_records
    from rlhaif.manifest import write_stage_manifest

    t0 = time.time()
    pairs, counts = [], {}
    for path in cfg.inputs:
        if file_pairs_format(path) == "hh":  # stop reading at the limit: hh-rlhf files are large
            got = read_hh_rlhf(path, cfg.limit, cfg.skip_invalid)
        else:
            got = read_pairs(path, cfg.skip_invalid)[: cfg.limit]
        counts[path] = len(got)
        for p in got:
            if cfg.source and not p.source:
                p.source = cfg.source
        pairs += got
    out = Path(cfg.output_dir) / "pairs.jsonl"
    write_records(out, pairs)
    result = PairsResult(pairs=str(out), n_pairs=len(pairs), per_input=counts)
    write_stage_manifest("pairs", cfg, result, wall_time_s=round(time.time() - t0, 2))
    return result
