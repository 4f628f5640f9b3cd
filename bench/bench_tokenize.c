/* bench_tokenize.c - tokenizer load time and single-thread encode speed.
 *
 *   build/bench/bench_tokenize DIR TEXTFILE [RUNS]
 *
 * DIR holds tokenizer.json (and the optional configs).  Prints the median
 * of RUNS (default 7) loads, and the median encode throughput of TEXTFILE
 * in MB/s (one infer_tokenize call on the whole file, no specials), the
 * same line by line (one call per line, as prompts come), then the decode
 * throughput of the resulting ids.  bench/tok_peer.py prints the same lines
 * for Hugging Face's tokenizers; the token counts must agree. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *p = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (p && n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[n > 0 ? n : 0] = '\0';
        *len = n > 0 ? (size_t)n : 0;
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenize DIR TEXTFILE [RUNS]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 7;
    if (runs < 1) runs = 1;
    if (runs > 100) runs = 100;
    size_t len;
    char *text = read_all(argv[2], &len);
    if (!text) {
        fprintf(stderr, "bench_tokenize: cannot read %s\n", argv[2]);
        return 1;
    }
    double t[100];
    infer_tokenizer *tok = NULL;
    for (int i = 0; i < runs; i++) {
        infer_tokenizer_free(tok);
        double t0 = now();
        if (infer_tokenizer_load(argv[1], &tok)) {
            fprintf(stderr, "bench_tokenize: %s\n", infer_last_error());
            free(text);
            return 1;
        }
        t[i] = now() - t0;
    }
    infer_tokenizer_info info;
    infer_tokenizer_get_info(tok, &info);
    printf("load: %.1f ms (median of %d), vocab %d\n", median(t, runs) * 1e3, runs, info.vocab_size);

    int32_t *ids = NULL;
    size_t n_ids = 0;
    for (int i = 0; i < runs; i++) {
        infer_free(ids);
        double t0 = now();
        if (infer_tokenize(tok, text, len, 0, &ids, &n_ids)) {
            fprintf(stderr, "bench_tokenize: %s\n", infer_last_error());
            return 1;
        }
        t[i] = now() - t0;
    }
    double enc = median(t, runs);
    printf("encode: %.1f MB/s (%zu bytes -> %zu tokens, %.1f ms, median of %d)\n", len / enc / 1e6,
           len, n_ids, enc * 1e3, runs);

    size_t n_line = 0, n_lines = 0;
    for (int i = 0; i < runs; i++) {
        double t0 = now();
        n_line = n_lines = 0;
        for (size_t a = 0; a < len;) {
            const char *nl = memchr(text + a, '\n', len - a);
            size_t b = nl ? (size_t)(nl - text) + 1 : len;
            int32_t *li;
            size_t nli;
            if (infer_tokenize(tok, text + a, b - a, 0, &li, &nli)) {
                fprintf(stderr, "bench_tokenize: %s\n", infer_last_error());
                return 1;
            }
            infer_free(li);
            n_line += nli;
            n_lines++;
            a = b;
        }
        t[i] = now() - t0;
    }
    printf("encode by line: %.1f MB/s (%zu lines -> %zu tokens)\n", len / median(t, runs) / 1e6, n_lines,
           n_line);

    for (int i = 0; i < runs; i++) {
        char *out;
        size_t out_len;
        double t0 = now();
        if (infer_detokenize(tok, ids, n_ids, 0, &out, &out_len)) {
            fprintf(stderr, "bench_tokenize: %s\n", infer_last_error());
            return 1;
        }
        t[i] = now() - t0;
        infer_free(out);
    }
    double dec = median(t, runs);
    printf("decode: %.1f MB/s (%.1f ms)\n", len / dec / 1e6, dec * 1e3);
    infer_free(ids);
    infer_tokenizer_free(tok);
    free(text);
    return 0;
}
