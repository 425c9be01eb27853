"""Defects a first user met on the command line (issue 24, §1), each through the real command: exit code and
what it prints."""

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from rlhaif.cli import main
from test_pipeline import TOY  # a stage writing out.txt (the recipe runner's tests)


def _cli(argv, capsys):
    """(exit code, stdout, stderr) of ``rlhaif argv``."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _toy_recipe(path: Path, run_dir: Path, value: int) -> Path:
    path.write_text(yaml.safe_dump({"run_dir": str(run_dir), "stages": [
        {"stage": "toystage:run_toy", "name": "sft", "value": value}]}))
    return path


def test_another_recipes_results_are_never_cleared_silently(tmp_path, monkeypatch, capsys):
    """Two recipes whose stages share a name, into one run_dir (as `rlhaif demo` then `rlhaif demo --cai`
    did): the second refuses, naming the folder and the ways out, and leaves the first's results alone."""
    (tmp_path / "toystage.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    first = _toy_recipe(tmp_path / "first.yaml", run, 1)
    second = _toy_recipe(tmp_path / "second.yaml", run, 2)
    assert _cli(["run", first], capsys)[0] == 0
    code, out, err = _cli(["run", second], capsys)
    assert code == 2, (out, err)
    assert f"stage 'sft': {run / 'sft'} holds results of the recipe {first}, with another config; refusing to " \
           f"clear them. Give this run its own folder (--run-dir), or pass --force to replace them" in err
    assert (run / "sft" / "out.txt").read_text() == "1"
    # the same recipe with a changed config redoes its own stage, and says so
    _toy_recipe(first, run, 3)
    code, out, err = _cli(["run", first], capsys)
    assert code == 0 and f"[redo] sft: its config or inputs changed; clearing {run / 'sft'}" in err
    assert (run / "sft" / "out.txt").read_text() == "3"
    # --force replaces another recipe's results, and says whose
    code, out, err = _cli(["run", second, "--force"], capsys)
    assert code == 0 and f"[redo] sft: --force, replacing the results of {first}" in err
    assert (run / "sft" / "out.txt").read_text() == "2"
    assert json.loads((run / "sft" / "manifest.json").read_text())["recipe"] == str(second)
    # results a stage run alone wrote (no recipe in its manifest) are not this recipe's either
    man = json.loads((run / "sft" / "manifest.json").read_text())
    del man["recipe"]
    (run / "sft" / "manifest.json").write_text(json.dumps(man))
    code, out, err = _cli(["run", first], capsys)
    assert code == 2 and "holds results this recipe did not write (a stage run alone" in err
    assert (run / "sft" / "out.txt").read_text() == "2"


def test_each_demo_has_its_own_folder(capsys):
    folders = {}
    for flags in ([], ["--cai"], ["--hh-rlhf", __file__], ["--human"]):
        code, out, err = _cli(["demo", "--check", *flags], capsys)
        assert code == 0, err
        folders[" ".join(flags[:1])] = out.strip().splitlines()[-1].rsplit(" into ", 1)[1]
    assert folders == {"": "runs/demo", "--cai": "runs/demo-cai", "--hh-rlhf": "runs/demo-hh",
                       "--human": "runs/demo-human"}


def write_tiny_gguf(path: Path) -> Path:
    """A tiny llama GGUF (1 layer, width 16, a byte-level BPE vocabulary of 260): what the built-in SmolLM2
    is, at a size that converts in a second."""
    import gguf
    import numpy as np

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    byte_chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]  # GPT-2's byte map
    tokens = byte_chars + ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    hidden, ffn, vocab = 16, 32, len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(hidden // 2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 256 + [3] * 4)
    w.add_token_scores([0.0] * vocab)
    w.add_token_merges([])
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, hidden), "blk.0.attn_q.weight": (hidden, hidden),
              "blk.0.attn_k.weight": (hidden, hidden), "blk.0.attn_v.weight": (hidden, hidden),
              "blk.0.attn_output.weight": (hidden, hidden), "blk.0.ffn_gate.weight": (ffn, hidden),
              "blk.0.ffn_up.weight": (ffn, hidden), "blk.0.ffn_down.weight": (hidden, ffn)}
    for name, shape in shapes.items():
        w.add_tensor(name, (0.1 * rng.standard_normal(shape)).astype(np.float32))
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        w.add_tensor(name, np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model" / "adapter_model.safetensors"))


def test_a_stage_draws_the_same_random_numbers_on_the_converting_load_and_a_cached_one(tmp_path, monkeypatch):
    """SFT with LoRA from a GGUF, once with an empty model cache (the load converts the GGUF) and once with
    the converted model cached: the same seed gives the same adapter (the first demo's SFT used to get another
    LoRA initialisation, so its generations matched no later run)."""
    import torch

    from rlhaif.policy.sft import SFTConfig, run_sft

    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {w}", "response": f"{w} {w}"}) + "\n"
                            for w in ("cat", "dog", "sun", "tea")))
    monkeypatch.setenv("RLHAIF_CACHE", str(tmp_path / "cache"))
    runs = []
    for name in ("cold", "warm"):
        torch.manual_seed(123)  # whatever came before the stage: the stage seeds itself
        run_sft(SFTConfig(model=str(model), data=str(data), output_dir=str(tmp_path / name), lora_r=2,
                          batch_size=2, max_steps=2, learning_rate=1e-2))
        runs.append(_adapter(tmp_path / name))
    assert len(list((tmp_path / "cache" / "models").iterdir())) == 1  # converted once, by the cold run
    assert runs[0].keys() == runs[1].keys() and runs[0]
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_the_converting_load_shows_no_gguf_progress_bar(tmp_path, monkeypatch, capfd):
    """`rlhaif generate` on a GGUF with an empty model cache: the conversion draws no tqdm bar, and the
    command's own summary is there."""
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "hello"}) + "\n")
    monkeypatch.setenv("RLHAIF_CACHE", str(tmp_path / "cache"))
    code = 0
    try:
        main(["generate", "--model", str(model), "--prompts", str(tmp_path / "p.jsonl"), "-k", "2",
              "--max-new-tokens", "3", "--output-dir", str(tmp_path / "gen")])
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    assert code == 0 and "wrote 2 completions" in out, (out, err)
    assert "Converting and de-quantizing" not in err and "it/s" not in err, err


def test_a_bad_hyper_parameter_is_refused_before_anything_loads(tmp_path, capsys):
    """A negative learning rate used to pass validation and die after the model loaded with torch's raw
    `ValueError: Invalid learning rate`: now the flag, the YAML file and `rlhaif run --check` name it."""
    data = tmp_path / "demos.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    out_dir = tmp_path / "sft"
    code, out, err = _cli(["sft", "--model", "no-such-model", "--data", data, "--lr", "-1e-3", "-o", out_dir], capsys)
    assert (code, err.strip()) == (2, "error: --learning-rate: must be > 0 (got -0.001)")
    assert not out_dir.exists()
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text("prompts: p.jsonl\nreward_model: length\nclip_range: 0\n")
    code, out, err = _cli(["ppo", "--config", cfg], capsys)
    assert (code, err.strip()) == (2, f"error: {cfg}: key 'clip_range': must be > 0 (got 0.0)")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "policy": "no-such-model", "stages": [
        {"stage": "sft", "model": "${policy}", "data": str(data), "epochs": 1},
        {"stage": "dpo", "model": "${policy}", "pairs": "${sft}/pairs.jsonl", "learning_rate": -1e-3}]}))
    code, out, err = _cli(["run", recipe, "--check"], capsys)
    assert (code, err.strip()) == (2, f"error: {recipe}: stage 'dpo': key 'learning_rate': must be > 0 (got -0.001)")
    recipe.write_text(recipe.read_text().replace("epochs: 1", "epochs: many"))
    code, out, err = _cli(["run", recipe, "--check"], capsys)
    assert code == 2 and f"{recipe}: stage 'sft': key 'epochs': Input should be a valid number" in err
    assert not (tmp_path / "run").exists()
    code, out, err = _cli(["sft", "--help"], capsys)  # the range is in the flag's help too
    assert code == 0 and "LoRA likes ~1e-4. Must be > 0. [default: 2e-05]" in re.sub(r"\s+", " ", out)


def test_every_numeric_setting_of_every_stage_has_its_range():
    """Each int or float field of every stage's config (and of the configs inside them) has a range in
    config.RANGES, or is one of the few that take any value."""
    import types
    import typing

    from pydantic import BaseModel

    from rlhaif.cli.stages import COMMANDS
    from rlhaif.config import RANGES
    from rlhaif.pipeline import STAGES, stage_function

    # on a scorer's own scale: any value
    any_value = {"position_bias", "length_bias", "missing_eos_penalty", "score_threshold", "cost_limit",
                 "safety_threshold",
                 # the 2025–2026 knobs: checked together by ppo.check_knob_settings (tests/test_ppo_knobs.py)
                 "clip_range_high", "overlong_buffer", "overlong_penalty", "dynamic_sampling_max_rounds"}
    numeric: set[str] = set()

    def walk(cls):
        for name, info in cls.model_fields.items():
            tp = info.annotation
            args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType, list) else (tp,)
            if any(a in (int, float) for a in args):
                numeric.add(name)
            for a in args:
                if isinstance(a, type) and issubclass(a, BaseModel):
                    walk(a)

    for kind in {*STAGES, *(c.stage for c in COMMANDS)}:
        walk(stage_function(kind)[1])
    assert len(numeric) > 50
    assert sorted(numeric - set(RANGES) - any_value) == ["noise"]  # AnnotatorSpec's own Field(ge=0):
    from rlhaif.errors import ConfigError
    from rlhaif.feedback.simulate import SimulatedPanelConfig

    with pytest.raises(ConfigError, match=r"^p.yaml: key 'annotators.0.noise': Input should be greater than or "
                                          r"equal to 0$"):
        SimulatedPanelConfig.validate_dict({"output_dir": "x", "annotators": [{"name": "a", "noise": -1}]}, "p.yaml")


def test_resume_says_what_happens_and_the_demo_sft_checkpoints(tmp_path, capsys, crash_after_logging):
    """An interrupted SFT stage: a re-run resumes from the checkpoint it saved, and says so with its step;
    interrupted before its first checkpoint, the re-run says it runs again (it used to claim a resume)."""
    from rlhaif.models.tiny import save_tiny

    model = save_tiny(tmp_path / "lm", "llama", seed=0)
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {w}", "response": f"{w} {w}"}) + "\n"
                            for w in ("cat", "dog", "sun", "tea", "sky", "sea")))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "policy": str(model), "stages": [
        {"stage": "sft", "model": "${policy}", "data": str(data), "batch_size": 1, "max_steps": 4, "save_every": 2,
         "learning_rate": 1e-3}]}))
    crash_after_logging(1)  # killed before the first checkpoint (step 2)
    assert _cli(["run", recipe], capsys)[0] == 130
    crash_after_logging(3)  # runs again from the start, saves step 2, killed after step 3
    code, out, err = _cli(["run", recipe], capsys)
    assert code == 130 and (f"[rerun] sft: interrupted before with the same config, with no checkpoint saved; it "
                            f"runs again in {tmp_path / 'run' / 'sft'}") in err and "[resume]" not in err
    crash_after_logging(None)
    code, out, err = _cli(["run", recipe], capsys)
    assert code == 0 and "[resume] sft: interrupted before with the same config; resumes from its checkpoint at " \
                         "step 2" in err, err
    rows = [json.loads(l) for l in (tmp_path / "run" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]

    # the demo's SFT saves checkpoints before it ends (save_every 200 never did in its 22 steps)
    from rlhaif.pipeline import ASSETS, demo_recipe
    from rlhaif.training import micro_batches

    sft = next(s for s in demo_recipe("rlhf").stages if s.name == "sft").settings
    demos = (ASSETS / "demos" / "demo_sft.jsonl").read_text().splitlines()
    steps = len(micro_batches(len(demos), sft["batch_size"], sft["epochs"], 0))
    assert steps == 22 and 0 < sft["save_every"] < steps
    # the study recipe shares the demo's first six stages (run in runs/demo, it skips them): still the same
    from rlhaif.pipeline import load_recipe

    name = "study-overoptimization.yaml"  # packaged beside the demo's, or in the checkout's recipes/
    study = load_recipe(next(p for p in (ASSETS / "recipes" / name, Path(__file__).parents[1] / "recipes" / name)
                             if p.exists()))
    demo = demo_recipe("rlhf")
    assert [(s.name, s.settings) for s in study.stages[:6]] == [(s.name, s.settings) for s in demo.stages[:6]]


def test_feedback_serve_prints_where_it_listens_and_each_request(tmp_path):
    """`rlhaif feedback serve` used to print nothing: now its address first, then one line per request
    (without the query string)."""
    import re
    import select
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "rlhaif.cli", "feedback", "serve", "--db", str(tmp_path / "f.db"),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], 60)[0], "printed nothing in 60 s"
        first = proc.stdout.readline()
        m = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+)) \(store .*f\.db; Ctrl-C stops\)\n", first)
        assert m and int(m.group(2)) > 0, (first, proc.poll())
        deadline = time.monotonic() + 60
        while True:  # the socket is bound before the line is printed; the app answers once started
            try:
                with urllib.request.urlopen(m.group(1) + "/login?next=secret", timeout=10) as r:
                    assert r.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert select.select([proc.stdout], [], [], 30)[0], "no request line in 30 s"
        line = proc.stdout.readline()
        assert re.fullmatch(r"GET /login 200 \d+ ms\n", line), line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in proc.stderr.read()


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory):
    from rlhaif.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("lm") / "lm", "llama", seed=0)


def _prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"tell me about the cat {i}"}) + "\n"
                            for i in range(n)))
    return path


def test_generate_shows_progress_and_best_of_counts_what_it_wrote(tmp_path, tiny_lm_folder, capsys):
    prompts = _prompts(tmp_path / "p.jsonl", 2)
    code, out, err = _cli(["generate", "--model", tiny_lm_folder, "--prompts", prompts, "-k", 4,
                           "--max-new-tokens", 3, "--batch-size", 2, "--output-dir", tmp_path / "all"], capsys)
    assert code == 0 and re.search(r"generate .* 8/8", out) and "wrote 8 completions to" in out, (out, err)
    # best of 4: 2 lines written, and the summary says 2 (it said "wrote 8 completions")
    code, out, err = _cli(["generate", "--model", tiny_lm_folder, "--prompts", prompts, "-k", 4, "--best-of", 4,
                           "--scorer", "length", "--max-new-tokens", 3, "--output-dir", tmp_path / "best"], capsys)
    written = (tmp_path / "best" / "completions.jsonl").read_text().splitlines()
    assert code == 0 and len(written) == 2, (out, err)
    assert f"wrote 2 completions to {tmp_path / 'best' / 'completions.jsonl'}, the best of each prompt's first 4 " \
           f"of 8 sampled" in out, out
    # --best-of without --scorer: one message naming both (it was "<flags>: key '': ...")
    code, out, err = _cli(["generate", "--model", tiny_lm_folder, "--prompts", prompts, "-k", 4, "--best-of", 4],
                          capsys)
    assert (code, err.strip()) == (2, "error: the flags: best_of 4 needs a scorer to rank the responses by (scorer, "
                                      "--scorer: a reward-model folder, classifier:PATH:LABEL or python:FILE:FUNCTION)")


def test_cai_revise_progress_moves_with_every_generation(tmp_path, tiny_lm_folder, capsys, monkeypatch):
    """The bar counts answers, critiques and revisions and moves after each batch of them (it moved only when
    a whole batch of prompts had been through every round: minutes of silence)."""
    from rlhaif import metrics

    moves = []
    real = metrics.MetricsLogger.advance
    monkeypatch.setattr(metrics.MetricsLogger, "advance", lambda self, n: moves.append(n) or real(self, n))
    code, out, err = _cli(["cai", "revise", "--model", tiny_lm_folder, "--prompts", _prompts(tmp_path / "p.jsonl", 3),
                           "--rounds", 2, "--batch-size", 2, "--max-new-tokens", 3, "-o", tmp_path / "cai"], capsys)
    assert code == 0, err
    assert moves == [2] * 5 + [1] * 5  # a batch of 2 prompts: answer, then critique + revision twice; then 1 prompt
    assert re.search(r"cai revise .* 15/15", out), out


def test_dpo_kto_counts_rows_and_one_step_is_singular(tmp_path, tiny_lm_folder, capsys):
    """`dpo --loss kto` trains on rows (each response judged alone) and said "pairs"; "trained 1 steps"."""
    rows = [{"prompt": f"tell me about the cat {i}", "completion": "the cat is kind" if i % 2 else "no",
             "label": bool(i % 2)} for i in range(10)]
    data = tmp_path / "kto.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = _cli(["dpo", "--loss", "kto", "--pairs", data, "--model", tiny_lm_folder, "--max-steps", 1,
                           "--batch-size", 4, "--eval-fraction", 0.2, "--lora-r", 0, "-o", tmp_path / "kto"], capsys)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(rf"dpo \(kto loss\): trained 1 step on 8 rows; held-out accuracy [0-9.]+ on 2 rows, "
                        rf"implicit-reward margin -?[0-9.]+ -> {re.escape(str(tmp_path / 'kto' / 'model'))}", last), out
    assert "held-out accuracy" in out and " pairs" not in out


def test_reward_eval_with_an_output_file_prints_a_short_summary(tmp_path, capsys):
    from rlhaif.models.tiny import save_tiny

    rm = save_tiny(tmp_path / "rm", "llama", seed=0, reward=True)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "the cat is kind", "rejected": "no"}) + "\n"
                             for i in range(5)))
    code, out, err = _cli(["reward", "eval", "--model", rm, "--data", pairs, "-o", tmp_path / "ev.json"], capsys)
    report = json.loads((tmp_path / "ev.json").read_text())
    assert code == 0 and report["n_pairs"] == 5, err
    acc = f"{report['accuracy']:.1%}" if report["accuracy"] is not None else "n/a"
    decided = f"{report['n_decided']} decided pair{'' if report['n_decided'] == 1 else 's'}"
    assert out.strip() == (f"accuracy {acc} on {decided} (of 5), mean margin {report['mean_margin']:.3f}, "
                           f"calibration error {report['ece']:.3f}; report -> {tmp_path / 'ev.json'}")
    code, out, err = _cli(["reward", "eval", "--model", rm, "--data", pairs], capsys)  # no file: the report itself
    assert code == 0 and json.loads(out) == report


def test_ppo_summary_says_what_its_kl_is_and_counts_one_step(tmp_path, tiny_lm_folder, capsys):
    (tmp_path / "reward.py").write_text("def length(prompts, responses):\n"
                                        "    return [float(len(r.split())) for r in responses]\n")
    code, out, err = _cli(["ppo", "--model", tiny_lm_folder, "--prompts", _prompts(tmp_path / "p.jsonl", 4),
                           "--reward-fn", f"{tmp_path / 'reward.py'}:length", "--steps", 1, "--batch-size", 4,
                           "--mini-batch-size", 4, "--ppo-epochs", 1, "--max-new-tokens", 3, "--lora-r", 0,
                           "-o", tmp_path / "ppo"], capsys)
    assert code == 0, err
    assert re.search(r"^ppo: 1 step, score -?[0-9.]+, kl -?[0-9.]+ \(k1 estimate: can dip below 0 when the KL is "
                     r"small\); policy saved to ", out, re.M), out


def test_a_blank_line_in_a_txt_prompt_file_does_not_shift_the_ids(tmp_path, tiny_lm_folder, capsys):
    """Ids are the lines' 0-based indices, as for JSONL: a blank line is skipped, not renumbered around."""
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nthird prompt\n   \nfifth prompt\n")
    code, out, err = _cli(["generate", "--model", tiny_lm_folder, "--prompts", txt, "-k", 1, "--max-new-tokens", 2,
                           "--output-dir", tmp_path / "gen"], capsys)
    assert code == 0, err
    rows = [json.loads(l) for l in (tmp_path / "gen" / "completions.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["prompt"]) for r in rows] == [("0", "first prompt"), ("2", "third prompt"),
                                                             ("4", "fifth prompt")]
    jsonl = tmp_path / "p.jsonl"  # the same file as JSONL gives the same ids
    jsonl.write_text('{"prompt": "first prompt"}\n\n{"prompt": "third prompt"}\n   \n{"prompt": "fifth prompt"}\n')
    from rlhaif.generate import read_prompts

    assert [(p.id, p.prompt) for p in read_prompts(jsonl)] == [(r["prompt_id"], r["prompt"]) for r in rows]


def test_stage_outputs_get_the_umask_modes(tmp_path, tiny_lm_folder, capsys, monkeypatch):
    """Everything a recipe's stages write gets the umask's modes: 0640 / 0750 under umask 027, as 0644 / 0755
    under the usual 022 (atomic writes, the model folders renamed into place and safetensors files were 0600 /
    0700 beside 0644 files); only secrets (a token file) are written 0600 whatever the umask."""
    import stat

    prompts = _prompts(tmp_path / "p.jsonl", 2)
    data = tmp_path / "demos.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "hello there"}) + "\n")
    recipe = tmp_path / "r.yaml"
    run = tmp_path / "run"
    recipe.write_text(yaml.safe_dump({"run_dir": str(run), "policy": str(tiny_lm_folder), "stages": [
        {"stage": "sft", "model": "${policy}", "data": str(data), "max_steps": 1, "lora_r": 2,
         "keep_checkpoints": True},
        {"stage": "generate", "model": "${policy}", "prompts": str(prompts), "k": 2, "max_new_tokens": 2}]}))
    old = os.umask(0o027)
    try:
        code, out, err = _cli(["run", recipe], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*")}
    assert {"sft/model/adapter_model.safetensors", "sft/checkpoints/step-000001/trainable.safetensors",
            "generate/completions.jsonl", "generate/manifest.json"} <= set(modes)
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o750 if (run / p).is_dir() else 0o640)}
    assert not wrong, wrong
