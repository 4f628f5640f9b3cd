#!/usr/bin/env python3
"""A GGUF file for llama.cpp with a preset's shapes and random weights: the peer's side of the
CPU decode benchmark (bench/peer_llamacpp.sh, which runs llama.cpp's llama-bench on it).

    python3 bench/make_gguf.py llama3.2-1b|gemma3-1b|qwen3-0.6b q4_0|q8_0|bf16 OUT.gguf

Every matrix, the embedding (which is also the tied head) included, in Q4_0 (blocks of 32
weights: an f16 scale and 16 bytes of 4-bit values, 4.5 bits a weight, as MLX 4-bit with groups
of 64), Q8_0 (an f16 scale and 32 int8 values, 8.5 bits a weight) or BF16; the norms in float32.  The
values are random (a repeated random pattern with a small scale): speed does not depend on them.
A made-up SentencePiece vocabulary (<unk>, <s>, </s>, the 256 byte tokens, then "t<i>"): the
benchmark feeds token ids, but llama.cpp builds its tokenizer at load.

Written from the GGUF layout (version 3): the header, the key-value pairs, the tensor records
(name, dims innermost first, ggml type, offset), then the tensors, each at a multiple of 32 bytes.
Standard library only.
"""
import os
import struct
import sys

PRESETS = {
    # arch, hidden, layers, heads, kv heads, head dim, ffn, vocab, rope theta, rms eps
    "llama3.2-1b": ("llama", 2048, 16, 32, 8, 64, 8192, 128256, 500000.0, 1e-5),
    "gemma3-1b": ("gemma3", 1152, 26, 4, 1, 256, 6912, 262144, 1000000.0, 1e-6),
    "qwen3-0.6b": ("qwen3", 1024, 28, 16, 8, 128, 3072, 151936, 1000000.0, 1e-6),
}

# ggml types: (id, weights a block, bytes a block)
TYPES = {"f32": (0, 1, 4), "q4_0": (2, 32, 18), "q8_0": (8, 32, 34), "bf16": (30, 1, 2)}
FILE_TYPES = {"q4_0": 2, "q8_0": 7, "bf16": 32}
ALIGN = 32


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, kind, value):
    if kind == "u32":
        return s(key) + struct.pack("<II", 4, value)
    if kind == "f32":
        return s(key) + struct.pack("<If", 6, value)
    if kind == "str":
        return s(key) + struct.pack("<I", 8) + s(value)
    raise ValueError(kind)


def arr(key, kind, values):
    if kind == "str":
        return s(key) + struct.pack("<IIQ", 9, 8, len(values)) + b"".join(s(v) for v in values)
    if kind == "f32":
        return s(key) + struct.pack("<IIQ", 9, 6, len(values)) + struct.pack("<%df" % len(values), *values)
    if kind == "i32":
        return s(key) + struct.pack("<IIQ", 9, 5, len(values)) + struct.pack("<%di" % len(values), *values)
    raise ValueError(kind)


def vocab(V):
    """SentencePiece-style tokens: ids 0-2 unknown and control, 3-258 bytes, the rest normal."""
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    toks += ["\u2581t%d" % i for i in range(V - len(toks))]
    types = [2, 3, 3] + [6] * 256 + [1] * (V - 259)
    return [arr("tokenizer.ggml.tokens", "str", toks), arr("tokenizer.ggml.scores", "f32", [0.0] * V),
            arr("tokenizer.ggml.token_type", "i32", types)]


def pattern(kind):
    """1 MiB-ish of blocks: a small f16 scale and random values (bf16: random values near 0.01)."""
    size = TYPES[kind][2]
    if kind == "bf16":
        rnd = os.urandom(2 * 524288)
        return b"".join(bytes((rnd[2 * i], 0x3c | (rnd[2 * i + 1] & 0x81))) for i in range(524288))
    scale = struct.pack("<e", 0.01)
    rnd = os.urandom(65536 * (size - 2))
    return b"".join(scale + rnd[i * (size - 2):(i + 1) * (size - 2)] for i in range(65536))


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in PRESETS or sys.argv[2] not in FILE_TYPES:
        sys.exit("usage: make_gguf.py PRESET q4_0|q8_0|bf16 OUT.gguf (presets: %s)" % ", ".join(PRESETS))
    name, qt, out = sys.argv[1:]
    arch, H, L, nh, nkv, hd, F, V, theta, eps = PRESETS[name]
    gemma = arch == "gemma3"
    tensors = [("token_embd.weight", [H, V], qt), ("output_norm.weight", [H], "f32")]
    for i in range(L):
        p = "blk.%d." % i
        tensors += [(p + "attn_norm.weight", [H], "f32"), (p + "attn_q.weight", [H, nh * hd], qt),
                    (p + "attn_k.weight", [H, nkv * hd], qt), (p + "attn_v.weight", [H, nkv * hd], qt),
                    (p + "attn_output.weight", [nh * hd, H], qt), (p + "ffn_norm.weight", [H], "f32"),
                    (p + "ffn_gate.weight", [H, F], qt), (p + "ffn_up.weight", [H, F], qt),
                    (p + "ffn_down.weight", [F, H], qt)]
        if arch != "llama":  # per-head q and k norms
            tensors += [(p + "attn_q_norm.weight", [hd], "f32"), (p + "attn_k_norm.weight", [hd], "f32")]
        if gemma:  # sandwich norms
            tensors += [(p + "post_attention_norm.weight", [H], "f32"), (p + "post_ffw_norm.weight", [H], "f32")]
    a = arch + "."
    kvs = [kv("general.architecture", "str", arch), kv("general.name", "str", "infer-bench-" + name),
           kv("general.file_type", "u32", FILE_TYPES[qt]),
           kv(a + "context_length", "u32", 4096), kv(a + "embedding_length", "u32", H),
           kv(a + "block_count", "u32", L), kv(a + "feed_forward_length", "u32", F),
           kv(a + "attention.head_count", "u32", nh), kv(a + "attention.head_count_kv", "u32", nkv),
           kv(a + "attention.key_length", "u32", hd), kv(a + "attention.value_length", "u32", hd),
           kv(a + "rope.dimension_count", "u32", hd), kv(a + "rope.freq_base", "f32", theta),
           kv(a + "attention.layer_norm_rms_epsilon", "f32", eps), kv(a + "vocab_size", "u32", V),
           kv("tokenizer.ggml.model", "str", "llama")] + vocab(V)
    if gemma:  # five sliding-window layers of 512 to one global, local RoPE base 10,000
        kvs += [kv(a + "attention.sliding_window", "u32", 512), kv(a + "rope.freq_base_swa", "f32", 10000.0)]
    sizes, records, off = [], [], 0
    for tname, dims, kind in tensors:
        tid, per, size = TYPES[kind]
        n = 1
        for d in dims:
            n *= d
        nbytes = n // per * size
        records.append(s(tname) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) +
                       struct.pack("<IQ", tid, off))
        sizes.append((nbytes, kind))
        off += (nbytes + ALIGN - 1) // ALIGN * ALIGN
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(records)
    pat = pattern(qt)
    ones = struct.pack("<f", 1.0)
    with open(out, "wb") as f:
        f.write(head + b"\0" * (-len(head) % ALIGN))
        for nbytes, kind in sizes:
            if kind == "f32":
                f.write(ones * (nbytes // 4))
            else:
                left = nbytes
                while left:
                    k = min(left, len(pat))
                    f.write(pat[:k])
                    left -= k
            f.write(b"\0" * (-nbytes % ALIGN))
    print("%s: %d tensors, %.1f MB" % (out, len(tensors), os.path.getsize(out) / 1e6))


if __name__ == "__main__":
    main()
