/* qgemm.h - products with MLX-quantized weights on the cpu (qgemm*.c).
 *
 *     C[M, N] = A[M, K] . W[N, K]^T,   W = dequantized rows n0 .. n0 + N of w
 *
 * w is a quantized bk_weight (backend.h: packing, scales, biases); A and C
 * are float32 with row strides lda and ldc.
 *
 * Two kinds of product:
 *   exact  (float32 activations, the default): the result of dequantizing
 *          W to float32 (s * q + b, as q_dequant_row) and multiplying in
 *          float32, within float32 rounding.
 *   int8   (bk_opts.cpu_int8): A is rounded to int8 per block of Q_ABLK
 *          values (d = max|x| / 127, x ~ d * round(x / d)) and
 *              w . x = sum_g s_g sum_blocks d_b (sum q * x8) + b_g sum_g x
 *          with the inner sums in int32 (VNNI vpdpbusd, or pmaddubsw) and
 *          the bias term from the exact float sums of x per group.
 * and two shapes:
 *   M <= Q_SMALL_M (decode): W is streamed once with wide loads, unpacked
 *          in registers and dotted with every row of A.
 *   M >  Q_SMALL_M (prefill): blocked GEMM.  exact: blocks of W are
 *          dequantized to float32 and packed for gemm.h's micro-kernels;
 *          int8: W is unpacked to bytes and packed for an integer
 *          micro-kernel, A is packed as int8 (AVX2: both as int16,
 *          q_kernels.tile_i16).
 *
 * A product takes two steps.  q_act_init + q_act_rows transform A once
 * (cpu_matmul does it before it cuts the rows of W over the workers; the
 * rows of A may be split over threads); qgemm_nt then computes any block
 * of rows of W, single-threaded, with no shared state.
 *
 * The 4-bit layouts the kernels read their activations in (value v of a
 * chunk sits in 32-bit word v / 8 of the packed row, at nibble v % 8):
 *   exact (xp, floats): chunks of 64 values (32 with group size 32), W = 8
 *          words (4); slot 16 i + l holds value 8 (l % W) + (16 / W) i +
 *          l / W, so that 16 lanes = the chunk's words shifted right by 4 *
 *          nibble.
 *   int8 (x8, bytes): chunks of 128 values while 128 remain, then 64, then
 *          32 (q4_chunk); a chunk of n holds the low nibbles of its bytes,
 *          then the high ones: slot p < n / 2 holds value 2 p, slot p >= n /
 *          2 value 2 (p - n / 2) + 1.
 *   tiled (x8, bytes; w->tiled, int8, small): for each 32-bit word j of W
 *          (values 8 j .. 8 j + 7), its even values then its odd ones, so
 *          that 32-bit word 2 j of x8 pairs with the low nibbles of W's
 *          word j and word 2 j + 1 with the high ones (8 bits: natural).
 * Other widths are unpacked to bytes in natural order.  dv (int8, small)
 * holds, for the chunk starting at value c (chunks of 64 in natural order),
 * 16 floats at c / 4: per 32-bit lane of the chunk's first 64 bytes (and,
 * with 128 values, of its second 64: the same blocks), the block scale of
 * the values that lane sums.
 *
 * The tiled layout (bk_weight.tiled, backend.h), for int8 decode: the cpu
 * backend repacks 4- and 8-bit weights at load (q_tile_pack) when int8
 * activations are on and the cpu has AVX-512 VNNI.  A tile's 16 rows are
 * one 64-byte vector per 32-bit word of the row: the decode kernel
 * (q_kernels.dot_tile) broadcasts 4 int8 activations to all 16 lanes and
 * takes one vpdpbusd per word for 16 rows at once, with the group scales
 * of 16 rows in one vector: about half the instructions a value of the
 * row-at-a-time kernel, which is bound by arithmetic on 4 bits.  For one
 * row of x it reads two tiles side by side, the first and second half of
 * its block of rows: two streams of W a thread reach more of the memory
 * bandwidth than one on the 2-core EPYC (26 against 22 GB/s on one core,
 * 45 against 36 on two; bench_qgemm's layout, M = 1); one on a Zen 5
 * (tile_one_stream).  Each group's 16 scales and 16 biases follow its
 * values inside the tile, so that a tile is one stream of memory (with
 * them in arrays of their own, three streams a tile, the kernel reached
 * 0.91 of a plain read where it reached 1.06 with them in the caches).  Every
 * other product (prefill, float activations) copies the rows it needs
 * back to the row layout first (q_untile), and an embedding row is read
 * in place (q_dequant_row). */
#ifndef INFER_BACKEND_CPU_QGEMM_H
#define INFER_BACKEND_CPU_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/cpu/gemm.h"

/* Instruction-set variants, in order of preference (last is best). */
typedef enum q_isa {
    Q_ISA_C = 0,     /* portable C */
    Q_ISA_AVX2,      /* AVX2 + FMA + F16C; int8 sums by pmaddubsw */
    Q_ISA_AVX2_VNNI, /* the same + AVX-VNNI vpdpbusd */
    Q_ISA_AVX512,    /* AVX-512 F, BW, VL, VNNI (+ AVX2, FMA, F16C) */
    Q_ISA_COUNT
} q_isa;

enum {
    Q_SMALL_M = 8, /* M at most this: the streaming kernels */
    Q_ABLK = 32    /* int8: values per activation block */
};

/* A transformed for one product with weight w (see the top of the file). */
typedef struct q_act {
    int M, K;
    int int8;         /* 1: int8 activations */
    int small;        /* M <= Q_SMALL_M */
    int bits, group_size;
    int tiled;        /* W is tiled (int8 and small: x8 and r8 in the tiled order) */
    const float *A;   /* [M, K], row stride lda */
    size_t lda;
    float *xp;        /* exact, small, 4 bits: [M, K] in the exact chunk order */
    int8_t *x8;       /* int8: [M, K] (small, 4 bits: int8 chunk order; else natural) */
    float *d;         /* int8: [M, K / Q_ABLK] block scales */
    float *dv;        /* int8, small: [M, K / 4 + 16] lane scales (above) */
    float *xs;        /* int8: [M, K / group_size] sums of A per group */
    int32_t *s8;      /* int8: [M, K / Q_ABLK] sums of x8 per block */
    float *xe;        /* int8: [M, K / group_size] xs - sum over the group's
                       * blocks of d * (s8 + s8r / 256): what rounding lost
                       * of each sum */
    /* The second int8 term: x = d (x8 + r8 / 256) to d / 512 (d / 256 where
     * r8 is clamped at 127), where x8 alone is within d / 2.  Kernels run it as a second plane: the view
     * q_act_residual gives (x8 = r8, d = d / 256, xs = xc) through the
     * same code, while W's bytes are still in the caches. */
    int8_t *r8;       /* int8: [M, K] rounding residuals * 256, x8's layout */
    int32_t *s8r;     /* int8: [M, K / Q_ABLK] sums of r8 per block */
    float *d2;        /* int8: [M, K / Q_ABLK] d / 256 */
    float *dv2;       /* int8, small: dv / 256 */
    float *xc;        /* int8: [M, K / group_size] mid * xe (the residual's xs) */
} q_act;

/* x with the residual plane in place of x8 (see r8). */
q_act q_act_residual(const q_act *x);

/* The int8 products are centred: W = s (q - mid) + (b + s mid) with mid
 * the middle of the q range, so the rounding error of x is multiplied by
 * q - mid rather than by q (about 2.4 times less error for 4 bits).  The
 * kernels compute sum s q x8 d + sum b xs as before; the centring adds
 * sum over groups of s_g * mid xe_g, which the residual plane's pass takes
 * as its bias term (xs = xc, the scales given in place of the biases). */
static inline float q_mid(int bits) { return 0.5f * (float)((1 << bits) - 1); }

/* 1: x8 and r8 are in the int8 4-bit chunk order. */
static inline int q_act_chunked(const q_act *x) { return x->small && x->bits == 4 && !x->tiled; }

/* The int8 4-bit chunk holding value c of a row of K: its first value,
 * and its size in *n. */
static inline int q4_chunk(int K, int c, int *n)
{
    int k128 = K & ~127;
    if (c < k128) {
        *n = 128;
        return c & ~127;
    }
    if (K - k128 >= 64 && c < k128 + 64) {
        *n = 64;
        return k128;
    }
    *n = 32;
    return K - 32;
}

/* Bytes q_act_init needs for these sizes (any alignment). */
size_t q_act_bytes(int M, int K, const bk_weight *w, int int8);
/* Lays x out over buf; then q_act_rows (any split of [0, M)) fills it. */
void q_act_init(q_act *x, void *buf, int M, int K, const float *A, size_t lda, const bk_weight *w,
                int int8);
void q_act_rows(const q_act *x, int m0, int m1);

/* C[M, N] for rows n0 .. n0 + N of w, with the best variant.  scratch has
 * at least qgemm_scratch_bytes(x, N) bytes (any alignment). */
void qgemm_nt(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc,
              void *scratch);
size_t qgemm_scratch_bytes(const q_act *x, int N);

/* The same with one given variant (for tests and benchmarks); it must be
 * supported, and x filled by q_act_rows_isa with the same variant. */
void q_act_rows_isa(q_isa isa, const q_act *x, int m0, int m1);
void qgemm_nt_isa(q_isa isa, const q_act *x, const bk_weight *w, int64_t n0, int N, float *C,
                  size_t ldc, void *scratch);
int q_isa_supported(q_isa isa);
q_isa q_isa_best(void);
const char *q_isa_name(q_isa isa); /* "c", "avx2", "avx2vnni", "avx512" */

/* Dequantizes n values of row r of w starting at column c0 into out
 * (any c0; scalar: for embedding rows). */
void q_dequant_row(const bk_weight *w, int64_t r, int64_t c0, int64_t n, float *out);

/* 1 if bits and group size describe a layout the kernels take. */
int q_layout_ok(int bits, int group_size, int64_t cols);

/* The tiled layout (backend.h, above).  q_tile_ok: w (row layout) can be
 * tiled: 4 or 8 bits, rows a multiple of BK_TILE_ROWS.  q_tile_pack writes
 * tiles [t0, t1) of w into data (q_tile_bytes(w) in all; values, scales
 * and biases).  q_untile
 * copies rows [r0, r0 + n) of tiled w back to the row layout in buf
 * (q_untile_bytes) and makes *view describe them (n rows, not tiled). */
int q_tile_ok(const bk_weight *w);
/* Where things lie in a tiled weight: tile t takes q_tile_stride(w)
 * bytes; in it group g takes q_tile_gbytes(w): its q_tile_gwords(w) words
 * (a 64-byte vector of 16 rows each), then the 16 rows' scales, then their
 * biases (sdtype).  q_tile_word_at: the byte offset of word j's vector;
 * q_tile_sb_at: of group g's scales (the biases 16 values on).  Every
 * offset is a multiple of 64. */
static inline size_t q_tile_gwords(const bk_weight *w) { return (size_t)w->group_size * (size_t)w->bits / 32; }
static inline size_t q_tile_gbytes(const bk_weight *w)
{
    return q_tile_gwords(w) * 64 + 2 * BK_TILE_ROWS * dtype_size(w->sdtype);
}
static inline size_t q_tile_stride(const bk_weight *w) { return (size_t)(w->cols / w->group_size) * q_tile_gbytes(w); }
static inline size_t q_tile_word_at(const bk_weight *w, int64_t t, size_t j)
{
    const size_t gw = q_tile_gwords(w);
    return (size_t)t * q_tile_stride(w) + j / gw * q_tile_gbytes(w) + j % gw * 64;
}
static inline size_t q_tile_sb_at(const bk_weight *w, int64_t t, size_t g)
{
    return (size_t)t * q_tile_stride(w) + g * q_tile_gbytes(w) + q_tile_gwords(w) * 64;
}
/* bytes of w (row layout, q_tile_ok) once tiled */
static inline size_t q_tile_bytes(const bk_weight *w) { return (size_t)(w->rows / BK_TILE_ROWS) * q_tile_stride(w); }
/* 1: the best variant on this cpu has a tiled decode kernel (tiling pays) */
int q_tile_fast(void);
/* 1: on this cpu the int8 GEMM (M > Q_SMALL_M) is faster than the exact
 * float32 one: AVX-512 VNNI (a vpdpbusd takes 64 products) and AVX2's
 * int16 products (tile_i16; 1.3 times the FMA GEMM on a Zen 3 core, where
 * the two int8 planes through pmaddubsw were 0.6 times it: bench/RESULTS.md). */
int q_int8_gemm_pays(void);
void q_tile_pack(const bk_weight *w, int64_t t0, int64_t t1, void *data);
size_t q_untile_bytes(const bk_weight *w, int n);
void q_untile(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view);
/* For a kernel's own q_untile: q_untile_view makes *view describe rows
 * [r0, r0 + n) in buf and returns where their values go; q_untile_sb_rows
 * copies the scales and biases of rows [ra, rz) into it (a tile's, once
 * the kernel has read the tile's values: they lie between them). */
uint8_t *q_untile_view(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view);
void q_untile_sb_rows(const bk_weight *w, int64_t r0, int64_t ra, int64_t rz, const bk_weight *view);

/* ---- Internal: shared by qgemm.c and the instruction-set files ---- */

/* The q values of n values of a row from column c0 (c0 and n multiples of
 * 8), one byte each in natural order. */
void q_unpack_u8(const uint8_t *row, int bits, int64_t c0, int n, uint8_t *out);
/* q_unpack_u8 for widths 2, 3, 5 and 6 with AVX-512 VBMI (n a multiple of
 * 64; qgemm_avx512.c); q_unpack_u8 calls it where the cpu has VBMI. */
void q_unpack_vbmi(const uint8_t *row, int bits, int64_t c0, int n, uint8_t *out);
/* n scale or bias values (dtype t) from index i0 as float32. */
void q_load_f32(const void *base, infer_dtype t, size_t i0, size_t n, float *out);

/* Streaming (M <= Q_SMALL_M): one row of W against rows [m0, m0 + mr) of
 * x (mr <= 4), into out[i * ldc]; q is the packed row (or, for widths
 * other than 4 and 8, its values unpacked to bytes), s and b its scales
 * and biases as float32. */
typedef void (*q_row_fn)(const q_act *x, int m0, const uint8_t *q, const float *s, const float *b, float *out,
                         size_t ldc);
/* The scales and biases of rows [r0, r0 + n) as float32, [n][K / gs]. */
typedef void (*q_sb_fn)(const bk_weight *w, int64_t r0, int n, float *s, float *b);
/* Rows [n0, n0 + N) of w against every row of x: the rows' scales and
 * biases are converted in bursts of Q_STREAM_ROWS rows, then each row is
 * read from start to end before the next.  Memory sees one sequential
 * stream: interleaving rows, or reading scales between weight bytes, costs
 * a third of the bandwidth on some machines.  fns[mr] for mr = 1 .. 4;
 * unpack: widths other than 4 and 8 go through q_unpack_u8. */
enum { Q_STREAM_ROWS = 16 };
void q_stream(const q_row_fn fns[5], int unpack, q_sb_fn sb, const q_act *x, const bk_weight *w, int64_t n0, int N,
              float *C, size_t ldc, uint8_t *tmp);

/* Integer GEMM layouts (int8, M > Q_SMALL_M), for a block of kc values
 * (kc a multiple of the group size and of Q_ABLK):
 *   Ap  a panel of mr rows of A: [kc / 4][mr] groups of 4 int8
 *   ad  [kc / Q_ABLK][mr] block scales; as [kc / Q_ABLK][mr] sums of x8
 *       per block; ax [kc / gs][mr] sums of A per group
 *   Bp  a panel of nr rows of W: [kc / 4][nr] groups of 4 q bytes (rows
 *       past the end: zeros)
 *   bs, bb [kc / gs][nr] scales and biases as float32 */
typedef struct q_kernels {
    /* exact and int8 products for M <= Q_SMALL_M; tmp: qgemm_scratch_bytes */
    void (*dot_f32)(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc,
                    uint8_t *tmp);
    void (*dot_i8)(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc,
                   uint8_t *tmp);
    /* int8, M <= Q_SMALL_M, tiled w (any rows n0 .. n0 + N); NULL: the
     * portable one */
    void (*dot_tile)(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc);
    /* q_untile; NULL: the portable one */
    void (*untile)(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view);
    /* float32 values of rows [r0, r0 + n) x columns [c0, c0 + kc) of w
     * (multiples of the group size) into out, row stride ldo floats */
    void (*dequant)(const bk_weight *w, int64_t r0, int n, int c0, int kc, float *out, size_t ldo);
    /* exact GEMM, 4 and 8 bits: what dequant then f32->pack_b give (the
     * panels of f32->nr rows of W), straight from rows [r0, r0 + n) x
     * columns [c0, c0 + kc) of w (kc <= 256, a multiple of 16 and of the
     * group size); NULL: those two steps */
    void (*dequant_pack)(const bk_weight *w, int64_t r0, int n, int c0, int kc, float *Bp);
    /* int8 rows of A: x8 natural, d, s8, xs (M > Q_SMALL_M) or the small
     * layouts; 1 when it also made the residual plane (r8, s8r, d2, dv2,
     * xe, xc) and the tiled order, 0 when q_act_rows_isa does those; NULL:
     * the portable version */
    int (*act_rows)(const q_act *x, int m0, int m1);
    /* integer micro-kernel: C[m, n] (+)= the tile of panels (1 <= m <= mr,
     * 1 <= n <= nr) */
    int mr, nr;
    void (*tile_i8)(int m, int n, int kc, int gs, int bits, const int8_t *Ap, const float *ad, const int32_t *as,
                    const float *ax, const uint8_t *Bp, const float *bs, const float *bb, float *C,
                    size_t ldc, int accumulate);
    /* tile_i8 over both planes of A at once (Ap0: x8, Ap1: the residual;
     * ad: x8's scales; ax0: xs, ax1: xc, taken with bb and bs); NULL: two
     * tile_i8 passes */
    void (*tile_i8x2)(int m, int n, int kc, int gs, const int8_t *Ap0, const int8_t *Ap1, const float *ad,
                      const float *ax0, const float *ax1, const uint8_t *Bp, const float *bs, const float *bb,
                      float *C, size_t ldc, int accumulate);
    /* The int8 GEMM with int16 products (AVX2 without VNNI's byte sums:
     * pmaddwd takes 16 products an instruction where the two int8 planes
     * take 2 x 32 products in 2 x 2): both planes as one int16 number,
     * x16 = 256 x8 + r8 at scale d / 256, and the q values as int16; the
     * same integer sums as the two planes, half the multiplies.  Panels of
     * mr16 rows of A, [kc / 2][mr16] pairs of int16 (pack_a_i16 from rows
     * x8[i] and r8[i], NULL: zeros); of nr16 rows of W, [kc / 2][nr16]
     * pairs (pack_b_i16 from q bytes, rows past n: zeros); ad
     * [kc / Q_ABLK][mr16] block scales d / 256, axs and axc [kc / gs][mr16]
     * (xs and xc); bs and bb [kc / gs][nr16].  tile_i16: C[m, n] (+)= the
     * tile.  NULL: tile_i8. */
    int mr16, nr16;
    void (*pack_a_i16)(int kc, const int8_t *const x8[], const int8_t *const r8[], uint32_t *Ap);
    void (*pack_b_i16)(int n, int kc, const uint8_t *q, size_t ldq, uint32_t *Bp);
    void (*tile_i16)(int m, int n, int kc, int gs, const uint32_t *Ap, const float *ad, const float *axs,
                     const float *axc, const uint32_t *Bp, const float *bs, const float *bb, float *C, size_t ldc,
                     int accumulate);
    /* packs rows of q bytes (natural order, row stride ldq) into Bp panels */
    void (*pack_b_i8)(int n, int kc, const uint8_t *q, size_t ldq, uint8_t *Bp);
    /* Ap of 4 rows (mr = 4) from rows a[i] of x8 (NULL: zeros), kc bytes
     * each (a multiple of 64); NULL: the portable one */
    void (*pack_a4_i8)(int kc, const int8_t *const a[4], int8_t *Ap);
    /* q_unpack_u8 for 4 bits (n a multiple of 64); NULL: the portable one */
    void (*unpack4)(const uint8_t *row, int64_t c0, int n, uint8_t *out);
    const gemm_kernels *f32; /* micro-kernels of the exact GEMM */
} q_kernels;

extern const q_kernels q_kernels_c;
extern const q_kernels q_kernels_avx2;
extern const q_kernels q_kernels_avx2_vnni;
extern const q_kernels q_kernels_avx512;

/* A tiled decode kernel (int8, M <= Q_SMALL_M): tiles t[0 .. NT) against
 * rows [m0, m0 + XR) of x; out[u] + i * ldo receives tile t[u]'s 16 sums
 * for row m0 + i. */
typedef void (*q_tile_fn)(const q_act *x, int m0, const bk_weight *w, const int64_t *t, float *const *out,
                          size_t ldo);
/* q_kernels.dot_tile from kernels of (NT, XR) = (1, 1), (1, 2) and (2, 1):
 * for one row of x, two streams of W (a block's first half of tiles beside
 * its second half); tiles cut by the block's ends go through a buffer. */
void q_tile_drive(q_tile_fn f11, q_tile_fn f12, q_tile_fn f21, const q_act *x, const bk_weight *w, int64_t n0, int N,
                  float *C, size_t ldc);

/* The portable activation transform (q_kernels.act_rows may be NULL). */
void q_act_rows_c(const q_act *x, int m0, int m1);
/* pack_b_i8 for nr = 8 (the C and AVX2 micro-kernels). */
void q_pack_b_i8_8(int n, int kc, const uint8_t *q, size_t ldq, uint8_t *Bp);

#endif
