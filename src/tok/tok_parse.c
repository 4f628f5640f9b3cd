/* tok_parse.c - reading the normalizer, pre_tokenizer and decoder values
 * of tokenizer.json into the stage trees of tok_internal.h. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

#define MAX_NESTING 32

static const char *type_of(const cJSON *j)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int get_bool(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static int need_string(const cJSON *o, const char *key, const char *path, const char *where,
                       const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v))
        return infer_err(INFER_ERR_FORMAT, "%s: %s.%s is missing or not a string", path, where, key);
    *out = v->valuestring;
    return 0;
}

/* A single code point as a string ("▁"); its UTF-8 in rep. */
static int one_char(const char *s, const char *path, const char *where, char *rep, size_t *rep_len,
                    uint32_t *cp)
{
    size_t n = strlen(s), l = 0;
    if (n == 0 || n > 4 || utf8_check(s, n) != n || (utf8_get(s, &l), l != n))
        return infer_err(INFER_ERR_FORMAT, "%s: %s must be one character", path, where);
    memcpy(rep, s, n);
    rep[n] = '\0';
    *rep_len = n;
    if (cp) *cp = utf8_get(s, &l);
    return 0;
}

/* "pattern": {"String": "..."} or {"Regex": "..."}: a literal in *lit, or
 * a compiled regex. */
static int parse_pattern(const cJSON *o, const char *path, const char *where, char **lit,
                         size_t *lit_len, tok_regex *re)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    if (cJSON_IsString(s)) {
        *lit = strdup(s->valuestring);
        if (!*lit) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        *lit_len = strlen(*lit);
        return 0;
    }
    if (cJSON_IsString(r)) {
        char w[300];
        snprintf(w, sizeof w, "%s: %s.pattern", path, where);
        return regex_compile(re, r->valuestring, strlen(r->valuestring), w);
    }
    return infer_err(INFER_ERR_FORMAT, "%s: %s.pattern must be {\"String\": ...} or {\"Regex\": ...}",
                     path, where);
}

static int parse_behavior(const cJSON *o, const char *path, const char *where, int dflt, int *out)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "behavior");
    if (!b || cJSON_IsNull(b)) {
        *out = dflt;
        return 0;
    }
    static const struct {
        const char *name;
        int v;
    } names[] = {{"Removed", SPLIT_REMOVED},
                 {"Isolated", SPLIT_ISOLATED},
                 {"MergedWithPrevious", SPLIT_MERGED_PREV},
                 {"MergedWithNext", SPLIT_MERGED_NEXT},
                 {"Contiguous", SPLIT_CONTIGUOUS}};
    if (cJSON_IsString(b))
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(b->valuestring, names[i].name)) {
                *out = names[i].v;
                return 0;
            }
    return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s.behavior %s%s%s is not supported", path, where,
                     cJSON_IsString(b) ? "\"" : "", cJSON_IsString(b) ? b->valuestring : "(not a string)",
                     cJSON_IsString(b) ? "\"" : "");
}

static int parse_prepend_scheme(const cJSON *o, const char *path, const char *where, int *out)
{
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(o, "prepend_scheme");
    if (cJSON_IsString(ps)) {
        if (!strcmp(ps->valuestring, "always")) *out = PREPEND_ALWAYS;
        else if (!strcmp(ps->valuestring, "first")) *out = PREPEND_FIRST;
        else if (!strcmp(ps->valuestring, "never")) *out = PREPEND_NEVER;
        else
            return infer_err(INFER_ERR_FORMAT, "%s: %s.prepend_scheme \"%s\" is not always/first/never",
                             path, where, ps->valuestring);
        return 0;
    }
    *out = get_bool(o, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
    return 0;
}

/* ---- normalizers ---------------------------------------------------- */

static void norm_clear(tok_norm *n)
{
    free(n->pat);
    regex_free(&n->re);
    free(n->content);
    for (int i = 0; i < n->n_kids; i++) norm_clear(&n->kids[i]);
    free(n->kids);
}

void norm_free(tok_norm *n)
{
    if (!n) return;
    norm_clear(n);
    free(n);
}

static int norm_fill(tok_norm *n, const cJSON *j, const char *path, const char *where, int depth)
{
    const char *t = type_of(j);
    if (!cJSON_IsObject(j) || !t) return infer_err(INFER_ERR_FORMAT, "%s: %s: no \"type\"", path, where);
    if (depth > MAX_NESTING) return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: nested too deep", path, where);
    const char *s = NULL;
    int rc;
    if (!strcmp(t, "NFC")) n->kind = NORM_NFC;
    else if (!strcmp(t, "NFD")) n->kind = NORM_NFD;
    else if (!strcmp(t, "NFKC")) n->kind = NORM_NFKC;
    else if (!strcmp(t, "NFKD")) n->kind = NORM_NFKD;
    else if (!strcmp(t, "Lowercase")) n->kind = NORM_LOWER;
    else if (!strcmp(t, "StripAccents")) n->kind = NORM_STRIP_ACCENTS;
    else if (!strcmp(t, "Strip")) {
        n->kind = NORM_STRIP;
        n->left = get_bool(j, "strip_left", 1);
        n->right = get_bool(j, "strip_right", 1);
    } else if (!strcmp(t, "Prepend")) {
        n->kind = NORM_PREPEND;
        if ((rc = need_string(j, "prepend", path, where, &s))) return rc;
        if (!(n->content = strdup(s))) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        n->content_len = strlen(s);
    } else if (!strcmp(t, "Replace")) {
        n->kind = NORM_REPLACE;
        if ((rc = need_string(j, "content", path, where, &s))) return rc;
        if (!(n->content = strdup(s))) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        n->content_len = strlen(s);
        if ((rc = parse_pattern(j, path, where, &n->pat, &n->pat_len, &n->re))) return rc;
    } else if (!strcmp(t, "Sequence")) {
        n->kind = NORM_SEQ;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "normalizers"), *it;
        if (!cJSON_IsArray(list))
            return infer_err(INFER_ERR_FORMAT, "%s: %s.normalizers is not an array", path, where);
        int k = cJSON_GetArraySize(list);
        n->kids = calloc((size_t)k + 1, sizeof *n->kids);
        if (!n->kids) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        cJSON_ArrayForEach(it, list)
        {
            char w[256];
            snprintf(w, sizeof w, "%s.normalizers[%d]", where, n->n_kids);
            rc = norm_fill(&n->kids[n->n_kids++], it, path, w, depth + 1);
            if (rc) return rc;
        }
    } else {
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: normalizer type \"%s\" is not supported", path,
                         where, t);
    }
    return 0;
}

int parse_normalizer(const cJSON *j, const char *path, const char *where, tok_norm **out)
{
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return 0;
    tok_norm *n = calloc(1, sizeof *n);
    if (!n) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    int rc = norm_fill(n, j, path, where, 0);
    if (rc) {
        norm_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------- */

/* GPT-2's pattern, used by ByteLevel with use_regex. */
static const char gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static void pretok_clear(tok_pretok *p)
{
    free(p->pat);
    regex_free(&p->re);
    for (int i = 0; i < p->n_kids; i++) pretok_clear(&p->kids[i]);
    free(p->kids);
}

void pretok_free(tok_pretok *p)
{
    if (!p) return;
    pretok_clear(p);
    free(p);
}

static int pretok_fill(tok_pretok *p, const cJSON *j, const char *path, const char *where, int depth)
{
    const char *t = type_of(j);
    if (!cJSON_IsObject(j) || !t) return infer_err(INFER_ERR_FORMAT, "%s: %s: no \"type\"", path, where);
    if (depth > MAX_NESTING) return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: nested too deep", path, where);
    int rc;
    char w[300];
    if (!strcmp(t, "Split")) {
        p->kind = PRE_SPLIT;
        p->invert = get_bool(j, "invert", 0);
        if ((rc = parse_behavior(j, path, where, SPLIT_REMOVED, &p->behavior))) return rc;
        if (!cJSON_GetObjectItemCaseSensitive(j, "behavior"))
            return infer_err(INFER_ERR_FORMAT, "%s: %s.behavior is missing", path, where);
        return parse_pattern(j, path, where, &p->pat, &p->pat_len, &p->re);
    }
    if (!strcmp(t, "ByteLevel")) {
        p->kind = PRE_BYTELEVEL;
        p->add_prefix_space = get_bool(j, "add_prefix_space", 1);
        p->use_regex = get_bool(j, "use_regex", 1);
        snprintf(w, sizeof w, "%s: %s (GPT-2 regex)", path, where);
        return p->use_regex ? regex_compile(&p->re, gpt2_re, sizeof gpt2_re - 1, w) : 0;
    }
    if (!strcmp(t, "Metaspace")) {
        const char *r = "\xE2\x96\x81";
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        if (cJSON_IsString(rv)) r = rv->valuestring;
        p->kind = PRE_METASPACE;
        snprintf(w, sizeof w, "%s.replacement", where);
        if ((rc = one_char(r, path, w, p->rep, &p->rep_len, NULL))) return rc;
        p->split = get_bool(j, "split", 1);
        return parse_prepend_scheme(j, path, where, &p->prepend);
    }
    if (!strcmp(t, "Digits")) {
        p->kind = PRE_DIGITS;
        p->individual = get_bool(j, "individual_digits", 0);
        return 0;
    }
    if (!strcmp(t, "Whitespace")) {
        p->kind = PRE_WHITESPACE;
        static const char ws_re[] = "\\w+|[^\\w\\s]+";
        snprintf(w, sizeof w, "%s: %s", path, where);
        return regex_compile(&p->re, ws_re, sizeof ws_re - 1, w);
    }
    if (!strcmp(t, "WhitespaceSplit")) {
        p->kind = PRE_WSSPLIT;
        return 0;
    }
    if (!strcmp(t, "Punctuation")) {
        p->kind = PRE_PUNCT;
        return parse_behavior(j, path, where, SPLIT_ISOLATED, &p->behavior);
    }
    if (!strcmp(t, "BertPreTokenizer")) {
        p->kind = PRE_BERT;
        return 0;
    }
    if (!strcmp(t, "Sequence")) {
        p->kind = PRE_SEQ;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers"), *it;
        if (!cJSON_IsArray(list))
            return infer_err(INFER_ERR_FORMAT, "%s: %s.pretokenizers is not an array", path, where);
        p->kids = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof *p->kids);
        if (!p->kids) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        cJSON_ArrayForEach(it, list)
        {
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, p->n_kids);
            if ((rc = pretok_fill(&p->kids[p->n_kids++], it, path, w, depth + 1))) return rc;
        }
        return 0;
    }
    return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: pre-tokenizer type \"%s\" is not supported", path,
                     where, t);
}

int parse_pretok(const cJSON *j, const char *path, const char *where, tok_pretok **out)
{
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return 0;
    tok_pretok *p = calloc(1, sizeof *p);
    if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    int rc = pretok_fill(p, j, path, where, 0);
    if (rc) {
        pretok_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- decoders ------------------------------------------------------- */

static void dec_clear(tok_dec *d)
{
    free(d->pat);
    regex_free(&d->re);
    free(d->content);
    for (int i = 0; i < d->n_kids; i++) dec_clear(&d->kids[i]);
    free(d->kids);
}

void dec_free(tok_dec *d)
{
    if (!d) return;
    dec_clear(d);
    free(d);
}

static int dec_fill(tok_dec *d, const cJSON *j, const char *path, const char *where, int depth)
{
    const char *t = type_of(j);
    if (!cJSON_IsObject(j) || !t) return infer_err(INFER_ERR_FORMAT, "%s: %s: no \"type\"", path, where);
    if (depth > MAX_NESTING) return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: nested too deep", path, where);
    int rc;
    char w[300];
    const char *s = NULL;
    if (!strcmp(t, "ByteLevel")) {
        d->kind = DEC_BYTELEVEL;
    } else if (!strcmp(t, "ByteFallback")) {
        d->kind = DEC_BYTEFALLBACK;
    } else if (!strcmp(t, "Fuse")) {
        d->kind = DEC_FUSE;
    } else if (!strcmp(t, "Replace")) {
        d->kind = DEC_REPLACE;
        if ((rc = need_string(j, "content", path, where, &s))) return rc;
        if (!(d->content = strdup(s))) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        d->content_len = strlen(s);
        return parse_pattern(j, path, where, &d->pat, &d->pat_len, &d->re);
    } else if (!strcmp(t, "Strip")) {
        d->kind = DEC_STRIP;
        if ((rc = need_string(j, "content", path, where, &s))) return rc;
        snprintf(w, sizeof w, "%s.content", where);
        if ((rc = one_char(s, path, w, d->rep, &d->rep_len, &d->strip_cp))) return rc;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
        if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble < 0 || b->valuedouble < 0 ||
            a->valuedouble > 1e6 || b->valuedouble > 1e6)
            return infer_err(INFER_ERR_FORMAT, "%s: %s.start/stop must be counts", path, where);
        d->start = (int)a->valuedouble;
        d->stop = (int)b->valuedouble;
    } else if (!strcmp(t, "Metaspace")) {
        const char *r = "\xE2\x96\x81";
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        if (cJSON_IsString(rv)) r = rv->valuestring;
        d->kind = DEC_METASPACE;
        snprintf(w, sizeof w, "%s.replacement", where);
        if ((rc = one_char(r, path, w, d->rep, &d->rep_len, NULL))) return rc;
        return parse_prepend_scheme(j, path, where, &d->prepend);
    } else if (!strcmp(t, "Sequence")) {
        d->kind = DEC_SEQ;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "decoders"), *it;
        if (!cJSON_IsArray(list))
            return infer_err(INFER_ERR_FORMAT, "%s: %s.decoders is not an array", path, where);
        d->kids = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof *d->kids);
        if (!d->kids) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        cJSON_ArrayForEach(it, list)
        {
            snprintf(w, sizeof w, "%s.decoders[%d]", where, d->n_kids);
            if ((rc = dec_fill(&d->kids[d->n_kids++], it, path, w, depth + 1))) return rc;
        }
    } else {
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: decoder type \"%s\" is not supported", path,
                         where, t);
    }
    return 0;
}

int parse_decoder(const cJSON *j, const char *path, const char *where, tok_dec **out)
{
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return 0;
    tok_dec *d = calloc(1, sizeof *d);
    if (!d) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    int rc = dec_fill(d, j, path, where, 0);
    if (rc) {
        dec_free(d);
        return rc;
    }
    *out = d;
    return 0;
}
