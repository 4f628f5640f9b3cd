/* bench_run.c - see bench_run.h. */
#include "bench_run.h"

#include <stdlib.h>

void bench_make_ids(int32_t *ids, int n, int vocab, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)((seed >> 8) % (uint32_t)(vocab > 1000 ? 1000 : vocab)) + (vocab > 2000 ? 1000 : 0);
    }
}

int bench_run_once(infer_model *m, const int32_t *ids, int n_ids, int max_tokens, infer_metrics *met)
{
    infer_session *s;
    int rc = infer_session_new(m, &s);
    if (rc) return rc;
    infer_gen_opts o;
    infer_gen_opts_default(&o);
    o.max_tokens = max_tokens;
    o.temperature = 0.0f;
    o.ignore_eos = 1;
    infer_stream *st;
    rc = infer_generate_ids(s, ids, (size_t)n_ids, &o, &st);
    if (rc == INFER_OK) {
        infer_token tok;
        int got = 0;
        while (infer_stream_next(st, &tok)) got++;
        rc = infer_stream_error(st, NULL);
        infer_stream_metrics(st, met);
        if (!rc && got != max_tokens) rc = -1;
        infer_stream_free(st);
    }
    infer_session_free(s);
    return rc;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
