/* detok_stream.c - streaming decode: ids pushed one at a time, text out as
 * soon as it can no longer change.
 *
 * The decoder keeps a window of the pieces pushed since the last point
 * where the whole decode splits cleanly, decodes the window on each push
 * and emits the part of it that later pieces cannot alter.  What can alter
 * the end of a decode, and is held back:
 *   - ByteLevel: bytes of a UTF-8 sequence not yet complete (the U+FFFD
 *     the decode ends with for them);
 *   - ByteFallback: a run of <0xNN> pieces (the whole run becomes U+FFFD
 *     per byte if any byte of it is invalid, so it waits for the run's end);
 *   - Strip with a stop count after Fuse: trailing strip characters, which
 *     the end of the sequence would remove.
 * The window restarts only where nothing is held; after Fuse + Strip with
 * a start count it also waits until some text has been emitted, since
 * until then the stripping of the beginning is not settled.  Metaspace and
 * the space joining of the no-decoder case look at the first piece of the
 * sequence, which the window knows (at_start).  So the concatenation of the
 * pieces and the flush equals infer_detokenize of the same ids. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

struct infer_detok {
    const infer_tokenizer *tok;
    int skip_special;
    const char **pieces; /* the window, pointing into the tokenizer */
    size_t *lens;
    size_t n, cap;
    int at_start;        /* the window starts the sequence */
    size_t emitted;      /* bytes of the window's text already given out */
    size_t total;        /* bytes given out since the start */
    tok_buf text;        /* the window's decoded text */
    tok_buf out;         /* what the last call returned */
    tok_buf bytes;       /* scratch for the ByteLevel check */
};

int infer_detok_new(const infer_tokenizer *tok, int skip_special, infer_detok **out)
{
    if (out) *out = NULL;
    if (!tok || !out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_detok_new: NULL argument");
    infer_detok *d = calloc(1, sizeof *d);
    if (!d) return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_detok_new: out of memory");
    d->tok = tok;
    d->skip_special = skip_special;
    d->at_start = 1;
    *out = d;
    return 0;
}

void infer_detok_free(infer_detok *d)
{
    if (!d) return;
    free(d->pieces);
    free(d->lens);
    tb_free(&d->text);
    tb_free(&d->out);
    tb_free(&d->bytes);
    free(d);
}

/* What to hold back at the end of the window: *hold pieces (a run of
 * <0xNN> pieces for ByteFallback), and *partial when the ByteLevel bytes of
 * the other pieces end in a UTF-8 sequence that is valid so far but not
 * complete: the decode then ends in one U+FFFD for it, which the next
 * pieces may turn into a character.  (Holding the piece where that
 * sequence starts would not do: the same piece may end another
 * character.) */
static int held_back(infer_detok *d, size_t *hold, int *partial)
{
    const infer_tokenizer *tok = d->tok;
    size_t n = d->n, h = 0;
    *hold = 0;
    *partial = 0;
    if (tok->dec_byte_fallback)
        while (h < n && tok_byte_piece(d->pieces[n - 1 - h], d->lens[n - 1 - h]) >= 0) h++;
    *hold = h;
    if (!tok->dec_byte_level || h == n) return 0;
    /* The ByteLevel bytes of the last pieces: a trailing incomplete
     * sequence has at most 3 bytes, and every piece gives at least one
     * byte, so the last 3 non-empty pieces are enough. */
    size_t end = n - h, k = 0, nonempty = 0;
    while (k < end && nonempty < 3) nonempty += d->lens[end - 1 - k++] > 0;
    tok_buf *b = &d->bytes;
    b->n = 0;
    for (size_t i = end - k; i < end; i++) {
        const char *s = d->pieces[i];
        size_t len = d->lens[i], j = 0, mark = b->n;
        if (tb_reserve(b, len)) return INFER_ERR_OUT_OF_MEMORY;
        while (j < len) {
            size_t l;
            int byte = tok_cp_to_byte(utf8_get(s + j, &l));
            if (byte < 0) break;
            b->p[b->n++] = (char)byte;
            j += l;
        }
        if (j < len) { /* not a ByteLevel piece: its text as it is */
            b->n = mark;
            if (tb_put(b, s, len)) return INFER_ERR_OUT_OF_MEMORY;
        }
    }
    *partial = utf8_stable_prefix((const unsigned char *)b->p, b->n) < b->n;
    return 0;
}

static int set_out(infer_detok *d, const char *s, size_t n, const char **text, size_t *len)
{
    d->out.n = 0;
    if (tb_put(&d->out, s, n)) return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_detok: out of memory");
    *text = d->out.p;
    if (len) *len = n;
    return 0;
}

int infer_detok_push(infer_detok *d, int32_t id, const char **text, size_t *len)
{
    if (!d || !text) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_detok_push: NULL argument");
    const infer_tokenizer *tok = d->tok;
    size_t plen;
    const char *p = tok_piece(tok, id, &plen);
    if (!p)
        return infer_err(INFER_ERR_OUT_OF_RANGE, "infer_detok_push: token id %d is not in the vocabulary (size %d)",
                         (int)id, (int)tok->vocab_size);
    if (d->skip_special && tok->special[id]) return set_out(d, "", 0, text, len);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        const char **pv = realloc(d->pieces, cap * sizeof *pv);
        if (!pv) return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_detok_push: out of memory");
        d->pieces = pv;
        size_t *lv = realloc(d->lens, cap * sizeof *lv);
        if (!lv) return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_detok_push: out of memory");
        d->lens = lv;
        d->cap = cap;
    }
    d->pieces[d->n] = p;
    d->lens[d->n] = plen;
    d->n++;

    size_t hold;
    int partial;
    if (held_back(d, &hold, &partial))
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_detok_push: out of memory");
    int rc = dec_run(tok, d->pieces, d->lens, d->n - hold, d->at_start, 0, &d->text);
    if (rc) return rc;
    size_t stable = d->text.n;
    if (partial && stable >= 3 && memcmp(d->text.p + stable - 3, "\xEF\xBF\xBD", 3) == 0) stable -= 3;
    if (tok->dec_strip_stop_merged) {
        /* trailing strip characters wait: the end of the sequence may take them */
        char u[4];
        size_t ul = utf8_put(tok->dec_strip_cp, u);
        while (stable >= ul && memcmp(d->text.p + stable - ul, u, ul) == 0) stable -= ul;
    }
    if (stable < d->emitted) stable = d->emitted; /* cannot happen; never take back text */
    size_t from = d->emitted;
    d->emitted = stable;
    d->total += stable - from;
    if ((rc = set_out(d, d->text.p + from, stable - from, text, len))) return rc;
    if (hold == 0 && !partial && stable == d->text.n &&
        (!tok->dec_strip_start_merged || d->total > 0)) {
        d->n = 0;
        d->at_start = 0;
        d->emitted = 0;
    }
    return 0;
}

int infer_detok_flush(infer_detok *d, const char **text, size_t *len)
{
    if (!d || !text) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_detok_flush: NULL argument");
    int rc = 0;
    const char *s = "";
    size_t n = 0;
    if (d->n > 0) {
        rc = dec_run(d->tok, d->pieces, d->lens, d->n, d->at_start, 1, &d->text);
        if (rc) return rc;
        if (d->text.n > d->emitted) {
            s = d->text.p + d->emitted;
            n = d->text.n - d->emitted;
        }
    }
    rc = set_out(d, s, n, text, len);
    /* the sequence is over: the next push starts a new one */
    d->n = 0;
    d->at_start = 1;
    d->emitted = 0;
    d->total = 0;
    return rc;
}
