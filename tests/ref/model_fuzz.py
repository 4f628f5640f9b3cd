#!/usr/bin/env python3
"""A random cross-check of the forward pass against transformers, wider than the committed
fixtures (tests/fixtures): seeded random configs of every family (shapes, head sizes, GQA ratios,
rope types, windows, softcaps, biases, tied heads, stored dtypes), each a tiny model with random
weights whose float32 logits transformers computes on the GPU machine; here `infer logits` runs
each folder and the logits are compared.  Nothing of it is committed but this script.

    # device run (everything on its CPU in float32), with a build of infer carried there:
    HF_HUB_OFFLINE=1 python3 tests/ref/model_fuzz.py gen --seed 1 --n 60 [--mlx] --out /tmp/mf
    python3 tests/ref/model_fuzz.py compare --in /tmp/mf --infer INFER [--backend cpu] [--int8]
    python3 tests/ref/model_fuzz.py compare --in /tmp/mf --infer INFER --backend cuda --tol 1e-2
    (the folders are too large to bring back whole; compare runs where they are)

Each folder N/ holds config.json and model.safetensors as save_pretrained wrote them (weights
stored in bfloat16, float16 or float32), ids.txt, logits.f32 (float32 [T, vocab], raw
little-endian) and case.json (the choices).  The weights are drawn as make_fixtures.py draws
them and rounded to the stored dtype before transformers computes the logits from them in float32
(eager attention).  compare holds every case to testing.md's float32 bound (max |logit
difference| <= 1e-3; --tol for the reduced-precision paths' relative L2 instead).

--mlx makes MLX-quantized models instead, as make_mlx_fixtures.py makes its fixtures: every Linear
and Embedding module whose input size divides the group size quantized by the port of MLX's rule
(mlx_quant.py) with 2, 3, 4, 5, 6 or 8 bits in groups of 32, 64 or 128, scales and biases in the
weights' dtype, some modules given other bits and group sizes or left out (`false`) through
per-module entries; the logits are transformers' on the dequantized weights.
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

SLIDE, FULL = "sliding_attention", "full_attention"


def choose(r):
    """One random config: (class name, config kwargs, case facts)."""
    fam = r.choice(["llama", "llama", "qwen2", "qwen3", "gemma2", "gemma3"])
    heads = r.choice([1, 2, 4, 8])
    kv = r.choice([d for d in (1, 2, 4, 8) if heads % d == 0])
    layers = r.randint(1, 4)
    head_dim = r.choice([8, 16, 32, 64])
    hidden = r.choice([32, 48, 64, 96, 128])
    c = dict(vocab_size=r.randint(200, 700), hidden_size=hidden, intermediate_size=r.randint(16, 256),
             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
             max_position_embeddings=r.choice([64, 128, 4096]), rms_norm_eps=r.choice([1e-5, 1e-6]),
             tie_word_embeddings=r.random() < 0.5)
    if fam != "llama" or r.random() < 0.5:  # llama: hidden / heads or explicit
        c["head_dim"] = head_dim
    theta = r.choice([10000.0, 500000.0, 1000000.0])
    T = r.randint(3, 60)
    if fam == "llama":
        cls = "LlamaForCausalLM"
        c["attention_bias"] = r.random() < 0.3
        c["mlp_bias"] = r.random() < 0.3
        kind = r.choice(["default", "default", "linear", "dynamic", "llama3"])
        rope = dict(rope_type=kind, rope_theta=theta)
        if kind == "linear":
            rope["factor"] = r.choice([2.0, 4.0, 8.0])
        elif kind == "dynamic":
            rope["factor"] = r.choice([2.0, 4.0])
            c["max_position_embeddings"] = r.choice([16, 32, 64])
        elif kind == "llama3":
            rope.update(factor=r.choice([8.0, 32.0]), low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=r.choice([16, 32, 64]))
        c["rope_parameters"] = rope
    elif fam in ("qwen2", "qwen3"):
        cls = "Qwen2ForCausalLM" if fam == "qwen2" else "Qwen3ForCausalLM"
        if fam == "qwen3":
            c["attention_bias"] = r.random() < 0.2
        c["rope_parameters"] = dict(rope_type="default", rope_theta=theta)
        if r.random() < 0.4:
            c.update(use_sliding_window=True, sliding_window=r.randint(2, 20),
                     max_window_layers=r.randint(0, layers))
    else:
        cls = "Gemma2ForCausalLM" if fam == "gemma2" else "Gemma3ForCausalLM"
        c["query_pre_attn_scalar"] = r.choice([head_dim, 24, 256])
        c["sliding_window"] = r.randint(2, 24)
        c["layer_types"] = [r.choice([SLIDE, FULL]) for _ in range(layers)]
        if fam == "gemma2":
            c["attn_logit_softcapping"] = r.choice([None, 20.0, 50.0])
            c["final_logit_softcapping"] = r.choice([None, 5.0, 30.0])
            c["rope_parameters"] = dict(rope_type="default", rope_theta=theta)
        else:
            full = dict(rope_type="default", rope_theta=theta)
            if r.random() < 0.5:
                full = dict(rope_type="linear", factor=r.choice([2.0, 8.0]), rope_theta=theta)
            c["rope_parameters"] = {FULL: full, SLIDE: dict(rope_type="default", rope_theta=10000.0)}
            c["final_logit_softcapping"] = r.choice([None, None, 30.0])
    dtype = r.choice(["bfloat16", "bfloat16", "bfloat16", "float16", "float32"])
    return cls, c, dict(family=fam, T=T, dtype=dtype)


def quantize_folder(d, r):
    """Rewrites folder d as mlx-lm would save a quantized copy; returns (dequantized weights by
    tensor name, the config's quantization entry)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_mlx_fixtures as mf
    import mlx_quant as mq
    path = os.path.join(d, "model.safetensors")
    tensors, _ = mf.st_read(path)
    bits, gs = r.choice([2, 3, 4, 4, 4, 5, 6, 8, 8]), r.choice([32, 64, 64, 128])
    q = {"group_size": gs, "bits": bits, "mode": "affine"}
    out, deq = [], {}
    for name, dt, shape, raw in tensors:
        mod = name[: -len(".weight")] if name.endswith(".weight") else None
        linear = mod is not None and len(shape) == 2 and "norm" not in name
        b, g = bits, gs
        if linear and r.random() < 0.15:  # a per-module entry
            if r.random() < 0.3:
                q[mod] = False
                linear = False
            else:
                b, g = r.choice([2, 3, 4, 5, 6, 8]), r.choice([32, 64, 128])
                if shape[1] % g == 0:
                    q[mod] = {"group_size": g, "bits": b}
                else:
                    b, g = bits, gs
        if not linear or shape[1] % g != 0:
            out.append((name, dt, shape, raw))
            continue
        w = mf.to_f32(dt, shape, raw)
        packed, s_raw, b_raw = mq.quantize(w, b, g, dt)
        rows, cols = shape
        out.append((name, "U32", [rows, cols * b // 32], packed.astype("<u4").tobytes()))
        out.append((mod + ".scales", dt, [rows, cols // g], s_raw))
        out.append((mod + ".biases", dt, [rows, cols // g], b_raw))
        deq[name] = mq.dequantize(packed, s_raw, b_raw, b, g, dt, cols)
    mf.st_write(path + ".tmp", out, {"format": "mlx"})
    os.replace(path + ".tmp", path)  # a new file: the reloaded model still maps the old one
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization"] = cfg["quantization_config"] = q
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return deq, q


def random_model(r, d, mlx=False):
    """A random model saved into folder d (the choices drawn from r), quantized with mlx; returns
    (transformers model in float32 with the weights infer will see, class name, config kwargs,
    case facts), or None when transformers refuses the combination."""
    import torch
    import transformers
    cls_name, c, case = choose(r)
    seed = r.randint(0, 2**31 - 1)
    cfg_name = "Gemma3TextConfig" if cls_name.startswith("Gemma3") else cls_name.replace("ForCausalLM", "Config")
    cls = getattr(transformers, cls_name)
    try:
        m = cls._from_config(getattr(transformers, cfg_name)(**c), attn_implementation="eager",
                             dtype=torch.float32).eval()
    except Exception as e:  # a combination transformers refuses: draw again
        print("skip", cls_name, type(e).__name__, str(e)[:120])
        return None
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, case["dtype"])
    gemma = case["family"].startswith("gemma")
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(".bias"):
                mu, sd = 0.0, 0.1
            elif p.dim() == 1 and "norm" in name:
                mu, sd = (0.0, 0.3) if gemma else (1.0, 0.3)
            elif "embed_tokens" in name:
                mu, sd = 0.0, 0.4
            else:
                mu, sd = 0.0, 0.1
            p.copy_((torch.randn(p.shape, generator=g) * sd + mu).to(dt).to(torch.float32))
    os.makedirs(d, exist_ok=True)
    m.to(dt).save_pretrained(d)
    back = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    if mlx:
        deq, case["quantization"] = quantize_folder(d, r)
        with torch.no_grad():
            for pname, p in back.named_parameters():
                if pname in deq:
                    p.copy_(torch.from_numpy(deq[pname]))
            if back.config.tie_word_embeddings:  # the head stays the (dequantized) embedding
                back.lm_head.weight.copy_(back.get_input_embeddings().weight)
    case.update(arch=cls_name, config=c, seed=seed, vocab=c["vocab_size"],
                versions=dict(torch=torch.__version__, transformers=transformers.__version__))
    return back, cls_name, c, case


def gen(a):
    import numpy as np
    import torch
    torch.use_deterministic_algorithms(True)
    r = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    made = 0
    while made < a.n:
        d = os.path.join(a.out, str(made))
        got = random_model(r, d, a.mlx)
        if got is None:
            continue
        back, cls_name, c, case = got
        ids = [r.randint(0, c["vocab_size"] - 1) for _ in range(case["T"])]
        with torch.no_grad():
            lg = back(torch.tensor(ids)[None]).logits[0].float().numpy()
        if not np.isfinite(lg).all():
            print("skip non-finite", made)
            continue
        with open(os.path.join(d, "logits.f32"), "wb") as f:
            f.write(lg.astype("<f4").tobytes())
        with open(os.path.join(d, "ids.txt"), "w") as f:
            f.write(",".join(map(str, ids)))
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
        print(made, cls_name, case["dtype"], "T", case["T"], json.dumps(c)[:160], flush=True)
        made += 1


def read_npy(path):
    with open(path, "rb") as f:
        b = f.read()
    hl = struct.unpack("<H", b[8:10])[0]
    header = b[10:10 + hl].decode()
    assert "'<f4'" in header, header
    data = b[10 + hl:]
    return struct.unpack("<%df" % (len(data) // 4), data)


def compare(a):
    cases = sorted((int(x) for x in os.listdir(a.inp) if x.isdigit()))
    bad = 0
    tmp = tempfile.mkdtemp()
    for i in cases:
        d = os.path.join(a.inp, str(i))
        case = json.load(open(os.path.join(d, "case.json")))
        ids = open(os.path.join(d, "ids.txt")).read().strip()
        out = os.path.join(tmp, "x.npy")
        # transformers runs any length; past max_position_embeddings (dynamic rope: times its
        # factor) infer wants the context named, as a user would with --ctx
        ctx = ["--ctx", str(case["T"])] if case["T"] > case["config"]["max_position_embeddings"] else []
        p = subprocess.run([a.infer, "logits", d, "--ids", ids, "--out", out, "--backend", a.backend] + ctx +
                           (["--int8"] if a.int8 else []), capture_output=True, text=True)
        if p.returncode:
            print("%3d %-18s FAILED: %s" % (i, case["arch"], p.stderr.strip()[:300]))
            bad += 1
            continue
        ours = read_npy(out)
        with open(os.path.join(d, "logits.f32"), "rb") as f:
            raw = f.read()
        ref = struct.unpack("<%df" % (len(raw) // 4), raw)
        worst = max(abs(x - y) if math.isfinite(x) else math.inf for x, y in zip(ours, ref))
        rel = math.sqrt(sum((x - y) ** 2 for x, y in zip(ours, ref)) / max(sum(y * y for y in ref), 1e-30))
        ok = len(ours) == len(ref) and (rel <= a.tol if a.tol else worst <= 1e-3)
        bad += not ok
        c = case["config"]
        qz = case.get("quantization")
        print("%3d %-18s %-8s T %2d L %d h %3d heads %d/%d hd %s%s: max |diff| %.2e, rel %.1e%s" %
              (i, case["arch"], case["dtype"], case["T"], c["num_hidden_layers"], c["hidden_size"],
               c["num_attention_heads"], c["num_key_value_heads"], c.get("head_dim", "-"),
               " q%d g%d +%d" % (qz["bits"], qz["group_size"], len(qz) - 3) if qz else "", worst, rel,
               "" if ok else "  <-- " + json.dumps(c)))
    print("cases:", len(cases), "failed:", bad)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--out", required=True)
    p.add_argument("--mlx", action="store_true", help="MLX-quantized copies (module docstring)")
    p = sub.add_parser("compare")
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--infer", default="build/infer")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--tol", type=float, default=0.0, help="relative L2 bound instead of max |diff| <= 1e-3")
    p.add_argument("--int8", action="store_true", help="infer logits --int8 (give --tol too)")
    a = ap.parse_args()
    return {"gen": gen, "compare": compare}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
