/* cmd_tokenize.c - the tokenizer commands; each needs only a folder's
 * tokenizer files, no weights:
 *   infer tokenize MODEL_DIR (--text TEXT | --file FILE) [--no-special]
 *   infer detokenize MODEL_DIR --ids 1,2,3 [--skip-special]
 *   infer chat-template MODEL_DIR --messages FILE.json [--no-generation-prompt]
 *                       [--no-thinking] [--template-kwargs JSON]
 * Output is exact: tokenize prints one JSON array and a newline; the
 * others print the text with nothing added. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

/* Reads a whole file into a NUL-terminated buffer. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_fail("%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *b = realloc(buf, 2 * cap + 1);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        cli_fail("%s: cannot read", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int load_tokenizer(const char *dir, infer_tokenizer **tok)
{
    int st = infer_tokenizer_load(dir, tok);
    return st == INFER_OK ? CLI_EXIT_OK : cli_library_error(st);
}

/* Writes len bytes to stdout; 1 on failure. */
static int put(const char *s, size_t len)
{
    if (len && fwrite(s, 1, len, stdout) != len) return cli_fail("cannot write to standard output");
    return CLI_EXIT_OK;
}

int cmd_tokenize(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *text = NULL, *file = NULL;
    int no_special = 0;
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir,
         .help = "a folder with tokenizer.json"},
        {.name = "--text", .kind = CLI_STRING, .dest = &text, .meta = "TEXT", .help = "the text to encode"},
        {.name = "--file", .kind = CLI_STRING, .dest = &file, .meta = "FILE",
         .help = "encode the contents of FILE instead"},
        {.name = "--no-special", .kind = CLI_FLAG, .dest = &no_special,
         .help = "add no BOS/EOS (the post-processor's tokens)"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    if (!text == !file) return cli_usage_error(self, "give exactly one of --text and --file");
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        if (!(buf = read_all(file, &len))) return CLI_EXIT_FAIL;
        text = buf;
    } else {
        len = strlen(text);
    }
    infer_tokenizer *tok = NULL;
    rc = load_tokenizer(dir, &tok);
    int32_t *ids = NULL;
    size_t n = 0;
    if (rc == CLI_EXIT_OK) {
        int st = infer_tokenize(tok, text, len, !no_special, &ids, &n);
        if (st != INFER_OK) rc = cli_library_error(st);
    }
    if (rc == CLI_EXIT_OK) {
        putchar('[');
        for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        puts("]");
    }
    infer_free(ids);
    infer_tokenizer_free(tok);
    free(buf);
    return rc;
}

int cmd_detokenize(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *ids_arg = NULL;
    int skip = 0;
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir,
         .help = "a folder with tokenizer.json"},
        {.name = "--ids", .kind = CLI_STRING, .dest = &ids_arg, .meta = "LIST",
         .help = "comma-separated token ids, such as 1,2,3", .required = 1},
        {.name = "--skip-special", .kind = CLI_FLAG, .dest = &skip, .help = "leave special tokens out"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    int32_t *ids;
    size_t n;
    if ((rc = cli_parse_ids(self, "--ids", ids_arg, &ids, &n)) != CLI_EXIT_OK) return rc;
    infer_tokenizer *tok = NULL;
    rc = load_tokenizer(dir, &tok);
    char *text = NULL;
    size_t len = 0;
    if (rc == CLI_EXIT_OK) {
        int st = infer_detokenize(tok, ids, n, skip, &text, &len);
        rc = st != INFER_OK ? cli_library_error(st) : put(text, len);
    }
    infer_free(text);
    infer_tokenizer_free(tok);
    free(ids);
    return rc;
}

/* Reads FILE.json, an array of {"role", "content"}, into msgs (pointing
 * into *json, which the caller deletes). */
static int read_messages(const char *path, cJSON **json, infer_message **msgs, size_t *n)
{
    size_t len;
    char *text = read_all(path, &len);
    if (!text) return CLI_EXIT_FAIL;
    *json = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsArray(*json)) return cli_fail("%s: expected a JSON array of {\"role\", \"content\"} objects", path);
    *n = (size_t)cJSON_GetArraySize(*json);
    *msgs = calloc(*n ? *n : 1, sizeof **msgs);
    if (!*msgs) return cli_fail("out of memory");
    size_t i = 0;
    for (cJSON *m = (*json)->child; m; m = m->next, i++) {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content))
            return cli_fail("%s: message %zu needs string \"role\" and \"content\"", path, i);
        (*msgs)[i].role = role->valuestring;
        (*msgs)[i].content = content->valuestring;
    }
    return CLI_EXIT_OK;
}

/* --template-kwargs, with enable_thinking false added by --no-thinking. */
static int build_kwargs(const cli_command *self, const char *given, int no_thinking, char **out)
{
    cJSON *kw = given ? cJSON_Parse(given) : cJSON_CreateObject();
    if (!cJSON_IsObject(kw)) {
        cJSON_Delete(kw);
        return cli_usage_error(self, "--template-kwargs: expected a JSON object, such as '{\"enable_thinking\": false}'");
    }
    if (no_thinking) {
        cJSON_DeleteItemFromObjectCaseSensitive(kw, "enable_thinking");
        cJSON_AddBoolToObject(kw, "enable_thinking", 0);
    }
    *out = cJSON_PrintUnformatted(kw);
    cJSON_Delete(kw);
    return *out ? CLI_EXIT_OK : cli_fail("out of memory");
}

int cmd_chat_template(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *messages = NULL, *kwargs = NULL;
    int no_gen = 0, no_thinking = 0;
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir,
         .help = "a folder with tokenizer files and a chat template"},
        {.name = "--messages", .kind = CLI_STRING, .dest = &messages, .meta = "FILE.json",
         .help = "a JSON array of {\"role\", \"content\"}", .required = 1},
        {.name = "--no-generation-prompt", .kind = CLI_FLAG, .dest = &no_gen,
         .help = "do not open the assistant's turn at the end"},
        {.name = "--no-thinking", .kind = CLI_FLAG, .dest = &no_thinking,
         .help = "pass enable_thinking=false (Qwen 3)"},
        {.name = "--template-kwargs", .kind = CLI_STRING, .dest = &kwargs, .meta = "JSON",
         .help = "more template variables, such as '{\"date_string\": \"26 Jul 2024\"}'"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    char *kw = NULL;
    if ((rc = build_kwargs(self, kwargs, no_thinking, &kw)) != CLI_EXIT_OK) return rc;
    cJSON *json = NULL;
    infer_message *msgs = NULL;
    size_t n = 0;
    infer_tokenizer *tok = NULL;
    rc = read_messages(messages, &json, &msgs, &n);
    if (rc == CLI_EXIT_OK) rc = load_tokenizer(dir, &tok);
    if (rc == CLI_EXIT_OK) {
        infer_chat_opts co;
        infer_chat_opts_default(&co);
        co.add_generation_prompt = !no_gen;
        co.template_kwargs = kw;
        char *out = NULL;
        size_t len = 0;
        int st = infer_chat_render(tok, msgs, n, &co, &out, &len);
        rc = st != INFER_OK ? cli_library_error(st) : put(out, len);
        infer_free(out);
    }
    infer_tokenizer_free(tok);
    free(msgs);
    cJSON_Delete(json);
    cJSON_free(kw);
    return rc;
}
