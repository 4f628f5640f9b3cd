/* batch.c - many prompts at once: classification (one packed prefill) and
 * batch generation (every decode pass serves all running prompts), and
 * attention inspection.
 *
 * Prompts are packed without padding: a pass holds chunks of several
 * prompts, each with its own cache slot and positions (bk_attn_kv), so a
 * prompt's result does not depend on its neighbours. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/sample.h"

/* Rows of a pass: as many as about PASS_BYTES of activations hold, from
 * PASS_MIN_ROWS to PASS_MAX_ROWS (larger passes convert or read each
 * weight once for more rows: 4,096 rows of gemma3-1b, 2,500 of an 8B). */
enum { PASS_MIN_ROWS = 256, PASS_MAX_ROWS = 4096 };
#define PASS_BYTES ((size_t)512 << 20)

static int pass_rows(const infer_model *m)
{
    const model_config *c = &m->cfg;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t row = (3 * (size_t)c->hidden_size + 2 * qd + 2 * kvd + 2 * (size_t)c->intermediate_size) * 4;
    size_t n = row ? PASS_BYTES / row : PASS_MAX_ROWS;
    return n < PASS_MIN_ROWS ? PASS_MIN_ROWS : n > PASS_MAX_ROWS ? PASS_MAX_ROWS : (int)n;
}
#define CLASSIFY_GROUP 64

typedef struct seq {
    int32_t *prompt;     /* owned */
    int n_prompt;
    int len;             /* positions in the cache */
    int slot;
    int status;
    char *error;
    /* generation */
    sampler *smp;
    infer_detok *detok;
    int32_t *ids;
    size_t n_ids, cap_ids;
    char *text;
    size_t n_text, cap_text;
    int32_t next;
    int running;
    infer_finish finish;
} seq;

static char *dup_error(void)
{
    const char *m = infer_last_error();
    return strdup(m && *m ? m : "failed");
}

static void seq_fail(seq *s, int status)
{
    s->status = status;
    free(s->error);
    s->error = dup_error();
    s->running = 0;
}

/* Tokenizes and checks prompt i; a bad prompt fails alone. */
static int seq_init(infer_model *m, const infer_prompts *p, size_t i, seq *s, int max_len)
{
    memset(s, 0, sizeof *s);
    int rc = INFER_OK;
    size_t n = 0;
    if (p->texts) {
        if (!p->texts[i]) {
            rc = infer_err(INFER_ERR_INVALID_ARGUMENT, "prompt %zu is NULL", i);
        } else {
            rc = infer_tokenize(m->tok, p->texts[i], (size_t)-1, 1, &s->prompt, &n);
        }
    } else if (!p->ids[i] && p->lens[i]) {
        rc = infer_err(INFER_ERR_INVALID_ARGUMENT, "prompt %zu is NULL", i);
    } else {
        n = p->lens[i];
        s->prompt = malloc((n ? n : 1) * sizeof *s->prompt);
        if (!s->prompt)
            rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "out of memory");
        else if (n)
            memcpy(s->prompt, p->ids[i], n * sizeof *s->prompt);
    }
    if (!rc && n == 0) rc = infer_err(INFER_ERR_INVALID_ARGUMENT, "prompt %zu is empty", i);
    if (!rc && n > (size_t)max_len)
        rc = infer_err(INFER_ERR_OUT_OF_RANGE, "prompt %zu has %zu tokens; the context holds %d", i, n, max_len);
    if (!rc) rc = engine_check_ids(m, s->prompt, n, "prompt");
    s->n_prompt = (int)n;
    if (rc) seq_fail(s, rc);
    return rc;
}

static void seq_free(seq *s)
{
    free(s->prompt);
    free(s->error);
    sampler_free(s->smp);
    infer_detok_free(s->detok);
    free(s->ids);
    free(s->text);
}

typedef struct runner {
    infer_model *m;
    kv_cache kv;
    fwd_scratch fs;
    int n_slots, max_rows;
    int32_t *ids, *q_start, *kv_len, *slot, *rope_len, *out_rows;
    seq **who;           /* the sequence of each out row */
    float *logits;       /* [n_slots, vocab] */
    int32_t *greedy;     /* [n_slots]: with want_ids, each out row's greedy token (-1: see logits) */
    int want_ids;        /* 1: the backend picks greedy tokens; logits only where it cannot */
    int logits_pinned;   /* engine_host_alloc's */
} runner;

static void runner_free(runner *r)
{
    if (r->kv.k) kv_cache_free(r->m, &r->kv);
    if (r->fs.x) fwd_scratch_free(r->m, &r->fs);
    free(r->ids);
    free(r->q_start);
    free(r->kv_len);
    free(r->slot);
    free(r->rope_len);
    free(r->out_rows);
    free(r->who);
    free(r->greedy);
    if (r->logits) engine_host_free(r->m, r->logits, r->logits_pinned);
}

static int runner_new(infer_model *m, int n_slots, int max_len, runner *r)
{
    memset(r, 0, sizeof *r);
    r->m = m;
    r->n_slots = n_slots;
    int chunk = engine_chunk(m);
    /* no more rows than the prompts can fill */
    int64_t most = (int64_t)n_slots * (max_len > 1 ? max_len : 1);
    r->max_rows = pass_rows(m) < most ? pass_rows(m) : (int)most;
    if (r->max_rows < n_slots) r->max_rows = n_slots;
    int rc;
    if ((rc = kv_cache_new(m, n_slots, chunk, max_len < chunk ? chunk : max_len, &r->kv)) ||
        (rc = fwd_scratch_new(m, r->max_rows, n_slots, n_slots, &r->fs)))
        goto fail;
    r->ids = malloc((size_t)r->max_rows * sizeof *r->ids);
    r->q_start = malloc((size_t)(n_slots + 1) * sizeof *r->q_start);
    r->kv_len = malloc((size_t)n_slots * sizeof *r->kv_len);
    r->slot = malloc((size_t)n_slots * sizeof *r->slot);
    r->rope_len = malloc((size_t)n_slots * sizeof *r->rope_len);
    r->out_rows = malloc((size_t)n_slots * sizeof *r->out_rows);
    r->who = malloc((size_t)n_slots * sizeof *r->who);
    r->greedy = malloc((size_t)n_slots * sizeof *r->greedy);
    r->logits = engine_host_alloc(m, (size_t)n_slots * m->cfg.vocab_size * sizeof *r->logits, &r->logits_pinned);
    if (!r->ids || !r->q_start || !r->kv_len || !r->slot || !r->rope_len || !r->out_rows || !r->who || !r->greedy ||
        !r->logits) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "batch: out of memory");
        goto fail;
    }
    return INFER_OK;
fail:
    runner_free(r);
    return rc;
}

/* One pass: each sequence of seqs[0..n) that wants rows adds its next
 * chunk (prefill) or its next token (decode).  Sets *n_out to the number
 * of sequences whose logits came back (r->who, r->logits). */
static int runner_pass(runner *r, seq **seqs, int n, int *n_out)
{
    int B = 0, N = 0, outs = 0, maxlen = 0, keep = 0;
    r->q_start[0] = 0;
    /* growing the caches keeps what every slot holds */
    for (int i = 0; i < n; i++)
        if (seqs[i]->len > keep) keep = seqs[i]->len;
    for (int i = 0; i < n && N < r->max_rows; i++) {
        seq *s = seqs[i];
        if (s->status) continue;
        int k;
        const int32_t *src;
        if (s->len < s->n_prompt) {
            k = s->n_prompt - s->len;
            if (k > r->kv.max_chunk) k = r->kv.max_chunk;
            if (k > r->max_rows - N) k = r->max_rows - N;
            src = s->prompt + s->len;
        } else if (s->running) {
            k = 1;
            src = &s->next;
        } else {
            continue;
        }
        memcpy(r->ids + N, src, (size_t)k * sizeof *src);
        s->len += k;
        if (s->len > maxlen) maxlen = s->len;
        N += k;
        r->kv_len[B] = s->len;
        r->slot[B] = s->slot;
        r->rope_len[B] = s->len > s->n_prompt ? s->len : s->n_prompt; /* a prefill scales for the prompt */
        r->q_start[B + 1] = N;
        if (s->len >= s->n_prompt) {
            r->out_rows[outs] = N - 1;
            r->who[outs++] = s;
        }
        B++;
    }
    *n_out = outs;
    if (B == 0) return INFER_OK;
    int rc = kv_cache_reserve(r->m, &r->kv, maxlen, keep);
    if (rc) return rc;
    fwd_batch fb = {.B = B, .N = N, .ids = r->ids, .q_start = r->q_start, .kv_len = r->kv_len, .slot = r->slot,
                    .rope_len = r->rope_len, .out_rows = r->out_rows, .n_out = outs, .logits = r->logits,
                    .out_ids = r->want_ids ? r->greedy : NULL};
    return model_forward(r->m, &r->kv, &r->fs, &fb);
}

static int check_prompts(const infer_model *m, const infer_prompts *p)
{
    if (!p || (!!p->texts == !!p->ids) || (p->ids && !p->lens))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "prompts: give either texts or ids with lens");
    if (p->texts && !m->tok)
        return infer_err(INFER_ERR_MISSING, "%s: no tokenizer.json: give token ids instead of text", m->path);
    return INFER_OK;
}

static char *token_text(const infer_model *m, int32_t id)
{
    if (!m->tok) return NULL;
    char *t = NULL;
    size_t len;
    if (infer_detokenize(m->tok, &id, 1, 0, &t, &len)) return strdup("");
    return t;
}

/* ---- classification ---- */

void infer_classify_free(infer_classify_result *r, size_t n)
{
    if (!r) return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].error);
        free(r[i].text);
        free(r[i].logits);
    }
    free(r);
}

static void argmax(const float *x, int n, int32_t *id)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    *id = best;
}

int infer_classify(infer_model *m, const infer_prompts *p, int want_logits, infer_classify_result **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_classify: out is NULL");
    *out = NULL;
    if (!m) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_classify: model is NULL");
    int rc = check_prompts(m, p);
    if (rc) return rc;
    size_t n = p->n, V = (size_t)m->cfg.vocab_size;
    infer_classify_result *res = calloc(n ? n : 1, sizeof *res);
    seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    if (!res || !seqs) {
        free(res);
        free(seqs);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_classify: out of memory");
    }
    for (size_t i = 0; i < n; i++) seq_init(m, p, i, &seqs[i], m->context_len);
    for (size_t g0 = 0; g0 < n; g0 += CLASSIFY_GROUP) {
        size_t g1 = g0 + CLASSIFY_GROUP < n ? g0 + CLASSIFY_GROUP : n;
        int G = (int)(g1 - g0), maxlen = 1;
        seq *ptr[CLASSIFY_GROUP];
        for (int j = 0; j < G; j++) {
            ptr[j] = &seqs[g0 + j];
            ptr[j]->slot = j;
            if (ptr[j]->n_prompt > maxlen) maxlen = ptr[j]->n_prompt;
        }
        runner r;
        if ((rc = runner_new(m, G, maxlen, &r))) {
            for (int j = 0; j < G; j++)
                if (!ptr[j]->status) seq_fail(ptr[j], rc);
            continue;
        }
        r.want_ids = !want_logits;
        for (;;) {
            int n_out, pending = 0;
            for (int j = 0; j < G; j++) pending |= !ptr[j]->status && ptr[j]->len < ptr[j]->n_prompt;
            if (!pending) break;
            if ((rc = runner_pass(&r, ptr, G, &n_out))) {
                for (int j = 0; j < G; j++)
                    if (!ptr[j]->status && ptr[j]->len <= ptr[j]->n_prompt) seq_fail(ptr[j], rc);
                break;
            }
            for (int o = 0; o < n_out; o++) {
                size_t i = (size_t)(r.who[o] - seqs);
                const float *lg = r.logits + (size_t)o * V;
                if (r.want_ids && r.greedy[o] >= 0)
                    res[i].token = r.greedy[o];
                else
                    argmax(lg, (int)V, &res[i].token);
                res[i].text = token_text(m, res[i].token);
                if (want_logits) {
                    res[i].logits = malloc(V * sizeof(float));
                    if (!res[i].logits) {
                        seq_fail(r.who[o], infer_err(INFER_ERR_OUT_OF_MEMORY, "prompt %zu: out of memory", i));
                        continue;
                    }
                    memcpy(res[i].logits, lg, V * sizeof(float));
                }
            }
        }
        runner_free(&r);
    }
    for (size_t i = 0; i < n; i++) {
        res[i].status = seqs[i].status;
        if (seqs[i].status) {
            res[i].error = seqs[i].error;
            seqs[i].error = NULL;
            free(res[i].logits);
            res[i].logits = NULL;
        }
        seq_free(&seqs[i]);
    }
    free(seqs);
    infer_err_clear();
    *out = res;
    return INFER_OK;
}

/* ---- batch generation ---- */

void infer_batch_free(infer_batch_result *r, size_t n)
{
    if (!r) return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].error);
        free(r[i].ids);
        free(r[i].text);
    }
    free(r);
}

typedef struct gen_ctx {
    const infer_gen_opts *o;
    int32_t stops[INFER_MAX_STOP_IDS + 64];
    int n_stops;
    size_t max_stop;
} gen_ctx;

static int seq_append_text(seq *s, const char *t, size_t n)
{
    if (s->n_text + n + 1 > s->cap_text) {
        size_t cap = s->cap_text ? s->cap_text : 64;
        while (cap < s->n_text + n + 1) cap *= 2;
        char *p = realloc(s->text, cap);
        if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "batch: out of memory");
        s->text = p;
        s->cap_text = cap;
    }
    if (n) memcpy(s->text + s->n_text, t, n);
    s->n_text += n;
    s->text[s->n_text] = '\0';
    return INFER_OK;
}

/* Cuts the text at the first stop string that ends in its last added
 * bytes; 1 if one did. */
static int cut_stop(const gen_ctx *g, seq *s, size_t added)
{
    size_t from = s->n_text > added + g->max_stop ? s->n_text - added - g->max_stop : 0;
    long first = -1;
    for (size_t i = 0; i < g->o->n_stop_strings; i++) {
        const char *ss = g->o->stop_strings[i];
        const char *hit = memmem(s->text + from, s->n_text - from, ss, strlen(ss));
        if (hit && (first < 0 || hit - s->text < first)) first = hit - s->text;
    }
    if (first < 0) return 0;
    s->n_text = (size_t)first;
    s->text[first] = '\0';
    return 1;
}

/* Takes the next token of a sequence: the greedy one the backend found
 * (id >= 0), else one sampled from its logits lg. */
static int seq_step(infer_model *m, const gen_ctx *g, seq *s, float *lg, int32_t id)
{
    int rc;
    if (id < 0 && (rc = sampler_sample(s->smp, lg, &id, NULL, NULL))) return rc;
    sampler_accept(s->smp, id);
    if (s->n_ids == s->cap_ids) {
        size_t cap = s->cap_ids ? s->cap_ids * 2 : 32;
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "batch: out of memory");
        s->ids = p;
        s->cap_ids = cap;
    }
    s->ids[s->n_ids++] = id;
    int eos = 0;
    if (!g->o->ignore_eos)
        for (int i = 0; i < g->n_stops; i++) eos |= g->stops[i] == id;
    if (eos) {
        s->finish = INFER_FINISH_EOS;
    } else if (s->detok) {
        const char *t;
        size_t n;
        if ((rc = infer_detok_push(s->detok, id, &t, &n)) || (rc = seq_append_text(s, t, n))) return rc;
        if (g->o->n_stop_strings && cut_stop(g, s, n)) s->finish = INFER_FINISH_STOP;
    }
    if (!s->finish && g->o->max_tokens > 0 && (int)s->n_ids >= g->o->max_tokens) s->finish = INFER_FINISH_LENGTH;
    if (!s->finish && s->len >= m->context_len) s->finish = INFER_FINISH_CONTEXT;
    if (s->finish) {
        s->running = 0;
        if (s->detok && s->finish != INFER_FINISH_STOP) {
            const char *t;
            size_t n;
            if ((rc = infer_detok_flush(s->detok, &t, &n)) || (rc = seq_append_text(s, t, n))) return rc;
            if (g->o->n_stop_strings && cut_stop(g, s, n)) s->finish = INFER_FINISH_STOP;
        }
    } else {
        s->running = 1;
        s->next = id;
    }
    return INFER_OK;
}

int infer_batch_generate(infer_model *m, const infer_prompts *p, const infer_gen_opts *opts, int max_parallel,
                         infer_batch_result **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_batch_generate: out is NULL");
    *out = NULL;
    if (!m) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_batch_generate: model is NULL");
    infer_gen_opts def;
    if (!opts) {
        infer_gen_opts_default(&def);
        opts = &def;
    }
    int rc = check_prompts(m, p);
    if (rc || (rc = engine_check_gen_opts(opts))) return rc;
    if (max_parallel < 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_batch_generate: max_parallel < 0");
    if (max_parallel == 0) max_parallel = m->parallel_slots > 0 ? m->parallel_slots : 32;
    gen_ctx g = {.o = opts};
    g.n_stops = engine_stop_ids(m, g.stops, INFER_MAX_STOP_IDS);
    for (size_t i = 0; i < opts->n_stop_ids && g.n_stops < (int)(sizeof g.stops / sizeof g.stops[0]); i++)
        g.stops[g.n_stops++] = opts->stop_ids[i];
    for (size_t i = 0; i < opts->n_stop_strings; i++)
        if (strlen(opts->stop_strings[i]) > g.max_stop) g.max_stop = strlen(opts->stop_strings[i]);
    sampler_params sp;
    engine_resolve_sampling(m, opts, &sp);
    sp.n_logprobs = 0; /* batch results carry no log-probabilities */
    const int greedy = engine_greedy(&sp);
    size_t n = p->n;
    infer_batch_result *res = calloc(n ? n : 1, sizeof *res);
    seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    seq **ptr = calloc(n ? n : 1, sizeof *ptr);
    if (!res || !seqs || !ptr) {
        free(res);
        free(seqs);
        free(ptr);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_batch_generate: out of memory");
    }
    /* a prompt needs room for one generated token */
    for (size_t i = 0; i < n; i++) {
        seq *s = &seqs[i];
        if (seq_init(m, p, i, s, m->context_len - 1)) continue;
        if ((rc = sampler_new(&sp, m->cfg.vocab_size, &s->smp)) ||
            (m->tok && (rc = infer_detok_new(m->tok, 1, &s->detok))))
            seq_fail(s, rc);
    }
    for (size_t g0 = 0; g0 < n; g0 += (size_t)max_parallel) {
        size_t g1 = g0 + (size_t)max_parallel < n ? g0 + (size_t)max_parallel : n;
        int G = (int)(g1 - g0), maxlen = 1;
        for (int j = 0; j < G; j++) {
            ptr[j] = &seqs[g0 + j];
            ptr[j]->slot = j;
            if (ptr[j]->n_prompt > maxlen) maxlen = ptr[j]->n_prompt;
        }
        runner r;
        if ((rc = runner_new(m, G, maxlen, &r))) {
            for (int j = 0; j < G; j++)
                if (!ptr[j]->status) seq_fail(ptr[j], rc);
            continue;
        }
        r.want_ids = greedy;
        for (;;) {
            int n_out, busy = 0;
            for (int j = 0; j < G; j++)
                busy |= !ptr[j]->status && (ptr[j]->len < ptr[j]->n_prompt || ptr[j]->running);
            if (!busy) break;
            if ((rc = runner_pass(&r, ptr, G, &n_out))) {
                for (int j = 0; j < G; j++)
                    if (!ptr[j]->status && (ptr[j]->len < ptr[j]->n_prompt || ptr[j]->running)) seq_fail(ptr[j], rc);
                break;
            }
            for (int o = 0; o < n_out; o++) {
                seq *s = r.who[o];
                if ((rc = seq_step(m, &g, s, r.logits + (size_t)o * m->cfg.vocab_size, r.want_ids ? r.greedy[o] : -1)))
                    seq_fail(s, rc);
            }
        }
        runner_free(&r);
    }
    for (size_t i = 0; i < n; i++) {
        seq *s = &seqs[i];
        res[i].status = s->status;
        res[i].finish = s->status ? INFER_FINISH_ERROR : s->finish;
        res[i].error = s->error;
        s->error = NULL;
        res[i].ids = s->ids;
        res[i].n_ids = s->n_ids;
        s->ids = NULL;
        if (m->tok) {
            res[i].text = s->text ? s->text : strdup("");
            s->text = NULL;
        }
        seq_free(s);
    }
    free(seqs);
    free(ptr);
    infer_err_clear();
    *out = res;
    return INFER_OK;
}

/* ---- attention inspection ---- */

typedef struct inspect_ctx {
    infer_model *m;
    infer_attention *a;
    float *tmp;
} inspect_ctx;

/* rows [T, heads, hd] -> dst [heads, T, hd] */
static void transpose_into(float *dst, const float *src, int T, int heads, int hd)
{
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            memcpy(dst + ((size_t)h * T + t) * hd, src + ((size_t)t * heads + h) * hd, (size_t)hd * sizeof *dst);
}

static int inspect_hook(void *user, int layer, const void *q, const void *k)
{
    inspect_ctx *c = user;
    infer_attention *a = c->a;
    int T = a->seq_len, hd = a->head_dim;
    size_t kn = (size_t)T * a->n_kv_heads * hd, qn = (size_t)T * a->n_heads * hd;
    int rc = c->m->be->download_f32(c->m->bctx, c->tmp, k, kn);
    if (rc) return rc;
    transpose_into(a->keys + (size_t)layer * kn, c->tmp, T, a->n_kv_heads, hd);
    if (a->queries) {
        if ((rc = c->m->be->download_f32(c->m->bctx, c->tmp, q, qn))) return rc;
        transpose_into(a->queries + (size_t)layer * qn, c->tmp, T, a->n_heads, hd);
    }
    return INFER_OK;
}

void infer_attention_free(infer_attention *a)
{
    if (!a) return;
    free(a->keys);
    free(a->queries);
    memset(a, 0, sizeof *a);
}

int infer_inspect_attention(infer_model *m, const int32_t *ids, size_t n_ids, int with_queries, infer_attention *a)
{
    if (!a) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_inspect_attention: out is NULL");
    memset(a, 0, sizeof *a);
    if (!m || (n_ids && !ids)) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_inspect_attention: NULL argument");
    if (n_ids == 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_inspect_attention: the prompt is empty");
    if (n_ids > (size_t)m->context_len)
        return infer_err(INFER_ERR_OUT_OF_RANGE, "infer_inspect_attention: %zu tokens exceed the context of %d", n_ids,
                         m->context_len);
    int rc = engine_check_ids(m, ids, n_ids, "prompt");
    if (rc) return rc;
    const model_config *c = &m->cfg;
    int T = (int)n_ids;
    a->n_layers = c->n_layers;
    a->n_heads = c->n_heads;
    a->n_kv_heads = c->n_kv_heads;
    a->seq_len = T;
    a->head_dim = c->head_dim;
    size_t per_k = (size_t)T * c->n_kv_heads * c->head_dim, per_q = (size_t)T * c->n_heads * c->head_dim;
    a->keys = malloc(per_k * c->n_layers * sizeof(float));
    if (with_queries) a->queries = malloc(per_q * c->n_layers * sizeof(float));
    inspect_ctx ic = {m, a, malloc(per_q * sizeof(float))};
    kv_cache kv = {0};
    fwd_scratch fs = {0};
    if (!a->keys || (with_queries && !a->queries) || !ic.tmp) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_inspect_attention: out of memory for %d layers x %d tokens",
                       c->n_layers, T);
        goto done;
    }
    if ((rc = kv_cache_new(m, 1, T, T, &kv)) || (rc = fwd_scratch_new(m, T, 1, 1, &fs))) goto done;
    int32_t q_start[2] = {0, T}, kv_len[1] = {T}, slot[1] = {0};
    fwd_batch fb = {.B = 1, .N = T, .ids = ids, .q_start = q_start, .kv_len = kv_len, .slot = slot, .n_out = 0,
                    .inspect = inspect_hook, .inspect_user = &ic};
    rc = model_forward(m, &kv, &fs, &fb);
done:
    if (kv.k) kv_cache_free(m, &kv);
    if (fs.x) fwd_scratch_free(m, &fs);
    free(ic.tmp);
    if (rc) infer_attention_free(a);
    return rc;
}
