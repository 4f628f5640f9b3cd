/* data.c - training data sets as mlx-lm reads them: JSON Lines, each
 * line one of
 *   {"text": ...}                      encode(text) with the tokenizer's
 *                                      specials, EOS appended unless last;
 *   {"prompt": ..., "completion": ...} the chat template over [user prompt,
 *                                      assistant completion];
 *   {"messages": [{"role", "content"}, ...]}  the chat template over them;
 * (the first line decides the format for the file, as mlx-lm's
 * create_dataset does).  The template gets the line's messages as they
 * are, so that tool calls ("tool_calls", role "tool", content null or a
 * list of parts) render as apply_chat_template renders them, and the
 * line's "tools" if it has them (both formats, as mlx-lm passes them).
 * With prompt masking the prompt is what the template renders for every
 * message but the last with the generation prompt added; its tokens do
 * not count in the loss.  Text data sets have no prompt: masking them is
 * an error, as in mlx-lm. */
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

/* The tokens of the template over the first n of msgs (a JSON array of
 * message objects), with tools (NULL: none) and add_gen (the generation
 * prompt): the messages and tools reach the template as JSON values, as
 * apply_chat_template passes its arguments. */
static int render_ids(const infer_tokenizer *tok, const cJSON *msgs, int n, const cJSON *tools, int add_gen,
                      int32_t **ids, size_t *n_ids)
{
    cJSON *kw = cJSON_CreateObject(), *arr = kw ? cJSON_AddArrayToObject(kw, "messages") : NULL;
    int ok = arr != NULL, i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, msgs)
    {
        if (!ok || i++ == n) break;
        cJSON *c = cJSON_Duplicate(it, 1);
        ok = c && cJSON_AddItemToArray(arr, c);
    }
    if (ok && tools) {
        cJSON *c = cJSON_Duplicate(tools, 1);
        ok = c && cJSON_AddItemToObject(kw, "tools", c);
    }
    char *json = ok ? cJSON_PrintUnformatted(kw) : NULL;
    cJSON_Delete(kw);
    if (!json) return infer_err(INFER_ERR_OUT_OF_MEMORY, "out of memory");
    infer_chat_opts co;
    infer_chat_opts_default(&co);
    co.add_generation_prompt = add_gen;
    co.template_kwargs = json;
    char *text;
    size_t len;
    int rc = infer_chat_render(tok, NULL, 0, &co, &text, &len);
    cJSON_free(json);
    if (rc) return rc;
    rc = infer_tokenize(tok, text, len, 0, ids, n_ids);
    infer_free(text);
    return rc;
}

/* {"role": role, "content": content}, or NULL when out of memory. */
static cJSON *message_json(const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    if (m && (!cJSON_AddStringToObject(m, "role", role) || !cJSON_AddStringToObject(m, "content", content))) {
        cJSON_Delete(m);
        m = NULL;
    }
    return m;
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
        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(j, "tools");
        if (cJSON_IsNull(tools)) tools = NULL;
        cJSON *own = NULL; /* the completion format's two messages */
        const cJSON *list = msgs;
        if (*fmt == FMT_COMPLETION) {
            if (!cJSON_IsString(prompt) || !cJSON_IsString(comp))
                return infer_err(INFER_ERR_FORMAT, "%s: \"prompt\" and \"completion\" must be strings", where);
            own = cJSON_CreateArray();
            cJSON *u = message_json("user", prompt->valuestring), *a = message_json("assistant", comp->valuestring);
            if (!own || !u || !a) {
                cJSON_Delete(own);
                cJSON_Delete(u);
                cJSON_Delete(a);
                return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
            }
            cJSON_AddItemToArray(own, u);
            cJSON_AddItemToArray(own, a);
            list = own;
        } else {
            if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) < 1)
                return infer_err(INFER_ERR_FORMAT, "%s: \"messages\" is not a list of messages", where);
            const cJSON *it;
            size_t i = 0;
            cJSON_ArrayForEach(it, msgs)
            {
                if (!cJSON_IsObject(it) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it, "role")))
                    return infer_err(INFER_ERR_FORMAT, "%s: message %zu is not an object with a string \"role\"", where, i);
                i++;
            }
        }
        if (tools && !cJSON_IsArray(tools)) {
            cJSON_Delete(own);
            return infer_err(INFER_ERR_FORMAT, "%s: \"tools\" is not a list", where);
        }
        const int nm = cJSON_GetArraySize(list);
        rc = render_ids(tok, list, nm, tools, 0, &ids, &n);
        if (!rc && mask) {
            rc = render_ids(tok, list, nm - 1, tools, 1, &pids, &pn);
            if (rc) infer_free(ids);
            infer_free(pids);
        }
        cJSON_Delete(own);
        if (rc) return infer_err_prefix(rc, "%s", where);
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
