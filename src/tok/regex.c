/* regex.c - PCRE2 patterns of tokenizer.json (Split, Replace) and the
 * find-all loop that mirrors Hugging Face's Pattern::find_matches over
 * Oniguruma's find_iter. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

/* The Unicode White_Space characters: what Oniguruma's \s matches (PCRE2's
 * \s also takes U+180E, which Unicode no longer counts as a space). */
#define WS_SET "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define HEX_SET "0-9a-fA-F"

/* Rewrites the escapes whose meaning differs between Oniguruma (Hugging
 * Face's regex engine) and PCRE2: \s and \S (White_Space), \h and \H (a hex
 * digit in Oniguruma, horizontal space in PCRE2).  Inside a character class
 * the negated forms are left alone (a class cannot hold a complement). */
static int translate(const char *pat, size_t len, tok_buf *out)
{
    int in_class = 0;
    for (size_t i = 0; i < len; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char e = pat[++i];
            const char *rep = NULL;
            if (e == 's') rep = in_class ? WS_SET : "[" WS_SET "]";
            else if (e == 'S' && !in_class) rep = "[^" WS_SET "]";
            else if (e == 'h') rep = in_class ? HEX_SET : "[" HEX_SET "]";
            else if (e == 'H' && !in_class) rep = "[^" HEX_SET "]";
            if (rep) {
                if (tb_put(out, rep, strlen(rep))) return -1;
            } else if (tb_putc(out, '\\') || tb_putc(out, e)) {
                return -1;
            }
            continue;
        }
        if (tb_putc(out, c)) return -1;
        if (!in_class && c == '[') {
            in_class = 1;
            /* a ']' first in the class (after an optional '^') is literal */
            if (i + 1 < len && pat[i + 1] == '^') {
                if (tb_putc(out, pat[++i])) return -1;
            }
            if (i + 1 < len && pat[i + 1] == ']') {
                if (tb_putc(out, pat[++i])) return -1;
            }
        } else if (in_class && c == ']') {
            in_class = 0;
        }
    }
    return 0;
}

int regex_compile(tok_regex *re, const char *pat, size_t len, const char *where)
{
    int err;
    PCRE2_SIZE at;
    re->jit = 0;
    re->code = NULL;
    tok_buf t = {0};
    if (translate(pat, len, &t) || tb_reserve(&t, 1)) {
        tb_free(&t);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
    }
    re->code = pcre2_compile((PCRE2_SPTR)t.p, t.n, PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
    tb_free(&t);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return infer_err(INFER_ERR_FORMAT, "%s: invalid regex \"%.*s\": %s", where,
                         (int)(len > 200 ? 200 : len), pat, (const char *)msg);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

void regex_free(tok_regex *re)
{
    pcre2_code_free(re->code);
    re->code = NULL;
}

static int ms_push(tok_matches *ms, size_t start, size_t end, int is_match)
{
    if (ms->n == ms->cap) {
        size_t cap = ms->cap ? ms->cap * 2 : 64;
        tok_match *v = realloc(ms->v, cap * sizeof *v);
        if (!v) return INFER_ERR_OUT_OF_MEMORY;
        ms->v = v;
        ms->cap = cap;
    }
    ms->v[ms->n].start = (uint32_t)start;
    ms->v[ms->n].end = (uint32_t)end;
    ms->v[ms->n].is_match = (uint8_t)is_match;
    ms->n++;
    return 0;
}

/* One search from pos; 1 found, 0 none, <0 a PCRE2 error. */
static int search(const tok_regex *re, pcre2_match_data *md, const char *s, size_t n, size_t pos,
                  pcre2_match_context **mctx, pcre2_jit_stack **jstack)
{
    int rc;
    if (re->jit && !*mctx) {
        rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, pos, 0, md, NULL);
        if (rc != PCRE2_ERROR_JIT_STACKLIMIT) return rc == PCRE2_ERROR_NOMATCH ? 0 : (rc < 0 ? rc : 1);
        /* A long run needs more stack than the default 32 KiB: retry with
         * a big one, kept for the rest of this call. */
        *mctx = pcre2_match_context_create(NULL);
        *jstack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
        if (!*mctx || !*jstack) return PCRE2_ERROR_NOMEMORY;
        pcre2_jit_stack_assign(*mctx, NULL, *jstack);
    }
    if (re->jit)
        rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, pos, 0, md, *mctx);
    else
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    return rc == PCRE2_ERROR_NOMATCH ? 0 : (rc < 0 ? rc : 1);
}

int regex_find_all(const tok_regex *re, pcre2_match_data *md, const char *s, size_t n,
                   tok_matches *ms)
{
    ms->n = 0;
    pcre2_match_context *mctx = NULL;
    pcre2_jit_stack *jstack = NULL;
    size_t last_end = 0, prev = 0, last_match_end = 0;
    int have_last = 0, rc = 0;
    while (last_end <= n) {
        int f = search(re, md, s, n, last_end, &mctx, &jstack);
        if (f < 0) {
            rc = f == PCRE2_ERROR_NOMEMORY ? INFER_ERR_OUT_OF_MEMORY
                                           : infer_err(INFER_ERR_UNSUPPORTED,
                                                       "regex match failed (PCRE2 error %d)", f);
            break;
        }
        if (f == 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms0 = ov[0], me0 = ov[1];
        if (me0 < ms0) { /* \K in a lookahead can do this: treat as empty */
            me0 = ms0;
        }
        /* Oniguruma's find_iter: no empty match right after the last match. */
        if (me0 == ms0 && have_last && me0 == last_match_end) {
            last_end += last_end < n ? utf8_len((unsigned char)s[last_end]) : 1;
            continue;
        }
        last_end = me0;
        last_match_end = me0;
        have_last = 1;
        if (prev < ms0 && ms_push(ms, prev, ms0, 0)) {
            rc = INFER_ERR_OUT_OF_MEMORY;
            break;
        }
        if (ms_push(ms, ms0, me0, 1)) {
            rc = INFER_ERR_OUT_OF_MEMORY;
            break;
        }
        prev = me0;
    }
    if (rc == 0 && prev < n && ms_push(ms, prev, n, 0)) rc = INFER_ERR_OUT_OF_MEMORY;
    pcre2_match_context_free(mctx);
    pcre2_jit_stack_free(jstack);
    if (rc == INFER_ERR_OUT_OF_MEMORY) infer_err(rc, "out of memory");
    return rc;
}
