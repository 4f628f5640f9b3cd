/* quantize_dir.c - infer_quantize: a model folder to MLX's quantized
 * format (what mlx-lm's convert -q writes), and back (convert -d).
 *
 * The plan comes first: every output tensor, its dtype and shape, checked
 * before anything is written.  Then the shards are written one by one by
 * st_write_file, whose fill callback makes the bytes of one tensor at a
 * time: a quantized module is quantized whole when its first tensor is
 * asked for (one matrix in memory at most), a dequantized one row by row;
 * tensors that are copied go straight from the mapped input.
 *
 * Where this differs from mlx-lm's convert: float tensors keep their
 * stored dtype (mlx-lm first casts them to config.json's torch_dtype, the
 * same for every published bf16 checkpoint), config.json keeps
 * vision_config and the vision tensors are copied (mlx-lm drops them), and
 * the JSON is printed by cJSON (keys sorted as mlx-lm sorts them). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/config.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "io/st_write.h"
#include "model/model.h"
#include "model/quant.h"

#define DEFAULT_SHARD_BYTES ((int64_t)5 << 30) /* mlx-lm's MAX_FILE_SIZE_GB */

typedef enum out_kind { OUT_COPY, OUT_QWEIGHT, OUT_QSCALES, OUT_QBIASES, OUT_DEQUANT } out_kind;

/* A module being quantized (w float) or dequantized (w packed). */
typedef struct qmod {
    const st_tensor *w, *scales, *biases; /* scales, biases: dequantize only */
    int64_t rows, cols;
    int bits, group_size;
    infer_dtype sdtype;  /* of scales and biases */
    infer_dtype odtype;  /* dequantize: of the weight written */
} qmod;

typedef struct out_tensor {
    st_out desc;         /* desc.name points to name */
    char *name;
    out_kind kind;
    int mod;             /* index in qjob.mods, or -1 */
    int64_t params;      /* counted in the index's total_parameters */
} out_tensor;

typedef struct qjob {
    const char *in, *out;
    infer_quant_opts o;
    model_config cfg;
    st_set *set;
    char **mats;         /* quantize: names of the model's matrices */
    size_t n_mats;
    qmod *mods;
    int n_mods;
    out_tensor *outs;
    size_t n_outs;
    /* quantize: the module quantized last */
    int cached;
    uint8_t *packed;
    void *scales, *biases;
    /* dequantize: the row made last */
    int row_mod;
    int64_t row_idx;
    float *rowf;
    unsigned char *rowb;
    size_t row_cap;      /* floats in rowf */
    /* a failure inside the fill callback (st_write_file replaces the message) */
    int fill_rc;
    char fill_msg[512];
    /* what this call wrote, removed again on failure */
    char **files;
    int n_files;
    int made_dir;
} qjob;

void infer_quant_opts_default(infer_quant_opts *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->bits = 4;
    opts->group_size = 64;
}

static int is_float(infer_dtype t) { return t == DT_F32 || t == DT_F16 || t == DT_BF16; }

static int oom(const qjob *j) { return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", j->in); }

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* ---- the plan ------------------------------------------------------ */

static int add_out(qjob *j, const char *name, infer_dtype dtype, int64_t rows, int64_t cols, out_kind kind,
                   int mod, const void *data, int64_t params)
{
    out_tensor *t = &j->outs[j->n_outs];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return oom(j);
    j->n_outs++;
    t->desc.name = t->name;
    t->desc.dtype = dtype;
    t->desc.ndim = 2;
    t->desc.shape[0] = rows;
    t->desc.shape[1] = cols;
    t->desc.data = data;
    t->kind = kind;
    t->mod = mod;
    t->params = params;
    return INFER_OK;
}

static int add_copy(qjob *j, const st_tensor *t)
{
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
    int rc = add_out(j, t->name, t->dtype, 0, 0, OUT_COPY, -1, t->data, numel);
    if (rc) return rc;
    st_out *o = &j->outs[j->n_outs - 1].desc;
    o->ndim = t->ndim;
    memcpy(o->shape, t->shape, sizeof t->shape);
    return INFER_OK;
}

static int collect_mat(void *arg, const char *name)
{
    qjob *j = arg;
    char **grown = realloc(j->mats, (j->n_mats + 1) * sizeof *grown);
    if (!grown) return oom(j);
    j->mats = grown;
    if (!(j->mats[j->n_mats] = strdup(name))) return oom(j);
    j->n_mats++;
    return INFER_OK;
}

static int is_mat(const qjob *j, const char *name)
{
    for (size_t i = 0; i < j->n_mats; i++)
        if (!strcmp(j->mats[i], name)) return 1;
    return 0;
}

/* Quantize: the model's matrices whose input dimension is a multiple of
 * the group size (mlx-lm skips the others), every other tensor copied. */
static int plan_quantize(qjob *j)
{
    if (j->cfg.quant_bits)
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "%s: the model is already quantized (config.json: %d bits, groups of %d); "
                         "dequantize it first",
                         j->in, j->cfg.quant_bits, j->cfg.quant_group_size);
    int rc = model_matrix_names(&j->cfg, j->set, j->in, collect_mat, j);
    if (rc) return rc;
    size_t n = st_count(j->set);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_get(j->set, i);
        if (t->dtype == DT_U32 && ends_with(t->name, ".weight"))
            return infer_err(INFER_ERR_INVALID_ARGUMENT,
                             "%s: tensor '%s' is U32: the model is already quantized", j->in, t->name);
    }
    int G = j->o.group_size, B = j->o.bits;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_get(j->set, i);
        if (!(is_mat(j, t->name) && t->ndim == 2 && is_float(t->dtype) && t->shape[1] % G == 0)) {
            if ((rc = add_copy(j, t))) return rc;
            continue;
        }
        qmod *m = &j->mods[j->n_mods];
        memset(m, 0, sizeof *m);
        m->w = t;
        m->rows = t->shape[0];
        m->cols = t->shape[1];
        m->bits = B;
        m->group_size = G;
        m->sdtype = t->dtype;
        int mi = j->n_mods++;
        char name[320];
        size_t base = strlen(t->name) - strlen(".weight");
        snprintf(name, sizeof name, "%.*s.scales", (int)base, t->name);
        if ((rc = add_out(j, t->name, DT_U32, m->rows, m->cols * B / 32, OUT_QWEIGHT, mi, NULL, m->rows * m->cols)) ||
            (rc = add_out(j, name, m->sdtype, m->rows, m->cols / G, OUT_QSCALES, mi, NULL, 0)))
            return rc;
        snprintf(name, sizeof name, "%.*s.biases", (int)base, t->name);
        if ((rc = add_out(j, name, m->sdtype, m->rows, m->cols / G, OUT_QBIASES, mi, NULL, 0))) return rc;
    }
    return INFER_OK;
}

static int parse_dtype(const char *s, infer_dtype *out)
{
    if (!strcmp(s, "bfloat16")) *out = DT_BF16;
    else if (!strcmp(s, "float16")) *out = DT_F16;
    else if (!strcmp(s, "float32")) *out = DT_F32;
    else return -1;
    return 0;
}

/* The scales or biases of a quantized module, checked. */
static int find_qparam(qjob *j, const char *module, const char *kind, const qmod *m, const st_tensor **out)
{
    char name[320];
    snprintf(name, sizeof name, "%s.%s", module, kind);
    const st_tensor *t = st_find(j->set, name);
    if (!t)
        return infer_err(INFER_ERR_MISSING, "%s: tensor '%s' is missing (the %d-bit weight '%s.weight' needs it)",
                         j->in, name, m->bits, module);
    int64_t groups = m->cols / m->group_size;
    if (!is_float(t->dtype) || t->ndim != 2 || t->shape[0] != m->rows || t->shape[1] != groups)
        return infer_err(INFER_ERR_SHAPE,
                         "%s: tensor '%s': expected float [%lld, %lld] to go with '%s.weight' (%d bits, groups of "
                         "%d), found %s with %d dims [%lld, %lld]",
                         j->in, name, (long long)m->rows, (long long)groups, module, m->bits, m->group_size,
                         dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
                         (long long)(t->ndim > 1 ? t->shape[1] : 0));
    *out = t;
    return INFER_OK;
}

/* One packed weight of a quantized folder: its module's settings (mlx-lm's
 * rule, as the loader applies it) and its shapes. */
static int plan_dequant_module(qjob *j, const st_tensor *t, infer_dtype forced)
{
    char module[256];
    size_t base = strlen(t->name) - strlen(".weight");
    if (base >= sizeof module)
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: tensor name '%.64s...' is too long", j->in, t->name);
    memcpy(module, t->name, base);
    module[base] = 0;
    char scales[300];
    snprintf(scales, sizeof scales, "%s.scales", module);
    const quant_override *ov = config_quant_override(&j->cfg, module);
    if (ov && !ov->quantized)
        return infer_err(INFER_ERR_SHAPE,
                         "%s: tensor '%s' is U32 but config.json's quantization entry for '%s' is false", j->in,
                         t->name, module);
    if (!ov && !st_find(j->set, scales))
        return infer_err(INFER_ERR_MISSING, "%s: tensor '%s' is missing (the quantized weight '%s' needs it)", j->in,
                         scales, t->name);
    qmod *m = &j->mods[j->n_mods];
    memset(m, 0, sizeof *m);
    m->w = t;
    m->bits = ov ? ov->bits : j->cfg.quant_bits;
    m->group_size = ov ? ov->group_size : j->cfg.quant_group_size;
    if (t->ndim != 2 || (t->shape[1] * 32) % m->bits != 0 || (t->shape[1] * 32 / m->bits) % m->group_size != 0)
        return infer_err(INFER_ERR_SHAPE,
                         "%s: tensor '%s': a %d-bit weight in groups of %d has 2 dims [out, in * %d / 32] with in "
                         "a multiple of %d; found %d dims [%lld, ...]",
                         j->in, t->name, m->bits, m->group_size, m->bits, m->group_size, t->ndim,
                         (long long)t->shape[0]);
    m->rows = t->shape[0];
    m->cols = t->shape[1] * 32 / m->bits;
    int rc = find_qparam(j, module, "scales", m, &m->scales);
    if (!rc) rc = find_qparam(j, module, "biases", m, &m->biases);
    if (rc) return rc;
    if (m->scales->dtype != m->biases->dtype)
        return infer_err(INFER_ERR_SHAPE, "%s: module '%s': scales are %s but biases are %s", j->in, module,
                         dtype_name(m->scales->dtype), dtype_name(m->biases->dtype));
    m->sdtype = m->scales->dtype;
    m->odtype = forced != DT_COUNT ? forced : m->sdtype;
    int mi = j->n_mods++;
    return add_out(j, t->name, m->odtype, m->rows, m->cols, OUT_DEQUANT, mi, NULL, m->rows * m->cols);
}

/* 1 if name is the scales or biases of a packed (U32) weight. */
static int is_qparam(const qjob *j, const char *name)
{
    const char *kinds[] = {".scales", ".biases"};
    for (int k = 0; k < 2; k++) {
        if (!ends_with(name, kinds[k])) continue;
        char w[320];
        snprintf(w, sizeof w, "%.*s.weight", (int)(strlen(name) - strlen(kinds[k])), name);
        const st_tensor *t = st_find(j->set, w);
        if (t && t->dtype == DT_U32) return 1;
    }
    return 0;
}

static int plan_dequantize(qjob *j)
{
    if (!j->cfg.quant_bits)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: the model is not quantized (config.json has no "
                         "\"quantization\"): nothing to dequantize", j->in);
    infer_dtype forced = DT_COUNT;
    if (j->o.dtype && *j->o.dtype && parse_dtype(j->o.dtype, &forced))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "dequantize: dtype '%.32s' (bfloat16, float16 or float32)",
                         j->o.dtype);
    size_t n = st_count(j->set);
    int rc;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_get(j->set, i);
        if (t->dtype == DT_U32 && ends_with(t->name, ".weight"))
            rc = plan_dequant_module(j, t, forced);
        else if (is_qparam(j, t->name))
            rc = INFER_OK;
        else
            rc = add_copy(j, t);
        if (rc) return rc;
    }
    return INFER_OK;
}

/* ---- making the bytes ---------------------------------------------- */

static int fill_failed(qjob *j, int rc, const char *tensor)
{
    j->fill_rc = infer_err_prefix(rc, "%s: tensor '%s'", j->in, tensor);
    snprintf(j->fill_msg, sizeof j->fill_msg, "%s", infer_last_error());
    return -1;
}

static void drop_cache(qjob *j)
{
    free(j->packed);
    free(j->scales);
    free(j->biases);
    j->packed = NULL;
    j->scales = j->biases = NULL;
    j->cached = -1;
}

static int ensure_quantized(qjob *j, int mi)
{
    if (j->cached == mi) return 0;
    drop_cache(j);
    const qmod *m = &j->mods[mi];
    size_t groups = (size_t)m->rows * (size_t)(m->cols / m->group_size);
    j->packed = malloc((size_t)m->rows * (size_t)m->cols * (size_t)m->bits / 8);
    j->scales = malloc(groups * dtype_size(m->sdtype));
    j->biases = malloc(groups * dtype_size(m->sdtype));
    if (!j->packed || !j->scales || !j->biases) {
        drop_cache(j);
        return fill_failed(j, infer_err(INFER_ERR_OUT_OF_MEMORY, "out of memory"), m->w->name);
    }
    int rc = quant_matrix(m->w->data, m->w->dtype, m->rows, m->cols, m->bits, m->group_size, j->packed, j->scales,
                          j->biases, m->sdtype);
    if (rc) {
        drop_cache(j);
        return fill_failed(j, rc, m->w->name);
    }
    j->cached = mi;
    return 0;
}

/* Row r of a dequantized module, in its output dtype, into j->rowb. */
static int make_row(qjob *j, int mi, int64_t r)
{
    const qmod *m = &j->mods[mi];
    if (j->row_mod == mi && j->row_idx == r) return 0;
    if ((size_t)m->cols > j->row_cap) {
        free(j->rowf);
        free(j->rowb);
        j->rowf = malloc((size_t)m->cols * sizeof *j->rowf);
        j->rowb = malloc((size_t)m->cols * sizeof(float));
        j->row_cap = j->rowf && j->rowb ? (size_t)m->cols : 0;
        if (!j->row_cap) return fill_failed(j, infer_err(INFER_ERR_OUT_OF_MEMORY, "out of memory"), m->w->name);
    }
    quant_dequant_rows(m->w->data, r, 1, m->cols, m->bits, m->group_size, m->scales->data, m->biases->data,
                       m->sdtype, j->rowf);
    dtype_from_f32(j->rowb, j->rowf, m->odtype, (size_t)m->cols);
    j->row_mod = mi;
    j->row_idx = r;
    return 0;
}

typedef struct shard_arg {
    qjob *j;
    out_tensor *outs; /* the shard's first tensor */
} shard_arg;

static int fill(void *arg, size_t i, size_t offset, void *buf, size_t n)
{
    shard_arg *a = arg;
    qjob *j = a->j;
    const out_tensor *t = &a->outs[i];
    if (t->kind == OUT_DEQUANT) {
        const qmod *m = &j->mods[t->mod];
        size_t row_bytes = (size_t)m->cols * dtype_size(m->odtype);
        unsigned char *dst = buf;
        while (n > 0) {
            int64_t r = (int64_t)(offset / row_bytes);
            size_t in_row = offset - (size_t)r * row_bytes;
            size_t k = row_bytes - in_row < n ? row_bytes - in_row : n;
            if (make_row(j, t->mod, r)) return -1;
            memcpy(dst, j->rowb + in_row, k);
            dst += k;
            offset += k;
            n -= k;
        }
        return 0;
    }
    if (ensure_quantized(j, t->mod)) return -1;
    const void *src = t->kind == OUT_QWEIGHT ? (const void *)j->packed
                      : t->kind == OUT_QSCALES ? j->scales : j->biases;
    memcpy(buf, (const unsigned char *)src + offset, n);
    return 0;
}

/* ---- the folder ---------------------------------------------------- */

static int remember(qjob *j, const char *path)
{
    char **grown = realloc(j->files, (size_t)(j->n_files + 1) * sizeof *grown);
    if (!grown) return oom(j);
    j->files = grown;
    if (!(j->files[j->n_files] = strdup(path))) return oom(j);
    j->n_files++;
    return INFER_OK;
}

static int write_text(qjob *j, const char *name, const char *text)
{
    char *path = join(j->out, name);
    if (!path) return oom(j);
    FILE *f = fopen(path, "wb");
    int rc = INFER_OK;
    if (!f) {
        rc = infer_err(INFER_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    } else {
        rc = remember(j, path);
        size_t n = strlen(text);
        int bad = fwrite(text, 1, n, f) != n;
        if (fclose(f) != 0 || bad) rc = infer_err(INFER_ERR_IO, "%s: write failed", path);
    }
    free(path);
    return rc;
}

static int copy_file(qjob *j, const char *name)
{
    char *src = join(j->in, name), *dst = join(j->out, name);
    int copied = 0, rc = !src || !dst ? oom(j) : io_copy_file(src, dst, &copied);
    if (!rc && copied) rc = remember(j, dst);
    free(src);
    free(dst);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const out_tensor *const *)a)->name, (*(const out_tensor *const *)b)->name);
}

/* model.safetensors.index.json as mlx-lm writes it: total_size,
 * total_parameters and the weight map, sorted by name. */
static int write_index(qjob *j, const int *shard_of, char (*names)[64])
{
    int64_t total = 0, params = 0;
    const out_tensor **sorted = malloc(j->n_outs * sizeof *sorted);
    cJSON *root = cJSON_CreateObject(), *md = NULL, *map = NULL;
    if (root) md = cJSON_AddObjectToObject(root, "metadata");
    if (root) map = cJSON_AddObjectToObject(root, "weight_map");
    int rc = INFER_OK;
    if (!sorted || !md || !map) {
        rc = oom(j);
        goto done;
    }
    for (size_t i = 0; i < j->n_outs; i++) {
        total += (int64_t)st_out_bytes(&j->outs[i].desc);
        params += j->outs[i].params;
        sorted[i] = &j->outs[i];
    }
    qsort(sorted, j->n_outs, sizeof *sorted, by_name);
    cJSON_AddNumberToObject(md, "total_size", (double)total);
    cJSON_AddNumberToObject(md, "total_parameters", (double)params);
    for (size_t i = 0; i < j->n_outs; i++)
        if (!cJSON_AddStringToObject(map, sorted[i]->name, names[shard_of[sorted[i] - j->outs]])) {
            rc = oom(j);
            goto done;
        }
    char *text = cJSON_Print(root);
    if (!text) {
        rc = oom(j);
        goto done;
    }
    rc = write_text(j, "model.safetensors.index.json", text);
    free(text);
done:
    cJSON_Delete(root);
    free(sorted);
    return rc;
}

/* Splits the tensors into shards as mlx-lm's make_shards does (a new file
 * when the next tensor would pass the limit) and writes them. */
static int write_weights(qjob *j)
{
    int64_t limit = j->o.max_shard_bytes > 0 ? j->o.max_shard_bytes : DEFAULT_SHARD_BYTES;
    int *shard_of = malloc((j->n_outs ? j->n_outs : 1) * sizeof *shard_of);
    if (!shard_of) return oom(j);
    int n_shards = 1;
    int64_t size = 0;
    for (size_t i = 0; i < j->n_outs; i++) {
        int64_t b = (int64_t)st_out_bytes(&j->outs[i].desc);
        if (size > 0 && size + b > limit) {
            n_shards++;
            size = 0;
        }
        size += b;
        shard_of[i] = n_shards - 1;
    }
    char (*names)[64] = malloc((size_t)n_shards * sizeof *names);
    st_out *descs = malloc((j->n_outs ? j->n_outs : 1) * sizeof *descs);
    int rc = names && descs ? INFER_OK : oom(j);
    static const char *const meta[] = {"format", "mlx", NULL};
    size_t first = 0;
    for (int s = 0; s < n_shards && !rc; s++) {
        if (n_shards == 1)
            snprintf(names[s], sizeof names[s], "model.safetensors");
        else
            snprintf(names[s], sizeof names[s], "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        size_t end = first;
        while (end < j->n_outs && shard_of[end] == s) end++;
        for (size_t i = first; i < end; i++) descs[i - first] = j->outs[i].desc;
        char *path = join(j->out, names[s]);
        if (!path) {
            rc = oom(j);
            break;
        }
        shard_arg a = {j, j->outs + first};
        j->fill_rc = 0;
        rc = st_write_file(path, descs, end - first, meta, fill, &a);
        if (rc && j->fill_rc) rc = infer_err(j->fill_rc, "%s", j->fill_msg);
        if (!rc) rc = remember(j, path);
        free(path);
        drop_cache(j);
        first = end;
    }
    if (!rc) rc = write_index(j, shard_of, names);
    free(descs);
    free(names);
    free(shard_of);
    return rc;
}

/* Moves the members of obj into name order (stable), as mlx-lm sorts
 * config.json. */
static void sort_members(cJSON *obj)
{
    int n = 0;
    for (cJSON *it = obj->child; it; it = it->next) n++;
    if (n < 2) return;
    cJSON **v = malloc((size_t)n * sizeof *v);
    if (!v) return; /* unsorted is still a valid config */
    int k = 0;
    for (cJSON *it = obj->child; it; it = it->next) v[k++] = it;
    for (int i = 1; i < n; i++) { /* insertion sort: stable */
        cJSON *x = v[i];
        int p = i;
        while (p > 0 && strcmp(v[p - 1]->string, x->string) > 0) {
            v[p] = v[p - 1];
            p--;
        }
        v[p] = x;
    }
    for (int i = 0; i < n; i++) {
        v[i]->next = i + 1 < n ? v[i + 1] : NULL;
        v[i]->prev = i > 0 ? v[i - 1] : v[n - 1]; /* cJSON: the head's prev is the tail */
    }
    obj->child = v[0];
    free(v);
}

static cJSON *quant_object(const qjob *j)
{
    cJSON *q = cJSON_CreateObject();
    if (!q) return NULL;
    if (!cJSON_AddNumberToObject(q, "group_size", j->o.group_size) ||
        !cJSON_AddNumberToObject(q, "bits", j->o.bits) || !cJSON_AddStringToObject(q, "mode", "affine")) {
        cJSON_Delete(q);
        return NULL;
    }
    return q;
}

/* config.json: the input's, with "quantization" and "quantization_config"
 * added (quantize) or removed (dequantize), "_name_or_path" dropped and
 * the members sorted, as mlx-lm's save_config does. */
static int write_config(qjob *j)
{
    char *path = join(j->in, "config.json"), *buf = NULL;
    size_t len = 0;
    if (!path) return oom(j);
    int rc = config_read_file(path, &buf, &len);
    cJSON *root = rc ? NULL : cJSON_ParseWithLength(buf, len);
    if (!rc && !root) rc = infer_err(INFER_ERR_FORMAT, "%s: invalid JSON", path);
    free(buf);
    free(path);
    if (rc) return rc;
    cJSON_DeleteItemFromObjectCaseSensitive(root, "_name_or_path");
    while (cJSON_GetObjectItemCaseSensitive(root, "quantization"))
        cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization");
    while (cJSON_GetObjectItemCaseSensitive(root, "quantization_config"))
        cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (j->o.dequantize && cJSON_IsObject(text))
        while (cJSON_GetObjectItemCaseSensitive(text, "quantization_config"))
            cJSON_DeleteItemFromObjectCaseSensitive(text, "quantization_config");
    if (!j->o.dequantize) {
        cJSON *q1 = quant_object(j), *q2 = quant_object(j);
        if (!q1 || !q2 || !cJSON_AddItemToObject(root, "quantization", q1)) {
            cJSON_Delete(q1);
            cJSON_Delete(q2);
            cJSON_Delete(root);
            return oom(j);
        }
        if (!cJSON_AddItemToObject(root, "quantization_config", q2)) {
            cJSON_Delete(q2);
            cJSON_Delete(root);
            return oom(j);
        }
    }
    sort_members(root);
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) return oom(j);
    size_t n = strlen(out);
    char *nl = realloc(out, n + 2);
    if (!nl) {
        free(out);
        return oom(j);
    }
    memcpy(nl + n, "\n", 2);
    rc = write_text(j, "config.json", nl);
    free(nl);
    return rc;
}

/* out_dir: created, or an existing empty folder that is not in_dir. */
static int prepare_out(qjob *j)
{
    struct stat st;
    if (stat(j->out, &st) != 0) {
        if (errno != ENOENT) return infer_err(INFER_ERR_IO, "%s: %s", j->out, strerror(errno));
        if (mkdir(j->out, 0777) != 0)
            return infer_err(INFER_ERR_IO, "%s: cannot create the output folder: %s", j->out, strerror(errno));
        j->made_dir = 1;
        return INFER_OK;
    }
    if (!S_ISDIR(st.st_mode))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: exists and is not a folder", j->out);
    DIR *d = opendir(j->out);
    if (!d) return infer_err(INFER_ERR_IO, "%s: %s", j->out, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    if (!empty)
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "%s: the output folder exists and is not empty (give a new or empty folder)", j->out);
    return INFER_OK;
}

static int check_args(const char *in, const char *out, const infer_quant_opts *o)
{
    if (!in || !*in || !out || !*out)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_quantize: the model and output folders must be given");
    if (!o->dequantize && !quant_bits_ok(o->bits))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quantize: %d bits is not supported (2, 3, 4, 5, 6 or 8)",
                         o->bits);
    if (!o->dequantize && !quant_group_ok(o->group_size))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quantize: group size %d is not supported (32, 64 or 128)",
                         o->group_size);
    if (o->max_shard_bytes < 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quantize: max_shard_bytes %lld is negative",
                         (long long)o->max_shard_bytes);
    struct stat st;
    if (stat(in, &st) != 0)
        return infer_err(errno == ENOENT ? INFER_ERR_MISSING : INFER_ERR_IO, "%s: %s", in, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: not a model folder", in);
    char a[PATH_MAX], b[PATH_MAX];
    if (realpath(in, a) && realpath(out, b) && !strcmp(a, b))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: the output folder is the model folder; give another one",
                         out);
    return INFER_OK;
}

static void job_free(qjob *j, int failed)
{
    for (int i = 0; i < j->n_files; i++) {
        if (failed) unlink(j->files[i]);
        free(j->files[i]);
    }
    free(j->files);
    if (failed && j->made_dir) rmdir(j->out);
    for (size_t i = 0; i < j->n_outs; i++) free(j->outs[i].name);
    free(j->outs);
    for (size_t i = 0; i < j->n_mats; i++) free(j->mats[i]);
    free(j->mats);
    free(j->mods);
    drop_cache(j);
    free(j->rowf);
    free(j->rowb);
    st_close(j->set);
    config_free(&j->cfg);
}

int infer_quantize(const char *in_dir, const char *out_dir, const infer_quant_opts *opts)
{
    qjob j;
    memset(&j, 0, sizeof j);
    j.in = in_dir;
    j.out = out_dir;
    j.cached = -1;
    j.row_mod = -1;
    if (opts)
        j.o = *opts;
    else
        infer_quant_opts_default(&j.o);
    int rc = check_args(in_dir, out_dir, &j.o);
    if (rc) return rc;
    if ((rc = config_load(in_dir, &j.cfg)) || (rc = st_open_dir(in_dir, &j.set))) goto done;
    size_t n = st_count(j.set);
    /* a quantized module makes three tensors out of one */
    j.outs = calloc(3 * n + 1, sizeof *j.outs);
    j.mods = calloc(n + 1, sizeof *j.mods);
    if (!j.outs || !j.mods) {
        rc = oom(&j);
        goto done;
    }
    if ((rc = j.o.dequantize ? plan_dequantize(&j) : plan_quantize(&j)) || (rc = prepare_out(&j)) ||
        (rc = write_weights(&j)) || (rc = write_config(&j)))
        goto done;
    for (size_t i = 0; io_side_files[i] && !rc; i++) rc = copy_file(&j, io_side_files[i]);
done:
    job_free(&j, rc != INFER_OK);
    return rc;
}
