/* genconfig.c - generation_config.json: sampling defaults and EOS ids. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/config.h"

static int num(const cJSON *o, const char *key, const char *path, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return INFER_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return infer_err(INFER_ERR_FORMAT, "%s: %s must be a number in [%g, %g]", path, key, lo, hi);
    *out = v->valuedouble;
    return INFER_OK;
}

static int parse(const cJSON *o, const char *path, gen_config *g)
{
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(o, "do_sample");
    if (ds && !cJSON_IsNull(ds)) {
        if (!cJSON_IsBool(ds)) return infer_err(INFER_ERR_FORMAT, "%s: do_sample must be true or false", path);
        g->do_sample = cJSON_IsTrue(ds);
    }
    double t = g->temperature, p = g->top_p, mp = g->min_p, rp = g->repetition_penalty, k = g->top_k;
    int rc;
    if ((rc = num(o, "temperature", path, 0, 1e6, &t)) || (rc = num(o, "top_p", path, 0, 1, &p)) ||
        (rc = num(o, "min_p", path, 0, 1, &mp)) || (rc = num(o, "repetition_penalty", path, 1e-6, 1e6, &rp)) ||
        (rc = num(o, "top_k", path, 0, 1e9, &k)))
        return rc;
    g->temperature = (float)t;
    g->top_p = (float)p;
    g->min_p = (float)mp;
    g->repetition_penalty = (float)rp;
    g->top_k = (int)k;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id"), *x;
    if (cJSON_IsNumber(e)) {
        g->eos[g->n_eos++] = e->valueint;
    } else if (cJSON_IsArray(e)) {
        cJSON_ArrayForEach(x, e)
        {
            if (!cJSON_IsNumber(x)) return infer_err(INFER_ERR_FORMAT, "%s: eos_token_id holds a non-number", path);
            if (g->n_eos < (int)(sizeof g->eos / sizeof g->eos[0])) g->eos[g->n_eos++] = x->valueint;
        }
    }
    return INFER_OK;
}

int gen_config_load(const char *dir, gen_config *g)
{
    memset(g, 0, sizeof *g);
    /* transformers' GenerationConfig defaults */
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->top_k = 50;
    g->repetition_penalty = 1.0f;
    size_t n = strlen(dir) + sizeof "/generation_config.json";
    char *path = malloc(n);
    if (!path) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    snprintf(path, n, "%s/generation_config.json", dir);
    char *buf = NULL;
    size_t len = 0;
    int rc = config_read_file(path, &buf, &len);
    if (rc == INFER_ERR_MISSING) {
        infer_err_clear();
        free(path);
        return INFER_OK;
    }
    if (rc == INFER_OK) {
        cJSON *o = cJSON_ParseWithLength(buf, len);
        if (!cJSON_IsObject(o))
            rc = infer_err(INFER_ERR_FORMAT, "%s: malformed JSON", path);
        else
            rc = parse(o, path, g);
        cJSON_Delete(o);
        g->present = rc == INFER_OK;
    }
    free(buf);
    free(path);
    return rc;
}
