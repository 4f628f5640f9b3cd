/* qgemm.c - quantized products: dispatch, the activation transform, the
 * blocked drivers for M > Q_SMALL_M, and the portable C kernels.  The AVX2
 * and AVX-512 kernels are in qgemm_avx2.c and qgemm_avx512.c; see qgemm.h
 * for the design. */
#include "backend/cpu/qgemm.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "core/dtype.h"

int q_layout_ok(int bits, int group_size, int64_t cols)
{
    int b = bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
    int g = group_size == 32 || group_size == 64 || group_size == 128;
    return b && g && cols > 0 && cols % group_size == 0;
}

static float scalar(const void *base, infer_dtype t, size_t i)
{
    float f;
    dtype_to_f32(&f, (const unsigned char *)base + i * dtype_size(t), t, 1);
    return f;
}

/* Where byte i of row r's packed values lies (either layout), and the
 * scale and bias of group g of row r. */
static size_t q_byte_at(const bk_weight *w, int64_t r, size_t i)
{
    if (!w->tiled) return (size_t)r * bk_qrow_bytes(w) + i;
    return q_tile_word_at(w, r / BK_TILE_ROWS, i / 4) + (size_t)(r % BK_TILE_ROWS) * 4 + i % 4;
}

static void q_group_sb(const bk_weight *w, int64_t r, size_t g, float *s, float *b)
{
    if (!w->tiled) {
        size_t i = (size_t)r * (size_t)(w->cols / w->group_size) + g;
        *s = scalar(w->scales, w->sdtype, i);
        *b = scalar(w->biases, w->sdtype, i);
        return;
    }
    const unsigned char *p = (const unsigned char *)w->data + q_tile_sb_at(w, r / BK_TILE_ROWS, g);
    *s = scalar(p, w->sdtype, (size_t)(r % BK_TILE_ROWS));
    *b = scalar(p, w->sdtype, (size_t)(r % BK_TILE_ROWS + BK_TILE_ROWS));
}

void q_dequant_row(const bk_weight *w, int64_t r, int64_t c0, int64_t n, float *out)
{
    const uint8_t *data = (const uint8_t *)w->data;
    if (w->tiled) { /* 4 or 8 bits: a value in one byte; a group at a time */
        const int gs = w->group_size, vpw = 32 / w->bits;
        const size_t gw = q_tile_gwords(w), es = dtype_size(w->sdtype);
        const uint8_t *tile = data + q_tile_word_at(w, r / BK_TILE_ROWS, 0) + (size_t)(r % BK_TILE_ROWS) * 4;
        const size_t k = (size_t)(r % BK_TILE_ROWS), gbytes = q_tile_gbytes(w);
        for (int64_t c = c0; c < c0 + n;) {
            const int64_t g = c / gs, end = (g + 1) * gs < c0 + n ? (g + 1) * gs : c0 + n;
            const uint8_t *words = tile + (size_t)g * gbytes, *sb = tile - k * 4 + (size_t)g * gbytes + gw * 64;
            const float sg = scalar(sb, w->sdtype, k), bg = scalar(sb + BK_TILE_ROWS * es, w->sdtype, k);
            for (; c < end; c++) {
                const int64_t cc = c - g * gs;
                const unsigned v = words[(size_t)(cc / vpw) * BK_TILE_ROWS * 4 + (size_t)(cc % vpw) * w->bits / 8];
                const unsigned q = w->bits == 8 ? v : (v >> (4 * (cc % 2))) & 15u;
                out[c - c0] = sg * (float)q + bg;
            }
        }
        return;
    }
    unsigned mask = (1u << w->bits) - 1u;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = c0 + i;
        size_t bit = (size_t)c * (size_t)w->bits;
        /* a value spans at most two bytes (bits <= 8; tiled: 4 or 8, in one) */
        unsigned v = data[q_byte_at(w, r, bit >> 3)];
        if ((bit & 7) + (size_t)w->bits > 8) v |= (unsigned)data[q_byte_at(w, r, (bit >> 3) + 1)] << 8;
        unsigned q = (v >> (bit & 7)) & mask;
        float sg, bg;
        q_group_sb(w, r, (size_t)(c / w->group_size), &sg, &bg);
        out[i] = sg * (float)q + bg;
    }
}

/* ---- The tiled layout ---- */

int q_tile_ok(const bk_weight *w)
{
    return w->dtype == DT_U32 && !w->tiled && (w->bits == 4 || w->bits == 8) &&
           q_layout_ok(w->bits, w->group_size, w->cols) && w->rows > 0 && w->rows % BK_TILE_ROWS == 0;
}

void q_tile_pack(const bk_weight *w, int64_t t0, int64_t t1, void *data)
{
    const size_t rb = bk_qrow_bytes(w), ng = (size_t)(w->cols / w->group_size), gw = q_tile_gwords(w);
    const size_t es = dtype_size(w->sdtype), gbytes = q_tile_gbytes(w);
    const uint8_t *src = w->data;
    for (int64_t t = t0; t < t1; t++) {
        uint8_t *dst = (uint8_t *)data + q_tile_word_at(w, t, 0);
        for (size_t g = 0; g < ng; g++, dst += gbytes)
            for (int r = 0; r < BK_TILE_ROWS; r++) {
                const size_t row = (size_t)t * BK_TILE_ROWS + (size_t)r;
                const uint8_t *q = src + row * rb + g * gw * 4;
                for (size_t j = 0; j < gw; j++) memcpy(dst + (j * BK_TILE_ROWS + (size_t)r) * 4, q + 4 * j, 4);
                memcpy(dst + gw * 64 + (size_t)r * es, (const uint8_t *)w->scales + (row * ng + g) * es, es);
                memcpy(dst + gw * 64 + (size_t)(r + BK_TILE_ROWS) * es, (const uint8_t *)w->biases + (row * ng + g) * es,
                       es);
            }
    }
}

size_t q_untile_bytes(const bk_weight *w, int n)
{
    size_t ng = (size_t)(w->cols / w->group_size);
    return (size_t)n * (bk_qrow_bytes(w) + 2 * ng * dtype_size(w->sdtype)) + 64;
}

uint8_t *q_untile_view(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view)
{
    const size_t rb = bk_qrow_bytes(w), ng = (size_t)(w->cols / w->group_size), es = dtype_size(w->sdtype);
    uint8_t *data = buf;
    *view = *w;
    view->data = data;
    view->scales = data + (size_t)n * rb;
    view->biases = data + (size_t)n * rb + (size_t)n * ng * es;
    view->rows = n;
    view->tiled = 0;
    return data;
}

void q_untile_sb_rows(const bk_weight *w, int64_t r0, int64_t ra, int64_t rz, const bk_weight *view)
{
    const size_t ng = (size_t)(w->cols / w->group_size), es = dtype_size(w->sdtype), gbytes = q_tile_gbytes(w);
    uint8_t *sc = (uint8_t *)(uintptr_t)view->scales, *bi = (uint8_t *)(uintptr_t)view->biases;
    for (int64_t r = ra; r < rz; r++) {
        const uint8_t *p = (const uint8_t *)w->data + q_tile_sb_at(w, r / BK_TILE_ROWS, 0);
        const size_t i = (size_t)(r - r0), k = (size_t)(r % BK_TILE_ROWS);
        for (size_t g = 0; g < ng; g++, p += gbytes) {
            memcpy(sc + (i * ng + g) * es, p + k * es, es);
            memcpy(bi + (i * ng + g) * es, p + (k + BK_TILE_ROWS) * es, es);
        }
    }
}

void q_untile(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view)
{
    const size_t rb = bk_qrow_bytes(w), wpr = rb / 4;
    uint8_t *data = q_untile_view(w, r0, n, buf, view);
    q_untile_sb_rows(w, r0, r0, r0 + n, view);
    for (int i = 0; i < n; i++) {
        for (size_t j = 0; j < wpr; j++)
            memcpy(data + (size_t)i * rb + 4 * j, (const uint8_t *)w->data + q_byte_at(w, r0 + i, 4 * j), 4);
    }
}

#if defined(__x86_64__) || defined(__i386__)
/* 1 if the cpu has AVX-512 VBMI (found once) */
static _Atomic int vbmi = -1;
static int have_vbmi(void)
{
    int v = atomic_load_explicit(&vbmi, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vbmi");
        atomic_store_explicit(&vbmi, v, memory_order_relaxed);
    }
    return v;
}
#endif

void q_unpack_u8(const uint8_t *row, int bits, int64_t c0, int n, uint8_t *out)
{
    if (bits == 8) {
        memcpy(out, row + c0, (size_t)n);
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    if (bits != 4 && n >= 64 && have_vbmi()) {
        int m = n & ~63;
        q_unpack_vbmi(row, bits, c0, m, out);
        c0 += m;
        out += m;
        n -= m;
    }
#endif
    /* 8 values fill `bits` bytes */
    const uint8_t *p = row + (size_t)c0 * (size_t)bits / 8;
    unsigned mask = (1u << bits) - 1u;
    for (int i = 0; i < n; i += 8, p += bits) {
        uint64_t v = 0;
        for (int b = bits - 1; b >= 0; b--) v = v << 8 | p[b];
        for (int j = 0; j < 8; j++) out[i + j] = (uint8_t)((v >> (j * bits)) & mask);
    }
}

void q_load_f32(const void *base, infer_dtype t, size_t i0, size_t n, float *out)
{
    dtype_to_f32(out, (const unsigned char *)base + i0 * dtype_size(t), t, n);
}

/* ---- Dispatch ---- */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* cpuid leaf 7 bits that not every compiler's __builtin_cpu_supports
 * knows. */
static int cpuid_bit(unsigned leaf, unsigned sub, int reg, unsigned bit)
{
    unsigned r[4];
    if ((unsigned)__get_cpuid_max(0, NULL) < leaf) return 0;
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    return (r[reg] >> bit) & 1u;
}
#endif

int q_isa_supported(q_isa isa)
{
    if (isa == Q_ISA_C) return 1;
#if defined(__x86_64__) || defined(__i386__)
    if (!gemm_isa_supported(GEMM_ISA_AVX2)) return 0;
    switch (isa) {
    case Q_ISA_AVX2:
        return 1;
    case Q_ISA_AVX2_VNNI:
        return cpuid_bit(7, 1, 0, 4); /* eax bit 4: AVX-VNNI */
    case Q_ISA_AVX512:
        __builtin_cpu_init();
        return gemm_isa_supported(GEMM_ISA_AVX512) && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && cpuid_bit(7, 0, 2, 11); /* ecx bit 11: AVX512_VNNI */
    default:
        return 0;
    }
#else
    return 0;
#endif
}

/* Found once (cpuid traps to the hypervisor in a virtual machine):
 * whether the tiled decode product reads one tile at a time rather than
 * two side by side (q_tile_drive).  Two streams a thread gave +20% on a
 * Zen 4 (session 11); on a Zen 5 (AMD family 0x1a) one is faster:
 * bench_decode llama3.2-1b and gemma3-1b at 4 bits with --int8, builds
 * alternating at a 48 GB/s read, 58.6-59.6 and 71.0 tok/s against
 * 53.6-55.5 and 65.8-66.4 (session 15). */
static _Atomic int one_stream = -1;

static int tile_one_stream(void)
{
    int v = atomic_load_explicit(&one_stream, memory_order_relaxed);
    if (v >= 0) return v;
    v = 0;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u /* "Auth"enticAMD */ && __get_cpuid(1, &a, &b, &c, &d)) {
        const unsigned fam = (a >> 8) & 0xfu;
        v = (fam == 0xfu ? fam + ((a >> 20) & 0xffu) : fam) >= 0x1au;
    }
#endif
    atomic_store_explicit(&one_stream, v, memory_order_relaxed);
    return v;
}

/* Found once, as above. */
static _Atomic int best_isa = -1;

q_isa q_isa_best(void)
{
    int b = atomic_load_explicit(&best_isa, memory_order_relaxed);
    if (b >= 0) return (q_isa)b;
    b = Q_ISA_C;
    for (int i = Q_ISA_COUNT - 1; i > 0; i--)
        if (q_isa_supported((q_isa)i)) {
            b = i;
            break;
        }
    atomic_store_explicit(&best_isa, b, memory_order_relaxed);
    return (q_isa)b;
}

const char *q_isa_name(q_isa isa)
{
    static const char *const names[Q_ISA_COUNT] = {"c", "avx2", "avx2vnni", "avx512"};
    return (unsigned)isa < Q_ISA_COUNT ? names[isa] : "?";
}

static const q_kernels *kernels_of(q_isa isa)
{
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case Q_ISA_AVX2:
        return &q_kernels_avx2;
    case Q_ISA_AVX2_VNNI:
        return &q_kernels_avx2_vnni;
    case Q_ISA_AVX512:
        return &q_kernels_avx512;
#endif
    default:
        return &q_kernels_c;
    }
}

/* ---- Scratch carving ---- */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }
static int round_up(int a, int b) { return (a + b - 1) / b * b; }

/* The next n bytes of *p, 64-byte aligned (p advances). */
static void *carve(unsigned char **p, size_t n)
{
    uintptr_t a = ((uintptr_t)*p + 63) & ~(uintptr_t)63;
    *p = (unsigned char *)a + n;
    return (void *)a;
}

/* ---- The activation transform ---- */

static int uses_xp(int M, int int8, int bits) { return !int8 && M <= Q_SMALL_M && bits == 4; }

size_t q_act_bytes(int M, int K, const bk_weight *w, int int8)
{
    size_t m = (size_t)(M > 0 ? M : 1), k = (size_t)(K > 0 ? K : 1);
    size_t n = 64;
    if (uses_xp(M, int8, w->bits)) n += align64(m * k * sizeof(float));
    if (int8) {
        size_t blocks = (k + Q_ABLK - 1) / Q_ABLK, groups = k / (size_t)w->group_size + 1;
        n += align64(m * k) + align64(m * blocks * 4) * 2 + align64(m * groups * 4);
        if (M <= Q_SMALL_M) n += 2 * align64(m * (k / 4 + 16) * 4);
        n += 2 * align64(m * groups * 4) + align64(m * k) + 2 * align64(m * blocks * 4);
    }
    return n;
}

void q_act_init(q_act *x, void *buf, int M, int K, const float *A, size_t lda, const bk_weight *w, int int8)
{
    memset(x, 0, sizeof *x);
    x->M = M;
    x->K = K;
    x->int8 = int8;
    x->small = M <= Q_SMALL_M;
    x->bits = w->bits;
    x->group_size = w->group_size;
    x->tiled = w->tiled;
    x->A = A;
    x->lda = lda;
    unsigned char *p = buf;
    size_t m = (size_t)(M > 0 ? M : 1), k = (size_t)(K > 0 ? K : 1);
    if (uses_xp(M, int8, w->bits)) x->xp = carve(&p, m * k * sizeof(float));
    if (int8) {
        size_t blocks = (k + Q_ABLK - 1) / Q_ABLK, groups = k / (size_t)w->group_size + 1;
        x->x8 = carve(&p, m * k);
        x->d = carve(&p, m * blocks * 4);
        x->s8 = carve(&p, m * blocks * 4);
        x->xs = carve(&p, m * groups * 4);
        if (x->small) x->dv = carve(&p, m * (k / 4 + 16) * 4);
        x->xe = carve(&p, m * groups * 4);
        x->r8 = carve(&p, m * k);
        x->s8r = carve(&p, m * blocks * 4);
        x->d2 = carve(&p, m * blocks * 4);
        if (x->small) x->dv2 = carve(&p, m * (k / 4 + 16) * 4);
        x->xc = carve(&p, m * groups * 4);
    }
}

/* Chunk of the exact 4-bit order: values per chunk, words per chunk. */
static int xp_chunk(int gs) { return gs == 32 ? 32 : 64; }

/* Value index of slot s of an exact 4-bit chunk of W words. */
static int xp_value(int s, int W)
{
    int i = s / 16, l = s % 16;
    return 8 * (l % W) + (16 / W) * i + l / W;
}

void q_act_rows_c(const q_act *x, int m0, int m1)
{
    const int K = x->K, gs = x->group_size;
    for (int m = m0; m < m1; m++) {
        const float *a = x->A + (size_t)m * x->lda;
        if (!x->int8) {
            if (!x->xp) continue;
            float *o = x->xp + (size_t)m * K;
            int n = xp_chunk(gs), W = n / 8;
            for (int c = 0; c < K; c += n)
                for (int s = 0; s < n; s++) o[c + s] = a[c + xp_value(s, W)];
            continue;
        }
        int blocks = K / Q_ABLK;
        int8_t *q = x->x8 + (size_t)m * K;
        float *d = x->d + (size_t)m * blocks;
        int32_t *s8 = x->s8 + (size_t)m * blocks;
        int chunked = q_act_chunked(x);
        for (int b = 0; b < blocks; b++) {
            const float *v = a + (size_t)b * Q_ABLK;
            float amax = 0.0f;
            for (int i = 0; i < Q_ABLK; i++) amax = fmaxf(amax, fabsf(v[i]));
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            d[b] = amax / 127.0f;
            int32_t sum = 0;
            for (int i = 0; i < Q_ABLK; i++) {
                float r = rintf(v[i] * id);
                int qi = r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r;
                sum += qi;
                int at = b * Q_ABLK + i; /* natural slot */
                if (chunked) {
                    /* the slot of value at within its chunk */
                    int n, c0 = q4_chunk(K, at, &n), vi = at - c0;
                    at = c0 + (vi % 2 ? n / 2 + vi / 2 : vi / 2);
                }
                q[at] = (int8_t)qi;
            }
            s8[b] = sum;
        }
        float *xs = x->xs + (size_t)m * (K / gs);
        for (int g = 0; g < K / gs; g++) {
            float s = 0.0f;
            for (int i = 0; i < gs; i++) s += a[g * gs + i];
            xs[g] = s;
        }
        if (x->dv) {
            float *dv = x->dv + (size_t)m * (K / 4 + 16);
            for (int c = 0, n; c < K; c += n) {
                if (chunked)
                    q4_chunk(K, c, &n);
                else
                    n = K - c >= 64 ? 64 : 32;
                for (int j = 0; j < 16; j++) {
                    int blk = c / Q_ABLK;
                    if (n == 128) blk += j >> 2;
                    if (n == 64) blk += chunked ? (j & 7) >> 2 : j >> 3;
                    dv[c / 4 + j] = d[blk];
                }
            }
        }
    }
}

/* The residual plane of rows [m0, m1) (after x8, d, s8, xs): each value's
 * x8 again, as the kernels round it (id = 127 / amax, round to nearest
 * even), what it left (within 1/2) times 256 rounded to int8, in x8's
 * layout; then s8r, d2, dv2, xe and xc. */
static void residual_rows(const q_act *x, int m0, int m1)
{
    const int K = x->K, nb = K / Q_ABLK, ng = K / x->group_size, per = x->group_size / Q_ABLK;
    const int chunked = q_act_chunked(x);
    for (int m = m0; m < m1; m++) {
        const float *a = x->A + (size_t)m * x->lda;
        int8_t *r8 = x->r8 + (size_t)m * K;
        const float *d = x->d + (size_t)m * nb;
        for (int b = 0; b < nb; b++) {
            const float *v = a + (size_t)b * Q_ABLK;
            float amax = 0.0f;
            for (int i = 0; i < Q_ABLK; i++) {
                float t = fabsf(v[i]);
                amax = t > amax ? t : amax;
            }
            const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            int8_t rb[Q_ABLK];
            int32_t sum = 0;
            for (int i = 0; i < Q_ABLK; i++) {
                float t = v[i] * id, r = (t - rintf(t)) * 256.0f;
                r = rintf(r);
                int ri = r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r;
                rb[i] = (int8_t)ri;
                sum += ri;
            }
            x->s8r[(size_t)m * nb + b] = sum;
            x->d2[(size_t)m * nb + b] = d[b] * (1.0f / 256.0f);
            if (!chunked) {
                memcpy(r8 + (size_t)b * Q_ABLK, rb, Q_ABLK);
                continue;
            }
            /* the chunk order: even values to the first half, odd to the second */
            int n, c0 = q4_chunk(K, b * Q_ABLK, &n), h = (b * Q_ABLK - c0) / 2;
            for (int j = 0; j < Q_ABLK / 2; j++) {
                r8[c0 + h + j] = rb[2 * j];
                r8[c0 + n / 2 + h + j] = rb[2 * j + 1];
            }
        }
        if (x->dv2) {
            const float *dv = x->dv + (size_t)m * (K / 4 + 16);
            float *dv2 = x->dv2 + (size_t)m * (K / 4 + 16);
            for (int i = 0; i < K / 4 + 16; i++) dv2[i] = dv[i] * (1.0f / 256.0f);
        }
        const float *xs = x->xs + (size_t)m * ng;
        const int32_t *s8 = x->s8 + (size_t)m * nb, *s8r = x->s8r + (size_t)m * nb;
        float *xe = x->xe + (size_t)m * ng, *xc = x->xc + (size_t)m * ng;
        const float mid = q_mid(x->bits);
        for (int g = 0; g < ng; g++) {
            float sum = 0.0f;
            for (int b = g * per; b < (g + 1) * per; b++) sum += d[b] * ((float)s8[b] + (float)s8r[b] * (1.0f / 256.0f));
            xe[g] = xs[g] - sum;
            xc[g] = mid * xe[g];
        }
    }
}

/* x8 and r8 of rows [m0, m1) from the natural order to the tiled one:
 * each 8 values, the even ones then the odd ones. */
static void tile_order_rows(const q_act *x, int m0, int m1)
{
    for (int m = m0; m < m1; m++)
        for (int pl = 0; pl < 2; pl++) {
            int8_t *v = (pl ? x->r8 : x->x8) + (size_t)m * x->K;
            for (int c = 0; c < x->K; c += 8) {
                int8_t t[8];
                for (int i = 0; i < 4; i++) {
                    t[i] = v[c + 2 * i];
                    t[4 + i] = v[c + 2 * i + 1];
                }
                memcpy(v + c, t, 8);
            }
        }
}

void q_act_rows_isa(q_isa isa, const q_act *x, int m0, int m1)
{
    const q_kernels *k = kernels_of(isa);
    int both = 0; /* the kernel made the residual plane and the order too */
    if (k->act_rows && x->int8)
        both = k->act_rows(x, m0, m1);
    else
        q_act_rows_c(x, m0, m1);
    if (x->int8 && !both) {
        residual_rows(x, m0, m1);
        if (x->small && x->tiled && x->bits == 4) tile_order_rows(x, m0, m1);
    }
}

q_act q_act_residual(const q_act *x)
{
    q_act r = *x;
    r.x8 = x->r8;
    r.s8 = x->s8r;
    r.d = x->d2;
    r.dv = x->dv2;
    r.xs = x->xc;
    r.xe = NULL;
    return r;
}


void q_act_rows(const q_act *x, int m0, int m1) { q_act_rows_isa(q_isa_best(), x, m0, m1); }

/* ---- Blocked drivers for M > Q_SMALL_M ---- */

enum {
    F_KC = 256, F_NC = 256, /* exact: blocks of W dequantized at once */
    I_KC = 512, I_NC = 128  /* int8 */
};

static int min_i(int a, int b) { return a < b ? a : b; }

static size_t f32_scratch(const q_kernels *k, int M, int K)
{
    const gemm_kernels *g = k->f32;
    size_t kc = (size_t)min_i(K, F_KC), mc = (size_t)min_i(round_up(M, g->mr), g->mc);
    return align64(mc * kc * 4) + align64((size_t)F_NC * kc * 4) + align64((size_t)round_up(F_NC, g->nr) * kc * 4) +
           64;
}

/* exact: W dequantized block by block and packed for the float micro-kernels */
static void gemm_f32(const q_kernels *k, const q_act *x, const bk_weight *w, int64_t n0, int N, float *C,
                     size_t ldc, unsigned char *scratch)
{
    const gemm_kernels *g = k->f32;
    const int M = x->M, K = x->K;
    const int kc = min_i(K, F_KC), mc = min_i(round_up(M, g->mr), g->mc);
    unsigned char *p = scratch;
    float *Ap = carve(&p, (size_t)mc * kc * 4);
    float *fb = carve(&p, (size_t)F_NC * kc * 4);
    float *Bp = carve(&p, (size_t)round_up(F_NC, g->nr) * kc * 4);
    for (int ic = 0; ic < M; ic += mc) {
        int mcur = min_i(mc, M - ic);
        for (int pc = 0; pc < K; pc += kc) {
            int kcur = min_i(kc, K - pc);
            g->pack_a(mcur, kcur, x->A + (size_t)ic * x->lda + pc, x->lda, Ap);
            for (int jc = 0; jc < N; jc += F_NC) {
                int ncur = min_i(F_NC, N - jc);
                if (k->dequant_pack && (w->bits == 4 || w->bits == 8) && kcur % 16 == 0) {
                    k->dequant_pack(w, n0 + jc, ncur, pc, kcur, Bp);
                } else {
                    k->dequant(w, n0 + jc, ncur, pc, kcur, fb, (size_t)kcur);
                    g->pack_b(ncur, kcur, (const unsigned char *)fb, DT_F32, (size_t)kcur * 4, Bp);
                }
                for (int ir = 0; ir < mcur; ir += g->mr) {
                    int mm = min_i(g->mr, mcur - ir);
                    for (int jr = 0; jr < ncur; jr += g->nr)
                        g->tile(mm, min_i(g->nr, ncur - jr), kcur, Ap + (size_t)ir * kcur, Bp + (size_t)jr * kcur,
                                C + (size_t)(ic + ir) * ldc + jc + jr, ldc, pc > 0);
                }
            }
        }
    }
}

static size_t i8_scratch(const q_kernels *k, int M, int K, int gs)
{
    size_t kc = (size_t)min_i(K, I_KC), mp = (size_t)round_up(M, k->mr), np = (size_t)round_up(I_NC, k->nr);
    return 2 * (align64(mp * kc) + 2 * align64(mp * (kc / Q_ABLK) * 4) + align64(mp * (kc / (size_t)gs) * 4)) +
           align64((size_t)I_NC * kc) + align64(np * kc) + 2 * align64(np * (kc / (size_t)gs) * 4) +
           align64((size_t)(K / gs) * 4) + 64;
}

/* Rows [r0, r0 + n) of w, columns [c0, c0 + kc), unpacked to one byte a
 * value into ub (row stride kc). */
static void unpack_rows(const q_kernels *k, const bk_weight *w, int64_t r0, int n, int c0, int kc, uint8_t *ub)
{
    const size_t rb = bk_qrow_bytes(w);
    for (int r = 0; r < n; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r0 + r) * rb;
        if (w->bits == 4 && k->unpack4 && kc % 64 == 0)
            k->unpack4(row, c0, kc, ub + (size_t)r * kc);
        else
            q_unpack_u8(row, w->bits, c0, kc, ub + (size_t)r * kc);
    }
}

/* The scales and biases of rows [r0, r0 + n) for the ng groups from column
 * c0, as float32 panels of nr rows, [ng][nr] each; rows n .. np (np a
 * multiple of nr) zero.  row_f: scratch of ng floats. */
static void panel_sb(const bk_weight *w, int64_t r0, int n, int np, int nr, int c0, int ng, float *bs, float *bb,
                     float *row_f)
{
    const size_t sg = (size_t)(w->cols / w->group_size);
    for (int r = 0; r < np; r++) {
        int pj = r / nr, j = r % nr;
        float *s = bs + (size_t)pj * ng * nr + j, *b = bb + (size_t)pj * ng * nr + j;
        if (r < n) {
            size_t g0 = (size_t)(r0 + r) * sg + (size_t)(c0 / w->group_size);
            q_load_f32(w->scales, w->sdtype, g0, (size_t)ng, row_f);
            for (int gi = 0; gi < ng; gi++) s[(size_t)gi * nr] = row_f[gi];
            q_load_f32(w->biases, w->sdtype, g0, (size_t)ng, row_f);
            for (int gi = 0; gi < ng; gi++) b[(size_t)gi * nr] = row_f[gi];
        } else {
            for (int gi = 0; gi < ng; gi++) s[(size_t)gi * nr] = b[(size_t)gi * nr] = 0.0f;
        }
    }
}

/* int8: A packed as int8 once per block of K, W unpacked to bytes and
 * packed for the integer micro-kernel */
static void gemm_i8(const q_kernels *k, const q_act *x, const bk_weight *w, int64_t n0, int N, float *C,
                    size_t ldc, unsigned char *scratch)
{
    const int M = x->M, K = x->K, gs = x->group_size, mr = k->mr, nr = k->nr;
    const int kc = min_i(K, I_KC), mp = round_up(M, mr);
    const int blocks = K / Q_ABLK, groups = K / gs;
    unsigned char *p = scratch;
    /* A's two planes (x8, then the residual: qgemm.h), packed alike */
    int8_t *Ap[2];
    float *ad[2], *ax[2];
    int32_t *as[2];
    for (int pl = 0; pl < 2; pl++) {
        Ap[pl] = carve(&p, (size_t)mp * kc);
        ad[pl] = carve(&p, (size_t)mp * (kc / Q_ABLK) * 4);
        as[pl] = carve(&p, (size_t)mp * (kc / Q_ABLK) * 4);
        ax[pl] = carve(&p, (size_t)mp * (kc / gs) * 4);
    }
    uint8_t *ub = carve(&p, (size_t)I_NC * kc);
    uint8_t *Bp = carve(&p, (size_t)round_up(I_NC, nr) * kc);
    float *bs = carve(&p, (size_t)round_up(I_NC, nr) * (kc / gs) * 4);
    float *bb = carve(&p, (size_t)round_up(I_NC, nr) * (kc / gs) * 4);
    float *row_f = carve(&p, (size_t)groups * 4);
    const q_act res = q_act_residual(x);
    for (int pc = 0; pc < K; pc += kc) {
        const int kcur = min_i(kc, K - pc), nb = kcur / Q_ABLK, ng = kcur / gs;
        /* A: every row, columns [pc, pc + kcur) */
        const int fast_a = mr == 4 && k->pack_a4_i8 && kcur % 64 == 0;
        for (int pl = 0; pl < 2; pl++) {
            const q_act *xa = pl ? &res : x;
            for (int ip = 0; ip < mp; ip += mr) {
                int8_t *ap = Ap[pl] + (size_t)ip * kcur;
                if (fast_a) {
                    const int8_t *rows[4];
                    for (int i = 0; i < 4; i++) rows[i] = ip + i < M ? xa->x8 + (size_t)(ip + i) * K + pc : NULL;
                    k->pack_a4_i8(kcur, rows, ap);
                }
                for (int i = 0; i < mr; i++) {
                    const int m = ip + i;
                    const int8_t *src = m < M ? xa->x8 + (size_t)m * K + pc : NULL;
                    for (int k4 = 0; k4 < kcur / 4 && !fast_a; k4++) {
                        int8_t *dst = ap + ((size_t)k4 * mr + i) * 4;
                        if (src)
                            memcpy(dst, src + 4 * k4, 4);
                        else
                            memset(dst, 0, 4);
                    }
                    const size_t pb = (size_t)ip / mr * nb, pg = (size_t)ip / mr * ng;
                    for (int b = 0; b < nb; b++) {
                        ad[pl][(pb + b) * mr + i] = src ? xa->d[(size_t)m * blocks + pc / Q_ABLK + b] : 0.0f;
                        as[pl][(pb + b) * mr + i] = src ? xa->s8[(size_t)m * blocks + pc / Q_ABLK + b] : 0;
                    }
                    for (int gi = 0; gi < ng; gi++)
                        ax[pl][(pg + gi) * mr + i] = src ? xa->xs[(size_t)m * groups + pc / gs + gi] : 0.0f;
                }
            }
        }
        for (int jc = 0; jc < N; jc += I_NC) {
            const int ncur = min_i(I_NC, N - jc), np = round_up(ncur, nr);
            unpack_rows(k, w, n0 + jc, ncur, pc, kcur, ub);
            k->pack_b_i8(ncur, kcur, ub, (size_t)kcur, Bp);
            panel_sb(w, n0 + jc, ncur, np, nr, pc, ng, bs, bb, row_f);
            for (int jr = 0; jr < ncur; jr += nr) {
                const uint8_t *bp = Bp + (size_t)jr * kcur;
                const float *bsp = bs + (size_t)(jr / nr) * ng * nr, *bbp = bb + (size_t)(jr / nr) * ng * nr;
                for (int ip = 0; ip < M; ip += mr)
                    if (k->tile_i8x2)
                        k->tile_i8x2(min_i(mr, M - ip), min_i(nr, ncur - jr), kcur, gs, Ap[0] + (size_t)ip * kcur,
                                     Ap[1] + (size_t)ip * kcur, ad[0] + (size_t)ip * nb, ax[0] + (size_t)ip * ng,
                                     ax[1] + (size_t)ip * ng, bp, bsp, bbp, C + (size_t)ip * ldc + jc + jr, ldc, pc > 0);
                    else
                        for (int pl = 0; pl < 2; pl++)
                            k->tile_i8(min_i(mr, M - ip), min_i(nr, ncur - jr), kcur, gs, w->bits,
                                       Ap[pl] + (size_t)ip * kcur, ad[pl] + (size_t)ip * nb, as[pl] + (size_t)ip * nb,
                                       ax[pl] + (size_t)ip * ng, bp, bsp, pl ? bsp : bbp, /* pl 1: the centring */
                                       C + (size_t)ip * ldc + jc + jr, ldc, pc > 0 || pl > 0);
            }
        }
    }
}

static size_t i16_scratch(const q_kernels *k, int M, int K, int gs)
{
    size_t kc = (size_t)min_i(K, I_KC), mp = (size_t)round_up(M, k->mr16), np = (size_t)round_up(I_NC, k->nr16);
    return align64(mp * kc * 2) + align64(mp * (kc / Q_ABLK) * 4) + 2 * align64(mp * (kc / (size_t)gs) * 4) +
           align64((size_t)I_NC * kc) + align64(np * kc * 2) + 2 * align64(np * (kc / (size_t)gs) * 4) +
           align64((size_t)(K / gs) * 4) + 64;
}

/* int8 with int16 products (q_kernels.tile_i16): A's two planes packed as
 * one int16 number once per block of K, W unpacked to bytes and packed as
 * int16 pairs */
static void gemm_i16(const q_kernels *k, const q_act *x, const bk_weight *w, int64_t n0, int N, float *C,
                     size_t ldc, unsigned char *scratch)
{
    const int M = x->M, K = x->K, gs = x->group_size, mr = k->mr16, nr = k->nr16;
    const int kc = min_i(K, I_KC), mp = round_up(M, mr);
    const int blocks = K / Q_ABLK, groups = K / gs;
    unsigned char *p = scratch;
    uint32_t *Ap = carve(&p, (size_t)mp * kc * 2);
    float *ad = carve(&p, (size_t)mp * (kc / Q_ABLK) * 4);
    float *axs = carve(&p, (size_t)mp * (kc / gs) * 4), *axc = carve(&p, (size_t)mp * (kc / gs) * 4);
    uint8_t *ub = carve(&p, (size_t)I_NC * kc);
    uint32_t *Bp = carve(&p, (size_t)round_up(I_NC, nr) * kc * 2);
    float *bs = carve(&p, (size_t)round_up(I_NC, nr) * (kc / gs) * 4);
    float *bb = carve(&p, (size_t)round_up(I_NC, nr) * (kc / gs) * 4);
    float *row_f = carve(&p, (size_t)groups * 4);
    for (int pc = 0; pc < K; pc += kc) {
        const int kcur = min_i(kc, K - pc), nb = kcur / Q_ABLK, ng = kcur / gs;
        for (int ip = 0; ip < mp; ip += mr) { /* A: every row, columns [pc, pc + kcur) */
            const int8_t *x8[16], *r8[16];
            for (int i = 0; i < mr; i++) {
                const int m = ip + i;
                x8[i] = m < M ? x->x8 + (size_t)m * K + pc : NULL;
                r8[i] = m < M ? x->r8 + (size_t)m * K + pc : NULL;
                const size_t pb = (size_t)ip / mr * nb, pg = (size_t)ip / mr * ng;
                for (int b = 0; b < nb; b++)
                    ad[(pb + b) * mr + i] = m < M ? x->d2[(size_t)m * blocks + pc / Q_ABLK + b] : 0.0f;
                for (int gi = 0; gi < ng; gi++) {
                    axs[(pg + gi) * mr + i] = m < M ? x->xs[(size_t)m * groups + pc / gs + gi] : 0.0f;
                    axc[(pg + gi) * mr + i] = m < M ? x->xc[(size_t)m * groups + pc / gs + gi] : 0.0f;
                }
            }
            k->pack_a_i16(kcur, x8, r8, Ap + (size_t)ip * kcur / 2);
        }
        for (int jc = 0; jc < N; jc += I_NC) {
            const int ncur = min_i(I_NC, N - jc), np = round_up(ncur, nr);
            unpack_rows(k, w, n0 + jc, ncur, pc, kcur, ub);
            k->pack_b_i16(ncur, kcur, ub, (size_t)kcur, Bp);
            panel_sb(w, n0 + jc, ncur, np, nr, pc, ng, bs, bb, row_f);
            for (int jr = 0; jr < ncur; jr += nr) {
                const uint32_t *bp = Bp + (size_t)jr * kcur / 2;
                const float *bsp = bs + (size_t)(jr / nr) * ng * nr, *bbp = bb + (size_t)(jr / nr) * ng * nr;
                for (int ip = 0; ip < M; ip += mr)
                    k->tile_i16(min_i(mr, M - ip), min_i(nr, ncur - jr), kcur, gs, Ap + (size_t)ip * kcur / 2,
                                ad + (size_t)ip * nb, axs + (size_t)ip * ng, axc + (size_t)ip * ng, bp, bsp, bbp,
                                C + (size_t)ip * ldc + jc + jr, ldc, pc > 0);
            }
        }
    }
}

/* Scratch of the streaming kernels: a row unpacked (or dequantized, C) and
 * the scales and biases of Q_STREAM_ROWS rows. */
static size_t small_scratch(int K) { return (size_t)K * 4 + 64 + (size_t)Q_STREAM_ROWS * (size_t)(K / 32 + 1) * 8 + 64; }

void q_stream(const q_row_fn fns[5], int unpack, q_sb_fn sbf, const q_act *x, const bk_weight *w, int64_t n0, int N,
              float *C, size_t ldc, uint8_t *tmp)
{
    const int K = x->K, ng = K / x->group_size;
    const size_t rb = bk_qrow_bytes(w), sbytes = (size_t)ng * dtype_size(w->sdtype);
    uint8_t *u = tmp;
    float *s = (float *)(void *)(tmp + align64((size_t)K * 4)), *b = s + (size_t)Q_STREAM_ROWS * ng;
    const q_act res = x->int8 ? q_act_residual(x) : *x;
    for (int n = 0; n < N; n += Q_STREAM_ROWS) {
        const int nb = min_i(Q_STREAM_ROWS, N - n);
        sbf(w, n0 + n, nb, s, b);
        for (int r = 0; r < nb; r++) {
            /* the scales and biases of the next sub-block, a row at a time */
            if (n + nb + r < N)
                for (size_t o = 0; o < sbytes; o += 64) {
                    __builtin_prefetch((const char *)w->scales + (size_t)(n0 + n + nb + r) * sbytes + o, 0, 3);
                    __builtin_prefetch((const char *)w->biases + (size_t)(n0 + n + nb + r) * sbytes + o, 0, 3);
                }
            const uint8_t *q = (const uint8_t *)w->data + (size_t)(n0 + n + r) * rb;
            if (unpack) {
                q_unpack_u8(q, w->bits, 0, K, u);
                q = u;
            }
            for (int m0 = 0; m0 < x->M; m0 += 4) {
                int mr = min_i(4, x->M - m0);
                float *c = C + (size_t)m0 * ldc + n + r;
                fns[mr](x, m0, q, s + (size_t)r * ng, b + (size_t)r * ng, c, ldc);
                if (x->int8) { /* the residual plane, the row still in the caches */
                    float t[4];
                    fns[mr](&res, m0, q, s + (size_t)r * ng, s + (size_t)r * ng, t, 1); /* centring */
                    for (int i = 0; i < mr; i++) c[(size_t)i * ldc] += t[i];
                }
            }
        }
    }
}

/* tiled W: the rows a product copies back to the row layout (scales and
 * biases counted as float32, the widest dtype) */
static size_t untile_scratch(const q_act *x, int N)
{
    if (!x->tiled || (x->int8 && x->small)) return 0;
    size_t ng = (size_t)(x->K / x->group_size);
    return align64((size_t)N * ((size_t)x->K * (size_t)x->bits / 8 + 2 * ng * 4) + 64);
}

size_t qgemm_scratch_bytes(const q_act *x, int N)
{
    if (x->K <= 0 || x->M <= 0) return 64;
    size_t u = untile_scratch(x, N);
    if (x->small) return u + small_scratch(x->K);
    size_t n = 64;
    for (int i = 0; i < Q_ISA_COUNT; i++) {
        const q_kernels *k = kernels_of((q_isa)i);
        size_t v = !x->int8      ? f32_scratch(k, x->M, x->K)
                   : k->tile_i16 ? i16_scratch(k, x->M, x->K, x->group_size)
                                 : i8_scratch(k, x->M, x->K, x->group_size);
        if (v > n) n = v;
    }
    return u + n;
}

int q_tile_fast(void) { return kernels_of(q_isa_best())->dot_tile != NULL; }

int q_int8_gemm_pays(void) { return q_isa_best() == Q_ISA_AVX512 || kernels_of(q_isa_best())->tile_i16 != NULL; }

void q_tile_drive(q_tile_fn f11, q_tile_fn f12, q_tile_fn f21, const q_act *x, const bk_weight *w, int64_t n0, int N,
                  float *C, size_t ldc)
{
    if (x->M == 1 && n0 % 16 == 0 && N % 32 == 0 && !tile_one_stream()) {
        /* two streams: the block's first half of tiles beside its second */
        const int64_t t0 = n0 / 16, half = N / 32;
        for (int64_t i = 0; i < half; i++) {
            const int64_t t[2] = {t0 + i, t0 + half + i};
            float *const o[2] = {C + (size_t)i * 16, C + (size_t)(half + i) * 16};
            f21(x, 0, w, t, o, ldc);
        }
        return;
    }
    float part[Q_SMALL_M][16];
    for (int64_t t = n0 / 16; t * 16 < n0 + N; t++) {
        const int64_t r0 = t * 16;
        const int full = r0 >= n0 && r0 + 16 <= n0 + N;
        for (int m = 0; m < x->M; m += 2) {
            float *const o[1] = {full ? C + (size_t)m * ldc + (size_t)(r0 - n0) : part[m]};
            (x->M - m >= 2 ? f12 : f11)(x, m, w, &t, o, full ? ldc : 16);
        }
        if (!full) /* a tile cut by the block's ends: its rows in [n0, n0 + N) */
            for (int m = 0; m < x->M; m++)
                for (int64_t r = r0 > n0 ? r0 : n0; r < r0 + 16 && r < n0 + N; r++)
                    C[(size_t)m * ldc + (size_t)(r - n0)] = part[m][r - r0];
    }
}

/* The portable tiled decode product (qgemm.h): the sums of the AVX-512
 * kernel, a value at a time. */
static void dot_tile_c(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc)
{
    const int K = x->K, gs = x->group_size, ng = K / gs, nb = K / Q_ABLK, bits = x->bits, vpw = 32 / bits;
    for (int64_t r = n0; r < n0 + N; r++) {
        for (int m = 0; m < x->M; m++) {
            const int8_t *x8 = x->x8 + (size_t)m * K, *r8 = x->r8 + (size_t)m * K;
            float acc = 0.0f;
            for (int g = 0; g < ng; g++) {
                float ag = 0.0f;
                for (int b = g * gs / Q_ABLK; b < (g + 1) * gs / Q_ABLK; b++) {
                    int32_t is = 0, ir = 0;
                    for (int c = b * Q_ABLK; c < (b + 1) * Q_ABLK; c++) {
                        const uint8_t *wp = (const uint8_t *)w->data + q_byte_at(w, r, (size_t)(c / vpw) * 4);
                        int k = c % 8, slot = c;
                        unsigned q;
                        if (bits == 8) {
                            q = wp[c % 4];
                        } else {
                            q = (wp[k / 2] >> (4 * (k % 2))) & 15u;
                            slot = c - k + (k % 2 ? 4 + k / 2 : k / 2); /* even values, then odd */
                        }
                        is += (int32_t)q * x8[slot];
                        ir += (int32_t)q * r8[slot];
                    }
                    ag += (float)(is * 256 + ir) * x->d2[(size_t)m * nb + b];
                }
                float sg, bg;
                q_group_sb(w, r, (size_t)g, &sg, &bg);
                acc += ag * sg + sg * x->xc[(size_t)m * ng + g] + bg * x->xs[(size_t)m * ng + g];
            }
            C[(size_t)m * ldc + (size_t)(r - n0)] = acc;
        }
    }
}

void qgemm_nt_isa(q_isa isa, const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc,
                  void *scratch)
{
    if (x->M <= 0 || N <= 0) return;
    const q_kernels *k = kernels_of(isa);
    unsigned char *s = (unsigned char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    bk_weight view;
    if (w->tiled) {
        if (x->int8 && x->small) {
            (k->dot_tile ? k->dot_tile : dot_tile_c)(x, w, n0, N, C, ldc);
            return;
        }
        /* every other product: the rows back in the row layout */
        (k->untile ? k->untile : q_untile)(w, n0, N, s, &view);
        s += align64(q_untile_bytes(w, N));
        w = &view;
        n0 = 0;
    }
    if (x->small) {
        if (x->int8)
            k->dot_i8(x, w, n0, N, C, ldc, s);
        else
            k->dot_f32(x, w, n0, N, C, ldc, s);
    } else if (x->int8) {
        (k->tile_i16 ? gemm_i16 : gemm_i8)(k, x, w, n0, N, C, ldc, s);
    } else {
        gemm_f32(k, x, w, n0, N, C, ldc, s);
    }
}

void qgemm_nt(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, void *scratch)
{
    qgemm_nt_isa(q_isa_best(), x, w, n0, N, C, ldc, scratch);
}

/* ---- Portable C kernels ---- */

/* Float32 values of row r, columns [c0, c0 + n), via bytes; tmp holds n
 * bytes. */
static void dequant_row_c(const bk_weight *w, int64_t r, int c0, int n, float *out, uint8_t *tmp, float *sb)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * bk_qrow_bytes(w);
    const int gs = w->group_size, ng = n / gs;
    const size_t g0 = (size_t)r * (size_t)(w->cols / gs) + (size_t)(c0 / gs);
    q_unpack_u8(row, w->bits, c0, n, tmp);
    q_load_f32(w->scales, w->sdtype, g0, (size_t)ng, sb);
    q_load_f32(w->biases, w->sdtype, g0, (size_t)ng, sb + ng);
    for (int i = 0; i < n; i++) out[i] = sb[i / gs] * (float)tmp[i] + sb[ng + i / gs];
}

static void dequant_c(const bk_weight *w, int64_t r0, int n, int c0, int kc, float *out, size_t ldo)
{
    uint8_t tmp[F_KC];
    float sb[2 * F_KC / 32];
    for (int c = 0; c < kc; c += F_KC) {
        int len = min_i(F_KC, kc - c);
        for (int i = 0; i < n; i++) dequant_row_c(w, r0 + i, c0 + c, len, out + (size_t)i * ldo + c, tmp, sb);
    }
}

static void dot_f32_c(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    const int K = x->K;
    float *row = (float *)(void *)tmp;
    uint8_t *u = tmp + (size_t)K * 4;
    float *sb = (float *)(void *)(u + align64((size_t)K));
    for (int n = 0; n < N; n++) {
        dequant_row_c(w, n0 + n, 0, K, row, u, sb);
        for (int m = 0; m < x->M; m++) {
            const float *a = x->A + (size_t)m * x->lda;
            float s[8] = {0};
            int k = 0;
            for (; k + 8 <= K; k += 8)
                for (int j = 0; j < 8; j++) s[j] += a[k + j] * row[k + j];
            float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
            for (; k < K; k++) t += a[k] * row[k];
            C[(size_t)m * ldc + n] = t;
        }
    }
}

/* The int8 value of column c of row m in x8's layout. */
static size_t x8_index(const q_act *x, int m, int c)
{
    int at = c;
    if (x->small && x->bits == 4) {
        int n, c0 = q4_chunk(x->K, c, &n), v = c - c0;
        at = c0 + (v % 2 ? n / 2 + v / 2 : v / 2);
    }
    return (size_t)m * x->K + at;
}

static void dot_i8_c(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    const int K = x->K, gs = x->group_size, ng = K / gs, nb = K / Q_ABLK;
    uint8_t *u = tmp;
    float *s = (float *)(void *)(tmp + align64((size_t)K)), *b = s + ng;
    const size_t rb = bk_qrow_bytes(w);
    for (int n = 0; n < N; n++) {
        int64_t r = n0 + n;
        q_unpack_u8((const uint8_t *)w->data + (size_t)r * rb, w->bits, 0, K, u);
        q_load_f32(w->scales, w->sdtype, (size_t)r * ng, (size_t)ng, s);
        q_load_f32(w->biases, w->sdtype, (size_t)r * ng, (size_t)ng, b);
        for (int m = 0; m < x->M; m++) {
            const float *d = x->d + (size_t)m * nb, *xs = x->xs + (size_t)m * ng;
            float acc = 0.0f;
            for (int blk = 0; blk < nb; blk++) {
                int32_t isum = 0, rsum = 0; /* x8, the residual plane */
                for (int i = 0; i < Q_ABLK; i++) {
                    int c = blk * Q_ABLK + i;
                    size_t at = x8_index(x, m, c);
                    isum += (int32_t)u[c] * x->x8[at];
                    rsum += (int32_t)u[c] * x->r8[at];
                }
                acc += (float)(isum * 256 + rsum) * (d[blk] * (1.0f / 256.0f) * s[blk * Q_ABLK / gs]);
            }
            const float *xe = x->xe + (size_t)m * ng;
            float c = 0.0f;
            for (int g = 0; g < ng; g++) {
                acc += b[g] * xs[g];
                c += s[g] * xe[g];
            }
            C[(size_t)m * ldc + n] = acc + q_mid(w->bits) * c;
        }
    }
}

enum { C_MR = 4, C_NR = 8 };

static void tile_i8_c(int m, int n, int kc, int gs, int bits, const int8_t *Ap, const float *ad, const int32_t *as,
                      const float *ax, const uint8_t *Bp, const float *bs, const float *bb, float *C, size_t ldc,
                      int accumulate)
{
    (void)as;
    (void)bits;
    float acc[C_MR][C_NR] = {{0}};
    for (int k0 = 0; k0 < kc; k0 += Q_ABLK) {
        int32_t isum[C_MR][C_NR] = {{0}};
        for (int k4 = k0 / 4; k4 < (k0 + Q_ABLK) / 4; k4++)
            for (int i = 0; i < C_MR; i++)
                for (int j = 0; j < C_NR; j++)
                    for (int t = 0; t < 4; t++)
                        isum[i][j] += (int32_t)Ap[((size_t)k4 * C_MR + i) * 4 + t] * Bp[((size_t)k4 * C_NR + j) * 4 + t];
        int blk = k0 / Q_ABLK, g = k0 / gs;
        for (int i = 0; i < C_MR; i++)
            for (int j = 0; j < C_NR; j++)
                acc[i][j] += (float)isum[i][j] * (ad[blk * C_MR + i] * bs[g * C_NR + j]);
    }
    for (int g = 0; g < kc / gs; g++)
        for (int i = 0; i < C_MR; i++)
            for (int j = 0; j < C_NR; j++) acc[i][j] += ax[g * C_MR + i] * bb[g * C_NR + j];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float *c = C + (size_t)i * ldc + j;
            *c = accumulate ? *c + acc[i][j] : acc[i][j];
        }
}

void q_pack_b_i8_8(int n, int kc, const uint8_t *q, size_t ldq, uint8_t *Bp)
{
    for (int p = 0; p < n; p += C_NR)
        for (int k4 = 0; k4 < kc / 4; k4++)
            for (int j = 0; j < C_NR; j++) {
                uint8_t *dst = Bp + (size_t)p * kc + ((size_t)k4 * C_NR + j) * 4;
                if (p + j < n)
                    memcpy(dst, q + (size_t)(p + j) * ldq + 4 * k4, 4);
                else
                    memset(dst, 0, 4);
            }
}

const q_kernels q_kernels_c = {
    .dot_f32 = dot_f32_c,
    .dot_i8 = dot_i8_c,
    .dequant = dequant_c,
    .act_rows = NULL,
    .mr = C_MR,
    .nr = C_NR,
    .tile_i8 = tile_i8_c,
    .pack_b_i8 = q_pack_b_i8_8,
    .f32 = &gemm_kernels_c,
};
