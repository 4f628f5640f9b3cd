/* kv.c - KV caches: per layer, n_slots sequences of cap rows each.
 *
 * Sliding-window layers keep a ring of window + max_chunk - 1 rows: enough
 * for every key that a pass of max_chunk new tokens can see.  The other
 * layers hold every position and grow by doubling up to the context. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model.h"

static size_t row_bytes(const infer_model *m)
{
    return (size_t)m->cfg.n_kv_heads * m->cfg.head_dim * BK_ACT_BYTES;
}

static int ring_cap(const infer_model *m, int layer, int max_chunk)
{
    const model_config *c = &m->cfg;
    if (!c->layer_sliding || !c->layer_sliding[layer] || c->sliding_window <= 0) return 0;
    long cap = (long)c->sliding_window + max_chunk - 1;
    return cap < m->context_len ? (int)cap : 0;
}

void kv_cache_free(infer_model *m, kv_cache *kv)
{
    for (int l = 0; kv->k && l < kv->n_layers; l++) {
        m->be->free(m->bctx, kv->k[l]);
        m->be->free(m->bctx, kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->cap);
    memset(kv, 0, sizeof *kv);
}

int kv_cache_new(infer_model *m, int n_slots, int max_chunk, int initial, kv_cache *kv)
{
    memset(kv, 0, sizeof *kv);
    int L = m->cfg.n_layers;
    if (n_slots <= 0 || max_chunk <= 0 || max_chunk > m->context_len)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "kv cache: %d slots, chunks of %d tokens, context %d", n_slots,
                         max_chunk, m->context_len);
    kv->n_slots = n_slots;
    kv->n_layers = L;
    kv->max_chunk = max_chunk;
    kv->full_cap = initial < max_chunk ? max_chunk : initial;
    if (kv->full_cap > m->context_len) kv->full_cap = m->context_len;
    kv->cap = calloc((size_t)L, sizeof *kv->cap);
    kv->k = calloc((size_t)L, sizeof *kv->k);
    kv->v = calloc((size_t)L, sizeof *kv->v);
    if (!kv->cap || !kv->k || !kv->v) {
        kv_cache_free(m, kv);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "kv cache: out of memory");
    }
    for (int l = 0; l < L; l++) {
        int ring = ring_cap(m, l, max_chunk);
        kv->cap[l] = ring ? ring : kv->full_cap;
        size_t bytes = (size_t)n_slots * kv->cap[l] * row_bytes(m);
        int rc;
        if ((rc = m->be->alloc(m->bctx, bytes, &kv->k[l])) || (rc = m->be->alloc(m->bctx, bytes, &kv->v[l]))) {
            kv_cache_free(m, kv);
            return infer_err_prefix(rc, "kv cache of %d slots x %d positions", n_slots, kv->full_cap);
        }
    }
    return INFER_OK;
}

int kv_cache_reserve(infer_model *m, kv_cache *kv, int n, int keep)
{
    if (n > m->context_len)
        return infer_err(INFER_ERR_OUT_OF_RANGE, "kv cache: %d positions exceed the context of %d", n,
                         m->context_len);
    if (n <= kv->full_cap) return INFER_OK;
    long want = (long)kv->full_cap * 2;
    if (want < n) want = n;
    if (want > m->context_len) want = m->context_len;
    int cap = (int)want, old = kv->full_cap;
    if (keep > old) keep = old;
    size_t rb = row_bytes(m);
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->cap[l] != old || ring_cap(m, l, kv->max_chunk)) continue;
        void *nk = NULL, *nv = NULL;
        size_t bytes = (size_t)kv->n_slots * cap * rb;
        int rc;
        if ((rc = m->be->alloc(m->bctx, bytes, &nk)) || (rc = m->be->alloc(m->bctx, bytes, &nv))) {
            m->be->free(m->bctx, nk);
            return infer_err_prefix(rc, "kv cache: growing to %d positions", cap);
        }
        for (int sl = 0; sl < kv->n_slots && keep > 0; sl++) {
            size_t dst = (size_t)sl * cap * rb, src = (size_t)sl * old * rb;
            if ((rc = m->be->copy(m->bctx, (char *)nk + dst, (const char *)kv->k[l] + src, (size_t)keep * rb)) ||
                (rc = m->be->copy(m->bctx, (char *)nv + dst, (const char *)kv->v[l] + src, (size_t)keep * rb))) {
                m->be->free(m->bctx, nk);
                m->be->free(m->bctx, nv);
                return rc;
            }
        }
        m->be->free(m->bctx, kv->k[l]);
        m->be->free(m->bctx, kv->v[l]);
        kv->k[l] = nk;
        kv->v[l] = nv;
        kv->cap[l] = cap;
    }
    kv->full_cap = cap;
    return INFER_OK;
}

int kv_cache_can_rewind(const infer_model *m, const kv_cache *kv, int len, int to)
{
    if (to > len || to < 0) return 0;
    const model_config *c = &m->cfg;
    for (int l = 0; l < kv->n_layers; l++) {
        if (!ring_cap(m, l, kv->max_chunk)) continue;
        int oldest = len - kv->cap[l] > 0 ? len - kv->cap[l] : 0;
        int need = to - c->sliding_window + 1 > 0 ? to - c->sliding_window + 1 : 0;
        if (need < oldest) return 0;
    }
    return 1;
}
