"""Every `rlhaif` command and subcommand end to end on tiny models: its exit code, its printed summary naming
what it wrote, and what it wrote (present and well formed); every packaged recipe with `run --check` and the
cheapest one for real.

The commands are chained as a user would chain them (sft -> generate -> feedback -> reward -> ppo / dpo ->
evaluate), each run once by a module-scoped fixture and checked by the tests below; the first runs in a
subprocess, the rest in-process (`rlhaif.cli.main`), where torch's import would otherwise dominate.
`test_every_command_ran` fails when `rlhaif --help` lists a command nothing here runs.
`rlhaif demo` runs end to end in tests/test_quickstart.py (the page's own command); here only its --check forms.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rlhaif.models.tiny import save_tiny

WORDS = "cat dog sun moon water fire tree book".split()
INVOKED: set[tuple[str, ...]] = set()  # command paths the fixtures ran


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def ok(self) -> "Ran":
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err[-3000:]}"
        return self


def _record(args: list[str]) -> None:
    from rlhaif.cli import build

    group, path = build(), []
    for a in args:
        if not hasattr(group, "commands") or a not in group.commands:
            break
        path.append(a)
        group = group.commands[a]
    INVOKED.add(tuple(path))


def cli(*args) -> Ran:
    """`rlhaif ARGS` in this process."""
    from rlhaif.cli import main

    args = [str(a) for a in args]
    _record(args)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as e:  # a crash is an exit 1 with a traceback, as in a terminal
            import traceback

            traceback.print_exc(file=err)
            code = 1
    return Ran(code, out.getvalue(), err.getvalue())


def cli_subprocess(*args, cwd=None) -> Ran:
    args = [str(a) for a in args]
    _record(args)
    p = subprocess.run([sys.executable, "-m", "rlhaif.cli", *args], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}, timeout=600)
    return Ran(p.returncode, p.stdout, p.stderr)


def printed_json(out: str) -> dict:
    """The JSON summary a command printed (after any progress bar's last frame)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ the chain


@pytest.fixture(scope="module")
def w(tmp_path_factory, torch_one_thread):
    """The workspace: a tiny causal LM, a tiny reward backbone, prompts, demonstrations and pairs."""
    d = tmp_path_factory.mktemp("smoke")
    save_tiny(d / "lm", "llama", seed=0, max_pos=1024)
    save_tiny(d / "rm", "llama", seed=0, reward=True)
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"tell me about the {n}"}) + "\n"
                                             for i, n in enumerate(WORDS[:4])))
    (d / "demos.jsonl").write_text("".join(json.dumps({"prompt": f"what is a {n}", "response": f"a {n} is good"})
                                           + "\n" for n in WORDS))
    (d / "pairs.jsonl").write_text("".join(json.dumps({"prompt": f"tell me about the {n}", "chosen": f"the {n} is kind "
                                                       "and good", "rejected": f"bad {n}"}) + "\n" for n in WORDS))
    return d


@pytest.fixture(scope="module")
def sft(w):
    return cli_subprocess("sft", "--model", w / "lm", "--data", w / "demos.jsonl", "--max-steps", 2,
                          "--batch-size", 4, "--max-length", 48, "-o", w / "sft")


@pytest.fixture(scope="module")
def gen(w, sft):
    assert (w / "sft" / "model" / "config.json").exists(), sft.err[-2000:]  # the chain needs the SFT model
    return cli("generate", "--model", w / "sft" / "model", "--prompts", w / "prompts.jsonl", "-k", 3,
               "--max-new-tokens", 6, "-o", w / "gen" / "completions.jsonl")


@pytest.fixture(scope="module")
def reward(w):
    trained = cli("reward", "train", "--data", w / "pairs.jsonl", "--backbone", w / "rm", "--max-length", 48,
                  "--batch-size", 4, "--eval-fraction", 0.25, "-o", w / "reward")
    evaluated = cli("reward", "eval", "--model", w / "reward", "--data", w / "pairs.jsonl",
                    "-o", w / "reward_eval.json")
    return trained, evaluated


@pytest.fixture(scope="module")
def scored(w, gen, reward):
    return cli("reward", "score", "--model", w / "reward", "--data", w / "gen" / "completions.jsonl",
               "-o", w / "scored.jsonl")


@pytest.fixture(scope="module")
def best_of(w, reward):
    with_scorer = cli("generate", "--model", w / "lm", "--prompts", w / "prompts.jsonl", "--best-of", 3,
                      "--scorer", f"reward_model:{w / 'reward'}", "--max-new-tokens", 6,
                      "-o", w / "best" / "completions.jsonl")
    without = cli("generate", "--model", w / "lm", "--prompts", w / "prompts.jsonl", "--best-of", 3,
                  "-o", w / "best_noscorer" / "completions.jsonl")
    return with_scorer, without


@pytest.fixture(scope="module")
def simulated(w, gen):
    return cli("feedback", "simulate", "--completions", w / "gen" / "completions.jsonl", "--kind", "ranking",
               "--overlap", 3, "-o", w / "sim")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_through_api(base: str, token: str, value_of) -> int:
    """What an annotator's browser does: take the next task, post a judgment, until none is left."""
    import httpx

    h = {"Authorization": f"Bearer {token}"}
    made = 0
    while True:
        nxt = httpx.get(f"{base}/api/next", headers=h, timeout=30)
        assert nxt.status_code == 200, nxt.text
        task = nxt.json()["assignment"]
        if task is None:
            return made
        r = httpx.post(f"{base}/api/judgments", headers=h, timeout=30, json={
            "client_id": uuid.uuid4().hex, "assignment_id": task["assignment_id"], "value": value_of(task)})
        assert r.status_code == 200, r.text
        made += 1


@pytest.fixture(scope="module")
def store(w, gen):
    """The annotation store's commands in the order of docs/feedback.md, the labels posted to `feedback serve`."""
    db = w / "fb.db"
    comp = w / "gen" / "completions.jsonl"
    r = {"init": cli("feedback", "init", "--db", db)}
    r["alice"] = cli("feedback", "add-annotator", "alice", "--db", db)
    r["bob"] = cli("feedback", "add-annotator", "bob", "--db", db)
    r["lead"] = cli("feedback", "add-annotator", "lead", "--admin", "--db", db)
    r["import"] = cli("feedback", "import", comp, "--db", db, "--campaign", "c1", "--kind", "pairwise", "-k", 2)
    r["import_thumbs"] = cli("feedback", "import", comp, "--db", db, "--campaign", "t1", "--kind", "thumbs")
    rows = jsonl(comp)
    first = [x for x in rows if x["prompt_id"] == "p0"]
    (w / "gold.jsonl").write_text(json.dumps({"prompt": first[0]["prompt"], "chosen": first[0]["response"] or "x",
                                              "rejected": first[1]["response"] or "y"}) + "\n")
    r["gold"] = cli("feedback", "gold", w / "gold.jsonl", "--db", db, "--campaign", "c1")
    port = _free_port()
    _record(["feedback", "serve"])
    proc = subprocess.Popen([sys.executable, "-m", "rlhaif.cli", "feedback", "serve", "--db", str(db), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base, labelled, up = f"http://127.0.0.1:{port}", {}, False
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                up = httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                up = False
            if up:
                break
            time.sleep(0.2)
        if up:
            for name in ("alice", "bob"):
                labelled[name] = label_through_api(
                    base, r[name].out.strip(),
                    lambda t: {"thumb": "up"} if t["kind"] == "thumbs" else {"choice": "A", "strength": 2})
    finally:
        proc.terminate()
        served_output = proc.communicate(timeout=30)[0]
    r["serve"] = (up, labelled, served_output, port)
    r["status"] = cli("feedback", "status", "--db", db)
    r["report"] = cli("feedback", "report", "--db", db, "--campaign", "c1", "-o", w / "fb_report.json")
    r["export"] = cli("feedback", "export", "--db", db, "--campaign", "c1", "--keep-flagged",
                      "-o", w / "fb_pairs.jsonl")
    r["export_kto"] = cli("feedback", "export", "--db", db, "--campaign", "t1", "--format", "kto",
                          "-o", w / "kto.jsonl")
    r["ai_label_db"] = cli("feedback", "ai-label", "--db", db, "--campaign", "c1", "--judge-model", w / "lm",
                           "-o", w / "ai_store")
    r["suggestions"] = cli("feedback", "suggestions", "c1", "--on", "--db", db)
    r["rotate"] = cli("feedback", "rotate-token", "alice", "--db", db)
    r["revoke"] = cli("feedback", "revoke", "bob", "--db", db)
    r["remove"] = cli("feedback", "remove-annotator", "bob", "--db", db)
    return r


@pytest.fixture(scope="module")
def ai_label(w, gen):
    return cli("feedback", "ai-label", "-i", w / "gen" / "completions.jsonl", "--judge-model", w / "lm",
               "-o", w / "ai")


@pytest.fixture(scope="module")
def ai_label_chat(w):
    """AI labels into a store whose tasks' prompts are chat messages (the format docs/quickstart.md shows)."""
    (w / "chat_comp.jsonl").write_text("".join(json.dumps({
        "prompt_id": "c", "index": i, "response": r,
        "prompt": [{"role": "system", "content": "you are kind"},
                   {"role": "user", "content": "tell me about the cat"}]})
        + "\n" for i, r in enumerate(["the cat is good", "bad cat"])))
    cli("feedback", "import", w / "chat_comp.jsonl", "--db", w / "chat.db", "--campaign", "chat").ok()
    return cli("feedback", "ai-label", "--db", w / "chat.db", "--campaign", "chat", "--judge-model", w / "lm",
               "-o", w / "ai_chat")


@pytest.fixture(scope="module")
def ppo(w, sft, reward):
    return cli("ppo", "--model", w / "sft" / "model", "--prompts", w / "prompts.jsonl", "--reward-model", w / "reward",
               "--steps", 2, "--batch-size", 2, "--mini-batch-size", 2, "--ppo-epochs", 1, "--max-new-tokens", 4,
               "--lora-r", 4, "--save-every", 1, "-o", w / "ppo")


@pytest.fixture(scope="module")
def dpo(w, store):
    pairs = cli("dpo", "--model", w / "lm", "--pairs", w / "pairs.jsonl", "--max-steps", 1, "--batch-size", 2,
                "--max-length", 48, "--lora-r", 4, "-o", w / "dpo")
    kto = cli("dpo", "--loss", "kto", "--model", w / "lm", "--pairs", w / "kto.jsonl", "--max-steps", 1,
              "--batch-size", 2, "--max-length", 48, "--lora-r", 4, "--eval-fraction", 0, "-o", w / "kto")
    return pairs, kto


@pytest.fixture(scope="module")
def evaluated(w, ppo, reward):
    return cli("evaluate", "-m", f"base={w / 'lm'}", "-m", f"ppo={w / 'ppo' / 'model'}", "--prompts",
               w / "prompts.jsonl", "--proxy-scorer", w / "reward", "--max-prompts", 2, "--max-new-tokens", 4,
               "--bootstrap-rounds", 10, "-o", w / "eval")


@pytest.fixture(scope="module")
def revised(w):
    return cli("cai", "revise", "--model", w / "lm", "--prompts", w / "prompts.jsonl", "--rounds", 1, "--limit", 2,
               "--max-new-tokens", 4, "-o", w / "cai")


@pytest.fixture(scope="module")
def converted(w):
    return cli("data", "convert", w / "pairs.jsonl", w / "trl.jsonl", "--to", "trl")


# ------------------------------------------------------------------------------------------------ the checks


def test_sft(w, sft):
    sft.ok()
    assert f"-> {w / 'sft' / 'model'}" in sft.out
    assert (w / "sft" / "model" / "config.json").exists() and (w / "sft" / "manifest.json").exists()


def test_sft_saves_its_model_whatever_it_prints(w, sft):
    """The chain below starts from the SFT model; its manifest names it."""
    man = json.loads((w / "sft" / "manifest.json").read_text())
    assert man["stage"] == "sft" and man["outputs"]["model"] == str(w / "sft" / "model")
    assert (w / "sft" / "model" / "config.json").exists()


def test_generate(w, gen):
    gen.ok()
    out = w / "gen" / "completions.jsonl"
    assert f"wrote 12 completions to {out}" in gen.out
    rows = jsonl(out)
    assert len(rows) == 12 and {r["prompt_id"] for r in rows} == {"p0", "p1", "p2", "p3"}
    assert all(r["model"] == str(w / "sft" / "model") for r in rows)


def test_generate_best_of_writes_the_best_per_prompt(w, best_of):
    best_of[0].ok()
    rows = jsonl(w / "best" / "completions.jsonl")
    assert [r["prompt_id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    assert all(len(r["scores"]) == 3 and r["score"] == max(r["scores"]) for r in rows)


def test_generate_best_of_summary_counts_what_it_wrote(w, best_of):
    assert f"wrote 4 completions to {w / 'best' / 'completions.jsonl'}" in best_of[0].ok().out


def test_generate_best_of_without_scorer_says_so(w, best_of):
    bad = best_of[1]
    assert bad.code == 2 and "scorer" in bad.err and "Traceback" not in bad.err
    assert "<flags>" not in bad.err and "key ''" not in bad.err  # the message names the flag, not an internal key
    assert not (w / "best_noscorer" / "completions.jsonl").exists()


def test_feedback_simulate(w, simulated):
    simulated.ok()
    pairs = w / "sim" / "pairs.jsonl"
    assert f"-> {len(jsonl(pairs))} pairs in {pairs}" in simulated.out
    assert (w / "sim" / "feedback.db").exists() and "judgments" in json.loads((w / "sim" / "report.json").read_text())


def test_feedback_store_commands(w, store):
    db = w / "fb.db"
    assert "feedback store ready at" in store["init"].ok().out and str(db) in store["init"].out and db.exists()
    tokens = [store[n].ok().out.strip() for n in ("alice", "bob", "lead")]
    assert len(set(tokens)) == 3 and all(len(t) >= 20 and "\n" not in t for t in tokens)
    # pairwise: consecutive pairs of each prompt's 3 responses, 2 per prompt; thumbs: one per response
    assert "campaign 'c1': 8 new pairwise tasks, each for 2 annotator(s)" in store["import"].ok().out
    assert "campaign 't1': 12 new thumbs tasks" in store["import_thumbs"].ok().out
    assert "campaign 'c1': 1 gold tasks" in store["gold"].ok().out
    assert "c1: pairwise" in store["status"].ok().out and "judgments" in store["status"].out
    rep = json.loads((w / "fb_report.json").read_text())
    assert "labels; pairwise agreement" in store["report"].ok().out and rep["judgments"] > 0
    pairs = jsonl(w / "fb_pairs.jsonl")
    assert f"wrote {len(pairs)} pairs to {w / 'fb_pairs.jsonl'}" in store["export"].ok().out and pairs
    assert {p["source"] for p in pairs} >= {"human:alice", "human:bob"}
    kto = jsonl(w / "kto.jsonl")
    assert f"wrote {len(kto)} rows ({len(kto)} desirable) to {w / 'kto.jsonl'}" in store["export_kto"].ok().out
    assert len(kto) == 12
    assert "AI suggestions shown" in store["suggestions"].ok().out
    new = store["rotate"].ok().out.strip()
    assert len(new) >= 20 and new != tokens[0]
    assert "bob: token revoked" in store["revoke"].ok().out
    assert "bob: removed" in store["remove"].ok().out


def test_feedback_serve_answers_and_takes_labels(store):
    up, labelled, _, _ = store["serve"]
    assert up, store["serve"][2]
    assert sum(labelled.values()) == 8 * 2 + 12 and min(labelled.values()) > 0  # c1: 8 tasks x 2, t1: 12 x 1


def test_feedback_serve_prints_where_it_listens(store):
    _, _, printed, port = store["serve"]
    assert f"127.0.0.1:{port}" in printed


def test_feedback_ai_label_file_and_store(w, ai_label, store):
    pairs = jsonl(w / "ai" / "pairs.jsonl")
    res = printed_json(ai_label.ok().out)
    assert res["pairs"] == str(w / "ai" / "pairs.jsonl") and pairs
    assert all(p["source"].startswith("ai:") and 0.0 <= p["p"] <= 1.0 for p in pairs)
    stored = printed_json(store["ai_label_db"].ok().out)
    assert stored["pairs"] == str(w / "ai_store" / "pairs.jsonl") and (w / "ai_store" / "pairs.jsonl").exists()


def test_feedback_ai_label_chat_prompts(w, ai_label_chat):
    res = printed_json(ai_label_chat.ok().out)
    assert res["pairs"] == str(w / "ai_chat" / "pairs.jsonl") and len(jsonl(w / "ai_chat" / "pairs.jsonl")) == 1


def test_reward_train(w, reward):
    out = reward[0].ok().out
    assert f"-> {w / 'reward'}" in out and "held-out accuracy" in out
    assert (w / "reward" / "reward_config.json").exists()
    assert "accuracy" in json.loads((w / "reward" / "eval.json").read_text())


def test_reward_eval_writes_its_report(w, reward):
    reward[1].ok()
    rep = json.loads((w / "reward_eval.json").read_text())
    assert 0.0 <= rep["accuracy"] <= 1.0


def test_reward_eval_summary_names_its_output(w, reward):
    out = reward[1].ok().out
    assert str(w / "reward_eval.json") in out and len(out.splitlines()) <= 3


def test_reward_score(w, scored):
    rows = jsonl(w / "scored.jsonl")
    assert f"scored 12 completions -> {w / 'scored.jsonl'}" in scored.ok().out
    assert len(rows) == 12 and all(isinstance(r["score"], float) and "raw_score" in r for r in rows)


def test_ppo(w, ppo):
    assert f"policy saved to {w / 'ppo' / 'model'}" in ppo.ok().out
    assert [r["step"] for r in jsonl(w / "ppo" / "metrics.jsonl")] == [1, 2]
    assert (w / "ppo" / "model" / "adapter_config.json").exists() or (w / "ppo" / "model" / "config.json").exists()


def test_dpo_and_kto(w, dpo):
    for res, folder, unit in zip(dpo, ("dpo", "kto"), ("pair", "row")):
        out = res.ok().out  # one line: the loss, steps, what it trained on, where the model went
        assert f"trained 1 step on " in out and f"-> {w / folder / 'model'}" in out
        assert re.search(rf"on \d+ {unit}s?\b", out)
        assert (w / folder / "model").is_dir() and (w / folder / "manifest.json").exists()
    assert json.loads((w / "kto" / "manifest.json").read_text())["config"]["loss"] == "kto"


def test_evaluate(w, evaluated):
    out = evaluated.ok().out
    assert f"report: {(w / 'eval' / 'report.html').resolve()}" in out and "base:" in out.replace(" ", "")
    rep = json.loads((w / "eval" / "report.json").read_text())
    assert set(rep["models"]) == {"base", "ppo"} and "<html" in (w / "eval" / "report.html").read_text().lower()


def test_cai_revise(w, revised):
    res = printed_json(revised.ok().out)
    assert len(jsonl(w / "cai" / "sft.jsonl")) == 2 and len(jsonl(w / "cai" / "revisions.jsonl")) >= 2
    assert str(w / "cai") in json.dumps(res)


def test_data_convert(w, converted):
    assert f"wrote 8 pairs to {w / 'trl.jsonl'}" in converted.ok().out
    assert all(set(r) >= {"prompt", "chosen", "rejected"} for r in jsonl(w / "trl.jsonl"))


# ------------------------------------------------------------------------------------------------ recipes, demo


def _packaged():
    from rlhaif.pipeline import packaged_recipes

    return packaged_recipes()


@pytest.mark.parametrize("name", sorted(_packaged()))
def test_every_packaged_recipe_checks_by_name_and_by_path(name):
    path = _packaged()[name]
    for ref in (name, path):
        res = cli("run", ref, "--check").ok()
        n = len(yaml.safe_load(path.read_text())["stages"])
        assert f"{ref}: ok ({n} stages" in res.out
    assert cli("run", name, "--show").ok().out == path.read_text()


@pytest.mark.parametrize("flags", [[], ["--cai"], ["--human"]])
def test_demo_check(flags, tmp_path):
    res = cli("demo", *flags, "--check", "--run-dir", tmp_path / "demo").ok()
    assert f"stages into {tmp_path / 'demo'}" in res.out and not (tmp_path / "demo").exists()


@pytest.fixture(scope="module")
def dpo_recipe_run(w):
    """The cheapest packaged recipe (dpo: pairs -> reward -> dpo -> evaluate), its models and sizes swapped for
    tiny ones; the wiring is the packaged file's."""
    data = yaml.safe_load(_packaged()["dpo"].read_text())
    data["policy"] = str(w / "lm")
    small = {"pairs": dict(inputs=[str(w / "pairs.jsonl")]),
             "reward": dict(backbone=str(w / "rm"), max_length=48, epochs=1, eval_fraction=0.25),
             "dpo": dict(max_steps=2, batch_size=2, max_length=48, lora_r=4),
             "evaluate": dict(prompts=str(w / "prompts.jsonl"), max_prompts=2, max_new_tokens=4, k=1,
                              bootstrap_rounds=10)}
    for st in data["stages"]:
        st.update(small.get(st["stage"], {}))
    (w / "dpo_recipe.yaml").write_text(yaml.safe_dump(data))
    return cli("run", w / "dpo_recipe.yaml", "--run-dir", w / "recipe_run")


def test_cheapest_recipe_runs(w, dpo_recipe_run):
    out = dpo_recipe_run.ok().out
    run = w / "recipe_run"
    for name in ("pairs", "judge_rm", "dpo", "evaluate"):
        assert f"ran  {name}  ->  {run / name}" in out
        assert (run / name / "manifest.json").exists()
    assert f"report: {(run / 'evaluate' / 'report.html').resolve()}" in out
    summary = json.loads((run / "run_summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["pairs", "judge_rm", "dpo", "evaluate"]


def test_every_command_ran(sft, gen, reward, scored, best_of, simulated, store, ai_label, ai_label_chat, ppo, dpo,
                           evaluated, revised, converted, dpo_recipe_run):
    """Every command `rlhaif --help` lists (walked down every group) was run by a fixture above; `run` and `demo`
    by the recipe tests (and `rlhaif demo` end to end by tests/test_quickstart.py)."""
    from rlhaif.cli import build

    def leaves(group, prefix=()):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from leaves(cmd, prefix + (name,))
            else:
                yield prefix + (name,)

    every = set(leaves(build()))
    assert len(every) >= 26
    ran = INVOKED | {("demo",)}  # demo: test_demo_check here, end to end in test_quickstart.py
    assert every - ran == set(), f"commands no smoke test runs: {sorted(every - ran)}"


# ------------------------------------------------------------------------------------------------ the docs

DOCS = [Path(__file__).parent.parent / "README.md", *sorted((Path(__file__).parent.parent / "docs").glob("*.md"))]


def documented_command_lines(text: str) -> list[str]:
    """Every `rlhaif ...` line of the page's bash / console blocks (continuations joined, `$ ` dropped)."""
    lines = []
    for block in re.findall(r"```(?:bash|console|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("rlhaif "):
                lines.append(line)
    return lines


def parse_error(line: str) -> str | None:
    """Why `line` would not get past the command line parser (unknown command or flag, bad or missing value);
    None when it parses. Nothing runs."""
    from rlhaif.cli import build

    words = shlex.split(line, comments=True)
    for stop in ("|", ">", "&&", ";"):
        words = words[:words.index(stop)] if stop in words else words
    root = build()
    cmd, args, parent = root, words[1:], root.make_context("rlhaif", [], resilient_parsing=True)
    while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
        cmd, args = cmd.commands[args[0]], args[1:]
    if hasattr(cmd, "commands") and args != ["--help"]:
        return f"not a command: {' '.join(words[:3])}"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cmd.make_context(cmd.name, list(args), parent=parent)
    except Exception as e:  # click's and typer's vendored click's exceptions alike
        return None if type(e).__name__ == "Exit" else f"{type(e).__name__}: {e}"
    return None


def test_the_parse_check_can_fail():
    assert parse_error("rlhaif feedback export --db f.db -o p.jsonl --keep-flagged") is None
    assert parse_error("rlhaif run rlhf --show > my.yaml") is None
    assert "No such option" in parse_error("rlhaif generate --prompts p.jsonl --nope 1")
    assert "not a command" in parse_error("rlhaif feedback nope --db f.db")
    assert "not a valid integer" in parse_error("rlhaif ppo --prompts p.jsonl --steps x")
    assert "Missing" in parse_error("rlhaif run --check")


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_documented_command_line_parses(page):
    """Beyond the ones run above and in test_quickstart.py: every `rlhaif` line the README and docs/ show names
    a real command with real flags and well-typed values."""
    lines = documented_command_lines(page.read_text())
    bad = {line: err for line in lines if (err := parse_error(line))}
    assert not bad, "\n".join(f"{line}\n  -> {err}" for line, err in bad.items())


def test_run_help_names_every_packaged_recipe(monkeypatch):
    from rlhaif.cli.run import PACKAGED

    monkeypatch.setenv("COLUMNS", "200")  # a narrow terminal cuts the help's lines short
    assert PACKAGED == sorted(_packaged()) and len(PACKAGED) == 9
    text = re.sub(r"[\s│]", "", cli("run", "--help").ok().out)  # rich wraps and boxes the help
    assert all(name in text for name in PACKAGED)
