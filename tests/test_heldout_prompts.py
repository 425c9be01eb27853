"""The held-out evaluation prompts are never trained on: no prompt of heldout_eval_prompts.jsonl appears in
any other bundled data file, and no recipe trains on the file its evaluate stage uses."""

import json
import re
from pathlib import Path

import yaml

from rlhaif.generate import read_prompts
from rlhaif.reward.pairs import parse_lines

ASSETS = Path(__file__).resolve().parents[1] / "src" / "rlhaif" / "assets"
HELDOUT = ASSETS / "prompts" / "heldout_eval_prompts.jsonl"


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def prompts_of(path: Path) -> set[str]:
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        p = json.loads(line).get("prompt")
        if p is not None:
            out.add(norm(p if isinstance(p, str) else " ".join(m["content"] for m in p if m["role"] == "user")))
    return out


def test_heldout_file_is_large_varied_and_readable():
    records = read_prompts(str(HELDOUT))
    kinds = [json.loads(l)["kind"] for l in HELDOUT.read_text().splitlines()]
    assert len(records) >= 100
    assert len({norm(r.prompt) for r in records}) == len(records)  # no repeats
    assert len({r.id for r in records}) == len(records)
    assert kinds.count("everyday") >= 50 and kinds.count("red-team") >= 40


def test_heldout_prompts_appear_in_no_training_file():
    held = prompts_of(HELDOUT)
    others = [p for p in ASSETS.rglob("*.jsonl") if p != HELDOUT]
    assert any(p.name == "demo_prompts.jsonl" for p in others) and any(p.name == "demo_sft.jsonl" for p in others)
    for path in others:
        shared = held & prompts_of(path)
        assert not shared, f"{path.name} shares {len(shared)} prompt(s) with the held-out set, e.g. {sorted(shared)[0]!r}"


def _asset_files(value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v.replace("${assets}/", "") for v in values if isinstance(v, str) and v.startswith("${assets}/")]


def _lines(spec: str) -> set[int]:
    first, last = parse_lines(spec, "lines")  # the reader's own parser of "1-62"
    return set(range(first, last + 1))


def test_no_recipe_trains_on_the_prompts_it_evaluates_on():
    for recipe in sorted((ASSETS / "recipes").glob("*.yaml")):
        stages = yaml.safe_load(recipe.read_text())["stages"]
        trained = {f for s in stages if s["stage"] != "evaluate" for k in ("prompts", "data", "inputs")
                   for f in _asset_files(s.get(k))}
        evaluated = {f for s in stages if s["stage"] == "evaluate" for f in _asset_files(s.get("prompts"))}
        if trained and not evaluated:  # reward models held out by lines of the pool they buy from (active-labels)
            bought = [_lines(s["pool_lines"]) for s in stages if s["stage"] == "select"]
            held_out = [_lines(s["eval_lines"]) for s in stages if s.get("eval_lines")]
            assert bought and held_out and not set().union(*bought) & set().union(*held_out), recipe.name
            continue
        assert trained and evaluated, recipe.name
        assert not trained & evaluated, f"{recipe.name} trains on {trained & evaluated}"
        held = set().union(*(prompts_of(ASSETS / f) for f in evaluated))
        for f in trained:
            assert not held & prompts_of(ASSETS / f), f"{recipe.name}: {f} holds evaluation prompts"
