/* bench_bw.h - what the benchmarks share for their limits: a monotonic
 * clock and the read bandwidth of a plain streaming read (wide loads, the
 * buffer split over threads that start together). */
#ifndef INFER_BENCH_BW_H
#define INFER_BENCH_BW_H

#include <stddef.h>
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

#endif
