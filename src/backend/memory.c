/* memory.c - the public memory and device calls: each picks a backend by
 * name (NULL = the first available, as infer_model_load does) and calls
 * its process-wide entries of backend_ops (mem_get, mem_set, clear_cache,
 * reset_peak, device_info).  A backend without an entry answers
 * INFER_ERR_UNSUPPORTED from the calls that return a status, and 0 from the
 * getters. */
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"

/* The backend called name, or the first available one for NULL. */
static int pick(const char *name, const backend_ops **out)
{
    *out = NULL;
    if (!name) {
        for (int i = 0; i < backend_count(); i++) {
            const backend_ops *b = backend_at(i);
            if (b->available()) {
                *out = b;
                return INFER_OK;
            }
        }
        return infer_err(INFER_ERR_BACKEND, "no backend is available");
    }
    const backend_ops *b = backend_find(name);
    if (!b) return infer_err(INFER_ERR_BACKEND, "backend '%s' is not compiled into this library", name);
    if (!b->available()) return infer_err(INFER_ERR_BACKEND, "backend '%s' is not available on this machine", name);
    *out = b;
    return INFER_OK;
}

static int set_limit(const char *backend, bk_mem what, const char *call, size_t bytes, size_t *previous)
{
    const backend_ops *b;
    int rc = pick(backend, &b);
    if (rc) return infer_err_prefix(rc, "%s", call);
    if (!b->mem_set) return infer_err(INFER_ERR_UNSUPPORTED, "%s: backend '%s' has no memory limits", call, b->name);
    rc = b->mem_set(what, bytes, previous);
    return rc ? infer_err_prefix(rc, "%s", call) : INFER_OK;
}

/* 0 for an unknown or unavailable backend (infer_last_error says which). */
static size_t get(const char *backend, bk_mem what, const char *call)
{
    const backend_ops *b;
    if (pick(backend, &b)) {
        infer_err_prefix(INFER_ERR_BACKEND, "%s", call);
        return 0;
    }
    return b->mem_get ? b->mem_get(what) : 0;
}

int infer_set_cache_limit(const char *backend, size_t bytes, size_t *previous)
{
    return set_limit(backend, BK_MEM_CACHE_LIMIT, "infer_set_cache_limit", bytes, previous);
}

int infer_set_memory_limit(const char *backend, size_t bytes, size_t *previous)
{
    return set_limit(backend, BK_MEM_LIMIT, "infer_set_memory_limit", bytes, previous);
}

int infer_set_wired_limit(const char *backend, size_t bytes, size_t *previous)
{
    return set_limit(backend, BK_MEM_WIRED_LIMIT, "infer_set_wired_limit", bytes, previous);
}

size_t infer_get_active_memory(const char *backend)
{
    return get(backend, BK_MEM_ACTIVE, "infer_get_active_memory");
}

size_t infer_get_peak_memory(const char *backend)
{
    return get(backend, BK_MEM_PEAK, "infer_get_peak_memory");
}

size_t infer_get_cache_memory(const char *backend)
{
    return get(backend, BK_MEM_CACHE, "infer_get_cache_memory");
}

int infer_clear_cache(const char *backend)
{
    const backend_ops *b;
    int rc = pick(backend, &b);
    if (rc) return infer_err_prefix(rc, "infer_clear_cache");
    if (!b->clear_cache) return INFER_OK; /* no cache, nothing to clear */
    rc = b->clear_cache();
    return rc ? infer_err_prefix(rc, "infer_clear_cache") : INFER_OK;
}

int infer_reset_peak_memory(const char *backend)
{
    const backend_ops *b;
    int rc = pick(backend, &b);
    if (rc) return infer_err_prefix(rc, "infer_reset_peak_memory");
    if (!b->reset_peak)
        return infer_err(INFER_ERR_UNSUPPORTED, "infer_reset_peak_memory: backend '%s' keeps no peak", b->name);
    rc = b->reset_peak();
    return rc ? infer_err_prefix(rc, "infer_reset_peak_memory") : INFER_OK;
}

int infer_get_device_info(const char *backend, infer_device_info *out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_get_device_info: out is NULL");
    memset(out, 0, sizeof *out);
    const backend_ops *b;
    int rc = pick(backend, &b);
    if (rc) return infer_err_prefix(rc, "infer_get_device_info");
    if (!b->device_info)
        return infer_err(INFER_ERR_UNSUPPORTED, "infer_get_device_info: backend '%s' tells nothing of its device",
                         b->name);
    rc = b->device_info(out);
    if (rc) {
        memset(out, 0, sizeof *out);
        return infer_err_prefix(rc, "infer_get_device_info");
    }
    snprintf(out->backend, sizeof out->backend, "%s", b->name);
    return INFER_OK;
}

int infer_measure_bandwidth(const char *backend, int n_threads, double *gb_per_s)
{
    if (!gb_per_s) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_measure_bandwidth: gb_per_s is NULL");
    *gb_per_s = 0.0;
    const backend_ops *b;
    int rc = pick(backend, &b);
    if (rc) return infer_err_prefix(rc, "infer_measure_bandwidth");
    if (!b->bandwidth)
        return infer_err(INFER_ERR_UNSUPPORTED, "infer_measure_bandwidth: backend '%s' cannot measure it", b->name);
    rc = b->bandwidth(n_threads, gb_per_s);
    return rc ? infer_err_prefix(rc, "infer_measure_bandwidth") : INFER_OK;
}
