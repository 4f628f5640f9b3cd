/* engine.h - sessions and streams (src/engine/), shared by their files. */
#ifndef INFER_ENGINE_H
#define INFER_ENGINE_H

#include <stdatomic.h>

#include "infer.h"
#include "model/model.h"

struct infer_session {
    infer_model *m;
    kv_cache kv;            /* one slot */
    fwd_scratch fs;
    int chunk;              /* prefill chunk (tokens per pass) */
    int32_t *cached;        /* the tokens whose keys and values the cache holds */
    int n_cached, cap_cached;
    float *logits;          /* [vocab]: of the last pass */
    int logits_pinned;      /* engine_host_alloc's */
    infer_stream *stream;   /* the stream using the session, or NULL */
};

/* Tokens of one sequence per prefill pass: 512, or a quarter of a small
 * context (so that sliding-window layers keep rings, not whole caches). */
int engine_chunk(const infer_model *m);

/* Host memory for what the backend writes back (logits): pinned where the
 * backend pins (cuda: faster copies) and the wired limit allows it, else
 * malloc'ed; *pinned says which, for engine_host_free.  NULL: out of
 * memory. */
void *engine_host_alloc(const infer_model *m, size_t bytes, int *pinned);
void engine_host_free(const infer_model *m, void *p, int pinned);

/* Seconds on a monotonic clock. */
double engine_now(void);

/* The stop tokens of a model: the tokenizer's (EOS, generation_config's,
 * the template's end of turn) or generation_config's. */
int engine_stop_ids(const infer_model *m, int32_t *out, int max);

/* Checks that every id is inside the model's vocabulary. */
int engine_check_ids(const infer_model *m, const int32_t *ids, size_t n, const char *what);

/* The sampler's parameters: the caller's options, with generation_config's
 * defaults for those left unset. */
struct sampler_params;
void engine_resolve_sampling(const infer_model *m, const infer_gen_opts *o, struct sampler_params *p);
/* 1 if the token is always the largest logit (greedy, nothing that changes
 * the logits, no log-probabilities): the backend may find it. */
int engine_greedy(const struct sampler_params *p);

/* Checks generation options (sizes, NULL lists). */
int engine_check_gen_opts(const infer_gen_opts *o);

#endif
