/* test_cli.c - the `infer` command-line tool, run as a program: exit
 * status, messages, option parsing, and the .npy files it writes.
 *
 * The tool's path is INFER_TOOL (set by the Makefile).  Tests that need a
 * model fixture skip when tests/fixtures/llama_rope_llama3 is absent.
 * The .npy writer is compiled in here too (the Makefile builds the tests
 * from the tests folder only) so that its format is checked without a model. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "infer.h"
#include "test.h"

#include "../tools/npy.c"

#ifndef INFER_TOOL
#define INFER_TOOL "build/infer"
#endif

#define FIXTURE INFER_TEST_DIR "/fixtures/llama_rope_llama3"
#define TINY INFER_TEST_DIR "/../models/tiny-chat"
#define NO_DIR "/nonexistent-infer-test/model"

/* ------------------------------------------------------------------ */
/* Running the tool                                                     */
/* ------------------------------------------------------------------ */

typedef struct run_result {
    int status; /* exit status, or -1 if killed by a signal */
    char *out;  /* stdout */
    char *err;  /* stderr */
} run_result;

/* Runs INFER_TOOL with the arguments fmt (a shell fragment: quote
 * paths); captures stdout and stderr. */
static run_result run_tool(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static run_result run_tool(const char *fmt, ...)
{
    run_result r = {-1, NULL, NULL};
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *dir = test_tmpdir("cli");
    assert_non_null(dir);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/out' 2>'%s/err' </dev/null", INFER_TOOL, args,
             dir, dir);
    int st = system(cmd);
    if (st != -1 && WIFEXITED(st)) r.status = WEXITSTATUS(st);
    char path[1024];
    snprintf(path, sizeof path, "%s/out", dir);
    r.out = (char *)test_read_file(path, NULL);
    snprintf(path, sizeof path, "%s/err", dir);
    r.err = (char *)test_read_file(path, NULL);
    test_rmdir(dir);
    free(dir);
    assert_non_null(r.out);
    assert_non_null(r.err);
    return r;
}

static void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

/* Asserts the exit status and that stderr contains want (if not NULL). */
static void expect(const run_result *r, int status, const char *want_err)
{
    if (r->status != status || (want_err && !strstr(r->err, want_err)))
        fprintf(stderr, "exit %d (want %d)\nstdout: %s\nstderr: %s\n", r->status, status,
                r->out, r->err);
    assert_int_equal(r->status, status);
    if (want_err) assert_non_null(strstr(r->err, want_err));
}

static void expect_run(int status, const char *want_err, const char *args)
{
    run_result r = run_tool("%s", args);
    expect(&r, status, want_err);
    run_free(&r);
}

static int have_fixture(void)
{
    struct stat st;
    return stat(FIXTURE "/config.json", &st) == 0;
}

/* ------------------------------------------------------------------ */
/* Without a model                                                      */
/* ------------------------------------------------------------------ */

static void version(void **state)
{
    (void)state;
    run_result r = run_tool("--version");
    expect(&r, 0, NULL);
    assert_string_equal(r.out, "infer " INFER_VERSION_STRING "\n");
    assert_string_equal(r.err, "");
    run_free(&r);
}

static void help(void **state)
{
    (void)state;
    static const char *const ways[] = {"--help", "-h", "help"};
    for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
        run_result r = run_tool("%s", ways[i]);
        expect(&r, 0, NULL);
        assert_non_null(strstr(r.out, "usage: infer"));
        assert_non_null(strstr(r.out, "info"));
        assert_non_null(strstr(r.out, "logits"));
        run_free(&r);
    }
}

static void command_help(void **state)
{
    (void)state;
    static const char *const ways[] = {"logits --help", "help logits", "logits MODEL -h",
                                       "logits --ids=x --help"};
    for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
        run_result r = run_tool("%s", ways[i]);
        expect(&r, 0, NULL);
        assert_non_null(strstr(r.out, "usage: infer logits MODEL_DIR --ids LIST --out FILE"));
        assert_non_null(strstr(r.out, "--threads N"));
        run_free(&r);
    }
    run_result r = run_tool("info --help");
    expect(&r, 0, NULL);
    assert_non_null(strstr(r.out, "--json"));
    run_free(&r);
}

static void bad_commands(void **state)
{
    (void)state;
    expect_run(2, "unknown command 'frobnicate'", "frobnicate");
    expect_run(2, "unknown option '--bogus'", "--bogus");
    expect_run(2, "usage: infer", "");
    expect_run(2, "unknown command 'nope'", "help nope");
    expect_run(2, "takes no arguments", "--version extra");
}

static void bad_ids(void **state)
{
    (void)state;
    static const char *const lists[] = {
        "1,,2", "x", "99999999999", "2147483648", "-1", "1,-2", "", "1,", ",1",
        "1 2", "+1", " 1", "1,2,3x", "0x10", "1.5",
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        run_result r = run_tool("logits '%s' --ids '%s' --out /tmp/x.npy", NO_DIR, lists[i]);
        expect(&r, 2, "--ids");
        run_free(&r);
        r = run_tool("logits '%s' --out /tmp/x.npy --ids='%s'", NO_DIR, lists[i]);
        expect(&r, 2, "--ids");
        run_free(&r);
    }
}

static void bad_options(void **state)
{
    (void)state;
    expect_run(2, "missing option --ids", "logits " NO_DIR " --out /tmp/x.npy");
    expect_run(2, "missing option --out", "logits " NO_DIR " --ids 1");
    expect_run(2, "missing MODEL_DIR", "logits --ids 1 --out /tmp/x.npy");
    expect_run(2, "--ids needs a value", "logits " NO_DIR " --out /tmp/x.npy --ids");
    expect_run(2, "given twice", "logits " NO_DIR " --ids 1 --ids 2 --out /tmp/x.npy");
    expect_run(2, "--out: empty value", "logits " NO_DIR " --ids 1 --out=");
    expect_run(2, "--threads", "logits " NO_DIR " --ids 1 --out /tmp/x.npy --threads x");
    expect_run(2, "--threads", "info " NO_DIR " --threads=-1");
    expect_run(2, "--threads", "info " NO_DIR " --threads 99999999999999999999");
    expect_run(2, "--backend", "info " NO_DIR " --backend tpu");
    expect_run(2, "--json takes no value", "info " NO_DIR " --json=1");
    expect_run(2, "unknown option '--bogus'", "info " NO_DIR " --bogus");
    expect_run(2, "unknown option '--js'", "info " NO_DIR " --js");
    expect_run(2, "missing MODEL_DIR", "info");
    expect_run(2, "unexpected argument 'b'", "info a b");
}

static void missing_model_dir(void **state)
{
    (void)state;
    run_result r = run_tool("info '%s'", NO_DIR);
    expect(&r, 1, NO_DIR);
    assert_true(strncmp(r.err, "infer: ", 7) == 0);
    assert_string_equal(r.out, "");
    run_free(&r);
    /* Options after "--" are positionals; options may follow MODEL_DIR. */
    r = run_tool("logits --ids 1,2 --out /tmp/x.npy --threads=1 -- '%s'", NO_DIR);
    expect(&r, 1, NO_DIR);
    run_free(&r);
}

/* ------------------------------------------------------------------ */
/* The .npy writer                                                      */
/* ------------------------------------------------------------------ */

static void npy_header_layout(void **state)
{
    (void)state;
    char buf[256];
    int64_t shape2[2] = {3, 256}, shape1[1] = {5};
    size_t n = npy_header(buf, sizeof buf, "<f4", shape2, 2);
    assert_int_equal(n, 128);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
    assert_int_equal((unsigned char)buf[8] | (unsigned char)buf[9] << 8, n - 10);
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 256), }";
    assert_memory_equal(buf + 10, dict, strlen(dict));
    for (size_t i = 10 + strlen(dict); i < n - 1; i++) assert_int_equal(buf[i], ' ');
    assert_int_equal(buf[n - 1], '\n');

    n = npy_header(buf, sizeof buf, "<i4", shape1, 1);
    assert_int_equal(n % 64, 0);
    assert_non_null(strstr(buf + 10, "'shape': (5,), }"));
    assert_int_equal(npy_header(buf, 32, "<f4", shape2, 2), 0); /* too small */
}

/* Number of entries in dir, not counting . and .. */
static int count_entries(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}

static void npy_round_trip(void **state)
{
    (void)state;
    char *dir = test_tmpdir("npy");
    assert_non_null(dir);
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/a.npy", dir);
    float data[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-7f, -INFINITY};
    int64_t shape[2] = {2, 3};
    for (int pass = 0; pass < 2; pass++) { /* the second pass replaces the file */
        data[3] = (float)pass;
        assert_int_equal(npy_write_f32(path, data, shape, 2, err, sizeof err), 0);
    }
    test_npy a;
    assert_int_equal(test_npy_load(path, &a), 0);
    assert_int_equal(a.dtype, 'f');
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    assert_memory_equal(a.f, data, sizeof data);
    test_npy_free(&a);
    assert_int_equal(count_entries(dir), 1); /* no temporary file left */
    test_rmdir(dir);
    free(dir);
}

static void npy_write_errors(void **state)
{
    (void)state;
    char err[256];
    float x = 1.0f;
    int64_t shape[1] = {1}, bad[1] = {-1};
    assert_int_equal(npy_write_f32(NO_DIR "/a.npy", &x, shape, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, NO_DIR "/a.npy"));
    assert_int_equal(npy_write_f32("/tmp/never.npy", &x, bad, 1, err, sizeof err), -1);
    char *dir = test_tmpdir("npy");
    assert_non_null(dir);
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(npy_write_f32(sub, &x, shape, 1, err, sizeof err), -1); /* a folder */
    assert_non_null(strstr(err, sub));
    assert_int_equal(count_entries(dir), 1); /* only sub: the temporary file is gone */
    test_rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------ */
/* With a model fixture                                                 */
/* ------------------------------------------------------------------ */

static void info_fixture(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    run_result r = run_tool("info '%s' --backend cpu --threads 2", FIXTURE);
    expect(&r, 0, NULL);
    assert_non_null(strstr(r.out, "model_type:"));
    assert_non_null(strstr(r.out, "llama"));
    assert_non_null(strstr(r.out, "vocab_size:"));
    run_free(&r);

    r = run_tool("info '%s' --json", FIXTURE);
    expect(&r, 0, NULL);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "model_type")), "llama");
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "vocab_size")) > 0);
    assert_true(cJSON_IsBool(cJSON_GetObjectItem(j, "tied_embeddings")));
    /* weight_bytes: every tensor of the file (all of them weights the model
     * uses), that is the file less its header */
    size_t len;
    unsigned char *f = test_read_file(FIXTURE "/model.safetensors", &len);
    assert_non_null(f);
    uint64_t hdr = 0;
    for (int i = 7; i >= 0; i--) hdr = hdr << 8 | f[i];
    free(f);
    double wb = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "weight_bytes"));
    double db = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "decode_bytes"));
    assert_true(wb == (double)(len - 8 - hdr));
    assert_true(db > 0 && db < wb);
    cJSON_Delete(j);
    run_free(&r);
}

static void bench_fixture(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    run_result r = run_tool("bench '%s' --backend cpu --threads 2 --n-prompt 16 --n-gen 4 --batch 2 --runs 1 --json",
                            FIXTURE);
    expect(&r, 0, NULL);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    static const char *const positive[] = {"bandwidth_gb_s", "decode_bytes", "decode_tok_s", "decode_bound_tok_s",
                                           "decode_ratio",   "prefill_tok_s", "batch_tok_s", "peak_memory"};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (!(cJSON_GetNumberValue(cJSON_GetObjectItem(j, positive[i])) > 0)) fail_msg("%s: not positive", positive[i]);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "backend")), "cpu");
    cJSON_Delete(j);
    run_free(&r);
    r = run_tool("bench '%s' --backend cpu --threads 1 --n-prompt 8 --n-gen 2 --runs 1", FIXTURE);
    expect(&r, 0, NULL);
    assert_non_null(strstr(r.out, "of the limit"));
    run_free(&r);
    char args[1024];
    snprintf(args, sizeof args, "bench '%s' --n-gen 1", FIXTURE);
    expect_run(2, "--n-gen", args);
    snprintf(args, sizeof args, "bench '%s' --ctx 32 --n-prompt 64 --runs 1", FIXTURE);
    expect_run(2, "do not fit the context", args);
    expect_run(1, NULL, "bench " NO_DIR);
}

/* The fixture's vocabulary size, from `infer info --json`. */
static int fixture_vocab(void)
{
    run_result r = run_tool("info '%s' --json", FIXTURE);
    expect(&r, 0, NULL);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    int vocab = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "vocab_size"));
    cJSON_Delete(j);
    run_free(&r);
    return vocab;
}

static void logits_fixture(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    int vocab = fixture_vocab();
    char *dir = test_tmpdir("cli-logits");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/logits.npy", dir);
    run_result r = run_tool("logits '%s' --ids 1,2,3 --out '%s' --backend=cpu", FIXTURE, path);
    expect(&r, 0, NULL);
    run_free(&r);

    test_npy a;
    assert_int_equal(test_npy_load(path, &a), 0);
    assert_int_equal(a.dtype, 'f');
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 3);
    assert_int_equal(a.shape[1], vocab);
    for (size_t i = 0; i < a.n; i++) assert_true(isfinite(a.f[i]));
    test_npy_free(&a);
    assert_int_equal(count_entries(dir), 1);
    test_rmdir(dir);
    free(dir);
}

static void logits_fixture_errors(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    run_result r = run_tool("logits '%s' --ids 1 --out '%s/x.npy'", FIXTURE, NO_DIR);
    expect(&r, 1, NO_DIR "/x.npy");
    assert_true(strncmp(r.err, "infer: ", 7) == 0);
    run_free(&r);
    r = run_tool("logits '%s' --ids 0,2147483647 --out /tmp/never.npy", FIXTURE);
    expect(&r, 1, "infer: ");
    run_free(&r);
}

/* batch and classify with --chat: each line a user message through the
 * model's chat template, the same text generate --chat gives (greedy);
 * --system without --chat is bad usage. */
static void batch_chat(void **state)
{
    (void)state;
    char *dir = test_tmpdir("cli-batch");
    assert_non_null(dir);
    static const char lines[] = "What does a cat say?\nWhat does a dog eat?\n";
    assert_int_equal(test_write_file(dir, "prompts.txt", lines, sizeof lines - 1), 0);
    run_result b = run_tool("batch '%s' --file '%s/prompts.txt' --max-tokens 12 --chat --backend cpu", TINY, dir);
    expect(&b, 0, NULL);
    static const char *const q[2] = {"What does a cat say?", "What does a dog eat?"};
    const char *line = b.out;
    for (int i = 0; i < 2; i++) {
        /* -n: llama.cpp's name for --max-tokens */
        run_result g = run_tool("generate '%s' --chat -p '%s' -n 12 --backend cpu", TINY, q[i]);
        expect(&g, 0, NULL);
        char want[512];
        size_t n = strcspn(g.out, "\n");
        snprintf(want, sizeof want, "\"text\":\"%.*s\"}", (int)n, g.out);
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if (!strstr(line, want) || strstr(line, want) > end)
            fail_msg("batch --chat line %d: %.*s; generate --chat: %s", i, (int)(end - line), line, g.out);
        line = end + 1;
        run_free(&g);
    }
    run_free(&b);
    run_result c = run_tool("classify '%s' --file '%s/prompts.txt' --chat --system-prompt 'Be brief.' --backend cpu", TINY, dir);
    expect(&c, 0, NULL);
    assert_non_null(strstr(c.out, "{\"index\":1,\"token\":"));
    run_free(&c);
    expect_run(2, "need --chat", "batch '" TINY "' --file /dev/null --system x");
    test_rmdir(dir);
    free(dir);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(version),
    cmocka_unit_test(help),
    cmocka_unit_test(command_help),
    cmocka_unit_test(bad_commands),
    cmocka_unit_test(bad_ids),
    cmocka_unit_test(bad_options),
    cmocka_unit_test(missing_model_dir),
    cmocka_unit_test(npy_header_layout),
    cmocka_unit_test(npy_round_trip),
    cmocka_unit_test(npy_write_errors),
    cmocka_unit_test(info_fixture),
    cmocka_unit_test(bench_fixture),
    cmocka_unit_test(logits_fixture),
    cmocka_unit_test(logits_fixture_errors),
    cmocka_unit_test(batch_chat),
};

TEST_GROUP(test_cli, tests)
