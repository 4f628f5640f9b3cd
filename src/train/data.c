/* data.c - training data sets as mlx-lm reads them: JSON Lines, each
 * line one of
 *   {"text": ...}                      encode(text) with the tokenizer's
 *                                      specials, EOS appended unless last;
 *   {"prompt": ..., "completion": ...} the chat template over [user prompt,
 *                                      assistant completion];
 *   {"messages": [{"role", "content"}, ...]}  the chat template over them;
 * (the first line decides the format for the file, as mlx-lm's
 * create_dataset does).  With prompt masking the prompt is what the
 * template renders for every message but the last with the generation
 * prompt added; its tokens do not count in the loss.  Text data sets have
 * no prompt: masking them is an error, as in mlx-lm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "infer.h"

struct infer_dataset {
    size_t n;
    infer_train_example *ex;
};

size_t infer_dataset_size(const infer_dataset *d) { return d ? d->n : 0; }

const infer_train_example *infer_dataset_example(const infer_dataset *d, size_t i)
{
    return d && i < d->n ? &d->ex[i] : NULL;
}

void infer_dataset_free(infer_dataset *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) infer_free((void *)d->ex[i].ids);
    free(d->ex);
    free(d);
}

enum { FMT_TEXT = 1, FMT_COMPLETION, FMT_CHAT };

/* The tokens of messages rendered with the template (add_gen: with the
 * generation prompt). */
static int render_ids(const infer_tokenizer *tok, const infer_message *m, size_t n, int add_gen, int32_t **ids,
                      size_t *n_ids)
{
    infer_chat_opts co;
    infer_chat_opts_default(&co);
    co.add_generation_prompt = add_gen;
    char *text;
    size_t len;
    int rc = infer_chat_render(tok, m, n, &co, &text, &len);
    if (rc) return rc;
    rc = infer_tokenize(tok, text, len, 0, ids, n_ids);
    infer_free(text);
    return rc;
}

/* One line's example; *fmt is set by the first line. */
static int parse_line(const infer_tokenizer *tok, const cJSON *j, int *fmt, int mask, infer_train_example *ex,
                      const char *where)
{
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text"),
                *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt"),
                *comp = cJSON_GetObjectItemCaseSensitive(j, "completion"),
                *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!*fmt) {
        *fmt = prompt && comp ? FMT_COMPLETION : msgs ? FMT_CHAT : text ? FMT_TEXT : 0;
        if (!*fmt)
            return infer_err(INFER_ERR_FORMAT, "%s: want {\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"}",
                             where);
        if (*fmt == FMT_TEXT && mask)
            return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: prompt masking needs prompts: a text data set has none",
                             where);
    }
    int32_t *ids = NULL, *pids = NULL;
    size_t n = 0, pn = 0;
    int rc;
    infer_tokenizer_info ti;
    if ((rc = infer_tokenizer_get_info(tok, &ti))) return rc;
    if (*fmt == FMT_TEXT) {
        if (!cJSON_IsString(text)) return infer_err(INFER_ERR_FORMAT, "%s: \"text\" is not a string", where);
        if ((rc = infer_tokenize(tok, text->valuestring, (size_t)-1, 1, &ids, &n))) return infer_err_prefix(rc, "%s", where);
        if (ti.eos_id >= 0 && (n == 0 || ids[n - 1] != ti.eos_id)) {
            int32_t *g = realloc(ids, (n + 1) * sizeof *ids);
            if (!g) {
                infer_free(ids);
                return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
            }
            ids = g;
            ids[n++] = ti.eos_id;
        }
    } else {
        infer_message m[256];
        size_t nm = 0;
        if (*fmt == FMT_COMPLETION) {
            if (!cJSON_IsString(prompt) || !cJSON_IsString(comp))
                return infer_err(INFER_ERR_FORMAT, "%s: \"prompt\" and \"completion\" must be strings", where);
            m[0] = (infer_message){"user", prompt->valuestring};
            m[1] = (infer_message){"assistant", comp->valuestring};
            nm = 2;
        } else {
            if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) < 1)
                return infer_err(INFER_ERR_FORMAT, "%s: \"messages\" is not a list of messages", where);
            const cJSON *it;
            cJSON_ArrayForEach(it, msgs)
            {
                const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role"),
                            *content = cJSON_GetObjectItemCaseSensitive(it, "content");
                if (!cJSON_IsString(role) || !cJSON_IsString(content))
                    return infer_err(INFER_ERR_FORMAT, "%s: message %zu needs string \"role\" and \"content\"", where, nm);
                if (nm == sizeof m / sizeof m[0])
                    return infer_err(INFER_ERR_UNSUPPORTED, "%s: more than %zu messages", where, sizeof m / sizeof m[0]);
                m[nm++] = (infer_message){role->valuestring, content->valuestring};
            }
        }
        if ((rc = render_ids(tok, m, nm, 0, &ids, &n))) return infer_err_prefix(rc, "%s", where);
        if (mask) {
            if ((rc = render_ids(tok, m, nm - 1, 1, &pids, &pn))) {
                infer_free(ids);
                return infer_err_prefix(rc, "%s", where);
            }
            infer_free(pids);
        }
    }
    if (n < 2) {
        infer_free(ids);
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: %zu tokens (want 2 or more)", where, n);
    }
    *ex = (infer_train_example){ids, n, mask ? (pn < n ? pn : n) : 0};
    return INFER_OK;
}

int infer_dataset_load(const infer_tokenizer *tok, const char *path, int mask_prompt, infer_dataset **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_dataset_load: NULL argument");
    *out = NULL;
    if (!tok || !path) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_dataset_load: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return infer_err(INFER_ERR_MISSING, "%s: cannot open", path);
    infer_dataset *d = calloc(1, sizeof *d);
    size_t cap = 0, lineno = 0, llen = 0;
    char *line = NULL;
    int rc = d ? INFER_OK : infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path), fmt = 0;
    ssize_t got;
    while (!rc && (got = getline(&line, &llen, f)) >= 0) {
        lineno++;
        size_t k = (size_t)got;
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r' || line[k - 1] == ' ')) k--;
        if (k == 0) continue;
        char where[4200];
        snprintf(where, sizeof where, "%s:%zu", path, lineno);
        cJSON *j = cJSON_ParseWithLength(line, k);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            rc = infer_err(INFER_ERR_FORMAT, "%s: not a JSON object", where);
            break;
        }
        if (d->n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            infer_train_example *g = realloc(d->ex, nc * sizeof *g);
            if (!g) {
                cJSON_Delete(j);
                rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
                break;
            }
            d->ex = g;
            cap = nc;
        }
        rc = parse_line(tok, j, &fmt, mask_prompt, &d->ex[d->n], where);
        cJSON_Delete(j);
        if (!rc) d->n++;
    }
    free(line);
    fclose(f);
    if (!rc && d->n == 0) rc = infer_err(INFER_ERR_INVALID_ARGUMENT, "%s: no examples", path);
    if (rc) {
        infer_dataset_free(d);
        return rc;
    }
    *out = d;
    return INFER_OK;
}
