/* normalize.c - the normalizers: Unicode forms, Lowercase, Replace,
 * Prepend, Strip, StripAccents and Sequence. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tok/tok_internal.h"

static int nomem(void) { return infer_err(INFER_ERR_OUT_OF_MEMORY, "normalizer: out of memory"); }

/* One of the four forms of s[0..n) by utf8proc, appended to out. */
static int form_segment(int kind, const char *s, size_t n, tok_buf *out)
{
    int opt = UTF8PROC_STABLE;
    if (kind == NORM_NFC || kind == NORM_NFKC) opt |= UTF8PROC_COMPOSE;
    else opt |= UTF8PROC_DECOMPOSE;
    if (kind == NORM_NFKC || kind == NORM_NFKD) opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      (utf8proc_option_t)opt);
    if (r < 0) {
        free(dst);
        if (r == UTF8PROC_ERROR_NOMEM) return nomem();
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "normalizer: %s", utf8proc_errmsg(r));
    }
    int rc = tb_put(out, dst, (size_t)r) ? nomem() : 0;
    free(dst);
    return rc;
}

/* A character that every form leaves as it is and that neither combines
 * with its neighbours nor is reordered: no decomposition, combining class
 * 0, in no canonical composition (Hangul jamo and syllables compose by
 * rule, not by table).  The text can be cut before such a character and
 * the pieces normalized apart. */
static int inert(uint32_t cp)
{
    if (cp < 0x80) return 1;
    if ((cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xA960 && cp <= 0xA97F) || (cp >= 0xAC00 && cp <= 0xD7FF))
        return 0;
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
    return p->combining_class == 0 && p->decomp_seqindex == UINT16_MAX && p->comb_index == UINT16_MAX;
}

/* NFC, NFD, NFKC or NFKD.  Only the runs of characters that are not inert
 * go through utf8proc, each with the character before it (a starter that
 * may compose with what follows: "e" + U+0301); the rest is copied. */
static int unicode_form(int kind, const char *s, size_t n, tok_buf *out)
{
    size_t done = 0, prev = 0, seg = 0, i = 0;
    int in_seg = 0;
    while (i < n) {
        size_t l = 1;
        uint32_t cp = (unsigned char)s[i];
        if (cp >= 0x80) cp = utf8_get(s + i, &l);
        int ok = inert(cp);
        if (!ok && !in_seg) {
            /* ASCII letters compose with marks: take the character before */
            seg = i > 0 && prev >= done ? prev : i;
            if (tb_put(out, s + done, seg - done)) return nomem();
            in_seg = 1;
        } else if (ok && in_seg) {
            int rc = form_segment(kind, s + seg, i - seg, out);
            if (rc) return rc;
            done = i;
            in_seg = 0;
        }
        prev = i;
        i += l;
    }
    if (in_seg) return form_segment(kind, s + seg, n - seg, out);
    return tb_put(out, s + done, n - done) ? nomem() : 0;
}

/* Hugging Face's Lowercase: char::to_lowercase of each character on its
 * own (so no final sigma), simple mappings plus U+0130 -> "i\u0307". */
static int lowercase(const char *s, size_t n, tok_buf *out)
{
    if (tb_reserve(out, n + 4)) return nomem();
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            out->p[out->n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            i++;
            continue;
        }
        size_t l;
        uint32_t cp = utf8_get(s + i, &l);
        if (cp == 0x130) {
            if (tb_put(out, "i\xCC\x87", 3)) return nomem();
        } else {
            if (tb_put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp))) return nomem();
        }
        i += l;
        if (tb_reserve(out, 4)) return nomem();
    }
    out->p[out->n] = '\0';
    return 0;
}

static int strip_accents(const char *s, size_t n, tok_buf *out)
{
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = utf8_get(s + i, &l);
        utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
        if (!(c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME))
            if (tb_put(out, s + i, l)) return nomem();
        i += l;
    }
    return 0;
}

static int strip(const tok_norm *nm, const char *s, size_t n, tok_buf *out)
{
    size_t a = 0, b = n;
    if (nm->left)
        while (a < b) {
            size_t l;
            uint32_t cp = utf8_get(s + a, &l);
            if (!uc_is_whitespace(cp)) break;
            a += l;
        }
    if (nm->right)
        while (b > a) {
            size_t j = b - 1;
            while (j > a && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
            size_t l;
            if (!uc_is_whitespace(utf8_get(s + j, &l))) break;
            b = j;
        }
    return tb_put(out, s + a, b - a) ? nomem() : 0;
}

/* Replace every non-overlapping occurrence of a literal or regex. */
static int replace(const tok_norm *nm, pcre2_match_data *md, const char *s, size_t n, tok_buf *out,
                   tok_matches *ms)
{
    if (nm->pat) {
        if (nm->pat_len == 0) return tb_put(out, s, n) ? nomem() : 0;
        size_t i = 0;
        while (i < n) {
            const char *hit = memmem(s + i, n - i, nm->pat, nm->pat_len);
            size_t j = hit ? (size_t)(hit - s) : n;
            if (tb_put(out, s + i, j - i)) return nomem();
            if (!hit) break;
            if (tb_put(out, nm->content, nm->content_len)) return nomem();
            i = j + nm->pat_len;
        }
        if (tb_reserve(out, 1)) return nomem();
        return 0;
    }
    int rc = regex_find_all(&nm->re, md, s, n, ms);
    if (rc) return rc;
    for (size_t k = 0; k < ms->n; k++) {
        const tok_match *m = &ms->v[k];
        rc = m->is_match ? tb_put(out, nm->content, nm->content_len)
                         : tb_put(out, s + m->start, m->end - m->start);
        if (rc) return nomem();
    }
    return tb_reserve(out, 1) ? nomem() : 0;
}

static int apply(const tok_norm *nm, pcre2_match_data *md, const char *s, size_t n, tok_buf *out,
                 tok_buf *tmp, tok_matches *ms)
{
    out->n = 0;
    switch (nm->kind) {
    case NORM_NFC:
    case NORM_NFD:
    case NORM_NFKC:
    case NORM_NFKD: return unicode_form(nm->kind, s, n, out);
    case NORM_LOWER: return lowercase(s, n, out);
    case NORM_STRIP_ACCENTS: return strip_accents(s, n, out);
    case NORM_STRIP: return strip(nm, s, n, out);
    case NORM_REPLACE: return replace(nm, md, s, n, out, ms);
    case NORM_PREPEND:
        if (n && tb_put(out, nm->content, nm->content_len)) return nomem();
        return tb_put(out, s, n) ? nomem() : 0;
    case NORM_SEQ: {
        if (tb_put(out, s, n)) return nomem();
        tok_buf inner = {0};
        int rc = 0;
        for (int i = 0; i < nm->n_kids && rc == 0; i++) {
            /* out holds the current text; the step writes tmp; swap. */
            rc = apply(&nm->kids[i], md, out->p, out->n, tmp, &inner, ms);
            tok_buf t = *out;
            *out = *tmp;
            *tmp = t;
        }
        tb_free(&inner);
        return rc;
    }
    default: return infer_err(INFER_ERR_UNSUPPORTED, "normalizer: unknown kind %d", nm->kind);
    }
}

int norm_apply(const tok_norm *norm, pcre2_match_data *md, const char *s, size_t n, tok_buf *out,
               tok_buf *tmp, tok_matches *ms)
{
    int rc = apply(norm, md, s, n, out, tmp, ms);
    if (rc == 0 && tb_reserve(out, 1)) rc = nomem();
    if (rc == 0) out->p[out->n] = '\0';
    return rc;
}
