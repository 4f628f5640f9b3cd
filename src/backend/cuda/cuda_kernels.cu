/* cuda_kernels.cu - the cuda backend's kernels, written in the C subset of
 * CUDA (no templates, no classes); each is launched by a C function of
 * cuda_kernels.h on the caller's stream.
 *
 * Every op of the backend table: float32 activations, weights read in
 * their stored dtype (bf16, f16, f32, MLX-quantized of any bits).  Each
 * kernel says what it does not yet do. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cuda/cuda_bf16.cuh"
#include "backend/cuda/cuda_pdl.cuh"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_mma.cuh"

#define WARP 32

static unsigned blocks_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return b > 65535u * 16u ? 65535u * 16u : (unsigned)(b ? b : 1);
}

__device__ __forceinline__ float bf16_f32(uint16_t u) { return __uint_as_float((uint32_t)u << 16); }

__device__ __forceinline__ float f16_f32(uint16_t u) { return __half2float(__ushort_as_half(u)); }

/* Element i of a float vector or matrix stored in dtype dt. */
__device__ __forceinline__ float ld(const void *p, int dt, size_t i)
{
    if (dt == DT_F32) return ((const float *)p)[i];
    if (dt == DT_F16) return f16_f32(((const uint16_t *)p)[i]);
    return bf16_f32(((const uint16_t *)p)[i]);
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Value i (0-based) of an MLX-packed row: bits [i * bits, (i + 1) * bits)
 * of the little-endian bit stream. */
__device__ __forceinline__ uint32_t q_value(const uint8_t *row, int bits, int64_t i)
{
    int64_t bit = i * bits;
    const uint8_t *b = row + (bit >> 3);
    int sh = (int)(bit & 7);
    uint32_t v = b[0];
    if (sh + bits > 8) v |= (uint32_t)b[1] << 8;
    return (v >> sh) & ((1u << bits) - 1u);
}

/* The scale and bias of group g of a quantized weight (bk_weight.sb_pairs:
 * one 4-byte load). */
__device__ __forceinline__ void ld_sb(const bk_weight &w, size_t g, float *s, float *b)
{
    if (w.sb_pairs) {
        uint32_t v = __ldg((const uint32_t *)w.scales + g);
        uint16_t lo = (uint16_t)(v & 0xffffu), hi = (uint16_t)(v >> 16);
        *s = bk_pair_dtype(&w) == DT_F16 ? f16_f32(lo) : bf16_f32(lo);
        *b = bk_pair_dtype(&w) == DT_F16 ? f16_f32(hi) : bf16_f32(hi);
    } else {
        *s = ld(w.scales, w.sdtype, g);
        *b = ld(w.biases, w.sdtype, g);
    }
}

/* w[r][i] as float, any stored dtype. */
__device__ __forceinline__ float w_at(const bk_weight &w, int64_t r, int64_t i)
{
    if (w.dtype != DT_U32) return ld(w.data, w.dtype, (size_t)(r * w.cols + i));
    const uint8_t *row = (const uint8_t *)w.data + (size_t)r * (size_t)(w.cols * w.bits / 8);
    size_t g = (size_t)(r * (w.cols / w.group_size) + i / w.group_size);
    float s, b;
    ld_sb(w, g, &s, &b);
    return s * (float)q_value(row, w.bits, i) + b;
}

/* act(g) * u: silu(g) = g sigmoid(g); gelu_tanh(g) = g sigmoid(2 z),
 * z = sqrt(2/pi) (g + 0.044715 g^3).  The exponential and the division
 * as the hardware's approximations (a few ulp): a decode product's
 * staging forms this in every block (14,336 values a block for
 * llama3.1-8b's down projection), where expf and an exact division were
 * most of its instructions.  (-t overflowing: e = inf, the quotient 0.) */
__device__ __forceinline__ float glu1(float g, float u, int gelu)
{
    float t = gelu ? 2.0f * 0.7978845608028654f * (g + 0.044715f * g * g * g) : g;
    return __fdividef(g, 1.0f + __expf(-t)) * u;
}

/* glu1 on four lanes */
__device__ __forceinline__ float4 glu4(float4 g, float4 u, int gelu)
{
    return make_float4(glu1(g.x, u.x, gelu), glu1(g.y, u.y, gelu), glu1(g.z, u.z, gelu), glu1(g.w, u.w, gelu));
}

/* The sum of v over the block's threads, in every thread (part: 32
 * floats of shared memory; blockDim a multiple of 32). */
__device__ float block_sum(float v, float *part)
{
    v = warp_sum(v);
    if (threadIdx.x % WARP == 0) part[threadIdx.x / WARP] = v;
    __syncthreads();
    float t = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / WARP); w++) t += part[w];
    return t;
}

/* ---- embedding ---- */

__global__ void k_embed(float *out, const int32_t *ids, bk_weight emb, float scale)
{
    PDL_ENTRY();
    int t = blockIdx.x;
    int64_t id = ids[t];
    float *o = out + (size_t)t * emb.cols;
    /* ids are checked on the host (model_forward); a bad one gives zeros */
    int ok = id >= 0 && id < emb.rows;
    for (int64_t i = threadIdx.x; i < emb.cols; i += blockDim.x) o[i] = ok ? w_at(emb, id, i) * scale : 0.0f;
}

extern "C" int cuk_embed(void *stream, float *out, const int32_t *ids, int T, const bk_weight *emb, float scale)
{
    if (T <= 0) return 0;
    PDL_LAUNCH(k_embed, T, 256, 0, (cudaStream_t)stream, out, ids, *emb, scale);
    return (int)cudaGetLastError();
}

/* Whether this block is the last of the parts of a result to get here,
 * counted in *counter (reset to 0 by the last, ready for the next launch):
 * every thread of each part's block calls it once its part is written;
 * the last block then sees every part (read past L1: __ldcg). */
__device__ __forceinline__ int last_arrival(int *counter, int parts)
{
    __shared__ int last;
    __threadfence(); /* this block's part, seen by whichever block merges */
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(counter, 1) == parts - 1;
        if (last) *counter = 0;
    }
    __syncthreads();
    const int l = last;
    if (l) __threadfence();
    return l;
}

/* ---- matrix-vector products (decode) ----
 *
 * k_matvec, the kernel for any dtype and shape: one warp a row of W, 8
 * rows a block; each lane takes chunks of 8 consecutive values, and keeps
 * one sum per row of x.  The fast kernels below (16-byte loads, x staged in
 * shared memory, several weights of one x in one launch; for 4 and 8 bits
 * with one row of x, integer dot products) take every layout they can. */

#define MV_ROWS 8

/* The 8 values of chunk c of row r as floats (quantized: q and the group's
 * scale and bias separately, w = s q + b). */
__device__ __forceinline__ void chunk8(const bk_weight &w, int64_t r, int64_t c, float *v, float *s, float *b)
{
    if (w.dtype == DT_U32) {
        const uint8_t *row = (const uint8_t *)w.data + (size_t)r * (size_t)(w.cols * w.bits / 8);
        const uint8_t *p = row + c * w.bits; /* 8 values = bits bytes */
        uint64_t bitsv = 0;
        if (w.bits == 4) {
            bitsv = *(const uint32_t *)p;
        } else if (w.bits == 8) {
            uint2 u = *(const uint2 *)p;
            bitsv = (uint64_t)u.x | ((uint64_t)u.y << 32);
        } else {
            for (int k = 0; k < w.bits; k++) bitsv |= (uint64_t)p[k] << (8 * k);
        }
        uint32_t mask = (1u << w.bits) - 1u;
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = (float)((uint32_t)(bitsv >> (e * w.bits)) & mask);
        size_t g = (size_t)(r * (w.cols / w.group_size) + (c * 8) / w.group_size);
        ld_sb(w, g, s, b);
        return;
    }
    *s = 1.0f;
    *b = 0.0f;
    size_t base = (size_t)(r * w.cols + c * 8);
    if (w.dtype == DT_F32) {
        float4 a = *(const float4 *)((const float *)w.data + base);
        float4 d = *(const float4 *)((const float *)w.data + base + 4);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = d.x, v[5] = d.y, v[6] = d.z, v[7] = d.w;
        return;
    }
    uint4 u = *(const uint4 *)((const uint16_t *)w.data + base);
    uint32_t h[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
        uint16_t lo = (uint16_t)(h[e] & 0xffffu), hi = (uint16_t)(h[e] >> 16);
        v[2 * e] = w.dtype == DT_F16 ? f16_f32(lo) : bf16_f32(lo);
        v[2 * e + 1] = w.dtype == DT_F16 ? f16_f32(hi) : bf16_f32(hi);
    }
}

__global__ void k_matvec(float *y, const float *x, bk_weight w, bk_weight bias, int has_bias, int T)
{
    PDL_ENTRY();
    int64_t r = (int64_t)blockIdx.x * MV_ROWS + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (r >= w.rows) return;
    float acc[CUK_MATVEC_MAX_T];
#pragma unroll
    for (int t = 0; t < CUK_MATVEC_MAX_T; t++) acc[t] = 0.0f;
    const int64_t K = w.cols;
    /* chunks of 8 where the layout allows (always for quantized rows:
     * cols is a multiple of the group size); else one value at a time */
    const int vec = w.dtype == DT_U32 || K % 8 == 0;
    if (vec) {
        for (int64_t c = lane; c < K / 8; c += WARP) {
            float v[8], s, b;
            chunk8(w, r, c, v, &s, &b);
#pragma unroll
            for (int t = 0; t < CUK_MATVEC_MAX_T; t++) {
                if (t >= T) break;
                const float4 *xp = (const float4 *)(x + (size_t)t * K + c * 8);
                float4 a = xp[0], d = xp[1];
                float dot = v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * d.x + v[5] * d.y +
                            v[6] * d.z + v[7] * d.w;
                if (w.dtype == DT_U32) {
                    float sx = ((a.x + a.y) + (a.z + a.w)) + ((d.x + d.y) + (d.z + d.w));
                    acc[t] += s * dot + b * sx;
                } else {
                    acc[t] += dot;
                }
            }
        }
    } else {
        for (int64_t i = lane; i < K; i += WARP) {
            float wv = w_at(w, r, i);
#pragma unroll
            for (int t = 0; t < CUK_MATVEC_MAX_T; t++)
                if (t < T) acc[t] += wv * x[(size_t)t * K + i];
        }
    }
#pragma unroll
    for (int t = 0; t < CUK_MATVEC_MAX_T; t++) {
        if (t >= T) break;
        float v = warp_sum(acc[t]);
        if (lane == 0) y[(size_t)t * w.rows + r] = v + (has_bias ? ld(bias.data, bias.dtype, (size_t)r) : 0.0f);
    }
}

/* The fast kernels: each lane loads 16 bytes of W a step (8 bf16 or f16
 * values, 4 f32, 16 of 8 bits, 32 of 4 bits), MV_UNROLL steps issued
 * before the first is used, so that a warp keeps 2 KB of its row in
 * flight.  The group of a quantized chunk is one (group sizes are
 * multiples of the chunk). */
#define MV_UNROLL 4
enum { FMT_BF16, FMT_F16, FMT_F32, FMT_Q8, FMT_Q4 };

/* An unsigned integer below 2^23 as a float: its bits under the exponent
 * of 2^23, minus 2^23 (an OR and an add, where a conversion is a slower
 * instruction). */
__device__ __forceinline__ float small_u2f(uint32_t v) { return __uint_as_float(0x4b000000u | v) - 8388608.0f; }

/* dot: the chunk's values (q for quantized) times x, whose VPC values are
 * the float4s xv[0 .. VPC / 4); sx: the sum of x */
__device__ __forceinline__ void mv_chunk(const int fmt, uint4 u, const float4 *xv, float *dot, float *sx)
{
    const uint32_t wd[4] = {u.x, u.y, u.z, u.w};
    float d = 0.0f, s = 0.0f;
    if (fmt == FMT_F32) {
        float4 a = xv[0];
        d = __uint_as_float(u.x) * a.x + __uint_as_float(u.y) * a.y + __uint_as_float(u.z) * a.z +
            __uint_as_float(u.w) * a.w;
    } else if (fmt == FMT_BF16 || fmt == FMT_F16) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 a4 = xv[k / 2];
            float ax = k % 2 ? a4.z : a4.x, ay = k % 2 ? a4.w : a4.y;
            uint16_t lo = (uint16_t)(wd[k] & 0xffffu), hi = (uint16_t)(wd[k] >> 16);
            float wl = fmt == FMT_F16 ? f16_f32(lo) : bf16_f32(lo), wh = fmt == FMT_F16 ? f16_f32(hi) : bf16_f32(hi);
            d += wl * ax + wh * ay;
        }
    } else if (fmt == FMT_Q8) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 a = xv[k];
            uint32_t q = wd[k];
            d += small_u2f(q & 255u) * a.x + small_u2f((q >> 8) & 255u) * a.y + small_u2f((q >> 16) & 255u) * a.z +
                 small_u2f(q >> 24) * a.w;
            s += (a.x + a.y) + (a.z + a.w);
        }
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 a = xv[2 * k], b = xv[2 * k + 1];
            uint32_t q = wd[k];
            d += small_u2f(q & 15u) * a.x + small_u2f((q >> 4) & 15u) * a.y + small_u2f((q >> 8) & 15u) * a.z +
                 small_u2f((q >> 12) & 15u) * a.w + small_u2f((q >> 16) & 15u) * b.x + small_u2f((q >> 20) & 15u) * b.y +
                 small_u2f((q >> 24) & 15u) * b.z + small_u2f(q >> 28) * b.w;
            s += ((a.x + a.y) + (a.z + a.w)) + ((b.x + b.y) + (b.z + b.w));
        }
    }
    *dot = d;
    *sx = s;
}

/* x in shared memory: float4 k of chunk c (S = VPC / 4 float4s a chunk)
 * sits at c S + (k ^ (c S / 8 mod S)), so that the 8 lanes of a phase,
 * reading chunks c .. c + 7, reach 8 different bank groups. */
__device__ __forceinline__ int xs_at(int S, int64_t c, int k) { return (int)(c * S) + (k ^ (int)((c * S / 8) % S)); }

/* The weights of one launch: up to MV_N products of the same x (q, k and v;
 * gate and up), each weight's rows in blocks first[i] .. first[i + 1] - 1
 * of the grid.  The weights share dtype, bits, group size and cols. */
#define MV_N 4
typedef struct mv_set {
    bk_weight w[MV_N];
    bk_weight b[MV_N]; /* b[i].data NULL: no bias */
    float *y[MV_N];
    int first[MV_N + 1];
    int n;
    /* one row of x (the kernels that stage it): x normed as it is staged
     * (rmsnorm with norm, eps and one added to its weights; norm.data NULL:
     * not), and acc: y += the product instead of y = */
    bk_weight norm;
    float eps, one;
    int acc;
} mv_set;

/* The factor of x's rmsnorm (1 where the set has no norm), in every
 * thread of the block. */
__device__ __forceinline__ float mv_norm_r(const mv_set &s, const float *x, int64_t K)
{
    __shared__ float part[32];
    if (!s.norm.data) return 1.0f;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < K / 4; i += blockDim.x) {
        const float4 v = ((const float4 *)x)[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    return rsqrtf(block_sum(ss, part) / (float)K + s.eps);
}

/* Values 4 i4 .. 4 i4 + 3 of x (v) normed as rmsnorm does: x r (w + one) */
__device__ __forceinline__ float4 mv_norm4(const mv_set &s, float4 v, int64_t i4, float r)
{
    if (!s.norm.data) return v;
    const size_t i = (size_t)i4 * 4;
    const bk_weight &n = s.norm;
    return make_float4(v.x * r * (ld(n.data, n.dtype, i) + s.one), v.y * r * (ld(n.data, n.dtype, i + 1) + s.one),
                       v.z * r * (ld(n.data, n.dtype, i + 2) + s.one), v.w * r * (ld(n.data, n.dtype, i + 3) + s.one));
}

/* The weight of this block: its index in the set and its first row. */
__device__ __forceinline__ int mv_pick(const mv_set &s, int64_t rpb, int64_t *row0)
{
    int i = 0;
#pragma unroll
    for (int k = 1; k < MV_N; k++)
        if (k < s.n && (int)blockIdx.x >= s.first[k]) i = k;
    *row0 = (int64_t)((int)blockIdx.x - s.first[i]) * rpb;
    return i;
}

#define MV_SEL(a, i) ((i) == 0 ? (a)[0] : (i) == 1 ? (a)[1] : (i) == 2 ? (a)[2] : (a)[3])

/* lpr lanes a row (32, 16 or 8: short rows share a warp, so that each
 * warp keeps about 1 KB of W in flight whatever the row's length).
 * MT = 1 (decode): x staged in shared memory, each block a range of rpb
 * rows; MT > 1: x read from global memory, rpb = the block's rows. */
#define MV_KERNEL(NAME, FMT, VPC, MT)                                                                            \
    __global__ void __launch_bounds__(MV_ROWS * WARP, MT == 1 ? 4 : 1)                                          \
        NAME(mv_set s, const float *x, int T, int lpr, int rpb, int gshift, const float *up, int gelu)          \
    {                                                                                                            \
        PDL_ENTRY();                                                                                             \
        extern __shared__ float4 xs[];                                                                           \
        int64_t row0;                                                                                            \
        const int wi = mv_pick(s, rpb, &row0);                                                                   \
        const bk_weight w = MV_SEL(s.w, wi), bias = MV_SEL(s.b, wi);                                             \
        float *y = MV_SEL(s.y, wi);                                                                              \
        const int has_bias = bias.data != NULL;                                                                  \
        const int quant = FMT == FMT_Q4 || FMT == FMT_Q8, S = VPC / 4;                                           \
        const int lane = threadIdx.x % WARP, sub = lane / lpr, sl = lane % lpr, rpw = WARP / lpr;                \
        const int64_t K = w.cols, ncr = K / VPC, ng = quant ? K / w.group_size : 1;                              \
        if (MT == 1) {                                                                                           \
            const float nr = mv_norm_r(s, x, K);                                                                 \
            for (int64_t i = threadIdx.x; i < K / 4; i += blockDim.x) {                                          \
                float4 v = mv_norm4(s, ((const float4 *)x)[i], i, nr);                                           \
                if (up) {                                                                                        \
                    float4 b = ((const float4 *)up)[i];                                                          \
                    v = make_float4(glu1(v.x, b.x, gelu), glu1(v.y, b.y, gelu), glu1(v.z, b.z, gelu),           \
                                    glu1(v.w, b.w, gelu));                                                       \
                }                                                                                                \
                xs[xs_at(S, i / S, (int)(i % S))] = v;                                                           \
            }                                                                                                    \
            __syncthreads();                                                                                     \
        }                                                                                                        \
        const int64_t end = row0 + rpb < w.rows ? row0 + rpb : w.rows;                                           \
        for (int64_t base = row0 + (threadIdx.x / WARP) * rpw; base < end; base += (int64_t)MV_ROWS * rpw) {     \
            const int64_t r = base + sub, nc = r < end ? ncr : 0;                                                \
            const uint4 *row = (const uint4 *)((const uint8_t *)w.data + (size_t)r * (size_t)ncr * 16);         \
            float acc[MT];                                                                                       \
            _Pragma("unroll") for (int t = 0; t < MT; t++) acc[t] = 0.0f;                                        \
            for (int64_t c0 = sl; c0 < nc; c0 += (int64_t)lpr * MV_UNROLL) {                                     \
                uint4 u[MV_UNROLL];                                                                              \
                float sc[MV_UNROLL], bi[MV_UNROLL];                                                              \
                _Pragma("unroll") for (int k = 0; k < MV_UNROLL; k++) {                                          \
                    int64_t c = c0 + (int64_t)k * lpr;                                                           \
                    if (c < nc) {                                                                                \
                        u[k] = __ldg(row + c);                                                                   \
                        if (quant) {                                                                             \
                            size_t g = gshift >= 0 ? (size_t)(r * ng + (c >> gshift))                          \
                                                   : (size_t)(r * ng + c * VPC / w.group_size);                 \
                            ld_sb(w, g, &sc[k], &bi[k]);                                                         \
                        }                                                                                        \
                    }                                                                                            \
                }                                                                                                \
                _Pragma("unroll") for (int k = 0; k < MV_UNROLL; k++) {                                          \
                    int64_t c = c0 + (int64_t)k * lpr;                                                           \
                    if (c >= nc) break;                                                                          \
                    _Pragma("unroll") for (int t = 0; t < MT; t++) {                                             \
                        if (t >= T) break;                                                                       \
                        float4 xv[VPC / 4];                                                                      \
                        _Pragma("unroll") for (int j = 0; j < VPC / 4; j++) xv[j] =                              \
                            MT == 1 ? xs[xs_at(S, c, j)] : ((const float4 *)(x + (size_t)t * K + c * VPC))[j];   \
                        float dot, sx;                                                                           \
                        mv_chunk(FMT, u[k], xv, &dot, &sx);                                                      \
                        acc[t] += quant ? sc[k] * dot + bi[k] * sx : dot;                                        \
                    }                                                                                            \
                }                                                                                                \
            }                                                                                                    \
            _Pragma("unroll") for (int t = 0; t < MT; t++) {                                                     \
                if (t >= T) break;                                                                               \
                float v = acc[t];                                                                                \
                for (int o = lpr / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);                   \
                if (sl == 0 && r < end)                                                                          \
                    y[(size_t)t * w.rows + r] = v + (has_bias ? ld(bias.data, bias.dtype, (size_t)r) : 0.0f) +   \
                                                (MT == 1 && s.acc ? y[r] : 0.0f);                                \
            }                                                                                                    \
        }                                                                                                        \
    }
/* one row of x (decode: few registers, x shared), and up to 8 */
MV_KERNEL(k_mv_f32_1, FMT_F32, 4, 1)
MV_KERNEL(k_mv_bf16_8, FMT_BF16, 8, CUK_MATVEC_MAX_T)
MV_KERNEL(k_mv_f16_8, FMT_F16, 8, CUK_MATVEC_MAX_T)
MV_KERNEL(k_mv_f32_8, FMT_F32, 4, CUK_MATVEC_MAX_T)
MV_KERNEL(k_mv_q8_8, FMT_Q8, 16, CUK_MATVEC_MAX_T)
MV_KERNEL(k_mv_q4_8, FMT_Q4, 32, CUK_MATVEC_MAX_T)

/* ---- quantized decode with integer dot products ----
 *
 * One row of x, 4- or 8-bit weights: each block stages x in shared memory
 * as int16 in pieces of 16 values, each piece with its own scale
 * (max |x| / 32767) and the float sum of its values (for the biases), so
 * that a weight's values meet x in dp2a (two int16 x int8 products a
 * step) instead of a conversion and a float multiply each: the float path
 * above is bound by its arithmetic at 4 bits.  W and its scale-bias pairs
 * (bk_weight.sb_pairs) come through cp.async into shared memory, two rounds
 * in flight per warp: with loads into registers the warps waited on memory
 * half the time (ncu: long-scoreboard stalls, 0.5 of the bandwidth).  The rounding of x is at most
 * 1/65534 of its piece's largest value (relative error of a product about
 * 1e-5).  A 4-bit word holds values 0..7 as nibbles; its bytes w & 0x0f0f0f0f
 * are values 0, 2, 4, 6 and (w >> 4) & 0x0f0f0f0f values 1, 3, 5, 7, so x
 * is staged in that order: x0 x2 | x4 x6 | x1 x3 | x5 x7. */

/* c + a.lo16 * b.byte(k) + a.hi16 * b.byte(k + 1): a signed, b unsigned;
 * k = 0 (lo) or 2 (hi) */
__device__ __forceinline__ int dp2a_lo(uint32_t a, uint32_t b, int c)
{
    int d;
    asm("dp2a.lo.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

__device__ __forceinline__ int dp2a_hi(uint32_t a, uint32_t b, int c)
{
    int d;
    asm("dp2a.hi.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* f = v * inv + 1.5 * 2^23 holds round(v * inv) in the low bits of its
 * mantissa (|v * inv| <= 32767): the low 16 bits of two such floats
 * packed are two int16. */
#define QX_MAGIC 12582912.0f
__device__ __forceinline__ uint32_t q16_pair(float a, float b)
{
    return __byte_perm(__float_as_uint(a), __float_as_uint(b), 0x5410);
}

/* One chunk c of W (16 bytes) against the staged x: sc (q . x) + bi sum(x).
 * xss holds each piece's {scale, sum}; swz: the lane's swizzle of x. */
__device__ __forceinline__ float mvq_chunk(const int BITS, uint4 u, float sc, float bi, int c, int swz,
                                           const uint4 *xq, const float2 *xss)
{
    const int S = BITS == 4 ? 4 : 2;
    const uint32_t wd[4] = {u.x, u.y, u.z, u.w};
    float dot, sx;
    if (BITS == 4) {
        int is[2] = {0, 0};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint4 X = xq[c * S + (j ^ swz)];
            uint32_t lo = wd[j] & 0x0f0f0f0fu, hi = (wd[j] >> 4) & 0x0f0f0f0fu;
            is[j / 2] = dp2a_lo(X.x, lo, dp2a_hi(X.y, lo, dp2a_lo(X.z, hi, dp2a_hi(X.w, hi, is[j / 2]))));
        }
        float4 p = ((const float4 *)xss)[c]; /* pieces 2c and 2c + 1 */
        dot = p.x * (float)is[0] + p.z * (float)is[1];
        sx = p.y + p.w;
    } else {
        int is = 0;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            uint4 X = xq[c * S + (j ^ swz)];
            is = dp2a_lo(X.x, wd[2 * j], dp2a_hi(X.y, wd[2 * j], is));
            is = dp2a_lo(X.z, wd[2 * j + 1], dp2a_hi(X.w, wd[2 * j + 1], is));
        }
        float2 p = xss[c];
        dot = p.x * (float)is;
        sx = p.y;
    }
    return sc * dot + bi * sx;
}

/* gshift: log2 of the chunks of W in a group (group sizes are powers of
 * two).  Indices are 32-bit (a row has fewer than 2^31 chunks), and the
 * group of a chunk a shift: a 64-bit division there costs more than the
 * rest of the chunk's work. */
/* Shared memory of the staged x (int16 values, then each piece's {scale,
 * sum}) rounded to 16 bytes: where the weight buffers begin. */
__host__ __device__ __forceinline__ size_t mvq_xbytes(int64_t K)
{
    return ((size_t)K * 2 + (size_t)(K / 16) * 8 + 15) / 16 * 16;
}

/* The asynchronous kernels' buffers: for each warp, two stages of
 * MV_UNROLL chunks of W (16 bytes) and their scale-bias pairs (4 bytes)
 * per lane. */
__host__ __device__ __forceinline__ size_t mvq_abytes(int warps) { return (size_t)warps * 2 * MV_UNROLL * WARP * 20; }

/* x (normed with the set's norm, nr its factor; or act(x) * up where up
 * is not NULL) staged by the block as int16 pieces: xq the values in the
 * layout above, xss each piece's {scale, sum}; each thread 8 values (half
 * a piece: lanes 2j and 2j + 1 hold a piece of 16) a step, two steps'
 * loads issued together. */
__device__ __forceinline__ void mvq_stage(const int BITS, uint4 *xq, float2 *xss, const float *x, const float *up,
                                          int gelu, int64_t K, const mv_set &s, float nr)
{
    const int S = BITS == 4 ? 4 : 2;
    const int64_t tid = threadIdx.x, nth = blockDim.x;
    for (int64_t b0 = 0; b0 < K / 8; b0 += 2 * nth) {
        float v[2][8];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t i = b0 + h * nth + tid;
            if (i < K / 8) {
                float4 a = mv_norm4(s, ((const float4 *)x)[2 * i], 2 * i, nr),
                       c = mv_norm4(s, ((const float4 *)x)[2 * i + 1], 2 * i + 1, nr);
                if (up) {
                    float4 ua = ((const float4 *)up)[2 * i], uc = ((const float4 *)up)[2 * i + 1];
                    a = glu4(a, ua, gelu);
                    c = glu4(c, uc, gelu);
                }
                v[h][0] = a.x, v[h][1] = a.y, v[h][2] = a.z, v[h][3] = a.w;
                v[h][4] = c.x, v[h][5] = c.y, v[h][6] = c.z, v[h][7] = c.w;
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) v[h][e] = 0.0f;
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t i = b0 + h * nth + tid;
            float m = 0.0f, sm = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                m = fmaxf(m, fabsf(v[h][e]));
                sm += v[h][e];
            }
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            sm += __shfl_xor_sync(0xffffffffu, sm, 1);
            const float inv = m > 0.0f ? 32767.0f / m : 0.0f;
            float f[8];
#pragma unroll
            for (int e = 0; e < 8; e++) f[e] = fmaf(v[h][e], inv, QX_MAGIC);
            uint4 pk;
            if (BITS == 4)
                pk = make_uint4(q16_pair(f[0], f[2]), q16_pair(f[4], f[6]), q16_pair(f[1], f[3]),
                                q16_pair(f[5], f[7]));
            else
                pk = make_uint4(q16_pair(f[0], f[1]), q16_pair(f[2], f[3]), q16_pair(f[4], f[5]),
                                q16_pair(f[6], f[7]));
            if (i < K / 8) {
                xq[xs_at(S, i / S, (int)(i % S))] = pk;
                if (!(i & 1)) xss[i / 2] = make_float2(m * (1.0f / 32767.0f), sm);
            }
        }
    }
}

/* A one-row product block's work, for mvq_body and mvh_body: lpr lanes
 * a row (lane sl of the warp's row sub, rpw rows a warp, nw warps), the
 * block's rows row0 .. end - 1; asynchronous: the warp's work is its rows
 * (every nw * rpw-th from its first) in rounds of lpr * MV_UNROLL chunks
 * (steps_row rounds a row, total in all); each lane copies its chunks of
 * round i + 1 into shared memory while it computes round i, so that two
 * rounds of reads are in flight without registers. */
#define MV_ROUNDS(ROW0, RPB, ROWS, NCR, LPR)                                                                     \
    const int lane = threadIdx.x % WARP, sub = lane / (LPR), sl = lane % (LPR), rpw = WARP / (LPR);            \
    const int64_t end = (ROW0) + (RPB) < (ROWS) ? (ROW0) + (RPB) : (ROWS);                                     \
    const int nw = blockDim.x / WARP;                                                                            \
    const int64_t first = (ROW0) + (threadIdx.x / WARP) * rpw;                                                   \
    const int steps_row = ((NCR) + (LPR) * MV_UNROLL - 1) / ((LPR) * MV_UNROLL);                                 \
    const int total =                                                                                            \
        first < end ? (int)((end - first + (int64_t)nw * rpw - 1) / ((int64_t)nw * rpw)) * steps_row : 0

__device__ __forceinline__ void mvq_body(const int BITS, const mv_set &s, const float *x, int lpr, int rpb,
                                         int gshift, const float *up, int gelu)
{
    extern __shared__ uint4 xq[];
    const int VPC = BITS == 4 ? 32 : 16, S = VPC / 8; /* values and uint4 of x a chunk of W */
    int64_t row0;
    const int wi = mv_pick(s, rpb, &row0);
    const bk_weight w = MV_SEL(s.w, wi), bias = MV_SEL(s.b, wi);
    float *y = MV_SEL(s.y, wi);
    const int64_t K = w.cols;
    const int ncr = (int)(K / VPC), ng = (int)(K / w.group_size);
    /* (W is not asked of the L2 cache before the wait: 64 KB a block that
     * way cost llama3.1-8b 4-bit decode 4%, 16 and 32 KB 1-2%, 128 KB 8%:
     * H100, session 12) */
    MV_ROUNDS(row0, rpb, w.rows, ncr, lpr);
    uint4 *wbuf = (uint4 *)((uint8_t *)xq + mvq_xbytes(K)) + (size_t)(threadIdx.x / WARP) * 2 * MV_UNROLL * WARP;
    uint32_t *sbuf = (uint32_t *)((uint8_t *)xq + mvq_xbytes(K) + (size_t)nw * 2 * MV_UNROLL * WARP * 16) +
                     (size_t)(threadIdx.x / WARP) * 2 * MV_UNROLL * WARP;
    int iss_r = 0, iss_s = 0; /* the next round to issue: row of the warp, round of the row */
#define MVQ_ISSUE(IT)                                                                                            \
    do {                                                                                                         \
        if ((IT) < total) {                                                                                      \
            const int64_t r_ = first + (int64_t)iss_r * nw * rpw + sub;                                     \
            const int nc_ = r_ < end ? ncr : 0, st_ = (IT) & 1;                                                  \
            const uint4 *row_ = (const uint4 *)((const uint8_t *)w.data + (size_t)r_ * (size_t)ncr * 16);       \
            const uint32_t *sp_ = (const uint32_t *)w.scales + (size_t)r_ * (size_t)ng;                          \
            _Pragma("unroll") for (int k = 0; k < MV_UNROLL; k++) {                                              \
                const int c = iss_s * lpr * MV_UNROLL + sl + k * lpr;                                            \
                if (c < nc_) {                                                                                   \
                    cp16(wbuf + (st_ * MV_UNROLL + k) * WARP + lane, row_ + c);                                  \
                    cp4(sbuf + (st_ * MV_UNROLL + k) * WARP + lane, sp_ + (c >> gshift));                        \
                }                                                                                                \
            }                                                                                                    \
            if (++iss_s == steps_row) iss_s = 0, iss_r++;                                                        \
        }                                                                                                        \
        cp_commit();                                                                                             \
    } while (0)
    MVQ_ISSUE(0);
    PDL_ENTRY();
    float2 *xss = (float2 *)(xq + K / 8);
    mvq_stage(BITS, xq, xss, x, up, gelu, K, s, mv_norm_r(s, x, K));
    __syncthreads();
    /* the chunks a lane reads are c = sl + k lpr (lpr a multiple of 8), so
     * the swizzle of x (xs_at) is the lane's own throughout */
    const int swz = (sl * S / 8) % S;
    float acc = 0.0f;
    int cr = 0, cs = 0; /* the round to compute */
    for (int it = 0; it < total; it++) {
        MVQ_ISSUE(it + 1);
        cp_wait1();
        const int64_t r = first + (int64_t)cr * nw * rpw + sub;
        const int nc = r < end ? ncr : 0, st = it & 1;
#pragma unroll
        for (int k = 0; k < MV_UNROLL; k++) {
            const int c = cs * lpr * MV_UNROLL + sl + k * lpr;
            if (c < nc) {
                const uint32_t v = sbuf[(st * MV_UNROLL + k) * WARP + lane];
                const uint16_t lo = (uint16_t)(v & 0xffffu), hi = (uint16_t)(v >> 16);
                const float sc = bk_pair_dtype(&w) == DT_F16 ? f16_f32(lo) : bf16_f32(lo);
                const float bi = bk_pair_dtype(&w) == DT_F16 ? f16_f32(hi) : bf16_f32(hi);
                acc += mvq_chunk(BITS, wbuf[(st * MV_UNROLL + k) * WARP + lane], sc, bi, c, swz, xq, xss);
            }
        }
        if (++cs == steps_row) {
            for (int o = lpr / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (sl == 0 && r < end)
                y[r] = acc + (bias.data ? ld(bias.data, bias.dtype, (size_t)r) : 0.0f) + (s.acc ? y[r] : 0.0f);
            acc = 0.0f;
            cs = 0;
            cr++;
        }
    }
#undef MVQ_ISSUE
}

#define MVQ_KERNEL(NAME, BITS, WARPS, MINB)                                                                      \
    __global__ void __launch_bounds__(WARPS * WARP, MINB)                                                       \
        NAME(mv_set s, const float *x, int T, int lpr, int rpb, int gshift, const float *up, int gelu)          \
    {                                                                                                            \
        (void)T;                                                                                                 \
        mvq_body(BITS, s, x, lpr, rpb, gshift, up, gelu);                                                        \
    }
MVQ_KERNEL(k_mvq4_1, 4, 8, 4)
MVQ_KERNEL(k_mvq8_1, 8, 8, 4)
MVQ_KERNEL(k_mvq4_16, 4, 16, 2)
MVQ_KERNEL(k_mvq8_16, 8, 16, 2)

/* One row of x against bf16 or f16 W: x staged as float, W through
 * cp.async as above (two rounds in flight per warp). */
__host__ __device__ __forceinline__ size_t mvh_wbytes(int warps) { return (size_t)warps * 2 * MV_UNROLL * WARP * 16; }

__device__ __forceinline__ void mvh_body(const int FMT, const mv_set &s, const float *x, int lpr, int rpb,
                                         const float *up, int gelu)
{
    extern __shared__ float4 xs[];
    const int S = 2; /* float4s of x a chunk of 8 values */
    int64_t row0;
    const int wi = mv_pick(s, rpb, &row0);
    const bk_weight w = MV_SEL(s.w, wi), bias = MV_SEL(s.b, wi);
    float *y = MV_SEL(s.y, wi);
    const int64_t K = w.cols;
    const int ncr = (int)(K / 8);
    MV_ROUNDS(row0, rpb, w.rows, ncr, lpr);
    uint4 *wbuf = (uint4 *)(xs + K / 4) + (size_t)(threadIdx.x / WARP) * 2 * MV_UNROLL * WARP;
    int iss_r = 0, iss_s = 0;
#define MVH_ISSUE(IT)                                                                                            \
    do {                                                                                                         \
        if ((IT) < total) {                                                                                      \
            const int64_t r_ = first + (int64_t)iss_r * nw * rpw + sub;                                     \
            const int nc_ = r_ < end ? ncr : 0, st_ = (IT) & 1;                                                  \
            const uint4 *row_ = (const uint4 *)((const uint16_t *)w.data + (size_t)r_ * (size_t)K);              \
            _Pragma("unroll") for (int k = 0; k < MV_UNROLL; k++) {                                              \
                const int c = iss_s * lpr * MV_UNROLL + sl + k * lpr;                                            \
                if (c < nc_) cp16(wbuf + (st_ * MV_UNROLL + k) * WARP + lane, row_ + c);                         \
            }                                                                                                    \
            if (++iss_s == steps_row) iss_s = 0, iss_r++;                                                        \
        }                                                                                                        \
        cp_commit();                                                                                             \
    } while (0)
    MVH_ISSUE(0);
    PDL_ENTRY();
    const float nr = mv_norm_r(s, x, K);
    for (int64_t i = threadIdx.x; i < K / 4; i += blockDim.x) {
        float4 v = mv_norm4(s, ((const float4 *)x)[i], i, nr);
        if (up) v = glu4(v, ((const float4 *)up)[i], gelu);
        xs[xs_at(S, i / S, (int)(i % S))] = v;
    }
    __syncthreads();
    float acc = 0.0f;
    int cr = 0, cs = 0;
    for (int it = 0; it < total; it++) {
        MVH_ISSUE(it + 1);
        cp_wait1();
        const int64_t r = first + (int64_t)cr * nw * rpw + sub;
        const int nc = r < end ? ncr : 0, st = it & 1;
#pragma unroll
        for (int k = 0; k < MV_UNROLL; k++) {
            const int c = cs * lpr * MV_UNROLL + sl + k * lpr;
            if (c < nc) {
                float4 xv[2] = {xs[xs_at(S, c, 0)], xs[xs_at(S, c, 1)]};
                float dot, sx;
                mv_chunk(FMT, wbuf[(st * MV_UNROLL + k) * WARP + lane], xv, &dot, &sx);
                acc += dot;
            }
        }
        if (++cs == steps_row) {
            for (int o = lpr / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (sl == 0 && r < end)
                y[r] = acc + (bias.data ? ld(bias.data, bias.dtype, (size_t)r) : 0.0f) + (s.acc ? y[r] : 0.0f);
            acc = 0.0f;
            cs = 0;
            cr++;
        }
    }
#undef MVH_ISSUE
}

#define MVH_KERNEL(NAME, FMT, WARPS, MINB)                                                                       \
    __global__ void __launch_bounds__(WARPS * WARP, MINB)                                                       \
        NAME(mv_set s, const float *x, int T, int lpr, int rpb, int gshift, const float *up, int gelu)          \
    {                                                                                                            \
        (void)T;                                                                                                 \
        (void)gshift;                                                                                            \
        mvh_body(FMT, s, x, lpr, rpb, up, gelu);                                                                 \
    }
MVH_KERNEL(k_mvh_bf16_1, FMT_BF16, 8, 4)
MVH_KERNEL(k_mvh_f16_1, FMT_F16, 8, 4)
MVH_KERNEL(k_mvh_bf16_16, FMT_BF16, 16, 2)
MVH_KERNEL(k_mvh_f16_16, FMT_F16, 16, 2)

typedef void (*mv_fn)(mv_set, const float *, int, int, int, int, const float *, int);

/* Shared memory a block may opt in to (bytes). */
static size_t smem_optin(void)
{
    static int n = -1;
    if (n < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) || cudaDeviceGetAttribute(&n, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) || n < 0)
            n = 48 << 10;
        cudaGetLastError();
    }
    return (size_t)n;
}

static int sm_count(void)
{
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) || n <= 0) n = 100;
    }
    return n;
}

/* The shared memory a decode kernel may ask for: raised once per kernel
 * past the default 48 KB. */
static int mv_smem_ok(mv_fn f, size_t bytes)
{
    static mv_fn raised[16];
    if (bytes + 1024 <= 48 * 1024) return 1; /* (with the kernels' own, at most 1 KB) */
    if (bytes > 200 * 1024) return 0;
    for (int i = 0; i < 16; i++) {
        if (raised[i] == f) return 1;
        if (!raised[i]) {
            if (cudaFuncSetAttribute((const void *)f, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024)) {
                cudaGetLastError();
                return 0;
            }
            raised[i] = f;
            return 1;
        }
    }
    return 0;
}

/* The products ys[i] = x . ws[i]^T (+ bs[i]) of n <= MV_N weights of the
 * same format and cols, as one launch.  up != NULL: x is act(x) * up,
 * formed while staged (T = 1 and a fast kernel only: else
 * cudaErrorNotSupported, nothing launched).  n > 1 with weights of
 * different formats: cudaErrorNotSupported. */
/* Warps a block of the one-row kernels that stage x (mvq, mvh): 16,
 * where their buffers fit.  Against 8, fewer blocks stage x, each
 * sooner: llama3.1-8b decode 385 -> 417 tok/s at 4 bits, 167 -> 172 in
 * bf16 (H100); 32 gave no more at 4 bits and lost 8% on gemma3-1b. */
#define MV1_WARPS 16

/* A one-row product's extras: x normed as it is staged, y added to */
typedef struct mv_extra {
    const bk_weight *norm; /* NULL: no norm */
    float eps;
    int plus_one, acc;
} mv_extra;

static int matvec(cudaStream_t st, float *const *ys, const float *x, const bk_weight *const *ws,
                  const bk_weight *const *bs, int n, int T, const float *up, int gelu, const mv_extra *ex)
{
    if (T <= 0 || T > CUK_MATVEC_MAX_T || n < 1 || n > MV_N) return (int)cudaErrorInvalidValue;
    const bk_weight *w = ws[0];
    mv_set set;
    memset(&set, 0, sizeof set);
    set.n = n;
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        const bk_weight *o = ws[i];
        if (o->dtype != w->dtype || o->cols != w->cols ||
            (w->dtype == DT_U32 && (o->bits != w->bits || o->group_size != w->group_size ||
                                       bk_pair_dtype(o) != bk_pair_dtype(w))))
            return (int)cudaErrorNotSupported;
        set.w[i] = *o;
        if (bs && bs[i]) set.b[i] = *bs[i];
        set.y[i] = ys[i];
        rows += o->rows;
    }
    const int64_t K = w->cols;
    mv_fn f = NULL;
    int one = T == 1;
    size_t smem = 0;
    /* the chunks of W a group holds, when a power of two */
    int gshift = -1;
    if (w->dtype == DT_U32 && (w->bits == 4 || w->bits == 8)) {
        int per = w->group_size / (w->bits == 4 ? 32 : 16);
        for (int k = 0; k < 8; k++)
            if (per == 1 << k && w->group_size % (w->bits == 4 ? 32 : 16) == 0) gshift = k;
    }
    /* one row of x: the integer kernels for 4 and 8 bits with 2-byte
     * scales (bk_weight.sb_pairs), else the float kernels (for quantized
     * weights with float32 scales, the one of several rows: slower) */
    int nw = MV_ROWS; /* warps a block */
    if (one && gshift >= 0 && w->sb_pairs) {
        /* the most warps a block whose buffers fit */
        nw = mvq_xbytes(K) + mvq_abytes(MV1_WARPS) <= 200 * 1024 ? MV1_WARPS : MV_ROWS;
        f = nw == MV1_WARPS ? (w->bits == 4 ? k_mvq4_16 : k_mvq8_16) : w->bits == 4 ? k_mvq4_1 : k_mvq8_1;
        smem = mvq_xbytes(K) + mvq_abytes(nw);
    }
    else if ((w->dtype == DT_BF16 || w->dtype == DT_F16) && K % 8 == 0 && one) {
        nw = (size_t)K * 4 + mvh_wbytes(MV1_WARPS) <= 200 * 1024 ? MV1_WARPS : MV_ROWS;
        f = w->dtype == DT_BF16 ? (nw == MV1_WARPS ? k_mvh_bf16_16 : k_mvh_bf16_1)
                                : nw == MV1_WARPS ? k_mvh_f16_16 : k_mvh_f16_1;
        smem = (size_t)K * 4 + mvh_wbytes(nw);
    }
    else if (w->dtype == DT_BF16 && K % 8 == 0) f = k_mv_bf16_8;
    else if (w->dtype == DT_F16 && K % 8 == 0) f = k_mv_f16_8;
    else if (w->dtype == DT_F32 && K % 4 == 0) f = one ? k_mv_f32_1 : k_mv_f32_8;
    else if (w->dtype == DT_U32 && w->bits == 8 && w->group_size % 16 == 0) f = k_mv_q8_8, one = 0;
    else if (w->dtype == DT_U32 && w->bits == 4 && w->group_size % 32 == 0) f = k_mv_q4_8, one = 0;
    if (f && one && !smem) smem = (size_t)K * 4;
    if (f && one && !mv_smem_ok(f, smem)) {
        /* x too long for shared memory: the kernel that reads it from global memory */
        f = f == k_mvh_bf16_1 || f == k_mvh_bf16_16 ? k_mv_bf16_8
            : f == k_mvh_f16_1 || f == k_mvh_f16_16 ? k_mv_f16_8 : f == k_mv_f32_1 ? k_mv_f32_8
            : f == k_mvq8_1 || f == k_mvq8_16 ? k_mv_q8_8 : k_mv_q4_8;
        one = 0;
        nw = MV_ROWS;
        smem = 0;
    }
    if ((up || ex) && (!f || !one)) return (int)cudaErrorNotSupported;
    if (ex) {
        if (ex->norm) set.norm = *ex->norm;
        set.eps = ex->eps;
        set.one = ex->plus_one ? 1.0f : 0.0f;
        set.acc = ex->acc;
    }
    if (!f) {
        for (int i = 0; i < n; i++) {
            unsigned blocks = (unsigned)((ws[i]->rows + MV_ROWS - 1) / MV_ROWS);
            PDL_LAUNCH(k_matvec, blocks, MV_ROWS * WARP, 0, st, ys[i], x, set.w[i], set.b[i], set.b[i].data != NULL, T);
            int e = (int)cudaGetLastError();
            if (e) return e;
        }
        return 0;
    }
    int64_t row_bytes = w->dtype == DT_U32 ? (int64_t)bk_qrow_bytes(w) : K * (int64_t)(w->dtype == DT_F32 ? 4 : 2);
    int lpr = row_bytes >= 1024 ? 32 : row_bytes >= 512 ? 16 : 8;
    int64_t step = (int64_t)nw * (WARP / lpr), rpb = step;
    if (one) {
        /* one wave of as many blocks as fit at once, each staging x once
         * for its share of the rows */
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, nw * WARP, smem) || per_sm < 1) {
            cudaGetLastError();
            per_sm = 1;
        }
        /* rows a block: at least a row for each warp, else the fewest that
         * keep the blocks of all the weights within one wave (not rounded
         * to whole rounds of the warps: that left a sixth of the wave
         * empty for 14336 rows) */
        int64_t grid = (int64_t)per_sm * sm_count();
        rpb = (rows + grid - 1) / grid;
        if (rpb < step) rpb = step;
        for (;;) {
            int64_t nbk = 0;
            for (int i = 0; i < n; i++) nbk += (ws[i]->rows + rpb - 1) / rpb;
            if (nbk <= grid) break;
            rpb++;
        }
    }
    int64_t nb = 0;
    for (int i = 0; i < n; i++) {
        set.first[i] = (int)nb;
        nb += (ws[i]->rows + rpb - 1) / rpb;
    }
    set.first[n] = (int)nb;
    if (nb > INT32_MAX) return (int)cudaErrorInvalidValue;
    PDL_LAUNCH(f, (unsigned)nb, nw * WARP, smem, st, set, x, T, lpr, (int)rpb, gshift, up, gelu);
    return (int)cudaGetLastError();
}

extern "C" int cuk_matvec(void *stream, float *y, const float *x, const bk_weight *w, const bk_weight *bias, int T)
{
    return matvec((cudaStream_t)stream, &y, x, &w, &bias, 1, T, NULL, 0, NULL);
}

extern "C" int cuk_matvec_n(void *stream, float *const *ys, const float *x, const bk_weight *const *ws,
                            const bk_weight *const *bs, int n, int T)
{
    return matvec((cudaStream_t)stream, ys, x, ws, bs, n, T, NULL, 0, NULL);
}

extern "C" int cuk_matvec_glu(void *stream, float *y, const float *gate, const float *up, bk_act act,
                              const bk_weight *w, const bk_weight *bias)
{
    return matvec((cudaStream_t)stream, &y, gate, &w, &bias, 1, 1, up, act == BK_ACT_GELU_TANH, NULL);
}

extern "C" int cuk_matvec_norm(void *stream, float *const *ys, const float *x, const bk_weight *norm, float eps,
                               int plus_one, const bk_weight *const *ws, const bk_weight *const *bs, int n)
{
    const mv_extra ex = {norm, eps, plus_one, 0};
    return matvec((cudaStream_t)stream, ys, x, ws, bs, n, 1, NULL, 0, &ex);
}

extern "C" int cuk_matvec_add(void *stream, float *y, const float *x, const float *up, bk_act act, const bk_weight *w,
                              const bk_weight *bias)
{
    const mv_extra ex = {NULL, 0.0f, 0, 1};
    return matvec((cudaStream_t)stream, &y, x, &w, &bias, 1, 1, up, act == BK_ACT_GELU_TANH, &ex);
}

/* ---- conversions for cuBLAS ---- */

/* The value as bf16 (H 0) or f16 (H 1), round to nearest even; two
 * values as a pair (lo in the low half) */
template <int H> __device__ __forceinline__ uint16_t f32_to16(float f)
{
    return H ? (uint16_t)(h2_pack(f, f) & 0xffffu) : f32_bf16(f);
}

template <int H> __device__ __forceinline__ uint32_t f32_to16x2(float lo, float hi)
{
    return H ? h2_pack(lo, hi) : (uint32_t)f32_bf16(lo) | (uint32_t)f32_bf16(hi) << 16;
}

/* The power of two that takes a row whose largest magnitude is mx to
 * [2^13, 2^14), where f16 keeps the row's small values normal too; 1 for
 * a row of zeros or one with an infinity (a NaN goes through as it is).
 * *inv: its inverse. */
__device__ __forceinline__ float qmm_row_scale(float mx, float *inv)
{
    int e = 0;
    if (!(mx > 0.0f) || isinf(mx)) {
        *inv = 1.0f;
        return 1.0f;
    }
    frexpf(mx, &e); /* 2^(e - 1) <= mx < 2^e */
    const int sh = 14 - e < -120 ? -120 : 14 - e > 120 ? 120 : 14 - e;
    *inv = ldexpf(1.0f, -sh);
    return ldexpf(1.0f, sh);
}

/* dst = bf16(src) (H 0), or with GLU bf16(act(src) up) as k_glu then the
 * plain conversion would give it (the same glu1 and rounding) without the
 * float32 product in memory (the down projection's input for cuBLAS); H 1:
 * f16 of the same times sc, the power of two qmm_row_scale gives for the
 * largest magnitude mx holds (k_absmax's), and the first thread writes
 * consts {1 / sc, 0, 1} (cuk_to_f16_scaled).  8 values a thread (16-byte
 * loads and stores) where every pointer is 16-byte aligned, then the rest
 * one at a time. */
template <int GLU, int H, int SPLIT = 0>
__global__ void k_to16(uint16_t *dst, float *consts, const unsigned *mx, const float *src, const float *up, size_t n,
                       int gelu)
{
    PDL_ENTRY();
    float inv = 1.0f, sc = 1.0f;
    if (H) {
        sc = qmm_row_scale(__uint_as_float(*mx), &inv);
        if (blockIdx.x == 0 && threadIdx.x == 0) consts[0] = inv, consts[1] = 0.0f, consts[2] = 1.0f;
    }
    const size_t step = (size_t)gridDim.x * blockDim.x, first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t n8 = (((uintptr_t)src | (uintptr_t)(GLU ? up : src) | (uintptr_t)dst | (SPLIT ? (uintptr_t)(dst + n) : 0)) & 15u)
                          ? 0
                          : n / 8;
    for (size_t i = first; i < n8; i += step) {
        float v[8];
        *(float4 *)v = ((const float4 *)src)[2 * i];
        *(float4 *)(v + 4) = ((const float4 *)src)[2 * i + 1];
        if (GLU) {
            const float4 c = ((const float4 *)up)[2 * i], d = ((const float4 *)up)[2 * i + 1];
            const float u[8] = {c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w};
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] = glu1(v[k], u[k], gelu);
        }
        if (H)
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] *= sc;
        const uint4 o = make_uint4(f32_to16x2<H>(v[0], v[1]), f32_to16x2<H>(v[2], v[3]), f32_to16x2<H>(v[4], v[5]),
                                   f32_to16x2<H>(v[6], v[7]));
        ((uint4 *)dst)[i] = o;
        if (SPLIT) { /* the remainders, v - bf16(v), rounded again */
            const uint32_t q[4] = {o.x, o.y, o.z, o.w};
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] -= bf16_f32((uint16_t)(q[k / 2] >> (16 * (k & 1))));
            ((uint4 *)(dst + n))[i] = make_uint4(f32_to16x2<0>(v[0], v[1]), f32_to16x2<0>(v[2], v[3]),
                                                 f32_to16x2<0>(v[4], v[5]), f32_to16x2<0>(v[6], v[7]));
        }
    }
    for (size_t i = n8 * 8 + first; i < n; i += step) {
        const float f = GLU ? glu1(src[i], up[i], gelu) : src[i];
        dst[i] = f32_to16<H>(H ? f * sc : f);
        if (SPLIT) dst[n + i] = f32_bf16(f - bf16_f32(dst[i]));
    }
}

/* dst [2n] = x as two bf16 terms (x: src, or act(src) up where up is not
 * NULL): dst[i] = bf16(x[i]), dst[n + i] = bf16(x[i] - dst[i]); their sum
 * is x within 2^-18 |x| */
extern "C" int cuk_to_bf16_split(void *stream, void *dst, const float *src, const float *up, size_t n, bk_act act)
{
    if (!n) return 0;
    if (up)
        PDL_LAUNCH((k_to16<1, 0, 1>), blocks_for((n + 7) / 8, 256), 256, 0, (cudaStream_t)stream, (uint16_t *)dst,
                   (float *)NULL, (const unsigned *)NULL, src, up, n, act == BK_ACT_GELU_TANH);
    else
        PDL_LAUNCH((k_to16<0, 0, 1>), blocks_for((n + 7) / 8, 256), 256, 0, (cudaStream_t)stream, (uint16_t *)dst,
                   (float *)NULL, (const unsigned *)NULL, src, (const float *)NULL, n, 0);
    return (int)cudaGetLastError();
}

/* y[i] = (beta y[i]) + h[i] + h[n + i] */
__global__ void k_add_halves(float *y, const float *h, size_t n, float beta)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = (beta != 0.0f ? y[i] : 0.0f) + (h[i] + h[n + i]);
}

extern "C" int cuk_add_halves(void *stream, float *y, const float *h, size_t n, float beta)
{
    if (!n) return 0;
    PDL_LAUNCH(k_add_halves, blocks_for(n, 256), 256, 0, (cudaStream_t)stream, y, h, n, beta);
    return (int)cudaGetLastError();
}

extern "C" int cuk_f32_to_bf16(void *stream, void *dst, const float *src, size_t n)
{
    if (!n) return 0;
    PDL_LAUNCH((k_to16<0, 0>), blocks_for((n + 7) / 8, 256), 256, 0, (cudaStream_t)stream, (uint16_t *)dst,
               (float *)NULL, (const unsigned *)NULL, src, (const float *)NULL, n, 0);
    return (int)cudaGetLastError();
}

extern "C" int cuk_glu_to_bf16(void *stream, void *dst, const float *gate, const float *up, size_t n, bk_act act)
{
    if (!n) return 0;
    PDL_LAUNCH((k_to16<1, 0>), blocks_for((n + 7) / 8, 256), 256, 0, (cudaStream_t)stream, (uint16_t *)dst,
               (float *)NULL, (const unsigned *)NULL, gate, up, n, act == BK_ACT_GELU_TANH);
    return (int)cudaGetLastError();
}

/* A block row per weight row (blockIdx.y), 8 values a thread: a 4-bit
 * word, two of 8 bits, or one value at a time for other formats; into
 * bf16 (H 0) or f16 (H 1). */
template <int H> __global__ void k_weight_to16(uint16_t *dst, bk_weight w, int64_t r0)
{
    PDL_ENTRY();
    const int64_t r = r0 + blockIdx.y, K = w.cols;
    uint16_t *d = dst + (size_t)blockIdx.y * (size_t)K;
    const int fast = w.dtype == DT_U32 && (w.bits == 4 || w.bits == 8) && w.group_size % 8 == 0;
    for (int64_t c8 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c8 * 8 < K; c8 += (int64_t)gridDim.x * blockDim.x) {
        if (fast) {
            const uint8_t *row = (const uint8_t *)w.data + (size_t)r * (size_t)(K * w.bits / 8);
            size_t g = (size_t)(r * (K / w.group_size) + c8 * 8 / w.group_size);
            float sc, bi;
            ld_sb(w, g, &sc, &bi);
            uint64_t v = w.bits == 4 ? (uint64_t)((const uint32_t *)row)[c8]
                                     : (uint64_t)((const uint32_t *)row)[2 * c8] |
                                           ((uint64_t)((const uint32_t *)row)[2 * c8 + 1] << 32);
            uint32_t mask = (1u << w.bits) - 1u;
            float f[8];
#pragma unroll
            for (int e = 0; e < 8; e++) f[e] = sc * (float)((uint32_t)(v >> (e * w.bits)) & mask) + bi;
            /* K % 8 == 0 here: 16 bytes, aligned */
            ((uint4 *)d)[c8] = make_uint4(f32_to16x2<H>(f[0], f[1]), f32_to16x2<H>(f[2], f[3]),
                                          f32_to16x2<H>(f[4], f[5]), f32_to16x2<H>(f[6], f[7]));
        } else {
            for (int64_t c = c8 * 8; c < c8 * 8 + 8 && c < K; c++) d[c] = f32_to16<H>(w_at(w, r, c));
        }
    }
}

static int weight_to16(void *stream, void *dst, const bk_weight *w, int64_t r0, int64_t nr, int h)
{
    if (nr <= 0 || w->cols <= 0) return 0;
    if (nr > 65535) return (int)cudaErrorInvalidValue;
    int64_t per_row = (w->cols + 7) / 8;
    unsigned bx = (unsigned)((per_row + 255) / 256);
    dim3 grid(bx, (unsigned)nr);
    if (h)
        PDL_LAUNCH(k_weight_to16<1>, grid, 256, 0, (cudaStream_t)stream, (uint16_t *)dst, *w, r0);
    else
        PDL_LAUNCH(k_weight_to16<0>, grid, 256, 0, (cudaStream_t)stream, (uint16_t *)dst, *w, r0);
    return (int)cudaGetLastError();
}

extern "C" int cuk_weight_to_bf16(void *stream, void *dst, const bk_weight *w, int64_t r0, int64_t nr)
{
    return weight_to16(stream, dst, w, r0, nr, 0);
}

extern "C" int cuk_weight_to_f16(void *stream, void *dst, const bk_weight *w, int64_t r0, int64_t nr)
{
    return weight_to16(stream, dst, w, r0, nr, 1);
}

/* ---- quantized products of several rows of x on tensor cores ----
 *
 * y[T, R] = x[T, K] . W^T for MLX 4- and 8-bit W (groups of 32, 64 or
 * 128, K a multiple of 128, 2-byte scales in bk_weight.sb_pairs) and
 * 1 < T <= CUK_QMM_MAX_T: W is read once per 32 rows of x (not converted
 * to bf16 in memory first), dequantized to f16 in registers and
 * multiplied by mma.sync m16n8k16 (f16 in, float32 accumulation); x goes
 * to f16 first (k_qmm_x), each row scaled by a power of two that takes
 * its largest value to [2^13, 2^14), and the sums are scaled back
 * (exactly) as they are written.  f16's 11-bit significands keep eight
 * times bf16's precision for both factors (a 4-layer MLX model of width
 * 128 was 1.2e-2 from transformers in bf16): W's values s n + b round
 * once, and their range (2^-24 to 65504) holds any real model's weights.
 *
 * A block takes 256 rows of one of the launch's weights (blockIdx.y)
 * against 32 rows of x (blockIdx.x, the fastest, so that the blocks that
 * read the same rows of W run together and the second finds them in L2)
 * over one slice of K (blockIdx.z: split K; the slices' sums go to a
 * scratch buffer that k_qmm_sum adds up).  K goes in chunks of 128
 * values: the block copies a chunk's W, its scale-bias pairs
 * (bk_weight.sb_pairs) and the chunk of x into shared memory with
 * cp.async, QMM_STAGES chunks in flight, and each of its 8 warps
 * multiplies 32 rows (two m16 tiles) by the 32 rows of x (four n8 tiles).
 * In a chunk, lane (g = lane / 4, q = lane % 4) takes values
 * [32 q, 32 q + 32) of its rows g and g + 8 (16 or 32 bytes a row).  The
 * order of k inside an mma does not matter as long as A (W) and B (x)
 * agree, so the lane's A registers take the values as they lie in its
 * bytes and k_qmm_x writes
 * x in the matching order.  4 bits: u32 word c of the lane's row holds 8
 * values; pairs (i, i + 4) come out of it with one mask and an or (f16
 * bits 0x6400 | n = 1024 + n), so x is stored per 8 values in the order
 * 0 4 1 5 2 6 3 7 and mma step 2 c + h takes pairs 2 h and 2 h + 1 of word
 * c.  8 bits: step j takes values (4 j, 4 j + 1) and (4 j + 2, 4 j + 3),
 * x in its own order. */
#define QMM_ROWS 256
#define QMM_TOK 32
#define QMM_STAGES 3 /* (k_qmm4w with 4: slower, session 13) */
#define QMM_THREADS (8 * WARP)
/* Bytes of a row of x in a stage, and where its 16-byte piece o lies:
 * padded and swizzled so that the 8 lanes of a 16-byte load phase (rows
 * g, g + 1 of x; pieces 4 q + c) meet 8 different banks groups. */
#define QMM_XROW (128 * 2 + 32)
#define QMM_XPIECE(o) ((o) ^ (((o) >> 3) & 1))

/* a * b + c on two f16 lanes, one rounding */
__device__ __forceinline__ uint32_t h2_fma(uint32_t a, uint32_t b, uint32_t c)
{
    uint32_t d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}


/* Pair i (values i and i + 4) of a 4-bit u32 word as f16: s n + b with
 * f16 s and b (s2, b2: in both halves), one rounding (f16 bits 0x6400 | n
 * are 1024 + n). */
__device__ __forceinline__ uint32_t q4_pair(uint32_t word, int i, uint32_t s2, uint32_t b2)
{
    const uint32_t m1024 = 0xe400e400u, one = 0x3c003c00u; /* -1024, 1 */
    uint32_t p = ((word >> (4 * i)) & 0x000f000fu) | 0x64006400u;
    return h2_fma(h2_fma(p, one, m1024), s2, b2);
}

/* The same in float32, for scales of other dtypes. */
__device__ __forceinline__ uint32_t q4_pairf(uint32_t word, int i, float s, float b)
{
    float a = (float)((word >> (4 * i)) & 0xfu), c = (float)((word >> (4 * i + 16)) & 0xfu);
    return h2_pack(fmaf(s, a, b), fmaf(s, c, b));
}

/* values (lo, lo + 1) of an 8-bit u32 word (lo = 0 or 2) */
__device__ __forceinline__ uint32_t q8_pair(uint32_t word, int lo, float s, float b)
{
    float a = (float)((word >> (8 * lo)) & 0xffu), c = (float)((word >> (8 * lo + 8)) & 0xffu);
    return h2_pack(fmaf(s, a, b), fmaf(s, c, b));
}

__device__ __forceinline__ void cp_wait_stages(void)
{
    asm volatile("cp.async.wait_group %0;" ::"n"(QMM_STAGES - 2) : "memory");
}

/* The thread's NW 16-byte pieces of W in a chunk of the block's rows
 * (rows rb0 .. rb0 + QMM_ROWS - 1, past the last one read as the last;
 * WB bytes a row a chunk, rbytes a row, the slice from byte kbytes of a
 * row): the slice's first chunk's sources and their places in a stage.  (k_qmm4 and k_qmm4w.) */
__device__ __forceinline__ void qmm_w_pieces(const uint8_t **wsrc, int *wdst, const int NW, const bk_weight &w,
                                             int64_t rb0, size_t rbytes, size_t kbytes, const int WB, int tid)
{
#pragma unroll
    for (int j = 0; j < NW; j++) {
        const int e = tid + j * QMM_THREADS, r = e / (WB / 16), o = e % (WB / 16);
        const int64_t rr = rb0 + r < w.rows ? rb0 + r : w.rows - 1;
        wsrc[j] = (const uint8_t *)w.data + (size_t)rr * rbytes + kbytes + o * 16;
        wdst[j] = r * WB + o * 16;
    }
}

/* Chunk I of a block's K slice into the stage at st: the thread's NW
 * 16-byte pieces of W (chunk i at wsrc[j] + i * wstep) and one row's
 * scale-bias pairs (2^lgc groups a chunk) where PARTS has 1, its NX pieces
 * of x (at xsrc[j] + i * xstep) where it has 2, with cp.async.  (k_qmm4
 * and k_qmm4w.) */
__device__ __forceinline__ void qmm_stage_load(unsigned char *st, int I, const int NW, const uint8_t *const *wsrc,
                                               const int *wdst, size_t wstep, const int NX, const uint16_t *const *xsrc,
                                               const int *xdst, size_t xstep, const uint32_t *sbsrc, int sbdst, int lgc,
                                               const int PARTS)
{
    if (PARTS & 1) {
#pragma unroll
        for (int j = 0; j < NW; j++) cp16(st + wdst[j], wsrc[j] + (size_t)I * wstep);
        const uint32_t *sb = sbsrc + ((size_t)I << lgc);
        if (lgc == 2) cp16(st + sbdst, sb);
        else if (lgc == 1) cp8(st + sbdst, sb);
        else cp4(st + sbdst, sb);
    }
    if (PARTS & 2)
#pragma unroll
        for (int j = 0; j < NX; j++) cp16(st + xdst[j], xsrc[j] + (size_t)I * xstep);
}

/* Bytes of one stage: W (QMM_ROWS rows of 128 values), their scale-bias
 * pairs (16 bytes a row: at most 4 groups a chunk), x (QMM_TOK rows of
 * QMM_XROW bytes). */
__host__ __device__ __forceinline__ int qmm_stage_bytes(int bits)
{
    return QMM_ROWS * 16 * bits + QMM_ROWS * 16 + QMM_TOK * QMM_XROW;
}

/* The weights of one launch (up to MV_N products of the same x): weight
 * i's rows in the blocks first[i] .. first[i + 1] - 1 of blockIdx.y; with
 * split K, its slices' sums in part[i] ([S][T][rows]), and its T x rows
 * results from element out0[i] of all the launch's results on (for
 * k_qmm_sum). */
typedef struct qmm_set {
    bk_weight w[MV_N];
    bk_weight b[MV_N]; /* b[i].data NULL: no bias */
    float *y[MV_N];
    float *part[MV_N];
    size_t out0[MV_N + 1];
    int first[MV_N + 1];
    int n;
    int acc;           /* 1: y[i] += the products (matmul_add) */
    const float *xinv; /* [Tp]: the inverse of x's row scales (k_qmm_x) */
} qmm_set;

/* What goes into element i of y[wi]: v, plus y's value where the set adds */
__device__ __forceinline__ float qmm_out(const qmm_set &set, const float *y, size_t i, float v)
{
    return set.acc ? y[i] + v : v;
}

/* Which of the launch's weights the block's rows belong to */
__device__ __forceinline__ int qmm_weight(const qmm_set &set)
{
    int wi = 0;
#pragma unroll
    for (int k = 1; k < MV_N; k++)
        if (k < set.n && (int)blockIdx.y >= set.first[k]) wi = k;
    return wi;
}

/* SBF: 1 = f16 scale-bias pairs (applied in f16x2: cuda_weight_prepare
 * stores bf16 pairs that f16 holds exactly as f16), 0 = bf16 pairs
 * (applied in float32; 8 bits: either, in float32).  With split K
 * (gridDim.z > 1) each block writes its slice's sums, which k_qmm_sum
 * adds up.  (The last slice of a tile to finish adding them up instead
 * was slower: one block reading all of a tile's slices took longer than
 * the launch it saved.) */
__device__ __forceinline__ void qmm_body(const int BITS, const int SBF, const qmm_set &set, const uint16_t *xb,
                                         int T, int kslice)
{
    extern __shared__ __align__(16) unsigned char qsm[];
    const int wi = qmm_weight(set);
    const bk_weight w = MV_SEL(set.w, wi), bias = MV_SEL(set.b, wi);
    float *y = MV_SEL(set.y, wi), *part = MV_SEL(set.part, wi);
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP, g = lane >> 2, q = lane & 3;
    const int64_t R = w.rows, K = w.cols;
    const int64_t rb0 = (int64_t)((int)blockIdx.y - MV_SEL(set.first, wi)) * QMM_ROWS;
    const int t0 = blockIdx.x * QMM_TOK;
    const int64_t kb = (int64_t)blockIdx.z * kslice;
    const int nch = (int)(((kb + kslice < K ? kb + kslice : K) - kb) / 128);
    const int WB = 16 * BITS; /* bytes of W a row a chunk */
    const int gshift = w.group_size == 32 ? 5 : w.group_size == 64 ? 6 : 7, lgc = 7 - gshift; /* 2^lgc groups a chunk */
    const size_t ng = (size_t)(K / w.group_size);
    const int SB = QMM_ROWS * WB, XB = SB + QMM_ROWS * 16, STAGE = qmm_stage_bytes(BITS);

    /* What this thread copies of each chunk (sources of the slice's first
     * chunk; chunk i adds i times a fixed step): NW 16-byte pieces of W,
     * 2 of x and the scale-bias pairs of one row. */
    const int NW = QMM_ROWS * WB / 16 / QMM_THREADS;
    const uint8_t *wsrc[8]; /* NW <= 8 */
    int wdst[8];
    qmm_w_pieces(wsrc, wdst, NW, w, rb0, (size_t)K * BITS / 8, (size_t)kb * BITS / 8, WB, tid);
    const uint16_t *xsrc[QMM_TOK * 16 / QMM_THREADS];
    int xdst[QMM_TOK * 16 / QMM_THREADS];
#pragma unroll
    for (int j = 0; j < QMM_TOK * 16 / QMM_THREADS; j++) {
        const int e = tid + j * QMM_THREADS, t = e >> 4, o = e & 15;
        xsrc[j] = xb + (size_t)(t0 + t) * (size_t)K + (size_t)kb + o * 8;
        xdst[j] = XB + t * QMM_XROW + QMM_XPIECE(o) * 16;
    }
    const uint32_t *sbsrc = (const uint32_t *)w.scales + (size_t)(rb0 + tid < R ? rb0 + tid : R - 1) * ng +
                            (size_t)(kb >> gshift);
    const int sbdst = SB + tid * 16;

    float acc[2][QMM_TOK / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < QMM_TOK / 8; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;

    /* chunk I of the slice into stage S (PARTS: qmm_stage_load) */
#define QMM_STAGE(I, S, PARTS)                                                                                   \
    qmm_stage_load(qsm + (S) * STAGE, (I), NW, wsrc, wdst, WB, QMM_TOK * 16 / QMM_THREADS, xsrc, xdst, 128, sbsrc,   \
                   sbdst, lgc, PARTS)
    /* W and its scale-bias pairs depend on no kernel: the first stages'
     * copies start before the wait, in stage 0's group (with its x), and
     * overlap the kernel before (k_qmm_x: batch generation of llama3.1-8b
     * at 4 bits +2.6%, H100; an L2 prefetch of the next 6 chunks as well
     * lost that gain) */
#pragma unroll
    for (int s = 0; s < QMM_STAGES - 1; s++)
        if (s < nch) QMM_STAGE(s, s, 1);
    PDL_ENTRY();
#pragma unroll
    for (int s = 0; s < QMM_STAGES - 1; s++) {
        if (s < nch) QMM_STAGE(s, s, 2);
        cp_commit();
    }
    /* this lane's bytes in a stage: W of rows 32 warp + 16 m + g + 8 u,
     * their scale-bias pair, x */
    const int wofs = (32 * warp + g) * WB + q * (WB / 4);
    const int sofs = SB + (32 * warp + g) * 16 + (((32 * q) >> gshift) << 2);
    const int xofs = XB + g * QMM_XROW;
    for (int i = 0, s = 0; i < nch; i++, s = s + 1 == QMM_STAGES ? 0 : s + 1) {
        cp_wait_stages();
        __syncthreads();
        if (i + QMM_STAGES - 1 < nch) QMM_STAGE(i + QMM_STAGES - 1, s == 0 ? QMM_STAGES - 1 : s - 1, 3);
        cp_commit();
        const unsigned char *st = qsm + s * STAGE;
        uint32_t wv[2][2][4]; /* [m][u]: the lane's 16 bytes (4 bits) */
        uint32_t sb2[2][2][2]; /* SBF: f16 (scale, scale) and (bias, bias) */
        float sc[2][2], bi[2][2];
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int dr = 16 * m + 8 * u;
                if (BITS == 4) { /* 8 bits: at each c below (registers) */
                    const uint4 a = *(const uint4 *)(st + wofs + dr * WB);
                    wv[m][u][0] = a.x, wv[m][u][1] = a.y, wv[m][u][2] = a.z, wv[m][u][3] = a.w;
                }
                const uint32_t v = *(const uint32_t *)(st + sofs + dr * 16);
                if (SBF) {
                    sb2[m][u][0] = __byte_perm(v, 0, 0x1010);
                    sb2[m][u][1] = __byte_perm(v, 0, 0x3232);
                } else {
                    sc[m][u] = bk_pair_dtype(&w) == DT_F16 ? f16_f32((uint16_t)v) : bf16_f32((uint16_t)v);
                    bi[m][u] = bk_pair_dtype(&w) == DT_F16 ? f16_f32((uint16_t)(v >> 16)) : bf16_f32((uint16_t)(v >> 16));
                }
            }
#pragma unroll
        for (int c = 0; c < 4; c++) { /* 8 values of x a row: two mma steps */
            uint32_t A[2][2][4], w8[2][2][2];
            if (BITS == 8)
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int u = 0; u < 2; u++) {
                        const uint2 a = *(const uint2 *)(st + wofs + (16 * m + 8 * u) * WB + 8 * c);
                        w8[m][u][0] = a.x, w8[m][u][1] = a.y;
                    }
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int u = 0; u < 2; u++) {
                        if (BITS == 4 && SBF) {
                            A[m][h][u] = q4_pair(wv[m][u][c], 2 * h, sb2[m][u][0], sb2[m][u][1]);
                            A[m][h][2 + u] = q4_pair(wv[m][u][c], 2 * h + 1, sb2[m][u][0], sb2[m][u][1]);
                        } else if (BITS == 4) {
                            A[m][h][u] = q4_pairf(wv[m][u][c], 2 * h, sc[m][u], bi[m][u]);
                            A[m][h][2 + u] = q4_pairf(wv[m][u][c], 2 * h + 1, sc[m][u], bi[m][u]);
                        } else {
                            A[m][h][u] = q8_pair(w8[m][u][h], 0, sc[m][u], bi[m][u]);
                            A[m][h][2 + u] = q8_pair(w8[m][u][h], 2, sc[m][u], bi[m][u]);
                        }
                    }
            /* every n8 tile, also past T (zeros there): straight-line code
             * that the scheduler can interleave; each accumulator's two
             * products are 8 products apart */
            uint4 b[QMM_TOK / 8];
#pragma unroll
            for (int n = 0; n < QMM_TOK / 8; n++)
                b[n] = *(const uint4 *)(st + xofs + 8 * n * QMM_XROW + QMM_XPIECE(4 * q + c) * 16);
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int n = 0; n < QMM_TOK / 8; n++)
#pragma unroll
                    for (int m = 0; m < 2; m++)
                        mma_f16(acc[m][n], A[m][h][0], A[m][h][1], A[m][h][2], A[m][h][3], h ? b[n].z : b[n].x,
                                 h ? b[n].w : b[n].y);
        }
    }
#undef QMM_STAGE
    /* acc[m][n]: rows 32 warp + 16 m + g (+ 8), rows of x 8 n + 2 q (+ 1);
     * with split K, this slice's sums into part */
    const int split = gridDim.z > 1;
    float *out = split ? part + (size_t)blockIdx.z * (size_t)T * (size_t)R : y;
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < QMM_TOK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int t = t0 + 8 * n + 2 * q + (e & 1);
                const int64_t r = rb0 + 32 * warp + 16 * m + g + (e >> 1) * 8;
                const size_t o = (size_t)t * (size_t)R + (size_t)r;
                if (t < T && r < R) {
                    const float v = acc[m][n][e] * set.xinv[t]; /* a power of two: exact */
                    out[o] = split ? v
                                   : qmm_out(set, out, o, v + (bias.data ? ld(bias.data, bias.dtype, (size_t)r) : 0.0f));
                }
            }
}

__global__ void __launch_bounds__(QMM_THREADS, 2) k_qmm4(qmm_set set, const uint16_t *xb, int T, int kslice)
{
    qmm_body(4, 1, set, xb, T, kslice);
}

__global__ void __launch_bounds__(QMM_THREADS, 2) k_qmm4f(qmm_set set, const uint16_t *xb, int T, int kslice)
{
    qmm_body(4, 0, set, xb, T, kslice);
}

__global__ void __launch_bounds__(QMM_THREADS, 2) k_qmm8(qmm_set set, const uint16_t *xb, int T, int kslice)
{
    qmm_body(8, 0, set, xb, T, kslice);
}

/* ---- the same product for 4-bit W with f16 scale-bias pairs on Hopper (wgmma) ----
 *
 * k_qmm4w: the tile, stages and split K of qmm_body, but the products are
 * wgmma (sm_90a): asynchronous, twice mma.sync's rate, B (x) read by the
 * tensor cores from shared memory, so that a warp's instructions are the
 * dequantization of W into A registers, which overlaps the product of the
 * k-step before.  The block's two warpgroups take 128 rows each: warp
 * wl = warp % 4 of warpgroup wg holds rows 128 wg + 64 mt + 16 wl + g
 * (+ 8) of its two m64 tiles (mt), in mma.sync's A layout, for 32 rows of
 * x (m64n32k16, D in mma.sync's layout per n8 tile).
 *
 * x in a stage: 32 rows of 128 values in the canonical K-major layout of
 * 8 x 16-byte core matrices, no swizzle: 16-byte piece P (8 values) of
 * row t at (t / 8) * 2048 + P * 128 + (t % 8) * 16; a k-step s reads
 * pieces 2 s and 2 s + 1 (LBO 128 bytes, SBO 2048).  The lane (g, q)
 * dequantizes in its A registers for step s = 2 c + h the pairs 2 h, 2 h + 1
 * (k 2 q + e and 2 q + 8 + e) of word c of its 16 bytes (values
 * 32 q + 8 c + j + 4 e, j = 2 h + hi, see qmm_body), so k_qmm_x writes
 * x (mode 2) with piece 2 s + hi, element 2 q + e = value
 * 32 q + 8 c + 2 h + hi + 4 e of the 128, and each block's 32 rows of a
 * chunk as the 8 KB the stage holds, copied straight (bank-conflict free).
 *
 * Split K: where the slices are short (qmm_cluster) a tile's slices run as
 * one thread-block cluster and add up through distributed shared memory
 * in a fixed order; else partial sums and k_qmm_sum, as k_qmm4.
 *
 * Measured against k_qmm4 (H100, bench_gpu_ops at 32 rows, and batch
 * generation of llama3.1-8b at 4 bits): the products alone within a few
 * per cent either way (no loads of x and 16 product instructions a chunk
 * for 64, but both kernels stall on latency at 2 blocks of 8 warps a
 * multiprocessor), batch generation +3% from the clusters. */
#define QMW_XB (QMM_ROWS * 64 + QMM_ROWS * 16)       /* x's place in a stage */
#define QMW_STAGE (QMW_XB + QMM_TOK * 256)           /* bytes of a stage */

__device__ __forceinline__ void wg_fence(void)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ void wg_commit(void)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}

/* at most n (0 or 1) committed groups still running */
__device__ __forceinline__ void wg_wait(const int n)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if (n) asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
    else asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#else
    (void)n;
#endif
}

/* d[16] += A (4 registers, mma.sync's layout) x B (descriptor), m64n32k16,
 * f16 in, float32 sums */
__device__ __forceinline__ void wg_mma(float *d, const uint32_t *a, uint64_t desc)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
#else
    (void)d, (void)a, (void)desc;
#endif
}

/* Every thread of every block of the cluster arrives and waits (shared
 * memory written before it is visible to the cluster after it) */
__device__ __forceinline__ void cluster_sync_all(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

/* The 4 floats at shared address addr of the cluster's block of rank r
 * (ordered by the cluster barriers around the reads, not by this) */
__device__ __forceinline__ float4 ld_cluster_f32x4(uint32_t addr, int r)
{
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t ra;
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(addr), "r"(r));
    asm("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(ra));
#else
    (void)addr, (void)r;
#endif
    return v;
}

/* Whether this build's code for the device has wgmma (sm_90a) */
__global__ void k_wgmma_probe(int *out)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    *out = 1;
#else
    *out = 0;
#endif
}

static int g_wgmma = -1; /* cuk_init: 1 where k_qmm4w runs */

extern "C" int cuk_init(void)
{
    if (g_wgmma >= 0) return 0;
    int *d = NULL, h = 0;
    cudaError_t e = cudaMalloc(&d, sizeof(int));
    if (!e) {
        k_wgmma_probe<<<1, 1>>>(d);
        e = cudaGetLastError();
        if (!e) e = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
        cudaFree(d);
    }
    if (e) {
        cudaGetLastError();
        h = 0;
    }
    g_wgmma = h;
    return 0;
}

__global__ void __launch_bounds__(QMM_THREADS, 2) k_qmm4w(qmm_set set, const uint16_t *xb, int T, int kslice)
{
    extern __shared__ __align__(16) unsigned char qsm[];
    const int wi = qmm_weight(set);
    const bk_weight w = MV_SEL(set.w, wi), bias = MV_SEL(set.b, wi);
    float *y = MV_SEL(set.y, wi), *part = MV_SEL(set.part, wi);
    const int tid = threadIdx.x, warp = tid / WARP, lane = tid % WARP, g = lane >> 2, q = lane & 3;
    const int wg = warp >> 2, wl = warp & 3;
    const int64_t R = w.rows, K = w.cols;
    const int64_t rb0 = (int64_t)((int)blockIdx.y - MV_SEL(set.first, wi)) * QMM_ROWS;
    const int t0 = blockIdx.x * QMM_TOK;
    const int64_t kb = (int64_t)blockIdx.z * kslice;
    const int nch = (int)(((kb + kslice < K ? kb + kslice : K) - kb) / 128);
    const int WB = 64; /* bytes of W a row a chunk */
    const int gshift = w.group_size == 32 ? 5 : w.group_size == 64 ? 6 : 7, lgc = 7 - gshift;
    const size_t ng = (size_t)(K / w.group_size);
    const int SB = QMM_ROWS * WB;

    const int NW = QMM_ROWS * WB / 16 / QMM_THREADS; /* 4 */
    const uint8_t *wsrc[NW];
    int wdst[NW];
    qmm_w_pieces(wsrc, wdst, NW, w, rb0, (size_t)K / 2, (size_t)kb / 2, WB, tid);
    /* x of the block's rows, chunk by chunk, lies as the stage wants it
     * (k_qmm_x, mode 2): 8 KB a chunk, copied straight */
    const uint16_t *xsrc[2];
    int xdst[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int e = tid + j * QMM_THREADS;
        xsrc[j] = xb + ((size_t)blockIdx.x * (size_t)(K / 128) + (size_t)(kb / 128)) * 4096 + (size_t)e * 8;
        xdst[j] = QMW_XB + e * 16;
    }
    const uint32_t *sbsrc = (const uint32_t *)w.scales + (size_t)(rb0 + tid < R ? rb0 + tid : R - 1) * ng +
                            (size_t)(kb >> gshift);
    const int sbdst = SB + tid * 16;

    float acc[2][16];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int i = 0; i < 16; i++) acc[m][i] = 0.0f;

#define QMW_STAGE_LOAD(I, S, PARTS)                                                                              \
    qmm_stage_load(qsm + (S) * QMW_STAGE, (I), NW, wsrc, wdst, WB, 2, xsrc, xdst, 4096, sbsrc, sbdst, lgc, PARTS)
    /* as in qmm_body: W's first stages before the wait */
#pragma unroll
    for (int s = 0; s < QMM_STAGES - 1; s++)
        if (s < nch) QMW_STAGE_LOAD(s, s, 1);
    PDL_ENTRY();
#pragma unroll
    for (int s = 0; s < QMM_STAGES - 1; s++) {
        if (s < nch) QMW_STAGE_LOAD(s, s, 2);
        cp_commit();
    }
    const int rbase = 128 * wg + 16 * wl + g; /* the lane's first row in the block */
    const int wofs = rbase * WB + q * (WB / 4);
    const int sofs = SB + rbase * 16 + (((32 * q) >> gshift) << 2);
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(qsm);
    for (int i = 0, s = 0; i < nch; i++, s = s + 1 == QMM_STAGES ? 0 : s + 1) {
        cp_wait_stages();
        __syncthreads();
        if (i + QMM_STAGES - 1 < nch) QMW_STAGE_LOAD(i + QMM_STAGES - 1, s == 0 ? QMM_STAGES - 1 : s - 1, 3);
        cp_commit();
        const unsigned char *st = qsm + s * QMW_STAGE;
        uint32_t wv[2][2][4], s2[2][2], b2[2][2];
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int dr = 64 * m + 8 * u;
                const uint4 a = *(const uint4 *)(st + wofs + dr * WB);
                wv[m][u][0] = a.x, wv[m][u][1] = a.y, wv[m][u][2] = a.z, wv[m][u][3] = a.w;
                const uint32_t v = *(const uint32_t *)(st + sofs + dr * 16);
                s2[m][u] = __byte_perm(v, 0, 0x1010);
                b2[m][u] = __byte_perm(v, 0, 0x3232);
            }
        /* descriptor of step 0's B: start >> 4, LBO 128 >> 4, SBO 2048 >> 4 */
        const uint64_t desc0 = (uint64_t)(((sbase + (uint32_t)(s * QMW_STAGE + QMW_XB)) & 0x3ffff) >> 4) |
                               ((uint64_t)(128 >> 4) << 16) | ((uint64_t)(2048 >> 4) << 32);
        uint32_t A[2][2][4]; /* [buffer][m] */
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int c = k >> 1, h = k & 1; /* h: also the A buffer */
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    A[h][m][u] = q4_pair(wv[m][u][c], 2 * h, s2[m][u], b2[m][u]);
                    A[h][m][2 + u] = q4_pair(wv[m][u][c], 2 * h + 1, s2[m][u], b2[m][u]);
                }
            wg_fence();
            wg_mma(acc[0], A[h][0], desc0 + (uint64_t)((k * 256) >> 4));
            wg_mma(acc[1], A[h][1], desc0 + (uint64_t)((k * 256) >> 4));
            wg_commit();
            wg_wait(1); /* the step before is done: its A buffer is free */
        }
        wg_wait(0); /* the stage may be refilled after the next barrier */
    }
#undef QMW_STAGE_LOAD
    const int S = (int)gridDim.z;
    if (S > 1 && !part) {
        /* the slices of a tile are one cluster: each puts its sums in its
         * shared memory, then block z adds up its share of the tile's
         * outputs over the cluster's blocks in rank order (the same order
         * every run) and writes them; no partial sums in global memory */
        float *red = (float *)qsm; /* [QMM_TOK][QMM_ROWS] */
        __syncthreads();           /* every warp is done with the stages */
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int i = 0; i < 16; i++) {
                const int tt = 8 * (i >> 2) + 2 * q + (i & 1);
                red[tt * QMM_ROWS + rbase + 64 * m + ((i >> 1) & 1) * 8] = acc[m][i] * set.xinv[t0 + tt];
            }
        cluster_sync_all();
        const int n4 = QMM_TOK * QMM_ROWS / 4, per = (n4 + S - 1) / S, z = (int)blockIdx.z;
        const uint32_t local = (uint32_t)__cvta_generic_to_shared(red);
        for (int e = z * per + tid; e < (z + 1) * per && e < n4; e += QMM_THREADS) {
            float4 p[8]; /* S <= 8: every rank's loads in flight at once */
#pragma unroll
            for (int r = 0; r < 8; r++)
                if (r < S) p[r] = ld_cluster_f32x4(local + 16u * (uint32_t)e, r);
            float4 v = p[0];
#pragma unroll
            for (int r = 1; r < 8; r++)
                if (r < S) v.x += p[r].x, v.y += p[r].y, v.z += p[r].z, v.w += p[r].w;
            const int t = t0 + 4 * e / QMM_ROWS;
            const int64_t row = rb0 + 4 * e % QMM_ROWS;
            const float o[4] = {v.x, v.y, v.z, v.w};
            if (t < T)
#pragma unroll
                for (int k = 0; k < 4; k++)
                    if (row + k < R) {
                        const size_t oi = (size_t)t * (size_t)R + (size_t)(row + k);
                        y[oi] = qmm_out(set, y, oi, o[k] + (bias.data ? ld(bias.data, bias.dtype, (size_t)(row + k)) : 0.0f));
                    }
        }
        cluster_sync_all(); /* no block leaves while the others read its sums */
        return;
    }
    const int split = S > 1;
    float *out = split ? part + (size_t)blockIdx.z * (size_t)T * (size_t)R : y;
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const int t = t0 + 8 * (i >> 2) + 2 * q + (i & 1);
            const int64_t r = rb0 + rbase + 64 * m + ((i >> 1) & 1) * 8;
            const size_t o = (size_t)t * (size_t)R + (size_t)r;
            if (t < T && r < R) {
                const float v = acc[m][i] * set.xinv[t];
                out[o] = split ? v : qmm_out(set, out, o, v + (bias.data ? ld(bias.data, bias.dtype, (size_t)r) : 0.0f));
            }
        }
}

/* Mode 2 (k_qmm4w's order) of the conversions below: group i of 8 values
 * of x [Tp, K] takes the columns src[e] of its row (see k_qmm4w) and fills
 * the 16-byte slot returned, 8 KB a chunk of 128 values of 32 rows */
__device__ __forceinline__ size_t qmm_x_slot2(size_t i, int64_t K, size_t *src)
{
    const size_t t = i * 8 / (size_t)K;
    const size_t c0 = i * 8 / 128 * 128 % (size_t)K, p = i % (size_t)(K / 8), P = p % 16;
    const int h = (int)(P >> 1) & 1, c = (int)(P >> 2), hi = (int)P & 1;
#pragma unroll
    for (int e = 0; e < 8; e++) src[e] = c0 + 32 * (e >> 1) + 8 * c + 2 * h + hi + 4 * (e & 1);
    const size_t tb = t / QMM_TOK, tt = t % QMM_TOK;
    return (tb * (size_t)(K / 128) + p / 16) * 512 + (tt / 8) * 128 + P * 8 + tt % 8;
}

/* 8 values as 8 f16 in the order of perm4 (1: 0 4 1 5 2 6 3 7) */
__device__ __forceinline__ uint4 qmm_x_pack(const float *v, int perm4)
{
    if (perm4 == 1)
        return make_uint4(h2_pack(v[0], v[4]), h2_pack(v[1], v[5]), h2_pack(v[2], v[6]), h2_pack(v[3], v[7]));
    return make_uint4(h2_pack(v[0], v[1]), h2_pack(v[2], v[3]), h2_pack(v[4], v[5]), h2_pack(v[6], v[7]));
}

/* The largest of v over the block's threads, in every thread (part: 32
 * floats of shared memory; blockDim a multiple of 32) */
__device__ float block_max(float v, float *part)
{
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x % WARP == 0) part[threadIdx.x / WARP] = v;
    __syncthreads();
    float m = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / WARP); w++) m = fmaxf(m, part[w]);
    return m;
}

/* Value k of row xr (act(x) up where ur is not NULL) */
__device__ __forceinline__ float qmm_x_at(const float *xr, const float *ur, int gelu, size_t k)
{
    return ur ? glu1(xr[k], ur[k], gelu) : xr[k];
}

/* x [T, K] float32 (act(x) * up where up is not NULL) -> f16 [Tp, K]
 * (rows T .. Tp zero), each row times its scale (qmm_row_scale; xinv[t]:
 * the inverse).  Block (t, j) of gridDim.y blocks a row finds row t's
 * largest magnitude (every block of the row reads all of it, from L2 but
 * the first: no block waits on another), then converts part j of the
 * row, 8 values a thread at a time; perm4 1 (k_qmm4): each 8 values in
 * the order 0 4 1 5 2 6 3 7; 2 (k_qmm4w): in that kernel's order and place
 * (qmm_x_slot2) */
__global__ void k_qmm_x(uint16_t *dst, float *xinv, const float *x, const float *up, int gelu, int T, int64_t K,
                        int perm4)
{
    __shared__ float part[32];
    PDL_ENTRY();
    const size_t t = blockIdx.x, g8 = (size_t)K / 8;
    const int live = t < (size_t)T; /* the same in every thread of the block */
    const float *xr = x + t * (size_t)K, *ur = up ? up + t * (size_t)K : NULL;
    float mx = 0.0f;
    if (live) {
#pragma unroll 4
        for (size_t k = threadIdx.x; k < (size_t)K / 4; k += blockDim.x) {
            float4 a = ((const float4 *)xr)[k];
            if (ur) a = glu4(a, ((const float4 *)ur)[k], gelu);
            mx = fmaxf(mx, fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(a.z), fabsf(a.w))));
        }
        mx = block_max(mx, part);
    }
    float inv;
    const float sc = qmm_row_scale(mx, &inv);
    if (threadIdx.x == 0 && blockIdx.y == 0) xinv[t] = inv;
    const size_t per = (g8 + gridDim.y - 1) / gridDim.y, p0 = blockIdx.y * per, p1 = p0 + per < g8 ? p0 + per : g8;
    for (size_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
        size_t src[8], i8 = t * g8 + p;
        float v[8];
        if (perm4 == 2) {
            i8 = qmm_x_slot2(i8, K, src);
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = live ? qmm_x_at(xr, ur, gelu, src[e]) * sc : 0.0f;
        } else if (live) {
            float4 a = ((const float4 *)xr)[2 * p], b = ((const float4 *)xr)[2 * p + 1];
            if (ur) {
                const float4 ua = ((const float4 *)ur)[2 * p], ub = ((const float4 *)ur)[2 * p + 1];
                a = glu4(a, ua, gelu);
                b = glu4(b, ub, gelu);
            }
            v[0] = a.x * sc, v[1] = a.y * sc, v[2] = a.z * sc, v[3] = a.w * sc;
            v[4] = b.x * sc, v[5] = b.y * sc, v[6] = b.z * sc, v[7] = b.w * sc;
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = 0.0f;
        }
        ((uint4 *)dst)[i8] = qmm_x_pack(v, perm4);
    }
}

/* k_qmm_x with a norm before the products instead of an activation: row t
 * of x normed as k_rmsnorm does (x r (w + one), r = 1 / sqrt(mean(x^2) +
 * eps)), then scaled and converted as there */
__global__ void k_qmm_xn(uint16_t *dst, float *xinv, const float *x, bk_weight nw, float eps, int plus_one, int T,
                         int64_t K, int perm4)
{
    __shared__ float part[32], partm[32];
    PDL_ENTRY();
    const size_t t = blockIdx.x, g8 = (size_t)K / 8;
    const float *xr = x + t * (size_t)K, one = plus_one ? 1.0f : 0.0f;
    const int live = t < (size_t)T; /* the same in every thread of the block */
    float r = 0.0f, mx = 0.0f;
    if (live) { /* the sum of squares, and max |x (w + one)| (times r: the normed row's largest magnitude) */
        float ss = 0.0f, m = 0.0f;
        for (size_t k = threadIdx.x; k < (size_t)K / 4; k += blockDim.x) {
            const float4 a = ((const float4 *)xr)[k];
            ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
            const float f[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
            for (int e = 0; e < 4; e++) m = fmaxf(m, fabsf(f[e] * (ld(nw.data, nw.dtype, 4 * k + e) + one)));
        }
        r = rsqrtf(block_sum(ss, part) / (float)K + eps);
        mx = block_max(m, partm) * r;
    }
    float inv;
    const float sc = qmm_row_scale(mx, &inv);
    if (threadIdx.x == 0) xinv[t] = inv;
    for (size_t p = threadIdx.x; p < g8; p += blockDim.x) {
        size_t src[8], i8 = t * g8 + p;
        if (perm4 == 2)
            i8 = qmm_x_slot2(i8, K, src);
        else
            for (int e = 0; e < 8; e++) src[e] = 8 * p + (size_t)e;
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = live ? xr[src[e]] * r * (ld(nw.data, nw.dtype, src[e]) + one) * sc : 0.0f;
        ((uint4 *)dst)[i8] = qmm_x_pack(v, perm4);
    }
}

/* ---- x in f16 for cuBLAS (f16 and quantized W) ----
 * The whole of x times one power of two (qmm_row_scale of its largest
 * magnitude: f16's 29 binades of normal values then hold every row of a
 * real activation), the products' alpha its inverse: k_absmax leaves the
 * largest |value| (bits of a non-negative float: ordered as unsigned
 * integers) in mx, zeroed before; k_to16 converts, and its first thread
 * writes the constants {inverse, 0, 1} that cuBLAS reads as alpha and
 * beta. */
template <int GLU> __global__ void k_absmax(unsigned *mx, const float *src, const float *up, size_t n, int gelu)
{
    __shared__ float part[32];
    PDL_ENTRY();
    float m = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        m = fmaxf(m, fabsf(GLU ? glu1(src[i], up[i], gelu) : src[i]));
    m = block_max(m, part);
    if (threadIdx.x == 0) atomicMax(mx, __float_as_uint(m));
}

extern "C" int cuk_to_f16_scaled(void *stream, void *dst, float *consts, unsigned *mx, const float *src,
                                 const float *up, size_t n, bk_act act)
{
    if (!n) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    const int gelu = act == BK_ACT_GELU_TANH;
    cudaError_t e = cudaMemsetAsync(mx, 0, sizeof *mx, st);
    if (e) return (int)e;
    const unsigned blocks = blocks_for(n, 256) < 1024 ? blocks_for(n, 256) : 1024;
    if (up) {
        PDL_LAUNCH(k_absmax<1>, blocks, 256, 0, st, mx, src, up, n, gelu);
        PDL_LAUNCH((k_to16<1, 1>), blocks_for((n + 7) / 8, 256), 256, 0, st, (uint16_t *)dst, consts,
                   (const unsigned *)mx, src, up, n, gelu);
    } else {
        PDL_LAUNCH(k_absmax<0>, blocks, 256, 0, st, mx, src, up, n, gelu);
        PDL_LAUNCH((k_to16<0, 1>), blocks_for((n + 7) / 8, 256), 256, 0, st, (uint16_t *)dst, consts,
                   (const unsigned *)mx, src, up, n, gelu);
    }
    return (int)cudaGetLastError();
}

/* The results of a launch with split K: y[i][t, r] = the sum over the S
 * slices of part[i][s, t, r] (+ bias[r]), in the order of the slices;
 * element e of all of them is weight i's for out0[i] <= e < out0[i + 1] */
__global__ void k_qmm_sum(qmm_set set, int S, int T)
{
    PDL_ENTRY();
    const size_t n = set.out0[set.n];
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int wi = 0;
#pragma unroll
        for (int k = 1; k < MV_N; k++)
            if (k < set.n && e >= set.out0[k]) wi = k;
        const bk_weight bias = MV_SEL(set.b, wi);
        const float *part = MV_SEL(set.part, wi);
        const size_t i = e - MV_SEL(set.out0, wi), TR = (size_t)T * (size_t)MV_SEL(set.w, wi).rows;
        float v = bias.data ? ld(bias.data, bias.dtype, i % (size_t)MV_SEL(set.w, wi).rows) : 0.0f;
        for (int z = 0; z < S; z++) v += part[(size_t)z * TR + i];
        float *y = MV_SEL(set.y, wi);
        y[i] = qmm_out(set, y, i, v);
    }
}

/* The slices of K for a launch of `blocks` tiles: at most two blocks an
 * SM in all, at most 8 slices, each at least 512 values (a multiple of
 * 128). */
static int qmm_split(int64_t cols, int64_t blocks, int *kslice)
{
    const int64_t chunks = cols / 128;
    int64_t S = 2 * (int64_t)sm_count() / blocks; /* one wave of two blocks an SM */
    if (S > chunks / 4) S = chunks / 4;
    if (S > 8) S = 8;
    if (S < 1) S = 1;
    int64_t per = (chunks + S - 1) / S;
    *kslice = (int)(per * 128);
    return (int)((chunks + per - 1) / per);
}

/* Tiles of W (blocks of QMM_ROWS rows) of the n weights, and the rows of x
 * in blocks of QMM_TOK */
static int64_t qmm_tiles(const bk_weight *const *ws, int n)
{
    int64_t t = 0;
    for (int i = 0; i < n; i++) t += (ws[i]->rows + QMM_ROWS - 1) / QMM_ROWS;
    return t;
}

extern "C" int cuk_qmm_ok(const bk_weight *w, int T)
{
    return T > 1 && T <= CUK_QMM_MAX_T && w->dtype == DT_U32 && (w->bits == 4 || w->bits == 8) &&
           (w->group_size == 32 || w->group_size == 64 || w->group_size == 128) && w->cols % 128 == 0 && w->sb_pairs;
}

/* Whether a launch takes k_qmm4w (4 bits, f16 scale-bias pairs, sm_90a
 * code), whose split K adds up in a cluster (no partial sums) */
static int qmm_wgmma(const bk_weight *w) { return g_wgmma == 1 && w->bits == 4 && bk_pair_dtype(w) == DT_F16; }

/* Whether k_qmm4w's S slices of kslice values add up in a cluster (S <= 8,
 * the portable cluster size): measured at 32 rows on the H100 (bench_gpu_ops),
 * short slices gain (6144 x 4096, 8 slices of 512: 19.6 us against 20.1 with
 * partial sums) and long ones lose (4096 x 14336, 8 slices of 1,792: 39 us
 * against 29), so slices of up to 1,024 values only */
static int qmm_cluster(const bk_weight *w, int S, int kslice)
{
    return qmm_wgmma(w) && S > 1 && S <= 8 && kslice <= 1024;
}

extern "C" size_t cuk_qmm_scratch(const bk_weight *const *ws, int n, int T)
{
    const size_t Tp = (size_t)(T + QMM_TOK - 1) / QMM_TOK * QMM_TOK;
    int kslice;
    const int S = qmm_split(ws[0]->cols, qmm_tiles(ws, n) * (int64_t)(Tp / QMM_TOK), &kslice);
    size_t part = 0;
    for (int i = 0; S > 1 && !qmm_cluster(ws[0], S, kslice) && i < n; i++)
        part += ((size_t)S * (size_t)T * (size_t)ws[i]->rows * 4 + 255) / 256 * 256;
    return (Tp * (size_t)ws[0]->cols * 2 + 255) / 256 * 256 + (Tp * 4 + 255) / 256 * 256 + part;
}

extern "C" int cuk_qmm(void *stream, float *const *ys, const float *x, const float *up, int gelu,
                       const bk_weight *const *ws, const bk_weight *const *bs, int n, int T, void *scratch,
                       const cuk_qmm_extra *ex)
{
    if (n < 1 || n > MV_N) return (int)cudaErrorInvalidValue;
    const bk_weight *nw = ex ? ex->norm : NULL;
    if (nw && (up || nw->rows * nw->cols != ws[0]->cols)) return (int)cudaErrorNotSupported;
    cudaStream_t st = (cudaStream_t)stream;
    const bk_weight *w = ws[0];
    const int64_t K = w->cols;
    const int Tp = (T + QMM_TOK - 1) / QMM_TOK * QMM_TOK;
    for (int i = 1; i < n; i++)
        if (ws[i]->cols != K || ws[i]->bits != w->bits || bk_pair_dtype(ws[i]) != bk_pair_dtype(w))
            return (int)cudaErrorNotSupported;
    const int64_t tiles = qmm_tiles(ws, n);
    int kslice;
    const int S = qmm_split(K, tiles * (Tp / QMM_TOK), &kslice);
    qmm_set set;
    memset(&set, 0, sizeof set);
    set.n = n;
    set.acc = ex && ex->acc;
    uint16_t *xb = (uint16_t *)scratch;
    float *xinv = (float *)((char *)scratch + ((size_t)Tp * (size_t)K * 2 + 255) / 256 * 256);
    char *pp = (char *)xinv + ((size_t)Tp * 4 + 255) / 256 * 256;
    set.xinv = xinv;
    int first = 0;
    for (int i = 0; i < n; i++) {
        set.w[i] = *ws[i];
        if (bs && bs[i]) set.b[i] = *bs[i];
        set.y[i] = ys[i];
        set.first[i] = first;
        first += (int)((ws[i]->rows + QMM_ROWS - 1) / QMM_ROWS);
        set.out0[i + 1] = set.out0[i] + (size_t)T * (size_t)ws[i]->rows;
        if (S > 1 && !qmm_cluster(w, S, kslice)) {
            set.part[i] = (float *)pp;
            pp += ((size_t)S * (size_t)T * (size_t)ws[i]->rows * 4 + 255) / 256 * 256;
        }
    }
    set.first[n] = first;
    typedef void (*qmm_fn)(qmm_set, const uint16_t *, int, int);
    static const qmm_fn fns[4] = {k_qmm4, k_qmm4f, k_qmm8, k_qmm4w};
    static int attr_set[4];
    const int f = w->bits == 8 ? 2 : bk_pair_dtype(w) != DT_F16 ? 1 : qmm_wgmma(w) ? 3 : 0;
    if (nw) {
        PDL_LAUNCH(k_qmm_xn, Tp, 256, 0, st, xb, xinv, x, *nw, ex->eps, ex->plus_one, T, K, f == 3 ? 2 : w->bits == 4);
    } else { /* a row's parts: about 2,048 values each, at most 8 */
        const unsigned parts = (unsigned)((K + 2047) / 2048 < 8 ? (K + 2047) / 2048 : 8);
        PDL_LAUNCH(k_qmm_x, dim3((unsigned)Tp, parts), 1024, 0, st, xb, xinv, x, up, gelu, T, K,
                   f == 3 ? 2 : w->bits == 4);
    }
    const size_t smem = (size_t)QMM_STAGES * (f == 3 ? QMW_STAGE : qmm_stage_bytes(w->bits));
    if (!attr_set[f]) {
        cudaError_t e = cudaFuncSetAttribute(fns[f], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e) return (int)e;
        attr_set[f] = 1;
    }
    dim3 grid((unsigned)(Tp / QMM_TOK), (unsigned)tiles, (unsigned)S);
    if (f == 3 && qmm_cluster(w, S, kslice)) { /* the slices of a tile in one cluster */
        cudaLaunchConfig_t cfg = launch_cfg(grid, QMM_THREADS, smem, st);
        cudaLaunchAttribute at[2];
        at[0] = pdl_attr[0];
        at[1].id = cudaLaunchAttributeClusterDimension;
        at[1].val.clusterDim.x = 1;
        at[1].val.clusterDim.y = 1;
        at[1].val.clusterDim.z = (unsigned)S;
        cfg.attrs = cfg.numAttrs ? at : at + 1;
        cfg.numAttrs += 1;
        cudaError_t e = cudaLaunchKernelEx(&cfg, k_qmm4w, set, (const uint16_t *)xb, T, kslice);
        return e ? (int)e : (int)cudaGetLastError();
    }
    PDL_LAUNCH(fns[f], grid, QMM_THREADS, smem, st, set, (const uint16_t *)xb, T, kslice);
    if (S > 1) PDL_LAUNCH(k_qmm_sum, blocks_for(set.out0[n], 256), 256, 0, st, set, S, T);
    return (int)cudaGetLastError();
}

__global__ void k_add_bias(float *y, bk_weight bias, size_t n, int64_t rows)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += ld(bias.data, bias.dtype, i % (size_t)rows);
}

/* ---- greedy tokens on the device ----
 * A block a row: each thread keeps the largest value it saw and its first
 * index, and whether it met a NaN or +inf; then the warps' and the block's
 * (the lower index wins a tie). */
__device__ __forceinline__ void amax_merge(float *m, int *i, float m2, int i2)
{
    if (m2 > *m || (m2 == *m && i2 < *i)) {
        *m = m2;
        *i = i2;
    }
}

/* Each row's largest value and its first index, and whether the row holds
 * NaN or +inf (backend.h).  A row is cut into gridDim.y parts of a block
 * each; with counts, each part leaves its (max, index, bad) in part and the
 * last part of the row to finish merges them (as k_attention_kv's parts);
 * with one part, the block writes the row's result itself. */
__device__ void amax_block(float *m, int *idx, int *bad)
{
    __shared__ float sm[32];
    __shared__ int si[32], sb[32];
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, *m, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, *idx, o);
        *bad |= __shfl_xor_sync(0xffffffffu, *bad, o);
        amax_merge(m, idx, m2, i2);
    }
    const int w = threadIdx.x / WARP, nw = (blockDim.x + WARP - 1) / WARP;
    if (threadIdx.x % WARP == 0) {
        sm[w] = *m;
        si[w] = *idx;
        sb[w] = *bad;
    }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int k = 1; k < nw; k++) {
            amax_merge(m, idx, sm[k], si[k]);
            *bad |= sb[k];
        }
}

__global__ void k_argmax(int32_t *out, const float *x, size_t cols, int *part, int *counts)
{
    PDL_ENTRY();
    const int parts = (int)gridDim.y, z = blockIdx.y;
    const size_t chunk = (cols + parts - 1) / parts, c0 = z * chunk, c1 = c0 + chunk < cols ? c0 + chunk : cols;
    const float *row = x + (size_t)blockIdx.x * cols;
    float m = -INFINITY;
    int idx = 0x7fffffff, bad = 0;
    for (size_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        const float v = row[c];
        bad |= !(v < INFINITY); /* NaN or +inf */
        if (v > m || (v == m && (int)c < idx)) {
            m = v;
            idx = (int)c;
        }
    }
    amax_block(&m, &idx, &bad);
    if (parts > 1) {
        if (threadIdx.x == 0) {
            int *pp = part + 3 * ((size_t)blockIdx.x * parts + z);
            pp[0] = __float_as_int(m), pp[1] = idx, pp[2] = bad;
        }
        if (!last_arrival(counts + blockIdx.x, parts)) return;
        m = -INFINITY, idx = 0x7fffffff, bad = 0;
        if (threadIdx.x < parts) {
            const int *pp = part + 3 * ((size_t)blockIdx.x * parts + threadIdx.x);
            m = __int_as_float(__ldcg(pp)), idx = __ldcg(pp + 1), bad = __ldcg(pp + 2);
        }
        amax_block(&m, &idx, &bad);
    }
    if (threadIdx.x == 0) {
        out[2 * blockIdx.x] = m == -INFINITY ? 0 : idx;
        out[2 * blockIdx.x + 1] = bad || m == -INFINITY;
    }
}

/* Parts a row of argmax: 32 blocks where the rows are few and long. */
static int amax_parts(int rows, size_t cols) { return rows <= 64 && cols >= 32768 ? 32 : 1; }

extern "C" size_t cuk_argmax_scratch(int rows, size_t cols)
{
    return amax_parts(rows, cols) > 1 ? (size_t)rows * amax_parts(rows, cols) * 3 * sizeof(int) : 0;
}

extern "C" int cuk_argmax(void *stream, int32_t *out, const float *x, int rows, size_t cols, void *scratch,
                          int *counts, size_t n_counts)
{
    if (rows <= 0) return 0;
    int parts = amax_parts(rows, cols);
    if (!scratch || !counts || (size_t)rows > n_counts) parts = 1;
    dim3 grid((unsigned)rows, (unsigned)parts);
    PDL_LAUNCH(k_argmax, grid, parts > 1 ? 256 : 1024, 0, (cudaStream_t)stream, out, x, cols, (int *)scratch, counts);
    return (int)cudaGetLastError();
}

extern "C" int cuk_add_bias(void *stream, float *y, const bk_weight *bias, int T, int64_t rows)
{
    size_t n = (size_t)T * (size_t)rows;
    if (!n) return 0;
    PDL_LAUNCH(k_add_bias, blocks_for(n, 256), 256, 0, (cudaStream_t)stream, y, *bias, n, rows);
    return (int)cudaGetLastError();
}

/* ---- RMSNorm: one block a row ----
 * y = rmsnorm(x); with a, x += a first (written back) and y the norm of
 * the sum; with wa too, a is normed (with wa) before it is added.  Each
 * thread holds up to RN_MAXV of the row in registers, loaded all at once;
 * longer rows read the rest again (not with wa: the launcher's rows fit). */

#define RN_MAXV 4

__global__ void k_rmsnorm(float *x, const float *a, bk_weight wa, float *y, bk_weight w, int dim, float eps,
                          int plus_one)
{
    __shared__ float part[32], part_a[32];
    float *xr = x + (size_t)blockIdx.x * dim, *yr = y + (size_t)blockIdx.x * dim;
    const float *ar = a ? a + (size_t)blockIdx.x * dim : NULL;
    const int nt = blockDim.x;
    float v[RN_MAXV], ss = 0.0f, one = plus_one ? 1.0f : 0.0f;
    /* the norms' weights depend on no kernel: read before the wait */
    float wv[RN_MAXV], wav[RN_MAXV];
#pragma unroll
    for (int k = 0; k < RN_MAXV; k++) {
        const int i = threadIdx.x + k * nt;
        wv[k] = i < dim ? ld(w.data, w.dtype, (size_t)i) + one : 0.0f;
        wav[k] = wa.data && i < dim ? ld(wa.data, wa.dtype, (size_t)i) + one : 0.0f;
    }
    PDL_ENTRY();
    if (wa.data) {
        float av[RN_MAXV], sa = 0.0f;
#pragma unroll
        for (int k = 0; k < RN_MAXV; k++) {
            int i = threadIdx.x + k * nt;
            av[k] = i < dim ? ar[i] : 0.0f;
            sa += av[k] * av[k];
        }
        float ra = rsqrtf(block_sum(sa, part_a) / (float)dim + eps);
#pragma unroll
        for (int k = 0; k < RN_MAXV; k++) {
            int i = threadIdx.x + k * nt;
            v[k] = i < dim ? xr[i] + av[k] * ra * wav[k] : 0.0f;
            ss += v[k] * v[k];
        }
    } else {
#pragma unroll
        for (int k = 0; k < RN_MAXV; k++) {
            int i = threadIdx.x + k * nt;
            v[k] = i < dim ? xr[i] + (ar ? ar[i] : 0.0f) : 0.0f;
            ss += v[k] * v[k];
        }
    }
    for (int i = threadIdx.x + RN_MAXV * nt; i < dim; i += nt) {
        float t = xr[i] + (ar ? ar[i] : 0.0f);
        ss += t * t;
    }
    float r = rsqrtf(block_sum(ss, part) / (float)dim + eps);
#pragma unroll
    for (int k = 0; k < RN_MAXV; k++) {
        int i = threadIdx.x + k * nt;
        if (i < dim) {
            if (ar) xr[i] = v[k];
            yr[i] = v[k] * r * wv[k];
        }
    }
    for (int i = threadIdx.x + RN_MAXV * nt; i < dim; i += nt) {
        float t = xr[i] + (ar ? ar[i] : 0.0f);
        if (ar) xr[i] = t;
        yr[i] = t * r * (ld(w.data, w.dtype, (size_t)i) + one);
    }
}

/* y = rmsnorm(x) w for rows of dim % 4 == 0 floats, 16-byte aligned, and
 * at most RN4_MAXV float4 a thread: the row read once in float4s and held
 * (k_rmsnorm's scalar loads at 1024 threads a row of 4096 ran at a third
 * of the copy rate for training's 2048 rows on an H200). */
#define RN4_MAXV 4
__global__ void k_rmsnorm4(float4 *y, const float4 *x, bk_weight w, int dim4, float eps, int plus_one)
{
    __shared__ float part[32];
    const float4 *xr = x + (size_t)blockIdx.x * dim4;
    float4 *yr = y + (size_t)blockIdx.x * dim4;
    const int nt = blockDim.x;
    const float one = plus_one ? 1.0f : 0.0f;
    float4 wv[RN4_MAXV], v[RN4_MAXV];
#pragma unroll
    for (int k = 0; k < RN4_MAXV; k++) {
        const int i = threadIdx.x + k * nt;
        wv[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < dim4)
            wv[k] = make_float4(ld(w.data, w.dtype, 4 * (size_t)i) + one, ld(w.data, w.dtype, 4 * (size_t)i + 1) + one,
                                ld(w.data, w.dtype, 4 * (size_t)i + 2) + one,
                                ld(w.data, w.dtype, 4 * (size_t)i + 3) + one);
    }
    PDL_ENTRY();
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < RN4_MAXV; k++) {
        const int i = threadIdx.x + k * nt;
        v[k] = i < dim4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    const float r = rsqrtf(block_sum(ss, part) / (float)(4 * dim4) + eps);
#pragma unroll
    for (int k = 0; k < RN4_MAXV; k++) {
        const int i = threadIdx.x + k * nt;
        if (i < dim4)
            yr[i] = make_float4(v[k].x * r * wv[k].x, v[k].y * r * wv[k].y, v[k].z * r * wv[k].z,
                                v[k].w * r * wv[k].w);
    }
}

static int rmsnorm_launch(cudaStream_t st, float *x, float *a, const bk_weight *wa, float *y, const bk_weight *w,
                          int rows, int dim, float eps, int plus_one)
{
    if (rows <= 0) return 0;
    if (!a && dim % 4 == 0 && dim <= 4 * RN4_MAXV * 1024 && (uintptr_t)x % 16 == 0 && (uintptr_t)y % 16 == 0) {
        int t4 = (dim / 4 + RN4_MAXV - 1) / RN4_MAXV;
        t4 = (t4 + WARP - 1) / WARP * WARP;
        PDL_LAUNCH(k_rmsnorm4, rows, t4, 0, st, (float4 *)y, (const float4 *)x, *w, dim / 4, eps, plus_one);
        return (int)cudaGetLastError();
    }
    int threads = (dim + RN_MAXV - 1) / RN_MAXV;
    threads = (threads + WARP - 1) / WARP * WARP;
    if (threads < WARP) threads = WARP;
    if (threads > 1024) threads = 1024;
    bk_weight none;
    memset(&none, 0, sizeof none);
    if (wa && dim > RN_MAXV * threads) {
        /* a row too long to hold: a's norm in place first */
        PDL_LAUNCH(k_rmsnorm, rows, threads, 0, st, a, (const float *)NULL, none, a, *wa, dim, eps, plus_one);
        wa = NULL;
    }
    PDL_LAUNCH(k_rmsnorm, rows, threads, 0, st, x, a, wa ? *wa : none, y, *w, dim, eps, plus_one);
    return (int)cudaGetLastError();
}

extern "C" int cuk_rmsnorm(void *stream, float *y, const float *x, const bk_weight *w, int rows, int dim, float eps,
                           int plus_one)
{
    /* x is only read when a is NULL */
    return rmsnorm_launch((cudaStream_t)stream, (float *)x, NULL, NULL, y, w, rows, dim, eps, plus_one);
}

extern "C" int cuk_add_rmsnorm(void *stream, float *x, float *a, const bk_weight *a_norm, float *y,
                               const bk_weight *w, int rows, int dim, float eps, int plus_one)
{
    return rmsnorm_launch((cudaStream_t)stream, x, a, a_norm, y, w, rows, dim, eps, plus_one);
}

/* ---- RoPE (rotate-half), in place ---- */

/* A block a token: thread (h0, i) takes pair i of heads h0, h0 + per, ..
 * (per = blockDim / half), so that each angle's sincos is computed once a
 * token rather than once a head. */
__global__ void k_rope(float *x, const int32_t *pos, int n_heads, int head_dim, const float *inv_freq, float f)
{
    PDL_ENTRY();
    const int t = blockIdx.x, half = head_dim / 2, per = blockDim.x / half;
    const int i = threadIdx.x % half, h0 = threadIdx.x / half;
    /* the angle in float32, as transformers forms it; its cos and sin to
     * float32 accuracy */
    float angle = (float)pos[t] * inv_freq[i], cs, sn;
    sincosf(angle, &sn, &cs);
    cs *= f;
    sn *= f;
    for (int h = h0; h < n_heads; h += per) {
        float *v = x + ((size_t)t * n_heads + h) * head_dim;
        float a = v[i], b = v[i + half];
        v[i] = a * cs - b * sn;
        v[i + half] = b * cs + a * sn;
    }
}

extern "C" int cuk_rope(void *stream, float *x, const int32_t *pos, int T, int n_heads, int head_dim,
                        const float *inv_freq, float attn_factor)
{
    if (T <= 0 || n_heads <= 0) return 0;
    const int half = head_dim / 2;
    if (half < 1 || half > 1024) return (int)cudaErrorInvalidValue;
    int per = 256 / half;
    if (per < 1) per = 1;
    if (per > n_heads) per = n_heads;
    PDL_LAUNCH(k_rope, T, per * half, 0, (cudaStream_t)stream, x, pos, n_heads, head_dim, inv_freq, attn_factor);
    return (int)cudaGetLastError();
}

/* ---- attention ----
 *
 * One block of ATT_WARPS warps per (query row, head): warp w takes keys
 * lo + w, lo + w + ATT_WARPS, ... in a single pass with its running
 * maximum and sum (online softmax), each lane holding head_dim / 32 of q
 * and of the output; the warps' partial results are then merged.
 * Correct for every mask the backend defines.  Prefills take the tiled
 * kernels below, which share each key between queries (k_attn_tile on
 * CUDA cores; k_flash on the tensor cores where p->fast). */

#define ATT_MAXE 8 /* head_dim <= 256 */
#define ATT_WARPS 4
#define ATT_PF_KEYS 64 /* keys a decode block prefetches before its wait */

typedef struct att_geom {
    const float *k, *v;  /* base of the sequence's keys, at this kv head */
    size_t stride;       /* floats between key rows */
    int lo, hi;          /* key positions lo..hi (inclusive) */
    int cap;             /* ring: position j in row j % cap (0 = row j) */
    /* knew != NULL: key jnew is knew and vnew (shared memory), not the
     * cache's row (a step that writes it as it attends: k_rope_attention_kv) */
    int jnew;
    const float *knew, *vnew;
} att_geom;

/* The warps' results (m, l and the unnormalized sums acc of the values,
 * sacc[w][e]) merged into o (see att_row). */
__device__ void att_finish(float *o, float *ml, int d, const float *sm, const float *sl,
                           const float (*sacc)[WARP * ATT_MAXE])
{
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f, f[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = sl[w] > 0.0f ? expf(sm[w] - M) : 0.0f;
        L += sl[w] * f[w];
    }
    float inv = ml ? 1.0f : L > 0.0f ? 1.0f / L : 0.0f;
    if (ml && threadIdx.x == 0) {
        ml[0] = M;
        ml[1] = L;
    }
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float t = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) t += sacc[w][e] * f[w];
        o[e] = t * inv;
    }
}

/* att_row for head_dim a multiple of 32 (rows 16-byte aligned): a group
 * of 8 lanes takes a key, each lane EV = d / 32 float4s of it (8 lanes: 128
 * contiguous bytes a load), the dot product summed over the group in 3
 * shuffles; a warp's 4 groups take 4 keys, KR rounds of them at once (8
 * keys' loads in flight a warp where KR = 2).  Each group keeps its own running maximum
 * and sum, merged with the other groups' at the end.  EV is a constant
 * (2, 4 or 8) where d is 64, 128 or 256; E = 8 takes any multiple of 32
 * up to 256, the float4s past d / 32 left out.  (att_row_1 takes one key
 * at a time over the whole warp: each key's loads waited for the previous
 * key's 5 shuffles and exponentials.) */
__device__ __forceinline__ void att_row_v(const int EV, float *o, float *ml, const float *q, att_geom g, int d,
                                          float scale, float softcap)
{
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS], sacc[ATT_WARPS][WARP * ATT_MAXE];
    const int lane = threadIdx.x % WARP, wi = threadIdx.x / WARP, grp = lane >> 3, gl = lane & 7, E = d / 32;
    float4 qv[ATT_MAXE], acc[ATT_MAXE]; /* EV used */
#pragma unroll
    for (int i = 0; i < EV; i++) {
        qv[i] = i < E ? ((const float4 *)q)[gl + 8 * i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float m = -INFINITY, l = 0.0f;
    /* KR rounds of 4 keys at once: 2, but 1 for d = 256, whose two rounds
     * took 168 registers and cost gemma3-1b 6% */
    const int KR = EV >= 8 ? 1 : 2;
    /* the same trips for the whole warp: keys j0 + 4 u + grp */
    for (int j0 = g.lo + 4 * KR * wi; j0 <= g.hi; j0 += 4 * KR * ATT_WARPS) {
        float4 vv[2][ATT_MAXE];
        float s[2];
#pragma unroll
        for (int u = 0; u < KR; u++) {
            const int j = j0 + 4 * u + grp, ok = j <= g.hi;
            const size_t row = (size_t)(g.cap ? j % g.cap : j);
            const int fresh = g.knew && j == g.jnew;
            const float4 *kr = (const float4 *)(fresh ? g.knew : g.k + row * g.stride);
            const float4 *vr = (const float4 *)(fresh ? g.vnew : g.v + row * g.stride);
            s[u] = 0.0f;
#pragma unroll
            for (int i = 0; i < EV; i++) {
                const int e = gl + 8 * i;
                vv[u][i] = ok && i < E ? vr[e] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (ok && i < E) {
                    const float4 k4 = kr[e];
                    s[u] += qv[i].x * k4.x + qv[i].y * k4.y + qv[i].z * k4.z + qv[i].w * k4.w;
                }
            }
        }
#pragma unroll
        for (int o2 = 1; o2 <= 4; o2 <<= 1)
#pragma unroll
            for (int u = 0; u < KR; u++) s[u] += __shfl_xor_sync(0xffffffffu, s[u], o2);
#pragma unroll
        for (int u = 0; u < KR; u++) {
            if (j0 + 4 * u + grp > g.hi) continue;
            float t = s[u] * scale;
            if (softcap > 0.0f) t = softcap * tanhf(t / softcap);
            const float mn = fmaxf(m, t), c = expf(m - mn), p = expf(t - mn); /* m = -inf at first: c = 0 */
            l = l * c + p;
#pragma unroll
            for (int i = 0; i < EV; i++) {
                acc[i].x = acc[i].x * c + p * vv[u][i].x;
                acc[i].y = acc[i].y * c + p * vv[u][i].y;
                acc[i].z = acc[i].z * c + p * vv[u][i].z;
                acc[i].w = acc[i].w * c + p * vv[u][i].w;
            }
            m = mn;
        }
    }
    /* the warp's 4 groups merged (lanes gl, gl + 8, gl + 16, gl + 24) */
    float M = m;
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 8));
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 16));
    const float f = l > 0.0f ? expf(m - M) : 0.0f;
    float L = l * f;
    L += __shfl_xor_sync(0xffffffffu, L, 8);
    L += __shfl_xor_sync(0xffffffffu, L, 16);
#pragma unroll
    for (int i = 0; i < EV; i++) {
        float4 a = acc[i];
        a.x *= f, a.y *= f, a.z *= f, a.w *= f;
#pragma unroll
        for (int o2 = 8; o2 <= 16; o2 <<= 1) {
            a.x += __shfl_xor_sync(0xffffffffu, a.x, o2);
            a.y += __shfl_xor_sync(0xffffffffu, a.y, o2);
            a.z += __shfl_xor_sync(0xffffffffu, a.z, o2);
            a.w += __shfl_xor_sync(0xffffffffu, a.w, o2);
        }
        if (grp == 0 && i < E) {
            const int e = 4 * (gl + 8 * i);
            sacc[wi][e] = a.x, sacc[wi][e + 1] = a.y, sacc[wi][e + 2] = a.z, sacc[wi][e + 3] = a.w;
        }
    }
    if (lane == 0) {
        sm[wi] = M;
        sl[wi] = L;
    }
    __syncthreads();
    att_finish(o, ml, d, sm, sl, sacc);
}

/* att_row for any head_dim: a key at a time over the whole warp. */
__device__ void att_row_1(float *o, float *ml, const float *q, att_geom g, int d, float scale, float softcap)
{
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS], sacc[ATT_WARPS][WARP * ATT_MAXE];
    int lane = threadIdx.x % WARP, wi = threadIdx.x / WARP;
    float qv[ATT_MAXE], acc[ATT_MAXE];
#pragma unroll
    for (int i = 0; i < ATT_MAXE; i++) {
        int e = lane + WARP * i;
        qv[i] = e < d ? q[e] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = g.lo + wi; j <= g.hi; j += ATT_WARPS) {
        size_t row = (size_t)(g.cap ? j % g.cap : j);
        const int fresh = g.knew && j == g.jnew;
        const float *kr = fresh ? g.knew : g.k + row * g.stride, *vr = fresh ? g.vnew : g.v + row * g.stride;
        float s = 0.0f, vv[ATT_MAXE];
#pragma unroll
        for (int i = 0; i < ATT_MAXE; i++) {
            int e = lane + WARP * i;
            vv[i] = e < d ? vr[e] : 0.0f; /* issued with the keys' loads */
            if (e < d) s += qv[i] * kr[e];
        }
        s = warp_sum(s) * scale;
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        float mn = fmaxf(m, s), c = expf(m - mn), p = expf(s - mn);
        l = l * c + p;
#pragma unroll
        for (int i = 0; i < ATT_MAXE; i++) acc[i] = acc[i] * c + p * vv[i];
        m = mn;
    }
    if (lane == 0) {
        sm[wi] = m;
        sl[wi] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAXE; i++) sacc[wi][lane + WARP * i] = acc[i];
    __syncthreads();
    att_finish(o, ml, d, sm, sl, sacc);
}

/* o = the attention of q over keys g.lo..g.hi; with ml given, o is left
 * unnormalized (scaled to the maximum score M) and ml = {M, L}, the sum of
 * the scores' exponentials: one part of a split row (k_attn_combine). */
__device__ __forceinline__ void att_row(const int EV, float *o, float *ml, const float *q, att_geom g, int d,
                                        float scale, float softcap)
{
    if (EV)
        att_row_v(EV, o, ml, q, g, d, scale, softcap);
    else
        att_row_1(o, ml, q, g, d, scale, softcap);
}

/* The attention kernels come in one copy per EV (att_row_v; 0: att_row_1),
 * each with the registers its own loop needs. */
/* EV for head_dim d (see att_row_v) */
static int att_ev(int d) { return d == 64 ? 2 : d == 128 ? 4 : d % 32 == 0 ? 8 : 0; }

__device__ __forceinline__ void attention_body(const int EV, float *out, const float *q, const float *k,
                                               const float *v, const bk_attn &p)
{
    PDL_ENTRY();
    int t = blockIdx.x, h = blockIdx.y;
    int d = p.head_dim, kvh = h / (p.n_heads / p.n_kv_heads);
    size_t qs = (size_t)p.n_heads * d, ks = (size_t)p.n_kv_heads * d;
    int P = p.S - p.T + t;
    att_geom g = {k + (size_t)kvh * d, v + (size_t)kvh * d, ks, 0, P, 0, 0, NULL, NULL};
    if (p.window > 0 && P - p.window + 1 > g.lo) g.lo = P - p.window + 1;
    att_row(EV, out + (size_t)t * qs + (size_t)h * d, NULL, q + (size_t)t * qs + (size_t)h * d, g, d, p.scale,
            p.softcap);
}

#define K_ATTENTION(EV)                                                                                          \
    __global__ void k_attention_##EV(float *out, const float *q, const float *k, const float *v, bk_attn p)     \
    {                                                                                                            \
        attention_body(EV, out, q, k, v, p);                                                                     \
    }
K_ATTENTION(0)
K_ATTENTION(2)
K_ATTENTION(4)
K_ATTENTION(8)

extern "C" int cuk_attention(void *stream, float *out, const float *q, const float *k, const float *v,
                             const bk_attn *p)
{
    if (p->T <= 0) return 0;
    if (p->head_dim > WARP * ATT_MAXE) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)p->T, (unsigned)p->n_heads);
    void (*const f[])(float *, const float *, const float *, const float *, bk_attn) = {
        k_attention_0, NULL, k_attention_2, NULL, k_attention_4, NULL, NULL, NULL, k_attention_8};
    PDL_LAUNCH(f[att_ev(p->head_dim)], grid, ATT_WARPS * WARP, 0, (cudaStream_t)stream, out, q, k, v, *p);
    return (int)cudaGetLastError();
}

__global__ void k_kv_store(float *kc, float *vc, const float *k, const float *v, bk_attn_kv p)
{
    PDL_ENTRY();
    const int32_t *q_start = (const int32_t *)p.q_start, *kv_len = (const int32_t *)p.kv_len,
                  *slot = (const int32_t *)p.slot;
    int r = blockIdx.x, b = bk_row_seq(q_start, p.B, r);
    int n = q_start[b + 1] - q_start[b];
    int pos = kv_len[b] - n + (r - q_start[b]);
    size_t w = (size_t)p.n_kv_heads * p.head_dim;
    size_t row = (size_t)slot[b] * p.cap + (size_t)(pos % p.cap);
    for (size_t i = threadIdx.x; i < w; i += blockDim.x) {
        kc[row * w + i] = k[(size_t)r * w + i];
        vc[row * w + i] = v[(size_t)r * w + i];
    }
}

extern "C" int cuk_kv_store(void *stream, float *kc, float *vc, const float *k, const float *v, const bk_attn_kv *p)
{
    if (p->N <= 0) return 0;
    PDL_LAUNCH(k_kv_store, p->N, 512, 0, (cudaStream_t)stream, kc, vc, k, v, *p);
    return (int)cudaGetLastError();
}

/* One block per (row, head) of q and of k: the head's rmsnorm (when its
 * weight is given), the rotation, and for k heads the cache writes of k
 * and v.  Thread i holds the pair (i, i + half).  For few rows (decode
 * steps), where the blocks a row of k_qk_rope_store would leave the device
 * idle: gemma3-1b's decode (head_dim 256, this op before the attention)
 * fell from 1,071 to 968 tok/s with one block a row. */
__global__ void k_qk_rope_store_head(float *q, float *k, const float *v, float *kc, float *vc, bk_weight qn,
                                bk_weight kn, int has_norm, float eps, int plus_one, const int32_t *pos,
                                const float *inv_freq, float f, bk_attn_kv p)
{
    PDL_ENTRY();
    __shared__ float part[32];
    const int32_t *q_start = (const int32_t *)p.q_start, *kv_len = (const int32_t *)p.kv_len,
                  *slot = (const int32_t *)p.slot;
    const int r = blockIdx.x, hh = blockIdx.y, d = p.head_dim, half = d / 2, i = threadIdx.x;
    const int is_k = hh >= p.n_heads, h = is_k ? hh - p.n_heads : hh;
    float *vec = is_k ? k + ((size_t)r * p.n_kv_heads + h) * d : q + ((size_t)r * p.n_heads + h) * d;
    float a = i < half ? vec[i] : 0.0f, b = i < half ? vec[i + half] : 0.0f;
    if (has_norm) {
        float rs = rsqrtf(block_sum(a * a + b * b, part) / (float)d + eps), one = plus_one ? 1.0f : 0.0f;
        const bk_weight &g = is_k ? kn : qn;
        if (i < half) {
            a = a * rs * (ld(g.data, g.dtype, (size_t)i) + one);
            b = b * rs * (ld(g.data, g.dtype, (size_t)(i + half)) + one);
        }
    }
    if (i >= half) return;
    float angle = (float)pos[r] * inv_freq[i], cs, sn;
    sincosf(angle, &sn, &cs);
    cs *= f;
    sn *= f;
    float ra = a * cs - b * sn, rb = b * cs + a * sn;
    vec[i] = ra;
    vec[i + half] = rb;
    if (!is_k) return;
    int sb = bk_row_seq(q_start, p.B, r);
    int n = q_start[sb + 1] - q_start[sb];
    int P = kv_len[sb] - n + (r - q_start[sb]);
    size_t w = (size_t)p.n_kv_heads * d, row = (size_t)slot[sb] * p.cap + (size_t)(P % p.cap);
    float *kd = kc + row * w + (size_t)h * d, *vd = vc + row * w + (size_t)h * d;
    const float *vs = v + (size_t)r * w + (size_t)h * d;
    kd[i] = ra;
    kd[i + half] = rb;
    vd[i] = vs[i];
    vd[i + half] = vs[i + half];
}

/* One block per row of q and k: the rotation's cosines and sines for the
 * row's position once (shared memory), the row's cache row once, then a
 * warp per head (q heads, then k heads): the head's rmsnorm (when its
 * weight is given), the rotation, and for k heads the cache writes of k
 * and v.  (A block per row and head, as before, spent most of its time on
 * those once-a-row lookups: 276 us a layer for 2,048 rows of llama3.1-8b
 * under ncu.) */
#define QKR_THREADS 256
#define QKR_E 4 /* pairs a lane holds: heads of up to 256 values in registers */

/* Pair (j, j + half) of a head: normed (a, b as read), rotated by the
 * row's cos and sin (cs), written back, and for a key into the cache. */
__device__ __forceinline__ void qkr_pair(float *vec, float *kd, float *vd, const float *vs, int is_k, int j, int half,
                                         float a, float b, int has_norm, float rs, const bk_weight &g, float one,
                                         const float *cs_sn)
{
    if (has_norm) {
        a = a * rs * (ld(g.data, g.dtype, (size_t)j) + one);
        b = b * rs * (ld(g.data, g.dtype, (size_t)(j + half)) + one);
    }
    const float cs = cs_sn[j], sn = cs_sn[half + j];
    const float ra = a * cs - b * sn, rb = b * cs + a * sn;
    vec[j] = ra;
    vec[j + half] = rb;
    if (is_k) {
        kd[j] = ra;
        kd[j + half] = rb;
        vd[j] = vs[j];
        vd[j + half] = vs[j + half];
    }
}
__global__ void k_qk_rope_store(float *q, float *k, const float *v, float *kc, float *vc, bk_weight qn,
                                bk_weight kn, int has_norm, float eps, int plus_one, const int32_t *pos,
                                const float *inv_freq, float f, bk_attn_kv p)
{
    extern __shared__ float qkr_cs[]; /* cos [half], then sin [half] */
    PDL_ENTRY();
    const int32_t *q_start = (const int32_t *)p.q_start, *kv_len = (const int32_t *)p.kv_len,
                  *slot = (const int32_t *)p.slot;
    const int r = blockIdx.x, d = p.head_dim, half = d / 2, lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const float pr = (float)pos[r];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cs;
        sincosf(pr * inv_freq[i], &sn, &cs);
        qkr_cs[i] = cs * f;
        qkr_cs[half + i] = sn * f;
    }
    const int sb = bk_row_seq(q_start, p.B, r);
    const int P = kv_len[sb] - (q_start[sb + 1] - q_start[sb]) + (r - q_start[sb]);
    const size_t w = (size_t)p.n_kv_heads * d, crow = ((size_t)slot[sb] * p.cap + (size_t)(P % p.cap)) * w;
    const float one = plus_one ? 1.0f : 0.0f;
    __syncthreads();
    for (int hh = warp; hh < p.n_heads + p.n_kv_heads; hh += QKR_THREADS / WARP) {
        const int is_k = hh >= p.n_heads, h = is_k ? hh - p.n_heads : hh;
        float *vec = is_k ? k + ((size_t)r * p.n_kv_heads + h) * d : q + ((size_t)r * p.n_heads + h) * d;
        const bk_weight &g = is_k ? kn : qn;
        float *kd = kc + crow + (size_t)h * d, *vd = vc + crow + (size_t)h * d;
        const float *vs = v + (size_t)r * w + (size_t)h * d;
        /* a head of up to 2 QKR_E WARP values is read once, all its loads
         * in flight together (a loop that read, rotated and stored in turn
         * could not issue a pair's reads before the stores of the pair
         * before; ncu shows 76-82 us for 2,048 rows of llama3.1-8b either
         * way with its cache flushes, so the gain, if any, is small) */
        float x[QKR_E], y[QKR_E], ss = 0.0f;
        const int held = half <= QKR_E * WARP;
        if (held) {
#pragma unroll
            for (int e = 0; e < QKR_E; e++) {
                const int j = lane + WARP * e;
                x[e] = j < half ? vec[j] : 0.0f;
                y[e] = j < half ? vec[j + half] : 0.0f;
                ss += x[e] * x[e] + y[e] * y[e];
            }
        } else if (has_norm) {
            for (int j = lane; j < half; j += WARP) {
                const float a = vec[j], b = vec[j + half];
                ss += a * a + b * b;
            }
        }
        const float rs = has_norm ? rsqrtf(warp_sum(ss) / (float)d + eps) : 1.0f;
        if (held) {
#pragma unroll
            for (int e = 0; e < QKR_E; e++)
                if (lane + WARP * e < half)
                    qkr_pair(vec, kd, vd, vs, is_k, lane + WARP * e, half, x[e], y[e], has_norm, rs, g, one, qkr_cs);
        } else {
            for (int j = lane; j < half; j += WARP)
                qkr_pair(vec, kd, vd, vs, is_k, j, half, vec[j], vec[j + half], has_norm, rs, g, one, qkr_cs);
        }
    }
}

extern "C" int cuk_qk_rope_store(void *stream, float *q, float *k, const float *v, float *kc, float *vc,
                                 const bk_weight *qn, const bk_weight *kn, float eps, int plus_one,
                                 const int32_t *pos, const float *inv_freq, float attn_factor, const bk_attn_kv *p)
{
    if (p->N <= 0) return 0;
    if (p->head_dim % 2 || p->head_dim > 2048) return (int)cudaErrorInvalidValue;
    bk_weight none;
    memset(&none, 0, sizeof none);
    if (p->N < sm_count()) { /* a block a row and head */
        const int threads = (p->head_dim / 2 + WARP - 1) / WARP * WARP;
        const dim3 grid((unsigned)p->N, (unsigned)(p->n_heads + p->n_kv_heads));
        PDL_LAUNCH(k_qk_rope_store_head, grid, threads, 0, (cudaStream_t)stream, q, k, v, kc, vc, qn ? *qn : none,
                   kn ? *kn : none, qn != NULL, eps, plus_one, pos, inv_freq, attn_factor, *p);
    } else {
        PDL_LAUNCH(k_qk_rope_store, (unsigned)p->N, QKR_THREADS, (size_t)p->head_dim * sizeof(float),
                   (cudaStream_t)stream, q, k, v, kc, vc, qn ? *qn : none, kn ? *kn : none, qn != NULL, eps, plus_one,
                   pos, inv_freq, attn_factor, *p);
    }
    return (int)cudaGetLastError();
}

__device__ void att_merge(float *o, const float *part_o, const float *part_ml, size_t s0, int d, int parts);

/* counts (split rows, when not NULL): an int a row and head, zero before
 * and after; each part adds one when its sums are out, and the last one
 * merges the row's parts (no second kernel) and sets it back to zero. */
/* The raw rows of a step that rotates and stores as it attends
 * (k_rope_attention_kv): q [N, n_heads, d], k and v [N, n_kv_heads, d],
 * normed (has_norm: rmsnorm with qn, kn) and rotated as k_qk_rope_store
 * does. */
typedef struct att_new {
    const float *q, *k, *v;
    bk_weight qn, kn;
    int has_norm, plus_one;
    float eps, f;
    const int32_t *pos;
    const float *inv_freq;
} att_new;

/* dst (shared, d floats) = src normed and rotated for position pos, as
 * k_qk_rope_store; every thread of the block calls it (blockDim >= d / 2) */
__device__ void att_rope_head(float *dst, const float *src, const att_new &a, const bk_weight &nw, int pos, int d,
                              float *part)
{
    const int half = d / 2, i = threadIdx.x;
    float x = i < half ? src[i] : 0.0f, y = i < half ? src[i + half] : 0.0f;
    if (a.has_norm) {
        const float rs = rsqrtf(block_sum(x * x + y * y, part) / (float)d + a.eps), one = a.plus_one ? 1.0f : 0.0f;
        if (i < half) {
            x = x * rs * (ld(nw.data, nw.dtype, (size_t)i) + one);
            y = y * rs * (ld(nw.data, nw.dtype, (size_t)(i + half)) + one);
        }
        __syncthreads(); /* part free for the next call */
    }
    if (i < half) {
        float cs, sn;
        sincosf((float)pos * a.inv_freq[i], &sn, &cs);
        cs *= a.f;
        sn *= a.f;
        dst[i] = x * cs - y * sn;
        dst[i + half] = y * cs + x * sn;
    }
}

__device__ __forceinline__ void attention_kv_body(const int EV, float *out, float *part_o, float *part_ml,
                                                  const float *q, const float *kc, const float *vc,
                                                  const bk_attn_kv &p, int *counts, const att_new *an)
{
    /* q_start, kv_len and slot come from the host (uploaded before the
     * step's first kernel), the cached keys from earlier steps: both are
     * read before the wait for the kernel before (programmatic dependent
     * launch), q and the step's own key after it */
    const int32_t *q_start = (const int32_t *)p.q_start, *kv_len = (const int32_t *)p.kv_len,
                  *slot = (const int32_t *)p.slot;
    int r = blockIdx.x, h = blockIdx.y;
    int b = bk_row_seq(q_start, p.B, r);
    int n = q_start[b + 1] - q_start[b], len = kv_len[b];
    int P = len - n + (r - q_start[b]);
    int d = p.head_dim, kvh = h / (p.n_heads / p.n_kv_heads);
    size_t qs = (size_t)p.n_heads * d, ks = (size_t)p.n_kv_heads * d;
    size_t base = (size_t)slot[b] * p.cap * ks + (size_t)kvh * d;
    att_geom g = {kc + base, vc + base, ks, len - p.cap > 0 ? len - p.cap : 0, P, p.cap, 0, NULL, NULL};
    if (p.window > 0 && P - p.window + 1 > g.lo) g.lo = P - p.window + 1;
    const float *qr = q + (size_t)r * qs + (size_t)h * d;
    const int parts = (int)gridDim.z;
    if (parts > 1) { /* part z of the row's keys */
        const int z = blockIdx.z, chunk = (g.hi - g.lo + parts) / parts;
        g.lo += z * chunk;
        if (g.lo + chunk - 1 < g.hi) g.hi = g.lo + chunk - 1;
    }
    {
        /* the block's first ATT_PF_KEYS cached keys and values asked of the
         * L2 cache while the kernel before finishes (128-byte lines) */
        const int lines = (d + 31) / 32, nk = g.hi - g.lo + 1 < ATT_PF_KEYS ? g.hi - g.lo + 1 : ATT_PF_KEYS;
        for (int t = threadIdx.x; t < nk * 2 * lines; t += blockDim.x) {
            const int j = g.lo + t / (2 * lines), kv = (t / lines) & 1, line = t % lines;
            const size_t row = (size_t)(g.cap ? j % g.cap : j);
            asm volatile("prefetch.global.L2 [%0];" ::"l"((kv ? g.v : g.k) + row * g.stride + 32 * line));
        }
    }
    PDL_ENTRY();
    if (an) {
        /* one new row a sequence (P its key): q rotated here; the parts
         * that hold P rotate k and take it and v from shared memory, and
         * the first head of each kv group writes them into the cache (no
         * block reads P's cache row in this launch) */
        __shared__ __align__(16) float qn_s[WARP * ATT_MAXE], kn_s[WARP * ATT_MAXE], vn_s[WARP * ATT_MAXE];
        __shared__ float red[WARP];
        att_rope_head(qn_s, an->q + (size_t)r * qs + (size_t)h * d, *an, an->qn, an->pos[r], d, red);
        qr = qn_s;
        if (g.lo <= P && P <= g.hi) {
            const float *kraw = an->k + (size_t)r * ks + (size_t)kvh * d, *vraw = an->v + (size_t)r * ks + (size_t)kvh * d;
            att_rope_head(kn_s, kraw, *an, an->kn, an->pos[r], d, red);
            for (int e = threadIdx.x; e < d; e += blockDim.x) vn_s[e] = vraw[e];
            g.jnew = P;
            g.knew = kn_s;
            g.vnew = vn_s;
            __syncthreads();
            if (h % (p.n_heads / p.n_kv_heads) == 0) {
                const size_t row = (size_t)(P % p.cap) * ks;
                for (int e = threadIdx.x; e < d; e += blockDim.x) {
                    ((float *)kc)[base + row + e] = kn_s[e];
                    ((float *)vc)[base + row + e] = vn_s[e];
                }
            }
        }
        __syncthreads();
    }
    if (parts == 1) {
        att_row(EV, out + (size_t)r * qs + (size_t)h * d, NULL, qr, g, d, p.scale, p.softcap);
        return;
    }
    /* part z's partial result in part_o / part_ml */
    const int z = blockIdx.z;
    const size_t slot_i = ((size_t)r * p.n_heads + h) * parts + z;
    att_row(EV, part_o + slot_i * d, part_ml + 2 * slot_i, qr, g, d, p.scale, p.softcap);
    if (!counts || !last_arrival(counts + (size_t)r * p.n_heads + h, parts)) return;
    att_merge(out + (size_t)r * qs + (size_t)h * d, part_o, part_ml, slot_i - z, d, parts);
}

#define K_ATTENTION_KV(EV)                                                                                       \
    __global__ void k_attention_kv_##EV(float *out, float *part_o, float *part_ml, const float *q,             \
                                        const float *kc, const float *vc, bk_attn_kv p, int *counts)            \
    {                                                                                                            \
        attention_kv_body(EV, out, part_o, part_ml, q, kc, vc, p, counts, NULL);                                 \
    }                                                                                                            \
    __global__ void k_rope_attention_kv_##EV(float *out, float *part_o, float *part_ml, const float *q,        \
                                             float *kc, float *vc, bk_attn_kv p, int *counts, att_new an)       \
    {                                                                                                            \
        attention_kv_body(EV, out, part_o, part_ml, q, kc, vc, p, counts, &an);                                  \
    }
K_ATTENTION_KV(0)
K_ATTENTION_KV(2)
K_ATTENTION_KV(4)
K_ATTENTION_KV(8)

/* The parts of a split row merged: out = sum_z e^(M_z - M) o_z / sum_z
 * e^(M_z - M) L_z, M the largest M_z of the parts that saw a key.  The
 * first warp finds M and the parts' weights, a lane a part (parts <=
 * ATT_SPLIT_MAX = 32), for the whole block in shared memory; the parts
 * are read past L1 (another block may have written them just before). */
__device__ void att_merge(float *o, const float *part_o, const float *part_ml, size_t s0, int d, int parts)
{
    __shared__ float wz[WARP], inv_l;
    if (threadIdx.x < WARP) {
        const int z = threadIdx.x;
        const float *ml = part_ml + 2 * (s0 + z);
        const float lz = z < parts ? __ldcg(ml + 1) : 0.0f;
        const int seen = lz > 0.0f;
        const float mz = seen ? __ldcg(ml) : -INFINITY;
        float M = mz;
#pragma unroll
        for (int k = WARP / 2; k > 0; k >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, k));
        const float e = seen ? expf(mz - M) : 0.0f;
        const float L = warp_sum(lz * e);
        wz[z] = e;
        if (z == 0) inv_l = L > 0.0f ? 1.0f / L : 0.0f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float t = 0.0f;
        for (int z = 0; z < parts; z++)
            if (wz[z] != 0.0f) t += __ldcg(part_o + (s0 + z) * d + e) * wz[z]; /* a part that saw no key wrote nothing */
        o[e] = t * inv_l;
    }
}

/* The merge as a kernel of its own (where no counters were given). */
__global__ void k_attn_combine(float *out, const float *part_o, const float *part_ml, int n_heads, int d, int parts)
{
    PDL_ENTRY();
    const int r = blockIdx.x, h = blockIdx.y;
    const size_t s0 = ((size_t)r * n_heads + h) * parts;
    att_merge(out + ((size_t)r * n_heads + h) * d, part_o, part_ml, s0, d, parts);
}

/* Many queries (prefill): a block takes AT_Q queries of one sequence and
 * one head (AT_Q small: many blocks), and walks their keys in tiles of
 * AT_K held in shared memory (copied and read as float4; head_dim a
 * multiple of 4); each warp owns AT_Q / 4 queries, a lane a key for the
 * scores and head_dim / 32 of the output, with the running maximum and
 * sum per query.  CUDA cores: float32 throughout, for !p->fast (k_flash
 * takes the rest). */
#define AT_Q 8
#define AT_K 32
#define AT_QW (AT_Q / ATT_WARPS)

/* Rows of q and k in shared memory are d + 4 floats apart: 16-byte
 * aligned (d a multiple of 4) and, for the lanes' float4 reads of 32
 * key rows, in different banks. */
static size_t at_smem(int d) { return ((size_t)AT_Q * (d + 4) + (size_t)AT_K * (d + 4) + (size_t)AT_K * d) * 4; }

__global__ void __launch_bounds__(ATT_WARPS * WARP) k_attn_tile(float *out, const float *q, const float *kc,
                                                                const float *vc, bk_attn_kv p, int tiles)
{
    PDL_ENTRY();
    extern __shared__ float sh[];
    const int32_t *q_start = (const int32_t *)p.q_start, *kv_len = (const int32_t *)p.kv_len,
                  *slot = (const int32_t *)p.slot;
    const int d = p.head_dim, dp = d + 4, d4 = d / 4, lane = threadIdx.x % WARP, wi = threadIdx.x / WARP;
    const int b = blockIdx.x / tiles, i0 = (blockIdx.x % tiles) * AT_Q, h = blockIdx.y;
    const int n = q_start[b + 1] - q_start[b];
    if (i0 >= n) return;
    const int nq = n - i0 < AT_Q ? n - i0 : AT_Q, len = kv_len[b];
    const int kvh = h / (p.n_heads / p.n_kv_heads);
    const size_t qs = (size_t)p.n_heads * d, ks = (size_t)p.n_kv_heads * d;
    const size_t base = (size_t)slot[b] * p.cap * ks + (size_t)kvh * d, row0 = (size_t)q_start[b] + i0;
    float *sq = sh, *sk = sq + AT_Q * dp, *sv = sk + AT_K * dp;
    for (int qi = wi; qi < nq; qi += ATT_WARPS) {
        const float4 *src = (const float4 *)(q + (row0 + qi) * qs + (size_t)h * d);
        for (int e = lane; e < d4; e += WARP) ((float4 *)(sq + qi * dp))[e] = src[e];
    }
    const int P0 = len - n + i0, P1 = P0 + nq - 1, lo_ring = len - p.cap > 0 ? len - p.cap : 0;
    int lo_all = lo_ring;
    if (p.window > 0 && P0 - p.window + 1 > lo_all) lo_all = P0 - p.window + 1;
    float m[AT_QW], l[AT_QW], acc[AT_QW][ATT_MAXE];
#pragma unroll
    for (int a = 0; a < AT_QW; a++) {
        m[a] = -INFINITY;
        l[a] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAXE; i++) acc[a][i] = 0.0f;
    }
    for (int j0 = lo_all; j0 <= P1; j0 += AT_K) {
        const int nk = P1 - j0 + 1 < AT_K ? P1 - j0 + 1 : AT_K;
        __syncthreads();
        for (int kj = wi; kj < nk; kj += ATT_WARPS) {
            const size_t r = base + (size_t)((j0 + kj) % p.cap) * ks;
            const float4 *k4 = (const float4 *)(kc + r), *v4 = (const float4 *)(vc + r);
            for (int e = lane; e < d4; e += WARP) {
                ((float4 *)(sk + kj * dp))[e] = k4[e];
                ((float4 *)(sv + kj * d))[e] = v4[e];
            }
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < AT_QW; a++) {
            const int qi = wi * AT_QW + a;
            if (qi < nq) {
                const int P = P0 + qi;
                int lo = lo_ring;
                if (p.window > 0 && P - p.window + 1 > lo) lo = P - p.window + 1;
                const int j = j0 + lane;
                const int ok = lane < nk && j >= lo && j <= P;
                float sc = -INFINITY;
                if (ok) {
                    float4 acc4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    const float4 *qr = (const float4 *)(sq + qi * dp), *kr = (const float4 *)(sk + lane * dp);
                    for (int e = 0; e < d4; e++) {
                        const float4 a4 = qr[e], b4 = kr[e];
                        acc4.x += a4.x * b4.x;
                        acc4.y += a4.y * b4.y;
                        acc4.z += a4.z * b4.z;
                        acc4.w += a4.w * b4.w;
                    }
                    sc = ((acc4.x + acc4.y) + (acc4.z + acc4.w)) * p.scale;
                    if (p.softcap > 0.0f) sc = p.softcap * tanhf(sc / p.softcap);
                }
                float tm = sc;
#pragma unroll
                for (int o = WARP / 2; o > 0; o >>= 1) tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, o));
                if (tm != -INFINITY) {
                    const float mn = fmaxf(m[a], tm), c = expf(m[a] - mn), pk = ok ? expf(sc - mn) : 0.0f;
                    l[a] = l[a] * c + warp_sum(pk);
#pragma unroll
                    for (int i = 0; i < ATT_MAXE; i++) acc[a][i] *= c;
                    for (int kk = 0; kk < nk; kk++) {
                        const float pv = __shfl_sync(0xffffffffu, pk, kk);
                        const float *vr = sv + kk * d;
#pragma unroll
                        for (int i = 0; i < ATT_MAXE; i++) {
                            int e = lane + WARP * i;
                            if (e < d) acc[a][i] += pv * vr[e];
                        }
                    }
                    m[a] = mn;
                }
            }
        }
    }
#pragma unroll
    for (int a = 0; a < AT_QW; a++) {
        const int qi = wi * AT_QW + a;
        if (qi >= nq) continue;
        const float inv = l[a] > 0.0f ? 1.0f / l[a] : 0.0f;
        float *o = out + (row0 + qi) * qs + (size_t)h * d;
#pragma unroll
        for (int i = 0; i < ATT_MAXE; i++) {
            int e = lane + WARP * i;
            if (e < d) o[e] = acc[a][i] * inv;
        }
    }
}

/* ---- attention on the TF32 tensor cores (p->fast) ----
 * Flash attention: no score matrix in memory, only tiles.  A block takes
 * one kv head and 16 FA_WARPS / WK rows of it (16 a row group of WK
 * warps), a row being a query and one of the kv group's G heads (row r:
 * query i0 + r / G,
 * head kvh G + r % G), so that the group's heads share each key tile.  It
 * walks the keys its rows may see in tiles of FA_BK, double-buffered in
 * shared memory by cp.async straight from the float32 cache, and
 * multiplies with mma.sync m16n8k8 (TF32 in, rounded to nearest; float32
 * sums).  A warp holds its 16 rows' scores of the tile, their running
 * maxima and sums (online softmax, base 2) and their 16 x d outputs.
 * WK = 1 (prefill): four row groups of 16 rows.  WK = 4 (decode steps of a
 * batch: one query a sequence, G real rows of 16; and prefills whose
 * 64-row blocks would leave the device idle): one row group whose four
 * warps take a quarter of each tile each, merged through shared memory at
 * the end.  q is scaled and rounded as it is staged.
 *
 * Fragments (g = lane / 4, t = lane % 4): A (16 x 8) rows g and g + 8,
 * columns t and t + 4; B (8 x 8) column g, rows t and t + 4; C rows g and
 * g + 8, columns 2t and 2t + 1.  For P V the tile's 8 keys are taken in
 * the order 0, 2, 4, 6, 1, 3, 5, 7, so that a thread's two scores of a
 * row (keys 2t, 2t + 1: C) are its A elements (columns t, t + 4) as they
 * are, and V's B elements are the rows of keys 2t and 2t + 1.  Rows are
 * D + FA_PAD floats apart: every fragment load is free of bank conflicts
 * where D is a multiple of 32. */
#define FA_WARPS 4
#define FA_BK 32
#define FA_PAD 4
#define FA_LOG2E 1.4426950408889634f
#define FA_MAXDN 32 /* head_dim <= 256 */
#define FA_PF_KEYS 64 /* keys past the first tile a decode step asks of L2 before its wait */

/* Shared memory of a block: q's rows, two stages of FA_BK keys and FA_BK
 * values, and the new key and value of a step that rotates as it attends. */
static size_t fa_smem(int d, int wk)
{
    return ((size_t)16 * FA_WARPS / wk + 4 * FA_BK) * (d + FA_PAD) * sizeof(float) + 2 * (size_t)d * sizeof(float);
}

/* The keys and values of positions j0 .. j0 + FA_BK - 1 into stage sk,
 * sv: past hi zeros (masked, and finite under the zero weights of P V);
 * position jnew from knew, vnew (shared memory), or left for the caller
 * where knew is NULL.  A thread copies column c = its index % (D / 4) of
 * every (128 / (D / 4))-th row; rows of the ring found by subtraction. */
__device__ __forceinline__ void fa_load(const int D, float *sk, float *sv, const float *kc, const float *vc,
                                        size_t base, size_t ks, int cap, int j0, int hi, int jnew, const float *knew,
                                        const float *vnew)
{
    const int DP = D + FA_PAD, C4 = D / 4, RSTEP = FA_WARPS * WARP / C4, c = threadIdx.x % C4;
    int row = j0 % cap + (int)threadIdx.x / C4;
    while (row >= cap) row -= cap;
    for (int r = (int)threadIdx.x / C4; r < FA_BK; r += RSTEP) {
        const int j = j0 + r;
        float *dk = sk + r * DP + 4 * c, *dv = sv + r * DP + 4 * c;
        if (j > hi) {
            *(float4 *)dk = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            *(float4 *)dv = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        } else if (j == jnew) {
            if (knew) {
                *(float4 *)dk = *(const float4 *)(knew + 4 * c);
                *(float4 *)dv = *(const float4 *)(vnew + 4 * c);
            }
        } else {
            const size_t src = base + (size_t)row * ks + 4 * c;
            cp16(dk, kc + src);
            cp16(dv, vc + src);
        }
        row += RSTEP;
        while (row >= cap) row -= cap;
    }
}

/* One head's row of a step that rotates as it attends (att_new): src
 * normed (where an.has_norm) and rotated for position pos by the calling
 * warp, into dst (times mul, rounded to TF32 where tf: a row of q) and,
 * where cache is not NULL, into the cache row too (a key). */
__device__ __forceinline__ void fa_rope_row(const int D, float *dst, float *cache, const float *src,
                                            const att_new &an, const bk_weight &nw, int pos, float mul, int tf)
{
    const int half = D / 2, lane = threadIdx.x % WARP, E = half / WARP;
    float x[4], y[4], ss = 0.0f; /* E used: D <= 256 */
#pragma unroll
    for (int e = 0; e < E; e++) {
        x[e] = src[lane + WARP * e];
        y[e] = src[lane + WARP * e + half];
        ss += x[e] * x[e] + y[e] * y[e];
    }
    const float rs = an.has_norm ? rsqrtf(warp_sum(ss) / (float)D + an.eps) : 1.0f, one = an.plus_one ? 1.0f : 0.0f;
#pragma unroll
    for (int e = 0; e < E; e++) {
        const int i = lane + WARP * e;
        float a = x[e], b = y[e], cs, sn;
        if (an.has_norm) {
            a *= rs * (ld(nw.data, nw.dtype, (size_t)i) + one);
            b *= rs * (ld(nw.data, nw.dtype, (size_t)(i + half)) + one);
        }
        sincosf((float)pos * an.inv_freq[i], &sn, &cs);
        cs *= an.f;
        sn *= an.f;
        const float ra = a * cs - b * sn, rb = b * cs + a * sn;
        if (cache) cache[i] = ra, cache[i + half] = rb;
        dst[i] = tf ? __uint_as_float(tf32(ra * mul)) : ra;
        dst[i + half] = tf ? __uint_as_float(tf32(rb * mul)) : rb;
    }
}

__device__ __forceinline__ void flash_body(const int D, const int WK, float *out, const float *q, float *kc, float *vc,
                                           const bk_attn_kv &p, int tiles, int G, int qpb, const att_new *an)
{
    extern __shared__ __align__(16) float fsh[];
    const int DP = D + FA_PAD, ROWS = 16 * FA_WARPS / WK, NT = FA_BK / 8 / WK, DN = D / 8;
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, g = lane >> 2, t = lane & 3;
    const int wr = w / WK, wk = w % WK;
    /* a step that rotates as it attends reads the cache's earlier keys,
     * written by earlier steps, before the wait for the kernel before
     * (programmatic dependent launch): its first tile, and the next
     * FA_PF_KEYS keys asked of L2; q_start, kv_len and slot come from the
     * host before the step's first kernel.  Else the kernel before may
     * have written the cache (kv_store, qk_rope_store): the wait first. */
    if (!an) PDL_ENTRY();
    const int32_t *q_start = (const int32_t *)p.q_start, *kv_len = (const int32_t *)p.kv_len,
                  *slot = (const int32_t *)p.slot;
    /* the longest rows' tiles first */
    const int b = blockIdx.x / tiles, i0 = (tiles - 1 - (int)blockIdx.x % tiles) * qpb, kvh = blockIdx.y;
    const int n = q_start[b + 1] - q_start[b];
    if (i0 >= n) return;
    const int nq = n - i0 < qpb ? n - i0 : qpb, len = kv_len[b];
    const size_t qs = (size_t)p.n_heads * D, ks = (size_t)p.n_kv_heads * D;
    const size_t base = (size_t)slot[b] * p.cap * ks + (size_t)kvh * D, row0 = (size_t)q_start[b] + i0;
    float *sq = fsh, *sk = sq + ROWS * DP, *sv = sk + 2 * FA_BK * DP, *kn_s = sv + 2 * FA_BK * DP, *vn_s = kn_s + D;
    const int P0 = len - n + i0, hi = P0 + nq - 1, ring_lo = len - p.cap > 0 ? len - p.cap : 0;
    int lo_all = ring_lo;
    if (p.window > 0 && P0 - p.window + 1 > lo_all) lo_all = P0 - p.window + 1;
    const int ntiles = (hi - lo_all + FA_BK) / FA_BK;
    /* with an (one new row, n = 1): its key P = hi is not in the cache
     * yet: the first tile leaves its row, filled below */
    const int jnew = an ? hi : -1;
    fa_load(D, sk, sv, kc, vc, base, ks, p.cap, lo_all, hi, jnew, NULL, NULL);
    cp_commit();
    if (an) {
        const int lines = D / 32, j1 = lo_all + FA_BK, nk = hi - j1 < FA_PF_KEYS ? hi - j1 : FA_PF_KEYS;
        for (int i = threadIdx.x; i < nk * 2 * lines; i += FA_WARPS * WARP) {
            const int j = j1 + i / (2 * lines), kv = i / lines & 1, line = i % lines;
            const float *src = (kv ? vc : kc) + base + (size_t)(j % p.cap) * ks + 32 * line;
            asm volatile("prefetch.global.L2 [%0];" ::"l"(src));
        }
        PDL_ENTRY();
        /* the G query heads of the row and its key, a warp each in turn;
         * the key and value go to the cache for later steps and to kn_s,
         * vn_s for this one */
        for (int it = w; it <= G; it += FA_WARPS) {
            if (it < G) {
                fa_rope_row(D, sq + it * DP, NULL, an->q + row0 * qs + (size_t)(kvh * G + it) * D, *an, an->qn,
                            an->pos[row0], p.scale, 1);
            } else {
                const size_t crow = base + (size_t)(hi % p.cap) * ks, nrow = row0 * ks + (size_t)kvh * D;
                fa_rope_row(D, kn_s, kc + crow, an->k + nrow, *an, an->kn, an->pos[row0], 1.0f, 0);
                for (int e = lane; e < D; e += WARP) vn_s[e] = vc[crow + e] = an->v[nrow + e];
            }
        }
        for (int i = threadIdx.x; i < (ROWS - G) * D; i += FA_WARPS * WARP) sq[(G + i / D) * DP + i % D] = 0.0f;
        __syncthreads();
        if (hi < lo_all + FA_BK)
            for (int e = threadIdx.x; e < D; e += FA_WARPS * WARP) {
                sk[(hi - lo_all) * DP + e] = kn_s[e];
                sv[(hi - lo_all) * DP + e] = vn_s[e];
            }
    } else {
        for (int i = threadIdx.x; i < ROWS * (D / 4); i += FA_WARPS * WARP) {
            const int r = i / (D / 4), c = i % (D / 4), qi = r / G;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (r < qpb * G && qi < nq)
                v = *(const float4 *)(q + (row0 + qi) * qs + (size_t)(kvh * G + r % G) * D + 4 * c);
            float4 s;
            s.x = __uint_as_float(tf32(v.x * p.scale));
            s.y = __uint_as_float(tf32(v.y * p.scale));
            s.z = __uint_as_float(tf32(v.z * p.scale));
            s.w = __uint_as_float(tf32(v.w * p.scale));
            *(float4 *)(sq + r * DP + 4 * c) = s;
        }
    }
    /* this thread's rows wr 16 + g and + 8: their positions and first keys */
    int P[2], lo[2];
    for (int h = 0; h < 2; h++) {
        P[h] = P0 + (wr * 16 + g + 8 * h) / G;
        lo[h] = ring_lo;
        if (p.window > 0 && P[h] - p.window + 1 > lo[h]) lo[h] = P[h] - p.window + 1;
    }
    float o[FA_MAXDN][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; /* DN, NT used */
#pragma unroll
    for (int dn = 0; dn < DN; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
    const float *qa = sq + (wr * 16 + g) * DP + t;
    for (int it = 0; it < ntiles; it++) {
        const int j0 = lo_all + it * FA_BK, st = it & 1;
        if (it + 1 < ntiles)
            fa_load(D, sk + (st ^ 1) * FA_BK * DP, sv + (st ^ 1) * FA_BK * DP, kc, vc, base, ks, p.cap, j0 + FA_BK, hi,
                    jnew, kn_s, vn_s);
        cp_commit();
        cp_wait1();
        __syncthreads();
        const int kb0 = wk * NT * 8; /* this warp's first key of the tile */
        const float *K = sk + st * FA_BK * DP + (kb0 + g) * DP + t, *V = sv + st * FA_BK * DP + (kb0 + 2 * t) * DP + g;
        float s[FA_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DN; kk++) {
            const uint32_t a0 = __float_as_uint(qa[8 * kk]), a1 = __float_as_uint(qa[8 * DP + 8 * kk]),
                           a2 = __float_as_uint(qa[8 * kk + 4]), a3 = __float_as_uint(qa[8 * DP + 8 * kk + 4]);
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                mma_tf32(s[nt], a0, a1, a2, a3, tf32(K[nt * 8 * DP + 8 * kk]), tf32(K[nt * 8 * DP + 8 * kk + 4]));
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int h = c >> 1, j = j0 + kb0 + nt * 8 + 2 * t + (c & 1);
                float x = s[nt][c];
                if (p.softcap > 0.0f) x = p.softcap * tanhf(x / p.softcap);
                x = j >= lo[h] && j <= P[h] ? x * FA_LOG2E : -INFINITY;
                s[nt][c] = x;
                mx[h] = fmaxf(mx[h], x);
            }
        float use[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
            const float mn = fmaxf(m[h], mx[h]);
            use[h] = mn == -INFINITY ? 0.0f : mn; /* no key seen yet: every p 0 */
            const float corr = exp2f(m[h] - use[h]);
            l[h] *= corr;
#pragma unroll
            for (int dn = 0; dn < DN; dn++) o[dn][2 * h] *= corr, o[dn][2 * h + 1] *= corr;
            m[h] = mn;
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int c = 0; c < 4; c++) {
                s[nt][c] = exp2f(s[nt][c] - use[c >> 1]);
                l[c >> 1] += s[nt][c];
            }
            const uint32_t a0 = tf32(s[nt][0]), a1 = tf32(s[nt][2]), a2 = tf32(s[nt][1]), a3 = tf32(s[nt][3]);
            const float *vr = V + nt * 8 * DP;
#pragma unroll
            for (int dn = 0; dn < DN; dn++) mma_tf32(o[dn], a0, a1, a2, a3, tf32(vr[8 * dn]), tf32(vr[DP + 8 * dn]));
        }
        __syncthreads(); /* the stage is free for the load after next */
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
    if (WK > 1) {
        /* each warp's m, l and o into the stages' space; then a row's WK
         * weights once, by 8 threads a row (16 rows: 128 threads), which
         * merge its columns 4 at a time */
        float *ms = sk, *ls = ms + FA_WARPS * 16, *os = ls + FA_WARPS * 16;
        for (int h = 0; h < 2; h++) {
            if (t == 0) {
                ms[w * 16 + g + 8 * h] = m[h];
                ls[w * 16 + g + 8 * h] = l[h];
            }
#pragma unroll
            for (int dn = 0; dn < DN; dn++)
                *(float2 *)(os + ((size_t)w * 16 + g + 8 * h) * D + 8 * dn + 2 * t) =
                    make_float2(o[dn][2 * h], o[dn][2 * h + 1]);
        }
        __syncthreads();
        for (int r = (int)threadIdx.x / 8; r < ROWS; r += FA_WARPS * WARP / 8) {
            const int qi = r / G, rg = r / 16, rr = r % 16;
            if (r >= qpb * G || qi >= nq) continue;
            float M = -INFINITY, f[FA_WARPS], L = 0.0f;
#pragma unroll
            for (int k = 0; k < WK; k++) M = fmaxf(M, ms[(rg * WK + k) * 16 + rr]);
#pragma unroll
            for (int k = 0; k < WK; k++) {
                const int ws = (rg * WK + k) * 16 + rr;
                f[k] = ls[ws] > 0.0f ? exp2f(ms[ws] - M) : 0.0f;
                L += ls[ws] * f[k];
            }
            const float inv = L > 0.0f ? 1.0f / L : 0.0f;
            float *dst = out + (row0 + qi) * qs + (size_t)(kvh * G + r % G) * D;
            for (int e = 4 * (threadIdx.x % 8); e < D; e += 32) {
                float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                for (int k = 0; k < WK; k++) {
                    const float4 v = *(const float4 *)(os + ((size_t)(rg * WK + k) * 16 + rr) * D + e);
                    acc.x += v.x * f[k], acc.y += v.y * f[k], acc.z += v.z * f[k], acc.w += v.w * f[k];
                }
                acc.x *= inv, acc.y *= inv, acc.z *= inv, acc.w *= inv;
                *(float4 *)(dst + e) = acc;
            }
        }
        return;
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = wr * 16 + g + 8 * h, qi = r / G;
        if (r >= qpb * G || qi >= nq) continue;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        float *dst = out + (row0 + qi) * qs + (size_t)(kvh * G + r % G) * D + 2 * t;
#pragma unroll
        for (int dn = 0; dn < DN; dn++) *(float2 *)(dst + 8 * dn) = make_float2(o[dn][2 * h] * inv, o[dn][2 * h + 1] * inv);
    }
}

#define K_FLASH(D, WK)                                                                                           \
    __global__ void __launch_bounds__(FA_WARPS * WARP) k_flash_##D##_##WK(                                       \
        float *out, const float *q, float *kc, float *vc, bk_attn_kv p, int tiles, int G, int qpb)              \
    {                                                                                                            \
        flash_body(D, WK, out, q, kc, vc, p, tiles, G, qpb, NULL);                                               \
    }
#define K_ROPE_FLASH(D)                                                                                          \
    __global__ void __launch_bounds__(FA_WARPS * WARP) k_rope_flash_##D(                                         \
        float *out, const float *q, float *kc, float *vc, bk_attn_kv p, int tiles, int G, int qpb, att_new an)  \
    {                                                                                                            \
        flash_body(D, 4, out, q, kc, vc, p, tiles, G, qpb, &an);                                                 \
    }
K_FLASH(64, 1)
K_FLASH(128, 1)
K_FLASH(256, 1)
K_FLASH(64, 4)
K_FLASH(128, 4)
K_FLASH(256, 4)
K_ROPE_FLASH(64)
K_ROPE_FLASH(128)
K_ROPE_FLASH(256)

/* The most query rows of one sequence of p: its hint where given, else N. */
static int kv_max_n(const bk_attn_kv *p) { return p->max_n > 0 && p->max_n <= p->N ? p->max_n : p->N; }

/* The flash kernel's warps a row group for p (1: prefill; 4: decode steps
 * of a batch, and prefills too short to fill the device in blocks of 64
 * rows), or 0 where it does not take p: float32 rounding asked for
 * (!p->fast), a head_dim other than 64, 128 or 256, kv groups of more
 * than 16 heads, or decode steps too few to fill the device (one block a
 * sequence and kv head: the one-row kernels split long rows instead). */
static int fa_warps(const bk_attn_kv *p)
{
    const int d = p->head_dim, G = p->n_heads / p->n_kv_heads;
    if (!p->fast || (d != 64 && d != 128 && d != 256) || G > 16) return 0;
    const int max_n = kv_max_n(p);
    int wk;
    if (max_n == 1) {
        wk = (int64_t)p->B * p->n_kv_heads >= sm_count() ? 4 : 0;
    } else {
        /* a prefill: blocks of 64 rows, or of 16 (a quarter of each tile a
         * warp) where those would leave multiprocessors idle (gemma3-1b's
         * one kv head of 4: 32 blocks of 64 rows for 512 tokens) */
        const int64_t tiles = (max_n + 16 * FA_WARPS / G - 1) / (16 * FA_WARPS / G);
        wk = (int64_t)p->B * tiles * p->n_kv_heads >= sm_count() ? 1 : 4;
    }
    /* devices with less shared memory a block than Hopper's 227 KB (sm_86:
     * 99 KB) take smaller blocks, or the other kernels */
    if (wk == 1 && fa_smem(d, 1) > smem_optin()) wk = 4;
    if (wk == 4 && fa_smem(d, 4) > smem_optin()) wk = 0;
    return wk;
}

/* an: a decode step that rotates as it attends (wk 4, N == B). */
static int flash_attention(cudaStream_t stream, float *out, const float *q, float *kc, float *vc,
                           const bk_attn_kv *p, int wk, const att_new *an)
{
    static int raised;
    typedef void (*flash_fn)(float *, const float *, float *, float *, bk_attn_kv, int, int, int);
    typedef void (*rope_flash_fn)(float *, const float *, float *, float *, bk_attn_kv, int, int, int, att_new);
    const flash_fn f[2][3] = {{k_flash_64_1, k_flash_128_1, k_flash_256_1}, {k_flash_64_4, k_flash_128_4, k_flash_256_4}};
    const rope_flash_fn fr[3] = {k_rope_flash_64, k_rope_flash_128, k_rope_flash_256};
    if (!raised) {
        for (int i = 0; i < 3; i++) {
            const void *ks[3] = {(const void *)f[0][i], (const void *)f[1][i], (const void *)fr[i]};
            for (int a = 0; a < 3; a++) {
                const size_t need = fa_smem(64 << i, a ? 4 : 1);
                if (need <= smem_optin() &&
                    cudaFuncSetAttribute(ks[a], cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need))
                    return (int)cudaGetLastError();
            }
        }
        raised = 1;
    }
    const int d = p->head_dim, G = p->n_heads / p->n_kv_heads, qpb = 16 * FA_WARPS / wk / G, di = d == 64 ? 0 : d == 128 ? 1 : 2;
    const int max_n = kv_max_n(p), tiles = (max_n + qpb - 1) / qpb;
    dim3 grid((unsigned)(p->B * tiles), (unsigned)p->n_kv_heads);
    if (an)
        PDL_LAUNCH(fr[di], grid, FA_WARPS * WARP, fa_smem(d, 4), stream, out, q, kc, vc, *p, tiles, G, qpb, *an);
    else
        PDL_LAUNCH(f[wk > 1][di], grid, FA_WARPS * WARP, fa_smem(d, wk), stream, out, q, kc, vc, *p, tiles, G, qpb);
    return (int)cudaGetLastError();
}

/* Which kernel takes p where the flash kernel does not (fa_warps 0): the
 * tiles where some sequence has several rows (a prefill) and they fill
 * the device (returns 0, *tiles set); else a block per row and head
 * (decode steps), with each row's keys split in
 * *parts where the rows and heads alone leave the device idle: a part
 * of at least ATT_SPLIT_MIN keys of the cache's capacity (or window), at
 * most ATT_SPLIT_MAX parts.  The parts depend on the shapes only, not on
 * the lengths, so that a recorded step stays right as the lengths grow. */
#define ATT_SPLIT_MIN 64
#define ATT_SPLIT_MAX 32

static int att_plan(const bk_attn_kv *p, int *tiles, int *parts)
{
    const int max_n = kv_max_n(p);
    *tiles = (max_n + AT_Q - 1) / AT_Q;
    *parts = 1;
    if (p->N > p->B && p->N >= 16 && p->head_dim % 4 == 0 &&
        (int64_t)p->B * *tiles * p->n_heads >= 2 * (int64_t)sm_count())
        return 0;
    const int64_t blocks = (int64_t)p->N * p->n_heads;
    int64_t want = (4 * (int64_t)sm_count() + blocks - 1) / blocks;
    const int span = p->window > 0 && p->window < p->cap ? p->window : p->cap;
    if (want > span / ATT_SPLIT_MIN) want = span / ATT_SPLIT_MIN;
    if (want > ATT_SPLIT_MAX) want = ATT_SPLIT_MAX;
    if (want > 1) *parts = (int)want;
    return 1;
}

extern "C" int cuk_attention_kv_flash(const bk_attn_kv *p) { return p->N > 0 ? fa_warps(p) : 0; }

/* A batch of p->batch sequences side by side (bk_attn, training) as the
 * flash kernels' cache view: sequence b's queries from row b T, its keys
 * from cache row b S (slot b of a cache of S rows a slot) */
__global__ void k_attn_batch_rows(int32_t *q_start, int32_t *kv_len, int32_t *slot, int B, int T, int S)
{
    PDL_ENTRY(); /* the scratch they go to may be the kernel before's */
    for (int b = threadIdx.x; b <= B; b += blockDim.x) {
        q_start[b] = b * T;
        if (b < B) kv_len[b] = S, slot[b] = b;
    }
}

/* rows: NULL (the shape alone), or 3 B + 1 ints for q_start, kv_len, slot */
static bk_attn_kv attn_as_kv(const bk_attn *p, const int32_t *rows)
{
    const int B = p->batch > 1 ? p->batch : 1;
    bk_attn_kv a;
    memset(&a, 0, sizeof a);
    a.B = B, a.N = B * p->T, a.cap = p->S, a.max_n = p->T;
    if (rows) a.q_start = rows, a.kv_len = rows + B + 1, a.slot = rows + 2 * B + 1;
    a.n_heads = p->n_heads, a.n_kv_heads = p->n_kv_heads, a.head_dim = p->head_dim;
    a.scale = p->scale, a.softcap = p->softcap, a.window = p->window, a.fast = p->fast;
    return a;
}

extern "C" size_t cuk_attention_flash_scratch(const bk_attn *p)
{
    const bk_attn_kv a = attn_as_kv(p, NULL);
    return p->T > 0 && fa_warps(&a) ? (size_t)(3 * a.B + 1) * sizeof(int32_t) : 0;
}

extern "C" int cuk_attention_flash(void *stream, float *out, const float *q, const float *k, const float *v,
                                   const bk_attn *p, void *scratch)
{
    const bk_attn_kv a = attn_as_kv(p, (const int32_t *)scratch);
    const int wk = p->T > 0 && scratch ? fa_warps(&a) : 0;
    if (!wk) return (int)cudaErrorNotSupported;
    int32_t *rows = (int32_t *)scratch;
    PDL_LAUNCH(k_attn_batch_rows, 1, 256, 0, (cudaStream_t)stream, rows, rows + a.B + 1, rows + 2 * a.B + 1, a.B, p->T,
               p->S);
    return flash_attention((cudaStream_t)stream, out, q, (float *)k, (float *)v, &a, wk, NULL);
}

extern "C" size_t cuk_attention_kv_scratch(const bk_attn_kv *p)
{
    int tiles, parts;
    if (p->N <= 0 || fa_warps(p) || !att_plan(p, &tiles, &parts) || parts == 1) return 0;
    return (size_t)p->N * p->n_heads * parts * ((size_t)p->head_dim + 2) * sizeof(float);
}

static int attention_kv(cudaStream_t stream, float *out, const float *q, float *kc, float *vc, const bk_attn_kv *p,
                        void *scratch, int *counts, size_t n_counts, const att_new *an);

extern "C" int cuk_attention_kv(void *stream, float *out, const float *q, const float *kc, const float *vc,
                                const bk_attn_kv *p, void *scratch, int *counts, size_t n_counts)
{
    return attention_kv((cudaStream_t)stream, out, q, (float *)kc, (float *)vc, p, scratch, counts, n_counts, NULL);
}

extern "C" int cuk_rope_attention_kv(void *stream, float *out, const float *q, const float *k, const float *v,
                                     float *kc, float *vc, const bk_weight *qn, const bk_weight *kn, float eps,
                                     int plus_one, const int32_t *pos, const float *inv_freq, float attn_factor,
                                     const bk_attn_kv *p, void *scratch, int *counts, size_t n_counts)
{
    if (p->N <= 0) return 0;
    if (p->N != p->B || p->head_dim % 2 || p->head_dim > WARP * ATT_MAXE || (!qn) != (!kn))
        return (int)cudaErrorNotSupported;
    att_new an;
    memset(&an, 0, sizeof an);
    an.q = q, an.k = k, an.v = v;
    if (qn) an.qn = *qn, an.kn = *kn, an.has_norm = 1;
    an.plus_one = plus_one, an.eps = eps, an.f = attn_factor, an.pos = pos, an.inv_freq = inv_freq;
    return attention_kv((cudaStream_t)stream, out, q, kc, vc, p, scratch, counts, n_counts, &an);
}

static int attention_kv(cudaStream_t stream, float *out, const float *q, float *kc, float *vc, const bk_attn_kv *p,
                        void *scratch, int *counts, size_t n_counts, const att_new *an)
{
    if (p->N <= 0) return 0;
    if (p->head_dim > WARP * ATT_MAXE) return (int)cudaErrorInvalidValue;
    const int wk = fa_warps(p);
    if (wk) return an && wk == 1 ? (int)cudaErrorNotSupported : flash_attention(stream, out, q, kc, vc, p, wk, an);
    int tiles, parts;
    if (!att_plan(p, &tiles, &parts)) {
        if (an) return (int)cudaErrorNotSupported; /* (N == B: never the tiles) */
        static int raised;
        size_t smem = at_smem(p->head_dim);
        if (!raised) {
            if (cudaFuncSetAttribute((const void *)k_attn_tile, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)at_smem(WARP * ATT_MAXE)))
                return (int)cudaGetLastError();
            raised = 1;
        }
        dim3 tg((unsigned)(p->B * tiles), (unsigned)p->n_heads);
        PDL_LAUNCH(k_attn_tile, tg, ATT_WARPS * WARP, smem, (cudaStream_t)stream, out, q, kc, vc, *p, tiles);
        return (int)cudaGetLastError();
    }
    if (parts > 1 && !scratch) return (int)cudaErrorInvalidValue;
    float *part_o = parts > 1 ? (float *)scratch : NULL;
    float *part_ml = parts > 1 ? part_o + (size_t)p->N * p->n_heads * parts * p->head_dim : NULL;
    dim3 grid((unsigned)p->N, (unsigned)p->n_heads, (unsigned)parts);
    if (parts == 1 || (size_t)p->N * p->n_heads > n_counts) counts = NULL;
    const int ev = att_ev(p->head_dim);
    if (an) {
        void (*const f[])(float *, float *, float *, const float *, float *, float *, bk_attn_kv, int *, att_new) = {
            k_rope_attention_kv_0, NULL, k_rope_attention_kv_2, NULL, k_rope_attention_kv_4,
            NULL,                  NULL, NULL,                  k_rope_attention_kv_8};
        PDL_LAUNCH(f[ev], grid, ATT_WARPS * WARP, 0, stream, out, part_o, part_ml, q, kc, vc, *p, counts, *an);
    } else {
        void (*const f[])(float *, float *, float *, const float *, const float *, const float *, bk_attn_kv, int *) = {
            k_attention_kv_0, NULL, k_attention_kv_2, NULL, k_attention_kv_4, NULL, NULL, NULL, k_attention_kv_8};
        PDL_LAUNCH(f[ev], grid, ATT_WARPS * WARP, 0, stream, out, part_o, part_ml, q, kc, vc, *p, counts);
    }
    if (parts > 1 && !counts) {
        dim3 cg((unsigned)p->N, (unsigned)p->n_heads);
        PDL_LAUNCH(k_attn_combine, cg, 128, 0, (cudaStream_t)stream, out, (const float *)part_o,
                   (const float *)part_ml, p->n_heads, p->head_dim, parts);
    }
    return (int)cudaGetLastError();
}

/* ---- element-wise ---- */

__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx, size_t width)
{
    PDL_ENTRY();
    const float *s = src + (size_t)idx[blockIdx.x] * width;
    float *d = dst + (size_t)blockIdx.x * width;
    for (size_t i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
}

extern "C" int cuk_gather_rows(void *stream, float *dst, const float *src, const int32_t *idx, int n, size_t width)
{
    if (n <= 0) return 0;
    PDL_LAUNCH(k_gather_rows, n, 256, 0, (cudaStream_t)stream, dst, src, idx, width);
    return (int)cudaGetLastError();
}

__global__ void k_glu(float *out, const float *gate, const float *up, size_t n, int gelu)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = glu1(gate[i], up[i], gelu);
}

extern "C" int cuk_glu(void *stream, float *out, const float *gate, const float *up, size_t n, bk_act act)
{
    if (!n) return 0;
    PDL_LAUNCH(k_glu, blocks_for(n, 256), 256, 0, (cudaStream_t)stream, out, gate, up, n, act == BK_ACT_GELU_TANH);
    return (int)cudaGetLastError();
}

__global__ void k_add(float *y, const float *a, size_t n)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += a[i];
}

extern "C" int cuk_add(void *stream, float *y, const float *a, size_t n)
{
    if (!n) return 0;
    PDL_LAUNCH(k_add, blocks_for(n, 256), 256, 0, (cudaStream_t)stream, y, a, n);
    return (int)cudaGetLastError();
}

__global__ void k_softcap(float *x, size_t n, float cap)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] / cap);
}

extern "C" int cuk_softcap(void *stream, float *x, size_t n, float cap)
{
    if (!n) return 0;
    PDL_LAUNCH(k_softcap, blocks_for(n, 256), 256, 0, (cudaStream_t)stream, x, n, cap);
    return (int)cudaGetLastError();
}
