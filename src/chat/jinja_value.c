/* jinja_value.c - values: memory, dicts, str()/repr(), comparisons,
 * arithmetic and JSON, all with Python's semantics. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

/* ------------------------------------------------------------------ */
/* The rendering's error, budget and buffers                            */
/* ------------------------------------------------------------------ */

int jx_vfail(jx *x, int status, const char *fmt, va_list ap)
{
    if (x->status)
        return x->status;
    x->status = status;
    vsnprintf(x->msg, sizeof x->msg, fmt, ap);
    return status;
}

int jx_fail(jx *x, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = jx_vfail(x, status, fmt, ap);
    va_end(ap);
    return rc;
}

int jx_oom(jx *x) { return jx_fail(x, INFER_ERR_OUT_OF_MEMORY, "out of memory"); }

int jx_charge(jx *x, uint64_t n)
{
    x->steps += n;
    if (x->steps > x->lim.max_steps)
        return jx_fail(x, INFER_ERR_OUT_OF_RANGE,
                       "the template ran for too long (more than %llu steps)",
                       (unsigned long long)x->lim.max_steps);
    return 0;
}

int jbuf_put(jx *x, jbuf *b, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (n > x->lim.max_output || x->out_total > x->lim.max_output - n)
        return jx_fail(x, INFER_ERR_OUT_OF_RANGE, "the template produced too much text (more than %zu bytes)",
                       x->lim.max_output);
    if (b->cap - b->n <= n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n <= n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return jx_oom(x);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    x->out_total += n;
    return 0;
}

int jbuf_puts(jx *x, jbuf *b, const char *s) { return jbuf_put(x, b, s, strlen(s)); }

int jbuf_putc(jx *x, jbuf *b, char c) { return jbuf_put(x, b, &c, 1); }

int jbuf_printf(jx *x, jbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return jx_fail(x, INFER_ERR_FORMAT, "formatting failed");
    if ((size_t)n >= sizeof tmp)
        n = (int)sizeof tmp - 1;
    return jbuf_put(x, b, tmp, (size_t)n);
}

int jbuf_take_str(jx *x, jbuf *b, jv *out)
{
    int rc = jv_make_str(x, b->p ? b->p : "", b->n, out);
    b->n = 0;
    return rc;
}

void jbuf_free(jbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ------------------------------------------------------------------ */
/* Memory                                                               */
/* ------------------------------------------------------------------ */

jstr *jstr_alloc(size_t n)
{
    if (n > SIZE_MAX - sizeof(jstr) - 1)
        return NULL;
    jstr *s = malloc(sizeof *s + n + 1);
    if (!s)
        return NULL;
    s->rc = 1;
    s->len = n;
    s->s[n] = '\0';
    return s;
}

jstr *jstr_new(const char *p, size_t n)
{
    jstr *s = jstr_alloc(n);
    if (s && n)
        memcpy(s->s, p, n);
    return s;
}

int jv_make_str(jx *x, const char *s, size_t n, jv *out)
{
    jstr *js = jstr_new(s, n);
    if (!js)
        return jx_oom(x);
    *out = jv_str(js);
    return 0;
}

int jv_make_cstr(jx *x, const char *s, jv *out) { return jv_make_str(x, s, strlen(s), out); }

jlist *jlist_new(int kind, size_t cap)
{
    jlist *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->rc = 1;
    l->kind = (uint8_t)kind;
    if (cap) {
        l->v = malloc(cap * sizeof *l->v);
        if (!l->v) {
            free(l);
            return NULL;
        }
        l->cap = cap;
    }
    return l;
}

int jlist_push(jlist *l, jv v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *p = realloc(l->v, cap * sizeof *p);
        if (!p) {
            jv_release(v);
            return -1;
        }
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

jdict *jdict_new(void)
{
    jdict *d = calloc(1, sizeof *d);
    if (d)
        d->rc = 1;
    return d;
}

jfunc *jfunc_new(int kind, const char *name)
{
    jfunc *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->rc = 1;
    f->kind = kind;
    f->name = name;
    f->self = jv_none();
    f->extra = jv_none();
    f->caller = jv_none();
    return f;
}

jv jv_retain(jv v)
{
    switch (v.t) {
    case JV_STR: v.u.s->rc++; break;
    case JV_UNDEF: if (v.u.s) v.u.s->rc++; break;
    case JV_LIST: v.u.l->rc++; break;
    case JV_DICT: case JV_NS: v.u.d->rc++; break;
    case JV_FUNC: v.u.fn->rc++; break;
    case JV_LOOP: v.u.lp->rc++; break;
    default: break;
    }
    return v;
}

/* Drops one reference; objects whose count reaches zero are freed with an
 * explicit work list, so that deeply nested values cannot overflow the
 * stack. */
typedef struct relstack {
    jv *v;
    size_t n, cap;
    jv local[32];
} relstack;

static void rel_push(relstack *st, jv v)
{
    if (v.t < JV_STR && !(v.t == JV_UNDEF && v.u.s))
        return;
    if (st->n == st->cap) {
        size_t cap = st->cap * 2;
        jv *p;
        if (st->v == st->local) {
            p = malloc(cap * sizeof *p);
            if (p)
                memcpy(p, st->local, st->n * sizeof *p);
        } else {
            p = realloc(st->v, cap * sizeof *p);
        }
        if (!p)
            return; /* out of memory while freeing: leak rather than crash */
        st->v = p;
        st->cap = cap;
    }
    st->v[st->n++] = v;
}

static void free_object(relstack *st, jv v)
{
    switch (v.t) {
    case JV_STR:
    case JV_UNDEF:
        free(v.u.s);
        break;
    case JV_LIST: {
        jlist *l = v.u.l;
        for (size_t i = 0; i < l->n; i++)
            rel_push(st, l->v[i]);
        free(l->v);
        free(l);
        break;
    }
    case JV_DICT:
    case JV_NS: {
        jdict *d = v.u.d;
        for (size_t i = 0; i < d->n; i++) {
            rel_push(st, d->k[i]);
            rel_push(st, d->v[i]);
        }
        free(d->k);
        free(d->v);
        free(d->idx);
        free(d);
        break;
    }
    case JV_FUNC: {
        jfunc *f = v.u.fn;
        rel_push(st, f->self);
        rel_push(st, f->extra);
        rel_push(st, f->caller);
        free(f);
        break;
    }
    case JV_LOOP: {
        jloop *lp = v.u.lp;
        if (lp->items)
            rel_push(st, jv_list(lp->items));
        if (lp->has_after)
            rel_push(st, lp->after);
        rel_push(st, lp->before);
        rel_push(st, lp->current);
        if (lp->has_last_changed)
            rel_push(st, lp->last_changed);
        free(lp);
        break;
    }
    default:
        break;
    }
}

static int drop_ref(jv v)
{
    switch (v.t) {
    case JV_STR: return --v.u.s->rc == 0;
    case JV_UNDEF: return v.u.s && --v.u.s->rc == 0;
    case JV_LIST: return --v.u.l->rc == 0;
    case JV_DICT: case JV_NS: return --v.u.d->rc == 0;
    case JV_FUNC: return --v.u.fn->rc == 0;
    case JV_LOOP: return --v.u.lp->rc == 0;
    default: return 0;
    }
}

void jv_release(jv v)
{
    if (!drop_ref(v))
        return;
    if (v.t == JV_STR || v.t == JV_UNDEF) {
        free(v.u.s);
        return;
    }
    relstack st;
    st.v = st.local;
    st.n = 0;
    st.cap = sizeof st.local / sizeof st.local[0];
    free_object(&st, v);
    while (st.n > 0) {
        jv c = st.v[--st.n];
        if (drop_ref(c))
            free_object(&st, c);
    }
    if (st.v != st.local)
        free(st.v);
}

void jfunc_release(jfunc *f) { jv v = {JV_FUNC, 0, {0}}; v.u.fn = f; jv_release(v); }
void jloop_release(jloop *lp) { jv v = {JV_LOOP, 0, {0}}; v.u.lp = lp; jv_release(v); }

/* ------------------------------------------------------------------ */
/* Dicts (insertion ordered, Python key equality)                       */
/* ------------------------------------------------------------------ */

int jv_hashable(jv v)
{
    if (v.t == JV_DICT)
        return 0;
    if (v.t == JV_LIST) {
        if (v.u.l->kind != JL_TUPLE)
            return v.u.l->kind == JL_ITER; /* iterators hash by identity */
        for (size_t i = 0; i < v.u.l->n; i++)
            if (!jv_hashable(v.u.l->v[i]))
                return 0;
    }
    return 1;
}

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t jv_hash(jv v, int depth)
{
    switch (v.t) {
    case JV_NONE: return 0x5bd1e995;
    case JV_UNDEF: return 0x27d4eb2f;
    case JV_BOOL:
    case JV_INT: return mix64((uint64_t)v.u.i);
    case JV_FLOAT:
        if (v.u.f == floor(v.u.f) && fabs(v.u.f) < 9.2e18)
            return mix64((uint64_t)(int64_t)v.u.f);
        {
            uint64_t bits;
            double f = v.u.f == 0 ? 0.0 : v.u.f;
            memcpy(&bits, &f, sizeof bits);
            return mix64(bits);
        }
    case JV_STR: return hash_bytes(v.u.s->s, v.u.s->len);
    case JV_LIST:
        if (v.u.l->kind == JL_TUPLE && depth < 64) {
            uint64_t h = 0x345678;
            for (size_t i = 0; i < v.u.l->n; i++)
                h = mix64(h ^ jv_hash(v.u.l->v[i], depth + 1));
            return h;
        }
        return mix64((uint64_t)(uintptr_t)v.u.l);
    default:
        return mix64((uint64_t)(uintptr_t)v.u.d);
    }
}

static int num_cmp(jv a, jv b); /* -1, 0, 1, or 2 when unordered (NaN) */
static int eq_depth(jv a, jv b, int depth);

static int key_eq(jv a, jv b) { return eq_depth(a, b, 0); }

static int dict_reindex(jdict *d, size_t cap)
{
    uint32_t *idx = calloc(cap, sizeof *idx);
    if (!idx)
        return -1;
    for (size_t i = 0; i < d->n; i++) {
        size_t h = (size_t)jv_hash(d->k[i], 0) & (cap - 1);
        while (idx[h])
            h = (h + 1) & (cap - 1);
        idx[h] = (uint32_t)(i + 1);
    }
    free(d->idx);
    d->idx = idx;
    d->idx_cap = cap;
    return 0;
}

static long dict_find(const jdict *d, jv k)
{
    if (d->idx) {
        size_t h = (size_t)jv_hash(k, 0) & (d->idx_cap - 1);
        while (d->idx[h]) {
            size_t i = d->idx[h] - 1;
            if (key_eq(d->k[i], k))
                return (long)i;
            h = (h + 1) & (d->idx_cap - 1);
        }
        return -1;
    }
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(d->k[i], k))
            return (long)i;
    return -1;
}

jv *jdict_get(const jdict *d, jv k)
{
    long i = dict_find(d, k);
    return i < 0 ? NULL : &d->v[i];
}

jv *jdict_get_str(const jdict *d, const char *k, size_t n)
{
    if (d->idx) {
        size_t h = (size_t)hash_bytes(k, n) & (d->idx_cap - 1);
        while (d->idx[h]) {
            size_t i = d->idx[h] - 1;
            if (d->k[i].t == JV_STR && d->k[i].u.s->len == n && memcmp(d->k[i].u.s->s, k, n) == 0)
                return &d->v[i];
            h = (h + 1) & (d->idx_cap - 1);
        }
        return NULL;
    }
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s->len == n && memcmp(d->k[i].u.s->s, k, n) == 0)
            return &d->v[i];
    return NULL;
}

int jdict_set(jdict *d, jv k, jv v)
{
    long i = dict_find(d, k);
    if (i >= 0) {
        jv_release(k);
        jv_release(d->v[i]);
        d->v[i] = v;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *nk = realloc(d->k, cap * sizeof *nk);
        if (!nk)
            goto oom;
        d->k = nk;
        jv *nv = realloc(d->v, cap * sizeof *nv);
        if (!nv)
            goto oom;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
    if (d->n > 8 && d->n * 2 > d->idx_cap) {
        size_t cap = 32;
        while (cap < d->n * 4)
            cap *= 2;
        if (dict_reindex(d, cap) != 0) {
            d->n--;
            goto oom;
        }
    } else if (d->idx) {
        size_t h = (size_t)jv_hash(k, 0) & (d->idx_cap - 1);
        while (d->idx[h])
            h = (h + 1) & (d->idx_cap - 1);
        d->idx[h] = (uint32_t)d->n;
    }
    return 0;
oom:
    jv_release(k);
    jv_release(v);
    return -1;
}

void jdict_clear(jdict *d)
{
    size_t n = d->n;
    jv *k = d->k, *v = d->v;
    d->n = d->cap = 0;
    d->k = d->v = NULL;
    free(d->idx);
    d->idx = NULL;
    d->idx_cap = 0;
    for (size_t i = 0; i < n; i++) {
        jv_release(k[i]);
        jv_release(v[i]);
    }
    free(k);
    free(v);
}

/* ------------------------------------------------------------------ */
/* Types, truth, str and repr                                           */
/* ------------------------------------------------------------------ */

const char *jv_type_name(jv v)
{
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST:
        switch (v.u.l->kind) {
        case JL_TUPLE: return "tuple";
        case JL_ITER: return "generator";
        case JL_ITEMS: return "dict_items";
        case JL_KEYS: return "dict_keys";
        case JL_VALUES: return "dict_values";
        case JL_RANGE: return "range";
        default: return "list";
        }
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_FUNC:
        switch (v.u.fn->kind) {
        case JF_MACRO: return "Macro";
        case JF_CYCLER: return "Cycler";
        case JF_JOINER: return "Joiner";
        case JF_METHOD: return "builtin_function_or_method";
        default: return "function";
        }
    case JV_LOOP: return "LoopContext";
    default: return "object";
    }
}

int jv_truthy(jv v)
{
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len != 0;
    case JV_LIST: return v.u.l->kind == JL_ITER || v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

/* Python's repr(float): the shortest string that reads back the same,
 * fixed notation for exponents in [-4, 16), else scientific. */
void py_float_repr(double f, char *buf, size_t cap)
{
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    if (f == 0) {
        snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = tmp;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    char out[64];
    int o = 0;
    if (neg)
        out[o++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -exp10 - 1; i++)
                out[o++] = '0';
            for (int i = 0; i < nd; i++)
                out[o++] = digits[i];
        } else {
            for (int i = 0; i <= exp10; i++)
                out[o++] = i < nd ? digits[i] : '0';
            out[o++] = '.';
            if (nd > exp10 + 1) {
                for (int i = exp10 + 1; i < nd; i++)
                    out[o++] = digits[i];
            } else {
                out[o++] = '0';
            }
        }
        out[o] = '\0';
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++)
                out[o++] = digits[i];
        }
        out[o] = '\0';
        char e[16];
        int ae = exp10 < 0 ? -exp10 : exp10; /* a double's exponent has at most 3 digits */
        snprintf(e, sizeof e, "e%c%02d", exp10 < 0 ? '-' : '+', ae > 999 ? 999 : ae);
        strcat(out, e);
    }
    snprintf(buf, cap, "%s", out);
}

static int write_str_repr(jx *x, const char *s, size_t n, jbuf *b)
{
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    int rc = jbuf_putc(x, b, q);
    size_t i = 0;
    while (!rc && i < n) {
        size_t st = i;
        uint32_t c = u8_next(s, n, &i);
        char tmp[16];
        if (c == (uint32_t)q || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            rc = jbuf_put(x, b, tmp, 2);
        } else if (c == '\n') {
            rc = jbuf_put(x, b, "\\n", 2);
        } else if (c == '\r') {
            rc = jbuf_put(x, b, "\\r", 2);
        } else if (c == '\t') {
            rc = jbuf_put(x, b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            rc = jbuf_puts(x, b, tmp);
        } else if (c < 0x80 || py_isprintable(c)) {
            rc = jbuf_put(x, b, s + st, i - st);
        } else {
            if (c < 0x100)
                snprintf(tmp, sizeof tmp, "\\x%02x", c);
            else if (c < 0x10000)
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
            else
                snprintf(tmp, sizeof tmp, "\\U%08x", c);
            rc = jbuf_puts(x, b, tmp);
        }
    }
    return rc ? rc : jbuf_putc(x, b, q);
}

static int write_value(jx *x, jv v, jbuf *b, int repr, int depth);

static int write_items(jx *x, const jlist *l, jbuf *b, int depth)
{
    for (size_t i = 0; i < l->n; i++) {
        if (i && jbuf_put(x, b, ", ", 2))
            return x->status;
        if (write_value(x, l->v[i], b, 1, depth + 1))
            return x->status;
    }
    return 0;
}

static int write_dict(jx *x, const jdict *d, jbuf *b, int depth)
{
    if (jbuf_putc(x, b, '{'))
        return x->status;
    for (size_t i = 0; i < d->n; i++) {
        if (i && jbuf_put(x, b, ", ", 2))
            return x->status;
        if (write_value(x, d->k[i], b, 1, depth + 1) || jbuf_put(x, b, ": ", 2) ||
            write_value(x, d->v[i], b, 1, depth + 1))
            return x->status;
    }
    return jbuf_putc(x, b, '}');
}

static int write_value(jx *x, jv v, jbuf *b, int repr, int depth)
{
    char tmp[64];
    if (depth > 200)
        return jx_fail(x, INFER_ERR_FORMAT, "maximum recursion depth exceeded while getting the repr of an object");
    switch (v.t) {
    case JV_UNDEF:
        return repr ? jbuf_puts(x, b, "Undefined") : 0;
    case JV_NONE:
        return jbuf_puts(x, b, "None");
    case JV_BOOL:
        return jbuf_puts(x, b, v.u.i ? "True" : "False");
    case JV_INT:
        return jbuf_printf(x, b, "%lld", (long long)v.u.i);
    case JV_FLOAT:
        py_float_repr(v.u.f, tmp, sizeof tmp);
        return jbuf_puts(x, b, tmp);
    case JV_STR:
        if (repr)
            return write_str_repr(x, v.u.s->s, v.u.s->len, b);
        return jbuf_put(x, b, v.u.s->s, v.u.s->len);
    case JV_LIST: {
        const jlist *l = v.u.l;
        if (jx_charge(x, l->n / 8))
            return x->status;
        switch (l->kind) {
        case JL_TUPLE:
            if (jbuf_putc(x, b, '(') || write_items(x, l, b, depth))
                return x->status;
            if (l->n == 1 && jbuf_putc(x, b, ','))
                return x->status;
            return jbuf_putc(x, b, ')');
        case JL_ITER:
            return jbuf_puts(x, b, "<generator object>");
        case JL_RANGE:
            if (l->r_step == 1)
                return jbuf_printf(x, b, "range(%lld, %lld)", (long long)l->r_start, (long long)l->r_stop);
            return jbuf_printf(x, b, "range(%lld, %lld, %lld)", (long long)l->r_start, (long long)l->r_stop,
                               (long long)l->r_step);
        case JL_ITEMS:
        case JL_KEYS:
        case JL_VALUES:
            if (jbuf_puts(x, b, l->kind == JL_ITEMS ? "dict_items([" : l->kind == JL_KEYS ? "dict_keys([" : "dict_values([") ||
                write_items(x, l, b, depth))
                return x->status;
            return jbuf_puts(x, b, "])");
        default:
            if (jbuf_putc(x, b, '[') || write_items(x, l, b, depth))
                return x->status;
            return jbuf_putc(x, b, ']');
        }
    }
    case JV_DICT:
        if (jx_charge(x, v.u.d->n / 8))
            return x->status;
        return write_dict(x, v.u.d, b, depth);
    case JV_NS:
        if (jbuf_puts(x, b, "<Namespace ") || write_dict(x, v.u.d, b, depth))
            return x->status;
        return jbuf_putc(x, b, '>');
    case JV_FUNC:
        switch (v.u.fn->kind) {
        case JF_MACRO:
            if (v.u.fn->is_caller)
                return jbuf_puts(x, b, "<Macro 'caller'>");
            return jbuf_printf(x, b, "<Macro '%s'>", v.u.fn->name ? v.u.fn->name : "");
        case JF_METHOD:
            return jbuf_printf(x, b, "<built-in method %s of %s object>", v.u.fn->name, jv_type_name(v.u.fn->self));
        case JF_CYCLER:
            return jbuf_puts(x, b, "<jinja2.utils.Cycler object>");
        case JF_JOINER:
            return jbuf_puts(x, b, "<jinja2.utils.Joiner object>");
        default:
            return jbuf_printf(x, b, "<function %s>", v.u.fn->name);
        }
    case JV_LOOP: {
        jv len;
        int found = 0;
        if (jloop_attr(x, v.u.lp, "length", 6, &len, &found))
            return x->status;
        return jbuf_printf(x, b, "<LoopContext %lld/%lld>", (long long)(v.u.lp->index0 + 1),
                           (long long)len.u.i);
    }
    default:
        return 0;
    }
}

int jv_write_str(jx *x, jv v, jbuf *b) { return write_value(x, v, b, 0, 0); }

int jv_write_repr(jx *x, jv v, jbuf *b) { return write_value(x, v, b, 1, 0); }

int jv_to_str(jx *x, jv v, jv *out)
{
    if (v.t == JV_STR) {
        *out = jv_retain(v);
        return 0;
    }
    jbuf b = {0};
    if (jv_write_str(x, v, &b)) {
        jbuf_free(&b);
        return x->status;
    }
    int rc = jbuf_take_str(x, &b, out);
    jbuf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Undefined                                                            */
/* ------------------------------------------------------------------ */

int jv_make_undef(jx *x, jv *out, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jstr *s = jstr_new(msg, strlen(msg));
    if (!s)
        return jx_oom(x);
    *out = jv_undef();
    out->u.s = s;
    return 0;
}

int jv_undefined_error(jx *x, jv u)
{
    const char *msg = u.u.s ? u.u.s->s : "value is undefined";
    if (u.sub == JU_SECURITY)
        return jx_fail(x, INFER_ERR_FORMAT, "SecurityError: %s", msg);
    return jx_fail(x, INFER_ERR_FORMAT, "UndefinedError: %s", msg);
}

/* Jinja's object_type_repr. */
static void type_repr(jv obj, char *buf, size_t cap)
{
    if (obj.t == JV_NONE)
        snprintf(buf, cap, "None");
    else
        snprintf(buf, cap, "%s object", jv_type_name(obj));
}

int jv_undef_missing(jx *x, jv obj, jv name, jv *out)
{
    char tr[64];
    type_repr(obj, tr, sizeof tr);
    jbuf b = {0};
    int rc;
    if (name.t == JV_STR) {
        rc = jbuf_printf(x, &b, "'%s' has no attribute ", tr);
    } else {
        rc = jbuf_printf(x, &b, "%s has no element ", tr);
    }
    if (!rc)
        rc = jv_write_repr(x, name, &b);
    if (rc) {
        jbuf_free(&b);
        return x->status;
    }
    rc = jv_make_str(x, b.p, b.n, out);
    jbuf_free(&b);
    if (rc)
        return rc;
    out->t = JV_UNDEF;
    out->sub = JU_PLAIN;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Comparison                                                           */
/* ------------------------------------------------------------------ */

static int num_cmp(jv a, jv b)
{
    if (jv_is_intlike(a) && jv_is_intlike(b))
        return a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
    if (a.t == JV_FLOAT && b.t == JV_FLOAT) {
        if (isnan(a.u.f) || isnan(b.u.f))
            return 2;
        return a.u.f < b.u.f ? -1 : a.u.f > b.u.f;
    }
    /* an int against a float, exactly */
    int flip = 0;
    if (a.t == JV_FLOAT) {
        jv t = a;
        a = b;
        b = t;
        flip = 1;
    }
    int64_t i = a.u.i;
    double f = b.u.f;
    int r;
    if (isnan(f))
        return 2;
    if (f >= 9223372036854775808.0)
        r = -1;
    else if (f < -9223372036854775808.0)
        r = 1;
    else {
        double fl = floor(f);
        int64_t fi = (int64_t)fl;
        if (i < fi)
            r = -1;
        else if (i > fi)
            r = 1;
        else
            r = (f > fl) ? -1 : 0;
    }
    return flip ? -r : r;
}

static int eq_depth(jv a, jv b, int depth)
{
    if (depth > 500)
        return 0;
    if (jv_is_num(a) && jv_is_num(b))
        return num_cmp(a, b) == 0;
    switch (a.t) {
    case JV_UNDEF: return b.t == JV_UNDEF;
    case JV_NONE: return b.t == JV_NONE;
    case JV_STR:
        return b.t == JV_STR && a.u.s->len == b.u.s->len && memcmp(a.u.s->s, b.u.s->s, a.u.s->len) == 0;
    case JV_LIST: {
        if (b.t != JV_LIST)
            return 0;
        const jlist *x = a.u.l, *y = b.u.l;
        if (x == y)
            return 1;
        int ka = x->kind, kb = y->kind;
        if (ka == JL_ITER || kb == JL_ITER || ka == JL_ITEMS || ka == JL_VALUES)
            return 0;
        if (ka == JL_KEYS) /* dict_keys compare as sets */
            ka = JL_LIST;
        if (kb == JL_KEYS)
            kb = JL_LIST;
        if (ka != kb || x->n != y->n)
            return 0;
        if (ka == JL_RANGE)
            return x->n == 0 || (x->r_start == y->r_start && (x->n == 1 || x->r_step == y->r_step));
        for (size_t i = 0; i < x->n; i++)
            if (!eq_depth(x->v[i], y->v[i], depth + 1))
                return 0;
        return 1;
    }
    case JV_DICT: {
        if (b.t != JV_DICT)
            return 0;
        const jdict *x = a.u.d, *y = b.u.d;
        if (x == y)
            return 1;
        if (x->n != y->n)
            return 0;
        for (size_t i = 0; i < x->n; i++) {
            jv *o = jdict_get(y, x->k[i]);
            if (!o || !eq_depth(x->v[i], *o, depth + 1))
                return 0;
        }
        return 1;
    }
    case JV_FUNC:
        if (b.t != JV_FUNC)
            return 0;
        if (a.u.fn == b.u.fn)
            return 1;
        return a.u.fn->kind == JF_METHOD && b.u.fn->kind == JF_METHOD && a.u.fn->fn == b.u.fn->fn &&
               a.u.fn->name == b.u.fn->name && eq_depth(a.u.fn->self, b.u.fn->self, depth + 1);
    default:
        return a.t == b.t && a.u.d == b.u.d;
    }
}

int jv_eq(jx *x, jv a, jv b)
{
    (void)x;
    return eq_depth(a, b, 0);
}

static int unorderable(jx *x, const char *op, jv a, jv b)
{
    if (a.t == JV_UNDEF)
        return jv_undefined_error(x, a);
    if (b.t == JV_UNDEF)
        return jv_undefined_error(x, b);
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: '%s' not supported between instances of '%s' and '%s'", op,
                   jv_type_name(a), jv_type_name(b));
}

/* Python's rich comparison for <, <=, >, >= (op = CMP_*). */
static int compare_depth(jx *x, int op, jv a, jv b, int *res, int depth)
{
    static const char *const names[] = {"", "==", "!=", "<", "<=", ">", ">="};
    if (depth > 500)
        return jx_fail(x, INFER_ERR_FORMAT, "maximum recursion depth exceeded in comparison");
    int c;
    if (jv_is_num(a) && jv_is_num(b)) {
        c = num_cmp(a, b);
        if (c == 2) {
            *res = 0;
            return 0;
        }
    } else if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        c = memcmp(a.u.s->s, b.u.s->s, n);
        if (c == 0)
            c = a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len;
        c = c < 0 ? -1 : c > 0;
    } else if (a.t == JV_LIST && b.t == JV_LIST && a.u.l->kind == b.u.l->kind &&
               (a.u.l->kind == JL_LIST || a.u.l->kind == JL_TUPLE)) {
        const jlist *x1 = a.u.l, *y1 = b.u.l;
        size_t n = x1->n < y1->n ? x1->n : y1->n;
        if (jx_charge(x, n / 8))
            return x->status;
        for (size_t i = 0; i < n; i++)
            if (!eq_depth(x1->v[i], y1->v[i], 0))
                return compare_depth(x, op, x1->v[i], y1->v[i], res, depth + 1);
        c = x1->n < y1->n ? -1 : x1->n > y1->n;
    } else {
        return unorderable(x, names[op], a, b);
    }
    switch (op) {
    case CMP_LT: *res = c < 0; break;
    case CMP_LE: *res = c <= 0; break;
    case CMP_GT: *res = c > 0; break;
    default: *res = c >= 0; break;
    }
    return 0;
}

int jv_lt(jx *x, jv a, jv b, int *lt) { return compare_depth(x, CMP_LT, a, b, lt, 0); }

int jv_compare(jx *x, int op, jv a, jv b, int *res)
{
    if (op == CMP_EQ) {
        *res = jv_eq(x, a, b);
        return 0;
    }
    if (op == CMP_NE) {
        *res = !jv_eq(x, a, b);
        return 0;
    }
    return compare_depth(x, op, a, b, res, 0);
}

/* ------------------------------------------------------------------ */
/* Iteration, len, in                                                   */
/* ------------------------------------------------------------------ */

int jv_iterate(jx *x, jv v, jlist **out)
{
    switch (v.t) {
    case JV_UNDEF: {
        jlist *l = jlist_new(JL_LIST, 0);
        if (!l)
            return jx_oom(x);
        *out = l;
        return 0;
    }
    case JV_LIST:
        if (v.u.l->kind == JL_ITER) {
            if (v.u.l->consumed) {
                jlist *l = jlist_new(JL_LIST, 0);
                if (!l)
                    return jx_oom(x);
                *out = l;
                return 0;
            }
            v.u.l->consumed = 1;
        }
        v.u.l->rc++;
        *out = v.u.l;
        return 0;
    case JV_DICT: {
        jlist *l = jlist_new(JL_LIST, v.u.d->n);
        if (!l)
            return jx_oom(x);
        for (size_t i = 0; i < v.u.d->n; i++)
            l->v[l->n++] = jv_retain(v.u.d->k[i]);
        *out = l;
        return 0;
    }
    case JV_STR: {
        const jstr *s = v.u.s;
        jlist *l = jlist_new(JL_LIST, u8_count(s->s, s->len));
        if (!l)
            return jx_oom(x);
        size_t i = 0;
        while (i < s->len) {
            size_t st = i;
            u8_next(s->s, s->len, &i);
            jstr *c = jstr_new(s->s + st, i - st);
            if (!c) {
                jv_release(jv_list(l));
                return jx_oom(x);
            }
            l->v[l->n++] = jv_str(c);
        }
        if (jx_charge(x, l->n / 8)) {
            jv_release(jv_list(l));
            return x->status;
        }
        *out = l;
        return 0;
    }
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: '%s' object is not iterable", jv_type_name(v));
    }
}

int jv_len(jx *x, jv v, int64_t *n)
{
    switch (v.t) {
    case JV_UNDEF: *n = 0; return 0;
    case JV_STR: *n = (int64_t)u8_count(v.u.s->s, v.u.s->len); return 0;
    case JV_LIST:
        if (v.u.l->kind == JL_ITER)
            break;
        *n = (int64_t)v.u.l->n;
        return 0;
    case JV_DICT: *n = (int64_t)v.u.d->n; return 0;
    case JV_LOOP: {
        jv len;
        int found;
        if (jloop_attr(x, v.u.lp, "length", 6, &len, &found))
            return x->status;
        *n = len.u.i;
        return 0;
    }
    default:
        break;
    }
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: object of type '%s' has no len()", jv_type_name(v));
}

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn)
{
    if (nn == 0)
        return h;
    if (nn > hn)
        return NULL;
    for (size_t i = 0; i + nn <= hn; i++) {
        const char *p = memchr(h + i, nd[0], hn - nn - i + 1);
        if (!p)
            return NULL;
        i = (size_t)(p - h);
        if (memcmp(p, nd, nn) == 0)
            return p;
    }
    return NULL;
}

int jv_contains(jx *x, jv c, jv item, int *res)
{
    switch (c.t) {
    case JV_STR:
        if (item.t == JV_UNDEF)
            return jv_undefined_error(x, item);
        if (item.t != JV_STR)
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: 'in <string>' requires string as left operand, not %s",
                           jv_type_name(item));
        if (jx_charge(x, c.u.s->len / 64))
            return x->status;
        *res = find_bytes(c.u.s->s, c.u.s->len, item.u.s->s, item.u.s->len) != NULL;
        return 0;
    case JV_LIST: {
        const jlist *l = c.u.l;
        if (l->kind == JL_ITER) {
            if (l->consumed) {
                *res = 0;
                return 0;
            }
            c.u.l->consumed = 1;
        }
        if (jx_charge(x, l->n / 8))
            return x->status;
        *res = 0;
        for (size_t i = 0; i < l->n && !*res; i++)
            *res = jv_eq(x, l->v[i], item);
        return 0;
    }
    case JV_DICT:
        if (!jv_hashable(item))
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(item));
        *res = jdict_get(c.u.d, item) != NULL;
        return 0;
    case JV_UNDEF:
        *res = 0;
        return 0;
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: argument of type '%s' is not iterable", jv_type_name(c));
    }
}

/* ------------------------------------------------------------------ */
/* Arithmetic                                                           */
/* ------------------------------------------------------------------ */

static int bad_operands(jx *x, const char *op, jv a, jv b)
{
    if (a.t == JV_UNDEF)
        return jv_undefined_error(x, a);
    if (b.t == JV_UNDEF)
        return jv_undefined_error(x, b);
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: unsupported operand type(s) for %s: '%s' and '%s'", op,
                   jv_type_name(a), jv_type_name(b));
}

static int int_overflow(jx *x)
{
    return jx_fail(x, INFER_ERR_UNSUPPORTED, "integer overflow (numbers beyond 64 bits are not supported)");
}

static double to_f(jv v) { return v.t == JV_FLOAT ? v.u.f : (double)v.u.i; }

static int repeat(jx *x, jv seq, int64_t times, jv *out)
{
    if (times < 0)
        times = 0;
    if (seq.t == JV_STR) {
        size_t n = seq.u.s->len;
        if (n && (uint64_t)times > x->lim.max_output / n)
            return jx_fail(x, INFER_ERR_OUT_OF_RANGE, "the template produced too much text (more than %zu bytes)",
                           x->lim.max_output);
        if (jx_charge(x, (uint64_t)times * n / 64))
            return x->status;
        jstr *s = jstr_alloc(n * (size_t)times);
        if (!s)
            return jx_oom(x);
        for (int64_t i = 0; i < times; i++)
            memcpy(s->s + (size_t)i * n, seq.u.s->s, n);
        *out = jv_str(s);
        return 0;
    }
    const jlist *l = seq.u.l;
    if (l->n && (uint64_t)times > (x->lim.max_output / 8) / l->n)
        return jx_fail(x, INFER_ERR_OUT_OF_RANGE, "a list would be too long");
    if (jx_charge(x, (uint64_t)times * l->n / 8))
        return x->status;
    jlist *r = jlist_new(l->kind == JL_TUPLE ? JL_TUPLE : JL_LIST, l->n * (size_t)times);
    if (!r)
        return jx_oom(x);
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < l->n; k++)
            r->v[r->n++] = jv_retain(l->v[k]);
    *out = jv_list(r);
    return 0;
}

static int is_seq_kind(jv v) { return v.t == JV_LIST && (v.u.l->kind == JL_LIST || v.u.l->kind == JL_TUPLE); }

/* Python's float divmod. */
static void float_divmod(double a, double b, double *div, double *mod)
{
    double m = fmod(a, b);
    double d = (a - m) / b;
    if (m != 0) {
        if ((b < 0) != (m < 0)) {
            m += b;
            d -= 1.0;
        }
    } else {
        m = copysign(0.0, b);
    }
    double fd;
    if (d != 0) {
        fd = floor(d);
        if (d - fd > 0.5)
            fd += 1.0;
    } else {
        fd = copysign(0.0, a / b);
    }
    *div = fd;
    *mod = m;
}

int jv_binop(jx *x, int op, jv a, jv b, jv *out)
{
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "** or pow()"};
    int both_int = jv_is_intlike(a) && jv_is_intlike(b);
    int both_num = jv_is_num(a) && jv_is_num(b);
    switch (op) {
    case OP_ADD:
        if (both_int) {
            int64_t r;
            if (__builtin_add_overflow(a.u.i, b.u.i, &r))
                return int_overflow(x);
            *out = jv_int(r);
            return 0;
        }
        if (both_num) {
            *out = jv_float(to_f(a) + to_f(b));
            return 0;
        }
        if (a.t == JV_STR && b.t == JV_STR) {
            size_t n = a.u.s->len + b.u.s->len;
            if (n > x->lim.max_output)
                return jx_fail(x, INFER_ERR_OUT_OF_RANGE, "the template produced too much text (more than %zu bytes)",
                               x->lim.max_output);
            if (jx_charge(x, n / 64))
                return x->status;
            jstr *s = jstr_alloc(n);
            if (!s)
                return jx_oom(x);
            memcpy(s->s, a.u.s->s, a.u.s->len);
            memcpy(s->s + a.u.s->len, b.u.s->s, b.u.s->len);
            *out = jv_str(s);
            return 0;
        }
        if (is_seq_kind(a) && is_seq_kind(b) && a.u.l->kind == b.u.l->kind) {
            const jlist *p = a.u.l, *q = b.u.l;
            if (jx_charge(x, (p->n + q->n) / 8))
                return x->status;
            jlist *r = jlist_new(p->kind, p->n + q->n);
            if (!r)
                return jx_oom(x);
            for (size_t i = 0; i < p->n; i++)
                r->v[r->n++] = jv_retain(p->v[i]);
            for (size_t i = 0; i < q->n; i++)
                r->v[r->n++] = jv_retain(q->v[i]);
            *out = jv_list(r);
            return 0;
        }
        if (a.t == JV_LIST && b.t == JV_LIST && is_seq_kind(a) && is_seq_kind(b))
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: can only concatenate %s (not \"%s\") to %s",
                           jv_type_name(a), jv_type_name(b), jv_type_name(a));
        if (a.t == JV_STR && b.t != JV_UNDEF)
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: can only concatenate str (not \"%s\") to str",
                           jv_type_name(b));
        return bad_operands(x, names[op], a, b);
    case OP_SUB:
        if (both_int) {
            int64_t r;
            if (__builtin_sub_overflow(a.u.i, b.u.i, &r))
                return int_overflow(x);
            *out = jv_int(r);
            return 0;
        }
        if (both_num) {
            *out = jv_float(to_f(a) - to_f(b));
            return 0;
        }
        return bad_operands(x, names[op], a, b);
    case OP_MUL:
        if (both_int) {
            int64_t r;
            if (__builtin_mul_overflow(a.u.i, b.u.i, &r))
                return int_overflow(x);
            *out = jv_int(r);
            return 0;
        }
        if (both_num) {
            *out = jv_float(to_f(a) * to_f(b));
            return 0;
        }
        if ((a.t == JV_STR || is_seq_kind(a)) && jv_is_intlike(b))
            return repeat(x, a, b.u.i, out);
        if ((b.t == JV_STR || is_seq_kind(b)) && jv_is_intlike(a))
            return repeat(x, b, a.u.i, out);
        if ((a.t == JV_STR || is_seq_kind(a)) && b.t != JV_UNDEF && a.t != JV_UNDEF)
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: can't multiply sequence by non-int of type '%s'",
                           jv_type_name(b));
        return bad_operands(x, names[op], a, b);
    case OP_DIV:
        if (both_num) {
            double d = to_f(b);
            if (d == 0)
                return jx_fail(x, INFER_ERR_FORMAT, "ZeroDivisionError: division by zero");
            if (both_int) {
                /* Python divides ints exactly; doubles do for |values| < 2**53. */
                *out = jv_float((double)a.u.i / (double)b.u.i);
                return 0;
            }
            *out = jv_float(to_f(a) / d);
            return 0;
        }
        return bad_operands(x, names[op], a, b);
    case OP_FLOORDIV:
    case OP_MOD:
        if (a.t == JV_STR && op == OP_MOD)
            return py_percent_format(x, a, b, out);
        if (both_int) {
            if (b.u.i == 0)
                return jx_fail(x, INFER_ERR_FORMAT, op == OP_MOD ? "ZeroDivisionError: integer modulo by zero"
                                                                 : "ZeroDivisionError: integer division or modulo by zero");
            if (a.u.i == INT64_MIN && b.u.i == -1) {
                if (op == OP_MOD) {
                    *out = jv_int(0);
                    return 0;
                }
                return int_overflow(x);
            }
            int64_t q = a.u.i / b.u.i, r = a.u.i % b.u.i;
            if (r != 0 && ((r < 0) != (b.u.i < 0))) {
                q -= 1;
                r += b.u.i;
            }
            *out = jv_int(op == OP_MOD ? r : q);
            return 0;
        }
        if (both_num) {
            double d = to_f(b);
            if (d == 0)
                return jx_fail(x, INFER_ERR_FORMAT, op == OP_MOD ? "ZeroDivisionError: float modulo"
                                                                 : "ZeroDivisionError: float floor division by zero");
            double dv, md;
            float_divmod(to_f(a), d, &dv, &md);
            *out = jv_float(op == OP_MOD ? md : dv);
            return 0;
        }
        return bad_operands(x, names[op], a, b);
    case OP_POW:
        if (both_int && b.u.i >= 0) {
            int64_t base = a.u.i, e = b.u.i, r = 1;
            while (e > 0) {
                if (e & 1) {
                    if (__builtin_mul_overflow(r, base, &r))
                        return int_overflow(x);
                }
                e >>= 1;
                if (e && __builtin_mul_overflow(base, base, &base))
                    return int_overflow(x);
            }
            *out = jv_int(r);
            return 0;
        }
        if (both_num) {
            double p = to_f(a), q = to_f(b);
            if (p == 0 && q < 0)
                return jx_fail(x, INFER_ERR_FORMAT, "ZeroDivisionError: 0.0 cannot be raised to a negative power");
            if (p < 0 && q != floor(q))
                return jx_fail(x, INFER_ERR_UNSUPPORTED, "complex numbers are not supported");
            double r = pow(p, q);
            if (isinf(r) && !isinf(p) && !isinf(q))
                return jx_fail(x, INFER_ERR_FORMAT, "OverflowError: (34, 'Numerical result out of range')");
            *out = jv_float(r);
            return 0;
        }
        return bad_operands(x, names[op], a, b);
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "bad operator");
    }
}

int jv_neg(jx *x, jv a, int positive, jv *out)
{
    if (jv_is_intlike(a)) {
        if (!positive && a.u.i == INT64_MIN)
            return int_overflow(x);
        *out = jv_int(positive ? a.u.i : -a.u.i);
        return 0;
    }
    if (a.t == JV_FLOAT) {
        *out = jv_float(positive ? a.u.f : -a.u.f);
        return 0;
    }
    if (a.t == JV_UNDEF)
        return jv_undefined_error(x, a);
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: bad operand type for unary %c: '%s'", positive ? '+' : '-',
                   jv_type_name(a));
}

/* ------------------------------------------------------------------ */
/* JSON out (json.dumps)                                                */
/* ------------------------------------------------------------------ */

static int json_string(jx *x, const char *s, size_t n, int ascii, jbuf *b)
{
    if (jbuf_putc(x, b, '"'))
        return x->status;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[16];
        size_t clen = 1;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20 || (ascii && c == 0x7f)) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            } else if (ascii && c >= 0x80) {
                size_t k = i;
                uint32_t cp = u8_next(s, n, &k);
                clen = k - i;
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
                } else {
                    snprintf(tmp, sizeof tmp, "\\u%04x", cp);
                }
                esc = tmp;
            }
            break;
        }
        if (esc) {
            if (run && jbuf_put(x, b, s + i - run, run))
                return x->status;
            run = 0;
            if (jbuf_puts(x, b, esc))
                return x->status;
            i += clen;
        } else {
            run++;
            i++;
        }
    }
    if (run && jbuf_put(x, b, s + n - run, run))
        return x->status;
    return jbuf_putc(x, b, '"');
}

static int json_newline(jx *x, const jjson_opts *o, int level, jbuf *b)
{
    if (jbuf_putc(x, b, '\n'))
        return x->status;
    for (int i = 0; i < level; i++) {
        if (o->indent_str) {
            if (jbuf_put(x, b, o->indent_str, o->indent_len))
                return x->status;
        } else {
            for (int k = 0; k < o->indent; k++)
                if (jbuf_putc(x, b, ' '))
                    return x->status;
        }
    }
    return 0;
}

static int json_not_serializable(jx *x, jv v)
{
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: Object of type %s is not JSON serializable", jv_type_name(v));
}

static int json_value(jx *x, jv v, const jjson_opts *o, int level, jbuf *b);

static int json_key(jx *x, jv k, const jjson_opts *o, jbuf *b)
{
    char tmp[64];
    switch (k.t) {
    case JV_STR: return json_string(x, k.u.s->s, k.u.s->len, o->ensure_ascii, b);
    case JV_BOOL: return jbuf_puts(x, b, k.u.i ? "\"true\"" : "\"false\"");
    case JV_NONE: return jbuf_puts(x, b, "\"null\"");
    case JV_INT: return jbuf_printf(x, b, "\"%lld\"", (long long)k.u.i);
    case JV_FLOAT:
        if (isnan(k.u.f))
            snprintf(tmp, sizeof tmp, "NaN");
        else if (isinf(k.u.f))
            snprintf(tmp, sizeof tmp, k.u.f < 0 ? "-Infinity" : "Infinity");
        else
            py_float_repr(k.u.f, tmp, sizeof tmp);
        return jbuf_printf(x, b, "\"%s\"", tmp);
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: keys must be str, int, float, bool or None, not %s",
                       jv_type_name(k));
    }
}

static int json_value(jx *x, jv v, const jjson_opts *o, int level, jbuf *b)
{
    char tmp[64];
    int pretty = o->indent >= 0 || o->indent_str;
    if (level > 200)
        return jx_fail(x, INFER_ERR_FORMAT, "RecursionError: maximum recursion depth exceeded while encoding a JSON object");
    switch (v.t) {
    case JV_NONE: return jbuf_puts(x, b, "null");
    case JV_BOOL: return jbuf_puts(x, b, v.u.i ? "true" : "false");
    case JV_INT: return jbuf_printf(x, b, "%lld", (long long)v.u.i);
    case JV_FLOAT:
        if (isnan(v.u.f))
            return jbuf_puts(x, b, "NaN");
        if (isinf(v.u.f))
            return jbuf_puts(x, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        py_float_repr(v.u.f, tmp, sizeof tmp);
        return jbuf_puts(x, b, tmp);
    case JV_STR: return json_string(x, v.u.s->s, v.u.s->len, o->ensure_ascii, b);
    case JV_LIST: {
        const jlist *l = v.u.l;
        if (l->kind != JL_LIST && l->kind != JL_TUPLE)
            return json_not_serializable(x, v);
        if (l->n == 0)
            return jbuf_put(x, b, "[]", 2);
        if (jx_charge(x, l->n / 8) || jbuf_putc(x, b, '['))
            return x->status;
        for (size_t i = 0; i < l->n; i++) {
            if (i && jbuf_put(x, b, o->item_sep, o->item_sep_len))
                return x->status;
            if (pretty && json_newline(x, o, level + 1, b))
                return x->status;
            if (json_value(x, l->v[i], o, level + 1, b))
                return x->status;
        }
        if (pretty && json_newline(x, o, level, b))
            return x->status;
        return jbuf_putc(x, b, ']');
    }
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (d->n == 0)
            return jbuf_put(x, b, "{}", 2);
        size_t *order = malloc(d->n * sizeof *order);
        if (!order)
            return jx_oom(x);
        for (size_t i = 0; i < d->n; i++)
            order[i] = i;
        int rc = jx_charge(x, d->n / 8);
        if (!rc && o->sort_keys) {
            /* insertion sort keeps it stable and simple; dicts are small */
            for (size_t i = 1; i < d->n && !rc; i++) {
                size_t k = order[i], j = i;
                while (j > 0) {
                    int lt = 0;
                    if ((rc = jv_lt(x, d->k[k], d->k[order[j - 1]], &lt)) != 0 || !lt)
                        break;
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = k;
                if (!rc)
                    rc = jx_charge(x, 1);
            }
        }
        if (!rc)
            rc = jbuf_putc(x, b, '{');
        for (size_t i = 0; i < d->n && !rc; i++) {
            if (i)
                rc = jbuf_put(x, b, o->item_sep, o->item_sep_len);
            if (!rc && pretty)
                rc = json_newline(x, o, level + 1, b);
            if (!rc)
                rc = json_key(x, d->k[order[i]], o, b);
            if (!rc)
                rc = jbuf_put(x, b, o->key_sep, o->key_sep_len);
            if (!rc)
                rc = json_value(x, d->v[order[i]], o, level + 1, b);
        }
        free(order);
        if (!rc && pretty)
            rc = json_newline(x, o, level, b);
        if (!rc)
            rc = jbuf_putc(x, b, '}');
        return rc ? x->status : 0;
    }
    default:
        return json_not_serializable(x, v);
    }
}

int jv_write_json(jx *x, jv v, const jjson_opts *o, jbuf *b) { return json_value(x, v, o, 0, b); }

/* ------------------------------------------------------------------ */
/* JSON in (json.loads)                                                 */
/* ------------------------------------------------------------------ */

typedef struct jparse {
    jx *x;
    const char *s;
    size_t n, i;
} jparse;

static int jp_fail(jparse *p, const char *what)
{
    return jx_fail(p->x, INFER_ERR_INVALID_ARGUMENT, "invalid JSON: %s at offset %zu", what, p->i);
}

static void jp_ws(jparse *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int jp_lit(jparse *p, const char *lit)
{
    size_t n = strlen(lit);
    if (p->n - p->i >= n && memcmp(p->s + p->i, lit, n) == 0) {
        p->i += n;
        return 1;
    }
    return 0;
}

static int jp_hex4(jparse *p, uint32_t *out)
{
    if (p->n - p->i < 4)
        return jp_fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + (size_t)k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v |= (uint32_t)((c | 0x20) - 'a' + 10);
        else
            return jp_fail(p, "bad \\u escape");
    }
    p->i += 4;
    *out = v;
    return 0;
}

static int jp_string(jparse *p, jv *out)
{
    jx *x = p->x;
    jbuf b = {0};
    p->i++; /* opening quote */
    size_t run = p->i;
    for (;;) {
        if (p->i >= p->n) {
            jbuf_free(&b);
            return jp_fail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"')
            break;
        if (c < 0x20) {
            jbuf_free(&b);
            return jp_fail(p, "invalid control character");
        }
        if (c != '\\') {
            p->i++;
            continue;
        }
        if (jbuf_put(x, &b, p->s + run, p->i - run))
            goto fail;
        p->i++;
        if (p->i >= p->n) {
            jbuf_free(&b);
            return jp_fail(p, "unterminated string");
        }
        char e = p->s[p->i++];
        char ch = 0;
        switch (e) {
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
            if (jp_hex4(p, &cp))
                goto fail;
            if (cp >= 0xd800 && cp <= 0xdbff && p->n - p->i >= 6 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                size_t save = p->i;
                uint32_t lo;
                p->i += 2;
                if (jp_hex4(p, &lo))
                    goto fail;
                if (lo >= 0xdc00 && lo <= 0xdfff)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    p->i = save;
            }
            if (cp >= 0xd800 && cp <= 0xdfff) {
                jbuf_free(&b);
                return jp_fail(p, "lone surrogate in \\u escape");
            }
            char u[4];
            if (jbuf_put(x, &b, u, (size_t)u8_put(u, cp)))
                goto fail;
            run = p->i;
            continue;
        }
        default:
            p->i--;
            jbuf_free(&b);
            return jp_fail(p, "invalid \\escape");
        }
        if (jbuf_putc(x, &b, ch))
            goto fail;
        run = p->i;
    }
    if (jbuf_put(x, &b, p->s + run, p->i - run))
        goto fail;
    p->i++; /* closing quote */
    {
        int rc = jv_make_str(x, b.p ? b.p : "", b.n, out);
        jbuf_free(&b);
        return rc;
    }
fail:
    jbuf_free(&b);
    return x->status;
}

static int jp_value(jparse *p, jv *out, int depth);

static int jp_number(jparse *p, jv *out)
{
    size_t st = p->i;
    int is_float = 0;
    if (p->s[p->i] == '-')
        p->i++;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return jp_fail(p, "expecting value");
    if (p->s[p->i] == '0')
        p->i++;
    else
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    if (p->i + 1 < p->n && p->s[p->i] == '.' && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9') {
        is_float = 1;
        p->i++;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        size_t k = p->i + 1;
        if (k < p->n && (p->s[k] == '+' || p->s[k] == '-'))
            k++;
        if (k < p->n && p->s[k] >= '0' && p->s[k] <= '9') {
            is_float = 1;
            p->i = k;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
                p->i++;
        }
    }
    char tmp[64];
    size_t len = p->i - st;
    char *buf = len < sizeof tmp ? tmp : malloc(len + 1);
    if (!buf)
        return jx_oom(p->x);
    memcpy(buf, p->s + st, len);
    buf[len] = '\0';
    if (!is_float) {
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (errno == 0) {
            *out = jv_int(v);
            if (buf != tmp)
                free(buf);
            return 0;
        }
        /* beyond 64 bits: Python keeps an exact big int; a float is the closest we have */
    }
    *out = jv_float(strtod(buf, NULL));
    if (buf != tmp)
        free(buf);
    return 0;
}

static int jp_value(jparse *p, jv *out, int depth)
{
    jx *x = p->x;
    if (depth > 500)
        return jp_fail(p, "nesting too deep");
    jp_ws(p);
    if (p->i >= p->n)
        return jp_fail(p, "expecting value");
    char c = p->s[p->i];
    if (c == '"')
        return jp_string(p, out);
    if (c == '{') {
        jdict *d = jdict_new();
        if (!d)
            return jx_oom(x);
        p->i++;
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == '}') {
            p->i++;
            *out = jv_dict(d);
            return 0;
        }
        for (;;) {
            jp_ws(p);
            if (p->i >= p->n || p->s[p->i] != '"') {
                jv_release(jv_dict(d));
                return jp_fail(p, "expecting property name enclosed in double quotes");
            }
            jv k, v;
            if (jp_string(p, &k)) {
                jv_release(jv_dict(d));
                return x->status;
            }
            jp_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') {
                jv_release(k);
                jv_release(jv_dict(d));
                return jp_fail(p, "expecting ':' delimiter");
            }
            p->i++;
            if (jp_value(p, &v, depth + 1)) {
                jv_release(k);
                jv_release(jv_dict(d));
                return x->status;
            }
            if (jdict_set(d, k, v)) {
                jv_release(jv_dict(d));
                return jx_oom(x);
            }
            jp_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == '}') {
                p->i++;
                *out = jv_dict(d);
                return 0;
            }
            jv_release(jv_dict(d));
            return jp_fail(p, "expecting ',' delimiter");
        }
    }
    if (c == '[') {
        jlist *l = jlist_new(JL_LIST, 0);
        if (!l)
            return jx_oom(x);
        p->i++;
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == ']') {
            p->i++;
            *out = jv_list(l);
            return 0;
        }
        for (;;) {
            jv v;
            if (jp_value(p, &v, depth + 1)) {
                jv_release(jv_list(l));
                return x->status;
            }
            if (jlist_push(l, v)) {
                jv_release(jv_list(l));
                return jx_oom(x);
            }
            jp_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == ']') {
                p->i++;
                *out = jv_list(l);
                return 0;
            }
            jv_release(jv_list(l));
            return jp_fail(p, "expecting ',' delimiter");
        }
    }
    if (jp_lit(p, "null")) {
        *out = jv_none();
        return 0;
    }
    if (jp_lit(p, "true")) {
        *out = jv_bool(1);
        return 0;
    }
    if (jp_lit(p, "false")) {
        *out = jv_bool(0);
        return 0;
    }
    if (jp_lit(p, "NaN")) {
        *out = jv_float(NAN);
        return 0;
    }
    if (jp_lit(p, "Infinity")) {
        *out = jv_float(INFINITY);
        return 0;
    }
    if (jp_lit(p, "-Infinity")) {
        *out = jv_float(-INFINITY);
        return 0;
    }
    return jp_number(p, out);
}

int jv_from_json(jx *x, const char *s, size_t n, jv *out)
{
    size_t bad;
    if (!u8_valid(s, n, &bad))
        return jx_fail(x, INFER_ERR_INVALID_ARGUMENT, "invalid JSON: not UTF-8 at offset %zu", bad);
    jparse p = {x, s, n, 0};
    if (jp_value(&p, out, 0))
        return x->status;
    jp_ws(&p);
    if (p.i != n) {
        jv_release(*out);
        return jp_fail(&p, "extra data");
    }
    return 0;
}

static int cj_value(jx *x, const cJSON *j, jv *out, int depth)
{
    if (depth > 500)
        return jx_fail(x, INFER_ERR_INVALID_ARGUMENT, "JSON nesting too deep");
    if (cJSON_IsNull(j) || cJSON_IsInvalid(j)) {
        *out = jv_none();
    } else if (cJSON_IsBool(j)) {
        *out = jv_bool(cJSON_IsTrue(j));
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            *out = jv_int((int64_t)d);
        else
            *out = jv_float(d);
    } else if (cJSON_IsString(j) || cJSON_IsRaw(j)) {
        const char *s = j->valuestring ? j->valuestring : "";
        size_t n = strlen(s), bad;
        if (!u8_valid(s, n, &bad))
            return jx_fail(x, INFER_ERR_INVALID_ARGUMENT, "a string is not UTF-8 (byte %zu)", bad);
        return jv_make_str(x, s, n, out);
    } else if (cJSON_IsArray(j)) {
        jlist *l = jlist_new(JL_LIST, 0);
        if (!l)
            return jx_oom(x);
        for (const cJSON *c = j->child; c; c = c->next) {
            jv v;
            if (cj_value(x, c, &v, depth + 1)) {
                jv_release(jv_list(l));
                return x->status;
            }
            if (jlist_push(l, v)) {
                jv_release(jv_list(l));
                return jx_oom(x);
            }
        }
        *out = jv_list(l);
    } else if (cJSON_IsObject(j)) {
        jdict *d = jdict_new();
        if (!d)
            return jx_oom(x);
        for (const cJSON *c = j->child; c; c = c->next) {
            jv k, v;
            const char *ks = c->string ? c->string : "";
            size_t bad;
            if (!u8_valid(ks, strlen(ks), &bad)) {
                jv_release(jv_dict(d));
                return jx_fail(x, INFER_ERR_INVALID_ARGUMENT, "a key is not UTF-8");
            }
            if (jv_make_cstr(x, ks, &k)) {
                jv_release(jv_dict(d));
                return x->status;
            }
            if (cj_value(x, c, &v, depth + 1)) {
                jv_release(k);
                jv_release(jv_dict(d));
                return x->status;
            }
            if (jdict_set(d, k, v)) {
                jv_release(jv_dict(d));
                return jx_oom(x);
            }
        }
        *out = jv_dict(d);
    } else {
        *out = jv_none();
    }
    return 0;
}

int jv_from_cjson(jx *x, const void *cjson, jv *out) { return cj_value(x, (const cJSON *)cjson, out, 0); }
