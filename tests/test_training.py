"""The shared optimizer: fused AdamW where torch has the kernel, same updates as the reference AdamW, and the
warm-up / linear-decay schedule by hand; the shared step loop of SFT, reward model and DPO averages its
logged stats over processes."""

import pytest
import torch

from rlhaif.training import make_optimizer


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))


def test_cpu_float_model_gets_the_fused_kernel_and_frozen_parameters_are_left_out():
    model = _model()
    model[0].bias.requires_grad_(False)
    opt, _ = make_optimizer(model, 1e-3)
    assert opt.param_groups[0]["fused"] is True
    assert sum(len(g["params"]) for g in opt.param_groups) == 3


def test_fused_updates_equal_torch_reference_adamw():
    ours, ref = _model(), _model()
    opt, _ = make_optimizer(ours, 1e-2, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    x, y = torch.randn(8, 6), torch.randn(8, 1)
    for _ in range(5):
        for m, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    moved = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), _model().parameters()))
    assert moved > 1e-3  # the parameters did move
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("warmup,total,expected", [
    (0, 4, [1.0, 0.75, 0.5, 0.25, 0.0]),  # linear decay to 0 over total steps
    (2, 6, [0.5, 1.0, 1.0, 0.75, 0.5]),  # (s+1)/warm-up, then (total - s)/(total - warm-up)
    (0, None, [1.0, 1.0, 1.0]),  # constant
])
def test_schedule_by_hand(warmup, total, expected):
    opt, sched = make_optimizer(_model(), 2.0, warmup_steps=warmup, total_steps=total)
    got = []
    for _ in expected:
        got.append(opt.param_groups[0]["lr"] / 2.0)
        opt.step()
        sched.step()
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("lora", [False, True])
def test_activation_checkpointing_is_switched_on_and_keeps_the_gradients(lora):
    from rlhaif.models.loading import add_lora
    from rlhaif.models.tiny import make_tiny_causal_lm
    from rlhaif.training import enable_activation_checkpointing

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model, _ = make_tiny_causal_lm("llama", seed=0)
        if lora:
            model = add_lora(model, r=4, alpha=8)
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
        if checkpointing:
            enable_activation_checkpointing(model)
            assert any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
        model.train()
        ids = torch.randint(3, 50, (2, 12), generator=torch.Generator().manual_seed(1))
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and plain
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6)


def test_activation_checkpointing_on_a_model_without_support_is_a_config_error():
    from rlhaif.errors import ConfigError
    from rlhaif.training import enable_activation_checkpointing

    with pytest.raises(ConfigError, match="activation_checkpointing: Sequential does not support it"):
        enable_activation_checkpointing(_model())


def test_one_data_order_epochs_fractions_and_the_prompt_stream():
    from rlhaif.training import epoch_order, micro_batches, stream_indices

    e0, e1 = epoch_order(5, 7, 0), epoch_order(5, 7, 1)
    assert micro_batches(5, 2, 2, seed=7) == [e0[0:2], e0[2:4], e0[4:5], e1[0:2], e1[2:4], e1[4:5]]
    assert micro_batches(5, 2, 1.5, seed=7) == [e0[0:2], e0[2:4], e0[4:5], e1[0:2], e1[2:4]]  # ceil(0.5 · 3) = 2
    # PPO's prompts: fixed-size draws from the same stream, across epoch boundaries
    assert stream_indices(0, 3, 5, seed=7) == e0[:3]
    assert stream_indices(3, 4, 5, seed=7) == e0[3:] + e1[:2]
    assert stream_indices(12, 2, 5, seed=7) == epoch_order(5, 7, 2)[2:4]


def _run_dir(tmp_path, rows, step=2, **saved):
    import json

    from rlhaif.config import TrainConfig

    cfg = TrainConfig(output_dir=str(tmp_path), learning_rate=1e-3)
    ck = tmp_path / "checkpoints" / f"step-{step:06d}"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text(json.dumps({"step": step}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train_config.json").write_text(json.dumps({"stage": saved.pop("stage", "sft"),
                                                             "config": {**cfg.model_dump(mode="json"), **saved}}))
    return cfg


def test_start_run_trims_logs_to_the_checkpoint_and_refuses_other_settings(tmp_path):
    import json

    from rlhaif.errors import ConfigError
    from rlhaif.training import start_run

    rows = [{"step": 1}, {"step": 2}, {"step": 2, "eval/accuracy": 1.0}, {"step": 3}]
    cfg = _run_dir(tmp_path / "a", rows, save_every=7, log_with="wandb")  # these may change on resume
    assert start_run(cfg, "sft").name == "step-000002"
    kept = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert kept == [{"step": 1}, {"step": 2}]  # the rows written after the checkpoint are gone
    cfg = _run_dir(tmp_path / "b", rows, learning_rate=5e-4)
    with pytest.raises(ConfigError, match=r"refusing to resume.*\(learning_rate: 0\.0005 -> 0\.001\)"):
        start_run(cfg, "sft")
    cfg = _run_dir(tmp_path / "c", rows, stage="ppo")
    with pytest.raises(ConfigError, match="checkpoints are from a 'ppo' run, not sft"):
        start_run(cfg, "sft")
    cfg = _run_dir(tmp_path / "d", rows, learning_rate=5e-4).model_copy(update={"resume": False})
    assert start_run(cfg, "sft") is None  # a fresh start: old checkpoints and rows deleted
    assert not (tmp_path / "d" / "checkpoints").exists() and not (tmp_path / "d" / "metrics.jsonl").exists()


def _pretend_two_processes(monkeypatch):
    """Every Accelerator made by the loops acts as rank 0 of two processes whose ``reduce`` answers the mean
    with the other process's values (taken as ours + 2000): the logged stats must be what it returns."""
    import rlhaif.training as training

    real = training.make_accelerator

    def make(*a, **k):
        acc = real(*a, **k)
        acc.__class__ = type("RankZeroOfTwo", (type(acc),), {
            "num_processes": property(lambda self: 2),
            "reduce": lambda self, tensor, reduction="mean": (tensor + (tensor + 2000)) / 2})
        return acc

    monkeypatch.setattr(training, "make_accelerator", make)


def _tiny_run(kind, tmp_path):
    import json

    from rlhaif.models.tiny import save_tiny

    rows = [{"prompt": "tell me about the sun", "chosen": "the sun is kind and warm", "rejected": "go away",
             "response": "the sun is kind and warm"} for _ in range(8)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / kind
    if kind == "sft":
        from rlhaif.policy.sft import SFTConfig, run_sft

        save_tiny(tmp_path / "base", "llama", seed=0)
        run_sft(SFTConfig(model=str(tmp_path / "base"), data=str(data), output_dir=str(out), batch_size=2,
                          max_steps=1, max_length=32))
        return out, "sft/loss"
    if kind == "reward":
        from rlhaif.reward.train import RewardTrainConfig, run_reward_train

        save_tiny(tmp_path / "bb", "llama", reward=True)
        run_reward_train(RewardTrainConfig(data=str(data), backbone=str(tmp_path / "bb"), output_dir=str(out),
                                           batch_size=2, max_steps=1, max_length=32, eval_fraction=0,
                                           normalize=False))
        return out, "rm/loss"
    from rlhaif.policy.dpo import DPOConfig, run_dpo

    save_tiny(tmp_path / "base", "llama", seed=0)
    run_dpo(DPOConfig(model=str(tmp_path / "base"), pairs=str(data), output_dir=str(out), batch_size=2,
                      max_steps=1, max_length=32, eval_fraction=0))
    return out, "dpo/loss"


@pytest.mark.parametrize("kind", ["sft", "reward", "dpo"])
def test_each_loop_logs_its_stats_averaged_over_processes(kind, tmp_path, monkeypatch):
    import json

    _pretend_two_processes(monkeypatch)
    out, loss = _tiny_run(kind, tmp_path)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and 1000 < row[loss] < 1100  # our loss (< 100) plus half the other's 2000 offset
