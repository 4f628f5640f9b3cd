/* pretokenize.c - the pre-tokenizers: Split, ByteLevel, Metaspace,
 * Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer and
 * Sequence.
 *
 * A pre-tokenizer turns a list of pieces into a finer list.  Each piece
 * carries whether it starts at offset 0 of the original text (Metaspace's
 * prepend_scheme "first" looks at it). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

static int nomem(void) { return infer_err(INFER_ERR_OUT_OF_MEMORY, "pre-tokenizer: out of memory"); }

void plist_clear(tok_plist *l)
{
    l->text.n = 0;
    l->n = 0;
}

void plist_free(tok_plist *l)
{
    tb_free(&l->text);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int plist_slot(tok_plist *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        tok_span *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    return 0;
}

int plist_add(tok_plist *l, const char *s, size_t len, int origin)
{
    if (len == 0) return 0; /* empty pieces are dropped, as Hugging Face does */
    if (plist_slot(l) || l->text.n + len >= UINT32_MAX) return nomem();
    size_t off = l->text.n;
    if (tb_put(&l->text, s, len)) return nomem();
    l->v[l->n].off = (uint32_t)off;
    l->v[l->n].len = (uint32_t)len;
    l->v[l->n].origin = (uint8_t)origin;
    l->n++;
    return 0;
}

void scratch_free(tok_scratch *s)
{
    pcre2_match_data_free(s->md);
    free(s->ms.v);
    free(s->raw.v);
    free(s->normm.v);
    free(s->raw_marks.v);
    free(s->norm_marks.v);
    tb_free(&s->norm);
    tb_free(&s->norm_tmp);
    plist_free(&s->pa);
    plist_free(&s->pb);
    plist_free(&s->pc);
    free(s->syms);
    free(s->heap);
    tb_free(&s->word);
    tb_free(&s->cache_keys);
    free(s->cache_ids.v);
    free(s->cache_slots);
    free(s->cache_meta);
    memset(s, 0, sizeof *s);
}

/* ---- splitting ------------------------------------------------------ */

static int ms_add(tok_matches *ms, size_t a, size_t b, int m)
{
    if (ms->n == ms->cap) {
        size_t cap = ms->cap ? ms->cap * 2 : 64;
        tok_match *v = realloc(ms->v, cap * sizeof *v);
        if (!v) return nomem();
        ms->v = v;
        ms->cap = cap;
    }
    ms->v[ms->n].start = (uint32_t)a;
    ms->v[ms->n].end = (uint32_t)b;
    ms->v[ms->n].is_match = (uint8_t)m;
    ms->n++;
    return 0;
}

/* The occurrences of a literal, with the gaps. */
static int find_literal(const char *pat, size_t plen, const char *s, size_t n, tok_matches *ms)
{
    ms->n = 0;
    size_t i = 0;
    if (plen == 0) return ms_add(ms, 0, n, 0);
    while (i < n) {
        const char *hit = memmem(s + i, n - i, pat, plen);
        if (!hit) break;
        size_t j = (size_t)(hit - s);
        if (j > i && ms_add(ms, i, j, 0)) return nomem();
        if (ms_add(ms, j, j + plen, 1)) return nomem();
        i = j + plen;
    }
    if (i < n && ms_add(ms, i, n, 0)) return nomem();
    return 0;
}

enum { CLS_NUMERIC, CLS_WHITESPACE, CLS_PUNCT };

/* Each character of a class is one match (Rust's Fn(char) -> bool
 * pattern). */
static int find_class(int cls, const char *s, size_t n, tok_matches *ms)
{
    ms->n = 0;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = utf8_get(s + i, &l);
        int hit = cls == CLS_NUMERIC ? uc_is_numeric(cp)
                  : cls == CLS_WHITESPACE ? uc_is_whitespace(cp)
                                          : uc_is_punct(cp);
        if (hit) {
            if (last < i && ms_add(ms, last, i, 0)) return nomem();
            if (ms_add(ms, i, i + l, 1)) return nomem();
            last = i + l;
        }
        i += l;
    }
    if (last < n && ms_add(ms, last, n, 0)) return nomem();
    return 0;
}

/* Applies a split behaviour to the matches of one piece and appends the
 * resulting pieces to out.  Rewrites ms in place. */
static int emit_split(const char *s, int origin, tok_matches *ms, int behavior, int invert,
                      tok_plist *out)
{
    size_t n = ms->n, k = 0;
    tok_match *v = ms->v;
    if (invert)
        for (size_t i = 0; i < n; i++) v[i].is_match = !v[i].is_match;
    switch (behavior) {
    case SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!v[i].is_match) v[k++] = v[i];
        break;
    case SPLIT_ISOLATED: k = n; break;
    case SPLIT_MERGED_PREV: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            int m = v[i].is_match;
            if (m && !prev && k > 0) v[k - 1].end = v[i].end;
            else v[k++] = v[i];
            prev = m;
        }
        break;
    }
    case SPLIT_MERGED_NEXT: {
        /* fold from the right, then the kept pieces are v[k..n) reversed */
        int prev = 0;
        size_t top = n; /* pieces stored at v[top..n) in order */
        for (size_t i = n; i-- > 0;) {
            int m = v[i].is_match;
            tok_match cur = v[i];
            if (m && !prev && top < n) v[top].start = cur.start;
            else v[--top] = cur;
            prev = m;
        }
        for (size_t i = top; i < n; i++) v[k++] = v[i];
        break;
    }
    case SPLIT_CONTIGUOUS: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            int m = v[i].is_match;
            if (m == prev && k > 0) v[k - 1].end = v[i].end;
            else v[k++] = v[i];
            prev = m;
        }
        break;
    }
    default: return infer_err(INFER_ERR_UNSUPPORTED, "pre-tokenizer: unknown split behavior");
    }
    for (size_t i = 0; i < k; i++)
        if (plist_add(out, s + v[i].start, v[i].end - v[i].start, origin && v[i].start == 0))
            return nomem();
    return 0;
}

/* ---- the pre-tokenizers --------------------------------------------- */

/* Maps each byte to its ByteLevel character. */
static int byte_level_map(const char *s, size_t n, int origin, tok_plist *out)
{
    if (n == 0) return 0;
    if (plist_slot(out) || out->text.n + 2 * n >= UINT32_MAX) return nomem();
    if (tb_reserve(&out->text, 2 * n + 1)) return nomem();
    size_t off = out->text.n;
    char *d = out->text.p + off;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        memcpy(d, tok_byte_utf8[c] + 1, 2); /* the room is there: 2 bytes per byte */
        d += tok_byte_utf8[c][0];
    }
    size_t len = (size_t)(d - (out->text.p + off));
    out->text.n += len;
    out->text.p[out->text.n] = '\0';
    out->v[out->n].off = (uint32_t)off;
    out->v[out->n].len = (uint32_t)len;
    out->v[out->n].origin = (uint8_t)origin;
    out->n++;
    return 0;
}

static int one(const tok_pretok *p, tok_scratch *sc, const char *s, size_t n, int origin,
               tok_plist *out);

static int byte_level(const tok_pretok *p, tok_scratch *sc, const char *s, size_t n, int origin,
                      tok_plist *out)
{
    tok_buf *w = &sc->word;
    if (p->add_prefix_space && s[0] != ' ') {
        w->n = 0;
        if (tb_putc(w, ' ') || tb_put(w, s, n)) return nomem();
        s = w->p;
        n = w->n;
    }
    if (!p->use_regex) return byte_level_map(s, n, origin, out);
    int rc = regex_find_all(&p->re, sc->md, s, n, &sc->ms);
    if (rc) return rc;
    for (size_t i = 0; i < sc->ms.n; i++) {
        const tok_match *m = &sc->ms.v[i];
        if ((rc = byte_level_map(s + m->start, m->end - m->start, origin && m->start == 0, out)))
            return rc;
    }
    return 0;
}

static int metaspace(const tok_pretok *p, tok_scratch *sc, const char *s, size_t n, int origin,
                     tok_plist *out)
{
    tok_buf *w = &sc->word;
    w->n = 0;
    int starts = n > 0 && (s[0] == ' ' || (n >= p->rep_len && memcmp(s, p->rep, p->rep_len) == 0));
    if (!starts && (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && origin)))
        if (tb_put(w, p->rep, p->rep_len)) return nomem();
    for (size_t i = 0; i < n; i++) {
        int rc = s[i] == ' ' ? tb_put(w, p->rep, p->rep_len) : tb_putc(w, s[i]);
        if (rc) return nomem();
    }
    if (!p->split) return plist_add(out, w->p, w->n, origin);
    int rc = find_literal(p->rep, p->rep_len, w->p, w->n, &sc->ms);
    if (rc) return rc;
    return emit_split(w->p, origin, &sc->ms, SPLIT_MERGED_NEXT, 0, out);
}

static int sequence(const tok_pretok *p, tok_scratch *sc, const char *s, size_t n, int origin,
                    tok_plist *out)
{
    tok_plist a = {0}, b = {0};
    int rc = plist_add(&a, s, n, origin);
    for (int k = 0; k < p->n_kids && rc == 0; k++) {
        tok_plist *dst = k == p->n_kids - 1 ? out : &b;
        if (dst == &b) plist_clear(&b);
        for (size_t i = 0; i < a.n && rc == 0; i++)
            rc = one(&p->kids[k], sc, a.text.p + a.v[i].off, a.v[i].len, a.v[i].origin, dst);
        tok_plist t = a;
        a = b;
        b = t;
    }
    if (rc == 0 && p->n_kids == 0)
        for (size_t i = 0; i < a.n && rc == 0; i++)
            rc = plist_add(out, a.text.p + a.v[i].off, a.v[i].len, a.v[i].origin);
    plist_free(&a);
    plist_free(&b);
    return rc;
}

/* Pre-tokenizes one piece, appending to out. */
static int one(const tok_pretok *p, tok_scratch *sc, const char *s, size_t n, int origin,
               tok_plist *out)
{
    int rc;
    if (n == 0) return 0;
    switch (p->kind) {
    case PRE_SPLIT:
        rc = p->pat ? find_literal(p->pat, p->pat_len, s, n, &sc->ms)
                    : regex_find_all(&p->re, sc->md, s, n, &sc->ms);
        return rc ? rc : emit_split(s, origin, &sc->ms, p->behavior, p->invert, out);
    case PRE_BYTELEVEL: return byte_level(p, sc, s, n, origin, out);
    case PRE_METASPACE: return metaspace(p, sc, s, n, origin, out);
    case PRE_DIGITS:
        if ((rc = find_class(CLS_NUMERIC, s, n, &sc->ms))) return rc;
        return emit_split(s, origin, &sc->ms, p->individual ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, 0, out);
    case PRE_WHITESPACE:
        if ((rc = regex_find_all(&p->re, sc->md, s, n, &sc->ms))) return rc;
        return emit_split(s, origin, &sc->ms, SPLIT_REMOVED, 1, out);
    case PRE_WSSPLIT:
        if ((rc = find_class(CLS_WHITESPACE, s, n, &sc->ms))) return rc;
        return emit_split(s, origin, &sc->ms, SPLIT_REMOVED, 0, out);
    case PRE_PUNCT:
        if ((rc = find_class(CLS_PUNCT, s, n, &sc->ms))) return rc;
        return emit_split(s, origin, &sc->ms, p->behavior, 0, out);
    case PRE_BERT: {
        tok_plist mid = {0};
        rc = find_class(CLS_WHITESPACE, s, n, &sc->ms);
        if (rc == 0) rc = emit_split(s, origin, &sc->ms, SPLIT_REMOVED, 0, &mid);
        for (size_t i = 0; i < mid.n && rc == 0; i++) {
            const char *t = mid.text.p + mid.v[i].off;
            rc = find_class(CLS_PUNCT, t, mid.v[i].len, &sc->ms);
            if (rc == 0) rc = emit_split(t, mid.v[i].origin, &sc->ms, SPLIT_ISOLATED, 0, out);
        }
        plist_free(&mid);
        return rc;
    }
    case PRE_SEQ: return sequence(p, sc, s, n, origin, out);
    default: return infer_err(INFER_ERR_UNSUPPORTED, "pre-tokenizer: unknown kind %d", p->kind);
    }
}

int pretok_apply(const tok_pretok *p, tok_scratch *sc, const tok_plist *in, tok_plist *out)
{
    plist_clear(out);
    for (size_t i = 0; i < in->n; i++) {
        int rc = one(p, sc, in->text.p + in->v[i].off, in->v[i].len, in->v[i].origin, out);
        if (rc) return rc;
    }
    return 0;
}
