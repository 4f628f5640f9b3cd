/* fuse.c - an adapter merged into its model's weights, written as a new
 * model folder: W' = W + scale B A for each adapted module (in float32,
 * then rounded to W's dtype), every other tensor copied as it is, the
 * config, tokenizer and template files copied.  The weights go to one
 * model.safetensors.  MLX-quantized modules are not fused (quantizing
 * W + scale B A again would change every weight of the group): fuse into
 * a dequantized copy (infer quantize --dequantize) and quantize that. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "io/st_write.h"
#include "train/lora.h"

typedef struct fuse_job {
    const infer_lora *l;
    const st_set *st;
    const lora_mod **mod; /* [tensors]: the module a tensor is the weight of, or NULL */
    float *ha;            /* the adapter's parameters on the host */
    size_t cur;           /* the tensor in buf */
    void *buf;            /* its fused bytes */
} fuse_job;

/* The adapted module whose weight tensor name is, or NULL. */
static const lora_mod *module_of(const infer_lora *l, const char *name)
{
    int li, k;
    if (!lora_module_name(name, ".weight", &li, &k) || li >= l->m->cfg.n_layers) return NULL;
    return lora_at(l, li, k);
}

static int fuse_tensor(fuse_job *j, size_t i)
{
    const st_tensor *t = st_get(j->st, i);
    const lora_mod *md = j->mod[i];
    const int r = j->l->rank;
    const size_t in = (size_t)md->in, out = (size_t)md->out, es = dtype_size(t->dtype);
    float *row = malloc(in * sizeof *row);
    void *buf = malloc(t->nbytes);
    if (!row || !buf) {
        free(row);
        free(buf);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "fuse: out of memory for %s", t->name);
    }
    const float *A = j->ha + md->a_off, *B = j->ha + md->b_off;
    for (size_t o = 0; o < out; o++) {
        dtype_to_f32(row, t->data + o * in * es, t->dtype, in);
        for (int k = 0; k < r; k++) {
            float b = j->l->scale * B[o * (size_t)r + (size_t)k];
            const float *a = A + (size_t)k * in;
            for (size_t c = 0; c < in; c++) row[c] += b * a[c];
        }
        unsigned char *dst = (unsigned char *)buf + o * in * es;
        for (size_t c = 0; c < in; c++) {
            if (t->dtype == DT_F32)
                memcpy(dst + c * 4, &row[c], 4);
            else {
                uint16_t h = t->dtype == DT_BF16 ? f32_to_bf16(row[c]) : f32_to_f16(row[c]);
                memcpy(dst + c * 2, &h, 2);
            }
        }
    }
    free(row);
    free(j->buf);
    j->buf = buf;
    j->cur = i;
    return INFER_OK;
}

static int fuse_fill(void *arg, size_t i, size_t offset, void *buf, size_t n)
{
    fuse_job *j = arg;
    const st_tensor *t = st_get(j->st, i);
    if (!j->mod[i]) {
        memcpy(buf, t->data + offset, n);
        return INFER_OK;
    }
    if (j->cur != i || !j->buf) {
        int rc = fuse_tensor(j, i);
        if (rc) return rc;
    }
    memcpy(buf, (const char *)j->buf + offset, n);
    return INFER_OK;
}

int infer_lora_fuse(const infer_lora *l, const char *out_dir)
{
    if (!l || !out_dir) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_fuse: NULL argument");
    const infer_model *m = l->m;
    const st_set *st = m->weights_file;
    const size_t n = st_count(st);
    for (int i = 0; i < l->n_mods; i++) {
        const lora_mod *md = &l->mods[i];
        const bk_weight *w = lora_base(m, md->layer, md->kind, NULL);
        if (w->dtype != DT_BF16 && w->dtype != DT_F16 && w->dtype != DT_F32)
            return infer_err(INFER_ERR_UNSUPPORTED,
                             "%s: layer %d %s is %s: fuse into a dequantized copy (infer quantize --dequantize), "
                             "then quantize the result",
                             m->path, md->layer, lora_mod_name[md->kind], dtype_name(w->dtype));
    }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return infer_err(INFER_ERR_IO, "%s: cannot create: %s", out_dir, strerror(errno));
    fuse_job j = {.l = l, .st = st, .cur = (size_t)-1};
    j.mod = calloc(n ? n : 1, sizeof *j.mod);
    st_out *t = calloc(n ? n : 1, sizeof *t);
    j.ha = malloc(l->n_params * sizeof *j.ha);
    int rc = j.mod && t && j.ha ? INFER_OK : infer_err(INFER_ERR_OUT_OF_MEMORY, "fuse: out of memory");
    if (!rc) rc = m->be->download(m->bctx, j.ha, l->params, l->n_params * 4);
    int found = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const st_tensor *s = st_get(st, i);
        j.mod[i] = module_of(l, s->name);
        found += j.mod[i] != NULL;
        t[i] = (st_out){.name = s->name, .dtype = s->dtype, .ndim = s->ndim};
        for (int d = 0; d < s->ndim; d++) t[i].shape[d] = s->shape[d];
    }
    if (!rc && found != l->n_mods)
        rc = infer_err(INFER_ERR_MISSING, "%s: found %d of the adapter's %d modules among the weights", m->path, found,
                       l->n_mods);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    const char *meta[] = {"format", "pt", NULL};
    if (!rc) rc = st_write_file(path, t, n, meta, fuse_fill, &j);
    free(j.mod);
    free(t);
    free(j.ha);
    free(j.buf);
    const char *cfg[] = {"config.json", NULL};
    for (int pass = 0; pass < 2 && !rc; pass++) {
        const char *const *names = pass ? io_side_files : cfg;
        for (size_t i = 0; names[i] && !rc; i++) {
            char src[4096], dst[4096];
            snprintf(src, sizeof src, "%s/%s", m->path, names[i]);
            snprintf(dst, sizeof dst, "%s/%s", out_dir, names[i]);
            rc = io_copy_file(src, dst, NULL);
        }
    }
    return rc;
}
