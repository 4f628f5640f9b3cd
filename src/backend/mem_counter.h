/* mem_counter.h - a backend's process-wide memory accounting: active and
 * peak bytes and the three limits of bk_mem, shared by all its contexts.
 * Lock-free; every backend keeps one static bk_counters. */
#ifndef INFER_BACKEND_MEM_COUNTER_H
#define INFER_BACKEND_MEM_COUNTER_H

#include <stdatomic.h>
#include <stddef.h>

#include "backend/backend.h"

typedef struct bk_counters {
    atomic_size_t active, peak, cache, limit, cache_limit, wired_limit;
    atomic_size_t wired; /* pinned host bytes (cuda's host_alloc) */
} bk_counters;

/* Counts bytes as active, limit or not. */
void bkc_count(bk_counters *c, size_t bytes);
/* Counts bytes as active unless that would pass the memory limit; then
 * counts nothing, stores the limit and the active bytes, and returns 0. */
int bkc_take(bk_counters *c, size_t bytes, size_t *limit_out, size_t *active_out);
void bkc_give(bk_counters *c, size_t bytes);
/* The same for pinned host bytes under the wired limit (no peak). */
int bkc_pin(bk_counters *c, size_t bytes, size_t *limit_out, size_t *pinned_out);
void bkc_unpin(bk_counters *c, size_t bytes);
size_t bkc_get(bk_counters *c, bk_mem what);
/* Sets one of the three limits (a limit below the active bytes is allowed:
 * the next take fails); backend names the caller in the error for any
 * other what. */
int bkc_set(bk_counters *c, bk_mem what, size_t value, size_t *previous, const char *backend);
void bkc_reset_peak(bk_counters *c);

#endif
