/* bench_bw.h - what the benchmarks share for their limits: a monotonic
 * clock and the read bandwidth of a plain streaming read (wide loads, the
 * buffer split over threads that start together). */
#ifndef INFER_BENCH_BW_H
#define INFER_BENCH_BW_H

#include <immintrin.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/cpu.h"

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The library's own measurement (src/backend/cpu/cpu_bw.c), which
 * infer_measure_bandwidth and `infer bench` use too. */
static inline long bench_read_bytes(const unsigned char *p, size_t n) { return cpu_read_bytes(p, n); }

static inline double bench_read_bw(const unsigned char *buf, size_t bytes, int threads, int reps)
{
    return cpu_read_bw(buf, bytes, threads, reps);
}

/* The float32 FMA peak: independent chains of 16 (AVX-512, 24 chains)
 * or 8 lanes (AVX2 + FMA, 12 chains), GFLOP/s of one thread. */
__attribute__((target("avx512f"))) static inline double bench_fma_peak_avx512(long iters)
{
    __m512 acc[24], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
    for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i);
    double t0 = bench_now();
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    double t = bench_now() - t0;
    __m512 s = acc[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 2.0 * 16 * 24 * (double)iters / t * 1e-9;
}

__attribute__((target("avx2,fma"))) static inline double bench_fma_peak_avx2(long iters)
{
    __m256 acc[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    double t0 = bench_now();
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    double t = bench_now() - t0;
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
    float v[8];
    _mm256_storeu_ps(v, s);
    volatile float sink = v[0];
    (void)sink;
    return 2.0 * 8 * 12 * (double)iters / t * 1e-9;
}

/* The widest of the two this cpu has ("avx512", "avx2"; NULL: neither). */
static inline const char *bench_fma_isa(void)
{
    if (__builtin_cpu_supports("avx512f")) return "avx512";
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "avx2" : NULL;
}

/* One thread's peak with that ISA (0 without either). */
static inline double bench_fma_peak(long iters)
{
    const char *isa = bench_fma_isa();
    if (!isa) return 0.0;
    return strcmp(isa, "avx512") ? bench_fma_peak_avx2(iters) : bench_fma_peak_avx512(iters);
}

#endif
