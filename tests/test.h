/* test.h - shared helpers of the test suite (cmocka).
 *
 * Each tests/test_<area>.c defines
 *     int test_<area>(int *n_tests);
 * which runs its group with cmocka_run_group_tests_name, stores how many
 * tests it has in *n_tests and returns how many failed.  tests/main.c runs
 * every group and ends with "N passed, N failed". */
#ifndef INFER_TEST_H
#define INFER_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#ifndef INFER_TEST_DIR
#define INFER_TEST_DIR "tests"
/* Rewrites dir/model.safetensors through edit, which may change the list
 * of tensors (n of them) in place; test_find_out is the index of a named
 * one (fails the test when there is none). */
struct st_out;
typedef void (*test_edit_fn)(struct st_out *t, size_t *n);
void test_rewrite_weights(const char *dir, test_edit_fn edit);
size_t test_find_out(struct st_out *t, size_t n, const char *name);

#endif

#define TEST_GROUP(name, tests)                                                   \
    int name(int *n_tests);                                                       \
    int name(int *n_tests)                                                        \
    {                                                                             \
        *n_tests = (int)(sizeof(tests) / sizeof((tests)[0]));                     \
        return cmocka_run_group_tests_name(#name, tests, NULL, NULL);              \
    }

/* A fresh scratch folder under $TMPDIR (or /tmp), created; caller frees. */
char *test_tmpdir(const char *tag);
/* Removes a folder made by test_tmpdir and everything in it. */
void test_rmdir(const char *dir);
/* Writes len bytes to dir/name; returns 0 on success. */
int test_write_file(const char *dir, const char *name, const void *data, size_t len);
/* Reads a whole file; *len gets its size; NULL on failure. Caller frees. */
unsigned char *test_read_file(const char *path, size_t *len);

/* 1 when the model folder's config.json asks for dynamic RoPE scaling
 * (which scales by the sequence's length: a prefix, or one sequence of a
 * padded batch, is not computed as the whole); fails the test when the
 * file cannot be read. */
int test_dynamic_rope(const char *model_dir);

/* A whole JSON file parsed (fails the test when it cannot be read or
 * parsed); free with cJSON_Delete. */
struct cJSON;
struct cJSON *test_read_json(const char *path);
/* Runs a shell command made from fmt; its exit status (-1: killed). */
int test_shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A .npy array read back: float32 or int32 data and up to 4 dims. */
typedef struct test_npy {
    char dtype;      /* 'f' (float32) or 'i' (int32/int64 read into i32) */
    int ndim;
    int64_t shape[4];
    size_t n;
    float *f;        /* when dtype == 'f' */
    int32_t *i;      /* when dtype == 'i' */
} test_npy;
int test_npy_load(const char *path, test_npy *out);
void test_npy_free(test_npy *a);

/* y[T, w->rows] = x[T, w->cols] . W^T (+ bias) through a fresh cpu backend
 * context with n_threads threads and cpu_int8 = int8 (asserts success). */
struct bk_weight;
void test_cpu_matmul(int n_threads, int int8, const struct bk_weight *w, const struct bk_weight *bias, const float *x,
                     int T, float *y);

/* Rewrites dir/model.safetensors through edit, which may change the list
 * of tensors (n of them) in place; test_find_out is the index of a named
 * one (fails the test when there is none). */
struct st_out;
typedef void (*test_edit_fn)(struct st_out *t, size_t *n);
void test_rewrite_weights(const char *dir, test_edit_fn edit);
size_t test_find_out(struct st_out *t, size_t n, const char *name);

#endif
