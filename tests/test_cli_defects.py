"""Defects a first user met on the command line (issue 24, §1), each through the real command: exit code and
what it prints."""

import json
import os
from pathlib import Path

import pytest
import yaml

from rlhaif.cli import main

TOY = '''
from pathlib import Path
from rlhaif.config import StageConfig

class ToyConfig(StageConfig):
    output_dir: str
    value: int = 0

def run_toy(cfg: ToyConfig) -> dict:
    Path(cfg.output_dir, "out.txt").write_text(str(cfg.value))
    return {"value": cfg.value}
'''


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
    assert f"{run / 'sft'} holds results of the recipe {first}" in err and "--run-dir" in err and "--force" in err
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
    assert code == 2 and "holds results of a stage run outside this recipe" in err
    assert (run / "sft" / "out.txt").read_text() == "2"


def test_each_demo_has_its_own_folder(capsys):
    folders = {}
    for flags in ([], ["--cai"], ["--hh-rlhf", __file__], ["--human"]):
        code, out, err = _cli(["demo", "--check", *flags], capsys)
        assert code == 0, err
        folders[" ".join(flags[:1])] = out.strip().splitlines()[-1].rsplit(" into ", 1)[1]
    assert folders == {"": "runs/demo", "--cai": "runs/demo-cai", "--hh-rlhf": "runs/demo-hh",
                       "--human": "runs/demo-human"}
