/* vocab.c - open-addressing hash maps: piece -> id and (id, id) -> merge. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_internal.h"

/* ---- string map ----------------------------------------------------- */

/* Tables are at most half full: linear probing stays short, also for the
 * misses that BPE's pair lookups mostly are.  Empty slots are all zero
 * (calloc'd), so a fresh table costs no initialisation pass. */
static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

int strmap_init(tok_strmap *m, size_t expected)
{
    size_t cap = pow2_at_least(expected * 2);
    if (cap > UINT32_MAX / 2) return INFER_ERR_OUT_OF_MEMORY;
    m->slots = tok_table_alloc(cap * sizeof *m->slots);
    if (!m->slots) return INFER_ERR_OUT_OF_MEMORY;
    m->mask = (uint32_t)(cap - 1);
    m->count = 0;
    return 0;
}

void strmap_free(tok_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = m->count = 0;
}

static int strmap_grow(tok_strmap *m)
{
    tok_strmap n;
    size_t cap = ((size_t)m->mask + 1) * 2;
    if (cap > UINT32_MAX / 2) return INFER_ERR_OUT_OF_MEMORY;
    n.slots = tok_table_alloc(cap * sizeof *n.slots);
    if (!n.slots) return INFER_ERR_OUT_OF_MEMORY;
    n.mask = (uint32_t)(cap - 1);
    n.count = m->count;
    for (size_t i = 0; i <= m->mask; i++) {
        tok_slot s = m->slots[i];
        if (s.val1 == 0) continue;
        uint32_t j = s.hash & n.mask;
        while (n.slots[j].val1 != 0) j = (j + 1) & n.mask;
        n.slots[j] = s;
    }
    free(m->slots);
    *m = n;
    return 0;
}

int strmap_put(tok_strmap *m, const char *arena, uint32_t off, uint32_t len, int32_t val)
{
    return strmap_put_h(m, arena, off, len, val, (uint32_t)tok_hash(arena + off, len));
}

int strmap_put_h(tok_strmap *m, const char *arena, uint32_t off, uint32_t len, int32_t val, uint32_t h)
{
    if (!m->slots && strmap_init(m, 8)) return INFER_ERR_OUT_OF_MEMORY;
    if ((size_t)(m->count + 1) * 2 > (size_t)m->mask + 1 && strmap_grow(m))
        return INFER_ERR_OUT_OF_MEMORY;
    uint32_t i = h & m->mask;
    for (;;) {
        tok_slot *s = &m->slots[i];
        if (s->val1 == 0) {
            s->hash = h;
            s->off = off;
            s->len = len;
            s->val1 = (uint32_t)val + 1;
            m->count++;
            return 0;
        }
        if (s->hash == h && s->len == len && memcmp(arena + s->off, arena + off, len) == 0) {
            s->val1 = (uint32_t)val + 1;
            return 0;
        }
        i = (i + 1) & m->mask;
    }
}

int32_t strmap_get(const tok_strmap *m, const char *arena, const char *key, size_t len)
{
    return strmap_get_h(m, arena, key, len, (uint32_t)tok_hash(key, len));
}

/* ---- batched lookups ------------------------------------------------ */

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

uint32_t strmap_hash(const char *key, size_t len) { return (uint32_t)tok_hash(key, len); }

void strmap_prefetch(const tok_strmap *m, uint32_t h)
{
    if (m->slots) PREFETCH(&m->slots[h & m->mask]);
}

void strmap_prefetch_key(const tok_strmap *m, const char *arena, uint32_t h)
{
    if (!m->slots) return;
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const tok_slot *s = &m->slots[i];
        if (s->val1 == 0) return;
        if (s->hash == h) {
            PREFETCH(arena + s->off);
            return;
        }
    }
}

int32_t strmap_get_h(const tok_strmap *m, const char *arena, const char *key, size_t len, uint32_t h)
{
    if (!m->slots || len > UINT32_MAX) return -1;
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const tok_slot *s = &m->slots[i];
        if (s->val1 == 0) return -1;
        if (s->hash == h && s->len == len && memcmp(arena + s->off, key, len) == 0)
            return (int32_t)(s->val1 - 1);
    }
}

void mergemap_prefetch(const tok_mergemap *m, int32_t a, int32_t b)
{
    if (!m->slots) return;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    PREFETCH(&m->slots[(key * 0x9E3779B97F4A7C15ull) >> m->shift]);
}

/* ---- merge map ------------------------------------------------------ */

int mergemap_init(tok_mergemap *m, size_t expected)
{
    size_t cap = pow2_at_least(expected * 2);
    m->slots = tok_table_alloc(cap * sizeof *m->slots);
    if (!m->slots) return INFER_ERR_OUT_OF_MEMORY;
    m->mask = cap - 1;
    m->count = 0;
    unsigned bits = 0;
    while (((size_t)1 << bits) < cap) bits++;
    m->shift = 64 - bits;
    return 0;
}

void mergemap_free(tok_mergemap *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int mergemap_grow(tok_mergemap *m)
{
    tok_mergemap n;
    if (mergemap_init(&n, (size_t)(m->mask + 1))) return INFER_ERR_OUT_OF_MEMORY;
    for (uint64_t i = 0; i <= m->mask; i++) {
        tok_merge_slot s = m->slots[i];
        if (s.key == 0) continue;
        uint64_t j = ((s.key - 1) * 0x9E3779B97F4A7C15ull) >> n.shift;
        while (n.slots[j].key != 0) j = (j + 1) & n.mask;
        n.slots[j] = s;
        n.count++;
    }
    free(m->slots);
    *m = n;
    return 0;
}

int mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    if (!m->slots && mergemap_init(m, 8)) return INFER_ERR_OUT_OF_MEMORY;
    if ((uint64_t)(m->count + 1) * 2 > m->mask + 1 && mergemap_grow(m))
        return INFER_ERR_OUT_OF_MEMORY;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> m->shift;
    for (;;) {
        tok_merge_slot *s = &m->slots[i];
        if (s->key == 0) {
            s->key = key + 1;
            s->rank = rank;
            s->id = id;
            m->count++;
            return 0;
        }
        if (s->key == key + 1) { /* a repeated merge: the later one wins, as in Rust */
            s->rank = rank;
            s->id = id;
            return 0;
        }
        i = (i + 1) & m->mask;
    }
}
