"""The arithmetic floor of one PPO step, rlhaif vs TRL 1.0.0, for the settings of bench_ppo.py.

Counts the multiply-adds (MACs) of the matrix products each side must do per PPO step, from a Llama config
and the prompt lengths, so a measured speed ratio can be read against the most any implementation could
gain by doing less arithmetic. Counted: the trunk's linear layers and attention products, the LM head
(V·H per position it is applied to), backward = 2× forward for trained weights (input and weight gradients)
and 1× for frozen ones (input gradients only, the LoRA case); not counted: norms, activations, softmax,
the optimizer (memory-bound, and equal on both sides).

Per row and step (P prompt tokens, R response tokens, T = P + R, E PPO epochs):
  both sides   generation: trunk(T − 1) + head(R); reward model: trunk(T)
  rlhaif       old log-probs (+ values): trunk(T) + head(R + 1); reference: trunk(T) + head(R + 1);
               update: E·(1 + backward)·(trunk(T) + head(R + 1)); a separate value model adds trunk(T) to the
               rollout and E·3·trunk(T) to the update
  TRL 1.0.0    policy log-probs: none (taken from the logits generate() returns, already counted in
               generation); reference: trunk(T) + head(T); value: trunk(T);
               update: E·(1 + backward)·(trunk(T) + head(T)) + E·3·trunk(T) (its value model is always trained)

    python benchmarks/ppo_flops.py --hidden 256 --layers 12 --vocab 49152 --prompt 38 --response 32
"""

from __future__ import annotations

import argparse


def trunk_macs_per_token(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, t: int) -> float:
    """One token through every decoder layer: q, k, v, o projections, the MLP's three matrices, and the
    attention products QKᵀ and AV against ``t`` positions on average (causal: half the sequence)."""
    head_dim = hidden // heads
    proj = hidden * hidden * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * intermediate
    attn = 2 * hidden * t / 2
    return layers * (proj + mlp + attn)


def step_macs(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int, prompt: int,
              response: int, epochs: int, lora: bool = False) -> dict[str, float]:
    T = prompt + response
    per_tok = trunk_macs_per_token(hidden, layers, heads, kv_heads, intermediate, T)
    trunk = lambda n: n * per_tok  # noqa: E731
    head = lambda n: n * hidden * vocab  # noqa: E731
    train = 2 if lora else 3  # forward + backward (frozen base: input gradients only)
    shared = trunk(T - 1) + head(response) + trunk(T)  # generation + reward model
    ours = shared + 2 * (trunk(T) + head(response + 1)) + epochs * train * (trunk(T) + head(response + 1))
    ours_sep = ours + trunk(T) + epochs * 3 * trunk(T)
    # TRL's old log-probs come from generate()'s scores (no pass of their own): only the reference runs
    trl = (shared + (trunk(T) + head(T)) + trunk(T) + epochs * train * (trunk(T) + head(T))
           + epochs * 3 * trunk(T))
    return {"rlhaif": ours, "rlhaif-sepvalue": ours_sep, "trl-1.0.0": trl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=None, help="default: 2 × hidden (the tiny factory's)")
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--prompt", type=int, required=True, help="prompt tokens per row (chat template included)")
    ap.add_argument("--response", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lora", action="store_true", help="policy LoRA: frozen base weights get no weight gradient")
    a = ap.parse_args()
    m = step_macs(a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate or 2 * a.hidden, a.vocab, a.prompt,
                  a.response, a.epochs, a.lora)
    for name, v in m.items():
        print(f"{name:16s} {v / 1e9:8.2f} GMAC per row and step")
    for name in ("rlhaif", "rlhaif-sepvalue"):
        print(f"TRL / {name}: {m['trl-1.0.0'] / m[name]:.2f}x the arithmetic (the most {name} can gain by it)")


if __name__ == "__main__":
    main()
