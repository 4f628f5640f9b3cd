/* jinja_int.h - internals shared by the files of the Jinja interpreter.
 *
 * Values (jv) are small tagged structs passed by value; strings, lists,
 * dicts and the other heap objects are reference counted.  A rendering is
 * single-threaded and owns all its values.  Functions that can fail return
 * 0 or an infer status, after recording the first failure's message in the
 * rendering's jx (jx_fail). */
#ifndef INFER_CHAT_JINJA_INT_H
#define INFER_CHAT_JINJA_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"
#include "core/error.h"

/* ------------------------------------------------------------------ */
/* Values                                                               */
/* ------------------------------------------------------------------ */

enum {
    JV_UNDEF, /* Jinja's Undefined; u.s = optional message (owned) */
    JV_NONE,
    JV_BOOL,  /* u.i = 0 or 1 */
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,  /* list, tuple, iterator or dict view (jlist.kind) */
    JV_DICT,
    JV_NS,    /* namespace(): a dict with attribute access, assignable */
    JV_FUNC,  /* builtins, bound methods, macros, cycler, joiner */
    JV_LOOP   /* a for loop's `loop` */
};

/* JV_UNDEF sub-kinds: what using the value raises. */
enum { JU_PLAIN = 0, JU_SECURITY = 1 };

typedef struct jstr {
    int rc;
    size_t len;
    char s[];  /* len bytes of UTF-8 and a NUL */
} jstr;

struct jlist;
struct jdict;
struct jfunc;
struct jloop;

typedef struct jv {
    uint8_t t;
    uint8_t sub;
    union {
        int64_t i;
        double f;
        jstr *s;
        struct jlist *l;
        struct jdict *d;
        struct jfunc *fn;
        struct jloop *lp;
    } u;
} jv;

enum {
    JL_LIST,
    JL_TUPLE,
    JL_ITER,   /* a generator / iterator: truthy, no len, one pass */
    JL_ITEMS,  /* dict_items / dict_keys / dict_values: like a list, printed differently */
    JL_KEYS,
    JL_VALUES,
    JL_RANGE   /* range(): a list printed as range(a, b[, c]) */
};

typedef struct jlist {
    int rc;
    uint8_t kind;
    uint8_t consumed;  /* JL_ITER after a pass */
    size_t n, cap;
    jv *v;
    int64_t r_start, r_stop, r_step; /* JL_RANGE */
} jlist;

typedef struct jdict {
    int rc;
    size_t n, cap;
    jv *k;
    jv *v;
    uint32_t *idx;  /* open-addressing index of entry+1 once n > 8 */
    size_t idx_cap;
} jdict;

static inline jv jv_undef(void) { jv v = {JV_UNDEF, 0, {0}}; return v; }
static inline jv jv_none(void) { jv v = {JV_NONE, 0, {0}}; return v; }
static inline jv jv_bool(int b) { jv v = {JV_BOOL, 0, {0}}; v.u.i = b ? 1 : 0; return v; }
static inline jv jv_int(int64_t i) { jv v = {JV_INT, 0, {0}}; v.u.i = i; return v; }
static inline jv jv_float(double f) { jv v = {JV_FLOAT, 0, {0}}; v.u.f = f; return v; }
static inline jv jv_str(jstr *s) { jv v = {JV_STR, 0, {0}}; v.u.s = s; return v; }
static inline jv jv_list(jlist *l) { jv v = {JV_LIST, 0, {0}}; v.u.l = l; return v; }
static inline jv jv_dict(jdict *d) { jv v = {JV_DICT, 0, {0}}; v.u.d = d; return v; }

static inline int jv_is_num(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static inline int jv_is_intlike(jv v) { return v.t == JV_INT || v.t == JV_BOOL; }
static inline int jv_is_seq(jv v) { return v.t == JV_LIST && v.u.l->kind != JL_ITER; }

jv jv_retain(jv v);
void jv_release(jv v);

jstr *jstr_new(const char *s, size_t n);
jstr *jstr_alloc(size_t n);  /* uninitialised bytes, NUL at n */
jlist *jlist_new(int kind, size_t cap);
int jlist_push(jlist *l, jv v);  /* takes v; -1 when out of memory (v released) */
jdict *jdict_new(void);
/* Takes k and v; replaces an existing key's value in place. -1 on OOM. */
int jdict_set(jdict *d, jv k, jv v);
jv *jdict_get(const jdict *d, jv k);
jv *jdict_get_str(const jdict *d, const char *k, size_t n);
void jdict_clear(jdict *d);

/* Python's hash and == for dict keys. */
int jv_hashable(jv v);

/* ------------------------------------------------------------------ */
/* UTF-8 and Python string helpers (jinja_str.c)                        */
/* ------------------------------------------------------------------ */

/* Decodes the code point at s[*i] (valid UTF-8 assumed) and advances *i. */
uint32_t u8_next(const char *s, size_t n, size_t *i);
/* Appends cp to buf (room for 4 bytes); returns the byte count. */
int u8_put(char *buf, uint32_t cp);
size_t u8_count(const char *s, size_t n);
/* Byte offset of code point index ci (clamped to n). */
size_t u8_offset(const char *s, size_t n, size_t ci);
/* 1 if s is valid UTF-8 without surrogates; else 0 and *bad = offset. */
int u8_valid(const char *s, size_t n, size_t *bad);
int py_isspace(uint32_t cp);
int py_isprintable(uint32_t cp);
int py_isalpha(uint32_t cp);
int py_isdigit(uint32_t cp);
int py_isdecimal(uint32_t cp);
int py_isnumeric(uint32_t cp);
int py_isalnum(uint32_t cp);
int py_iscased(uint32_t cp);
int py_islower_cp(uint32_t cp);
int py_isupper_cp(uint32_t cp);
int py_istitle_cp(uint32_t cp);
int py_isword(uint32_t cp);   /* regex \w */
int py_isident_start(uint32_t cp);
int py_isident_cont(uint32_t cp);
uint32_t py_upper(uint32_t cp);
uint32_t py_lower(uint32_t cp);
uint32_t py_title(uint32_t cp);

/* ------------------------------------------------------------------ */
/* A rendering                                                          */
/* ------------------------------------------------------------------ */

typedef struct jscope jscope;

typedef struct jx {
    jinja_limits lim;
    uint64_t steps;
    int depth;
    size_t out_total;
    int status;
    int has_line;
    char msg[768];
    jscope *root;
    jscope *retained;   /* scopes kept alive for macros defined in them */
    struct jlist *namespaces;  /* every namespace, to break cycles at the end */
    const struct jinja_template *tpl;
} jx;

int jx_fail(jx *x, int status, const char *fmt, ...) INFER_PRINTF(3, 4);
int jx_vfail(jx *x, int status, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
int jx_oom(jx *x);
/* Adds n to the step count; fails when over the limit. */
int jx_charge(jx *x, uint64_t n);

/* A growable output buffer; every append counts against max_output. */
typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;

int jbuf_put(jx *x, jbuf *b, const char *s, size_t n);
int jbuf_puts(jx *x, jbuf *b, const char *s);
int jbuf_putc(jx *x, jbuf *b, char c);
int jbuf_printf(jx *x, jbuf *b, const char *fmt, ...) INFER_PRINTF(3, 4);
/* Turns the buffer's contents into a string value (the buffer is emptied). */
int jbuf_take_str(jx *x, jbuf *b, jv *out);
void jbuf_free(jbuf *b);

int jv_make_str(jx *x, const char *s, size_t n, jv *out);
int jv_make_cstr(jx *x, const char *s, jv *out);

/* ------------------------------------------------------------------ */
/* Value operations (jinja_value.c)                                     */
/* ------------------------------------------------------------------ */

const char *jv_type_name(jv v);
int jv_truthy(jv v);
/* str(v) and repr(v) appended to b. */
int jv_write_str(jx *x, jv v, jbuf *b);
int jv_write_repr(jx *x, jv v, jbuf *b);
void py_float_repr(double f, char *buf, size_t cap);
/* str(v) as a string value. */
int jv_to_str(jx *x, jv v, jv *out);
/* Python ==. */
int jv_eq(jx *x, jv a, jv b);
/* Python <, for sort and comparisons: *lt = a < b.  Error when unorderable. */
int jv_lt(jx *x, jv a, jv b, int *lt);
/* Python's a <op> b for op = CMP_EQ ... CMP_GE. */
int jv_compare(jx *x, int op, jv a, jv b, int *res);
/* The items of an iterable as a list (a new reference).  Strings give their
 * characters, dicts their keys, undefined nothing. */
int jv_iterate(jx *x, jv v, jlist **out);
/* len(v). */
int jv_len(jx *x, jv v, int64_t *n);
/* Python `a in b`. */
int jv_contains(jx *x, jv container, jv item, int *res);
int jv_undefined_error(jx *x, jv u);
int jv_make_undef(jx *x, jv *out, const char *fmt, ...) INFER_PRINTF(3, 4);
/* Records the undefined for an attribute/element missing from obj. */
int jv_undef_missing(jx *x, jv obj, jv name, jv *out);

/* Python json.dumps. */
typedef struct jjson_opts {
    int ensure_ascii;
    int indent;          /* -1: none */
    const char *indent_str; size_t indent_len; /* a string indent, or NULL */
    const char *item_sep; size_t item_sep_len;
    const char *key_sep; size_t key_sep_len;
    int sort_keys;
} jjson_opts;
int jv_write_json(jx *x, jv v, const jjson_opts *o, jbuf *b);
/* json.loads. */
int jv_from_json(jx *x, const char *s, size_t n, jv *out);
int jv_from_cjson(jx *x, const void *cjson, jv *out);

/* Arithmetic as Python does it. */
enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW };
int jv_binop(jx *x, int op, jv a, jv b, jv *out);
int jv_neg(jx *x, jv a, int positive, jv *out);

/* String formatting: `fmt % args` and str.format. */
int py_percent_format(jx *x, jv fmt, jv args, jv *out);
struct jargs;
int py_str_format(jx *x, jstr *fmt, struct jargs *a, jv *out);
/* format(value, spec) for str.format fields. */
int py_format_value(jx *x, jv v, const char *spec, size_t slen, jbuf *b);

/* Python str methods shared by filters and methods (jinja_methods.c). */
enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE, CASE_SWAP };
int py_str_case(jx *x, const jstr *s, int mode, jv *out);
/* chars: JV_NONE for whitespace, or a string of characters to strip. */
int py_str_strip(jx *x, const jstr *s, jv chars, int left, int right, jv *out);
/* sep: JV_NONE for runs of whitespace. */
int py_str_split(jx *x, const jstr *s, jv sep, int64_t maxsplit, int from_right, jv *out);
int py_str_replace(jx *x, const jstr *s, const jstr *old, const jstr *rep, int64_t count, jv *out);
int py_str_splitlines(jx *x, const jstr *s, int keepends, jlist **out);
/* Jinja's escape(): & < > " ' as HTML entities. */
int py_html_escape(jx *x, jv v, jv *out);

/* ------------------------------------------------------------------ */
/* Calls                                                                */
/* ------------------------------------------------------------------ */

typedef struct jargs {
    int n;          /* positional */
    jv *pos;
    int nk;         /* keyword */
    jstr **kn;
    jv *kv;
} jargs;

/* Binds call arguments to named parameters as Python does.  slots[] holds
 * the defaults on entry (borrowed); on return the arguments (borrowed).
 * required: how many leading parameters have no default. */
int jargs_bind(jx *x, const char *fname, const jargs *a, const char *const *names, int nnames,
               int required, jv *slots);

typedef int (*jbuiltin_fn)(jx *x, jv self, jargs *a, jv *out);

enum { JF_BUILTIN, JF_METHOD, JF_MACRO, JF_CYCLER, JF_JOINER };

struct jnode;

typedef struct jfunc {
    int rc;
    int kind;
    const char *name;
    jbuiltin_fn fn;       /* JF_BUILTIN, JF_METHOD */
    jv self;              /* JF_METHOD: the receiver; JF_CYCLER: the items list */
    int64_t pos;          /* JF_CYCLER: current index; JF_JOINER: used */
    jv extra;             /* JF_JOINER: the separator */
    /* JF_MACRO */
    const struct jnode *node;
    jscope *scope;
    int is_caller;
    jv caller;            /* a call block's caller, given to the macro */
} jfunc;

jfunc *jfunc_new(int kind, const char *name);

/* A `for` loop's state (runtime.LoopContext). */
typedef struct jloop {
    int rc;
    int active;
    jlist *items;         /* the iterable's items */
    size_t pos;           /* next item of items to consider */
    const struct jnode *node;
    jscope *scope;        /* where the for statement runs */
    int64_t index0;
    int64_t length;       /* -1 until known */
    int has_after;
    jv after, before, current, last_changed;
    int has_last_changed;
    int prefiltered;      /* items already passed the loop's filter */
    int depth0;
} jloop;

/* ------------------------------------------------------------------ */
/* Syntax tree                                                          */
/* ------------------------------------------------------------------ */

enum {
    /* statements */
    N_BODY = 1,    /* kids */
    N_DATA,        /* val: text */
    N_OUTPUT,      /* a: expression printed */
    N_IF,          /* a test, b body, c else (N_BODY / N_IF) */
    N_FOR,         /* a target, b iterable, c filter, d body, e else; flags: recursive */
    N_SET,         /* a target, b value */
    N_SETBLOCK,    /* a target, b filter chain (or NULL), c body */
    N_MACRO,       /* val name, kids params (N_PARAM), b body */
    N_CALLBLOCK,   /* kids params, a call, b body */
    N_FILTERBLOCK, /* a filter chain, b body */
    N_WITH,        /* kids N_SET (values read outside), b body */
    N_BREAK,
    N_CONTINUE,
    N_SCOPE,       /* b body (block, generation) */
    N_AUTOESCAPE,  /* a value, b body */
    N_UNSUPPORTED, /* val: what (include, extends, ...) */
    /* expressions */
    N_CONST,       /* val */
    N_NAME,        /* val name */
    N_NSREF,       /* val name, attr: attribute (assignment target) */
    N_TUPLE,       /* kids */
    N_LIST,        /* kids */
    N_DICT,        /* kids N_PAIR */
    N_PAIR,        /* a key, b value */
    N_GETATTR,     /* a object, val attribute name */
    N_GETITEM,     /* a object, b subscript */
    N_SLICE,       /* a start, b stop, c step (each may be NULL) */
    N_CALL,        /* a callee, kids args (N_KWARG for keywords), d *args, e **kwargs */
    N_KWARG,       /* val name, a value */
    N_FILTER,      /* a input (NULL: given at run time), val name, op filter id, kids args, d, e */
    N_TEST,        /* a input, val name, op test id, kids args, d, e */
    N_BINOP,       /* op OP_*, a, b */
    N_CONCAT,      /* kids */
    N_COMPARE,     /* a, kids N_OPERAND */
    N_OPERAND,     /* op CMP_*, a */
    N_AND,
    N_OR,
    N_NOT,
    N_NEG,         /* op: 1 for unary + */
    N_CONDEXPR,    /* a test, b value if true, c value if false (may be NULL) */
    N_PARAM        /* val name, a default (may be NULL) */
};

enum { CMP_EQ = 1, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN };

/* N_MACRO / N_CALLBLOCK flags */
enum { MF_VARARGS = 1, MF_KWARGS = 2, MF_CALLER = 4 };

typedef struct jnode {
    int kind;
    int op;
    int flags;
    int line, col;
    struct jnode *a, *b, *c, *d, *e;
    struct jnode **kids;
    int nkids, capkids;
    jv val;
    jv attr;
} jnode;

struct jinja_template {
    jnode *root;
    jnode **nodes;   /* every node, for freeing */
    size_t nnodes, capnodes;
};

/* ------------------------------------------------------------------ */
/* Lexer (jinja_lex.c)                                                   */
/* ------------------------------------------------------------------ */

enum {
    T_EOF = 0, T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END,
    T_NAME, T_STRING, T_INT, T_FLOAT,
    /* operators */
    T_ADD, T_SUB, T_DIV, T_FLOORDIV, T_MUL, T_MOD, T_POW, T_TILDE,
    T_LBRACKET, T_RBRACKET, T_LPAREN, T_RPAREN, T_LBRACE, T_RBRACE,
    T_EQ, T_NE, T_GT, T_GTEQ, T_LT, T_LTEQ, T_ASSIGN, T_DOT, T_COLON,
    T_PIPE, T_COMMA, T_SEMICOLON
};

typedef struct jtoken {
    int type;
    int line, col;
    size_t off, len;    /* the token's text in the normalized source */
    jv val;             /* T_DATA, T_NAME, T_STRING: a string; T_INT, T_FLOAT: a number */
} jtoken;

typedef struct jlex_out {
    jtoken *toks;
    size_t n, cap;
    char *src;          /* the normalized source */
    size_t len;
} jlex_out;

/* Tokenizes; on a syntax error returns INFER_ERR_FORMAT with the message
 * set (infer_err). */
int jinja_lex(const char *src, size_t len, jlex_out *out);
void jlex_free(jlex_out *lx);
const char *jtok_describe(int type);

/* ------------------------------------------------------------------ */
/* Builtins (jinja_builtins.c, jinja_methods.c)                         */
/* ------------------------------------------------------------------ */

/* Filter and test tables: the id of a name, or -1 (unknown to Jinja), or
 * -2 (a Jinja builtin this interpreter lacks). */
int jfilter_lookup(const char *name);
int jtest_lookup(const char *name);
int jfilter_call(jx *x, int id, jv input, jargs *a, jv *out);
int jtest_call(jx *x, int id, jv input, jargs *a, int *res);
/* A global function (range, namespace, dict, ...) by name; 0 if none. */
int jglobal_lookup(jx *x, const char *name, size_t n, jv *out);
/* An attribute of a value that is a Python attribute (a method, a loop
 * property); *found = 0 when there is none. */
int jattr_lookup(jx *x, jv obj, const char *name, size_t n, jv *out, int *found);

/* The evaluator's hooks used by builtins. */
int jcall_value(jx *x, jv callee, jargs *a, jv *out, int line);
int jgetattr(jx *x, jv obj, jv name, jv *out);
int jgetitem(jx *x, jv obj, jv key, jv *out);
int jloop_attr(jx *x, jloop *lp, const char *name, size_t n, jv *out, int *found);
int jloop_recurse(jx *x, jloop *lp, jargs *a, jv *out);
int jmacro_call(jx *x, jfunc *m, jargs *a, jv *out);
void jloop_release(jloop *lp);
void jfunc_release(jfunc *f);

#define JINJA_MAX_RANGE 100000

#endif
