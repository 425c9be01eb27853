"""The two parts of a SmolLM2-135M decode step that rlhaif's static-cache decoder changed, alone (issue 26).

  products   one step's matrix products (30 layers × fused q/k/v, output, fused gate/up, down, and the LM head)
             on random bf16 weights of SmolLM2's shapes: ``torch.nn.functional.linear`` (oneDNN re-packs the
             weight on every call) against ``torch.ops.mkldnn._linear_pointwise`` on weights packed once
             (``rlhaif.policy.decoder.PackedLinear``); ms a step and GFLOP/s, and whether the outputs are equal
  attention  one layer's decode attention (9 query heads on 3 key-value heads of 64, one query a row, 60 cached
             positions): ``scaled_dot_product_attention``, two bf16 products, two fp32 products on an fp32 cache
             (what the decoder does); µs a layer

    python benchmarks/bench_decode_parts.py --threads 2

Medians of --reps timed runs after a warm-up, one process; nothing else should run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

H, I, V, LAYERS, HEADS, KV, D = 576, 1536, 49152, 30, 9, 3, 64
SHAPES = [(HEADS * D + 2 * KV * D, H), (H, HEADS * D), (2 * I, H), (H, I)]  # (out, in): qkv, o, gate_up, down


def median_s(fn, reps: int, inner: int = 1) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner)
    return sorted(ts)[len(ts) // 2]


def products(batch: int, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ws = [[torch.randn(o, i, generator=g).mul_(0.02).bfloat16() for o, i in SHAPES] for _ in range(LAYERS)]
    head = torch.randn(V, H, generator=g).mul_(0.02).bfloat16()
    xs = {k: torch.randn(batch, k, generator=g).bfloat16() for k in (H, I)}
    packed = [[torch.ops.mkldnn._reorder_linear_weight(w, batch) for w in layer] for layer in ws]
    packed_head = torch.ops.mkldnn._reorder_linear_weight(head, batch)

    def plain():
        return [F.linear(xs[w.shape[1]], w) for layer in ws for w in layer] + [F.linear(xs[H], head)]

    def pre():
        return ([torch.ops.mkldnn._linear_pointwise(xs[w.shape[1]], p, None, "none", [], "")
                 for layer, players in zip(ws, packed) for w, p in zip(layer, players)]
                + [torch.ops.mkldnn._linear_pointwise(xs[H], packed_head, None, "none", [], "")])

    equal = all(torch.equal(a, b) for a, b in zip(plain(), pre()))
    flops = 2 * batch * (LAYERS * sum(o * i for o, i in SHAPES) + V * H)
    out = {"batch": batch, "equal": equal}
    for name, fn in (("linear", plain), ("packed", pre)):
        s = median_s(fn, reps)
        out[name] = {"ms": s * 1e3, "gflops": flops / s / 1e9}
    return out


def attention(batch: int, reps: int, cached: int = 60) -> dict:
    g = torch.Generator().manual_seed(1)
    k32 = torch.randn(batch, KV, cached + 20, D, generator=g)
    v32 = torch.randn(batch, KV, cached + 20, D, generator=g)
    k16, v16 = k32.bfloat16(), v32.bfloat16()
    q = torch.randn(batch, HEADS, 1, D, generator=g).bfloat16()
    mask = torch.ones(batch, 1, 1, cached, dtype=torch.bool)
    grp = HEADS // KV

    def sdpa():
        return F.scaled_dot_product_attention(q, k16[:, :, :cached], v16[:, :, :cached], attn_mask=mask,
                                              enable_gqa=True)

    def bf16():
        s = torch.matmul(q.view(batch, KV, grp, D), k16[:, :, :cached].transpose(-1, -2)).float() * D ** -0.5
        return torch.matmul(s.masked_fill_(~mask, float("-inf")).softmax(-1).bfloat16(), v16[:, :, :cached])

    def fp32_cache():
        s = torch.matmul(q.view(batch, KV, grp, D).float(), k32[:, :, :cached].transpose(-1, -2)) * D ** -0.5
        return torch.matmul(s.masked_fill_(~mask, float("-inf")).softmax(-1), v32[:, :, :cached]).bfloat16()

    return {"batch": batch, **{name: median_s(fn, reps, inner=50) * 1e6
                               for name, fn in (("sdpa_us", sdpa), ("bf16_products_us", bf16),
                                                ("fp32_cache_us", fp32_cache))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batches", default="1,8,32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        raise SystemExit("bench_decode_parts: this CPU/torch has no oneDNN bf16 kernels (nothing to compare)")
    print(f"threads={torch.get_num_threads()} torch={torch.__version__}")
    for b in map(int, a.batches.split(",")):
        p = products(b, a.reps)
        print(f"products, batch {b:2d}: linear {p['linear']['ms']:6.1f} ms ({p['linear']['gflops']:5.0f} GFLOP/s), "
              f"packed {p['packed']['ms']:6.1f} ms ({p['packed']['gflops']:5.0f} GFLOP/s), equal outputs: "
              f"{p['equal']}", flush=True)
    for b in map(int, a.batches.split(",")):
        r = attention(b, a.reps)
        print(f"attention, batch {b:2d}: sdpa {r['sdpa_us']:6.0f} µs, bf16 products {r['bf16_products_us']:6.0f} µs, "
              f"fp32 cache {r['fp32_cache_us']:6.0f} µs a layer", flush=True)


if __name__ == "__main__":
    main()
