/* session.c - sessions, streams and the generation loop.
 *
 * A stream prefills its prompt in chunks (reusing the longest prefix the
 * session's cache already holds), then alternates sampling and one-token
 * decode passes.  Text is decoded incrementally (whole code points only)
 * and held back while it could still become a stop string. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/sample.h"

#define PREFILL_CHUNK 512

struct infer_stream {
    infer_session *s;
    int32_t *prompt;
    int n_prompt;
    int max_tokens, ignore_eos;
    int32_t stops[INFER_MAX_STOP_IDS + 64];
    int n_stops;
    char **stop_str;
    int n_stop_str;
    sampler *smp;
    infer_detok *detok;
    int started, done, need_feed;
    int32_t last;
    atomic_int cancel;
    double t_start, t_first, t_end, deadline;
    infer_metrics met;
    int status;
    char msg[512];
    char *pending;           /* decoded text not yet released */
    size_t n_pending, cap_pending;
    char *out;               /* the text returned with the current token */
    size_t cap_out;
    infer_top_logprob top[INFER_MAX_LOGPROBS];
    int n_logprobs;
    int greedy;              /* 1: the largest logit is the token; the backend may find it */
    int32_t gid;             /* with greedy, the last pass's token; -1: in s->logits */
};

int engine_chunk(const infer_model *m)
{
    int c = m->context_len / 4;
    if (c > PREFILL_CHUNK) c = PREFILL_CHUNK;
    return c > 0 ? c : 1;
}

void *engine_host_alloc(const infer_model *m, size_t bytes, int *pinned)
{
    void *p = NULL;
    *pinned = 0;
    if (m->be->host_alloc) {
        if (m->be->host_alloc(m->bctx, bytes, &p) == INFER_OK) {
            *pinned = 1;
            return p;
        }
        infer_err_clear(); /* not pinned is not an error */
    }
    return malloc(bytes);
}

void engine_host_free(const infer_model *m, void *p, int pinned)
{
    if (pinned)
        m->be->host_free(m->bctx, p);
    else
        free(p);
}

double engine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void infer_gen_opts_default(infer_gen_opts *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->temperature = INFER_UNSET;
    o->top_k = -1;
    o->top_p = INFER_UNSET;
    o->min_p = INFER_UNSET;
    o->repeat_penalty = INFER_UNSET;
}

int engine_stop_ids(const infer_model *m, int32_t *out, int max)
{
    int n = 0;
    if (m->tok) {
        infer_tokenizer_info ti;
        infer_tokenizer_get_info(m->tok, &ti);
        for (int i = 0; i < ti.n_stop_ids && n < max; i++) out[n++] = ti.stop_ids[i];
    }
    for (int i = 0; i < m->gen.n_eos && n < max; i++) {
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= out[j] == m->gen.eos[i];
        if (!dup) out[n++] = m->gen.eos[i];
    }
    return n;
}

int engine_check_ids(const infer_model *m, const int32_t *ids, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return infer_err(INFER_ERR_OUT_OF_RANGE, "%s: token %d at index %zu is outside the model's vocabulary [0, %d)",
                             what, ids[i], i, m->cfg.vocab_size);
    return INFER_OK;
}

int engine_check_gen_opts(const infer_gen_opts *o)
{
    if (o->max_tokens < 0 || o->logprobs < 0 || o->logprobs > INFER_MAX_LOGPROBS || !(o->timeout_s >= 0) ||
        (o->n_stop_ids && !o->stop_ids) || (o->n_stop_strings && !o->stop_strings) ||
        (o->n_logit_bias && !o->logit_bias))
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "generate options: max_tokens %d, logprobs %d (0..%d), timeout_s %g or a NULL list",
                         o->max_tokens, o->logprobs, INFER_MAX_LOGPROBS, o->timeout_s);
    for (size_t i = 0; i < o->n_stop_strings; i++)
        if (!o->stop_strings[i] || !*o->stop_strings[i])
            return infer_err(INFER_ERR_INVALID_ARGUMENT, "generate options: stop string %zu is empty", i);
    return INFER_OK;
}

/* ---- Sessions ---- */

int infer_session_new(infer_model *m, infer_session **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_session_new: out is NULL");
    *out = NULL;
    if (!m) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_session_new: model is NULL");
    infer_session *s = calloc(1, sizeof *s);
    if (!s) return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_session_new: out of memory");
    s->m = m;
    s->chunk = engine_chunk(m);
    int rc;
    if ((rc = kv_cache_new(m, 1, s->chunk, s->chunk, &s->kv)) || (rc = fwd_scratch_new(m, s->chunk, 1, 1, &s->fs)))
        goto fail;
    s->logits = engine_host_alloc(m, (size_t)m->cfg.vocab_size * sizeof *s->logits, &s->logits_pinned);
    if (!s->logits) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_session_new: out of memory");
        goto fail;
    }
    *out = s;
    return INFER_OK;
fail:
    infer_session_free(s);
    return infer_err_prefix(rc, "%s: new session", m->path);
}

void infer_session_free(infer_session *s)
{
    if (!s) return;
    if (s->stream) s->stream->s = NULL;
    kv_cache_free(s->m, &s->kv);
    fwd_scratch_free(s->m, &s->fs);
    free(s->cached);
    engine_host_free(s->m, s->logits, s->logits_pinned);
    free(s);
}

void infer_session_reset(infer_session *s)
{
    if (s) s->n_cached = 0;
}

static int cache_push(infer_session *s, const int32_t *ids, int n)
{
    if (s->n_cached + n > s->cap_cached) {
        int cap = s->cap_cached ? s->cap_cached : 256;
        while (cap < s->n_cached + n) cap *= 2;
        int32_t *p = realloc(s->cached, (size_t)cap * sizeof *p);
        if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "session: out of memory");
        s->cached = p;
        s->cap_cached = cap;
    }
    memcpy(s->cached + s->n_cached, ids, (size_t)n * sizeof *ids);
    s->n_cached += n;
    return INFER_OK;
}

/* Runs n tokens (n <= chunk) at the end of the cached sequence; logits of
 * the last one into s->logits when want_logits, or with gid its greedy
 * token into *gid where the backend finds it (else -1 and the logits).
 * rope_len: the length dynamic RoPE scales for (the whole prompt's,
 * during a prefill). */
static int session_pass(infer_session *s, const int32_t *ids, int n, int want_logits, int rope_len, int32_t *gid)
{
    int start = s->n_cached;
    int rc = kv_cache_reserve(s->m, &s->kv, start + n, start);
    if (rc) return rc;
    int32_t q_start[2] = {0, n}, kv_len[1] = {start + n}, slot[1] = {0}, row[1] = {n - 1}, rl[1] = {rope_len};
    fwd_batch fb = {.B = 1, .N = n, .ids = ids, .q_start = q_start, .kv_len = kv_len, .slot = slot,
                    .rope_len = rl, .out_rows = row, .n_out = want_logits ? 1 : 0, .logits = s->logits,
                    .out_ids = want_logits ? gid : NULL};
    rc = model_forward(s->m, &s->kv, &s->fs, &fb);
    if (rc) return rc;
    return cache_push(s, ids, n);
}

/* ---- Streams ---- */

static int stream_fail(infer_stream *st, int status)
{
    st->status = status;
    snprintf(st->msg, sizeof st->msg, "%s", infer_last_error());
    st->done = 1;
    st->t_end = engine_now();
    st->met.finish = status == INFER_ERR_CANCELLED ? INFER_FINISH_CANCELLED : INFER_FINISH_ERROR;
    return 0;
}

static int stopped(infer_stream *st)
{
    if (atomic_load(&st->cancel))
        return infer_err(INFER_ERR_CANCELLED, "generation cancelled");
    if (st->deadline > 0 && engine_now() > st->deadline)
        return infer_err(INFER_ERR_CANCELLED, "generation passed its deadline");
    return INFER_OK;
}

int engine_greedy(const sampler_params *p)
{
    return p->temperature == 0.0f && p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f &&
           p->frequency_penalty == 0.0f && p->n_logit_bias == 0 && p->n_logprobs == 0;
}

void engine_resolve_sampling(const infer_model *m, const infer_gen_opts *o, sampler_params *p)
{
    const gen_config *g = &m->gen;
    int gen_sample = g->present && g->do_sample;
    memset(p, 0, sizeof *p);
    p->temperature = o->temperature >= 0 ? o->temperature : (gen_sample ? g->temperature : 0.0f);
    p->top_k = o->top_k >= 0 ? o->top_k : (g->present ? g->top_k : 0);
    p->top_p = o->top_p >= 0 ? o->top_p : (g->present ? g->top_p : 1.0f);
    p->min_p = o->min_p >= 0 ? o->min_p : (g->present ? g->min_p : 0.0f);
    p->repeat_penalty = o->repeat_penalty >= 0 ? o->repeat_penalty : (g->present ? g->repetition_penalty : 1.0f);
    p->presence_penalty = o->presence_penalty;
    p->frequency_penalty = o->frequency_penalty;
    p->logit_bias = o->logit_bias;
    p->n_logit_bias = o->n_logit_bias;
    p->seed = o->seed;
    p->n_logprobs = o->logprobs;
}

void infer_stream_free(infer_stream *st)
{
    if (!st) return;
    if (st->s && st->s->stream == st) st->s->stream = NULL;
    free(st->prompt);
    for (int i = 0; i < st->n_stop_str; i++) free(st->stop_str[i]);
    free(st->stop_str);
    sampler_free(st->smp);
    infer_detok_free(st->detok);
    free(st->pending);
    free(st->out);
    free(st);
}

static int stream_new(infer_session *s, const int32_t *ids, size_t n_ids, const infer_gen_opts *opts,
                      infer_stream **out)
{
    infer_model *m = s->m;
    infer_gen_opts def;
    if (!opts) {
        infer_gen_opts_default(&def);
        opts = &def;
    }
    if (s->stream)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "session: a stream is already running on it (free it first)");
    if (n_ids == 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "generate: the prompt is empty");
    int rc = engine_check_gen_opts(opts);
    if (rc) return rc;
    if ((rc = engine_check_ids(m, ids, n_ids, "prompt"))) return rc;
    if (rc) return rc;
    if (opts->stop_ids && (rc = engine_check_ids(m, opts->stop_ids, opts->n_stop_ids, "stop_ids"))) return rc;
    size_t keep = n_ids;
    if (n_ids >= (size_t)m->context_len) {
        if (!opts->truncate_prompt)
            return infer_err(INFER_ERR_OUT_OF_RANGE,
                             "prompt of %zu tokens does not fit the context of %d (leave room for one new token, "
                             "or ask for truncation)",
                             n_ids, m->context_len);
        int room = opts->max_tokens > 0 && opts->max_tokens < m->context_len / 4 ? opts->max_tokens
                                                                                 : m->context_len / 4;
        keep = (size_t)(m->context_len - (room > 0 ? room : 1));
    }
    infer_stream *st = calloc(1, sizeof *st);
    if (!st) return infer_err(INFER_ERR_OUT_OF_MEMORY, "generate: out of memory");
    st->s = s;
    st->n_prompt = (int)keep;
    st->prompt = malloc(keep * sizeof *st->prompt);
    st->max_tokens = opts->max_tokens;
    st->ignore_eos = opts->ignore_eos;
    st->n_logprobs = opts->logprobs;
    atomic_init(&st->cancel, 0);
    if (!st->prompt) goto oom;
    memcpy(st->prompt, ids + (n_ids - keep), keep * sizeof *ids);
    st->n_stops = engine_stop_ids(m, st->stops, INFER_MAX_STOP_IDS);
    for (size_t i = 0; i < opts->n_stop_ids && st->n_stops < (int)(sizeof st->stops / sizeof st->stops[0]); i++)
        st->stops[st->n_stops++] = opts->stop_ids[i];
    if (opts->n_stop_strings) {
        st->stop_str = calloc(opts->n_stop_strings, sizeof *st->stop_str);
        if (!st->stop_str) goto oom;
        for (size_t i = 0; i < opts->n_stop_strings; i++) {
            const char *ss = opts->stop_strings[i];
            if (!ss || !*ss) {
                infer_stream_free(st);
                return infer_err(INFER_ERR_INVALID_ARGUMENT, "generate options: stop string %zu is empty", i);
            }
            if (!(st->stop_str[st->n_stop_str++] = strdup(ss))) goto oom;
        }
    }
    sampler_params sp;
    engine_resolve_sampling(m, opts, &sp);
    st->greedy = engine_greedy(&sp);
    st->gid = -1;
    if ((rc = sampler_new(&sp, m->cfg.vocab_size, &st->smp))) {
        infer_stream_free(st);
        return rc;
    }
    if (m->tok && (rc = infer_detok_new(m->tok, 1, &st->detok))) {
        infer_stream_free(st);
        return rc;
    }
    st->t_start = engine_now();
    if (opts->timeout_s > 0) st->deadline = st->t_start + opts->timeout_s;
    st->met.prompt_tokens = (int)keep;
    st->status = INFER_OK;
    s->stream = st;
    *out = st;
    return INFER_OK;
oom:
    infer_stream_free(st);
    return infer_err(INFER_ERR_OUT_OF_MEMORY, "generate: out of memory");
}

int infer_generate_ids(infer_session *s, const int32_t *ids, size_t n_ids, const infer_gen_opts *opts,
                       infer_stream **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_generate_ids: out is NULL");
    *out = NULL;
    if (!s || (n_ids && !ids)) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_generate_ids: NULL argument");
    return stream_new(s, ids, n_ids, opts, out);
}

static int need_tokenizer(const infer_session *s)
{
    if (!s->m->tok)
        return infer_err(INFER_ERR_MISSING, "%s: no tokenizer.json: give token ids instead of text", s->m->path);
    return INFER_OK;
}

int infer_generate(infer_session *s, const char *prompt, const infer_gen_opts *opts, infer_stream **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_generate: out is NULL");
    *out = NULL;
    if (!s || !prompt) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_generate: NULL argument");
    int rc = need_tokenizer(s);
    if (rc) return rc;
    int32_t *ids = NULL;
    size_t n = 0;
    if ((rc = infer_tokenize(s->m->tok, prompt, (size_t)-1, 1, &ids, &n))) return rc;
    rc = stream_new(s, ids, n, opts, out);
    infer_free(ids);
    return rc;
}

int infer_chat(infer_session *s, const infer_message *msgs, size_t n_msgs, const infer_chat_opts *chat_opts,
               const infer_gen_opts *opts, infer_stream **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_chat: out is NULL");
    *out = NULL;
    if (!s || (n_msgs && !msgs)) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_chat: NULL argument");
    int rc = need_tokenizer(s);
    if (rc) return rc;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    /* the template writes its own BOS: no specials added when encoding */
    if ((rc = infer_chat_render(s->m->tok, msgs, n_msgs, chat_opts, &text, &len)) ||
        (rc = infer_tokenize(s->m->tok, text, len, 0, &ids, &n)))
        goto done;
    rc = stream_new(s, ids, n, opts, out);
done:
    infer_free(text);
    infer_free(ids);
    return rc;
}

/* Prefills the prompt, reusing what the cache holds of it. */
static int prefill(infer_stream *st)
{
    infer_session *s = st->s;
    int n = st->n_prompt, p = 0;
    while (p < s->n_cached && p < n && s->cached[p] == st->prompt[p]) p++;
    if (p == n) p = n - 1; /* the last prompt token is run again for its logits */
    if (p < s->n_cached && !kv_cache_can_rewind(s->m, &s->kv, s->n_cached, p)) p = 0;
    s->n_cached = p;
    st->met.prefill_tokens = n - p;
    int rc;
    while (s->n_cached < n) {
        if ((rc = stopped(st))) return rc;
        int k = n - s->n_cached < s->chunk ? n - s->n_cached : s->chunk;
        if ((rc = session_pass(s, st->prompt + s->n_cached, k, s->n_cached + k == n, n, st->greedy ? &st->gid : NULL)))
            return rc;
    }
    return INFER_OK;
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return INFER_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *p = realloc(*buf, c);
    if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "generate: out of memory");
    *buf = p;
    *cap = c;
    return INFER_OK;
}

static int pending_add(infer_stream *st, const char *t, size_t n)
{
    int rc = grow(&st->pending, &st->cap_pending, st->n_pending + n + 1);
    if (rc) return rc;
    if (n) memcpy(st->pending + st->n_pending, t, n);
    st->n_pending += n;
    st->pending[st->n_pending] = '\0';
    return INFER_OK;
}

/* Moves the first n pending bytes to the output text. */
static int release(infer_stream *st, size_t n, size_t *out_len)
{
    int rc = grow(&st->out, &st->cap_out, n + 1);
    if (rc) return rc;
    if (n) memcpy(st->out, st->pending, n);
    st->out[n] = '\0';
    if (st->n_pending > n) memmove(st->pending, st->pending + n, st->n_pending - n);
    st->n_pending -= n;
    *out_len = n;
    return INFER_OK;
}

/* Where the first stop string starts in the pending text, or -1; *hold =
 * how many bytes at the end could still begin one. */
static long find_stop(const infer_stream *st, size_t *hold)
{
    long first = -1;
    *hold = 0;
    for (int i = 0; i < st->n_stop_str; i++) {
        const char *ss = st->stop_str[i];
        size_t sl = strlen(ss);
        const char *hit = memmem(st->pending, st->n_pending, ss, sl);
        if (hit && (first < 0 || hit - st->pending < first)) first = hit - st->pending;
        size_t maxk = sl - 1 < st->n_pending ? sl - 1 : st->n_pending;
        for (size_t k = maxk; k > *hold; k--)
            if (!memcmp(st->pending + st->n_pending - k, ss, k)) {
                *hold = k;
                break;
            }
    }
    return first;
}

static int is_stop_id(const infer_stream *st, int32_t id)
{
    for (int i = 0; i < st->n_stops; i++)
        if (st->stops[i] == id) return 1;
    return 0;
}

static void finish(infer_stream *st, infer_finish why)
{
    st->done = 1;
    st->t_end = engine_now();
    st->met.finish = why;
}

int infer_stream_next(infer_stream *st, infer_token *tok)
{
    if (!st || !tok) return 0;
    memset(tok, 0, sizeof *tok);
    if (st->done) return 0;
    infer_session *s = st->s;
    if (!s) return stream_fail(st, infer_err(INFER_ERR_INVALID_ARGUMENT, "the stream's session was freed"));
    int rc;
    if ((rc = stopped(st))) return stream_fail(st, rc);
    if (!st->started) {
        st->started = 1;
        double t0 = engine_now();
        rc = prefill(st);
        st->t_first = engine_now();
        st->met.prefill_s = st->t_first - t0;
        if (rc) return stream_fail(st, rc);
    } else if (st->need_feed) {
        st->need_feed = 0;
        if ((rc = session_pass(s, &st->last, 1, 1, 0, st->greedy ? &st->gid : NULL))) return stream_fail(st, rc);
    }
    int32_t id = st->greedy ? st->gid : -1;
    float lp = 0.0f;
    /* the log-probabilities cost a pass over the vocabulary: only on request */
    if (id < 0 &&
        (rc = sampler_sample(st->smp, s->logits, &id, st->n_logprobs ? &lp : NULL, st->n_logprobs ? st->top : NULL)))
        return stream_fail(st, rc);
    sampler_accept(st->smp, id);
    st->met.generated_tokens++;
    size_t out_len = 0;
    int eos = !st->ignore_eos && is_stop_id(st, id);
    if (!eos && st->detok) {
        const char *piece;
        size_t plen;
        if ((rc = infer_detok_push(st->detok, id, &piece, &plen)) || (rc = pending_add(st, piece, plen)))
            return stream_fail(st, rc);
    }
    size_t hold = 0;
    long at = eos ? -1 : find_stop(st, &hold);
    int last_of_length = st->max_tokens > 0 && st->met.generated_tokens >= st->max_tokens;
    int context_full = s->n_cached >= s->m->context_len;
    if (at >= 0) {
        rc = release(st, (size_t)at, &out_len);
        st->n_pending = 0;
        finish(st, INFER_FINISH_STOP);
    } else if (eos || last_of_length || context_full) {
        if (st->detok) {
            const char *piece;
            size_t plen;
            if ((rc = infer_detok_flush(st->detok, &piece, &plen)) || (rc = pending_add(st, piece, plen)))
                return stream_fail(st, rc);
        }
        /* a stop string may still show up in the flushed text */
        at = find_stop(st, &hold);
        rc = release(st, at >= 0 ? (size_t)at : st->n_pending, &out_len);
        st->n_pending = 0;
        finish(st, at >= 0 ? INFER_FINISH_STOP
                   : eos   ? INFER_FINISH_EOS
                   : last_of_length ? INFER_FINISH_LENGTH
                                    : INFER_FINISH_CONTEXT);
    } else {
        rc = release(st, st->n_pending - hold, &out_len);
        st->need_feed = 1;
        st->last = id;
    }
    if (rc) return stream_fail(st, rc);
    double now = engine_now();
    st->met.decode_s = st->met.generated_tokens > 1 ? now - st->t_first : 0.0;
    tok->id = id;
    tok->text = st->out ? st->out : "";
    tok->len = out_len;
    tok->logprob = lp;
    tok->n_top = st->n_logprobs;
    tok->top = st->n_logprobs ? st->top : NULL;
    return 1;
}

int infer_stream_error(const infer_stream *st, const char **msg)
{
    if (!st) {
        if (msg) *msg = "stream is NULL";
        return INFER_ERR_INVALID_ARGUMENT;
    }
    if (msg) *msg = st->msg;
    return st->status;
}

void infer_stream_cancel(infer_stream *st)
{
    if (st) atomic_store(&st->cancel, 1);
}

int infer_stream_metrics(const infer_stream *st, infer_metrics *out)
{
    if (!st || !out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_stream_metrics: NULL argument");
    *out = st->met;
    out->total_s = (st->done ? st->t_end : engine_now()) - st->t_start;
    out->prefill_tok_s = out->prefill_s > 0 ? out->prefill_tokens / out->prefill_s : 0.0;
    /* the first token comes from the prefill pass; decode passes make the rest */
    out->decode_tok_s = out->decode_s > 0 ? (out->generated_tokens - 1) / out->decode_s : 0.0;
    if (st->s && st->s->m->be->memory) st->s->m->be->memory(st->s->m->bctx, &out->active_memory, &out->peak_memory);
    return INFER_OK;
}

int infer_stream_run(infer_stream *st, infer_token_cb cb, void *user)
{
    if (!st) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_stream_run: stream is NULL");
    infer_token t;
    while (infer_stream_next(st, &t)) {
        if (cb && cb(user, &t)) infer_stream_cancel(st);
    }
    return infer_stream_error(st, NULL);
}
