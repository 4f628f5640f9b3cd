/* jinja_eval.c - renders a parsed template.
 *
 * Scopes follow Jinja's compiled code: an if shares its enclosing scope; a
 * for loop runs each iteration in a fresh scope whose lookups fall through
 * to the enclosing one (so a `set` in a loop body is gone at the next
 * iteration and after the loop); macros, call blocks, with, filter and set
 * blocks have scopes of their own.  Values are looked up in the scopes,
 * then the render's variables, then the globals (range, namespace, ...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

#define JX_BREAK (-1)
#define JX_CONTINUE (-2)

struct jscope {
    jscope *parent;
    jdict *vars;
    int captured;
    jscope *next_retained;
};

struct jinja_vars {
    jdict *d;
};

static jscope *scope_new(jx *x, jscope *parent)
{
    jscope *s = calloc(1, sizeof *s);
    if (!s) {
        jx_oom(x);
        return NULL;
    }
    s->vars = jdict_new();
    if (!s->vars) {
        free(s);
        jx_oom(x);
        return NULL;
    }
    s->parent = parent;
    return s;
}

static void scope_free(jscope *s)
{
    jv_release(jv_dict(s->vars));
    free(s);
}

/* Ends a scope: freed now unless a macro defined in it may still run. */
static void scope_end(jx *x, jscope *s)
{
    if (!s)
        return;
    if (s->captured) {
        s->next_retained = x->retained;
        x->retained = s;
        return;
    }
    scope_free(s);
}

static jv *scope_lookup(jscope *s, const char *name, size_t n)
{
    for (; s; s = s->parent) {
        jv *v = jdict_get_str(s->vars, name, n);
        if (v)
            return v;
    }
    return NULL;
}

static int scope_set(jx *x, jscope *s, jv name, jv value)
{
    if (jdict_set(s->vars, jv_retain(name), value))
        return jx_oom(x);
    return 0;
}

static int scope_set_cstr(jx *x, jscope *s, const char *name, jv value)
{
    jv k;
    if (jv_make_cstr(x, name, &k)) {
        jv_release(value);
        return x->status;
    }
    if (jdict_set(s->vars, k, value))
        return jx_oom(x);
    return 0;
}

/* ------------------------------------------------------------------ */

static int exec_node(jx *x, jscope *sc, const jnode *n, jbuf *out);
static int eval(jx *x, jscope *sc, const jnode *n, jv *out);

static int at_node(jx *x, const jnode *n, int rc)
{
    if (rc > 0 && !x->has_line) {
        x->has_line = n->line;
    }
    return rc;
}

static int enter(jx *x)
{
    if (++x->depth > x->lim.max_depth)
        return jx_fail(x, INFER_ERR_OUT_OF_RANGE, "maximum recursion depth exceeded (limit %d)", x->lim.max_depth);
    return jx_charge(x, 1);
}

int jargs_bind(jx *x, const char *fname, const jargs *a, const char *const *names, int nnames, int required,
               jv *slots)
{
    unsigned set = 0;
    if (a->n > nnames)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() takes at most %d argument%s (%d given)", fname, nnames,
                       nnames == 1 ? "" : "s", a->n);
    for (int i = 0; i < a->n; i++) {
        slots[i] = a->pos[i];
        set |= 1u << i;
    }
    for (int k = 0; k < a->nk; k++) {
        int found = -1;
        for (int i = 0; i < nnames; i++)
            if (!strcmp(names[i], a->kn[k]->s))
                found = i;
        if (found < 0)
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() got an unexpected keyword argument '%s'", fname,
                           a->kn[k]->s);
        if (set & (1u << found))
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() got multiple values for argument '%s'", fname,
                           names[found]);
        slots[found] = a->kv[k];
        set |= 1u << found;
    }
    for (int i = 0; i < required; i++)
        if (!(set & (1u << i)))
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: %s() missing required argument '%s'", fname, names[i]);
    return 0;
}

static void args_free(jargs *a)
{
    for (int i = 0; i < a->n; i++)
        jv_release(a->pos[i]);
    for (int i = 0; i < a->nk; i++) {
        jv_release(jv_str(a->kn[i]));
        jv_release(a->kv[i]);
    }
    free(a->pos);
    free(a->kn);
    free(a->kv);
    memset(a, 0, sizeof *a);
}

static int args_push(jx *x, jargs *a, jv v)
{
    jv *p = realloc(a->pos, (size_t)(a->n + 1) * sizeof *p);
    if (!p) {
        jv_release(v);
        return jx_oom(x);
    }
    a->pos = p;
    a->pos[a->n++] = v;
    return 0;
}

static int args_push_kw(jx *x, jargs *a, jstr *name, jv v)
{
    for (int i = 0; i < a->nk; i++)
        if (a->kn[i]->len == name->len && memcmp(a->kn[i]->s, name->s, name->len) == 0) {
            jv_release(v);
            return jx_fail(x, INFER_ERR_FORMAT, "TypeError: got multiple values for keyword argument '%s'", name->s);
        }
    jstr **kn = realloc(a->kn, (size_t)(a->nk + 1) * sizeof *kn);
    if (!kn) {
        jv_release(v);
        return jx_oom(x);
    }
    a->kn = kn;
    jv *kv = realloc(a->kv, (size_t)(a->nk + 1) * sizeof *kv);
    if (!kv) {
        jv_release(v);
        return jx_oom(x);
    }
    a->kv = kv;
    name->rc++;
    a->kn[a->nk] = name;
    a->kv[a->nk] = v;
    a->nk++;
    return 0;
}

/* Evaluates a call's arguments (kids, *d, **e) into a. */
static int eval_args(jx *x, jscope *sc, const jnode *n, jargs *a)
{
    for (int i = 0; i < n->nkids; i++) {
        const jnode *k = n->kids[i];
        jv v;
        if (k->kind == N_KWARG) {
            if (eval(x, sc, k->a, &v) || args_push_kw(x, a, k->val.u.s, v))
                return x->status;
        } else {
            if (eval(x, sc, k, &v) || args_push(x, a, v))
                return x->status;
        }
    }
    if (n->d) {
        jv v;
        jlist *l;
        if (eval(x, sc, n->d, &v))
            return x->status;
        int rc = jv_iterate(x, v, &l);
        jv_release(v);
        if (rc)
            return rc;
        for (size_t i = 0; i < l->n && !rc; i++)
            rc = args_push(x, a, jv_retain(l->v[i]));
        jv_release(jv_list(l));
        if (rc)
            return rc;
    }
    if (n->e) {
        jv v;
        if (eval(x, sc, n->e, &v))
            return x->status;
        if (v.t != JV_DICT) {
            int rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: argument after ** must be a mapping, not %s",
                             jv_type_name(v));
            jv_release(v);
            return rc;
        }
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (v.u.d->k[i].t != JV_STR) {
                jv_release(v);
                return jx_fail(x, INFER_ERR_FORMAT, "TypeError: keywords must be strings");
            }
            if (args_push_kw(x, a, v.u.d->k[i].u.s, jv_retain(v.u.d->v[i]))) {
                jv_release(v);
                return x->status;
            }
        }
        jv_release(v);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Attribute and item access (SandboxedEnvironment.getattr/getitem)    */
/* ------------------------------------------------------------------ */

static int unsafe_undefined(jx *x, jv obj, const char *name, jv *out)
{
    int rc = jv_make_undef(x, out, "access to attribute '%s' of '%s' object is unsafe.", name, jv_type_name(obj));
    if (!rc)
        out->sub = JU_SECURITY;
    return rc;
}

static int is_dunder(const char *s, size_t n) { return n >= 2 && s[0] == '_' && s[1] == '_'; }

int jgetattr(jx *x, jv obj, jv name, jv *out)
{
    if (obj.t == JV_UNDEF)
        return jv_undefined_error(x, obj);
    const char *s = name.u.s->s;
    size_t n = name.u.s->len;
    if (is_dunder(s, n))
        return unsafe_undefined(x, obj, s, out);
    int found = 0;
    if (jattr_lookup(x, obj, s, n, out, &found))
        return x->status;
    if (found)
        return 0;
    if (obj.t == JV_DICT) {
        jv *v = jdict_get_str(obj.u.d, s, n);
        if (v) {
            *out = jv_retain(*v);
            return 0;
        }
    }
    return jv_undef_missing(x, obj, name, out);
}

static int slice_index(jx *x, jscope *sc, const jnode *e, int64_t *v, int *given, int *bad)
{
    *given = 0;
    if (!e)
        return 0;
    jv r;
    if (eval(x, sc, e, &r))
        return x->status;
    if (jv_is_intlike(r)) {
        *v = r.u.i;
        *given = 1;
    } else if (r.t != JV_NONE) {
        *bad = 1;
    }
    jv_release(r);
    return 0;
}

static int do_slice(jx *x, jv obj, int64_t start, int sg, int64_t stop, int eg, int64_t step, int stg, jv *out)
{
    int64_t len;
    if (!stg)
        step = 1;
    if (step == 0)
        return jx_fail(x, INFER_ERR_FORMAT, "ValueError: slice step cannot be zero");
    if (step == INT64_MIN)
        step = -INT64_MAX;
    if (jv_len(x, obj, &len))
        return x->status;
    int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? len - 1 : len;
    if (!sg) {
        start = step < 0 ? upper : lower;
    } else {
        if (start < 0)
            start = start < -len ? lower : start + len;
        if (start < lower)
            start = lower;
        else if (start > upper)
            start = upper;
    }
    if (!eg) {
        stop = step < 0 ? lower : upper;
    } else {
        if (stop < 0)
            stop = stop < -len ? lower : stop + len;
        if (stop < lower)
            stop = lower;
        else if (stop > upper)
            stop = upper;
    }
    if (obj.t == JV_STR) {
        const jstr *s = obj.u.s;
        if (jx_charge(x, s->len / 64))
            return x->status;
        /* code point offsets */
        size_t *offs = malloc(((size_t)len + 1) * sizeof *offs);
        if (!offs)
            return jx_oom(x);
        size_t i = 0;
        for (int64_t k = 0; k < len; k++) {
            offs[k] = i;
            u8_next(s->s, s->len, &i);
        }
        offs[len] = s->len;
        jbuf b = {0};
        int rc = 0;
        if (step == 1) {
            if (stop > start)
                rc = jbuf_put(x, &b, s->s + offs[start], offs[stop] - offs[start]);
        } else {
            for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
                if ((rc = jbuf_put(x, &b, s->s + offs[k], offs[k + 1] - offs[k])) != 0)
                    break;
                if ((step > 0 && k > INT64_MAX - step) || (step < 0 && k < INT64_MIN - step))
                    break;
            }
        }
        free(offs);
        if (!rc)
            rc = jbuf_take_str(x, &b, out);
        jbuf_free(&b);
        return rc;
    }
    const jlist *l = obj.u.l;
    jlist *r = jlist_new(l->kind == JL_TUPLE ? JL_TUPLE : JL_LIST, 0);
    if (!r)
        return jx_oom(x);
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        if (jlist_push(r, jv_retain(l->v[k]))) {
            jv_release(jv_list(r));
            return jx_oom(x);
        }
        if ((step > 0 && k > INT64_MAX - step) || (step < 0 && k < INT64_MIN - step))
            break;
    }
    if (jx_charge(x, r->n / 8)) {
        jv_release(jv_list(r));
        return x->status;
    }
    *out = jv_list(r);
    return 0;
}

static int subscriptable(jv obj)
{
    return obj.t == JV_STR ||
           (obj.t == JV_LIST && (obj.u.l->kind == JL_LIST || obj.u.l->kind == JL_TUPLE || obj.u.l->kind == JL_RANGE));
}

int jgetitem(jx *x, jv obj, jv key, jv *out)
{
    if (obj.t == JV_UNDEF)
        return jv_undefined_error(x, obj);
    if (obj.t == JV_DICT && jv_hashable(key)) {
        jv *v = jdict_get(obj.u.d, key);
        if (v) {
            *out = jv_retain(*v);
            return 0;
        }
    } else if (subscriptable(obj) && jv_is_intlike(key)) {
        int64_t len;
        if (jv_len(x, obj, &len))
            return x->status;
        int64_t i = key.u.i < 0 ? key.u.i + len : key.u.i;
        if (i >= 0 && i < len) {
            if (obj.t == JV_STR) {
                size_t off = u8_offset(obj.u.s->s, obj.u.s->len, (size_t)i), end = off;
                u8_next(obj.u.s->s, obj.u.s->len, &end);
                return jv_make_str(x, obj.u.s->s + off, end - off, out);
            }
            *out = jv_retain(obj.u.l->v[i]);
            return 0;
        }
    }
    if (key.t == JV_STR) {
        if (is_dunder(key.u.s->s, key.u.s->len))
            return unsafe_undefined(x, obj, key.u.s->s, out);
        int found = 0;
        if (jattr_lookup(x, obj, key.u.s->s, key.u.s->len, out, &found))
            return x->status;
        if (found)
            return 0;
    }
    return jv_undef_missing(x, obj, key, out);
}

/* ------------------------------------------------------------------ */
/* Loops                                                                */
/* ------------------------------------------------------------------ */

static int assign(jx *x, jscope *sc, const jnode *target, jv value);

/* The next item passing the loop's filter; *got = 0 at the end. */
static int loop_fetch(jx *x, jloop *lp, jv *item, int *got)
{
    const jnode *cond = lp->node->c;
    *got = 0;
    if (!lp->active)
        return 0;
    while (lp->pos < lp->items->n) {
        jv cand = lp->items->v[lp->pos++];
        if (!cond || lp->prefiltered) {
            *item = jv_retain(cand);
            *got = 1;
            return 0;
        }
        if (jx_charge(x, 1))
            return x->status;
        jscope *s = scope_new(x, lp->scope);
        if (!s)
            return x->status;
        jv r;
        int rc = assign(x, s, lp->node->a, jv_retain(cand));
        if (!rc)
            rc = eval(x, s, cond, &r);
        scope_end(x, s);
        if (rc)
            return rc;
        int ok = jv_truthy(r);
        jv_release(r);
        if (ok) {
            *item = jv_retain(cand);
            *got = 1;
            return 0;
        }
    }
    return 0;
}

static int loop_peek(jx *x, jloop *lp)
{
    if (lp->has_after)
        return 0;
    int got;
    jv item;
    if (loop_fetch(x, lp, &item, &got))
        return x->status;
    if (got) {
        lp->after = item;
        lp->has_after = 1;
    }
    return 0;
}

static int loop_length(jx *x, jloop *lp, int64_t *len)
{
    if (lp->length < 0) {
        /* count what is left after the filter; remember it so that the
         * filter runs once per item */
        jlist *rest = jlist_new(JL_LIST, 0);
        if (!rest)
            return jx_oom(x);
        for (;;) {
            jv item;
            int got;
            if (loop_fetch(x, lp, &item, &got)) {
                jv_release(jv_list(rest));
                return x->status;
            }
            if (!got)
                break;
            if (jlist_push(rest, item)) {
                jv_release(jv_list(rest));
                return jx_oom(x);
            }
        }
        lp->length = lp->index0 + 1 + lp->has_after + (int64_t)rest->n;
        jv_release(jv_list(lp->items));
        lp->items = rest;
        lp->pos = 0;
        lp->prefiltered = 1;
    }
    *len = lp->length;
    return 0;
}

static int loop_cycle(jx *x, jv self, jargs *a, jv *out)
{
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: cycle() got an unexpected keyword argument");
    if (a->n == 0)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: no items for cycling given");
    *out = jv_retain(a->pos[self.u.lp->index0 % a->n]);
    return 0;
}

static int loop_changed(jx *x, jv self, jargs *a, jv *out)
{
    jloop *lp = self.u.lp;
    if (a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: changed() got an unexpected keyword argument");
    jlist *t = jlist_new(JL_TUPLE, (size_t)a->n);
    if (!t)
        return jx_oom(x);
    for (int i = 0; i < a->n; i++)
        t->v[t->n++] = jv_retain(a->pos[i]);
    jv tv = jv_list(t);
    if (lp->has_last_changed && jv_eq(x, lp->last_changed, tv)) {
        jv_release(tv);
        *out = jv_bool(0);
        return 0;
    }
    if (lp->has_last_changed)
        jv_release(lp->last_changed);
    lp->last_changed = tv;
    lp->has_last_changed = 1;
    *out = jv_bool(1);
    return 0;
}

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

int jloop_attr(jx *x, jloop *lp, const char *name, size_t n, jv *out, int *found)
{
    int64_t len;
    jv self = {JV_LOOP, 0, {0}};
    self.u.lp = lp;
    *found = 1;
#define IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)
    if (IS("index0")) {
        *out = jv_int(lp->index0);
    } else if (IS("index")) {
        *out = jv_int(lp->index0 + 1);
    } else if (IS("first")) {
        *out = jv_bool(lp->index0 == 0);
    } else if (IS("length")) {
        if (loop_length(x, lp, &len))
            return x->status;
        *out = jv_int(len);
    } else if (IS("revindex")) {
        if (loop_length(x, lp, &len))
            return x->status;
        *out = jv_int(len - lp->index0);
    } else if (IS("revindex0")) {
        if (loop_length(x, lp, &len))
            return x->status;
        *out = jv_int(len - lp->index0 - 1);
    } else if (IS("last")) {
        if (loop_peek(x, lp))
            return x->status;
        *out = jv_bool(!lp->has_after);
    } else if (IS("depth")) {
        *out = jv_int(lp->depth0 + 1);
    } else if (IS("depth0")) {
        *out = jv_int(lp->depth0);
    } else if (IS("previtem")) {
        if (lp->index0 == 0)
            return jv_make_undef(x, out, "there is no previous item");
        *out = jv_retain(lp->before);
    } else if (IS("nextitem")) {
        if (loop_peek(x, lp))
            return x->status;
        if (!lp->has_after)
            return jv_make_undef(x, out, "there is no next item");
        *out = jv_retain(lp->after);
    } else if (IS("cycle")) {
        return bound(x, self, "cycle", loop_cycle, out);
    } else if (IS("changed")) {
        return bound(x, self, "changed", loop_changed, out);
    } else {
        *found = 0;
    }
#undef IS
    return 0;
}

static int assign(jx *x, jscope *sc, const jnode *target, jv value)
{
    switch (target->kind) {
    case N_NAME:
        return scope_set(x, sc, target->val, value);
    case N_NSREF: {
        jv *ns = scope_lookup(sc, target->val.u.s->s, target->val.u.s->len);
        if (!ns || ns->t != JV_NS) {
            jv_release(value);
            return jx_fail(x, INFER_ERR_FORMAT, "TemplateRuntimeError: cannot assign attribute on non-namespace object");
        }
        if (jdict_set(ns->u.d, jv_retain(target->attr), value))
            return jx_oom(x);
        return 0;
    }
    case N_TUPLE: {
        jlist *items;
        int rc = jv_iterate(x, value, &items);
        jv_release(value);
        if (rc)
            return rc;
        if (items->n != (size_t)target->nkids) {
            size_t got = items->n;
            jv_release(jv_list(items));
            if (got < (size_t)target->nkids)
                return jx_fail(x, INFER_ERR_FORMAT, "ValueError: not enough values to unpack (expected %d, got %zu)",
                               target->nkids, got);
            return jx_fail(x, INFER_ERR_FORMAT, "ValueError: too many values to unpack (expected %d)", target->nkids);
        }
        for (int i = 0; i < target->nkids && !rc; i++)
            rc = assign(x, sc, target->kids[i], jv_retain(items->v[i]));
        jv_release(jv_list(items));
        return rc;
    }
    default:
        jv_release(value);
        return jx_fail(x, INFER_ERR_FORMAT, "cannot assign to this expression");
    }
}

static int run_loop(jx *x, jscope *sc, const jnode *n, jv iterable, int depth0, jbuf *out)
{
    jlist *items;
    if (jv_iterate(x, iterable, &items))
        return x->status;
    jloop *lp = calloc(1, sizeof *lp);
    if (!lp) {
        jv_release(jv_list(items));
        return jx_oom(x);
    }
    lp->rc = 1;
    lp->active = 1;
    lp->items = items;
    lp->node = n;
    lp->scope = sc;
    lp->index0 = -1;
    lp->length = n->c ? -1 : (int64_t)items->n;
    lp->before = jv_undef();
    lp->current = jv_undef();
    lp->depth0 = depth0;
    jv loopv = {JV_LOOP, 0, {0}};
    loopv.u.lp = lp;

    int rc = 0, iterated = 0;
    for (;;) {
        jv item;
        int got;
        if (lp->has_after) {
            item = lp->after;
            lp->has_after = 0;
            got = 1;
        } else if ((rc = loop_fetch(x, lp, &item, &got)) != 0) {
            break;
        }
        if (!got)
            break;
        iterated = 1;
        lp->index0++;
        jv_release(lp->before);
        lp->before = lp->current;
        lp->current = jv_retain(item);
        if ((rc = jx_charge(x, 1)) != 0) {
            jv_release(item);
            break;
        }
        jscope *it = scope_new(x, sc);
        if (!it) {
            jv_release(item);
            rc = x->status;
            break;
        }
        rc = assign(x, it, n->a, item);
        if (!rc)
            rc = scope_set_cstr(x, it, "loop", jv_retain(loopv));
        if (!rc)
            rc = exec_node(x, it, n->d, out);
        scope_end(x, it);
        if (rc == JX_CONTINUE)
            rc = 0;
        if (rc == JX_BREAK) {
            rc = 0;
            break;
        }
        if (rc)
            break;
    }
    lp->active = 0;
    jv_release(loopv);
    if (!rc && !iterated && n->e) {
        jscope *es = scope_new(x, sc);
        if (!es)
            return x->status;
        rc = exec_node(x, es, n->e, out);
        scope_end(x, es);
    }
    return rc;
}

int jloop_recurse(jx *x, jloop *lp, jargs *a, jv *out)
{
    if (!(lp->node->flags & 1))
        return jx_fail(x, INFER_ERR_FORMAT,
                       "TypeError: The loop must have the 'recursive' marker to be called recursively.");
    if (!lp->active)
        return jx_fail(x, INFER_ERR_FORMAT, "the loop has ended and cannot be called recursively");
    if (a->n != 1 || a->nk)
        return jx_fail(x, INFER_ERR_FORMAT, "TypeError: loop() takes exactly one argument");
    if (enter(x)) {
        x->depth--;
        return x->status;
    }
    jbuf b = {0};
    int rc = run_loop(x, lp->scope, lp->node, a->pos[0], lp->depth0 + 1, &b);
    if (rc == JX_BREAK || rc == JX_CONTINUE)
        rc = 0;
    if (!rc)
        rc = jbuf_take_str(x, &b, out);
    jbuf_free(&b);
    x->depth--;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Macros                                                               */
/* ------------------------------------------------------------------ */

static int macro_argcount_error(jx *x, jfunc *m, int nparams)
{
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: macro '%s' takes not more than %d argument(s)",
                   m->is_caller ? "caller" : m->name, nparams);
}

int jmacro_call(jx *x, jfunc *m, jargs *a, jv *out)
{
    const jnode *node = m->node;
    const jnode *body = node->b;
    int nparams = node->nkids;
    int flags = node->flags;
    const char *mname = m->is_caller ? "caller" : m->name;
    if (a->n > nparams && !(flags & MF_VARARGS))
        return macro_argcount_error(x, m, nparams);
    if (enter(x)) {
        x->depth--;
        return x->status;
    }
    jscope *s = scope_new(x, m->scope);
    if (!s) {
        x->depth--;
        return x->status;
    }
    int rc = 0;
    unsigned char *used = calloc((size_t)a->nk + 1, 1);
    if (!used)
        rc = jx_oom(x);
    int caller_used = 0;
    for (int i = 0; i < nparams && !rc; i++) {
        const jnode *param = node->kids[i];
        if (i < a->n) {
            rc = scope_set(x, s, param->val, jv_retain(a->pos[i]));
            continue;
        }
        int k;
        for (k = 0; k < a->nk; k++)
            if (!used[k] && !strcmp(a->kn[k]->s, param->val.u.s->s))
                break;
        if (k < a->nk) {
            used[k] = 1;
            if (!strcmp(param->val.u.s->s, "caller"))
                caller_used = 1;
            rc = scope_set(x, s, param->val, jv_retain(a->kv[k]));
        } else if (param->a) {
            jv d;
            rc = eval(x, s, param->a, &d);
            if (!rc)
                rc = scope_set(x, s, param->val, d);
        } else {
            jv u;
            rc = jv_make_undef(x, &u, "parameter '%s' was not provided", param->val.u.s->s);
            if (!rc)
                rc = scope_set(x, s, param->val, u);
        }
    }
    if (!rc && (flags & MF_CALLER) && !caller_used) {
        jv c = jv_none();
        int k;
        for (k = 0; k < a->nk; k++)
            if (!used[k] && !strcmp(a->kn[k]->s, "caller"))
                break;
        if (k < a->nk) {
            used[k] = 1;
            c = jv_retain(a->kv[k]);
        } else {
            rc = jv_make_undef(x, &c, "No caller defined");
        }
        if (!rc)
            rc = scope_set_cstr(x, s, "caller", c);
    }
    if (!rc && (flags & MF_KWARGS)) {
        jdict *kw = jdict_new();
        if (!kw)
            rc = jx_oom(x);
        for (int k = 0; k < a->nk && !rc; k++)
            if (!used[k] && jdict_set(kw, jv_retain(jv_str(a->kn[k])), jv_retain(a->kv[k])))
                rc = jx_oom(x);
        if (kw)
            rc = rc ? rc : scope_set_cstr(x, s, "kwargs", jv_dict(kw));
        if (rc && kw)
            jv_release(jv_dict(kw));
    } else if (!rc) {
        for (int k = 0; k < a->nk && !rc; k++) {
            if (used[k])
                continue;
            int has_caller = 0;
            for (int j = 0; j < a->nk; j++)
                if (!used[j] && !strcmp(a->kn[j]->s, "caller"))
                    has_caller = 1;
            if (has_caller)
                rc = jx_fail(x, INFER_ERR_FORMAT,
                             "TypeError: macro '%s' was invoked with two values for the special caller argument. "
                             "This is most likely a bug.", mname);
            else
                rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: macro '%s' takes no keyword argument '%s'", mname,
                             a->kn[k]->s);
        }
    }
    if (!rc && (flags & MF_VARARGS)) {
        jlist *va = jlist_new(JL_TUPLE, 0);
        if (!va)
            rc = jx_oom(x);
        for (int i = nparams; i < a->n && !rc; i++)
            if (jlist_push(va, jv_retain(a->pos[i])))
                rc = jx_oom(x);
        if (va)
            rc = rc ? (jv_release(jv_list(va)), rc) : scope_set_cstr(x, s, "varargs", jv_list(va));
    }
    free(used);
    jbuf b = {0};
    if (!rc) {
        rc = exec_node(x, s, body, &b);
        if (rc == JX_BREAK || rc == JX_CONTINUE)
            rc = 0;
    }
    if (!rc)
        rc = jbuf_take_str(x, &b, out);
    jbuf_free(&b);
    scope_end(x, s);
    x->depth--;
    return rc;
}

int jcall_value(jx *x, jv callee, jargs *a, jv *out, int line)
{
    (void)line;
    switch (callee.t) {
    case JV_UNDEF:
        return jv_undefined_error(x, callee);
    case JV_FUNC: {
        jfunc *f = callee.u.fn;
        switch (f->kind) {
        case JF_BUILTIN:
            return f->fn(x, jv_none(), a, out);
        case JF_METHOD:
            return f->fn(x, f->self, a, out);
        case JF_MACRO:
            return jmacro_call(x, f, a, out);
        case JF_JOINER:
            if (a->n || a->nk)
                return jx_fail(x, INFER_ERR_FORMAT, "TypeError: Joiner.__call__() takes no arguments");
            if (!f->pos) {
                f->pos = 1;
                return jv_make_str(x, "", 0, out);
            }
            *out = jv_retain(f->extra);
            return 0;
        default:
            break;
        }
        break;
    }
    case JV_LOOP:
        return jloop_recurse(x, callee.u.lp, a, out);
    default:
        break;
    }
    return jx_fail(x, INFER_ERR_FORMAT, "TypeError: '%s' object is not callable", jv_type_name(callee));
}

/* ------------------------------------------------------------------ */
/* Expressions                                                          */
/* ------------------------------------------------------------------ */

static int eval_filter(jx *x, jscope *sc, const jnode *n, const jv *given, jv *out);

static int eval_filter_input(jx *x, jscope *sc, const jnode *n, const jv *given, jv *out)
{
    if (!n->a) {
        *out = jv_retain(*given);
        return 0;
    }
    if (given && n->a->kind == N_FILTER)
        return eval_filter(x, sc, n->a, given, out);
    return eval(x, sc, n->a, out);
}

static int eval_filter(jx *x, jscope *sc, const jnode *n, const jv *given, jv *out)
{
    jv input;
    if (eval_filter_input(x, sc, n, given, &input))
        return x->status;
    int rc;
    if (n->op == -1) {
        rc = jx_fail(x, INFER_ERR_FORMAT, "TemplateRuntimeError: No filter named '%s' found.", n->val.u.s->s);
    } else if (n->op == -2) {
        rc = jx_fail(x, INFER_ERR_UNSUPPORTED, "the filter '%s' is not supported", n->val.u.s->s);
    } else {
        jargs a = {0};
        rc = eval_args(x, sc, n, &a);
        if (!rc)
            rc = jfilter_call(x, n->op, input, &a, out);
        args_free(&a);
    }
    jv_release(input);
    return at_node(x, n, rc);
}

static int eval_compare(jx *x, jscope *sc, const jnode *n, jv *out)
{
    jv left;
    if (eval(x, sc, n->a, &left))
        return x->status;
    for (int i = 0; i < n->nkids; i++) {
        const jnode *o = n->kids[i];
        jv right;
        if (eval(x, sc, o->a, &right)) {
            jv_release(left);
            return x->status;
        }
        int res = 0, rc;
        if (o->op == CMP_IN || o->op == CMP_NOTIN) {
            rc = jv_contains(x, right, left, &res);
            if (o->op == CMP_NOTIN)
                res = !res;
        } else {
            rc = jv_compare(x, o->op, left, right, &res);
        }
        jv_release(left);
        if (rc) {
            jv_release(right);
            return at_node(x, o, rc);
        }
        left = right;
        if (!res) {
            jv_release(left);
            *out = jv_bool(0);
            return 0;
        }
    }
    jv_release(left);
    *out = jv_bool(1);
    return 0;
}

static int eval_inner(jx *x, jscope *sc, const jnode *n, jv *out)
{
    int rc;
    switch (n->kind) {
    case N_CONST:
        *out = jv_retain(n->val);
        return 0;
    case N_NAME: {
        const jstr *name = n->val.u.s;
        jv *v = scope_lookup(sc, name->s, name->len);
        if (v) {
            *out = jv_retain(*v);
            return 0;
        }
        if (jglobal_lookup(x, name->s, name->len, out))
            return x->status ? x->status : 0;
        return jv_make_undef(x, out, "'%s' is undefined", name->s);
    }
    case N_TUPLE:
    case N_LIST: {
        jlist *l = jlist_new(n->kind == N_TUPLE ? JL_TUPLE : JL_LIST, (size_t)n->nkids);
        if (!l)
            return jx_oom(x);
        for (int i = 0; i < n->nkids; i++) {
            if (eval(x, sc, n->kids[i], &l->v[l->n])) {
                jv_release(jv_list(l));
                return x->status;
            }
            l->n++;
        }
        *out = jv_list(l);
        return 0;
    }
    case N_DICT: {
        jdict *d = jdict_new();
        if (!d)
            return jx_oom(x);
        for (int i = 0; i < n->nkids; i++) {
            jv k, v;
            if (eval(x, sc, n->kids[i]->a, &k)) {
                jv_release(jv_dict(d));
                return x->status;
            }
            if (eval(x, sc, n->kids[i]->b, &v)) {
                jv_release(k);
                jv_release(jv_dict(d));
                return x->status;
            }
            if (!jv_hashable(k)) {
                rc = jx_fail(x, INFER_ERR_FORMAT, "TypeError: unhashable type: '%s'", jv_type_name(k));
                jv_release(k);
                jv_release(v);
                jv_release(jv_dict(d));
                return rc;
            }
            if (jdict_set(d, k, v)) {
                jv_release(jv_dict(d));
                return jx_oom(x);
            }
        }
        *out = jv_dict(d);
        return 0;
    }
    case N_GETATTR: {
        jv obj;
        if (eval(x, sc, n->a, &obj))
            return x->status;
        rc = jgetattr(x, obj, n->val, out);
        jv_release(obj);
        return rc;
    }
    case N_GETITEM: {
        jv obj;
        if (eval(x, sc, n->a, &obj))
            return x->status;
        if (n->b->kind == N_SLICE) {
            int64_t v[3] = {0, 0, 0};
            int g[3] = {0, 0, 0}, bad = 0;
            const jnode *parts[3] = {n->b->a, n->b->b, n->b->c};
            for (int i = 0; i < 3; i++)
                if (slice_index(x, sc, parts[i], &v[i], &g[i], &bad)) {
                    jv_release(obj);
                    return x->status;
                }
            if (obj.t == JV_UNDEF) {
                rc = jv_undefined_error(x, obj);
            } else if (!bad && subscriptable(obj)) {
                rc = do_slice(x, obj, v[0], g[0], v[1], g[1], v[2], g[2], out);
            } else {
                rc = jv_make_undef(x, out, "%s object has no element slice", jv_type_name(obj));
            }
            jv_release(obj);
            return rc;
        }
        jv key;
        if (eval(x, sc, n->b, &key)) {
            jv_release(obj);
            return x->status;
        }
        rc = jgetitem(x, obj, key, out);
        jv_release(obj);
        jv_release(key);
        return rc;
    }
    case N_CALL: {
        jv callee;
        if (eval(x, sc, n->a, &callee))
            return x->status;
        jargs a = {0};
        rc = eval_args(x, sc, n, &a);
        if (!rc)
            rc = jcall_value(x, callee, &a, out, n->line);
        args_free(&a);
        jv_release(callee);
        return rc;
    }
    case N_FILTER:
        return eval_filter(x, sc, n, NULL, out);
    case N_TEST: {
        jv input;
        if (eval(x, sc, n->a, &input))
            return x->status;
        if (n->op == -1) {
            rc = jx_fail(x, INFER_ERR_FORMAT, "TemplateRuntimeError: No test named '%s' found.", n->val.u.s->s);
        } else if (n->op == -2) {
            rc = jx_fail(x, INFER_ERR_UNSUPPORTED, "the test '%s' is not supported", n->val.u.s->s);
        } else {
            jargs a = {0};
            int res = 0;
            rc = eval_args(x, sc, n, &a);
            if (!rc)
                rc = jtest_call(x, n->op, input, &a, &res);
            args_free(&a);
            if (!rc)
                *out = jv_bool(res);
        }
        jv_release(input);
        return rc;
    }
    case N_BINOP: {
        jv a, b;
        if (eval(x, sc, n->a, &a))
            return x->status;
        if (eval(x, sc, n->b, &b)) {
            jv_release(a);
            return x->status;
        }
        rc = jv_binop(x, n->op, a, b, out);
        jv_release(a);
        jv_release(b);
        return rc;
    }
    case N_CONCAT: {
        jbuf b = {0};
        rc = 0;
        for (int i = 0; i < n->nkids && !rc; i++) {
            jv v;
            rc = eval(x, sc, n->kids[i], &v);
            if (!rc) {
                rc = jv_write_str(x, v, &b);
                jv_release(v);
            }
        }
        if (!rc)
            rc = jbuf_take_str(x, &b, out);
        jbuf_free(&b);
        return rc;
    }
    case N_COMPARE:
        return eval_compare(x, sc, n, out);
    case N_AND:
    case N_OR: {
        jv a;
        if (eval(x, sc, n->a, &a))
            return x->status;
        int t = jv_truthy(a);
        if ((n->kind == N_AND && !t) || (n->kind == N_OR && t)) {
            *out = a;
            return 0;
        }
        jv_release(a);
        return eval(x, sc, n->b, out);
    }
    case N_NOT: {
        jv a;
        if (eval(x, sc, n->a, &a))
            return x->status;
        *out = jv_bool(!jv_truthy(a));
        jv_release(a);
        return 0;
    }
    case N_NEG: {
        jv a;
        if (eval(x, sc, n->a, &a))
            return x->status;
        rc = jv_neg(x, a, n->op, out);
        jv_release(a);
        return rc;
    }
    case N_CONDEXPR: {
        jv t;
        if (eval(x, sc, n->a, &t))
            return x->status;
        int truth = jv_truthy(t);
        jv_release(t);
        if (truth)
            return eval(x, sc, n->b, out);
        if (n->c)
            return eval(x, sc, n->c, out);
        return jv_make_undef(x, out,
                             "the inline if-expression on line %d evaluated to false and no else section was defined.",
                             n->line);
    }
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "unexpected expression");
    }
}

static int eval(jx *x, jscope *sc, const jnode *n, jv *out)
{
    if (enter(x)) {
        x->depth--;
        return at_node(x, n, x->status);
    }
    int rc = eval_inner(x, sc, n, out);
    x->depth--;
    return at_node(x, n, rc);
}

/* ------------------------------------------------------------------ */
/* Statements                                                           */
/* ------------------------------------------------------------------ */

static int write_value(jx *x, jv v, jbuf *out)
{
    if (v.t == JV_UNDEF)
        return 0;
    return jv_write_str(x, v, out);
}

static int render_scoped(jx *x, jscope *sc, const jnode *body, jv *out)
{
    jscope *s = scope_new(x, sc);
    if (!s)
        return x->status;
    jbuf b = {0};
    int rc = exec_node(x, s, body, &b);
    scope_end(x, s);
    if (rc == JX_BREAK || rc == JX_CONTINUE)
        rc = 0;
    if (!rc)
        rc = jbuf_take_str(x, &b, out);
    jbuf_free(&b);
    return rc;
}

static void capture(jscope *s)
{
    for (; s && !s->captured; s = s->parent)
        s->captured = 1;
}

static int make_macro(jx *x, jscope *sc, const jnode *n, int is_caller, jv *out)
{
    jfunc *f = jfunc_new(JF_MACRO, is_caller ? "caller" : n->val.u.s->s);
    if (!f)
        return jx_oom(x);
    f->node = n;
    f->scope = sc;
    f->is_caller = is_caller;
    capture(sc);
    *out = (jv){JV_FUNC, 0, {0}};
    out->u.fn = f;
    return 0;
}

static int exec_inner(jx *x, jscope *sc, const jnode *n, jbuf *out)
{
    int rc = 0;
    switch (n->kind) {
    case N_BODY:
        for (int i = 0; i < n->nkids; i++)
            if ((rc = exec_node(x, sc, n->kids[i], out)) != 0)
                return rc;
        return 0;
    case N_DATA:
        return jbuf_put(x, out, n->val.u.s->s, n->val.u.s->len);
    case N_OUTPUT: {
        jv v;
        if (eval(x, sc, n->a, &v))
            return x->status;
        rc = write_value(x, v, out);
        jv_release(v);
        return rc;
    }
    case N_IF: {
        jv t;
        if (eval(x, sc, n->a, &t))
            return x->status;
        int truth = jv_truthy(t);
        jv_release(t);
        if (truth)
            return exec_node(x, sc, n->b, out);
        return n->c ? exec_node(x, sc, n->c, out) : 0;
    }
    case N_FOR: {
        jv it;
        if (eval(x, sc, n->b, &it))
            return x->status;
        rc = run_loop(x, sc, n, it, 0, out);
        jv_release(it);
        return rc;
    }
    case N_SET: {
        jv v;
        if (eval(x, sc, n->b, &v))
            return x->status;
        return assign(x, sc, n->a, v);
    }
    case N_SETBLOCK: {
        jv v;
        if (render_scoped(x, sc, n->c, &v))
            return x->status;
        if (n->b) {
            jv f;
            rc = eval_filter(x, sc, n->b, &v, &f);
            jv_release(v);
            if (rc)
                return rc;
            v = f;
        }
        return assign(x, sc, n->a, v);
    }
    case N_FILTERBLOCK: {
        jv v, f;
        if (render_scoped(x, sc, n->b, &v))
            return x->status;
        rc = eval_filter(x, sc, n->a, &v, &f);
        jv_release(v);
        if (rc)
            return rc;
        rc = write_value(x, f, out);
        jv_release(f);
        return rc;
    }
    case N_MACRO: {
        jv m;
        if (make_macro(x, sc, n, 0, &m))
            return x->status;
        return scope_set(x, sc, n->val, m);
    }
    case N_CALLBLOCK: {
        jv caller, callee, result;
        const jnode *call = n->a;
        if (make_macro(x, sc, n, 1, &caller))
            return x->status;
        if (eval(x, sc, call->a, &callee)) {
            jv_release(caller);
            return x->status;
        }
        jargs a = {0};
        rc = eval_args(x, sc, call, &a);
        if (!rc) {
            jstr *cn = jstr_new("caller", 6);
            if (!cn) {
                rc = jx_oom(x);
            } else {
                rc = args_push_kw(x, &a, cn, jv_retain(caller));
                jv_release(jv_str(cn));
            }
        }
        if (!rc)
            rc = jcall_value(x, callee, &a, &result, call->line);
        args_free(&a);
        jv_release(callee);
        jv_release(caller);
        if (rc)
            return rc;
        rc = write_value(x, result, out);
        jv_release(result);
        return rc;
    }
    case N_WITH: {
        jscope *s = scope_new(x, sc);
        if (!s)
            return x->status;
        for (int i = 0; i < n->nkids && !rc; i++) {
            jv v;
            rc = eval(x, sc, n->kids[i]->b, &v);
            if (!rc)
                rc = assign(x, s, n->kids[i]->a, v);
        }
        if (!rc)
            rc = exec_node(x, s, n->b, out);
        scope_end(x, s);
        return rc;
    }
    case N_SCOPE: {
        jscope *s = scope_new(x, sc);
        if (!s)
            return x->status;
        rc = exec_node(x, s, n->b, out);
        scope_end(x, s);
        return rc;
    }
    case N_AUTOESCAPE: {
        jv v;
        if (eval(x, sc, n->a, &v))
            return x->status;
        int on = jv_truthy(v);
        jv_release(v);
        if (on)
            return jx_fail(x, INFER_ERR_UNSUPPORTED, "autoescaping is not supported");
        jscope *s = scope_new(x, sc);
        if (!s)
            return x->status;
        rc = exec_node(x, s, n->b, out);
        scope_end(x, s);
        return rc;
    }
    case N_BREAK:
        return JX_BREAK;
    case N_CONTINUE:
        return JX_CONTINUE;
    case N_UNSUPPORTED:
        return jx_fail(x, INFER_ERR_UNSUPPORTED, "'%s' is not supported (templates cannot load other templates)",
                       n->val.u.s->s);
    default:
        return jx_fail(x, INFER_ERR_FORMAT, "unexpected statement");
    }
}

static int exec_node(jx *x, jscope *sc, const jnode *n, jbuf *out)
{
    if (!n)
        return 0;
    if (enter(x)) {
        x->depth--;
        return at_node(x, n, x->status);
    }
    int rc = exec_inner(x, sc, n, out);
    x->depth--;
    return at_node(x, n, rc);
}

/* ------------------------------------------------------------------ */
/* Rendering                                                            */
/* ------------------------------------------------------------------ */

static void limits_fill(jinja_limits *l, const jinja_limits *given)
{
    if (given)
        *l = *given;
    else
        memset(l, 0, sizeof *l);
    if (!l->max_output)
        l->max_output = (size_t)64 << 20;
    if (!l->max_steps)
        l->max_steps = 20000000;
    if (!l->max_depth)
        l->max_depth = 400;
}

static void jx_finish(jx *x)
{
    /* namespaces are the only mutable containers: clearing them breaks any
     * reference cycle through them */
    if (x->namespaces) {
        for (size_t i = 0; i < x->namespaces->n; i++)
            jdict_clear(x->namespaces->v[i].u.d);
        jv_release(jv_list(x->namespaces));
        x->namespaces = NULL;
    }
    while (x->retained) {
        jscope *s = x->retained;
        x->retained = s->next_retained;
        scope_free(s);
    }
}

static int report(jx *x)
{
    int st = x->status;
    if (st == INFER_ERR_INVALID_ARGUMENT && !strncmp(x->msg, "raise_exception: ", 17))
        return infer_err(st, "chat template: %s", x->msg + 17);
    if (x->has_line)
        return infer_err(st, "chat template: line %d: %s", x->has_line, x->msg);
    return infer_err(st, "chat template: %s", x->msg);
}

int jinja_render(const jinja_template *tpl, const jinja_vars *vars, const jinja_limits *lim, char **out,
                 size_t *out_len)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!tpl || !out)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "jinja_render: NULL argument");
    jx x;
    memset(&x, 0, sizeof x);
    limits_fill(&x.lim, lim);
    x.tpl = tpl;
    jscope base = {NULL, NULL, 0, NULL};
    jdict *empty = NULL;
    if (vars) {
        base.vars = vars->d;
    } else {
        empty = jdict_new();
        if (!empty)
            return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
        base.vars = empty;
    }
    jscope *root = scope_new(&x, &base);
    jbuf b = {0};
    int rc = root ? exec_node(&x, root, tpl->root, &b) : x.status;
    if (rc == JX_BREAK || rc == JX_CONTINUE)
        rc = 0;
    /* namespaces and retained scopes first: they may hold macros whose
     * scopes lead to the root */
    jx_finish(&x);
    if (root)
        scope_free(root);
    if (empty)
        jv_release(jv_dict(empty));
    if (rc) {
        jbuf_free(&b);
        return report(&x);
    }
    if (!b.p) {
        b.p = malloc(1);
        if (!b.p)
            return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
        b.p[0] = '\0';
    }
    *out = b.p;
    if (out_len)
        *out_len = b.n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Variables                                                            */
/* ------------------------------------------------------------------ */

int jinja_vars_new(jinja_vars **out)
{
    *out = NULL;
    jinja_vars *v = calloc(1, sizeof *v);
    if (!v || !(v->d = jdict_new())) {
        free(v);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    }
    *out = v;
    return 0;
}

void jinja_vars_free(jinja_vars *vars)
{
    if (!vars)
        return;
    jv_release(jv_dict(vars->d));
    free(vars);
}

static int vars_put(jinja_vars *vars, const char *name, jv value)
{
    jstr *k = jstr_new(name, strlen(name));
    if (!k) {
        jv_release(value);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    }
    if (jdict_set(vars->d, jv_str(k), value))
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    return 0;
}

static void tmp_jx(jx *x)
{
    memset(x, 0, sizeof *x);
    limits_fill(&x->lim, NULL);
}

int jinja_vars_set_string(jinja_vars *vars, const char *name, const char *s, size_t len)
{
    if (len == (size_t)-1)
        len = strlen(s);
    size_t bad;
    if (!u8_valid(s, len, &bad))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "template variable '%s': not valid UTF-8 (byte %zu)", name, bad);
    jstr *js = jstr_new(s, len);
    if (!js)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    return vars_put(vars, name, jv_str(js));
}

int jinja_vars_set_bool(jinja_vars *vars, const char *name, int value)
{
    return vars_put(vars, name, jv_bool(value));
}

int jinja_vars_set_none(jinja_vars *vars, const char *name) { return vars_put(vars, name, jv_none()); }

int jinja_vars_set_json(jinja_vars *vars, const char *name, const char *json, size_t len)
{
    jx x;
    tmp_jx(&x);
    jv v;
    if (len == (size_t)-1)
        len = strlen(json);
    if (jv_from_json(&x, json, len, &v))
        return infer_err(x.status, "template variable '%s': %s", name, x.msg);
    return vars_put(vars, name, v);
}

int jinja_vars_set_json_object(jinja_vars *vars, const char *json, size_t len)
{
    jx x;
    tmp_jx(&x);
    jv v;
    if (len == (size_t)-1)
        len = strlen(json);
    if (jv_from_json(&x, json, len, &v))
        return infer_err(x.status, "template variables: %s", x.msg);
    if (v.t != JV_DICT) {
        jv_release(v);
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "template variables: not a JSON object");
    }
    int rc = 0;
    for (size_t i = 0; i < v.u.d->n && !rc; i++)
        if (jdict_set(vars->d, jv_retain(v.u.d->k[i]), jv_retain(v.u.d->v[i])))
            rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    jv_release(v);
    return rc;
}

int jinja_vars_set_cjson(jinja_vars *vars, const char *name, const cJSON *value)
{
    jx x;
    tmp_jx(&x);
    jv v;
    if (jv_from_cjson(&x, value, &v))
        return infer_err(x.status, "template variable '%s': %s", name, x.msg);
    return vars_put(vars, name, v);
}

int jinja_vars_set_messages(jinja_vars *vars, const char *name, const char *const *roles,
                            const char *const *contents, size_t n)
{
    jlist *l = jlist_new(JL_LIST, n);
    if (!l)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *fields[2] = {"role", "content"};
        const char *vals[2] = {roles[i], contents[i]};
        jdict *d = jdict_new();
        if (!d)
            goto oom;
        l->v[l->n++] = jv_dict(d);
        for (int f = 0; f < 2; f++) {
            const char *s = vals[f] ? vals[f] : "";
            size_t len = strlen(s), bad;
            if (!u8_valid(s, len, &bad)) {
                jv_release(jv_list(l));
                return infer_err(INFER_ERR_INVALID_ARGUMENT, "message %zu: %s is not valid UTF-8 (byte %zu)", i,
                                 fields[f], bad);
            }
            jstr *k = jstr_new(fields[f], strlen(fields[f]));
            jstr *v = k ? jstr_new(s, len) : NULL;
            if (!v) {
                if (k)
                    jv_release(jv_str(k));
                goto oom;
            }
            if (jdict_set(d, jv_str(k), jv_str(v)))
                goto oom;
        }
    }
    return vars_put(vars, name, jv_list(l));
oom:
    jv_release(jv_list(l));
    return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
}

int jinja_render_string(const char *src, size_t len, const cJSON *context, const jinja_limits *lim, char **out,
                        size_t *out_len)
{
    jinja_template *tpl;
    jinja_vars *vars;
    if (out)
        *out = NULL;
    int rc = jinja_parse(src, len, &tpl);
    if (rc)
        return rc;
    if ((rc = jinja_vars_new(&vars)) != 0) {
        jinja_template_free(tpl);
        return rc;
    }
    if (context) {
        if (!cJSON_IsObject(context)) {
            rc = infer_err(INFER_ERR_INVALID_ARGUMENT, "template variables: not a JSON object");
        } else {
            for (const cJSON *c = context->child; c && !rc; c = c->next)
                rc = jinja_vars_set_cjson(vars, c->string ? c->string : "", c);
        }
    }
    if (!rc)
        rc = jinja_render(tpl, vars, lim, out, out_len);
    jinja_vars_free(vars);
    jinja_template_free(tpl);
    return rc;
}
