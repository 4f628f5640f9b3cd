/* bench_decode.c - single-stream decode and prefill speed of a model folder,
 * against the memory-bandwidth limit measured in the same run.
 *
 *   build/bench/bench_decode DIR [--threads N] [--decode N] [--prompt N]
 *                            [--runs N] [--int8]
 *
 * Through the public API only (infer_model_load, infer_session_new,
 * infer_generate_ids with ignore_eos, infer_stream_metrics):
 *   decode   --decode tokens (default 128) after an 8-token prompt, greedy;
 *            the stream's decode_tok_s, median of --runs (default 3)
 *   prefill  a --prompt-token prompt (default 128) and one token; the
 *            stream's prefill_tok_s (the first token's logits included),
 *            median of --runs, each on a fresh session (no cached prefix),
 *            after one untimed prefill of the same length
 * The limit, from the same run:
 *   bandwidth  GB/s of a large streaming read (1 GiB, wide loads, split
 *              over the same number of threads; the best of 3 reads before
 *              the runs and 3 after)
 *   bytes/token  what one decode step must read: every tensor of the
 *              folder's safetensors files (quantized matrices with their
 *              scales and biases, norms, the head) except the embedding,
 *              of which one row is read; a tied head reads the whole
 *              embedding; plus the float32 KV cache at the mean position
 *              of the decoded tokens (2 x layers x position x kv_heads x
 *              head_dim x 4; the runs stay inside every sliding window)
 *   ratio      bytes/token x tok/s / bandwidth (also against the 1-thread
 *              bandwidth, the figure the llama.cpp comparison uses)
 *   paired     (cpu) each decode run against the best of two reads just
 *              before it and two just after (bandwidth on a shared host
 *              moves by a factor of two within minutes); the median of
 *              those per-run ratios.  Every read also counts towards the
 *              "best" bandwidth above.
 * --int8 loads with cpu_int8 = 1 (int8 activations for quantized weights).
 * --backend cuda runs on the GPU; the limit is then the device's copy
 * bandwidth (infer_measure_bandwidth: a 512 MiB device-to-device copy,
 * bytes read + written, the best of 10; before the runs and after).
 * Token ids are fixed pseudo-random ids: random weights decode exactly as
 * fast as real ones. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_bw.h"
#include "bench_run.h"
#include "infer.h"


/* ---- The bandwidth limit ---- */


/* The backend's own figure (infer_measure_bandwidth: a device-to-device
 * copy of 512 MiB on cuda, read + written); 0 when it cannot run it. */
static double device_copy_bw(const char *backend)
{
    double g = 0.0;
    return infer_measure_bandwidth(backend, 0, &g) ? 0.0 : g;
}

/* ---- Bytes a decode step reads ---- */

typedef struct weight_bytes {
    double total;     /* every tensor */
    double embed;     /* the embedding's weight (+ scales, biases) */
    double embed_row; /* one row of it */
    int found_embed;
} weight_bytes;

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Adds the tensors of one safetensors file (its header only). */
static int scan_file(const char *path, weight_bytes *wb)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char len8[8];
    if (fread(len8, 1, 8, f) != 8) {
        fclose(f);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n > ((uint64_t)1 << 30)) {
        fclose(f);
        return -1;
    }
    char *js = malloc((size_t)n + 1);
    if (!js || fread(js, 1, (size_t)n, f) != (size_t)n) {
        free(js);
        fclose(f);
        return -1;
    }
    fclose(f);
    js[n] = '\0';
    cJSON *root = cJSON_Parse(js);
    free(js);
    if (!root) return -1;
    for (cJSON *t = root->child; t; t = t->next) {
        if (!strcmp(t->string, "__metadata__")) continue;
        cJSON *off = cJSON_GetObjectItem(t, "data_offsets"), *shape = cJSON_GetObjectItem(t, "shape");
        if (cJSON_GetArraySize(off) != 2) continue;
        double bytes = cJSON_GetArrayItem(off, 1)->valuedouble - cJSON_GetArrayItem(off, 0)->valuedouble;
        wb->total += bytes;
        /* the embedding: model.embed_tokens.{weight,scales,biases} (any prefix) */
        const char *name = t->string;
        if (strstr(name, "embed_tokens.") &&
            (ends_with(name, ".weight") || ends_with(name, ".scales") || ends_with(name, ".biases"))) {
            wb->embed += bytes;
            double rows = cJSON_GetArraySize(shape) >= 1 ? cJSON_GetArrayItem(shape, 0)->valuedouble : 1;
            wb->embed_row += bytes / (rows > 0 ? rows : 1);
            wb->found_embed = 1;
        }
    }
    cJSON_Delete(root);
    return 0;
}

static int scan_folder(const char *dir, weight_bytes *wb)
{
    memset(wb, 0, sizeof *wb);
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".safetensors")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (scan_file(path, wb) == 0) files++;
    }
    closedir(d);
    return files > 0 && wb->found_embed ? 0 : -1;
}

/* ---- Runs ---- */


/* One generation on a fresh session; metrics into *met. */


int main(int argc, char **argv)
{
    const char *dir = NULL, *backend = "cpu";
    int threads = 0, n_decode = 128, n_prompt = 128, runs = 3, int8 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--int8")) int8 = 1;
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            dir = NULL;
            break;
        }
    }
    if (!dir || n_decode < 2 || n_prompt < 0 || runs < 1 || runs > 99 || threads < 0 || threads > 64) {
        fprintf(stderr, "usage: bench_decode DIR [--threads N] [--decode N] [--prompt N] [--runs N] [--int8] "
                        "[--backend cpu|cuda]\n");
        return 2;
    }
    infer_load_opts lo;
    infer_load_opts_default(&lo);
    lo.backend = backend;
    int gpu = strcmp(backend, "cpu") != 0;
    lo.n_threads = threads;
    lo.cpu_int8 = int8;
    lo.context_len = 4096;
    infer_model *m;
    if (infer_model_load(dir, &lo, &m)) {
        fprintf(stderr, "bench_decode: %s\n", infer_last_error());
        return 1;
    }
    infer_model_info info;
    infer_model_get_info(m, &info);
    weight_bytes wb;
    if (scan_folder(dir, &wb)) {
        fprintf(stderr, "bench_decode: %s: cannot read the safetensors headers\n", dir);
        return 1;
    }
    infer_device_info dev;
    memset(&dev, 0, sizeof dev);
    infer_get_device_info(backend, &dev);
    int nt = threads ? threads : dev.multiprocessors;
    if (nt < 1) nt = 1;
    if (nt > 64) nt = 64;

    printf("model %s: %s, %d layers, hidden %d, vocab %d, %s%s; %s", dir, info.model_type, info.n_layers,
           info.hidden_size, info.vocab_size, info.dtype, info.tied_embeddings ? ", tied" : "", backend);
    if (gpu)
        printf(" (%s)\n", dev.name);
    else
        printf(", %d threads%s\n", nt, int8 ? ", int8 activations" : "");

    /* the bandwidth limit: before the runs and after them, the best */
    size_t big = gpu ? 64 : (size_t)1 << 30;
    unsigned char *buf = malloc(big);
    if (!buf) return 1;
    memset(buf, 1, big);
    double bw1 = gpu ? device_copy_bw(backend) : bench_read_bw(buf, big, 1, 3);
    double bwn = gpu || nt == 1 ? bw1 : bench_read_bw(buf, big, nt, 3);

    /* decode: 8-token prompt, n_decode tokens */
    int32_t *ids = malloc((size_t)(n_prompt > 8 ? n_prompt : 8) * sizeof *ids);
    if (!ids) return 1;
    bench_make_ids(ids, n_prompt > 8 ? n_prompt : 8, info.vocab_size, 7);
    infer_metrics met;
    double dec[100], pre[100];
    if (bench_run_once(m, ids, 8, 4, &met)) { /* warm-up: pages of the mapping */
        fprintf(stderr, "bench_decode: %s\n", infer_last_error());
        return 1;
    }
    /* bytes of one decode step, at the mean position of the decoded tokens */
    double weights = wb.total - wb.embed + wb.embed_row + (info.tied_embeddings ? wb.embed : 0.0);
    double mean_pos = 8.0 + (n_decode - 1) / 2.0;
    double kv = 2.0 * info.n_layers * mean_pos * info.n_kv_heads * info.head_dim * 4.0;
    double per_token = weights + kv;
    /* cpu: each run also against the read bandwidth just before and just
     * after it (the best of those two reads), for a host whose bandwidth
     * moves from minute to minute */
    double paired[100];
    for (int r = 0; r < runs; r++) {
        double ba = gpu ? 0.0 : bench_read_bw(buf, big, nt, 2);
        if (bench_run_once(m, ids, 8, n_decode, &met)) {
            fprintf(stderr, "bench_decode: %s\n", infer_last_error());
            return 1;
        }
        dec[r] = met.decode_tok_s;
        double bb = gpu ? 0.0 : bench_read_bw(buf, big, nt, 2);
        if (bb > ba) ba = bb;
        paired[r] = ba > 0.0 ? dec[r] * per_token / (ba * 1e9) : 0.0;
        if (ba > bwn) bwn = ba;
    }
    /* an untimed prefill first: the first long pass pays for what is made
     * once (cuBLAS's kernels and workspace, scratch of the prompt's size) */
    for (int r = -1; r < runs && n_prompt > 0; r++) {
        if (bench_run_once(m, ids, n_prompt, 1, &met)) {
            fprintf(stderr, "bench_decode: %s\n", infer_last_error());
            return 1;
        }
        if (r >= 0) pre[r] = met.prefill_tok_s;
    }
    double decode = bench_median(dec, runs), prefill = n_prompt > 0 ? bench_median(pre, runs) : 0.0;

    double b1 = gpu ? device_copy_bw(backend) : bench_read_bw(buf, big, 1, 3);
    double bn = gpu || nt == 1 ? b1 : bench_read_bw(buf, big, nt, 3);
    if (b1 > bw1) bw1 = b1;
    if (bn > bwn) bwn = bn;
    free(buf);
    double bw = bwn > bw1 ? bwn : bw1;

    if (gpu)
        printf("limit: device copy bandwidth %.1f GB/s (512 MiB, read + written; best of 20, before and after the "
               "runs)\n",
               bw);
    else
        printf("limit: read bandwidth %.1f GB/s (1 GiB, %d threads; %.1f GB/s with 1; best of 6, before and after "
               "the runs)\n",
               bw, nt, bw1);
    printf("bytes/token: %.1f MB (weights %.1f MB of which embedding row %.3f MB%s; KV cache %.2f MB)\n",
           per_token * 1e-6, weights * 1e-6, wb.embed_row * 1e-6,
           info.tied_embeddings ? ", tied head = embedding" : "", kv * 1e-6);
    printf("decode:  %.2f tok/s (median of %d, %d tokens)   limit %.2f tok/s   ratio %.3f", decode, runs, n_decode,
           bw * 1e9 / per_token, decode * per_token / (bw * 1e9));
    if (gpu)
        printf("\n");
    else
        printf("  (%.3f of the 1-thread bandwidth)\n", decode * per_token / (bw1 * 1e9));
    if (!gpu)
        printf("paired:  ratio %.3f (median of the runs, each against the best %d-thread read just before and after "
               "it)\n",
               bench_median(paired, runs), nt);
    printf("prefill: %.1f tok/s (median of %d, %d-token prompt)\n", prefill, runs, n_prompt);
    printf("runs: decode");
    for (int r = 0; r < runs; r++) printf(" %.2f", dec[r]);
    if (n_prompt > 0) {
        printf("; prefill");
        for (int r = 0; r < runs; r++) printf(" %.1f", pre[r]);
    }
    printf("\n");
    free(ids);
    infer_model_free(m);
    return 0;
}
