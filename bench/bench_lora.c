/* bench_lora.c - LoRA training speed: tokens/s, model FLOP utilisation and
 * peak memory of infer_train_step on random token ids, beside the bf16
 * matrix-product rate the backend reaches in the same run.
 *
 *     bench_lora MODEL_DIR [--backend cuda] [--batch 4] [--seq 512] [--steps 10]
 *                [--rank 8] [--targets q_proj,v_proj] [--checkpoint]
 *
 * The adapter: rank R, scale 2 (PEFT's lora_alpha = 2 R), the targets in
 * every layer; AdamW, lr 1e-4.  Two warm-up steps, then --steps timed.
 * MFU: 4 x the base matrices' parameters per token (the forward products
 * and the input gradient; frozen weights need no weight gradient; the
 * attention not counted, as the peer script counts it) over 989 TFLOP/s
 * (H100 SXM bf16 dense), and over the rate measured here: the backend's
 * matmul of a bf16 8192 x 8192 weight by 4096 rows (cuBLAS, x converted to
 * bf16 each call, as the model's products do; on the cpu 1024 x 1024 by
 * 256). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "infer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* TFLOP/s of the backend's bf16 products at a large shape; 0 if it fails. */
static double matmul_rate(const char *backend)
{
    const backend_ops *be = backend_find(backend);
    if (!be || !be->available()) return 0.0;
    const int gpu = strcmp(backend, "cpu") != 0, N = gpu ? 8192 : 1024, K = N, T = gpu ? 4096 : 256;
    void *ctx = NULL, *x = NULL, *y = NULL;
    bk_opts o = {0};
    if (be->create(&o, &ctx)) return 0.0;
    uint16_t *wh = malloc((size_t)N * K * 2);
    float *xh = malloc((size_t)T * K * 4);
    double rate = 0.0;
    if (wh && xh) {
        for (size_t i = 0; i < (size_t)N * K; i++) wh[i] = 0x3c00 ^ (uint16_t)(i & 0x7f);
        for (size_t i = 0; i < (size_t)T * K; i++) xh[i] = (float)(i % 13) * 0.01f;
        bk_weight w = {.data = wh, .dtype = DT_BF16, .rows = N, .cols = K};
        int ok = (!be->weight_prepare || !be->weight_prepare(ctx, &w)) && !be->alloc(ctx, (size_t)T * K * 4, &x) &&
                 !be->alloc(ctx, (size_t)T * N * 4, &y) && !be->upload(ctx, x, xh, (size_t)T * K * 4);
        if (ok) {
            be->matmul(ctx, y, x, &w, NULL, T);
            be->synchronize(ctx);
            double t0 = now();
            const int reps = 10;
            for (int r = 0; r < reps; r++) be->matmul(ctx, y, x, &w, NULL, T);
            be->synchronize(ctx);
            rate = 2.0 * N * K * (double)T * reps / (now() - t0) * 1e-12;
        }
        if (be->weight_release) be->weight_release(ctx, &w);
    }
    be->free(ctx, x);
    be->free(ctx, y);
    free(wh);
    free(xh);
    be->destroy(ctx);
    return rate;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_lora: %s: %s\n", what, infer_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *backend = NULL, *targets = "q_proj,v_proj";
    int batch = 4, seq = 512, steps = 10, rank = 8, ckpt = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--backend") && v) backend = argv[++i];
        else if (!strcmp(a, "--batch") && v) batch = atoi(argv[++i]);
        else if (!strcmp(a, "--seq") && v) seq = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && v) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--rank") && v) rank = atoi(argv[++i]);
        else if (!strcmp(a, "--targets") && v) targets = argv[++i];
        else if (!strcmp(a, "--checkpoint")) ckpt = 1;
        else if (a[0] != '-' && !dir) dir = a;
        else {
            fprintf(stderr, "usage: bench_lora MODEL_DIR [--backend B] [--batch 4] [--seq 512] [--steps 10] "
                            "[--rank 8] [--targets LIST] [--checkpoint]\n");
            return 2;
        }
    }
    if (!dir || batch < 1 || seq < 2 || steps < 1 || rank < 1) {
        fprintf(stderr, "bench_lora: bad arguments\n");
        return 2;
    }
    infer_load_opts lo;
    infer_load_opts_default(&lo);
    lo.backend = backend;
    infer_model *m;
    if (infer_model_load(dir, &lo, &m)) return fail(dir);
    infer_model_info info;
    infer_model_get_info(m, &info);
    infer_lora_opts ao;
    infer_lora_opts_default(&ao);
    ao.rank = rank;
    ao.scale = 2.0f;
    ao.targets = targets;
    ao.num_layers = 0;
    infer_lora *l;
    if (infer_lora_new(m, &ao, &l)) return fail("adapter");
    infer_train_opts to;
    infer_train_opts_default(&to);
    to.lr = 1e-4f;
    to.grad_checkpoint = ckpt;
    infer_trainer *t;
    if (infer_trainer_new(l, &to, &t)) return fail("trainer");
    int32_t *ids = malloc((size_t)batch * seq * sizeof *ids);
    infer_train_example *ex = malloc((size_t)batch * sizeof *ex);
    if (!ids || !ex) return 1;
    unsigned long long s = 7;
    for (size_t i = 0; i < (size_t)batch * seq; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (unsigned long long)info.vocab_size);
    }
    for (int b = 0; b < batch; b++) ex[b] = (infer_train_example){ids + (size_t)b * seq, (size_t)seq, 0};
    infer_train_batch bt = {ex, (size_t)batch};
    infer_step_result r;
    for (int i = 0; i < 2; i++)
        if (infer_train_step(t, &bt, 1, &r)) return fail("step");
    infer_reset_peak_memory(info.backend);
    double t0 = now();
    for (int i = 0; i < steps; i++)
        if (infer_train_step(t, &bt, 1, &r)) return fail("step");
    double dt = now() - t0, tok_s = (double)steps * batch * seq / dt;
    size_t peak = infer_get_peak_memory(info.backend);
    /* the base matrices: every linear layer's and the head (the embedding
     * itself is a gather, not a product; a tied head is counted once in
     * n_params) */
    double n_mat = (double)info.n_params - (info.tied_embeddings ? 0.0 : (double)info.vocab_size * info.hidden_size);
    double rate = matmul_rate(info.backend);
    printf("model %s (%s, %s), backend %s, rank %d on %s, %d x %d tokens%s\n", dir, info.model_type, info.dtype,
           info.backend, rank, targets, batch, seq, ckpt ? ", checkpointing" : "");
    printf("limit: bf16 products %.3f TFLOP/s (the backend's matmul of a bf16 weight, this run; cuda: 8192 x 8192 "
           "by 4096 rows, cpu: 1024 x 1024 by 256); H100 SXM nominal 989 TFLOP/s\n",
           rate);
    printf("lora: %.1f tok/s (%d steps), MFU %.3f of 989 (%.3f of the measured rate), peak memory %.1f MB, "
           "loss %.4f\n",
           tok_s, steps, 4.0 * n_mat * tok_s / 989e12, rate > 0 ? 4.0 * n_mat * tok_s / (rate * 1e12) : 0.0,
           (double)peak / 1e6, r.loss);
    infer_trainer_free(t);
    infer_lora_free(l);
    infer_model_free(m);
    free(ids);
    free(ex);
    return 0;
}
