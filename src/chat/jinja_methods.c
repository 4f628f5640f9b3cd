/* jinja_methods.c - the Python side of values: str, list, dict and number
 * methods reached as attributes (jattr_lookup), the string helpers the
 * filters share (py_str_*), HTML escaping, `fmt % args` and str.format.
 *
 * Strings are UTF-8; Python indexes them by code point, so the methods that
 * take or return positions (find, count, startswith with start/end, center,
 * zfill) convert between byte offsets and code point indices.  Mutating
 * methods of lists and dicts exist, as in Jinja's ImmutableSandboxedEnvironment,
 * only as undefined values that raise a SecurityError when used. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "chat/jinja_int.h"

/* jv.sub of a JL_TUPLE made by the groupby filter: it has the attributes
 * grouper and list (jinja_builtins.c sets it). */
#define SUB_GROUP 2


/* ------------------------------------------------------------------ */
/* Small helpers                                                        */
/* ------------------------------------------------------------------ */

static int bound(jx *x, jv self, const char *name, jbuiltin_fn fn, jv *out)
{
    jfunc *f = jfunc_new(JF_METHOD, name);
    if (!f)
        return jx_oom(x);
    f->fn = fn;
    f->self = jv_retain(self);
    *out = (jv){JV_FUNC, 0, {0}};
    out->u.fn = f;
    return 0;
}

/* What the sandbox gives for an attribute that exists but may not be used. */
static int unsafe_attr(jx *x, jv obj, const char *name, size_t n, jv *out)
{
    int rc = jv_make_undef(x, out, "access to attribute '%.*s' of '%s' object is unsafe.", (int)n, name,
                           jv_type_name(obj));
    if (!rc)
        out->sub = JU_SECURITY;
    return rc;
}

static int no_args(jx *x, const char *fname, const jargs *a)
{
    if (a->n || a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() takes no arguments (%d given)", fname, a->n + a->nk);
    return 0;
}

/* An optional slice index: None (not given) or an int. */
static int arg_index(jx *x, jv v, int64_t *out, int *given)
{
    *given = 0;
    if (v.t == JV_NONE)
        return 0;
    if (!jv_is_intlike(v)) {
        if (v.t == JV_UNDEF)
            return jv_undefined_error(x, v);
        return jx_fail(x, INFER_ERR_FORMAT,
                       "TypeError: slice indices must be integers or None or have an __index__ method");
    }
    *out = v.u.i;
    *given = 1;
    return 0;
}

static int arg_int(jx *x, const char *fname, jv v, int64_t *out)
{
    if (jv_is_intlike(v)) {
        *out = v.u.i;
        return 0;
    }
    if (v.t == JV_UNDEF)
        return jv_undefined_error(x, v);
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s(): '%s' object cannot be interpreted as an integer", fname,
                   jv_type_name(v));
}

static int arg_str(jx *x, const char *fname, jv v, const char *what)
{
    if (v.t == JV_STR)
        return 0;
    if (v.t == JV_UNDEF)
        return jv_undefined_error(x, v);
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() argument %s must be str, not %s", fname, what,
                   jv_type_name(v));
}

/* Appends n copies of a code point (as UTF-8). */
static int put_fill(jx *x, jbuf *b, uint32_t cp, int64_t n)
{
    char u[4];
    int k = u8_put(u, cp);
    char chunk[256];
    int per = (int)sizeof chunk / k, used = 0;
    for (int i = 0; i < per; i++) {
        memcpy(chunk + used, u, (size_t)k);
        used += k;
    }
    while (n > 0) {
        int64_t m = n < per ? n : per;
        if (jbuf_put(x, b, chunk, (size_t)m * (size_t)k))
            return x->status;
        n -= m;
    }
    return 0;
}

static int take(jx *x, jbuf *b, jv *out)
{
    int rc = jbuf_take_str(x, b, out);
    jbuf_free(b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Code point positions                                                 */
/* ------------------------------------------------------------------ */

/* Byte offsets of a string's code points: off[i] for i in [0, n], or NULL
 * when the string is ASCII (offset = index). */
typedef struct cpmap {
    size_t n;
    size_t *off;
} cpmap;

static int cpmap_init(jx *x, const jstr *s, cpmap *m)
{
    m->n = u8_count(s->s, s->len);
    m->off = NULL;
    if (m->n == s->len)
        return 0;
    if (jx_charge(x, s->len / 64))
        return x->status;
    m->off = malloc((m->n + 1) * sizeof *m->off);
    if (!m->off)
        return jx_oom(x);
    size_t i = 0;
    for (size_t k = 0; k < m->n; k++) {
        m->off[k] = i;
        u8_next(s->s, s->len, &i);
    }
    m->off[m->n] = s->len;
    return 0;
}

static size_t cp_off(const cpmap *m, size_t i) { return m->off ? m->off[i] : i; }

/* The code point index of a byte offset (at a code point boundary). */
static size_t cp_index(const cpmap *m, size_t byte)
{
    if (!m->off)
        return byte;
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->off[mid] < byte)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void cpmap_free(cpmap *m)
{
    free(m->off);
    m->off = NULL;
}

/* Python's slice index adjustment for find/count/startswith. */
static void adjust_indices(int64_t *start, int64_t *end, int64_t len)
{
    if (*end > len)
        *end = len;
    else if (*end < 0) {
        *end += len;
        if (*end < 0)
            *end = 0;
    }
    if (*start < 0) {
        *start += len;
        if (*start < 0)
            *start = 0;
    }
}

static const char *mem_find(const char *h, size_t hn, const char *nd, size_t nn)
{
    if (nn == 0)
        return h;
    if (nn > hn)
        return NULL;
    const char *end = h + hn - nn;
    for (const char *p = h; p <= end; p++) {
        p = memchr(p, nd[0], (size_t)(end - p) + 1);
        if (!p)
            return NULL;
        if (memcmp(p, nd, nn) == 0)
            return p;
    }
    return NULL;
}

static const char *mem_rfind(const char *h, size_t hn, const char *nd, size_t nn)
{
    if (nn > hn)
        return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (memcmp(h + i, nd, nn) == 0)
            return h + i;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Case mapping (str.upper, lower, title, capitalize, swapcase)         */
/* ------------------------------------------------------------------ */

/* The full case mappings of Unicode's SpecialCasing.txt that differ from
 * the simple ones and occur in real text. */
typedef struct special_case {
    uint32_t cp;
    const char *lower, *title, *upper;
} special_case;

static const special_case SPECIAL[] = {
    {0x00df, NULL, "Ss", "SS"},              /* ß */
    {0x0130, "i\xcc\x87", NULL, NULL},       /* İ */
    {0x0149, NULL, "\xca\xbcN", "\xca\xbcN"}, /* ŉ */
    {0x01f0, NULL, "J\xcc\x8c", "J\xcc\x8c"}, /* ǰ */
    {0x1e96, NULL, "H\xcc\xb1", "H\xcc\xb1"},
    {0x1e97, NULL, "T\xcc\x88", "T\xcc\x88"},
    {0x1e98, NULL, "W\xcc\x8a", "W\xcc\x8a"},
    {0x1e99, NULL, "Y\xcc\x8a", "Y\xcc\x8a"},
    {0xfb00, NULL, "Ff", "FF"},
    {0xfb01, NULL, "Fi", "FI"},
    {0xfb02, NULL, "Fl", "FL"},
    {0xfb03, NULL, "Ffi", "FFI"},
    {0xfb04, NULL, "Ffl", "FFL"},
    {0xfb05, NULL, "St", "ST"},
    {0xfb06, NULL, "St", "ST"},
};

static const special_case *special_of(uint32_t cp)
{
    if (cp < 0xdf)
        return NULL;
    for (size_t i = 0; i < sizeof SPECIAL / sizeof SPECIAL[0]; i++)
        if (SPECIAL[i].cp == cp)
            return &SPECIAL[i];
    return NULL;
}

static int case_ignorable(uint32_t cp)
{
    if (cp == '\'' || cp == '.' || cp == ':' || cp == '^' || cp == '`' || cp == 0xb7 || cp == 0x2019)
        return 1;
    if (cp < 0x80)
        return 0;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        return 0;
    }
}

/* Capital sigma at byte i (of s) lowers to final sigma when a cased letter
 * comes before it and none after (skipping case-ignorable ones). */
static int final_sigma(const char *s, size_t n, size_t at, size_t next)
{
    int before = 0;
    size_t j = at;
    while (j > 0) {
        size_t k = j - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
            k--;
        size_t t = k;
        uint32_t c = u8_next(s, n, &t);
        j = k;
        if (case_ignorable(c))
            continue;
        before = py_iscased(c);
        break;
    }
    if (!before)
        return 0;
    j = next;
    while (j < n) {
        uint32_t c = u8_next(s, n, &j);
        if (case_ignorable(c))
            continue;
        return !py_iscased(c);
    }
    return 1;
}

static int put_cp(jx *x, jbuf *b, uint32_t cp)
{
    char u[4];
    return jbuf_put(x, b, u, (size_t)u8_put(u, cp));
}

/* which: 0 lower, 1 title, 2 upper */
static int put_mapped(jx *x, jbuf *b, const jstr *s, size_t at, size_t next, uint32_t cp, int which)
{
    const special_case *sc = special_of(cp);
    if (sc) {
        const char *m = which == 0 ? sc->lower : which == 1 ? sc->title : sc->upper;
        if (m)
            return jbuf_puts(x, b, m);
    }
    if (which == 0) {
        if (cp == 0x3a3)
            return put_cp(x, b, final_sigma(s->s, s->len, at, next) ? 0x3c2 : 0x3c3);
        return put_cp(x, b, py_lower(cp));
    }
    return put_cp(x, b, which == 1 ? py_title(cp) : py_upper(cp));
}

int py_str_case(jx *x, const jstr *s, int mode, jv *out)
{
    jbuf b = {0};
    size_t i = 0;
    int prev_cased = 0, first = 1, rc = 0;
    if (jx_charge(x, s->len / 32))
        return x->status;
    while (i < s->len && !rc) {
        size_t at = i;
        uint32_t cp = u8_next(s->s, s->len, &i);
        if (cp < 0x80 && mode != CASE_TITLE && mode != CASE_CAPITALIZE) {
            /* fast path for ASCII */
            char c = (char)cp;
            if (mode == CASE_UPPER || (mode == CASE_SWAP && c >= 'a' && c <= 'z'))
                c = (char)py_upper(cp);
            else if (mode == CASE_LOWER || (mode == CASE_SWAP && c >= 'A' && c <= 'Z'))
                c = (char)py_lower(cp);
            rc = jbuf_putc(x, &b, c);
            continue;
        }
        switch (mode) {
        case CASE_UPPER:
            rc = put_mapped(x, &b, s, at, i, cp, 2);
            break;
        case CASE_LOWER:
            rc = put_mapped(x, &b, s, at, i, cp, 0);
            break;
        case CASE_TITLE:
            rc = put_mapped(x, &b, s, at, i, cp, prev_cased ? 0 : 1);
            prev_cased = py_iscased(cp);
            break;
        case CASE_CAPITALIZE:
            rc = put_mapped(x, &b, s, at, i, cp, first ? 1 : 0);
            first = 0;
            break;
        default:
            if (py_isupper_cp(cp) || py_istitle_cp(cp))
                rc = put_mapped(x, &b, s, at, i, cp, 0);
            else if (py_islower_cp(cp))
                rc = put_mapped(x, &b, s, at, i, cp, 2);
            else
                rc = jbuf_put(x, &b, s->s + at, i - at);
            break;
        }
    }
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

/* ------------------------------------------------------------------ */
/* strip, split, replace, splitlines                                    */
/* ------------------------------------------------------------------ */

static int in_chars(const jstr *chars, uint32_t cp)
{
    size_t i = 0;
    while (i < chars->len)
        if (u8_next(chars->s, chars->len, &i) == cp)
            return 1;
    return 0;
}

int py_str_strip(jx *x, const jstr *s, jv chars, int left, int right, jv *out)
{
    if (chars.t != JV_NONE && chars.t != JV_STR) {
        if (chars.t == JV_UNDEF)
            return jv_undefined_error(x, chars);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: strip arg must be None or str");
    }
    const jstr *set = chars.t == JV_STR ? chars.u.s : NULL;
    size_t a = 0, e = s->len;
    if (left) {
        while (a < e) {
            size_t k = a;
            uint32_t cp = u8_next(s->s, e, &k);
            if (set ? !in_chars(set, cp) : !py_isspace(cp))
                break;
            a = k;
        }
    }
    if (right) {
        while (e > a) {
            size_t k = e - 1;
            while (k > a && ((unsigned char)s->s[k] & 0xc0) == 0x80)
                k--;
            size_t t = k;
            uint32_t cp = u8_next(s->s, e, &t);
            if (set ? !in_chars(set, cp) : !py_isspace(cp))
                break;
            e = k;
        }
    }
    if (jx_charge(x, s->len / 64))
        return x->status;
    if (a == 0 && e == s->len) {
        *out = jv_str((jstr *)s);
        ((jstr *)s)->rc++;
        return 0;
    }
    return jv_make_str(x, s->s + a, e - a, out);
}

static int push_piece(jx *x, jlist *l, const char *p, size_t n)
{
    jv v;
    if (jv_make_str(x, p, n, &v))
        return x->status;
    if (jlist_push(l, v))
        return jx_oom(x);
    return jx_charge(x, 1);
}

/* The code point before byte e (> 0). */
static uint32_t prev_cp(const char *s, size_t e, size_t *start)
{
    size_t k = e - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    *start = k;
    size_t t = k;
    return u8_next(s, e, &t);
}

static int split_ws(jx *x, const jstr *s, int64_t maxsplit, int from_right, jlist *l)
{
    const char *p = s->s;
    size_t n = s->len;
    if (!from_right) {
        size_t i = 0;
        while (i < n) {
            /* skip whitespace */
            size_t k = i;
            while (k < n) {
                size_t t = k;
                if (!py_isspace(u8_next(p, n, &t)))
                    break;
                k = t;
            }
            i = k;
            if (i >= n)
                break;
            if (maxsplit == 0) {
                /* the rest, trailing whitespace kept */
                return push_piece(x, l, p + i, n - i);
            }
            size_t st = i;
            while (i < n) {
                size_t t = i;
                if (py_isspace(u8_next(p, n, &t)))
                    break;
                i = t;
            }
            if (push_piece(x, l, p + st, i - st))
                return x->status;
            if (maxsplit > 0)
                maxsplit--;
        }
        return 0;
    }
    /* from the right: collect pieces in reverse, then reverse the list */
    size_t e = n;
    while (e > 0) {
        size_t st;
        while (e > 0 && py_isspace(prev_cp(p, e, &st)))
            e = st;
        if (e == 0)
            break;
        if (maxsplit == 0) {
            if (push_piece(x, l, p, e))
                return x->status;
            break;
        }
        size_t b = e;
        while (b > 0 && !py_isspace(prev_cp(p, b, &st)))
            b = st;
        if (push_piece(x, l, p + b, e - b))
            return x->status;
        e = b;
        if (maxsplit > 0)
            maxsplit--;
    }
    for (size_t i = 0; i < l->n / 2; i++) {
        jv t = l->v[i];
        l->v[i] = l->v[l->n - 1 - i];
        l->v[l->n - 1 - i] = t;
    }
    return 0;
}

int py_str_split(jx *x, const jstr *s, jv sep, int64_t maxsplit, int from_right, jv *out)
{
    if (sep.t != JV_NONE && sep.t != JV_STR) {
        if (sep.t == JV_UNDEF)
            return jv_undefined_error(x, sep);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: must be str or None, not %s", jv_type_name(sep));
    }
    if (sep.t == JV_STR && sep.u.s->len == 0)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: empty separator");
    jlist *l = jlist_new(JL_LIST, 0);
    if (!l)
        return jx_oom(x);
    int rc = jx_charge(x, s->len / 64);
    if (!rc && sep.t == JV_NONE) {
        rc = split_ws(x, s, maxsplit, from_right, l);
    } else if (!rc && !from_right) {
        const jstr *d = sep.u.s;
        size_t i = 0;
        for (;;) {
            const char *f = maxsplit == 0 ? NULL : mem_find(s->s + i, s->len - i, d->s, d->len);
            if (!f) {
                rc = push_piece(x, l, s->s + i, s->len - i);
                break;
            }
            size_t at = (size_t)(f - s->s);
            if ((rc = push_piece(x, l, s->s + i, at - i)) != 0)
                break;
            i = at + d->len;
            if (maxsplit > 0)
                maxsplit--;
        }
    } else if (!rc) {
        const jstr *d = sep.u.s;
        size_t e = s->len;
        for (;;) {
            const char *f = maxsplit == 0 ? NULL : mem_rfind(s->s, e, d->s, d->len);
            if (!f) {
                rc = push_piece(x, l, s->s, e);
                break;
            }
            size_t at = (size_t)(f - s->s);
            if ((rc = push_piece(x, l, f + d->len, e - at - d->len)) != 0)
                break;
            e = at;
            if (maxsplit > 0)
                maxsplit--;
        }
        for (size_t i = 0; !rc && i < l->n / 2; i++) {
            jv t = l->v[i];
            l->v[i] = l->v[l->n - 1 - i];
            l->v[l->n - 1 - i] = t;
        }
    }
    if (rc) {
        jv_release(jv_list(l));
        return rc;
    }
    *out = jv_list(l);
    return 0;
}

int py_str_replace(jx *x, const jstr *s, const jstr *old, const jstr *rep, int64_t count, jv *out)
{
    jbuf b = {0};
    int rc = jx_charge(x, s->len / 64);
    if (rc)
        return rc;
    if (count < 0)
        count = INT64_MAX;
    if (old->len == 0) {
        /* new before every code point and at the end */
        size_t i = 0;
        while (!rc) {
            if (count > 0) {
                rc = jbuf_put(x, &b, rep->s, rep->len);
                count--;
            }
            if (rc || i >= s->len)
                break;
            size_t st = i;
            u8_next(s->s, s->len, &i);
            rc = jbuf_put(x, &b, s->s + st, i - st);
        }
        if (!rc && i < s->len)
            rc = jbuf_put(x, &b, s->s + i, s->len - i);
    } else {
        size_t i = 0;
        while (!rc) {
            const char *f = count > 0 ? mem_find(s->s + i, s->len - i, old->s, old->len) : NULL;
            if (!f) {
                rc = jbuf_put(x, &b, s->s + i, s->len - i);
                break;
            }
            size_t at = (size_t)(f - s->s);
            rc = jbuf_put(x, &b, s->s + i, at - i);
            if (!rc)
                rc = jbuf_put(x, &b, rep->s, rep->len);
            if (!rc)
                rc = jx_charge(x, 1);
            i = at + old->len;
            count--;
        }
    }
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

/* Length of the line break at s[i] (0 if none): \n \r \r\n \v \f \x1c-\x1e
 * \x85 U+2028 U+2029. */
static size_t line_break(const char *s, size_t n, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    if (c == '\r')
        return (i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
    if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e))
        return 1;
    if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] == 0x85)
        return 2;
    if (c == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
        ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9))
        return 3;
    return 0;
}

int py_str_splitlines(jx *x, const jstr *s, int keepends, jlist **out)
{
    jlist *l = jlist_new(JL_LIST, 0);
    if (!l)
        return jx_oom(x);
    int rc = jx_charge(x, s->len / 64);
    size_t st = 0, i = 0;
    while (!rc && i < s->len) {
        size_t br = line_break(s->s, s->len, i);
        if (!br) {
            i++;
            continue;
        }
        rc = push_piece(x, l, s->s + st, i - st + (keepends ? br : 0));
        i += br;
        st = i;
    }
    if (!rc && st < s->len)
        rc = push_piece(x, l, s->s + st, s->len - st);
    if (rc) {
        jv_release(jv_list(l));
        return rc;
    }
    *out = l;
    return 0;
}

int py_html_escape(jx *x, jv v, jv *out)
{
    jv s;
    if (v.t == JV_UNDEF) {
        return jv_make_str(x, "", 0, out);
    }
    if (jv_to_str(x, v, &s))
        return x->status;
    const jstr *p = s.u.s;
    jbuf b = {0};
    size_t run = 0;
    int rc = jx_charge(x, p->len / 64);
    for (size_t i = 0; i < p->len && !rc; i++) {
        const char *e = NULL;
        switch (p->s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&#34;"; break;
        case '\'': e = "&#39;"; break;
        default: break;
        }
        if (!e)
            continue;
        rc = jbuf_put(x, &b, p->s + run, i - run);
        if (!rc)
            rc = jbuf_puts(x, &b, e);
        run = i + 1;
    }
    if (!rc)
        rc = jbuf_put(x, &b, p->s + run, p->len - run);
    jv_release(s);
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

/* ------------------------------------------------------------------ */
/* str methods                                                          */
/* ------------------------------------------------------------------ */

#define SELF_S (self.u.s)

static int m_upper(jx *x, jv self, jargs *a, jv *out)
{
    return no_args(x, "upper", a) ? x->status : py_str_case(x, SELF_S, CASE_UPPER, out);
}

static int m_lower(jx *x, jv self, jargs *a, jv *out)
{
    return no_args(x, "lower", a) ? x->status : py_str_case(x, SELF_S, CASE_LOWER, out);
}

static int m_title(jx *x, jv self, jargs *a, jv *out)
{
    return no_args(x, "title", a) ? x->status : py_str_case(x, SELF_S, CASE_TITLE, out);
}

static int m_capitalize(jx *x, jv self, jargs *a, jv *out)
{
    return no_args(x, "capitalize", a) ? x->status : py_str_case(x, SELF_S, CASE_CAPITALIZE, out);
}

static int m_swapcase(jx *x, jv self, jargs *a, jv *out)
{
    return no_args(x, "swapcase", a) ? x->status : py_str_case(x, SELF_S, CASE_SWAP, out);
}

/* Full case folding (ß -> ss, ﬁ -> fi, final sigma -> sigma). */
static int m_casefold(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "casefold", a))
        return x->status;
    const jstr *s = SELF_S;
    jbuf b = {0};
    int rc = jx_charge(x, s->len / 32);
    size_t i = 0;
    while (i < s->len && !rc) {
        uint32_t cp = u8_next(s->s, s->len, &i);
        utf8proc_int32_t m[8];
        int last = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)cp, m, 8, UTF8PROC_CASEFOLD, &last);
        if (k < 1 || k > 8) {
            rc = put_cp(x, &b, py_lower(cp));
            continue;
        }
        for (utf8proc_ssize_t j = 0; j < k && !rc; j++)
            rc = put_cp(x, &b, (uint32_t)m[j]);
    }
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

static int strip_common(jx *x, jv self, jargs *a, jv *out, const char *name, int left, int right)
{
    static const char *const names[] = {"chars"};
    jv slots[1] = {jv_none()};
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() takes no keyword arguments", name);
    if (jargs_bind(x, name, a, names, 1, 0, slots))
        return x->status;
    return py_str_strip(x, SELF_S, slots[0], left, right, out);
}

static int m_strip(jx *x, jv self, jargs *a, jv *out) { return strip_common(x, self, a, out, "strip", 1, 1); }
static int m_lstrip(jx *x, jv self, jargs *a, jv *out) { return strip_common(x, self, a, out, "lstrip", 1, 0); }
static int m_rstrip(jx *x, jv self, jargs *a, jv *out) { return strip_common(x, self, a, out, "rstrip", 0, 1); }

static int split_common(jx *x, jv self, jargs *a, jv *out, const char *name, int from_right)
{
    static const char *const names[] = {"sep", "maxsplit"};
    jv slots[2] = {jv_none(), jv_int(-1)};
    int64_t maxsplit = -1;
    if (jargs_bind(x, name, a, names, 2, 0, slots) || arg_int(x, name, slots[1], &maxsplit))
        return x->status;
    return py_str_split(x, SELF_S, slots[0], maxsplit, from_right, out);
}

static int m_split(jx *x, jv self, jargs *a, jv *out) { return split_common(x, self, a, out, "split", 0); }
static int m_rsplit(jx *x, jv self, jargs *a, jv *out) { return split_common(x, self, a, out, "rsplit", 1); }

static int m_splitlines(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"keepends"};
    jv slots[1] = {jv_bool(0)};
    jlist *l;
    if (jargs_bind(x, "splitlines", a, names, 1, 0, slots))
        return x->status;
    if (py_str_splitlines(x, SELF_S, jv_truthy(slots[0]), &l))
        return x->status;
    *out = jv_list(l);
    return 0;
}

static int m_replace(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"old", "new", "count"};
    jv slots[3] = {jv_none(), jv_none(), jv_int(-1)};
    int64_t count = -1;
    if (jargs_bind(x, "replace", a, names, 3, 2, slots) || arg_str(x, "replace", slots[0], "1") ||
        arg_str(x, "replace", slots[1], "2") || arg_int(x, "replace", slots[2], &count))
        return x->status;
    return py_str_replace(x, SELF_S, slots[0].u.s, slots[1].u.s, count, out);
}

/* startswith / endswith: prefix is a str or a tuple of str. */
static int affix_common(jx *x, jv self, jargs *a, jv *out, const char *name, int at_end)
{
    static const char *const names[] = {"prefix", "start", "end"};
    jv slots[3] = {jv_none(), jv_none(), jv_none()};
    int64_t start = 0, end = INT64_MAX;
    int gs, ge;
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() takes no keyword arguments", name);
    if (jargs_bind(x, name, a, names, 3, 1, slots) || arg_index(x, slots[1], &start, &gs) ||
        arg_index(x, slots[2], &end, &ge))
        return x->status;
    if (!gs)
        start = 0;
    if (!ge)
        end = INT64_MAX;
    jv p = slots[0];
    const jv *cands = &p;
    size_t nc = 1;
    if (p.t == JV_LIST && p.u.l->kind == JL_TUPLE) {
        cands = p.u.l->v;
        nc = p.u.l->n;
        for (size_t i = 0; i < nc; i++)
            if (cands[i].t != JV_STR)
                return jx_fail(x, INFER_ERR_FORMAT, "TypeError: tuple for %s must only contain str, not %s", name,
                               jv_type_name(cands[i]));
    } else if (p.t != JV_STR) {
        if (p.t == JV_UNDEF)
            return jv_undefined_error(x, p);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s first arg must be str or a tuple of str, not %s", name,
                       jv_type_name(p));
    }
    cpmap m;
    if (cpmap_init(x, SELF_S, &m))
        return x->status;
    adjust_indices(&start, &end, (int64_t)m.n);
    int res = 0;
    for (size_t i = 0; i < nc && !res; i++) {
        const jstr *c = cands[i].u.s;
        if (start > end || start > (int64_t)m.n)
            continue;
        size_t bs = cp_off(&m, (size_t)start), be = cp_off(&m, (size_t)end);
        if (be - bs < c->len)
            continue;
        const char *at = at_end ? SELF_S->s + be - c->len : SELF_S->s + bs;
        res = memcmp(at, c->s, c->len) == 0;
    }
    cpmap_free(&m);
    *out = jv_bool(res);
    return 0;
}

static int m_startswith(jx *x, jv self, jargs *a, jv *out) { return affix_common(x, self, a, out, "startswith", 0); }
static int m_endswith(jx *x, jv self, jargs *a, jv *out) { return affix_common(x, self, a, out, "endswith", 1); }

enum { FIND_FIND, FIND_RFIND, FIND_INDEX, FIND_RINDEX, FIND_COUNT };

static int find_common(jx *x, jv self, jargs *a, jv *out, const char *name, int mode)
{
    static const char *const names[] = {"sub", "start", "end"};
    jv slots[3] = {jv_none(), jv_none(), jv_none()};
    int64_t start = 0, end = INT64_MAX;
    int gs, ge;
    if (jargs_bind(x, name, a, names, 3, 1, slots) || arg_index(x, slots[1], &start, &gs) ||
        arg_index(x, slots[2], &end, &ge))
        return x->status;
    if (slots[0].t != JV_STR) {
        if (slots[0].t == JV_UNDEF)
            return jv_undefined_error(x, slots[0]);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: must be str, not %s", jv_type_name(slots[0]));
    }
    if (!gs)
        start = 0;
    if (!ge)
        end = INT64_MAX;
    const jstr *s = SELF_S, *sub = slots[0].u.s;
    cpmap m;
    if (cpmap_init(x, s, &m) || jx_charge(x, s->len / 64))
        return x->status;
    adjust_indices(&start, &end, (int64_t)m.n);
    int64_t res = -1;
    if (mode == FIND_COUNT) {
        res = 0;
        if (start <= end && start <= (int64_t)m.n) {
            if (sub->len == 0) {
                res = end - start + 1;
            } else {
                size_t bs = cp_off(&m, (size_t)start), be = cp_off(&m, (size_t)end);
                const char *p = s->s + bs;
                size_t left = be - bs;
                const char *f;
                while ((f = mem_find(p, left, sub->s, sub->len)) != NULL) {
                    res++;
                    left -= (size_t)(f - p) + sub->len;
                    p = f + sub->len;
                }
            }
        }
    } else if (start <= end && start <= (int64_t)m.n) {
        size_t bs = cp_off(&m, (size_t)start), be = cp_off(&m, (size_t)end);
        const char *f = (mode == FIND_FIND || mode == FIND_INDEX) ? mem_find(s->s + bs, be - bs, sub->s, sub->len)
                                                                : mem_rfind(s->s + bs, be - bs, sub->s, sub->len);
        if (f)
            res = (int64_t)cp_index(&m, (size_t)(f - s->s));
    }
    cpmap_free(&m);
    if (res < 0 && (mode == FIND_INDEX || mode == FIND_RINDEX))
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: substring not found");
    *out = jv_int(res);
    return 0;
}

static int m_find(jx *x, jv self, jargs *a, jv *out) { return find_common(x, self, a, out, "find", FIND_FIND); }
static int m_rfind(jx *x, jv self, jargs *a, jv *out) { return find_common(x, self, a, out, "rfind", FIND_RFIND); }
static int m_index(jx *x, jv self, jargs *a, jv *out) { return find_common(x, self, a, out, "index", FIND_INDEX); }
static int m_rindex(jx *x, jv self, jargs *a, jv *out) { return find_common(x, self, a, out, "rindex", FIND_RINDEX); }
static int m_count(jx *x, jv self, jargs *a, jv *out) { return find_common(x, self, a, out, "count", FIND_COUNT); }

static int m_join(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"iterable"};
    jv slots[1] = {jv_none()};
    jlist *l;
    if (jargs_bind(x, "join", a, names, 1, 1, slots))
        return x->status;
    if (slots[0].t == JV_UNDEF)
        return jv_undefined_error(x, slots[0]);
    if (jv_iterate(x, slots[0], &l))
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: can only join an iterable");
    jbuf b = {0};
    int rc = jx_charge(x, l->n / 8);
    for (size_t i = 0; i < l->n && !rc; i++) {
        if (l->v[i].t != JV_STR) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: sequence item %zu: expected str instance, %s found", i,
                         jv_type_name(l->v[i]));
            break;
        }
        if (i)
            rc = jbuf_put(x, &b, SELF_S->s, SELF_S->len);
        if (!rc)
            rc = jbuf_put(x, &b, l->v[i].u.s->s, l->v[i].u.s->len);
    }
    jv_release(jv_list(l));
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

/* center, ljust, rjust: where = 0 center, 1 left (ljust), 2 right (rjust) */
static int pad_common(jx *x, jv self, jargs *a, jv *out, const char *name, int where)
{
    static const char *const names[] = {"width", "fillchar"};
    jv slots[2] = {jv_none(), jv_none()};
    int64_t width = 0;
    uint32_t fill = ' ';
    if (jargs_bind(x, name, a, names, 2, 1, slots) || arg_int(x, name, slots[0], &width))
        return x->status;
    if (slots[1].t != JV_NONE || a->n > 1 || a->nk > 0) {
        const jv f = slots[1];
        if (f.t != JV_STR || u8_count(f.u.s->s, f.u.s->len) != 1)
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: The fill character must be exactly one character long");
        size_t i = 0;
        fill = u8_next(f.u.s->s, f.u.s->len, &i);
    }
    const jstr *s = SELF_S;
    int64_t len = (int64_t)u8_count(s->s, s->len);
    if (width <= len) {
        *out = jv_retain(self);
        out->sub = 0;
        return 0;
    }
    int64_t marg = width - len, left;
    if (where == 0)
        left = marg / 2 + (marg & width & 1);
    else if (where == 1)
        left = 0;
    else
        left = marg;
    jbuf b = {0};
    if (put_fill(x, &b, fill, left) || jbuf_put(x, &b, s->s, s->len) || put_fill(x, &b, fill, marg - left)) {
        jbuf_free(&b);
        return x->status;
    }
    return take(x, &b, out);
}

static int m_center(jx *x, jv self, jargs *a, jv *out) { return pad_common(x, self, a, out, "center", 0); }
static int m_ljust(jx *x, jv self, jargs *a, jv *out) { return pad_common(x, self, a, out, "ljust", 1); }
static int m_rjust(jx *x, jv self, jargs *a, jv *out) { return pad_common(x, self, a, out, "rjust", 2); }

static int m_zfill(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"width"};
    jv slots[1] = {jv_none()};
    int64_t width = 0;
    if (jargs_bind(x, "zfill", a, names, 1, 1, slots) || arg_int(x, "zfill", slots[0], &width))
        return x->status;
    const jstr *s = SELF_S;
    int64_t len = (int64_t)u8_count(s->s, s->len);
    if (width <= len) {
        *out = jv_retain(self);
        out->sub = 0;
        return 0;
    }
    jbuf b = {0};
    size_t skip = (s->len && (s->s[0] == '+' || s->s[0] == '-')) ? 1 : 0;
    if (jbuf_put(x, &b, s->s, skip) || put_fill(x, &b, '0', width - len) ||
        jbuf_put(x, &b, s->s + skip, s->len - skip)) {
        jbuf_free(&b);
        return x->status;
    }
    return take(x, &b, out);
}

static int m_expandtabs(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"tabsize"};
    jv slots[1] = {jv_int(8)};
    int64_t tab = 8;
    if (jargs_bind(x, "expandtabs", a, names, 1, 0, slots) || arg_int(x, "expandtabs", slots[0], &tab))
        return x->status;
    const jstr *s = SELF_S;
    jbuf b = {0};
    int64_t col = 0;
    size_t i = 0;
    int rc = 0;
    while (i < s->len && !rc) {
        size_t st = i;
        uint32_t cp = u8_next(s->s, s->len, &i);
        if (cp == '\t') {
            if (tab > 0) {
                int64_t n = tab - col % tab;
                rc = put_fill(x, &b, ' ', n);
                col += n;
            }
        } else {
            rc = jbuf_put(x, &b, s->s + st, i - st);
            col = (cp == '\n' || cp == '\r') ? 0 : col + 1;
        }
    }
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

static int partition_common(jx *x, jv self, jargs *a, jv *out, const char *name, int from_right)
{
    static const char *const names[] = {"sep"};
    jv slots[1] = {jv_none()};
    if (jargs_bind(x, name, a, names, 1, 1, slots))
        return x->status;
    if (slots[0].t != JV_STR) {
        if (slots[0].t == JV_UNDEF)
            return jv_undefined_error(x, slots[0]);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: must be str, not %s", jv_type_name(slots[0]));
    }
    const jstr *s = SELF_S, *sep = slots[0].u.s;
    if (sep->len == 0)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: empty separator");
    const char *f = from_right ? mem_rfind(s->s, s->len, sep->s, sep->len) : mem_find(s->s, s->len, sep->s, sep->len);
    jlist *t = jlist_new(JL_TUPLE, 3);
    if (!t)
        return jx_oom(x);
    int rc;
    if (!f) {
        if (from_right)
            rc = push_piece(x, t, "", 0) || push_piece(x, t, "", 0) || push_piece(x, t, s->s, s->len);
        else
            rc = push_piece(x, t, s->s, s->len) || push_piece(x, t, "", 0) || push_piece(x, t, "", 0);
    } else {
        size_t at = (size_t)(f - s->s);
        rc = push_piece(x, t, s->s, at) || push_piece(x, t, sep->s, sep->len) ||
             push_piece(x, t, f + sep->len, s->len - at - sep->len);
    }
    if (rc) {
        jv_release(jv_list(t));
        return x->status;
    }
    *out = jv_list(t);
    return 0;
}

static int m_partition(jx *x, jv self, jargs *a, jv *out) { return partition_common(x, self, a, out, "partition", 0); }
static int m_rpartition(jx *x, jv self, jargs *a, jv *out)
{
    return partition_common(x, self, a, out, "rpartition", 1);
}

static int affix_remove(jx *x, jv self, jargs *a, jv *out, const char *name, int suffix)
{
    static const char *const names[] = {"affix"};
    jv slots[1] = {jv_none()};
    if (jargs_bind(x, name, a, names, 1, 1, slots) || arg_str(x, name, slots[0], "1"))
        return x->status;
    const jstr *s = SELF_S, *p = slots[0].u.s;
    if (p->len && p->len <= s->len && memcmp(suffix ? s->s + s->len - p->len : s->s, p->s, p->len) == 0)
        return jv_make_str(x, suffix ? s->s : s->s + p->len, s->len - p->len, out);
    *out = jv_retain(self);
    out->sub = 0;
    return 0;
}

static int m_removeprefix(jx *x, jv self, jargs *a, jv *out)
{
    return affix_remove(x, self, a, out, "removeprefix", 0);
}

static int m_removesuffix(jx *x, jv self, jargs *a, jv *out)
{
    return affix_remove(x, self, a, out, "removesuffix", 1);
}

/* The is* predicates. */
enum { IS_ALNUM, IS_ALPHA, IS_ASCII, IS_DECIMAL, IS_DIGIT, IS_NUMERIC, IS_SPACE, IS_PRINTABLE, IS_LOWER, IS_UPPER,
       IS_TITLE, IS_IDENT };

static int str_is(const jstr *s, int what)
{
    size_t i = 0;
    if (what == IS_ASCII) {
        for (size_t k = 0; k < s->len; k++)
            if ((unsigned char)s->s[k] >= 0x80)
                return 0;
        return 1;
    }
    if (what == IS_PRINTABLE) {
        while (i < s->len)
            if (!py_isprintable(u8_next(s->s, s->len, &i)))
                return 0;
        return 1;
    }
    if (s->len == 0)
        return 0;
    if (what == IS_LOWER || what == IS_UPPER) {
        int cased = 0;
        while (i < s->len) {
            uint32_t c = u8_next(s->s, s->len, &i);
            int up = py_isupper_cp(c), lo = py_islower_cp(c), ti = py_istitle_cp(c);
            if (what == IS_LOWER ? (up || ti) : (lo || ti))
                return 0;
            if (what == IS_LOWER ? lo : up)
                cased = 1;
        }
        return cased;
    }
    if (what == IS_TITLE) {
        int cased = 0, prev = 0;
        while (i < s->len) {
            uint32_t c = u8_next(s->s, s->len, &i);
            if (py_isupper_cp(c) || py_istitle_cp(c)) {
                if (prev)
                    return 0;
                prev = cased = 1;
            } else if (py_islower_cp(c)) {
                if (!prev)
                    return 0;
                prev = cased = 1;
            } else {
                prev = 0;
            }
        }
        return cased;
    }
    if (what == IS_IDENT) {
        uint32_t c = u8_next(s->s, s->len, &i);
        if (!py_isident_start(c))
            return 0;
        while (i < s->len)
            if (!py_isident_cont(u8_next(s->s, s->len, &i)))
                return 0;
        return 1;
    }
    while (i < s->len) {
        uint32_t c = u8_next(s->s, s->len, &i);
        int ok;
        switch (what) {
        case IS_ALNUM: ok = py_isalnum(c); break;
        case IS_ALPHA: ok = py_isalpha(c); break;
        case IS_DECIMAL: ok = py_isdecimal(c); break;
        case IS_DIGIT: ok = py_isdigit(c); break;
        case IS_NUMERIC: ok = py_isnumeric(c); break;
        default: ok = py_isspace(c); break;
        }
        if (!ok)
            return 0;
    }
    return 1;
}

#define IS_METHOD(fn, name, what)                                   \
    static int fn(jx *x, jv self, jargs *a, jv *out)                \
    {                                                               \
        if (no_args(x, name, a))                                    \
            return x->status;                                       \
        *out = jv_bool(str_is(SELF_S, what));                       \
        return 0;                                                   \
    }
IS_METHOD(m_isalnum, "isalnum", IS_ALNUM)
IS_METHOD(m_isalpha, "isalpha", IS_ALPHA)
IS_METHOD(m_isascii, "isascii", IS_ASCII)
IS_METHOD(m_isdecimal, "isdecimal", IS_DECIMAL)
IS_METHOD(m_isdigit, "isdigit", IS_DIGIT)
IS_METHOD(m_isnumeric, "isnumeric", IS_NUMERIC)
IS_METHOD(m_isspace, "isspace", IS_SPACE)
IS_METHOD(m_isprintable, "isprintable", IS_PRINTABLE)
IS_METHOD(m_islower, "islower", IS_LOWER)
IS_METHOD(m_isupper, "isupper", IS_UPPER)
IS_METHOD(m_istitle, "istitle", IS_TITLE)
IS_METHOD(m_isidentifier, "isidentifier", IS_IDENT)
#undef IS_METHOD

static int m_format(jx *x, jv self, jargs *a, jv *out) { return py_str_format(x, SELF_S, a, out); }

static int m_format_map(jx *x, jv self, jargs *a, jv *out)
{
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: format_map() takes no keyword arguments");
    if (a->n != 1)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: format_map() takes exactly one argument (%d given)", a->n);
    jv m = a->pos[0];
    if (m.t != JV_DICT)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: format_map() argument must be a mapping, not %s",
                       jv_type_name(m));
    /* the mapping's string keys become keyword arguments */
    jargs k = {0};
    const jdict *d = m.u.d;
    int rc = 0;
    k.kn = malloc((d->n ? d->n : 1) * sizeof *k.kn);
    k.kv = malloc((d->n ? d->n : 1) * sizeof *k.kv);
    if (!k.kn || !k.kv)
        rc = jx_oom(x);
    for (size_t i = 0; i < d->n && !rc; i++) {
        if (d->k[i].t != JV_STR)
            continue;
        k.kn[k.nk] = d->k[i].u.s;
        k.kv[k.nk] = d->v[i];
        k.nk++;
    }
    if (!rc)
        rc = py_str_format(x, SELF_S, &k, out);
    free(k.kn);
    free(k.kv);
    return rc;
}

static int m_unsupported(jx *x, jv self, jargs *a, jv *out)
{
    (void)self;
    (void)a;
    (void)out;
    return jx_fail(x, INFER_ERR_UNSUPPORTED, "this str method (encode, translate, maketrans) is not supported");
}

typedef struct method {
    const char *name;
    jbuiltin_fn fn;
} method;

static const method STR_METHODS[] = {
    {"capitalize", m_capitalize}, {"casefold", m_casefold}, {"center", m_center}, {"count", m_count},
    {"encode", m_unsupported}, {"endswith", m_endswith}, {"expandtabs", m_expandtabs}, {"find", m_find},
    {"format", m_format}, {"format_map", m_format_map}, {"index", m_index}, {"isalnum", m_isalnum},
    {"isalpha", m_isalpha}, {"isascii", m_isascii}, {"isdecimal", m_isdecimal}, {"isdigit", m_isdigit},
    {"isidentifier", m_isidentifier}, {"islower", m_islower}, {"isnumeric", m_isnumeric},
    {"isprintable", m_isprintable}, {"isspace", m_isspace}, {"istitle", m_istitle}, {"isupper", m_isupper},
    {"join", m_join}, {"ljust", m_ljust}, {"lower", m_lower}, {"lstrip", m_lstrip}, {"maketrans", m_unsupported},
    {"partition", m_partition}, {"removeprefix", m_removeprefix}, {"removesuffix", m_removesuffix},
    {"replace", m_replace}, {"rfind", m_rfind}, {"rindex", m_rindex}, {"rjust", m_rjust},
    {"rpartition", m_rpartition}, {"rsplit", m_rsplit}, {"rstrip", m_rstrip}, {"split", m_split},
    {"splitlines", m_splitlines}, {"startswith", m_startswith}, {"strip", m_strip}, {"swapcase", m_swapcase},
    {"title", m_title}, {"translate", m_unsupported}, {"upper", m_upper}, {"zfill", m_zfill},
};

/* ------------------------------------------------------------------ */
/* list, tuple, range, dict methods                                     */
/* ------------------------------------------------------------------ */

static int seq_index_common(jx *x, jv self, jargs *a, jv *out, int count)
{
    static const char *const names[] = {"value", "start", "stop"};
    jv slots[3] = {jv_none(), jv_none(), jv_none()};
    const char *fname = count ? "count" : "index";
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() takes no keyword arguments", fname);
    if (jargs_bind(x, fname, a, names, count ? 1 : 3, 1, slots))
        return x->status;
    const jlist *l = self.u.l;
    int64_t n = (int64_t)l->n, start = 0, stop = n;
    int g;
    if (!count) {
        if (arg_index(x, slots[1], &start, &g) || arg_index(x, slots[2], &stop, &g))
            return x->status;
        if (slots[1].t == JV_NONE)
            start = 0;
        if (slots[2].t == JV_NONE)
            stop = n;
        if (start < 0 && (start += n) < 0)
            start = 0;
        if (stop < 0 && (stop += n) < 0)
            stop = 0;
        if (stop > n)
            stop = n;
    }
    if (jx_charge(x, l->n / 8))
        return x->status;
    int64_t hits = 0;
    for (int64_t i = start; i < stop; i++) {
        if (!jv_eq(x, l->v[i], slots[0]))
            continue;
        if (!count) {
            *out = jv_int(i);
            return 0;
        }
        hits++;
    }
    if (count) {
        *out = jv_int(hits);
        return 0;
    }
    jbuf b = {0};
    int rc = jv_write_repr(x, slots[0], &b);
    if (!rc) {
        if (l->kind == JL_TUPLE)
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: tuple.index(x): x not in tuple");
        else
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: %.200s is not in list", b.p ? b.p : "");
    }
    jbuf_free(&b);
    return rc;
}

static int m_seq_index(jx *x, jv self, jargs *a, jv *out) { return seq_index_common(x, self, a, out, 0); }
static int m_seq_count(jx *x, jv self, jargs *a, jv *out) { return seq_index_common(x, self, a, out, 1); }

static int m_list_copy(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "copy", a))
        return x->status;
    const jlist *l = self.u.l;
    jlist *r = jlist_new(JL_LIST, l->n);
    if (!r)
        return jx_oom(x);
    for (size_t i = 0; i < l->n; i++)
        r->v[r->n++] = jv_retain(l->v[i]);
    *out = jv_list(r);
    return jx_charge(x, l->n / 8);
}

/* dict.keys(), values(), items() */
static int dict_view(jx *x, jv self, jargs *a, jv *out, int kind)
{
    if (no_args(x, kind == JL_KEYS ? "keys" : kind == JL_VALUES ? "values" : "items", a))
        return x->status;
    const jdict *d = self.u.d;
    jlist *r = jlist_new(kind, d->n);
    if (!r)
        return jx_oom(x);
    for (size_t i = 0; i < d->n; i++) {
        if (kind == JL_KEYS) {
            r->v[r->n++] = jv_retain(d->k[i]);
        } else if (kind == JL_VALUES) {
            r->v[r->n++] = jv_retain(d->v[i]);
        } else {
            jlist *t = jlist_new(JL_TUPLE, 2);
            if (!t) {
                jv_release(jv_list(r));
                return jx_oom(x);
            }
            t->v[0] = jv_retain(d->k[i]);
            t->v[1] = jv_retain(d->v[i]);
            t->n = 2;
            r->v[r->n++] = jv_list(t);
        }
    }
    *out = jv_list(r);
    return jx_charge(x, d->n / 8);
}

static int m_dict_keys(jx *x, jv self, jargs *a, jv *out) { return dict_view(x, self, a, out, JL_KEYS); }
static int m_dict_values(jx *x, jv self, jargs *a, jv *out) { return dict_view(x, self, a, out, JL_VALUES); }
static int m_dict_items(jx *x, jv self, jargs *a, jv *out) { return dict_view(x, self, a, out, JL_ITEMS); }

static int m_dict_get(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"key", "default"};
    jv slots[2] = {jv_none(), jv_none()};
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: get() takes no keyword arguments");
    if (jargs_bind(x, "get", a, names, 2, 1, slots))
        return x->status;
    if (!jv_hashable(slots[0]))
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(slots[0]));
    jv *v = jdict_get(self.u.d, slots[0]);
    *out = jv_retain(v ? *v : slots[1]);
    return 0;
}

static int m_dict_copy(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "copy", a))
        return x->status;
    const jdict *d = self.u.d;
    jdict *r = jdict_new();
    if (!r)
        return jx_oom(x);
    for (size_t i = 0; i < d->n; i++)
        if (jdict_set(r, jv_retain(d->k[i]), jv_retain(d->v[i]))) {
            jv_release(jv_dict(r));
            return jx_oom(x);
        }
    *out = jv_dict(r);
    return jx_charge(x, d->n / 8);
}

static const method LIST_METHODS[] = {{"copy", m_list_copy}, {"count", m_seq_count}, {"index", m_seq_index}};
static const method TUPLE_METHODS[] = {{"count", m_seq_count}, {"index", m_seq_index}};
static const method DICT_METHODS[] = {{"copy", m_dict_copy}, {"get", m_dict_get}, {"items", m_dict_items},
                                      {"keys", m_dict_keys}, {"values", m_dict_values}};
/* Exist in Python, refused by the immutable sandbox. */
static const char *const LIST_MUTATORS[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse",
                                            "sort", NULL};
static const char *const DICT_MUTATORS[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};

/* ------------------------------------------------------------------ */
/* Numbers, cycler, joiner, macros                                      */
/* ------------------------------------------------------------------ */

static int m_num_conjugate(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "conjugate", a))
        return x->status;
    *out = self.t == JV_FLOAT ? self : jv_int(self.u.i);
    return 0;
}

static int m_int_bit_length(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "bit_length", a))
        return x->status;
    uint64_t v = self.u.i < 0 ? (uint64_t)0 - (uint64_t)self.u.i : (uint64_t)self.u.i;
    int n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    *out = jv_int(n);
    return 0;
}

static int m_float_is_integer(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "is_integer", a))
        return x->status;
    *out = jv_bool(isfinite(self.u.f) && self.u.f == floor(self.u.f));
    return 0;
}

static int m_cycler_next(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "next", a))
        return x->status;
    jfunc *f = self.u.fn;
    const jlist *items = f->self.u.l;
    *out = jv_retain(items->v[f->pos]);
    f->pos = (f->pos + 1) % (int64_t)items->n;
    return 0;
}

static int m_cycler_reset(jx *x, jv self, jargs *a, jv *out)
{
    if (no_args(x, "reset", a))
        return x->status;
    self.u.fn->pos = 0;
    *out = jv_none();
    return 0;
}

static int find_method(const method *tab, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i].name) == len && memcmp(tab[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static int is_name_in(const char *const *names, const char *name, size_t len)
{
    for (; *names; names++)
        if (strlen(*names) == len && memcmp(*names, name, len) == 0)
            return 1;
    return 0;
}

#define IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)

static int func_attr(jx *x, jv obj, const char *name, size_t n, jv *out, int *found)
{
    jfunc *f = obj.u.fn;
    *found = 1;
    switch (f->kind) {
    case JF_CYCLER:
        if (IS("next"))
            return bound(x, obj, "next", m_cycler_next, out);
        if (IS("reset"))
            return bound(x, obj, "reset", m_cycler_reset, out);
        if (IS("current")) {
            *out = jv_retain(f->self.u.l->v[f->pos]);
            return 0;
        }
        if (IS("items")) {
            *out = jv_retain(f->self);
            return 0;
        }
        if (IS("pos")) {
            *out = jv_int(f->pos);
            return 0;
        }
        break;
    case JF_JOINER:
        if (IS("sep")) {
            *out = jv_retain(f->extra);
            return 0;
        }
        if (IS("used")) {
            *out = jv_bool(f->pos != 0);
            return 0;
        }
        break;
    case JF_MACRO: {
        const jnode *node = f->node;
        if (IS("name")) {
            if (f->is_caller)
                return jv_make_cstr(x, "caller", out);
            return jv_make_cstr(x, f->name ? f->name : "", out);
        }
        if (IS("arguments")) {
            jlist *t = jlist_new(JL_TUPLE, (size_t)node->nkids);
            if (!t)
                return jx_oom(x);
            for (int i = 0; i < node->nkids; i++)
                t->v[t->n++] = jv_retain(node->kids[i]->val);
            *out = jv_list(t);
            return 0;
        }
        if (IS("catch_kwargs")) {
            *out = jv_bool((node->flags & MF_KWARGS) != 0);
            return 0;
        }
        if (IS("catch_varargs")) {
            *out = jv_bool((node->flags & MF_VARARGS) != 0);
            return 0;
        }
        if (IS("caller")) {
            *out = jv_bool((node->flags & MF_CALLER) != 0);
            return 0;
        }
        break;
    }
    default:
        break;
    }
    *found = 0;
    return 0;
}

int jattr_lookup(jx *x, jv obj, const char *name, size_t n, jv *out, int *found)
{
    const method *tab = NULL;
    size_t ntab = 0;
    const char *const *refused = NULL;
    *found = 0;
    switch (obj.t) {
    case JV_STR:
        tab = STR_METHODS;
        ntab = sizeof STR_METHODS / sizeof STR_METHODS[0];
        break;
    case JV_LIST:
        switch (obj.u.l->kind) {
        case JL_LIST:
            tab = LIST_METHODS;
            ntab = sizeof LIST_METHODS / sizeof LIST_METHODS[0];
            refused = LIST_MUTATORS;
            break;
        case JL_TUPLE:
            if (obj.sub == SUB_GROUP && obj.u.l->n == 2 && (IS("grouper") || IS("list"))) {
                *found = 1;
                *out = jv_retain(obj.u.l->v[IS("grouper") ? 0 : 1]);
                return 0;
            }
            tab = TUPLE_METHODS;
            ntab = sizeof TUPLE_METHODS / sizeof TUPLE_METHODS[0];
            break;
        case JL_RANGE:
            if (IS("start") || IS("stop") || IS("step")) {
                const jlist *l = obj.u.l;
                *found = 1;
                *out = jv_int(IS("start") ? l->r_start : IS("stop") ? l->r_stop : l->r_step);
                return 0;
            }
            tab = TUPLE_METHODS;
            ntab = sizeof TUPLE_METHODS / sizeof TUPLE_METHODS[0];
            break;
        default:
            break;
        }
        break;
    case JV_DICT:
        tab = DICT_METHODS;
        ntab = sizeof DICT_METHODS / sizeof DICT_METHODS[0];
        refused = DICT_MUTATORS;
        break;
    case JV_NS: {
        jv *v = jdict_get_str(obj.u.d, name, n);
        if (v) {
            *found = 1;
            *out = jv_retain(*v);
        }
        return 0;
    }
    case JV_LOOP:
        return jloop_attr(x, obj.u.lp, name, n, out, found);
    case JV_FUNC:
        return func_attr(x, obj, name, n, out, found);
    case JV_BOOL:
    case JV_INT:
        if (IS("real") || IS("numerator")) {
            *found = 1;
            *out = jv_int(obj.u.i);
            return 0;
        }
        if (IS("imag") || IS("denominator")) {
            *found = 1;
            *out = jv_int(IS("imag") ? 0 : 1);
            return 0;
        }
        if (IS("conjugate") || IS("bit_length")) {
            *found = 1;
            return bound(x, obj, IS("conjugate") ? "conjugate" : "bit_length",
                         IS("conjugate") ? m_num_conjugate : m_int_bit_length, out);
        }
        return 0;
    case JV_FLOAT:
        if (IS("real") || IS("imag")) {
            *found = 1;
            *out = IS("real") ? obj : jv_float(0.0);
            return 0;
        }
        if (IS("conjugate") || IS("is_integer")) {
            *found = 1;
            return bound(x, obj, IS("conjugate") ? "conjugate" : "is_integer",
                         IS("conjugate") ? m_num_conjugate : m_float_is_integer, out);
        }
        return 0;
    default:
        return 0;
    }
    if (tab) {
        int i = find_method(tab, ntab, name, n);
        if (i >= 0) {
            *found = 1;
            return bound(x, obj, tab[i].name, tab[i].fn, out);
        }
    }
    if (refused && is_name_in(refused, name, n)) {
        *found = 1;
        return unsafe_attr(x, obj, name, n, out);
    }
    return 0;
}

#undef IS

/* ------------------------------------------------------------------ */
/* format(value, spec)                                                  */
/* ------------------------------------------------------------------ */

typedef struct fspec {
    uint32_t fill;
    char align;      /* 0 (the type's default), '<', '>', '^', '=' */
    char sign;       /* 0, '+', '-', ' ' */
    int zflag, alt;
    int64_t width;   /* -1: none */
    char group;      /* 0, ',', '_' */
    int64_t prec;    /* -1: none */
    char type;       /* 0: none */
} fspec;

static int is_align(uint32_t c) { return c == '<' || c == '>' || c == '=' || c == '^'; }

static int parse_digits(const char *s, size_t n, size_t *i, int64_t *out)
{
    int64_t v = 0;
    size_t st = *i;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (s[*i] - '0');
        (*i)++;
    }
    *out = *i > st ? v : -1;
    return 0;
}

/* Python's format-spec mini-language. default_align: '>' numbers, '<' str. */
static int parse_spec(jx *x, const char *s, size_t n, const char *tname, char default_align, fspec *f)
{
    memset(f, 0, sizeof *f);
    f->fill = ' ';
    f->width = f->prec = -1;
    size_t i = 0;
    int fill_given = 0;
    if (n) {
        size_t k = 0;
        uint32_t c0 = u8_next(s, n, &k);
        if (k < n && is_align((unsigned char)s[k])) {
            f->fill = c0;
            f->align = s[k];
            fill_given = 1;
            i = k + 1;
        } else if (is_align(c0)) {
            f->align = (char)c0;
            i = 1;
        }
    }
    if (i < n && (s[i] == '+' || s[i] == '-' || s[i] == ' '))
        f->sign = s[i++];
    if (i < n && s[i] == 'z') {
        f->zflag = 1;
        i++;
    }
    if (i < n && s[i] == '#') {
        f->alt = 1;
        i++;
    }
    if (!fill_given && i < n && s[i] == '0') {
        f->fill = '0';
        if (!f->align && default_align == '>')
            f->align = '=';
        i++;
    }
    if (parse_digits(s, n, &i, &f->width))
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Too many decimal digits in format string");
    if (i < n && (s[i] == ',' || s[i] == '_')) {
        f->group = s[i++];
        if (i < n && (s[i] == ',' || s[i] == '_') && s[i] != f->group)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Cannot specify both ',' and '_'.");
        if (i < n && s[i] == f->group)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Cannot specify '%c' with '%c'.", f->group, f->group);
    }
    if (i < n && s[i] == '.') {
        i++;
        if (parse_digits(s, n, &i, &f->prec))
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Too many decimal digits in format string");
        if (f->prec < 0)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Format specifier missing precision");
    }
    if (n - i > 1)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Invalid format specifier '%.*s' for object of type '%s'",
                       (int)n, s, tname);
    if (i < n)
        f->type = s[i];
    if (f->group) {
        const char *ok = f->group == ',' ? "deEfFgG%" : "deEfFgG%boxX";
        if (f->type && !strchr(ok, f->type)) {
            if (f->type >= 0x20 && f->type < 0x7f)
                return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Cannot specify '%c' with '%c'.", f->group, f->type);
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Cannot specify '%c' with '\\x%x'.", f->group,
                           (unsigned char)f->type);
        }
    }
    return 0;
}

static int unknown_code(jx *x, char type, const char *tname)
{
    if (type >= 0x20 && type < 0x7f)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Unknown format code '%c' for object of type '%s'", type,
                       tname);
    return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Unknown format code '\\x%x' for object of type '%s'",
                   (unsigned char)type, tname);
}

/* Digits with thousands separators, as CPython's grouping with a minimum
 * width (leading zeros are grouped too when zero padding). */
static int put_grouped(jx *x, jbuf *b, const char *digits, size_t nd, char sep, int size, int64_t min_width)
{
    /* build right to left into a temporary buffer */
    size_t cap = nd + nd / (size_t)size + 8 + (min_width > 0 ? (size_t)min_width * 2 : 0);
    if (min_width > (int64_t)x->lim.max_output)
        return jx_fail(x, INFER_ERR_OUT_OF_RANGE, "the template produced too much text (more than %zu bytes)",
                       x->lim.max_output);
    char *tmp = malloc(cap);
    if (!tmp)
        return jx_oom(x);
    size_t pos = cap;
    int64_t remaining = (int64_t)nd, mw = min_width;
    int first = 1;
    for (;;) {
        int64_t l = remaining > mw ? remaining : mw;
        if (l < 1)
            l = 1;
        if (l > size)
            l = size;
        int64_t zeros = l - remaining > 0 ? l - remaining : 0;
        int64_t chars = remaining < l ? remaining : l;
        if (chars < 0)
            chars = 0;
        if (!first)
            tmp[--pos] = sep;
        first = 0;
        for (int64_t k = 0; k < chars; k++)
            tmp[--pos] = digits[--remaining];
        for (int64_t k = 0; k < zeros; k++)
            tmp[--pos] = '0';
        mw -= l;
        if (remaining <= 0 && mw <= 0)
            break;
        mw -= 1;
    }
    int rc = jbuf_put(x, b, tmp + pos, cap - pos);
    free(tmp);
    return rc;
}

/* Writes sign + prefix + body padded to the spec's width.  body = the
 * digits (digits[0..nd), grouped when the spec asks) then rest. */
static int put_number(jx *x, jbuf *b, const fspec *f, const char *sign, const char *prefix, const char *digits,
                      size_t nd, const char *rest, int gsize)
{
    jbuf body = {0};
    int rc = 0;
    size_t lead = strlen(sign) + strlen(prefix), nrest = strlen(rest);
    char align = f->align ? f->align : '>';
    if (f->group) {
        int64_t mw = 0;
        if (f->fill == '0' && align == '=' && f->width > 0)
            mw = f->width - (int64_t)lead - (int64_t)nrest;
        rc = put_grouped(x, &body, digits, nd, f->group, gsize, mw);
    } else {
        rc = jbuf_put(x, &body, digits, nd);
    }
    if (!rc)
        rc = jbuf_put(x, &body, rest, nrest);
    if (rc) {
        jbuf_free(&body);
        return rc;
    }
    int64_t len = (int64_t)(lead + u8_count(body.p ? body.p : "", body.n));
    int64_t pad = f->width > len ? f->width - len : 0;
    int64_t left = 0, right = 0, mid = 0;
    if (align == '<')
        right = pad;
    else if (align == '^') {
        left = pad / 2;
        right = pad - left;
    } else if (align == '=')
        mid = pad;
    else
        left = pad;
    if (put_fill(x, b, f->fill, left) || jbuf_puts(x, b, sign) || jbuf_puts(x, b, prefix) ||
        put_fill(x, b, f->fill, mid) || jbuf_put(x, b, body.p ? body.p : "", body.n) ||
        put_fill(x, b, f->fill, right))
        rc = x->status;
    jbuf_free(&body);
    return rc;
}

static int put_padded_str(jx *x, jbuf *b, const char *s, size_t n, const fspec *f)
{
    int64_t len = (int64_t)u8_count(s, n);
    if (f->prec >= 0 && len > f->prec) {
        n = u8_offset(s, n, (size_t)f->prec);
        len = f->prec;
    }
    int64_t pad = f->width > len ? f->width - len : 0, left = 0;
    char align = f->align ? f->align : '<';
    if (align == '>')
        left = pad;
    else if (align == '^')
        left = pad / 2;
    if (put_fill(x, b, f->fill, left) || jbuf_put(x, b, s, n) || put_fill(x, b, f->fill, pad - left))
        return x->status;
    return 0;
}

static int format_str(jx *x, const jstr *s, const fspec *f, jbuf *b)
{
    if (f->type && f->type != 's')
        return unknown_code(x, f->type, "str");
    if (f->zflag)
        return jx_fail(x, INFER_ERR_FORMAT,
                       "ValueError: Negative zero coercion (z) not allowed in string format specifier");
    if (f->sign)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Sign not allowed in string format specifier");
    if (f->alt)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Alternate form (#) not allowed in string format specifier");
    if (f->align == '=')
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: '=' alignment not allowed in string format specifier");
    if (f->group)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Cannot specify '%c' with 's'.", f->group);
    return put_padded_str(x, b, s->s, s->len, f);
}

static size_t int_digits(uint64_t v, int base, int upper, char *buf)
{
    char tmp[72];
    size_t n = 0;
    const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        tmp[n++] = dig[v % (uint64_t)base];
        v /= (uint64_t)base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return n;
}

static int format_float(jx *x, double v, const fspec *f, jbuf *b);

static int format_int(jx *x, int64_t v, const fspec *f, jbuf *b)
{
    char type = f->type ? f->type : 'd';
    if (strchr("eEfFgG%", type)) {
        return format_float(x, (double)v, f, b);
    }
    if (!strchr("bcdoxXn", type))
        return unknown_code(x, type, "int");
    if (f->zflag)
        return jx_fail(x, INFER_ERR_FORMAT,
                       "ValueError: Negative zero coercion (z) not allowed in integer format specifier");
    if (f->prec >= 0)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Precision not allowed in integer format specifier");
    if (type == 'c') {
        if (f->sign)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Sign not allowed with integer format specifier 'c'");
        if (f->alt)
            return jx_fail(x, INFER_ERR_FORMAT,
                           "ValueError: Alternate form (#) not allowed with integer format specifier 'c'");
        if (v < 0 || v > 0x10ffff)
            return jx_fail(x, INFER_ERR_FORMAT, "OverflowError: %%c arg not in range(0x110000)");
        if (v >= 0xd800 && v <= 0xdfff)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "surrogate code points cannot be represented in UTF-8");
        char u[5];
        int k = u8_put(u, (uint32_t)v);
        fspec g = *f;
        if (!g.align)
            g.align = '>';
        return put_number(x, b, &g, "", "", u, (size_t)k, "", 3);
    }
    int base = type == 'b' ? 2 : type == 'o' ? 8 : (type == 'x' || type == 'X') ? 16 : 10;
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char digits[72];
    size_t nd = int_digits(mag, base, type == 'X', digits);
    const char *sign = v < 0 ? "-" : f->sign == '+' ? "+" : f->sign == ' ' ? " " : "";
    const char *prefix = "";
    if (f->alt)
        prefix = base == 2 ? "0b" : base == 8 ? "0o" : type == 'X' ? "0X" : base == 16 ? "0x" : "";
    return put_number(x, b, f, sign, prefix, digits, nd, "", base == 10 ? 3 : 4);
}

/* snprintf of a double with one of the conversions e E f F. */
static int c_double(char conv, int alt, int prec, double v, char *buf, size_t cap)
{
    switch (conv) {
    case 'e': return alt ? snprintf(buf, cap, "%#.*e", prec, v) : snprintf(buf, cap, "%.*e", prec, v);
    case 'E': return alt ? snprintf(buf, cap, "%#.*E", prec, v) : snprintf(buf, cap, "%.*E", prec, v);
    case 'f': return alt ? snprintf(buf, cap, "%#.*f", prec, v) : snprintf(buf, cap, "%.*f", prec, v);
    default: return alt ? snprintf(buf, cap, "%#.*F", prec, v) : snprintf(buf, cap, "%.*F", prec, v);
    }
}

/* Python's 'g' for a finite a >= 0 (glibc's %#g loses a digit when
 * rounding carries).  add_dot0: the no-type format with a precision, which
 * switches to the exponent at precision - 1 and writes 1.0, not 1. */
static void format_g(double a, int64_t prec, int alt, int upper, int add_dot0, char *out, size_t cap)
{
    if (prec == 0)
        prec = 1;
    if (prec > 500)
        prec = 500;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%.*e", (int)prec - 1, a);
    char digits[520];
    size_t nd = 0;
    const char *p = tmp;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    if (!alt)
        while (nd > 1 && digits[nd - 1] == '0')
            nd--;
    int decpt = exp10 + 1;
    size_t o = 0;
    if (decpt <= -4 || decpt > (add_dot0 ? prec - 1 : prec)) {
        out[o++] = digits[0];
        if (nd > 1 || alt)
            out[o++] = '.';
        for (size_t i = 1; i < nd; i++)
            out[o++] = digits[i];
        snprintf(out + o, cap - o, "%c%c%02d", upper ? 'E' : 'e', exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        return;
    }
    if (decpt <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -decpt; i++)
            out[o++] = '0';
        for (size_t i = 0; i < nd; i++)
            out[o++] = digits[i];
    } else {
        for (int i = 0; i < decpt; i++)
            out[o++] = (size_t)i < nd ? digits[i] : '0';
        if ((size_t)decpt < nd) {
            out[o++] = '.';
            for (size_t i = (size_t)decpt; i < nd; i++)
                out[o++] = digits[i];
        } else if (add_dot0) {
            out[o++] = '.';
            out[o++] = '0';
        } else if (alt) {
            out[o++] = '.';
        }
    }
    out[o] = '\0';
}

static int format_float(jx *x, double v, const fspec *f, jbuf *b)
{
    char type = f->type;
    if (type && !strchr("eEfFgGn%", type))
        return unknown_code(x, type, "float");
    int neg = signbit(v) && !isnan(v);
    double a = fabs(v);
    int64_t prec = f->prec;
    char *s = NULL;
    char small[128];
    if (isnan(a) || isinf(a)) {
        int up = type == 'E' || type == 'F' || type == 'G';
        snprintf(small, sizeof small, "%s%s", isnan(a) ? (up ? "NAN" : "nan") : (up ? "INF" : "inf"),
                 type == '%' ? "%" : "");
    } else if (!type && prec < 0) {
        py_float_repr(a, small, sizeof small);
        if (f->alt && !strchr(small, '.')) {
            /* the alternate form always has a decimal point: 1.e+16 */
            char *e = strchr(small, 'e');
            size_t at = e ? (size_t)(e - small) : strlen(small);
            memmove(small + at + 1, small + at, strlen(small) - at + 1);
            small[at] = '.';
        }
    } else if (!type) {
        format_g(a, prec, f->alt, 0, 1, small, sizeof small);
    } else if (type == 'g' || type == 'G' || type == 'n') {
        format_g(a, prec < 0 ? 6 : prec, f->alt, type == 'G', 0, small, sizeof small);
    } else {
        char t = type == 'n' ? 'g' : type == '%' ? 'f' : type;
        double val = type == '%' ? a * 100 : a;
        if (prec < 0)
            prec = 6;
        if (prec > 10000)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "a float precision above 10000 is not supported");
        int need = c_double(t, f->alt, (int)prec, val, NULL, 0);
        if (need < 0)
            return jx_fail(x, INFER_ERR_FORMAT, "formatting failed");
        s = malloc((size_t)need + 2);
        if (!s)
            return jx_oom(x);
        c_double(t, f->alt, (int)prec, val, s, (size_t)need + 1);
        if (type == '%')
            strcat(s, "%");
    }
    const char *body = s ? s : small;
    /* z: negative zero after rounding loses its sign */
    if (neg && f->zflag) {
        int zero = 1;
        for (const char *p = body; *p && *p != 'e' && *p != 'E'; p++)
            if (*p >= '1' && *p <= '9')
                zero = 0;
        if (zero)
            neg = 0;
    }
    const char *sign = neg ? "-" : f->sign == '+' ? "+" : f->sign == ' ' ? " " : "";
    size_t nd = 0;
    while (body[nd] >= '0' && body[nd] <= '9')
        nd++;
    int rc = put_number(x, b, f, sign, "", body, nd, body + nd, 3);
    free(s);
    return rc;
}

int py_format_value(jx *x, jv v, const char *spec, size_t slen, jbuf *b)
{
    fspec f;
    if (slen == 0)
        return v.t == JV_UNDEF ? 0 : jv_write_str(x, v, b);
    switch (v.t) {
    case JV_STR:
        if (parse_spec(x, spec, slen, "str", '<', &f))
            return x->status;
        return format_str(x, v.u.s, &f, b);
    case JV_INT:
    case JV_BOOL:
        if (parse_spec(x, spec, slen, v.t == JV_BOOL ? "bool" : "int", '>', &f))
            return x->status;
        return format_int(x, v.u.i, &f, b);
    case JV_FLOAT:
        if (parse_spec(x, spec, slen, "float", '>', &f))
            return x->status;
        return format_float(x, v.u.f, &f, b);
    case JV_UNDEF:
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unsupported format string passed to Undefined.__format__");
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unsupported format string passed to %s.__format__",
                       jv_type_name(v));
    }
}

/* ascii(): repr() with every non-ASCII code point escaped. */
static int write_ascii(jx *x, jv v, jbuf *b)
{
    jbuf r = {0};
    if (jv_write_repr(x, v, &r)) {
        jbuf_free(&r);
        return x->status;
    }
    int rc = 0;
    size_t i = 0, run = 0;
    while (i < r.n && !rc) {
        if ((unsigned char)r.p[i] < 0x80) {
            i++;
            continue;
        }
        rc = jbuf_put(x, b, r.p + run, i - run);
        uint32_t cp = u8_next(r.p, r.n, &i);
        run = i;
        if (!rc) {
            if (cp < 0x100)
                rc = jbuf_printf(x, b, "\\x%02x", cp);
            else if (cp < 0x10000)
                rc = jbuf_printf(x, b, "\\u%04x", cp);
            else
                rc = jbuf_printf(x, b, "\\U%08x", cp);
        }
    }
    if (!rc)
        rc = jbuf_put(x, b, r.p ? r.p + run : "", r.n - run);
    jbuf_free(&r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* printf-style formatting: fmt % args                                  */
/* ------------------------------------------------------------------ */

typedef struct pctx {
    jx *x;
    jv args;
    const jlist *tuple;  /* args as a tuple, or NULL for a single value */
    int64_t argidx;      /* next positional argument */
    int single_used;
    int is_mapping;
} pctx;

static int next_arg(pctx *p, jv *out)
{
    if (p->tuple) {
        if (p->argidx < (int64_t)p->tuple->n) {
            *out = p->tuple->v[p->argidx++];
            return 0;
        }
    } else if (!p->single_used) {
        p->single_used = 1;
        *out = p->args;
        return 0;
    }
    return jx_fail(p->x, INFER_ERR_FORMAT, "TypeError: not enough arguments for format string");
}

/* int(v) as %d takes it: ints, bools and floats (truncated). */
static int pct_int(jx *x, jv v, char conv, int allow_float, int64_t *out)
{
    if (jv_is_intlike(v)) {
        *out = v.u.i;
        return 0;
    }
    if (v.t == JV_FLOAT && allow_float) {
        if (isnan(v.u.f))
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: cannot convert float NaN to integer");
        if (isinf(v.u.f))
            return jx_fail(x, INFER_ERR_FORMAT, "OverflowError: cannot convert float infinity to integer");
        double t = trunc(v.u.f);
        if (t >= 9223372036854775808.0 || t < -9223372036854775808.0)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "integer overflow (numbers beyond 64 bits are not supported)");
        *out = (int64_t)t;
        return 0;
    }
    if (v.t == JV_UNDEF)
        return jv_undefined_error(x, v);
    if (allow_float)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %%%c format: a real number is required, not %s", conv,
                       jv_type_name(v));
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %%%c format: an integer is required, not %s", conv,
                   jv_type_name(v));
}

static int pct_pad(jx *x, jbuf *b, const char *sign, const char *prefix, const char *body, size_t bn, int64_t width,
                   int left, int zero)
{
    int64_t len = (int64_t)(strlen(sign) + strlen(prefix) + u8_count(body, bn));
    int64_t pad = width > len ? width - len : 0;
    if (!left && !zero && put_fill(x, b, ' ', pad))
        return x->status;
    if (jbuf_puts(x, b, sign) || jbuf_puts(x, b, prefix))
        return x->status;
    if (!left && zero && put_fill(x, b, '0', pad))
        return x->status;
    if (jbuf_put(x, b, body, bn))
        return x->status;
    if (left && put_fill(x, b, ' ', pad))
        return x->status;
    return 0;
}

static int pct_one(pctx *p, jv v, char conv, const char *flags, int64_t width, int64_t prec, jbuf *b)
{
    jx *x = p->x;
    int left = strchr(flags, '-') != NULL, zero = strchr(flags, '0') != NULL && !left;
    int alt = strchr(flags, '#') != NULL;
    const char *plus = strchr(flags, '+') ? "+" : strchr(flags, ' ') ? " " : "";
    int rc = 0;
    switch (conv) {
    case 's':
    case 'r':
    case 'a': {
        jbuf t = {0};
        if (conv == 's')
            rc = v.t == JV_UNDEF ? 0 : jv_write_str(x, v, &t);
        else if (conv == 'r')
            rc = jv_write_repr(x, v, &t);
        else
            rc = write_ascii(x, v, &t);
        size_t n = t.n;
        if (!rc && prec >= 0 && (int64_t)u8_count(t.p ? t.p : "", n) > prec)
            n = u8_offset(t.p, n, (size_t)prec);
        if (!rc)
            rc = pct_pad(x, b, "", "", t.p ? t.p : "", n, width, left, 0);
        jbuf_free(&t);
        return rc;
    }
    case 'c': {
        char u[5];
        int k;
        if (v.t == JV_STR) {
            if (u8_count(v.u.s->s, v.u.s->len) != 1)
                return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %%c requires int or char");
            return pct_pad(x, b, "", "", v.u.s->s, v.u.s->len, width, left, 0);
        }
        if (!jv_is_intlike(v)) {
            if (v.t == JV_UNDEF)
                return jv_undefined_error(x, v);
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %%c requires int or char");
        }
        if (v.u.i < 0 || v.u.i > 0x10ffff)
            return jx_fail(x, INFER_ERR_FORMAT, "OverflowError: %%c arg not in range(0x110000)");
        if (v.u.i >= 0xd800 && v.u.i <= 0xdfff)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "surrogate code points cannot be represented in UTF-8");
        k = u8_put(u, (uint32_t)v.u.i);
        return pct_pad(x, b, "", "", u, (size_t)k, width, left, 0);
    }
    case 'd':
    case 'i':
    case 'u':
    case 'o':
    case 'x':
    case 'X': {
        int64_t iv = 0;
        if (v.t == JV_FLOAT && isfinite(v.u.f) && fabs(trunc(v.u.f)) >= 9223372036854775808.0 &&
            (conv == 'd' || conv == 'i' || conv == 'u')) {
            /* beyond 64 bits: a double's integer value is exact in %.0f */
            char big[400];
            int k = snprintf(big, sizeof big, "%.0f", fabs(trunc(v.u.f)));
            if (k < 0 || (size_t)k >= sizeof big)
                return jx_fail(x, INFER_ERR_FORMAT, "formatting failed");
            if (prec > 400)
                return jx_fail(x, INFER_ERR_UNSUPPORTED, "an integer precision above 400 is not supported");
            char body[820];
            size_t o = 0;
            for (int64_t z = k; z < prec; z++)
                body[o++] = '0';
            memcpy(body + o, big, (size_t)k);
            return pct_pad(x, b, v.u.f < 0 ? "-" : plus, "", body, o + (size_t)k, width, left, zero);
        }
        if (pct_int(x, v, conv, conv == 'd' || conv == 'i' || conv == 'u', &iv))
            return x->status;
        int base = conv == 'o' ? 8 : (conv == 'x' || conv == 'X') ? 16 : 10;
        uint64_t mag = iv < 0 ? (uint64_t)0 - (uint64_t)iv : (uint64_t)iv;
        char digits[72], body[160];
        size_t nd = int_digits(mag, base, conv == 'X', digits);
        size_t o = 0;
        if (prec > 120)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "an integer precision above 120 is not supported");
        for (int64_t k = (int64_t)nd; k < prec; k++)
            body[o++] = '0';
        memcpy(body + o, digits, nd);
        o += nd;
        const char *prefix = "";
        if (alt)
            prefix = base == 8 ? "0o" : conv == 'X' ? "0X" : base == 16 ? "0x" : "";
        return pct_pad(x, b, iv < 0 ? "-" : plus, prefix, body, o, width, left, zero);
    }
    case 'e':
    case 'E':
    case 'f':
    case 'F':
    case 'g':
    case 'G': {
        double d;
        if (v.t == JV_FLOAT)
            d = v.u.f;
        else if (jv_is_intlike(v))
            d = (double)v.u.i;
        else if (v.t == JV_UNDEF)
            return jv_undefined_error(x, v);
        else
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: must be real number, not %s", jv_type_name(v));
        int neg = signbit(d) && !isnan(d);
        double a = fabs(d);
        if (isnan(a) || isinf(a)) {
            int up = conv == 'E' || conv == 'F' || conv == 'G';
            const char *t = isnan(a) ? (up ? "NAN" : "nan") : (up ? "INF" : "inf");
            return pct_pad(x, b, neg ? "-" : plus, "", t, 3, width, left, zero);
        }
        if (prec < 0)
            prec = 6;
        if (prec > 10000)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "a float precision above 10000 is not supported");
        if (conv == 'g' || conv == 'G') {
            char g[600];
            format_g(a, prec, alt, conv == 'G', 0, g, sizeof g);
            return pct_pad(x, b, neg ? "-" : plus, "", g, strlen(g), width, left, zero);
        }
        int need = c_double(conv, alt, (int)prec, a, NULL, 0);
        if (need < 0)
            return jx_fail(x, INFER_ERR_FORMAT, "formatting failed");
        char *s = malloc((size_t)need + 1);
        if (!s)
            return jx_oom(x);
        c_double(conv, alt, (int)prec, a, s, (size_t)need + 1);
        rc = pct_pad(x, b, neg ? "-" : plus, "", s, (size_t)need, width, left, zero);
        free(s);
        return rc;
    }
    default:
        return 0;
    }
}

int py_percent_format(jx *x, jv fmt, jv args, jv *out)
{
    const jstr *f = fmt.u.s;
    pctx p = {x, args, NULL, 0, 0, 0};
    if (args.t == JV_LIST && args.u.l->kind == JL_TUPLE)
        p.tuple = args.u.l;
    else
        p.is_mapping = args.t == JV_DICT || args.t == JV_UNDEF ||
                       (args.t == JV_LIST && (args.u.l->kind == JL_LIST || args.u.l->kind == JL_RANGE));
    jbuf b = {0};
    int rc = jx_charge(x, f->len / 32);
    size_t i = 0, run = 0;
    while (!rc && i < f->len) {
        if (f->s[i] != '%') {
            i++;
            continue;
        }
        rc = jbuf_put(x, &b, f->s + run, i - run);
        size_t start = i++;
        if (rc)
            break;
        if (i < f->len && f->s[i] == '%') {
            rc = jbuf_putc(x, &b, '%');
            run = ++i;
            continue;
        }
        jv arg = jv_none();
        int have_arg = 0;
        /* %(key)s */
        if (i < f->len && f->s[i] == '(') {
            if (args.t != JV_DICT) {
                rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: format requires a mapping");
                break;
            }
            size_t ks = ++i;
            int depth = 1;
            while (i < f->len && depth > 0) {
                if (f->s[i] == '(')
                    depth++;
                else if (f->s[i] == ')')
                    depth--;
                i++;
            }
            if (depth > 0) {
                rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: incomplete format key");
                break;
            }
            jv *v = jdict_get_str(args.u.d, f->s + ks, i - 1 - ks);
            if (!v) {
                rc = jx_fail(x, INFER_ERR_FORMAT, "KeyError: '%.*s'", (int)(i - 1 - ks), f->s + ks);
                break;
            }
            arg = *v;
            have_arg = 1;
            p.is_mapping = 1;
        }
        char flags[8] = {0};
        int nf = 0;
        while (i < f->len && strchr("-+ #0", f->s[i]) && f->s[i]) {
            if (nf < 7 && !strchr(flags, f->s[i]))
                flags[nf++] = f->s[i];
            i++;
        }
        int64_t width = -1, prec = -1;
        if (i < f->len && f->s[i] == '*') {
            jv w;
            i++;
            if ((rc = next_arg(&p, &w)) != 0)
                break;
            if (!jv_is_intlike(w)) {
                rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: * wants int");
                break;
            }
            width = w.u.i;
            if (width < 0) {
                if (nf < 7 && !strchr(flags, '-'))
                    flags[nf++] = '-';
                width = -width;
            }
        } else if (parse_digits(f->s, f->len, &i, &width)) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: width too big");
            break;
        }
        if (i < f->len && f->s[i] == '.') {
            i++;
            if (i < f->len && f->s[i] == '*') {
                jv w;
                i++;
                if ((rc = next_arg(&p, &w)) != 0)
                    break;
                if (!jv_is_intlike(w)) {
                    rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: * wants int");
                    break;
                }
                prec = w.u.i < 0 ? 0 : w.u.i;
            } else {
                if (parse_digits(f->s, f->len, &i, &prec)) {
                    rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: precision too big");
                    break;
                }
                if (prec < 0)
                    prec = 0;
            }
        }
        while (i < f->len && (f->s[i] == 'h' || f->s[i] == 'l' || f->s[i] == 'L'))
            i++;
        if (i >= f->len) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: incomplete format");
            break;
        }
        char conv = f->s[i];
        if (!strchr("sradiuoxXeEfFgGc", conv) || !conv) {
            size_t st = i;
            uint32_t cp = u8_next(f->s, f->len, &i);
            if (cp >= 0x20 && cp < 0x7f)
                rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: unsupported format character '%c' (0x%x) at index %zu",
                             (char)cp, cp, u8_count(f->s, st));
            else
                rc = jx_fail(x, INFER_ERR_FORMAT,
                             "ValueError: unsupported format character '\\x%x' (0x%x) at index %zu", cp, cp,
                             u8_count(f->s, st));
            break;
        }
        i++;
        if (!have_arg && (rc = next_arg(&p, &arg)) != 0)
            break;
        if (width > (int64_t)x->lim.max_output) {
            rc = jx_fail(x, INFER_ERR_OUT_OF_RANGE, "the template produced too much text (more than %zu bytes)",
                         x->lim.max_output);
            break;
        }
        rc = pct_one(&p, arg, conv, flags, width, prec, &b);
        run = i;
        (void)start;
    }
    if (!rc)
        rc = jbuf_put(x, &b, f->s + run, f->len - run);
    if (!rc && !p.is_mapping && ((p.tuple && p.argidx < (int64_t)p.tuple->n) || (!p.tuple && !p.single_used)))
        rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: not all arguments converted during string formatting");
    if (rc) {
        jbuf_free(&b);
        return rc;
    }
    return take(x, &b, out);
}

/* ------------------------------------------------------------------ */
/* str.format (string.Formatter, as Jinja's sandbox runs it)            */
/* ------------------------------------------------------------------ */

typedef struct fmtctx {
    jx *x;
    jargs *a;
    int64_t auto_idx;  /* next automatic index; -1 once a manual one was used */
} fmtctx;

static int is_all_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int64_t digits_value(const char *s, size_t n)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (v > (INT64_MAX - 9) / 10)
            return INT64_MAX;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Resolves a field name (arg_name then .attr / [key] parts) to a value. */
static int get_field(fmtctx *c, const char *s, size_t n, jv *out)
{
    jx *x = c->x;
    size_t i = 0;
    while (i < n && s[i] != '.' && s[i] != '[')
        i++;
    jv obj;
    if (is_all_digits(s, i)) {
        int64_t k = digits_value(s, i);
        if (k >= c->a->n)
            return jx_fail(x, INFER_ERR_FORMAT, "IndexError: tuple index out of range");
        obj = jv_retain(c->a->pos[k]);
    } else {
        int k;
        for (k = 0; k < c->a->nk; k++)
            if (c->a->kn[k]->len == i && memcmp(c->a->kn[k]->s, s, i) == 0)
                break;
        if (k == c->a->nk)
            return jx_fail(x, INFER_ERR_FORMAT, "KeyError: '%.*s'", (int)i, s);
        obj = jv_retain(c->a->kv[k]);
    }
    while (i < n) {
        jv key, next;
        int rc;
        if (s[i] == '.') {
            size_t st = ++i;
            while (i < n && s[i] != '.' && s[i] != '[')
                i++;
            if (i == st) {
                jv_release(obj);
                return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Empty attribute in format string");
            }
            if (jv_make_str(x, s + st, i - st, &key)) {
                jv_release(obj);
                return x->status;
            }
            rc = jgetattr(x, obj, key, &next);
        } else if (s[i] == '[') {
            size_t st = ++i;
            while (i < n && s[i] != ']')
                i++;
            if (i >= n) {
                jv_release(obj);
                return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Missing ']' in format string");
            }
            if (i == st) {
                jv_release(obj);
                return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Empty attribute in format string");
            }
            if (is_all_digits(s + st, i - st))
                key = jv_int(digits_value(s + st, i - st));
            else if (jv_make_str(x, s + st, i - st, &key)) {
                jv_release(obj);
                return x->status;
            }
            i++;
            if (i < n && s[i] != '.' && s[i] != '[') {
                jv_release(obj);
                jv_release(key);
                return jx_fail(x, INFER_ERR_FORMAT,
                               "ValueError: Only '.' or '[' may follow ']' in format field specifier");
            }
            rc = jgetitem(x, obj, key, &next);
        } else {
            jv_release(obj);
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Only '.' or '[' may follow ']' in format field specifier");
        }
        jv_release(key);
        jv_release(obj);
        if (rc)
            return rc;
        obj = next;
    }
    *out = obj;
    return 0;
}

static int vformat(fmtctx *c, const char *s, size_t n, int depth, jbuf *b);

/* One replacement field: s[0..n) is the text between the braces. */
static int format_field(fmtctx *c, const char *s, size_t n, int depth, jbuf *b)
{
    jx *x = c->x;
    /* the field name runs to ':' or '!' (brackets may hold either) */
    size_t i = 0;
    while (i < n && s[i] != ':' && s[i] != '!') {
        if (s[i] == '[') {
            while (i < n && s[i] != ']')
                i++;
            if (i < n)
                i++;
            continue;
        }
        i++;
    }
    size_t name_len = i;
    char conv = 0;
    if (i < n && s[i] == '!') {
        if (i + 1 >= n)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: end of string while looking for conversion specifier");
        conv = s[i + 1];
        i += 2;
        if (i < n && s[i] != ':')
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: expected ':' after conversion specifier");
    }
    const char *spec = i < n ? s + i + 1 : "";
    size_t slen = i < n ? n - i - 1 : 0;

    char numbuf[24];
    const char *name = s;
    if (name_len == 0) {
        if (c->auto_idx < 0)
            return jx_fail(x, INFER_ERR_FORMAT,
                           "ValueError: cannot switch from manual field specification to automatic field numbering");
        snprintf(numbuf, sizeof numbuf, "%lld", (long long)c->auto_idx++);
        name = numbuf;
        name_len = strlen(numbuf);
    } else if (is_all_digits(s, name_len)) {
        if (c->auto_idx > 0)
            return jx_fail(x, INFER_ERR_FORMAT,
                           "ValueError: cannot switch from manual field specification to automatic field numbering");
        c->auto_idx = -1;
    }
    jv v;
    if (get_field(c, name, name_len, &v))
        return x->status;
    jbuf conv_buf = {0};
    int rc = 0;
    if (conv) {
        if (conv == 's')
            rc = v.t == JV_UNDEF ? 0 : jv_write_str(x, v, &conv_buf);
        else if (conv == 'r')
            rc = jv_write_repr(x, v, &conv_buf);
        else if (conv == 'a')
            rc = write_ascii(x, v, &conv_buf);
        else if ((unsigned char)conv < 0x80)
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: Unknown conversion specifier %c", conv);
        else
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: Unknown conversion specifier (non-ASCII)");
        jv s2 = jv_none();
        if (!rc)
            rc = jbuf_take_str(x, &conv_buf, &s2);
        jbuf_free(&conv_buf);
        jv_release(v);
        v = s2;
    }
    /* the spec may hold replacement fields of its own */
    jbuf sb = {0};
    if (!rc && memchr(spec, '{', slen))
        rc = vformat(c, spec, slen, depth - 1, &sb);
    else if (!rc && memchr(spec, '}', slen))
        rc = vformat(c, spec, slen, depth - 1, &sb);
    if (!rc) {
        if (sb.p)
            rc = py_format_value(x, v, sb.p, sb.n, b);
        else
            rc = py_format_value(x, v, spec, slen, b);
    }
    jbuf_free(&sb);
    jv_release(v);
    return rc;
}

static int vformat(fmtctx *c, const char *s, size_t n, int depth, jbuf *b)
{
    jx *x = c->x;
    if (depth < 0)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Max string recursion exceeded");
    if (jx_charge(x, 1 + n / 64))
        return x->status;
    size_t i = 0, run = 0;
    while (i < n) {
        char ch = s[i];
        if (ch != '{' && ch != '}') {
            i++;
            continue;
        }
        if (jbuf_put(x, b, s + run, i - run))
            return x->status;
        if (ch == '}') {
            if (i + 1 < n && s[i + 1] == '}') {
                if (jbuf_putc(x, b, '}'))
                    return x->status;
                i += 2;
                run = i;
                continue;
            }
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Single '}' encountered in format string");
        }
        if (i + 1 < n && s[i + 1] == '{') {
            if (jbuf_putc(x, b, '{'))
                return x->status;
            i += 2;
            run = i;
            continue;
        }
        if (i + 1 >= n)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: Single '{' encountered in format string");
        /* the field ends at the matching brace */
        size_t st = i + 1, k = st;
        int level = 1;
        while (k < n) {
            if (s[k] == '{')
                level++;
            else if (s[k] == '}' && --level == 0)
                break;
            k++;
        }
        if (k >= n)
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: expected '}' before end of string");
        if (format_field(c, s + st, k - st, depth, b))
            return x->status;
        i = k + 1;
        run = i;
    }
    return jbuf_put(x, b, s + run, n - run);
}

int py_str_format(jx *x, jstr *fmt, jargs *a, jv *out)
{
    fmtctx c = {x, a, 0};
    jbuf b = {0};
    if (vformat(&c, fmt->s, fmt->len, 2, &b)) {
        jbuf_free(&b);
        return x->status;
    }
    return take(x, &b, out);
}
