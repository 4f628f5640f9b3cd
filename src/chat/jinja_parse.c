/* jinja_parse.c - Jinja2's grammar (jinja2/parser.py) to a syntax tree.
 *
 * After parsing, a check walks the tree as Jinja's compiler would: unknown
 * filters and tests are errors unless inside an if statement or an inline
 * if (where Jinja defers them to run time), `break`/`continue` must be in
 * a loop, and the tree's depth is bounded so that evaluation cannot
 * overflow the stack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"

#define PARSE_MAX_DEPTH 256
#define TREE_MAX_DEPTH 320

typedef struct endset {
    const char *const *names;
    int n;
} endset;

typedef struct parser {
    jlex_out lx;
    size_t i;
    jinja_template *tpl;
    int depth;
    int status;
    const char *tags[64];  /* open statements, for error messages */
    int ntags;
    endset ends[64];
    int nends;
} parser;

static jtoken *cur(parser *p) { return &p->lx.toks[p->i]; }

static jtoken *look(parser *p) { return &p->lx.toks[p->i + 1 < p->lx.n ? p->i + 1 : p->i]; }

static jtoken *advance(parser *p)
{
    jtoken *t = cur(p);
    if (t->type != T_EOF)
        p->i++;
    return t;
}

static int is_name(const jtoken *t, const char *name)
{
    return t->type == T_NAME && strcmp(t->val.u.s->s, name) == 0;
}

static int fail_at(parser *p, const jtoken *t, const char *fmt, ...) INFER_PRINTF(3, 4);
static int fail_at(parser *p, const jtoken *t, const char *fmt, ...)
{
    if (p->status)
        return p->status;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->status = infer_err(INFER_ERR_FORMAT, "chat template: syntax error at line %d, column %d: %s", t->line, t->col,
                          msg);
    return p->status;
}

static int fail_node(parser *p, const jnode *n, int status, const char *fmt, ...) INFER_PRINTF(4, 5);
static int fail_node(parser *p, const jnode *n, int status, const char *fmt, ...)
{
    if (p->status)
        return p->status;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status == INFER_ERR_FORMAT)
        p->status = infer_err(status, "chat template: syntax error at line %d, column %d: %s", n->line, n->col, msg);
    else
        p->status = infer_err(status, "chat template: line %d: %s", n->line, msg);
    return p->status;
}

static const char *describe(const jtoken *t)
{
    if (t->type == T_NAME)
        return t->val.u.s->s;
    return jtok_describe(t->type);
}

static jnode *mk(parser *p, int kind, const jtoken *t)
{
    if (p->status)
        return NULL;
    jinja_template *tpl = p->tpl;
    if (tpl->nnodes == tpl->capnodes) {
        size_t cap = tpl->capnodes ? tpl->capnodes * 2 : 256;
        jnode **nn = realloc(tpl->nodes, cap * sizeof *nn);
        if (!nn) {
            p->status = infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
            return NULL;
        }
        tpl->nodes = nn;
        tpl->capnodes = cap;
    }
    jnode *n = calloc(1, sizeof *n);
    if (!n) {
        p->status = infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
        return NULL;
    }
    tpl->nodes[tpl->nnodes++] = n;
    n->kind = kind;
    n->line = t->line;
    n->col = t->col;
    n->val = jv_none();
    n->attr = jv_none();
    return n;
}

static int add_kid(parser *p, jnode *n, jnode *kid)
{
    if (!kid)
        return p->status ? p->status : INFER_ERR_FORMAT;
    if (n->nkids == n->capkids) {
        int cap = n->capkids ? n->capkids * 2 : 4;
        jnode **k = realloc(n->kids, (size_t)cap * sizeof *k);
        if (!k)
            return p->status = infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
        n->kids = k;
        n->capkids = cap;
    }
    n->kids[n->nkids++] = kid;
    return 0;
}

static int expect(parser *p, int type, jtoken **out)
{
    jtoken *t = cur(p);
    if (t->type != type) {
        if (t->type == T_EOF)
            return fail_at(p, t, "unexpected end of template, expected '%s'.", jtok_describe(type));
        return fail_at(p, t, "expected token '%s', got '%s'", jtok_describe(type), describe(t));
    }
    advance(p);
    if (out)
        *out = t;
    return 0;
}

static int expect_name(parser *p, const char *name)
{
    jtoken *t = cur(p);
    if (!is_name(t, name)) {
        if (t->type == T_EOF)
            return fail_at(p, t, "unexpected end of template, expected '%s'.", name);
        return fail_at(p, t, "expected token '%s', got '%s'", name, describe(t));
    }
    advance(p);
    return 0;
}

static int skip_name(parser *p, const char *name)
{
    if (is_name(cur(p), name)) {
        advance(p);
        return 1;
    }
    return 0;
}

static int skip_type(parser *p, int type)
{
    if (cur(p)->type == type) {
        advance(p);
        return 1;
    }
    return 0;
}

static int enter(parser *p)
{
    if (++p->depth > PARSE_MAX_DEPTH)
        return fail_at(p, cur(p), "the template is nested too deeply");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Expressions                                                          */
/* ------------------------------------------------------------------ */

static jnode *parse_expression(parser *p, int with_condexpr);
static jnode *parse_tuple(parser *p, int simplified, int with_condexpr, const char *const *extra_end,
                          int explicit_parens, int with_namespace);
static jnode *parse_primary(parser *p, int with_namespace);
static jnode *parse_postfix(parser *p, jnode *node);
static jnode *parse_filter_expr(parser *p, jnode *node);
static jnode *parse_filter(parser *p, jnode *node, int start_inline);
static jnode *parse_unary(parser *p, int with_filter);

static jnode *parse_condexpr(parser *p)
{
    if (enter(p))
        return NULL;
    jtoken *start = cur(p);
    jnode *expr1 = parse_expression(p, 0);
    while (expr1 && skip_name(p, "if")) {
        jnode *expr2 = parse_expression(p, 0);
        jnode *expr3 = NULL;
        if (!expr2)
            return NULL;
        if (skip_name(p, "else")) {
            expr3 = parse_condexpr(p);
            if (!expr3)
                return NULL;
        }
        jnode *n = mk(p, N_CONDEXPR, start);
        if (!n)
            return NULL;
        n->a = expr2;
        n->b = expr1;
        n->c = expr3;
        expr1 = n;
        start = cur(p);
    }
    p->depth--;
    return expr1;
}

static jnode *parse_not(parser *p);

static jnode *parse_and(parser *p)
{
    jnode *left = parse_not(p);
    while (left && is_name(cur(p), "and")) {
        jtoken *t = advance(p);
        jnode *right = parse_not(p);
        jnode *n = right ? mk(p, N_AND, t) : NULL;
        if (!n)
            return NULL;
        n->a = left;
        n->b = right;
        left = n;
    }
    return left;
}

static jnode *parse_or(parser *p)
{
    jnode *left = parse_and(p);
    while (left && is_name(cur(p), "or")) {
        jtoken *t = advance(p);
        jnode *right = parse_and(p);
        jnode *n = right ? mk(p, N_OR, t) : NULL;
        if (!n)
            return NULL;
        n->a = left;
        n->b = right;
        left = n;
    }
    return left;
}

static jnode *parse_math1(parser *p);

static jnode *parse_compare(parser *p)
{
    jtoken *start = cur(p);
    jnode *expr = parse_math1(p);
    if (!expr)
        return NULL;
    jnode *cmp = NULL;
    for (;;) {
        jtoken *t = cur(p);
        int op = 0;
        switch (t->type) {
        case T_EQ: op = CMP_EQ; break;
        case T_NE: op = CMP_NE; break;
        case T_LT: op = CMP_LT; break;
        case T_LTEQ: op = CMP_LE; break;
        case T_GT: op = CMP_GT; break;
        case T_GTEQ: op = CMP_GE; break;
        default: break;
        }
        if (op) {
            advance(p);
        } else if (is_name(t, "in")) {
            advance(p);
            op = CMP_IN;
        } else if (is_name(t, "not") && is_name(look(p), "in")) {
            advance(p);
            advance(p);
            op = CMP_NOTIN;
        } else {
            break;
        }
        jnode *rhs = parse_math1(p);
        if (!rhs)
            return NULL;
        if (!cmp) {
            cmp = mk(p, N_COMPARE, start);
            if (!cmp)
                return NULL;
            cmp->a = expr;
        }
        jnode *o = mk(p, N_OPERAND, t);
        if (!o)
            return NULL;
        o->op = op;
        o->a = rhs;
        if (add_kid(p, cmp, o))
            return NULL;
    }
    return cmp ? cmp : expr;
}

static jnode *parse_not(parser *p)
{
    if (is_name(cur(p), "not")) {
        if (enter(p))
            return NULL;
        jtoken *t = advance(p);
        jnode *inner = parse_not(p);
        jnode *n = inner ? mk(p, N_NOT, t) : NULL;
        if (!n)
            return NULL;
        n->a = inner;
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static jnode *binop(parser *p, const jtoken *t, int op, jnode *a, jnode *b)
{
    if (!a || !b)
        return NULL;
    jnode *n = mk(p, N_BINOP, t);
    if (!n)
        return NULL;
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(parser *p)
{
    jnode *left = parse_unary(p, 1);
    while (left && cur(p)->type == T_POW) {
        jtoken *t = advance(p);
        left = binop(p, t, OP_POW, left, parse_unary(p, 1));
    }
    return left;
}

static jnode *parse_math2(parser *p)
{
    jnode *left = parse_pow(p);
    while (left) {
        int type = cur(p)->type;
        int op = type == T_MUL ? OP_MUL : type == T_DIV ? OP_DIV : type == T_FLOORDIV ? OP_FLOORDIV
                 : type == T_MOD ? OP_MOD : 0;
        if (!op)
            break;
        jtoken *t = advance(p);
        left = binop(p, t, op, left, parse_pow(p));
    }
    return left;
}

static jnode *parse_concat(parser *p)
{
    jtoken *start = cur(p);
    jnode *first = parse_math2(p);
    if (!first || cur(p)->type != T_TILDE)
        return first;
    jnode *n = mk(p, N_CONCAT, start);
    if (!n || add_kid(p, n, first))
        return NULL;
    while (cur(p)->type == T_TILDE) {
        advance(p);
        if (add_kid(p, n, parse_math2(p)))
            return NULL;
    }
    return n;
}

static jnode *parse_math1(parser *p)
{
    jnode *left = parse_concat(p);
    while (left && (cur(p)->type == T_ADD || cur(p)->type == T_SUB)) {
        jtoken *t = advance(p);
        left = binop(p, t, t->type == T_ADD ? OP_ADD : OP_SUB, left, parse_concat(p));
    }
    return left;
}

static jnode *parse_unary(parser *p, int with_filter)
{
    jtoken *t = cur(p);
    jnode *node;
    if (enter(p))
        return NULL;
    if (t->type == T_SUB || t->type == T_ADD) {
        advance(p);
        jnode *inner = parse_unary(p, 0);
        node = inner ? mk(p, N_NEG, t) : NULL;
        if (node) {
            node->a = inner;
            node->op = t->type == T_ADD;
        }
    } else {
        node = parse_primary(p, 0);
    }
    if (node)
        node = parse_postfix(p, node);
    if (node && with_filter)
        node = parse_filter_expr(p, node);
    p->depth--;
    return node;
}

static jnode *parse_list(parser *p)
{
    jtoken *t;
    if (expect(p, T_LBRACKET, &t))
        return NULL;
    jnode *n = mk(p, N_LIST, t);
    if (!n)
        return NULL;
    while (cur(p)->type != T_RBRACKET) {
        if (n->nkids && expect(p, T_COMMA, NULL))
            return NULL;
        if (cur(p)->type == T_RBRACKET)
            break;
        if (add_kid(p, n, parse_expression(p, 1)))
            return NULL;
    }
    if (expect(p, T_RBRACKET, NULL))
        return NULL;
    return n;
}

static jnode *parse_dict(parser *p)
{
    jtoken *t;
    if (expect(p, T_LBRACE, &t))
        return NULL;
    jnode *n = mk(p, N_DICT, t);
    if (!n)
        return NULL;
    while (cur(p)->type != T_RBRACE) {
        if (n->nkids && expect(p, T_COMMA, NULL))
            return NULL;
        if (cur(p)->type == T_RBRACE)
            break;
        jtoken *kt = cur(p);
        jnode *key = parse_expression(p, 1);
        if (!key || expect(p, T_COLON, NULL))
            return NULL;
        jnode *value = parse_expression(p, 1);
        jnode *pair = value ? mk(p, N_PAIR, kt) : NULL;
        if (!pair)
            return NULL;
        pair->a = key;
        pair->b = value;
        if (add_kid(p, n, pair))
            return NULL;
    }
    if (expect(p, T_RBRACE, NULL))
        return NULL;
    return n;
}

static jnode *parse_primary(parser *p, int with_namespace)
{
    jtoken *t = cur(p);
    jnode *n;
    switch (t->type) {
    case T_NAME: {
        advance(p);
        const char *s = t->val.u.s->s;
        if (!strcmp(s, "true") || !strcmp(s, "false") || !strcmp(s, "True") || !strcmp(s, "False")) {
            n = mk(p, N_CONST, t);
            if (n)
                n->val = jv_bool(s[0] == 't' || s[0] == 'T');
            return n;
        }
        if (!strcmp(s, "none") || !strcmp(s, "None")) {
            n = mk(p, N_CONST, t);
            if (n)
                n->val = jv_none();
            return n;
        }
        if (with_namespace && cur(p)->type == T_DOT) {
            advance(p);
            jtoken *attr;
            if (expect(p, T_NAME, &attr))
                return NULL;
            n = mk(p, N_NSREF, t);
            if (n) {
                n->val = jv_retain(t->val);
                n->attr = jv_retain(attr->val);
            }
            return n;
        }
        n = mk(p, N_NAME, t);
        if (n)
            n->val = jv_retain(t->val);
        return n;
    }
    case T_STRING: {
        advance(p);
        n = mk(p, N_CONST, t);
        if (!n)
            return NULL;
        if (cur(p)->type != T_STRING) {
            n->val = jv_retain(t->val);
            return n;
        }
        size_t total = t->val.u.s->len;
        for (size_t k = p->i; p->lx.toks[k].type == T_STRING; k++)
            total += p->lx.toks[k].val.u.s->len;
        jstr *s = jstr_alloc(total);
        if (!s) {
            p->status = infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
            return NULL;
        }
        size_t o = t->val.u.s->len;
        memcpy(s->s, t->val.u.s->s, o);
        while (cur(p)->type == T_STRING) {
            jtoken *u = advance(p);
            memcpy(s->s + o, u->val.u.s->s, u->val.u.s->len);
            o += u->val.u.s->len;
        }
        n->val = jv_str(s);
        return n;
    }
    case T_INT:
    case T_FLOAT:
        advance(p);
        n = mk(p, N_CONST, t);
        if (n)
            n->val = t->val;
        return n;
    case T_LPAREN:
        advance(p);
        n = parse_tuple(p, 0, 1, NULL, 1, 0);
        if (!n || expect(p, T_RPAREN, NULL))
            return NULL;
        return n;
    case T_LBRACKET:
        return parse_list(p);
    case T_LBRACE:
        return parse_dict(p);
    default:
        fail_at(p, t, "unexpected '%s'", describe(t));
        return NULL;
    }
}

static int is_tuple_end(parser *p, const char *const *extra_end)
{
    jtoken *t = cur(p);
    if (t->type == T_VAR_END || t->type == T_BLOCK_END || t->type == T_RPAREN)
        return 1;
    if (extra_end)
        for (int i = 0; extra_end[i]; i++)
            if (is_name(t, extra_end[i]))
                return 1;
    return 0;
}

static jnode *parse_tuple(parser *p, int simplified, int with_condexpr, const char *const *extra_end,
                          int explicit_parens, int with_namespace)
{
    jtoken *start = cur(p);
    jnode *tuple = NULL, *first = NULL;
    int count = 0, is_tuple = 0;
    for (;;) {
        if (count && expect(p, T_COMMA, NULL))
            return NULL;
        if (is_tuple_end(p, extra_end))
            break;
        jnode *e = simplified ? parse_primary(p, with_namespace) : parse_expression(p, with_condexpr);
        if (!e)
            return NULL;
        if (count == 0) {
            first = e;
        } else {
            if (!tuple) {
                tuple = mk(p, N_TUPLE, start);
                if (!tuple || add_kid(p, tuple, first))
                    return NULL;
            }
            if (add_kid(p, tuple, e))
                return NULL;
        }
        count++;
        if (cur(p)->type == T_COMMA)
            is_tuple = 1;
        else
            break;
    }
    if (!is_tuple) {
        if (count)
            return first;
        if (!explicit_parens) {
            fail_at(p, cur(p), "Expected an expression, got '%s'", describe(cur(p)));
            return NULL;
        }
    }
    if (!tuple) {
        tuple = mk(p, N_TUPLE, start);
        if (tuple && first && add_kid(p, tuple, first))
            return NULL;
    }
    return tuple;
}

static jnode *parse_expression(parser *p, int with_condexpr)
{
    if (with_condexpr)
        return parse_condexpr(p);
    return parse_or(p);
}

static jnode *parse_subscribed(parser *p)
{
    jtoken *start = cur(p);
    jnode *args[3] = {NULL, NULL, NULL};
    if (cur(p)->type == T_COLON) {
        advance(p);
    } else {
        jnode *node = parse_expression(p, 1);
        if (!node)
            return NULL;
        if (cur(p)->type != T_COLON)
            return node;
        advance(p);
        args[0] = node;
    }
    if (cur(p)->type != T_COLON && cur(p)->type != T_RBRACKET && cur(p)->type != T_COMMA) {
        args[1] = parse_expression(p, 1);
        if (!args[1])
            return NULL;
    }
    if (cur(p)->type == T_COLON) {
        advance(p);
        if (cur(p)->type != T_RBRACKET && cur(p)->type != T_COMMA) {
            args[2] = parse_expression(p, 1);
            if (!args[2])
                return NULL;
        }
    }
    jnode *n = mk(p, N_SLICE, start);
    if (n) {
        n->a = args[0];
        n->b = args[1];
        n->c = args[2];
    }
    return n;
}

static jnode *parse_subscript(parser *p, jnode *node)
{
    jtoken *t = advance(p);
    if (t->type == T_DOT) {
        jtoken *attr = cur(p);
        advance(p);
        if (attr->type == T_NAME) {
            jnode *n = mk(p, N_GETATTR, t);
            if (n) {
                n->a = node;
                n->val = jv_retain(attr->val);
            }
            return n;
        }
        if (attr->type != T_INT) {
            fail_at(p, attr, "expected name or number");
            return NULL;
        }
        jnode *c = mk(p, N_CONST, attr);
        jnode *n = c ? mk(p, N_GETITEM, t) : NULL;
        if (!n)
            return NULL;
        c->val = attr->val;
        n->a = node;
        n->b = c;
        return n;
    }
    /* '[' */
    jnode *first = NULL, *tuple = NULL;
    int count = 0;
    while (cur(p)->type != T_RBRACKET) {
        if (count && expect(p, T_COMMA, NULL))
            return NULL;
        jnode *e = parse_subscribed(p);
        if (!e)
            return NULL;
        if (count == 0) {
            first = e;
        } else {
            if (!tuple) {
                tuple = mk(p, N_TUPLE, t);
                if (!tuple || add_kid(p, tuple, first))
                    return NULL;
            }
            if (add_kid(p, tuple, e))
                return NULL;
        }
        count++;
    }
    if (expect(p, T_RBRACKET, NULL))
        return NULL;
    jnode *n = mk(p, N_GETITEM, t);
    if (!n)
        return NULL;
    if (count == 0) {
        tuple = mk(p, N_TUPLE, t);
        if (!tuple)
            return NULL;
    }
    n->a = node;
    n->b = tuple ? tuple : first;
    return n;
}

/* Call arguments into n's kids (N_KWARG for keywords), d = *args, e = **kwargs. */
static int parse_call_args(parser *p, jnode *n)
{
    jtoken *t;
    if (expect(p, T_LPAREN, &t))
        return p->status;
    int require_comma = 0, have_kwargs = 0;
    while (cur(p)->type != T_RPAREN) {
        if (require_comma) {
            if (expect(p, T_COMMA, NULL))
                return p->status;
            if (cur(p)->type == T_RPAREN)
                break;
        }
        if (cur(p)->type == T_MUL) {
            if (n->d || n->e)
                return fail_at(p, t, "invalid syntax for function call expression");
            advance(p);
            if (!(n->d = parse_expression(p, 1)))
                return p->status;
        } else if (cur(p)->type == T_POW) {
            if (n->e)
                return fail_at(p, t, "invalid syntax for function call expression");
            advance(p);
            if (!(n->e = parse_expression(p, 1)))
                return p->status;
        } else if (cur(p)->type == T_NAME && look(p)->type == T_ASSIGN) {
            if (n->e)
                return fail_at(p, t, "invalid syntax for function call expression");
            jtoken *key = advance(p);
            advance(p);
            jnode *value = parse_expression(p, 1);
            jnode *kw = value ? mk(p, N_KWARG, key) : NULL;
            if (!kw)
                return p->status;
            kw->val = jv_retain(key->val);
            kw->a = value;
            if (add_kid(p, n, kw))
                return p->status;
            have_kwargs = 1;
        } else {
            if (n->d || n->e || have_kwargs)
                return fail_at(p, t, "invalid syntax for function call expression");
            if (add_kid(p, n, parse_expression(p, 1)))
                return p->status;
        }
        require_comma = 1;
    }
    return expect(p, T_RPAREN, NULL);
}

static jnode *parse_call(parser *p, jnode *node)
{
    jnode *n = mk(p, N_CALL, cur(p));
    if (!n)
        return NULL;
    n->a = node;
    if (parse_call_args(p, n))
        return NULL;
    return n;
}

static jnode *parse_postfix(parser *p, jnode *node)
{
    while (node) {
        int type = cur(p)->type;
        if (type == T_DOT || type == T_LBRACKET)
            node = parse_subscript(p, node);
        else if (type == T_LPAREN)
            node = parse_call(p, node);
        else
            break;
    }
    return node;
}

/* A dotted name after '|' or 'is'. */
static int parse_dotted_name(parser *p, jv *out)
{
    jtoken *t;
    if (expect(p, T_NAME, &t))
        return p->status;
    if (cur(p)->type != T_DOT) {
        *out = jv_retain(t->val);
        return 0;
    }
    char buf[512];
    size_t o = (size_t)snprintf(buf, sizeof buf, "%s", t->val.u.s->s);
    while (cur(p)->type == T_DOT) {
        advance(p);
        jtoken *u;
        if (expect(p, T_NAME, &u))
            return p->status;
        if (o < sizeof buf)
            o += (size_t)snprintf(buf + o, sizeof buf - o, ".%s", u->val.u.s->s);
    }
    jstr *s = jstr_new(buf, strlen(buf));
    if (!s)
        return p->status = infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    *out = jv_str(s);
    return 0;
}

static jnode *parse_filter(parser *p, jnode *node, int start_inline)
{
    while (cur(p)->type == T_PIPE || start_inline) {
        if (!start_inline)
            advance(p);
        jtoken *t = cur(p);
        jnode *f = mk(p, N_FILTER, t);
        if (!f || parse_dotted_name(p, &f->val))
            return NULL;
        f->op = jfilter_lookup(f->val.u.s->s);
        f->a = node;
        if (cur(p)->type == T_LPAREN && parse_call_args(p, f))
            return NULL;
        node = f;
        start_inline = 0;
    }
    return node;
}

static jnode *parse_test(parser *p, jnode *node)
{
    jtoken *t = advance(p); /* 'is' */
    int negated = skip_name(p, "not");
    jnode *n = mk(p, N_TEST, t);
    if (!n || parse_dotted_name(p, &n->val))
        return NULL;
    n->op = jtest_lookup(n->val.u.s->s);
    n->a = node;
    jtoken *c = cur(p);
    if (c->type == T_LPAREN) {
        if (parse_call_args(p, n))
            return NULL;
    } else if ((c->type == T_NAME || c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT ||
                c->type == T_LPAREN || c->type == T_LBRACKET || c->type == T_LBRACE) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) {
            fail_at(p, c, "You cannot chain multiple tests with is");
            return NULL;
        }
        jnode *arg = parse_primary(p, 0);
        if (arg)
            arg = parse_postfix(p, arg);
        if (!arg || add_kid(p, n, arg))
            return NULL;
    }
    if (negated) {
        jnode *neg = mk(p, N_NOT, t);
        if (!neg)
            return NULL;
        neg->a = n;
        return neg;
    }
    return n;
}

static jnode *parse_filter_expr(parser *p, jnode *node)
{
    while (node) {
        jtoken *t = cur(p);
        if (t->type == T_PIPE)
            node = parse_filter(p, node, 0);
        else if (is_name(t, "is"))
            node = parse_test(p, node);
        else if (t->type == T_LPAREN)
            node = parse_call(p, node);
        else
            break;
    }
    return node;
}

/* ------------------------------------------------------------------ */
/* Statements                                                           */
/* ------------------------------------------------------------------ */

static jnode *subparse(parser *p, const char *const *end_tokens, int nend);

static int can_assign(const jnode *n)
{
    if (n->kind == N_NAME || n->kind == N_NSREF)
        return 1;
    if (n->kind == N_TUPLE) {
        for (int i = 0; i < n->nkids; i++)
            if (!can_assign(n->kids[i]))
                return 0;
        return 1;
    }
    return 0;
}

static const char *node_kind_name(const jnode *n)
{
    switch (n->kind) {
    case N_CONST: return "const";
    case N_TUPLE: return "tuple";
    case N_LIST: return "list";
    case N_DICT: return "dict";
    case N_GETATTR: return "getattr";
    case N_GETITEM: return "getitem";
    case N_CALL: return "call";
    case N_FILTER: return "filter";
    case N_TEST: return "test";
    case N_CONDEXPR: return "condexpr";
    default: return "expr";
    }
}

static jnode *parse_assign_target(parser *p, int with_tuple, int name_only, const char *const *extra_end,
                                  int with_namespace)
{
    jnode *target;
    if (name_only) {
        jtoken *t;
        if (expect(p, T_NAME, &t))
            return NULL;
        target = mk(p, N_NAME, t);
        if (target)
            target->val = jv_retain(t->val);
    } else if (with_tuple) {
        target = parse_tuple(p, 1, 1, extra_end, 0, with_namespace);
    } else {
        target = parse_primary(p, with_namespace);
    }
    if (!target)
        return NULL;
    if (!can_assign(target)) {
        fail_node(p, target, INFER_ERR_FORMAT, "can't assign to '%s'", node_kind_name(target));
        return NULL;
    }
    return target;
}

static void fail_unknown_or_eof(parser *p, const jtoken *at, const char *name)
{
    char msg[600];
    size_t o = 0;
    if (name)
        o += (size_t)snprintf(msg + o, sizeof msg - o, "Encountered unknown tag '%s'.", name);
    else
        o += (size_t)snprintf(msg + o, sizeof msg - o, "Unexpected end of template.");
    if (p->nends > 0) {
        const endset *e = &p->ends[p->nends - 1];
        int expected = 0;
        if (name)
            for (int k = 0; k < p->nends; k++)
                for (int j = 0; j < p->ends[k].n; j++)
                    if (!strcmp(p->ends[k].names[j], name))
                        expected = 1;
        o += (size_t)snprintf(msg + o, sizeof msg - o, expected ? " You probably made a nesting mistake. Jinja is "
                                                                  "expecting this tag, but currently looking for "
                                                                : " Jinja was looking for the following tags: ");
        for (int j = 0; j < e->n && o < sizeof msg; j++)
            o += (size_t)snprintf(msg + o, sizeof msg - o, "%s'%s'", j ? " or " : "", e->names[j]);
        if (o < sizeof msg)
            o += (size_t)snprintf(msg + o, sizeof msg - o, ".");
    }
    if (p->ntags > 0 && o < sizeof msg)
        snprintf(msg + o, sizeof msg - o, " The innermost block that needs to be closed is '%s'.",
                 p->tags[p->ntags - 1]);
    fail_at(p, at, "%s", msg);
}

/* Parses the statements up to one of end_tokens; the current token is
 * then that end name (consumed when drop_needle). */
static jnode *parse_statements(parser *p, const char *const *end_tokens, int nend, int drop_needle)
{
    skip_type(p, T_COLON);
    if (expect(p, T_BLOCK_END, NULL))
        return NULL;
    jnode *body = subparse(p, end_tokens, nend);
    if (!body)
        return NULL;
    if (cur(p)->type == T_EOF) {
        if (p->nends < 64) {
            p->ends[p->nends].names = end_tokens;
            p->ends[p->nends].n = nend;
            p->nends++;
        }
        fail_unknown_or_eof(p, cur(p), NULL);
        return NULL;
    }
    if (drop_needle)
        advance(p);
    return body;
}

static const char *const END_FOR[] = {"endfor", "else"};
static const char *const END_FOR_ONLY[] = {"endfor"};
static const char *const END_IF[] = {"elif", "else", "endif"};
static const char *const END_IF_ONLY[] = {"endif"};
static const char *const END_SET[] = {"endset"};
static const char *const END_MACRO[] = {"endmacro"};
static const char *const END_CALL[] = {"endcall"};
static const char *const END_FILTER[] = {"endfilter"};
static const char *const END_WITH[] = {"endwith"};
static const char *const END_AUTOESCAPE[] = {"endautoescape"};
static const char *const END_BLOCK[] = {"endblock"};
static const char *const END_GENERATION[] = {"endgeneration"};
static const char *const IN_END[] = {"in", NULL};
static const char *const RECURSIVE_END[] = {"recursive", NULL};

static jnode *parse_for(parser *p, jtoken *t)
{
    jnode *n = mk(p, N_FOR, t);
    if (!n)
        return NULL;
    advance(p);
    if (!(n->a = parse_assign_target(p, 1, 0, IN_END, 0)))
        return NULL;
    if (expect_name(p, "in"))
        return NULL;
    if (!(n->b = parse_tuple(p, 0, 0, RECURSIVE_END, 0, 0)))
        return NULL;
    if (skip_name(p, "if") && !(n->c = parse_expression(p, 1)))
        return NULL;
    if (skip_name(p, "recursive"))
        n->flags = 1;
    if (!(n->d = parse_statements(p, END_FOR, 2, 0)))
        return NULL;
    jtoken *end = advance(p);
    if (!strcmp(end->val.u.s->s, "else")) {
        if (!(n->e = parse_statements(p, END_FOR_ONLY, 1, 1)))
            return NULL;
    }
    return n;
}

static jnode *parse_if(parser *p, jtoken *t)
{
    advance(p);
    jnode *result = mk(p, N_IF, t), *node = result;
    if (!result)
        return NULL;
    for (;;) {
        if (!(node->a = parse_tuple(p, 0, 0, NULL, 0, 0)))
            return NULL;
        if (!(node->b = parse_statements(p, END_IF, 3, 0)))
            return NULL;
        jtoken *tok = advance(p);
        if (is_name(tok, "elif")) {
            jnode *elif = mk(p, N_IF, cur(p));
            if (!elif)
                return NULL;
            node->c = elif;
            node = elif;
            continue;
        }
        if (is_name(tok, "else") && !(node->c = parse_statements(p, END_IF_ONLY, 1, 1)))
            return NULL;
        break;
    }
    return result;
}

static jnode *parse_set(parser *p, jtoken *t)
{
    advance(p);
    jnode *target = parse_assign_target(p, 1, 0, NULL, 1);
    if (!target)
        return NULL;
    if (skip_type(p, T_ASSIGN)) {
        jnode *n = mk(p, N_SET, t);
        if (!n)
            return NULL;
        n->a = target;
        if (!(n->b = parse_tuple(p, 0, 1, NULL, 0, 0)))
            return NULL;
        return n;
    }
    jnode *n = mk(p, N_SETBLOCK, t);
    if (!n)
        return NULL;
    n->a = target;
    n->b = parse_filter(p, NULL, 0);
    if (p->status)
        return NULL;
    if (!(n->c = parse_statements(p, END_SET, 1, 1)))
        return NULL;
    return n;
}

static int parse_signature(parser *p, jnode *n)
{
    if (expect(p, T_LPAREN, NULL))
        return p->status;
    int have_default = 0;
    while (cur(p)->type != T_RPAREN) {
        if (n->nkids && expect(p, T_COMMA, NULL))
            return p->status;
        jnode *arg = parse_assign_target(p, 1, 1, NULL, 0);
        if (!arg)
            return p->status;
        arg->kind = N_PARAM;
        if (skip_type(p, T_ASSIGN)) {
            if (!(arg->a = parse_expression(p, 1)))
                return p->status;
            have_default = 1;
        } else if (have_default) {
            return fail_at(p, cur(p), "non-default argument follows default argument");
        }
        if (add_kid(p, n, arg))
            return p->status;
    }
    return expect(p, T_RPAREN, NULL);
}

/* Which special names (varargs, kwargs, caller) a macro body reads. */
static int special_names(const jnode *n, int depth)
{
    if (!n || depth > TREE_MAX_DEPTH)
        return 0;
    int f = 0;
    if (n->kind == N_NAME) {
        const char *s = n->val.u.s->s;
        if (!strcmp(s, "varargs"))
            f |= MF_VARARGS;
        else if (!strcmp(s, "kwargs"))
            f |= MF_KWARGS;
        else if (!strcmp(s, "caller"))
            f |= MF_CALLER;
        return f;
    }
    if (n->kind == N_MACRO || n->kind == N_CALLBLOCK) {
        /* a nested macro's parameters' defaults are read in this frame */
        for (int i = 0; i < n->nkids; i++)
            f |= special_names(n->kids[i]->a, depth + 1);
        if (n->kind == N_CALLBLOCK)
            f |= special_names(n->a, depth + 1);
        return f;
    }
    f |= special_names(n->a, depth + 1) | special_names(n->b, depth + 1) | special_names(n->c, depth + 1) |
         special_names(n->d, depth + 1) | special_names(n->e, depth + 1);
    for (int i = 0; i < n->nkids; i++)
        f |= special_names(n->kids[i], depth + 1);
    return f;
}

static int macro_flags(parser *p, jnode *n)
{
    int f = special_names(n->b, 0);
    for (int i = 0; i < n->nkids; i++) {
        const char *s = n->kids[i]->val.u.s->s;
        if (!strcmp(s, "varargs"))
            f &= ~MF_VARARGS;
        if (!strcmp(s, "kwargs"))
            f &= ~MF_KWARGS;
        if (!strcmp(s, "caller")) {
            if (f & MF_CALLER) {
                if (!n->kids[i]->a)
                    return fail_node(p, n, INFER_ERR_FORMAT,
                                     "When defining macros or call blocks the special \"caller\" argument must be "
                                     "omitted or be given a default.");
                f &= ~MF_CALLER;
            }
        }
    }
    n->flags = f;
    return 0;
}

static jnode *parse_macro(parser *p, jtoken *t)
{
    advance(p);
    jnode *n = mk(p, N_MACRO, t);
    if (!n)
        return NULL;
    jnode *name = parse_assign_target(p, 1, 1, NULL, 0);
    if (!name)
        return NULL;
    n->val = jv_retain(name->val);
    if (parse_signature(p, n))
        return NULL;
    if (!(n->b = parse_statements(p, END_MACRO, 1, 1)))
        return NULL;
    if (macro_flags(p, n))
        return NULL;
    return n;
}

static jnode *parse_call_block(parser *p, jtoken *t)
{
    advance(p);
    jnode *n = mk(p, N_CALLBLOCK, t);
    if (!n)
        return NULL;
    if (cur(p)->type == T_LPAREN && parse_signature(p, n))
        return NULL;
    jnode *call = parse_expression(p, 1);
    if (!call)
        return NULL;
    if (call->kind != N_CALL) {
        fail_node(p, n, INFER_ERR_FORMAT, "expected call");
        return NULL;
    }
    n->a = call;
    if (!(n->b = parse_statements(p, END_CALL, 1, 1)))
        return NULL;
    if (macro_flags(p, n))
        return NULL;
    return n;
}

static jnode *parse_statement(parser *p);

static jnode *parse_statement_inner(parser *p, jtoken *t)
{
    const char *name = t->val.u.s->s;
    jnode *n;
    if (!strcmp(name, "for"))
        return parse_for(p, t);
    if (!strcmp(name, "if"))
        return parse_if(p, t);
    if (!strcmp(name, "set"))
        return parse_set(p, t);
    if (!strcmp(name, "macro"))
        return parse_macro(p, t);
    if (!strcmp(name, "call"))
        return parse_call_block(p, t);
    if (!strcmp(name, "filter")) {
        advance(p);
        n = mk(p, N_FILTERBLOCK, t);
        if (!n || !(n->a = parse_filter(p, NULL, 1)) || !(n->b = parse_statements(p, END_FILTER, 1, 1)))
            return NULL;
        return n;
    }
    if (!strcmp(name, "with")) {
        advance(p);
        n = mk(p, N_WITH, t);
        if (!n)
            return NULL;
        while (cur(p)->type != T_BLOCK_END) {
            if (n->nkids && expect(p, T_COMMA, NULL))
                return NULL;
            jtoken *st = cur(p);
            jnode *target = parse_assign_target(p, 1, 0, NULL, 0);
            if (!target || expect(p, T_ASSIGN, NULL))
                return NULL;
            jnode *value = parse_expression(p, 1);
            jnode *set = value ? mk(p, N_SET, st) : NULL;
            if (!set)
                return NULL;
            set->a = target;
            set->b = value;
            if (add_kid(p, n, set))
                return NULL;
        }
        if (!(n->b = parse_statements(p, END_WITH, 1, 1)))
            return NULL;
        return n;
    }
    if (!strcmp(name, "autoescape")) {
        advance(p);
        n = mk(p, N_AUTOESCAPE, t);
        if (!n || !(n->a = parse_expression(p, 1)) || !(n->b = parse_statements(p, END_AUTOESCAPE, 1, 1)))
            return NULL;
        return n;
    }
    if (!strcmp(name, "print")) {
        advance(p);
        n = mk(p, N_BODY, t);
        if (!n)
            return NULL;
        while (cur(p)->type != T_BLOCK_END) {
            if (n->nkids && expect(p, T_COMMA, NULL))
                return NULL;
            jtoken *st = cur(p);
            jnode *e = parse_expression(p, 1);
            jnode *o = e ? mk(p, N_OUTPUT, st) : NULL;
            if (!o || add_kid(p, n, o))
                return NULL;
            o->a = e;
        }
        return n;
    }
    if (!strcmp(name, "break") || !strcmp(name, "continue")) {
        advance(p);
        return mk(p, name[0] == 'b' ? N_BREAK : N_CONTINUE, t);
    }
    if (!strcmp(name, "generation")) {
        advance(p);
        n = mk(p, N_SCOPE, t);
        if (!n || !(n->b = parse_statements(p, END_GENERATION, 1, 1)))
            return NULL;
        n->flags = 1; /* renders in place */
        return n;
    }
    if (!strcmp(name, "block")) {
        advance(p);
        n = mk(p, N_SCOPE, t);
        jtoken *bn;
        if (!n || expect(p, T_NAME, &bn))
            return NULL;
        skip_name(p, "scoped");
        skip_name(p, "required");
        if (cur(p)->type == T_SUB) {
            fail_at(p, cur(p), "Block names in Jinja have to be valid Python identifiers and may not contain "
                               "hyphens, use an underscore instead.");
            return NULL;
        }
        if (!(n->b = parse_statements(p, END_BLOCK, 1, 1)))
            return NULL;
        skip_name(p, bn->val.u.s->s);
        return n;
    }
    if (!strcmp(name, "extends") || !strcmp(name, "include") || !strcmp(name, "import") ||
        !strcmp(name, "from")) {
        advance(p);
        n = mk(p, N_UNSUPPORTED, t);
        if (!n || !(n->a = parse_expression(p, 1)))
            return NULL;
        n->val = jv_retain(t->val);
        /* skip the rest of the tag: loading other templates is not supported */
        while (cur(p)->type != T_BLOCK_END && cur(p)->type != T_EOF)
            advance(p);
        return n;
    }
    fail_unknown_or_eof(p, t, name);
    return NULL;
}

static jnode *parse_statement(parser *p)
{
    jtoken *t = cur(p);
    if (t->type != T_NAME) {
        fail_at(p, t, "tag name expected");
        return NULL;
    }
    if (enter(p))
        return NULL;
    int pushed = 0;
    static const char *const known[] = {"for", "if", "block", "extends", "print", "macro", "include", "from",
                                        "import", "set", "with", "autoescape", "call", "filter", "break",
                                        "continue", "generation"};
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        if (!strcmp(known[k], t->val.u.s->s) && p->ntags < 64) {
            p->tags[p->ntags++] = known[k];
            pushed = 1;
        }
    jnode *n = parse_statement_inner(p, t);
    if (pushed)
        p->ntags--;
    p->depth--;
    return n;
}

static jnode *subparse(parser *p, const char *const *end_tokens, int nend)
{
    jnode *body = mk(p, N_BODY, cur(p));
    if (!body)
        return NULL;
    int pushed = 0;
    if (end_tokens && p->nends < 64) {
        p->ends[p->nends].names = end_tokens;
        p->ends[p->nends].n = nend;
        p->nends++;
        pushed = 1;
    }
    jnode *result = body;
    while (cur(p)->type != T_EOF) {
        jtoken *t = cur(p);
        if (t->type == T_DATA) {
            jnode *d = mk(p, N_DATA, t);
            if (!d || add_kid(p, body, d)) {
                result = NULL;
                break;
            }
            d->val = jv_retain(t->val);
            advance(p);
        } else if (t->type == T_VAR_BEGIN) {
            advance(p);
            jtoken *st = cur(p);
            jnode *e = parse_tuple(p, 0, 1, NULL, 0, 0);
            jnode *o = e ? mk(p, N_OUTPUT, st) : NULL;
            if (!o || add_kid(p, body, o) || expect(p, T_VAR_END, NULL)) {
                result = NULL;
                break;
            }
            o->a = e;
        } else if (t->type == T_BLOCK_BEGIN) {
            advance(p);
            int at_end = 0;
            for (int k = 0; end_tokens && k < nend; k++)
                if (is_name(cur(p), end_tokens[k]))
                    at_end = 1;
            if (at_end)
                break;
            jnode *s = parse_statement(p);
            if (!s || add_kid(p, body, s) || expect(p, T_BLOCK_END, NULL)) {
                result = NULL;
                break;
            }
        } else {
            fail_at(p, t, "unexpected '%s'", describe(t));
            result = NULL;
            break;
        }
    }
    if (pushed)
        p->nends--;
    return result;
}

/* ------------------------------------------------------------------ */
/* The compiler's checks                                                */
/* ------------------------------------------------------------------ */

static int check(parser *p, const jnode *n, int soft, int in_loop, int depth);

static int check_kids(parser *p, const jnode *n, int soft, int in_loop, int depth)
{
    for (int i = 0; i < n->nkids; i++)
        if (check(p, n->kids[i], soft, in_loop, depth + 1))
            return p->status;
    return 0;
}

static int check_loop_target(parser *p, const jnode *t)
{
    if (t->kind == N_NAME && !strcmp(t->val.u.s->s, "loop"))
        return fail_node(p, t, INFER_ERR_FORMAT, "Can't assign to special loop variable in for-loop target");
    for (int i = 0; i < t->nkids; i++)
        if (check_loop_target(p, t->kids[i]))
            return p->status;
    return 0;
}

static int check(parser *p, const jnode *n, int soft, int in_loop, int depth)
{
    if (!n)
        return 0;
    if (depth > TREE_MAX_DEPTH)
        return fail_node(p, n, INFER_ERR_FORMAT, "the template is nested too deeply");
    int d = depth + 1;
    switch (n->kind) {
    case N_IF:
        if (check(p, n->a, 1, in_loop, d) || check(p, n->b, 1, in_loop, d) || check(p, n->c, 1, in_loop, d))
            return p->status;
        return 0;
    case N_CONDEXPR:
        if (check(p, n->a, 1, in_loop, d) || check(p, n->b, 1, in_loop, d) || check(p, n->c, 1, in_loop, d))
            return p->status;
        return 0;
    case N_FOR:
        if (check_loop_target(p, n->a) || check(p, n->a, 0, 0, d) || check(p, n->b, soft, in_loop, d) ||
            check(p, n->c, 0, 0, d) || check(p, n->d, 0, 1, d) || check(p, n->e, 0, in_loop, d))
            return p->status;
        return 0;
    case N_MACRO:
        if (check_kids(p, n, 0, 0, d) || check(p, n->b, 0, 0, d))
            return p->status;
        return 0;
    case N_CALLBLOCK:
        if (check_kids(p, n, 0, 0, d) || check(p, n->a, soft, in_loop, d) || check(p, n->b, 0, 0, d))
            return p->status;
        return 0;
    case N_SETBLOCK:
        if (check(p, n->a, soft, in_loop, d) || check(p, n->b, soft, in_loop, d) || check(p, n->c, 0, in_loop, d))
            return p->status;
        return 0;
    case N_FILTERBLOCK:
        if (check(p, n->a, 0, in_loop, d) || check(p, n->b, 0, in_loop, d))
            return p->status;
        return 0;
    case N_WITH:
        if (check_kids(p, n, soft, in_loop, d) || check(p, n->b, 0, in_loop, d))
            return p->status;
        return 0;
    case N_SCOPE:
        return check(p, n->b, n->flags ? soft : 0, n->flags ? in_loop : 0, d);
    case N_BREAK:
    case N_CONTINUE:
        if (!in_loop)
            return fail_node(p, n, INFER_ERR_FORMAT, "'%s' outside loop", n->kind == N_BREAK ? "break" : "continue");
        return 0;
    case N_FILTER:
    case N_TEST:
        if (n->op == -1 && !soft)
            return fail_node(p, n, INFER_ERR_FORMAT, "No %s named '%s'.", n->kind == N_FILTER ? "filter" : "test",
                             n->val.u.s->s);
        if (n->op == -2 && !soft)
            return fail_node(p, n, INFER_ERR_UNSUPPORTED, "the %s '%s' is not supported",
                             n->kind == N_FILTER ? "filter" : "test", n->val.u.s->s);
        break;
    default:
        break;
    }
    if (check(p, n->a, soft, in_loop, d) || check(p, n->b, soft, in_loop, d) || check(p, n->c, soft, in_loop, d) ||
        check(p, n->d, soft, in_loop, d) || check(p, n->e, soft, in_loop, d) || check_kids(p, n, soft, in_loop, d))
        return p->status;
    return 0;
}

/* ------------------------------------------------------------------ */

void jinja_template_free(jinja_template *tpl)
{
    if (!tpl)
        return;
    for (size_t i = 0; i < tpl->nnodes; i++) {
        jnode *n = tpl->nodes[i];
        jv_release(n->val);
        jv_release(n->attr);
        free(n->kids);
        free(n);
    }
    free(tpl->nodes);
    free(tpl);
}

int jinja_parse(const char *src, size_t len, jinja_template **out)
{
    *out = NULL;
    if (!src)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "chat template: no template text");
    if (len == (size_t)-1)
        len = strlen(src);
    parser p;
    memset(&p, 0, sizeof p);
    int rc = jinja_lex(src, len, &p.lx);
    if (rc)
        return rc;
    p.tpl = calloc(1, sizeof *p.tpl);
    if (!p.tpl) {
        jlex_free(&p.lx);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "chat template: out of memory");
    }
    jnode *root = subparse(&p, NULL, 0);
    if (root)
        check(&p, root, 0, 0, 0);
    if (!root && !p.status)
        p.status = infer_err(INFER_ERR_FORMAT, "chat template: syntax error");
    jlex_free(&p.lx);
    if (p.status) {
        jinja_template_free(p.tpl);
        return p.status;
    }
    p.tpl->root = root;
    *out = p.tpl;
    return 0;
}
