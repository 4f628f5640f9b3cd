/* test_generate.c - greedy generation through the public API against
 * transformers' generate() on every fixture.
 *
 * Goldens: tests/fixtures/<name>/generate.json, made by
 * tests/ref/make_gen_goldens.py (float32 transformers from the stored bf16
 * weights, generate(do_sample=False, max_new_tokens=24) with EOS switched
 * off).  Per fixture: text prompts (encoded with the tokenizer's specials)
 * of about 5, 20 and 60 tokens, shorter and longer than the sliding windows
 * (8), id prompts of 1 and 12 tokens, and chats rendered with the fixture's
 * template.  The tokenizers are tests/ref/make_fixture_tokenizers.py's.
 *
 * A generated token may differ from transformers' only at a step whose
 * golden top-1 / top-2 logit margin is below margin_tolerance (1e-4): the
 * two computations may then order the two tokens either way.  After such a
 * step the sequences diverge legitimately, so comparing stops there (and the
 * text of that prompt is not compared). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "infer.h"
#include "test.h"

#define FIXTURES INFER_TEST_DIR "/fixtures"
#define MAX_FIXTURES 64

/* ------------------------------------------------------------------ */
/* Goldens                                                              */
/* ------------------------------------------------------------------ */

typedef struct fixture {
    char name[256];
    char dir[1024];
    cJSON *golden;       /* generate.json */
    infer_model *model;
    infer_session *session;
} fixture;

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

static const cJSON *item(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!x) fail_msg("generate.json: no \"%s\"", key);
    return x;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const char *s = cJSON_GetStringValue(item(o, key));
    if (!s) fail_msg("generate.json: \"%s\" is not a string", key);
    return s;
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

/* The fixtures that have generate.json, sorted by name; *n of them. */
static fixture *load_fixtures(int *n)
{
    DIR *d = opendir(FIXTURES);
    *n = 0;
    if (!d) return NULL;
    fixture *f = calloc(MAX_FIXTURES, sizeof *f);
    assert_non_null(f);
    struct dirent *e;
    while ((e = readdir(d)) && *n < MAX_FIXTURES) {
        char p[1200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s/generate.json", FIXTURES, e->d_name);
        if (e->d_name[0] == '.' || stat(p, &st) != 0) continue;
        fixture *x = &f[(*n)++];
        snprintf(x->name, sizeof x->name, "%s", e->d_name);
        snprintf(x->dir, sizeof x->dir, "%s/%s", FIXTURES, e->d_name);
        x->golden = read_json(p);
    }
    closedir(d);
    for (int i = 1; i < *n; i++)
        for (int j = i; j > 0 && strcmp(f[j - 1].name, f[j].name) > 0; j--) {
            fixture t = f[j];
            f[j] = f[j - 1];
            f[j - 1] = t;
        }
    return f;
}

/* Loads the fixture's model (cpu, the goldens' context) and a session. */
static void open_model(fixture *x)
{
    infer_load_opts o;
    infer_load_opts_default(&o);
    o.backend = "cpu";
    o.context_len = (int)item(x->golden, "context_len")->valuedouble;
    int rc = infer_model_load(x->dir, &o, &x->model);
    if (rc) fail_msg("%s: %s", x->name, infer_last_error());
    if (!infer_model_tokenizer(x->model)) fail_msg("%s: the model has no tokenizer", x->name);
    rc = infer_session_new(x->model, &x->session);
    if (rc) fail_msg("%s: %s", x->name, infer_last_error());
}

static void free_fixtures(fixture *f, int n)
{
    for (int i = 0; i < n; i++) {
        infer_session_free(f[i].session);
        infer_model_free(f[i].model);
        cJSON_Delete(f[i].golden);
    }
    free(f);
}

/* ------------------------------------------------------------------ */
/* Running a stream and comparing                                       */
/* ------------------------------------------------------------------ */

typedef struct run_result {
    int32_t ids[64];
    size_t n;
    char *text;          /* the streamed pieces, joined */
    size_t len;
    infer_metrics met;
} run_result;

/* Pulls every token of st into r and frees the stream. */
static int collect(infer_stream *st, run_result *r, const char *what)
{
    memset(r, 0, sizeof *r);
    size_t cap = 256;
    r->text = malloc(cap);
    assert_non_null(r->text);
    infer_token t;
    while (infer_stream_next(st, &t)) {
        if (r->n < sizeof r->ids / sizeof r->ids[0]) r->ids[r->n] = t.id;
        r->n++;
        while (r->len + t.len + 1 > cap) {
            cap *= 2;
            r->text = realloc(r->text, cap);
            assert_non_null(r->text);
        }
        if (t.len) memcpy(r->text + r->len, t.text, t.len);
        r->len += t.len;
    }
    r->text[r->len] = '\0';
    const char *msg = NULL;
    int rc = infer_stream_error(st, &msg);
    infer_stream_metrics(st, &r->met);
    infer_stream_free(st);
    if (rc) print_message("  %s: the stream failed: %s\n", what, msg ? msg : "");
    return rc;
}

static const char *show_ids(const int32_t *v, size_t n, size_t from)
{
    static char buf[2][256];
    static int which;
    char *b = buf[which++ & 1];
    size_t k = (size_t)snprintf(b, 256, "%s[", from ? "..." : "");
    for (size_t i = from; i < n && k < 220; i++)
        k += (size_t)snprintf(b + k, 256 - k, "%s%d", i > from ? "," : "", (int)v[i]);
    snprintf(b + k, 256 - k, "%s]", k >= 220 ? "..." : "");
    return b;
}

/* Compares r with the prompt's golden tokens.  Returns 0 when they agree
 * (a difference at a step whose golden margin is below tol counts as
 * agreement; *flipped is then set), 1 after printing why not. */
static int compare(const char *what, const run_result *r, const cJSON *p, double tol, int *flipped)
{
    size_t n_want;
    int32_t *want = json_ids(item(p, "generated"), &n_want);
    const cJSON *margins = item(p, "margins");
    *flipped = 0;
    int bad = 0;
    if (r->n != n_want) {
        print_message("  %s: %zu tokens generated, transformers %zu (finish %d)\n", what, r->n, n_want,
                      (int)r->met.finish);
        bad = 1;
    }
    for (size_t i = 0; !bad && i < n_want; i++) {
        if (r->ids[i] == want[i]) continue;
        double m = cJSON_GetArrayItem(margins, (int)i)->valuedouble;
        if (m < tol) {
            print_message("  %s: step %zu gives %d, transformers %d, at a golden margin of %.2g < %.0e: "
                          "accepted, not compared further\n",
                          what, i, (int)r->ids[i], (int)want[i], m, tol);
            *flipped = 1;
            break;
        }
        print_message("  %s: step %zu gives %d, transformers %d (golden margin %.3g)\n    ours %s\n    want %s\n",
                      what, i, (int)r->ids[i], (int)want[i], m, show_ids(r->ids, r->n, i),
                      show_ids(want, n_want, i));
        bad = 1;
    }
    if (!bad && r->met.finish != INFER_FINISH_LENGTH) {
        print_message("  %s: the stream ended with finish %d, not INFER_FINISH_LENGTH\n", what, (int)r->met.finish);
        bad = 1;
    }
    free(want);
    return bad;
}

/* The streamed text and infer_detokenize of the tokens against the decoded
 * goldens (skipping specials: what a stream yields; keeping them). */
static int compare_text(const char *what, const infer_tokenizer *tok, const run_result *r, const cJSON *p)
{
    int bad = 0;
    const char *want_skip = jstr(p, "text_out_skip");
    const char *want_all = jstr(p, "text_out");
    if (r->len != strlen(want_skip) || memcmp(r->text, want_skip, r->len) != 0) {
        print_message("  %s: streamed text differs from decode(skip_special_tokens=True)\n    ours \"%s\"\n"
                      "    want \"%s\"\n",
                      what, r->text, want_skip);
        bad = 1;
    }
    for (int skip = 0; skip <= 1; skip++) {
        char *text = NULL;
        size_t len = 0;
        int rc = infer_detokenize(tok, r->ids, r->n, skip, &text, &len);
        const char *want = skip ? want_skip : want_all;
        if (rc) {
            print_message("  %s: infer_detokenize: %s\n", what, infer_last_error());
            bad = 1;
        } else if (len != strlen(want) || memcmp(text, want, len) != 0) {
            print_message("  %s: infer_detokenize(skip_special=%d) gives \"%s\", want \"%s\"\n", what, skip, text,
                          want);
            bad = 1;
        }
        infer_free(text);
    }
    return bad;
}

static void gen_opts(infer_gen_opts *g, const fixture *x)
{
    infer_gen_opts_default(g);
    g->max_tokens = (int)item(x->golden, "max_new_tokens")->valuedouble;
    g->temperature = 0.0f;
    g->ignore_eos = 1;
}

/* The conversation of a chat prompt; *n messages (caller frees the array,
 * the strings belong to the JSON). */
static infer_message *messages(const cJSON *p, size_t *n)
{
    const cJSON *a = item(p, "messages");
    *n = (size_t)cJSON_GetArraySize(a);
    infer_message *m = calloc(*n + 1, sizeof *m);
    assert_non_null(m);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        m[i].role = jstr(e, "role");
        m[i].content = jstr(e, "content");
        i++;
    }
    return m;
}

enum how { BY_IDS, BY_PROMPT, REPEAT };

static int g_cache_hits; /* REPEAT runs whose second prefill reused cached tokens */

/* Generates from one golden prompt: BY_IDS from its prompt ids, BY_PROMPT
 * from its text or conversation (infer_generate / infer_chat), REPEAT from
 * its ids twice in one session, the second time with the prompt cached.
 * Returns the number of failures. */
static int run_prompt(fixture *x, const cJSON *p, enum how how, int *n_flips)
{
    const char *kind = jstr(p, "kind");
    char what[300];
    snprintf(what, sizeof what, "%s/%s%s", x->name, jstr(p, "name"),
             how == BY_IDS ? " (ids)" : how == REPEAT ? " (cached prompt)" : "");
    double tol = item(x->golden, "margin_tolerance")->valuedouble;
    const infer_tokenizer *tok = infer_model_tokenizer(x->model);
    infer_gen_opts g;
    gen_opts(&g, x);
    size_t n_ids;
    int32_t *ids = json_ids(item(p, "prompt_ids"), &n_ids);
    infer_stream *st = NULL;
    run_result r;
    memset(&r, 0, sizeof r);
    int bad = 0, rc = 0, flipped = 0;

    infer_session_reset(x->session);
    if (how == BY_IDS || how == REPEAT) {
        for (int round = 0; round < (how == REPEAT ? 2 : 1) && !bad; round++) {
            rc = infer_generate_ids(x->session, ids, n_ids, &g, &st);
            if (rc) {
                print_message("  %s: infer_generate_ids: %s\n", what, infer_last_error());
                bad = 1;
                break;
            }
            free(r.text);
            if (collect(st, &r, what)) bad = 1;
            if (!bad && how == REPEAT && round == 1 && r.met.prefill_tokens < r.met.prompt_tokens)
                g_cache_hits++;
            if (!bad) bad = compare(what, &r, p, tol, &flipped);
        }
    } else if (!strcmp(kind, "text")) {
        const char *text = jstr(p, "text");
        int32_t *got = NULL;
        size_t n_got = 0;
        if ((rc = infer_tokenize(tok, text, (size_t)-1, 1, &got, &n_got)) != 0) {
            print_message("  %s: infer_tokenize: %s\n", what, infer_last_error());
            bad = 1;
        } else if (n_got != n_ids || memcmp(got, ids, n_ids * sizeof *ids) != 0) {
            print_message("  %s: the prompt encodes to %s, want %s\n", what, show_ids(got, n_got, 0),
                          show_ids(ids, n_ids, 0));
            bad = 1;
        }
        infer_free(got);
        if (!bad && (rc = infer_generate(x->session, text, &g, &st)) != 0) {
            print_message("  %s: infer_generate: %s\n", what, infer_last_error());
            bad = 1;
        }
        if (!bad && collect(st, &r, what)) bad = 1;
        if (!bad) bad = compare(what, &r, p, tol, &flipped);
    } else if (!strcmp(kind, "chat")) {
        size_t n_msgs;
        infer_message *msgs = messages(p, &n_msgs);
        char *kw = cJSON_PrintUnformatted(item(p, "kwargs"));
        assert_non_null(kw);
        infer_chat_opts co;
        infer_chat_opts_default(&co);
        co.add_generation_prompt = 1;
        co.template_kwargs = kw;
        char *rendered = NULL;
        size_t len = 0;
        const char *want = jstr(p, "rendered");
        if ((rc = infer_chat_render(tok, msgs, n_msgs, &co, &rendered, &len)) != 0) {
            print_message("  %s: infer_chat_render: %s\n", what, infer_last_error());
            bad = 1;
        } else if (len != strlen(want) || memcmp(rendered, want, len) != 0) {
            print_message("  %s: the template renders\n    \"%s\"\n  transformers\n    \"%s\"\n", what, rendered,
                          want);
            bad = 1;
        }
        if (!bad) {
            int32_t *got = NULL;
            size_t n_got = 0;
            rc = infer_tokenize(tok, rendered, len, 0, &got, &n_got);
            if (rc || n_got != n_ids || memcmp(got, ids, n_ids * sizeof *ids) != 0) {
                print_message("  %s: the rendered prompt encodes to %s, want %s\n", what,
                              rc ? infer_last_error() : show_ids(got, n_got, 0), show_ids(ids, n_ids, 0));
                bad = 1;
            }
            infer_free(got);
        }
        infer_free(rendered);
        if (!bad && (rc = infer_chat(x->session, msgs, n_msgs, &co, &g, &st)) != 0) {
            print_message("  %s: infer_chat: %s\n", what, infer_last_error());
            bad = 1;
        }
        if (!bad && collect(st, &r, what)) bad = 1;
        if (!bad) bad = compare(what, &r, p, tol, &flipped);
        if (!bad && r.met.prompt_tokens != (int)n_ids) {
            print_message("  %s: infer_chat prompt of %d tokens, want %zu\n", what, r.met.prompt_tokens, n_ids);
            bad = 1;
        }
        cJSON_free(kw);
        free(msgs);
    } else {
        free(ids);
        return 0;  /* an ids prompt has no text form */
    }
    if (!bad && !flipped) bad = compare_text(what, tok, &r, p);
    free(r.text);
    *n_flips += flipped;
    free(ids);
    return bad;
}

/* Every golden prompt of every fixture, generated the given way. */
static void run_all(enum how how)
{
    int n = 0;
    fixture *f = load_fixtures(&n);
    if (n == 0) {
        free(f);
        skip();
    }
    int bad = 0, flips = 0, prompts = 0;
    g_cache_hits = 0;
    for (int i = 0; i < n; i++) {
        open_model(&f[i]);
        const cJSON *p;
        int bad_here = 0, n_here = 0;
        cJSON_ArrayForEach(p, item(f[i].golden, "prompts"))
        {
            if (how == BY_PROMPT && !strcmp(jstr(p, "kind"), "ids")) continue;
            bad_here += run_prompt(&f[i], p, how, &flips);
            n_here++;
        }
        print_message("  %-22s %d prompts, %d differ from transformers\n", f[i].name, n_here, bad_here);
        bad += bad_here;
        prompts += n_here;
    }
    print_message("  %d prompts x 24 tokens, %d accepted flips at margins < 1e-4", prompts, flips);
    if (how == REPEAT) print_message(", %d second runs reused the cached prompt", g_cache_hits);
    print_message("\n");
    free_fixtures(f, n);
    assert_int_equal(bad, 0);
}

/* infer_generate_ids with every golden prompt's ids. */
static void ids_match_transformers(void **state)
{
    (void)state;
    run_all(BY_IDS);
}

/* infer_generate (text in, text out) and infer_chat (a conversation with
 * template kwargs such as date_string). */
static void text_and_chat_match_transformers(void **state)
{
    (void)state;
    run_all(BY_PROMPT);
}

/* The same prompt twice in one session: the second run reuses the cached
 * prompt and must still give transformers' tokens. */
static void cached_prompt_matches_transformers(void **state)
{
    (void)state;
    run_all(REPEAT);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(ids_match_transformers),
    cmocka_unit_test(text_and_chat_match_transformers),
    cmocka_unit_test(cached_prompt_matches_transformers),
};

TEST_GROUP(test_generate, tests)
