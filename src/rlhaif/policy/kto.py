"""KTO's data for the DPO loop: unpaired rows laid out as the loop's ``[chosen; rejected]`` pairs.

The DPO stage trains KTO (``loss: kto``) with its own loop, reference handling and cache. Each unpaired row
(x_i, y_i, label) becomes one ``PairRecord`` whose ``chosen`` is y_i and whose ``rejected`` is the response
of another row, y_j, on the same prompt x_i: the mismatched (x, y) pair from which ``kto_loss`` estimates the
reference point z_ref = KL(π_θ‖π_ref). ``p`` carries the label (1 desirable, 0 undesirable), ``weight`` the
row's weight. The partner j is fixed at load time — the next row in a seeded permutation — so the
reference log-probabilities of both rows can be precomputed once like DPO's; a micro-batch's z_ref is the
mean over its own rows' mismatched pairs.
"""

from __future__ import annotations

import random

from rlhaif.data.records import PairRecord, UnpairedRecord


def kto_pairs(rows: list[UnpairedRecord], seed: int = 0) -> list[PairRecord]:
    """Rows (in order) with their KL partner: row i's ``rejected`` is the completion of the row after it in
    a seeded permutation (a single row is its own partner)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    partner = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}
    return [PairRecord(prompt=r.prompt, chosen=r.completion, rejected=rows[partner[i]].completion,
                       p=1.0 if r.label else 0.0, weight=r.weight, source=r.source, id=r.id)
            for i, r in enumerate(rows)]
