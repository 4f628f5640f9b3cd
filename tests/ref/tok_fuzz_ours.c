/* tok_fuzz_ours.c - the library's side of tests/ref/tok_fuzz.py: encodes
 * every text of DIR/texts.json with the tokenizer of TOK_DIR and renders
 * every conversation of DIR/chats.json with its chat template, and prints
 * them as tok_fuzz.py's reference files hold them (one JSON object:
 * ids, ids_special, decode, decode_skip, chat; an error as {"error": ...}).
 *
 *   tok_fuzz_ours TOK_DIR DIR > fuzz_ours_NAME.json
 *
 * Built by hand against the static library (tok_fuzz.py says how); not
 * part of the build or of the tests. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"

static cJSON *read_json(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 > cap) {
            char *b = realloc(buf, cap = 2 * cap + 65536);
            if (!b) break;
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        if (!got) break;
        n += got;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static cJSON *error_item(void)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "error", infer_last_error());
    return e;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tok_fuzz_ours TOK_DIR DIR\n");
        return 2;
    }
    cJSON *texts = read_json(argv[2], "texts.json"), *chats = read_json(argv[2], "chats.json");
    infer_tokenizer *tok;
    if (!texts || !chats) {
        fprintf(stderr, "tok_fuzz_ours: cannot read %s/texts.json and chats.json\n", argv[2]);
        return 1;
    }
    if (infer_tokenizer_load(argv[1], &tok)) {
        fprintf(stderr, "tok_fuzz_ours: %s\n", infer_last_error());
        return 1;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *lists[4] = {cJSON_AddArrayToObject(out, "ids"), cJSON_AddArrayToObject(out, "ids_special"),
                       cJSON_AddArrayToObject(out, "decode"), cJSON_AddArrayToObject(out, "decode_skip")};
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(texts, "strings"))
    {
        for (int special = 0; special < 2; special++) {
            int32_t *ids = NULL;
            size_t n = 0;
            char *text = NULL;
            size_t len;
            if (infer_tokenize(tok, s->valuestring, strlen(s->valuestring), special, &ids, &n)) {
                cJSON_AddItemToArray(lists[special], error_item());
                cJSON_AddItemToArray(lists[2 + special], error_item());
                continue;
            }
            cJSON *row = cJSON_CreateArray();
            for (size_t k = 0; k < n; k++) cJSON_AddItemToArray(row, cJSON_CreateNumber(ids[k]));
            cJSON_AddItemToArray(lists[special], row);
            /* decode(ids, skip_special_tokens=False) of the plain ids,
             * decode(..., True) of those with the post-processor's */
            if (infer_detokenize(tok, ids, n, special, &text, &len))
                cJSON_AddItemToArray(lists[2 + special], error_item());
            else
                cJSON_AddItemToArray(lists[2 + special], cJSON_CreateString(text));
            infer_free(text);
            infer_free(ids);
        }
    }
    cJSON *chat = cJSON_AddArrayToObject(out, "chat");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(chats, "cases"))
    {
        const cJSON *msgs = cJSON_GetObjectItem(c, "messages"), *m;
        size_t n = 0;
        infer_message *ms = calloc((size_t)cJSON_GetArraySize(msgs) + 1, sizeof *ms);
        if (!ms) return 1;
        cJSON_ArrayForEach(m, msgs)
        {
            ms[n].role = cJSON_GetObjectItem(m, "role")->valuestring;
            ms[n++].content = cJSON_GetObjectItem(m, "content")->valuestring;
        }
        infer_chat_opts o;
        infer_chat_opts_default(&o);
        o.add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
        char *kwargs = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "kwargs"));
        o.template_kwargs = kwargs;
        char *text;
        size_t len;
        if (infer_chat_render(tok, ms, n, &o, &text, &len)) {
            cJSON_AddItemToArray(chat, error_item());
        } else {
            cJSON_AddItemToArray(chat, cJSON_CreateString(text));
            infer_free(text);
        }
        free(kwargs);
        free(ms);
    }
    char *json = cJSON_PrintUnformatted(out);
    if (!json) return 1;
    fputs(json, stdout);
    free(json);
    cJSON_Delete(out);
    cJSON_Delete(texts);
    cJSON_Delete(chats);
    infer_tokenizer_free(tok);
    return 0;
}
