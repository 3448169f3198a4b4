#!/usr/bin/env python3
"""Tiny random-weight GGUF models and their reference logits, one per family.

For families with no reachable checkpoint (Mistral, Phi-3) and to test every family's code
path without downloading anything, this writes tests/data/tiny_<family>.gguf (f32 weights,
a few hundred KB at most) and tiny_<family>.json with the logits of every token of a fixed
token sequence, computed by the independent float64 NumPy implementation below (written from
the Hugging Face / llama.cpp definitions of each family, not from nq-candle's code).

    pip install gguf numpy && python3 nq-candle/tests/data/make_tiny_models.py

The weights come from numpy's default_rng(seed) so the files are reproducible.
"""
import json
from pathlib import Path

import numpy as np
import gguf

HERE = Path(__file__).resolve().parent
VOCAB = 96
TOKENS = [int(t) for t in np.random.default_rng(7).integers(0, VOCAB, size=40)]

FAMILIES = {
    # name: (gguf arch, hidden, ffn, layers, q heads, kv heads, head_dim, rope dims, theta, window)
    "llama": dict(arch="llama", hidden=48, ffn=80, layers=2, nq=6, nkv=2, hd=8, rdim=8,
                  theta=10000.0, window=None, interleaved=True),
    "mistral": dict(arch="llama", hidden=48, ffn=80, layers=2, nq=4, nkv=2, hd=12, rdim=12,
                    theta=10000.0, window=7, interleaved=True),
    "qwen2": dict(arch="qwen2", hidden=48, ffn=80, layers=2, nq=6, nkv=2, hd=8, rdim=8,
                  theta=1000000.0, window=None, interleaved=False, bias=True),
    # Phi-3: fused QKV and gate/up, head_dim 24 (not a power of two), partial rotary (16/24).
    "phi3": dict(arch="phi3", hidden=72, ffn=64, layers=2, nq=3, nkv=3, hd=24, rdim=16,
                 theta=10000.0, window=None, interleaved=False, fused=True),
    # Gemma-3: 6 layers so that layer 5 is global; local window 5, local RoPE base 10000.
    "gemma3": dict(arch="gemma3", hidden=32, ffn=48, layers=6, nq=2, nkv=1, hd=16, rdim=16,
                   theta=1000000.0, window=5, interleaved=False, gemma=True),
}


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, theta, rdim, interleaved):
    """x: [T, H, D]; rotates the first rdim dims of every head."""
    inv = theta ** (-np.arange(0, rdim, 2) / rdim)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    xr = x[..., :rdim]
    out = np.empty_like(xr)
    if interleaved:
        a, b = xr[..., 0::2], xr[..., 1::2]
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
    else:
        h = rdim // 2
        a, b = xr[..., :h], xr[..., h:]
        out[..., :h] = a * cos - b * sin
        out[..., h:] = b * cos + a * sin
    return np.concatenate([out, x[..., rdim:]], axis=-1)


def attention(q, k, v, window, scale):
    """q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D], causal (+ window) softmax."""
    t, hq, _ = q.shape
    group = hq // k.shape[1]
    out = np.zeros_like(q)
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= (i - j) < window
    for h in range(hq):
        s = q[:, h, :] @ k[:, h // group, :].T * scale
        s = np.where(allowed, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, h, :] = p @ v[:, h // group, :]
    return out


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1 + np.exp(-x))


def make(name, c, seed):
    rng = np.random.default_rng(seed)
    H, F, D, nq, nkv = c["hidden"], c["ffn"], c["hd"], c["nq"], c["nkv"]
    eps = 1e-6
    W = {}

    def mat(n, out, inp):
        W[n] = rng.normal(0, 1 / np.sqrt(inp), size=(out, inp))

    def norm(n, dim):
        W[n] = 1 + 0.2 * rng.normal(size=dim)

    W["token_embd.weight"] = rng.normal(0, 1, size=(VOCAB, H)) * (0.2 if c.get("gemma") else 1)
    for l in range(c["layers"]):
        p = f"blk.{l}"
        norm(f"{p}.attn_norm.weight", H)
        if c.get("fused"):
            mat(f"{p}.attn_qkv.weight", (nq + 2 * nkv) * D, H)
            mat(f"{p}.ffn_up.weight", 2 * F, H)
        else:
            mat(f"{p}.attn_q.weight", nq * D, H)
            mat(f"{p}.attn_k.weight", nkv * D, H)
            mat(f"{p}.attn_v.weight", nkv * D, H)
            mat(f"{p}.ffn_gate.weight", F, H)
            mat(f"{p}.ffn_up.weight", F, H)
        if c.get("bias"):
            for n, dim in (("attn_q", nq * D), ("attn_k", nkv * D), ("attn_v", nkv * D)):
                W[f"{p}.{n}.bias"] = 0.5 * rng.normal(size=dim)
        if c.get("gemma"):
            norm(f"{p}.attn_q_norm.weight", D)
            norm(f"{p}.attn_k_norm.weight", D)
            norm(f"{p}.post_attention_norm.weight", H)
            norm(f"{p}.post_ffw_norm.weight", H)
        mat(f"{p}.attn_output.weight", H, nq * D)
        norm(f"{p}.ffn_norm.weight", H)
        mat(f"{p}.ffn_down.weight", H, F)
    norm("output_norm.weight", H)
    if name != "gemma3":  # gemma3 and (below) nothing else tie the output to the embedding
        mat("output.weight", VOCAB, H)

    # ---- reference forward, float64 ----
    T = len(TOKENS)
    pos = np.arange(T, dtype=np.float64)
    x = W["token_embd.weight"][TOKENS]
    if c.get("gemma"):
        x = x * np.sqrt(H)
    for l in range(c["layers"]):
        p = f"blk.{l}"
        local = c["window"] is not None and (not c.get("gemma") or (l + 1) % 6 != 0)
        window = c["window"] if local else None
        theta = 10000.0 if (c.get("gemma") and local) else c["theta"]
        h = rms(x, W[f"{p}.attn_norm.weight"], eps)
        if c.get("fused"):
            y = h @ W[f"{p}.attn_qkv.weight"].T
            q, k, v = y[:, : nq * D], y[:, nq * D: (nq + nkv) * D], y[:, (nq + nkv) * D:]
        else:
            q = h @ W[f"{p}.attn_q.weight"].T
            k = h @ W[f"{p}.attn_k.weight"].T
            v = h @ W[f"{p}.attn_v.weight"].T
        if c.get("bias"):
            q, k, v = q + W[f"{p}.attn_q.bias"], k + W[f"{p}.attn_k.bias"], v + W[f"{p}.attn_v.bias"]
        q, k, v = q.reshape(T, nq, D), k.reshape(T, nkv, D), v.reshape(T, nkv, D)
        if c.get("gemma"):
            q = rms(q, W[f"{p}.attn_q_norm.weight"], eps)
            k = rms(k, W[f"{p}.attn_k_norm.weight"], eps)
        q = rope(q, pos, theta, c["rdim"], c["interleaved"])
        k = rope(k, pos, theta, c["rdim"], c["interleaved"])
        a = attention(q, k, v, window, 1 / np.sqrt(D)).reshape(T, nq * D)
        o = a @ W[f"{p}.attn_output.weight"].T
        if c.get("gemma"):
            o = rms(o, W[f"{p}.post_attention_norm.weight"], eps)
        x = x + o
        h = rms(x, W[f"{p}.ffn_norm.weight"], eps)
        if c.get("fused"):
            y = h @ W[f"{p}.ffn_up.weight"].T
            g, u = y[:, :F], y[:, F:]
        else:
            g, u = h @ W[f"{p}.ffn_gate.weight"].T, h @ W[f"{p}.ffn_up.weight"].T
        act = gelu_tanh(g) if c.get("gemma") else silu(g)
        m = (act * u) @ W[f"{p}.ffn_down.weight"].T
        if c.get("gemma"):
            m = rms(m, W[f"{p}.post_ffw_norm.weight"], eps)
        x = x + m
    x = rms(x, W["output_norm.weight"], eps)
    logits = x @ W.get("output.weight", W["token_embd.weight"]).T

    # ---- write the GGUF ----
    path = HERE / f"tiny_{name}.gguf"
    w = gguf.GGUFWriter(str(path), c["arch"])
    w.add_name(f"nq-candle tiny {name} (random weights, seed {seed})")
    w.add_block_count(c["layers"])
    w.add_context_length(64)
    w.add_embedding_length(H)
    w.add_feed_forward_length(F)
    w.add_head_count(nq)
    w.add_head_count_kv(nkv)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_rope_dimension_count(c["rdim"])
    w.add_rope_freq_base(c["theta"])
    w.add_layer_norm_rms_eps(eps)
    if c["window"] is not None:
        w.add_sliding_window(c["window"])
    for n, t in W.items():
        w.add_tensor(n, t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ref = {"family": name, "tokens": TOKENS, "logits": [[float(v) for v in row] for row in logits]}
    (HERE / f"tiny_{name}.json").write_text(json.dumps(ref) + "\n")
    print(f"{path.name}: {path.stat().st_size} bytes, logits {logits.shape}, max |logit| {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    for seed, (name, c) in enumerate(FAMILIES.items()):
        make(name, c, 100 + seed)
