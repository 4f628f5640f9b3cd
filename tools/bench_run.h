/* bench_run.h - the runs `infer bench` and bench/bench_decode time,
 * through the public API only. */
#ifndef INFER_TOOL_BENCH_RUN_H
#define INFER_TOOL_BENCH_RUN_H

#include <stdint.h>

#include "infer.h"

/* n fixed pseudo-random token ids below vocab (from seed). */
void bench_make_ids(int32_t *ids, int n, int vocab, uint32_t seed);
/* One greedy stream of max_tokens after n_ids ids on a fresh session (EOS
 * ignored); its metrics into *met.  INFER_OK, the library's status, or -1
 * when the stream stopped short of max_tokens (the context was full). */
int bench_run_once(infer_model *m, const int32_t *ids, int n_ids, int max_tokens, infer_metrics *met);
/* The median of v[n] (sorts v). */
double bench_median(double *v, int n);

#endif
