/* decode.c - the decoders (ByteLevel, Replace, ByteFallback, Fuse, Strip,
 * Metaspace, Sequence) and infer_detokenize.
 *
 * A decoder maps a list of strings to a list of strings; the text is their
 * concatenation (without a decoder, the pieces joined by spaces).  So that
 * a streaming decoder can run the same code on a window of the pieces,
 * each string carries where it sits in the whole list:
 *   F_FIRST  it is (part of) the whole list's first string
 *   F_START  it holds that string's beginning
 *   F_END    it holds that string's end
 * A plain decode has one window: everything. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

#define F_FIRST 1
#define F_START 2
#define F_END 4

typedef struct dlist {
    tok_buf t;
    uint32_t *off, *len;
    uint8_t *fl;
    size_t n, cap;
} dlist;

static int nomem(void) { return infer_err(INFER_ERR_OUT_OF_MEMORY, "decode: out of memory"); }

static void dl_free(dlist *l)
{
    tb_free(&l->t);
    free(l->off);
    free(l->len);
    free(l->fl);
    memset(l, 0, sizeof *l);
}

static void dl_clear(dlist *l)
{
    l->t.n = 0;
    l->n = 0;
}

/* Starts a new string (written by the caller to l->t) with flags fl. */
static int dl_begin(dlist *l, uint8_t fl)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        uint32_t *o = realloc(l->off, cap * sizeof *o);
        if (!o) return -1;
        l->off = o;
        uint32_t *n = realloc(l->len, cap * sizeof *n);
        if (!n) return -1;
        l->len = n;
        uint8_t *f = realloc(l->fl, cap);
        if (!f) return -1;
        l->fl = f;
        l->cap = cap;
    }
    if (l->t.n >= UINT32_MAX || tb_reserve(&l->t, 1)) return -1; /* (so t.p is never NULL) */
    l->off[l->n] = (uint32_t)l->t.n;
    l->len[l->n] = 0;
    l->fl[l->n] = fl;
    l->n++;
    return 0;
}

/* Closes the string begun last: its length is what was written since. */
static void dl_end(dlist *l) { l->len[l->n - 1] = (uint32_t)(l->t.n - l->off[l->n - 1]); }

static int dl_add(dlist *l, const char *s, size_t n, uint8_t fl)
{
    if (dl_begin(l, fl) || tb_put(&l->t, s, n)) return -1;
    dl_end(l);
    return 0;
}

/* ---- the steps ------------------------------------------------------ */

/* ByteLevel: every string's characters back to bytes (a string with a
 * character outside the byte alphabet is kept as it is), all
 * concatenated, then read as UTF-8 with U+FFFD for invalid bytes. */
static int byte_level(const dlist *in, dlist *out, uint8_t fl, tok_buf *tmp)
{
    tmp->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->t.p + in->off[i];
        size_t n = in->len[i], mapped = tmp->n, j = 0;
        if (tb_reserve(tmp, n)) return nomem();
        while (j < n) {
            size_t l;
            int b = tok_cp_to_byte(utf8_get(s + j, &l));
            if (b < 0) break;
            tmp->p[tmp->n++] = (char)b;
            j += l;
        }
        if (j < n) { /* not all mappable: the raw bytes */
            tmp->n = mapped;
            if (tb_put(tmp, s, n)) return nomem();
        }
    }
    if (dl_begin(out, fl) || utf8_lossy(&out->t, (const unsigned char *)tmp->p, tmp->n)) return nomem();
    dl_end(out);
    return 0;
}

static int fuse(const dlist *in, dlist *out, uint8_t fl)
{
    if (dl_begin(out, fl)) return nomem();
    for (size_t i = 0; i < in->n; i++)
        if (tb_put(&out->t, in->t.p + in->off[i], in->len[i])) return nomem();
    dl_end(out);
    return 0;
}

static int replace(const tok_dec *d, pcre2_match_data *md, tok_matches *ms, const dlist *in, dlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->t.p + in->off[i];
        size_t n = in->len[i];
        if (dl_begin(out, in->fl[i])) return nomem();
        if (d->pat) {
            size_t k = 0;
            while (k < n) {
                const char *hit = d->pat_len ? memmem(s + k, n - k, d->pat, d->pat_len) : NULL;
                size_t j = hit ? (size_t)(hit - s) : n;
                if (tb_put(&out->t, s + k, j - k)) return nomem();
                if (!hit) break;
                if (tb_put(&out->t, d->content, d->content_len)) return nomem();
                k = j + d->pat_len;
            }
        } else {
            int rc = regex_find_all(&d->re, md, s, n, ms);
            if (rc) return rc;
            for (size_t k = 0; k < ms->n; k++) {
                const tok_match *m = &ms->v[k];
                if (m->is_match ? tb_put(&out->t, d->content, d->content_len)
                                : tb_put(&out->t, s + m->start, m->end - m->start))
                    return nomem();
            }
        }
        dl_end(out);
    }
    return 0;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xNN>" piece, or -1.  As Rust's u8::from_str_radix,
 * which Hugging Face uses, the two characters may also be "+N". */
int tok_byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int a = s[3] == '+' ? 0 : hexv(s[3]), b = hexv(s[4]);
    return a < 0 || b < 0 ? -1 : a * 16 + b;
}

/* Flushes a run of bytes: one string when it is valid UTF-8, else one
 * U+FFFD per byte (Hugging Face's ByteFallback). */
static int flush_bytes(dlist *out, const unsigned char *b, size_t n, uint8_t fl)
{
    if (n == 0) return 0;
    if (utf8_check((const char *)b, n) == n) return dl_add(out, (const char *)b, n, fl) ? nomem() : 0;
    for (size_t i = 0; i < n; i++)
        if (dl_add(out, "\xEF\xBF\xBD", 3, i == 0 ? fl : (uint8_t)(fl & ~F_FIRST))) return nomem();
    return 0;
}

static int byte_fallback(const dlist *in, dlist *out, tok_buf *tmp)
{
    tmp->n = 0;
    uint8_t run_fl = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->t.p + in->off[i];
        int b = tok_byte_piece(s, in->len[i]);
        if (b >= 0) {
            if (tmp->n == 0) run_fl = in->fl[i];
            if (tb_putc(tmp, (char)b)) return nomem();
            continue;
        }
        int rc = flush_bytes(out, (const unsigned char *)tmp->p, tmp->n, run_fl);
        tmp->n = 0;
        if (rc) return rc;
        if (dl_add(out, s, in->len[i], in->fl[i])) return nomem();
    }
    int rc = flush_bytes(out, (const unsigned char *)tmp->p, tmp->n, run_fl);
    tmp->n = 0;
    return rc;
}

static int strip(const tok_dec *d, const dlist *in, dlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->t.p + in->off[i];
        size_t a = 0, b = in->len[i];
        if (in->fl[i] & F_START)
            for (int k = 0; k < d->start && a < b; k++) {
                size_t l;
                if (utf8_get(s + a, &l) != d->strip_cp) break;
                a += l;
            }
        if (in->fl[i] & F_END)
            for (int k = 0; k < d->stop && b > a; k++) {
                size_t j = b - 1, l;
                while (j > a && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                if (utf8_get(s + j, &l) != d->strip_cp) break;
                b = j;
            }
        if (dl_add(out, s + a, b - a, in->fl[i])) return nomem();
    }
    return 0;
}

static int metaspace(const tok_dec *d, const dlist *in, dlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->t.p + in->off[i];
        size_t n = in->len[i];
        int drop = (in->fl[i] & F_FIRST) && d->prepend != PREPEND_NEVER;
        if (dl_begin(out, in->fl[i])) return nomem();
        for (size_t k = 0; k < n;) {
            if (n - k >= d->rep_len && memcmp(s + k, d->rep, d->rep_len) == 0) {
                if (!drop && tb_putc(&out->t, ' ')) return nomem();
                k += d->rep_len;
                continue;
            }
            size_t l = utf8_len((unsigned char)s[k]);
            if (tb_put(&out->t, s + k, l)) return nomem();
            k += l;
        }
        dl_end(out);
    }
    return 0;
}

typedef struct dctx {
    int at_start, at_end;
    pcre2_match_data *md;
    tok_matches ms;
    tok_buf tmp;
} dctx;

/* Runs one decoder from *in to a fresh list; *in ends up holding the
 * result (the lists are swapped). */
static int step(const tok_dec *d, dctx *c, dlist *in, dlist *spare)
{
    int rc = 0;
    uint8_t merged = F_FIRST | (c->at_start ? F_START : 0) | (c->at_end ? F_END : 0);
    if (d->kind == DEC_SEQ) {
        for (int i = 0; i < d->n_kids && rc == 0; i++) rc = step(&d->kids[i], c, in, spare);
        return rc;
    }
    dl_clear(spare);
    switch (d->kind) {
    case DEC_BYTELEVEL: rc = byte_level(in, spare, merged, &c->tmp); break;
    case DEC_FUSE: rc = fuse(in, spare, merged); break;
    case DEC_REPLACE: rc = replace(d, c->md, &c->ms, in, spare); break;
    case DEC_BYTEFALLBACK: rc = byte_fallback(in, spare, &c->tmp); break;
    case DEC_STRIP: rc = strip(d, in, spare); break;
    case DEC_METASPACE: rc = metaspace(d, in, spare); break;
    default: return infer_err(INFER_ERR_UNSUPPORTED, "decode: unknown decoder kind %d", d->kind);
    }
    dlist t = *in;
    *in = *spare;
    *spare = t;
    return rc;
}

int dec_run(const infer_tokenizer *tok, const char *const *pieces, const size_t *lens, size_t n,
            int at_start, int at_end, tok_buf *out)
{
    dlist a = {0}, b = {0};
    dctx c = {at_start, at_end, NULL, {0}, {0}};
    int rc = 0;
    out->n = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (dl_add(&a, pieces[i], lens[i], (uint8_t)((at_start && i == 0 ? F_FIRST : 0) | F_START | F_END)))
            rc = nomem();
    if (rc == 0 && tok->dec) {
        c.md = pcre2_match_data_create(1, NULL);
        rc = c.md ? step(tok->dec, &c, &a, &b) : nomem();
    }
    for (size_t i = 0; i < a.n && rc == 0; i++) {
        /* no decoder: the pieces joined by spaces */
        if (!tok->dec && !(a.fl[i] & F_FIRST) && tb_putc(out, ' ')) rc = nomem();
        if (rc == 0 && tb_put(out, a.t.p + a.off[i], a.len[i])) rc = nomem();
    }
    if (rc == 0 && tb_reserve(out, 1)) rc = nomem();
    if (rc == 0) out->p[out->n] = '\0';
    pcre2_match_data_free(c.md);
    free(c.ms.v);
    tb_free(&c.tmp);
    dl_free(&a);
    dl_free(&b);
    return rc;
}

/* What a streaming decoder must hold back (see detok_stream.c). */
static void analyze(infer_tokenizer *tok, const tok_dec *d, int *merged)
{
    switch (d->kind) {
    case DEC_BYTELEVEL:
        tok->dec_byte_level = 1;
        *merged = 1;
        break;
    case DEC_FUSE: *merged = 1; break;
    case DEC_BYTEFALLBACK: tok->dec_byte_fallback = 1; break;
    case DEC_STRIP:
        if (*merged && d->start > 0) tok->dec_strip_start_merged = 1;
        if (*merged && d->stop > 0) {
            tok->dec_strip_stop_merged = 1;
            tok->dec_strip_cp = d->strip_cp;
        }
        break;
    case DEC_SEQ:
        for (int i = 0; i < d->n_kids; i++) analyze(tok, &d->kids[i], merged);
        break;
    default: break;
    }
}

void dec_analyze(infer_tokenizer *tok)
{
    int merged = 0;
    if (tok->dec) analyze(tok, tok->dec, &merged);
}

/* The pieces of ids (skipping specials on request); OUT_OF_RANGE names the
 * first unknown id. */
int dec_pieces(const infer_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
               const char ***pieces, size_t **lens, size_t *count)
{
    *pieces = malloc((n ? n : 1) * sizeof **pieces);
    *lens = malloc((n ? n : 1) * sizeof **lens);
    *count = 0;
    if (!*pieces || !*lens) {
        free(*pieces);
        free(*lens);
        *pieces = NULL;
        *lens = NULL;
        return nomem();
    }
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *p = tok_piece(tok, ids[i], &l);
        if (!p) {
            free(*pieces);
            free(*lens);
            *pieces = NULL;
            *lens = NULL;
            return infer_err(INFER_ERR_OUT_OF_RANGE,
                             "infer_detokenize: token id %d at position %zu is not in the vocabulary "
                             "(size %d)",
                             (int)ids[i], i, (int)tok->vocab_size);
        }
        if (skip_special && tok->special[ids[i]]) continue;
        (*pieces)[*count] = p;
        (*lens)[*count] = l;
        (*count)++;
    }
    return 0;
}

int infer_detokenize(const infer_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
                     char **text, size_t *len)
{
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!tok || !text || (!ids && n_ids))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_detokenize: NULL argument");
    const char **pieces;
    size_t *lens, count;
    int rc = dec_pieces(tok, ids, n_ids, skip_special, &pieces, &lens, &count);
    if (rc) return rc;
    tok_buf out = {0};
    rc = dec_run(tok, pieces, lens, count, 1, 1, &out);
    free(pieces);
    free(lens);
    if (rc) {
        tb_free(&out);
        return rc;
    }
    *text = out.p;
    if (len) *len = out.n;
    return 0;
}
