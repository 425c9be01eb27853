"""The sampler's forward passes: a prompt's prefill, then one token a row per step, with a KV cache.

Two implementations of one small interface (``start`` → logits of each row's last prompt position, ``step`` →
logits of the next position, ``keep`` → drop finished rows):

- ``StaticCacheDecoder`` for the Llama family (``llama``, ``qwen2``, ``mistral`` without a sliding window; SmolLM2
  is a Llama): it calls the model's own modules (embedding, norms, rotary embedding, LM head; projections and MLP
  too, or packed copies of their weights, below), so it reads the very weights the model holds, but keeps its own
  fp32 KV cache allocated once a batch and skips what transformers does around the same products on every call
  (mask construction, cache objects, attention dispatch, output records). A decode step attends with two small
  fp32 products (``scaled_dot_product_attention``'s CPU kernel was a third of SmolLM2's batch-32 step); on a
  frozen bf16 sampling copy its products run on weights oneDNN packed once a batch (``PackedLinear``), q/k/v and
  gate/up each one product; a prompt on several rows (K samples of it) is prefilled once. The same numbers as
  the model's forward up to float rounding (tested against it in fp32 on left-padded batches).
- ``HFCacheDecoder``: the model's own forward with transformers' dynamic cache, for every other architecture.

``decoder_for(model)`` picks one. A pad position's query attends to itself as well as to the positions before
it, so that a left-padded row's leading pads stay finite (they are never attended by real positions).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

FAMILY = ("llama", "qwen2", "mistral")


def base_model(model):
    """The transformers model under a PEFT wrapper (the LoRA layers stay inside its modules)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def static_cache_supported(model) -> bool:
    """A Llama-family causal LM whose every layer attends to the whole past (no sliding window)."""
    m = base_model(model)
    cfg = getattr(m, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in FAMILY:
        return False
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ())):
        return False
    if cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None):
        return False
    inner = getattr(m, "model", None)
    return all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")) and hasattr(m, "lm_head")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def lora_parts(module) -> list[tuple[torch.Tensor, torch.Tensor, float]] | None:
    """[(A, B, scaling)] of each active plain-LoRA adapter of a PEFT LoRA Linear layer ([] for a plain Linear),
    None for anything else (DoRA and other variants, merged or disabled adapters, dropout in training mode)."""
    if type(module) is torch.nn.Linear:
        return []
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:
        return None
    if (not isinstance(module, LoraLinear) or type(module.get_base_layer()) is not torch.nn.Linear
            or module.merged or module.disable_adapters or getattr(module, "fan_in_fan_out", False)):
        return None
    parts = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if name in getattr(module, "lora_variant", {}) or (module.training and not isinstance(
                module.lora_dropout[name], torch.nn.Identity)):
            return None
        parts.append((module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name])))
    return parts


def onednn_bf16() -> bool:
    """oneDNN is there and has bf16 kernels on this CPU."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packable(model) -> bool:
    """A frozen bf16 copy on the CPU (the sampler's ``rlhaif.precision.sampling_copy``) whose projections are
    plain Linear or plain-LoRA layers, where oneDNN has bf16 kernels: its products can run on pre-packed weights."""
    params = list(model.parameters())
    if not (all(p.dtype == torch.bfloat16 and p.device.type == "cpu" and not p.requires_grad for p in params)
            and onednn_bf16()):
        return False
    inner = base_model(model)
    projections = [m for layer in inner.model.layers
                   for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                             layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
    return all(lora_parts(m) is not None for m in projections + [inner.lm_head])


class PackedLinear:
    """One product for several Linear layers of the same input (their weights concatenated), on a copy of the
    weights that oneDNN has re-laid out once for about ``rows`` input rows: ``torch.nn.functional.linear``
    re-packs them on every call, which at a decode step's few rows is much of the product's time (SmolLM2 bf16,
    a step's products: 20.3 → 14.8 ms at 1 row, 24.8 → 15.8 at 8, 39.1 → 29.5 at 32, two threads, AMD EPYC,
    ``benchmarks/bench_decode_parts.py``; the same numbers bit for bit). LoRA layers keep their adapters apart,
    as PEFT's forward does: x Aᵀ for every adapter of the group in one product, then one product with the B's
    laid block-diagonally (each scaled), added to the base product. Returns each layer's output, in order."""

    def __init__(self, linears: list, rows: int):
        bases = [m if type(m) is torch.nn.Linear else m.get_base_layer() for m in linears]
        self.sizes = [m.out_features for m in bases]
        biases = [m.bias for m in bases]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b.detach() if b is not None else torch.zeros(m.out_features, dtype=m.weight.dtype)
             for m, b in zip(bases, biases)])
        weight = torch.cat([m.weight.detach() for m in bases]) if len(bases) > 1 else bases[0].weight.detach()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        parts = [(i, a, b, scale) for i, m in enumerate(linears) for a, b, scale in lora_parts(m)]
        self.lora_a = self.lora_b = None
        if parts:
            self.lora_a = torch.cat([a.detach() for _, a, _, _ in parts])  # (Σ r, in)
            self.lora_b = torch.zeros(sum(self.sizes), len(self.lora_a), dtype=weight.dtype)  # block-diagonal
            starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
            col = 0
            for i, a, b, scale in parts:
                r = a.shape[0]
                self.lora_b[starts[i]:starts[i] + self.sizes[i], col:col + r] = (b.detach().float() * scale).to(weight.dtype)
                col += r

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        if self.lora_a is not None:
            y = y + F.linear(F.linear(x, self.lora_a), self.lora_b)
        return y.split(self.sizes, dim=-1) if len(self.sizes) > 1 else (y,)


class StaticCacheDecoder:
    """Prefill and decode steps of a Llama-family model through its own modules, with an fp32 KV cache of
    (rows, key-value heads, prompt + new tokens, head dim) a layer, allocated once per batch."""

    def __init__(self, model):
        m = base_model(model)
        cfg, self.inner, self.lm_head = m.config, m.model, m.lm_head
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scale = getattr(self.inner.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        self.packed = packable(model)
        self.layers: list = []

    def prepare(self, rows: int) -> None:
        """Each layer's three projection steps (queries-keys-values, output, MLP) and the LM head for the decode
        steps: the model's own modules (``self.modules``, which the prefill always uses), or — on a frozen bf16
        copy where oneDNN does bf16 — ``PackedLinear`` copies of their weights, q/k/v and gate/up each
        concatenated into one product, laid out by oneDNN for ``rows`` rows (~90 ms for SmolLM2, once a batch)."""
        self.layers = self.modules = [(lambda h, a=layer.self_attn: (a.q_proj(h), a.k_proj(h), a.v_proj(h)),
                                       layer.self_attn.o_proj, layer.mlp) for layer in self.inner.layers]
        self.head = self.lm_head
        if not self.packed:
            return
        self.layers = []
        for layer in self.inner.layers:
            a, mlp = layer.self_attn, layer.mlp
            qkv = PackedLinear([a.q_proj, a.k_proj, a.v_proj], rows)
            gate_up = PackedLinear([mlp.gate_proj, mlp.up_proj], rows)
            down = PackedLinear([mlp.down_proj], rows)

            def mlp_step(h, gate_up=gate_up, down=down, act=mlp.act_fn):
                gate, up = gate_up(h)
                return down(act(gate) * up)[0]

            self.layers.append((qkv, lambda h, o=PackedLinear([a.o_proj], rows): o(h)[0], mlp_step))
        head = PackedLinear([self.lm_head], rows)
        self.head = lambda h: head(h)[0]

    def start(self, query_ids: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Logits (B, V) at each row's last prompt position; the cache is laid out for ``max_new_tokens``. A
        prompt that fills several rows (K samples of one prompt, side by side in generate, evaluate and the RL
        rollout) is run once: its cache rows and logits are copied to each of its rows."""
        self.prepare(len(query_ids))
        uniq, inverse = torch.unique(torch.cat([query_ids, query_mask], 1), dim=0, return_inverse=True)
        if len(uniq) == len(query_ids):
            return self.prefill(query_ids, query_mask, max_new_tokens)
        P = query_ids.shape[1]
        logits = self.prefill(uniq[:, :P], uniq[:, P:], max_new_tokens)
        self.keep(inverse)
        return logits[inverse]

    def prefill(self, query_ids: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        B, P = query_ids.shape
        T = P + max_new_tokens
        shape = (len(self.inner.layers), B, self.kv_heads, T, self.head_dim)
        self.k = torch.zeros(shape, dtype=torch.float32, device=query_ids.device)
        self.v = torch.zeros_like(self.k)
        self.valid = torch.zeros((B, T), dtype=torch.bool, device=query_ids.device)  # which keys a query may see
        self.valid[:, :P] = query_mask.bool()
        self.length = P
        self.pos = (query_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        causal = torch.ones((P, P), dtype=torch.bool, device=query_ids.device).tril()
        mask = (causal[None] & self.valid[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=query_ids.device)
        logits = self.forward(query_ids, self.pos, mask[:, None], 0)
        self.pos = self.pos[:, -1:]
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (b, V) of the position after ``tokens`` (b,), the live rows' last draws."""
        t = self.length
        self.valid[:, t] = True
        self.pos = self.pos + 1
        return self.forward(tokens[:, None], self.pos, self.valid[:, None, None, :t + 1], t)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the running batch, in their order; repeats copy a row) from now on."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.valid, self.pos = self.valid[rows], self.pos[rows]

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, at: int) -> torch.Tensor:
        """Run ``ids`` (b, n) at positions ``pos`` (b, n), writing their keys and values at cache slots
        [at, at + n); ``mask`` (b, 1, n, at + n) says which cached keys each query sees. Logits of the last."""
        b, n = ids.shape
        x = self.inner.embed_tokens(ids)
        cos, sin = self.inner.rotary_emb(x, pos)
        cos, sin = cos[:, None], sin[:, None]  # (b, 1, n, D)
        end = at + n
        steps = self.layers if n == 1 else self.modules  # the prefill's many rows: the modules' own products
        for i, ((qkv, out, mlp), layer) in enumerate(zip(steps, self.inner.layers)):
            q, k, v = qkv(layer.input_layernorm(x))
            q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            self.k[i, :, :, at:end], self.v[i, :, :, at:end] = k, v
            if n > 1:  # a prefill (at 0): its own keys and values, through the fused attention kernel
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
                                                   enable_gqa=self.kv_heads != self.heads)
            else:
                o = self.attend(q, self.k[i, :, :, :end], self.v[i, :, :, :end], mask)
            x = x + out(o.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
            x = x + mlp(layer.post_attention_layernorm(x))
        self.length = end
        return (self.head if n == 1 else self.lm_head)(self.inner.norm(x[:, -1]))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One query a row (a decode step) against the fp32 cache: softmax(q kᵀ · scale + mask) v with grouped
        key-value heads, two small fp32 products. ``scaled_dot_product_attention``'s CPU kernel took ~1.2 ms a
        layer for this at 32 rows (a third of SmolLM2's step), bf16 products 0.32 ms, fp32 on the fp32 cache
        0.26 ms (measured); the keys and values are stored as computed, so fp32 holds them exactly."""
        b, _, _, D = q.shape
        g = self.heads // self.kv_heads  # query heads sharing a key-value head (consecutive, as repeat_kv lays them)
        scores = torch.matmul(q.view(b, self.kv_heads, g, D).float(), k.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill_(~mask, float("-inf")).softmax(-1)  # (b, kv heads, g, T)
        return torch.matmul(scores, v).to(q.dtype).view(b, self.heads, 1, D)


def last_positions(length: int, n: int, device=None) -> torch.Tensor:
    """``logits_to_keep`` as the index tensor of the last ``n`` of ``length`` positions. transformers gathers
    them (a contiguous (B, n, H)), so the LM head is one (B·n, H) @ (H, V) product; the int form slices a
    strided view, which torch.matmul turns into a batched product over B materialised copies of the LM-head
    weight: in bf16 on the CPU 6.1 s instead of 13 ms for 8 rows × 49,152 (measured, BENCHMARKS.md)."""
    return torch.arange(length - n, length, device=device)


def cache_argument(model) -> str:
    """The name the model's forward takes the KV cache by: ``cache`` from transformers 5.24 on (which deprecates
    ``past_key_values`` with a warning on every call), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(base_model(model).forward).parameters else "past_key_values"


def returned_cache(out):
    """The KV cache a forward with ``use_cache=True`` returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class HFCacheDecoder:
    """The model's own forward with transformers' dynamic KV cache (any causal LM)."""

    def __init__(self, model):
        self.model, self.cache_name = model, cache_argument(model)

    def start(self, query_ids: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        P = query_ids.shape[1]
        self.attn = query_mask
        self.pos = (query_mask.cumsum(-1) - 1).clamp(min=0)
        return self.run(input_ids=query_ids, position_ids=self.pos,
                        logits_to_keep=last_positions(P, 1, query_ids.device))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.attn = torch.cat([self.attn, self.attn.new_ones(len(tokens), 1)], dim=1)
        self.pos = self.pos[:, -1:] + 1
        return self.run(input_ids=tokens[:, None], position_ids=self.pos, **{self.cache_name: self.cache})

    def keep(self, rows: torch.Tensor) -> None:
        self.attn, self.pos = self.attn[rows], self.pos[rows]
        self.cache.batch_select_indices(rows)

    def run(self, **kw) -> torch.Tensor:
        out = self.model(attention_mask=self.attn, use_cache=True, **kw)
        self.cache = returned_cache(out)
        return out.logits[:, -1]


def decoder_for(model):
    """The sampler's decoder for ``model``: the static-cache one where the architecture allows it."""
    return StaticCacheDecoder(model) if static_cache_supported(model) else HFCacheDecoder(model)


__all__ = ["StaticCacheDecoder", "PackedLinear", "last_positions", "packable", "onednn_bf16", "lora_parts", "HFCacheDecoder", "decoder_for", "static_cache_supported", "base_model", "cache_argument",
           "returned_cache"]
