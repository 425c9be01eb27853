"""`rlhaif reward train`: preference pairs -> a Bradley–Terry reward model, held-out report, normalization.

The loop reads top to bottom: load pairs -> build the model -> for each optimizer step: encode the
micro-batch as ``[chosen; rejected]`` (one forward), ``bradley_terry_loss``, backward -> step -> log ->
checkpoint. Then normalization over a reference set and the held-out report (eval.json) beside the model.
Data order is a seeded permutation per epoch, so a resumed run skips exactly the batches it consumed.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from rlhaif.config import TrainLoopConfig
from rlhaif.training import epoch_order
from rlhaif.data.records import PairRecord
from rlhaif.errors import ConfigError, DataError


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


# -- data -------------------------------------------------------------------------------------------------

def parse_lines(spec: str | None, field: str) -> tuple[int, int] | None:
    """ "1-1500" -> (1, 1500); None -> None."""
    if spec is None:
        return None
    try:
        a, b = (int(x) for x in str(spec).split("-"))
        assert 1 <= a <= b
    except Exception:
        raise ConfigError(f"{field}: expected a 1-based line range like '1-1500', got '{spec}'") from None
    return a, b


def load_pairs(path: str, lines: tuple[int, int] | None = None) -> list[PairRecord]:
    """Pairs of any supported format (detected from the first record), optionally one range of lines.
    hh-rlhf records that do not parse (empty last reply, a turn marker without its blank line: a handful exist
    in the public data) are skipped, as ``read_hh_rlhf(skip_invalid=True)`` does."""
    from rlhaif.data.formats import hh_to_pair, pairs_format, trl_to_pair
    from rlhaif.data.io import parse_record, read_jsonl

    out: list[PairRecord] = []
    kind = None
    for lineno, obj in read_jsonl(path):
        if kind is None:
            kind = pairs_format(obj)
        if lines is not None and not lines[0] <= lineno <= lines[1]:
            continue
        if kind == "hh":
            try:
                out.append(hh_to_pair(obj, str(path), lineno))
            except DataError:  # read_hh_rlhf(skip_invalid=True) semantics: malformed public records are dropped
                pass
        elif kind == "trl":
            out.append(trl_to_pair(obj, str(path), lineno))
        else:
            out.append(parse_record(PairRecord, obj, str(path), lineno))
    if not out:
        raise DataError(str(path), None, None, "no preference pairs found" + (f" in lines {lines}" if lines else ""))
    return out


# -- the loop ---------------------------------------------------------------------------------------------

def run_reward_train(config: RewardTrainConfig) -> dict[str, Any]:
    """Train the reward model; write it, reward_normalization.json, eval.json and metrics.jsonl to
    ``config.output_dir``. Returns the held-out report (plus ``steps``)."""
    from rlhaif.metrics import MetricsLogger
    from rlhaif.reward.evaluate import compute_normalization, evaluate_pairs
    from rlhaif.reward.losses import bradley_terry_loss
    from rlhaif.reward.model import build_reward_model
    from rlhaif.training import make_accelerator, micro_batches, save_checkpoint, seed_everything, start_loop

    cfg = config
    out = Path(cfg.output_dir)
    pairs = load_pairs(cfg.data, parse_lines(cfg.data_lines, "data_lines"))
    if cfg.eval_data:
        eval_pairs = load_pairs(cfg.eval_data, parse_lines(cfg.eval_lines, "eval_lines"))
    elif cfg.eval_fraction > 0:
        if not 0 < cfg.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must lie in [0, 1), got {cfg.eval_fraction}")
        order = epoch_order(len(pairs), cfg.seed, -1)
        n_eval = max(1, int(round(len(pairs) * cfg.eval_fraction)))
        eval_pairs = [pairs[i] for i in order[:n_eval]]
        pairs = [pairs[i] for i in sorted(order[n_eval:])]
    else:
        eval_pairs = []
    if not pairs:
        raise DataError(cfg.data, None, None, "no training pairs left after holding out the evaluation share")

    seed_everything(cfg.seed)
    rm = build_reward_model(cfg.backbone, cfg.max_length, cfg.truncation_side, cfg.text_format)
    acc = make_accelerator(1, cfg.mixed_precision, cfg.log_with, out)  # accumulation is done by hand below
    lengths = None
    if cfg.group_by_length:  # a pair's length is its longer side: chosen and rejected share one padded batch
        prompts = [p.prompt for p in pairs]
        lengths = [max(a, b) for a, b in zip(rm.token_lengths(prompts, [p.chosen for p in pairs]),
                                             rm.token_lengths(prompts, [p.rejected for p in pairs]))]
    micros = micro_batches(len(pairs), cfg.batch_size, cfg.epochs, cfg.seed, lengths)
    model, optimizer, scheduler, per_step, total_steps, step = start_loop(rm.model, cfg, acc, len(micros), out,
                                                                          "rlhaif-reward")

    model.train()
    with MetricsLogger(out, total_steps, "reward", acc, show=("rm/loss", "rm/accuracy")) as log:
        if step:
            log._progress and log._progress.update(log._task, completed=step)
        while step < total_steps:
            mine = micros[step * per_step:(step + 1) * per_step][acc.process_index::acc.num_processes]
            stats_sum: dict[str, float] = {}
            for i, idx in enumerate(mine):
                batch_pairs = [pairs[j] for j in idx]
                prompts = [p.prompt for p in batch_pairs]
                # [chosen; rejected] in one forward: rows 0..B-1 are chosen, B..2B-1 rejected.
                enc = rm.encode(prompts + prompts, [p.chosen for p in batch_pairs] + [p.rejected for p in batch_pairs])
                enc = {k: v.to(acc.device) for k, v in enc.items()}
                sync = i == len(mine) - 1
                with contextlib.nullcontext() if sync else acc.no_sync(model):
                    rewards = rm.rewards(enc, model)  # (2B,)
                    B = len(batch_pairs)
                    tensor = lambda vals: torch.tensor(vals, dtype=torch.float32, device=acc.device)
                    loss, stats = bradley_terry_loss(
                        rewards[:B], rewards[B:], p=tensor([p.p for p in batch_pairs]),
                        margin=tensor([p.margin for p in batch_pairs]) if cfg.use_margin else None,
                        weights=tensor([p.weight for p in batch_pairs]), center_coef=cfg.center_coef)
                    acc.backward(loss / len(mine))
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + v / len(mine)
            grad_norm = acc.clip_grad_norm_(model.parameters(), float("inf"))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.log(step, {**stats_sum, "train/grad_norm": float(grad_norm), "train/lr": scheduler.get_last_lr()[0],
                           "train/epoch": step * per_step * cfg.batch_size / len(pairs)})
            if (cfg.save_steps and step % cfg.save_steps == 0) or step == total_steps:
                save_checkpoint(out, step, model, optimizer, scheduler, {"epoch_pairs": len(pairs)}, acc)

    rm.model = acc.unwrap_model(model)
    rm.model.eval()
    if cfg.normalize:
        prompts, responses = _reference_texts(cfg, pairs)
        rm.mean, rm.std = compute_normalization(rm, prompts, responses)
    report: dict[str, Any] = {"steps": step, "train_pairs": len(pairs), "eval_pairs": len(eval_pairs)}
    if eval_pairs:
        report.update(evaluate_pairs(rm, eval_pairs, batch_size=2 * cfg.batch_size))
    if acc.is_main_process:
        rm.save(out)
        from rlhaif.data.io import atomic_write
        import json

        with atomic_write(out / "eval.json") as f:
            f.write(json.dumps(report, indent=2))
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    acc.end_training()
    return report


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
