/* jinja_lex.c - Jinja2's lexer with trim_blocks, lstrip_blocks and
 * keep_trailing_newline=False.
 *
 * Newlines (\r\n, \r, \n) become \n and one trailing newline is dropped.
 * Outside tags, text runs up to the next "{{", "{%" or "{#".  Before a tag,
 * a '-' sign strips all whitespace of the text; otherwise, for "{%" and
 * "{#" (lstrip_blocks), spaces and tabs between the start of a line and
 * the tag go unless the sign is '+'.  After "%}" and "#}" one newline goes
 * (trim_blocks) unless the end is "+%}"; "-%}", "-}}" and "-#}" strip all
 * whitespace after.  "{% raw %}...{% endraw %}" is text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

typedef struct lexer {
    const char *s;
    size_t n;
    size_t pos;
    int line_starting;
    jlex_out *out;
    /* line/column tracking (offsets only grow) */
    size_t lc_off;
    int lc_line;
    size_t lc_line_start;
} lexer;

static void linecol(lexer *l, size_t off, int *line, int *col)
{
    if (off < l->lc_off) { /* restart (rare: errors) */
        l->lc_off = 0;
        l->lc_line = 1;
        l->lc_line_start = 0;
    }
    for (size_t i = l->lc_off; i < off && i < l->n; i++) {
        if (l->s[i] == '\n') {
            l->lc_line++;
            l->lc_line_start = i + 1;
        }
    }
    l->lc_off = off;
    *line = l->lc_line;
    *col = (int)u8_count(l->s + l->lc_line_start, off - l->lc_line_start) + 1;
}

static int lex_error(lexer *l, size_t off, const char *fmt, ...) INFER_PRINTF(3, 4);
static int lex_error(lexer *l, size_t off, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    linecol(l, off, &line, &col);
    return infer_err(INFER_ERR_FORMAT, "chat template: syntax error at line %d, column %d: %s", line, col, msg);
}

static int push(lexer *l, int type, size_t off, size_t len, jv val)
{
    jlex_out *o = l->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        jtoken *t = realloc(o->toks, cap * sizeof *t);
        if (!t) {
            jv_release(val);
            return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
        }
        o->toks = t;
        o->cap = cap;
    }
    jtoken *t = &o->toks[o->n++];
    t->type = type;
    t->off = off;
    t->len = len;
    t->val = val;
    linecol(l, off, &t->line, &t->col);
    return 0;
}

static int push_str(lexer *l, int type, size_t off, const char *s, size_t n)
{
    jstr *js = jstr_new(s, n);
    if (!js)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    return push(l, type, off, n, jv_str(js));
}

/* Python's \s at s[i]: its length in bytes, or 0. */
static size_t space_at(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80)
        return py_isspace(c) ? 1 : 0;
    size_t k = i;
    uint32_t cp = u8_next(s, n, &k);
    return py_isspace(cp) ? k - i : 0;
}

static size_t skip_spaces(const char *s, size_t n, size_t i)
{
    size_t k;
    while ((k = space_at(s, n, i)) > 0)
        i += k;
    return i;
}

/* The end of the text once trailing whitespace is stripped (str.rstrip). */
static size_t rstrip_end(const char *s, size_t start, size_t end)
{
    while (end > start) {
        size_t k = end - 1;
        while (k > start && ((unsigned char)s[k] & 0xc0) == 0x80)
            k--;
        size_t j = k;
        uint32_t cp = u8_next(s, end, &j);
        if (!py_isspace(cp))
            break;
        end = k;
    }
    return end;
}

/* Emits the text s[start, end) before a tag, with the tag's strip sign. */
static int emit_text(lexer *l, size_t start, size_t end, char sign, int lstrip_ok)
{
    if (sign == '-') {
        end = rstrip_end(l->s, start, end);
    } else if (sign != '+' && lstrip_ok) {
        size_t lpos = start;
        for (size_t i = end; i > start; i--)
            if (l->s[i - 1] == '\n') {
                lpos = i;
                break;
            }
        if ((lpos > start || l->line_starting) && lpos < end) {
            size_t i = lpos;
            size_t k;
            while (i < end && (k = space_at(l->s, end, i)) > 0)
                i += k;
            if (i == end)
                end = lpos;
        }
    }
    if (end > start)
        return push_str(l, T_DATA, start, l->s + start, end - start);
    return 0;
}

/* Matches `{%(-|+|)\s*raw\s*(-%}\s*|%})` at i; returns the match end or 0. */
static size_t match_raw_begin(const lexer *l, size_t i, char *sign)
{
    const char *s = l->s;
    size_t n = l->n;
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%')
        return 0;
    size_t k = i + 2;
    *sign = 0;
    if (k < n && (s[k] == '-' || s[k] == '+'))
        *sign = s[k++];
    k = skip_spaces(s, n, k);
    if (n - k < 3 || memcmp(s + k, "raw", 3) != 0)
        return 0;
    k = skip_spaces(s, n, k + 3);
    if (n - k >= 3 && memcmp(s + k, "-%}", 3) == 0)
        return skip_spaces(s, n, k + 3);
    if (n - k >= 2 && memcmp(s + k, "%}", 2) == 0)
        return k + 2;
    return 0;
}

/* Matches `{%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?)` at i. */
static size_t match_raw_end(const lexer *l, size_t i, char *sign)
{
    const char *s = l->s;
    size_t n = l->n;
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%')
        return 0;
    size_t k = i + 2;
    *sign = 0;
    if (k < n && (s[k] == '-' || s[k] == '+'))
        *sign = s[k++];
    k = skip_spaces(s, n, k);
    if (n - k < 6 || memcmp(s + k, "endraw", 6) != 0)
        return 0;
    k = skip_spaces(s, n, k + 6);
    if (n - k >= 3 && memcmp(s + k, "+%}", 3) == 0)
        return k + 3;
    if (n - k >= 3 && memcmp(s + k, "-%}", 3) == 0)
        return skip_spaces(s, n, k + 3);
    if (n - k >= 2 && memcmp(s + k, "%}", 2) == 0)
        return (k + 2 < n && s[k + 2] == '\n') ? k + 3 : k + 2;
    return 0;
}

/* (\d+_)*\d+ at i: the end, or 0 when no digit. */
static size_t digits_us(const char *s, size_t n, size_t i)
{
    if (i >= n || s[i] < '0' || s[i] > '9')
        return 0;
    for (;;) {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i + 1 < n && s[i] == '_' && s[i + 1] >= '0' && s[i + 1] <= '9')
            i++;
        else
            return i;
    }
}

static size_t match_float(const char *s, size_t n, size_t i)
{
    if (i > 0 && s[i - 1] == '.')
        return 0;
    size_t a = digits_us(s, n, i);
    if (!a)
        return 0;
    /* (\.(\d+_)*\d+)? e[+-]?(\d+_)*\d+ */
    size_t b = a;
    if (a < n && s[a] == '.') {
        size_t f = digits_us(s, n, a + 1);
        if (f)
            b = f;
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t c = pass == 0 ? b : a;
        if (c < n && (s[c] == 'e' || s[c] == 'E')) {
            size_t k = c + 1;
            if (k < n && (s[k] == '+' || s[k] == '-'))
                k++;
            size_t e = digits_us(s, n, k);
            if (e)
                return e;
        }
    }
    if (a < n && s[a] == '.') {
        size_t f = digits_us(s, n, a + 1);
        if (f)
            return f;
    }
    return 0;
}

static int is_digit_base(char c, int base)
{
    if (base == 2)
        return c == '0' || c == '1';
    if (base == 8)
        return c >= '0' && c <= '7';
    if (base == 16)
        return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
    return c >= '0' && c <= '9';
}

/* integer_re at i: the end or 0; *base is the base. */
static size_t match_int(const char *s, size_t n, size_t i, int *base)
{
    if (i >= n || s[i] < '0' || s[i] > '9')
        return 0;
    if (s[i] == '0' && i + 1 < n) {
        char p = (char)(s[i + 1] | 0x20);
        int b = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 0;
        if (b) {
            /* (_?[digits])+ */
            size_t k = i + 2, cnt = 0;
            for (;;) {
                size_t j = k;
                if (j < n && s[j] == '_')
                    j++;
                if (j < n && is_digit_base(s[j], b)) {
                    k = j + 1;
                    cnt++;
                } else {
                    break;
                }
            }
            if (cnt) {
                *base = b;
                return k;
            }
        }
    }
    *base = 10;
    if (s[i] == '0') {
        size_t k = i + 1;
        for (;;) {
            size_t j = k;
            if (j < n && s[j] == '_')
                j++;
            if (j < n && s[j] == '0')
                k = j + 1;
            else
                break;
        }
        return k;
    }
    size_t k = i + 1;
    for (;;) {
        size_t j = k;
        if (j < n && s[j] == '_')
            j++;
        if (j < n && s[j] >= '0' && s[j] <= '9')
            k = j + 1;
        else
            break;
    }
    return k;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Python's .encode("ascii", "backslashreplace").decode("unicode-escape")
 * of a string literal's body. */
static int unescape(lexer *l, size_t off, const char *s, size_t n, jv *out)
{
    jstr *r = jstr_alloc(n * 4 + 16);
    if (!r)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c != '\\') {
            r->s[o++] = (char)c;
            i++;
            continue;
        }
        if (i + 1 >= n) { /* cannot happen: the literal's regex pairs backslashes */
            free(r);
            return lex_error(l, off, "\\ at end of string");
        }
        unsigned char e = (unsigned char)s[i + 1];
        i += 2;
        uint32_t cp;
        int ndig = 0;
        switch (e) {
        case '\n': continue;
        case '\\': r->s[o++] = '\\'; continue;
        case '\'': r->s[o++] = '\''; continue;
        case '"': r->s[o++] = '"'; continue;
        case 'a': r->s[o++] = '\a'; continue;
        case 'b': r->s[o++] = '\b'; continue;
        case 'f': r->s[o++] = '\f'; continue;
        case 'n': r->s[o++] = '\n'; continue;
        case 'r': r->s[o++] = '\r'; continue;
        case 't': r->s[o++] = '\t'; continue;
        case 'v': r->s[o++] = '\v'; continue;
        case 'x': ndig = 2; break;
        case 'u': ndig = 4; break;
        case 'U': ndig = 8; break;
        case 'N':
            free(r);
            return infer_err(INFER_ERR_UNSUPPORTED, "chat template: \\N{...} escapes are not supported");
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                o += (size_t)u8_put(r->s + o, cp);
                continue;
            }
            if (e >= 0x80) {
                /* the character had become \xNN, \uNNNN or \UNNNNNNNN,
                 * whose backslash this one escapes */
                size_t k = i - 1;
                uint32_t u = u8_next(s, n, &k);
                i = k;
                r->s[o++] = '\\';
                if (u < 0x100)
                    o += (size_t)sprintf(r->s + o, "x%02x", u);
                else if (u < 0x10000)
                    o += (size_t)sprintf(r->s + o, "u%04x", u);
                else
                    o += (size_t)sprintf(r->s + o, "U%08x", u);
                continue;
            }
            /* an unknown escape stays as written */
            r->s[o++] = '\\';
            r->s[o++] = (char)e;
            continue;
        }
        cp = 0;
        for (int k = 0; k < ndig; k++) {
            int h = i + (size_t)k < n ? hexval(s[i + (size_t)k]) : -1;
            if (h < 0) {
                free(r);
                return lex_error(l, off, "truncated \\%c%s escape", e,
                                 ndig == 2 ? "XX" : ndig == 4 ? "XXXX" : "XXXXXXXX");
            }
            cp = cp * 16 + (uint32_t)h;
        }
        i += (size_t)ndig;
        if (cp > 0x10ffff) {
            free(r);
            return lex_error(l, off, "illegal Unicode character");
        }
        if (cp >= 0xd800 && cp <= 0xdfff) {
            free(r);
            return infer_err(INFER_ERR_UNSUPPORTED,
                             "chat template: a surrogate escape (\\u%04x) in a string literal is not supported", cp);
        }
        o += (size_t)u8_put(r->s + o, cp);
    }
    r->len = o;
    r->s[o] = '\0';
    *out = jv_str(r);
    return 0;
}

static const struct {
    const char *op;
    int type;
} operators[] = {
    {"//", T_FLOORDIV}, {"**", T_POW}, {"==", T_EQ}, {"!=", T_NE}, {">=", T_GTEQ}, {"<=", T_LTEQ},
    {"+", T_ADD}, {"-", T_SUB}, {"/", T_DIV}, {"*", T_MUL}, {"%", T_MOD}, {"~", T_TILDE},
    {"[", T_LBRACKET}, {"]", T_RBRACKET}, {"(", T_LPAREN}, {")", T_RPAREN}, {"{", T_LBRACE},
    {"}", T_RBRACE}, {">", T_GT}, {"<", T_LT}, {"=", T_ASSIGN}, {".", T_DOT}, {":", T_COLON},
    {"|", T_PIPE}, {",", T_COMMA}, {";", T_SEMICOLON},
};

/* Lexes the inside of a {{ }} (is_block = 0) or {% %} tag from l->pos. */
static int lex_tag(lexer *l, int is_block)
{
    const char *s = l->s;
    size_t n = l->n;
    char stack[256];
    size_t depth = 0, overflow = 0;
    while (l->pos < n) {
        size_t p = l->pos;
        if (depth == 0 && overflow == 0) {
            size_t end = 0;
            if (is_block) {
                if (n - p >= 3 && s[p] == '+' && s[p + 1] == '%' && s[p + 2] == '}')
                    end = p + 3;
                else if (n - p >= 3 && s[p] == '-' && s[p + 1] == '%' && s[p + 2] == '}')
                    end = skip_spaces(s, n, p + 3);
                else if (n - p >= 2 && s[p] == '%' && s[p + 1] == '}')
                    end = (p + 2 < n && s[p + 2] == '\n') ? p + 3 : p + 2;
            } else {
                if (n - p >= 3 && s[p] == '-' && s[p + 1] == '}' && s[p + 2] == '}')
                    end = skip_spaces(s, n, p + 3);
                else if (n - p >= 2 && s[p] == '}' && s[p + 1] == '}')
                    end = p + 2;
            }
            if (end) {
                int rc = push(l, is_block ? T_BLOCK_END : T_VAR_END, p, end - p, jv_none());
                if (rc)
                    return rc;
                l->pos = end;
                l->line_starting = s[end - 1] == '\n';
                return 0;
            }
        }
        size_t k = space_at(s, n, p);
        if (k) {
            l->pos = skip_spaces(s, n, p);
            continue;
        }
        size_t e = match_float(s, n, p);
        if (e) {
            char tmp[128];
            size_t o = 0;
            for (size_t i = p; i < e && o < sizeof tmp - 1; i++)
                if (s[i] != '_')
                    tmp[o++] = s[i];
            tmp[o] = '\0';
            int rc = push(l, T_FLOAT, p, e - p, jv_float(strtod(tmp, NULL)));
            if (rc)
                return rc;
            l->pos = e;
            continue;
        }
        int base;
        e = match_int(s, n, p, &base);
        if (e) {
            uint64_t v = 0;
            size_t i = p + (base == 10 ? 0 : 2);
            for (; i < e; i++) {
                if (s[i] == '_')
                    continue;
                int d = hexval(s[i]);
                if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base || v * (uint64_t)base + (uint64_t)d > (uint64_t)INT64_MAX)
                    return infer_err(INFER_ERR_UNSUPPORTED, "chat template: integer literal too large");
                v = v * (uint64_t)base + (uint64_t)d;
            }
            int rc = push(l, T_INT, p, e - p, jv_int((int64_t)v));
            if (rc)
                return rc;
            l->pos = e;
            continue;
        }
        /* a name: a run of identifier characters */
        {
            size_t i = p;
            while (i < n) {
                size_t j = i;
                uint32_t cp = u8_next(s, n, &j);
                if (!py_isident_cont(cp) && !py_isword(cp))
                    break;
                i = j;
            }
            if (i > p) {
                size_t j = p;
                uint32_t first = u8_next(s, n, &j);
                for (size_t q = p; q < i;) {
                    uint32_t cp = u8_next(s, n, &q);
                    if (!py_isident_cont(cp))
                        return lex_error(l, p, "Invalid character in identifier");
                }
                if (!py_isident_start(first))
                    return lex_error(l, p, "Invalid character in identifier");
                int rc = push_str(l, T_NAME, p, s + p, i - p);
                if (rc)
                    return rc;
                l->pos = i;
                continue;
            }
        }
        if (s[p] == '\'' || s[p] == '"') {
            char q = s[p];
            size_t i = p + 1;
            while (i < n && s[i] != q) {
                if (s[i] == '\\') {
                    if (i + 1 >= n)
                        break;
                    i += 2;
                } else {
                    i++;
                }
            }
            if (i < n) {
                jv val;
                int rc = unescape(l, p, s + p + 1, i - p - 1, &val);
                if (rc)
                    return rc;
                rc = push(l, T_STRING, p, i + 1 - p, val);
                if (rc)
                    return rc;
                l->pos = i + 1;
                continue;
            }
        }
        int type = 0;
        size_t oplen = 0;
        for (size_t i = 0; i < sizeof operators / sizeof operators[0]; i++) {
            size_t len = strlen(operators[i].op);
            if (n - p >= len && memcmp(s + p, operators[i].op, len) == 0) {
                type = operators[i].type;
                oplen = len;
                break;
            }
        }
        if (!type) {
            size_t j = p;
            uint32_t cp = u8_next(s, n, &j);
            char ch[8] = {0};
            if (cp >= 0x20 && cp != 0x7f)
                memcpy(ch, s + p, j - p);
            else
                snprintf(ch, sizeof ch, "\\x%02x", cp);
            return lex_error(l, p, "unexpected char '%s' at %zu", ch, u8_count(s, p));
        }
        if (type == T_LPAREN || type == T_LBRACKET || type == T_LBRACE) {
            char close = type == T_LPAREN ? ')' : type == T_LBRACKET ? ']' : '}';
            if (depth < sizeof stack)
                stack[depth++] = close;
            else
                overflow++;
        } else if (type == T_RPAREN || type == T_RBRACKET || type == T_RBRACE) {
            if (depth == 0 && overflow == 0)
                return lex_error(l, p, "unexpected '%c'", s[p]);
            if (overflow) {
                overflow--;
            } else {
                char want = stack[--depth];
                if (want != s[p])
                    return lex_error(l, p, "unexpected '%c', expected '%c'", s[p], want);
            }
        }
        int rc = push(l, type, p, oplen, jv_none());
        if (rc)
            return rc;
        l->pos = p + oplen;
    }
    return 0; /* the source ended inside the tag: the parser reports it */
}

int jinja_lex(const char *src, size_t len, jlex_out *out)
{
    memset(out, 0, sizeof *out);
    size_t bad;
    if (!u8_valid(src, len, &bad))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "chat template: not valid UTF-8 (byte %zu)", bad);
    /* normalize newlines, drop one trailing newline */
    char *s = malloc(len + 1);
    if (!s)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    out->src = s;
    out->len = n;

    lexer l = {s, n, 0, 1, out, 0, 1, 0};
    int rc = 0;
    while (l.pos < n && !rc) {
        /* the next tag start */
        size_t t = l.pos;
        int kind = 0; /* 1 var, 2 block, 3 comment */
        for (;;) {
            const char *p = memchr(s + t, '{', n - t);
            if (!p || (size_t)(p - s) + 1 >= n) {
                t = n;
                break;
            }
            t = (size_t)(p - s);
            char c = s[t + 1];
            if (c == '{' || c == '%' || c == '#') {
                kind = c == '{' ? 1 : c == '%' ? 2 : 3;
                break;
            }
            t++;
        }
        if (!kind) {
            rc = push_str(&l, T_DATA, l.pos, s + l.pos, n - l.pos);
            l.pos = n;
            break;
        }
        char sign = 0;
        size_t raw_end = kind == 2 ? match_raw_begin(&l, t, &sign) : 0;
        if (raw_end) {
            if ((rc = emit_text(&l, l.pos, t, sign, 1)) != 0)
                break;
            l.line_starting = s[raw_end - 1] == '\n';
            size_t body = raw_end, i = raw_end, end = 0;
            char esign = 0;
            for (; i < n; i++) {
                if (s[i] == '{' && (end = match_raw_end(&l, i, &esign)) != 0)
                    break;
            }
            if (!end) {
                rc = lex_error(&l, t, "Missing end of raw directive");
                break;
            }
            if ((rc = emit_text(&l, body, i, esign, 1)) != 0)
                break;
            l.pos = end;
            l.line_starting = s[end - 1] == '\n';
            continue;
        }
        sign = (t + 2 < n && (s[t + 2] == '-' || s[t + 2] == '+')) ? s[t + 2] : 0;
        if ((rc = emit_text(&l, l.pos, t, sign, kind != 1)) != 0)
            break;
        l.pos = t + 2 + (sign ? 1 : 0);
        l.line_starting = 0;
        if (kind == 3) {
            size_t end = 0;
            for (size_t i = l.pos; i < n && !end; i++) {
                if (s[i] == '+' && n - i >= 3 && s[i + 1] == '#' && s[i + 2] == '}')
                    end = i + 3;
                else if (s[i] == '-' && n - i >= 3 && s[i + 1] == '#' && s[i + 2] == '}')
                    end = skip_spaces(s, n, i + 3);
                else if (s[i] == '#' && n - i >= 2 && s[i + 1] == '}')
                    end = (i + 2 < n && s[i + 2] == '\n') ? i + 3 : i + 2;
            }
            if (!end) {
                rc = lex_error(&l, t, "Missing end of comment tag");
                break;
            }
            l.pos = end;
            l.line_starting = s[end - 1] == '\n';
            continue;
        }
        if ((rc = push(&l, kind == 1 ? T_VAR_BEGIN : T_BLOCK_BEGIN, t, l.pos - t, jv_none())) != 0)
            break;
        rc = lex_tag(&l, kind == 2);
    }
    if (!rc)
        rc = push(&l, T_EOF, n, 0, jv_none());
    if (rc) {
        jlex_free(out);
        return rc;
    }
    return 0;
}

void jlex_free(jlex_out *lx)
{
    for (size_t i = 0; i < lx->n; i++)
        jv_release(lx->toks[i].val);
    free(lx->toks);
    free(lx->src);
    memset(lx, 0, sizeof *lx);
}

const char *jtok_describe(int type)
{
    switch (type) {
    case T_EOF: return "end of template";
    case T_DATA: return "template data / text";
    case T_VAR_BEGIN: return "begin of print statement";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_BEGIN: return "begin of statement block";
    case T_BLOCK_END: return "end of statement block";
    case T_NAME: return "name";
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    default:
        for (size_t i = 0; i < sizeof operators / sizeof operators[0]; i++)
            if (operators[i].type == type)
                return operators[i].op;
        return "token";
    }
}
