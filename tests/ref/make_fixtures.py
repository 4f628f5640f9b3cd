#!/usr/bin/env python3
"""Build the committed logit fixtures under tests/fixtures/ from Hugging Face transformers.

How to run (on the GPU machine of the `device` tool, whose python3 has torch, transformers,
safetensors and numpy; everything runs on the CPU in float32, nothing is downloaded):

    cd tests/ref && HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 python3 make_fixtures.py --out /tmp/fx
    # then copy /tmp/fx/* to tests/fixtures/   (e.g. tar czf $OUT/fixtures.tar.gz -C /tmp/fx .)

    python3 make_fixtures.py --only qwen2_tied,gemma2_softcap --out DIR   # a subset
    python3 make_fixtures.py --selftest      # the pure-Python helpers only (no torch needed)

Everything is deterministic: every fixture has its own fixed seed for the weights and the ids.

Method, per fixture: build the family's transformers class from a config (attn_implementation
"eager"), randomize EVERY parameter (matrices N(0, 0.1), embeddings N(0, 0.4), biases N(0, 0.1),
norm weights 1 + N(0, 0.3) for x*w norms and N(0, 0.3) for Gemma's x*(1+w) norms, a few
fixture-specific overrides listed in the spec), round them to bfloat16, save_pretrained the
bfloat16 model into the folder, rewrite config.json where the fixture wants the 4.x spelling, then
LOAD THE FOLDER BACK with from_pretrained(dtype=float32, attn_implementation="eager"), check that
every loaded parameter equals the stored bf16 value and that the reloaded model's logits equal the
in-memory model's (so a rewritten config.json means the same model), and save
logits.npy = model(ids[None]).logits[0] (float32 [T, vocab]) and ids.npy (int32 [T]).

Files per fixture folder: config.json, model.safetensors (or model-0000N-of-0000M.safetensors +
model.safetensors.index.json), generation_config.json when transformers writes one, ids.npy,
logits.npy, meta.json (what it covers, the config spelling, the config transformers itself wrote,
the resolved layer types / rope parameters, the checks that ran and their numbers, versions).

Fixtures (vocab 512, hidden 64 unless said; T = 40 unless said):
  llama_rope_llama3    Llama, untied head, 4 heads / 2 kv (GQA), rope_type llama3 factor 8,
                       low 1, high 4, original_max_position_embeddings 32 (so the head_dim-16
                       frequencies hit all three branches: kept, smoothed, divided by 8),
                       max_position_embeddings 128, theta 1e4. Config: 5.x spelling.
  llama_tied_bias      Llama, tied, attention_bias + mlp_bias (q/k/v/o and gate/up/down biases),
                       head_dim 32 with 4 heads (!= hidden/heads = 16), 1 kv head (MQA),
                       rope_scaling linear factor 2. Config: 4.x spelling.
  llama_dynamic        Llama, rope_scaling dynamic factor 2, max_position_embeddings 32, T = 48:
                       transformers recomputes the rope base from seq_len = 48 for the whole
                       forward. Config: 4.x spelling.
  qwen2_bias_sliding   Qwen2 (q/k/v biases), untied, use_sliding_window, sliding_window 8,
                       max_window_layers 1, 3 layers -> layer_types full, sliding, sliding.
                       Config: 5.x spelling.
  qwen2_tied           Qwen2, tied, 4 heads / 4 kv (MHA), no sliding window: the 4.x config
                       says sliding_window 8 and max_window_layers 0 but use_sliding_window
                       false, which transformers reads as "no window". Config: 4.x spelling.
  qwen3_headdim        Qwen3, tied, 4 heads / 2 kv, head_dim 32 (!= 16), q_norm/k_norm.
                       Config: 4.x spelling.
  gemma2_softcap       Gemma2, 4 layers (layers 0, 2 slide, window 8), attn softcap 50 and final
                       softcap 30 (both checked to change the logits), query_pre_attn_scalar 24
                       (!= head_dim 16), 4 heads / 2 kv, tied. Config: 5.x spelling.
  gemma3_text_sliding  Gemma3ForCausalLM (gemma3_text), 4 layers sliding, full, sliding, full,
                       window 8, global layers rope theta 1e6 + linear x8, local theta 1e4,
                       query_pre_attn_scalar 32, head_dim 32, 4 heads / 2 kv, q/k norms, tied.
                       Config: 4.x spelling (sliding_window_pattern 2, rope_local_base_freq).
  gemma3_mm_defaults   Gemma3ForConditionalGeneration (model_type gemma3) with a tiny SigLIP
                       vision tower; config.json written by hand like google/gemma-3-4b-it's:
                       text_config gives only hidden 64, intermediate 128, 2 layers, window 8,
                       vocab 512, sliding_window_pattern 2, rope_scaling linear 8; heads 8, kv 4,
                       head_dim 256, query_pre_attn_scalar 256, thetas 1e6 / 1e4, eps 1e-6 come
                       from Gemma3TextConfig's defaults.
                       Goldens: text-only forward (no image tokens). Config: 4.x spelling.
                       Tensors as transformers 5.17 saves them: language_model.model.*,
                       vision_tower.* (no "vision_model."), multi_modal_projector.*, no lm_head.
  gemma3_mm_prefix_old the same model, config and goldens, tensors renamed to the published
                       google/gemma-3-*-it layout: language_model.model.*,
                       vision_tower.vision_model.*, multi_modal_projector.*.
  gemma3_mm_prefix_new the same again with transformers' in-memory names:
                       model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*
                       (made whenever save_pretrained did not already write this layout).
  llama_sharded        Llama, untied, 4 heads / 4 kv (MHA), theta 5e5, saved as 3 shards +
                       model.safetensors.index.json. Config: 5.x spelling.
"""

import argparse
import copy
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback

VOCAB = 512
HIDDEN = 64
FOURX_VERSION = "4.57.1"  # transformers_version written into the hand-written 4.x configs

SLIDE = "sliding_attention"
FULL = "full_attention"

# --------------------------------------------------------------------------------------------
# Fixture specs
# --------------------------------------------------------------------------------------------
# Param overrides: list of (regex searched in the parameter name, mean, std); first match wins.
# checks (run on the in-memory model before saving; all numbers go to meta.json):
#   {"kind": "differs", "what": text, "set": {config attr: value}, "min": m}
#       a model with those config attributes changed (same weights) must move some logit by >= m
#   {"kind": "window", "W": w, "set": {...}}
#       with the window widened, logits at positions < w are unchanged and position w changes
#   {"kind": "raw_logits", "min": m}   max |logit before the final softcap| >= m
#   {"kind": "dynamic_prefix", "n": n, "set": {...}}
#       on ids[:n] (n <= max_position_embeddings) the dynamic model equals the unscaled one

SPECS = [
    dict(
        name="llama_rope_llama3",
        arch="LlamaForCausalLM", cfg_class="LlamaConfig", family="llama", seed=1001, T=40,
        spelling="5.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=32,
                                 rope_theta=10000.0),
        ),
        checks=[
            dict(kind="differs", what="llama3 rope scaling changes the logits",
                 set=dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0)), min=1e-2),
        ],
        covers="LlamaForCausalLM; untied lm_head; GQA 4 heads / 2 kv heads (head_dim 16); "
               "rope_type llama3 (factor 8, low_freq_factor 1, high_freq_factor 4, "
               "original_max_position_embeddings 32: head_dim-16 frequencies fall in all three "
               "branches: wavelen < 8 kept, 8..32 smoothed, > 32 divided by 8); rope_theta 1e4; "
               "rms_norm_eps 1e-5; random norm weights (x*w).",
    ),
    dict(
        name="llama_tied_bias",
        arch="LlamaForCausalLM", cfg_class="LlamaConfig", family="llama", seed=1002, T=40,
        spelling="4.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=32,
            max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True,
            attention_bias=True, mlp_bias=True,
            rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=10000.0),
        ),
        # first candidate uses the oldest spelling ("type"), the second the 4.4x one
        fourx_candidates=[
            dict(rope_scaling=dict(type="linear", factor=2.0)),
            dict(rope_scaling=dict(rope_type="linear", factor=2.0)),
        ],
        checks=[
            dict(kind="differs", what="linear rope scaling changes the logits",
                 set=dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0)), min=1e-2),
        ],
        covers="LlamaForCausalLM; tied embeddings (no lm_head.weight in the file); "
               "attention_bias (q/k/v/o_proj biases) and mlp_bias (gate/up/down_proj biases); "
               "head_dim 32 given explicitly with hidden 64 and 4 heads (q_proj 64->128, "
               "o_proj 128->64); 1 kv head (MQA); rope_scaling linear factor 2 (positions / 2).",
    ),
    dict(
        name="llama_dynamic",
        arch="LlamaForCausalLM", cfg_class="LlamaConfig", family="llama", seed=1003, T=48,
        spelling="4.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
            rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="dynamic", factor=2.0, rope_theta=10000.0),
        ),
        fourx_candidates=[
            dict(rope_scaling=dict(type="dynamic", factor=2.0)),
            dict(rope_scaling=dict(rope_type="dynamic", factor=2.0)),
        ],
        checks=[
            dict(kind="differs", what="dynamic scaling is active at T=48 > 32",
                 set=dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0)), min=1e-3),
            dict(kind="dynamic_prefix", n=32,
                 set=dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
        ],
        covers="LlamaForCausalLM; rope_scaling dynamic (NTK) factor 2 with "
               "max_position_embeddings 32 and T = 48: transformers uses, for the whole forward, "
               "base = theta * (factor * L / max_pos - (factor - 1)) ** (d / (d - 2)) with "
               "L = max(position_ids) + 1 = 48, d = head_dim 16; at L <= 32 the plain rope "
               "(checked). Goldens come from ONE fresh forward over the 48 ids (transformers' "
               "dynamic rope keeps state between calls).",
    ),
    dict(
        name="qwen2_bias_sliding",
        arch="Qwen2ForCausalLM", cfg_class="Qwen2Config", family="qwen2", seed=1004, T=40,
        spelling="5.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=False,
            use_sliding_window=True, sliding_window=8, max_window_layers=1,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        expect_layer_types=[FULL, SLIDE, SLIDE],
        checks=[
            dict(kind="window", W=8, set=dict(sliding_window=100000)),
        ],
        covers="Qwen2ForCausalLM; q/k/v biases (o_proj none); untied; GQA 4/2; "
               "use_sliding_window true, sliding_window 8, max_window_layers 1 with 3 layers: "
               "layer i slides iff i >= max_window_layers (layer_types full, sliding, sliding); "
               "query i sees key j iff 0 <= i - j < 8 (checked: widening the window leaves "
               "positions 0..7 unchanged and changes position 8).",
    ),
    dict(
        name="qwen2_tied",
        arch="Qwen2ForCausalLM", cfg_class="Qwen2Config", family="qwen2", seed=1005, T=40,
        spelling="4.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=None, max_window_layers=2,
            layer_types=[FULL, FULL],
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
        expect_layer_types=[FULL, FULL],
        fourx_candidates=[
            dict(use_sliding_window=False, sliding_window=8, max_window_layers=0),
        ],
        covers="Qwen2ForCausalLM; tied embeddings; MHA 4 heads / 4 kv heads; q/k/v biases; "
               "no sliding window: the 4.x config.json carries sliding_window 8 and "
               "max_window_layers 0 but use_sliding_window false, and transformers ignores the "
               "window then (checked: reloading it equals the model built with no window).",
    ),
    dict(
        name="qwen3_headdim",
        arch="Qwen3ForCausalLM", cfg_class="Qwen3Config", family="qwen3", seed=1006, T=40,
        spelling="4.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=None, max_window_layers=2,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
        expect_layer_types=[FULL, FULL],
        covers="Qwen3ForCausalLM; tied; GQA 4/2; head_dim 32 != hidden/heads 16 (q_proj "
               "64->128, k/v 64->64, o_proj 128->64); q_norm / k_norm (RMSNorm over head_dim, "
               "x*w, random weights) applied per head before rope; no q/k/v biases; theta 1e6.",
    ),
    dict(
        name="gemma2_softcap",
        arch="Gemma2ForCausalLM", cfg_class="Gemma2Config", family="gemma", seed=1007, T=40,
        spelling="5.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0, max_position_embeddings=128, rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        expect_layer_types=[SLIDE, FULL, SLIDE, FULL],
        # bigger q/k (so attention scores reach the softcap's curved part) and a bigger final
        # norm (so raw logits exceed 10 and the final cap bends them); retried bigger if not
        attempts=[
            [(r"self_attn\.[qk]_proj\.weight$", 0.0, 0.35), (r"^model\.norm\.weight$", 1.5, 0.3)],
            [(r"self_attn\.[qk]_proj\.weight$", 0.0, 0.6), (r"^model\.norm\.weight$", 2.5, 0.3)],
        ],
        checks=[
            dict(kind="raw_logits", min=10.0),
            dict(kind="differs", what="final_logit_softcapping 30 changes the logits",
                 set=dict(final_logit_softcapping=None), min=1.0),
            dict(kind="differs", what="attn_logit_softcapping 50 changes the logits",
                 set=dict(attn_logit_softcapping=None), min=2e-2),
            dict(kind="differs", what="query_pre_attn_scalar 24 (not head_dim 16) matters",
                 set=dict(query_pre_attn_scalar=16), min=1e-2),
            dict(kind="window", W=8, set=dict(sliding_window=100000)),
        ],
        covers="Gemma2ForCausalLM; RMSNorm x*(1+w) with random w; 4 norms per layer; "
               "embeddings scaled by sqrt(64) = 8; gelu_tanh MLP; 4 layers, layer_types sliding, "
               "full, sliding, full (window 8, checked); attention scale "
               "query_pre_attn_scalar**-0.5 = 24**-0.5 (checked != head_dim); "
               "attn_logit_softcapping 50 (50*tanh(s/50) before the mask, checked to matter) and "
               "final_logit_softcapping 30 (checked: max |raw logit| > 10); tied; GQA 4/2.",
    ),
    dict(
        name="gemma3_text_sliding",
        arch="Gemma3ForCausalLM", cfg_class="Gemma3TextConfig", family="gemma", seed=1008, T=40,
        spelling="4.x",
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            query_pre_attn_scalar=32, sliding_window=8, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=True,
            layer_types=[SLIDE, FULL, SLIDE, FULL],
            rope_parameters={
                FULL: dict(rope_type="linear", factor=8.0, rope_theta=1000000.0),
                SLIDE: dict(rope_type="default", rope_theta=10000.0),
            },
        ),
        expect_layer_types=[SLIDE, FULL, SLIDE, FULL],
        checks=[
            dict(kind="window", W=8, set=dict(sliding_window=100000)),
            dict(kind="differs", what="linear x8 on the global layers matters",
                 set=dict(rope_parameters={
                     FULL: dict(rope_type="default", rope_theta=1000000.0),
                     SLIDE: dict(rope_type="default", rope_theta=10000.0)}), min=1e-3),
            dict(kind="differs", what="the local theta 1e4 (not 1e6) on sliding layers matters",
                 set=dict(rope_parameters={
                     FULL: dict(rope_type="linear", factor=8.0, rope_theta=1000000.0),
                     SLIDE: dict(rope_type="default", rope_theta=1000000.0)}), min=1e-3),
        ],
        covers="Gemma3ForCausalLM (model_type gemma3_text); x*(1+w) norms incl. q_norm/k_norm "
               "over head_dim; embeddings * 8; 4 layers: layer i is global iff (i+1) % 2 == 0 "
               "(sliding_window_pattern 2 -> sliding, full, sliding, full); window 8 (checked); "
               "global layers: theta 1e6 with linear x8 (positions / 8, checked); sliding "
               "layers: rope_local_base_freq 1e4, unscaled (checked); query_pre_attn_scalar 32; "
               "head_dim 32 (q_proj 64->128); GQA 4/2; tied; no softcapping.",
    ),
    dict(
        name="gemma3_mm_defaults",
        arch="Gemma3ForConditionalGeneration", cfg_class="Gemma3Config", family="gemma",
        seed=1009, T=40, spelling="handwritten",
        config=dict(
            text_config=dict(
                model_type="gemma3_text", vocab_size=VOCAB, hidden_size=HIDDEN,
                intermediate_size=128, num_hidden_layers=2, sliding_window=8,
                # the Gemma3TextConfig defaults, spelled out so that the hand-written file
                # (which leaves them out) is checked to mean the same model
                num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                query_pre_attn_scalar=256, rms_norm_eps=1e-6,
                layer_types=[SLIDE, FULL],
                rope_parameters={
                    FULL: dict(rope_type="linear", factor=8.0, rope_theta=1000000.0),
                    SLIDE: dict(rope_type="default", rope_theta=10000.0),
                },
            ),
            vision_config=dict(
                model_type="siglip_vision_model", hidden_size=16, intermediate_size=32,
                num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14,
                vision_use_head=False,
            ),
            # boi / eoi / image token ids stay at their defaults 255999 / 256000 / 262144
            mm_tokens_per_image=4,
        ),
        expect_layer_types=[SLIDE, FULL],
        handwritten_config={
            "architectures": ["Gemma3ForConditionalGeneration"],
            "boi_token_index": 255999,
            "eoi_token_index": 256000,
            "eos_token_id": [1, 106],
            "image_token_index": 262144,
            "initializer_range": 0.02,
            "mm_tokens_per_image": 4,
            "model_type": "gemma3",
            "text_config": {
                "hidden_size": 64,
                "intermediate_size": 128,
                "model_type": "gemma3_text",
                "num_hidden_layers": 2,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "sliding_window": 8,
                "sliding_window_pattern": 2,
                "vocab_size": 512,
            },
            "torch_dtype": "bfloat16",
            "transformers_version": "4.50.0.dev0",
            "vision_config": {
                "hidden_size": 16,
                "image_size": 28,
                "intermediate_size": 32,
                "model_type": "siglip_vision_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "patch_size": 14,
                "vision_use_head": False,
            },
        },
        expect_text_attrs=dict(num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                               query_pre_attn_scalar=256, rms_norm_eps=1e-6,
                               sliding_window=8, vocab_size=512),
        covers="Gemma3ForConditionalGeneration (model_type gemma3, text_config gemma3_text, "
               "SigLIP vision tower hidden 16 / 1 layer / image 28 / patch 14, "
               "mm_tokens_per_image 4); config.json hand-written like google/gemma-3-4b-it's: "
               "the text model's heads 8, kv heads 4, head_dim 256, query_pre_attn_scalar 256, "
               "rope_theta 1e6, rope_local_base_freq 1e4, rms_norm_eps 1e-6 come from "
               "Gemma3TextConfig defaults (checked: the reloaded file equals a model built with "
               "them spelled out); sliding_window_pattern 2 -> layers sliding, full; "
               "rope_scaling linear 8 on the global layer; tied (no lm_head in the file). "
               "Tensors exactly as transformers 5.17's save_pretrained writes them: "
               "language_model.model.*, vision_tower.* (no vision_model.), "
               "multi_modal_projector.*. Goldens: text-only forward of the ids (no image "
               "tokens: image/boi/eoi ids 262144/255999/256000 are >= vocab).",
    ),
    dict(
        name="llama_sharded",
        arch="LlamaForCausalLM", cfg_class="LlamaConfig", family="llama", seed=1010, T=40,
        spelling="5.x", shards=3,
        config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
            rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=500000.0),
        ),
        covers="LlamaForCausalLM saved with a small max_shard_size: 3 safetensors shards + "
               "model.safetensors.index.json (weight_map name -> file); untied; MHA 4/4; "
               "theta 5e5, no scaling.",
    ),
]

# --------------------------------------------------------------------------------------------
# Pure-Python helpers (no torch; exercised by --selftest)
# --------------------------------------------------------------------------------------------


def read_safetensors_header(path):
    """Return (header dict, data start offset) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def safetensors_keys(folder):
    """All tensor names of a model folder (single file or shards) -> {name: file}."""
    out = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors"):
            h, _ = read_safetensors_header(os.path.join(folder, fn))
            for k in h:
                if k != "__metadata__":
                    out[k] = fn
    return out


def rename_safetensors(src, dst, rename):
    """Copy a safetensors file, renaming its tensors with rename(name) -> name; the data bytes
    are copied verbatim (same offsets), the header is re-padded with spaces to 8 bytes."""
    header, start = read_safetensors_header(src)
    if all(k == "__metadata__" or rename(k) == k for k in header):
        shutil.copyfile(src, dst)  # nothing to rename: keep the bytes identical
        return
    new = {}
    for k, v in header.items():
        nk = k if k == "__metadata__" else rename(k)
        if nk in new:
            raise ValueError("rename collision: %s" % nk)
        new[nk] = v
    hb = json.dumps(new, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    with open(src, "rb") as f:
        f.seek(start)
        data = f.read()
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.write(data)


# Multimodal Gemma 3 tensor layouts. transformers 5.17's save_pretrained writes
# language_model.model.*, vision_tower.* (no vision_model.), multi_modal_projector.* (lm_head
# tied, absent); the published google/gemma-3-*-it files have language_model.model.*,
# vision_tower.vision_model.*, multi_modal_projector.*; transformers' in-memory names are
# model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*, lm_head.*.
PUBLISHED_GEMMA3_RULES = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^(?:model\.)?vision_tower\.(?!vision_model\.)", "vision_tower.vision_model."),
    (r"^model\.vision_tower\.", "vision_tower."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    (r"^lm_head\.", "language_model.lm_head."),
]


def to_published_gemma3_name(name, language_only=False):
    rules = PUBLISHED_GEMMA3_RULES[:1] if language_only else PUBLISHED_GEMMA3_RULES
    for pat, rep in rules:
        n2, k = re.subn(pat, rep, name)
        if k:
            return n2
    return name


NEW_GEMMA3_RULES = [
    (r"^language_model\.model\.", "model.language_model."),
    (r"^vision_tower\.(?:vision_model\.)?", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^language_model\.lm_head\.", "lm_head."),
]


def to_new_gemma3_name(name):
    for pat, rep in NEW_GEMMA3_RULES:
        n2, k = re.subn(pat, rep, name)
        if k:
            return n2
    return name


def pattern_from_layer_types(layer_types):
    """Smallest p with: layer i is full attention iff (i + 1) % p == 0 (Gemma 3's rule)."""
    n = len(layer_types)
    for p in range(1, n + 2):
        if all((lt == FULL) == ((i + 1) % p == 0) for i, lt in enumerate(layer_types)):
            return p
    raise ValueError("layer_types %r follow no sliding_window_pattern" % (layer_types,))


def _rope_to_4x(rp):
    """A flat 5.x rope dict -> (rope_theta, rope_scaling or None)."""
    rp = dict(rp)
    theta = rp.pop("rope_theta")
    if rp.get("rope_type", rp.get("type", "default")) == "default":
        return theta, None
    return theta, rp


def config_to_4x(c5, model_type):
    """The config.json transformers 5.x wrote -> the same model in the 4.x spelling:
    torch_dtype, rope_theta, rope_scaling, (gemma3) rope_local_base_freq and
    sliding_window_pattern; no dtype, rope_parameters, layer_types."""
    c = copy.deepcopy(c5)
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    rp = c.pop("rope_parameters", None)
    lt = c.pop("layer_types", None)
    c.pop("_sliding_window_pattern", None)
    c.pop("sliding_window_pattern", None)
    if model_type == "gemma3_text":
        if rp is None or FULL not in rp or SLIDE not in rp:
            raise ValueError("gemma3_text rope_parameters not keyed by layer type: %r" % (rp,))
        c["rope_theta"], c["rope_scaling"] = _rope_to_4x(rp[FULL])
        local_theta, local_scaling = _rope_to_4x(rp[SLIDE])
        if local_scaling is not None:
            raise ValueError("4.x cannot spell a scaled local rope: %r" % (rp[SLIDE],))
        c["rope_local_base_freq"] = local_theta
        if lt is not None:
            c["sliding_window_pattern"] = pattern_from_layer_types(lt)
    else:
        if rp is not None:
            if FULL in rp or SLIDE in rp:
                raise ValueError("unexpected per-layer-type rope for %s: %r" % (model_type, rp))
            c["rope_theta"], c["rope_scaling"] = _rope_to_4x(rp)
        if model_type in ("qwen2", "qwen3") and lt is not None:
            sw = c.get("sliding_window") if c.get("use_sliding_window") else None
            mwl = c.get("max_window_layers", 0)
            derived = [SLIDE if sw is not None and i >= mwl else FULL for i in range(len(lt))]
            if derived != lt:
                raise ValueError("qwen layer_types %r not derivable (got %r)" % (lt, derived))
        elif lt is not None and any(t != FULL for t in lt):
            raise ValueError("cannot spell layer_types %r in 4.x for %s" % (lt, model_type))
    c["transformers_version"] = FOURX_VERSION
    for bad in ("dtype", "rope_parameters", "layer_types", "_sliding_window_pattern"):
        assert bad not in c, bad
    return c


def selftest():
    # config conversion
    g5 = {"model_type": "gemma3_text", "dtype": "bfloat16", "num_hidden_layers": 4,
          "layer_types": [SLIDE, FULL, SLIDE, FULL], "sliding_window": 8,
          "rope_parameters": {FULL: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                              SLIDE: {"rope_type": "default", "rope_theta": 1e4}},
          "transformers_version": "5.17.0"}
    g4 = config_to_4x(g5, "gemma3_text")
    assert g4["torch_dtype"] == "bfloat16" and "dtype" not in g4
    assert g4["rope_theta"] == 1e6 and g4["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}
    assert g4["rope_local_base_freq"] == 1e4 and g4["sliding_window_pattern"] == 2
    assert "layer_types" not in g4 and "rope_parameters" not in g4
    assert pattern_from_layer_types([SLIDE] * 5 + [FULL] + [SLIDE] * 2) == 6
    assert pattern_from_layer_types([FULL, FULL]) == 1
    try:
        pattern_from_layer_types([FULL, SLIDE])
        raise AssertionError("expected failure")
    except ValueError:
        pass
    q5 = {"model_type": "qwen2", "dtype": "bfloat16", "use_sliding_window": True,
          "sliding_window": 8, "max_window_layers": 1, "layer_types": [FULL, SLIDE, SLIDE],
          "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    q4 = config_to_4x(q5, "qwen2")
    assert q4["rope_theta"] == 1e4 and q4["rope_scaling"] is None and "layer_types" not in q4
    l5 = {"model_type": "llama", "dtype": "bfloat16",
          "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}
    l4 = config_to_4x(l5, "llama")
    assert l4["rope_scaling"] == {"rope_type": "dynamic", "factor": 2.0}
    # safetensors rename round trip
    tmp = tempfile.mkdtemp()
    try:
        hdr = {"__metadata__": {"format": "pt"},
               "language_model.model.embed_tokens.weight":
                   {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
               "vision_tower.post_layernorm.bias":
                   {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]},
               "multi_modal_projector.mm_input_projection_weight":
                   {"dtype": "BF16", "shape": [1, 1], "data_offsets": [14, 16]}}
        hb = json.dumps(hdr).encode()
        data = bytes(range(16))
        src = os.path.join(tmp, "a.safetensors")
        with open(src, "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb + data)
        dst = os.path.join(tmp, "b.safetensors")
        rename_safetensors(src, dst, to_published_gemma3_name)
        h2, start = read_safetensors_header(dst)
        assert start % 8 == 0
        assert set(h2) == {"__metadata__", "language_model.model.embed_tokens.weight",
                           "vision_tower.vision_model.post_layernorm.bias",
                           "multi_modal_projector.mm_input_projection_weight"}, h2
        with open(dst, "rb") as f:
            f.seek(start)
            assert f.read() == data
        rename_safetensors(src, dst, to_new_gemma3_name)
        assert set(read_safetensors_header(dst)[0]) == {
            "__metadata__", "model.language_model.embed_tokens.weight",
            "model.vision_tower.post_layernorm.bias",
            "model.multi_modal_projector.mm_input_projection_weight"}
        rename_safetensors(src, dst, lambda k: to_published_gemma3_name(k, True))
        with open(src, "rb") as f1, open(dst, "rb") as f2:
            assert f1.read() == f2.read()  # identity rename: byte-identical copy
        t = to_published_gemma3_name
        assert t("lm_head.weight") == "language_model.lm_head.weight"
        assert t("model.language_model.norm.weight") == "language_model.model.norm.weight"
        assert t("model.vision_tower.encoder.x") == "vision_tower.vision_model.encoder.x"
        assert t("vision_tower.vision_model.encoder.x") == "vision_tower.vision_model.encoder.x"
        assert t("model.vision_tower.vision_model.y") == "vision_tower.vision_model.y"
        assert t("model.multi_modal_projector.z") == "multi_modal_projector.z"
        assert t("vision_tower.a", language_only=True) == "vision_tower.a"
        n = to_new_gemma3_name
        assert n("vision_tower.vision_model.encoder.x") == "model.vision_tower.encoder.x"
        assert n("language_model.lm_head.weight") == "lm_head.weight"
    finally:
        shutil.rmtree(tmp)
    names = [s["name"] for s in SPECS]
    assert len(names) == len(set(names))
    print("selftest ok")


# --------------------------------------------------------------------------------------------
# The torch part
# --------------------------------------------------------------------------------------------


class Retry(Exception):
    pass


WARNINGS = []  # problems that did not drop a fixture; printed at the end


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "fixtures"))
    ap.add_argument("--only", default="")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        return 0
    selftest()

    global np, torch, transformers
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    todo = [s for s in SPECS if not only or s["name"] in only]
    print("torch %s, transformers %s, numpy %s" % (torch.__version__, transformers.__version__,
                                                  np.__version__))
    failed = []
    summary = []
    for spec in todo:
        t0 = time.time()
        print("\n=== %s ===" % spec["name"], flush=True)
        try:
            lines = make_fixture(spec, args.out)
            summary.extend(lines)
            print("=== %s done in %.1fs" % (spec["name"], time.time() - t0), flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(spec["name"])
            shutil.rmtree(os.path.join(args.out, spec["name"]), ignore_errors=True)
    total = 0
    for root, _, files in os.walk(args.out):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print("\n==== summary ====")
    for line in summary:
        print(line)
    print("total size of %s: %.2f MB" % (args.out, total / 1e6))
    for w in WARNINGS:
        print("WARNING: " + w)
    if failed or WARNINGS:
        print("FAILED: %s" % ",".join(failed))
        return 1
    print("all fixtures ok")
    return 0


def build_model(cls, cfg):
    """A float32 eager model from a config object (weights are overwritten afterwards)."""
    try:
        m = cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    except TypeError as e:
        print("  note: _from_config(dtype=...) failed (%s); trying torch_dtype" % e)
        m = cls._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    m = m.to(torch.float32).eval()
    check_eager(m)
    return m


def check_eager(m):
    impl = m.config._attn_implementation
    assert impl == "eager", "attn implementation is %r" % impl
    if hasattr(m.config, "text_config"):
        ti = m.config.get_text_config()._attn_implementation
        if ti != "eager":
            print("  WARNING: text_config attn implementation is %r" % ti)


def randomize(model, family, seed, overrides):
    """Every parameter random, rounded to bf16-representable values (kept in float32)."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    for name, p in model.named_parameters():
        mean, std = None, None
        for pat, mu, sd in overrides or []:
            if re.search(pat, name):
                mean, std = mu, sd
                break
        if std is None:
            if name.endswith(".bias"):
                mean, std = 0.0, 0.1
            elif p.dim() == 1 and "norm" in name:
                gemma_style = family == "gemma" and "vision_tower" not in name
                mean, std = (0.0, 0.3) if gemma_style else (1.0, 0.3)
            elif "embed_tokens" in name:
                mean, std = 0.0, 0.4
            else:
                mean, std = 0.0, 0.1
        with torch.no_grad():
            v = torch.randn(p.shape, generator=g, dtype=torch.float32) * std + mean
            p.copy_(v.to(torch.bfloat16).to(torch.float32))
        n += p.numel()
    return n


def run_logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor(np.asarray(ids), dtype=torch.long)[None])
    lg = out.logits[0].detach().to(torch.float32).cpu().numpy()
    assert lg.shape == (len(ids), VOCAB), lg.shape
    assert np.isfinite(lg).all(), "non-finite logits"
    return lg


def variant(cls, model, changes):
    """Same weights, config attributes changed, fresh model."""
    cfg = copy.deepcopy(model.config)
    target = cfg.get_text_config() if hasattr(cfg, "text_config") else cfg
    for k, v in changes.items():
        setattr(target, k, copy.deepcopy(v))
    m2 = build_model(cls, cfg)
    m2.load_state_dict(model.state_dict(), strict=True)
    return m2.eval()


def run_checks(spec, cls, m, ids, logits_mem, last_attempt):
    results = []
    for chk in spec.get("checks", []):
        kind = chk["kind"]
        r = dict(chk)
        if kind == "differs":
            lv = run_logits(variant(cls, m, chk["set"]), ids)
            d = float(np.abs(lv - logits_mem).max())
            r["max_abs_logit_change"] = d
            ok = d >= chk["min"]
        elif kind == "window":
            lv = run_logits(variant(cls, m, chk["set"]), ids)
            per_pos = np.abs(lv - logits_mem).max(axis=1)
            changed = np.nonzero(per_pos > 1e-6)[0]
            first = int(changed[0]) if len(changed) else -1
            r["first_changed_position"] = first
            r["max_change_before_W"] = float(per_pos[:chk["W"]].max())
            r["max_change_from_W"] = float(per_pos[chk["W"]:].max())
            ok = first == chk["W"] and r["max_change_from_W"] > 1e-3
        elif kind == "raw_logits":
            got = []
            h = m.model.norm.register_forward_hook(lambda mod, i, o: got.append(o))
            try:
                run_logits(m, ids)
            finally:
                h.remove()
            with torch.no_grad():
                raw = got[-1][0] @ m.lm_head.weight.T
            r["max_abs_raw_logit"] = float(raw.abs().max())
            ok = r["max_abs_raw_logit"] >= chk["min"]
        elif kind == "dynamic_prefix":
            n = chk["n"]
            fresh = variant(cls, m, {})
            ld = run_logits(fresh, ids[:n])
            lp = run_logits(variant(cls, m, chk["set"]), ids[:n])
            r["max_abs_diff_at_n"] = float(np.abs(ld - lp).max())
            ok = r["max_abs_diff_at_n"] <= 1e-5
        else:
            raise ValueError(kind)
        r["ok"] = bool(ok)
        print("  check %-14s %s -> %s" % (kind, chk.get("what", ""),
                                          {k: v for k, v in r.items() if k not in chk}))
        results.append(r)
        if not ok:
            if not last_attempt:
                raise Retry("check failed: %r" % r)
            print("  CHECK FAILED (kept, recorded in meta.json): %r" % r)
            WARNINGS.append("%s: check failed: %r" % (spec["name"], r))
    return results


def save_bf16(m, folder, shards=None):
    mb = copy.deepcopy(m).to(torch.bfloat16)
    if not shards:
        mb.save_pretrained(folder)
        return None
    total = sum(p.numel() * 2 for p in mb.parameters())
    tried = []
    for frac in [x / 100.0 for x in range(30, 70, 2)]:
        size = int(total * frac)
        tmp = tempfile.mkdtemp()
        mb.save_pretrained(tmp, max_shard_size=size)
        nshard = len([f for f in os.listdir(tmp) if f.endswith(".safetensors")])
        tried.append((size, nshard))
        if nshard == shards and os.path.exists(os.path.join(tmp, "model.safetensors.index.json")):
            for fn in os.listdir(tmp):
                shutil.move(os.path.join(tmp, fn), os.path.join(folder, fn))
            shutil.rmtree(tmp)
            return size
        shutil.rmtree(tmp)
    raise RuntimeError("no max_shard_size gave %d shards: %r" % (shards, tried))


def reload_and_compare(cls, folder, m, ids, logits_mem):
    r = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    check_eager(r)
    pm = dict(m.named_parameters())
    pr = dict(r.named_parameters())
    if set(pm) != set(pr):
        raise AssertionError("parameter names differ: only in-memory %s, only reloaded %s" % (
            sorted(set(pm) - set(pr))[:8], sorted(set(pr) - set(pm))[:8]))
    for k in pm:
        if pr[k].dtype != torch.float32:
            raise AssertionError("%s loaded as %s" % (k, pr[k].dtype))
        if not torch.equal(pm[k].detach(), pr[k].detach()):
            raise AssertionError("parameter %s differs after reload (max %g)" % (
                k, float((pm[k] - pr[k]).abs().max())))
    lr = run_logits(r, ids)
    d = float(np.abs(lr - logits_mem).max())
    if d > 1e-5:
        raise AssertionError("reloaded logits differ from the in-memory model's by %g" % d)
    return r, lr, d


def resolved(cfg):
    t = cfg.get_text_config() if hasattr(cfg, "text_config") else cfg
    out = {}
    for k in ("model_type", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "hidden_size", "intermediate_size", "vocab_size", "rms_norm_eps",
              "tie_word_embeddings", "sliding_window", "use_sliding_window", "max_window_layers",
              "layer_types", "rope_parameters", "query_pre_attn_scalar",
              "attn_logit_softcapping", "final_logit_softcapping", "max_position_embeddings",
              "attention_bias", "mlp_bias", "hidden_act", "hidden_activation"):
        if hasattr(t, k):
            out[k] = copy.deepcopy(getattr(t, k))
    return json.loads(json.dumps(out, default=str))


def chmod_files(folder):
    for fn in os.listdir(folder):
        os.chmod(os.path.join(folder, fn), 0o644)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def weight_prefixes(keys):
    pre = {}
    for k in keys:
        parts = k.split(".")
        p = ".".join(parts[:2]) if parts[0] in ("model", "language_model") else parts[0]
        pre[p] = pre.get(p, 0) + 1
    return pre


def fallback_5x(name, folder, cls, m, ids, logits_mem, cfg_saved):
    msg = "%s: NO 4.x config reproduced the model; kept the 5.x config.json" % name
    print("  WARNING " + msg)
    WARNINGS.append(msg)
    write_json(os.path.join(folder, "config.json"), cfg_saved)
    r, lr, d = reload_and_compare(cls, folder, m, ids, logits_mem)
    return r, lr, d, "5.x (FALLBACK: the 4.x spelling was rejected, see config_candidates_tried)"


def make_fixture(spec, outdir):
    name = spec["name"]
    folder = os.path.join(outdir, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    cls = getattr(transformers, spec["arch"])
    cfg_cls = getattr(transformers, spec["cfg_class"])
    T = spec["T"]
    ids = np.random.default_rng(spec["seed"]).integers(0, VOCAB, size=T).astype(np.int32)

    cfg = cfg_cls(**copy.deepcopy(spec["config"]))
    attempts = spec.get("attempts") or [[]]
    m, checks, nparams, used_overrides = None, None, 0, None
    for ai, ov in enumerate(attempts):
        m = build_model(cls, copy.deepcopy(cfg))
        nparams = randomize(m, spec["family"], spec["seed"], ov)
        logits_mem = run_logits(m, ids)
        try:
            checks = run_checks(spec, cls, m, ids, logits_mem, ai + 1 == len(attempts))
            used_overrides = ov
            break
        except Retry as e:
            if ai + 1 == len(attempts):
                raise
            print("  retrying with the next overrides (%s)" % e)
    logits_mem = run_logits(m, ids)  # (dynamic rope: the model's state after a 48-long run)

    lt_mem = getattr(m.config.get_text_config(), "layer_types", None)
    if spec.get("expect_layer_types") is not None:
        assert lt_mem == spec["expect_layer_types"], "layer_types %r" % (lt_mem,)

    shard_size = save_bf16(m, folder, spec.get("shards"))
    with open(os.path.join(folder, "config.json")) as f:
        cfg_saved = json.load(f)
    keys_saved = safetensors_keys(folder)
    print("  saved config.json keys: %s" % sorted(cfg_saved))
    print("  saved tensors: %d, prefixes %s" % (len(keys_saved), weight_prefixes(keys_saved)))

    spelling_note = None
    cand_log = []
    if spec["spelling"] == "5.x":
        r, lr, d = reload_and_compare(cls, folder, m, ids, logits_mem)
        spelling = "5.x: the config.json transformers %s save_pretrained wrote, unchanged" % (
            transformers.__version__)
    elif spec["spelling"] == "4.x":
        base4 = config_to_4x(cfg_saved, cfg_saved.get("model_type"))
        r = None
        for cand in spec.get("fourx_candidates") or [{}]:
            c4 = copy.deepcopy(base4)
            c4.update(copy.deepcopy(cand))
            write_json(os.path.join(folder, "config.json"), c4)
            try:
                r, lr, d = reload_and_compare(cls, folder, m, ids, logits_mem)
                spelling_note = "candidate %r accepted" % (cand,)
                cand_log.append(dict(candidate=cand, ok=True))
                break
            except Exception as e:
                print("  4.x candidate %r rejected: %s" % (cand, e))
                cand_log.append(dict(candidate=cand, ok=False, error=str(e)[:500]))
        spelling = ("4.x: hand-written from the 5.x file (torch_dtype, rope_theta, rope_scaling%s; "
                    "no dtype/rope_parameters/layer_types)" % (
                        ", rope_local_base_freq, sliding_window_pattern"
                        if cfg_saved.get("model_type") == "gemma3_text" else ""))
        if r is None:
            r, lr, d, spelling = fallback_5x(name, folder, cls, m, ids, logits_mem, cfg_saved)
    else:  # hand-written multimodal config
        write_json(os.path.join(folder, "config.json"), spec["handwritten_config"])
        spelling = ("4.x: hand-written like google/gemma-3-4b-it's config.json (torch_dtype, "
                    "text_config.rope_scaling, text_config.sliding_window_pattern; most text "
                    "fields left to Gemma3TextConfig defaults)")
        try:
            r, lr, d = reload_and_compare(cls, folder, m, ids, logits_mem)
            t = r.config.get_text_config()
            for k, v in spec["expect_text_attrs"].items():
                assert getattr(t, k) == v, "text_config.%s = %r, expected %r" % (
                    k, getattr(t, k), v)
        except Exception as e:
            traceback.print_exc()
            cand_log.append(dict(candidate="handwritten", ok=False, error=str(e)[:500]))
            r, lr, d, spelling = fallback_5x(name, folder, cls, m, ids, logits_mem, cfg_saved)

    lt = getattr(r.config.get_text_config(), "layer_types", None)
    if spec.get("expect_layer_types") is not None:
        assert lt == spec["expect_layer_types"], "reloaded layer_types %r" % (lt,)
    assert np.isfinite(lr).all()
    np.save(os.path.join(folder, "ids.npy"), ids)
    np.save(os.path.join(folder, "logits.npy"), lr.astype(np.float32))
    with open(os.path.join(folder, "config.json")) as f:
        final_cfg = json.load(f)
    maxabs = float(np.abs(lr).max())
    meta = dict(
        name=name, covers=spec["covers"], architecture=spec["arch"],
        config_spelling=spelling, config_spelling_note=spelling_note,
        config_candidates_tried=cand_log or None,
        config_written_by_save_pretrained=cfg_saved,
        config_json=final_cfg,
        resolved_by_transformers=resolved(r.config),
        layer_types=lt,
        T=T, seed=spec["seed"], vocab=VOCAB, n_params=nparams,
        param_overrides=[list(x) for x in (used_overrides or [])],
        ids="ids.npy: int32 [T], numpy default_rng(seed).integers(0, vocab)",
        logits="logits.npy: float32 [T, vocab] = model(ids[None]).logits[0], float32 CPU, eager "
               "attention, from the bf16 weights stored here",
        max_abs_logit=maxabs, logit_std=float(lr.std()),
        reload_vs_in_memory_max_abs_diff=d,
        checks=checks,
        safetensors={k: v for k, v in sorted(keys_saved.items())},
        weight_prefixes=weight_prefixes(keys_saved),
        lm_head_in_file=any(k.endswith("lm_head.weight") for k in keys_saved),
        max_shard_size=shard_size,
        files=sorted(os.listdir(folder)) + ["meta.json"],
        transformers_version=transformers.__version__, torch_version=torch.__version__,
        generated_by="tests/ref/make_fixtures.py",
    )
    write_json(os.path.join(folder, "meta.json"), meta)
    chmod_files(folder)
    lines = ["%-22s T=%-3d max|logit|=%8.3f std=%6.3f params=%d config=%s" % (
        name, T, maxabs, float(lr.std()), nparams, spelling.split(":")[0].split(" (")[0])]
    print("  " + lines[0])

    if name == "gemma3_mm_defaults":
        try:
            lines.extend(make_gemma3_prefix_variants(spec, cls, folder, outdir, m, ids, lr, meta))
        except Exception:
            traceback.print_exc()
            WARNINGS.append("gemma3 renamed-prefix variants FAILED (see the traceback)")
    return lines


def make_gemma3_prefix_variants(spec, cls, src_folder, outdir, m, ids, lr, src_meta):
    """gemma3_mm_prefix_old: the published layout (language_model.model.* ...). If transformers
    itself saved that layout, also gemma3_mm_prefix_new with the model.language_model.* one,
    so that both layouts are covered whatever the saving version does."""
    keys_src = safetensors_keys(src_folder)
    saved_new = any(k.startswith("model.language_model.") for k in keys_src)
    saved_old = any(k.startswith("language_model.model.") for k in keys_src)
    print("  gemma3 mm: transformers saved the %s layout" % (
        "model.language_model.*" if saved_new else
        "language_model.model.*" if saved_old else "UNKNOWN"))
    lines = [make_renamed(spec, cls, src_folder, outdir, m, ids, lr, src_meta,
                          "gemma3_mm_prefix_old", "language_model.model.", old=True)]
    if not saved_new:
        lines.append(make_renamed(spec, cls, src_folder, outdir, m, ids, lr, src_meta,
                                  "gemma3_mm_prefix_new", "model.language_model.", old=False))
    return lines


def make_renamed(spec, cls, src_folder, outdir, m, ids, lr, src_meta, name, want_prefix, old):
    folder = os.path.join(outdir, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    shutil.copy(os.path.join(src_folder, "config.json"), folder)
    if os.path.exists(os.path.join(src_folder, "generation_config.json")):
        shutil.copy(os.path.join(src_folder, "generation_config.json"), folder)
    st = [f for f in os.listdir(src_folder) if f.endswith(".safetensors")]
    assert st == ["model.safetensors"], st
    src = os.path.join(src_folder, "model.safetensors")
    dst = os.path.join(folder, "model.safetensors")
    layout = None
    errors = []
    if old:
        options = [(False, "published: language_model.model.*, vision_tower.vision_model.*, "
                           "multi_modal_projector.* (lm_head, if any: language_model.lm_head.*)"),
                   (True, "language_model.model.* for the text model, other tensors as saved")]
    else:
        options = [(None, "model.language_model.*, model.vision_tower.* (no vision_model.), "
                          "model.multi_modal_projector.*, lm_head.* (transformers 5.x's "
                          "in-memory parameter names)")]
    for language_only, desc in options:
        if old:
            fn = (lambda k, lo=language_only: to_published_gemma3_name(k, lo))
        else:
            fn = to_new_gemma3_name
        rename_safetensors(src, dst, fn)
        try:
            r, lr2, d = reload_and_compare(cls, folder, m, ids, lr)
            layout = desc
            break
        except Exception as e:
            print("  %s: renamed layout %r rejected: %s" % (name, desc, e))
            errors.append(str(e)[:500])
    if layout is None:
        raise RuntimeError("transformers did not load the renamed gemma3 checkpoint %s" % name)
    assert float(np.abs(lr2 - lr).max()) == 0.0
    keys = safetensors_keys(folder)
    assert any(k.startswith(want_prefix) for k in keys), sorted(keys)[:5]
    np.save(os.path.join(folder, "ids.npy"), ids)
    np.save(os.path.join(folder, "logits.npy"), lr.astype(np.float32))
    meta = dict(src_meta)
    meta.update(
        name=name,
        covers="The gemma3_mm_defaults model (same config.json, ids and logits) with its "
               "tensors renamed to the layout %s (checked: transformers loads this file to the "
               "same parameters and logits). %s" % (
                   layout, "This is the layout of the published google/gemma-3-*-it files."
                   if old else "Some conversions use this layout."),
        renamed_from="gemma3_mm_defaults/model.safetensors (data bytes identical)",
        rename_layout=layout, rename_errors=errors or None,
        safetensors={k: v for k, v in sorted(keys.items())},
        weight_prefixes=weight_prefixes(keys),
        lm_head_in_file=any(k.endswith("lm_head.weight") for k in keys),
        reload_vs_in_memory_max_abs_diff=d,
        files=sorted(os.listdir(folder)) + ["meta.json"],
    )
    write_json(os.path.join(folder, "meta.json"), meta)
    chmod_files(folder)
    return "%-22s same goldens, layout: %s" % (name, layout)


if __name__ == "__main__":
    sys.exit(main())
