/* model.c - the public model calls: load, free, info, logits. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "model/model.h"

void infer_load_opts_default(infer_load_opts *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->gpu_layers = -1;
    opts->parallel_slots = 1;
}

static int pick_backend(const char *name, const backend_ops **out)
{
    *out = NULL;
    if (name && *name) {
        const backend_ops *b = backend_find(name);
        if (!b) return infer_err(INFER_ERR_BACKEND, "backend '%s' is not compiled into this library", name);
        if (!b->available()) return infer_err(INFER_ERR_BACKEND, "backend '%s' is not available on this machine", name);
        *out = b;
        return INFER_OK;
    }
    for (int i = 0; i < backend_count(); i++) {
        const backend_ops *b = backend_at(i);
        if (b->available()) {
            *out = b;
            return INFER_OK;
        }
    }
    return infer_err(INFER_ERR_BACKEND, "no backend is available");
}

static int upload_freqs(infer_model *m, const rope_config *rc, void **dst)
{
    const model_config *c = &m->cfg;
    size_t n = (size_t)c->head_dim / 2;
    float *f = malloc(n * sizeof *f);
    if (!f) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", m->path);
    rope_inv_freq(rc, c->head_dim, c->max_position_embeddings, 0, f);
    int rc2 = m->be->alloc(m->bctx, n * sizeof *f, dst);
    if (!rc2) rc2 = m->be->upload(m->bctx, *dst, f, n * sizeof *f);
    free(f);
    return rc2 ? infer_err_prefix(rc2, "%s: RoPE tables", m->path) : INFER_OK;
}

/* The model's own context: max_position_embeddings, which dynamic RoPE
 * scaling stretches by its factor (that is what it is for). */
static int default_context(const model_config *c)
{
    double n = c->max_position_embeddings;
    if (c->rope_global.kind == ROPE_DYNAMIC && c->rope_global.factor > 1.0) n *= c->rope_global.factor;
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* The folder's tokenizer when it has a tokenizer.json (a model can run on
 * token ids alone). */
static int load_tokenizer(infer_model *m)
{
    size_t n = strlen(m->path) + sizeof "/tokenizer.json";
    char *p = malloc(n);
    if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", m->path);
    snprintf(p, n, "%s/tokenizer.json", m->path);
    struct stat st;
    int have = stat(p, &st) == 0;
    free(p);
    return have ? infer_tokenizer_load(m->path, &m->tok) : INFER_OK;
}

static int check_opts(const infer_load_opts *o)
{
    if (o->context_len < 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "load options: context_len %d is negative", o->context_len);
    if (o->n_threads < 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "load options: n_threads %d is negative", o->n_threads);
    if (o->gpu_layers < -1)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "load options: gpu_layers %d (use -1 for all)", o->gpu_layers);
    if (o->parallel_slots < 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "load options: parallel_slots %d is negative",
                         o->parallel_slots);
    if (o->cpu_int8 != 0 && o->cpu_int8 != 1)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "load options: cpu_int8 %d (use 0 or 1)", o->cpu_int8);
    return INFER_OK;
}

int infer_model_load(const char *path, const infer_load_opts *opts, infer_model **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_model_load: out is NULL");
    *out = NULL;
    if (!path || !*path) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_model_load: path is empty");
    infer_load_opts o;
    if (opts)
        o = *opts;
    else
        infer_load_opts_default(&o);
    int rc = check_opts(&o);
    if (rc) return rc;
    struct stat st;
    if (stat(path, &st) != 0)
        return infer_err(errno == ENOENT ? INFER_ERR_MISSING : INFER_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: not a folder (expected a model folder with config.json)",
                         path);
    infer_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    if ((rc = pick_backend(o.backend, &m->be)) || (rc = config_load(path, &m->cfg)) ||
        (rc = st_open_dir(path, &m->weights_file)))
        goto fail;
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto fail;
    }
    if ((rc = model_bind_weights(m))) goto fail;
    bk_opts bo = {.n_threads = o.n_threads, .cpu_int8 = o.cpu_int8};
    if ((rc = m->be->create(&bo, &m->bctx)) || (rc = model_weights_prepare(m)) ||
        (rc = upload_freqs(m, &m->cfg.rope_global, &m->inv_freq_global)) ||
        (rc = upload_freqs(m, &m->cfg.rope_local, &m->inv_freq_local)))
        goto fail;
    m->context_len = o.context_len ? o.context_len : default_context(&m->cfg);
    m->parallel_slots = o.parallel_slots;
    if ((rc = gen_config_load(path, &m->gen)) || (rc = load_tokenizer(m))) goto fail;
    if (o.adapter_path && ((rc = infer_lora_load(m, o.adapter_path, &m->own_lora)) ||
                           (rc = infer_model_use_lora(m, m->own_lora))))
        goto fail;
    *out = m;
    return INFER_OK;
fail:
    infer_model_free(m);
    return rc;
}

void infer_model_free(infer_model *m)
{
    if (!m) return;
    infer_lora_free(m->own_lora);
    if (m->bctx) {
        model_weights_release(m);
        m->be->free(m->bctx, m->inv_freq_global);
        m->be->free(m->bctx, m->inv_freq_local);
        m->be->destroy(m->bctx);
    }
    infer_tokenizer_free(m->tok);
    free(m->layers);
    st_close(m->weights_file);
    config_free(&m->cfg);
    free(m->path);
    free(m);
}

int infer_model_get_info(const infer_model *m, infer_model_info *out)
{
    if (!m || !out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_model_get_info: NULL argument");
    const model_config *c = &m->cfg;
    memset(out, 0, sizeof *out);
    snprintf(out->architecture, sizeof out->architecture, "%s", c->architecture);
    snprintf(out->model_type, sizeof out->model_type, "%s", c->model_type);
    snprintf(out->backend, sizeof out->backend, "%s", m->be->name);
    snprintf(out->dtype, sizeof out->dtype, "%s", m->dtype);
    out->vocab_size = c->vocab_size;
    out->n_layers = c->n_layers;
    out->hidden_size = c->hidden_size;
    out->intermediate_size = c->intermediate_size;
    out->n_heads = c->n_heads;
    out->n_kv_heads = c->n_kv_heads;
    out->head_dim = c->head_dim;
    out->context_len = m->context_len;
    out->max_position_embeddings = c->max_position_embeddings;
    out->sliding_window = c->sliding_window;
    out->tied_embeddings = c->tie_word_embeddings;
    out->n_params = m->n_params;
    out->quant_bits = c->quant_bits;
    out->quant_group_size = c->quant_group_size;
    out->weight_bytes = m->weight_bytes;
    out->decode_bytes = m->decode_bytes;
    return INFER_OK;
}

int infer_model_logits(infer_model *m, const int32_t *ids, size_t n_ids, float *out)
{
    if (!m || (!ids && n_ids) || (!out && n_ids))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_model_logits: NULL argument");
    if (n_ids == 0) return INFER_OK;
    if (n_ids > (size_t)m->context_len)
        return infer_err(INFER_ERR_OUT_OF_RANGE, "%s: %zu tokens exceed the context length %d", m->path,
                         n_ids, m->context_len);
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return infer_err(INFER_ERR_OUT_OF_RANGE,
                             "token id %d at position %zu is outside the vocabulary [0, %d)", ids[i], i,
                             m->cfg.vocab_size);
    return model_forward_logits(m, ids, (int)n_ids, out);
}

const infer_tokenizer *infer_model_tokenizer(const infer_model *m) { return m ? m->tok : NULL; }
