/* mem_pool.c - see mem_pool.h. */
#include "backend/mem_pool.h"

#include <stdint.h>
#include <stdlib.h>

#include "core/error.h"

size_t bkp_round(size_t n)
{
    size_t q = n < ((size_t)1 << 20) ? 512 : (size_t)64 << 10;
    if (n == 0) return q;
    if (n > SIZE_MAX - q) return 0;
    return (n + q - 1) / q * q;
}

static int push(bk_pool_block **a, size_t *n, size_t *cap, void *p, size_t bytes)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        bk_pool_block *g = realloc(*a, nc * sizeof *g);
        if (!g) return 0;
        *a = g;
        *cap = nc;
    }
    (*a)[*n].p = p;
    (*a)[*n].bytes = bytes;
    (*n)++;
    return 1;
}

/* Gives kept block i back to the raw allocator; the caller holds the lock. */
static void release_kept(bk_pool *pool, size_t i)
{
    pool->raw_free(pool->kept[i].p);
    atomic_fetch_sub(&pool->c->cache, pool->kept[i].bytes);
    pool->kept[i] = pool->kept[--pool->n_kept];
}

static void clear_locked(bk_pool *pool)
{
    while (pool->n_kept) release_kept(pool, pool->n_kept - 1);
}

static void trim_locked(bk_pool *pool)
{
    size_t limit = atomic_load(&pool->c->cache_limit);
    if (!limit) return;
    while (pool->n_kept && atomic_load(&pool->c->cache) > limit) {
        size_t big = 0;
        for (size_t i = 1; i < pool->n_kept; i++)
            if (pool->kept[i].bytes > pool->kept[big].bytes) big = i;
        release_kept(pool, big);
    }
}

int bkp_alloc(bk_pool *pool, size_t bytes, void **out)
{
    *out = NULL;
    size_t need = bkp_round(bytes);
    if (!need) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate %zu bytes", pool->name, bytes);
    size_t limit, active;
    if (!bkc_take(pool->c, need, &limit, &active))
        return infer_err(INFER_ERR_OUT_OF_MEMORY,
                         "%s backend: allocating %zu bytes would pass the memory limit of %zu bytes (%zu active)",
                         pool->name, bytes, limit, active);
    pthread_mutex_lock(&pool->lock);
    /* the smallest kept block that holds it, wasting at most a quarter */
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < pool->n_kept; i++) {
        size_t b = pool->kept[i].bytes;
        if (b >= need && b - need <= need / 4 && (best == SIZE_MAX || b < pool->kept[best].bytes)) best = i;
    }
    void *p = NULL;
    size_t got = need;
    int rc = INFER_OK;
    if (best != SIZE_MAX) {
        p = pool->kept[best].p;
        got = pool->kept[best].bytes;
        atomic_fetch_sub(&pool->c->cache, got);
        pool->kept[best] = pool->kept[--pool->n_kept];
    } else if (pool->raw_alloc(need, &p) != 0) {
        /* the device may be full of kept blocks: give them back, try again */
        clear_locked(pool);
        if (pool->raw_alloc(need, &p) != 0) {
            p = NULL;
            rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate %zu bytes on the device", pool->name,
                           bytes);
        }
    }
    if (p && !push(&pool->live, &pool->n_live, &pool->cap_live, p, got)) {
        pool->raw_free(p);
        p = NULL;
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s backend: out of host memory", pool->name);
    }
    pthread_mutex_unlock(&pool->lock);
    if (!p) {
        bkc_give(pool->c, need);
        return rc;
    }
    if (got != need) bkc_count(pool->c, got - need); /* a kept block a little larger */
    *out = p;
    return INFER_OK;
}

void bkp_free(bk_pool *pool, void *p)
{
    if (!p) return;
    pthread_mutex_lock(&pool->lock);
    for (size_t i = pool->n_live; i-- > 0;) {
        if (pool->live[i].p != p) continue;
        size_t bytes = pool->live[i].bytes;
        pool->live[i] = pool->live[--pool->n_live];
        bkc_give(pool->c, bytes);
        if (push(&pool->kept, &pool->n_kept, &pool->cap_kept, p, bytes))
            atomic_fetch_add(&pool->c->cache, bytes);
        else
            pool->raw_free(p);
        trim_locked(pool);
        break;
    }
    pthread_mutex_unlock(&pool->lock);
}

int bkp_owns(bk_pool *pool, const void *p)
{
    int found = 0;
    pthread_mutex_lock(&pool->lock);
    for (size_t i = 0; i < pool->n_live && !found; i++) found = pool->live[i].p == p;
    pthread_mutex_unlock(&pool->lock);
    return found;
}

void bkp_clear(bk_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    clear_locked(pool);
    pthread_mutex_unlock(&pool->lock);
}

void bkp_trim(bk_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    trim_locked(pool);
    pthread_mutex_unlock(&pool->lock);
}
