/* bench_load.c - how long infer_model_load takes on a model folder, warm
 * (the files already in the page cache): the median of N loads.
 *
 *   build/bench/bench_load MODEL_DIR [N] [--int8] [--backend cpu|cuda]
 *
 * --int8 loads with cpu_int8 = 1: on a cpu with AVX-512 VNNI the 4- and
 * 8-bit weights are then repacked for the decode kernel (qgemm.h), which
 * is the cost this measures.  --backend cuda: the weights are copied to
 * the GPU as they load, the 4- and 8-bit ones with their scales and
 * biases interleaved into pairs on the host first (cuda.c), the cost
 * this measures there.
 *
 * The limit it is measured against: reading the folder's bytes at the
 * page-cache copy rate measured in the same run (a load that touched every
 * weight byte would take at least that long; ours maps them instead). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "infer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reads every file of the folder once; returns bytes read. */
static double read_folder(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    double total = 0;
    static char buf[1 << 20];
    while ((e = readdir(d))) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) total += n;
        fclose(f);
    }
    closedir(d);
    return total;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_load MODEL_DIR [N] [--int8] [--backend cpu|cuda]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 10;
    if (n < 1) n = 1;
    infer_load_opts lo;
    infer_load_opts_default(&lo);
    lo.backend = "cpu";
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--int8") == 0)
            lo.cpu_int8 = 1;
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            lo.backend = argv[++i];
        else {
            fprintf(stderr, "bench_load: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    double t0 = now();
    double bytes = read_folder(argv[1]); /* warms the page cache */
    double t1 = now();
    bytes = read_folder(argv[1]);
    double t2 = now();
    (void)t0;
    (void)t1;
    double *ts = calloc((size_t)n, sizeof *ts);
    infer_model_info info = {0};
    for (int i = 0; i < n; i++) {
        infer_model *m = NULL;
        double a = now();
        if (infer_model_load(argv[1], &lo, &m) != 0) {
            fprintf(stderr, "bench_load: %s\n", infer_last_error());
            return 1;
        }
        ts[i] = now() - a;
        infer_model_get_info(m, &info);
        infer_model_free(m);
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp);
    double read_s = t2 - t1;
    printf("model      %s (%s, %lld parameters, %.2f GB on disk)\n", argv[1], info.model_type,
           (long long)info.n_params, bytes / 1e9);
    printf("load       median %.1f ms over %d warm loads (min %.1f, max %.1f), %s%s\n", ts[n / 2] * 1e3, n,
           ts[0] * 1e3, ts[n - 1] * 1e3, lo.backend, lo.cpu_int8 ? ", int8 activations" : "");
    printf("limit      reading those bytes from the page cache: %.1f ms (%.1f GB/s)\n", read_s * 1e3,
           bytes / read_s / 1e9);
    free(ts);
    return 0;
}
