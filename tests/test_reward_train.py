"""Reward model: a tiny model learns a toy preference, scores are normalized, bad input stops clearly."""

import json
import random
import statistics

import pytest

from rlhaif.cli import main
from rlhaif.errors import DataError, RlhaifError
from rlhaif.models.tiny import save_tiny
from rlhaif.reward.model import load_reward_model
from rlhaif.reward.train import RewardTrainConfig, run_reward_train

FILL = "the a is good day time book sun water tree answer".split()


def toy_pairs(n, seed):
    rng = random.Random(seed)

    def resp(word):
        w = [rng.choice(FILL) for _ in range(5)]
        w.insert(rng.randrange(6), word)
        return " ".join(w)
    return [{"prompt": " ".join(rng.choice(FILL) for _ in range(4)), "chosen": resp("kind"), "rejected": resp("rude")}
            for _ in range(n)]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("rm")
    save_tiny(d / "bb", "llama", reward=True)
    cfg = RewardTrainConfig(data=write(d / "train.jsonl", toy_pairs(160, 0)),
                            eval_data=write(d / "heldout.jsonl", toy_pairs(40, 1)),
                            backbone=str(d / "bb"), output_dir=str(d / "rm"), epochs=3, batch_size=16,
                            learning_rate=3e-3, max_length=64, normalize_samples=10_000)
    return d, cfg, run_reward_train(cfg)


def test_toy_preference_separates_held_out_pairs(trained):
    d, cfg, result = trained
    assert result.steps == 30 and result.eval_pairs == 40
    report = result.eval
    assert report["accuracy"] >= 0.95 and report["mean_margin"] > 1.0
    saved = json.loads((d / "rm" / "eval.json").read_text())
    assert saved["accuracy"] == report["accuracy"] and len(saved["calibration"]) == 5
    losses = [json.loads(line)["rm/loss"] for line in (d / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.3 * losses[0]


def test_saved_model_scores_from_text_with_normalization(trained):
    d, cfg, _ = trained
    rm = load_reward_model(d / "rm", device="cpu")
    assert json.loads((d / "rm" / "reward_config.json").read_text())["text_format"] == "chat"
    norm = json.loads((d / "rm" / "reward_normalization.json").read_text())
    assert norm["std"] > 0 and (rm.mean, rm.std) == (norm["mean"], norm["std"])
    rows = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in rows for _ in (0, 1)]
    responses = [x for r in rows for x in (r["chosen"], r["rejected"])]
    scores = rm.score(prompts, responses, batch_size=64)  # the reference set itself: mean 0, std 1
    assert statistics.fmean(scores) == pytest.approx(0.0, abs=1e-4)
    assert statistics.stdev(scores) == pytest.approx(1.0, abs=1e-4)
    raw = rm.raw_scores(prompts[:2], responses[:2])
    assert scores[:2] == pytest.approx([(r - norm["mean"]) / norm["std"] for r in raw])
    kind, rude = rm.score(["hello"] * 2, ["the kind answer", "the rude answer"])
    assert kind > rude


def test_cli_score_and_eval(trained, tmp_path, capsys):
    d, _, _ = trained
    comp = write(tmp_path / "c.jsonl", [{"prompt_id": "1", "prompt": "hello", "response": "a kind day"},
                                        {"prompt_id": "1", "prompt": [{"role": "user", "content": "hi"}],
                                         "response": "a rude day", "index": 1}])
    main(["reward", "score", "--model", str(d / "rm"), "--data", comp, "-o", str(tmp_path / "s.jsonl")])
    scored = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert scored[0]["score"] > scored[1]["score"] and "raw_score" in scored[0]
    main(["reward", "eval", "--model", str(d / "rm"), "--data", str(d / "heldout.jsonl"),
          "-o", str(tmp_path / "ev.json")])
    assert json.loads((tmp_path / "ev.json").read_text())["accuracy"] >= 0.95


@pytest.mark.parametrize("row,field", [
    ({"prompt": "hi", "chosen": "", "rejected": "no"}, "chosen"),
    ({"prompt": "hi", "chosen": "yes", "rejected": "no", "p": 1.5}, "p"),
])
def test_bad_pairs_name_file_line_field(tmp_path, row, field):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "hi", "chosen": "yes", "rejected": "no"}, row])
    with pytest.raises(DataError) as e:
        run_reward_train(RewardTrainConfig(data=path, output_dir=str(tmp_path / "o")))
    assert (e.value.line, e.value.field) == (2, field)
    assert "bad.jsonl:2" in str(e.value)


def test_unknown_backbone_is_one_clear_cli_error(tmp_path, capsys):
    path = write(tmp_path / "p.jsonl", toy_pairs(4, 0))
    with pytest.raises(SystemExit) as e:
        main(["reward", "train", "--data", path, "--backbone", "no-such-model", "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "Traceback" not in err
    with pytest.raises(RlhaifError, match="line range"):
        run_reward_train(RewardTrainConfig(data=path, data_lines="5-1", output_dir=str(tmp_path / "o")))


def test_micro_batches_cover_each_epoch_and_group_by_length():
    from rlhaif.training import epoch_order, micro_batches

    plain = micro_batches(10, 4, 2, seed=3)
    assert plain[:3] == [epoch_order(10, 3, 0)[0:4], epoch_order(10, 3, 0)[4:8], epoch_order(10, 3, 0)[8:10]]
    lengths = [5, 50, 7, 48, 6, 49, 8, 47, 51, 9, 52, 4]  # 6 short, 6 long, interleaved
    grouped = micro_batches(12, 3, 2, seed=3, lengths=lengths, group=4)
    assert grouped == micro_batches(12, 3, 2, seed=3, lengths=lengths, group=4)  # a pure function: resume-safe
    for epoch in (grouped[:4], grouped[4:]):
        assert sorted(i for b in epoch for i in b) == list(range(12))  # every example once per epoch
        # one window of 12: sorted longest first then cut, so each batch is all-long or all-short
        assert all(min(lengths[i] for i in b) > 40 or max(lengths[i] for i in b) < 10 for b in epoch)
    assert grouped[:4] != grouped[4:]  # the batch order is reshuffled every epoch


def test_reward_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    save_tiny(tmp_path / "bb", "llama", reward=True)
    rows = toy_pairs(40, 2)
    rows[::3] = [{**r, "chosen": r["chosen"] + " and more words here"} for r in rows[::3]]  # mixed lengths
    data = write(tmp_path / "train.jsonl", rows)

    def cfg(name):
        return RewardTrainConfig(data=data, backbone=str(tmp_path / "bb"), output_dir=str(tmp_path / name),
                                 eval_fraction=0.25, epochs=2, batch_size=4, learning_rate=3e-3, max_length=64,
                                 save_every=3)

    straight = run_reward_train(cfg("straight"))  # 30 train pairs / 4 -> 8 steps per epoch, 16 in all
    import rlhaif.training as training

    orig = training.save_checkpoint

    def crash_after(out_dir, step, *a, **k):
        path = orig(out_dir, step, *a, **k)
        if step == 9:  # mid-epoch 2
            raise KeyboardInterrupt("simulated crash right after the step-9 checkpoint")
        return path

    monkeypatch.setattr(training, "save_checkpoint", crash_after)
    with pytest.raises(KeyboardInterrupt):
        run_reward_train(cfg("resumed"))
    monkeypatch.setattr(training, "save_checkpoint", orig)
    resumed = run_reward_train(cfg("resumed"))
    assert resumed.steps == straight.steps == 16
    assert resumed.eval["accuracy"] == straight.eval["accuracy"]
    assert resumed.eval["mean_margin"] == pytest.approx(straight.eval["mean_margin"], rel=1e-5)
    losses = lambda name: [json.loads(l)["rm/loss"] for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert losses("resumed")[-7:] == pytest.approx(losses("straight")[-7:], rel=1e-5)
    import torch
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_pair_truncation_keeps_latest_turns_and_response_start():
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rlhaif.models.loading import resolve_model
    from rlhaif.reward.model import RewardModel

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6")[0])  # the real MiniLM word pieces
    bert = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=1, intermediate_size=8, num_labels=1))
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    reply = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    decode = lambda rm: tok.decode(rm.encode([prompt], [reply])["input_ids"][0])
    left = RewardModel(bert, tok, "pair", max_length=13, truncation_side="left")  # 10 tokens + [CLS] [SEP] [SEP]
    assert decode(left) == "[CLS] eight nine ten eleven twelve [SEP] alpha beta gamma delta epsilon [SEP]"
    assert left.token_lengths([prompt, "hi"], [reply, "yes"]) == [13, 5]  # [CLS] hi [SEP] yes [SEP]
    right = RewardModel(bert, tok, "pair", max_length=13, truncation_side="right")
    assert decode(right) == "[CLS] one two three four five [SEP] alpha beta gamma delta epsilon [SEP]"
    short = RewardModel(bert, tok, "pair", max_length=64)  # fits: nothing cut
    assert decode(short) == f"[CLS] {prompt} [SEP] {reply} [SEP]"
    long_prompt = RewardModel(bert, tok, "pair", max_length=9, truncation_side="left")  # short reply kept whole
    assert tok.decode(long_prompt.encode([prompt], ["yes no"])["input_ids"][0]) == "[CLS] nine ten eleven twelve [SEP] yes no [SEP]"


def test_reward_resumed_run_logs_each_step_once_and_refuses_other_data(tmp_path, crash_after_logging):
    from rlhaif.errors import ConfigError

    save_tiny(tmp_path / "bb", "llama", reward=True)
    data = write(tmp_path / "train.jsonl", toy_pairs(24, 4))
    other = write(tmp_path / "other.jsonl", toy_pairs(24, 5))

    def cfg(**kw):
        return RewardTrainConfig(**{**dict(data=data, backbone=str(tmp_path / "bb"), output_dir=str(tmp_path / "o"),
                                           eval_fraction=0.0, batch_size=4, learning_rate=3e-3, max_length=64,
                                           save_every=2, normalize=False), **kw})

    crash_after_logging(3)  # 6 steps; the kill comes after step 3 is logged, the newest checkpoint is step 2
    with pytest.raises(KeyboardInterrupt):
        run_reward_train(cfg())
    crash_after_logging(None)
    with pytest.raises(ConfigError, match="refusing to resume.*data: "):
        run_reward_train(cfg(data=other))
    out = run_reward_train(cfg())
    steps = [json.loads(line)["step"] for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert out.output_dir == out.model == str(tmp_path / "o") and "rm/loss" in out.metrics
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["stage"] == "reward"


def test_reward_train_ensemble_in_one_command_makes_a_scorer_folder(tmp_path):
    from rlhaif.cli import main
    from rlhaif.scorers import load_scorer

    save_tiny(tmp_path / "bb", "llama", reward=True)
    data = write(tmp_path / "train.jsonl", toy_pairs(40, 0))
    out = tmp_path / "ens"
    main(["reward", "train", "--data", data, "--backbone", str(tmp_path / "bb"), "-o", str(out), "--ensemble", "2",
          "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--learning-rate", "3e-3"])
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["members"] == ["member-0", "member-1"] and manifest["seeds"] == [0, 1]
    assert all((out / m / "manifest.json").exists() for m in manifest["members"])
    prompts, responses = ["a question"] * 2, ["a kind answer", "a rude answer"]
    each = [load_scorer(str(out / m))(prompts, responses) for m in manifest["members"]]
    assert each[0] != each[1]  # another seed: another data order, another model
    assert load_scorer(str(out))(prompts, responses) == pytest.approx(
        [(a + b) / 2 for a, b in zip(*each)], abs=1e-5)
    assert load_scorer(f"ensemble:{out}:min")(prompts, responses) == pytest.approx(
        [min(a, b) for a, b in zip(*each)], abs=1e-5)
