/* config.c - config.json to model_config.
 *
 * The JSON is parsed with cJSON, then read field by field from the text
 * model's object (the top level, or text_config for the multimodal
 * "gemma3").  A field left out takes the default of transformers'
 * configuration class for the model_type (the table `families` below);
 * JSON null means the same as absent except where transformers gives None a
 * meaning of its own (softcapping off, no sliding window, no BOS token,
 * num_key_value_heads / head_dim derived).  When a key appears twice the
 * last one wins, as with Python's json module.
 *
 * Both spellings are read: transformers 4.x (torch_dtype, rope_theta,
 * rope_scaling, sliding_window_pattern, rope_local_base_freq) and 5.x
 * (dtype, rope_parameters, layer_types, _sliding_window_pattern).  Where a
 * file has both, the 5.x value wins.
 *
 * Every failure returns a status and a message that starts with the file's
 * path and names the field; the struct is left zeroed, nothing allocated. */
#include "io/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/error.h"

/* config.json files are a few kB; anything past this is not one. */
#define CONFIG_MAX_BYTES ((long)16 << 20)

/* Bounds on the dimensions: each is below 2^24, so n_heads * head_dim fits
 * in an int and the product of any two dimensions fits in an int64. */
#define MAX_VOCAB (1 << 24)
#define MAX_HIDDEN (1 << 20)
#define MAX_INTERMEDIATE (1 << 22)
#define MAX_LAYERS (1 << 12)
#define MAX_HEADS (1 << 12)
#define MAX_HEAD_DIM (1 << 12)

/* ------------------------------------------------------------------ */
/* Families and their defaults                                          */
/* ------------------------------------------------------------------ */

/* Defaults of transformers' configuration classes (LlamaConfig,
 * Qwen2Config, Qwen3Config, Gemma2Config, Gemma3TextConfig). */
typedef struct family_info {
    const char *model_type;
    model_family family;
    int nested;          /* the text model sits under text_config */
    int vocab, hidden, intermediate, layers, heads;
    int kv_heads;        /* 0: = num_attention_heads */
    int head_dim;        /* 0: hidden_size / num_attention_heads */
    int max_pos;
    double eps, theta, local_theta;
    int tie, bos;        /* bos -1: None */
    double attn_softcap, final_softcap;
    int window;          /* sliding_window when absent (0: the class has none) */
    const char *act_key; /* the key the MLP reads */
    const char *act_default;
} family_info;

static const family_info families[] = {
    {"llama", FAMILY_LLAMA, 0, 32000, 4096, 11008, 32, 32, 0, 0, 2048, 1e-6, 10000.0, 10000.0,
     0, 1, 0.0, 0.0, 0, "hidden_act", "silu"},
    {"qwen2", FAMILY_QWEN2, 0, 151936, 4096, 22016, 32, 32, 32, 0, 32768, 1e-6, 10000.0, 10000.0,
     0, -1, 0.0, 0.0, 4096, "hidden_act", "silu"},
    {"qwen3", FAMILY_QWEN3, 0, 151936, 4096, 22016, 32, 32, 32, 128, 32768, 1e-6, 10000.0,
     10000.0, 0, -1, 0.0, 0.0, 4096, "hidden_act", "silu"},
    {"gemma2", FAMILY_GEMMA2, 0, 256000, 2304, 9216, 26, 8, 4, 256, 8192, 1e-6, 10000.0, 10000.0,
     1, 2, 50.0, 30.0, 4096, "hidden_activation", "gelu_pytorch_tanh"},
    {"gemma3_text", FAMILY_GEMMA3, 0, 262208, 2304, 9216, 26, 8, 4, 256, 131072, 1e-6, 1e6,
     10000.0, 1, 2, 0.0, 0.0, 4096, "hidden_activation", "gelu_pytorch_tanh"},
    {"gemma3", FAMILY_GEMMA3, 1, 262208, 2304, 9216, 26, 8, 4, 256, 131072, 1e-6, 1e6, 10000.0,
     1, 2, 0.0, 0.0, 4096, "hidden_activation", "gelu_pytorch_tanh"},
};

#define GEMMA_QUERY_PRE_ATTN_SCALAR 256.0
#define GEMMA3_SLIDING_PATTERN 6
#define QWEN_MAX_WINDOW_LAYERS 28

static int is_gemma(model_family f) { return f == FAMILY_GEMMA2 || f == FAMILY_GEMMA3; }

/* ------------------------------------------------------------------ */
/* Typed access to JSON fields                                          */
/* ------------------------------------------------------------------ */

/* A JSON object and how its keys are named in messages ("" or
 * "text_config.").  obj may be NULL: every key is then absent. */
typedef struct src {
    const cJSON *obj;
    const char *prefix;
} src;

typedef enum presence { ABSENT, IS_NULL, IS_SET } presence;

/* The last member named key, as Python's json keeps the last duplicate. */
static const cJSON *lookup(const cJSON *obj, const char *key)
{
    const cJSON *found = NULL;
    if (!cJSON_IsObject(obj)) return NULL;
    for (const cJSON *it = obj->child; it; it = it->next)
        if (it->string && strcmp(it->string, key) == 0) found = it;
    return found;
}

static presence probe(src s, const char *key, const cJSON **v)
{
    *v = lookup(s.obj, key);
    if (!*v) return ABSENT;
    return cJSON_IsNull(*v) ? IS_NULL : IS_SET;
}

static const char *kind_name(const cJSON *v)
{
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown value";
}

static int type_error(const char *path, src s, const char *key, const char *want, const cJSON *v)
{
    return infer_err(INFER_ERR_FORMAT, "%s: %s%s must be %s, not %s", path, s.prefix, key, want,
                     kind_name(v));
}

/* An integer in [lo, hi]; *out keeps its value (the default) when the key
 * is absent or null. */
static int read_int(const char *path, src s, const char *key, int lo, int hi, int *out)
{
    const cJSON *v;
    if (probe(s, key, &v) != IS_SET) return INFER_OK;
    if (!cJSON_IsNumber(v)) return type_error(path, s, key, "an integer", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return infer_err(INFER_ERR_FORMAT, "%s: %s%s must be an integer, not %g", path, s.prefix,
                         key, d);
    if (d < lo)
        return infer_err(INFER_ERR_FORMAT, "%s: %s%s must be at least %d, not %.15g", path,
                         s.prefix, key, lo, d);
    if (d > hi)
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s%s = %.15g is larger than the supported %d",
                         path, s.prefix, key, d, hi);
    *out = (int)d;
    return INFER_OK;
}

/* A finite number; *out keeps its value when absent or null. */
static int read_double(const char *path, src s, const char *key, double *out)
{
    const cJSON *v;
    if (probe(s, key, &v) != IS_SET) return INFER_OK;
    if (!cJSON_IsNumber(v)) return type_error(path, s, key, "a number", v);
    if (!isfinite(v->valuedouble))
        return infer_err(INFER_ERR_FORMAT, "%s: %s%s must be finite", path, s.prefix, key);
    *out = v->valuedouble;
    return INFER_OK;
}

/* A number > 0 (and below `below`, when below > 0). */
static int read_positive(const char *path, src s, const char *key, double below, double *out)
{
    int rc = read_double(path, s, key, out);
    if (rc) return rc;
    if (!(*out > 0.0) || (below > 0.0 && !(*out < below)))
        return infer_err(INFER_ERR_FORMAT, "%s: %s%s = %g is out of range", path, s.prefix, key,
                         *out);
    return INFER_OK;
}

static int read_bool(const char *path, src s, const char *key, int *out)
{
    const cJSON *v;
    if (probe(s, key, &v) != IS_SET) return INFER_OK;
    if (!cJSON_IsBool(v)) return type_error(path, s, key, "true or false", v);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return INFER_OK;
}

static int read_string(const char *path, src s, const char *key, const char **out)
{
    const cJSON *v;
    if (probe(s, key, &v) != IS_SET) return INFER_OK;
    if (!cJSON_IsString(v)) return type_error(path, s, key, "a string", v);
    *out = v->valuestring;
    return INFER_OK;
}

/* An object member (NULL when absent or null). */
static int read_object(const char *path, src s, const char *key, const cJSON **out)
{
    const cJSON *v;
    *out = NULL;
    if (probe(s, key, &v) != IS_SET) return INFER_OK;
    if (!cJSON_IsObject(v)) return type_error(path, s, key, "an object", v);
    *out = v;
    return INFER_OK;
}

/* Copies a string into a fixed buffer, or fails naming the field. */
static int copy_string(const char *path, const char *field, const char *value, char *dst,
                       size_t cap)
{
    size_t n = strlen(value);
    if (n >= cap)
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %s '%.40s...' is too long (%zu bytes)", path,
                         field, value, n);
    memcpy(dst, value, n + 1);
    return INFER_OK;
}

/* ------------------------------------------------------------------ */
/* The JSON text                                                        */
/* ------------------------------------------------------------------ */

/* Line and column (from 1) of byte off. */
static void position(const char *json, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (json[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static int syntax_error(const char *json, size_t len, size_t off, const char *path,
                        const char *what)
{
    int line, col;
    if (off > len) off = len;
    position(json, off, &line, &col);
    return infer_err(INFER_ERR_FORMAT, "%s: %s at line %d, column %d (byte %zu)", path, what, line,
                     col, off);
}

static int parse_json(const char *json, size_t len, const char *path, cJSON **out)
{
    const char *end = NULL;
    *out = NULL;
    if (len == 0) return infer_err(INFER_ERR_FORMAT, "%s: the file is empty", path);
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        return syntax_error(json, len, off, path, "invalid JSON");
    }
    size_t off = end && end >= json ? (size_t)(end - json) : len;
    while (off < len && (json[off] == ' ' || json[off] == '\t' || json[off] == '\n' ||
                         json[off] == '\r'))
        off++;
    if (off < len) {
        cJSON_Delete(root);
        return syntax_error(json, len, off, path, "unexpected data after the JSON value");
    }
    *out = root;
    return INFER_OK;
}

/* ------------------------------------------------------------------ */
/* Sections of the config                                               */
/* ------------------------------------------------------------------ */

static int read_model_type(const char *path, const cJSON *root, model_config *c,
                           const family_info **fam)
{
    src top = {root, ""};
    const cJSON *v;
    if (probe(top, "model_type", &v) != IS_SET)
        return infer_err(INFER_ERR_MISSING, "%s: model_type is missing", path);
    if (!cJSON_IsString(v)) return type_error(path, top, "model_type", "a string", v);
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (strcmp(v->valuestring, families[i].model_type) == 0) {
            *fam = &families[i];
            c->family = families[i].family;
            c->multimodal = families[i].nested;
            return copy_string(path, "model_type", v->valuestring, c->model_type,
                               sizeof c->model_type);
        }
    }
    return infer_err(INFER_ERR_UNSUPPORTED,
                     "%s: model_type '%.64s' is not supported (llama, qwen2, qwen3, gemma2, "
                     "gemma3_text, gemma3)",
                     path, v->valuestring);
}

static int read_architecture(const char *path, const cJSON *root, model_config *c)
{
    src top = {root, ""};
    const cJSON *v;
    if (probe(top, "architectures", &v) != IS_SET) return INFER_OK;
    if (!cJSON_IsArray(v)) return type_error(path, top, "architectures", "an array", v);
    const cJSON *first = cJSON_GetArrayItem(v, 0);
    if (!first) return INFER_OK;
    if (!cJSON_IsString(first)) return type_error(path, top, "architectures[0]", "a string", first);
    return copy_string(path, "architectures[0]", first->valuestring, c->architecture,
                       sizeof c->architecture);
}

/* num_key_value_heads and head_dim: defaults, None, and their checks. */
static int read_heads(const char *path, src s, const family_info *f, model_config *c)
{
    const cJSON *v;
    int rc;
    c->n_kv_heads = f->kv_heads ? f->kv_heads : c->n_heads;
    if (probe(s, "num_key_value_heads", &v) == IS_NULL) c->n_kv_heads = c->n_heads;
    if ((rc = read_int(path, s, "num_key_value_heads", 1, MAX_HEADS, &c->n_kv_heads))) return rc;

    presence hd = probe(s, "head_dim", &v);
    int derive = hd == IS_NULL || (hd == ABSENT && f->head_dim == 0);
    if (derive) {
        if (c->hidden_size % c->n_heads != 0)
            return infer_err(INFER_ERR_FORMAT,
                             "%s: %shidden_size (%d) is not a multiple of num_attention_heads "
                             "(%d) and head_dim is not given",
                             path, s.prefix, c->hidden_size, c->n_heads);
        c->head_dim = c->hidden_size / c->n_heads;
    } else {
        c->head_dim = f->head_dim;
        if ((rc = read_int(path, s, "head_dim", 1, MAX_HEAD_DIM, &c->head_dim))) return rc;
    }
    if (c->head_dim % 2 != 0)
        return infer_err(INFER_ERR_FORMAT, "%s: %shead_dim (%d) must be even for RoPE", path,
                         s.prefix, c->head_dim);
    if (c->n_heads % c->n_kv_heads != 0)
        return infer_err(INFER_ERR_FORMAT,
                         "%s: %snum_attention_heads (%d) is not a multiple of "
                         "num_key_value_heads (%d)",
                         path, s.prefix, c->n_heads, c->n_kv_heads);
    return INFER_OK;
}

static int read_dims(const char *path, src s, const family_info *f, model_config *c)
{
    int rc;
    c->vocab_size = f->vocab;
    c->hidden_size = f->hidden;
    c->intermediate_size = f->intermediate;
    c->n_layers = f->layers;
    c->n_heads = f->heads;
    c->max_position_embeddings = f->max_pos;
    c->rms_norm_eps = f->eps;
    if ((rc = read_int(path, s, "vocab_size", 1, MAX_VOCAB, &c->vocab_size)) ||
        (rc = read_int(path, s, "hidden_size", 1, MAX_HIDDEN, &c->hidden_size)) ||
        (rc = read_int(path, s, "intermediate_size", 1, MAX_INTERMEDIATE,
                       &c->intermediate_size)) ||
        (rc = read_int(path, s, "num_hidden_layers", 1, MAX_LAYERS, &c->n_layers)) ||
        (rc = read_int(path, s, "num_attention_heads", 1, MAX_HEADS, &c->n_heads)) ||
        (rc = read_int(path, s, "max_position_embeddings", 1, INT_MAX,
                       &c->max_position_embeddings)) ||
        (rc = read_positive(path, s, "rms_norm_eps", 1.0, &c->rms_norm_eps)))
        return rc;
    return read_heads(path, s, f, c);
}

static int read_activation(const char *path, src s, const family_info *f, model_config *c)
{
    /* Gemma's MLP reads hidden_activation (a hidden_act beside it is
     * ignored, as transformers does); the others read hidden_act. */
    const char *name = f->act_default;
    int rc = read_string(path, s, f->act_key, &name);
    if (rc) return rc;
    if (!strcmp(name, "silu") || !strcmp(name, "swish")) {
        c->act = ACT_SILU;
    } else if (!strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_tanh")) {
        c->act = ACT_GELU_TANH;
    } else {
        return infer_err(INFER_ERR_UNSUPPORTED,
                         "%s: %s%s '%.64s' is not supported (silu, gelu_pytorch_tanh)", path,
                         s.prefix, f->act_key, name);
    }
    return INFER_OK;
}

/* A softcapping value: absent -> the family's default, null or 0 -> off. */
static int read_softcap(const char *path, src s, const char *key, double def, double *out)
{
    const cJSON *v;
    presence p = probe(s, key, &v);
    *out = p == ABSENT ? def : 0.0;
    int rc = read_double(path, s, key, out);
    if (rc) return rc;
    if (*out < 0.0)
        return infer_err(INFER_ERR_FORMAT, "%s: %s%s = %g must not be negative", path, s.prefix,
                         key, *out);
    return INFER_OK;
}

/* Biases, norms, activation and the scales: the per-family math. */
static int read_math(const char *path, src s, const family_info *f, model_config *c)
{
    int rc, attention_bias = 0, mlp_bias = 0;
    model_family fam = f->family;
    if ((rc = read_bool(path, s, "attention_bias", &attention_bias))) return rc;
    if (fam == FAMILY_LLAMA && (rc = read_bool(path, s, "mlp_bias", &mlp_bias))) return rc;
    c->qkv_bias = fam == FAMILY_QWEN2 ? 1 : attention_bias;
    c->o_bias = fam == FAMILY_QWEN2 ? 0 : attention_bias;
    c->mlp_bias = mlp_bias;

    c->norm_plus_one = is_gemma(fam);
    c->sandwich_norms = is_gemma(fam);
    c->embed_scale = is_gemma(fam);
    c->qk_norm = fam == FAMILY_QWEN3 || fam == FAMILY_GEMMA3;
    if ((rc = read_activation(path, s, f, c))) return rc;

    c->attn_scale = 1.0 / sqrt((double)c->head_dim);
    if (is_gemma(fam)) {
        double scalar = GEMMA_QUERY_PRE_ATTN_SCALAR;
        if ((rc = read_positive(path, s, "query_pre_attn_scalar", 0.0, &scalar))) return rc;
        c->attn_scale = 1.0 / sqrt(scalar);
    }
    if ((rc = read_softcap(path, s, "attn_logit_softcapping", f->attn_softcap,
                           &c->attn_softcap)) ||
        (rc = read_softcap(path, s, "final_logit_softcapping", f->final_softcap,
                           &c->final_softcap)))
        return rc;
    return INFER_OK;
}

/* ------------------------------------------------------------------ */
/* RoPE                                                                 */
/* ------------------------------------------------------------------ */

/* A required number of a rope dict, > 0. */
static int rope_number(const char *path, src s, const char *key, const char *type, double *out)
{
    const cJSON *v;
    if (probe(s, key, &v) != IS_SET)
        return infer_err(INFER_ERR_MISSING, "%s: %s%s is required by rope_type '%s'", path,
                         s.prefix, key, type);
    return read_positive(path, s, key, 0.0, out);
}

static int rope_llama3(const char *path, src s, rope_config *r)
{
    double orig = 0.0;
    int rc;
    if ((rc = rope_number(path, s, "factor", "llama3", &r->factor)) ||
        (rc = rope_number(path, s, "low_freq_factor", "llama3", &r->low_freq_factor)) ||
        (rc = rope_number(path, s, "high_freq_factor", "llama3", &r->high_freq_factor)) ||
        (rc = rope_number(path, s, "original_max_position_embeddings", "llama3", &orig)))
        return rc;
    if (!(r->high_freq_factor > r->low_freq_factor))
        return infer_err(INFER_ERR_FORMAT,
                         "%s: %shigh_freq_factor (%g) must be greater than low_freq_factor (%g)",
                         path, s.prefix, r->high_freq_factor, r->low_freq_factor);
    r->original_max_position = 0;
    return read_int(path, s, "original_max_position_embeddings", 1, INT_MAX,
                    &r->original_max_position);
}

/* One rope description: a rope_scaling dict or a rope_parameters entry
 * (obj; NULL = default RoPE).  theta is used when obj has no rope_theta.
 * name is the field as messages spell it, with its trailing dot. */
static int rope_parse(const char *path, const char *name, const cJSON *obj, double theta,
                      int max_pos, rope_config *r)
{
    src s = {obj, name};
    const char *type = "default";
    int rc;
    memset(r, 0, sizeof *r);
    r->kind = ROPE_DEFAULT;
    r->theta = theta;
    r->factor = 1.0;
    if ((rc = read_string(path, s, "type", &type)) ||
        (rc = read_string(path, s, "rope_type", &type)) ||
        (rc = read_positive(path, s, "rope_theta", 0.0, &r->theta)))
        return rc;
    if (!strcmp(type, "default")) return INFER_OK;
    if (!strcmp(type, "linear")) {
        r->kind = ROPE_LINEAR;
        return rope_number(path, s, "factor", type, &r->factor);
    }
    if (!strcmp(type, "dynamic")) {
        /* transformers grows the base past max_position_embeddings and
         * does not read original_max_position_embeddings for this type. */
        r->kind = ROPE_DYNAMIC;
        r->original_max_position = max_pos;
        return rope_number(path, s, "factor", type, &r->factor);
    }
    if (!strcmp(type, "llama3")) {
        r->kind = ROPE_LLAMA3;
        return rope_llama3(path, s, r);
    }
    return infer_err(INFER_ERR_UNSUPPORTED,
                     "%s: %srope_type '%.64s' is not supported (default, linear, dynamic, llama3)",
                     path, name, type);
}

/* rope_parameters keyed by layer type (5.x Gemma 3) rather than flat. */
static int rope_nested(const cJSON *params)
{
    return lookup(params, "full_attention") || lookup(params, "sliding_attention");
}

static int read_rope(const char *path, src s, const family_info *f, model_config *c)
{
    const cJSON *params, *scaling, *global, *local = NULL;
    double theta = f->theta, local_theta = f->local_theta;
    char gname[96], lname[96], pname[96];
    int rc;
    if ((rc = read_object(path, s, "rope_parameters", &params)) ||
        (rc = read_object(path, s, "rope_scaling", &scaling)) ||
        (rc = read_positive(path, s, "rope_theta", 0.0, &theta)))
        return rc;
    if (f->family == FAMILY_GEMMA3 &&
        (rc = read_positive(path, s, "rope_local_base_freq", 0.0, &local_theta)))
        return rc;

    /* The global (full-attention) layers. */
    snprintf(gname, sizeof gname, "%srope_scaling.", s.prefix);
    global = scaling;
    if (params && rope_nested(params)) {
        src p = {params, pname};
        const cJSON *entry;
        snprintf(pname, sizeof pname, "%srope_parameters.", s.prefix);
        if ((rc = read_object(path, p, "full_attention", &entry)) ||
            (rc = read_object(path, p, "sliding_attention", &local)))
            return rc;
        if (entry) {
            global = entry;
            snprintf(gname, sizeof gname, "%srope_parameters.full_attention.", s.prefix);
        }
    } else if (params) {
        global = params;
        snprintf(gname, sizeof gname, "%srope_parameters.", s.prefix);
    }
    if ((rc = rope_parse(path, gname, global, theta, c->max_position_embeddings,
                         &c->rope_global)))
        return rc;

    /* The sliding layers: their own entry, Gemma 3's unscaled local base,
     * or the same as the global layers. */
    if (local) {
        snprintf(lname, sizeof lname, "%srope_parameters.sliding_attention.", s.prefix);
        double fallback = f->family == FAMILY_GEMMA3 ? local_theta : theta;
        return rope_parse(path, lname, local, fallback, c->max_position_embeddings,
                          &c->rope_local);
    }
    if (f->family == FAMILY_GEMMA3)
        return rope_parse(path, "", NULL, local_theta, c->max_position_embeddings, &c->rope_local);
    c->rope_local = c->rope_global;
    return INFER_OK;
}

/* ------------------------------------------------------------------ */
/* Sliding windows                                                      */
/* ------------------------------------------------------------------ */

/* layer_types: one "sliding_attention" / "full_attention" per layer. */
static int read_layer_types(const char *path, src s, const cJSON *types, model_config *c)
{
    int n = cJSON_GetArraySize(types);
    if (n != c->n_layers)
        return infer_err(INFER_ERR_FORMAT,
                         "%s: %slayer_types has %d entries but num_hidden_layers is %d", path,
                         s.prefix, n, c->n_layers);
    int i = 0;
    for (const cJSON *it = types->child; it; it = it->next, i++) {
        const char *t = cJSON_IsString(it) ? it->valuestring : NULL;
        if (t && !strcmp(t, "sliding_attention")) {
            c->layer_sliding[i] = 1;
        } else if (!t || strcmp(t, "full_attention") != 0) {
            return infer_err(INFER_ERR_FORMAT,
                             "%s: %slayer_types[%d] must be \"sliding_attention\" or "
                             "\"full_attention\"",
                             path, s.prefix, i);
        }
    }
    return INFER_OK;
}

/* The pattern each family uses when layer_types is absent. */
static int default_layer_types(const char *path, src s, const family_info *f, int window_set,
                               model_config *c)
{
    int rc, pattern = GEMMA3_SLIDING_PATTERN, first = QWEN_MAX_WINDOW_LAYERS;
    switch (f->family) {
    case FAMILY_GEMMA2:
        for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = i % 2 == 0;
        break;
    case FAMILY_GEMMA3:
        if ((rc = read_int(path, s, "sliding_window_pattern", 1, INT_MAX, &pattern)) ||
            (rc = read_int(path, s, "_sliding_window_pattern", 1, INT_MAX, &pattern)))
            return rc;
        for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = (i + 1) % pattern != 0;
        break;
    case FAMILY_QWEN2:
    case FAMILY_QWEN3:
        /* window_set already says use_sliding_window. */
        if ((rc = read_int(path, s, "max_window_layers", 0, INT_MAX, &first))) return rc;
        for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = window_set && i >= first;
        break;
    case FAMILY_LLAMA:
        break;
    }
    return INFER_OK;
}

static int read_sliding(const char *path, src s, const family_info *f, model_config *c)
{
    const cJSON *v, *types;
    int rc, use = 1, window = f->window;
    c->layer_sliding = calloc((size_t)c->n_layers, 1);
    if (!c->layer_sliding)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory for %d layers", path,
                         c->n_layers);
    if (f->family == FAMILY_LLAMA) return INFER_OK; /* no sliding windows */

    presence wp = probe(s, "sliding_window", &v);
    if ((rc = read_int(path, s, "sliding_window", 0, INT_MAX, &window))) return rc;
    /* Qwen sets sliding_window to None unless use_sliding_window. */
    if (f->family == FAMILY_QWEN2 || f->family == FAMILY_QWEN3) {
        use = 0;
        if ((rc = read_bool(path, s, "use_sliding_window", &use))) return rc;
    }
    int window_set = wp != IS_NULL && use;

    if (probe(s, "layer_types", &types) == IS_SET) {
        if (!cJSON_IsArray(types)) return type_error(path, s, "layer_types", "an array", types);
        rc = read_layer_types(path, s, types, c);
    } else {
        rc = default_layer_types(path, s, f, window_set, c);
    }
    if (rc) return rc;

    int any = 0;
    for (int i = 0; i < c->n_layers; i++) any |= c->layer_sliding[i];
    if (any && !window_set)
        return infer_err(INFER_ERR_MISSING,
                         "%s: %ssliding_window is %s but some layers use sliding attention", path,
                         s.prefix, use ? "null" : "off (use_sliding_window is false)");
    if (any && window < 1)
        return infer_err(INFER_ERR_FORMAT, "%s: %ssliding_window must be at least 1, not %d",
                         path, s.prefix, window);
    c->sliding_window = any ? window : 0;
    return INFER_OK;
}

/* ------------------------------------------------------------------ */
/* Fields that may sit at the top level of a multimodal config          */
/* ------------------------------------------------------------------ */

/* The text config's value if it has the key, else the top level's. */
static src pick(src text, src top, const char *key)
{
    const cJSON *v;
    return probe(text, key, &v) != ABSENT ? text : top;
}

/* dtype (5.x) wins over torch_dtype (4.x), the top level over text_config. */
static int read_dtype(const char *path, src text, src top, model_config *c)
{
    const char *dtype = "";
    const src from[2] = {text, top};
    int rc;
    for (int i = 0; i < 2; i++)
        if ((rc = read_string(path, from[i], "torch_dtype", &dtype)) ||
            (rc = read_string(path, from[i], "dtype", &dtype)))
            return rc;
    return copy_string(path, "dtype", dtype, c->dtype, sizeof c->dtype);
}

static int read_misc(const char *path, src text, src top, const family_info *f, model_config *c)
{
    const cJSON *v;
    int rc, bidirectional = 0;

    src b = pick(text, top, "bos_token_id");
    c->bos_token_id = probe(b, "bos_token_id", &v) == IS_NULL ? -1 : f->bos;
    if ((rc = read_int(path, b, "bos_token_id", 0, INT_MAX, &c->bos_token_id))) return rc;

    c->tie_word_embeddings = f->tie;
    if ((rc = read_bool(path, pick(text, top, "tie_word_embeddings"), "tie_word_embeddings",
                        &c->tie_word_embeddings)) ||
        (rc = read_dtype(path, text, top, c)))
        return rc;

    if ((rc = read_bool(path, text, "use_bidirectional_attention", &bidirectional)) ||
        (rc = read_bool(path, top, "use_bidirectional_attention", &bidirectional)))
        return rc;
    if (bidirectional)
        return infer_err(INFER_ERR_UNSUPPORTED,
                         "%s: use_bidirectional_attention = true is not supported", path);
    return INFER_OK;
}

/* ------------------------------------------------------------------ */
/* MLX quantization                                                     */
/* ------------------------------------------------------------------ */

static int quant_bits_valid(int b) { return b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8; }
static int quant_group_valid(int g) { return g == 32 || g == 64 || g == 128; }

/* group_size, bits and mode of a quantization object or of one module's
 * entry (name is its field, with a trailing dot).  bits and group_size
 * keep their values (the defaults) when absent unless required. */
static int read_quant_params(const char *path, const char *name, const cJSON *obj, int required, int *bits,
                             int *group_size)
{
    src s = {obj, name};
    const cJSON *v;
    const char *mode = "affine";
    int rc;
    if (required && probe(s, "group_size", &v) != IS_SET)
        return infer_err(INFER_ERR_MISSING, "%s: %sgroup_size is missing", path, name);
    if (required && probe(s, "bits", &v) != IS_SET)
        return infer_err(INFER_ERR_MISSING, "%s: %sbits is missing", path, name);
    if ((rc = read_int(path, s, "group_size", 1, INT_MAX, group_size)) ||
        (rc = read_int(path, s, "bits", 1, INT_MAX, bits)) || (rc = read_string(path, s, "mode", &mode)))
        return rc;
    if (strcmp(mode, "affine") != 0)
        return infer_err(INFER_ERR_UNSUPPORTED,
                         "%s: %smode '%.32s' is not supported (only MLX's \"affine\" quantization)", path, name,
                         mode);
    if (!quant_bits_valid(*bits))
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %sbits = %d is not supported (2, 3, 4, 5, 6 or 8)", path,
                         name, *bits);
    if (!quant_group_valid(*group_size))
        return infer_err(INFER_ERR_UNSUPPORTED, "%s: %sgroup_size = %d is not supported (32, 64 or 128)", path,
                         name, *group_size);
    return INFER_OK;
}

/* The per-module entries: members whose value is an object, true or false
 * (other members, such as the top-level settings, are not modules). */
static int read_quant_overrides(const char *path, const char *name, const cJSON *q, model_config *c)
{
    int n = 0;
    for (const cJSON *it = q->child; it; it = it->next)
        if (it->string && (cJSON_IsObject(it) || cJSON_IsBool(it))) n++;
    if (n == 0) return INFER_OK;
    c->quant_over = calloc((size_t)n, sizeof *c->quant_over);
    if (!c->quant_over) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    for (const cJSON *it = q->child; it; it = it->next) {
        if (!it->string || !(cJSON_IsObject(it) || cJSON_IsBool(it))) continue;
        quant_override *o = &c->quant_over[c->n_quant_over];
        if (!(o->path = strdup(it->string))) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        c->n_quant_over++;
        o->quantized = !cJSON_IsFalse(it);
        o->bits = c->quant_bits;
        o->group_size = c->quant_group_size;
        if (cJSON_IsObject(it)) {
            /* mlx's to_quantized defaults for keys an entry leaves out */
            char field[352];
            int rc;
            snprintf(field, sizeof field, "%s%.256s.", name, it->string);
            o->bits = 4;
            o->group_size = 64;
            if ((rc = read_quant_params(path, field, it, 0, &o->bits, &o->group_size))) return rc;
        }
    }
    return INFER_OK;
}

/* "quantization" (what mlx-lm reads), else "quantization_config", else
 * text_config's "quantization_config". */
static int read_quant(const char *path, src text, src top, model_config *c)
{
    static const char *const keys[] = {"quantization", "quantization_config"};
    const cJSON *q = NULL;
    char name[64] = "";
    int rc;
    for (int i = 0; i < 2 && !q; i++) {
        if ((rc = read_object(path, top, keys[i], &q))) return rc;
        snprintf(name, sizeof name, "%s.", keys[i]);
    }
    if (!q && text.obj != top.obj) {
        if ((rc = read_object(path, text, "quantization_config", &q))) return rc;
        snprintf(name, sizeof name, "%squantization_config.", text.prefix);
    }
    if (!q) return INFER_OK;
    const cJSON *method = lookup(q, "quant_method");
    if (method)
        return infer_err(INFER_ERR_UNSUPPORTED,
                         "%s: %squant_method %s%s%s is not supported (only MLX's affine quantization: "
                         "group_size, bits)",
                         path, name, cJSON_IsString(method) ? "'" : "",
                         cJSON_IsString(method) ? method->valuestring : kind_name(method),
                         cJSON_IsString(method) ? "'" : "");
    if ((rc = read_quant_params(path, name, q, 1, &c->quant_bits, &c->quant_group_size))) return rc;
    return read_quant_overrides(path, name, q, c);
}

const quant_override *config_quant_override(const model_config *cfg, const char *module)
{
    for (int i = cfg->n_quant_over - 1; i >= 0; i--) /* the last duplicate wins */
        if (!strcmp(cfg->quant_over[i].path, module)) return &cfg->quant_over[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Entry points                                                         */
/* ------------------------------------------------------------------ */

static int fill(const cJSON *root, const char *path, model_config *c)
{
    const family_info *f = NULL;
    src top = {root, ""}, text = top;
    int rc;
    if (!cJSON_IsObject(root))
        return infer_err(INFER_ERR_FORMAT, "%s: the top level must be an object, not %s", path,
                         kind_name(root));
    if ((rc = read_model_type(path, root, c, &f))) return rc;
    if (f->nested) {
        /* Absent or null text_config: every field takes its default. */
        text.prefix = "text_config.";
        if ((rc = read_object(path, top, "text_config", &text.obj))) return rc;
    }
    if ((rc = read_architecture(path, root, c)) || (rc = read_dims(path, text, f, c)) ||
        (rc = read_math(path, text, f, c)) || (rc = read_rope(path, text, f, c)) ||
        (rc = read_sliding(path, text, f, c)) || (rc = read_misc(path, text, top, f, c)) ||
        (rc = read_quant(path, text, top, c)))
        return rc;
    return INFER_OK;
}

int config_parse(const char *json, size_t len, const char *path, model_config *out)
{
    cJSON *root;
    int rc;
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "config_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) path = "config.json";
    if (!json && len) return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: no text", path);
    if ((rc = parse_json(json, len, path, &root))) return rc;
    rc = fill(root, path, out);
    cJSON_Delete(root);
    if (rc) config_free(out);
    return rc;
}

static int read_small_file(const char *path, char **buf, size_t *len);

int config_read_file(const char *path, char **buf, size_t *len)
{
    return read_small_file(path, buf, len);
}

/* Reads a whole small file; *buf is malloc'ed. */
static int read_small_file(const char *path, char **buf, size_t *len)
{
    struct stat st;
    FILE *fp = fopen(path, "rb");
    *buf = NULL;
    if (!fp) {
        if (errno == ENOENT) return infer_err(INFER_ERR_MISSING, "%s: no such file", path);
        return infer_err(INFER_ERR_IO, "%s: %s", path, strerror(errno));
    }
    int rc = INFER_OK;
    if (fstat(fileno(fp), &st) != 0) {
        rc = infer_err(INFER_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = infer_err(INFER_ERR_IO, "%s: not a regular file", path);
    } else if (st.st_size > CONFIG_MAX_BYTES) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: %lld bytes is too large for a config", path,
                       (long long)st.st_size);
    } else if (!(*buf = malloc((size_t)st.st_size + 1))) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    } else {
        *len = fread(*buf, 1, (size_t)st.st_size, fp);
        if (ferror(fp) || *len != (size_t)st.st_size)
            rc = infer_err(INFER_ERR_IO, "%s: read failed", path);
    }
    fclose(fp);
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

int config_load(const char *dir, model_config *out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "config_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir) return infer_err(INFER_ERR_INVALID_ARGUMENT, "config_load: dir is NULL");
    size_t n = strlen(dir);
    const char *sep = n && dir[n - 1] == '/' ? "" : "/";
    char *path = malloc(n + sizeof "/config.json");
    if (!path) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    snprintf(path, n + sizeof "/config.json", "%s%sconfig.json", dir, sep);
    char *buf;
    size_t len = 0;
    int rc = read_small_file(path, &buf, &len);
    if (!rc) rc = config_parse(buf, len, path, out);
    free(buf);
    free(path);
    return rc;
}

void config_free(model_config *cfg)
{
    if (!cfg) return;
    free(cfg->layer_sliding);
    for (int i = 0; i < cfg->n_quant_over; i++) free(cfg->quant_over[i].path);
    free(cfg->quant_over);
    memset(cfg, 0, sizeof *cfg);
}
