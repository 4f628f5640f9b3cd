/* cpu_bw.c - the read bandwidth the cores reach: a plain streaming read
 * (wide loads) of a buffer split over threads that start together.  The
 * limit every cpu benchmark and `infer bench` measure against. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/cpu.h"
#include "core/error.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static long read_avx2(const unsigned char *p, size_t n)
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
#endif

long cpu_read_bytes(const unsigned char *p, size_t n)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) return read_avx2(p, n);
#endif
    unsigned long long s[4] = {0, 0, 0, 0};
    for (size_t i = 0; i + 32 <= n; i += 32) {
        unsigned long long v[4];
        memcpy(v, p + i, sizeof v);
        for (int k = 0; k < 4; k++) s[k] += v[k];
    }
    return (long)(s[0] + s[1] + s[2] + s[3]);
}

typedef struct bw_part {
    const unsigned char *p;
    size_t n;
    atomic_int *go; /* the threads start reading together, when it is set */
    double t; /* seconds of this thread's read */
    long sink;
} bw_part;

static void *bw_thread(void *arg)
{
    bw_part *b = arg;
    while (!atomic_load_explicit(b->go, memory_order_acquire)) {
    }
    double t0 = now_s();
    b->sink = cpu_read_bytes(b->p, b->n);
    b->t = now_s() - t0;
    return NULL;
}

double cpu_read_bw(const unsigned char *buf, size_t bytes, int threads, int reps)
{
    double best = 0.0;
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    for (int r = 0; r < reps; r++) {
        atomic_int go = 0;
        bw_part parts[64];
        pthread_t tid[64];
        size_t per = bytes / (size_t)threads / 256 * 256;
        for (int i = 0; i < threads; i++) parts[i] = (bw_part){buf + (size_t)i * per, per, &go, 0, 0};
        for (int i = 1; i < threads; i++)
            if (pthread_create(&tid[i], NULL, bw_thread, &parts[i]) != 0)
                tid[i] = 0; /* a thread that cannot start: its part is read here, after */
        atomic_store_explicit(&go, 1, memory_order_release);
        bw_thread(&parts[0]);
        double t = parts[0].t;
        for (int i = 1; i < threads; i++) {
            if (tid[i])
                pthread_join(tid[i], NULL);
            else
                bw_thread(&parts[i]);
            if (parts[i].t > t) t = parts[i].t;
        }
        double gbs = t > 0 ? (double)per * threads / t * 1e-9 : 0.0;
        if (gbs > best) best = gbs;
    }
    return best;
}

int cpu_bandwidth(int n_threads, double *gb_per_s)
{
    *gb_per_s = 0.0;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    size_t bytes = (size_t)1 << 30;
    unsigned char *buf = malloc(bytes);
    if (!buf) return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: no 1 GiB buffer to measure the bandwidth with");
    memset(buf, 1, bytes);
    *gb_per_s = cpu_read_bw(buf, bytes, n_threads, 3);
    free(buf);
    return INFER_OK;
}
