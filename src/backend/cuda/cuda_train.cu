/* cuda_train.cu - the training ops of the cuda backend (backend.h,
 * "Training"): the backward of the norms, activations, softcap and
 * attention, the cross-entropy, AdamW and small vector ops.  The matrix
 * products' backward goes through cuBLAS (cuda.c).  Plain launches: the
 * training step is not recorded as a graph. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

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
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}

__global__ void k_scale(float *x, float a, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= a;
}

__global__ void k_sumsq(const float *x, size_t n, double *out)
{
    __shared__ float part[32];
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += x[i] * x[i];
    s = bsum(s, part);
    if (threadIdx.x == 0) atomicAdd(out, (double)s);
}

__global__ void k_softcap_back(float *dx, const float *dy, const float *y, size_t n, float cap)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float t = y[i] / cap;
        dx[i] = dy[i] * (1.0f - t * t);
    }
}

__global__ void k_glu_back(float *dg, float *du, const float *go, const float *g, const float *u, size_t n, int gelu)
{
    const float c = 0.7978845608028654f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = g[i], f, df;
        if (!gelu) {
            float s = 1.0f / (1.0f + expf(-x));
            f = x * s;
            df = s * (1.0f + x * (1.0f - s));
        } else {
            float th = tanhf(c * (x + 0.044715f * x * x * x));
            f = 0.5f * x * (1.0f + th);
            df = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * c * (1.0f + 3.0f * 0.044715f * x * x);
        }
        float gi = go[i], ui = u[i];
        dg[i] = gi * ui * df;
        du[i] = gi * f;
    }
}

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr_bc1, float decay, float b1,
                        float b2, float bc2, float eps)
{
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
                               int plus_one)
{
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
        o[i] = r * gr[i] * (vec_at(w, wdt, (size_t)i) + one) - k * xr[i];
}

/* ---- cross-entropy: one block a row ---- */
__global__ void k_cross_entropy(float *dx, float *nll, const float *x, const int32_t *target, size_t V, float scale)
{
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

/* ---- attention backward ----
 * One block of AB_WARPS warps per (query row, head); warp w takes keys lo
 * + w, lo + w + AB_WARPS, ...; lane l holds elements l, l + 32, ... of q,
 * dout and dq.  Three passes over the keys: the softmax's maximum and sum;
 * D = sum p_j (dout . v_j); then ds_j = p_j (dout . v_j - D) (through the
 * softcap), dq += scale ds_j k_j, and dk_j, dv_j by atomic adds. */
#define AB_WARPS 4
#define AB_MAXE 8

__device__ __forceinline__ float ab_score(const float *qv, const float *kr, int d, float scale, float softcap,
                                          float *raw_tanh)
{
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < AB_MAXE; i++) {
        int e = threadIdx.x % TW + TW * i;
        if (e < d) s += qv[i] * kr[e];
    }
    s = wsum(s) * scale;
    *raw_tanh = 0.0f;
    if (softcap > 0.0f) {
        float t = tanhf(s / softcap);
        *raw_tanh = t;
        s = softcap * t;
    }
    return s;
}

__global__ void __launch_bounds__(AB_WARPS * TW) k_attention_back(float *dq, float *dk, float *dv, const float *dout,
                                                                  const float *q, const float *k, const float *v,
                                                                  bk_attn p)
{
    __shared__ float sm[AB_WARPS], sl[AB_WARPS], sd[AB_WARPS], sdq[AB_WARPS][TW * AB_MAXE];
    const int t = blockIdx.x, h = blockIdx.y, d = p.head_dim, lane = threadIdx.x % TW, wi = threadIdx.x / TW;
    const int kvh = h / (p.n_heads / p.n_kv_heads), P = p.S - p.T + t;
    const size_t qs = (size_t)p.n_heads * d, ks = (size_t)p.n_kv_heads * d;
    int lo = 0;
    if (p.window > 0 && P - p.window + 1 > lo) lo = P - p.window + 1;
    const float *qr = q + (size_t)t * qs + (size_t)h * d, *gr = dout + (size_t)t * qs + (size_t)h * d;
    const float *kb = k + (size_t)kvh * d, *vb = v + (size_t)kvh * d;
    float qv[AB_MAXE], gv[AB_MAXE], acc[AB_MAXE];
#pragma unroll
    for (int i = 0; i < AB_MAXE; i++) {
        int e = lane + TW * i;
        qv[i] = e < d ? qr[e] : 0.0f;
        gv[i] = e < d ? gr[e] : 0.0f;
        acc[i] = 0.0f;
    }
    float th;
    /* pass 1: maximum and sum */
    float m = -INFINITY, l = 0.0f;
    for (int j = lo + wi; j <= P; j += AB_WARPS) {
        float s = ab_score(qv, kb + (size_t)j * ks, d, p.scale, p.softcap, &th);
        float mn = fmaxf(m, s);
        l = l * expf(m - mn) + expf(s - mn);
        m = mn;
    }
    if (lane == 0) {
        sm[wi] = m;
        sl[wi] = l;
    }
    __syncthreads();
    float M = -INFINITY, L = 0.0f;
    for (int w = 0; w < AB_WARPS; w++) M = fmaxf(M, sm[w]);
    for (int w = 0; w < AB_WARPS; w++)
        if (sl[w] > 0.0f) L += sl[w] * expf(sm[w] - M);
    const float invL = L > 0.0f ? 1.0f / L : 0.0f;
    /* pass 2: D = sum_j p_j (dout . v_j) */
    float D = 0.0f;
    for (int j = lo + wi; j <= P; j += AB_WARPS) {
        float s = ab_score(qv, kb + (size_t)j * ks, d, p.scale, p.softcap, &th);
        const float *vr = vb + (size_t)j * ks;
        float dp = 0.0f;
#pragma unroll
        for (int i = 0; i < AB_MAXE; i++) {
            int e = lane + TW * i;
            if (e < d) dp += gv[i] * vr[e];
        }
        D += expf(s - M) * invL * wsum(dp);
    }
    if (lane == 0) sd[wi] = D;
    __syncthreads();
    D = 0.0f;
    for (int w = 0; w < AB_WARPS; w++) D += sd[w];
    /* pass 3: the gradients */
    for (int j = lo + wi; j <= P; j += AB_WARPS) {
        const float *kr = kb + (size_t)j * ks, *vr = vb + (size_t)j * ks;
        float s = ab_score(qv, kr, d, p.scale, p.softcap, &th);
        float pj = expf(s - M) * invL, dp = 0.0f;
#pragma unroll
        for (int i = 0; i < AB_MAXE; i++) {
            int e = lane + TW * i;
            if (e < d) dp += gv[i] * vr[e];
        }
        float ds = pj * (wsum(dp) - D);
        if (p.softcap > 0.0f) ds *= 1.0f - th * th;
        float g = ds * p.scale;
        float *dkr = dk + (size_t)j * ks + (size_t)kvh * d, *dvr = dv + (size_t)j * ks + (size_t)kvh * d;
#pragma unroll
        for (int i = 0; i < AB_MAXE; i++) {
            int e = lane + TW * i;
            if (e < d) {
                acc[i] += g * kr[e];
                atomicAdd(dkr + e, g * qv[i]);
                atomicAdd(dvr + e, pj * gv[i]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < AB_MAXE; i++) sdq[wi][lane + TW * i] = acc[i];
    __syncthreads();
    float *o = dq + (size_t)t * qs + (size_t)h * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float x = 0.0f;
        for (int w = 0; w < AB_WARPS; w++) x += sdq[w][e];
        o[e] = x;
    }
}

/* ---- launchers ---- */

extern "C" int cut_axpy(void *stream, float *y, const float *x, float a, size_t n)
{
    if (!n) return 0;
    k_axpy<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(y, x, a, n);
    return (int)cudaGetLastError();
}

extern "C" int cut_scale(void *stream, float *x, float a, size_t n)
{
    if (!n) return 0;
    k_scale<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(x, a, n);
    return (int)cudaGetLastError();
}

extern "C" int cut_sumsq(void *stream, const float *x, size_t n, double *out_dev)
{
    cudaError_t e = cudaMemsetAsync(out_dev, 0, sizeof(double), (cudaStream_t)stream);
    if (e) return (int)e;
    if (!n) return 0;
    unsigned g = grid_for(n, 256);
    if (g > 1024) g = 1024;
    k_sumsq<<<g, 256, 0, (cudaStream_t)stream>>>(x, n, out_dev);
    return (int)cudaGetLastError();
}

extern "C" int cut_softcap_back(void *stream, float *dx, const float *dy, const float *y, size_t n, float cap)
{
    if (!n) return 0;
    k_softcap_back<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(dx, dy, y, n, cap);
    return (int)cudaGetLastError();
}

extern "C" int cut_glu_back(void *stream, float *dg, float *du, const float *dout, const float *g, const float *u,
                            size_t n, int gelu)
{
    if (!n) return 0;
    k_glu_back<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(dg, du, dout, g, u, n, gelu);
    return (int)cudaGetLastError();
}

extern "C" int cut_adamw(void *stream, float *p, const float *g, float *m, float *v, size_t n, const bk_adamw *o)
{
    if (!n) return 0;
    const double bc1 = 1.0 - pow((double)o->beta1, (double)o->step), bc2 = sqrt(1.0 - pow((double)o->beta2, (double)o->step));
    k_adamw<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(p, g, m, v, n, (float)(o->lr / bc1),
                                                                (float)(1.0 - (double)o->lr * o->weight_decay),
                                                                o->beta1, o->beta2, (float)bc2, o->eps);
    return (int)cudaGetLastError();
}

extern "C" int cut_rmsnorm_back(void *stream, float *dx, const float *dy, const float *x, const bk_weight *w, int rows,
                                int dim, float eps, int plus_one)
{
    if (rows <= 0) return 0;
    int threads = dim >= 1024 ? 1024 : (dim + TW - 1) / TW * TW;
    k_rmsnorm_back<<<rows, threads, 0, (cudaStream_t)stream>>>(dx, dy, x, w->data, (int)w->dtype, dim, eps, plus_one);
    return (int)cudaGetLastError();
}

extern "C" int cut_cross_entropy(void *stream, float *dx, float *nll, const float *x, const int32_t *target, int rows,
                                 size_t V, float scale)
{
    if (rows <= 0) return 0;
    k_cross_entropy<<<rows, 512, 0, (cudaStream_t)stream>>>(dx, nll, x, target, V, scale);
    return (int)cudaGetLastError();
}

extern "C" int cut_attention_back(void *stream, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                  const float *k, const float *v, const bk_attn *p)
{
    if (p->T <= 0) return 0;
    if (p->head_dim > TW * AB_MAXE) return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
    size_t kvb = (size_t)p->S * p->n_kv_heads * p->head_dim * sizeof(float);
    cudaError_t e = cudaMemsetAsync(dk, 0, kvb, st);
    if (!e) e = cudaMemsetAsync(dv, 0, kvb, st);
    if (e) return (int)e;
    dim3 grid((unsigned)p->T, (unsigned)p->n_heads);
    k_attention_back<<<grid, AB_WARPS * TW, 0, st>>>(dq, dk, dv, dout, q, k, v, *p);
    return (int)cudaGetLastError();
}
