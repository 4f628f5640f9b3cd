/* cmd_bench.c - `infer bench MODEL_DIR [--n-prompt N] [--n-gen N]
 * [--batch B] [--runs R] [--json]`: prefill and decode speed of a model
 * beside the limit measured in the same run, as llama-bench reports them.
 *
 *   prefill  a fresh session, an --n-prompt-token prompt and one token:
 *            the stream's prefill tok/s, median of --runs
 *   decode   --n-gen tokens after an 8-token prompt, greedy, EOS ignored:
 *            the stream's decode tok/s, median of --runs
 *   batch    with --batch B > 1: B prompts of --n-prompt tokens generating
 *            --n-gen tokens each, together (infer_batch_generate), after an
 *            untimed run of the same; the tokens generated per second of
 *            wall time, prefill included;
 *            and the same B prompts classified (infer_classify: the next
 *            token of each): prompts per second, and the TFLOP/s of that
 *            run's products and attention (2 x weights a token, the head
 *            once a prompt, 2 T^2 x heads x head_dim a layer for the
 *            causal attention of a T-token prompt)
 *   limit    infer_measure_bandwidth, before the runs and after (the best);
 *            decode's bound is bandwidth / bytes a step reads (the weights
 *            of infer_model_info.decode_bytes, plus the KV cache at the mean
 *            position, float32), and the ratio is decode tok/s over it
 *   memory   the backend's peak bytes over the runs
 * Token ids are fixed pseudo-random ids: random and real weights run alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_run.h"
#include "commands.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Generated tokens per second of B prompts of n_prompt ids, n_gen each;
 * then the same prompts classified: prompts per second and TFLOP/s. */
static int run_batch(infer_model *m, int n_prompt, int n_gen, int B, double *tok_s, double *cls_s, double *cls_tf)
{
    const int32_t **p = malloc((size_t)B * sizeof *p);
    size_t *lens = malloc((size_t)B * sizeof *lens);
    int32_t *all = malloc((size_t)B * (size_t)n_prompt * sizeof *all);
    int rc = INFER_ERR_OUT_OF_MEMORY;
    if (p && lens && all) {
        infer_model_info info;
        infer_model_get_info(m, &info);
        for (int b = 0; b < B; b++) {
            /* each prompt its own ids: no shared prefix to reuse */
            bench_make_ids(all + (size_t)b * n_prompt, n_prompt, info.vocab_size, 7u + 977u * (uint32_t)b);
            p[b] = all + (size_t)b * n_prompt;
            lens[b] = (size_t)n_prompt;
        }
        infer_prompts pr = {.n = (size_t)B, .ids = p, .lens = lens};
        infer_gen_opts o;
        infer_gen_opts_default(&o);
        o.max_tokens = n_gen;
        o.temperature = 0.0f;
        o.ignore_eos = 1;
        infer_batch_result *res = NULL;
        double t0 = now_s();
        rc = infer_batch_generate(m, &pr, &o, B, &res);
        double t = now_s() - t0;
        size_t got = 0;
        for (int b = 0; !rc && b < B; b++) {
            if (res[b].status) rc = res[b].status;
            got += res[b].n_ids;
        }
        if (res) infer_batch_free(res, (size_t)B);
        *tok_s = t > 0 ? (double)got / t : 0.0;
        infer_classify_result *cr = NULL;
        t0 = now_s();
        if (!rc) rc = infer_classify(m, &pr, 0, &cr);
        t = now_s() - t0;
        for (int b = 0; !rc && b < B; b++)
            if (cr[b].status) rc = cr[b].status;
        if (cr) infer_classify_free(cr, (size_t)B);
        double L = info.n_layers, D = info.hidden_size, hd = info.head_dim, T = n_prompt;
        double layer = D * hd * (2.0 * info.n_heads + 2.0 * info.n_kv_heads) + 3.0 * D * info.intermediate_size;
        double flops = B * (T * 2.0 * L * layer + 2.0 * info.vocab_size * D + L * 2.0 * T * T * info.n_heads * hd);
        *cls_s = t > 0 ? B / t : 0.0;
        *cls_tf = t > 0 ? flops / t * 1e-12 : 0.0;
    }
    free(p);
    free(lens);
    free(all);
    return rc;
}

int cmd_bench(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL;
    cli_model_opts mo = {0};
    int n_prompt = 512, n_gen = 128, batch = 1, runs = 3, json = 0;
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "--n-prompt", .kind = CLI_INT, .dest = &n_prompt, .meta = "N",
         .help = "prompt tokens of the prefill run (default 512; 0 = no prefill run)", .min = 0, .max = 1 << 20},
        {.name = "--n-gen", .kind = CLI_INT, .dest = &n_gen, .meta = "N",
         .help = "tokens of the decode run (default 128)", .min = 2, .max = 1 << 20},
        {.name = "--batch", .kind = CLI_INT, .dest = &batch, .meta = "B",
         .help = "also B prompts generating together (default 1 = no batch run)", .min = 1, .max = 4096},
        {.name = "--runs", .kind = CLI_INT, .dest = &runs, .meta = "R",
         .help = "runs of each, the median reported (default 3)", .min = 1, .max = 99},
        {.name = "--json", .kind = CLI_FLAG, .dest = &json, .help = "print one JSON object"},
        CLI_MODEL_OPTIONS(&mo),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    infer_model *m;
    if (cli_load_model(dir, &mo, &m)) return CLI_EXIT_FAIL;
    infer_model_info info;
    infer_model_get_info(m, &info);
    if (n_prompt + 1 > info.context_len || 8 + n_gen > info.context_len) {
        infer_model_free(m);
        return cli_usage_error(self, "--n-prompt %d / --n-gen %d do not fit the context of %d", n_prompt, n_gen,
                               info.context_len);
    }
    int n_ids = n_prompt > 8 ? n_prompt : 8;
    int32_t *ids = malloc((size_t)n_ids * sizeof *ids);
    double *dec = malloc((size_t)runs * sizeof *dec), *pre = malloc((size_t)runs * sizeof *pre);
    if (!ids || !dec || !pre) {
        free(ids);
        free(dec);
        free(pre);
        infer_model_free(m);
        return cli_fail("out of memory");
    }
    bench_make_ids(ids, n_ids, info.vocab_size, 7);
    double bw = 0.0, bw2 = 0.0, batch_tok_s = 0.0, cls_s = 0.0, cls_tf = 0.0;
    infer_metrics met;
    int st = infer_measure_bandwidth(info.backend, mo.threads, &bw);
    if (!st) st = infer_reset_peak_memory(info.backend);
    if (!st) st = bench_run_once(m, ids, 8, 4, &met); /* warm-up */
    for (int r = 0; !st && r < runs; r++) {
        st = bench_run_once(m, ids, 8, n_gen, &met);
        dec[r] = met.decode_tok_s;
    }
    for (int r = 0; !st && r < runs && n_prompt > 0; r++) {
        st = bench_run_once(m, ids, n_prompt, 1, &met);
        pre[r] = met.prefill_tok_s;
    }
    /* the batch runs once untimed first: its first steps record graphs
     * and meet new product shapes */
    for (int r = 0; !st && batch > 1 && r < 2; r++)
        st = run_batch(m, n_prompt > 0 ? n_prompt : 8, n_gen, batch, &batch_tok_s, &cls_s, &cls_tf);
    if (!st) st = infer_measure_bandwidth(info.backend, mo.threads, &bw2);
    if (st) {
        free(ids);
        free(dec);
        free(pre);
        infer_model_free(m);
        return st < 0 ? cli_fail("a run stopped before its last token") : cli_library_error(st);
    }
    if (bw2 > bw) bw = bw2;
    size_t peak = infer_get_peak_memory(info.backend);
    double decode = bench_median(dec, runs), prefill = n_prompt > 0 ? bench_median(pre, runs) : 0.0;
    double mean_pos = 8.0 + (n_gen - 1) / 2.0;
    double kv = 2.0 * info.n_layers * mean_pos * info.n_kv_heads * info.head_dim * 4.0;
    double step = (double)info.decode_bytes + kv, bound = step > 0 ? bw * 1e9 / step : 0.0;
    infer_device_info dev;
    if (infer_get_device_info(info.backend, &dev)) snprintf(dev.name, sizeof dev.name, "?");
    if (json) {
        printf("{\"model\": \"%s\", \"backend\": \"%s\", \"device\": \"%s\", \"bandwidth_gb_s\": %.1f, "
               "\"decode_bytes\": %.0f, \"decode_tok_s\": %.2f, \"decode_bound_tok_s\": %.2f, \"decode_ratio\": %.4g, "
               "\"n_gen\": %d, \"prefill_tok_s\": %.1f, \"n_prompt\": %d, \"batch\": %d, \"batch_tok_s\": %.1f, "
               "\"classify_prompts_s\": %.1f, \"classify_tflop_s\": %.2f, \"peak_memory\": %zu, \"runs\": %d}\n",
               info.model_type, info.backend, dev.name, bw, step, decode, bound, bound > 0 ? decode / bound : 0.0,
               n_gen, prefill, n_prompt, batch, batch_tok_s, cls_s, cls_tf, peak, runs);
    } else {
        printf("model    %s (%s, %d layers, %s%s), %s on %s\n", dir, info.model_type, info.n_layers, info.dtype,
               info.quant_bits ? ", quantized" : "", info.backend, dev.name);
        printf("limit    %.1f GB/s %s; a decode step reads %.1f MB -> at most %.1f tok/s\n", bw,
               strcmp(info.backend, "cpu") ? "device copy (read + written)" : "streaming read", step * 1e-6, bound);
        printf("decode   %.2f tok/s (%d tokens, median of %d)   %.3f of the limit\n", decode, n_gen, runs,
               bound > 0 ? decode / bound : 0.0);
        if (n_prompt > 0) printf("prefill  %.1f tok/s (%d-token prompt, median of %d)\n", prefill, n_prompt, runs);
        if (batch > 1)
            printf("batch    %.1f generated tok/s in all (%d prompts of %d tokens, %d tokens each)\n", batch_tok_s,
                   batch, n_prompt > 0 ? n_prompt : 8, n_gen);
        if (batch > 1)
            printf("classify %.1f prompts/s (the same %d prompts; %.2f TFLOP/s of products and attention)\n", cls_s,
                   batch, cls_tf);
        printf("memory   %.1f MB peak\n", (double)peak / 1e6);
    }
    free(ids);
    free(dec);
    free(pre);
    infer_model_free(m);
    return CLI_EXIT_OK;
}
