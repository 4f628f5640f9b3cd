#!/usr/bin/env python3
"""MLX's affine quantization rule, ported to numpy (float32) for the tests.

MLX (ml-explore/mlx) is not installable on the machines here, so this file is the reference the C
implementation (src/model/quant.c, `infer quantize`) is compared with, bit for bit. It follows
mlx/backend/cpu/quantized.cpp, `quantize<T, U>`, read from the MLX sources:

  per group of group_size values of a row, every step in float32:
    n_bins = float((1 << bits) - 1);  eps = float(1e-7)
    w_min, w_max: std::min / std::max over the group (as float)
    mask  = |w_min| > |w_max|
    scale = std::max((w_max - w_min) / n_bins, eps);  scale = mask ? scale : -scale
    edge  = mask ? w_min : w_max
    q0    = std::rint(edge / scale)            # round half to even (default rounding mode)
    bias  = 0;  if q0 != 0: scale = edge / q0; bias = edge
    q     = min(max(rint((w - bias) / scale), 0), n_bins)   # with the float32 scale and bias
    scales[i] = T(scale); biases[i] = T(bias)  # stored in the weight's dtype T (bf16: round to
                                               # nearest even)
  packing (`out_el |= q << (k * bits)` in a uint64, then written out):
    bits 2, 4, 8: 32 / bits values per uint32 word, value k at bits [k*bits, (k+1)*bits)
    bits 3 and 5: 8 values per 3 and 5 bytes; bits 6: 4 values per 3 bytes; the bytes of out_el
    written least significant first
  so each row is a little-endian bit stream, and the uint32 tensor is [rows, cols * bits / 32].

MLX's GPU kernels (Metal, CUDA) differ in two corners: they round with round() (halves away from
zero) and start w_max at 0. Folders quantized on a Mac GPU can therefore differ from this rule in
rare values; mlx-lm's convert runs on the default device. The CPU rule is the one kept here.

Dequantized (what the goldens use): w = float32(scale) * q + float32(bias), in float32, from the
stored (rounded) scale and bias.

    python3 mlx_quant.py --selftest     # the vectorised port against a literal scalar transliteration
"""

import sys

import numpy as np

F32 = np.float32
BITS = (2, 3, 4, 5, 6, 8)
GROUPS = (32, 64, 128)


# ---- dtypes --------------------------------------------------------------------------------

def f32_to_bf16_bits(x):
    """float32 array -> bfloat16 bit patterns (uint16), round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=F32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(h):
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(F32)


def store(x, sdtype):
    """float32 values -> the raw little-endian bytes of dtype sdtype, and the values read back."""
    x = np.asarray(x, dtype=F32)
    if sdtype == "BF16":
        bits = f32_to_bf16_bits(x)
        return bits.astype("<u2").tobytes(), bf16_bits_to_f32(bits).reshape(x.shape)
    if sdtype == "F16":
        h = x.astype(np.float16)
        return h.astype("<f2").tobytes(), h.astype(F32)
    if sdtype == "F32":
        return x.astype("<f4").tobytes(), x.copy()
    raise ValueError(sdtype)


def load(raw, sdtype, shape):
    """Raw little-endian bytes of dtype sdtype -> float32 array."""
    if sdtype == "BF16":
        return bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2")).reshape(shape)
    if sdtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(F32).reshape(shape)
    if sdtype == "F32":
        return np.frombuffer(raw, dtype="<f4").astype(F32).reshape(shape)
    raise ValueError(sdtype)


# ---- the rule --------------------------------------------------------------------------------

def pack_factor(bits):
    return 8 if bits in (3, 5) else (4 if bits == 6 else 32 // bits)


def bytes_per_pack(bits):
    return 4 if bits in (2, 4, 8) else (5 if bits == 5 else 3)


def quant_params(w, bits, group_size):
    """w float32 [rows, cols] -> (q uint32 [rows, cols], scale f32 [rows, groups], bias f32)."""
    w = np.ascontiguousarray(w, dtype=F32)
    rows, cols = w.shape
    assert cols % group_size == 0
    g = w.reshape(rows * (cols // group_size), group_size)
    n_bins = F32((1 << bits) - 1)
    eps = F32(1e-7)
    w_max = g.max(axis=1)
    w_min = g.min(axis=1)
    mask = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, eps)
    scale = np.where(mask, scale, -scale).astype(F32)
    edge = np.where(mask, w_min, w_max).astype(F32)
    q0 = np.rint(edge / scale).astype(F32)
    nz = q0 != 0
    scale = np.where(nz, edge / np.where(nz, q0, F32(1)), scale).astype(F32)
    bias = np.where(nz, edge, F32(0)).astype(F32)
    q = np.rint((g - bias[:, None]) / scale[:, None]).astype(F32)
    q = np.minimum(np.maximum(q, F32(0)), n_bins).astype(np.uint32)
    return q.reshape(rows, cols), scale.reshape(rows, -1), bias.reshape(rows, -1)


def pack(q, bits):
    """q uint32 [rows, cols] -> uint32 [rows, cols * bits / 32], as MLX packs it."""
    rows, cols = q.shape
    el, nb = pack_factor(bits), bytes_per_pack(bits)
    packs = q.reshape(-1, el).astype(np.uint64)
    out_el = np.zeros(packs.shape[0], dtype=np.uint64)
    for k in range(el):
        out_el |= packs[:, k] << np.uint64(k * bits)
    out = np.zeros((packs.shape[0], nb), dtype=np.uint8)
    for b in range(nb):
        out[:, b] = ((out_el >> np.uint64(8 * b)) & np.uint64(0xFF)).astype(np.uint8)
    return out.reshape(-1).view("<u4").reshape(rows, cols * bits // 32)


def unpack(packed, bits, cols):
    """uint32 [rows, cols * bits / 32] -> q uint32 [rows, cols] (a little-endian bit stream)."""
    rows = packed.shape[0]
    by = np.ascontiguousarray(packed, dtype="<u4").view(np.uint8).reshape(rows, -1)
    b = np.unpackbits(by, axis=1, bitorder="little")[:, : cols * bits].reshape(rows, cols, bits)
    return (b.astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(axis=2).astype(np.uint32)


def quantize(w, bits, group_size, sdtype):
    """MLX's quantize of w (float32 [rows, cols]) with scales/biases stored as sdtype.

    Returns (packed uint32 [rows, cols*bits/32], scales_raw bytes, biases_raw bytes)."""
    q, scale, bias = quant_params(w, bits, group_size)
    s_raw, _ = store(scale, sdtype)
    b_raw, _ = store(bias, sdtype)
    return pack(q, bits), s_raw, b_raw


def dequantize(packed, scales_raw, biases_raw, bits, group_size, sdtype, cols):
    """w = scale * q + bias in float32 from the stored scales and biases -> float32 [rows, cols]."""
    rows = packed.shape[0]
    q = unpack(packed, bits, cols).astype(F32)
    s = load(scales_raw, sdtype, (rows, cols // group_size))
    b = load(biases_raw, sdtype, (rows, cols // group_size))
    s = np.repeat(s, group_size, axis=1)
    b = np.repeat(b, group_size, axis=1)
    return (s * q + b).astype(F32)


# ---- a literal transliteration, to check the vectorised port -------------------------------

def quantize_scalar(w, bits, group_size):
    """MLX's loop, element by element with float32 scalars (slow; for the self-test)."""
    w = np.asarray(w, dtype=F32).reshape(-1)
    n_bins = F32((1 << bits) - 1)
    eps = F32(1e-7)
    el = pack_factor(bits)
    nb = bytes_per_pack(bits)
    out = bytearray()
    scales, biases = [], []
    for i in range(w.size // group_size):
        grp = w[i * group_size:(i + 1) * group_size]
        w_min, w_max = F32(np.inf), F32(-np.inf)
        for x in grp:
            w_max = x if w_max < x else w_max
            w_min = x if x < w_min else w_min
        mask = abs(w_min) > abs(w_max)
        scale = (w_max - w_min) / n_bins
        scale = eps if scale < eps else scale
        scale = scale if mask else -scale
        edge = w_min if mask else w_max
        q0 = np.rint(edge / scale)
        bias = F32(0)
        if q0 != 0:
            scale = F32(edge / q0)
            bias = edge
        for j in range(group_size // el):
            v = 0
            for k in range(el):
                x = np.rint((grp[j * el + k] - bias) / scale)
                x = min(max(x, F32(0)), n_bins)
                v |= int(x) << (k * bits)
            out += v.to_bytes(nb, "little")
        scales.append(F32(scale))
        biases.append(F32(bias))
    return bytes(out), np.array(scales, dtype=F32), np.array(biases, dtype=F32)


def rule_matrix(rows=16, cols=256, seed=7):
    """A float32 matrix whose groups hit the corners of the rule: ties, |min| == |max|, constant
    groups, zero groups, ranges below eps, large and tiny magnitudes, sign patterns."""
    rng = np.random.default_rng(seed)
    m = np.zeros((rows, cols), dtype=F32)
    m[0] = rng.normal(0, 0.1, cols)
    m[1] = rng.normal(0, 1.0, cols) * 3
    m[2] = np.tile(np.arange(32, dtype=F32) * F32(0.5), cols // 32)  # half steps: ties
    m[3] = np.tile(np.arange(32, dtype=F32) - F32(16), cols // 32)  # integers, negative edge
    m[4] = np.tile(np.linspace(-1, 1, 32, dtype=F32), cols // 32)  # |min| == |max|
    m[5] = F32(0.75)  # constant positive
    m[6] = F32(-0.3)  # constant negative
    m[7] = 0  # all zero
    m[8] = F32(1) + rng.integers(0, 3, cols).astype(F32) * F32(2.0**-23)  # range below eps * n_bins
    m[9] = rng.normal(0, 1, cols).astype(F32) * F32(3e4)  # large: f16 scales and biases overflow
    m[10] = rng.normal(0, 1, cols).astype(F32) * F32(1e-30)  # tiny: scale clamps at eps
    m[11] = np.abs(rng.normal(0, 0.2, cols))  # all positive
    m[12] = -np.abs(rng.normal(0, 0.2, cols))  # all negative
    m[13] = np.where(np.arange(cols) % 2 == 0, F32(0.5), F32(-0.25))  # alternating
    m[14] = rng.integers(-8, 8, cols).astype(F32) * F32(0.125)  # coarse grid: many exact ties
    m[15] = rng.standard_t(2, cols).astype(F32) * F32(0.05)  # heavy tails
    return m.astype(F32)


def selftest():
    w = rule_matrix()
    n = 0
    for bits in BITS:
        for gs in GROUPS:
            for src in (w, bf16_bits_to_f32(f32_to_bf16_bits(w)).reshape(w.shape)):
                q, s, b = quant_params(src, bits, gs)
                packed = pack(q, bits)
                raw, s2, b2 = quantize_scalar(src, bits, gs)
                assert packed.tobytes() == raw, (bits, gs)
                assert np.array_equal(s.reshape(-1).view(np.uint32), s2.view(np.uint32)), (bits, gs)
                assert np.array_equal(b.reshape(-1).view(np.uint32), b2.view(np.uint32)), (bits, gs)
                assert np.array_equal(unpack(packed, bits, src.shape[1]), q), (bits, gs)
                n += 1
    # hand-checked: one group of 32 values 0, 0.5, ..., 15.5 at 4 bits: |min| = 0 < |max| = 15.5,
    # scale = -(15.5 / 15), edge = 15.5, q0 = rint(-15) = -15, scale = 15.5 / -15, bias = 15.5
    g = (np.arange(32, dtype=F32) * F32(0.5)).reshape(1, 32)
    q, s, b = quant_params(g, 4, 32)
    assert s[0, 0] == F32(15.5) / F32(-15) and b[0, 0] == F32(15.5)
    assert q[0, -1] == 0 and q[0, 0] == 15
    print(f"mlx_quant selftest: {n} cases agree with the scalar transliteration")


if __name__ == "__main__":
    if "--selftest" in sys.argv:
        selftest()
    else:
        print(__doc__)
