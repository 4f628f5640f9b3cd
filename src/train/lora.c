/* lora.c - LoRA adapters: made fresh, read and written in PEFT's and
 * mlx-lm's files (../shared/models.md, "Adapter files").
 *
 *              PEFT                                   mlx-lm
 *   files      adapter_model.safetensors              adapters.safetensors
 *   tensors    ...layers.N.self_attn.q_proj.          model.layers.N.self_attn.q_proj.
 *              lora_A.weight [r, in], lora_B [out, r]  lora_a [in, r], lora_b [r, out]
 *   scale      lora_alpha / r (/ sqrt(r): use_rslora)  lora_parameters.scale
 *   layers     layers_to_transform (null: all)        the last num_layers */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/st_write.h"
#include "train/lora.h"

const char *const lora_mod_name[LM_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
const char *const lora_mod_path[LM_COUNT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                             "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                             "mlp.down_proj"};

const bk_weight *lora_base(const infer_model *m, int li, int k, const bk_weight **bias)
{
    const layer_weights *L = &m->layers[li];
    const bk_weight *w[LM_COUNT] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    const bk_weight *b[LM_COUNT] = {&L->q_bias, &L->k_bias, &L->v_bias, &L->o_bias,
                                    &L->gate_bias, &L->up_bias, &L->down_bias};
    if (bias) *bias = b[k]->data ? b[k] : NULL;
    return w[k];
}

void infer_lora_opts_default(infer_lora_opts *o)
{
    memset(o, 0, sizeof *o);
    /* mlx-lm's defaults */
    o->rank = 8;
    o->scale = 20.0f;
    o->alpha = 16.0f;
    o->targets = "q_proj,v_proj";
    o->num_layers = 16;
    o->seed = 0;
}

int infer_model_use_lora(infer_model *m, infer_lora *l)
{
    if (!m) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_model_use_lora: NULL model");
    if (l && l->m != m) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_model_use_lora: the adapter is another model's");
    m->adapter = l ? &l->view : NULL;
    return INFER_OK;
}

void infer_lora_free(infer_lora *l)
{
    if (!l) return;
    if (l->m && l->m->adapter == &l->view) l->m->adapter = NULL;
    free(l->va);
    free(l->vb);
    if (l->m) {
        l->m->be->free(l->m->bctx, l->params);
        l->m->be->free(l->m->bctx, l->grads);
    }
    free(l->mods);
    free(l->index);
    free(l);
}

/* An adapter with the modules on[li * LM_COUNT + k] (1: adapted), its
 * blocks allocated, parameters not yet set. */
static int lora_build(infer_model *m, int rank, const unsigned char *on, infer_lora **out)
{
    *out = NULL;
    const int L = m->cfg.n_layers;
    infer_lora *l = calloc(1, sizeof *l);
    if (!l) return infer_err(INFER_ERR_OUT_OF_MEMORY, "lora: out of memory");
    l->m = m;
    l->rank = rank;
    l->index = malloc((size_t)L * LM_COUNT * sizeof *l->index);
    l->mods = calloc((size_t)L * LM_COUNT, sizeof *l->mods);
    if (!l->index || !l->mods) {
        infer_lora_free(l);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "lora: out of memory");
    }
    size_t off = 0;
    for (int li = 0; li < L; li++)
        for (int k = 0; k < LM_COUNT; k++) {
            l->index[li * LM_COUNT + k] = -1;
            if (!on[li * LM_COUNT + k]) continue;
            const bk_weight *w = lora_base(m, li, k, NULL);
            lora_mod *md = &l->mods[l->n_mods];
            md->layer = li;
            md->kind = k;
            md->in = w->cols;
            md->out = w->rows;
            md->a_off = off;
            off += (size_t)rank * (size_t)md->in;
            md->b_off = off;
            off += (size_t)md->out * (size_t)rank;
            l->index[li * LM_COUNT + k] = l->n_mods++;
            l->kinds |= 1u << k;
        }
    if (l->n_mods == 0) {
        infer_lora_free(l);
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "lora: no module to adapt");
    }
    l->n_params = off;
    int rc = m->be->alloc(m->bctx, off * 4, &l->params);
    if (!rc) rc = m->be->alloc(m->bctx, off * 4, &l->grads);
    if (!rc) rc = lora_zero_grads(l);
    if (rc) {
        infer_lora_free(l);
        return infer_err_prefix(rc, "lora: %zu parameters", off);
    }
    l->va = calloc((size_t)L * LM_COUNT, sizeof *l->va);
    l->vb = calloc((size_t)L * LM_COUNT, sizeof *l->vb);
    if (!l->va || !l->vb) {
        infer_lora_free(l);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "lora: out of memory");
    }
    l->view.rank = rank;
    l->view.a = l->va;
    l->view.b = l->vb;
    for (int i = 0; i < l->n_mods; i++) {
        lora_mod *md = &l->mods[i];
        md->A = (bk_weight){.data = (const float *)l->params + md->a_off, .dtype = DT_F32, .rows = rank, .cols = md->in};
        md->B = (bk_weight){.data = (const float *)l->params + md->b_off, .dtype = DT_F32, .rows = md->out, .cols = rank};
        l->va[md->layer * LM_COUNT + md->kind] = md->A;
        l->vb[md->layer * LM_COUNT + md->kind] = md->B;
        if ((size_t)md->out > l->view.max_out) l->view.max_out = (size_t)md->out;
    }
    *out = l;
    return INFER_OK;
}

int lora_zero_grads(infer_lora *l)
{
    float *z = calloc(l->n_params ? l->n_params : 1, sizeof *z);
    if (!z) return infer_err(INFER_ERR_OUT_OF_MEMORY, "lora: out of memory");
    int rc = l->m->be->upload(l->m->bctx, l->grads, z, l->n_params * 4);
    free(z);
    return rc;
}

/* Module kinds from "q_proj,v_proj" or "all"/"all-linear"; 0 on error. */
static unsigned parse_targets(const char *s)
{
    if (!s || !*s) return 0;
    if (!strcmp(s, "all") || !strcmp(s, "all-linear")) return (1u << LM_COUNT) - 1;
    unsigned mask = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int k = 0; k < LM_COUNT; k++) {
            size_t kn = strlen(lora_mod_name[k]);
            if (n == kn && !strncmp(p, lora_mod_name[k], n)) found = k;
            /* mlx-lm's keys: "self_attn.q_proj" */
            size_t pn = strlen(lora_mod_path[k]);
            if (n == pn && !strncmp(p, lora_mod_path[k], n)) found = k;
        }
        if (found < 0) return 0;
        mask |= 1u << found;
        p += n;
        if (*p == ',') p++;
    }
    return mask;
}

/* Uniform in [0, 1). */
static double next_uniform(uint64_t *s) { return (double)(lora_splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

int infer_lora_new(infer_model *m, const infer_lora_opts *o, infer_lora **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_new: NULL argument");
    *out = NULL;
    if (!m) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_new: NULL model");
    infer_lora_opts d;
    if (!o) {
        infer_lora_opts_default(&d);
        o = &d;
    }
    if (o->rank <= 0 || o->rank > 4096)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "lora: rank %d (want 1 to 4096)", o->rank);
    if (!(o->dropout >= 0.0f && o->dropout < 1.0f))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "lora: dropout %g (want 0 <= p < 1)", (double)o->dropout);
    if (!(o->scale > 0.0f) && !(o->alpha > 0.0f))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "lora: scale and alpha are both 0");
    unsigned kinds = parse_targets(o->targets);
    if (!kinds)
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "lora: targets \"%s\": want module names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                         "down_proj) separated by commas, or \"all\"",
                         o->targets ? o->targets : "");
    const int L = m->cfg.n_layers;
    if (o->num_layers < 0 || o->num_layers > L)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "lora: num_layers %d (the model has %d)", o->num_layers, L);
    int first = o->num_layers == 0 ? 0 : L - o->num_layers;
    unsigned char *on = calloc((size_t)L * LM_COUNT, 1);
    if (!on) return infer_err(INFER_ERR_OUT_OF_MEMORY, "lora: out of memory");
    for (int li = first; li < L; li++)
        for (int k = 0; k < LM_COUNT; k++) on[li * LM_COUNT + k] = (kinds >> k) & 1;
    infer_lora *l;
    int rc = lora_build(m, o->rank, on, &l);
    free(on);
    if (rc) return rc;
    l->scale = o->scale > 0.0f ? o->scale : o->alpha / (float)o->rank;
    l->view.scale = l->scale;
    l->alpha = o->alpha > 0.0f && !(o->scale > 0.0f) ? o->alpha : l->scale * (float)o->rank;
    l->dropout = o->dropout;
    /* A: uniform in +-1/sqrt(in) (PEFT's kaiming_uniform(a = sqrt(5)),
     * mlx-lm's bound); B: 0 */
    float *h = calloc(l->n_params, sizeof *h);
    if (!h) {
        infer_lora_free(l);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "lora: out of memory");
    }
    uint64_t st = o->seed * 0x2545f4914f6cdd1dull + 1;
    for (int i = 0; i < l->n_mods; i++) {
        const lora_mod *md = &l->mods[i];
        double bound = 1.0 / sqrt((double)md->in);
        for (size_t j = 0; j < (size_t)l->rank * (size_t)md->in; j++)
            h[md->a_off + j] = (float)((2.0 * next_uniform(&st) - 1.0) * bound);
    }
    rc = m->be->upload(m->bctx, l->params, h, l->n_params * 4);
    free(h);
    if (rc) {
        infer_lora_free(l);
        return rc;
    }
    *out = l;
    return INFER_OK;
}

/* ---- reading ---- */

int lora_module_name(const char *name, const char *tail, int *layer, int *kind)
{
    size_t n = strlen(name), tn = strlen(tail);
    if (n <= tn || strcmp(name + n - tn, tail)) return 0;
    const char *p = strstr(name, "layers.");
    while (p && p != name && p[-1] != '.') p = strstr(p + 1, "layers.");
    if (!p) return 0;
    p += 7;
    char *end;
    long li = strtol(p, &end, 10);
    if (end == p || *end != '.' || li < 0 || li > 1000000) return 0;
    p = end + 1;
    for (int k = 0; k < LM_COUNT; k++) {
        size_t pn = strlen(lora_mod_path[k]);
        if ((size_t)(name + n - tn - p) == pn && !strncmp(p, lora_mod_path[k], pn)) {
            *layer = (int)li;
            *kind = k;
            return 1;
        }
    }
    return 0;
}

/* Copies tensor t (any float dtype) into dst as float32, transposed from
 * [cols, rows] when transpose is set. */
static int read_tensor(const st_tensor *t, float *dst, int64_t rows, int64_t cols, int transpose, const char *path)
{
    int64_t r0 = transpose ? cols : rows, c0 = transpose ? rows : cols;
    if (t->ndim != 2 || t->shape[0] != r0 || t->shape[1] != c0)
        return infer_err(INFER_ERR_SHAPE, "%s: tensor %s: shape [%lld, %lld] expected", path, t->name, (long long)r0,
                         (long long)c0);
    if (t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16)
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s (want F32, BF16 or F16)", path, t->name,
                         dtype_name(t->dtype));
    size_t n = (size_t)rows * (size_t)cols;
    if (!transpose) {
        dtype_to_f32(dst, t->data, t->dtype, n);
        return INFER_OK;
    }
    float *tmp = malloc(n * sizeof *tmp);
    if (!tmp) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    dtype_to_f32(tmp, t->data, t->dtype, n);
    for (int64_t i = 0; i < r0; i++)
        for (int64_t j = 0; j < c0; j++) dst[(size_t)j * (size_t)cols + (size_t)i] = tmp[(size_t)i * (size_t)c0 + (size_t)j];
    free(tmp);
    return INFER_OK;
}

static double json_num(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

int infer_lora_load(infer_model *m, const char *where, infer_lora **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_load: NULL argument");
    *out = NULL;
    if (!m || !where) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_load: NULL argument");
    /* a folder, or a weights file in one (a checkpoint such as mlx-lm's
     * 0000100_adapters.safetensors): the config from its folder */
    char dir[4000], path[4096]; /* room for a file name after dir */
    const char *file = NULL;
    struct stat sb;
    snprintf(dir, sizeof dir, "%s", where);
    const size_t wl = strlen(where);
    if (stat(where, &sb) != 0 && wl > 12 && !strcmp(where + wl - 12, ".safetensors"))
        return infer_err(INFER_ERR_MISSING, "%s: no such file", where);
    if (stat(where, &sb) == 0 && S_ISREG(sb.st_mode)) {
        file = where;
        char *slash = strrchr(dir, '/');
        if (!slash)
            snprintf(dir, sizeof dir, ".");
        else if (slash == dir)
            dir[1] = 0;
        else
            *slash = 0;
    }
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    char *text;
    size_t len;
    int rc = config_read_file(path, &text, &len);
    if (rc) return rc;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return infer_err(INFER_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(cfg, "peft_type");
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(cfg, "lora_parameters");
    int peft = cJSON_IsString(pt);
    float scale = 0.0f, alpha = 0.0f, dropout = 0.0f;
    if (peft) {
        const cJSON *dora = cJSON_GetObjectItemCaseSensitive(cfg, "use_dora");
        const cJSON *bias = cJSON_GetObjectItemCaseSensitive(cfg, "bias");
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(cfg, "rank_pattern");
        const cJSON *ap = cJSON_GetObjectItemCaseSensitive(cfg, "alpha_pattern");
        const char *why = strcmp(pt->valuestring, "LORA")            ? "peft_type is not LORA"
                          : cJSON_IsTrue(dora)                       ? "use_dora (DoRA)"
                          : cJSON_IsString(bias) && strcmp(bias->valuestring, "none") ? "bias other than \"none\""
                          : cJSON_GetArraySize(rp) > 0               ? "rank_pattern"
                          : cJSON_GetArraySize(ap) > 0               ? "alpha_pattern"
                                                                     : NULL;
        if (why) {
            cJSON_Delete(cfg);
            return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s is not supported", path, why);
        }
        double r = json_num(cfg, "r", 0), a = json_num(cfg, "lora_alpha", 0);
        if (!(r > 0) || !(a > 0)) {
            cJSON_Delete(cfg);
            return infer_err(INFER_ERR_FORMAT, "%s: r and lora_alpha must be positive numbers", path);
        }
        alpha = (float)a;
        scale = (float)(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "use_rslora")) ? a / sqrt(r) : a / r);
        dropout = (float)json_num(cfg, "lora_dropout", 0);
    } else if (cJSON_IsObject(lp)) {
        const cJSON *ft = cJSON_GetObjectItemCaseSensitive(cfg, "fine_tune_type");
        if (cJSON_IsString(ft) && strcmp(ft->valuestring, "lora")) {
            rc = infer_err(INFER_ERR_UNSUPPORTED, "%s: fine_tune_type \"%s\" is not supported (only \"lora\")", path,
                           ft->valuestring);
            cJSON_Delete(cfg);
            return rc;
        }
        scale = (float)json_num(lp, "scale", 0);
        dropout = (float)json_num(lp, "dropout", 0);
        if (!(scale != 0.0f)) {
            cJSON_Delete(cfg);
            return infer_err(INFER_ERR_FORMAT, "%s: lora_parameters.scale missing", path);
        }
    } else {
        cJSON_Delete(cfg);
        return infer_err(INFER_ERR_FORMAT, "%s: neither PEFT's (peft_type) nor mlx-lm's (lora_parameters) config", path);
    }
    cJSON_Delete(cfg);
    if (!(dropout >= 0.0f && dropout < 1.0f))
        return infer_err(INFER_ERR_FORMAT, "%s: dropout %g (want 0 <= p < 1)", path, (double)dropout);

    if (file)
        snprintf(path, sizeof path, "%s", file);
    else
        snprintf(path, sizeof path, "%s/%s", dir, peft ? "adapter_model.safetensors" : "adapters.safetensors");
    if (stat(path, &sb) != 0 && errno == ENOENT) return infer_err(INFER_ERR_MISSING, "%s: no such file", path);
    st_set *st;
    if ((rc = st_open_file(path, &st))) return rc;
    const char *ta = peft ? ".lora_A.weight" : ".lora_a", *tb = peft ? ".lora_B.weight" : ".lora_b";
    const int L = m->cfg.n_layers;
    unsigned char *on = calloc((size_t)L * LM_COUNT, 1);
    const st_tensor **ts = calloc((size_t)L * LM_COUNT * 2, sizeof *ts);
    int rank = 0;
    if (!on || !ts) rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    for (size_t i = 0; !rc && i < st_count(st); i++) {
        const st_tensor *t = st_get(st, i);
        int li, k, isb = 0;
        if (!lora_module_name(t->name, ta, &li, &k)) {
            if (!lora_module_name(t->name, tb, &li, &k)) {
                rc = infer_err(INFER_ERR_UNSUPPORTED, "%s: tensor %s is not a LoRA matrix of a supported module", path,
                               t->name);
                break;
            }
            isb = 1;
        }
        if (li >= L) {
            rc = infer_err(INFER_ERR_SHAPE, "%s: tensor %s: layer %d, the model has %d", path, t->name, li, L);
            break;
        }
        on[li * LM_COUNT + k] = 1;
        ts[(li * LM_COUNT + k) * 2 + isb] = t;
        /* the rank: A's rows (PEFT) or columns (mlx-lm) */
        if (!isb && t->ndim == 2) {
            int r = (int)(peft ? t->shape[0] : t->shape[1]);
            if (rank && r != rank) rc = infer_err(INFER_ERR_SHAPE, "%s: tensor %s: rank %d, others %d", path, t->name, r, rank);
            rank = r;
        }
    }
    for (int i = 0; !rc && i < L * LM_COUNT; i++)
        if (on[i] && (!ts[2 * i] || !ts[2 * i + 1]))
            rc = infer_err(INFER_ERR_MISSING, "%s: layer %d %s: lora %s missing", path, i / LM_COUNT,
                           lora_mod_name[i % LM_COUNT], ts[2 * i] ? "B" : "A");
    if (!rc && rank <= 0) rc = infer_err(INFER_ERR_MISSING, "%s: no LoRA tensors", path);
    infer_lora *l = NULL;
    if (!rc) rc = lora_build(m, rank, on, &l);
    float *h = NULL;
    if (!rc && !(h = malloc(l->n_params * sizeof *h))) rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    for (int i = 0; !rc && i < (l ? l->n_mods : 0); i++) {
        const lora_mod *md = &l->mods[i];
        int s = md->layer * LM_COUNT + md->kind;
        if (!(rc = read_tensor(ts[2 * s], h + md->a_off, rank, md->in, !peft, path)))
            rc = read_tensor(ts[2 * s + 1], h + md->b_off, md->out, rank, !peft, path);
    }
    if (!rc) rc = m->be->upload(m->bctx, l->params, h, l->n_params * 4);
    free(h);
    free(on);
    free(ts);
    st_close(st);
    if (rc) {
        infer_lora_free(l);
        return rc;
    }
    l->scale = scale;
    l->view.scale = scale;
    l->alpha = peft ? alpha : scale * (float)rank;
    l->dropout = dropout;
    *out = l;
    return INFER_OK;
}

/* ---- writing ---- */

typedef struct save_arg {
    const float *h;
    const infer_lora *l;
    int peft;
} save_arg;

/* Tensor i: module i / 2, A (even) or B; mlx-lm's are transposed. */
static int save_fill(void *arg, size_t i, size_t offset, void *buf, size_t n)
{
    const save_arg *a = arg;
    const lora_mod *md = &a->l->mods[i / 2];
    int isb = (int)(i % 2);
    const float *src = a->h + (isb ? md->b_off : md->a_off);
    if (a->peft) {
        memcpy(buf, (const char *)src + offset, n);
        return 0;
    }
    /* transposed: element e of the output is src[(e % rows) * cols + e / rows] */
    int64_t rows = isb ? md->out : a->l->rank, cols = isb ? a->l->rank : md->in;
    float *o = buf;
    size_t e0 = offset / 4;
    for (size_t e = 0; e < n / 4; e++) {
        size_t k = e0 + e, r = k % (size_t)rows, c = k / (size_t)rows;
        o[e] = src[r * (size_t)cols + c];
    }
    return 0;
}

static int write_json(const char *path, cJSON *j)
{
    char *text = cJSON_Print(j);
    if (!text) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = 0;
    free(text);
    return ok ? INFER_OK : infer_err(INFER_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
}

int infer_lora_save(const infer_lora *l, const char *dir, infer_adapter_format format)
{
    if (!l || !dir) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_save: NULL argument");
    if (format != INFER_ADAPTER_MLX && format != INFER_ADAPTER_PEFT)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_lora_save: format %d", (int)format);
    const infer_model *m = l->m;
    const int L = m->cfg.n_layers, peft = format == INFER_ADAPTER_PEFT;
    /* mlx-lm adapts the same modules in each of the last num_layers layers */
    int first = L;
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].layer < first) first = l->mods[i].layer;
    if (!peft)
        for (int li = first; li < L; li++)
            for (int k = 0; k < LM_COUNT; k++)
                if (!lora_at(l, li, k) != !((l->kinds >> k) & 1))
                    return infer_err(INFER_ERR_UNSUPPORTED,
                                     "%s: mlx-lm's format needs the same modules in each of the last layers (layer %d "
                                     "%s differs): save in PEFT's",
                                     dir, li, lora_mod_name[k]);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return infer_err(INFER_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    float *h = malloc(l->n_params * sizeof *h);
    st_out *t = calloc((size_t)l->n_mods * 2, sizeof *t);
    char (*names)[160] = calloc((size_t)l->n_mods * 2, sizeof *names);
    if (!h || !t || !names) {
        free(h);
        free(t);
        free(names);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    }
    int rc = m->be->download(m->bctx, h, l->params, l->n_params * 4);
    /* the layers' module path as transformers (PEFT) and mlx-lm name it */
    const int mm = model_is_multimodal(m);
    const char *pre = peft ? (mm ? "base_model.model.model.language_model." : "base_model.model.model.")
                           : (mm ? "language_model.model." : "model.");
    for (int i = 0; !rc && i < l->n_mods; i++) {
        const lora_mod *md = &l->mods[i];
        for (int isb = 0; isb < 2; isb++) {
            st_out *o = &t[2 * i + isb];
            if (peft)
                snprintf(names[2 * i + isb], sizeof names[0], "%slayers.%d.%s.lora_%c.weight", pre, md->layer,
                         lora_mod_path[md->kind], isb ? 'B' : 'A');
            else
                snprintf(names[2 * i + isb], sizeof names[0], "%slayers.%d.%s.lora_%c", pre, md->layer,
                         lora_mod_path[md->kind], isb ? 'b' : 'a');
            o->name = names[2 * i + isb];
            o->dtype = DT_F32;
            o->ndim = 2;
            int64_t rows = isb ? md->out : l->rank, cols = isb ? l->rank : md->in;
            o->shape[0] = peft ? rows : cols;
            o->shape[1] = peft ? cols : rows;
        }
    }
    char path[4096];
    save_arg sa = {h, l, peft};
    const char *meta[] = {"format", peft ? "pt" : "mlx", NULL};
    snprintf(path, sizeof path, "%s/%s", dir, peft ? "adapter_model.safetensors" : "adapters.safetensors");
    if (!rc) rc = st_write_file(path, t, (size_t)l->n_mods * 2, meta, save_fill, &sa);
    free(h);
    free(t);
    free(names);
    if (rc) return rc;

    cJSON *j = cJSON_CreateObject(), *mods = cJSON_CreateArray();
    for (int k = 0; k < LM_COUNT; k++)
        if ((l->kinds >> k) & 1) cJSON_AddItemToArray(mods, cJSON_CreateString(peft ? lora_mod_name[k] : lora_mod_path[k]));
    if (peft) {
        cJSON *layers = cJSON_CreateArray();
        for (int li = 0; li < L; li++) {
            int any = 0;
            for (int k = 0; k < LM_COUNT; k++) any |= lora_at(l, li, k) != NULL;
            if (any) cJSON_AddItemToArray(layers, cJSON_CreateNumber(li));
        }
        cJSON_AddStringToObject(j, "peft_type", "LORA");
        cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
        cJSON_AddStringToObject(j, "base_model_name_or_path", m->path);
        cJSON_AddNumberToObject(j, "r", l->rank);
        cJSON_AddNumberToObject(j, "lora_alpha", l->alpha);
        cJSON_AddNumberToObject(j, "lora_dropout", l->dropout);
        cJSON_AddItemToObject(j, "target_modules", mods);
        cJSON_AddItemToObject(j, "layers_to_transform", layers);
        cJSON_AddStringToObject(j, "bias", "none");
        cJSON_AddFalseToObject(j, "use_rslora");
        cJSON_AddFalseToObject(j, "use_dora");
        cJSON_AddFalseToObject(j, "fan_in_fan_out");
        cJSON_AddTrueToObject(j, "inference_mode");
        cJSON_AddTrueToObject(j, "init_lora_weights");
    } else {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "fine_tune_type", "lora");
        cJSON_AddNumberToObject(j, "num_layers", L - first);
        cJSON_AddNumberToObject(p, "rank", l->rank);
        cJSON_AddNumberToObject(p, "scale", l->scale);
        cJSON_AddNumberToObject(p, "dropout", l->dropout);
        cJSON_AddItemToObject(p, "keys", mods);
        cJSON_AddItemToObject(j, "lora_parameters", p);
        cJSON_AddStringToObject(j, "model", m->path);
    }
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = write_json(path, j);
    cJSON_Delete(j);
    return rc;
}
