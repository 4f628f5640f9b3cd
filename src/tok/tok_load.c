/* tok_load.c - loading a tokenizer: tokenizer.json (model, vocab,
 * merges, added tokens, pipeline), then tokenizer_config.json,
 * generation_config.json and chat_template.jinja.
 *
 * The two big values of tokenizer.json, model.vocab and model.merges, are
 * read by the scanner of tok_json.c straight from the text; the rest of the
 * file (with those two values blanked to null) goes through cJSON. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "tok/tok_internal.h"

/* ---- small helpers -------------------------------------------------- */

/* Reads a whole file; INFER_ERR_MISSING when absent (ENOENT). */
static int read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return infer_err(INFER_ERR_MISSING, "%s: no such file", path);
        return infer_err(INFER_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz > 0 && (size_t)sz + 1 > cap) {
            char *p = realloc(buf, (size_t)sz + 1);
            if (!p) {
                free(buf);
                fclose(f);
                return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
            }
            buf = p;
            cap = (size_t)sz + 1;
        }
        rewind(f);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                fclose(f);
                return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
            }
            buf = p;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return infer_err(INFER_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* Maps a whole file read-only (tokenizer.json is big: no copy); *len 0 and
 * *data NULL for an empty file. */
static int map_file(const char *path, const char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return infer_err(INFER_ERR_MISSING, "%s: no such file", path);
        return infer_err(INFER_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return infer_err(INFER_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return infer_err(INFER_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
        *data = p;
        *len = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

static int oom(const char *path) { return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }

static int json_bool(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

/* An integer id in [0, TOK_MAX_ID). */
static int json_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d >= TOK_MAX_ID || d != (double)(int32_t)d) return -1;
    *id = (int32_t)d;
    return 0;
}

/* ---- pieces and lookups --------------------------------------------- */

const char *tok_piece(const infer_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->vocab_size || tok->piece_len[id] == UINT32_MAX) return NULL;
    *len = tok->piece_len[id];
    const char *base = tok->piece_added[id] ? tok->added_arena.p : tok->arena.p;
    return base + tok->piece_off[id];
}

int32_t tok_lookup(const infer_tokenizer *tok, const char *s, size_t len)
{
    int32_t id = strmap_get(&tok->added_map, tok->added_arena.p, s, len);
    if (id >= 0) return id;
    return strmap_get(&tok->model_map, tok->arena.p, s, len);
}

/* ---- top-level scan ------------------------------------------------- */

typedef struct spans {
    const char *vocab, *vocab_end;
    const char *merges, *merges_end;
    char bad_key[80];   /* the value where the JSON went wrong, if known */
} spans;

static int key_is(const char *k0, const char *k1, const char *name)
{
    size_t n = strlen(name);
    return (size_t)(k1 - k0) == n + 2 && memcmp(k0 + 1, name, n) == 0;
}

/* Walks an object from p (at '{'), calling back for each key; the value
 * spans of vocab and merges are recorded when in_model. */
static const char *scan_object(const char *p, const char *e, int in_model, spans *sp, int *oom_flag)
{
    p = js_ws(p, e);
    if (p >= e || *p != '{') return NULL;
    p = js_ws(p + 1, e);
    if (p < e && *p == '}') return p + 1;
    for (;;) {
        const char *k0 = js_ws(p, e);
        const char *k1 = js_string(k0, e, NULL, oom_flag);
        if (!k1) return NULL;
        p = js_ws(k1, e);
        if (p >= e || *p != ':') return NULL;
        const char *v0 = js_ws(p + 1, e);
        const char *v1;
        if (!in_model && key_is(k0, k1, "model") && v0 < e && *v0 == '{' && !sp->vocab &&
            !sp->merges) {
            v1 = scan_object(v0, e, 1, sp, oom_flag);
        } else {
            v1 = js_skip(v0, e);
            if (v1 && in_model && key_is(k0, k1, "vocab") && !sp->vocab) {
                sp->vocab = v0;
                sp->vocab_end = v1;
            } else if (v1 && in_model && key_is(k0, k1, "merges") && !sp->merges) {
                sp->merges = v0;
                sp->merges_end = v1;
            }
        }
        if (!v1) {
            if (!sp->bad_key[0]) {
                int kl = (int)(k1 - k0 - 2 > 40 ? 40 : k1 - k0 - 2);
                snprintf(sp->bad_key, sizeof sp->bad_key, "%s%.*s", in_model ? "model." : "", kl, k0 + 1);
            }
            return NULL;
        }
        p = js_ws(v1, e);
        if (p >= e) return NULL;
        if (*p == '}') return p + 1;
        if (*p != ',') return NULL;
        p++;
    }
}

/* ---- vocab ---------------------------------------------------------- */

typedef struct vocab_entry {
    uint32_t off, len;
    int32_t id;
    uint32_t hash;
} vocab_entry;

static int parse_vocab(infer_tokenizer *tok, const char *p, const char *e, vocab_entry **out,
                       size_t *n_out)
{
    const char *path = tok->path;
    size_t n = 0, cap = 1024;
    vocab_entry *v = malloc(cap * sizeof *v);
    if (!v) return oom(path);
    *out = NULL;
    *n_out = 0;
    int o = 0;
    p = js_ws(p, e);
    if (p >= e || *p != '{') {
        free(v);
        return infer_err(INFER_ERR_FORMAT, "%s: model.vocab is not an object", path);
    }
    p = js_ws(p + 1, e);
    if (p < e && *p == '}') p = NULL; /* empty */
    while (p) {
        size_t off = tok->arena.n;
        const char *q = js_string(js_ws(p, e), e, &tok->arena, &o);
        if (!q) goto bad;
        size_t len = tok->arena.n - off;
        if (tb_putc(&tok->arena, '\0')) goto nomem;
        q = js_ws(q, e);
        if (q >= e || *q != ':') goto bad;
        q = js_ws(q + 1, e);
        int64_t id = 0;
        const char *d = q;
        while (q < e && *q >= '0' && *q <= '9') {
            if (id < TOK_MAX_ID) id = id * 10 + (*q - '0');
            q++;
        }
        if (q == d || (q < e && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9')))) {
            free(v);
            return infer_err(INFER_ERR_FORMAT,
                             "%s: model.vocab[\"%.64s\"]: the id is not an integer in [0, %d)",
                             path, tok->arena.p + off, TOK_MAX_ID);
        }
        if (id >= TOK_MAX_ID) {
            free(v);
            return infer_err(INFER_ERR_OUT_OF_RANGE, "%s: model.vocab[\"%.64s\"]: id too large",
                             path, tok->arena.p + off);
        }
        if (len >= UINT32_MAX || tok->arena.n >= UINT32_MAX) goto nomem;
        if (n == cap) {
            cap *= 2;
            vocab_entry *w = realloc(v, cap * sizeof *v);
            if (!w) goto nomem;
            v = w;
        }
        v[n].off = (uint32_t)off;
        v[n].len = (uint32_t)len;
        v[n].id = (int32_t)id;
        v[n].hash = strmap_hash(tok->arena.p + off, len);
        n++;
        q = js_ws(q, e);
        if (q >= e) goto bad;
        if (*q == '}') break;
        if (*q != ',') goto bad;
        p = q + 1;
    }
    *out = v;
    *n_out = n;
    return 0;
nomem:
    free(v);
    return oom(path);
bad:
    free(v);
    if (o) return oom(path);
    return infer_err(INFER_ERR_FORMAT, "%s: model.vocab: malformed JSON", path);
}

/* ---- merges --------------------------------------------------------- */

/* Merges are resolved in batches.  Each needs three lookups (a, b and the
 * merged token) in a table of hundreds of thousands of entries, a cache
 * miss each; touching the slots of a whole batch before reading any of
 * them lets the memory system fetch them in parallel.  Gemma 3 has 514,906
 * merges: this is most of its load time. */
#define MERGE_BATCH 256

/* What the merges say about cutting words before "\u2581" or " " (see
 * split_str in tok_internal.h): the last characters of the left sides of
 * merges across such a cut. */
#define N_SPLIT_CANDIDATES 2
static const char *const split_candidates[N_SPLIT_CANDIDATES] = {"\xE2\x96\x81", " "};

typedef struct split_scan {
    uint32_t bad[TOK_SPLIT_BAD_MAX];
    int n_bad, overflow;
} split_scan;

typedef struct merge_batch {
    split_scan split[N_SPLIT_CANDIDATES];
    tok_buf text;                         /* a, b and a+b of each merge */
    uint32_t off[MERGE_BATCH][3], len[MERGE_BATCH][3], hash[MERGE_BATCH][3];
    int32_t id[MERGE_BATCH][3];
    size_t index[MERGE_BATCH];            /* position in model.merges */
    size_t n;
    uint32_t rank;                        /* rank of the next merge */
} merge_batch;

static int batch_key(merge_batch *mb, size_t j, int t, const char *s, size_t n, const char *s2,
                     size_t n2, const tok_strmap *m)
{
    size_t off = mb->text.n;
    if (tb_put(&mb->text, s, n) || tb_put(&mb->text, s2, n2)) return -1;
    mb->off[j][t] = (uint32_t)off;
    mb->len[j][t] = (uint32_t)(n + n2);
    mb->hash[j][t] = strmap_hash(mb->text.p + off, n + n2);
    strmap_prefetch(m, mb->hash[j][t]);
    return 0;
}

static int batch_add(infer_tokenizer *tok, merge_batch *mb, size_t index, const char *a, size_t alen,
                     const char *b, size_t blen)
{
    size_t j = mb->n;
    if (alen + blen >= UINT32_MAX / 4 || mb->text.n >= UINT32_MAX / 2) return -1;
    const char *b2 = b;
    size_t b2len = blen;
    /* the merged token drops b's continuing_subword_prefix */
    if (tok->prefix_len && blen >= tok->prefix_len && memcmp(b, tok->prefix, tok->prefix_len) == 0) {
        b2 += tok->prefix_len;
        b2len -= tok->prefix_len;
    }
    const tok_strmap *m = &tok->model_map;
    if (batch_key(mb, j, 0, a, alen, "", 0, m) || batch_key(mb, j, 1, b, blen, "", 0, m) ||
        batch_key(mb, j, 2, a, alen, b2, b2len, m))
        return -1;
    mb->index[j] = index;
    mb->n++;
    return 0;
}

/* Notes a merge (a, b) that joins across a cut before candidate c. */
static void split_note(merge_batch *mb, const char *a, size_t alen, const char *b, size_t blen)
{
    for (int c = 0; c < N_SPLIT_CANDIDATES; c++) {
        const char *s = split_candidates[c];
        size_t sl = strlen(s);
        if (blen < sl || memcmp(b, s, sl) != 0) continue;
        if (alen == 0) continue;
        if (alen >= sl && memcmp(a + alen - sl, s, sl) == 0) continue;
        size_t j = alen - 1;
        while (j > 0 && ((unsigned char)a[j] & 0xC0) == 0x80) j--;
        size_t l;
        uint32_t cp = utf8_get(a + j, &l);
        split_scan *sc = &mb->split[c];
        int k = 0;
        while (k < sc->n_bad && sc->bad[k] != cp) k++;
        if (k < sc->n_bad) continue;
        if (sc->n_bad == TOK_SPLIT_BAD_MAX) sc->overflow = 1;
        else sc->bad[sc->n_bad++] = cp;
    }
}

/* Chooses the split string: a candidate that is a token of its own and
 * that few merges cross. */
static void split_choose(infer_tokenizer *tok, const merge_batch *mb)
{
    tok->split_len = 0;
    if (!tok->plain_syms) return;
    for (int c = 0; c < N_SPLIT_CANDIDATES; c++) {
        const char *s = split_candidates[c];
        size_t sl = strlen(s);
        if (mb->split[c].overflow || strmap_get(&tok->model_map, tok->arena.p, s, sl) < 0) continue;
        memcpy(tok->split_str, s, sl);
        tok->split_len = sl;
        memcpy(tok->split_bad, mb->split[c].bad, sizeof tok->split_bad);
        tok->n_split_bad = mb->split[c].n_bad;
        return;
    }
}

static int batch_flush(infer_tokenizer *tok, merge_batch *mb)
{
    const tok_strmap *m = &tok->model_map;
    const char *arena = tok->arena.p;
    size_t n = mb->n;
    for (size_t j = 0; j < n; j++)
        split_note(mb, mb->text.p + mb->off[j][0], mb->len[j][0], mb->text.p + mb->off[j][1], mb->len[j][1]);
    for (size_t j = 0; j < n; j++)
        for (int t = 0; t < 3; t++) strmap_prefetch_key(m, arena, mb->hash[j][t]);
    for (size_t j = 0; j < n; j++) {
        for (int t = 0; t < 3; t++) {
            const char *key = mb->text.p + mb->off[j][t];
            int32_t id = strmap_get_h(m, arena, key, mb->len[j][t], mb->hash[j][t]);
            if (id < 0) {
                int kl = (int)(mb->len[j][t] > 64 ? 64 : mb->len[j][t]);
                return infer_err(INFER_ERR_FORMAT,
                                 t < 2 ? "%s: model.merges[%zu]: token \"%.*s\" is not in the vocabulary"
                                       : "%s: model.merges[%zu]: the merged token \"%.*s\" is not in the "
                                         "vocabulary",
                                 tok->path, mb->index[j], kl, key);
            }
            mb->id[j][t] = id;
        }
        mergemap_prefetch(&tok->merges, mb->id[j][0], mb->id[j][1]);
    }
    for (size_t j = 0; j < n; j++)
        if (mergemap_put(&tok->merges, mb->id[j][0], mb->id[j][1], mb->rank++, mb->id[j][2]))
            return oom(tok->path);
    mb->n = 0;
    mb->text.n = 0;
    return 0;
}

static int parse_merges(infer_tokenizer *tok, const char *p, const char *e)
{
    const char *path = tok->path;
    tok_buf s1 = {0}, s2 = {0};
    merge_batch *mb = calloc(1, sizeof *mb);
    int o = 0, rc = 0;
    size_t index = 0;
    if (!mb) return oom(path);
    /* The table size from the number of commas: one per merge between
     * strings, two with pairs. */
    size_t commas = 0;
    for (const char *q = memchr(p, ',', (size_t)(e - p)); q; q = memchr(q + 1, ',', (size_t)(e - q - 1)))
        commas++;
    const char *first = js_ws(js_ws(p, e) + 1, e);
    size_t guess = first < e && *first == '[' ? commas / 2 + 1 : commas + 1;
    if (mergemap_init(&tok->merges, guess)) {
        free(mb);
        return oom(path);
    }
    p = js_ws(p, e);
    if (p >= e || *p != '[') {
        rc = infer_err(INFER_ERR_FORMAT, "%s: model.merges is not an array", path);
        goto out;
    }
    p = js_ws(p + 1, e);
    if (p < e && *p == ']') goto out;
    for (;; index++) {
        p = js_ws(p, e);
        if (p >= e) goto bad;
        s1.n = s2.n = 0;
        if (*p == '"') {
            p = js_string(p, e, &s1, &o);
            if (!p) goto bad;
            if (!(s1.n >= 8 && memcmp(s1.p, "#version", 8) == 0)) {
                char *sp = memchr(s1.p, ' ', s1.n);
                if (!sp || memchr(sp + 1, ' ', s1.n - (size_t)(sp + 1 - s1.p))) {
                    rc = infer_err(INFER_ERR_FORMAT,
                                   "%s: model.merges[%zu]: \"%.64s\" is not two tokens separated "
                                   "by one space",
                                   path, index, s1.p);
                    goto out;
                }
                size_t al = (size_t)(sp - s1.p);
                if (batch_add(tok, mb, index, s1.p, al, sp + 1, s1.n - al - 1)) goto nomem;
            }
        } else if (*p == '[') {
            p = js_ws(p + 1, e);
            p = js_string(p, e, &s1, &o);
            if (!p) goto pair;
            p = js_ws(p, e);
            if (p >= e || *p != ',') goto pair;
            p = js_string(js_ws(p + 1, e), e, &s2, &o);
            if (!p) goto pair;
            p = js_ws(p, e);
            if (p >= e || *p != ']') goto pair;
            p++;
            if (batch_add(tok, mb, index, s1.p, s1.n, s2.p, s2.n)) goto nomem;
        } else {
            goto pair;
        }
        if (mb->n == MERGE_BATCH && (rc = batch_flush(tok, mb))) goto out;
        p = js_ws(p, e);
        if (p >= e) goto bad;
        if (*p == ']') break;
        if (*p != ',') goto bad;
        p++;
    }
    rc = batch_flush(tok, mb);
    if (rc == 0) split_choose(tok, mb);
    goto out;
nomem:
    rc = oom(path);
    goto out;
pair:
    if (o) goto bad;
    rc = infer_err(INFER_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]",
                   path, index);
    goto out;
bad:
    rc = o ? oom(path) : infer_err(INFER_ERR_FORMAT, "%s: model.merges: malformed JSON", path);
out:
    tb_free(&s1);
    tb_free(&s2);
    tb_free(&mb->text);
    free(mb);
    return rc;
}

/* ---- added tokens --------------------------------------------------- */

/* The added tokens, given ids as Hugging Face's AddedVocabulary::add_tokens
 * gives them (the "id" of the file is checked, then not used): a token
 * already known (an added token of the same content, or a piece of the
 * model vocabulary) keeps that id; a new one gets the next id after the
 * model vocabulary and the added tokens so far.  A repeated token takes the
 * later entry's options. */
static int parse_added(infer_tokenizer *tok, const cJSON *arr)
{
    const char *path = tok->path;
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return infer_err(INFER_ERR_FORMAT, "%s: added_tokens is not an array", path);
    int n = cJSON_GetArraySize(arr);
    tok->added = calloc((size_t)n + 1, sizeof *tok->added);
    if (!tok->added) return oom(path);
    int64_t model_len = tok->model_map.count, max_added = -1;
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, arr)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(t, "content");
        if (!cJSON_IsObject(t) || !cJSON_IsString(c))
            return infer_err(INFER_ERR_FORMAT, "%s: added_tokens[%d]: no \"content\" string", path, i);
        int32_t id;
        if (json_id(cJSON_GetObjectItemCaseSensitive(t, "id"), &id))
            return infer_err(INFER_ERR_FORMAT, "%s: added_tokens[%d]: \"id\" is not an integer in [0, %d)",
                             path, i, TOK_MAX_ID);
        i++;
        size_t len = strlen(c->valuestring);
        if (len == 0) continue; /* ignored, as Hugging Face does */
        tok_added *a = NULL;
        int32_t known = strmap_get(&tok->added_map, tok->added_arena.p, c->valuestring, len);
        if (known >= 0) {
            for (size_t k = 0; k < tok->n_added && !a; k++)
                if (tok->added[k].id == known && tok->added[k].len == len &&
                    !memcmp(tok->added_arena.p + tok->added[k].off, c->valuestring, len))
                    a = &tok->added[k];
        }
        if (!a) {
            if (known < 0) known = strmap_get(&tok->model_map, tok->arena.p, c->valuestring, len);
            if (known < 0) {
                int64_t next = max_added < 0                                   ? model_len
                               : max_added >= model_len || model_len == 0 ? max_added + 1
                                                                              : model_len;
                if (next >= TOK_MAX_ID)
                    return infer_err(INFER_ERR_OUT_OF_RANGE, "%s: added_tokens[%d]: too many tokens",
                                     path, i - 1);
                known = (int32_t)next;
            }
            size_t off = tok->added_arena.n;
            if (off + len >= UINT32_MAX) return oom(path);
            if (tb_put(&tok->added_arena, c->valuestring, len) || tb_putc(&tok->added_arena, '\0'))
                return oom(path);
            a = &tok->added[tok->n_added++];
            a->off = (uint32_t)off;
            a->len = (uint32_t)len;
            a->id = known;
            if (strmap_put(&tok->added_map, tok->added_arena.p, (uint32_t)off, (uint32_t)len, known))
                return oom(path);
            if (known > max_added) max_added = known;
        }
        a->special = (uint8_t)json_bool(t, "special", 0);
        a->normalized = (uint8_t)json_bool(t, "normalized", !a->special);
        a->lstrip = (uint8_t)json_bool(t, "lstrip", 0);
        a->rstrip = (uint8_t)json_bool(t, "rstrip", 0);
        a->single_word = (uint8_t)json_bool(t, "single_word", 0);
    }
    return 0;
}

/* The tries: special tokens first, then the others, each in file order
 * (the order Hugging Face gives its matcher; equal patterns keep the
 * first). */
static int build_tries(infer_tokenizer *tok)
{
    const char *path = tok->path;
    tok->trie_raw.empty = tok->trie_norm.empty = 1;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < tok->n_added; i++) {
            const tok_added *a = &tok->added[i];
            if (a->special != (pass == 0)) continue;
            const char *s = tok->added_arena.p + a->off;
            if (!a->normalized || !tok->norm) {
                if (trie_add(a->normalized ? &tok->trie_norm : &tok->trie_raw, s, a->len, (int32_t)i))
                    return oom(path);
                continue;
            }
            tok_buf out = {0}, tmp = {0};
            tok_matches ms = {0};
            pcre2_match_data *md = pcre2_match_data_create(16, NULL);
            int rc = md ? norm_apply(tok->norm, md, s, a->len, &out, &tmp, &ms) : INFER_ERR_OUT_OF_MEMORY;
            if (rc == 0 && out.n) rc = trie_add(&tok->trie_norm, out.p, out.n, (int32_t)i);
            /* Hugging Face keeps the normalized content as the token's
             * string: decoding gives it back. */
            if (rc == 0 && (out.n != a->len || memcmp(out.p, s, out.n) != 0)) {
                size_t off = tok->added_arena.n;
                if (off + out.n >= UINT32_MAX || tb_put(&tok->added_arena, out.p, out.n) ||
                    tb_putc(&tok->added_arena, '\0')) {
                    rc = INFER_ERR_OUT_OF_MEMORY;
                } else {
                    tok->piece_off[a->id] = (uint32_t)off;
                    tok->piece_len[a->id] = (uint32_t)out.n;
                }
            }
            pcre2_match_data_free(md);
            tb_free(&out);
            tb_free(&tmp);
            free(ms.v);
            if (rc) return infer_err_prefix(rc, "%s: added_tokens", path);
        }
    }
    return 0;
}

/* ---- post-processor ------------------------------------------------- */

typedef struct post_acc {
    tok_ids pre, suf;
    int keeps_seq;
} post_acc;

/* One token given as ["[CLS]", 101] (Bert/Roberta). */
static int bert_token(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2) return -1;
    return json_id(cJSON_GetArrayItem(v, 1), id);
}

/* Wraps acc with this processor: prefix = new + old, suffix = old + new. */
static int parse_post(infer_tokenizer *tok, const cJSON *j, post_acc *acc, const char *where)
{
    const char *path = tok->path;
    if (!j || cJSON_IsNull(j)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsObject(j) || !cJSON_IsString(type))
        return infer_err(INFER_ERR_FORMAT, "%s: %s: no \"type\"", path, where);
    const char *t = type->valuestring;
    tok_ids pre = {0}, suf = {0};
    int rc = 0, keeps = 1;
    if (!strcmp(t, "ByteLevel")) {
        return 0;
    } else if (!strcmp(t, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "processors"), *p;
        if (!cJSON_IsArray(list))
            return infer_err(INFER_ERR_FORMAT, "%s: %s.processors is not an array", path, where);
        int i = 0;
        cJSON_ArrayForEach(p, list)
        {
            char w[256];
            snprintf(w, sizeof w, "%s.processors[%d]", where, i++);
            if ((rc = parse_post(tok, p, acc, w))) return rc;
        }
        return 0;
    } else if (!strcmp(t, "BertProcessing") || !strcmp(t, "RobertaProcessing")) {
        int32_t cls, sep;
        if (bert_token(cJSON_GetObjectItemCaseSensitive(j, "cls"), &cls) ||
            bert_token(cJSON_GetObjectItemCaseSensitive(j, "sep"), &sep))
            return infer_err(INFER_ERR_FORMAT, "%s: %s: \"cls\"/\"sep\" must be [token, id]", path,
                             where);
        if (ids_push(&pre, cls) || ids_push(&suf, sep)) rc = oom(path);
    } else if (!strcmp(t, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single"), *it;
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        if (!cJSON_IsArray(single))
            return infer_err(INFER_ERR_FORMAT, "%s: %s.single is not an array", path, where);
        int seen_seq = 0, i = 0;
        keeps = 0;
        cJSON_ArrayForEach(it, single)
        {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
            if (sq) {
                const cJSON *sid = cJSON_GetObjectItemCaseSensitive(sq, "id");
                if (cJSON_IsString(sid) && !strcmp(sid->valuestring, "A")) {
                    seen_seq = 1;
                    keeps = 1;
                }
            } else if (sp) {
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
                const cJSON *st = cJSON_IsString(name)
                                      ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring)
                                      : NULL;
                const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids"), *x;
                if (!cJSON_IsArray(ids)) {
                    rc = infer_err(INFER_ERR_FORMAT,
                                   "%s: %s.single[%d]: special token %s%s%s is not in special_tokens",
                                   path, where, i, cJSON_IsString(name) ? "\"" : "",
                                   cJSON_IsString(name) ? name->valuestring : "?",
                                   cJSON_IsString(name) ? "\"" : "");
                    break;
                }
                cJSON_ArrayForEach(x, ids)
                {
                    int32_t id;
                    if (json_id(x, &id)) {
                        rc = infer_err(INFER_ERR_FORMAT, "%s: %s: special_tokens[\"%s\"].ids: bad id",
                                       path, where, name->valuestring);
                        break;
                    }
                    if (ids_push(seen_seq ? &suf : &pre, id)) {
                        rc = oom(path);
                        break;
                    }
                }
                if (rc) break;
            } else {
                rc = infer_err(INFER_ERR_FORMAT, "%s: %s.single[%d]: neither SpecialToken nor Sequence",
                               path, where, i);
                break;
            }
            i++;
        }
    } else {
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s: post-processor type \"%s\" is not supported",
                         path, where, t);
    }
    if (rc == 0) {
        /* new prefix = pre + acc->pre; new suffix = acc->suf + suf */
        if (ids_put(&pre, acc->pre.v, acc->pre.n) || ids_put(&acc->suf, suf.v, suf.n)) {
            rc = oom(path);
        } else {
            free(acc->pre.v);
            acc->pre = pre;
            pre.v = NULL;
            if (!keeps) acc->keeps_seq = 0;
        }
    }
    free(pre.v);
    free(suf.v);
    return rc;
}

/* ---- the model ------------------------------------------------------ */

static int opt_string(const cJSON *o, const char *key, char **out, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (len) *len = 0;
    if (!cJSON_IsString(v)) return 0;
    *out = strdup(v->valuestring);
    if (!*out) return -1;
    if (len) *len = strlen(*out);
    return 0;
}

static int load_model(infer_tokenizer *tok, const cJSON *model, const spans *sp, vocab_entry **ve_out,
                      size_t *nv_out)
{
    const char *path = tok->path;
    if (!cJSON_IsObject(model)) return infer_err(INFER_ERR_MISSING, "%s: no \"model\" object", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE") != 0)
        return infer_err(INFER_ERR_UNSUPPORTED,
                         "%s: model.type \"%s\" is not supported (only BPE)", path, type->valuestring);
    if (!cJSON_IsString(type) && !sp->merges)
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: model has no type and no merges: only BPE is supported",
                         path);
    if (!sp->vocab) return infer_err(INFER_ERR_MISSING, "%s: model.vocab is missing", path);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0))
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: model.dropout must be null (BPE dropout is not supported)",
                         path);
    tok->ignore_merges = json_bool(model, "ignore_merges", 0);
    tok->byte_fallback = json_bool(model, "byte_fallback", 0);
    tok->fuse_unk = json_bool(model, "fuse_unk", 0);
    if (opt_string(model, "unk_token", &tok->unk_token, NULL) ||
        opt_string(model, "continuing_subword_prefix", &tok->prefix, &tok->prefix_len) ||
        opt_string(model, "end_of_word_suffix", &tok->suffix, &tok->suffix_len))
        return oom(path);
    tok->plain_syms = tok->prefix_len == 0 && tok->suffix_len == 0;

    vocab_entry *ve = NULL;
    size_t nv = 0;
    int rc = parse_vocab(tok, sp->vocab, sp->vocab_end, &ve, &nv);
    if (rc) return rc;
    int32_t max_id = -1;
    if (strmap_init(&tok->model_map, nv)) {
        free(ve);
        return oom(path);
    }
    for (size_t i = 0; i < nv; i++) {
        /* the table is far bigger than the caches: fetch ahead */
        if (i + 16 < nv) strmap_prefetch(&tok->model_map, ve[i + 16].hash);
        if (strmap_put_h(&tok->model_map, tok->arena.p, ve[i].off, ve[i].len, ve[i].id, ve[i].hash)) {
            free(ve);
            return oom(path);
        }
        if (ve[i].id > max_id) max_id = ve[i].id;
    }
    tok->model_size = max_id + 1;
    /* The id tables are sized once the added tokens are known. */
    *ve_out = ve;
    *nv_out = nv;
    return 0;
}

/* Fills the id tables from the vocab entries (consumed) and the added
 * tokens. */
static int build_ids(infer_tokenizer *tok, vocab_entry *ve, size_t nv)
{
    const char *path = tok->path;
    int32_t size = tok->model_size;
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].id + 1 > size) size = tok->added[i].id + 1;
    tok->vocab_size = size;
    size_t n = size ? (size_t)size : 1;
    tok->piece_off = malloc(n * sizeof *tok->piece_off);
    tok->piece_len = malloc(n * sizeof *tok->piece_len);
    tok->piece_added = calloc(n, 1);
    tok->special = calloc(n, 1);
    tok->char_id = malloc(0x10000 * sizeof *tok->char_id);
    if (!tok->piece_off || !tok->piece_len || !tok->piece_added || !tok->special || !tok->char_id) {
        free(ve);
        return oom(path);
    }
    for (size_t i = 0; i < n; i++) tok->piece_len[i] = UINT32_MAX;
    for (size_t i = 0; i < 0x10000; i++) tok->char_id[i] = -1;
    /* Later duplicates of an id win, as they do in Hugging Face's map. */
    for (size_t i = 0; i < nv; i++) {
        tok->piece_off[ve[i].id] = ve[i].off;
        tok->piece_len[ve[i].id] = ve[i].len;
    }
    free(ve);
    /* Single code point pieces, for the first step of BPE.  Only from the
     * model map, so that a piece reached through it is its id. */
    for (uint32_t i = 0; i <= tok->model_map.mask; i++) {
        const tok_slot *s = &tok->model_map.slots[i];
        if (s->val1 == 0 || s->len == 0 || s->len > 3) continue;
        size_t l;
        uint32_t cp = utf8_get(tok->arena.p + s->off, &l);
        if (l == s->len && cp < 0x10000) tok->char_id[cp] = (int32_t)(s->val1 - 1);
    }
    for (size_t i = 0; i < tok->n_added; i++) {
        const tok_added *a = &tok->added[i];
        tok->piece_off[a->id] = a->off;
        tok->piece_len[a->id] = a->len;
        tok->piece_added[a->id] = 1;
        tok->special[a->id] = a->special;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->byte_id[b] = strmap_get(&tok->model_map, tok->arena.p, name, 6);
    }
    tok->unk_id = tok->unk_token ? strmap_get(&tok->model_map, tok->arena.p, tok->unk_token,
                                              strlen(tok->unk_token))
                                 : -1;
    return 0;
}

/* ---- tokenizer.json ------------------------------------------------- */

int tok_load_from_memory(const char *json, size_t len, const char *path, infer_tokenizer **out)
{
    *out = NULL;
    if (!json || !path) return infer_err(INFER_ERR_INVALID_ARGUMENT, "tok_load_from_memory: NULL argument");
    infer_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return oom(path);
    tok->path = strdup(path);
    if (!tok->path) {
        free(tok);
        return oom(path);
    }
    tok->unk_id = -1;
    tok->gen = tok_new_gen();

    cJSON *root = NULL;
    char *reduced = NULL;
    int rc = 0;

    spans sp = {0};
    int o = 0;
    const char *end = scan_object(json, json + len, 0, &sp, &o);
    if (end) end = js_ws(end, json + len);
    if (!end || end != json + len) {
        if (sp.bad_key[0])
            rc = infer_err(INFER_ERR_FORMAT, "%s: malformed JSON in the value of \"%s\"", path, sp.bad_key);
        else
            rc = infer_err(INFER_ERR_FORMAT, "%s: malformed JSON (not one object)", path);
        goto fail;
    }
    /* The text with vocab and merges blanked, for cJSON. */
    {
        const char *cut[2][2] = {{sp.vocab, sp.vocab_end}, {sp.merges, sp.merges_end}};
        if (cut[0][0] && cut[1][0] && cut[1][0] < cut[0][0]) {
            const char *t0 = cut[0][0], *t1 = cut[0][1];
            cut[0][0] = cut[1][0];
            cut[0][1] = cut[1][1];
            cut[1][0] = t0;
            cut[1][1] = t1;
        }
        reduced = malloc(len + 16);
        if (!reduced) {
            rc = oom(path);
            goto fail;
        }
        size_t n = 0;
        const char *p = json;
        /* cJSON takes any bytes in strings: the text it gets must be
         * UTF-8, as Hugging Face requires of the whole file (vocab and
         * merges are checked as they are read) */
        for (int k = 0; k <= 2; k++) {
            if (k < 2 && !cut[k][0]) continue;
            const char *b = k < 2 ? cut[k][0] : json + len;
            size_t at = utf8_check(p, (size_t)(b - p));
            if (at < (size_t)(b - p)) {
                rc = infer_err(INFER_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu", path,
                               (size_t)(p - json) + at);
                goto fail;
            }
            if (k < 2) p = cut[k][1];
        }
        p = json;
        for (int k = 0; k < 2; k++) {
            if (!cut[k][0]) continue;
            memcpy(reduced + n, p, (size_t)(cut[k][0] - p));
            n += (size_t)(cut[k][0] - p);
            memcpy(reduced + n, "null", 4);
            n += 4;
            p = cut[k][1];
        }
        memcpy(reduced + n, p, (size_t)(json + len - p));
        n += (size_t)(json + len - p);
        reduced[n] = '\0';
        root = cJSON_ParseWithLength(reduced, n);
        if (!root) {
            rc = infer_err(INFER_ERR_FORMAT, "%s: malformed JSON", path);
            goto fail;
        }
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    vocab_entry *ve = NULL;
    size_t nv = 0;
    if ((rc = load_model(tok, model, &sp, &ve, &nv))) goto fail;
    if ((rc = parse_added(tok, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")))) {
        free(ve);
        goto fail;
    }
    if ((rc = build_ids(tok, ve, nv))) goto fail;
    if (sp.merges && (rc = parse_merges(tok, sp.merges, sp.merges_end))) goto fail;
    if ((rc = parse_normalizer(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, "normalizer",
                               &tok->norm)))
        goto fail;
    if ((rc = parse_pretok(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path,
                           "pre_tokenizer", &tok->pre)))
        goto fail;
    if ((rc = parse_decoder(cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, "decoder",
                            &tok->dec)))
        goto fail;
    {
        post_acc acc = {{0}, {0}, 1};
        rc = parse_post(tok, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &acc,
                        "post_processor");
        tok->post_prefix = acc.pre.v;
        tok->n_post_prefix = acc.pre.n;
        tok->post_suffix = acc.suf.v;
        tok->n_post_suffix = acc.suf.n;
        tok->post_keeps_seq = acc.keeps_seq;
        if (rc) goto fail;
        for (size_t i = 0; i < acc.pre.n + acc.suf.n; i++) {
            int32_t id = i < acc.pre.n ? acc.pre.v[i] : acc.suf.v[i - acc.pre.n];
            if (id >= tok->vocab_size) {
                rc = infer_err(INFER_ERR_OUT_OF_RANGE,
                               "%s: post_processor: special token id %d is outside the vocabulary",
                               path, (int)id);
                goto fail;
            }
        }
    }
    if ((rc = build_tries(tok))) goto fail;
    dec_analyze(tok);
    cJSON_Delete(root);
    free(reduced);
    tok_finish_info(tok, NULL, 0);
    *out = tok;
    return 0;
fail:
    cJSON_Delete(root);
    free(reduced);
    infer_tokenizer_free(tok);
    return rc;
}

/* ---- info ----------------------------------------------------------- */

static int32_t lookup_cfg(const infer_tokenizer *tok, const char *s)
{
    return s ? tok_lookup(tok, s, strlen(s)) : -1;
}

static void add_stop(infer_tokenizer_info *in, int32_t id)
{
    if (id < 0) return;
    for (int i = 0; i < in->n_stop_ids; i++)
        if (in->stop_ids[i] == id) return;
    if (in->n_stop_ids < INFER_MAX_STOP_IDS) in->stop_ids[in->n_stop_ids++] = id;
}

void tok_finish_info(infer_tokenizer *tok, const int32_t *gen_eos, size_t n_gen_eos)
{
    infer_tokenizer_info *in = &tok->info;
    memset(in, 0, sizeof *in);
    in->vocab_size = tok->vocab_size;
    in->bos_id = lookup_cfg(tok, tok->cfg_bos);
    if (in->bos_id < 0 && !tok->cfg_bos && tok->n_post_prefix) in->bos_id = tok->post_prefix[0];
    in->eos_id = lookup_cfg(tok, tok->cfg_eos);
    if (in->eos_id < 0 && n_gen_eos) in->eos_id = gen_eos[0];
    in->pad_id = lookup_cfg(tok, tok->cfg_pad);
    in->add_bos = in->bos_id >= 0 && tok->n_post_prefix && tok->post_prefix[0] == in->bos_id;
    in->has_chat_template = tok->chat_template != NULL;
    add_stop(in, in->eos_id);
    for (size_t i = 0; i < n_gen_eos; i++) add_stop(in, gen_eos[i]);
    static const char *const eot[] = {"<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>",
                                      "<|end|>", "<turn|>"};
    for (size_t i = 0; i < sizeof eot / sizeof eot[0]; i++) add_stop(in, lookup_cfg(tok, eot[i]));
}

/* ---- the folder ----------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* A special-token setting: "<bos>" or {"content": "<bos>", ...}. */
static int cfg_token(const cJSON *cfg, const char *key, char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return 0;
    *out = strdup(v->valuestring);
    return *out ? 0 : -1;
}

/* Applies add_bos_token / add_eos_token as transformers' Llama and Gemma
 * tokenizers do: they decide whether BOS leads and EOS ends the sequence. */
static int apply_add_flags(infer_tokenizer *tok, int add_bos, int add_eos)
{
    int32_t bos = lookup_cfg(tok, tok->cfg_bos), eos = lookup_cfg(tok, tok->cfg_eos);
    if (add_bos >= 0 && bos >= 0) {
        int has = tok->n_post_prefix && tok->post_prefix[0] == bos;
        if (add_bos && !has) {
            int32_t *p = realloc(tok->post_prefix, (tok->n_post_prefix + 1) * sizeof *p);
            if (!p) return -1;
            memmove(p + 1, p, tok->n_post_prefix * sizeof *p);
            p[0] = bos;
            tok->post_prefix = p;
            tok->n_post_prefix++;
        } else if (!add_bos && has) {
            memmove(tok->post_prefix, tok->post_prefix + 1, (tok->n_post_prefix - 1) * sizeof(int32_t));
            tok->n_post_prefix--;
        }
    }
    if (add_eos >= 0 && eos >= 0) {
        size_t n = tok->n_post_suffix;
        int has = n && tok->post_suffix[n - 1] == eos;
        if (add_eos && !has) {
            int32_t *p = realloc(tok->post_suffix, (n + 1) * sizeof *p);
            if (!p) return -1;
            p[n] = eos;
            tok->post_suffix = p;
            tok->n_post_suffix++;
        } else if (!add_eos && has) {
            tok->n_post_suffix--;
        }
    }
    return 0;
}

/* transformers' special_tokens_map, which apply_chat_template passes to the
 * template: the standard names that are set, then extra_special_tokens
 * (a dict of name -> token).  Gemma's tokenizer class supplies mask_token
 * "<mask>" when the config does not. */
static int build_special_map(infer_tokenizer *tok, const cJSON *cfg, const char *path)
{
    static const char *const names[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};
    cJSON *map = tok->special_map;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *v = NULL;
        if (cfg_token(cfg, names[i], &v)) return oom(path);
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
        if (!v && !strcmp(names[i], "mask_token") && cJSON_IsString(cls) &&
            !strncmp(cls->valuestring, "Gemma", 5) &&
            !cJSON_GetObjectItemCaseSensitive(cfg, "mask_token")) {
            v = strdup("<mask>");
            if (!v) return oom(path);
        }
        if (v) {
            int bad = !cJSON_AddStringToObject(map, names[i], v);
            free(v);
            if (bad) return oom(path);
        }
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "extra_special_tokens"), *it;
    if (cJSON_IsObject(extra)) {
        cJSON_ArrayForEach(it, extra)
        {
            const cJSON *v = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "content") : it;
            if (!it->string || !cJSON_IsString(v)) continue;
            cJSON_DeleteItemFromObjectCaseSensitive(map, it->string);
            if (!cJSON_AddStringToObject(map, it->string, v->valuestring)) return oom(path);
        }
    }
    return 0;
}

static int load_config(infer_tokenizer *tok, const char *dir)
{
    char *path = join(dir, "tokenizer_config.json");
    if (!path) return oom(dir);
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len);
    if (rc == INFER_ERR_MISSING) {
        free(path);
        return 0;
    }
    if (rc) {
        free(path);
        return rc;
    }
    size_t bad = utf8_check(text, len);
    cJSON *cfg = bad == len ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (bad < len) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu", path, bad);
        goto out;
    }
    if (!cJSON_IsObject(cfg)) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: malformed JSON", path);
        goto out;
    }
    if (cfg_token(cfg, "bos_token", &tok->cfg_bos) || cfg_token(cfg, "eos_token", &tok->cfg_eos) ||
        cfg_token(cfg, "pad_token", &tok->cfg_pad) || cfg_token(cfg, "unk_token", &tok->cfg_unk)) {
        rc = oom(path);
        goto out;
    }
    if ((rc = build_special_map(tok, cfg, path))) goto out;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(ct)) {
        tok->chat_template = strdup(ct->valuestring);
        if (!tok->chat_template) rc = oom(path);
    } else if (cJSON_IsArray(ct)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, ct)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(tpl)) {
                tok->chat_template = strdup(tpl->valuestring);
                if (!tok->chat_template) rc = oom(path);
                break;
            }
        }
    } else if (ct && !cJSON_IsNull(ct)) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: chat_template is neither a string nor a list", path);
    }
    if (rc) goto out;
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    if (apply_add_flags(tok, cJSON_IsBool(ab) ? cJSON_IsTrue(ab) : -1,
                        cJSON_IsBool(ae) ? cJSON_IsTrue(ae) : -1))
        rc = oom(path);
out:
    cJSON_Delete(cfg);
    free(path);
    return rc;
}

static int load_generation(const char *dir, int32_t *eos, size_t *n_eos)
{
    *n_eos = 0;
    char *path = join(dir, "generation_config.json");
    if (!path) return oom(dir);
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len);
    if (rc == INFER_ERR_MISSING) {
        free(path);
        return 0;
    }
    if (rc) {
        free(path);
        return rc;
    }
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(cfg)) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: malformed JSON", path);
    } else {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id"), *x;
        int32_t id;
        if (cJSON_IsArray(v)) {
            cJSON_ArrayForEach(x, v) if (json_id(x, &id) == 0 && *n_eos < INFER_MAX_STOP_IDS)
                eos[(*n_eos)++] = id;
        } else if (json_id(v, &id) == 0) {
            eos[(*n_eos)++] = id;
        }
    }
    cJSON_Delete(cfg);
    free(path);
    return rc;
}

int infer_tokenizer_load(const char *dir, infer_tokenizer **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_tokenizer_load: out is NULL");
    *out = NULL;
    if (!dir) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_tokenizer_load: dir is NULL");
    char *path = join(dir, "tokenizer.json");
    if (!path) return oom(dir);
    const char *text;
    size_t len;
    int rc = map_file(path, &text, &len);
    if (rc) {
        free(path);
        return rc;
    }
    infer_tokenizer *tok;
    rc = tok_load_from_memory(text ? text : "", len, path, &tok);
    if (text) munmap((void *)text, len);
    free(path);
    if (rc) return rc;
    int32_t gen[INFER_MAX_STOP_IDS];
    size_t n_gen = 0;
    if (!(tok->special_map = cJSON_CreateObject())) {
        rc = oom(dir);
        goto fail;
    }
    if ((rc = load_config(tok, dir)) || (rc = load_generation(dir, gen, &n_gen))) goto fail;
    char *jpath = join(dir, "chat_template.jinja");
    if (!jpath) {
        rc = oom(dir);
        goto fail;
    }
    char *tpl;
    size_t tlen;
    rc = read_file(jpath, &tpl, &tlen);
    if (rc == 0 && utf8_check(tpl, tlen) < tlen) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu", jpath, utf8_check(tpl, tlen));
        free(tpl);
    }
    free(jpath);
    if (rc == 0) {
        free(tok->chat_template);
        tok->chat_template = tpl;
    } else if (rc != INFER_ERR_MISSING) {
        goto fail;
    }
    rc = 0;
    tok_finish_info(tok, gen, n_gen);
    infer_err_clear();
    *out = tok;
    return 0;
fail:
    infer_tokenizer_free(tok);
    return rc;
}

void infer_tokenizer_free(infer_tokenizer *tok)
{
    if (!tok) return;
    free(tok->path);
    tb_free(&tok->arena);
    free(tok->piece_off);
    free(tok->piece_len);
    free(tok->piece_added);
    free(tok->special);
    strmap_free(&tok->model_map);
    mergemap_free(&tok->merges);
    free(tok->char_id);
    free(tok->unk_token);
    free(tok->prefix);
    free(tok->suffix);
    free(tok->added);
    tb_free(&tok->added_arena);
    strmap_free(&tok->added_map);
    trie_free(&tok->trie_raw);
    trie_free(&tok->trie_norm);
    tb_free(&tok->norm_arena);
    norm_free(tok->norm);
    pretok_free(tok->pre);
    dec_free(tok->dec);
    free(tok->post_prefix);
    free(tok->post_suffix);
    free(tok->cfg_bos);
    free(tok->cfg_eos);
    free(tok->cfg_pad);
    free(tok->cfg_unk);
    free(tok->chat_template);
    cJSON_Delete(tok->special_map);
    free(tok);
}

int infer_tokenizer_get_info(const infer_tokenizer *tok, infer_tokenizer_info *out)
{
    if (!tok || !out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_tokenizer_get_info: NULL argument");
    *out = tok->info;
    return 0;
}

const char *tok_chat_template(const infer_tokenizer *tok) { return tok ? tok->chat_template : NULL; }

const cJSON *tok_special_map(const infer_tokenizer *tok) { return tok->special_map; }

const char *tok_path(const infer_tokenizer *tok) { return tok->path ? tok->path : "tokenizer"; }

const char *tok_config_token(const infer_tokenizer *tok, const char *key)
{
    if (!tok || !key) return NULL;
    if (!strcmp(key, "bos_token")) return tok->cfg_bos;
    if (!strcmp(key, "eos_token")) return tok->cfg_eos;
    if (!strcmp(key, "pad_token")) return tok->cfg_pad;
    if (!strcmp(key, "unk_token")) return tok->cfg_unk;
    return NULL;
}

void infer_free(void *p) { free(p); }

int infer_token_to_piece(const infer_tokenizer *tok, int32_t id, const char **piece, size_t *len)
{
    if (!tok || !piece) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_token_to_piece: NULL argument");
    size_t l;
    const char *p = tok_piece(tok, id, &l);
    if (!p)
        return infer_err(INFER_ERR_OUT_OF_RANGE, "%s: token id %d is not in the vocabulary (size %d)",
                         tok->path, (int)id, (int)tok->vocab_size);
    *piece = p;
    if (len) *len = l;
    return 0;
}

int infer_token_lookup(const infer_tokenizer *tok, const char *piece, int32_t *id)
{
    if (!tok || !piece || !id) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_token_lookup: NULL argument");
    int32_t v = tok_lookup(tok, piece, strlen(piece));
    if (v < 0) return infer_err(INFER_ERR_MISSING, "%s: no token \"%.200s\"", tok->path, piece);
    *id = v;
    return 0;
}

int infer_token_is_special(const infer_tokenizer *tok, int32_t id)
{
    if (!tok || id < 0 || id >= tok->vocab_size) return 0;
    return tok->special[id];
}
