"""Judge backends: log-probabilities of candidate continuations, and text generation for chain of thought.

A ``Query`` is one judge question: chat ``messages`` (the conversation to judge, the principle's question,
the options), an assistant ``prefill`` ("The answer is:") and the candidate ``continuations``
(" (A)", " (B)"). ``continuation_logprobs`` returns, per query, log P(continuation | prompt + prefill) for
each candidate, summed over all of its tokens.

Tokenizers merge characters across the prompt/continuation boundary (SmolLM2 has "Ġ(" and ":("), so we
never tokenize the continuation alone: each candidate's *full* text is tokenized. When the prompt's own
tokens are a prefix of every candidate, the whole continuation is scored; when a token straddles the
boundary, the longest token prefix shared by all candidates is the context and the differing tails are
scored. Whatever the candidates share cancels in the normalized probability, so both are exact.

Backends:
- ``HFBackend``: a local transformers model. One batched forward over the shared contexts (left padded,
  KV cache kept), then one short forward over every candidate's tail with the cache repeated per candidate.
- ``OpenAIBackend``: any OpenAI-compatible server (vLLM, Ollama, OpenAI). ``/v1/completions`` with
  ``echo`` + ``logprobs`` scores the full continuations; ``/v1/chat/completions`` with ``logprobs`` +
  ``top_logprobs`` reads the option letters among the top tokens of the answer. A server that returns no
  log-probabilities (``NoLogprobs``) is asked for sampled ``verdicts`` instead: n answers, each parsed for
  the option letter it names. Retries on 429/5xx and on
  timeouts with exponential backoff, a concurrency limit and a request-rate limit.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from rlhaif.errors import RlhaifError


class EndpointError(RlhaifError):
    """An HTTP error the endpoint answered that is not worth retrying (4xx other than 429)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class NoLogprobs(RlhaifError):
    """The endpoint answered without log-probabilities: the judge can ask for sampled verdicts instead."""


@dataclass
class Query:
    """One judge question with its candidate continuations."""

    messages: list[dict[str, str]]
    prefill: str
    continuations: list[str] = field(default_factory=lambda: [" (A)", " (B)"])


def plain_transcript(messages: Sequence[dict[str, str]], prefill: str) -> str:
    """The Human/Assistant transcript of the CAI paper, for models and endpoints without a chat template."""
    turns = "".join(f"{'Human' if m['role'] != 'assistant' else 'Assistant'}: {m['content']}\n\n" for m in messages)
    return f"{turns}Assistant: {prefill}"


def common_prefix_len(seqs: Sequence[Sequence]) -> int:
    """Length of the longest prefix shared by all sequences."""
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


# --------------------------------------------------------------------------------------------- local model
class HFBackend:
    """Log-probabilities from a local Hugging Face causal LM (batched, KV cache shared across candidates)."""

    def __init__(self, model, tokenizer, name: str = "local", max_length: int = 384, batch_size: int = 8,
                 use_chat_template: bool = True):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_length, self.batch_size = max_length, batch_size
        self.use_chat_template = use_chat_template and bool(getattr(tokenizer, "chat_template", None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def render(self, messages: Sequence[dict[str, str]], prefill: str) -> str:
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return text + prefill
        return plain_transcript(messages, prefill)

    def _ids(self, text: str) -> list[int]:
        # The chat template already holds any BOS; a plain transcript gets the tokenizer's special tokens.
        return list(self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"])

    def split(self, q: Query) -> tuple[list[int], list[list[int]]]:
        """(shared context ids, candidate tail ids), the context cut from the left to fit ``max_length``."""
        prefix = self.render(q.messages, q.prefill)
        full = [self._ids(prefix + c) for c in q.continuations]
        n = common_prefix_len(full)
        p_ids = self._ids(prefix)
        if all(f[:len(p_ids)] == p_ids for f in full):  # no merge across the boundary: score every token
            n = min(n, len(p_ids))
        if n == 0:
            raise RlhaifError("judge query has no shared context before its continuations")
        shared, tails = full[0][:n], [f[n:] for f in full]
        keep = self.max_length - max(len(t) for t in tails)
        return shared[-max(keep, 1):], tails

    def continuation_logprobs(self, queries: Sequence[Query]) -> list[list[float]]:
        import torch

        splits = [self.split(q) for q in queries]
        order = sorted(range(len(queries)), key=lambda i: len(splits[i][0]))  # similar lengths, less padding
        out: list[list[float]] = [[] for _ in queries]
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                for i, lps in zip(idx, self._score_batch([splits[i] for i in idx])):
                    out[i] = lps
        return out

    def _score_batch(self, batch: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        import torch

        from rlhaif.policy.decoder import cache_argument, returned_cache
        from rlhaif.tokens import left_pad

        device = next(self.model.parameters()).device
        C = len(batch[0][1])
        assert all(len(t) == C for _, t in batch), "every query in a batch needs the same number of candidates"
        ids, mask = left_pad([s for s, _ in batch], self.pad_id, device)  # (B, L)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # Only the last position's logits are needed: logits_to_keep=1 skips the (B, L, vocab) projection.
        keep = {"logits_to_keep": 1} if self.keeps_logits else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): log P(first tail token | context)
        scores = [[first[b, t[0]].item() if t else 0.0 for t in tails] for b, (_, tails) in enumerate(batch)]
        rest = [t[:-1] for _, tails in batch for t in tails]  # inputs predicting tail[1:], rows ordered (b, c)
        T = max(len(r) for r in rest)
        if T == 0:
            return scores
        cache = returned_cache(out)
        cache.batch_repeat_interleave(C)
        tail_ids = torch.full((len(rest), T), self.pad_id, dtype=torch.long, device=device)
        tail_mask = torch.zeros((len(rest), T), dtype=torch.long, device=device)
        for r, seq in enumerate(rest):
            tail_ids[r, :len(seq)] = torch.tensor(seq, device=device)
            tail_mask[r, :len(seq)] = 1
        attn = torch.cat([mask.repeat_interleave(C, 0), tail_mask], dim=1)  # (B*C, L+T), right pad in the tail
        tail_pos = pos[:, -1:].repeat_interleave(C, 0) + torch.arange(1, T + 1, device=device)
        logits = self.model(input_ids=tail_ids, attention_mask=attn, position_ids=tail_pos,
                            **{cache_argument(self.model): cache}, use_cache=True).logits
        lp = torch.log_softmax(logits.float(), dim=-1)  # (B*C, T, V)
        for b, (_, tails) in enumerate(batch):
            for c, t in enumerate(tails):
                r = b * C + c
                scores[b][c] += sum(lp[r, k, t[k + 1]].item() for k in range(len(t) - 1))
        return scores

    def generate(self, prompts: Sequence[tuple[list[dict[str, str]], str]], max_new_tokens: int = 128,
                 temperature: float = 1.0, seed: int = 0) -> list[str]:
        """Sample one continuation of each (messages, prefill) prompt (chain-of-thought reasoning)."""
        import torch

        from rlhaif.generate import SamplingConfig, sample

        torch.manual_seed(seed)
        ids = [self._ids(self.render(m, p))[-self.max_length:] for m, p in prompts]
        res = sample(self.model, self.tokenizer, ids,
                     SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, do_sample=temperature > 0),
                     self.batch_size)
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r, _ in res]


# ------------------------------------------------------------------------------------------- HTTP endpoint
RETRY_STATUS = (429, 500, 502, 503, 504)


class OpenAIBackend:
    """Any OpenAI-compatible endpoint: log-probabilities where it returns them, sampled verdicts otherwise."""

    def __init__(self, base_url: str, model: str, api: str = "completions", api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0, concurrency: int = 4,
                 requests_per_second: float | None = None, top_logprobs: int = 20):
        if api not in ("completions", "chat"):
            raise RlhaifError(f"unknown endpoint api '{api}'; use 'completions' or 'chat'")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.name, self.model, self.api, self.api_key = model, model, api, api_key
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.concurrency, self.top_logprobs = max(1, concurrency), top_logprobs
        self.min_interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._lock, self._next_start = threading.Lock(), 0.0
        self.requests_made = 0
        self.single_prompts = False  # set when the server refuses a list of prompts

    # -- transport
    def _wait_rate_limit(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.min_interval
            self.requests_made += 1
        if start > now:
            time.sleep(start - now)

    def post(self, route: str, body: dict) -> dict:
        """POST JSON with retries on 429/5xx/timeouts (exponential backoff, Retry-After honoured)."""
        url = f"{self.base_url}/{route}"
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last, delay = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(delay)
            delay = self.backoff * 2 ** attempt
            self._wait_rate_limit()
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                if e.code in RETRY_STATUS:
                    last = f"HTTP {e.code} {detail}"
                    retry_after = e.headers.get("Retry-After") if e.headers else None
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        delay = max(delay, float(retry_after))
                    continue
                raise EndpointError(f"{url}: HTTP {e.code}: {detail}", e.code) from None
            except (socket.timeout, TimeoutError) as e:
                last = f"timed out after {self.timeout}s ({e})"
                continue
            except urllib.error.URLError as e:
                if isinstance(e.reason, (socket.timeout, TimeoutError)):
                    last = f"timed out after {self.timeout}s"
                    continue
                raise RlhaifError(f"{url}: cannot reach the endpoint ({e.reason}); is the server running?") from None
            try:
                reply = json.loads(raw)
            except json.JSONDecodeError:
                raise RlhaifError(f"{url}: malformed reply, not JSON: {raw[:200]!r}") from None
            if not isinstance(reply, dict):
                raise RlhaifError(f"{url}: malformed reply, expected a JSON object: {raw[:200]!r}")
            return reply
        raise RlhaifError(f"{url}: gave up after {self.max_retries + 1} attempts; last error: {last}")

    def _map(self, fn, items):
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    # -- scoring
    def continuation_logprobs(self, queries: Sequence[Query]) -> list[list[float]]:
        fn = self._score_completions if self.api == "completions" else self._score_chat
        return self._map(fn, list(queries))

    def _completion_choices(self, texts: list[str]) -> list[dict]:
        """One echo + logprobs choice per text: all texts in one request, or one request each for a server that
        refuses a list of prompts (HTTP 400/422 about the prompt, as `transformers serve` answers; remembered)."""
        body = {"model": self.model, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
        if not self.single_prompts:
            try:
                reply = self.post("completions", {**body, "prompt": texts})
            except EndpointError as e:
                if e.code not in (400, 422) or "prompt" not in str(e).lower():
                    raise  # only a complaint about the prompt's shape makes a single-prompt request worth it
                self.single_prompts = True
            else:
                choices = reply.get("choices")
                if not isinstance(choices, list) or len(choices) != len(texts):
                    raise RlhaifError(f"{self.base_url}/completions: malformed reply, expected {len(texts)} choices: "
                                      f"{str(reply)[:200]}")
                return sorted(choices, key=lambda ch: ch.get("index", 0) if isinstance(ch, dict) else 0)
        return [_choices(self.post("completions", {**body, "prompt": t}), f"{self.base_url}/completions")[0]
                for t in texts]

    def _score_completions(self, q: Query) -> list[float]:
        prefix = plain_transcript(q.messages, q.prefill)
        texts = [prefix + c for c in q.continuations]
        choices = self._completion_choices(texts)
        toks = []
        for text, ch in zip(texts, choices):
            lp = ch.get("logprobs") if isinstance(ch, dict) else None
            if not lp or not lp.get("tokens") or lp.get("token_logprobs") is None:
                raise NoLogprobs(f"{self.base_url}/completions: the endpoint returned no logprobs; the judge needs "
                                 "a server that returns prompt log-probabilities with echo=true and logprobs "
                                 "(vLLM does), or use --api chat")
            offsets = lp.get("text_offset") or []
            n = sum(1 for o in offsets if o < len(text)) if offsets else len(lp["tokens"])  # drop generated token
            toks.append(list(zip(lp["tokens"][:n], lp["token_logprobs"][:n])))
        k = common_prefix_len([[t for t, _ in seq] for seq in toks])
        out = []
        for seq in toks:
            tail = [v for _, v in seq[k:]]
            if any(v is None for v in tail):
                raise RlhaifError(f"{self.base_url}/completions: a continuation token came back without a logprob")
            out.append(float(sum(tail)))
        return out

    def _score_chat(self, q: Query) -> list[float]:
        letters = [c.strip().strip("()").strip() for c in q.continuations]
        msgs = [dict(m) for m in q.messages]
        msgs[-1]["content"] += f"\n\nAnswer with {' or '.join(f'({l})' for l in letters)} only."
        reply = self.post("chat/completions", {"model": self.model, "messages": msgs, "max_tokens": 5,
                                               "temperature": 0, "logprobs": True,
                                               "top_logprobs": self.top_logprobs})
        try:
            content = reply["choices"][0].get("logprobs")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RlhaifError(f"{self.base_url}/chat/completions: malformed reply: {str(reply)[:200]}") from None
        if not content or not content.get("content"):
            raise NoLogprobs(f"{self.base_url}/chat/completions: the endpoint returned no logprobs; it must "
                             "support logprobs=true with top_logprobs")
        for pos in content["content"]:
            top = pos.get("top_logprobs") or []
            found = {l: [t["logprob"] for t in top if t.get("token", "").strip().strip("()").strip() == l]
                     for l in letters}
            if any(found.values()):
                floor = min(t["logprob"] for t in top)  # an option absent from the top list is at most this likely
                return [_logsumexp(found[l]) if found[l] else floor for l in letters]
        raise RlhaifError(f"{self.base_url}/chat/completions: none of the options {letters} appear among the top "
                          "logprobs of the answer; use a stronger judge or --api completions")

    def verdicts(self, queries: Sequence[Query], n: int, temperature: float = 1.0, max_tokens: int = 8,
                 seed: int = 0) -> list[tuple[int, ...]]:
        """For servers without log-probabilities: ``n`` sampled answers per query, each parsed for an option
        letter (``parse_verdict``). Per query: votes for each continuation, then the count of answers naming
        none. A server that ignores ``n`` is asked again until ``n`` answers are in."""
        def one(item):
            i, q = item
            letters = [c.strip().strip("()").strip() for c in q.continuations]
            answers: list[str] = []
            for attempt in range(n):
                if len(answers) >= n:
                    break
                body = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature,
                        "n": n - len(answers), "seed": seed + 7919 * i + attempt}
                if self.api == "chat":
                    msgs = [dict(m) for m in q.messages]
                    msgs[-1]["content"] += f"\n\nAnswer with {' or '.join(f'({l})' for l in letters)} only."
                    reply = self.post("chat/completions", {**body, "messages": msgs})
                    texts = [ch.get("message", {}).get("content") for ch in _choices(reply, self.base_url)]
                else:
                    reply = self.post("completions", {**body, "prompt": plain_transcript(q.messages, q.prefill)})
                    texts = [ch.get("text") for ch in _choices(reply, self.base_url)]
                answers += [t if isinstance(t, str) else "" for t in texts]
            picks = [parse_verdict(a, letters) for a in answers[:n]]
            return (*(picks.count(k) for k in range(len(letters))), picks.count(None))

        return self._map(one, list(enumerate(queries)))

    def generate(self, prompts: Sequence[tuple[list[dict[str, str]], str]], max_new_tokens: int = 128,
                 temperature: float = 1.0, seed: int = 0) -> list[str]:
        def one(item):
            messages, prefill = item
            reply = self.post("completions", {"model": self.model, "prompt": plain_transcript(messages, prefill),
                                              "max_tokens": max_new_tokens, "temperature": temperature,
                                              "seed": seed})
            try:
                return str(reply["choices"][0]["text"])
            except (KeyError, IndexError, TypeError):
                raise RlhaifError(f"{self.base_url}/completions: malformed reply: {str(reply)[:200]}") from None

        return self._map(one, list(prompts))


def _choices(reply: dict, where: str) -> list[dict]:
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise RlhaifError(f"{where}: malformed reply, expected choices: {str(reply)[:200]}")
    return choices


def parse_verdict(text: str, letters: Sequence[str]) -> int | None:
    """The index of the option a sampled answer names: the first of the letters standing alone in it
    ("(A)", "A.", "answer: B"), or None when it names none."""
    import re

    m = re.search(r"(?<![A-Za-z])(" + "|".join(re.escape(l) for l in letters) + r")(?![A-Za-z])", text or "")
    return letters.index(m.group(1)) if m else None


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def make_backend(model: str, api: str = "hf", base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 dtype: str = "float32", max_length: int = 384, batch_size: int = 8, timeout: float = 60.0,
                 max_retries: int = 5, concurrency: int = 4, requests_per_second: float | None = None):
    """A backend from config values: ``api='hf'`` loads ``model`` locally; otherwise ``base_url`` is needed."""
    if api == "hf":
        from rlhaif.models.loading import load_causal_lm

        lm, tok = load_causal_lm(model, dtype=dtype)
        return HFBackend(lm, tok, name=model, max_length=max_length, batch_size=batch_size)
    if not base_url:
        raise RlhaifError(f"--api {api} needs --base-url (for example http://127.0.0.1:8000/v1)")
    return OpenAIBackend(base_url, model, api=api, api_key=os.environ.get(api_key_env), timeout=timeout,
                         max_retries=max_retries, concurrency=concurrency, requests_per_second=requests_per_second)
