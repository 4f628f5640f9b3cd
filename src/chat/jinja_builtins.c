/* jinja_builtins.c - Jinja's builtin filters, tests and globals, as
 * Jinja2 3.1 runs them in transformers' ImmutableSandboxedEnvironment
 * (autoescape off), with transformers' tojson (json.dumps with
 * ensure_ascii=False) and its globals raise_exception and strftime_now.
 *
 * Filters that Jinja writes as generators (map, select, reject, unique,
 * batch, slice, items, reverse) return one-pass JL_ITER lists: truthy even
 * when empty, with no len(), consumed by the first loop over them.
 * Markup is tracked only as a flag on string values (jv.sub = SUB_MARKUP,
 * set by escape and safe): it keeps escape from escaping twice and answers
 * the `escaped` test; concatenation does not escape its other operand, and
 * filters and methods return plain strings, where Jinja keeps Markup.  Not
 * supported: the random and urlize filters and the lipsum global
 * (INFER_ERR_UNSUPPORTED). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "chat/jinja_int.h"

/* jv.sub of a JV_STR that Jinja would hold as Markup. */
#define SUB_MARKUP 1
/* jv.sub of the (grouper, list) tuples of groupby (read by jinja_methods.c). */
#define SUB_GROUP 2

#define NARGS(names) ((int)(sizeof(names) / sizeof((names)[0])))

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

/* A type error "<pre><type name><post>", or the undefined's own error. */
static int fail_type(jx *x, jv v, const char *pre, const char *post)
{
    if (v.t == JV_UNDEF)
        return jv_undefined_error(x, v);
    return jx_fail(x, INFER_ERR_FORMAT, "%s%s%s", pre, jv_type_name(v), post);
}

/* Jinja's soft_str: str(v), a string kept as is (with its Markup flag). */
static int soft_str(jx *x, jv v, jv *out)
{
    if (v.t == JV_STR) {
        *out = jv_retain(v);
        return 0;
    }
    if (v.t == JV_UNDEF)
        return jv_make_str(x, "", 0, out);
    return jv_to_str(x, v, out);
}

static int want_int(jx *x, jv v, int64_t *out)
{
    if (jv_is_intlike(v)) {
        *out = v.u.i;
        return 0;
    }
    return fail_type(x, v, "TypeError: '", "' object cannot be interpreted as an integer");
}

static int put_spaces(jx *x, jbuf *b, int64_t n)
{
    static const char sp[] = "                                                                ";
    while (n > 0) {
        size_t k = n < 64 ? (size_t)n : 64;
        if (jbuf_put(x, b, sp, k))
            return x->status;
        n -= (int64_t)k;
    }
    return 0;
}

static int want_str(jx *x, jv v, const char *what)
{
    if (v.t == JV_STR)
        return 0;
    if (v.t == JV_UNDEF)
        return jv_undefined_error(x, v);
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s must be a string, not %s", what, jv_type_name(v));
}

static int new_iter(jx *x, jlist **out)
{
    *out = jlist_new(JL_ITER, 0);
    return *out ? 0 : jx_oom(x);
}

static int push(jx *x, jlist *l, jv v)
{
    if (jlist_push(l, v))
        return jx_oom(x);
    return 0;
}

static int finish_list(jx *x, int rc, jlist *l, jv *out)
{
    if (rc) {
        jv_release(jv_list(l));
        return rc;
    }
    *out = jv_list(l);
    return jx_charge(x, l->n / 8);
}

static int finish_buf(jx *x, int rc, jbuf *b, jv *out)
{
    if (!rc)
        rc = jbuf_take_str(x, b, out);
    jbuf_free(b);
    return rc;
}

static int make_tuple2(jx *x, jv a, jv b, jv *out)
{
    jlist *t = jlist_new(JL_TUPLE, 2);
    if (!t)
        return jx_oom(x);
    t->v[0] = jv_retain(a);
    t->v[1] = jv_retain(b);
    t->n = 2;
    *out = jv_list(t);
    return 0;
}

/* A jargs view of a's arguments from positional index `from` on. */
static jargs args_from(const jargs *a, int from)
{
    jargs r = *a;
    r.n = a->n > from ? a->n - from : 0;
    r.pos = a->n > from ? a->pos + from : NULL;
    return r;
}

static int arg_count_error(jx *x, const char *name, int want, int got)
{
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() takes %d positional argument%s but %d were given", name, want,
                   want == 1 ? "" : "s", got);
}

/* ------------------------------------------------------------------ */
/* Attribute getters (make_attrgetter / make_multi_attrgetter)          */
/* ------------------------------------------------------------------ */

/* The path of an attribute argument: "a.b.0" -> ["a", "b", 0]; an int
 * stays one part; None is the empty path. */
typedef struct apath {
    int n;
    jv *parts;  /* owned */
} apath;

static void apath_free(apath *p)
{
    for (int i = 0; i < p->n; i++)
        jv_release(p->parts[i]);
    free(p->parts);
    p->parts = NULL;
    p->n = 0;
}

static int apath_add(jx *x, apath *p, jv v)
{
    jv *np = realloc(p->parts, (size_t)(p->n + 1) * sizeof *np);
    if (!np) {
        jv_release(v);
        return jx_oom(x);
    }
    p->parts = np;
    p->parts[p->n++] = v;
    return 0;
}

static int all_ascii_digits(const char *s, size_t n)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int apath_parse_range(jx *x, const char *s, size_t n, apath *p)
{
    size_t st = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.')
            continue;
        const char *part = s + st;
        size_t len = i - st;
        jv v;
        if (all_ascii_digits(part, len) && len < 18) {
            int64_t k = 0;
            for (size_t j = 0; j < len; j++)
                k = k * 10 + (part[j] - '0');
            v = jv_int(k);
        } else if (jv_make_str(x, part, len, &v)) {
            return x->status;
        }
        if (apath_add(x, p, v))
            return x->status;
        st = i + 1;
    }
    return 0;
}

static int apath_parse(jx *x, jv attr, apath *p)
{
    p->n = 0;
    p->parts = NULL;
    if (attr.t == JV_NONE)
        return 0;
    if (attr.t == JV_STR)
        return apath_parse_range(x, attr.u.s->s, attr.u.s->len, p);
    return apath_add(x, p, jv_retain(attr));
}

/* Lowercases strings (Jinja's ignore_case); takes v. */
static int ignore_case(jx *x, jv v, jv *out)
{
    if (v.t != JV_STR) {
        *out = v;
        return 0;
    }
    int rc = py_str_case(x, v.u.s, CASE_LOWER, out);
    jv_release(v);
    return rc;
}

/* item[part][part]...; dflt (when not None) replaces an undefined step. */
static int apath_get(jx *x, const apath *p, jv item, jv dflt, int lower, jv *out)
{
    jv cur = jv_retain(item);
    for (int i = 0; i < p->n; i++) {
        jv next;
        int rc = jgetitem(x, cur, p->parts[i], &next);
        jv_release(cur);
        if (rc)
            return rc;
        if (dflt.t != JV_NONE && next.t == JV_UNDEF) {
            jv_release(next);
            next = jv_retain(dflt);
        }
        cur = next;
    }
    if (lower)
        return ignore_case(x, cur, out);
    *out = cur;
    return 0;
}

/* A sort key list per item: make_multi_attrgetter ("a,b" -> [item.a, item.b]). */
typedef struct mpath {
    int n;
    apath *paths;
} mpath;

static void mpath_free(mpath *m)
{
    for (int i = 0; i < m->n; i++)
        apath_free(&m->paths[i]);
    free(m->paths);
    m->paths = NULL;
    m->n = 0;
}

static int mpath_parse(jx *x, jv attr, mpath *m)
{
    m->n = 0;
    m->paths = NULL;
    size_t count = 1;
    if (attr.t == JV_STR)
        for (size_t i = 0; i < attr.u.s->len; i++)
            count += attr.u.s->s[i] == ',';
    m->paths = calloc(count, sizeof *m->paths);
    if (!m->paths)
        return jx_oom(x);
    if (attr.t != JV_STR) {
        m->n = 1;
        return apath_parse(x, attr, &m->paths[0]);
    }
    const char *s = attr.u.s->s;
    size_t n = attr.u.s->len, st = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ',')
            continue;
        m->n++;
        if (apath_parse_range(x, s + st, i - st, &m->paths[m->n - 1]))
            return x->status;
        st = i + 1;
    }
    return 0;
}

static int mpath_key(jx *x, const mpath *m, jv item, int lower, jv *out)
{
    jlist *k = jlist_new(JL_LIST, (size_t)m->n);
    if (!k)
        return jx_oom(x);
    for (int i = 0; i < m->n; i++) {
        if (apath_get(x, &m->paths[i], item, jv_none(), lower, &k->v[k->n])) {
            jv_release(jv_list(k));
            return x->status;
        }
        k->n++;
    }
    *out = jv_list(k);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Stable sort by precomputed keys                                      */
/* ------------------------------------------------------------------ */

typedef struct sorter {
    jx *x;
    const jv *keys;
    int reverse;
    int failed;
} sorter;

static int key_less(sorter *s, size_t a, size_t b)
{
    int lt = 0;
    if (s->failed)
        return 0;
    if (jx_charge(s->x, 1) ||
        (s->reverse ? jv_lt(s->x, s->keys[b], s->keys[a], &lt) : jv_lt(s->x, s->keys[a], s->keys[b], &lt)))
        s->failed = 1;
    return lt;
}

static void merge_sort(sorter *s, size_t *idx, size_t *tmp, size_t n)
{
    if (n < 2 || s->failed)
        return;
    size_t h = n / 2;
    merge_sort(s, idx, tmp, h);
    merge_sort(s, idx + h, tmp, n - h);
    size_t i = 0, j = h, o = 0;
    while (i < h && j < n) {
        if (key_less(s, idx[j], idx[i]))
            tmp[o++] = idx[j++];
        else
            tmp[o++] = idx[i++];
    }
    while (i < h)
        tmp[o++] = idx[i++];
    while (j < n)
        tmp[o++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

/* The permutation that sorts keys[0..n) stably (reverse keeps equal keys
 * in their order, as Python's sorted does). */
static int sort_order(jx *x, const jv *keys, size_t n, int reverse, size_t **order)
{
    size_t *idx = malloc((n ? n : 1) * sizeof *idx), *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return jx_oom(x);
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sorter s = {x, keys, reverse, 0};
    merge_sort(&s, idx, tmp, n);
    free(tmp);
    if (s.failed) {
        free(idx);
        return x->status;
    }
    *order = idx;
    return 0;
}

static void release_keys(jv *keys, size_t n)
{
    if (!keys)
        return;
    for (size_t i = 0; i < n; i++)
        jv_release(keys[i]);
    free(keys);
}

/* ------------------------------------------------------------------ */
/* Filters: strings                                                     */
/* ------------------------------------------------------------------ */

#define BIND(fname, names, req, slots) jargs_bind(x, fname, a, names, NARGS(names), req, slots)

static int case_filter(jx *x, const char *name, jv in, jargs *a, jv *out, int mode)
{
    jv s;
    if (a->n || a->nk)
        return arg_count_error(x, name, 1, 1 + a->n + a->nk);
    if (soft_str(x, in, &s))
        return x->status;
    int rc = py_str_case(x, s.u.s, mode, out);
    jv_release(s);
    return rc;
}

static int f_upper(jx *x, jv in, jargs *a, jv *out) { return case_filter(x, "upper", in, a, out, CASE_UPPER); }
static int f_lower(jx *x, jv in, jargs *a, jv *out) { return case_filter(x, "lower", in, a, out, CASE_LOWER); }
static int f_capitalize(jx *x, jv in, jargs *a, jv *out)
{
    return case_filter(x, "capitalize", in, a, out, CASE_CAPITALIZE);
}

static int is_title_sep(uint32_t cp)
{
    return cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || py_isspace(cp);
}

/* Jinja's title: each run of separators or of other characters, first
 * character upper-cased and the rest lower-cased. */
static int f_title(jx *x, jv in, jargs *a, jv *out)
{
    jv sv;
    if (a->n || a->nk)
        return arg_count_error(x, "title", 1, 1 + a->n + a->nk);
    if (soft_str(x, in, &sv))
        return x->status;
    const jstr *s = sv.u.s;
    jbuf b = {0};
    int rc = jx_charge(x, s->len / 16);
    size_t i = 0;
    while (!rc && i < s->len) {
        size_t st = i, k = i;
        int sep = is_title_sep(u8_next(s->s, s->len, &k));
        size_t first_end = k;
        while (k < s->len) {
            size_t t = k;
            if (is_title_sep(u8_next(s->s, s->len, &t)) != sep)
                break;
            k = t;
        }
        jstr *head = jstr_new(s->s + st, first_end - st), *tail = jstr_new(s->s + first_end, k - first_end);
        jv hu = jv_none(), tl = jv_none();
        if (!head || !tail)
            rc = jx_oom(x);
        if (!rc)
            rc = py_str_case(x, head, CASE_UPPER, &hu);
        if (!rc)
            rc = py_str_case(x, tail, CASE_LOWER, &tl);
        if (!rc)
            rc = jbuf_put(x, &b, hu.u.s->s, hu.u.s->len);
        if (!rc)
            rc = jbuf_put(x, &b, tl.u.s->s, tl.u.s->len);
        if (head)
            jv_release(jv_str(head));
        if (tail)
            jv_release(jv_str(tail));
        jv_release(hu);
        jv_release(tl);
        i = k;
    }
    jv_release(sv);
    return finish_buf(x, rc, &b, out);
}

static int f_trim(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"chars"};
    jv slots[1] = {jv_none()}, s;
    if (BIND("trim", names, 0, slots) || soft_str(x, in, &s))
        return x->status;
    int rc = py_str_strip(x, s.u.s, slots[0], 1, 1, out);
    jv_release(s);
    return rc;
}

static int f_string(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "string", 1, 1 + a->n + a->nk);
    return soft_str(x, in, out);
}

static int f_safe(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "safe", 1, 1 + a->n + a->nk);
    if (soft_str(x, in, out))
        return x->status;
    out->sub = SUB_MARKUP;
    return 0;
}

static int f_escape(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "escape", 1, 1 + a->n + a->nk);
    if (in.t == JV_STR && in.sub == SUB_MARKUP) {
        *out = jv_retain(in);
        return 0;
    }
    if (py_html_escape(x, in, out))
        return x->status;
    out->sub = SUB_MARKUP;
    return 0;
}

static int f_forceescape(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "forceescape", 1, 1 + a->n + a->nk);
    if (py_html_escape(x, in, out))
        return x->status;
    out->sub = SUB_MARKUP;
    return 0;
}

static int f_replace(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"old", "new", "count"};
    jv slots[3] = {jv_none(), jv_none(), jv_none()};
    int64_t count = -1;
    if (BIND("replace", names, 2, slots))
        return x->status;
    if (slots[2].t != JV_NONE && want_int(x, slots[2], &count))
        return x->status;
    jv s = jv_none(), o = jv_none(), n = jv_none();
    int rc = soft_str(x, in, &s);
    if (!rc)
        rc = soft_str(x, slots[0], &o);
    if (!rc)
        rc = soft_str(x, slots[1], &n);
    if (!rc)
        rc = py_str_replace(x, s.u.s, o.u.s, n.u.s, count, out);
    jv_release(s);
    jv_release(o);
    jv_release(n);
    return rc;
}

/* str.center for the center filter. */
static int f_center(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"width"};
    jv slots[1] = {jv_int(80)}, s;
    int64_t width = 80;
    if (BIND("center", names, 0, slots) || want_int(x, slots[0], &width) || soft_str(x, in, &s))
        return x->status;
    int64_t len = (int64_t)u8_count(s.u.s->s, s.u.s->len);
    if (width <= len) {
        *out = s;
        out->sub = 0;
        return 0;
    }
    int64_t marg = width - len, left = marg / 2 + (marg & width & 1);
    jbuf b = {0};
    int rc = put_spaces(x, &b, left);
    if (!rc)
        rc = jbuf_put(x, &b, s.u.s->s, s.u.s->len);
    if (!rc)
        rc = put_spaces(x, &b, marg - left);
    jv_release(s);
    return finish_buf(x, rc, &b, out);
}

static int f_indent(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"width", "first", "blank"};
    jv slots[3] = {jv_int(4), jv_bool(0), jv_bool(0)};
    if (BIND("indent", names, 0, slots))
        return x->status;
    if (in.t != JV_STR) {
        if (in.t == JV_UNDEF)
            return jv_undefined_error(x, in);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unsupported operand type(s) for +=: '%s' and 'str'",
                       jv_type_name(in));
    }
    jbuf ind = {0};
    int rc = 0;
    jv w = slots[0];
    if (w.t == JV_STR) {
        rc = jbuf_put(x, &ind, w.u.s->s, w.u.s->len);
    } else if (jv_is_intlike(w)) {
        rc = put_spaces(x, &ind, w.u.i);
    } else {
        return fail_type(x, w, "TypeError: can't multiply sequence by non-int of type '", "'");
    }
    jlist *lines = NULL;
    jstr *s2 = jstr_alloc(in.u.s->len + 1);
    if (!rc && !s2)
        rc = jx_oom(x);
    if (!rc) {
        memcpy(s2->s, in.u.s->s, in.u.s->len);
        s2->s[in.u.s->len] = '\n';
        rc = py_str_splitlines(x, s2, 0, &lines);
    }
    jbuf b = {0};
    const char *is = ind.p ? ind.p : "";
    if (!rc && jv_truthy(slots[2])) {
        for (size_t i = 0; i < lines->n && !rc; i++) {
            if (i)
                rc = jbuf_putc(x, &b, '\n') || jbuf_put(x, &b, is, ind.n) ? x->status : 0;
            if (!rc)
                rc = jbuf_put(x, &b, lines->v[i].u.s->s, lines->v[i].u.s->len);
        }
    } else if (!rc) {
        for (size_t i = 0; i < lines->n && !rc; i++) {
            const jstr *l = lines->v[i].u.s;
            if (i) {
                rc = jbuf_putc(x, &b, '\n');
                if (!rc && l->len)
                    rc = jbuf_put(x, &b, is, ind.n);
            }
            if (!rc)
                rc = jbuf_put(x, &b, l->s, l->len);
        }
    }
    jv res = jv_none();
    if (!rc)
        rc = jbuf_take_str(x, &b, &res);
    if (!rc && jv_truthy(slots[1])) {
        jbuf c = {0};
        rc = jbuf_put(x, &c, is, ind.n);
        if (!rc)
            rc = jbuf_put(x, &c, res.u.s->s, res.u.s->len);
        jv_release(res);
        res = jv_none();
        rc = finish_buf(x, rc, &c, &res);
    }
    jbuf_free(&b);
    jbuf_free(&ind);
    if (s2)
        jv_release(jv_str(s2));
    if (lines)
        jv_release(jv_list(lines));
    if (rc) {
        jv_release(res);
        return rc;
    }
    *out = res;
    return 0;
}

static int f_truncate(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"length", "killwords", "end", "leeway"};
    jv slots[4] = {jv_int(255), jv_bool(0), jv_none(), jv_none()};
    int64_t length = 255, leeway = 5, len, endlen = 3;
    if (BIND("truncate", names, 0, slots) || want_int(x, slots[0], &length))
        return x->status;
    if (slots[3].t != JV_NONE && want_int(x, slots[3], &leeway))
        return x->status;
    const char *end = "...";
    size_t end_bytes = 3;
    if (a->n > 2 || slots[2].t != JV_NONE) {
        if (want_str(x, slots[2], "end"))
            return x->status;
        end = slots[2].u.s->s;
        end_bytes = slots[2].u.s->len;
        endlen = (int64_t)u8_count(end, end_bytes);
    }
    if (length < endlen)
        return jx_fail(x, INFER_ERR_FORMAT, "AssertionError: expected length >= %lld, got %lld", (long long)endlen,
                       (long long)length);
    if (leeway < 0)
        return jx_fail(x, INFER_ERR_FORMAT, "AssertionError: expected leeway >= 0, got %lld", (long long)leeway);
    if (jv_len(x, in, &len))
        return x->status;
    if (len <= length + leeway) {
        *out = jv_retain(in);
        return 0;
    }
    if (in.t != JV_STR)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: can only concatenate %s (not \"str\") to %s",
                       jv_type_name(in), jv_type_name(in));
    const jstr *s = in.u.s;
    size_t cut = u8_offset(s->s, s->len, (size_t)(length - endlen));
    if (!jv_truthy(slots[1])) {
        /* s[:cut].rsplit(" ", 1)[0] */
        const char *sp = NULL;
        for (size_t i = cut; i-- > 0;)
            if (s->s[i] == ' ') {
                sp = s->s + i;
                break;
            }
        if (sp)
            cut = (size_t)(sp - s->s);
    }
    jbuf b = {0};
    int rc = jbuf_put(x, &b, s->s, cut);
    if (!rc)
        rc = jbuf_put(x, &b, end, end_bytes);
    return finish_buf(x, rc, &b, out);
}

static int f_wordcount(jx *x, jv in, jargs *a, jv *out)
{
    jv sv;
    if (a->n || a->nk)
        return arg_count_error(x, "wordcount", 1, 1 + a->n + a->nk);
    if (soft_str(x, in, &sv))
        return x->status;
    const jstr *s = sv.u.s;
    int64_t n = 0;
    int in_word = 0;
    size_t i = 0;
    while (i < s->len) {
        int w = py_isword(u8_next(s->s, s->len, &i));
        if (w && !in_word)
            n++;
        in_word = w;
    }
    size_t len = s->len;
    jv_release(sv);
    *out = jv_int(n);
    return jx_charge(x, len / 64);
}

/* markupsafe's striptags: comments, then tags, removed; whitespace runs
 * collapsed; the common HTML entities unescaped. */
static int unescape_entity(const char *s, size_t n, size_t *used, uint32_t *cp)
{
    static const struct {
        const char *name;
        uint32_t cp;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xa0},
                 {"raquo", 0xbb}, {"laquo", 0xab}, {"copy", 0xa9}, {"reg", 0xae}, {"hellip", 0x2026},
                 {"mdash", 0x2014}, {"ndash", 0x2013}};
    if (n < 3 || s[0] != '&')
        return 0;
    size_t semi = 1;
    while (semi < n && semi < 12 && s[semi] != ';')
        semi++;
    if (semi >= n || s[semi] != ';')
        return 0;
    if (s[1] == '#') {
        uint32_t v = 0;
        size_t i = 2;
        int hex = i < semi && (s[i] == 'x' || s[i] == 'X');
        if (hex)
            i++;
        if (i >= semi)
            return 0;
        for (; i < semi; i++) {
            char c = s[i];
            int d = -1;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f')
                d = (c | 0x20) - 'a' + 10;
            if (d < 0 || v > 0x10ffff)
                return 0;
            v = v * (hex ? 16 : 10) + (uint32_t)d;
        }
        if (v == 0 || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            v = 0xfffd;
        *cp = v;
        *used = semi + 1;
        return 1;
    }
    for (size_t k = 0; k < sizeof named / sizeof named[0]; k++)
        if (strlen(named[k].name) == semi - 1 && memcmp(s + 1, named[k].name, semi - 1) == 0) {
            *cp = named[k].cp;
            *used = semi + 1;
            return 1;
        }
    return 0;
}

static int f_striptags(jx *x, jv in, jargs *a, jv *out)
{
    jv sv;
    if (a->n || a->nk)
        return arg_count_error(x, "striptags", 1, 1 + a->n + a->nk);
    if (soft_str(x, in, &sv))
        return x->status;
    const jstr *s = sv.u.s;
    int rc = jx_charge(x, s->len / 16);
    char *t = malloc(s->len + 1);
    if (!t) {
        jv_release(sv);
        return jx_oom(x);
    }
    memcpy(t, s->s, s->len);
    size_t n = s->len;
    jv_release(sv);
    /* comments: each "<!--" with a "-->" after it */
    for (size_t from = 0;;) {
        char *st = NULL;
        for (size_t i = from; i + 4 <= n; i++)
            if (memcmp(t + i, "<!--", 4) == 0) {
                st = t + i;
                break;
            }
        if (!st)
            break;
        char *en = NULL;
        for (char *p = st; p + 3 <= t + n; p++)
            if (memcmp(p, "-->", 3) == 0) {
                en = p;
                break;
            }
        if (!en)
            break;
        size_t cut_to = (size_t)(en + 3 - t), at = (size_t)(st - t);
        memmove(st, en + 3, n - cut_to);
        n -= cut_to - at;
        from = at;
    }
    /* tags: "<" to the next ">" */
    for (size_t from = 0;;) {
        char *st = memchr(t + from, '<', n - from);
        if (!st)
            break;
        char *en = memchr(st, '>', (size_t)(t + n - st));
        if (!en)
            break;
        size_t at = (size_t)(st - t), cut_to = (size_t)(en + 1 - t);
        memmove(st, en + 1, n - cut_to);
        n -= cut_to - at;
        from = at;
    }
    /* collapse whitespace (str.split()), then unescape */
    jbuf w = {0}, b = {0};
    size_t i = 0;
    int any = 0;
    while (!rc && i < n) {
        size_t k = i;
        if (py_isspace(u8_next(t, n, &k))) {
            i = k;
            continue;
        }
        size_t st = i;
        while (i < n) {
            k = i;
            if (py_isspace(u8_next(t, n, &k)))
                break;
            i = k;
        }
        if (any)
            rc = jbuf_putc(x, &w, ' ');
        if (!rc)
            rc = jbuf_put(x, &w, t + st, i - st);
        any = 1;
    }
    free(t);
    for (size_t k = 0; !rc && k < w.n;) {
        size_t used;
        uint32_t cp;
        if (w.p[k] == '&' && unescape_entity(w.p + k, w.n - k, &used, &cp)) {
            char u[4];
            rc = jbuf_put(x, &b, u, (size_t)u8_put(u, cp));
            k += used;
        } else {
            rc = jbuf_putc(x, &b, w.p[k]);
            k++;
        }
    }
    jbuf_free(&w);
    return finish_buf(x, rc, &b, out);
}

static int f_format(jx *x, jv in, jargs *a, jv *out)
{
    jv s, args;
    if (a->n && a->nk)
        return jx_fail(x, INFER_ERR_FORMAT,
                       "FilterArgumentError: can't handle positional and keyword arguments at the same time");
    if (soft_str(x, in, &s))
        return x->status;
    if (a->nk) {
        jdict *d = jdict_new();
        if (!d) {
            jv_release(s);
            return jx_oom(x);
        }
        for (int i = 0; i < a->nk; i++)
            if (jdict_set(d, jv_retain(jv_str(a->kn[i])), jv_retain(a->kv[i]))) {
                jv_release(jv_dict(d));
                jv_release(s);
                return jx_oom(x);
            }
        args = jv_dict(d);
    } else {
        jlist *t = jlist_new(JL_TUPLE, (size_t)a->n);
        if (!t) {
            jv_release(s);
            return jx_oom(x);
        }
        for (int i = 0; i < a->n; i++)
            t->v[t->n++] = jv_retain(a->pos[i]);
        args = jv_list(t);
    }
    int rc = py_percent_format(x, s, args, out);
    jv_release(s);
    jv_release(args);
    return rc;
}

static int url_quote(jx *x, jv v, int for_qs, jbuf *b)
{
    jv s;
    if (soft_str(x, v, &s))
        return x->status;
    const jstr *p = s.u.s;
    int rc = 0;
    for (size_t i = 0; i < p->len && !rc; i++) {
        unsigned char c = (unsigned char)p->s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
            c == '-' || c == '~' || (c == '/' && !for_qs))
            rc = jbuf_putc(x, b, (char)c);
        else if (c == ' ' && for_qs)
            rc = jbuf_putc(x, b, '+');
        else
            rc = jbuf_printf(x, b, "%%%02X", c);
    }
    jv_release(s);
    return rc;
}

static int f_urlencode(jx *x, jv in, jargs *a, jv *out)
{
    jbuf b = {0};
    int rc = 0;
    if (a->n || a->nk)
        return arg_count_error(x, "urlencode", 1, 1 + a->n + a->nk);
    int iterable = in.t == JV_LIST || in.t == JV_DICT || in.t == JV_UNDEF;
    if (!iterable) {
        rc = url_quote(x, in, 0, &b);
        return finish_buf(x, rc, &b, out);
    }
    jlist *items = NULL;
    if (in.t == JV_DICT) {
        items = jlist_new(JL_LIST, in.u.d->n);
        if (!items)
            return jx_oom(x);
        for (size_t i = 0; i < in.u.d->n && !rc; i++) {
            jv t;
            rc = make_tuple2(x, in.u.d->k[i], in.u.d->v[i], &t);
            if (!rc)
                items->v[items->n++] = t;
        }
    } else {
        rc = jv_iterate(x, in, &items);
    }
    for (size_t i = 0; !rc && i < items->n; i++) {
        jlist *kv;
        if ((rc = jv_iterate(x, items->v[i], &kv)) != 0)
            break;
        if (kv->n != 2)
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: %s values to unpack (expected 2, got %zu)",
                         kv->n < 2 ? "not enough" : "too many", kv->n);
        if (!rc && i)
            rc = jbuf_putc(x, &b, '&');
        if (!rc)
            rc = url_quote(x, kv->v[0], 1, &b);
        if (!rc)
            rc = jbuf_putc(x, &b, '=');
        if (!rc)
            rc = url_quote(x, kv->v[1], 1, &b);
        jv_release(jv_list(kv));
    }
    if (items)
        jv_release(jv_list(items));
    return finish_buf(x, rc, &b, out);
}

static int f_xmlattr(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"autospace"};
    jv slots[1] = {jv_bool(1)};
    if (BIND("xmlattr", names, 0, slots))
        return x->status;
    if (in.t != JV_DICT)
        return fail_type(x, in, "AttributeError: '", "' object has no attribute 'items'");
    const jdict *d = in.u.d;
    jbuf b = {0};
    int rc = 0, n = 0;
    for (size_t i = 0; i < d->n && !rc; i++) {
        jv k = d->k[i], v = d->v[i];
        if (v.t == JV_NONE || v.t == JV_UNDEF)
            continue;
        if (k.t != JV_STR) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: expected string or bytes-like object, got '%s'",
                         jv_type_name(k));
            break;
        }
        for (size_t j = 0; j < k.u.s->len; j++) {
            char c = k.u.s->s[j];
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '/' || c == '>' ||
                c == '=') {
                jbuf r = {0};
                rc = jv_write_repr(x, k, &r);
                if (!rc)
                    rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: Invalid character in attribute name: %s",
                                 r.p ? r.p : "");
                jbuf_free(&r);
                break;
            }
        }
        jv ek = jv_none(), ev = jv_none();
        if (!rc)
            rc = py_html_escape(x, k, &ek);
        if (!rc)
            rc = py_html_escape(x, v, &ev);
        if (!rc && (n || jv_truthy(slots[0])))
            rc = jbuf_putc(x, &b, ' ');
        if (!rc)
            rc = jbuf_put(x, &b, ek.u.s->s, ek.u.s->len) || jbuf_put(x, &b, "=\"", 2) ||
                         jbuf_put(x, &b, ev.u.s->s, ev.u.s->len) || jbuf_putc(x, &b, '"')
                     ? x->status
                     : 0;
        jv_release(ek);
        jv_release(ev);
        n++;
    }
    return finish_buf(x, rc, &b, out);
}

static int f_filesizeformat(jx *x, jv in, jargs *a, jv *out);
static int to_float(jx *x, jv v, double *out, int *ok);

static int f_filesizeformat(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"binary"};
    static const char *const dec[] = {"kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
    static const char *const bin[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
    jv slots[1] = {jv_bool(0)};
    double bytes;
    int ok;
    if (BIND("filesizeformat", names, 0, slots) || to_float(x, in, &bytes, &ok))
        return x->status;
    if (!ok)
        return fail_type(x, in, "ValueError: could not convert ", " to float");
    int binary = jv_truthy(slots[0]);
    double base = binary ? 1024 : 1000;
    char buf[64];
    if (bytes == 1) {
        snprintf(buf, sizeof buf, "1 Byte");
    } else if (bytes < base) {
        if (isnan(bytes))
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: cannot convert float NaN to integer");
        snprintf(buf, sizeof buf, "%lld Bytes", (long long)bytes);
    } else {
        int i;
        double unit = base;
        for (i = 0; i < 8; i++) {
            unit = pow(base, i + 2);
            if (bytes < unit)
                break;
        }
        if (i == 8)
            i = 7;
        snprintf(buf, sizeof buf, "%.1f %s", base * bytes / unit, binary ? bin[i] : dec[i]);
    }
    return jv_make_cstr(x, buf, out);
}

/* ------------------------------------------------------------------ */
/* Filters: numbers                                                     */
/* ------------------------------------------------------------------ */

/* Strips Python whitespace (str.strip()) from both ends of s[0..*n). */
static const char *py_strip(const char *s, size_t *n)
{
    size_t a = 0, e = *n;
    while (a < e) {
        size_t k = a;
        if (!py_isspace(u8_next(s, e, &k)))
            break;
        a = k;
    }
    while (e > a) {
        size_t k = e - 1;
        while (k > a && ((unsigned char)s[k] & 0xc0) == 0x80)
            k--;
        size_t t = k;
        if (!py_isspace(u8_next(s, e, &t)))
            break;
        e = k;
    }
    *n = e - a;
    return s + a;
}

/* Python's float(str) syntax; 1 and *out on success, 0 if it is not a float. */
static int parse_py_float(const char *s, size_t n, double *out)
{
    s = py_strip(s, &n);
    char buf[512];
    size_t o = 0, i = 0;
    if (n == 0 || n >= sizeof buf)
        return 0;
    if (s[i] == '+' || s[i] == '-')
        buf[o++] = s[i++];
    const char *rest = s + i;
    size_t rn = n - i;
    static const char *const specials[] = {"inf", "infinity", "nan"};
    for (int k = 0; k < 3; k++) {
        size_t kl = strlen(specials[k]);
        if (rn == kl && strncasecmp(rest, specials[k], kl) == 0) {
            double v = k == 2 ? NAN : INFINITY;
            *out = (o && buf[0] == '-') ? -v : v;
            return 1;
        }
    }
    /* digits with single underscores between them */
    int digits = 0, prev_digit = 0;
    int seen_dot = 0, seen_exp = 0, exp_digits = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            buf[o++] = c;
            prev_digit = 1;
            if (seen_exp)
                exp_digits++;
            else
                digits++;
        } else if (c == '_') {
            if (!prev_digit || i + 1 >= n || s[i + 1] < '0' || s[i + 1] > '9')
                return 0;
            prev_digit = 0;
        } else if (c == '.' && !seen_dot && !seen_exp) {
            buf[o++] = c;
            seen_dot = 1;
            prev_digit = 0;
        } else if ((c == 'e' || c == 'E') && !seen_exp && digits) {
            buf[o++] = 'e';
            seen_exp = 1;
            prev_digit = 0;
            if (i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-'))
                buf[o++] = s[++i];
        } else {
            return 0;
        }
    }
    if (!digits || (seen_exp && !exp_digits))
        return 0;
    buf[o] = '\0';
    *out = strtod(buf, NULL);
    return 1;
}

/* Python's int(str, base); 1 on success, 0 when invalid, -1 beyond 64 bits. */
static int parse_py_int(const char *s, size_t n, int base, int64_t *out)
{
    s = py_strip(s, &n);
    size_t i = 0;
    int neg = 0;
    if (base != 0 && (base < 2 || base > 36))
        return 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    int prefixed = 0;
    if (i + 1 < n && s[i] == '0') {
        char p = (char)(s[i + 1] | 0x20);
        int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
        if (pb && (base == 0 || base == pb)) {
            base = pb;
            i += 2;
            prefixed = 1;
        }
    }
    int base0_decimal = base == 0;
    if (base == 0)
        base = 10;
    uint64_t v = 0;
    int nd = 0, prev_digit = prefixed, nonzero = 0, overflow = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '_') {
            if (!prev_digit || i + 1 >= n)
                return 0;
            prev_digit = 0;
            continue;
        }
        int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? (c | 0x20) - 'a' + 10 : 99;
        if (d >= base)
            return 0;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            overflow = 1;
        else
            v = v * (uint64_t)base + (uint64_t)d;
        nonzero |= d != 0;
        nd++;
        prev_digit = 1;
    }
    if (!nd || !prev_digit)
        return 0;
    /* base 0: a decimal with a leading zero must be all zeros */
    if (base0_decimal && !prefixed && nonzero && s[neg || s[0] == '+' ? 1 : 0] == '0')
        return 0;
    if (overflow || v > (uint64_t)INT64_MAX + (uint64_t)neg)
        return -1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

/* float(v) for the float/filesizeformat filters: *ok = 0 where Python
 * raises TypeError or ValueError. */
static int to_float(jx *x, jv v, double *out, int *ok)
{
    *ok = 1;
    switch (v.t) {
    case JV_FLOAT: *out = v.u.f; return 0;
    case JV_INT:
    case JV_BOOL: *out = (double)v.u.i; return 0;
    case JV_STR: *ok = parse_py_float(v.u.s->s, v.u.s->len, out); return 0;
    case JV_UNDEF: return jv_undefined_error(x, v);
    default: *ok = 0; return 0;
    }
}

static int too_big(jx *x)
{
    return jx_fail(x, INFER_ERR_UNSUPPORTED, "integer overflow (numbers beyond 64 bits are not supported)");
}

/* int(f) for a finite float. */
static int float_to_int(jx *x, double f, int64_t *out)
{
    double t = trunc(f);
    if (!(t < 9223372036854775808.0 && t >= -9223372036854775808.0))
        return too_big(x);
    *out = (int64_t)t;
    return 0;
}

static int f_int(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"default", "base"};
    jv slots[2] = {jv_int(0), jv_int(10)};
    if (BIND("int", names, 0, slots))
        return x->status;
    int64_t v = 0;
    switch (in.t) {
    case JV_INT:
    case JV_BOOL:
        *out = jv_int(in.u.i);
        return 0;
    case JV_FLOAT:
        if (isinf(in.u.f))
            return jx_fail(x, INFER_ERR_FORMAT, "OverflowError: cannot convert float infinity to integer");
        if (isnan(in.u.f))
            break;
        if (float_to_int(x, in.u.f, &v))
            return x->status;
        *out = jv_int(v);
        return 0;
    case JV_STR: {
        int base = 10;
        if (jv_is_intlike(slots[1]))
            base = (int)(slots[1].u.i < -1 || slots[1].u.i > 99 ? -1 : slots[1].u.i);
        else
            base = -1;
        int r = base >= 0 ? parse_py_int(in.u.s->s, in.u.s->len, base, &v) : 0;
        if (r < 0)
            return too_big(x);
        if (r > 0) {
            *out = jv_int(v);
            return 0;
        }
        double f;
        if (parse_py_float(in.u.s->s, in.u.s->len, &f) && isfinite(f)) {
            if (float_to_int(x, f, &v))
                return x->status;
            *out = jv_int(v);
            return 0;
        }
        break;
    }
    case JV_UNDEF:
        return jv_undefined_error(x, in);
    default:
        break;
    }
    *out = jv_retain(slots[0]);
    return 0;
}

static int f_float(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"default"};
    jv slots[1] = {jv_float(0.0)};
    double f;
    int ok;
    if (BIND("float", names, 0, slots) || to_float(x, in, &f, &ok))
        return x->status;
    *out = ok ? jv_float(f) : jv_retain(slots[0]);
    return 0;
}

static int f_abs(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "abs", 1, 1 + a->n + a->nk);
    if (jv_is_intlike(in)) {
        if (in.u.i == INT64_MIN)
            return too_big(x);
        *out = jv_int(in.u.i < 0 ? -in.u.i : in.u.i);
        return 0;
    }
    if (in.t == JV_FLOAT) {
        *out = jv_float(fabs(in.u.f));
        return 0;
    }
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: bad operand type for abs(): '%s'", jv_type_name(in));
}

/* Python's round(float, ndigits): correctly rounded, ties to even. */
static double round_float(double v, int64_t nd)
{
    if (!isfinite(v) || v == 0 || nd > 330)
        return v;
    char buf[720]; /* 309 integer digits, the point, 330 decimals */
    if (nd >= 0) {
        snprintf(buf, sizeof buf, "%.*f", (int)nd, v);
        return strtod(buf, NULL);
    }
    if (nd < -330)
        return copysign(0.0, v);
    int e = (int)floor(log10(fabs(v)));
    int sig = e + 1 + (int)nd; /* significant digits kept */
    if (sig <= 0) {
        /* rounds to 0 or to +-10**-nd */
        double unit = pow(10.0, (double)-nd);
        if (sig == 0 && fabs(v) > unit / 2)
            return copysign(unit, v);
        return copysign(0.0, v);
    }
    snprintf(buf, sizeof buf, "%.*e", sig - 1, v);
    return strtod(buf, NULL);
}

static int f_round(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"precision", "method"};
    jv slots[2] = {jv_int(0), jv_none()};
    int64_t prec = 0;
    if (BIND("round", names, 0, slots))
        return x->status;
    const char *method = "common";
    if (a->n > 1 || slots[1].t != JV_NONE) {
        if (slots[1].t != JV_STR || (strcmp(slots[1].u.s->s, "common") && strcmp(slots[1].u.s->s, "ceil") &&
                                     strcmp(slots[1].u.s->s, "floor")))
            return jx_fail(x, INFER_ERR_FORMAT, "FilterArgumentError: method must be common, ceil or floor");
        method = slots[1].u.s->s;
    }
    if (want_int(x, slots[0], &prec))
        return x->status;
    if (!jv_is_num(in)) {
        if (in.t == JV_UNDEF && strcmp(method, "common"))
            return jv_undefined_error(x, in);
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: type %s doesn't define __round__ method", jv_type_name(in));
    }
    if (strcmp(method, "common")) {
        double scale = pow(10.0, (double)prec), v = in.t == JV_FLOAT ? in.u.f : (double)in.u.i;
        double r = v * scale;
        if (isinf(r))
            return jx_fail(x, INFER_ERR_FORMAT, "OverflowError: cannot convert float infinity to integer");
        if (isnan(r))
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: cannot convert float NaN to integer");
        /* math.ceil/floor give an int: never a negative zero */
        r = (method[0] == 'c' ? ceil(r) : floor(r)) + 0.0;
        *out = jv_float(r / scale);
        return 0;
    }
    if (in.t != JV_FLOAT) {
        int64_t v = in.u.i;
        if (prec >= 0) {
            *out = jv_int(v);
            return 0;
        }
        /* round half to even at 10**-prec */
        if (prec < -18) {
            *out = jv_int(0);
            return 0;
        }
        int64_t unit = 1;
        for (int64_t i = 0; i < -prec; i++)
            unit *= 10;
        int64_t q = v / unit, r = v % unit;
        if (r < 0) {
            q--;
            r += unit;
        }
        if (r * 2 > unit || (r * 2 == unit && (q & 1)))
            q++;
        int64_t res;
        if (__builtin_mul_overflow(q, unit, &res))
            return too_big(x);
        *out = jv_int(res);
        return 0;
    }
    *out = jv_float(round_float(in.u.f, prec));
    return 0;
}

/* ------------------------------------------------------------------ */
/* Filters: sequences                                                   */
/* ------------------------------------------------------------------ */

static int f_length(jx *x, jv in, jargs *a, jv *out)
{
    int64_t n;
    if (a->n || a->nk)
        return arg_count_error(x, "length", 1, 1 + a->n + a->nk);
    if (jv_len(x, in, &n))
        return x->status;
    *out = jv_int(n);
    return 0;
}

static int f_list(jx *x, jv in, jargs *a, jv *out)
{
    jlist *items;
    if (a->n || a->nk)
        return arg_count_error(x, "list", 1, 1 + a->n + a->nk);
    if (jv_iterate(x, in, &items))
        return x->status;
    jlist *l = jlist_new(JL_LIST, items->n);
    if (!l) {
        jv_release(jv_list(items));
        return jx_oom(x);
    }
    for (size_t i = 0; i < items->n; i++)
        l->v[l->n++] = jv_retain(items->v[i]);
    jv_release(jv_list(items));
    return finish_list(x, 0, l, out);
}

static int f_first(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "first", 1, 1 + a->n + a->nk);
    if (in.t == JV_LIST && in.u.l->kind == JL_ITER) {
        /* a generator gives up its first item only */
        jlist *g = in.u.l;
        if (g->consumed || g->n == 0)
            return jv_make_undef(x, out, "No first item, sequence was empty.");
        *out = g->v[0];
        memmove(g->v, g->v + 1, (g->n - 1) * sizeof *g->v);
        g->n--;
        return 0;
    }
    jlist *items;
    if (jv_iterate(x, in, &items))
        return x->status;
    int rc = 0;
    if (items->n)
        *out = jv_retain(items->v[0]);
    else
        rc = jv_make_undef(x, out, "No first item, sequence was empty.");
    jv_release(jv_list(items));
    return rc;
}

static int f_last(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "last", 1, 1 + a->n + a->nk);
    if ((in.t == JV_LIST && in.u.l->kind == JL_ITER) || (in.t != JV_LIST && in.t != JV_STR && in.t != JV_DICT &&
                                                          in.t != JV_UNDEF))
        return fail_type(x, in, "TypeError: '", "' object is not reversible");
    jlist *items;
    if (jv_iterate(x, in, &items))
        return x->status;
    int rc = 0;
    if (items->n)
        *out = jv_retain(items->v[items->n - 1]);
    else
        rc = jv_make_undef(x, out, "No last item, sequence was empty.");
    jv_release(jv_list(items));
    return rc;
}

static int f_reverse(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "reverse", 1, 1 + a->n + a->nk);
    if (in.t == JV_STR) {
        const jstr *s = in.u.s;
        jstr *r = jstr_alloc(s->len);
        if (!r)
            return jx_oom(x);
        size_t i = 0;
        while (i < s->len) {
            size_t st = i;
            u8_next(s->s, s->len, &i);
            memcpy(r->s + (s->len - i), s->s + st, i - st);
        }
        *out = jv_str(r);
        return jx_charge(x, s->len / 64);
    }
    if (in.t != JV_LIST && in.t != JV_DICT && in.t != JV_UNDEF)
        return jx_fail(x, INFER_ERR_FORMAT, "FilterArgumentError: argument must be iterable");
    int was_gen = in.t == JV_LIST && in.u.l->kind == JL_ITER;
    jlist *items;
    if (jv_iterate(x, in, &items))
        return x->status;
    jlist *r = jlist_new(was_gen ? JL_LIST : JL_ITER, items->n);
    if (!r) {
        jv_release(jv_list(items));
        return jx_oom(x);
    }
    for (size_t i = items->n; i-- > 0;)
        r->v[r->n++] = jv_retain(items->v[i]);
    jv_release(jv_list(items));
    return finish_list(x, 0, r, out);
}

static int f_join(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"d", "attribute"};
    jv empty;
    if (jv_make_str(x, "", 0, &empty))
        return x->status;
    jv slots[2] = {empty, jv_none()}, sep = jv_none();
    jlist *items = NULL;
    apath path = {0, NULL};
    int rc = BIND("join", names, 0, slots);
    if (!rc)
        rc = soft_str(x, slots[0], &sep);
    if (!rc && slots[1].t != JV_NONE)
        rc = apath_parse(x, slots[1], &path);
    if (!rc)
        rc = jv_iterate(x, in, &items);
    jbuf b = {0};
    for (size_t i = 0; !rc && i < items->n; i++) {
        jv item = jv_retain(items->v[i]);
        if (path.n) {
            jv got;
            rc = apath_get(x, &path, item, jv_none(), 0, &got);
            jv_release(item);
            item = got;
            if (rc)
                break;
        }
        if (i)
            rc = jbuf_put(x, &b, sep.u.s->s, sep.u.s->len);
        if (!rc && item.t != JV_UNDEF)
            rc = jv_write_str(x, item, &b);
        jv_release(item);
    }
    if (items)
        jv_release(jv_list(items));
    apath_free(&path);
    jv_release(sep);
    jv_release(empty);
    return finish_buf(x, rc, &b, out);
}

static int f_default(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"default_value", "boolean"};
    jv empty;
    if (jv_make_str(x, "", 0, &empty))
        return x->status;
    jv slots[2] = {empty, jv_bool(0)};
    int rc = BIND("default", names, 0, slots);
    if (!rc)
        *out = jv_retain(in.t == JV_UNDEF || (jv_truthy(slots[1]) && !jv_truthy(in)) ? slots[0] : in);
    jv_release(empty);
    return rc;
}

static int f_attr(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"name"};
    jv slots[1] = {jv_none()};
    if (BIND("attr", names, 1, slots))
        return x->status;
    jv name = slots[0];
    if (in.t == JV_UNDEF)
        return jv_undefined_error(x, in);
    if (name.t != JV_STR)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: attribute name must be string, not '%s'", jv_type_name(name));
    if (name.u.s->len >= 2 && name.u.s->s[0] == '_' && name.u.s->s[1] == '_')
        return jgetattr(x, in, name, out);
    int found = 0;
    if (jattr_lookup(x, in, name.u.s->s, name.u.s->len, out, &found))
        return x->status;
    if (found)
        return 0;
    return jv_undef_missing(x, in, name, out);
}

static int f_items(jx *x, jv in, jargs *a, jv *out)
{
    jlist *g;
    if (a->n || a->nk)
        return arg_count_error(x, "items", 1, 1 + a->n + a->nk);
    if (in.t != JV_DICT && in.t != JV_UNDEF)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: Can only get item pairs from a mapping.");
    if (new_iter(x, &g))
        return x->status;
    int rc = 0;
    for (size_t i = 0; in.t == JV_DICT && i < in.u.d->n && !rc; i++) {
        jv t;
        rc = make_tuple2(x, in.u.d->k[i], in.u.d->v[i], &t);
        if (!rc)
            rc = push(x, g, t);
    }
    return finish_list(x, rc, g, out);
}

static int f_dictsort(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"case_sensitive", "by", "reverse"};
    jv slots[3] = {jv_bool(0), jv_none(), jv_bool(0)};
    if (BIND("dictsort", names, 0, slots))
        return x->status;
    int pos = 0;
    if (a->n > 1 || slots[1].t != JV_NONE) {
        if (slots[1].t == JV_STR && !strcmp(slots[1].u.s->s, "value"))
            pos = 1;
        else if (!(slots[1].t == JV_STR && !strcmp(slots[1].u.s->s, "key")))
            return jx_fail(x, INFER_ERR_FORMAT,
                           "FilterArgumentError: You can only sort by either \"key\" or \"value\"");
    }
    if (in.t != JV_DICT)
        return fail_type(x, in, "AttributeError: '", "' object has no attribute 'items'");
    const jdict *d = in.u.d;
    size_t n = d->n;
    jv *keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys)
        return jx_oom(x);
    int rc = 0, lower = !jv_truthy(slots[0]);
    for (size_t i = 0; i < n && !rc; i++) {
        jv k = jv_retain(pos ? d->v[i] : d->k[i]);
        rc = lower ? ignore_case(x, k, &keys[i]) : (keys[i] = k, 0);
    }
    size_t *order = NULL;
    if (!rc)
        rc = sort_order(x, keys, n, jv_truthy(slots[2]), &order);
    jlist *l = NULL;
    if (!rc && !(l = jlist_new(JL_LIST, n)))
        rc = jx_oom(x);
    for (size_t i = 0; !rc && i < n; i++) {
        jv t;
        rc = make_tuple2(x, d->k[order[i]], d->v[order[i]], &t);
        if (!rc)
            l->v[l->n++] = t;
    }
    free(order);
    release_keys(keys, n);
    if (!l)
        return rc;
    return finish_list(x, rc, l, out);
}

static int f_sort(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"reverse", "case_sensitive", "attribute"};
    jv slots[3] = {jv_bool(0), jv_bool(0), jv_none()};
    if (BIND("sort", names, 0, slots))
        return x->status;
    jlist *items;
    mpath m = {0, NULL};
    if (mpath_parse(x, slots[2], &m) || jv_iterate(x, in, &items)) {
        mpath_free(&m);
        return x->status;
    }
    size_t n = items->n;
    jv *keys = calloc(n ? n : 1, sizeof *keys);
    int rc = keys ? 0 : jx_oom(x);
    for (size_t i = 0; i < n && !rc; i++)
        rc = mpath_key(x, &m, items->v[i], !jv_truthy(slots[1]), &keys[i]);
    size_t *order = NULL;
    if (!rc)
        rc = sort_order(x, keys, n, jv_truthy(slots[0]), &order);
    jlist *l = NULL;
    if (!rc && !(l = jlist_new(JL_LIST, n)))
        rc = jx_oom(x);
    for (size_t i = 0; !rc && i < n; i++)
        l->v[l->n++] = jv_retain(items->v[order[i]]);
    free(order);
    release_keys(keys, n);
    mpath_free(&m);
    jv_release(jv_list(items));
    if (!l)
        return rc;
    return finish_list(x, rc, l, out);
}

static int minmax(jx *x, jv in, jargs *a, jv *out, const char *name, int want_max)
{
    static const char *const names[] = {"case_sensitive", "attribute"};
    jv slots[2] = {jv_bool(0), jv_none()};
    if (jargs_bind(x, name, a, names, 2, 0, slots))
        return x->status;
    jlist *items;
    apath p = {0, NULL};
    if (jv_iterate(x, in, &items))
        return x->status;
    if (items->n == 0) {
        jv_release(jv_list(items));
        return jv_make_undef(x, out, "No aggregated item, sequence was empty.");
    }
    int rc = apath_parse(x, slots[1], &p), lower = !jv_truthy(slots[0]);
    size_t best = 0;
    jv bestkey = jv_none();
    if (!rc)
        rc = apath_get(x, &p, items->v[0], jv_none(), lower, &bestkey);
    for (size_t i = 1; !rc && i < items->n; i++) {
        jv k;
        int better = 0;
        if ((rc = apath_get(x, &p, items->v[i], jv_none(), lower, &k)) != 0)
            break;
        rc = want_max ? jv_lt(x, bestkey, k, &better) : jv_lt(x, k, bestkey, &better);
        if (!rc && better) {
            jv_release(bestkey);
            bestkey = k;
            best = i;
        } else {
            jv_release(k);
        }
    }
    if (!rc)
        *out = jv_retain(items->v[best]);
    jv_release(bestkey);
    apath_free(&p);
    jv_release(jv_list(items));
    return rc;
}

static int f_max(jx *x, jv in, jargs *a, jv *out) { return minmax(x, in, a, out, "max", 1); }
static int f_min(jx *x, jv in, jargs *a, jv *out) { return minmax(x, in, a, out, "min", 0); }

static int f_unique(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"case_sensitive", "attribute"};
    jv slots[2] = {jv_bool(0), jv_none()};
    if (BIND("unique", names, 0, slots))
        return x->status;
    jlist *items, *g = NULL;
    apath p = {0, NULL};
    if (jv_iterate(x, in, &items))
        return x->status;
    jdict *seen = jdict_new();
    int rc = seen ? apath_parse(x, slots[1], &p) : jx_oom(x);
    if (!rc)
        rc = new_iter(x, &g);
    for (size_t i = 0; !rc && i < items->n; i++) {
        jv k;
        if ((rc = apath_get(x, &p, items->v[i], jv_none(), !jv_truthy(slots[0]), &k)) != 0)
            break;
        if (!jv_hashable(k)) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(k));
            jv_release(k);
            break;
        }
        if (jdict_get(seen, k)) {
            jv_release(k);
            continue;
        }
        if (jdict_set(seen, k, jv_none()))
            rc = jx_oom(x);
        else
            rc = push(x, g, jv_retain(items->v[i]));
    }
    if (seen)
        jv_release(jv_dict(seen));
    apath_free(&p);
    jv_release(jv_list(items));
    if (!g)
        return rc;
    return finish_list(x, rc, g, out);
}

static int f_groupby(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"attribute", "default", "case_sensitive"};
    jv slots[3] = {jv_none(), jv_none(), jv_bool(0)};
    if (BIND("groupby", names, 1, slots))
        return x->status;
    int lower = !jv_truthy(slots[2]);
    jlist *items;
    apath p = {0, NULL};
    if (apath_parse(x, slots[0], &p) || jv_iterate(x, in, &items)) {
        apath_free(&p);
        return x->status;
    }
    size_t n = items->n;
    jv *keys = calloc(n ? n : 1, sizeof *keys);
    int rc = keys ? 0 : jx_oom(x);
    for (size_t i = 0; i < n && !rc; i++)
        rc = apath_get(x, &p, items->v[i], slots[1], lower, &keys[i]);
    size_t *order = NULL;
    if (!rc)
        rc = sort_order(x, keys, n, 0, &order);
    jlist *res = NULL;
    if (!rc && !(res = jlist_new(JL_LIST, 0)))
        rc = jx_oom(x);
    for (size_t i = 0; !rc && i < n;) {
        size_t j = i + 1;
        while (j < n && jv_eq(x, keys[order[j]], keys[order[i]]))
            j++;
        jlist *members = jlist_new(JL_LIST, j - i);
        jv grouper = jv_none();
        if (!members) {
            rc = jx_oom(x);
            break;
        }
        for (size_t k = i; k < j; k++)
            members->v[members->n++] = jv_retain(items->v[order[k]]);
        if (lower)
            rc = apath_get(x, &p, members->v[0], slots[1], 0, &grouper);
        else
            grouper = jv_retain(keys[order[i]]);
        jlist *t = rc ? NULL : jlist_new(JL_TUPLE, 2);
        if (!rc && !t)
            rc = jx_oom(x);
        if (rc) {
            jv_release(jv_list(members));
            jv_release(grouper);
            break;
        }
        t->v[0] = grouper;
        t->v[1] = jv_list(members);
        t->n = 2;
        jv tv = jv_list(t);
        tv.sub = SUB_GROUP;
        rc = push(x, res, tv);
        i = j;
    }
    free(order);
    release_keys(keys, n);
    apath_free(&p);
    jv_release(jv_list(items));
    if (!res)
        return rc;
    return finish_list(x, rc, res, out);
}

static int f_sum(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"attribute", "start"};
    jv slots[2] = {jv_none(), jv_int(0)};
    if (BIND("sum", names, 0, slots))
        return x->status;
    if (slots[1].t == JV_STR)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: sum() can't sum strings [use ''.join(seq) instead]");
    jlist *items;
    apath p = {0, NULL};
    if (apath_parse(x, slots[0], &p) || jv_iterate(x, in, &items)) {
        apath_free(&p);
        return x->status;
    }
    jv acc = jv_retain(slots[1]);
    int rc = 0;
    for (size_t i = 0; i < items->n && !rc; i++) {
        jv v, r;
        if ((rc = apath_get(x, &p, items->v[i], jv_none(), 0, &v)) != 0)
            break;
        rc = jv_binop(x, OP_ADD, acc, v, &r);
        jv_release(v);
        if (!rc) {
            jv_release(acc);
            acc = r;
        }
    }
    apath_free(&p);
    jv_release(jv_list(items));
    if (rc) {
        jv_release(acc);
        return rc;
    }
    *out = acc;
    return 0;
}

static int f_batch(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"linecount", "fill_with"};
    jv slots[2] = {jv_none(), jv_none()};
    if (BIND("batch", names, 1, slots))
        return x->status;
    jv lc = slots[0];
    if (!jv_is_num(lc))
        return fail_type(x, lc, "TypeError: '", "' object cannot be interpreted as an integer");
    jlist *items, *g = NULL, *cur = NULL;
    if (jv_iterate(x, in, &items))
        return x->status;
    int rc = new_iter(x, &g);
    for (size_t i = 0; !rc && i <= items->n; i++) {
        if (!cur && !(cur = jlist_new(JL_LIST, 0))) {
            rc = jx_oom(x);
            break;
        }
        if (i == items->n)
            break;
        if (jv_eq(x, jv_int((int64_t)cur->n), lc)) {
            rc = push(x, g, jv_list(cur));
            cur = jlist_new(JL_LIST, 0);
            if (!rc && !cur)
                rc = jx_oom(x);
        }
        if (!rc)
            rc = push(x, cur, jv_retain(items->v[i]));
        if (!rc)
            rc = jx_charge(x, 1);
    }
    if (!rc && cur && cur->n) {
        if (slots[1].t != JV_NONE && (double)cur->n < (lc.t == JV_FLOAT ? lc.u.f : (double)lc.u.i)) {
            if (!jv_is_intlike(lc))
                rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: can't multiply sequence by non-int of type 'float'");
            else if ((uint64_t)(lc.u.i - (int64_t)cur->n) > x->lim.max_output / 8)
                rc = jx_fail(x, INFER_ERR_OUT_OF_RANGE, "batch: a list would be too long");
            for (int64_t k = (int64_t)cur->n; !rc && k < lc.u.i; k++)
                if (!(rc = push(x, cur, jv_retain(slots[1]))))
                    rc = jx_charge(x, 1);
        }
        if (!rc) {
            rc = push(x, g, jv_list(cur));
            cur = NULL;
        }
    }
    if (cur)
        jv_release(jv_list(cur));
    jv_release(jv_list(items));
    if (!g)
        return rc;
    return finish_list(x, rc, g, out);
}

static int f_slice(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"slices", "fill_with"};
    jv slots[2] = {jv_none(), jv_none()};
    int64_t slices = 0;
    if (BIND("slice", names, 1, slots))
        return x->status;
    jlist *items, *g = NULL;
    if (jv_iterate(x, in, &items))
        return x->status;
    int rc = want_int(x, slots[0], &slices);
    if (!rc && slices == 0)
        rc = jx_fail(x, INFER_ERR_FORMAT, "ZeroDivisionError: integer division or modulo by zero");
    if (!rc && slices > JINJA_MAX_RANGE)
        rc = jx_fail(x, INFER_ERR_OUT_OF_RANGE, "slice: too many slices (limit %d)", JINJA_MAX_RANGE);
    if (!rc)
        rc = new_iter(x, &g);
    int64_t length = (int64_t)items->n;
    if (!rc && slices > 0) {
        /* Python's floor division and modulo */
        int64_t per = length / slices, extra = length % slices, offset = 0;
        for (int64_t s = 0; s < slices && !rc; s++) {
            int64_t start = offset + s * per;
            if (s < extra)
                offset++;
            int64_t end = offset + (s + 1) * per;
            jlist *part = jlist_new(JL_LIST, 0);
            if (!part) {
                rc = jx_oom(x);
                break;
            }
            for (int64_t k = start; k < end && k < length && !rc; k++)
                rc = push(x, part, jv_retain(items->v[k]));
            if (!rc && slots[1].t != JV_NONE && s >= extra)
                rc = push(x, part, jv_retain(slots[1]));
            if (!rc)
                rc = push(x, g, jv_list(part));
            else
                jv_release(jv_list(part));
            if (!rc)
                rc = jx_charge(x, 1);
        }
    }
    jv_release(jv_list(items));
    if (!g)
        return rc;
    return finish_list(x, rc, g, out);
}

/* ------------------------------------------------------------------ */
/* Filters: map, select, reject                                         */
/* ------------------------------------------------------------------ */

static int call_filter_by_name(jx *x, jv name, jv item, jargs *a, jv *out)
{
    if (name.t != JV_STR)
        return fail_type(x, name, "TemplateRuntimeError: No filter named ", ".");
    int id = jfilter_lookup(name.u.s->s);
    if (id == -1)
        return jx_fail(x, INFER_ERR_FORMAT, "TemplateRuntimeError: No filter named '%s'.", name.u.s->s);
    if (id == -2)
        return jx_fail(x, INFER_ERR_UNSUPPORTED, "the filter '%s' is not supported", name.u.s->s);
    return jfilter_call(x, id, item, a, out);
}

static int call_test_by_name(jx *x, jv name, jv item, jargs *a, int *res)
{
    if (name.t != JV_STR)
        return fail_type(x, name, "TemplateRuntimeError: No test named ", ".");
    int id = jtest_lookup(name.u.s->s);
    if (id == -1)
        return jx_fail(x, INFER_ERR_FORMAT, "TemplateRuntimeError: No test named '%s'.", name.u.s->s);
    if (id == -2)
        return jx_fail(x, INFER_ERR_UNSUPPORTED, "the test '%s' is not supported", name.u.s->s);
    return jtest_call(x, id, item, a, res);
}

static int f_map(jx *x, jv in, jargs *a, jv *out)
{
    jlist *g, *items = NULL;
    if (new_iter(x, &g))
        return x->status;
    if (!jv_truthy(in))
        return finish_list(x, 0, g, out);
    int rc = jv_iterate(x, in, &items);
    int by_attr = -1, by_default = -1;
    for (int i = 0; i < a->nk; i++) {
        if (!strcmp(a->kn[i]->s, "attribute"))
            by_attr = i;
        else if (!strcmp(a->kn[i]->s, "default"))
            by_default = i;
    }
    if (!rc && a->n == 0 && by_attr >= 0) {
        for (int i = 0; i < a->nk && !rc; i++)
            if (i != by_attr && i != by_default)
                rc = jx_fail(x, INFER_ERR_FORMAT, "FilterArgumentError: Unexpected keyword argument '%s'",
                             a->kn[i]->s);
        apath p = {0, NULL};
        if (!rc)
            rc = apath_parse(x, a->kv[by_attr], &p);
        jv dflt = by_default >= 0 ? a->kv[by_default] : jv_none();
        for (size_t i = 0; !rc && i < items->n; i++) {
            jv v;
            rc = apath_get(x, &p, items->v[i], dflt, 0, &v);
            if (!rc)
                rc = push(x, g, v);
        }
        apath_free(&p);
    } else if (!rc) {
        if (a->n == 0) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "FilterArgumentError: map requires a filter argument");
        } else {
            jargs sub = args_from(a, 1);
            for (size_t i = 0; !rc && i < items->n; i++) {
                jv v;
                rc = call_filter_by_name(x, a->pos[0], items->v[i], &sub, &v);
                if (!rc)
                    rc = push(x, g, v);
            }
        }
    }
    if (items)
        jv_release(jv_list(items));
    return finish_list(x, rc, g, out);
}

static int select_common(jx *x, jv in, jargs *a, jv *out, int reject, int by_attr)
{
    jlist *g, *items = NULL;
    if (new_iter(x, &g))
        return x->status;
    if (!jv_truthy(in))
        return finish_list(x, 0, g, out);
    int rc = jv_iterate(x, in, &items), off = by_attr ? 1 : 0;
    apath p = {0, NULL};
    if (!rc && by_attr) {
        if (a->n < 1)
            rc = jx_fail(x, INFER_ERR_FORMAT, "FilterArgumentError: Missing parameter for attribute name");
        else
            rc = apath_parse(x, a->pos[0], &p);
    }
    jargs sub = args_from(a, off + 1);
    for (size_t i = 0; !rc && i < items->n; i++) {
        jv v = jv_retain(items->v[i]);
        int ok;
        if (by_attr) {
            jv got;
            rc = apath_get(x, &p, v, jv_none(), 0, &got);
            jv_release(v);
            if (rc)
                break;
            v = got;
        }
        if (a->n > off)
            rc = call_test_by_name(x, a->pos[off], v, &sub, &ok);
        else
            ok = jv_truthy(v);
        jv_release(v);
        if (!rc && ok != reject)
            rc = push(x, g, jv_retain(items->v[i]));
    }
    apath_free(&p);
    if (items)
        jv_release(jv_list(items));
    return finish_list(x, rc, g, out);
}

static int f_select(jx *x, jv in, jargs *a, jv *out) { return select_common(x, in, a, out, 0, 0); }
static int f_reject(jx *x, jv in, jargs *a, jv *out) { return select_common(x, in, a, out, 1, 0); }
static int f_selectattr(jx *x, jv in, jargs *a, jv *out) { return select_common(x, in, a, out, 0, 1); }
static int f_rejectattr(jx *x, jv in, jargs *a, jv *out) { return select_common(x, in, a, out, 1, 1); }

/* ------------------------------------------------------------------ */
/* Filters: tojson, pprint, wordwrap                                    */
/* ------------------------------------------------------------------ */

/* transformers' tojson(x, ensure_ascii=False, indent=None, separators=None,
 * sort_keys=False) = json.dumps with those arguments. */
static int f_tojson(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    jv slots[4] = {jv_bool(0), jv_none(), jv_none(), jv_bool(0)};
    if (BIND("tojson", names, 0, slots))
        return x->status;
    jjson_opts o;
    memset(&o, 0, sizeof o);
    o.ensure_ascii = jv_truthy(slots[0]);
    o.sort_keys = jv_truthy(slots[3]);
    o.indent = -1;
    jv ind = slots[1];
    if (ind.t == JV_STR) {
        o.indent_str = ind.u.s->s;
        o.indent_len = ind.u.s->len;
    } else if (jv_is_intlike(ind)) {
        if (ind.u.i < 0) {
            o.indent_str = "";
            o.indent_len = 0;
        } else {
            if (ind.u.i > 10000)
                return jx_fail(x, INFER_ERR_UNSUPPORTED, "tojson: an indent above 10000 is not supported");
            o.indent = (int)ind.u.i;
        }
    } else if (ind.t != JV_NONE) {
        return fail_type(x, ind, "TypeError: can't multiply sequence by non-int of type '", "'");
    }
    int pretty = o.indent >= 0 || o.indent_str;
    o.item_sep = pretty ? "," : ", ";
    o.item_sep_len = pretty ? 1 : 2;
    o.key_sep = ": ";
    o.key_sep_len = 2;
    jlist *sep = NULL;
    if (slots[2].t != JV_NONE) {
        if (jv_iterate(x, slots[2], &sep))
            return x->status;
        if (sep->n != 2 || sep->v[0].t != JV_STR || sep->v[1].t != JV_STR) {
            int rc = sep->n != 2 ? jx_fail(x, INFER_ERR_FORMAT, "ValueError: separators must be a pair of strings")
                                 : jx_fail(x, INFER_ERR_FORMAT, "TypeError: separators must be strings");
            jv_release(jv_list(sep));
            return rc;
        }
        o.item_sep = sep->v[0].u.s->s;
        o.item_sep_len = sep->v[0].u.s->len;
        o.key_sep = sep->v[1].u.s->s;
        o.key_sep_len = sep->v[1].u.s->len;
    }
    jbuf b = {0};
    int rc = jv_write_json(x, in, &o, &b);
    if (sep)
        jv_release(jv_list(sep));
    return finish_buf(x, rc, &b, out);
}

static int pp_value(jx *x, jv v, jbuf *b, int depth);

/* pprint's order for dict keys: sorted when they are all strings or all
 * numbers, else as inserted. */
static int pp_dict(jx *x, const jdict *d, jbuf *b, int depth)
{
    size_t n = d->n;
    int nums = 1, strs = 1;
    for (size_t i = 0; i < n; i++) {
        nums &= jv_is_num(d->k[i]);
        strs &= d->k[i].t == JV_STR;
    }
    size_t *order = NULL;
    if (n && (nums || strs)) {
        if (sort_order(x, d->k, n, 0, &order))
            return x->status;
    }
    int rc = jbuf_putc(x, b, '{');
    for (size_t i = 0; i < n && !rc; i++) {
        size_t k = order ? order[i] : i;
        if (i)
            rc = jbuf_put(x, b, ", ", 2);
        if (!rc)
            rc = pp_value(x, d->k[k], b, depth + 1);
        if (!rc)
            rc = jbuf_put(x, b, ": ", 2);
        if (!rc)
            rc = pp_value(x, d->v[k], b, depth + 1);
    }
    free(order);
    return rc ? rc : jbuf_putc(x, b, '}');
}

static int pp_value(jx *x, jv v, jbuf *b, int depth)
{
    if (depth > 200)
        return jx_fail(x, INFER_ERR_FORMAT, "RecursionError: maximum recursion depth exceeded");
    if (v.t == JV_DICT)
        return pp_dict(x, v.u.d, b, depth);
    if (v.t == JV_LIST && (v.u.l->kind == JL_LIST || v.u.l->kind == JL_TUPLE)) {
        const jlist *l = v.u.l;
        int tuple = l->kind == JL_TUPLE;
        int rc = jbuf_putc(x, b, tuple ? '(' : '[');
        for (size_t i = 0; i < l->n && !rc; i++) {
            if (i)
                rc = jbuf_put(x, b, ", ", 2);
            if (!rc)
                rc = pp_value(x, l->v[i], b, depth + 1);
        }
        if (!rc && tuple && l->n == 1)
            rc = jbuf_putc(x, b, ',');
        return rc ? rc : jbuf_putc(x, b, tuple ? ')' : ']');
    }
    return jv_write_repr(x, v, b);
}

static int f_pprint(jx *x, jv in, jargs *a, jv *out)
{
    if (a->n || a->nk)
        return arg_count_error(x, "pprint", 1, 1 + a->n + a->nk);
    jbuf b = {0};
    return finish_buf(x, pp_value(x, in, &b, 0), &b, out);
}

/* textwrap.wrap(line, width, expand_tabs=False, replace_whitespace=False,
 * break_long_words, break_on_hyphens) joined by wrapstring. */
typedef struct wchunk {
    size_t off, len;  /* bytes in the line */
    size_t cps;       /* code points */
} wchunk;

static int is_tw_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

static int chunk_blank(const char *s, const wchunk *c)
{
    size_t i = c->off, e = c->off + c->len;
    while (i < e)
        if (!py_isspace(u8_next(s, e, &i)))
            return 0;
    return 1;
}

/* textwrap's wordsep_re (break_on_hyphens) in PCRE2 syntax. */
static const char WORDSEP_RE[] =
    "([\\t\\n\\x0b\\x0c\\r ]+"
    "|(?<=[\\w!\"'&.,?])-{2,}(?=\\w)"
    "|[^\\t\\n\\x0b\\x0c\\r ]+?(?:"
    "-(?:(?<=[^\\d\\W]{2}-)|(?<=[^\\d\\W]-[^\\d\\W]-))(?=[^\\d\\W]-?[^\\d\\W])"
    "|(?=[\\t\\n\\x0b\\x0c\\r ]|\\z)"
    "|(?<=[\\w!\"'&.,?])(?=-{2,}\\w)))";

static int add_chunk(jx *x, wchunk **v, size_t *n, size_t *cap, const char *s, size_t off, size_t len)
{
    if (!len)
        return 0;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        wchunk *p = realloc(*v, nc * sizeof *p);
        if (!p)
            return jx_oom(x);
        *v = p;
        *cap = nc;
    }
    (*v)[*n].off = off;
    (*v)[*n].len = len;
    (*v)[*n].cps = u8_count(s + off, len);
    (*n)++;
    return jx_charge(x, 1);
}

static int split_chunks(jx *x, const char *s, size_t n, int hyphens, pcre2_code *re, wchunk **out, size_t *nout)
{
    size_t cap = 0;
    *out = NULL;
    *nout = 0;
    if (!hyphens) {
        size_t i = 0;
        while (i < n) {
            size_t st = i;
            int ws = is_tw_space(s[i]);
            while (i < n && is_tw_space(s[i]) == ws)
                i++;
            if (add_chunk(x, out, nout, &cap, s, st, i - st))
                return x->status;
        }
        return 0;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return jx_oom(x);
    size_t prev = 0, at = 0;
    int rc = 0;
    while (at <= n && !rc) {
        int m = pcre2_match(re, (PCRE2_SPTR)s, n, at, 0, md, NULL);
        if (m < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        rc = add_chunk(x, out, nout, &cap, s, prev, ms - prev);
        if (!rc)
            rc = add_chunk(x, out, nout, &cap, s, ms, me - ms);
        prev = me;
        if (me == ms) {
            /* never happens with this pattern; step over one code point */
            if (me >= n)
                break;
            size_t k = me;
            u8_next(s, n, &k);
            at = k;
        } else {
            at = me;
        }
    }
    if (!rc && prev < n)
        rc = add_chunk(x, out, nout, &cap, s, prev, n - prev);
    pcre2_match_data_free(md);
    return rc;
}

/* textwrap's _wrap_chunks; lines are appended to b separated by wrap. */
static int wrap_line(jx *x, const char *s, wchunk *ch, size_t nch, int64_t width, int break_long, int hyphens,
                     const jstr *wrap, jbuf *b, int *first_line)
{
    /* chunks are consumed from the front; ch[k] may be shortened in place */
    size_t k = 0;
    int any_line = 0, rc = 0;
    wchunk *parts = malloc((nch + 1) * sizeof *parts);
    if (!parts)
        return jx_oom(x);
    while (k < nch && !rc) {
        size_t ncur = 0;
        int64_t cur_len = 0;
        if (chunk_blank(s, &ch[k]) && any_line)
            k++;
        while (k < nch && cur_len + (int64_t)ch[k].cps <= width) {
            parts[ncur++] = ch[k];
            cur_len += (int64_t)ch[k].cps;
            k++;
        }
        if (k < nch && (int64_t)ch[k].cps > width) {
            /* _handle_long_word */
            int64_t space_left = width < 1 ? 1 : width - cur_len;
            if (break_long) {
                int64_t end = space_left;
                wchunk *c = &ch[k];
                if (hyphens && (int64_t)c->cps > space_left) {
                    /* rfind('-', 0, space_left) with a non-hyphen before it */
                    int64_t hy = -1, idx = 0;
                    size_t i = c->off;
                    while (idx < space_left && i < c->off + c->len) {
                        if (s[i] == '-')
                            hy = idx;
                        u8_next(s, c->off + c->len, &i);
                        idx++;
                    }
                    if (hy > 0) {
                        int other = 0;
                        size_t j = c->off;
                        for (int64_t q = 0; q < hy; q++) {
                            if (s[j] != '-')
                                other = 1;
                            u8_next(s, c->off + c->len, &j);
                        }
                        if (other)
                            end = hy + 1;
                    }
                }
                size_t cut = u8_offset(s + c->off, c->len, (size_t)end);
                parts[ncur].off = c->off;
                parts[ncur].len = cut;
                parts[ncur].cps = (size_t)end < c->cps ? (size_t)end : c->cps;
                ncur++;
                c->off += cut;
                c->len -= cut;
                c->cps -= parts[ncur - 1].cps;
                if (c->len == 0)
                    k++;
            } else if (ncur == 0) {
                parts[ncur++] = ch[k++];
            }
        }
        if (ncur && chunk_blank(s, &parts[ncur - 1]))
            ncur--;
        if (ncur) {
            if (!*first_line)
                rc = jbuf_put(x, b, wrap->s, wrap->len);
            *first_line = 0;
            for (size_t i = 0; i < ncur && !rc; i++)
                rc = jbuf_put(x, b, s + parts[i].off, parts[i].len);
            any_line = 1;
        }
        if (!rc)
            rc = jx_charge(x, 1);
    }
    free(parts);
    return rc;
}

static int f_wordwrap(jx *x, jv in, jargs *a, jv *out)
{
    static const char *const names[] = {"width", "break_long_words", "wrapstring", "break_on_hyphens"};
    jv slots[4] = {jv_int(79), jv_bool(1), jv_none(), jv_bool(1)};
    int64_t width = 79;
    if (BIND("wordwrap", names, 0, slots) || want_int(x, slots[0], &width))
        return x->status;
    if (in.t != JV_STR) {
        if (in.t == JV_UNDEF)
            return jv_undefined_error(x, in);
        return jx_fail(x, INFER_ERR_FORMAT, "AttributeError: '%s' object has no attribute 'splitlines'",
                       jv_type_name(in));
    }
    jv wrap = jv_none();
    int rc = 0;
    if (slots[2].t == JV_NONE)
        rc = jv_make_str(x, "\n", 1, &wrap);
    else if (!(rc = want_str(x, slots[2], "wrapstring")))
        wrap = jv_retain(slots[2]);
    if (rc)
        return rc;
    int hyphens = jv_truthy(slots[3]), break_long = jv_truthy(slots[1]);
    pcre2_code *re = NULL;
    if (hyphens) {
        int err;
        PCRE2_SIZE eoff;
        re = pcre2_compile((PCRE2_SPTR)WORDSEP_RE, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK,
                           &err, &eoff, NULL);
        if (!re) {
            jv_release(wrap);
            return jx_fail(x, INFER_ERR_FORMAT, "wordwrap: internal pattern failed to compile (%d)", err);
        }
    }
    jlist *lines = NULL;
    rc = py_str_splitlines(x, in.u.s, 0, &lines);
    jbuf b = {0};
    int first = 1;
    for (size_t i = 0; !rc && i < lines->n; i++) {
        const jstr *l = lines->v[i].u.s;
        if (width <= 0) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "ValueError: invalid width %lld (must be > 0)", (long long)width);
            break;
        }
        if (i) {
            rc = jbuf_put(x, &b, wrap.u.s->s, wrap.u.s->len);
            first = 1;
        }
        wchunk *ch = NULL;
        size_t nch = 0;
        if (!rc)
            rc = split_chunks(x, l->s, l->len, hyphens, re, &ch, &nch);
        if (!rc)
            rc = wrap_line(x, l->s, ch, nch, width, break_long, hyphens, wrap.u.s, &b, &first);
        free(ch);
    }
    if (lines)
        jv_release(jv_list(lines));
    if (re)
        pcre2_code_free(re);
    jv_release(wrap);
    return finish_buf(x, rc, &b, out);
}

/* ------------------------------------------------------------------ */
/* The filter table                                                     */
/* ------------------------------------------------------------------ */

typedef int (*filter_fn)(jx *x, jv in, jargs *a, jv *out);

static const struct {
    const char *name;
    filter_fn fn;
} FILTERS[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape}, {"filesizeformat", f_filesizeformat}, {"first", f_first}, {"float", f_float},
    {"forceescape", f_forceescape}, {"format", f_format}, {"groupby", f_groupby}, {"indent", f_indent},
    {"int", f_int}, {"items", f_items}, {"join", f_join}, {"last", f_last}, {"length", f_length},
    {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min}, {"pprint", f_pprint},
    {"reject", f_reject}, {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
    {"round", f_round}, {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr},
    {"slice", f_slice}, {"sort", f_sort}, {"string", f_string}, {"striptags", f_striptags}, {"sum", f_sum},
    {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim}, {"truncate", f_truncate},
    {"unique", f_unique}, {"upper", f_upper}, {"urlencode", f_urlencode}, {"wordcount", f_wordcount},
    {"wordwrap", f_wordwrap}, {"xmlattr", f_xmlattr},
};

/* Jinja builtins this interpreter lacks. */
static const char *const MISSING_FILTERS[] = {"random", "urlize", NULL};

int jfilter_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (!strcmp(FILTERS[i].name, name))
            return (int)i;
    for (const char *const *m = MISSING_FILTERS; *m; m++)
        if (!strcmp(*m, name))
            return -2;
    return -1;
}

int jfilter_call(jx *x, int id, jv input, jargs *a, jv *out)
{
    if (id < 0 || (size_t)id >= sizeof FILTERS / sizeof FILTERS[0])
        return jx_fail(x, INFER_ERR_FORMAT, "no such filter");
    if (jx_charge(x, 1))
        return x->status;
    return FILTERS[id].fn(x, input, a, out);
}

/* ------------------------------------------------------------------ */
/* Tests                                                                */
/* ------------------------------------------------------------------ */

typedef int (*test_fn)(jx *x, jv in, jargs *a, int *res);

static int test_args(jx *x, const char *name, jargs *a, int want, jv *arg)
{
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() got an unexpected keyword argument '%s'", name,
                       a->kn[0]->s);
    if (a->n != want) {
        if (a->n < want)
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() missing 1 required positional argument", name);
        return arg_count_error(x, name, want + 1, a->n + 1);
    }
    if (want)
        *arg = a->pos[0];
    return 0;
}

/* value % n == r */
static int mod_test(jx *x, jv in, jv n, int64_t r, int *res)
{
    jv m;
    if (jv_binop(x, OP_MOD, in, n, &m))
        return x->status;
    *res = jv_eq(x, m, jv_int(r));
    jv_release(m);
    return 0;
}

static int t_odd(jx *x, jv in, jargs *a, int *res)
{
    return test_args(x, "odd", a, 0, NULL) ? x->status : mod_test(x, in, jv_int(2), 1, res);
}

static int t_even(jx *x, jv in, jargs *a, int *res)
{
    return test_args(x, "even", a, 0, NULL) ? x->status : mod_test(x, in, jv_int(2), 0, res);
}

static int t_divisibleby(jx *x, jv in, jargs *a, int *res)
{
    jv n;
    return test_args(x, "divisibleby", a, 1, &n) ? x->status : mod_test(x, in, n, 0, res);
}

#define SIMPLE_TEST(fn, name, expr)                                 \
    static int fn(jx *x, jv in, jargs *a, int *res)                 \
    {                                                               \
        if (test_args(x, name, a, 0, NULL))                         \
            return x->status;                                       \
        *res = (expr);                                              \
        return 0;                                                   \
    }
SIMPLE_TEST(t_defined, "defined", in.t != JV_UNDEF)
SIMPLE_TEST(t_undefined, "undefined", in.t == JV_UNDEF)
SIMPLE_TEST(t_none, "none", in.t == JV_NONE)
SIMPLE_TEST(t_boolean, "boolean", in.t == JV_BOOL)
SIMPLE_TEST(t_false, "false", in.t == JV_BOOL && !in.u.i)
SIMPLE_TEST(t_true, "true", in.t == JV_BOOL && in.u.i)
SIMPLE_TEST(t_integer, "integer", in.t == JV_INT)
SIMPLE_TEST(t_float, "float", in.t == JV_FLOAT)
SIMPLE_TEST(t_string, "string", in.t == JV_STR)
SIMPLE_TEST(t_mapping, "mapping", in.t == JV_DICT)
SIMPLE_TEST(t_number, "number", jv_is_num(in))
SIMPLE_TEST(t_escaped, "escaped", in.t == JV_STR && in.sub == SUB_MARKUP)
/* len() and __getitem__: str, list, tuple, range, dict, Undefined */
SIMPLE_TEST(t_sequence, "sequence",
            in.t == JV_STR || in.t == JV_DICT || in.t == JV_UNDEF ||
                (in.t == JV_LIST && (in.u.l->kind == JL_LIST || in.u.l->kind == JL_TUPLE || in.u.l->kind == JL_RANGE)))
SIMPLE_TEST(t_iterable, "iterable", in.t == JV_STR || in.t == JV_LIST || in.t == JV_DICT || in.t == JV_UNDEF ||
                                        in.t == JV_LOOP)
/* Undefined has __call__; a cycler has none */
SIMPLE_TEST(t_callable, "callable", in.t == JV_UNDEF || in.t == JV_LOOP ||
                                        (in.t == JV_FUNC && in.u.fn->kind != JF_CYCLER))
#undef SIMPLE_TEST

static int str_predicate(jx *x, jv in, const char *method, int *res)
{
    jv s, m, r;
    int found = 0;
    if (soft_str(x, in, &s))
        return x->status;
    int rc = jattr_lookup(x, s, method, strlen(method), &m, &found);
    jv_release(s);
    if (rc)
        return rc;
    jargs none = {0};
    rc = jcall_value(x, m, &none, &r, 0);
    jv_release(m);
    if (!rc) {
        *res = jv_truthy(r);
        jv_release(r);
    }
    return rc;
}

static int t_lower(jx *x, jv in, jargs *a, int *res)
{
    return test_args(x, "lower", a, 0, NULL) ? x->status : str_predicate(x, in, "islower", res);
}

static int t_upper(jx *x, jv in, jargs *a, int *res)
{
    return test_args(x, "upper", a, 0, NULL) ? x->status : str_predicate(x, in, "isupper", res);
}

/* hash(v) works: not for lists, dicts, dict keys/items views, or tuples
 * holding one. */
static int py_hashable(jv v)
{
    if (v.t == JV_DICT)
        return 0;
    if (v.t != JV_LIST)
        return 1;
    const jlist *l = v.u.l;
    if (l->kind == JL_LIST || l->kind == JL_KEYS || l->kind == JL_ITEMS)
        return 0;
    if (l->kind == JL_TUPLE)
        for (size_t i = 0; i < l->n; i++)
            if (!py_hashable(l->v[i]))
                return 0;
    return 1;
}

static int t_filter(jx *x, jv in, jargs *a, int *res)
{
    if (test_args(x, "filter", a, 0, NULL))
        return x->status;
    if (!py_hashable(in))
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(in));
    *res = in.t == JV_STR && jfilter_lookup(in.u.s->s) != -1;
    return 0;
}

static int t_test(jx *x, jv in, jargs *a, int *res)
{
    if (test_args(x, "test", a, 0, NULL))
        return x->status;
    if (!py_hashable(in))
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(in));
    *res = in.t == JV_STR && jtest_lookup(in.u.s->s) != -1;
    return 0;
}

/* `is`: objects by identity; small ints as CPython caches them. */
static int t_sameas(jx *x, jv in, jargs *a, int *res)
{
    jv o;
    if (test_args(x, "sameas", a, 1, &o))
        return x->status;
    if (in.t != o.t) {
        *res = 0;
        return 0;
    }
    switch (in.t) {
    case JV_NONE: *res = 1; break;
    case JV_BOOL: *res = in.u.i == o.u.i; break;
    case JV_INT: *res = in.u.i == o.u.i && in.u.i >= -5 && in.u.i <= 256; break;
    case JV_FLOAT: *res = memcmp(&in.u.f, &o.u.f, sizeof in.u.f) == 0; break;
    case JV_UNDEF: *res = 0; break;
    default: *res = in.u.s == o.u.s; break;
    }
    return 0;
}

static int t_in(jx *x, jv in, jargs *a, int *res)
{
    jv seq;
    if (test_args(x, "in", a, 1, &seq))
        return x->status;
    return jv_contains(x, seq, in, res);
}

#define CMP_TEST(fn, name, op)                                      \
    static int fn(jx *x, jv in, jargs *a, int *res)                 \
    {                                                               \
        jv o;                                                       \
        if (test_args(x, name, a, 1, &o))                           \
            return x->status;                                       \
        return jv_compare(x, op, in, o, res);                       \
    }
CMP_TEST(t_eq, "eq", CMP_EQ)
CMP_TEST(t_ne, "ne", CMP_NE)
CMP_TEST(t_lt, "lt", CMP_LT)
CMP_TEST(t_le, "le", CMP_LE)
CMP_TEST(t_gt, "gt", CMP_GT)
CMP_TEST(t_ge, "ge", CMP_GE)
#undef CMP_TEST

static const struct {
    const char *name;
    test_fn fn;
} TESTS[] = {
    {"odd", t_odd}, {"even", t_even}, {"divisibleby", t_divisibleby}, {"defined", t_defined},
    {"undefined", t_undefined}, {"filter", t_filter}, {"test", t_test}, {"none", t_none},
    {"boolean", t_boolean}, {"false", t_false}, {"true", t_true}, {"integer", t_integer}, {"float", t_float},
    {"lower", t_lower}, {"upper", t_upper}, {"string", t_string}, {"mapping", t_mapping}, {"number", t_number},
    {"sequence", t_sequence}, {"iterable", t_iterable}, {"callable", t_callable}, {"sameas", t_sameas},
    {"escaped", t_escaped}, {"in", t_in}, {"==", t_eq}, {"eq", t_eq}, {"equalto", t_eq}, {"!=", t_ne},
    {"ne", t_ne}, {">", t_gt}, {"gt", t_gt}, {"greaterthan", t_gt}, {"ge", t_ge}, {">=", t_ge}, {"<", t_lt},
    {"lt", t_lt}, {"lessthan", t_lt}, {"<=", t_le}, {"le", t_le},
};

int jtest_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++)
        if (!strcmp(TESTS[i].name, name))
            return (int)i;
    return -1;
}

int jtest_call(jx *x, int id, jv input, jargs *a, int *res)
{
    if (id < 0 || (size_t)id >= sizeof TESTS / sizeof TESTS[0])
        return jx_fail(x, INFER_ERR_FORMAT, "no such test");
    *res = 0;
    if (jx_charge(x, 1))
        return x->status;
    return TESTS[id].fn(x, input, a, res);
}

/* ------------------------------------------------------------------ */
/* Globals                                                              */
/* ------------------------------------------------------------------ */

static int g_range(jx *x, jv self, jargs *a, jv *out)
{
    (void)self;
    int64_t v[3] = {0, 0, 1};
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: range() takes no keyword arguments");
    if (a->n < 1 || a->n > 3)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: range expected at %s 1 argument%s, got %d",
                       a->n < 1 ? "least" : "most", a->n < 1 ? "" : "s", a->n);
    for (int i = 0; i < a->n; i++)
        if (want_int(x, a->pos[i], &v[a->n == 1 ? 1 : i]))
            return x->status;
    int64_t start = v[0], stop = v[1], step = v[2];
    if (step == 0)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: range() arg 3 must not be zero");
    /* the length, in floating point to dodge overflow */
    double len = step > 0 ? ceil(((double)stop - (double)start) / (double)step)
                          : ceil(((double)start - (double)stop) / -(double)step);
    if (len < 0)
        len = 0;
    if (len > JINJA_MAX_RANGE)
        return jx_fail(x, INFER_ERR_OUT_OF_RANGE,
                       "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
                       JINJA_MAX_RANGE);
    jlist *l = jlist_new(JL_RANGE, (size_t)len);
    if (!l)
        return jx_oom(x);
    l->r_start = start;
    l->r_stop = stop;
    l->r_step = step;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        l->v[l->n++] = jv_int(k);
        if (l->n == (size_t)len)
            break;
    }
    return finish_list(x, 0, l, out);
}

/* dict(*args, **kwargs) into d: a mapping or pairs, then the keywords. */
static int fill_dict(jx *x, const char *fname, jargs *a, jdict *d)
{
    if (a->n > 1)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s expected at most 1 argument, got %d", fname, a->n);
    if (a->n == 1) {
        jv src = a->pos[0];
        if (src.t == JV_DICT || src.t == JV_NS) {
            for (size_t i = 0; i < src.u.d->n; i++)
                if (jdict_set(d, jv_retain(src.u.d->k[i]), jv_retain(src.u.d->v[i])))
                    return jx_oom(x);
        } else {
            jlist *items;
            if (src.t == JV_UNDEF)
                return jv_undefined_error(x, src);
            if (jv_iterate(x, src, &items))
                return x->status;
            int rc = 0;
            for (size_t i = 0; i < items->n && !rc; i++) {
                jlist *kv;
                jv it = items->v[i];
                if (it.t != JV_LIST && it.t != JV_STR && it.t != JV_DICT) {
                    rc = jx_fail(x, INFER_ERR_FORMAT,
                                 "TypeError: cannot convert dictionary update sequence element #%zu to a sequence", i);
                    break;
                }
                if ((rc = jv_iterate(x, it, &kv)) != 0)
                    break;
                if (kv->n != 2)
                    rc = jx_fail(x, INFER_ERR_FORMAT,
                                 "ValueError: dictionary update sequence element #%zu has length %zu; 2 is required", i,
                                 kv->n);
                else if (!jv_hashable(kv->v[0]))
                    rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(kv->v[0]));
                else if (jdict_set(d, jv_retain(kv->v[0]), jv_retain(kv->v[1])))
                    rc = jx_oom(x);
                jv_release(jv_list(kv));
            }
            jv_release(jv_list(items));
            if (rc)
                return rc;
        }
    }
    for (int i = 0; i < a->nk; i++)
        if (jdict_set(d, jv_retain(jv_str(a->kn[i])), jv_retain(a->kv[i])))
            return jx_oom(x);
    return jx_charge(x, d->n / 8);
}

static int g_dict(jx *x, jv self, jargs *a, jv *out)
{
    (void)self;
    jdict *d = jdict_new();
    if (!d)
        return jx_oom(x);
    if (fill_dict(x, "dict", a, d)) {
        jv_release(jv_dict(d));
        return x->status;
    }
    *out = jv_dict(d);
    return 0;
}

static int g_namespace(jx *x, jv self, jargs *a, jv *out)
{
    (void)self;
    jdict *d = jdict_new();
    if (!d)
        return jx_oom(x);
    jv ns = {JV_NS, 0, {0}};
    ns.u.d = d;
    if (fill_dict(x, "dict", a, d)) {
        jv_release(ns);
        return x->status;
    }
    /* every namespace is listed so that the end of the rendering can break
     * reference cycles through it */
    if (!x->namespaces && !(x->namespaces = jlist_new(JL_LIST, 0))) {
        jv_release(ns);
        return jx_oom(x);
    }
    if (jlist_push(x->namespaces, jv_retain(ns))) {
        jv_release(ns);
        return jx_oom(x);
    }
    *out = ns;
    return 0;
}

static int g_cycler(jx *x, jv self, jargs *a, jv *out)
{
    (void)self;
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: Cycler.__init__() got an unexpected keyword argument '%s'",
                       a->kn[0]->s);
    if (a->n == 0)
        return jx_fail(x, INFER_ERR_FORMAT, "RuntimeError: at least one item has to be provided");
    jlist *items = jlist_new(JL_TUPLE, (size_t)a->n);
    jfunc *f = items ? jfunc_new(JF_CYCLER, "cycler") : NULL;
    if (!f) {
        if (items)
            jv_release(jv_list(items));
        return jx_oom(x);
    }
    for (int i = 0; i < a->n; i++)
        items->v[items->n++] = jv_retain(a->pos[i]);
    f->self = jv_list(items);
    *out = (jv){JV_FUNC, 0, {0}};
    out->u.fn = f;
    return 0;
}

static int g_joiner(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"sep"};
    (void)self;
    jv dflt;
    if (jv_make_str(x, ", ", 2, &dflt))
        return x->status;
    jv slots[1] = {dflt};
    if (BIND("Joiner.__init__", names, 0, slots)) {
        jv_release(dflt);
        return x->status;
    }
    jfunc *f = jfunc_new(JF_JOINER, "joiner");
    if (!f) {
        jv_release(dflt);
        return jx_oom(x);
    }
    f->extra = jv_retain(slots[0]);
    jv_release(dflt);
    *out = (jv){JV_FUNC, 0, {0}};
    out->u.fn = f;
    return 0;
}

static int g_raise_exception(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"message"};
    (void)self;
    (void)out;
    jv slots[1] = {jv_none()}, s;
    if (BIND("raise_exception", names, 1, slots) || soft_str(x, slots[0], &s))
        return x->status;
    /* the evaluator reports "raise_exception: " messages as they are */
    int rc = jx_fail(x, INFER_ERR_INVALID_ARGUMENT, "raise_exception: %s", s.u.s->s);
    jv_release(s);
    return rc;
}

/* datetime.now().strftime(fmt): local time; %f is the microseconds, %z
 * and %Z are empty for a naive datetime. */
static int g_strftime_now(jx *x, jv self, jargs *a, jv *out)
{
    static const char *const names[] = {"format"};
    (void)self;
    jv slots[1] = {jv_none()};
    if (BIND("strftime_now", names, 1, slots) || want_str(x, slots[0], "format"))
        return x->status;
    const jstr *f = slots[0].u.s;
    if (memchr(f->s, '\0', f->len))
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: embedded null character");
    struct timeval tv;
    gettimeofday(&tv, NULL);
    time_t now = tv.tv_sec;
    struct tm tm;
    if (!localtime_r(&now, &tm))
        return jx_fail(x, INFER_ERR_FORMAT, "OSError: localtime failed");
    /* rewrite %f, %z, %Z first */
    jbuf pre = {0};
    int rc = 0;
    for (size_t i = 0; i < f->len && !rc; i++) {
        if (f->s[i] == '%' && i + 1 < f->len) {
            char c = f->s[i + 1];
            if (c == 'f') {
                rc = jbuf_printf(x, &pre, "%06ld", (long)tv.tv_usec);
                i++;
                continue;
            }
            if (c == 'z' || c == 'Z') {
                i++;
                continue;
            }
            rc = jbuf_put(x, &pre, f->s + i, 2);
            i++;
            continue;
        }
        rc = jbuf_putc(x, &pre, f->s[i]);
    }
    if (rc) {
        jbuf_free(&pre);
        return rc;
    }
    if (!pre.p) {
        jbuf_free(&pre);
        return jv_make_str(x, "", 0, out);
    }
    size_t cap = pre.n * 4 + 64;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf) {
            jbuf_free(&pre);
            return jx_oom(x);
        }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t n = strftime(buf, cap, pre.p, &tm);
#pragma GCC diagnostic pop
        if (n > 0 || cap > 65536) {
            rc = jv_make_str(x, buf, n, out);
            free(buf);
            break;
        }
        free(buf);
        cap *= 4;
    }
    jbuf_free(&pre);
    return rc;
}

/* Random text: not supported (it exists, so `lipsum is defined` holds). */
static int g_lipsum(jx *x, jv self, jargs *a, jv *out)
{
    (void)self;
    (void)a;
    (void)out;
    return jx_fail(x, INFER_ERR_UNSUPPORTED, "lipsum() is not supported");
}

static const struct {
    const char *name;
    jbuiltin_fn fn;
} GLOBALS[] = {
    {"range", g_range}, {"dict", g_dict}, {"namespace", g_namespace}, {"cycler", g_cycler},
    {"joiner", g_joiner}, {"raise_exception", g_raise_exception}, {"strftime_now", g_strftime_now},
    {"lipsum", g_lipsum},
};

int jglobal_lookup(jx *x, const char *name, size_t n, jv *out)
{
    for (size_t i = 0; i < sizeof GLOBALS / sizeof GLOBALS[0]; i++) {
        if (strlen(GLOBALS[i].name) != n || memcmp(GLOBALS[i].name, name, n) != 0)
            continue;
        jfunc *f = jfunc_new(JF_BUILTIN, GLOBALS[i].name);
        if (!f) {
            jx_oom(x);
            return 1;
        }
        f->fn = GLOBALS[i].fn;
        *out = (jv){JV_FUNC, 0, {0}};
        out->u.fn = f;
        return 1;
    }
    return 0;
}
