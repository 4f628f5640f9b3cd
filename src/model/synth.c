/* synth.c - writes model folders with random weights (see synth.h). */
#include "model/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/st_write.h"
#include "model/model.h"

static const synth_spec presets[] = {
    {"gemma3-1b", "gemma3_text", 1152, 6912, 26, 4, 1, 256, 262144, 1,
     "\"sliding_window\": 512, \"sliding_window_pattern\": 6, \"query_pre_attn_scalar\": 256, "
     "\"rope_theta\": 1000000, \"rope_local_base_freq\": 10000, \"max_position_embeddings\": 32768"},
    {"gemma3-4b", "gemma3_text", 2560, 10240, 34, 8, 4, 256, 262208, 1,
     "\"sliding_window\": 1024, \"sliding_window_pattern\": 6, \"query_pre_attn_scalar\": 256, "
     "\"rope_theta\": 1000000, \"rope_local_base_freq\": 10000, \"max_position_embeddings\": 131072, "
     "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}"},
    {"qwen3-0.6b", "qwen3", 1024, 3072, 28, 16, 8, 128, 151936, 1,
     "\"rope_theta\": 1000000, \"max_position_embeddings\": 40960"},
    {"qwen3-8b", "qwen3", 4096, 12288, 36, 32, 8, 128, 151936, 0,
     "\"rope_theta\": 1000000, \"max_position_embeddings\": 40960"},
    {"llama3.2-1b", "llama", 2048, 8192, 16, 32, 8, 64, 128256, 1,
     "\"rope_theta\": 500000, \"max_position_embeddings\": 131072, \"rope_scaling\": "
     "{\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
     "\"original_max_position_embeddings\": 8192}"},
    {"llama3.1-8b", "llama", 4096, 14336, 32, 32, 8, 128, 128256, 0,
     "\"rope_theta\": 500000, \"max_position_embeddings\": 131072, \"rope_scaling\": "
     "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
     "\"original_max_position_embeddings\": 8192}"},
};

const synth_spec *synth_preset_at(int i)
{
    return i >= 0 && i < (int)(sizeof presets / sizeof presets[0]) ? &presets[i] : NULL;
}

const synth_spec *synth_preset(const char *name)
{
    for (int i = 0; synth_preset_at(i); i++)
        if (name && strcmp(presets[i].name, name) == 0) return &presets[i];
    return NULL;
}

static char *config_text(const synth_spec *s, infer_dtype dtype)
{
    const char *dt = dtype == DT_BF16 ? "bfloat16" : dtype == DT_F16 ? "float16" : "float32";
    size_t cap = 1024 + (s->extra ? strlen(s->extra) : 0);
    char *buf = malloc(cap);
    if (!buf) return NULL;
    snprintf(buf, cap,
             "{\"model_type\": \"%s\", \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
             "\"head_dim\": %d, \"vocab_size\": %d, \"tie_word_embeddings\": %s, \"torch_dtype\": \"%s\"%s%s}\n",
             s->model_type, s->hidden, s->intermediate, s->layers, s->heads, s->kv_heads, s->head_dim,
             s->vocab, s->tied ? "true" : "false", dt, s->extra ? ", " : "", s->extra ? s->extra : "");
    return buf;
}

typedef struct collect {
    st_out *t;
    char **names;
    float *scale;  /* per tensor: half-width of the uniform draw */
    float *center; /* per tensor: its centre (norm weights) */
    size_t n, cap;
    infer_dtype dtype;
    int gemma_norm;
} collect;

static int collect_add(collect *c, const char *name, int64_t rows, int64_t cols)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        st_out *t = realloc(c->t, cap * sizeof *t);
        if (t) c->t = t;
        char **nm = realloc(c->names, cap * sizeof *nm);
        if (nm) c->names = nm;
        float *sc = realloc(c->scale, cap * sizeof *sc);
        if (sc) c->scale = sc;
        float *ce = realloc(c->center, cap * sizeof *ce);
        if (ce) c->center = ce;
        if (!t || !nm || !sc || !ce) return infer_err(INFER_ERR_OUT_OF_MEMORY, "synth: out of memory");
        c->cap = cap;
    }
    size_t len = strlen(name) + 8;
    char *nm = malloc(len);
    if (!nm) return infer_err(INFER_ERR_OUT_OF_MEMORY, "synth: out of memory");
    snprintf(nm, len, "%s", name);
    int is_norm = strstr(name, "norm") != NULL;
    int is_bias = strstr(name, ".bias") != NULL;
    c->names[c->n] = nm;
    c->scale[c->n] = cols ? (float)(1.0 / sqrt((double)cols)) : (is_norm ? 0.1f : 0.02f);
    c->center[c->n] = is_norm && !c->gemma_norm ? 1.0f : 0.0f;
    (void)is_bias;
    st_out *t = &c->t[c->n];
    memset(t, 0, sizeof *t);
    t->name = nm;
    t->dtype = c->dtype;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    c->n++;
    return INFER_OK;
}

static int collect_visit(void *arg, const char *suffix, bk_weight *slot, int64_t rows, int64_t cols)
{
    char name[160];
    snprintf(name, sizeof name, "model.%s", suffix);
    return collect_add(arg, name, rows, cols);
}

typedef struct fill_state {
    collect *c;
    uint64_t seed;
} fill_state;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform values, a pure function of (seed, tensor, element). */
static int fill_random(void *arg, size_t i, size_t offset, void *buf, size_t n)
{
    fill_state *f = arg;
    const collect *c = f->c;
    size_t es = dtype_size(c->dtype);
    size_t first = offset / es, count = n / es;
    unsigned char *out = buf;
    for (size_t k = 0; k < count; k++) {
        uint64_t r = mix(f->seed ^ mix(i + 1) ^ (first + k) * 0x9e3779b97f4a7c15ull);
        float u = (float)((r >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        float v = c->center[i] + u * c->scale[i];
        dtype_from_f32(out + es * k, &v, c->dtype, 1);
    }
    return 0;
}

int synth_write_model(const char *dir, const synth_spec *s, infer_dtype dtype, uint64_t seed)
{
    char path[4096];
    char *cfg_text = config_text(s, dtype);
    if (!cfg_text) return infer_err(INFER_ERR_OUT_OF_MEMORY, "synth: out of memory");
    infer_model m;
    memset(&m, 0, sizeof m);
    collect c = {.dtype = dtype};
    fill_state fs = {&c, seed};
    int rc = config_parse(cfg_text, strlen(cfg_text), "synth config.json", &m.cfg);
    if (rc) goto done;
    c.gemma_norm = m.cfg.norm_plus_one;
    m.layers = calloc((size_t)m.cfg.n_layers, sizeof *m.layers);
    if (!m.layers) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "synth: out of memory");
        goto done;
    }
    if ((rc = model_visit_weights(&m, collect_visit, &c))) goto done;
    if (!m.cfg.tie_word_embeddings &&
        (rc = collect_add(&c, "lm_head.weight", m.cfg.vocab_size, m.cfg.hidden_size)))
        goto done;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(cfg_text, f) == EOF) {
        if (f) fclose(f);
        rc = infer_err(INFER_ERR_IO, "%s: cannot write", path);
        goto done;
    }
    if (fclose(f) != 0) {
        rc = infer_err(INFER_ERR_IO, "%s: cannot write", path);
        goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static const char *const md[] = {"format", "pt", NULL};
    rc = st_write_file(path, c.t, c.n, md, fill_random, &fs);
done:
    for (size_t i = 0; i < c.n; i++) free(c.names[i]);
    free(c.t);
    free(c.names);
    free(c.scale);
    free(c.center);
    free(m.layers);
    config_free(&m.cfg);
    free(cfg_text);
    return rc;
}
