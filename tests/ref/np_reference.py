#!/usr/bin/env python3
"""An independent float64 NumPy forward pass over the committed fixtures (no torch, no transformers).

    python3 tests/ref/np_reference.py [tests/fixtures]

It reads each fixture's model.safetensors (bf16), ids.npy and the resolved config recorded in
meta.json, recomputes the logits from scratch and prints max |difference| against logits.npy. It is
a readable statement of the math the C library must implement (and a cross-check of the goldens);
on 2026-11-25 every fixture matched to <= 3e-5. Needs only numpy (Debian: python3-numpy).
"""
import json
import math
import os
import struct
import sys

import numpy as np

FIXTURES = [  # name, family
    ("llama_rope_llama3", "llama"), ("llama_tied_bias", "llama"), ("llama_dynamic", "llama"),
    ("llama_sharded", "llama"), ("qwen2_bias_sliding", "qwen"), ("qwen2_tied", "qwen"),
    ("qwen3_headdim", "qwen"), ("gemma2_softcap", "gemma"), ("gemma3_text_sliding", "gemma"),
    ("gemma3_mm_defaults", "gemma"), ("gemma3_mm_prefix_old", "gemma"),
    ("gemma3_mm_prefix_new", "gemma"),
]


def load_bf16(folder):
    out = {}
    for fn in sorted(os.listdir(folder)):
        if not fn.endswith(".safetensors"):
            continue
        with open(os.path.join(folder, fn), "rb") as f:
            b = f.read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        d = b[8 + n:]
        for k, v in h.items():
            if k == "__metadata__":
                continue
            assert v["dtype"] == "BF16", v
            a, e = v["data_offsets"]
            u = np.frombuffer(d[a:e], dtype=np.uint16).astype(np.uint32) << 16
            out[k] = u.view(np.float32).reshape(v["shape"]).astype(np.float64)
    # the multimodal Gemma 3 layouts -> plain text-model names (vision tensors are ignored)
    ren = {}
    for k, v in out.items():
        for pre in ("language_model.model.", "model.language_model."):
            if k.startswith(pre):
                k = "model." + k[len(pre):]
        ren[k] = v
    return ren


def rms(x, w, eps, gemma):
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * ((1.0 + w) if gemma else w)


def inv_freq(rp, d, seq_len, max_pos):
    base = rp["rope_theta"]
    t = rp.get("rope_type", "default")
    if t == "dynamic" and seq_len > max_pos:  # NTK: base from the current length
        base = base * ((rp["factor"] * seq_len / max_pos) - (rp["factor"] - 1)) ** (d / (d - 2))
    f = 1.0 / base ** (np.arange(0, d, 2) / d)
    if t == "linear":
        f = f / rp["factor"]
    elif t == "llama3":
        o = rp["original_max_position_embeddings"]
        lo_wl, hi_wl = o / rp["low_freq_factor"], o / rp["high_freq_factor"]
        wl = 2 * math.pi / f
        smooth = (o / wl - rp["low_freq_factor"]) / (rp["high_freq_factor"] - rp["low_freq_factor"])
        f = np.where(wl > lo_wl, f / rp["factor"],
                     np.where(wl < hi_wl, f, (1 - smooth) * f / rp["factor"] + smooth * f))
    elif t not in ("default", "dynamic"):
        raise ValueError(t)
    return f


def forward(folder, fam):
    c = json.load(open(os.path.join(folder, "meta.json")))["resolved_by_transformers"]
    W = load_bf16(folder)
    ids = np.load(os.path.join(folder, "ids.npy"))
    g = fam == "gemma"
    H, nh, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or H // nh
    eps, T = c["rms_norm_eps"], len(ids)
    lts = c.get("layer_types") or ["full_attention"] * c["num_hidden_layers"]

    x = W["model.embed_tokens.weight"][ids]
    if g:
        x = x * float(np.float32(H ** 0.5))  # sqrt(hidden) rounded to the activation dtype
    for L in range(c["num_hidden_layers"]):
        def P(n, L=L):
            return W["model.layers.%d.%s" % (L, n)]

        def lin(v, n, L=L):
            b = W.get("model.layers.%d.%s.bias" % (L, n))
            return v @ P(n + ".weight").T + (0.0 if b is None else b)

        lt = lts[L]
        rp = c["rope_parameters"]
        rp = rp[lt] if lt in rp else rp
        h = rms(x, P("input_layernorm.weight"), eps, g)
        q = lin(h, "self_attn.q_proj").reshape(T, nh, hd)
        k = lin(h, "self_attn.k_proj").reshape(T, kv, hd)
        v = lin(h, "self_attn.v_proj").reshape(T, kv, hd)
        if "model.layers.%d.self_attn.q_norm.weight" % L in W:  # qwen3 / gemma3, per head
            q = rms(q, P("self_attn.q_norm.weight"), eps, g)
            k = rms(k, P("self_attn.k_norm.weight"), eps, g)
        f = inv_freq(rp, hd, T, c["max_position_embeddings"])
        ang = np.arange(T)[:, None] * f[None]
        ang = np.concatenate([ang, ang], -1)
        cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

        def rot(t):
            return np.concatenate([-t[..., hd // 2:], t[..., :hd // 2]], -1)

        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = np.repeat(k, nh // kv, 1), np.repeat(v, nh // kv, 1)
        s = np.einsum("ihd,jhd->hij", q, k) * (c.get("query_pre_attn_scalar") or hd) ** -0.5
        cap = c.get("attn_logit_softcapping")
        if cap:
            s = cap * np.tanh(s / cap)
        i, j = np.arange(T)[:, None], np.arange(T)[None]
        ok = j <= i
        if lt == "sliding_attention":
            ok &= (i - j) < c["sliding_window"]
        s = np.where(ok, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = lin(np.einsum("hij,jhd->ihd", s, v).reshape(T, nh * hd), "self_attn.o_proj")
        if g:
            x = x + rms(o, P("post_attention_layernorm.weight"), eps, g)
            h = rms(x, P("pre_feedforward_layernorm.weight"), eps, g)
            a = lin(h, "mlp.gate_proj")
            a = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
            x = x + rms(lin(a * lin(h, "mlp.up_proj"), "mlp.down_proj"),
                        P("post_feedforward_layernorm.weight"), eps, g)
        else:
            x = x + o
            h = rms(x, P("post_attention_layernorm.weight"), eps, g)
            a = lin(h, "mlp.gate_proj")
            a = a / (1 + np.exp(-a))
            x = x + lin(a * lin(h, "mlp.up_proj"), "mlp.down_proj")
    x = rms(x, W["model.norm.weight"], eps, g)
    lg = x @ W.get("lm_head.weight", W["model.embed_tokens.weight"]).T
    cap = c.get("final_logit_softcapping")
    if cap:
        lg = cap * np.tanh(lg / cap)
    return lg


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
    worst = 0.0
    for name, fam in FIXTURES:
        folder = os.path.join(base, name)
        ref = np.load(os.path.join(folder, "logits.npy"))
        lg = forward(folder, fam)
        d = float(np.abs(lg - ref).max())
        worst = max(worst, d)
        print("%-22s max|diff| %.2e  max|logit| %7.3f  argmax agree %.3f" % (
            name, d, float(np.abs(ref).max()), float((lg.argmax(-1) == ref.argmax(-1)).mean())))
    print("worst %.2e" % worst)
    return 0 if worst <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
