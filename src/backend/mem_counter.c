/* mem_counter.c - see mem_counter.h. */
#include "backend/mem_counter.h"

#include <stdint.h>

#include "core/error.h"

static void raise_peak(bk_counters *c, size_t now)
{
    size_t peak = atomic_load(&c->peak);
    while (now > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now)) {
    }
}

void bkc_count(bk_counters *c, size_t bytes) { raise_peak(c, atomic_fetch_add(&c->active, bytes) + bytes); }

/* n += bytes unless that would pass *limit (0 = none); then n is left,
 * and the limit and n are stored.  Returns n before, or SIZE_MAX when it
 * failed. */
static size_t add_under(atomic_size_t *n, atomic_size_t *limit, size_t bytes, size_t *limit_out, size_t *n_out)
{
    size_t cur = atomic_load(n);
    for (;;) {
        size_t lim = atomic_load(limit);
        if (lim && (bytes > lim || cur > lim - bytes)) {
            *limit_out = lim;
            *n_out = cur;
            return SIZE_MAX;
        }
        if (atomic_compare_exchange_weak(n, &cur, cur + bytes)) return cur;
    }
}

int bkc_take(bk_counters *c, size_t bytes, size_t *limit_out, size_t *active_out)
{
    size_t cur = add_under(&c->active, &c->limit, bytes, limit_out, active_out);
    if (cur == SIZE_MAX) return 0;
    raise_peak(c, cur + bytes);
    return 1;
}

void bkc_give(bk_counters *c, size_t bytes) { atomic_fetch_sub(&c->active, bytes); }

int bkc_pin(bk_counters *c, size_t bytes, size_t *limit_out, size_t *pinned_out)
{
    return add_under(&c->wired, &c->wired_limit, bytes, limit_out, pinned_out) != SIZE_MAX;
}

void bkc_unpin(bk_counters *c, size_t bytes) { atomic_fetch_sub(&c->wired, bytes); }

size_t bkc_get(bk_counters *c, bk_mem what)
{
    switch (what) {
    case BK_MEM_ACTIVE: return atomic_load(&c->active);
    case BK_MEM_PEAK: return atomic_load(&c->peak);
    case BK_MEM_CACHE: return atomic_load(&c->cache);
    case BK_MEM_LIMIT: return atomic_load(&c->limit);
    case BK_MEM_CACHE_LIMIT: return atomic_load(&c->cache_limit);
    case BK_MEM_WIRED_LIMIT: return atomic_load(&c->wired_limit);
    }
    return 0;
}

int bkc_set(bk_counters *c, bk_mem what, size_t value, size_t *previous, const char *backend)
{
    atomic_size_t *v = what == BK_MEM_LIMIT         ? &c->limit
                       : what == BK_MEM_CACHE_LIMIT ? &c->cache_limit
                       : what == BK_MEM_WIRED_LIMIT ? &c->wired_limit
                                                    : NULL;
    if (!v) return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s backend: memory setting %d is not a limit", backend, (int)what);
    size_t old = atomic_exchange(v, value);
    if (previous) *previous = old;
    return INFER_OK;
}

void bkc_reset_peak(bk_counters *c)
{
    atomic_store(&c->peak, atomic_load(&c->active));
    /* an allocation between the two loads must still show */
    raise_peak(c, atomic_load(&c->active));
}
