/* bpe.c - the BPE model: one pre-token in, ids out.
 *
 * The word starts as one symbol per character (its vocab id; byte
 * fallback or unk when it has none), then the adjacent pair of lowest
 * merge rank is merged, leftmost first, until no pair can merge.  Short
 * words use a linear scan over cached pair ranks; long ones a binary heap
 * with lazy invalidation, as in Hugging Face's Word::merge_all.  Results
 * for repeated words are cached in the calling thread's scratch, across
 * calls (encode.c clears the cache when the tokenizer changes). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

typedef struct bsym {
    int32_t id;
    int32_t prev, next;
    uint32_t len;   /* bytes of the word it covers; 0: merged away */
    uint32_t prank; /* rank of the pair with next (linear loop), UINT32_MAX none */
    int32_t pid;    /* id that pair merges to */
} bsym;

typedef struct bmerge {
    uint32_t rank;
    int32_t pos;
    int32_t id;
} bmerge;

#define LINEAR_MAX 48
#define CACHE_MAX_WORD 64
#define CACHE_MAX_SLOTS (1u << 17)

static int nomem(void) { return infer_err(INFER_ERR_OUT_OF_MEMORY, "BPE: out of memory"); }

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (*cap >= need) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* ---- the word cache -------------------------------------------------- */

void cache_clear(tok_scratch *sc)
{
    if (sc->cache_slots) memset(sc->cache_slots, 0, (sc->cache_mask + 1) * sizeof *sc->cache_slots);
    sc->cache_n = 0;
    sc->cache_keys.n = 0;
    sc->cache_ids.n = 0;
}

/* meta per entry: hash, key offset, key length, ids offset, ids count */
#define META 5

static const int32_t *cache_get(tok_scratch *sc, const char *w, size_t n, uint32_t h, size_t *n_ids)
{
    if (!sc->cache_slots) return NULL;
    for (size_t i = h & sc->cache_mask;; i = (i + 1) & sc->cache_mask) {
        uint32_t e = sc->cache_slots[i];
        if (!e) return NULL;
        const uint32_t *m = sc->cache_meta + (size_t)(e - 1) * META;
        if (m[0] == h && m[2] == n && memcmp(sc->cache_keys.p + m[1], w, n) == 0) {
            *n_ids = m[4];
            return sc->cache_ids.v + m[3];
        }
    }
}

static void cache_put(tok_scratch *sc, const char *w, size_t n, uint32_t h, const int32_t *ids,
                      size_t n_ids)
{
    if (!sc->cache_slots) {
        sc->cache_slots = calloc(4096, sizeof *sc->cache_slots);
        sc->cache_meta = malloc(2048 * META * sizeof *sc->cache_meta);
        if (!sc->cache_slots || !sc->cache_meta) {
            free(sc->cache_slots);
            free(sc->cache_meta);
            sc->cache_slots = NULL;
            sc->cache_meta = NULL;
            return;
        }
        sc->cache_mask = 4095;
        sc->cache_n = 0;
    }
    if ((sc->cache_n + 1) * 2 > sc->cache_mask + 1 && (sc->cache_mask + 1) * 2 > CACHE_MAX_SLOTS)
        cache_clear(sc); /* full: start again */
    if ((sc->cache_n + 1) * 2 > sc->cache_mask + 1) {
        size_t cap = (sc->cache_mask + 1) * 2;
        uint32_t *slots = calloc(cap, sizeof *slots);
        uint32_t *meta = realloc(sc->cache_meta, cap / 2 * META * sizeof *meta);
        if (!slots || !meta) {
            free(slots);
            if (meta) sc->cache_meta = meta;
            return;
        }
        sc->cache_meta = meta;
        for (size_t e = 0; e < sc->cache_n; e++) {
            size_t i = meta[e * META] & (cap - 1);
            while (slots[i]) i = (i + 1) & (cap - 1);
            slots[i] = (uint32_t)e + 1;
        }
        free(sc->cache_slots);
        sc->cache_slots = slots;
        sc->cache_mask = cap - 1;
    }
    size_t koff = sc->cache_keys.n, ioff = sc->cache_ids.n;
    if (tb_put(&sc->cache_keys, w, n) || ids_put(&sc->cache_ids, ids, n_ids)) return;
    uint32_t *m = sc->cache_meta + sc->cache_n * META;
    m[0] = h;
    m[1] = (uint32_t)koff;
    m[2] = (uint32_t)n;
    m[3] = (uint32_t)ioff;
    m[4] = (uint32_t)n_ids;
    size_t i = h & sc->cache_mask;
    while (sc->cache_slots[i]) i = (i + 1) & sc->cache_mask;
    sc->cache_slots[i] = (uint32_t)++sc->cache_n;
}

/* ---- merging -------------------------------------------------------- */

static void pair_rank(const infer_tokenizer *tok, bsym *s, int32_t i)
{
    int32_t j = s[i].next;
    s[i].prank = UINT32_MAX;
    if (j < 0) return;
    const tok_merge_slot *m = mergemap_get(&tok->merges, s[i].id, s[j].id);
    if (m) {
        s[i].prank = m->rank;
        s[i].pid = m->id;
    }
}

static void merge_linear(const infer_tokenizer *tok, bsym *s, int32_t n)
{
    for (int32_t i = 0; i < n; i++) pair_rank(tok, s, i);
    for (;;) {
        uint32_t best = UINT32_MAX;
        int32_t bi = -1;
        for (int32_t i = 0; i >= 0; i = s[i].next)
            if (s[i].prank < best) {
                best = s[i].prank;
                bi = i;
            }
        if (bi < 0) return;
        int32_t j = s[bi].next;
        s[bi].id = s[bi].pid;
        s[bi].len += s[j].len;
        s[j].len = 0;
        s[bi].next = s[j].next;
        if (s[j].next >= 0) s[s[j].next].prev = bi;
        pair_rank(tok, s, bi);
        if (s[bi].prev >= 0) pair_rank(tok, s, s[bi].prev);
    }
}

static int heap_less(const bmerge *a, const bmerge *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bmerge *h, size_t *n, bmerge x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static bmerge heap_pop(bmerge *h, size_t *n)
{
    bmerge top = h[0], x = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = x;
    return top;
}

static int merge_heap(const infer_tokenizer *tok, tok_scratch *sc, bsym *s, int32_t n)
{
    /* every merge pushes at most two entries: n + 2n bounds the heap */
    if (grow(&sc->heap, &sc->heap_cap, (size_t)n * 3 + 4, sizeof(bmerge))) return nomem();
    bmerge *h = sc->heap;
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < n; i++) {
        const tok_merge_slot *m = mergemap_get(&tok->merges, s[i].id, s[i + 1].id);
        if (m) heap_push(h, &hn, (bmerge){m->rank, i, m->id});
    }
    while (hn) {
        bmerge top = heap_pop(h, &hn);
        bsym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        int32_t j = cur->next;
        const tok_merge_slot *m = mergemap_get(&tok->merges, cur->id, s[j].id);
        if (!m || m->id != top.id) continue; /* stale */
        cur->id = top.id;
        cur->len += s[j].len;
        s[j].len = 0;
        cur->next = s[j].next;
        if (cur->next >= 0) s[cur->next].prev = top.pos;
        if (cur->prev >= 0) {
            const tok_merge_slot *pm = mergemap_get(&tok->merges, s[cur->prev].id, cur->id);
            if (pm) heap_push(h, &hn, (bmerge){pm->rank, cur->prev, pm->id});
        }
        if (cur->next >= 0) {
            const tok_merge_slot *nm = mergemap_get(&tok->merges, cur->id, s[cur->next].id);
            if (nm) heap_push(h, &hn, (bmerge){nm->rank, top.pos, nm->id});
        }
    }
    return 0;
}

/* ---- one word ------------------------------------------------------- */

static int add_sym(bsym *s, int32_t *n, int32_t id, uint32_t len)
{
    s[*n].id = id;
    s[*n].len = len;
    s[*n].prev = *n - 1;
    s[*n].next = -1;
    if (*n > 0) s[*n - 1].next = *n;
    (*n)++;
    return 0;
}

static int32_t char_lookup(const infer_tokenizer *tok, tok_scratch *sc, const char *w, size_t i,
                           size_t l, size_t n, const char **key, size_t *key_len)
{
    if (tok->plain_syms) {
        *key = w + i;
        *key_len = l;
        if (l <= 3) {
            size_t l2;
            uint32_t cp = utf8_get(w + i, &l2);
            return tok->char_id[cp];
        }
        return strmap_get(&tok->model_map, tok->arena.p, w + i, l);
    }
    tok_buf *k = &sc->norm_tmp; /* free at this point of the pipeline */
    k->n = 0;
    if ((i > 0 && tb_put(k, tok->prefix, tok->prefix_len)) || tb_put(k, w + i, l) ||
        (i + l == n && tb_put(k, tok->suffix, tok->suffix_len)))
        return -2;
    *key = k->p;
    *key_len = k->n;
    return strmap_get(&tok->model_map, tok->arena.p, k->p, k->n);
}

/* The merges of one word (or chunk), through the per-call cache. */
static int merge_word(const infer_tokenizer *tok, tok_scratch *sc, const char *w, size_t n, tok_ids *out)
{
    uint32_t h = 0;
    if (n <= CACHE_MAX_WORD) {
        h = (uint32_t)tok_hash(w, n);
        size_t k;
        const int32_t *hit = cache_get(sc, w, n, h, &k);
        if (hit) return ids_put(out, hit, k) ? nomem() : 0;
    }
    /* at most one symbol per byte */
    if (grow(&sc->syms, &sc->syms_cap, n + 1, sizeof(bsym))) return nomem();
    bsym *s = sc->syms;
    int32_t ns = 0;
    int32_t unk = -1;     /* pending unk symbol */
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len((unsigned char)w[i]);
        if (i + l > n) l = n - i;
        const char *key;
        size_t key_len;
        int32_t id = char_lookup(tok, sc, w, i, l, n, &key, &key_len);
        if (id == -2) return nomem();
        if (id >= 0) {
            if (unk >= 0) {
                add_sym(s, &ns, unk, unk_len);
                unk = -1;
            }
            add_sym(s, &ns, id, (uint32_t)l);
            i += l;
            continue;
        }
        if (tok->byte_fallback) {
            size_t b = 0;
            while (b < key_len && tok->byte_id[(unsigned char)key[b]] >= 0) b++;
            if (b == key_len) {
                /* the symbols array has one slot per byte of w; a prefixed
                 * key can be longer, so make room */
                if (grow(&sc->syms, &sc->syms_cap, (size_t)ns + key_len + (n - i) + 2, sizeof(bsym)))
                    return nomem();
                s = sc->syms;
                for (b = 0; b < key_len; b++) add_sym(s, &ns, tok->byte_id[(unsigned char)key[b]], 1);
                i += l;
                continue;
            }
        }
        if (tok->unk_token) {
            if (tok->unk_id < 0)
                return infer_err(INFER_ERR_FORMAT,
                                 "%s: model.unk_token \"%.64s\" is not in the vocabulary", tok->path,
                                 tok->unk_token);
            if (unk >= 0 && tok->fuse_unk) {
                unk_len += (uint32_t)l;
            } else {
                if (unk >= 0) add_sym(s, &ns, unk, unk_len);
                unk = tok->unk_id;
                unk_len = (uint32_t)l;
            }
        }
        i += l;
    }
    if (unk >= 0) add_sym(s, &ns, unk, unk_len);
    if (ns == 0) return 0;
    if (ns <= LINEAR_MAX) merge_linear(tok, s, ns);
    else if (merge_heap(tok, sc, s, ns)) return nomem();
    size_t first = out->n;
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if (ids_push(out, s[i].id)) return nomem();
    if (n <= CACHE_MAX_WORD) cache_put(sc, w, n, h, out->v + first, out->n - first);
    return 0;
}

/* Whether a word may be cut before position i, where the split string
 * starts; prev is the character before it. */
static int cut_ok(const infer_tokenizer *tok, const char *w, size_t i, size_t prev)
{
    size_t sl = tok->split_len, l;
    if (i >= sl && memcmp(w + i - sl, tok->split_str, sl) == 0) return 0;
    uint32_t cp = utf8_get(w + prev, &l);
    if (l != i - prev || l > 3 || tok->char_id[cp] < 0) return 0; /* byte fallback or unk */
    for (int k = 0; k < tok->n_split_bad; k++)
        if (tok->split_bad[k] == cp) return 0;
    return 1;
}

int bpe_word(const infer_tokenizer *tok, tok_scratch *sc, const char *w, size_t n, tok_ids *out)
{
    if (n == 0) return 0;
    if (tok->ignore_merges) {
        int32_t id = strmap_get(&tok->model_map, tok->arena.p, w, n);
        if (id >= 0) return ids_push(out, id) ? nomem() : 0;
    }
    if (tok->split_len == 0) return merge_word(tok, sc, w, n, out);
    /* merges never join across the cuts: the chunks give the same ids */
    size_t start = 0, prev = 0, sl = tok->split_len;
    for (size_t i = 1; i < n;) {
        size_t l = utf8_len((unsigned char)w[i]);
        if (i + sl <= n && memcmp(w + i, tok->split_str, sl) == 0 && cut_ok(tok, w, i, prev)) {
            int rc = merge_word(tok, sc, w + start, i - start, out);
            if (rc) return rc;
            start = i;
        }
        prev = i;
        i += l;
    }
    return merge_word(tok, sc, w + start, n - start, out);
}
