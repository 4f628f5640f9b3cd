/* bench_bw.h - what the benchmarks share for their limits: a monotonic
 * clock and the read bandwidth of a plain streaming read (wide loads, the
 * buffer split over threads that start together).  Header-only, so that
 * each bench source stays one program. */
#ifndef INFER_BENCH_BW_H
#define INFER_BENCH_BW_H

#include <immintrin.h>
#include <pthread.h>
#include <stddef.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads n bytes (a multiple of 256) with 32-byte loads; a checksum. */
__attribute__((target("avx2"))) static inline long bench_read_bytes(const unsigned char *p, size_t n)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 256) {
        const __m256i_u *q = (const __m256i_u *)(const void *)(p + i);
        s0 = _mm256_add_epi32(s0, _mm256_loadu_si256(q));
        s1 = _mm256_add_epi32(s1, _mm256_loadu_si256(q + 1));
        s2 = _mm256_add_epi32(s2, _mm256_loadu_si256(q + 2));
        s3 = _mm256_add_epi32(s3, _mm256_loadu_si256(q + 3));
        s0 = _mm256_add_epi32(s0, _mm256_loadu_si256(q + 4));
        s1 = _mm256_add_epi32(s1, _mm256_loadu_si256(q + 5));
        s2 = _mm256_add_epi32(s2, _mm256_loadu_si256(q + 6));
        s3 = _mm256_add_epi32(s3, _mm256_loadu_si256(q + 7));
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3));
    return _mm256_extract_epi32(s, 0) + _mm256_extract_epi32(s, 7);
}

typedef struct bench_bw_part {
    const unsigned char *p;
    size_t n;
    pthread_barrier_t *bar;
    double t; /* seconds of this thread's read */
    long sink;
} bench_bw_part;

static inline void *bench_bw_thread(void *arg)
{
    bench_bw_part *b = arg;
    pthread_barrier_wait(b->bar);
    double t0 = bench_now();
    b->sink = bench_read_bytes(b->p, b->n);
    b->t = bench_now() - t0;
    return NULL;
}

/* GB/s of reading `bytes` split over `threads` (at most 64) threads, the
 * best of reps; a read's time is its slowest thread's. */
static inline double bench_read_bw(const unsigned char *buf, size_t bytes, int threads, int reps)
{
    double best = 0.0;
    if (threads > 64) threads = 64;
    for (int r = 0; r < reps; r++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)threads);
        bench_bw_part parts[64];
        pthread_t tid[64];
        size_t per = bytes / (size_t)threads / 256 * 256;
        for (int i = 0; i < threads; i++) parts[i] = (bench_bw_part){buf + (size_t)i * per, per, &bar, 0, 0};
        for (int i = 1; i < threads; i++) pthread_create(&tid[i], NULL, bench_bw_thread, &parts[i]);
        bench_bw_thread(&parts[0]);
        double t = parts[0].t;
        for (int i = 1; i < threads; i++) {
            pthread_join(tid[i], NULL);
            if (parts[i].t > t) t = parts[i].t;
        }
        pthread_barrier_destroy(&bar);
        double gbs = (double)per * threads / t * 1e-9;
        if (gbs > best) best = gbs;
    }
    return best;
}

#endif
