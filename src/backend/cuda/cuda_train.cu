/* cuda_train.cu - the training ops of the cuda backend (backend.h,
 * "Training"): the backward of the norms, activations, softcap and
 * attention, the cross-entropy, AdamW and small vector ops.  The matrix
 * products' backward goes through cuBLAS (cuda.c).  Every kernel is
 * launched with PDL_LAUNCH and begins with PDL_ENTRY (cuda_pdl.cuh): a
 * step launches some 3,400 kernels, and each launch's latency then
 * overlaps the kernel before. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "backend/cuda/cuda_bf16.cuh"
#include "backend/cuda/cuda_mma.cuh"
#include "backend/cuda/cuda_pdl.cuh"
#include "backend/cuda/cuda_train.h"

#define TW 32

static unsigned grid_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return b > 65535 * 8 ? 65535 * 8 : (unsigned)(b ? b : 1);
}

__device__ __forceinline__ float wsum(float v)
{
#pragma unroll
    for (int o = TW / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float wmax(float v)
{
#pragma unroll
    for (int o = TW / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The sum (or max) over the block, in every thread; part: 32 floats. */
__device__ float bsum(float v, float *part)
{
    v = wsum(v);
    __syncthreads();
    if (threadIdx.x % TW == 0) part[threadIdx.x / TW] = v;
    __syncthreads();
    float t = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / TW); w++) t += part[w];
    return t;
}

__device__ float bmax(float v, float *part)
{
    v = wmax(v);
    __syncthreads();
    if (threadIdx.x % TW == 0) part[threadIdx.x / TW] = v;
    __syncthreads();
    float t = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x / TW); w++) t = fmaxf(t, part[w]);
    return t;
}

/* Element i of a float vector in dtype dt (F32, F16, BF16). */
__device__ __forceinline__ float vec_at(const void *p, int dt, size_t i)
{
    if (dt == DT_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (dt == DT_BF16) return __uint_as_float((uint32_t)h << 16);
    return __half2float(__ushort_as_half(h));
}

/* ---- element-wise ---- */

__global__ void k_axpy(float *y, const float *x, float a, size_t n)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}

__global__ void k_dropout(float *y, const float *x, size_t n, float p, uint64_t seed)
{
    PDL_ENTRY();
    const float k = 1.0f / (1.0f - p);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bk_dropout_keep(seed, i, p) ? x[i] * k : 0.0f;
}

__global__ void k_scale(float *x, float a, size_t n)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= a;
}

__global__ void k_sumsq(const float *x, size_t n, double *out)
{
    PDL_ENTRY();
    __shared__ float part[32];
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += x[i] * x[i];
    s = bsum(s, part);
    if (threadIdx.x == 0) atomicAdd(out, (double)s);
}

__global__ void k_softcap_back(float *dx, const float *dy, const float *y, size_t n, float cap)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float t = y[i] / cap;
        dx[i] = dy[i] * (1.0f - t * t);
    }
}

/* dg, du of out = act(x) u given dout gi (one element) */
__device__ __forceinline__ void glu_grad(float x, float ui, float gi, int gelu, float *dg, float *du)
{
    const float c = 0.7978845608028654f;
    float f, df;
    if (!gelu) {
        float s = 1.0f / (1.0f + expf(-x));
        f = x * s;
        df = s * (1.0f + x * (1.0f - s));
    } else {
        float th = tanhf(c * (x + 0.044715f * x * x * x));
        f = 0.5f * x * (1.0f + th);
        df = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * c * (1.0f + 3.0f * 0.044715f * x * x);
    }
    *dg = gi * ui * df;
    *du = gi * f;
}

__global__ void k_glu_back(float *dg, float *du, const float *go, const float *g, const float *u, size_t n, int gelu)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        glu_grad(g[i], u[i], go[i], gelu, &dg[i], &du[i]);
}

/* The same, dg and du rounded to bf16 (the products' operands); 8 values
 * a thread (16-byte loads and stores) where every pointer is 16-byte
 * aligned, then the rest one at a time. */
__global__ void k_glu_back_bf16(uint16_t *dg, uint16_t *du, const float *go, const float *g, const float *u, size_t n,
                                int gelu)
{
    PDL_ENTRY();
    const size_t step = (size_t)gridDim.x * blockDim.x, first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t n8 = (((uintptr_t)dg | (uintptr_t)du | (uintptr_t)go | (uintptr_t)g | (uintptr_t)u) & 15u) ? 0 : n / 8;
    for (size_t i = first; i < n8; i += step) {
        float x[8], y[8], z[8], a[8], b[8];
        *(float4 *)x = ((const float4 *)g)[2 * i];
        *(float4 *)(x + 4) = ((const float4 *)g)[2 * i + 1];
        *(float4 *)y = ((const float4 *)u)[2 * i];
        *(float4 *)(y + 4) = ((const float4 *)u)[2 * i + 1];
        *(float4 *)z = ((const float4 *)go)[2 * i];
        *(float4 *)(z + 4) = ((const float4 *)go)[2 * i + 1];
#pragma unroll
        for (int k = 0; k < 8; k++) glu_grad(x[k], y[k], z[k], gelu, &a[k], &b[k]);
        uint4 oa, ob;
        oa.x = f32_bf16(a[0]) | (uint32_t)f32_bf16(a[1]) << 16;
        oa.y = f32_bf16(a[2]) | (uint32_t)f32_bf16(a[3]) << 16;
        oa.z = f32_bf16(a[4]) | (uint32_t)f32_bf16(a[5]) << 16;
        oa.w = f32_bf16(a[6]) | (uint32_t)f32_bf16(a[7]) << 16;
        ob.x = f32_bf16(b[0]) | (uint32_t)f32_bf16(b[1]) << 16;
        ob.y = f32_bf16(b[2]) | (uint32_t)f32_bf16(b[3]) << 16;
        ob.z = f32_bf16(b[4]) | (uint32_t)f32_bf16(b[5]) << 16;
        ob.w = f32_bf16(b[6]) | (uint32_t)f32_bf16(b[7]) << 16;
        ((uint4 *)dg)[i] = oa;
        ((uint4 *)du)[i] = ob;
    }
    for (size_t i = n8 * 8 + first; i < n; i += step) {
        float a, b;
        glu_grad(g[i], u[i], go[i], gelu, &a, &b);
        dg[i] = f32_bf16(a);
        du[i] = f32_bf16(b);
    }
}

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr_bc1, float decay, float b1,
                        float b2, float bc2, float eps)
{
    PDL_ENTRY();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i], pi = p[i] * decay;
        float mi = m[i] + (1.0f - b1) * (gi - m[i]);
        float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - lr_bc1 * mi / (sqrtf(vi) / bc2 + eps);
    }
}

/* ---- RMSNorm backward: one block a row ----
 * dx = r (dy g) - x r^3 / n sum(dy g x), r = (mean(x^2) + eps)^(-1/2). */
__global__ void k_rmsnorm_back(float *dx, const float *dy, const float *x, const void *w, int wdt, int dim, float eps,
                               int plus_one, int acc)
{
    PDL_ENTRY();
    __shared__ float part[32];
    const float *xr = x + (size_t)blockIdx.x * dim, *gr = dy + (size_t)blockIdx.x * dim;
    float *o = dx + (size_t)blockIdx.x * dim;
    const float one = plus_one ? 1.0f : 0.0f;
    float ss = 0.0f, s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float xi = xr[i];
        ss += xi * xi;
        s += gr[i] * (vec_at(w, wdt, (size_t)i) + one) * xi;
    }
    ss = bsum(ss, part);
    s = bsum(s, part);
    float r = rsqrtf(ss / (float)dim + eps), k = s * r * r * r / (float)dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = (acc ? o[i] : 0.0f) + (r * gr[i] * (vec_at(w, wdt, (size_t)i) + one) - k * xr[i]);
}

/* The same for rows of dim % 4 == 0 floats (16-byte aligned) of at most
 * RB_MAXV float4 a thread: read once in float4s and held (the kernel above
 * read x and dy twice at 1024 threads a row). */
#define RB_MAXV 4
__global__ void k_rmsnorm_back4(float4 *dx, const float4 *dy, const float4 *x, const void *w, int wdt, int dim4,
                                float eps, int plus_one, int acc)
{
    PDL_ENTRY();
    __shared__ float part[32];
    const size_t row = (size_t)blockIdx.x * dim4;
    const float one = plus_one ? 1.0f : 0.0f;
    float4 xv[RB_MAXV], gv[RB_MAXV];
    float ss = 0.0f, s = 0.0f;
#pragma unroll
    for (int k = 0; k < RB_MAXV; k++) {
        const int i = threadIdx.x + k * (int)blockDim.x;
        xv[k] = gv[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i >= dim4) continue;
        xv[k] = x[row + i];
        const float4 g = dy[row + i];
        const size_t e = 4 * (size_t)i;
        gv[k] = make_float4(g.x * (vec_at(w, wdt, e) + one), g.y * (vec_at(w, wdt, e + 1) + one),
                            g.z * (vec_at(w, wdt, e + 2) + one), g.w * (vec_at(w, wdt, e + 3) + one));
        ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
        s += gv[k].x * xv[k].x + gv[k].y * xv[k].y + gv[k].z * xv[k].z + gv[k].w * xv[k].w;
    }
    ss = bsum(ss, part);
    s = bsum(s, part);
    const float r = rsqrtf(ss / (float)(4 * dim4) + eps), kk = s * r * r * r / (float)(4 * dim4);
#pragma unroll
    for (int k = 0; k < RB_MAXV; k++) {
        const int i = threadIdx.x + k * (int)blockDim.x;
        if (i >= dim4) continue;
        float4 o = make_float4(r * gv[k].x - kk * xv[k].x, r * gv[k].y - kk * xv[k].y, r * gv[k].z - kk * xv[k].z,
                               r * gv[k].w - kk * xv[k].w);
        if (acc) {
            const float4 p = dx[row + i];
            o = make_float4(p.x + o.x, p.y + o.y, p.z + o.z, p.w + o.w);
        }
        dx[row + i] = o;
    }
}

/* ---- cross-entropy: one block a row ---- */
__global__ void k_cross_entropy(float *dx, float *nll, const float *x, const int32_t *target, size_t V, float scale)
{
    PDL_ENTRY();
    __shared__ float part[32];
    const size_t r = blockIdx.x;
    const float *xr = x + r * V;
    float *o = dx + r * V;
    const int32_t tg = target[r];
    if (tg < 0) {
        for (size_t i = threadIdx.x; i < V; i += blockDim.x) o[i] = 0.0f;
        if (threadIdx.x == 0) nll[r] = 0.0f;
        return;
    }
    float m = -INFINITY;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = bmax(m, part);
    float s = 0.0f;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) s += expf(xr[i] - m);
    s = bsum(s, part);
    const float lse = m + logf(s), xt = xr[tg];
    __syncthreads();
    for (size_t i = threadIdx.x; i < V; i += blockDim.x)
        o[i] = scale * (expf(xr[i] - lse) - (i == (size_t)tg ? 1.0f : 0.0f));
    if (threadIdx.x == 0) nll[r] = lse - xt;
}

/* ---- products with a rank-r side (LoRA's A and B, r <= CUT_LR_MAX) ----
 * Float32 throughout, each sum in a fixed order (the same bits every run).
 * cuBLAS's SGEMM took 11-35 us for these memory-bound shapes on an H200
 * (a 2048 x 4096 side read in 7 us): few output values, little parallel
 * work unless split over the long side.  W(k, c) = w[k ldk + c ldc]: the
 * rank-r weight read either way round, four k by four c at a time (wm 1:
 * rows of W in float4s, A's layout; 2: columns, B's layout, r % 4 == 0;
 * 0: one value at a time).
 *   k_lr_thin:   out[n][k] = alpha sum_c x[n][c] W(k, c) (+ beta out), k < r
 *                (partial sums a column block, k_lr_thin_sum adds them)
 *   k_lr_expand: out[n][c] = alpha sum_k t[n][k] W(k, c) (+ beta out)
 *   k_lr_reduce: partial sums over row chunks of sum_n z[n][m] u[n][k],
 *                k_lr_reduce_sum adds alpha times their sum to dw.
 * thin and expand keep W's values in registers across many rows: read
 * again for every few rows, the small side's reads from L2 outweighed the
 * large side's from memory (ncu: 20-30 us a call where the large side
 * takes 7-13). */
#define LR_RCHUNK 128 /* k_lr_reduce's most rows a chunk */
/* Blocks the three kernels aim for, four an SM of an H100 (thin and
 * expand: half that), by taking fewer rows a block where the long side is
 * short: gemma3-1b's v_proj (256 outputs) and llama3.1-8b's (1024) left
 * most of the device idle with blocks of 16 rows (thin, expand) or 16
 * row chunks (reduce). */
#define LR_BLOCKS 528

/* wb[kk][j] = W(k0 + kk, c + j), 0 for k0 + kk >= r */
__device__ __forceinline__ void lr_w4(float (&wb)[4][4], const float *w, int k0, int c, int r, long ldk, long ldc,
                                      int wm)
{
    if (wm == 1) {
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const float4 q =
                k0 + kk < r ? *(const float4 *)(w + (k0 + kk) * ldk + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            wb[kk][0] = q.x, wb[kk][1] = q.y, wb[kk][2] = q.z, wb[kk][3] = q.w;
        }
    } else if (wm == 2) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float4 q = *(const float4 *)(w + (c + j) * ldc + k0);
            wb[0][j] = q.x, wb[1][j] = q.y, wb[2][j] = q.z, wb[3][j] = q.w;
        }
    } else {
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
#pragma unroll
            for (int j = 0; j < 4; j++) wb[kk][j] = k0 + kk < r ? w[(k0 + kk) * ldk + (c + j) * ldc] : 0.0f;
    }
}

/* The eight sums s[0..7] over the warp's lanes, into lane l's s[0] for k
 * = 4 (l >> 4 & 1) + 2 (l >> 3 & 1) + (l >> 2 & 1): halves of the values
 * traded at each step (4 + 2 + 1 shuffles), then two plain ones. */
__device__ __forceinline__ float lr_wsum8(float (&s)[8])
{
    const int lane = threadIdx.x % TW;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int hi = lane >> 4 & 1;
        const float keep = hi ? s[i + 4] : s[i], give = hi ? s[i] : s[i + 4];
        s[i] = keep + __shfl_xor_sync(0xffffffffu, give, 16);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int hi = lane >> 3 & 1;
        const float keep = hi ? s[i + 2] : s[i], give = hi ? s[i] : s[i + 2];
        s[i] = keep + __shfl_xor_sync(0xffffffffu, give, 8);
    }
    {
        const int hi = lane >> 2 & 1;
        const float keep = hi ? s[1] : s[0], give = hi ? s[0] : s[1];
        s[0] = keep + __shfl_xor_sync(0xffffffffu, give, 4);
    }
    s[0] += __shfl_xor_sync(0xffffffffu, s[0], 2);
    s[0] += __shfl_xor_sync(0xffffffffu, s[0], 1);
    return s[0];
}

/* k_lr_thin: a block nr <= LR_TROWS rows by 1024 columns (a float4 a thread), W's
 * four columns of eight k at a time held in registers across the rows;
 * each row's eight sums over a warp (lr_wsum8), then over the block's
 * eight warps in order, into part[column block][n][k]; k_lr_thin_sum
 * adds the column blocks' in order. */
#define LR_TROWS 16
__global__ void __launch_bounds__(256) k_lr_thin(float *part, const float *x, const float *w, int N, int C, int r,
                                                 long ldk, long ldc, int wm, int nr)
{
    PDL_ENTRY();
    __shared__ float ps[8][LR_TROWS][8];
    const int c = (blockIdx.x * 256 + (int)threadIdx.x) * 4, n0 = blockIdx.y * nr, lane = threadIdx.x % TW,
              wp = threadIdx.x / TW, k_of = 4 * (lane >> 4 & 1) + 2 * (lane >> 3 & 1) + (lane >> 2 & 1);
    for (int k0 = 0; k0 < r; k0 += 8) {
        float wb[8][4];
        if (c < C) {
            float q[4][4];
            lr_w4(q, w, k0, c, r, ldk, ldc, wm);
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int j = 0; j < 4; j++) wb[kk][j] = q[kk][j];
            if (k0 + 4 < r) {
                lr_w4(q, w, k0 + 4, c, r, ldk, ldc, wm);
            } else {
#pragma unroll
                for (int kk = 0; kk < 4; kk++) q[kk][0] = q[kk][1] = q[kk][2] = q[kk][3] = 0.0f;
            }
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int j = 0; j < 4; j++) wb[kk + 4][j] = q[kk][j];
        } else {
#pragma unroll
            for (int kk = 0; kk < 8; kk++) wb[kk][0] = wb[kk][1] = wb[kk][2] = wb[kk][3] = 0.0f;
        }
#pragma unroll 4
        for (int i = 0; i < nr; i++) {
            const int n = n0 + i;
            const float4 xv = n < N && c < C ? *(const float4 *)(x + (size_t)n * C + c)
                                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float sv[8];
#pragma unroll
            for (int kk = 0; kk < 8; kk++) {
                float a = xv.x * wb[kk][0];
                a = fmaf(xv.y, wb[kk][1], a);
                a = fmaf(xv.z, wb[kk][2], a);
                sv[kk] = fmaf(xv.w, wb[kk][3], a);
            }
            const float v = lr_wsum8(sv);
            if ((lane & 3) == 0) ps[wp][i][k_of] = v;
        }
        __syncthreads();
        if ((int)threadIdx.x < nr * 8) {
            const int i = threadIdx.x / 8, kk = threadIdx.x % 8, n = n0 + i;
            if (n < N && k0 + kk < r) {
                float v = 0.0f;
#pragma unroll
                for (int q = 0; q < 8; q++) v += ps[q][i][kk];
                part[((size_t)blockIdx.x * N + n) * r + k0 + kk] = v;
            }
        }
        __syncthreads();
    }
}

/* out[n][k] = alpha sum over the column blocks of part (+ beta out) */
__global__ void k_lr_thin_sum(float *out, const float *part, int nr, int blocks, float alpha, float beta)
{
    PDL_ENTRY();
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < nr; e += gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int b = 0; b < blocks; b++) v += part[(size_t)b * nr + e];
        out[e] = beta != 0.0f ? fmaf(alpha, v, beta * out[e]) : alpha * v;
    }
}

/* k_lr_expand: a thread four columns (W's four columns of every k in
 * registers) over nr <= LR_XROWS rows, y read, added to and written a
 * row at a time. */
#define LR_XROWS 16
template <int RK>
__global__ void __launch_bounds__(256) k_lr_expand(float *out, const float *t, const float *w, int N, int C, int r,
                                                   long ldk, long ldc, int wm, float alpha, float beta, int nr)
{
    PDL_ENTRY();
    const int c = (blockIdx.x * 256 + (int)threadIdx.x) * 4, n0 = blockIdx.y * nr;
    if (c >= C) return;
    float wb[RK][4];
#pragma unroll
    for (int k0 = 0; k0 < RK; k0 += 4) {
        float q[4][4];
        if (k0 < r) {
            lr_w4(q, w, k0, c, r, ldk, ldc, wm);
        } else {
#pragma unroll
            for (int kk = 0; kk < 4; kk++) q[kk][0] = q[kk][1] = q[kk][2] = q[kk][3] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
#pragma unroll
            for (int j = 0; j < 4; j++) wb[k0 + kk][j] = q[kk][j];
    }
#pragma unroll 4
    for (int i = 0; i < nr; i++) {
        const int n = n0 + i;
        if (n >= N) break;
        const float *tr = t + (size_t)n * r;
        float4 *o = (float4 *)(out + (size_t)n * C + c);
        const float4 p = beta != 0.0f ? *o : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int k = 0; k < RK; k++) {
            const float tk = k < r ? tr[k] : 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) acc[j] = fmaf(tk, wb[k][j], acc[j]);
        }
        *o = beta != 0.0f ? make_float4(fmaf(alpha, acc[0], beta * p.x), fmaf(alpha, acc[1], beta * p.y),
                                        fmaf(alpha, acc[2], beta * p.z), fmaf(alpha, acc[3], beta * p.w))
                          : make_float4(alpha * acc[0], alpha * acc[1], alpha * acc[2], alpha * acc[3]);
    }
}

/* part[y][k][m] = sum over rows n of chunk y (rows y nc .. y nc + nc - 1)
 * of z[n][m] u[n][k]: a thread a column m, the chunk's u in shared memory. */
template <int RK>
__global__ void __launch_bounds__(256) k_lr_reduce(float *part, const float *z, const float *u, int N, int M, int r,
                                                   int nc)
{
    PDL_ENTRY();
    __shared__ float us[LR_RCHUNK * CUT_LR_MAX];
    const int m = blockIdx.x * 256 + (int)threadIdx.x, n0 = blockIdx.y * nc;
    const int rows = N - n0 < nc ? N - n0 : nc;
    for (int e = threadIdx.x; e < rows * RK; e += 256) {
        const int n = e / RK, k = e % RK;
        us[e] = k < r ? u[(size_t)(n0 + n) * r + k] : 0.0f;
    }
    __syncthreads();
    if (m >= M) return;
    float acc[RK];
#pragma unroll
    for (int k = 0; k < RK; k++) acc[k] = 0.0f;
#pragma unroll 8
    for (int n = 0; n < rows; n++) {
        const float zv = z[(size_t)(n0 + n) * M + m];
        const float *un = us + n * RK;
#pragma unroll
        for (int k = 0; k < RK; k++) acc[k] = fmaf(zv, un[k], acc[k]);
    }
    float *p = part + (size_t)blockIdx.y * r * M + m;
#pragma unroll
    for (int k = 0; k < RK; k++)
        if (k < r) p[(size_t)k * M] = acc[k];
}

__global__ void k_lr_reduce_sum(float *dw, const float *part, int M, int r, int parts, long gsm, long gsk, float alpha)
{
    PDL_ENTRY();
    const size_t n = (size_t)M * r;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const int m = (int)(e % (size_t)M), k = (int)(e / (size_t)M);
        float v = 0.0f;
#pragma unroll 8
        for (int y = 0; y < parts; y++) v += part[(size_t)y * n + e];
        float *o = dw + m * gsm + k * gsk;
        *o = fmaf(alpha, v, *o);
    }
}

/* ---- attention backward ----
 * Two kernels, as FlashAttention-2 splits it, on CUDA cores in float32:
 *
 * k_attb_q: a block per (tile of AQ queries, head), the tile's q and dout
 *   rows in shared memory, the keys walked in tiles of AK (= 32) held in
 *   shared memory; warp w owns queries w, w + 4, ..., lane l the key j0 + l
 *   of a tile for the scores and elements l, l + 32, ... of dq.  Three
 *   passes: the softmax's maximum M and sum L; D = sum_j p_j (dout . v_j);
 *   then ds_j = p_j (dout . v_j - D) (times 1 - tanh^2 through a softcap,
 *   times the scale) and dq = sum_j ds_j k_j.  M, L and D go to stats.
 * k_attb_kv: a block per (tile of BK keys, head, chunk of QC queries);
 *   the chunk's q and dout rows and stats in shared memory; warp w owns
 *   keys w, w + 4, ... of the tile, its lanes elements l, l + 32, ... of
 *   their k, v, dk and dv; every query of the chunk that sees a key of the
 *   tile in turn: p and ds again from the stats, dv += p dout, dk += ds q;
 *   the sums added to dk and dv (zeroed first) atomically, once a block. */
#define AQ 8
#define AK 32
#define AW 4
#define AMAXE 8 /* head_dim <= 256 */
#define BK 16
#define BPW (BK / AW) /* keys a warp */
#define QC 32         /* queries a k_attb_kv block */

__device__ __forceinline__ float capped(float s, float softcap, float *th)
{
    *th = 0.0f;
    if (softcap > 0.0f) {
        *th = tanhf(s / softcap);
        return softcap * *th;
    }
    return s;
}

/* capped(s) - m with one rounding where there is a softcap (softcap tanh
 * - m as one fused multiply-add): the softmax backward's two kernels
 * spell out every rounding, so that they give the same bits. */
__device__ __forceinline__ float capped_minus(float s, float softcap, float *th, float m)
{
    if (softcap > 0.0f) {
        *th = tanhf(s / softcap);
        return __fmaf_rn(softcap, *th, -m);
    }
    *th = 0.0f;
    return __fsub_rn(s, m);
}

__global__ void __launch_bounds__(AW * TW) k_attb_q(float *dq, float *stats, const float *dout, const float *q,
                                                    const float *k, const float *v, bk_attn p)
{
    PDL_ENTRY();
    extern __shared__ float sh[];
    const int d = p.head_dim, dp4 = d + 4, d4 = d / 4, lane = threadIdx.x % TW, wi = threadIdx.x / TW;
    const int t0 = blockIdx.x * AQ, h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads);
    {
        /* sequence blockIdx.z of the batch */
        const size_t b = blockIdx.z, qn = (size_t)p.T * p.n_heads * d, kn = (size_t)p.S * p.n_kv_heads * d;
        dq += b * qn;
        dout += b * qn;
        q += b * qn;
        k += b * kn;
        v += b * kn;
        stats += b * (size_t)p.T * p.n_heads * 3;
    }
    const int nq = p.T - t0 < AQ ? p.T - t0 : AQ;
    const size_t qs = (size_t)p.n_heads * d, ks = (size_t)p.n_kv_heads * d;
    float *sq = sh, *sg = sq + AQ * dp4, *sk = sg + AQ * dp4, *sv = sk + AK * dp4;
    for (int a = wi; a < nq; a += AW) {
        const float4 *q4 = (const float4 *)(q + (size_t)(t0 + a) * qs + (size_t)h * d),
                     *g4 = (const float4 *)(dout + (size_t)(t0 + a) * qs + (size_t)h * d);
        for (int e = lane; e < d4; e += TW) {
            ((float4 *)(sq + a * dp4))[e] = q4[e];
            ((float4 *)(sg + a * dp4))[e] = g4[e];
        }
    }
    const int P0 = p.S - p.T + t0, P1 = P0 + nq - 1;
    int lo_all = 0;
    if (p.window > 0 && P0 - p.window + 1 > 0) lo_all = P0 - p.window + 1;
    float M[AQ / AW], L[AQ / AW], D[AQ / AW], acc[AQ / AW][AMAXE];
#pragma unroll
    for (int b = 0; b < AQ / AW; b++) {
        M[b] = -INFINITY;
        L[b] = 0.0f;
        D[b] = 0.0f;
#pragma unroll
        for (int i = 0; i < AMAXE; i++) acc[b][i] = 0.0f;
    }
    for (int pass = 0; pass < 3; pass++) {
        for (int j0 = lo_all; j0 <= P1; j0 += AK) {
            const int nk = P1 - j0 + 1 < AK ? P1 - j0 + 1 : AK;
            __syncthreads();
            for (int kj = wi; kj < nk; kj += AW) {
                const float4 *k4 = (const float4 *)(k + (size_t)(j0 + kj) * ks + (size_t)kvh * d),
                             *v4 = (const float4 *)(v + (size_t)(j0 + kj) * ks + (size_t)kvh * d);
                for (int e = lane; e < d4; e += TW) {
                    ((float4 *)(sk + kj * dp4))[e] = k4[e];
                    if (pass) ((float4 *)(sv + kj * dp4))[e] = v4[e];
                }
            }
            __syncthreads();
#pragma unroll
            for (int b = 0; b < AQ / AW; b++) {
                const int a = wi + AW * b;
                if (a >= nq) continue;
                const int P = P0 + a, j = j0 + lane;
                int lo = 0;
                if (p.window > 0 && P - p.window + 1 > 0) lo = P - p.window + 1;
                const int ok = lane < nk && j >= lo && j <= P;
                float s = -INFINITY, th = 0.0f, dpv = 0.0f;
                if (ok) {
                    const float4 *qr = (const float4 *)(sq + a * dp4), *kr = (const float4 *)(sk + lane * dp4);
                    float4 c = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    for (int e = 0; e < d4; e++) {
                        float4 x = qr[e], y = kr[e];
                        c.x += x.x * y.x;
                        c.y += x.y * y.y;
                        c.z += x.z * y.z;
                        c.w += x.w * y.w;
                    }
                    s = capped(((c.x + c.y) + (c.z + c.w)) * p.scale, p.softcap, &th);
                    if (pass) {
                        const float4 *gr = (const float4 *)(sg + a * dp4), *vr = (const float4 *)(sv + lane * dp4);
                        float4 u = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                        for (int e = 0; e < d4; e++) {
                            float4 x = gr[e], y = vr[e];
                            u.x += x.x * y.x;
                            u.y += x.y * y.y;
                            u.z += x.z * y.z;
                            u.w += x.w * y.w;
                        }
                        dpv = (u.x + u.y) + (u.z + u.w);
                    }
                }
                if (pass == 0) {
                    const float tm = wmax(s);
                    if (tm != -INFINITY) {
                        const float mn = fmaxf(M[b], tm);
                        L[b] = L[b] * expf(M[b] - mn) + wsum(ok ? expf(s - mn) : 0.0f);
                        M[b] = mn;
                    }
                    continue;
                }
                const float pj = ok && L[b] > 0.0f ? expf(s - M[b]) / L[b] : 0.0f;
                if (pass == 1) {
                    D[b] += wsum(pj * dpv);
                    continue;
                }
                float ds = pj * (dpv - D[b]);
                if (p.softcap > 0.0f) ds *= 1.0f - th * th;
                ds *= p.scale;
                for (int kk = 0; kk < nk; kk++) {
                    const float w = __shfl_sync(0xffffffffu, ds, kk);
                    const float *kr = sk + kk * dp4;
#pragma unroll
                    for (int i = 0; i < AMAXE; i++) {
                        int e = lane + TW * i;
                        if (e < d) acc[b][i] += w * kr[e];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int b = 0; b < AQ / AW; b++) {
        const int a = wi + AW * b;
        if (a >= nq) continue;
        float *o = dq + (size_t)(t0 + a) * qs + (size_t)h * d;
#pragma unroll
        for (int i = 0; i < AMAXE; i++) {
            int e = lane + TW * i;
            if (e < d) o[e] = acc[b][i];
        }
        if (lane == 0) {
            float *st = stats + ((size_t)(t0 + a) * p.n_heads + h) * 3;
            st[0] = M[b];
            st[1] = L[b];
            st[2] = D[b];
        }
    }
}

__global__ void __launch_bounds__(AW * TW) k_attb_kv(float *dk, float *dv, const float *stats, const float *dout,
                                                     const float *q, const float *k, const float *v, bk_attn p)
{
    PDL_ENTRY();
    extern __shared__ float sh[];
    const int d = p.head_dim, lane = threadIdx.x % TW, wi = threadIdx.x / TW, chunks = (p.T + QC - 1) / QC;
    const int j0 = blockIdx.x * BK, h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads),
              c0 = (int)(blockIdx.z % chunks) * QC;
    {
        /* sequence blockIdx.z / chunks of the batch */
        const size_t b = blockIdx.z / chunks, qn = (size_t)p.T * p.n_heads * d, kn = (size_t)p.S * p.n_kv_heads * d;
        dk += b * kn;
        dv += b * kn;
        dout += b * qn;
        q += b * qn;
        k += b * kn;
        v += b * kn;
        stats += b * (size_t)p.T * p.n_heads * 3;
    }
    const size_t qs = (size_t)p.n_heads * d, ks = (size_t)p.n_kv_heads * d;
    const int off = p.S - p.T, jl = j0 + BK - 1 < p.S - 1 ? j0 + BK - 1 : p.S - 1;
    /* this chunk's queries t = c0 .. c0 + QC - 1 that see a key of the tile:
     * positions P = off + t from j0 to jl + window - 1 */
    int t_lo = j0 - off, t_hi = p.T - 1;
    if (p.window > 0 && jl + p.window - 1 - off < t_hi) t_hi = jl + p.window - 1 - off;
    if (t_lo < c0) t_lo = c0;
    if (t_hi > c0 + QC - 1) t_hi = c0 + QC - 1;
    if (t_lo > t_hi) return;
    const int nt = t_hi - t_lo + 1;
    float *sq = sh, *sg = sq + QC * d, *ss = sg + QC * d;
    for (int r = wi; r < nt; r += AW) {
        const float *qr = q + (size_t)(t_lo + r) * qs + (size_t)h * d, *gr = dout + (size_t)(t_lo + r) * qs + (size_t)h * d;
        for (int e = lane; e < d; e += TW) {
            sq[r * d + e] = qr[e];
            sg[r * d + e] = gr[e];
        }
        if (lane < 3) ss[r * 3 + lane] = stats[((size_t)(t_lo + r) * p.n_heads + h) * 3 + lane];
    }
    float kr[BPW][AMAXE], vr[BPW][AMAXE], ak[BPW][AMAXE], av[BPW][AMAXE];
    int js[BPW];
#pragma unroll
    for (int c = 0; c < BPW; c++) {
        js[c] = j0 + wi + AW * c;
        const int ok = js[c] < p.S;
#pragma unroll
        for (int i = 0; i < AMAXE; i++) {
            int e = lane + TW * i;
            kr[c][i] = ok && e < d ? k[(size_t)js[c] * ks + (size_t)kvh * d + e] : 0.0f;
            vr[c][i] = ok && e < d ? v[(size_t)js[c] * ks + (size_t)kvh * d + e] : 0.0f;
            ak[c][i] = av[c][i] = 0.0f;
        }
    }
    __syncthreads();
    for (int r = 0; r < nt; r++) {
        const int P = off + t_lo + r;
        const float M = ss[r * 3], L = ss[r * 3 + 1], D = ss[r * 3 + 2];
        if (!(L > 0.0f)) continue;
        float qv[AMAXE], gv[AMAXE];
#pragma unroll
        for (int i = 0; i < AMAXE; i++) {
            int e = lane + TW * i;
            qv[i] = e < d ? sq[r * d + e] : 0.0f;
            gv[i] = e < d ? sg[r * d + e] : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < BPW; c++) {
            const int j = js[c];
            if (j >= p.S || j > P || (p.window > 0 && P - j >= p.window)) continue;
            float s = 0.0f, dpv = 0.0f, th;
#pragma unroll
            for (int i = 0; i < AMAXE; i++) {
                s += qv[i] * kr[c][i];
                dpv += gv[i] * vr[c][i];
            }
            s = capped(wsum(s) * p.scale, p.softcap, &th);
            dpv = wsum(dpv);
            const float pj = expf(s - M) / L;
            float ds = pj * (dpv - D);
            if (p.softcap > 0.0f) ds *= 1.0f - th * th;
            ds *= p.scale;
#pragma unroll
            for (int i = 0; i < AMAXE; i++) {
                ak[c][i] += ds * qv[i];
                av[c][i] += pj * gv[i];
            }
        }
    }
#pragma unroll
    for (int c = 0; c < BPW; c++) {
        if (js[c] >= p.S) continue;
        float *ok = dk + (size_t)js[c] * ks + (size_t)kvh * d, *ov = dv + (size_t)js[c] * ks + (size_t)kvh * d;
#pragma unroll
        for (int i = 0; i < AMAXE; i++) {
            int e = lane + TW * i;
            if (e < d) {
                atomicAdd(ok + e, ak[c][i]);
                atomicAdd(ov + e, av[c][i]);
            }
        }
    }
}

/* ---- attention through materialized scores (cuda.c's attn_gemm) ----
 * sc holds one sequence's scaled scores q . k [H][T][S] as cuBLAS wrote
 * them; a block a row (head, query). */

/* Position P = S - T + t sees key j iff j <= P and (window) P - j < w. */
__device__ __forceinline__ int sees(int P, int j, int window) { return j <= P && (window <= 0 || P - j < window); }

/* Forward: the row softcapped and masked, then its softmax, in place. */
__global__ void k_attn_softmax(float *sc, int T, int S, float softcap, int window)
{
    PDL_ENTRY();
    __shared__ float part[32];
    const int t = blockIdx.x % T, P = S - T + t;
    float *r = sc + (size_t)blockIdx.x * S;
    float m = -INFINITY, th;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (sees(P, j, window)) m = fmaxf(m, capped(r[j], softcap, &th));
    m = bmax(m, part);
    float l = 0.0f;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (sees(P, j, window)) l += expf(capped(r[j], softcap, &th) - m);
    l = bsum(l, part);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        r[j] = sees(P, j, window) ? expf(capped(r[j], softcap, &th) - m) * inv : 0.0f;
}

/* Backward: from the scores (sc) and dP = dout . v (dp), P into sc and
 * dS = P (dP - sum P dP) (1 - tanh^2 through a softcap) scale into dp;
 * or, where pb is not NULL, both rounded to bf16 into pb and db (rows of
 * S), sc and dp left as they are. */
__device__ __forceinline__ void sb_put(float *r, float *g, uint16_t *pb, uint16_t *db, size_t j, float pj, float ds)
{
    if (pb) {
        pb[j] = f32_bf16(pj);
        db[j] = f32_bf16(ds);
    } else {
        r[j] = pj;
        g[j] = ds;
    }
}

__global__ void k_attn_softmax_back(float *sc, float *dp, uint16_t *pb, uint16_t *db, int T, int S, float softcap,
                                    int window, float scale)
{
    PDL_ENTRY();
    __shared__ float part[32];
    const int t = blockIdx.x % T, P = S - T + t;
    float *r = sc + (size_t)blockIdx.x * S, *g = dp + (size_t)blockIdx.x * S;
    uint16_t *rb = pb ? pb + (size_t)blockIdx.x * S : NULL, *gb = pb ? db + (size_t)blockIdx.x * S : NULL;
    float m = -INFINITY, th;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (sees(P, j, window)) m = fmaxf(m, capped(r[j], softcap, &th));
    m = bmax(m, part);
    float l = 0.0f, w = 0.0f;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (sees(P, j, window)) {
            const float e = expf(capped_minus(r[j], softcap, &th, m));
            l += e;
            w = __fmaf_rn(e, g[j], w);
        }
    l = bsum(l, part);
    w = bsum(w, part);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f, D = w * inv;
    for (int j = threadIdx.x; j < S; j += blockDim.x) {
        if (!sees(P, j, window)) {
            sb_put(r, g, rb, gb, (size_t)j, 0.0f, 0.0f);
            continue;
        }
        float pj = expf(capped_minus(r[j], softcap, &th, m)) * inv, ds = pj * (g[j] - D);
        if (softcap > 0.0f) ds *= __fmaf_rn(-th, th, 1.0f);
        sb_put(r, g, rb, gb, (size_t)j, pj, ds * scale);
    }
}

/* The same for rows of at most 32 NPL keys (NPL 4, 8, 16 or 32), with the
 * same sums bit for bit: a warp a row, the row in registers (read once,
 * only the keys the query sees; written once), 8 rows a block.  Lane l
 * keeps the partial sums that thread 32 v + l of k_attn_softmax_back
 * (256 threads: key j goes to thread j % 256, in increasing j) would
 * form, for v = 0 .. 7, then reduces each v as that block's warp v does
 * and adds the eight in bsum's order.  The block kernel read a row three
 * times with three block-wide reductions: 79 us for 16,384 rows of 512
 * keys on an H100. */
template <int NPL, bool CAP>
__global__ void __launch_bounds__(256) k_attn_softmax_back_w(float *sc, float *dp, uint16_t *pb, uint16_t *db,
                                                             int rows, int T, int S, float softcap_, int window,
                                                             float scale)
{
    PDL_ENTRY();
    /* CAP false: no softcap, and no th[] held in registers (64 of them
     * where there were 80: 4 blocks an SM instead of 3) */
    const float softcap = CAP ? softcap_ : 0.0f;
    const int row = blockIdx.x * 8 + (int)threadIdx.x / TW, lane = threadIdx.x % TW;
    if (row >= rows) return;
    const int P = S - T + row % T;
    float *r = sc + (size_t)row * S, *g = dp + (size_t)row * S;
    uint16_t *rb = pb ? pb + (size_t)row * S : NULL, *gb = pb ? db + (size_t)row * S : NULL;
    float c[NPL], gv[NPL], th[NPL], m = -INFINITY;
    unsigned vis = 0;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int j = lane + TW * i;
        c[i] = gv[i] = th[i] = 0.0f;
        if (j < S && sees(P, j, window)) {
            vis |= 1u << i;
            c[i] = capped(r[j], softcap, &th[i]);
            gv[i] = g[j];
            m = fmaxf(m, c[i]);
        }
    }
    m = wmax(m);
    float lp[8], wp[8];
#pragma unroll
    for (int v = 0; v < 8; v++) lp[v] = wp[v] = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        if (!(vis >> i & 1u)) continue;
        const float e = expf(softcap > 0.0f ? __fmaf_rn(softcap, th[i], -m) : __fsub_rn(c[i], m));
        c[i] = e;
        lp[i % 8] += e;
        wp[i % 8] = __fmaf_rn(e, gv[i], wp[i % 8]);
    }
    float l = 0.0f, w = 0.0f;
#pragma unroll
    for (int v = 0; v < (NPL < 8 ? NPL : 8); v++) {
        l += wsum(lp[v]);
        w += wsum(wp[v]);
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f, D = w * inv;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int j = lane + TW * i;
        if (j >= S) break;
        if (!(vis >> i & 1u)) {
            sb_put(r, g, rb, gb, (size_t)j, 0.0f, 0.0f);
            continue;
        }
        float pj = c[i] * inv, ds = pj * (gv[i] - D);
        if (softcap > 0.0f) ds *= __fmaf_rn(-th[i], th[i], 1.0f);
        sb_put(r, g, rb, gb, (size_t)j, pj, ds * scale);
    }
}

extern "C" int cut_attn_softmax(void *stream, float *sc, int rows, int T, int S, float softcap, int window)
{
    if (rows <= 0) return 0;
    PDL_LAUNCH(k_attn_softmax, rows, 256, 0, (cudaStream_t)stream, sc, T, S, softcap, window);
    return (int)cudaGetLastError();
}

extern "C" int cut_attn_softmax_back(void *stream, float *sc, float *dp, uint16_t *pb, uint16_t *db, int rows, int T,
                                     int S, float softcap, int window, float scale)
{
    if (rows <= 0) return 0;
    const unsigned wb = (unsigned)(rows + 7) / 8;
    cudaStream_t st = (cudaStream_t)stream;
#define SB_W(NPL)                                                                                                      \
    PDL_LAUNCH((softcap > 0.0f ? k_attn_softmax_back_w<NPL, true> : k_attn_softmax_back_w<NPL, false>), wb, 256, 0,    \
               st, sc, dp, pb, db, rows, T, S, softcap, window, scale)
    if (S <= 4 * TW)
        SB_W(4);
    else if (S <= 8 * TW)
        SB_W(8);
    else if (S <= 16 * TW)
        SB_W(16);
    else if (S <= 32 * TW)
        SB_W(32);
    else
        PDL_LAUNCH(k_attn_softmax_back, rows, 256, 0, st, sc, dp, pb, db, T, S, softcap, window, scale);
#undef SB_W
    return (int)cudaGetLastError();
}

/* dst[b][a] = src[a][b], rows of d floats, a < A and b < B (heads and
 * rows trading places) */
__global__ void k_swap_rows(float *dst, const float *src, int A, int B, int d)
{
    PDL_ENTRY();
    const size_t n = (size_t)A * B * d;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)d, c = e % (size_t)d, a = r / (size_t)B, b = r % (size_t)B;
        dst[(b * (size_t)A + a) * (size_t)d + c] = src[e];
    }
}

__global__ void k_swap_rows4(float4 *dst, const float4 *src, int A, int B, int d4)
{
    PDL_ENTRY();
    const size_t n = (size_t)A * B * d4;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)d4, c = e % (size_t)d4, a = r / (size_t)B, b = r % (size_t)B;
        dst[(b * (size_t)A + a) * (size_t)d4 + c] = src[e];
    }
}

/* the same into bf16, four values a thread (d % 4 == 0) */
__global__ void k_swap_rows_bf16(uint2 *dst, float4 *dst_f32, const float4 *src, int A, int B, int d4)
{
    PDL_ENTRY();
    const size_t n = (size_t)A * B * d4;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)d4, c = e % (size_t)d4, a = r / (size_t)B, b = r % (size_t)B;
        const size_t o = (b * (size_t)A + a) * (size_t)d4 + c;
        const float4 v = src[e];
        if (dst_f32) dst_f32[o] = v;
        dst[o] = f32x4_bf16(v);
    }
}

/* d1 = bf16(s1) and d2 = bf16(s2), n values each, four a thread (n % 4 == 0) */
__global__ void k_pair_to_bf16(uint2 *d1, const float4 *s1, uint2 *d2, const float4 *s2, size_t n4)
{
    PDL_ENTRY();
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n4; e += (size_t)gridDim.x * blockDim.x) {
        d1[e] = f32x4_bf16(s1[e]);
        d2[e] = f32x4_bf16(s2[e]);
    }
}

/* The two above a value a thread, for any alignment and any d or n */
__global__ void k_swap_rows_bf16_1(uint16_t *dst, float *dst_f32, const float *src, int A, int B, int d)
{
    PDL_ENTRY();
    const size_t n = (size_t)A * B * d;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const size_t r = e / (size_t)d, c = e % (size_t)d, a = r / (size_t)B, b = r % (size_t)B;
        const size_t o = (b * (size_t)A + a) * (size_t)d + c;
        if (dst_f32) dst_f32[o] = src[e];
        dst[o] = f32_bf16(src[e]);
    }
}

__global__ void k_pair_to_bf16_1(uint16_t *d1, const float *s1, uint16_t *d2, const float *s2, size_t n)
{
    PDL_ENTRY();
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        d1[e] = f32_bf16(s1[e]);
        d2[e] = f32_bf16(s2[e]);
    }
}

/* ---- attention backward on the tensor cores, no score matrix (p->fast) ----
 * For training's backward where there is no softcap and head_dim is 16,
 * 32, 64 or 128: the products and their rounding are those of
 * attn_gemm_back_bf16 (cuda.c) without a softcap, and of the forward
 * (k_ff below): the
 * scores, dP = dout v^T, dv = P^T dout, dk = dS^T q and dq = dS k with
 * bf16 inputs, float32 sums (the exponentials through ex2.approx, 2 ulp);
 * but the scores stay in tiles.  cuda_attention_back takes it wherever
 * cut_flash_ok says it can.
 * k_fb_prep first writes q, k, v and dout rounded to bf16 (same layouts),
 * so that tiles go to shared memory as they are (cp.async) and fragments
 * come out with ldmatrix.  Then two
 * kernels, no atomics, so that every run gives the same bits:
 *   k_fb_q: a block takes 64 queries of one head and walks their keys in
 *     tiles of FB_T twice: first for each query's softmax statistics (the
 *     maximum m of the scores times log2 e, 1 / sum, and D = sum P dP),
 *     written to stats, then for dq = sum dS k, dS = P (dP - D) scale;
 *   k_fb_kv: a block takes 64 keys of one kv head for one query head and
 *     walks the queries that see them in tiles of FB_T, for dv and dk (the
 *     head's share, where a kv head has G > 1 query heads: into scratch,
 *     then k_fb_sum adds the G shares in head order).
 * A warp holds 16 rows (queries or keys).  Rows in shared memory: D + 8
 * bf16, so that the eight 16-byte rows of an ldmatrix fall in different
 * banks.  Fragments (g = lane / 4, t = lane % 4): m16n8k16 bf16 A rows g,
 * g + 8 and columns (2t, 2t + 1),
 * (2t + 8, 2t + 9), B column g and rows (2t, 2t + 1), (2t + 8, 2t + 9);
 * C rows g, g + 8 and columns 2t, 2t + 1: two C tiles of 8 columns are
 * the A fragment of the next product. */
#define FB_W 4           /* warps a block */
#define FB_R (16 * FB_W) /* a block's queries (k_fb_q) or keys (k_fb_kv) */
#define FB_T 32          /* a tile's keys (k_fb_q) or queries (k_fb_kv): a multiple of 16, at most 42 */

struct fb_args {
    int T, S, H, KVH, G, window;
    float scale, scale2; /* scale2: scale log2(e), the scores in powers of 2 */
};

/* Four 8 x 16-byte matrices; lane i gives the address of row i % 8 of
 * matrix i / 8 (TRANS: each matrix of 8 x 8 bf16 transposed) */
template <bool TRANS>
__device__ __forceinline__ void fb_ldm(uint32_t *r, const void *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
}

/* The row and 16-byte column of matrix lane / 8 that this lane points at,
 * for two layouts of four 8 x 16-byte matrices over 16 rows x 32 bytes:
 * A (m0 rows 0-7 bytes 0-15, m1 rows 8-15 bytes 0-15, m2 rows 0-7 bytes
 * 16-31, m3 rows 8-15 bytes 16-31: an A fragment, or with TRANS two B
 * fragments over 16 columns) and B (m0 rows 0-7 bytes 0-15, m1 rows 0-7
 * bytes 16-31, m2 and m3 the same for rows 8-15: two B fragments over 16
 * rows) */
__device__ __forceinline__ int fb_lrow(bool a_layout)
{
    const int lane = threadIdx.x % TW, m = lane >> 3;
    return (lane & 7) + 8 * (a_layout ? (m & 1) : (m >> 1));
}

__device__ __forceinline__ int fb_lcol(bool a_layout)
{
    const int m = (threadIdx.x % TW) >> 3;
    return a_layout ? (m >> 1) : (m & 1);
}

/* R rows of B bytes (src rows sstride bytes apart) into rows of B + 16
 * bytes (D + 4 floats, D + 8 bf16); rows from n on zeros */
template <int B, int R>
__device__ __forceinline__ void fb_rows(void *dst, const void *src, size_t sstride, int n)
{
    constexpr int C = B / 16, NT = FB_W * TW;
#pragma unroll
    for (int k = 0; k < (R * C + NT - 1) / NT; k++) {
        const int e = (int)threadIdx.x + k * NT, r = e / C, c = e % C;
        if ((R * C) % NT && e >= R * C) break;
        char *d = (char *)dst + r * (B + 16) + 16 * c;
        if (r < n)
            cp16(d, (const char *)src + (size_t)r * sstride + 16 * c);
        else
            *(uint4 *)d = make_uint4(0u, 0u, 0u, 0u);
    }
}

/* A tile of K rows (n of them real, stride values apart in each source)
 * into a stage: bf16 rows from b1, then from b2 */
template <int D, int K>
__device__ __forceinline__ void fb_tile(unsigned char *d, const uint16_t *b1, const uint16_t *b2, size_t stride, int n)
{
    constexpr int BP = (D + 8) * 2;
    fb_rows<D * 2, K>(d, b1, stride * 2, n);
    fb_rows<D * 2, K>(d + K * BP, b2, stride * 2, n);
}

/* 2^x (ex2.approx: 2 ulp; 0 for -inf) */
__device__ __forceinline__ float fb_ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* s[n] (n < 2: a tile's rows 8n .. 8n + 7) = rows (A: a[kk], 16 values
 * a k step) . b's 16 rows of D bf16 (rows D + 8 apart) */
template <int D>
__device__ __forceinline__ void fb_dot(float (*s)[4], const uint32_t (*a)[4], const uint16_t *b)
{
    const uint16_t *p = b + fb_lrow(false) * (D + 8) + 8 * fb_lcol(false);
#pragma unroll
    for (int n = 0; n < 2; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t f[4];
        fb_ldm<false>(f, p + 16 * kk);
#pragma unroll
        for (int n = 0; n < 2; n++) mma_bf16(s[n], a[kk][0], a[kk][1], a[kk][2], a[kk][3], f[2 * n], f[2 * n + 1]);
    }
}

/* acc[nn] (16 rows x D) += a (16 x 16 bf16 A fragment) . b's 16 rows of
 * D bf16 */
template <int D>
__device__ __forceinline__ void fb_apply(float (*acc)[4], const uint32_t *a, const uint16_t *b)
{
    const uint16_t *p = b + fb_lrow(true) * (D + 8) + 8 * fb_lcol(true);
#pragma unroll
    for (int j = 0; j < D / 16; j++) {
        uint32_t f[4];
        fb_ldm<true>(f, p + 16 * j);
        mma_bf16(acc[2 * j], a[0], a[1], a[2], a[3], f[0], f[1]);
        mma_bf16(acc[2 * j + 1], a[0], a[1], a[2], a[3], f[2], f[3]);
    }
}

/* A warp's A fragments of its 16 rows of D bf16 at x, for fb_dot */
template <int D>
__device__ __forceinline__ void fb_frag(uint32_t (*a)[4], const uint16_t *x)
{
    const uint16_t *p = x + fb_lrow(true) * (D + 8) + 8 * fb_lcol(true);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) fb_ldm<false>(a[kk], p + 16 * kk);
}

/* The A fragment (16 rows x 16 columns, bf16) of two C tiles of 8 columns */
__device__ __forceinline__ void fb_afrag(uint32_t *a, const float (*c)[4])
{
    a[0] = bf2_pack(c[0][0], c[0][1]);
    a[1] = bf2_pack(c[0][2], c[0][3]);
    a[2] = bf2_pack(c[1][0], c[1][1]);
    a[3] = bf2_pack(c[1][2], c[1][3]);
}

/* The copies the kernels read: src rounded to bf16; n4 groups of four
 * values */
__global__ void k_fb_prep(uint2 *bf, const float4 *src, size_t n4)
{
    PDL_ENTRY();
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n4; e += (size_t)gridDim.x * blockDim.x) {
        const float4 v = src[e];
        bf[e] = make_uint2(bf2_pack(v.x, v.y), bf2_pack(v.z, v.w));
    }
}

/* Whether the warp's 16 rows at positions P0 .. P0 + 15 (all of them real)
 * see all of keys j0 .. j0 + K - 1 (all below S): no mask needed */
template <int K> __device__ __forceinline__ bool fb_full(int P0, int j0, const fb_args &a)
{
    return j0 + K - 1 <= P0 && j0 + K - 1 < a.S && (a.window <= 0 || P0 + 15 - j0 < a.window);
}

/* The keys a block of queries i0 .. i0 + nq - 1 (at most FB_R) of head h
 * of sequence b sees, from a multiple of the tile size K: nt tiles from
 * key lo; offsets of its first query row (q0) and of the sequence's keys
 * of its kv head (k0) */
struct fb_qspan {
    int nq, lo, nt;
    size_t qs, ks, q0, k0;
};

template <int D>
__device__ __forceinline__ fb_qspan fb_qspan_at(const fb_args &a, int b, int h, int i0, int K)
{
    fb_qspan r;
    const int off = a.S - a.T;
    r.nq = a.T - i0 < FB_R ? a.T - i0 : FB_R;
    r.qs = (size_t)a.H * D, r.ks = (size_t)a.KVH * D;
    r.q0 = ((size_t)b * a.T + i0) * r.qs + (size_t)h * D, r.k0 = (size_t)b * a.S * r.ks + (size_t)(h / a.G) * D;
    const int P1 = off + i0 + r.nq - 1;
    const int lo = a.window > 0 ? off + i0 - a.window + 1 : 0;
    r.lo = lo > 0 ? lo / K * K : 0;
    r.nt = (P1 - r.lo) / K + 1;
    return r;
}

template <int D>
__global__ void __launch_bounds__(FB_W * TW, 2) k_fb_q(float *dq, float *stats, const uint16_t *qb, const uint16_t *gb,
                                                      const uint16_t *kb, const uint16_t *vb, fb_args a)
{
    extern __shared__ __align__(16) unsigned char fsm[];
    constexpr int BP = (D + 8) * 2, STAGE = FB_T * 2 * BP;
    uint16_t *sq = (uint16_t *)fsm;               /* [FB_R] rows of q */
    uint16_t *sg = (uint16_t *)(fsm + FB_R * BP); /* [FB_R] rows of dout */
    unsigned char *stage = fsm + FB_R * 2 * BP;   /* 2 x: keys, values */
    const int lane = threadIdx.x % TW, w = threadIdx.x / TW, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * FB_R, off = a.S - a.T;
    const fb_qspan sp = fb_qspan_at<D>(a, b, h, i0, FB_T);
    const int nq = sp.nq, lo = sp.lo, nt = sp.nt;
    const size_t qs = sp.qs, ks = sp.ks, q0 = sp.q0, k0 = sp.k0;
    PDL_ENTRY();
    fb_rows<D * 2, FB_R>(sq, qb + q0, qs * 2, nq);
    fb_rows<D * 2, FB_R>(sg, gb + q0, qs * 2, nq);
    /* keys J .. J + FB_T - 1 into stage S_ */
#define FB_Q_TILE(J, S_)                                                                                            \
    do {                                                                                                            \
        const int j_ = (J);                                                                                         \
        const size_t o_ = k0 + (size_t)j_ * ks;                                                                     \
        fb_tile<D, FB_T>(stage + (S_) * STAGE, kb + o_, vb + o_, ks, a.S - j_ < FB_T ? a.S - j_ : FB_T);                  \
    } while (0)
    FB_Q_TILE(lo, 0);
    cp_commit();
    const int r0 = 16 * w + g, Pw = off + i0 + 16 * w, wfull = i0 + 16 * w + 15 < a.T;
    int P[2], ok[2];
#pragma unroll
    for (int R = 0; R < 2; R++) P[R] = Pw + g + 8 * R, ok[R] = r0 + 8 * R < nq;
    uint32_t qa[D / 16][4], ga[D / 16][4];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, u[2] = {0.0f, 0.0f}, inv[2] = {0.0f, 0.0f},
          Dq[2] = {0.0f, 0.0f};
    float acc[D / 8][4];
#pragma unroll
    for (int nn = 0; nn < D / 8; nn++) acc[nn][0] = acc[nn][1] = acc[nn][2] = acc[nn][3] = 0.0f;
    for (int it = 0; it < 2 * nt; it++) {
        if (it + 1 < 2 * nt) FB_Q_TILE(lo + (it + 1 < nt ? it + 1 : it + 1 - nt) * FB_T, (it + 1) & 1);
        cp_commit();
        cp_wait1();
        __syncthreads();
        if (it == 0) {
            fb_frag<D>(qa, sq + 16 * w * (D + 8));
            fb_frag<D>(ga, sg + 16 * w * (D + 8));
        }
        const int pass = it >= nt, j0 = lo + (pass ? it - nt : it) * FB_T;
        const unsigned char *st = stage + (it & 1) * STAGE;
        float s[FB_T / 8][4], dp[FB_T / 8][4];
#pragma unroll
        for (int c = 0; c < FB_T / 16; c++) {
            fb_dot<D>(s + 2 * c, qa, (const uint16_t *)st + 16 * c * (D + 8));
            fb_dot<D>(dp + 2 * c, ga, (const uint16_t *)(st + FB_T * BP) + 16 * c * (D + 8));
        }
        /* the scaled scores, -inf where the query does not see the key */
        const bool full = wfull && fb_full<FB_T>(Pw, j0, a);
#pragma unroll
        for (int n = 0; n < FB_T / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int R = e >> 1, j = j0 + 8 * n + 2 * t + (e & 1);
                s[n][e] = full || (ok[R] && j < a.S && sees(P[R], j, a.window)) ? __fmul_rn(s[n][e], a.scale2)
                                                                                : -INFINITY;
            }
        if (!pass) {
#pragma unroll
            for (int R = 0; R < 2; R++) {
                float tm = -INFINITY;
#pragma unroll
                for (int n = 0; n < FB_T / 8; n++) tm = fmaxf(tm, fmaxf(s[n][2 * R], s[n][2 * R + 1]));
                tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 1));
                tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 2));
                const float mn = fmaxf(m[R], tm);
                if (mn == -INFINITY) continue;
                const float c = fb_ex2(m[R] - mn);
                l[R] *= c;
                u[R] *= c;
                m[R] = mn;
#pragma unroll
                for (int n = 0; n < FB_T / 8; n++)
#pragma unroll
                    for (int e = 2 * R; e < 2 * R + 2; e++) {
                        const float x = fb_ex2(s[n][e] - mn); /* 0 where masked */
                        l[R] += x;
                        u[R] = __fmaf_rn(x, dp[n][e], u[R]);
                    }
            }
            if (it == nt - 1)
#pragma unroll
                for (int R = 0; R < 2; R++) {
                    float ls = l[R], us = u[R];
                    ls += __shfl_xor_sync(0xffffffffu, ls, 1);
                    ls += __shfl_xor_sync(0xffffffffu, ls, 2);
                    us += __shfl_xor_sync(0xffffffffu, us, 1);
                    us += __shfl_xor_sync(0xffffffffu, us, 2);
                    inv[R] = ls > 0.0f ? 1.0f / ls : 0.0f;
                    Dq[R] = us * inv[R];
                    if (t == 0 && ok[R]) {
                        const size_t row = ((size_t)b * a.H + h) * a.T + i0 + r0 + 8 * R,
                                     N = (size_t)gridDim.z * a.H * a.T;
                        stats[row] = m[R];
                        stats[N + row] = inv[R];
                        stats[2 * N + row] = Dq[R];
                    }
                }
        } else {
#pragma unroll
            for (int n = 0; n < FB_T / 8; n++) /* dS over dp */
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int R = e >> 1;
                    const float p = s[n][e] == -INFINITY ? 0.0f : fb_ex2(s[n][e] - m[R]) * inv[R];
                    dp[n][e] = p * (dp[n][e] - Dq[R]) * a.scale;
                }
#pragma unroll
            for (int c = 0; c < FB_T / 16; c++) {
                uint32_t da[4];
                fb_afrag(da, dp + 2 * c);
                fb_apply<D>(acc, da, (const uint16_t *)st + 16 * c * (D + 8));
            }
        }
        __syncthreads();
    }
#undef FB_Q_TILE
#pragma unroll
    for (int R = 0; R < 2; R++) {
        if (!ok[R]) continue;
        float *o = dq + q0 + (size_t)(r0 + 8 * R) * qs + 2 * t;
#pragma unroll
        for (int nn = 0; nn < D / 8; nn++) *(float2 *)(o + 8 * nn) = make_float2(acc[nn][2 * R], acc[nn][2 * R + 1]);
    }
}

template <int D>
__global__ void __launch_bounds__(FB_W * TW, 2) k_fb_kv(float *dk, float *dv, const float *stats, const uint16_t *qb,
                                                       const uint16_t *gb, const uint16_t *kb, const uint16_t *vb,
                                                       fb_args a)
{
    extern __shared__ __align__(16) unsigned char fsm[];
    constexpr int BP = (D + 8) * 2, STAGE = FB_T * 2 * BP + 3 * FB_T * 4;
    uint16_t *sk = (uint16_t *)fsm;               /* [FB_R] rows of keys */
    uint16_t *sv = (uint16_t *)(fsm + FB_R * BP); /* [FB_R] rows of values */
    unsigned char *stage = fsm + FB_R * 2 * BP;   /* 2 x: queries, dout, m, 1/l, D */
    const int lane = threadIdx.x % TW, w = threadIdx.x / TW, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * FB_R, kvh = h / a.G, off = a.S - a.T;
    const int nk = a.S - j0 < FB_R ? a.S - j0 : FB_R;
    const size_t qs = (size_t)a.H * D, ks = (size_t)a.KVH * D, N = (size_t)gridDim.z * a.H * a.T;
    const size_t k0 = ((size_t)b * a.S + j0) * ks + (size_t)kvh * D, q0 = (size_t)b * a.T * qs + (size_t)h * D;
    const size_t st0 = ((size_t)b * a.H + h) * a.T;
    /* the queries that see the block's keys (position off + i >= j0, and
     * within the window of the last key), from a multiple of FB_T */
    int ilo = j0 - off > 0 ? j0 - off : 0, ihi = a.T - 1;
    if (a.window > 0 && j0 + nk + a.window - 2 - off < ihi) ihi = j0 + nk + a.window - 2 - off;
    ilo = ilo / FB_T * FB_T;
    const int nt = ihi >= ilo ? (ihi - ilo) / FB_T + 1 : 0;
    PDL_ENTRY();
    if (nt > 0) { /* else no query sees the keys: zeros */
        fb_rows<D * 2, FB_R>(sk, kb + k0, ks * 2, nk);
        fb_rows<D * 2, FB_R>(sv, vb + k0, ks * 2, nk);
    }
    /* queries I .. I + FB_T - 1 and their statistics into stage S_ */
#define FB_KV_TILE(I, S_)                                                                                           \
    do {                                                                                                            \
        const int i_ = (I), n_ = a.T - i_ < FB_T ? a.T - i_ : FB_T;                                                 \
        const size_t o_ = q0 + (size_t)i_ * qs;                                                                     \
        unsigned char *d_ = stage + (S_) * STAGE;                                                                   \
        fb_tile<D, FB_T>(d_, qb + o_, gb + o_, qs, n_);                                                                   \
        if (threadIdx.x < 3 * FB_T) {                                                                               \
            const int c_ = threadIdx.x / FB_T, r_ = threadIdx.x % FB_T;                                             \
            float *sd_ = (float *)(d_ + FB_T * 2 * BP) + threadIdx.x;                                              \
            if (r_ < n_)                                                                                            \
                cp4(sd_, stats + (size_t)c_ * N + st0 + i_ + r_);                                                   \
            else                                                                                                    \
                *sd_ = 0.0f;                                                                                        \
        }                                                                                                           \
    } while (0)
    if (nt > 0) FB_KV_TILE(ilo, 0);
    cp_commit();
    const int r0 = 16 * w + g, wfull = 16 * w + 15 < nk;
    float ak[D / 8][4], av[D / 8][4];
#pragma unroll
    for (int nn = 0; nn < D / 8; nn++)
#pragma unroll
        for (int e = 0; e < 4; e++) ak[nn][e] = av[nn][e] = 0.0f;
    for (int it = 0; it < nt; it++) {
        if (it + 1 < nt) FB_KV_TILE(ilo + (it + 1) * FB_T, (it + 1) & 1);
        cp_commit();
        cp_wait1();
        __syncthreads();
        const int i0 = ilo + it * FB_T;
        const unsigned char *st = stage + (it & 1) * STAGE;
        const uint16_t *sqb = (const uint16_t *)st, *sgb = (const uint16_t *)(st + FB_T * BP);
        const float *sst = (const float *)(st + FB_T * 2 * BP);
        float s[FB_T / 8][4], dp[FB_T / 8][4];
        {
            uint32_t ka[D / 16][4];
            fb_frag<D>(ka, sk + 16 * w * (D + 8));
#pragma unroll
            for (int c = 0; c < FB_T / 16; c++) fb_dot<D>(s + 2 * c, ka, sqb + 16 * c * (D + 8));
        }
        {
            uint32_t va[D / 16][4];
            fb_frag<D>(va, sv + 16 * w * (D + 8));
#pragma unroll
            for (int c = 0; c < FB_T / 16; c++) fb_dot<D>(dp + 2 * c, va, sgb + 16 * c * (D + 8));
        }
        /* the warp's keys j0 + 16 w .. + 15 against the tile's queries at
         * positions off + i0 .. + FB_T - 1: the queries are all real and
         * see all of those keys, or each pair is checked */
        const bool full = wfull && i0 + FB_T - 1 < a.T && off + i0 >= j0 + 16 * w + 15 &&
                          (a.window <= 0 || off + i0 + FB_T - 1 - (j0 + 16 * w) < a.window);
#pragma unroll
        for (int n = 0; n < FB_T / 8; n++) /* P over s, dS over dp */
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int R = e >> 1, c = 8 * n + 2 * t + (e & 1), r = r0 + 8 * R, i = i0 + c;
                const bool vis = full || (r < nk && i < a.T && sees(off + i, j0 + r, a.window));
                s[n][e] = vis ? fb_ex2(__fmul_rn(s[n][e], a.scale2) - sst[c]) * sst[FB_T + c] : 0.0f;
                dp[n][e] = s[n][e] * (dp[n][e] - sst[2 * FB_T + c]) * a.scale;
            }
#pragma unroll
        for (int c = 0; c < FB_T / 16; c++) {
            uint32_t pa[4], da[4];
            fb_afrag(pa, s + 2 * c);
            fb_afrag(da, dp + 2 * c);
            fb_apply<D>(av, pa, sgb + 16 * c * (D + 8));
            fb_apply<D>(ak, da, sqb + 16 * c * (D + 8));
        }
        __syncthreads();
    }
#undef FB_KV_TILE
    /* G > 1: the head's share into its slice of the scratch (dk, dv point
     * there: slices kn floats apart) */
    const size_t kn = (size_t)gridDim.z * a.S * ks, sl = a.G > 1 ? (size_t)(h % a.G) * kn : 0;
#pragma unroll
    for (int R = 0; R < 2; R++) {
        const int r = r0 + 8 * R;
        if (r >= nk) continue;
        const size_t o = sl + k0 + (size_t)r * ks + 2 * t;
#pragma unroll
        for (int nn = 0; nn < D / 8; nn++) {
            *(float2 *)(dk + o + 8 * nn) = make_float2(ak[nn][2 * R], ak[nn][2 * R + 1]);
            *(float2 *)(dv + o + 8 * nn) = make_float2(av[nn][2 * R], av[nn][2 * R + 1]);
        }
    }
}

/* dk = the sum of the G slices of pk (kn floats apart) in order, dv of pv */
__global__ void k_fb_sum(float4 *dk, float4 *dv, const float4 *pk, const float4 *pv, size_t kn4, int G)
{
    PDL_ENTRY();
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < kn4; e += (size_t)gridDim.x * blockDim.x) {
        float4 x = pk[e], y = pv[e];
        for (int i = 1; i < G; i++) {
            const float4 c = pk[i * kn4 + e], d = pv[i * kn4 + e];
            x.x += c.x, x.y += c.y, x.z += c.z, x.w += c.w;
            y.x += d.x, y.y += d.y, y.z += d.z, y.w += d.w;
        }
        dk[e] = x;
        dv[e] = y;
    }
}

/* ---- training's attention forward on the bf16 tensor cores ----
 * With p->fast, no softcap and head_dim 16, 32, 64 or 128
 * (cut_flash_ok; a softcap keeps the TF32 kernels, see
 * attn_gemm_back_bf16 in cuda.c): q, k
 * and v rounded to bf16 (k_fb_prep), the scores and P v as bf16 products
 * with float32 sums, as PEFT's bf16 attention does, the softmax online in
 * float32 (FA2: a running maximum and sum a row, the sums of earlier keys
 * rescaled when the maximum grows).  A block takes 64 queries (16 a warp)
 * of one head, the longest rows first, and walks the keys they see in
 * tiles of FF_K, two stages in flight (cp.async); a warp whose rows see
 * none of a tile's keys skips it.  Fragments as the backward's (above). */
#define FF_K 64

template <int D>
__global__ void __launch_bounds__(FB_W * TW, 2) k_ff(float *out, const uint16_t *qb, const uint16_t *kb,
                                                    const uint16_t *vb, fb_args a)
{
    extern __shared__ __align__(16) unsigned char fsm[];
    constexpr int BP = (D + 8) * 2, STAGE = 2 * FF_K * BP;
    uint16_t *sq = (uint16_t *)fsm;         /* [FB_R] rows of q */
    unsigned char *stage = fsm + FB_R * BP; /* 2 x: FF_K keys, FF_K values */
    const int lane = threadIdx.x % TW, w = threadIdx.x / TW, g = lane >> 2, t = lane & 3;
    /* the longest rows first */
    const int b = blockIdx.z, h = blockIdx.y, i0 = ((int)gridDim.x - 1 - (int)blockIdx.x) * FB_R, off = a.S - a.T;
    const fb_qspan sp = fb_qspan_at<D>(a, b, h, i0, FF_K);
    const int nq = sp.nq, lo = sp.lo, nt = sp.nt;
    const size_t qs = sp.qs, q0 = sp.q0, k0 = sp.k0, ks = sp.ks;
    PDL_ENTRY();
    fb_rows<D * 2, FB_R>(sq, qb + q0, qs * 2, nq);
    /* keys (and values) J .. J + FF_K - 1 into stage S_; rows past S zeros */
#define FF_TILE(J, S_)                                                                                              \
    do {                                                                                                            \
        const int j_ = (J), n_ = a.S - j_ < FF_K ? a.S - j_ : FF_K;                                                 \
        const size_t o_ = k0 + (size_t)j_ * ks;                                                                     \
        fb_tile<D, FF_K>(stage + (S_) * STAGE, kb + o_, vb + o_, ks, n_);                                           \
    } while (0)
    FF_TILE(lo, 0);
    cp_commit();
    const int r0 = 16 * w + g, Pw = off + i0 + 16 * w, wreal = 16 * w < nq, wfull = 16 * w + 15 < nq;
    int P[2], ok[2];
#pragma unroll
    for (int R = 0; R < 2; R++) P[R] = Pw + g + 8 * R, ok[R] = r0 + 8 * R < nq;
    uint32_t qa[D / 16][4];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, acc[D / 8][4];
#pragma unroll
    for (int nn = 0; nn < D / 8; nn++) acc[nn][0] = acc[nn][1] = acc[nn][2] = acc[nn][3] = 0.0f;
    for (int it = 0; it < nt; it++) {
        if (it + 1 < nt) FF_TILE(lo + (it + 1) * FF_K, (it + 1) & 1);
        cp_commit();
        cp_wait1();
        __syncthreads();
        if (it == 0) fb_frag<D>(qa, sq + 16 * w * (D + 8));
        const int j0 = lo + it * FF_K;
        /* keys past the warp's last row, or before the window of its first */
        const bool none = !wreal || j0 > Pw + 15 || (a.window > 0 && j0 + FF_K - 1 <= Pw - a.window);
        if (!none) {
            const uint16_t *sk = (const uint16_t *)(stage + (it & 1) * STAGE), *sv = sk + FF_K * (D + 8);
            float s[FF_K / 8][4];
#pragma unroll
            for (int kg = 0; kg < FF_K / 16; kg++) fb_dot<D>(s + 2 * kg, qa, sk + 16 * kg * (D + 8));
            const bool full = wfull && fb_full<FF_K>(Pw, j0, a);
            float tm[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < FF_K / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int R = e >> 1, j = j0 + 8 * n + 2 * t + (e & 1);
                    const float x =
                        full || (ok[R] && j < a.S && sees(P[R], j, a.window)) ? __fmul_rn(s[n][e], a.scale2) : -INFINITY;
                    s[n][e] = x;
                    tm[R] = fmaxf(tm[R], x);
                }
#pragma unroll
            for (int R = 0; R < 2; R++) {
                tm[R] = fmaxf(tm[R], __shfl_xor_sync(0xffffffffu, tm[R], 1));
                tm[R] = fmaxf(tm[R], __shfl_xor_sync(0xffffffffu, tm[R], 2));
                const float mn = fmaxf(m[R], tm[R]), use = mn == -INFINITY ? 0.0f : mn; /* no key yet: p 0 */
                const float c = fb_ex2(m[R] - use);
                l[R] *= c;
#pragma unroll
                for (int nn = 0; nn < D / 8; nn++) acc[nn][2 * R] *= c, acc[nn][2 * R + 1] *= c;
                m[R] = mn;
#pragma unroll
                for (int n = 0; n < FF_K / 8; n++)
#pragma unroll
                    for (int e = 2 * R; e < 2 * R + 2; e++) {
                        s[n][e] = fb_ex2(s[n][e] - use); /* 0 where masked */
                        l[R] += s[n][e];
                    }
            }
#pragma unroll
            for (int kg = 0; kg < FF_K / 16; kg++) {
                uint32_t pa[4];
                fb_afrag(pa, s + 2 * kg);
                fb_apply<D>(acc, pa, sv + 16 * kg * (D + 8));
            }
        }
        __syncthreads(); /* the stage is free for the load after next */
    }
#undef FF_TILE
#pragma unroll
    for (int R = 0; R < 2; R++) {
        l[R] += __shfl_xor_sync(0xffffffffu, l[R], 1);
        l[R] += __shfl_xor_sync(0xffffffffu, l[R], 2);
        if (!ok[R]) continue;
        const float inv = l[R] > 0.0f ? 1.0f / l[R] : 0.0f;
        float *o = out + q0 + (size_t)(r0 + 8 * R) * qs + 2 * t;
#pragma unroll
        for (int nn = 0; nn < D / 8; nn++)
            *(float2 *)(o + 8 * nn) = make_float2(acc[nn][2 * R] * inv, acc[nn][2 * R + 1] * inv);
    }
}

/* ---- launchers ---- */

static int lr_rk(int r) { return r <= 8 ? 8 : 16; }

/* wm of lr_w4 for W(k, c) = w[k ldk + c ldc], k < r */
static int lr_wmode(const float *w, int r, long ldk, long ldc)
{
    if ((uintptr_t)w % 16) return 0;
    if (ldc == 1 && ldk % 4 == 0) return 1;
    if (ldk == 1 && ldc % 4 == 0 && r % 4 == 0) return 2;
    return 0;
}

/* Rows a block of k_lr_thin and k_lr_expand (at most `most`, at least 4):
 * fewer where blocks of `most` rows would be fewer than LR_BLOCKS / 2
 * (2,048 rows of 4,096 columns keep 16: fewer rows a block ran slower). */
static int lr_rows(int N, unsigned col_blocks, int most)
{
    int nr = most;
    while (nr > 4 && (size_t)col_blocks * (size_t)((N + nr - 1) / nr) < LR_BLOCKS / 2) nr /= 2;
    return nr;
}

extern "C" size_t cut_lr_thin_scratch(int N, int C, int r)
{
    return (size_t)((C / 4 + 255) / 256) * (size_t)(N > 0 ? N : 1) * (size_t)r * sizeof(float);
}

extern "C" int cut_lr_thin(void *stream, float *out, const float *x, const float *w, int N, int C, int r, long ldk,
                           long ldc, float alpha, float beta, void *scratch)
{
    if (N <= 0 || r <= 0) return 0;
    const unsigned cb = (unsigned)((C / 4 + 255) / 256);
    const int nr = lr_rows(N, cb, LR_TROWS);
    if (r > CUT_LR_MAX || C % 4 || C <= 0 || (uintptr_t)x % 16 || (N + nr - 1) / nr > 65535)
        return (int)cudaErrorNotSupported;
    cudaStream_t st = (cudaStream_t)stream;
    dim3 g(cb, (unsigned)((N + nr - 1) / nr));
    PDL_LAUNCH(k_lr_thin, g, 256, 0, st, (float *)scratch, x, w, N, C, r, ldk, ldc, lr_wmode(w, r, ldk, ldc), nr);
    PDL_LAUNCH(k_lr_thin_sum, grid_for((size_t)N * r, 256), 256, 0, st, out, (const float *)scratch, N * r, (int)cb,
               alpha, beta);
    return (int)cudaGetLastError();
}

extern "C" int cut_lr_expand(void *stream, float *out, const float *t, const float *w, int N, int C, int r, long ldk,
                             long ldc, float alpha, float beta)
{
    if (N <= 0 || C <= 0) return 0;
    const unsigned gx = (unsigned)((C / 4 + 255) / 256);
    const int nr = lr_rows(N, gx, LR_XROWS);
    if (r > CUT_LR_MAX || r <= 0 || C % 4 || (uintptr_t)out % 16 || (N + nr - 1) / nr > 65535)
        return (int)cudaErrorNotSupported;
    cudaStream_t st = (cudaStream_t)stream;
    const int wm = lr_wmode(w, r, ldk, ldc);
    const dim3 g(gx, (unsigned)((N + nr - 1) / nr));
    if (r <= 8)
        PDL_LAUNCH(k_lr_expand<8>, g, 256, 0, st, out, t, w, N, C, r, ldk, ldc, wm, alpha, beta, nr);
    else
        PDL_LAUNCH(k_lr_expand<16>, g, 256, 0, st, out, t, w, N, C, r, ldk, ldc, wm, alpha, beta, nr);
    return (int)cudaGetLastError();
}

/* Rows a chunk of k_lr_reduce: as many chunks as give LR_BLOCKS blocks
 * with the columns' blocks, of at least 32 rows (k_lr_reduce_sum reads
 * every chunk's sums: chunks of 16 rows ran no faster) and at most
 * LR_RCHUNK (its shared memory). */
static int lr_chunk(int N, int M)
{
    const int col_blocks = (M + 255) / 256, parts = (LR_BLOCKS + col_blocks - 1) / col_blocks;
    int nc = (N + parts - 1) / parts;
    if (nc < 32) nc = 32;
    return nc > LR_RCHUNK ? LR_RCHUNK : nc;
}

extern "C" size_t cut_lr_reduce_scratch(int N, int M, int r)
{
    const int nc = lr_chunk(N > 0 ? N : 1, M > 0 ? M : 1);
    return (size_t)((N + nc - 1) / nc) * (size_t)M * (size_t)r * sizeof(float);
}

extern "C" int cut_lr_reduce(void *stream, float *dw, const float *z, const float *u, int N, int M, int r, long gsm,
                             long gsk, float alpha, void *scratch)
{
    if (N <= 0 || M <= 0 || r <= 0) return 0;
    if (r > CUT_LR_MAX) return (int)cudaErrorNotSupported;
    cudaStream_t st = (cudaStream_t)stream;
    const int nc = lr_chunk(N, M), parts = (N + nc - 1) / nc;
    if (parts > 65535) return (int)cudaErrorNotSupported;
    dim3 g((unsigned)((M + 255) / 256), (unsigned)parts);
    float *part = (float *)scratch;
    switch (lr_rk(r)) {
    case 8: PDL_LAUNCH(k_lr_reduce<8>, g, 256, 0, st, part, z, u, N, M, r, nc); break;
    default: PDL_LAUNCH(k_lr_reduce<16>, g, 256, 0, st, part, z, u, N, M, r, nc); break;
    }
    PDL_LAUNCH(k_lr_reduce_sum, grid_for((size_t)M * r, 256), 256, 0, st, dw, part, M, r, parts, gsm, gsk, alpha);
    return (int)cudaGetLastError();
}

extern "C" int cut_swap_rows(void *stream, float *dst, const float *src, int A, int B, int d)
{
    const size_t n = (size_t)A * B * d;
    if (!n) return 0;
    if (d % 4 == 0 && (uintptr_t)dst % 16 == 0 && (uintptr_t)src % 16 == 0)
        PDL_LAUNCH(k_swap_rows4, grid_for(n / 4, 256), 256, 0, (cudaStream_t)stream, (float4 *)dst, (const float4 *)src,
                   A, B, d / 4);
    else
        PDL_LAUNCH(k_swap_rows, grid_for(n, 256), 256, 0, (cudaStream_t)stream, dst, src, A, B, d);
    return (int)cudaGetLastError();
}

extern "C" int cut_swap_rows_bf16(void *stream, uint16_t *dst, float *dst_f32, const float *src, int A, int B, int d)
{
    const size_t n = (size_t)A * B * d;
    if (!n) return 0;
    if (d % 4 || (uintptr_t)dst % 8 || (uintptr_t)src % 16 || (uintptr_t)dst_f32 % 16)
        PDL_LAUNCH(k_swap_rows_bf16_1, grid_for(n, 256), 256, 0, (cudaStream_t)stream, dst, dst_f32, src, A, B, d);
    else
        PDL_LAUNCH(k_swap_rows_bf16, grid_for(n / 4, 256), 256, 0, (cudaStream_t)stream, (uint2 *)dst,
                   (float4 *)dst_f32, (const float4 *)src, A, B, d / 4);
    return (int)cudaGetLastError();
}

extern "C" int cut_pair_to_bf16(void *stream, uint16_t *d1, const float *s1, uint16_t *d2, const float *s2, size_t n)
{
    if (!n) return 0;
    if (n % 4 || ((uintptr_t)d1 | (uintptr_t)d2) % 8 || ((uintptr_t)s1 | (uintptr_t)s2) % 16)
        PDL_LAUNCH(k_pair_to_bf16_1, grid_for(n, 256), 256, 0, (cudaStream_t)stream, d1, s1, d2, s2, n);
    else
        PDL_LAUNCH(k_pair_to_bf16, grid_for(n / 4, 256), 256, 0, (cudaStream_t)stream, (uint2 *)d1,
                   (const float4 *)s1, (uint2 *)d2, (const float4 *)s2, n / 4);
    return (int)cudaGetLastError();
}

extern "C" int cut_axpy(void *stream, float *y, const float *x, float a, size_t n)
{
    if (!n) return 0;
    PDL_LAUNCH(k_axpy, grid_for(n, 256), 256, 0, (cudaStream_t)stream, y, x, a, n);
    return (int)cudaGetLastError();
}

extern "C" int cut_dropout(void *stream, float *y, const float *x, size_t n, float p, uint64_t seed)
{
    if (!n) return 0;
    PDL_LAUNCH(k_dropout, grid_for(n, 256), 256, 0, (cudaStream_t)stream, y, x, n, p, seed);
    return (int)cudaGetLastError();
}

extern "C" int cut_scale(void *stream, float *x, float a, size_t n)
{
    if (!n) return 0;
    PDL_LAUNCH(k_scale, grid_for(n, 256), 256, 0, (cudaStream_t)stream, x, a, n);
    return (int)cudaGetLastError();
}

extern "C" int cut_sumsq(void *stream, const float *x, size_t n, double *out_dev)
{
    cudaError_t e = cudaMemsetAsync(out_dev, 0, sizeof(double), (cudaStream_t)stream);
    if (e) return (int)e;
    if (!n) return 0;
    unsigned g = grid_for(n, 256);
    if (g > 1024) g = 1024;
    PDL_LAUNCH(k_sumsq, g, 256, 0, (cudaStream_t)stream, x, n, out_dev);
    return (int)cudaGetLastError();
}

extern "C" int cut_softcap_back(void *stream, float *dx, const float *dy, const float *y, size_t n, float cap)
{
    if (!n) return 0;
    PDL_LAUNCH(k_softcap_back, grid_for(n, 256), 256, 0, (cudaStream_t)stream, dx, dy, y, n, cap);
    return (int)cudaGetLastError();
}

extern "C" int cut_glu_back(void *stream, float *dg, float *du, const float *dout, const float *g, const float *u,
                            size_t n, int gelu)
{
    if (!n) return 0;
    PDL_LAUNCH(k_glu_back, grid_for(n, 256), 256, 0, (cudaStream_t)stream, dg, du, dout, g, u, n, gelu);
    return (int)cudaGetLastError();
}

extern "C" int cut_glu_back_bf16(void *stream, uint16_t *dg, uint16_t *du, const float *dout, const float *g,
                                 const float *u, size_t n, int gelu)
{
    if (!n) return 0;
    PDL_LAUNCH(k_glu_back_bf16, grid_for((n + 7) / 8, 256), 256, 0, (cudaStream_t)stream, dg, du, dout, g, u, n, gelu);
    return (int)cudaGetLastError();
}

extern "C" int cut_adamw(void *stream, float *p, const float *g, float *m, float *v, size_t n, const bk_adamw *o)
{
    if (!n) return 0;
    const double bc1 = 1.0 - pow((double)o->beta1, (double)o->step),
                 bc2 = sqrt(1.0 - pow((double)o->beta2, (double)o->step));
    PDL_LAUNCH(k_adamw, grid_for(n, 256), 256, 0, (cudaStream_t)stream, p, g, m, v, n, (float)(o->lr / bc1),
               (float)(1.0 - (double)o->lr * o->weight_decay), o->beta1, o->beta2, (float)bc2, o->eps);
    return (int)cudaGetLastError();
}

extern "C" int cut_rmsnorm_back(void *stream, float *dx, const float *dy, const float *x, const bk_weight *w, int rows,
                                int dim, float eps, int plus_one, int acc)
{
    if (rows <= 0) return 0;
    if (dim % 4 == 0 && dim <= 4 * RB_MAXV * 1024 && (uintptr_t)dx % 16 == 0 && (uintptr_t)dy % 16 == 0 &&
        (uintptr_t)x % 16 == 0) {
        int t4 = (dim / 4 + RB_MAXV - 1) / RB_MAXV;
        t4 = (t4 + TW - 1) / TW * TW;
        PDL_LAUNCH(k_rmsnorm_back4, rows, t4, 0, (cudaStream_t)stream, (float4 *)dx, (const float4 *)dy,
                   (const float4 *)x, w->data, (int)w->dtype, dim / 4, eps, plus_one, acc);
        return (int)cudaGetLastError();
    }
    int threads = dim >= 1024 ? 1024 : (dim + TW - 1) / TW * TW;
    PDL_LAUNCH(k_rmsnorm_back, rows, threads, 0, (cudaStream_t)stream, dx, dy, x, w->data, (int)w->dtype, dim, eps,
               plus_one, acc);
    return (int)cudaGetLastError();
}

extern "C" int cut_cross_entropy(void *stream, float *dx, float *nll, const float *x, const int32_t *target, int rows,
                                 size_t V, float scale)
{
    if (rows <= 0) return 0;
    PDL_LAUNCH(k_cross_entropy, rows, 1024, 0, (cudaStream_t)stream, dx, nll, x, target, V, scale);
    return (int)cudaGetLastError();
}

extern "C" size_t cut_attention_back_scratch(const bk_attn *p)
{
    return (size_t)(p->batch > 1 ? p->batch : 1) * (p->T > 0 ? p->T : 1) * p->n_heads * 3 * sizeof(float);
}

extern "C" int cut_attention_back(void *stream, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                  const float *k, const float *v, const bk_attn *p, void *scratch)
{
    if (p->T <= 0) return 0;
    if (p->head_dim > TW * AMAXE || p->head_dim % 4) return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
    static int raised;
    const size_t smem = (size_t)(2 * AQ + 2 * AK) * (p->head_dim + 4) * sizeof(float);
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute((const void *)k_attb_q, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)((2 * AQ + 2 * AK) * (TW * AMAXE + 4) * sizeof(float)));
        if (e) return (int)e;
        raised = 1;
    }
    const unsigned nb = p->batch > 1 ? (unsigned)p->batch : 1u;
    dim3 gq((unsigned)((p->T + AQ - 1) / AQ), (unsigned)p->n_heads, nb);
    PDL_LAUNCH(k_attb_q, gq, AW * TW, smem, st, dq, (float *)scratch, dout, q, k, v, *p);
    const size_t kvb = nb * (size_t)p->S * p->n_kv_heads * p->head_dim * sizeof(float);
    cudaError_t e;
    if ((e = cudaMemsetAsync(dk, 0, kvb, st)) || (e = cudaMemsetAsync(dv, 0, kvb, st))) return (int)e;
    static int raised_kv;
    const size_t smem_kv = (size_t)(2 * QC * p->head_dim + 3 * QC) * sizeof(float);
    if (!raised_kv) {
        if ((e = cudaFuncSetAttribute((const void *)k_attb_kv, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)((2 * QC * TW * AMAXE + 3 * QC) * sizeof(float)))))
            return (int)e;
        raised_kv = 1;
    }
    dim3 gk((unsigned)((p->S + BK - 1) / BK), (unsigned)p->n_heads, nb * (unsigned)((p->T + QC - 1) / QC));
    PDL_LAUNCH(k_attb_kv, gk, AW * TW, smem_kv, st, dk, dv, (const float *)scratch, dout, q, k, v, *p);
    return (int)cudaGetLastError();
}

extern "C" int cut_flash_ok(const bk_attn *p)
{
    const int d = p->head_dim;
    return p->fast && p->softcap == 0.0f && (d == 16 || d == 32 || d == 64 || d == 128) && p->T > 0 && p->S >= p->T &&
           p->n_kv_heads > 0 && p->n_heads % p->n_kv_heads == 0;
}

/* The kernels' view of p */
static fb_args fb_args_of(const bk_attn *p)
{
    const fb_args a = {p->T,      p->S,     p->n_heads, p->n_kv_heads, p->n_heads / p->n_kv_heads,
                       p->window, p->scale, p->scale * 1.4426950408889634f};
    return a;
}

/* dst = src rounded to bf16, n values (a multiple of 4) */
static int fb_prep(cudaStream_t st, uint16_t *dst, const float *src, size_t n)
{
    PDL_LAUNCH(k_fb_prep, grid_for(n / 4, 256), 256, 0, st, (uint2 *)dst, (const float4 *)src, n / 4);
    return 0;
}

/* The scratch of cut_flash_back: the statistics, the G heads' shares of
 * dk and dv (G > 1), q, dout, k and v in bf16 (the byte offsets of each
 * into o[0 .. 5], o[6]: the whole) */
static void fb_layout(const bk_attn *p, size_t *o)
{
    const size_t nb = p->batch > 1 ? (size_t)p->batch : 1, G = (size_t)(p->n_heads / p->n_kv_heads);
    const size_t nq = nb * p->T * p->n_heads * p->head_dim, nk = nb * p->S * p->n_kv_heads * p->head_dim;
    const size_t sz[6] = {3 * nb * p->n_heads * p->T * 4, G > 1 ? 2 * G * nk * 4 : 0, nq * 2, nq * 2, nk * 2, nk * 2};
    o[0] = 0;
    for (int i = 0; i < 6; i++) o[i + 1] = o[i] + (sz[i] + 255) / 256 * 256;
}

extern "C" size_t cut_flash_back_scratch(const bk_attn *p)
{
    size_t o[7];
    fb_layout(p, o);
    return o[6];
}

template <int D>
static int fb_launch(cudaStream_t st, float *dq, float *dk, float *dv, const float *dout, const float *q,
                     const float *k, const float *v, const bk_attn *p, void *scratch)
{
    const int nb = p->batch > 1 ? p->batch : 1, G = p->n_heads / p->n_kv_heads;
    const fb_args a = fb_args_of(p);
    constexpr size_t BP = (D + 8) * 2;
    const size_t smem_q = FB_R * 2 * BP + 2 * FB_T * 2 * BP, smem_kv = smem_q + 2 * 3 * FB_T * 4;
    static int raised;
    if (!raised) {
        cudaError_t e;
        if ((e = cudaFuncSetAttribute((const void *)k_fb_q<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem_q)) ||
            (e = cudaFuncSetAttribute((const void *)k_fb_kv<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem_kv)))
            return (int)e;
        raised = 1;
    }
    size_t o[7];
    fb_layout(p, o);
    char *sc = (char *)scratch;
    float *stats = (float *)sc, *pk = (float *)(sc + o[1]);
    uint16_t *qb = (uint16_t *)(sc + o[2]), *gb = (uint16_t *)(sc + o[3]), *kb = (uint16_t *)(sc + o[4]),
             *vb = (uint16_t *)(sc + o[5]);
    const size_t nq = (size_t)nb * p->T * p->n_heads * D, kn = (size_t)nb * p->S * p->n_kv_heads * D;
    float *pv = pk + (size_t)G * kn;
    int e;
    if ((e = fb_prep(st, qb, q, nq)) || (e = fb_prep(st, gb, dout, nq)) || (e = fb_prep(st, kb, k, kn)) ||
        (e = fb_prep(st, vb, v, kn)))
        return e;
    const dim3 gq((unsigned)((p->T + FB_R - 1) / FB_R), (unsigned)p->n_heads, (unsigned)nb),
        gk((unsigned)((p->S + FB_R - 1) / FB_R), (unsigned)p->n_heads, (unsigned)nb);
    PDL_LAUNCH(k_fb_q<D>, gq, FB_W * TW, smem_q, st, dq, stats, (const uint16_t *)qb, (const uint16_t *)gb,
               (const uint16_t *)kb, (const uint16_t *)vb, a);
    PDL_LAUNCH(k_fb_kv<D>, gk, FB_W * TW, smem_kv, st, G > 1 ? pk : dk, G > 1 ? pv : dv, (const float *)stats,
               (const uint16_t *)qb, (const uint16_t *)gb, (const uint16_t *)kb, (const uint16_t *)vb, a);
    if (G > 1)
        PDL_LAUNCH(k_fb_sum, grid_for(kn / 4, 256), 256, 0, st, (float4 *)dk, (float4 *)dv, (const float4 *)pk,
                   (const float4 *)pv, kn / 4, G);
    return (int)cudaGetLastError();
}

extern "C" int cut_flash_back(void *stream, float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const bk_attn *p, void *scratch)
{
    if (!cut_flash_ok(p)) return (int)cudaErrorNotSupported;
    cudaStream_t st = (cudaStream_t)stream;
    switch (p->head_dim) {
    case 16: return fb_launch<16>(st, dq, dk, dv, dout, q, k, v, p, scratch);
    case 32: return fb_launch<32>(st, dq, dk, dv, dout, q, k, v, p, scratch);
    case 64: return fb_launch<64>(st, dq, dk, dv, dout, q, k, v, p, scratch);
    default: return fb_launch<128>(st, dq, dk, dv, dout, q, k, v, p, scratch);
    }
}

/* q, k and v in bf16 (256-byte aligned) */
extern "C" size_t cut_flash_fwd_scratch(const bk_attn *p)
{
    const size_t nb = p->batch > 1 ? (size_t)p->batch : 1;
    const size_t nq = nb * p->T * p->n_heads * p->head_dim, nk = nb * p->S * p->n_kv_heads * p->head_dim;
    return (nq * 2 + 255) / 256 * 256 + 2 * ((nk * 2 + 255) / 256 * 256);
}

template <int D>
static int ff_launch(cudaStream_t st, float *out, const float *q, const float *k, const float *v, const bk_attn *p,
                     void *scratch)
{
    const int nb = p->batch > 1 ? p->batch : 1;
    const fb_args a = fb_args_of(p);
    constexpr size_t BP = (D + 8) * 2, smem = FB_R * BP + 2 * 2 * FF_K * BP;
    static int raised;
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute((const void *)k_ff<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e) return (int)e;
        raised = 1;
    }
    const size_t nq = (size_t)nb * p->T * p->n_heads * D, kn = (size_t)nb * p->S * p->n_kv_heads * D;
    uint16_t *qb = (uint16_t *)scratch, *kb = qb + (nq * 2 + 255) / 256 * 128, *vb = kb + (kn * 2 + 255) / 256 * 128;
    int e;
    if ((e = fb_prep(st, qb, q, nq)) || (e = fb_prep(st, kb, k, kn)) || (e = fb_prep(st, vb, v, kn))) return e;
    const dim3 gq((unsigned)((p->T + FB_R - 1) / FB_R), (unsigned)p->n_heads, (unsigned)nb);
    PDL_LAUNCH(k_ff<D>, gq, FB_W * TW, smem, st, out, (const uint16_t *)qb, (const uint16_t *)kb,
               (const uint16_t *)vb, a);
    return (int)cudaGetLastError();
}

extern "C" int cut_flash_fwd(void *stream, float *out, const float *q, const float *k, const float *v,
                             const bk_attn *p, void *scratch)
{
    if (!cut_flash_ok(p)) return (int)cudaErrorNotSupported;
    cudaStream_t st = (cudaStream_t)stream;
    switch (p->head_dim) {
    case 16: return ff_launch<16>(st, out, q, k, v, p, scratch);
    case 32: return ff_launch<32>(st, out, q, k, v, p, scratch);
    case 64: return ff_launch<64>(st, out, q, k, v, p, scratch);
    default: return ff_launch<128>(st, out, q, k, v, p, scratch);
    }
}
