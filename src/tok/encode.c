/* encode.c - infer_tokenize: text to ids through the whole pipeline.
 *
 *   raw text --(added tokens, normalized=false)--> segments
 *   segment  --normalizer--(added tokens, normalized=true)--> pieces
 *   piece    --pre-tokenizer--> words --BPE--> ids
 *   ids      --post-processor (add_special)--> prefix + ids + suffix
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

/* A piece of text between added tokens: pre-tokenize, then BPE. */
static int encode_piece(const infer_tokenizer *tok, tok_scratch *sc, const char *s, size_t n,
                        int origin, tok_ids *out)
{
    if (n == 0) return 0;
    plist_clear(&sc->pa);
    if (plist_add(&sc->pa, s, n, origin)) return INFER_ERR_OUT_OF_MEMORY;
    const tok_plist *words = &sc->pa;
    if (tok->pre) {
        int rc = pretok_apply(tok->pre, sc, &sc->pa, &sc->pb);
        if (rc) return rc;
        words = &sc->pb;
    }
    for (size_t i = 0; i < words->n; i++) {
        int rc = bpe_word(tok, sc, words->text.p + words->v[i].off, words->v[i].len, out);
        if (rc) return rc;
    }
    return 0;
}

/* A segment of the raw text between non-normalized added tokens. */
static int encode_segment(const infer_tokenizer *tok, tok_scratch *sc, const char *s, size_t n,
                          int origin, tok_matches *ms, tok_ids *marks, tok_ids *out)
{
    if (n == 0) return 0;
    if (tok->norm) {
        int rc = norm_apply(tok->norm, sc->md, s, n, &sc->norm, &sc->norm_tmp, &sc->ms);
        if (rc) return rc;
        s = sc->norm.p;
        n = sc->norm.n;
    }
    if (tok->trie_norm.empty) return encode_piece(tok, sc, s, n, origin, out);
    int rc = added_split(tok, &tok->trie_norm, s, n, ms, marks);
    if (rc) return rc;
    size_t t = 0;
    for (size_t i = 0; i < ms->n; i++) {
        const tok_match *m = &ms->v[i];
        if (m->is_match) rc = ids_push(out, tok->added[marks->v[t++]].id) ? INFER_ERR_OUT_OF_MEMORY : 0;
        else rc = encode_piece(tok, sc, s + m->start, m->end - m->start, origin && m->start == 0, out);
        if (rc) return rc;
    }
    return 0;
}

/* ---- the thread's scratch ------------------------------------------- */

/* Each thread keeps its scratch (buffers, regex match data, word cache)
 * from one call to the next: a prompt of a few words then costs no
 * allocation and finds its words cached.  The cache belongs to one
 * tokenizer (gen) at a time; the scratch is freed when the thread ends. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;
static atomic_uint_fast64_t next_gen = 1;

static void scratch_destroy(void *p)
{
    scratch_free(p);
    free(p);
}

static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0; }

uint64_t tok_new_gen(void) { return atomic_fetch_add(&next_gen, 1); }

/* The calling thread's scratch for tok, or a fresh one (*owned) when
 * there can be none; NULL when out of memory. */
static tok_scratch *scratch_get(const infer_tokenizer *tok, int *owned)
{
    pthread_once(&scratch_once, scratch_key_init);
    tok_scratch *sc = scratch_key_ok ? pthread_getspecific(scratch_key) : NULL;
    *owned = 0;
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc) return NULL;
        if (!scratch_key_ok || pthread_setspecific(scratch_key, sc) != 0) *owned = 1;
    }
    if (!sc->md && !(sc->md = pcre2_match_data_create(1, NULL))) {
        if (*owned) free(sc);
        return NULL;
    }
    if (sc->gen != tok->gen) {
        cache_clear(sc);
        sc->gen = tok->gen;
    }
    return sc;
}

/* After a big text, gives back the big buffers (the cache stays). */
static void scratch_trim(tok_scratch *sc)
{
    const size_t big = (size_t)1 << 20;
    tok_buf *bufs[] = {&sc->norm, &sc->norm_tmp, &sc->pa.text, &sc->pb.text, &sc->pc.text, &sc->word};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]->cap > big) tb_free(bufs[i]);
    tok_plist *lists[] = {&sc->pa, &sc->pb, &sc->pc};
    for (size_t i = 0; i < 3; i++)
        if (lists[i]->cap * sizeof(tok_span) > big) {
            free(lists[i]->v);
            lists[i]->v = NULL;
            lists[i]->n = lists[i]->cap = 0;
        }
    tok_matches *ms[] = {&sc->ms, &sc->raw, &sc->normm};
    for (size_t i = 0; i < 3; i++)
        if (ms[i]->cap * sizeof(tok_match) > big) {
            free(ms[i]->v);
            ms[i]->v = NULL;
            ms[i]->n = ms[i]->cap = 0;
        }
    tok_ids *id[] = {&sc->raw_marks, &sc->norm_marks};
    for (size_t i = 0; i < 2; i++)
        if (id[i]->cap * sizeof(int32_t) > big) {
            free(id[i]->v);
            id[i]->v = NULL;
            id[i]->n = id[i]->cap = 0;
        }
    if (sc->syms_cap * 32 > big) {
        free(sc->syms);
        sc->syms = NULL;
        sc->syms_cap = 0;
    }
    if (sc->heap_cap * 16 > big) {
        free(sc->heap);
        sc->heap = NULL;
        sc->heap_cap = 0;
    }
}

/* ---- encoding ------------------------------------------------------- */

int infer_tokenize(const infer_tokenizer *tok, const char *text, size_t len, int add_special,
                   int32_t **ids, size_t *n_ids)
{
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!tok || !ids || !n_ids || (!text && len))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_tokenize: NULL argument");
    if (!text) text = "";
    if (len == (size_t)-1) len = strlen(text);
    if (len >= UINT32_MAX)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_tokenize: text of %zu bytes is too long", len);
    size_t bad = utf8_check(text, len);
    if (bad < len)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_tokenize: invalid UTF-8 at byte offset %zu",
                         bad);

    int owned;
    tok_scratch *sc = scratch_get(tok, &owned);
    if (!sc) return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_tokenize: out of memory");
    tok_ids out = {0};
    int rc = 0;
    if (add_special && ids_put(&out, tok->post_prefix, tok->n_post_prefix)) {
        rc = INFER_ERR_OUT_OF_MEMORY;
        goto done;
    }
    size_t body = out.n;
    if (tok->trie_raw.empty) {
        rc = encode_segment(tok, sc, text, len, 1, &sc->normm, &sc->norm_marks, &out);
    } else {
        rc = added_split(tok, &tok->trie_raw, text, len, &sc->raw, &sc->raw_marks);
        size_t t = 0;
        for (size_t i = 0; i < sc->raw.n && rc == 0; i++) {
            const tok_match *m = &sc->raw.v[i];
            if (m->is_match)
                rc = ids_push(&out, tok->added[sc->raw_marks.v[t++]].id) ? INFER_ERR_OUT_OF_MEMORY : 0;
            else
                rc = encode_segment(tok, sc, text + m->start, m->end - m->start, m->start == 0,
                                    &sc->normm, &sc->norm_marks, &out);
        }
    }
    if (rc) goto done;
    if (add_special) {
        if (!tok->post_keeps_seq) out.n = body;
        if (ids_put(&out, tok->post_suffix, tok->n_post_suffix)) {
            rc = INFER_ERR_OUT_OF_MEMORY;
            goto done;
        }
    }
    if (!out.v && !(out.v = malloc(sizeof(int32_t)))) {
        rc = INFER_ERR_OUT_OF_MEMORY;
        goto done;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
done:
    if (rc == INFER_ERR_OUT_OF_MEMORY) infer_err(rc, "infer_tokenize: out of memory");
    free(out.v);
    if (owned) {
        scratch_free(sc);
        free(sc);
    } else {
        scratch_trim(sc);
    }
    return rc;
}
