/* tok_json.c - a small JSON scanner for the two big values of a
 * tokenizer.json (model.vocab, model.merges).
 *
 * Gemma 3's file is 33 MB, almost all of it vocab and merges; a general
 * JSON tree of it costs millions of allocations.  These functions walk the
 * text in place: skip a value, decode a string.  Everything else of the
 * file is still parsed by cJSON (tok_load.c). */
#include <string.h>

#include "tok/tok_internal.h"

#define JS_MAX_DEPTH 512

const char *js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p, const char *e, uint32_t *v)
{
    if (e - p < 4) return -1;
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        x = x * 16 + (uint32_t)h;
    }
    *v = x;
    return 0;
}

/* Bytes of a string body that need no decoding: not '"', '\\' or a
 * control character (non-ASCII bytes are checked as UTF-8 by the
 * caller, a run at a time). */
static const char *plain_run(const char *p, const char *e)
{
    while (p < e) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\' || c < 0x20) break;
        p++;
    }
    return p;
}

/* Skips a string body without decoding it: the closing quote is the
 * first '"' not escaped, that is, not preceded by an odd run of
 * backslashes.  NULL if it does not end. */
static const char *skip_string(const char *p, const char *e)
{
    const char *start = p;
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q) return NULL;
        const char *b = q;
        while (b > start && b[-1] == '\\') b--;
        if (((q - b) & 1) == 0) return q + 1;
        p = q + 1;
    }
}

const char *js_string(const char *p, const char *e, tok_buf *out, int *oom)
{
    if (p >= e || *p != '"') return NULL;
    p++;
    if (!out) return skip_string(p, e);
    for (;;) {
        const char *q = plain_run(p, e);
        if (q > p) {
            /* the run ends at an ASCII byte or at e: a whole sequence
             * cannot be cut */
            if (utf8_check(p, (size_t)(q - p)) != (size_t)(q - p)) return NULL;
            if (tb_put(out, p, (size_t)(q - p))) {
                *oom = 1;
                return NULL;
            }
        }
        p = q;
        if (p >= e) return NULL;
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            if (tb_reserve(out, 1)) {
                *oom = 1;
                return NULL;
            }
            out->p[out->n] = '\0';
            return p + 1;
        }
        if (c < 0x20) return NULL;
        /* an escape */
        if (e - p < 2) return NULL;
        char x = p[1];
        p += 2;
        char ch;
        switch (x) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (hex4(p, e, &cp)) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (e - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, e, &lo) == 0 &&
                    lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else {
                    cp = 0xFFFD; /* a lone surrogate */
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            if (tb_put_cp(out, cp)) {
                *oom = 1;
                return NULL;
            }
            continue;
        }
        default: return NULL;
        }
        if (tb_putc(out, ch)) {
            *oom = 1;
            return NULL;
        }
    }
}

static const char *skip_number(const char *p, const char *e)
{
    if (p < e && *p == '-') p++;
    if (p >= e || *p < '0' || *p > '9') return NULL;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

static const char *skip_value(const char *p, const char *e, int depth)
{
    if (depth > JS_MAX_DEPTH) return NULL;
    p = js_ws(p, e);
    if (p >= e) return NULL;
    int oom = 0;
    switch (*p) {
    case '"': return js_string(p, e, NULL, &oom);
    case '{':
        p = js_ws(p + 1, e);
        if (p < e && *p == '}') return p + 1;
        for (;;) {
            p = js_string(js_ws(p, e), e, NULL, &oom);
            if (!p) return NULL;
            p = js_ws(p, e);
            if (p >= e || *p != ':') return NULL;
            p = skip_value(p + 1, e, depth + 1);
            if (!p) return NULL;
            p = js_ws(p, e);
            if (p >= e) return NULL;
            if (*p == '}') return p + 1;
            if (*p != ',') return NULL;
            p++;
        }
    case '[':
        p = js_ws(p + 1, e);
        if (p < e && *p == ']') return p + 1;
        for (;;) {
            p = skip_value(p, e, depth + 1);
            if (!p) return NULL;
            p = js_ws(p, e);
            if (p >= e) return NULL;
            if (*p == ']') return p + 1;
            if (*p != ',') return NULL;
            p++;
        }
    case 't': return (e - p >= 4 && memcmp(p, "true", 4) == 0) ? p + 4 : NULL;
    case 'f': return (e - p >= 5 && memcmp(p, "false", 5) == 0) ? p + 5 : NULL;
    case 'n': return (e - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
    default: return skip_number(p, e);
    }
}

const char *js_skip(const char *p, const char *e) { return skip_value(p, e, 0); }
