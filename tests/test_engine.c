/* test_engine.c - sessions, streams, batches and inspection on the cpu
 * backend, over the fixtures of tests/fixtures.
 *
 * The references: transformers' logits (logits.npy: a cached decode must
 * pick the argmax of the full forward pass at every step), and the
 * single-prompt results (a batch must give what each prompt gives
 * alone).  Greedy generation against transformers' generate() is in
 * test_generate.c. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "test.h"

#define FIX(name) INFER_TEST_DIR "/fixtures/" name

static infer_model *load(const char *dir, int threads)
{
    infer_load_opts o;
    infer_load_opts_default(&o);
    o.backend = "cpu";
    o.n_threads = threads;
    infer_model *m = NULL;
    if (infer_model_load(dir, &o, &m)) fail_msg("%s: %s", dir, infer_last_error());
    return m;
}

static void greedy_opts(infer_gen_opts *o, int n)
{
    infer_gen_opts_default(o);
    o->temperature = 0;
    o->max_tokens = n;
    o->ignore_eos = 1;
}

/* Generates n tokens greedily from ids; returns them (malloc'ed). */
static int32_t *gen(infer_session *s, const int32_t *ids, size_t n_ids, const infer_gen_opts *o, int *n_out,
                    infer_metrics *met)
{
    infer_stream *st = NULL;
    if (infer_generate_ids(s, ids, n_ids, o, &st)) fail_msg("generate: %s", infer_last_error());
    int32_t *out = malloc(4096 * sizeof *out);
    int n = 0;
    infer_token t;
    while (infer_stream_next(st, &t) && n < 4096) out[n++] = t.id;
    const char *msg;
    if (infer_stream_error(st, &msg)) fail_msg("stream: %s", msg);
    if (met) infer_stream_metrics(st, met);
    infer_stream_free(st);
    *n_out = n;
    return out;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* A cached decode equals the argmax of a full forward pass at each step,
 * for prompts shorter and longer than the sliding windows and a
 * generation that runs past them (the rings wrap). */
static void cached_decode_matches_full_forward(void **state)
{
    (void)state;
    const char *names[] = {FIX("gemma3_text_sliding"), FIX("gemma2_softcap"), FIX("qwen2_bias_sliding"),
                           FIX("llama_rope_llama3"), FIX("qwen3_headdim")};
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        infer_model *m = load(names[f], 2);
        infer_model_info info;
        infer_model_get_info(m, &info);
        int lens[] = {3, 45};
        for (int li = 0; li < 2; li++) {
            int P = lens[li], G = 50;
            int32_t ids[128];
            for (int i = 0; i < P; i++) ids[i] = (int32_t)((i * 37 + 11) % info.vocab_size);
            infer_session *s;
            assert_int_equal(infer_session_new(m, &s), 0);
            infer_gen_opts o;
            greedy_opts(&o, G);
            int n;
            int32_t *out = gen(s, ids, (size_t)P, &o, &n, NULL);
            assert_int_equal(n, G);
            memcpy(ids + P, out, (size_t)n * sizeof *out);
            float *lg = malloc((size_t)(P + G) * info.vocab_size * sizeof *lg);
            assert_int_equal(infer_model_logits(m, ids, (size_t)(P + G), lg), 0);
            for (int t = 0; t < G; t++) {
                int want = argmax(lg + (size_t)(P - 1 + t) * info.vocab_size, info.vocab_size);
                if (want != out[t]) fail_msg("%s, prompt %d: step %d: %d, full forward %d", names[f], P, t, out[t], want);
            }
            free(lg);
            free(out);
            infer_session_free(s);
        }
        infer_model_free(m);
    }
}

/* A second request whose prompt extends what the session holds prefills
 * only the new tokens, and gives what a fresh session gives. */
static void prefix_reuse_prefills_only_new_tokens(void **state)
{
    (void)state;
    infer_model *m = load(FIX("gemma3_text_sliding"), 2);
    infer_session *s, *fresh;
    assert_int_equal(infer_session_new(m, &s), 0);
    assert_int_equal(infer_session_new(m, &fresh), 0);
    int32_t ids[200];
    for (int i = 0; i < 30; i++) ids[i] = (int32_t)(i * 7 % 500);
    infer_gen_opts o;
    greedy_opts(&o, 20);
    infer_metrics met;
    int n1, n2, n3;
    int32_t *a = gen(s, ids, 30, &o, &n1, &met);
    assert_int_equal(met.prompt_tokens, 30);
    assert_int_equal(met.prefill_tokens, 30);
    /* turn 2: the first prompt, the reply, and 5 new tokens */
    memcpy(ids + 30, a, (size_t)n1 * sizeof *a);
    for (int i = 0; i < 5; i++) ids[30 + n1 + i] = (int32_t)(100 + i);
    int P2 = 30 + n1 + 5;
    int32_t *b = gen(s, ids, (size_t)P2, &o, &n2, &met);
    assert_int_equal(met.prompt_tokens, P2);
    /* the last reply token was never fed back: it and the 5 new ones */
    assert_int_equal(met.prefill_tokens, 6);
    int32_t *c = gen(fresh, ids, (size_t)P2, &o, &n3, NULL);
    assert_int_equal(n2, n3);
    assert_memory_equal(b, c, (size_t)n2 * sizeof *b);
    /* a prompt that diverges early rewinds (or restarts) and still agrees */
    ids[3] = 499;
    int32_t *d = gen(s, ids, 40, &o, &n1, &met);
    infer_session_reset(fresh);
    int32_t *e = gen(fresh, ids, 40, &o, &n2, NULL);
    assert_memory_equal(d, e, (size_t)n1 * sizeof *d);
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
    infer_session_free(s);
    infer_session_free(fresh);
    infer_model_free(m);
}

/* Classify and batch generation give, for prompts of different lengths,
 * what each prompt gives alone. */
static void batches_equal_single_prompts(void **state)
{
    (void)state;
    const char *names[] = {FIX("gemma3_text_sliding"), FIX("llama_tied_bias"), FIX("qwen3_headdim")};
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        infer_model *m = load(names[f], 2);
        infer_model_info info;
        infer_model_get_info(m, &info);
        enum { NP = 5 };
        int lens[NP] = {1, 4, 17, 40, 9};
        int32_t *p[NP];
        size_t l[NP];
        for (int i = 0; i < NP; i++) {
            p[i] = malloc((size_t)lens[i] * sizeof *p[i]);
            for (int j = 0; j < lens[i]; j++) p[i][j] = (int32_t)((j * 31 + i * 7 + 3) % info.vocab_size);
            l[i] = (size_t)lens[i];
        }
        infer_prompts pr = {.n = NP, .ids = (const int32_t *const *)p, .lens = l};
        infer_classify_result *cr;
        assert_int_equal(infer_classify(m, &pr, 1, &cr), 0);
        infer_gen_opts o;
        greedy_opts(&o, 12);
        infer_batch_result *br;
        assert_int_equal(infer_batch_generate(m, &pr, &o, 3, &br), 0);
        for (int i = 0; i < NP; i++) {
            assert_int_equal(cr[i].status, 0);
            float *lg = malloc((size_t)lens[i] * info.vocab_size * sizeof *lg);
            assert_int_equal(infer_model_logits(m, p[i], l[i], lg), 0);
            const float *last = lg + (size_t)(lens[i] - 1) * info.vocab_size;
            double worst = 0;
            for (int v = 0; v < info.vocab_size; v++) {
                double d = fabs((double)cr[i].logits[v] - last[v]);
                if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
            }
            if (worst > 1e-4) fail_msg("%s: prompt %d: classify logits differ by %g", names[f], i, worst);
            assert_int_equal(cr[i].token, argmax(last, info.vocab_size));
            free(lg);
            infer_session *s;
            assert_int_equal(infer_session_new(m, &s), 0);
            int n;
            int32_t *alone = gen(s, p[i], l[i], &o, &n, NULL);
            assert_int_equal(br[i].status, 0);
            assert_int_equal((int)br[i].n_ids, n);
            assert_memory_equal(br[i].ids, alone, (size_t)n * sizeof *alone);
            assert_int_equal(br[i].finish, INFER_FINISH_LENGTH);
            free(alone);
            infer_session_free(s);
        }
        infer_classify_free(cr, NP);
        infer_batch_free(br, NP);
        for (int i = 0; i < NP; i++) free(p[i]);
        infer_model_free(m);
    }
}

/* Bad prompts fail alone in a batch; errors are clear elsewhere. */
static void bad_prompts_are_clear_errors(void **state)
{
    (void)state;
    infer_model *m = load(FIX("llama_tied_bias"), 1);
    infer_model_info info;
    infer_model_get_info(m, &info);
    int32_t good[3] = {1, 2, 3}, bad[2] = {1, 100000};
    int32_t *lng = calloc((size_t)info.context_len + 5, sizeof *lng);
    const int32_t *p[4] = {good, bad, lng, good};
    size_t l[4] = {3, 2, (size_t)info.context_len + 5, 0};
    infer_prompts pr = {.n = 4, .ids = p, .lens = l};
    infer_classify_result *cr;
    assert_int_equal(infer_classify(m, &pr, 0, &cr), 0);
    assert_int_equal(cr[0].status, 0);
    assert_int_equal(cr[1].status, INFER_ERR_OUT_OF_RANGE);
    assert_non_null(strstr(cr[1].error, "100000"));
    assert_int_equal(cr[2].status, INFER_ERR_OUT_OF_RANGE);
    assert_int_equal(cr[3].status, INFER_ERR_INVALID_ARGUMENT);
    infer_classify_free(cr, 4);

    infer_session *s;
    assert_int_equal(infer_session_new(m, &s), 0);
    infer_stream *st = NULL;
    infer_gen_opts o;
    greedy_opts(&o, 4);
    assert_int_equal(infer_generate_ids(s, lng, (size_t)info.context_len + 5, &o, &st), INFER_ERR_OUT_OF_RANGE);
    assert_non_null(strstr(infer_last_error(), "context"));
    assert_null(st);
    assert_int_equal(infer_generate_ids(s, bad, 2, &o, &st), INFER_ERR_OUT_OF_RANGE);
    assert_int_equal(infer_generate_ids(s, good, 0, &o, &st), INFER_ERR_INVALID_ARGUMENT);
    /* text needs a tokenizer when the folder has none */
    if (!infer_model_tokenizer(m)) assert_int_equal(infer_generate(s, "hello", &o, &st), INFER_ERR_MISSING);
    /* truncation, when asked, keeps the newest tokens */
    o.truncate_prompt = 1;
    assert_int_equal(infer_generate_ids(s, lng, (size_t)info.context_len + 5, &o, &st), 0);
    infer_token t;
    int n = 0;
    while (infer_stream_next(st, &t)) n++;
    assert_int_equal(infer_stream_error(st, NULL), 0);
    assert_int_equal(n, 4);
    /* one stream per session */
    infer_stream *st2 = NULL;
    assert_int_equal(infer_generate_ids(s, good, 3, &o, &st2), INFER_ERR_INVALID_ARGUMENT);
    infer_stream_free(st);
    /* bad options */
    o.logprobs = 99;
    assert_int_equal(infer_generate_ids(s, good, 3, &o, &st2), INFER_ERR_INVALID_ARGUMENT);
    greedy_opts(&o, 4);
    o.top_p = 2.0f;
    assert_int_equal(infer_generate_ids(s, good, 3, &o, &st2), INFER_ERR_INVALID_ARGUMENT);
    free(lng);
    infer_session_free(s);
    infer_model_free(m);
}

typedef struct cancel_arg {
    infer_stream *st;
    int after;
    int count;
} cancel_arg;

static int cancel_cb(void *user, const infer_token *t)
{
    (void)t;
    cancel_arg *a = user;
    return ++a->count >= a->after;
}

/* The callback form cancels; a deadline stops a stream; both report
 * INFER_ERR_CANCELLED. */
static void cancel_and_deadline(void **state)
{
    (void)state;
    infer_model *m = load(FIX("llama_tied_bias"), 1);
    infer_session *s;
    assert_int_equal(infer_session_new(m, &s), 0);
    int32_t ids[3] = {5, 6, 7};
    infer_gen_opts o;
    greedy_opts(&o, 50);
    infer_stream *st;
    assert_int_equal(infer_generate_ids(s, ids, 3, &o, &st), 0);
    cancel_arg a = {st, 5, 0};
    assert_int_equal(infer_stream_run(st, cancel_cb, &a), INFER_ERR_CANCELLED);
    assert_int_equal(a.count, 5);
    infer_metrics met;
    infer_stream_metrics(st, &met);
    assert_int_equal(met.finish, INFER_FINISH_CANCELLED);
    infer_stream_free(st);
    o.timeout_s = 1e-9;
    assert_int_equal(infer_generate_ids(s, ids, 3, &o, &st), 0);
    infer_token t;
    assert_int_equal(infer_stream_next(st, &t), 0);
    assert_int_equal(infer_stream_error(st, NULL), INFER_ERR_CANCELLED);
    infer_stream_free(st);
    infer_session_free(s);
    infer_model_free(m);
}

static void *cancel_thread(void *p)
{
    infer_stream_cancel(p);
    return NULL;
}

/* infer_stream_cancel from another thread ends the stream at its next
 * step. */
static void cancel_from_another_thread(void **state)
{
    (void)state;
    infer_model *m = load(FIX("llama_tied_bias"), 2);
    infer_session *s;
    assert_int_equal(infer_session_new(m, &s), 0);
    int32_t ids[3] = {5, 6, 7};
    infer_gen_opts o;
    greedy_opts(&o, 0); /* until the context is full */
    infer_stream *st;
    assert_int_equal(infer_generate_ids(s, ids, 3, &o, &st), 0);
    infer_token t;
    for (int i = 0; i < 3; i++) assert_int_equal(infer_stream_next(st, &t), 1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_thread, st), 0);
    pthread_join(th, NULL);
    assert_int_equal(infer_stream_next(st, &t), 0);
    assert_int_equal(infer_stream_error(st, NULL), INFER_ERR_CANCELLED);
    infer_metrics met;
    infer_stream_metrics(st, &met);
    assert_int_equal(met.generated_tokens, 3);
    infer_stream_free(st);
    infer_session_free(s);
    infer_model_free(m);
}

typedef struct thread_arg {
    infer_model *m;
    int32_t ids[8];
    int32_t out[64];
    int n;
} thread_arg;

static void *thread_gen(void *p)
{
    thread_arg *a = p;
    infer_session *s;
    if (infer_session_new(a->m, &s)) return NULL;
    infer_gen_opts o;
    greedy_opts(&o, 40);
    infer_stream *st;
    if (!infer_generate_ids(s, a->ids, 8, &o, &st)) {
        infer_token t;
        while (infer_stream_next(st, &t) && a->n < 64) a->out[a->n++] = t.id;
        infer_stream_free(st);
    }
    infer_session_free(s);
    return NULL;
}

/* Two threads generating from one model get what each gets alone. */
static void two_threads_one_model(void **state)
{
    (void)state;
    infer_model *m = load(FIX("qwen2_bias_sliding"), 2);
    thread_arg a[2], solo[2];
    memset(a, 0, sizeof a);
    for (int k = 0; k < 2; k++) {
        a[k].m = m;
        for (int i = 0; i < 8; i++) a[k].ids[i] = (int32_t)(k * 50 + i * 3 + 1);
        solo[k] = a[k];
        thread_gen(&solo[k]);
    }
    pthread_t th[2];
    for (int k = 0; k < 2; k++) assert_int_equal(pthread_create(&th[k], NULL, thread_gen, &a[k]), 0);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(a[k].n, 40);
        assert_int_equal(solo[k].n, 40);
        assert_memory_equal(a[k].out, solo[k].out, sizeof a[k].out[0] * 40);
    }
    infer_model_free(m);
}

/* Seeded sampling is reproducible through the whole stack; logprobs
 * come back sorted. */
static void seeded_sampling_reproducible(void **state)
{
    (void)state;
    infer_model *m = load(FIX("qwen3_headdim"), 1);
    infer_session *s;
    assert_int_equal(infer_session_new(m, &s), 0);
    int32_t ids[4] = {9, 8, 7, 6};
    infer_gen_opts o;
    infer_gen_opts_default(&o);
    o.temperature = 1.0f;
    o.top_k = 40;
    o.max_tokens = 30;
    o.ignore_eos = 1;
    o.seed = 1234;
    o.logprobs = 3;
    int n1, n2, n3;
    int32_t *a = gen(s, ids, 4, &o, &n1, NULL);
    int32_t *b = gen(s, ids, 4, &o, &n2, NULL);
    o.seed = 99;
    int32_t *c = gen(s, ids, 4, &o, &n3, NULL);
    assert_int_equal(n1, 30);
    assert_memory_equal(a, b, 30 * sizeof *a);
    assert_memory_not_equal(a, c, 30 * sizeof *a);
    infer_stream *st;
    assert_int_equal(infer_generate_ids(s, ids, 4, &o, &st), 0);
    infer_token t;
    assert_int_equal(infer_stream_next(st, &t), 1);
    assert_int_equal(t.n_top, 3);
    assert_true(t.top[0].logprob >= t.top[1].logprob && t.top[1].logprob >= t.top[2].logprob);
    assert_true(t.logprob <= t.top[0].logprob + 1e-6f);
    infer_stream_free(st);
    free(a);
    free(b);
    free(c);
    infer_session_free(s);
    infer_model_free(m);
}

/* Keys and queries equal those transformers attends with (after the q/k
 * norms and RoPE; tests/ref/make_inspect_goldens.py), for the fixtures'
 * ids.npy prompts. */
static void inspect_matches_transformers(void **state)
{
    (void)state;
    const char *names[] = {"gemma3_text_sliding", "gemma2_softcap", "qwen3_headdim", "llama_rope_llama3",
                           "qwen2_bias_sliding"};
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        char dir[512], path[600];
        snprintf(dir, sizeof dir, INFER_TEST_DIR "/fixtures/%s", names[f]);
        test_npy ids, keys, queries;
        snprintf(path, sizeof path, "%s/ids.npy", dir);
        assert_int_equal(test_npy_load(path, &ids), 0);
        snprintf(path, sizeof path, "%s/keys.npy", dir);
        assert_int_equal(test_npy_load(path, &keys), 0);
        snprintf(path, sizeof path, "%s/queries.npy", dir);
        assert_int_equal(test_npy_load(path, &queries), 0);
        infer_model *m = load(dir, 2);
        infer_attention a;
        assert_int_equal(infer_inspect_attention(m, ids.i, ids.n, 1, &a), 0);
        assert_int_equal(keys.ndim, 4);
        assert_int_equal(keys.shape[0], a.n_layers);
        assert_int_equal(keys.shape[1], a.n_kv_heads);
        assert_int_equal(keys.shape[2], a.seq_len);
        assert_int_equal(keys.shape[3], a.head_dim);
        assert_int_equal(queries.shape[1], a.n_heads);
        double wk = 0, wq = 0;
        for (size_t i = 0; i < keys.n; i++) {
            double d = fabs((double)a.keys[i] - keys.f[i]);
            if (!(d <= wk)) wk = isnan(d) ? INFINITY : d;
        }
        for (size_t i = 0; i < queries.n; i++) {
            double d = fabs((double)a.queries[i] - queries.f[i]);
            if (!(d <= wq)) wq = isnan(d) ? INFINITY : d;
        }
        if (wk > 1e-4 || wq > 1e-4) fail_msg("%s: keys differ by %g, queries by %g", names[f], wk, wq);
        infer_attention_free(&a);
        infer_model_free(m);
        test_npy_free(&ids);
        test_npy_free(&keys);
        test_npy_free(&queries);
    }
    infer_model *m = load(FIX("qwen3_headdim"), 1);
    infer_attention a;
    int32_t one = 1;
    assert_int_equal(infer_inspect_attention(m, &one, 0, 0, &a), INFER_ERR_INVALID_ARGUMENT);
    infer_model_free(m);
}

/* A second chat turn prefills only what the first did not leave in the
 * cache: the new user message and the template's markup around it. */
static void second_chat_turn_prefills_only_new_tokens(void **state)
{
    (void)state;
    infer_model *m = load(INFER_TEST_DIR "/../models/tiny-chat", 2);
    infer_session *s;
    assert_int_equal(infer_session_new(m, &s), 0);
    infer_gen_opts o;
    infer_gen_opts_default(&o);
    o.temperature = 0;
    o.max_tokens = 40;
    infer_message msgs[3] = {{"user", "What does a cow say?"}, {"assistant", NULL}, {"user", "What is the capital of France?"}};
    infer_stream *st;
    assert_int_equal(infer_chat(s, msgs, 1, NULL, &o, &st), 0);
    char reply[1024] = "";
    size_t n = 0;
    infer_token t;
    while (infer_stream_next(st, &t))
        if (n + t.len < sizeof reply) {
            memcpy(reply + n, t.text, t.len);
            n += t.len;
        }
    reply[n] = '\0';
    infer_metrics m1, m2;
    infer_stream_metrics(st, &m1);
    assert_int_equal(m1.finish, INFER_FINISH_EOS);
    assert_int_equal(m1.prefill_tokens, m1.prompt_tokens);
    infer_stream_free(st);
    msgs[1].content = reply;
    assert_int_equal(infer_chat(s, msgs, 3, NULL, &o, &st), 0);
    while (infer_stream_next(st, &t)) {
    }
    infer_stream_metrics(st, &m2);
    infer_stream_free(st);
    /* cached: the first prompt and the reply but its last token (the end
     * of turn, sampled and never fed back) */
    int cached = m1.prompt_tokens + m1.generated_tokens - 1;
    assert_true(m2.prompt_tokens > cached);
    assert_int_equal(m2.prefill_tokens, m2.prompt_tokens - cached);
    infer_session_free(s);
    infer_model_free(m);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(second_chat_turn_prefills_only_new_tokens),
    cmocka_unit_test(cached_decode_matches_full_forward),
    cmocka_unit_test(prefix_reuse_prefills_only_new_tokens),
    cmocka_unit_test(batches_equal_single_prompts),
    cmocka_unit_test(bad_prompts_are_clear_errors),
    cmocka_unit_test(cancel_and_deadline),
    cmocka_unit_test(cancel_from_another_thread),
    cmocka_unit_test(two_threads_one_model),
    cmocka_unit_test(seeded_sampling_reproducible),
    cmocka_unit_test(inspect_matches_transformers),
};

TEST_GROUP(test_engine, tests)
