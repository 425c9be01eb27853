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
    d, cfg, report = trained
    assert report["steps"] == 30 and report["eval_pairs"] == 40
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
