#!/usr/bin/env python3
"""Build the MLX-quantized fixtures under tests/fixtures/mlx/ from the bf16 fixtures, with the
port of MLX's quantization rule (mlx_quant.py) and goldens from Hugging Face transformers.

How to run (on the GPU machine of the `device` tool: numpy, torch, transformers; all on the CPU in
float32, nothing downloaded):

    cd tests/ref && PYTHONDONTWRITEBYTECODE=1 python3 make_mlx_fixtures.py --out /tmp/mlx
    # then copy /tmp/mlx/* to tests/fixtures/mlx/

Per fixture (a folder <name>/):
  - model.safetensors as mlx-lm's convert writes it: every Linear and Embedding module of the
    transformers model whose `<module>.weight` is in the source file and whose input dimension is
    a multiple of the group size becomes <module>.weight (U32 [out, in*bits/32]),
    <module>.scales and <module>.biases (BF16 [out, in/group_size], the source's dtype); a tied
    head has no tensor of its own (mlx-lm reuses the quantized embedding); every other tensor is
    copied byte for byte, in the source's order. Header metadata {"format": "mlx"}.
  - config.json: the source's, plus "quantization" and "quantization_config"
    {group_size, bits, mode: "affine"} and, for the mixed case, per-module entries.
  - ids.npy: the source fixture's ids; logits.npy: transformers' float32 logits of the model
    whose weights are the dequantized values (w = scale * q + bias in float32 from the stored
    bf16 scale and bias) and, elsewhere, the stored bf16 values (eager attention).
  - meta.json: the settings, which modules were quantized with what, checks and versions.
And rule_cases.safetensors: the rule itself on a matrix built to hit its corners
(mlx_quant.rule_matrix): input w_f32 (F32) and w_bf16 (BF16), and per case
`b{bits}_g{group}_{in}_{sd}.{weight,scales,biases}` for every bits x group size, with in/sd =
f32/f32, f32/f16, f32/bf16 and bf16/bf16 (input dtype / scales dtype).

Checks (the script stops if one fails): the port's vectorised code equals a literal scalar
transliteration of MLX's loop (mlx_quant.selftest); the source folder reloaded through this
script's path reproduces the source's logits.npy (< 1e-5); quantization changes the logits.
"""

import argparse
import json
import os
import platform
import struct

import numpy as np

import mlx_quant as mq

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.join(HERE, "..", "fixtures")

# name, source fixture, bits, group size, per-module entries {module: {bits, group_size} | False}
SPECS = [
    dict(name="llama_q4_g32", src="llama_rope_llama3", bits=4, group_size=32,
         covers="llama, untied: lm_head quantized too; 4 bits, groups of 32"),
    dict(name="llama_q8_g64", src="llama_rope_llama3", bits=8, group_size=64,
         covers="llama, untied; 8 bits, groups of 64"),
    dict(name="qwen3_q4_g32", src="qwen3_headdim", bits=4, group_size=32,
         covers="qwen3, tied: the quantized embedding is the head; 4 bits, groups of 32"),
    dict(name="qwen3_q8_g64", src="qwen3_headdim", bits=8, group_size=64,
         covers="qwen3, tied; 8 bits, groups of 64"),
    dict(name="qwen3_q4_g128", src="qwen3_headdim", bits=4, group_size=128,
         covers="qwen3; groups of 128: only o_proj and down_proj (in = 128) are quantized, the "
                "modules with in = 64 (q/k/v, gate/up, the embedding) stay bf16 as mlx-lm "
                "leaves them"),
    dict(name="qwen2_tied_q4_g64", src="qwen2_tied", bits=4, group_size=64,
         covers="qwen2 with q/k/v biases, tied head on the quantized embedding; 4 bits, g64"),
    dict(name="gemma3_q4_g32", src="gemma3_text_sliding", bits=4, group_size=32,
         covers="gemma3_text: the quantized embedding scaled by sqrt(hidden), tied head; 4 bits"),
    dict(name="llama_mixed", src="llama_rope_llama3", bits=4, group_size=64,
         overrides={
             "model.layers.0.self_attn.q_proj": dict(group_size=32, bits=2, mode="affine"),
             "model.layers.0.self_attn.k_proj": dict(group_size=32, bits=3, mode="affine"),
             "model.layers.0.self_attn.v_proj": dict(group_size=64, bits=6, mode="affine"),
             "model.layers.0.self_attn.o_proj": False,
             "model.layers.0.mlp.down_proj": dict(group_size=128, bits=8, mode="affine"),
             "model.layers.1.self_attn.q_proj": dict(group_size=64, bits=5),
             "model.layers.1.mlp.gate_proj": dict(group_size=32, bits=8),
             "model.layers.1.mlp.down_proj": dict(group_size=128, bits=4, mode="affine"),
             "lm_head": dict(group_size=32, bits=6, mode="affine"),
         },
         covers="mixed recipe on llama: top-level 4 bits g64; per-module entries with 2, 3, 5, 6 "
                "and 8 bits, groups of 32/64/128, one `false` (o_proj of layer 0 stays bf16); "
                "modules without an entry take the top-level settings"),
]

ST_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I64": 8, "I32": 4}


# ---- safetensors, read and written by hand (numpy has no bf16) --------------------------------

def st_read(path):
    """-> (ordered list of (name, dtype, shape, raw bytes), metadata)."""
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    hdr = json.loads(buf[8:8 + n])
    meta = hdr.pop("__metadata__", None)
    items = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
    base = 8 + n
    out = []
    for name, e in items:
        a, b = e["data_offsets"]
        out.append((name, e["dtype"], list(e["shape"]), buf[base + a:base + b]))
    return out, meta


def st_write(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), written in this order."""
    hdr = {}
    if metadata:
        hdr["__metadata__"] = metadata
    off = 0
    for name, dt, shape, raw in tensors:
        size = ST_DTYPES[dt]
        for d in shape:
            size *= d
        assert size == len(raw), (name, dt, shape, len(raw))
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, raw in tensors:
            f.write(raw)


def to_f32(dt, shape, raw):
    return mq.load(raw, dt, tuple(shape))


# ---- the fixtures --------------------------------------------------------------------------

def load_hf(folder):
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                attn_implementation="eager").eval()


def quant_modules(model):
    """Names of the Linear and Embedding modules (what mlx-lm's to_quantized covers)."""
    import torch
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]


def logits_of(model, ids):
    import torch
    with torch.no_grad():
        return model(torch.tensor(ids[None].astype(np.int64))).logits[0].float().numpy()


def make_fixture(spec, out_root):
    import torch
    src = os.path.join(SRC_ROOT, spec["src"])
    tensors, _ = st_read(os.path.join(src, "model.safetensors"))
    by_name = {t[0]: t for t in tensors}
    ids = np.load(os.path.join(src, "ids.npy"))
    gold_src = np.load(os.path.join(src, "logits.npy"))

    model = load_hf(src)
    repro = float(np.abs(logits_of(model, ids) - gold_src).max())
    if not repro < 1e-5:
        print(f"WARNING {spec['src']}: reloaded logits differ from logits.npy by {repro}")

    overrides = spec.get("overrides", {})
    plan = {}  # module -> (bits, group_size)
    for mod in quant_modules(model):
        wname = mod + ".weight"
        if wname not in by_name:
            continue  # a tied head: no tensor of its own
        _, dt, shape, _ = by_name[wname]
        ov = overrides.get(mod, None)
        if ov is False:
            continue
        bits = ov.get("bits", 4) if ov else spec["bits"]
        gs = ov.get("group_size", 64) if ov else spec["group_size"]
        if shape[-1] % gs != 0:
            assert ov is None, f"{mod}: override group {gs} does not divide {shape}"
            continue
        plan[mod] = (bits, gs)
    for mod in overrides:
        assert mod in plan or overrides[mod] is False, f"{mod}: not a quantizable module"

    out_t, deq = [], {}
    for name, dt, shape, raw in tensors:
        mod = name[: -len(".weight")] if name.endswith(".weight") else None
        if mod not in plan:
            out_t.append((name, dt, shape, raw))
            continue
        bits, gs = plan[mod]
        assert dt == "BF16" and len(shape) == 2
        w = to_f32(dt, shape, raw)
        packed, s_raw, b_raw = mq.quantize(w, bits, gs, "BF16")
        rows, cols = shape
        out_t.append((name, "U32", [rows, cols * bits // 32], packed.astype("<u4").tobytes()))
        out_t.append((mod + ".scales", "BF16", [rows, cols // gs], s_raw))
        out_t.append((mod + ".biases", "BF16", [rows, cols // gs], b_raw))
        deq[name] = mq.dequantize(packed, s_raw, b_raw, bits, gs, "BF16", cols)

    # goldens: the transformers model with the dequantized weights
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname in deq:
                p.copy_(torch.from_numpy(deq[pname]))
        emb = model.get_input_embeddings().weight
        if model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() != emb.data_ptr():
            model.lm_head.weight.copy_(emb)  # keep the head tied to the dequantized embedding
    logits = logits_of(model, ids).astype(np.float32)
    moved = float(np.abs(logits - gold_src).max())
    if not moved > 1e-3:
        print(f"WARNING {spec['name']}: quantization changed the logits by only {moved}")

    folder = os.path.join(out_root, spec["name"])
    os.makedirs(folder, exist_ok=True)
    st_write(os.path.join(folder, "model.safetensors"), out_t, {"format": "mlx"})
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    q = {"group_size": spec["group_size"], "bits": spec["bits"], "mode": "affine"}
    for mod, ov in overrides.items():
        q[mod] = ov
    cfg["quantization"] = q
    cfg["quantization_config"] = q
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=4)
    np.save(os.path.join(folder, "ids.npy"), ids.astype(np.int32))
    np.save(os.path.join(folder, "logits.npy"), logits)
    import transformers
    meta = {
        "fixture": spec["name"], "source": "tests/fixtures/" + spec["src"], "covers": spec["covers"],
        "bits": spec["bits"], "group_size": spec["group_size"],
        "quantized": {m: {"bits": b, "group_size": g} for m, (b, g) in plan.items()},
        "not_quantized": [m for m in quant_modules(model)
                          if m not in plan and m + ".weight" in by_name],
        "golden": "transformers float32 logits, eager attention, with the dequantized weights "
                  "(scale * q + bias in float32 from the stored bf16 scale and bias)",
        "checks": {"source_logits_reproduced_max_abs_diff": repro,
                   "quantized_vs_source_logits_max_abs_diff": moved},
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__, "transformers": transformers.__version__},
        "made_by": "tests/ref/make_mlx_fixtures.py",
    }
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{spec['name']}: {len(plan)} modules quantized, logits moved by {moved:.3g}, "
          f"source reproduced to {repro:.1e}")


def make_rule_cases(out_root):
    w = mq.rule_matrix()
    wb_bits = mq.f32_to_bf16_bits(w)
    wb = mq.bf16_bits_to_f32(wb_bits).reshape(w.shape)
    rows, cols = w.shape
    out = [("w_f32", "F32", [rows, cols], w.astype("<f4").tobytes()),
           ("w_bf16", "BF16", [rows, cols], wb_bits.astype("<u2").tobytes())]
    for bits in mq.BITS:
        for gs in mq.GROUPS:
            for src_name, src, sd in (("f32", w, "F32"), ("f32", w, "F16"), ("f32", w, "BF16"),
                                      ("bf16", wb, "BF16")):
                packed, s_raw, b_raw = mq.quantize(src, bits, gs, sd)
                base = f"b{bits}_g{gs}_{src_name}_{sd.lower()}"
                out.append((base + ".weight", "U32", [rows, cols * bits // 32],
                            packed.astype("<u4").tobytes()))
                out.append((base + ".scales", sd, [rows, cols // gs], s_raw))
                out.append((base + ".biases", sd, [rows, cols // gs], b_raw))
    st_write(os.path.join(out_root, "rule_cases.safetensors"), out, {"made_by": "tests/ref/make_mlx_fixtures.py"})
    print(f"rule_cases.safetensors: {(len(out) - 2) // 3} cases")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    mq.selftest()
    os.makedirs(a.out, exist_ok=True)
    make_rule_cases(a.out)
    only = set(filter(None, a.only.split(",")))
    for spec in SPECS:
        if not only or spec["name"] in only:
            make_fixture(spec, a.out)


if __name__ == "__main__":
    main()
