/* mem_pool.h - a caching allocator over a backend's raw allocator (cuda:
 * cudaMalloc and cudaFree, which are slow and wait for the device).
 *
 * A freed block is kept for reuse instead of being given back: an
 * allocation takes the smallest kept block that holds it without wasting
 * more than a quarter, else asks the raw allocator (and, when that fails,
 * gives every kept block back and asks again).  Sizes are rounded up to
 * 512 bytes below 1 MiB and to 64 KiB above.  The counters (bk_counters)
 * follow the rounded bytes: active = held by callers, cache = kept; the
 * memory limit binds active bytes (a clean out-of-memory error past it);
 * the cache limit bounds the kept bytes (the largest go back first).
 * Thread-safe. */
#ifndef INFER_BACKEND_MEM_POOL_H
#define INFER_BACKEND_MEM_POOL_H

#include <pthread.h>
#include <stddef.h>

#include "backend/mem_counter.h"

typedef struct bk_pool_block {
    void *p;
    size_t bytes;
} bk_pool_block;

typedef struct bk_pool {
    const char *name; /* the backend, for messages */
    int (*raw_alloc)(size_t bytes, void **out); /* 0 on success */
    void (*raw_free)(void *p);
    bk_counters *c;
    pthread_mutex_t lock;
    bk_pool_block *live, *kept; /* blocks held by callers; blocks kept for reuse */
    size_t n_live, cap_live, n_kept, cap_kept;
} bk_pool;

#define BK_POOL_INIT(name_, alloc_, free_, counters_) \
    {(name_), (alloc_), (free_), (counters_), PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 0, 0, 0}

/* The bytes an allocation of n takes. */
size_t bkp_round(size_t n);
int bkp_alloc(bk_pool *pool, size_t bytes, void **out);
/* Keeps p for reuse (then trims the cache to its limit); p must come from
 * bkp_alloc of this pool, anything else is ignored. */
void bkp_free(bk_pool *pool, void *p);
/* 1 if p is a block this pool handed out and that is not freed. */
int bkp_owns(bk_pool *pool, const void *p);
/* Gives every kept block back to the raw allocator. */
void bkp_clear(bk_pool *pool);
/* Gives kept blocks back, the largest first, until the cache is within its
 * limit (none when the limit is 0). */
void bkp_trim(bk_pool *pool);

#endif
