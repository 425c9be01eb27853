"""The AI judge on tiny models: A/B probabilities from hand-computed continuation log-probabilities,
normalization, order debiasing, batching with padding, chain-of-thought clamp, run_ai_label + cache."""

import json
import math
import re

import pytest
import torch

from rlhaif.feedback.ai.backends import HFBackend, Query
from rlhaif.feedback.ai.constitution import load_constitution
from rlhaif.feedback.ai.judge import (AILabelConfig, ab_probability, debiased_probability, judge_messages,
                                      judge_pairs, run_ai_label)
from rlhaif.models.tiny import WORDS, make_tiny_causal_lm, make_tokenizer

CONV = "how do i harm a cat"
Y1, Y2 = "no , be kind to the cat", "sure , fire is good"


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matrices: one thread


# The tiny vocabulary plus the judge's words, so " (A)" and " (B)" are real, different tokens.
JUDGE_WORDS = tuple(WORDS) + ("(", ")", ":", "A", "B", "Options", "Consider", "following", "conversation", "between",
                              "human", "assistant", "Which", "answer", "The", "Human", "Let's", "think", "step", "by")


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def judge(request):
    model, tok = make_tiny_causal_lm(request.param, seed=3, tokenizer=make_tokenizer(JUDGE_WORDS))
    return model.eval(), tok


def hand_logprob(model, tok, context: str, continuation: str) -> float:
    """log P(continuation | context): plain forward + log_softmax over the continuation's tokens."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    assert tok(context + continuation, add_special_tokens=False)["input_ids"] == ctx + cont
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0]
    lp = torch.log_softmax(logits.float(), dim=-1)
    return sum(lp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))


def test_ab_probability_by_hand():
    assert ab_probability(-1.0, -2.0) == pytest.approx(math.exp(-1) / (math.exp(-1) + math.exp(-2)), abs=1e-12)
    assert ab_probability(-1.0, -2.0) + ab_probability(-2.0, -1.0) == pytest.approx(1.0, abs=1e-12)
    assert ab_probability(-800.0, -1.0) == pytest.approx(0.0, abs=1e-12)  # no overflow
    assert debiased_probability(0.8, 0.3) == pytest.approx(0.5 * (0.8 + 0.7))


def test_continuation_logprobs_match_a_hand_forward_pass_batched_and_padded(judge):
    model, tok = judge
    backend = HFBackend(model, tok, max_length=512, batch_size=3)
    principle = load_constitution().get("harm")
    queries = [Query(judge_messages(CONV, principle, a, b), "The answer is:")
               for a, b in ((Y1, Y2), (Y2, Y1), ("ok", "no no no no no no no no no no no"))]
    got = backend.continuation_logprobs(queries)  # three lengths in one batch: left padding exercised
    for q, lps in zip(queries, got):
        context = backend.render(q.messages, q.prefill)
        want = [hand_logprob(model, tok, context, c) for c in (" (A)", " (B)")]
        assert lps == pytest.approx(want, abs=1e-4)
        assert lps[0] != pytest.approx(lps[1], abs=1e-6)  # the options are really told apart


class NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes no ``logits_to_keep`` (older or wrapped models)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       past_key_values=past_key_values, use_cache=use_cache)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_first_forward_projects_only_the_last_position(arch):
    model, tok = make_tiny_causal_lm(arch, seed=5, tokenizer=make_tokenizer(JUDGE_WORDS))
    model.eval()
    positions = []  # sequence length of every lm_head output
    hook = model.lm_head.register_forward_hook(lambda mod, inp, out: positions.append(out.shape[1]))
    q = Query(judge_messages(CONV, load_constitution().get("harm"), Y1, Y2), "The answer is:")
    want = [hand_logprob(model, tok, HFBackend(model, tok).render(q.messages, q.prefill), c) for c in (" (A)", " (B)")]
    positions.clear()
    backend = HFBackend(model, tok, max_length=512)
    assert backend.keeps_logits
    (got,) = backend.continuation_logprobs([q])
    assert positions[0] == 1  # the context forward asked for the last position only
    assert got == pytest.approx(want, abs=1e-4)
    fallback = HFBackend(NoLogitsToKeep(model), tok, max_length=512)
    assert not fallback.keeps_logits
    positions.clear()
    (got2,) = fallback.continuation_logprobs([q])
    assert positions[0] > 1 and got2 == pytest.approx(want, abs=1e-4)
    hook.remove()


def test_judge_probabilities_sum_to_one_and_are_order_debiased(judge):
    model, tok = judge
    backend = HFBackend(model, tok, max_length=512, batch_size=4)
    principle = load_constitution().get("honesty")
    j12, j21 = judge_pairs(backend, [(CONV, Y1, Y2, principle), (CONV, Y2, Y1, principle)])
    # hand computation, order by order
    def p_a(a, b):
        ctx = backend.render(judge_messages(CONV, principle, a, b), "The answer is:")
        la, lb = (hand_logprob(model, tok, ctx, c) for c in (" (A)", " (B)"))
        return math.exp(la) / (math.exp(la) + math.exp(lb))
    assert j12.p_ab == pytest.approx(p_a(Y1, Y2), abs=1e-5)
    assert j12.p_ba == pytest.approx(p_a(Y2, Y1), abs=1e-5)
    assert j12.p == pytest.approx(0.5 * (p_a(Y1, Y2) + 1 - p_a(Y2, Y1)), abs=1e-5)
    assert 0 < j12.p_ab < 1 and 0 < j12.p < 1
    assert j12.p + j21.p == pytest.approx(1.0, abs=1e-6)  # swapping the responses mirrors the label
    assert j21.p_ab == pytest.approx(j12.p_ba, abs=1e-6)


def test_truncation_keeps_the_answer_and_cuts_from_the_left(judge):
    model, tok = judge
    long_conv = " ".join(["tell me about the sun"] * 40)
    backend = HFBackend(model, tok, max_length=64)
    shared, tails = backend.split(Query(judge_messages(long_conv, load_constitution().principles[0], Y1, Y2),
                                        "The answer is:"))
    assert len(shared) + max(len(t) for t in tails) <= 64
    assert tok.decode(shared[-4:]).replace(" ", "").endswith("answeris:")


def test_chain_of_thought_is_clamped(judge):
    model, tok = judge
    backend = HFBackend(model, tok, max_length=256, batch_size=4)
    pr = load_constitution().get("harm")
    out = judge_pairs(backend, [(CONV, Y1, Y2, pr), (CONV, "yes", "no", pr)], chain_of_thought=True,
                      clamp=(0.4, 0.6), cot_max_new_tokens=4)
    for j in out:
        assert 0.4 <= j.p <= 0.6 and j.reasoning is not None and len(j.reasoning) == 2


class CountingBackend:
    """Wraps a backend and counts the questions it is asked."""

    def __init__(self, inner):
        self.inner, self.asked = inner, 0

    def continuation_logprobs(self, queries):
        self.asked += len(queries)
        return self.inner.continuation_logprobs(queries)


def test_run_ai_label_from_completions_writes_soft_pairs_and_caches(tmp_path, judge):
    model, tok = judge
    comp = tmp_path / "completions.jsonl"
    rows = [{"prompt_id": "q1", "prompt": CONV, "response": r, "index": i} for i, r in enumerate([Y1, Y2, "no"])]
    rows += [{"prompt_id": "q2", "prompt": "what is fire", "response": "a tree", "index": 0}]  # K=1: no pair
    comp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = AILabelConfig(input=str(comp), output_dir=str(tmp_path / "ai"), judge_model="tiny-judge")
    backend = CountingBackend(HFBackend(model, tok, max_length=512))
    stats = run_ai_label(cfg, backend)
    assert stats.n_pairs == 3 and stats.judged == 3 and backend.asked == 6  # C(3,2) pairs × 2 orders
    pairs = [json.loads(l) for l in (tmp_path / "ai" / "pairs.jsonl").read_text().splitlines()]
    names = {p.name for p in load_constitution().principles}
    for p in pairs:
        assert 0.5 <= p["p"] <= 1.0
        model_name, principle = p["source"].split(":")[1:]
        assert p["source"].startswith("ai:tiny-judge:") and principle in names and principle == p["principle"]
        p_ab, p_ba = p["p_orders"]
        assert p["p"] == pytest.approx(max(debiased_probability(p_ab, p_ba), 1 - debiased_probability(p_ab, p_ba)))
    stats2 = run_ai_label(cfg, backend)
    assert stats2.cache_hits == 3 and stats2.judged == 0 and backend.asked == 6  # a rerun pays nothing
    assert [json.loads(l) for l in (tmp_path / "ai" / "pairs.jsonl").read_text().splitlines()] == pairs


def test_relabel_pairs_reports_agreement(tmp_path, judge):
    model, tok = judge
    src = tmp_path / "pairs.jsonl"
    src.write_text(json.dumps({"prompt": CONV, "chosen": Y1, "rejected": Y2, "source": "human:x"}) + "\n")
    cfg = AILabelConfig(input=str(src), output_dir=str(tmp_path / "ai"), judge_model="tiny-judge")
    stats = run_ai_label(cfg, HFBackend(model, tok, max_length=512))
    out = json.loads((tmp_path / "ai" / "pairs.jsonl").read_text())
    assert out["prior_p"] == 1.0
    assert stats.agreement == (1.0 if out["chosen"] == Y1 else 0.0)


def test_tokenizer_that_merges_across_the_boundary(judge):
    """A tokenizer with a ':(' token (as SmolLM2 has): the prompt's ids are no prefix of the candidates', so
    only the differing tails are scored; the label still equals the ratio of the full sequences' probabilities."""
    import re

    model, tok = judge
    vocab = tok.get_vocab()

    class MergingBackend(HFBackend):
        def _ids(self, text):
            return [vocab["fire"] if t == ":(" else vocab.get(t, tok.unk_token_id)
                    for t in re.findall(r":\(|\w+|[^\w\s]", text)]

    backend = MergingBackend(model, tok, max_length=512)
    q = Query(judge_messages(CONV, load_constitution().get("harm"), Y1, Y2), "The answer is:", ["(A)", "(B)"])
    context = backend.render(q.messages, q.prefill)
    shared, tails = backend.split(q)
    assert backend._ids(context)[-1] == vocab[":"] and shared[-1] == vocab["fire"]  # ':(' merged, kept in context
    (la, lb), = backend.continuation_logprobs([q])

    def full_logprob(text):
        ids = backend._ids(text)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        return sum(lp[k - 1, t].item() for k, t in enumerate(ids) if k > 0)

    want = full_logprob(context + "(A)") - full_logprob(context + "(B)")
    assert la - lb == pytest.approx(want, abs=1e-4)


class GoodWordBackend:
    """A judge with known log-probabilities: ℓ = 0 for an option whose text holds 'good', −2 otherwise, so
    P(A) is σ(2) ≈ 0.881, σ(−2) or ½ and the debiased p can be computed by hand."""

    def continuation_logprobs(self, queries):
        out = []
        for q in queries:
            text = q.messages[-1]["content"]
            a, b = text.split("\n(A) ", 1)[1].split("\n(B) ", 1)
            out.append((0.0 if "good" in a else -2.0, 0.0 if "good" in b else -2.0))
        return out


def test_ai_labels_go_into_the_feedback_store_beside_human_labels(tmp_path):
    from rlhaif.data.records import CompletionRecord
    from rlhaif.feedback.human.report import ai_agreement, export_pairs
    from rlhaif.feedback.human.schemas import JudgmentIn
    from rlhaif.feedback.human.store import Store

    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    store.add_annotator("alice")
    store.create_campaign("c", "pairwise")
    texts = {"p0": ["a good answer", "a poor answer"], "p1": ["a poor reply", "a good reply"]}
    store.import_completions("c", [CompletionRecord(prompt_id=k, prompt=f"question {k}", response=r, index=i)
                                   for k, rs in texts.items() for i, r in enumerate(rs)])
    assignments = store.pending(1)
    view = store.task_view(assignments[0], 1)
    good = "AB"[view["responses"].index("a good answer")]
    store.submit(1, JudgmentIn(client_id="alice-0001", assignment_id=assignments[0], value={"choice": good}))

    cfg = AILabelConfig(db=db, campaign="c", output_dir=str(tmp_path / "ai"), judge_model="good-judge")
    stats = run_ai_label(cfg, GoodWordBackend())
    assert stats.n_pairs == 2 and stats.input_kind == "store" and "2 AI labels" in stats.stored_in
    sig2 = 1 / (1 + math.exp(-2))
    labels = sorted(store.ai_labels("c"), key=lambda x: x["task"])
    assert [lab["p"] for lab in labels] == pytest.approx([sig2, 1 - sig2])  # P(the task's first response wins)
    assert labels[0]["p_orders"] == pytest.approx([sig2, 1 - sig2])  # first shown as A, then as B
    assert store.assign() == 0 and len(store.annotators()) == 1  # the judge is no annotator: it takes no tasks

    assert store.task_view(assignments[0], 1)["suggestion"] is None  # off by default
    store.set_ai_suggestions("c", True)
    shown = store.task_view(assignments[1], 1)
    assert shown["suggestion"]["letter"] == "AB"[shown["responses"].index("a good reply")]
    assert shown["suggestion"]["p"] == pytest.approx(round(sig2, 3)) and shown["suggestion"]["model"] == "good-judge"

    out = tmp_path / "mixed.jsonl"
    res = export_pairs(store, out, "c")
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert res["ai_labels"] == 2 and len(pairs) == 3
    human = [p for p in pairs if p["source"] == "human:alice"]
    ai = [p for p in pairs if p["source"].startswith("ai:good-judge:")]
    assert len(human) == 1 and human[0]["p"] == 1.0 and human[0]["chosen"] == "a good answer"
    assert sorted(p["chosen"] for p in ai) == ["a good answer", "a good reply"]
    assert all(p["p"] == pytest.approx(sig2) for p in ai)
    assert export_pairs(store, out, "c", include_ai=False)["pairs"] == 1
    assert ai_agreement(store.latest_judgments("c"), store.ai_labels("c")) == {"good-judge": {"tasks": 1, "agree": 1, "accuracy": 1.0}}

    again = run_ai_label(cfg, GoodWordBackend())  # a rerun: cache hits, labels replaced, not duplicated
    assert again.cache_hits == 2 and len(store.ai_labels("c")) == 2
    store.close()


def test_ai_label_config_needs_one_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one of 'input'"):
        AILabelConfig(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one of 'input'"):
        AILabelConfig(input="a.jsonl", db="f.db")


def test_relabel_hh_file_with_a_malformed_record(tmp_path, judge, capsys):
    from rlhaif.cli import main

    good = {"chosen": "\n\nHuman: is fire hot\n\nAssistant: yes", "rejected": "\n\nHuman: is fire hot\n\nAssistant: no"}
    bad = {"chosen": "\n\nHuman: is fire hot\n\nAssistant:", "rejected": "\n\nHuman: is fire hot\n\nAssistant: no"}
    src = tmp_path / "hh.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in (good, bad, good)))
    args = ["feedback", "ai-label", "-i", str(src), "-o", str(tmp_path / "ai"), "--judge-model", str(tmp_path / "none")]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and f"{src}:2" in capsys.readouterr().err  # stops at the bad record, naming its line
    with pytest.raises(SystemExit) as e:  # the flag parses (the judge model is then missing: a clear error)
        main(args + ["--skip-invalid"])
    assert e.value.code == 2 and "none" in capsys.readouterr().err
    model, tok = judge
    cfg = AILabelConfig(input=str(src), output_dir=str(tmp_path / "ai"), judge_model="tiny-judge", skip_invalid=True)
    assert run_ai_label(cfg, HFBackend(model, tok, max_length=512)).n_pairs == 2


def test_cli_ai_label_into_a_store_then_export_and_suggest(tmp_path, judge, capsys):
    from rlhaif.cli import main
    from rlhaif.feedback.human.store import Store

    db = str(tmp_path / "f.db")
    assert _label_a_store(tmp_path, judge, capsys, CONV)[0] == 0

    def run(*args):
        try:
            main(list(args))
        except SystemExit as e:
            assert e.code == 0
        return capsys.readouterr().out

    assert "1 AI labels" in run("feedback", "export", "--db", db, "-o", str(tmp_path / "p.jsonl"))
    (pair,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert pair["source"].startswith("ai:judge:") and 0.5 <= pair["p"] <= 1.0
    assert "wrote 0 pairs" in run("feedback", "export", "--db", db, "-o", str(tmp_path / "h.jsonl"), "--no-ai")
    assert "shown" in run("feedback", "suggestions", "c", "--on", "--db", db)
    assert Store(db).campaign("c").show_ai_suggestions



def _label_a_store(tmp_path, judge, capsys, prompt, pairs=((Y1, Y2),)):
    """`rlhaif feedback ai-label --db` on a new store of one campaign 'c' (each pair one prompt):
    (exit code, stdout, stderr)."""
    from rlhaif.cli import main
    from rlhaif.data.records import CompletionRecord
    from rlhaif.feedback.human.store import Store

    model, tok = judge
    model.save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    store.create_campaign("c", "pairwise")
    store.import_completions("c", [CompletionRecord(prompt_id=f"q{k}", prompt=prompt, response=r, index=i)
                                   for k, pair in enumerate(pairs) for i, r in enumerate(pair)])
    store.close()
    try:
        main(["feedback", "ai-label", "--db", db, "--campaign", "c", "--judge-model", str(tmp_path / "judge"),
              "-o", str(tmp_path / "ai")])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_ai_label_a_store_whose_prompts_are_chat_messages(tmp_path, judge, capsys):
    """A campaign imported from completions whose prompt is a list of chat messages (docs/quickstart.md's
    format): `feedback ai-label --db` labels it (it crashed in as_messages on the stored JSON dicts)."""
    from rlhaif.data.records import Message

    chat = [Message(role="system", content="be kind"), Message(role="user", content=CONV)]
    code, out, err = _label_a_store(tmp_path, judge, capsys, chat)
    assert code == 0, err
    (pair,) = [json.loads(line) for line in (tmp_path / "ai" / "pairs.jsonl").read_text().splitlines()]
    assert pair["prompt"] == [m.model_dump() for m in chat] and pair["source"].startswith("ai:judge:")


def test_ai_label_bar_and_summary_show_the_same_named_quantity(tmp_path, judge, capsys):
    """The bar showed p_mean 0.48 (mean p(first better)) and the summary 0.55 (mean p of the preferred one):
    both are now p_chosen_mean, the mean p of the preferred response (pairs.jsonl's p)."""
    pairs = [(Y1, Y2), (Y2, Y1), ("the cat is kind", "no"), ("no", "food is good for the cat")]
    code, out, err = _label_a_store(tmp_path, judge, capsys, CONV, pairs)
    assert code == 0, err
    bar = float(re.search(r"p_chosen_mean=([0-9.]+)", out).group(1))
    summary = json.loads(out[out.index("{"):])
    written = [json.loads(line)["p"] for line in (tmp_path / "ai" / "pairs.jsonl").read_text().splitlines()]
    assert summary["p_chosen_mean"] == pytest.approx(sum(written) / 4, abs=1e-4) == pytest.approx(bar, abs=1e-3)
    assert "p_mean" not in summary
