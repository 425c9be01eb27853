"""`rlhaif reward train`: preference pairs -> a Bradley–Terry reward model, held-out report, normalization.

The loop reads top to bottom: load pairs -> build the model -> ``rlhaif.training.train_steps`` (each
micro-batch encoded as ``[chosen; rejected]``, one forward, ``bradley_terry_loss``, backward -> clip -> step ->
log -> checkpoint). Then normalization over a reference set and the held-out report (eval.json) beside the model.
Data order is a seeded permutation per epoch, so a resumed run skips exactly the batches it consumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from rlhaif.config import TrainLoopConfig
from rlhaif.data.records import PairRecord
from rlhaif.errors import ConfigError, DataError
from rlhaif.reward.pairs import load_pairs, parse_lines
from rlhaif.training import TrainResult, epoch_order


class RewardTrainConfig(TrainLoopConfig):
    """Settings of `rlhaif reward train`."""

    data: str
    """Training pairs: rlhaif pairs.jsonl, TRL preference rows (standard or conversational) or hh-rlhf (.gz ok)."""
    data_lines: Optional[str] = None
    """Use only these 1-based lines of `data`, e.g. "1-1500" (splits one file by line number)."""
    eval_data: Optional[str] = None
    """Held-out pairs for eval.json (any format `data` accepts). Unset: hold out `eval_fraction` of `data`."""
    eval_lines: Optional[str] = None
    """Use only these 1-based lines of `eval_data`, e.g. "1501-1800"."""
    eval_fraction: float = 0.1
    """Share of `data` held out (seeded) when `eval_data` is unset; 0 = no held-out report."""
    output_dir: str = "runs/reward"
    """The reward model folder (save_pretrained + reward_config.json + normalization + eval.json + metrics)."""
    backbone: str = "minilm-l6"
    """Built-in name, model folder or saved reward model: any AutoModelForSequenceClassification backbone."""
    text_format: Optional[Literal["pair", "chat"]] = None
    """How text becomes tokens: 'pair' (encoder: prompt [SEP] response) or 'chat' (causal LM chat template).
    Unset: 'pair' for encoders, 'chat' otherwise."""
    max_length: int = 256
    """Tokens per (prompt, response); longer texts are cut (longest part first)."""
    truncation_side: Literal["left", "right"] = "left"
    """Encoders: 'left' cuts the prompt's oldest tokens (keeps the latest turns) and the response's end;
    'right' cuts the end of both. The response keeps at least half of `max_length`."""
    batch_size: int = 16
    """Pairs per micro-batch (2x this many sequences go through the model in one forward)."""
    group_by_length: bool = True
    """Batch pairs of similar token length together (within windows of 64 batches, batch order shuffled):
    less padding, so less compute on data of mixed lengths such as hh-rlhf; False = plain seeded shuffle."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate (linear warm-up, then linear decay to 0)."""
    max_grad_norm: float = 0.0
    """Gradient clipping by global norm (0 = off; the norm is logged either way)."""
    center_coef: float = 0.0
    """η of the centering term η·mean((r_c + r_r)²); 1e-2 is TRL's suggestion; 0 = off."""
    use_margin: bool = True
    """Use each pair's `margin` field (Llama 2): the logit becomes r_c − r_r − m."""
    normalize: bool = True
    """Store mean/std of raw scores over a reference set (reward_normalization.json) so score() is ~N(0,1)."""
    normalize_on: Optional[str] = None
    """Reference file for normalization (pairs or completions); unset: the training pairs' responses."""
    normalize_samples: int = 1000
    """Most responses scored for the normalization statistics."""
    ensemble: int = 1
    """Members of a reward-model ensemble (Coste et al. 2023): N > 1 trains N reward models with seeds seed,
    seed + 1, ... (each its own head initialization and data order; one held-out split, made with `seed`) into
    output_dir/member-<m>, and writes output_dir/ensemble.json, which makes the folder a scorer
    (``ensemble:PATH[:mean|:mean_minus_std[:ALPHA]|:min]``, or the bare folder: the mean)."""


@dataclass(frozen=True)
class RewardTrainResult(TrainResult):
    """What `rlhaif reward train` made (also its manifest's ``outputs``); ``model`` is ``output_dir``, the
    reward model folder; ``metrics``: ``rm/*``, ``train/*``."""

    train_pairs: int
    eval_pairs: int
    eval: dict[str, Any]
    """eval.json: ``steps``, ``train_pairs``, ``eval_pairs`` and, with held-out pairs, their ``pair_metrics``
    (``accuracy``, ``n_decided``, ``mean_margin``, ``mean_margin_normalized``, ``ece``, ``calibration``);
    for an ensemble, ``accuracy`` is the members' mean."""
    members: Optional[tuple["RewardTrainResult", ...]] = None
    """An ensemble's members (``ensemble`` > 1), each a reward model of its own in ``member-<m>``."""


# -- the loop ---------------------------------------------------------------------------------------------

def run_reward_train(config: RewardTrainConfig, split_seed: Optional[int] = None) -> RewardTrainResult:
    """Train the reward model; write it, reward_normalization.json, eval.json and metrics.jsonl to
    ``config.output_dir`` (the model folder itself). ``ensemble`` > 1: ``run_reward_ensemble``.
    ``split_seed`` seeds the held-out split (default ``seed``)."""
    if config.ensemble > 1:
        return run_reward_ensemble(config)
    if config.ensemble < 1:
        raise ConfigError(f"ensemble must be at least 1 (the number of reward models), got {config.ensemble}")
    from rlhaif.metrics import MetricsLogger
    from rlhaif.reward.evaluate import compute_normalization, evaluate_pairs
    from rlhaif.reward.losses import bradley_terry_loss
    from rlhaif.reward.model import build_reward_model
    from rlhaif.training import finish_run, make_accelerator, micro_batches, seed_everything, start_loop, train_steps

    t0 = time.time()
    cfg = config
    out = Path(cfg.output_dir)
    pairs = load_pairs(cfg.data, parse_lines(cfg.data_lines, "data_lines"))
    if cfg.eval_data:
        eval_pairs = load_pairs(cfg.eval_data, parse_lines(cfg.eval_lines, "eval_lines"))
    elif cfg.eval_fraction > 0:
        if not 0 < cfg.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must lie in [0, 1), got {cfg.eval_fraction}")
        order = epoch_order(len(pairs), cfg.seed if split_seed is None else split_seed, -1)
        n_eval = max(1, int(round(len(pairs) * cfg.eval_fraction)))
        eval_pairs = [pairs[i] for i in order[:n_eval]]
        pairs = [pairs[i] for i in sorted(order[n_eval:])]
    else:
        eval_pairs = []
    if not pairs:
        raise DataError(cfg.data, None, None, "no training pairs left after holding out the evaluation share")

    seed_everything(cfg.seed)
    rm = build_reward_model(cfg.backbone, cfg.max_length, cfg.truncation_side, cfg.text_format)
    acc = make_accelerator(1, cfg.mixed_precision, cfg.log_with, out)  # accumulation is done by train_steps
    lengths = None
    if cfg.group_by_length:  # a pair's length is its longer side: chosen and rejected share one padded batch
        prompts = [p.prompt for p in pairs]
        lengths = [max(a, b) for a, b in zip(rm.token_lengths(prompts, [p.chosen for p in pairs]),
                                             rm.token_lengths(prompts, [p.rejected for p in pairs]))]
    micros = micro_batches(len(pairs), cfg.batch_size, cfg.epochs, cfg.seed, lengths)
    loop = start_loop(rm.model, cfg, acc, len(micros), "reward")

    def micro_loss(idx: list[int], step_batches: list[list[int]]) -> tuple[torch.Tensor, dict[str, float]]:
        batch_pairs = [pairs[j] for j in idx]
        prompts = [p.prompt for p in batch_pairs]
        # [chosen; rejected] in one forward: rows 0..B-1 are chosen, B..2B-1 rejected.
        enc = rm.encode(prompts + prompts, [p.chosen for p in batch_pairs] + [p.rejected for p in batch_pairs])
        scores = rm.forward_scores({k: v.to(acc.device) for k, v in enc.items()}, loop.model)  # (2B,) raw
        B = len(batch_pairs)
        tensor = lambda vals: torch.tensor(vals, dtype=torch.float32, device=acc.device)  # noqa: E731
        loss, stats = bradley_terry_loss(
            scores[:B], scores[B:], p=tensor([p.p for p in batch_pairs]),
            margin=tensor([p.margin for p in batch_pairs]) if cfg.use_margin else None,
            weights=tensor([p.weight for p in batch_pairs]), center_coef=cfg.center_coef)
        n = len(step_batches)  # the step's loss and stats: means over its micro-batches
        return loss / n, {k: v / n for k, v in stats.items()}

    with MetricsLogger(out, loop.total_steps, "reward", acc, show=("rm/loss", "rm/accuracy"),
                       start_step=loop.step) as log:
        row = train_steps(loop, cfg, micros, len(pairs), micro_loss, log)

    rm.model = acc.unwrap_model(loop.model)
    rm.model.eval()
    if cfg.normalize:
        prompts, responses = _reference_texts(cfg, pairs)
        rm.mean, rm.std = compute_normalization(rm, prompts, responses)
    report: dict[str, Any] = {"steps": loop.step, "train_pairs": len(pairs), "eval_pairs": len(eval_pairs)}
    if eval_pairs:
        report.update(evaluate_pairs(rm, eval_pairs, batch_size=2 * cfg.batch_size))
    if acc.is_main_process:
        rm.save(out)
        from rlhaif.data.io import atomic_write
        import json

        with atomic_write(out / "eval.json") as f:
            f.write(json.dumps(report, indent=2))
    result = finish_run("reward", cfg, RewardTrainResult(output_dir=str(out), model=str(out), metrics=row,
                                                         steps=loop.step, train_pairs=len(pairs),
                                                         eval_pairs=len(eval_pairs), eval=report), t0, acc)
    acc.end_training()
    return result


def run_reward_ensemble(cfg: RewardTrainConfig) -> RewardTrainResult:
    """Train ``cfg.ensemble`` reward models, member m with seed ``seed + m`` into ``output_dir/member-<m>`` (the
    held-out split is the same for all: seeded by ``seed``), then write ``output_dir/ensemble.json`` (members,
    seeds, held-out accuracies) and the stage manifest. The result's ``model`` is output_dir (the ensemble
    folder, a scorer), ``members`` each member's result and ``eval['accuracy']`` the members' mean."""
    import json

    from rlhaif.data.io import atomic_write
    from rlhaif.manifest import write_stage_manifest
    from rlhaif.scorers import ENSEMBLE_MANIFEST

    t0 = time.time()
    out = Path(cfg.output_dir)
    members = []
    for m in range(cfg.ensemble):
        member = cfg.model_copy(update={"ensemble": 1, "seed": cfg.seed + m, "output_dir": str(out / f"member-{m}")})
        members.append(run_reward_train(member, split_seed=cfg.seed))
    accuracy = [r.eval.get("accuracy") for r in members]
    manifest = {"members": [f"member-{m}" for m in range(cfg.ensemble)],
                "seeds": [cfg.seed + m for m in range(cfg.ensemble)], "accuracy": accuracy}
    with atomic_write(out / ENSEMBLE_MANIFEST) as f:
        f.write(json.dumps(manifest, indent=2))
    known = [a for a in accuracy if a is not None]
    first = members[0]
    result = RewardTrainResult(output_dir=str(out), model=str(out), metrics=first.metrics,
                               steps=sum(r.steps for r in members), train_pairs=first.train_pairs,
                               eval_pairs=first.eval_pairs,
                               eval={"accuracy": sum(known) / len(known) if known else None, "member_accuracy": accuracy},
                               members=tuple(members))
    write_stage_manifest("reward", cfg, result, wall_time_s=round(time.time() - t0, 1))
    return result


def _reference_texts(cfg: RewardTrainConfig, pairs: list[PairRecord]) -> tuple[list, list[str]]:
    """(prompts, responses) the normalization statistics are computed over (at most normalize_samples)."""
    if cfg.normalize_on:
        from rlhaif.data.io import parse_record, read_jsonl
        from rlhaif.data.records import CompletionRecord

        prompts, responses = [], []
        for lineno, obj in read_jsonl(cfg.normalize_on):
            if "response" in obj:  # completions
                rec = parse_record(CompletionRecord, {"prompt_id": str(lineno), **obj}, cfg.normalize_on, lineno)
                prompts.append(rec.prompt)
                responses.append(rec.response)
            else:
                for pr in load_pairs(cfg.normalize_on):
                    prompts += [pr.prompt, pr.prompt]
                    responses += [pr.chosen, pr.rejected]
                break
        if not responses:
            raise DataError(cfg.normalize_on, None, None, "no responses found for the normalization statistics")
    else:
        prompts = [p.prompt for p in pairs for _ in (0, 1)]
        responses = [r for p in pairs for r in (p.chosen, p.rejected)]
    if len(responses) > cfg.normalize_samples:
        keep = sorted(epoch_order(len(responses), cfg.seed, -2)[:cfg.normalize_samples])
        prompts, responses = [prompts[i] for i in keep], [responses[i] for i in keep]
    return prompts, responses
