/* test_model.c - logits against transformers on every fixture, and bad
 * model folders (each a clear error, no crash).
 *
 * Fixtures: tests/fixtures/<name>/ made by tests/ref/make_fixtures.py with
 * transformers (float32 logits from the stored bf16 weights). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "infer.h"
#include "io/safetensors.h"
#include "io/st_write.h"
#include "model/synth.h"
#include "test.h"

#define FIXTURES INFER_TEST_DIR "/fixtures"

/* Loads a fixture, computes its logits and returns max |ours - golden|. */
static double fixture_max_diff(const char *dir, int n_threads)
{
    char path[1024];
    test_npy ids, gold;
    snprintf(path, sizeof path, "%s/ids.npy", dir);
    assert_int_equal(test_npy_load(path, &ids), 0);
    snprintf(path, sizeof path, "%s/logits.npy", dir);
    assert_int_equal(test_npy_load(path, &gold), 0);
    assert_int_equal(gold.ndim, 2);
    assert_int_equal(gold.shape[0], (int64_t)ids.n);

    infer_load_opts o;
    infer_load_opts_default(&o);
    o.backend = "cpu";
    o.n_threads = n_threads;
    infer_model *m = NULL;
    int rc = infer_model_load(dir, &o, &m);
    if (rc) fail_msg("%s: %s", dir, infer_last_error());
    infer_model_info info;
    assert_int_equal(infer_model_get_info(m, &info), 0);
    assert_int_equal(info.vocab_size, (int)gold.shape[1]);
    float *out = malloc(gold.n * sizeof *out);
    assert_non_null(out);
    rc = infer_model_logits(m, ids.i, ids.n, out);
    if (rc) fail_msg("%s: %s", dir, infer_last_error());
    double worst = 0.0;
    for (size_t i = 0; i < gold.n; i++) {
        double d = fabs((double)out[i] - gold.f[i]);
        if (isnan(out[i]) || isnan(d)) d = INFINITY;
        if (d > worst) worst = d;
    }
    free(out);
    infer_model_free(m);
    test_npy_free(&ids);
    test_npy_free(&gold);
    return worst;
}

static void all_fixtures_match_transformers(void **state)
{
    (void)state;
    DIR *d = opendir(FIXTURES);
    if (!d) skip();
    struct dirent *e;
    int n = 0;
    char *names[64];
    while ((e = readdir(d)) && n < 64) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s/logits.npy", FIXTURES, e->d_name);
        if (e->d_name[0] != '.' && stat(p, &st) == 0) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n == 0) skip();
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", FIXTURES, names[i]);
        /* one thread and several: the result must not depend on it */
        double d1 = fixture_max_diff(dir, 1);
        double d3 = fixture_max_diff(dir, 3);
        print_message("  %-24s max |diff| %.2e (1 thread)  %.2e (3 threads)\n", names[i], d1, d3);
        if (!(d1 <= 1e-3) || !(d3 <= 1e-3)) bad++;
        free(names[i]);
    }
    assert_int_equal(bad, 0);
}

/* ---- bad input ---------------------------------------------------- */

static const synth_spec tiny = {
    "tiny", "qwen3", 32, 48, 2, 4, 2, 8, 64, 0, "\"rope_theta\": 10000",
};

/* A fresh folder holding a valid tiny model. */
static char *tiny_model(void)
{
    char *dir = test_tmpdir("model");
    assert_non_null(dir);
    assert_int_equal(synth_write_model(dir, &tiny, DT_BF16, 7), 0);
    return dir;
}

static int load_err(const char *dir, const char *want_in_msg)
{
    infer_model *m = (infer_model *)1;
    int rc = infer_model_load(dir, NULL, &m);
    assert_null(m);
    if (want_in_msg && !strstr(infer_last_error(), want_in_msg))
        fail_msg("error '%s' does not mention '%s'", infer_last_error(), want_in_msg);
    return rc;
}



static void drop_up_proj(st_out *t, size_t *n)
{
    size_t i = test_find_out(t, *n, "model.layers.1.mlp.up_proj.weight");
    memmove(&t[i], &t[i + 1], (*n - i - 1) * sizeof *t);
    (*n)--;
}

static void transpose_up_proj(st_out *t, size_t *n)
{
    size_t i = test_find_out(t, *n, "model.layers.1.mlp.up_proj.weight");
    int64_t r = t[i].shape[0];
    t[i].shape[0] = t[i].shape[1];
    t[i].shape[1] = r;
}

static void up_proj_as_i16(st_out *t, size_t *n)
{
    t[test_find_out(t, *n, "model.layers.1.mlp.up_proj.weight")].dtype = DT_I16;
}

static void missing_tensor(void **state)
{
    char *dir = tiny_model();
    test_rewrite_weights(dir, drop_up_proj);
    assert_int_equal(load_err(dir, "model.layers.1.mlp.up_proj.weight"), INFER_ERR_MISSING);
    test_rmdir(dir);
    free(dir);
}

static void wrong_shape(void **state)
{
    char *dir = tiny_model();
    test_rewrite_weights(dir, transpose_up_proj);
    assert_int_equal(load_err(dir, "expected shape [48, 32], found [32, 48]"), INFER_ERR_SHAPE);
    test_rmdir(dir);
    free(dir);
}

static void wrong_dtype(void **state)
{
    char *dir = tiny_model();
    test_rewrite_weights(dir, up_proj_as_i16);
    assert_int_equal(load_err(dir, "model.layers.1.mlp.up_proj.weight"), INFER_ERR_SHAPE);
    test_rmdir(dir);
    free(dir);
}

static void missing_files(void **state)
{
    char *dir = tiny_model();
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    assert_int_equal(load_err(dir, dir), INFER_ERR_MISSING);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    assert_int_equal(load_err(dir, "config.json"), INFER_ERR_MISSING);
    assert_int_equal(load_err("/nonexistent/model", "/nonexistent/model"), INFER_ERR_MISSING);
    test_rmdir(dir);
    free(dir);
}

static void bad_config(void **state)
{
    char *dir = tiny_model();
    const char *broken = "{\"model_type\": \"qwen3\", \"hidden_size\": 32,";
    assert_int_equal(test_write_file(dir, "config.json", broken, strlen(broken)), 0);
    assert_int_equal(load_err(dir, "config.json"), INFER_ERR_FORMAT);
    const char *unknown = "{\"model_type\": \"mamba\"}";
    assert_int_equal(test_write_file(dir, "config.json", unknown, strlen(unknown)), 0);
    assert_int_equal(load_err(dir, "mamba"), INFER_ERR_UNSUPPORTED);
    test_rmdir(dir);
    free(dir);
}

static void truncated_weights(void **state)
{
    char *dir = tiny_model();
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t len;
    unsigned char *buf = test_read_file(path, &len);
    assert_non_null(buf);
    assert_int_equal(test_write_file(dir, "model.safetensors", buf, len - 100), 0);
    assert_int_equal(load_err(dir, "model.safetensors"), INFER_ERR_FORMAT);
    assert_int_equal(test_write_file(dir, "model.safetensors", buf, 0), 0);
    assert_int_equal(load_err(dir, "model.safetensors"), INFER_ERR_FORMAT);
    free(buf);
    test_rmdir(dir);
    free(dir);
}

static void bad_ids_and_options(void **state)
{
    char *dir = tiny_model();
    infer_model *m = NULL;
    infer_load_opts o;
    infer_load_opts_default(&o);
    o.context_len = 8;
    assert_int_equal(infer_model_load(dir, &o, &m), 0);
    float out[9 * 64];
    int32_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    int32_t bad[2] = {1, 64};
    assert_int_equal(infer_model_logits(m, bad, 2, out), INFER_ERR_OUT_OF_RANGE);
    assert_non_null(strstr(infer_last_error(), "64"));
    bad[1] = -1;
    assert_int_equal(infer_model_logits(m, bad, 2, out), INFER_ERR_OUT_OF_RANGE);
    assert_int_equal(infer_model_logits(m, ids, 9, out), INFER_ERR_OUT_OF_RANGE);
    assert_non_null(strstr(infer_last_error(), "context"));
    assert_int_equal(infer_model_logits(m, ids, 8, out), 0);
    for (size_t i = 0; i < 8 * 64; i++) assert_false(isnan(out[i]));
    infer_model_free(m);
    o.backend = "tpu";
    m = NULL;
    assert_int_equal(infer_model_load(dir, &o, &m), INFER_ERR_BACKEND);
    assert_non_null(strstr(infer_last_error(), "tpu"));
    test_rmdir(dir);
    free(dir);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(all_fixtures_match_transformers),
    cmocka_unit_test(missing_tensor),
    cmocka_unit_test(wrong_shape),
    cmocka_unit_test(wrong_dtype),
    cmocka_unit_test(missing_files),
    cmocka_unit_test(bad_config),
    cmocka_unit_test(truncated_weights),
    cmocka_unit_test(bad_ids_and_options),
};

TEST_GROUP(test_model, tests)
