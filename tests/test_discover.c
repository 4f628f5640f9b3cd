/* test_discover.c - infer_discover over folders built here: plain model
 * folders, a sharded one, a Hugging Face cache entry whose snapshot files
 * are links into blobs/, folders that are not models (no weights, a
 * malformed config.json, too deep), and `infer list` run as a program. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "infer.h"
#include "test.h"

#ifndef INFER_TOOL
#define INFER_TOOL "build/infer"
#endif

/* ---- building trees ---------------------------------------------------- */

/* root/rel into buf. */
static void path_of(char *buf, size_t size, const char *root, const char *rel)
{
    int n = snprintf(buf, size, "%s/%s", root, rel);
    assert_true(n > 0 && (size_t)n < size);
}

static void mkdirs(const char *root, const char *rel)
{
    char p[1024];
    path_of(p, sizeof p, root, rel);
    for (char *s = p + strlen(root) + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        mkdir(p, 0755);
        *s = '/';
    }
    mkdir(p, 0755);
}

/* Writes text to root/rel, making the folders on the way. */
static void put(const char *root, const char *rel, const char *text)
{
    char dir[1024];
    path_of(dir, sizeof dir, root, rel);
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    if (strlen(dir) > strlen(root)) mkdirs(root, dir + strlen(root) + 1);
    assert_int_equal(test_write_file(dir, slash + 1, text, strlen(text)), 0);
}

/* A file of n bytes. */
static void put_bytes(const char *root, const char *rel, size_t n)
{
    char *z = calloc(1, n + 1);
    assert_non_null(z);
    memset(z, 'x', n);
    put(root, rel, z);
    free(z);
}

/* root/rel as a symbolic link to target (relative to the link's folder). */
static void link_to(const char *root, const char *rel, const char *target)
{
    char p[1024];
    path_of(p, sizeof p, root, rel);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", p);
    *strrchr(dir, '/') = '\0';
    if (strlen(dir) > strlen(root)) mkdirs(root, dir + strlen(root) + 1);
    assert_int_equal(symlink(target, p), 0);
}

static const char *const LLAMA_CFG =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"torch_dtype\": \"bfloat16\"}";

/* The tree of most tests:
 *   plain/           llama, model.safetensors (100 B), tokenizer.json
 *   sharded/         qwen2 4-bit (MLX "quantization"), two shards (10 + 20 B) and the index
 *   gemma_mm/        multimodal gemma3, 8-bit "quantization_config", dtype in text_config
 *   models--acme--tiny-lm/   cache entry: snapshots r1 and r2, refs/main = r2
 *   models--beta--m/         cache entry without refs: both snapshots
 *   datasets--x--y/  not a model cache entry
 *   noweights/       config.json only
 *   bad/             malformed config.json
 *   empty/           nothing
 *   org/deep/        a model two levels down (not looked for)
 *   .hidden/         a model in a hidden folder
 *   a_file           a plain file */
static char *make_tree(void)
{
    char *root = test_tmpdir("discover");
    assert_non_null(root);
    put(root, "plain/config.json", LLAMA_CFG);
    put_bytes(root, "plain/model.safetensors", 100);
    put(root, "plain/tokenizer.json", "{}");

    put(root, "sharded/config.json",
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\","
        " \"quantization\": {\"group_size\": 64, \"bits\": 4}, \"torch_dtype\": \"float16\"}");
    put_bytes(root, "sharded/model-00001-of-00002.safetensors", 10);
    put_bytes(root, "sharded/model-00002-of-00002.safetensors", 20);
    put(root, "sharded/model.safetensors.index.json", "{\"weight_map\": {}}");
    put_bytes(root, "sharded/notes.txt", 1000);

    put(root, "gemma_mm/config.json",
        "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"model_type\": \"gemma3\","
        " \"text_config\": {\"model_type\": \"gemma3_text\", \"torch_dtype\": \"bfloat16\"},"
        " \"quantization_config\": {\"bits\": 8, \"group_size\": 64}}");
    put_bytes(root, "gemma_mm/model.safetensors", 7);
    put(root, "gemma_mm/tokenizer.json", "{}");

    /* the cache layout: files in snapshots/REV are links to ../../blobs/HASH */
    const char *acme = "models--acme--tiny-lm";
    char rel[512];
    snprintf(rel, sizeof rel, "%s/blobs/c0ffee", acme);
    put(root, rel, LLAMA_CFG);
    snprintf(rel, sizeof rel, "%s/blobs/beef", acme);
    put_bytes(root, rel, 64);
    snprintf(rel, sizeof rel, "%s/blobs/f00d", acme);
    put(root, rel, "{}");
    snprintf(rel, sizeof rel, "%s/refs/main", acme);
    put(root, rel, "r2\n");
    static const char *const revs[2] = {"r1", "r2"};
    for (int i = 0; i < 2; i++) {
        snprintf(rel, sizeof rel, "%s/snapshots/%s/config.json", acme, revs[i]);
        link_to(root, rel, "../../blobs/c0ffee");
        snprintf(rel, sizeof rel, "%s/snapshots/%s/model.safetensors", acme, revs[i]);
        link_to(root, rel, "../../blobs/beef");
    }
    snprintf(rel, sizeof rel, "%s/snapshots/r2/tokenizer.json", acme);
    link_to(root, rel, "../../blobs/f00d");

    const char *beta = "models--beta--m";
    snprintf(rel, sizeof rel, "%s/blobs/cfg", beta);
    put(root, rel, "{\"model_type\": \"qwen3\", \"architectures\": [\"Qwen3ForCausalLM\"]}");
    snprintf(rel, sizeof rel, "%s/blobs/w", beta);
    put_bytes(root, rel, 5);
    for (int i = 0; i < 2; i++) {
        snprintf(rel, sizeof rel, "%s/snapshots/%s/config.json", beta, revs[i]);
        link_to(root, rel, "../../blobs/cfg");
        snprintf(rel, sizeof rel, "%s/snapshots/%s/model.safetensors", beta, revs[i]);
        link_to(root, rel, "../../blobs/w");
    }
    /* a snapshot whose weights link to a blob still downloading */
    snprintf(rel, sizeof rel, "%s/snapshots/r3/config.json", beta);
    link_to(root, rel, "../../blobs/cfg");
    snprintf(rel, sizeof rel, "%s/snapshots/r3/model.safetensors", beta);
    link_to(root, rel, "../../blobs/missing");

    put(root, "datasets--x--y/snapshots/r/config.json", LLAMA_CFG);
    put_bytes(root, "datasets--x--y/snapshots/r/model.safetensors", 3);

    put(root, "noweights/config.json", LLAMA_CFG);
    put(root, "noweights/tokenizer.json", "{}");
    put(root, "bad/config.json", "{\"model_type\": \"llama\",");
    put_bytes(root, "bad/model.safetensors", 9);
    mkdirs(root, "empty");
    put(root, "org/deep/config.json", LLAMA_CFG);
    put_bytes(root, "org/deep/model.safetensors", 11);
    put(root, ".hidden/config.json", LLAMA_CFG);
    put_bytes(root, ".hidden/model.safetensors", 12);
    put(root, "a_file", "not a folder");
    return root;
}

static const infer_model_entry *find(const infer_model_entry *e, size_t n, const char *name, const char *path_end)
{
    for (size_t i = 0; i < n; i++) {
        size_t lp = strlen(e[i].path), le = strlen(path_end);
        if (!strcmp(e[i].name, name) && lp >= le && !strcmp(e[i].path + lp - le, path_end)) return &e[i];
    }
    return NULL;
}

/* ---- the library -------------------------------------------------------- */

static void finds_models_of_every_layout(void **state)
{
    (void)state;
    char *root = make_tree();
    infer_model_entry *e = NULL;
    size_t n = 0;
    int rc = infer_discover(root, &e, &n);
    if (rc) fail_msg("%s", infer_last_error());
    for (size_t i = 0; i < n; i++) print_message("  %-14s %s\n", e[i].name, e[i].path);
    assert_int_equal(n, 6);
    /* sorted by name, then path */
    static const char *const names[6] = {"acme/tiny-lm", "beta/m", "beta/m", "gemma_mm", "plain", "sharded"};
    for (size_t i = 0; i < n; i++) assert_string_equal(e[i].name, names[i]);
    assert_true(strcmp(e[1].path, e[2].path) < 0);

    const infer_model_entry *p = find(e, n, "plain", "/plain");
    assert_non_null(p);
    assert_string_equal(p->model_type, "llama");
    assert_string_equal(p->architecture, "LlamaForCausalLM");
    assert_string_equal(p->dtype, "bfloat16");
    assert_int_equal(p->quant_bits, 0);
    assert_int_equal(p->weight_bytes, 100);
    assert_int_equal(p->has_tokenizer, 1);
    char want[1024];
    snprintf(want, sizeof want, "%s/plain", root);
    assert_string_equal(p->path, want);

    p = find(e, n, "sharded", "/sharded");
    assert_non_null(p);
    assert_string_equal(p->model_type, "qwen2");
    assert_int_equal(p->quant_bits, 4);
    assert_int_equal(p->weight_bytes, 30); /* the shards, not the index nor notes.txt */
    assert_int_equal(p->has_tokenizer, 0);
    assert_string_equal(p->dtype, "float16");

    p = find(e, n, "gemma_mm", "/gemma_mm");
    assert_non_null(p);
    assert_string_equal(p->model_type, "gemma3"); /* the top level, not text_config's */
    assert_string_equal(p->architecture, "Gemma3ForConditionalGeneration");
    assert_int_equal(p->quant_bits, 8);
    assert_string_equal(p->dtype, "bfloat16");

    /* refs/main picks r2; the sizes are the blobs' */
    p = find(e, n, "acme/tiny-lm", "/models--acme--tiny-lm/snapshots/r2");
    assert_non_null(p);
    assert_string_equal(p->model_type, "llama");
    assert_int_equal(p->weight_bytes, 64);
    assert_int_equal(p->has_tokenizer, 1);
    assert_null(find(e, n, "acme/tiny-lm", "/snapshots/r1"));

    /* no refs: every snapshot with weights (r3's link dangles) */
    assert_non_null(find(e, n, "beta/m", "/models--beta--m/snapshots/r1"));
    assert_non_null(find(e, n, "beta/m", "/models--beta--m/snapshots/r2"));
    assert_string_equal(e[1].model_type, "qwen3");
    assert_int_equal(e[1].weight_bytes, 5);
    assert_int_equal(e[1].has_tokenizer, 0);

    infer_model_entries_free(e, n);
    test_rmdir(root);
    free(root);
}

/* refs/main naming a snapshot that is not there: every snapshot instead. */
static void stale_ref_lists_every_snapshot(void **state)
{
    (void)state;
    char *root = make_tree();
    char repo[1024];
    path_of(repo, sizeof repo, root, "models--acme--tiny-lm");
    put(root, "models--acme--tiny-lm/refs/main", "gone\n");
    infer_model_entry *e;
    size_t n;
    assert_int_equal(infer_discover(repo, &e, &n), INFER_OK);
    assert_int_equal(n, 2);
    assert_non_null(find(e, n, "acme/tiny-lm", "/snapshots/r1"));
    assert_non_null(find(e, n, "acme/tiny-lm", "/snapshots/r2"));
    infer_model_entries_free(e, n);
    test_rmdir(root);
    free(root);
}

/* dir itself: a model folder, a cache entry, the hub folder of a cache. */
static void dir_itself(void **state)
{
    (void)state;
    char *root = make_tree();
    char dir[1024];
    infer_model_entry *e;
    size_t n;

    path_of(dir, sizeof dir, root, "plain/");
    assert_int_equal(infer_discover(dir, &e, &n), INFER_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].name, "plain");
    assert_string_equal(e[0].path, dir);
    infer_model_entries_free(e, n);

    path_of(dir, sizeof dir, root, "models--acme--tiny-lm");
    assert_int_equal(infer_discover(dir, &e, &n), INFER_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].name, "acme/tiny-lm");
    assert_int_equal(e[0].weight_bytes, 64);
    infer_model_entries_free(e, n);

    /* "org" holds a model one level down: found from org, not from root */
    path_of(dir, sizeof dir, root, "org");
    assert_int_equal(infer_discover(dir, &e, &n), INFER_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].name, "deep");
    assert_int_equal(e[0].weight_bytes, 11);
    infer_model_entries_free(e, n);

    /* a cache root: the hub folder of ~/.cache/huggingface */
    char *hub = test_tmpdir("hub");
    assert_non_null(hub);
    put(hub, "models--Qwen--Qwen3-0.6B/blobs/a", "{\"model_type\": \"qwen3\"}");
    put_bytes(hub, "models--Qwen--Qwen3-0.6B/blobs/b", 42);
    put(hub, "models--Qwen--Qwen3-0.6B/refs/main", "0123abcd");
    link_to(hub, "models--Qwen--Qwen3-0.6B/snapshots/0123abcd/config.json", "../../blobs/a");
    link_to(hub, "models--Qwen--Qwen3-0.6B/snapshots/0123abcd/model.safetensors", "../../blobs/b");
    put(hub, "version.txt", "1");
    assert_int_equal(infer_discover(hub, &e, &n), INFER_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].name, "Qwen/Qwen3-0.6B");
    assert_string_equal(e[0].model_type, "qwen3");
    assert_int_equal(e[0].weight_bytes, 42);
    infer_model_entries_free(e, n);
    test_rmdir(hub);
    free(hub);

    test_rmdir(root);
    free(root);
}

static void empty_and_bad_input(void **state)
{
    (void)state;
    char *root = make_tree();
    char dir[1024];
    infer_model_entry *e = (infer_model_entry *)1;
    size_t n = 9;

    path_of(dir, sizeof dir, root, "empty");
    assert_int_equal(infer_discover(dir, &e, &n), INFER_OK);
    assert_int_equal(n, 0);
    assert_null(e);
    infer_model_entries_free(e, n);

    /* not models: they are skipped without error */
    static const char *const not_models[3] = {"noweights", "bad", "datasets--x--y"};
    for (int i = 0; i < 3; i++) {
        path_of(dir, sizeof dir, root, not_models[i]);
        assert_int_equal(infer_discover(dir, &e, &n), INFER_OK);
        assert_int_equal(n, 0);
    }

    assert_int_equal(infer_discover("/nonexistent-infer-test/models", &e, &n), INFER_ERR_IO);
    assert_non_null(strstr(infer_last_error(), "/nonexistent-infer-test/models"));
    assert_null(e);
    assert_int_equal(n, 0);
    path_of(dir, sizeof dir, root, "a_file");
    assert_int_equal(infer_discover(dir, &e, &n), INFER_ERR_IO);
    assert_non_null(strstr(infer_last_error(), "a_file"));

    assert_int_equal(infer_discover(NULL, &e, &n), INFER_ERR_INVALID_ARGUMENT);
    assert_int_equal(infer_discover(root, NULL, &n), INFER_ERR_INVALID_ARGUMENT);
    assert_int_equal(infer_discover(root, &e, NULL), INFER_ERR_INVALID_ARGUMENT);
    infer_model_entries_free(NULL, 0);
    test_rmdir(root);
    free(root);
}

/* The fixtures folder holds real model folders. */
static void finds_the_fixtures(void **state)
{
    (void)state;
    struct stat st;
    if (stat(INFER_TEST_DIR "/fixtures/llama_tied_bias/config.json", &st) != 0) skip();
    infer_model_entry *e;
    size_t n;
    assert_int_equal(infer_discover(INFER_TEST_DIR "/fixtures", &e, &n), INFER_OK);
    assert_true(n >= 1);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(e[i].name, "llama_tied_bias")) continue;
        found = 1;
        assert_string_equal(e[i].model_type, "llama");
        struct stat w;
        assert_int_equal(stat(INFER_TEST_DIR "/fixtures/llama_tied_bias/model.safetensors", &w), 0);
        assert_int_equal(e[i].weight_bytes, (int64_t)w.st_size);
    }
    assert_true(found);
    infer_model_entries_free(e, n);
}

/* ---- infer list --------------------------------------------------------- */

typedef struct tool_run {
    int status;
    char *out, *err;
} tool_run;

/* Runs INFER_TOOL with args (a shell fragment: quote paths). */
static tool_run run_tool(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static tool_run run_tool(const char *fmt, ...)
{
    tool_run r = {-1, NULL, NULL};
    char args[2048], cmd[4096], p[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *dir = test_tmpdir("cli-list");
    assert_non_null(dir);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/out' 2>'%s/err' </dev/null", INFER_TOOL, args, dir, dir);
    int st = system(cmd);
    if (st != -1 && WIFEXITED(st)) r.status = WEXITSTATUS(st);
    snprintf(p, sizeof p, "%s/out", dir);
    r.out = (char *)test_read_file(p, NULL);
    snprintf(p, sizeof p, "%s/err", dir);
    r.err = (char *)test_read_file(p, NULL);
    test_rmdir(dir);
    free(dir);
    assert_non_null(r.out);
    assert_non_null(r.err);
    return r;
}

static void tool_free(tool_run *r)
{
    free(r->out);
    free(r->err);
}

static int have_tool(void)
{
    return access(INFER_TOOL, X_OK) == 0;
}

/* The line of out that starts with prefix, copied into buf. */
static int line_starting(const char *out, const char *prefix, char *buf, size_t size)
{
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, prefix, strlen(prefix))) continue;
        size_t n = strcspn(l, "\n");
        if (n >= size) n = size - 1;
        memcpy(buf, l, n);
        buf[n] = '\0';
        return 1;
    }
    return 0;
}

static void cli_list_table(void **state)
{
    (void)state;
    if (!have_tool()) skip();
    char *root = make_tree();
    tool_run r = run_tool("list '%s'", root);
    if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
    assert_string_equal(r.err, "");
    char line[2048];
    assert_true(line_starting(r.out, "NAME ", line, sizeof line));
    const char *path_col = strstr(line, "PATH");
    assert_non_null(path_col);
    size_t col = (size_t)(path_col - line);
    int rows = 0;
    for (const char *l = strchr(r.out, '\n') + 1; *l; l = strchr(l, '\n') + 1) {
        rows++;
        /* aligned: every path starts under PATH */
        assert_true(strlen(l) > col && l[col] == '/');
    }
    assert_int_equal(rows, 6);
    assert_true(line_starting(r.out, "sharded ", line, sizeof line));
    assert_non_null(strstr(line, " qwen2 "));
    assert_non_null(strstr(line, " 4-bit "));
    assert_non_null(strstr(line, " 0.00 GB "));
    assert_true(line_starting(r.out, "plain ", line, sizeof line));
    assert_non_null(strstr(line, " bf16 "));
    assert_true(line_starting(r.out, "acme/tiny-lm ", line, sizeof line));
    assert_non_null(strstr(line, "/snapshots/r2"));
    tool_free(&r);

    /* an empty folder is not an error */
    char dir[1024];
    path_of(dir, sizeof dir, root, "empty");
    r = run_tool("list '%s'", dir);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "no model folders"));
    tool_free(&r);
    r = run_tool("list '%s' --json", dir);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "[]\n");
    tool_free(&r);
    test_rmdir(root);
    free(root);
}

static void cli_list_json(void **state)
{
    (void)state;
    if (!have_tool()) skip();
    char *root = make_tree();
    tool_run r = run_tool("list --json '%s'", root);
    if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
    cJSON *a = cJSON_Parse(r.out);
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), 6);
    const cJSON *first = cJSON_GetArrayItem(a, 0);
    assert_string_equal(cJSON_GetObjectItem(first, "name")->valuestring, "acme/tiny-lm");
    assert_string_equal(cJSON_GetObjectItem(first, "model_type")->valuestring, "llama");
    assert_string_equal(cJSON_GetObjectItem(first, "architecture")->valuestring, "LlamaForCausalLM");
    assert_int_equal(cJSON_GetObjectItem(first, "weight_bytes")->valuedouble, 64);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(first, "has_tokenizer")));
    assert_non_null(strstr(cJSON_GetObjectItem(first, "path")->valuestring, "/snapshots/r2"));
    const cJSON *last = cJSON_GetArrayItem(a, 5);
    assert_string_equal(cJSON_GetObjectItem(last, "name")->valuestring, "sharded");
    assert_int_equal(cJSON_GetObjectItem(last, "quant_bits")->valuedouble, 4);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(last, "has_tokenizer")));
    cJSON_Delete(a);
    tool_free(&r);
    test_rmdir(root);
    free(root);
}

static void cli_list_errors(void **state)
{
    (void)state;
    if (!have_tool()) skip();
    tool_run r = run_tool("list /nonexistent-infer-test/models");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "infer: "));
    assert_non_null(strstr(r.err, "/nonexistent-infer-test/models"));
    assert_string_equal(r.out, "");
    tool_free(&r);
    r = run_tool("list");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "missing DIR"));
    tool_free(&r);
    r = run_tool("list a b");
    assert_int_equal(r.status, 2);
    tool_free(&r);
    r = run_tool("list --help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: infer list DIR"));
    tool_free(&r);
}

static void cli_devices(void **state)
{
    (void)state;
    if (!have_tool()) skip();
    tool_run r = run_tool("devices");
    if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
    assert_true(!strncmp(r.out, "cpu: ", 5) || strstr(r.out, "\ncpu: "));
    assert_non_null(strstr(r.out, "memory:"));
    assert_non_null(strstr(r.out, "library memory:"));
    tool_free(&r);
    r = run_tool("devices --json");
    assert_int_equal(r.status, 0);
    cJSON *a = cJSON_Parse(r.out);
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), infer_backend_count());
    int seen_cpu = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, a)
    {
        const cJSON *b = cJSON_GetObjectItem(d, "backend");
        assert_true(cJSON_IsString(b));
        if (strcmp(b->valuestring, "cpu")) continue;
        seen_cpu = 1;
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(d, "available")));
        assert_true(cJSON_GetObjectItem(d, "memory_total")->valuedouble > 0);
        assert_true(cJSON_GetObjectItem(d, "multiprocessors")->valuedouble >= 1);
    }
    assert_true(seen_cpu);
    cJSON_Delete(a);
    tool_free(&r);
    r = run_tool("devices extra");
    assert_int_equal(r.status, 2);
    tool_free(&r);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(finds_models_of_every_layout),
    cmocka_unit_test(stale_ref_lists_every_snapshot),
    cmocka_unit_test(dir_itself),
    cmocka_unit_test(empty_and_bad_input),
    cmocka_unit_test(finds_the_fixtures),
    cmocka_unit_test(cli_list_table),
    cmocka_unit_test(cli_list_json),
    cmocka_unit_test(cli_list_errors),
    cmocka_unit_test(cli_devices),
};

TEST_GROUP(test_discover, tests)
