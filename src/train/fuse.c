/* fuse.c - an adapter merged into its model's weights, written as a new
 * model folder: W' = W + scale B A for each adapted module (in float32,
 * then rounded to W's dtype), every other tensor copied as it is, the
 * config, tokenizer and template files copied.  The weights go to one
 * model.safetensors.  An MLX-quantized module is fused as mlx-lm's fuse
 * does it: W dequantized, W + scale B A rounded to the scales' dtype, and
 * quantized again with the module's bits and group size (MLX's rule,
 * quant.h), so the folder keeps its quantization config; every weight of
 * an adapted module moves to the nearest step of its group's new grid.
 * For a float model, fuse into a dequantized copy (infer quantize
 * --dequantize; `infer fuse --dequantize` makes one). */
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
#include "model/quant.h"
#include "train/lora.h"

enum { PART_W, PART_SCALES, PART_BIASES };

typedef struct fuse_job {
    const infer_lora *l;
    const st_set *st;
    const lora_mod **mod; /* [tensors]: the module a tensor is the weight (or the scales or
                             biases, of a quantized one) of, or NULL */
    unsigned char *part;  /* [tensors]: PART_* */
    const st_tensor *(*src)[3]; /* [module]: its weight, scales and biases in the file */
    float *ha;            /* the adapter's parameters on the host */
    const lora_mod *cur;  /* the module in buf */
    void *buf[3];         /* its fused bytes: the weight, and a quantized one's scales and biases */
} fuse_job;

/* The adapted module a tensor name belongs to (its weight, or a quantized
 * one's scales or biases: *part), or NULL. */
static const lora_mod *module_of(const infer_lora *l, const char *name, unsigned char *part)
{
    static const char *const suffix[3] = {".weight", ".scales", ".biases"};
    for (int p = 0; p < 3; p++) {
        int li, k;
        if (!lora_module_name(name, suffix[p], &li, &k) || li >= l->m->cfg.n_layers) continue;
        const lora_mod *md = lora_at(l, li, k);
        if (!md || (p && lora_base(l->m, li, k, NULL)->dtype != DT_U32)) return NULL;
        *part = (unsigned char)p;
        return md;
    }
    return NULL;
}

/* Module md's fused tensors into j->buf: W + scale B A row by row, in the
 * weight's dtype; for a quantized W the whole matrix in the scales' dtype
 * (as mlx-lm adds in it), then quantized again. */
static int fuse_module(fuse_job *j, const lora_mod *md)
{
    const bk_weight *w = lora_base(j->l->m, md->layer, md->kind, NULL);
    const st_tensor *const *src = j->src[md - j->l->mods];
    const int quant = w->dtype == DT_U32, r = j->l->rank;
    const size_t in = (size_t)md->in, out = (size_t)md->out;
    const infer_dtype ft = quant ? src[PART_SCALES]->dtype : src[PART_W]->dtype; /* the fused values' dtype */
    const size_t fs = dtype_size(ft), groups = quant ? out * (in / (size_t)w->group_size) : 0;
    float *row = malloc(in * sizeof *row);
    unsigned char *fused = malloc(out * in * fs);
    void *packed = quant ? malloc(out * in * (size_t)w->bits / 8) : NULL;
    void *sc = quant ? malloc(groups * fs) : NULL, *bi = quant ? malloc(groups * fs) : NULL;
    if (!row || !fused || (quant && (!packed || !sc || !bi))) {
        free(row);
        free(fused);
        free(packed);
        free(sc);
        free(bi);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "fuse: out of memory for layer %d %s", md->layer,
                         lora_mod_name[md->kind]);
    }
    const float *A = j->ha + md->a_off, *B = j->ha + md->b_off;
    for (size_t o = 0; o < out; o++) {
        if (quant)
            quant_dequant_rows(src[PART_W]->data, (int64_t)o, 1, (int64_t)in, w->bits, w->group_size,
                               src[PART_SCALES]->data, src[PART_BIASES]->data, ft, row);
        else
            dtype_to_f32(row, src[PART_W]->data + o * in * fs, ft, in);
        for (int k = 0; k < r; k++) {
            float b = j->l->scale * B[o * (size_t)r + (size_t)k];
            const float *a = A + (size_t)k * in;
            for (size_t c = 0; c < in; c++) row[c] += b * a[c];
        }
        dtype_from_f32(fused + o * in * fs, row, ft, in);
    }
    free(row);
    int rc = INFER_OK;
    if (quant) {
        rc = quant_matrix(fused, ft, (int64_t)out, (int64_t)in, w->bits, w->group_size, packed, sc, bi, ft);
        free(fused);
        fused = packed;
    }
    for (int p = 0; p < 3; p++) free(j->buf[p]);
    j->buf[PART_W] = fused;
    j->buf[PART_SCALES] = sc;
    j->buf[PART_BIASES] = bi;
    j->cur = md;
    if (rc) {
        j->cur = NULL;
        return infer_err_prefix(rc, "fuse: layer %d %s", md->layer, lora_mod_name[md->kind]);
    }
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
    if (j->cur != j->mod[i]) {
        int rc = fuse_module(j, j->mod[i]);
        if (rc) return rc;
    }
    memcpy(buf, (const char *)j->buf[j->part[i]] + offset, n);
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
        const int quant = w->dtype == DT_U32;
        const infer_dtype ft = quant ? w->sdtype : w->dtype;
        if (ft != DT_BF16 && ft != DT_F16 && ft != DT_F32)
            return infer_err(INFER_ERR_UNSUPPORTED, "%s: layer %d %s: cannot fuse into %s weights", m->path, md->layer,
                             lora_mod_name[md->kind], dtype_name(ft));
    }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return infer_err(INFER_ERR_IO, "%s: cannot create: %s", out_dir, strerror(errno));
    fuse_job j = {.l = l, .st = st};
    j.mod = calloc(n ? n : 1, sizeof *j.mod);
    j.part = calloc(n ? n : 1, 1);
    j.src = calloc((size_t)(l->n_mods ? l->n_mods : 1), sizeof *j.src);
    st_out *t = calloc(n ? n : 1, sizeof *t);
    j.ha = malloc(l->n_params * sizeof *j.ha);
    int rc = j.mod && j.part && j.src && t && j.ha ? INFER_OK : infer_err(INFER_ERR_OUT_OF_MEMORY, "fuse: out of memory");
    if (!rc) rc = m->be->download(m->bctx, j.ha, l->params, l->n_params * 4);
    int found = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const st_tensor *s = st_get(st, i);
        j.mod[i] = module_of(l, s->name, &j.part[i]);
        if (j.mod[i]) {
            j.src[j.mod[i] - l->mods][j.part[i]] = s;
            found += j.part[i] == PART_W;
        }
        t[i] = (st_out){.name = s->name, .dtype = s->dtype, .ndim = s->ndim};
        for (int d = 0; d < s->ndim; d++) t[i].shape[d] = s->shape[d];
    }
    if (!rc && found != l->n_mods)
        rc = infer_err(INFER_ERR_MISSING, "%s: found %d of the adapter's %d modules among the weights", m->path, found,
                       l->n_mods);
    for (int i = 0; !rc && i < l->n_mods; i++) { /* shapes as the model has them */
        const lora_mod *md = &l->mods[i];
        const bk_weight *w = lora_base(m, md->layer, md->kind, NULL);
        const st_tensor *const *src = j.src[i];
        const int quant = w->dtype == DT_U32;
        const size_t groups = quant ? (size_t)md->out * (size_t)(md->in / w->group_size) : 0;
        const size_t want = quant ? (size_t)md->out * (size_t)md->in * (size_t)w->bits / 8
                                  : (size_t)md->out * (size_t)md->in * dtype_size(w->dtype);
        if (src[PART_W]->nbytes != want || (quant && (!src[PART_SCALES] || !src[PART_BIASES] ||
                                                      src[PART_SCALES]->nbytes != groups * dtype_size(w->sdtype) ||
                                                      src[PART_BIASES]->nbytes != groups * dtype_size(w->sdtype) ||
                                                      src[PART_BIASES]->dtype != w->sdtype)))
            rc = infer_err(INFER_ERR_FORMAT, "%s: %s: not the %zu bytes (with its scales and biases) layer %d %s needs",
                           m->path, src[PART_W]->name, want, md->layer, lora_mod_name[md->kind]);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    const char *meta[] = {"format", "pt", NULL};
    if (!rc) rc = st_write_file(path, t, n, meta, fuse_fill, &j);
    free(j.mod);
    free(j.part);
    free(j.src);
    free(t);
    free(j.ha);
    for (int p = 0; p < 3; p++) free(j.buf[p]);
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
