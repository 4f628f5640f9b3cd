/* test_memory.c - the memory and device calls on the cpu backend: limits,
 * the active and peak figures around a real forward pass, a memory limit
 * turning into a clean INFER_ERR_OUT_OF_MEMORY (and the same call right
 * after the limit is lifted giving transformers' logits), device info.
 *
 * The counters are process-wide and other groups allocate too, so every
 * check is relative to figures read in the same test, and each test puts
 * the three limits back as it found them (in its teardown, which runs even
 * when a check fails). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/cpu/qgemm.h"
#include "backend/mem_pool.h"
#include "infer.h"
#include "test.h"

#define FIXTURE INFER_TEST_DIR "/fixtures/llama_tied_bias"

/* The limits as a test found them. */
static size_t saved_memory, saved_cache, saved_wired;

static int save_limits(void **state)
{
    (void)state;
    /* a setter is the only reader of a limit: set it to itself */
    if (infer_set_memory_limit("cpu", 0, &saved_memory) || infer_set_memory_limit("cpu", saved_memory, NULL) ||
        infer_set_cache_limit("cpu", 0, &saved_cache) || infer_set_cache_limit("cpu", saved_cache, NULL) ||
        infer_set_wired_limit("cpu", 0, &saved_wired) || infer_set_wired_limit("cpu", saved_wired, NULL))
        return -1;
    return 0;
}

static int restore_limits(void **state)
{
    (void)state;
    infer_set_memory_limit("cpu", saved_memory, NULL);
    infer_set_cache_limit("cpu", saved_cache, NULL);
    infer_set_wired_limit("cpu", saved_wired, NULL);
    return 0;
}

static int have_fixture(void)
{
    struct stat st;
    return stat(FIXTURE "/config.json", &st) == 0 && stat(FIXTURE "/logits.npy", &st) == 0;
}

/* The fixture's ids and golden logits, and the model on cpu. */
typedef struct fixture {
    test_npy ids, gold;
    infer_model *m;
} fixture;

static void fixture_open(fixture *f)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(test_npy_load(FIXTURE "/ids.npy", &f->ids), 0);
    assert_int_equal(test_npy_load(FIXTURE "/logits.npy", &f->gold), 0);
    assert_int_equal(f->gold.shape[0], (int64_t)f->ids.n);
    infer_load_opts o;
    infer_load_opts_default(&o);
    o.backend = "cpu";
    /* one thread: the kernels' per-worker scratch (counted as active) then
     * reaches its size in the first pass; with several, which worker grows
     * its scratch in which pass is up to the scheduler */
    o.n_threads = 1;
    int rc = infer_model_load(FIXTURE, &o, &f->m);
    if (rc) fail_msg("%s: %s", FIXTURE, infer_last_error());
}

static void fixture_close(fixture *f)
{
    infer_model_free(f->m);
    test_npy_free(&f->ids);
    test_npy_free(&f->gold);
}

static double max_diff(const float *out, const test_npy *gold)
{
    double worst = 0.0;
    for (size_t i = 0; i < gold->n; i++) {
        double d = fabs((double)out[i] - gold->f[i]);
        if (isnan(d)) d = INFINITY;
        if (d > worst) worst = d;
    }
    return worst;
}

/* ---- limits ---------------------------------------------------------- */

typedef int (*setter)(const char *, size_t, size_t *);

static void setters_return_previous(void **state)
{
    (void)state;
    static const setter set[3] = {infer_set_memory_limit, infer_set_cache_limit, infer_set_wired_limit};
    for (int i = 0; i < 3; i++) {
        size_t prev = 7, orig;
        assert_int_equal(set[i]("cpu", (size_t)1 << 40, &orig), INFER_OK);
        assert_int_equal(set[i]("cpu", 12345, &prev), INFER_OK);
        assert_true(prev == (size_t)1 << 40);
        assert_int_equal(set[i]("cpu", 0, NULL), INFER_OK); /* previous may be NULL */
        assert_int_equal(set[i]("cpu", 99, &prev), INFER_OK);
        assert_true(prev == 0);
        assert_int_equal(set[i]("cpu", orig, &prev), INFER_OK);
        assert_true(prev == 99);
    }
    /* the limits are separate */
    size_t prev;
    assert_int_equal(infer_set_memory_limit("cpu", 111, NULL), INFER_OK);
    assert_int_equal(infer_set_cache_limit("cpu", 222, NULL), INFER_OK);
    assert_int_equal(infer_set_memory_limit("cpu", 0, &prev), INFER_OK);
    assert_true(prev == 111);
    assert_int_equal(infer_set_cache_limit("cpu", 0, &prev), INFER_OK);
    assert_true(prev == 222);
}

/* NULL names the first available backend. */
static void null_is_the_default_backend(void **state)
{
    (void)state;
    const char *first = NULL;
    for (int i = 0; i < infer_backend_count() && !first; i++)
        if (infer_backend_available(infer_backend_name(i))) first = infer_backend_name(i);
    assert_non_null(first);
    size_t prev;
    assert_int_equal(infer_set_wired_limit(first, 4242, NULL), INFER_OK);
    assert_int_equal(infer_set_wired_limit(NULL, 0, &prev), INFER_OK);
    assert_true(prev == 4242);
    infer_device_info d;
    assert_int_equal(infer_get_device_info(NULL, &d), INFER_OK);
    assert_string_equal(d.backend, first);
}

static void unknown_backend_is_an_error(void **state)
{
    (void)state;
    size_t prev = 5;
    assert_int_equal(infer_set_memory_limit("tpu", 1, &prev), INFER_ERR_BACKEND);
    assert_non_null(strstr(infer_last_error(), "'tpu'"));
    assert_true(prev == 5); /* untouched */
    assert_int_equal(infer_set_cache_limit("", 1, NULL), INFER_ERR_BACKEND);
    assert_int_equal(infer_set_wired_limit("CPU", 1, NULL), INFER_ERR_BACKEND);
    assert_int_equal(infer_clear_cache("tpu"), INFER_ERR_BACKEND);
    assert_int_equal(infer_reset_peak_memory("tpu"), INFER_ERR_BACKEND);
    assert_true(infer_get_active_memory("tpu") == 0);
    assert_non_null(strstr(infer_last_error(), "infer_get_active_memory"));
    assert_true(infer_get_peak_memory("tpu") == 0);
    assert_true(infer_get_cache_memory("tpu") == 0);
    infer_device_info d;
    assert_int_equal(infer_get_device_info("tpu", &d), INFER_ERR_BACKEND);
    assert_non_null(strstr(infer_last_error(), "not compiled into this library"));
    assert_int_equal(infer_get_device_info("cpu", NULL), INFER_ERR_INVALID_ARGUMENT);
    /* cuda, when compiled in, may be absent here: a clear error then */
    if (!infer_backend_available("cuda")) {
        assert_int_equal(infer_set_memory_limit("cuda", 1, NULL), INFER_ERR_BACKEND);
        assert_non_null(strstr(infer_last_error(), "cuda"));
    }
}

/* ---- accounting -------------------------------------------------------- */

static void cpu_keeps_no_cache(void **state)
{
    (void)state;
    assert_true(infer_get_cache_memory("cpu") == 0);
    assert_int_equal(infer_clear_cache("cpu"), INFER_OK);
    assert_int_equal(infer_clear_cache(NULL), INFER_OK);
    assert_true(infer_get_cache_memory("cpu") == 0);
}

static void active_and_peak_follow_a_forward_pass(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    size_t a0 = infer_get_active_memory("cpu");
    fixture f;
    fixture_open(&f);
    size_t a1 = infer_get_active_memory("cpu");
    assert_true(a1 > a0); /* the model's own buffers (RoPE frequencies) */
    assert_int_equal(infer_reset_peak_memory("cpu"), INFER_OK);
    assert_true(infer_get_peak_memory("cpu") == a1);

    float *out = malloc(f.gold.n * sizeof *out);
    assert_non_null(out);
    int rc = infer_model_logits(f.m, f.ids.i, f.ids.n, out);
    if (rc) fail_msg("%s", infer_last_error());
    assert_true(max_diff(out, &f.gold) <= 1e-3);
    size_t a2 = infer_get_active_memory("cpu"), p2 = infer_get_peak_memory("cpu");
    /* the pass's KV cache and activations came and went: the peak holds
     * at least the logits' [T, vocab] floats */
    assert_true(p2 >= a1 + f.gold.n * sizeof(float));
    assert_true(a2 >= a1);         /* kernel scratch stays with the model */
    assert_true(a2 < p2);
    assert_int_equal(infer_reset_peak_memory("cpu"), INFER_OK);
    assert_true(infer_get_peak_memory("cpu") == a2);

    free(out);
    fixture_close(&f);
    assert_true(infer_get_active_memory("cpu") == a0);
    assert_true(infer_get_peak_memory("cpu") == a2); /* freeing leaves the peak */
    assert_int_equal(infer_reset_peak_memory(NULL), INFER_OK);
}

static void memory_limit_fails_cleanly(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    fixture f;
    fixture_open(&f);
    float *out = malloc(f.gold.n * sizeof *out);
    assert_non_null(out);
    /* one pass to learn what a pass needs (and to make the kernels' scratch) */
    int rc = infer_model_logits(f.m, f.ids.i, f.ids.n, out);
    if (rc) fail_msg("%s", infer_last_error());
    size_t base = infer_get_active_memory("cpu");
    assert_int_equal(infer_reset_peak_memory("cpu"), INFER_OK);
    assert_int_equal(infer_model_logits(f.m, f.ids.i, f.ids.n, out), INFER_OK);
    size_t need = infer_get_peak_memory("cpu") - base;
    assert_true(need > 0);
    assert_true(infer_get_active_memory("cpu") == base);

    /* half of it: some buffers are made, then one is refused */
    static const int cut[2] = {2, 1000000};
    for (int k = 0; k < 2; k++) {
        size_t prev;
        assert_int_equal(infer_set_memory_limit("cpu", base + need / (size_t)cut[k], &prev), INFER_OK);
        memset(out, 0, f.gold.n * sizeof *out);
        rc = infer_model_logits(f.m, f.ids.i, f.ids.n, out);
        assert_int_equal(rc, INFER_ERR_OUT_OF_MEMORY);
        const char *msg = infer_last_error();
        if (!strstr(msg, "would pass the memory limit of") || !strstr(msg, "cpu backend"))
            fail_msg("unclear message: %s", msg);
        if (k == 0) print_message("  %s\n", msg);
        assert_true(infer_get_active_memory("cpu") == base); /* nothing kept, nothing lost */
        size_t mine;
        assert_int_equal(infer_set_memory_limit("cpu", prev, &mine), INFER_OK);
        assert_true(mine == base + need / (size_t)cut[k]);
    }
    /* a limit below what is already active refuses every allocation */
    assert_int_equal(infer_set_memory_limit("cpu", 1, NULL), INFER_OK);
    assert_int_equal(infer_model_logits(f.m, f.ids.i, f.ids.n, out), INFER_ERR_OUT_OF_MEMORY);
    /* a limit that fits lets it through */
    assert_int_equal(infer_set_memory_limit("cpu", base + need, NULL), INFER_OK);
    memset(out, 0, f.gold.n * sizeof *out);
    rc = infer_model_logits(f.m, f.ids.i, f.ids.n, out);
    if (rc) fail_msg("within the limit: %s", infer_last_error());
    assert_true(max_diff(out, &f.gold) <= 1e-3);

    /* lifted: the same call gives transformers' logits */
    assert_int_equal(infer_set_memory_limit("cpu", saved_memory, NULL), INFER_OK);
    memset(out, 0, f.gold.n * sizeof *out);
    rc = infer_model_logits(f.m, f.ids.i, f.ids.n, out);
    if (rc) fail_msg("after lifting the limit: %s", infer_last_error());
    double d = max_diff(out, &f.gold);
    print_message("  max |diff| after the limit is lifted: %.2e\n", d);
    assert_true(d <= 1e-3);
    assert_true(infer_get_active_memory("cpu") == base);
    free(out);
    fixture_close(&f);
}

/* A limit set before the load: the model's own buffers are refused. */
static void memory_limit_fails_a_load(void **state)
{
    (void)state;
    if (!have_fixture()) skip();
    size_t a0 = infer_get_active_memory("cpu");
    assert_int_equal(infer_set_memory_limit("cpu", a0 + 1, NULL), INFER_OK);
    infer_model *m = (infer_model *)1;
    int rc = infer_model_load(FIXTURE, NULL, &m);
    restore_limits(state);
    if (infer_backend_available("cuda")) return; /* the load went to cuda */
    assert_int_equal(rc, INFER_ERR_OUT_OF_MEMORY);
    assert_null(m);
    assert_non_null(strstr(infer_last_error(), "memory limit"));
    assert_true(infer_get_active_memory("cpu") == a0);
}

/* With int8 activations on an AVX-512 VNNI cpu the load repacks 4-bit
 * weights (qgemm.h) into buffers of its own: the memory limit binds them,
 * and a refused one leaves nothing behind. */
static void memory_limit_fails_a_repack(void **state)
{
    (void)state;
    const char *dir = INFER_TEST_DIR "/fixtures/mlx/llama_q4_g32";
    struct stat st;
    if (stat(dir, &st) != 0 || infer_backend_available("cuda")) skip();
    size_t a0 = infer_get_active_memory("cpu");
    assert_int_equal(infer_set_memory_limit("cpu", a0 + 1, NULL), INFER_OK);
    infer_load_opts o;
    infer_load_opts_default(&o);
    o.backend = "cpu";
    o.cpu_int8 = 1;
    infer_model *m = (infer_model *)1;
    int rc = infer_model_load(dir, &o, &m);
    restore_limits(state);
    assert_int_equal(rc, INFER_ERR_OUT_OF_MEMORY);
    assert_null(m);
    assert_non_null(strstr(infer_last_error(), "memory limit"));
    if (q_isa_best() == Q_ISA_AVX512) {
        assert_non_null(strstr(infer_last_error(), "repacking"));
        assert_non_null(strstr(infer_last_error(), "embed_tokens.weight"));
    }
    assert_true(infer_get_active_memory("cpu") == a0);
    /* and with room, the same load works and gives the memory back */
    assert_int_equal(infer_model_load(dir, &o, &m), INFER_OK);
    assert_true(infer_get_active_memory("cpu") > a0);
    infer_model_free(m);
    assert_true(infer_get_active_memory("cpu") == a0);
}

/* ---- devices ----------------------------------------------------------- */

static void cpu_device_info(void **state)
{
    (void)state;
    infer_device_info d;
    memset(&d, 0x55, sizeof d);
    assert_int_equal(infer_get_device_info("cpu", &d), INFER_OK);
    assert_string_equal(d.backend, "cpu");
    assert_non_null(memchr(d.name, '\0', sizeof d.name));
    assert_true(strlen(d.name) > 0);
    assert_true(d.memory_total > ((size_t)64 << 20));
    assert_true(d.memory_free > 0 && d.memory_free <= d.memory_total);
    assert_int_equal(d.compute_major, 0);
    assert_int_equal(d.compute_minor, 0);
    assert_true(d.multiprocessors >= 1);
    assert_non_null(memchr(d.features, '\0', sizeof d.features));
    /* features: known words, separated by single spaces */
    char buf[sizeof d.features];
    memcpy(buf, d.features, sizeof buf);
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " "))
        if (strcmp(w, "avx512f") && strcmp(w, "avx2") && strcmp(w, "fma") && strcmp(w, "f16c"))
            fail_msg("unknown feature '%s' in '%s'", w, d.features);
    print_message("  cpu: %s, %d cores, %zu MB, [%s]\n", d.name, d.multiprocessors, d.memory_total >> 20,
                  d.features);
}

static void bandwidth_is_measured(void **state)
{
    (void)state;
    double g = -1;
    assert_int_equal(infer_measure_bandwidth("cpu", 1, &g), INFER_OK);
    assert_true(g > 0.1 && g < 10000.0);
    assert_int_equal(infer_measure_bandwidth("cpu", 1, NULL), INFER_ERR_INVALID_ARGUMENT);
    assert_int_equal(infer_measure_bandwidth("tpu", 1, &g), INFER_ERR_BACKEND);
    assert_true(g == 0.0);
    assert_non_null(strstr(infer_last_error(), "tpu"));
}

/* ---- The caching allocator of the cuda backend (mem_pool.c), over
 * malloc here: it runs without a GPU. ---- */

static int raw_calls, raw_fail;
static size_t raw_live;

static int test_raw_alloc(size_t bytes, void **out)
{
    raw_calls++;
    if (raw_fail) return 1;
    *out = malloc(bytes);
    if (*out) raw_live += bytes;
    return *out ? 0 : 1;
}

static size_t raw_sizes[64];
static void *raw_ptrs[64];

static int tracked_alloc(size_t bytes, void **out)
{
    int rc = test_raw_alloc(bytes, out);
    for (int i = 0; !rc && i < 64; i++)
        if (!raw_ptrs[i]) {
            raw_ptrs[i] = *out;
            raw_sizes[i] = bytes;
            break;
        }
    return rc;
}

static void tracked_free(void *p)
{
    for (int i = 0; i < 64; i++)
        if (raw_ptrs[i] == p) {
            raw_live -= raw_sizes[i];
            raw_ptrs[i] = NULL;
        }
    free(p);
}

static void pool_reuses_and_bounds(void **state)
{
    (void)state;
    static bk_counters c;
    memset(&c, 0, sizeof c);
    memset(raw_ptrs, 0, sizeof raw_ptrs);
    raw_calls = raw_fail = 0;
    raw_live = 0;
    bk_pool pool = BK_POOL_INIT("test", tracked_alloc, tracked_free, &c);
    assert_int_equal(bkp_round(1), 512);
    assert_int_equal(bkp_round(1 << 20), 1 << 20);
    assert_int_equal(bkp_round((1 << 20) + 1), (1 << 20) + (64 << 10));
    void *a, *b, *d;
    assert_int_equal(bkp_alloc(&pool, 3000, &a), 0);
    assert_int_equal(bkc_get(&c, BK_MEM_ACTIVE), 3072);
    assert_true(bkp_owns(&pool, a));
    bkp_free(&pool, a);
    assert_false(bkp_owns(&pool, a));
    assert_int_equal(bkc_get(&c, BK_MEM_ACTIVE), 0);
    assert_int_equal(bkc_get(&c, BK_MEM_CACHE), 3072);
    /* the same size again: the kept block, no raw call */
    int calls = raw_calls;
    assert_int_equal(bkp_alloc(&pool, 2900, &b), 0);
    assert_ptr_equal(a, b);
    assert_int_equal(raw_calls, calls);
    assert_int_equal(bkc_get(&c, BK_MEM_CACHE), 0);
    /* much smaller: not from a block that would waste most of itself */
    bkp_free(&pool, b);
    assert_int_equal(bkp_alloc(&pool, 100, &d), 0);
    assert_int_equal(raw_calls, calls + 1);
    bkp_free(&pool, d);
    /* the memory limit binds active bytes: a clean error, nothing counted */
    bkc_set(&c, BK_MEM_LIMIT, 4096, NULL, "test");
    void *e = (void *)1;
    assert_int_equal(bkp_alloc(&pool, 8192, &e), INFER_ERR_OUT_OF_MEMORY);
    assert_null(e);
    assert_non_null(strstr(infer_last_error(), "memory limit"));
    assert_int_equal(bkc_get(&c, BK_MEM_ACTIVE), 0);
    bkc_set(&c, BK_MEM_LIMIT, 0, NULL, "test");
    /* raw failure: the cache is given back and the allocation tried again */
    raw_fail = 1;
    assert_int_equal(bkp_alloc(&pool, 1 << 22, &e), INFER_ERR_OUT_OF_MEMORY);
    assert_int_equal(bkc_get(&c, BK_MEM_CACHE), 0);
    assert_int_equal(raw_live, 0);
    assert_int_equal(bkc_get(&c, BK_MEM_ACTIVE), 0);
    raw_fail = 0;
    /* the cache limit: the largest kept blocks go back first */
    void *x[3];
    size_t sz[3] = {1 << 20, 2 << 20, 4 << 20};
    for (int i = 0; i < 3; i++) assert_int_equal(bkp_alloc(&pool, sz[i], &x[i]), 0);
    assert_int_equal(bkc_get(&c, BK_MEM_PEAK) >= (7u << 20), 1);
    bkc_set(&c, BK_MEM_CACHE_LIMIT, 3 << 20, NULL, "test");
    for (int i = 0; i < 3; i++) bkp_free(&pool, x[i]);
    assert_true(bkc_get(&c, BK_MEM_CACHE) <= (3u << 20));
    assert_int_equal(bkc_get(&c, BK_MEM_CACHE), 3 << 20); /* the 1 and 2 MiB blocks stay */
    bkp_clear(&pool);
    assert_int_equal(bkc_get(&c, BK_MEM_CACHE), 0);
    assert_int_equal(raw_live, 0);
    /* a pointer it never gave out is ignored */
    int dummy;
    bkp_free(&pool, &dummy);
    free(pool.live);
    free(pool.kept);
}

#define T(f) cmocka_unit_test_setup_teardown(f, save_limits, restore_limits)

/* Pinned bytes under the wired limit: counted apart from the active
 * bytes, refused past the limit with what was pinned reported. */
static void wired_limit_bounds_pinned_bytes(void **state)
{
    (void)state;
    static bk_counters c;
    memset(&c, 0, sizeof c);
    size_t lim = 0, pinned = 0;
    assert_true(bkc_pin(&c, 1 << 20, &lim, &pinned)); /* no limit */
    bkc_set(&c, BK_MEM_WIRED_LIMIT, 3 << 20, NULL, "test");
    assert_true(bkc_pin(&c, 2 << 20, &lim, &pinned));
    assert_false(bkc_pin(&c, 1, &lim, &pinned));
    assert_int_equal(lim, 3 << 20);
    assert_int_equal(pinned, 3 << 20);
    assert_int_equal(bkc_get(&c, BK_MEM_ACTIVE), 0);
    bkc_unpin(&c, 1 << 20);
    assert_true(bkc_pin(&c, 1 << 20, &lim, &pinned));
    assert_false(bkc_pin(&c, (size_t)-1, &lim, &pinned));
}

static const struct CMUnitTest tests[] = {
    T(setters_return_previous),
    T(null_is_the_default_backend),
    T(unknown_backend_is_an_error),
    T(cpu_keeps_no_cache),
    T(active_and_peak_follow_a_forward_pass),
    T(memory_limit_fails_cleanly),
    T(memory_limit_fails_a_load),
    T(memory_limit_fails_a_repack),
    T(cpu_device_info),
    cmocka_unit_test(pool_reuses_and_bounds),
    cmocka_unit_test(wired_limit_bounds_pinned_bytes),
    cmocka_unit_test(bandwidth_is_measured),
};

TEST_GROUP(test_memory, tests)
