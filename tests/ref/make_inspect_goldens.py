#!/usr/bin/env python3
"""Goldens for attention inspection: the queries and keys every attention layer of transformers
sees (after the q/k norms and RoPE), for some fixtures' ids.npy prompts.

    PYTHONUNBUFFERED=1 python3 tests/ref/make_inspect_goldens.py   # on the GPU machine (torch, transformers)

Writes tests/fixtures/<name>/keys.npy (float32 [layers, kv_heads, T, head_dim]) and queries.npy
([layers, heads, T, head_dim]).  They are taken inside the attention call: the model runs with an
attention function registered under its own name that records its query and key arguments and then
calls the model's own eager attention, so the values are exactly what transformers attends with.
The model is the fixture's stored bf16 weights loaded in float32, as for the other goldens."""
# How: the modeling module's eager_attention_forward (which its attention layers look up when they
# run) is wrapped to record its query and key arguments, and the model runs in eager mode.
import os
import sys

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
NAMES = ["gemma3_text_sliding", "gemma2_softcap", "qwen3_headdim", "llama_rope_llama3", "qwen2_bias_sliding"]

captured = {}


def wrap(modeling):
    eager = modeling.eager_attention_forward

    def capture(module, query, key, value, attention_mask, *args, **kwargs):
        captured[module.layer_idx] = (query[0].detach().clone(), key[0].detach().clone())
        return eager(module, query, key, value, attention_mask, *args, **kwargs)

    modeling.eager_attention_forward = capture


def main():
    import json
    wrapped = set()
    for name in NAMES:
        folder = os.path.join(FIXTURES, name)
        cfg = json.load(open(os.path.join(folder, "config.json")))
        cls = getattr(transformers, cfg["architectures"][0])
        modeling = sys.modules[cls.__module__]
        if modeling.__name__ not in wrapped:
            wrap(modeling)
            wrapped.add(modeling.__name__)
        m = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        ids = np.load(os.path.join(folder, "ids.npy"))
        captured.clear()
        with torch.no_grad():
            logits = m(torch.tensor(ids, dtype=torch.long)[None], use_cache=False).logits[0].numpy()
        gold = np.load(os.path.join(folder, "logits.npy"))
        d = float(np.abs(logits - gold).max())
        assert d <= 1e-5, "%s: the capturing run does not reproduce logits.npy (%g)" % (name, d)
        L = len(captured)
        q = np.stack([captured[i][0].numpy() for i in range(L)]).astype(np.float32)
        k = np.stack([captured[i][1].numpy() for i in range(L)]).astype(np.float32)
        np.save(os.path.join(folder, "queries.npy"), q)
        np.save(os.path.join(folder, "keys.npy"), k)
        print(name, "queries", q.shape, "keys", k.shape, "logits check %.2g" % d)


if __name__ == "__main__":
    main()
