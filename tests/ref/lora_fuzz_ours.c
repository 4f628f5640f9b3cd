/* lora_fuzz_ours.c - the library's side of tests/ref/lora_fuzz.py: trains
 * one case folder's adapter as its case.json says, on the cpu backend, and
 * prints {"losses": [...], "grad_norms": [...], "lrs": [...]}, a step each.
 *
 *   lora_fuzz_ours CASE_DIR
 *
 * Built by hand against the static library (lora_fuzz.py says how); not
 * part of the build or of the tests. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"

static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    cJSON *j = NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        j = cJSON_Parse(buf);
    }
    free(buf);
    fclose(f);
    return j;
}

static double num(const cJSON *o, const char *key) { return cJSON_GetObjectItem(o, key)->valuedouble; }

static int fail(const char *what)
{
    fprintf(stderr, "lora_fuzz_ours: %s: %s\n", what, infer_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lora_fuzz_ours CASE_DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/case.json", argv[1]);
    cJSON *c = read_json(path);
    if (!c) {
        fprintf(stderr, "lora_fuzz_ours: cannot read %s\n", path);
        return 1;
    }
    infer_load_opts lo;
    infer_load_opts_default(&lo);
    lo.backend = "cpu";
    infer_model *m;
    snprintf(path, sizeof path, "%s/model", argv[1]);
    if (infer_model_load(path, &lo, &m)) return fail(path);
    infer_lora *l;
    snprintf(path, sizeof path, "%s/adapter", argv[1]);
    if (infer_lora_load(m, path, &l)) return fail(path);

    const cJSON *o = cJSON_GetObjectItem(c, "opt");
    infer_train_opts to;
    infer_train_opts_default(&to);
    to.lr = (float)num(o, "lr");
    to.beta1 = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(o, "betas"), 0)->valuedouble;
    to.beta2 = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(o, "betas"), 1)->valuedouble;
    to.eps = (float)num(o, "eps");
    to.weight_decay = (float)num(o, "weight_decay");
    to.max_grad_norm = (float)num(o, "max_norm");
    const int steps = cJSON_GetObjectItem(o, "steps")->valueint;
    if (!strcmp(cJSON_GetObjectItem(o, "schedule")->valuestring, "cosine")) {
        to.schedule = INFER_LR_COSINE;
        to.warmup_steps = cJSON_GetObjectItem(o, "warmup")->valueint;
        to.total_steps = steps;
    }
    to.grad_checkpoint = cJSON_IsTrue(cJSON_GetObjectItem(c, "checkpoint"));
    infer_trainer *t;
    if (infer_trainer_new(l, &to, &t)) return fail("trainer");

    const cJSON *b = cJSON_GetObjectItem(c, "batch");
    const cJSON *ids = cJSON_GetObjectItem(b, "ids"), *lens = cJSON_GetObjectItem(b, "lens"),
                *prompt = cJSON_GetObjectItem(b, "prompt_lens");
    const int B = cJSON_GetArraySize(ids);
    infer_train_example ex[8];
    int32_t *rows[8];
    if (B < 1 || B > 8) return 1;
    for (int i = 0; i < B; i++) {
        const size_t n = (size_t)cJSON_GetArrayItem(lens, i)->valueint;
        rows[i] = malloc(n * sizeof *rows[i]);
        if (!rows[i]) return 1;
        for (size_t k = 0; k < n; k++) rows[i][k] = cJSON_GetArrayItem(cJSON_GetArrayItem(ids, i), (int)k)->valueint;
        ex[i] = (infer_train_example){rows[i], n, (size_t)cJSON_GetArrayItem(prompt, i)->valueint};
    }
    /* micro-batches: the examples in one batch or cut in two */
    const int n_micro = cJSON_GetObjectItem(c, "micro")->valueint == 2 && B > 1 ? 2 : 1;
    infer_train_batch micro[2] = {{ex, n_micro == 2 ? (size_t)B / 2 : (size_t)B}, {ex + B / 2, (size_t)(B - B / 2)}};

    cJSON *out = cJSON_CreateObject();
    cJSON *ls = cJSON_AddArrayToObject(out, "losses"), *gn = cJSON_AddArrayToObject(out, "grad_norms"),
          *lr = cJSON_AddArrayToObject(out, "lrs");
    for (int s = 0; s < steps; s++) {
        infer_step_result r;
        if (infer_train_step(t, micro, n_micro, &r)) return fail("step");
        cJSON_AddItemToArray(ls, cJSON_CreateNumber(r.loss));
        cJSON_AddItemToArray(gn, cJSON_CreateNumber(r.grad_norm));
        cJSON_AddItemToArray(lr, cJSON_CreateNumber(r.lr));
    }
    char *json = cJSON_PrintUnformatted(out);
    if (!json) return 1;
    puts(json);
    free(json);
    cJSON_Delete(out);
    for (int i = 0; i < B; i++) free(rows[i]);
    infer_trainer_free(t);
    infer_lora_free(l);
    infer_model_free(m);
    cJSON_Delete(c);
    return 0;
}
