/* cmd_batch.c - many prompts at once, and attention inspection:
 *   infer classify MODEL_DIR --file PROMPTS [--logits OUT.npy] [--chat [--system S] [--no-thinking]]
 *   infer batch MODEL_DIR --file PROMPTS [--max-tokens N] [--temp T] [--seed S] [--chat ...]
 *   infer inspect MODEL_DIR (-p PROMPT | --prompt-ids 1,2,3) --out FILE.npy [--queries QFILE.npy]
 * PROMPTS holds one prompt per line (empty lines are skipped); classify and
 * batch print one JSON object per prompt, in order. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "npy.h"

typedef struct lines {
    char *buf;
    char **v;
    size_t n;
} lines;

static int read_lines(const char *path, lines *l)
{
    memset(l, 0, sizeof *l);
    FILE *f = fopen(path, "rb");
    if (!f) return cli_fail("%s: cannot open", path);
    size_t cap = 4096, n = 0;
    l->buf = malloc(cap + 1);
    for (size_t got; l->buf && (got = fread(l->buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *b = realloc(l->buf, 2 * cap + 1);
            if (!b) {
                free(l->buf);
                l->buf = NULL;
                break;
            }
            l->buf = b;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!l->buf || bad) {
        free(l->buf);
        return cli_fail("%s: cannot read", path);
    }
    l->buf[n] = '\0';
    size_t count = 1;
    for (size_t i = 0; i < n; i++) count += l->buf[i] == '\n';
    l->v = malloc(count * sizeof *l->v);
    if (!l->v) return cli_fail("out of memory");
    for (char *p = l->buf, *e; p && *p; p = e ? e + 1 : NULL) {
        e = strchr(p, '\n');
        if (e) *e = '\0';
        size_t len = strlen(p);
        if (len && p[len - 1] == '\r') p[--len] = '\0';
        if (len) l->v[l->n++] = p;
    }
    if (l->n == 0) return cli_fail("%s: no prompts (one per line)", path);
    return CLI_EXIT_OK;
}

static void lines_free(lines *l)
{
    free(l->buf);
    free(l->v);
}

/* --chat: each line sent as a user message (after an optional system
 * one) through the model's chat template, as `generate --chat` does. */
typedef struct chat_cli {
    int chat, no_thinking;
    const char *system;
} chat_cli;

#define CHAT_OPTIONS(c)                                                                                   \
    {.name = "--chat", .kind = CLI_FLAG, .dest = &(c)->chat,                                              \
     .help = "send each line as a user message through the chat template"},                               \
    {.name = "--system", .kind = CLI_STRING, .dest = &(c)->system, .meta = "TEXT",                        \
     .help = "a system message before each (with --chat)", .alias = "--system-prompt"},                   \
    {.name = "--no-thinking", .kind = CLI_FLAG, .dest = &(c)->no_thinking,                                \
     .help = "pass enable_thinking=false to the chat template (Qwen 3; with --chat)"}

static int chat_usage(const cli_command *self, const chat_cli *c)
{
    if ((c->system || c->no_thinking) && !c->chat) return cli_usage_error(self, "--system and --no-thinking need --chat");
    return CLI_CONTINUE;
}

/* The prompts for the library: the lines as they are, or (--chat) each
 * rendered and tokenized (the template writes its own BOS). */
typedef struct chat_prompts {
    int32_t **ids;
    size_t *lens, n;
} chat_prompts;

static void chat_prompts_free(chat_prompts *cp)
{
    for (size_t i = 0; cp->ids && i < cp->n; i++) infer_free(cp->ids[i]);
    free(cp->ids);
    free(cp->lens);
    memset(cp, 0, sizeof *cp);
}

static int make_prompts(const infer_model *model, const chat_cli *c, const lines *l, chat_prompts *cp,
                        infer_prompts *p)
{
    memset(cp, 0, sizeof *cp);
    *p = (infer_prompts){.n = l->n, .texts = (const char *const *)l->v};
    if (!c->chat) return CLI_EXIT_OK;
    const infer_tokenizer *tok = infer_model_tokenizer(model);
    if (!tok) return cli_fail("--chat: the model has no tokenizer.json");
    cp->ids = calloc(l->n, sizeof *cp->ids);
    cp->lens = calloc(l->n, sizeof *cp->lens);
    if (!cp->ids || !cp->lens) return cli_fail("out of memory");
    cp->n = l->n;
    infer_chat_opts co;
    infer_chat_opts_default(&co);
    if (c->no_thinking) co.template_kwargs = "{\"enable_thinking\": false}";
    for (size_t i = 0; i < l->n; i++) {
        infer_message msgs[2];
        size_t n = 0;
        if (c->system) msgs[n++] = (infer_message){"system", c->system};
        msgs[n++] = (infer_message){"user", l->v[i]};
        char *text;
        size_t len;
        int st = infer_chat_render(tok, msgs, n, &co, &text, &len);
        if (!st) {
            st = infer_tokenize(tok, text, len, 0, &cp->ids[i], &cp->lens[i]);
            infer_free(text);
        }
        if (st) return cli_library_error(st);
    }
    *p = (infer_prompts){.n = l->n, .ids = (const int32_t *const *)cp->ids, .lens = cp->lens};
    return CLI_EXIT_OK;
}

static void print_json(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    if (s) printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(o);
}

int cmd_classify(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *file = NULL, *logits = NULL;
    cli_model_opts m = {0};
    chat_cli c = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "--file", .kind = CLI_STRING, .dest = &file, .meta = "PROMPTS", .required = 1,
         .help = "one prompt per line"},
        {.name = "--logits", .kind = CLI_STRING, .dest = &logits, .meta = "OUT.npy",
         .help = "write the last position's logits as float32 [prompts, vocab]"},
        CHAT_OPTIONS(&c),
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE || (rc = chat_usage(self, &c)) != CLI_CONTINUE) return rc;
    lines l;
    if ((rc = read_lines(file, &l)) != CLI_EXIT_OK) return rc;
    infer_model *model = NULL;
    infer_classify_result *r = NULL;
    chat_prompts cp = {0};
    infer_prompts p;
    if ((rc = cli_load_model(dir, &m, &model)) != CLI_EXIT_OK || (rc = make_prompts(model, &c, &l, &cp, &p)) != CLI_EXIT_OK)
        goto done;
    int st = infer_classify(model, &p, logits != NULL, &r);
    if (st) {
        rc = cli_library_error(st);
        goto done;
    }
    int failed = 0;
    for (size_t i = 0; i < l.n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", (double)i);
        if (r[i].status) {
            cJSON_AddStringToObject(o, "error", r[i].error);
            failed = 1;
        } else {
            cJSON_AddNumberToObject(o, "token", r[i].token);
            if (r[i].text) cJSON_AddStringToObject(o, "text", r[i].text);
        }
        print_json(o);
    }
    if (logits) {
        infer_model_info info;
        infer_model_get_info(model, &info);
        size_t V = (size_t)info.vocab_size;
        float *all = calloc(l.n * V, sizeof *all);
        if (!all) {
            rc = cli_fail("out of memory");
            goto done;
        }
        for (size_t i = 0; i < l.n; i++)
            if (r[i].logits) memcpy(all + i * V, r[i].logits, V * sizeof *all);
            else
                for (size_t v = 0; v < V; v++) all[i * V + v] = 0.0f / 0.0f;
        int64_t shape[2] = {(int64_t)l.n, (int64_t)V};
        char err[512];
        if (npy_write_f32(logits, all, shape, 2, err, sizeof err)) rc = cli_fail("cannot write %s", err);
        free(all);
    }
    if (rc == CLI_EXIT_OK && failed) rc = cli_fail("some prompts failed (see their \"error\")");
done:
    if (r) infer_classify_free(r, l.n);
    chat_prompts_free(&cp);
    infer_model_free(model);
    lines_free(&l);
    return rc;
}

int cmd_batch(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *file = NULL;
    int max_tokens = 128, seed = 0, parallel = 0;
    float temp = INFER_UNSET;
    cli_model_opts m = {0};
    chat_cli c = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "--file", .kind = CLI_STRING, .dest = &file, .meta = "PROMPTS", .required = 1,
         .help = "one prompt per line"},
        {.name = "--max-tokens", .kind = CLI_INT, .dest = &max_tokens, .meta = "N",
         .help = "tokens per prompt at most (default 128)", .min = 1, .max = 1 << 24, .alias = "-n"},
        {.name = "--temp", .kind = CLI_FLOAT, .dest = &temp, .meta = "T",
         .help = "temperature (default: generation_config.json, else greedy)", .fmin = 0, .fmax = 100},
        {.name = "--seed", .kind = CLI_INT, .dest = &seed, .meta = "S", .help = "sampling seed (default 0)",
         .min = 0, .max = 2147483647},
        {.name = "--parallel", .kind = CLI_INT, .dest = &parallel, .meta = "N",
         .help = "prompts decoded together (default 32)", .min = 0, .max = 4096},
        CHAT_OPTIONS(&c),
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE || (rc = chat_usage(self, &c)) != CLI_CONTINUE) return rc;
    lines l;
    if ((rc = read_lines(file, &l)) != CLI_EXIT_OK) return rc;
    infer_model *model = NULL;
    infer_batch_result *r = NULL;
    chat_prompts cp = {0};
    infer_prompts p;
    if ((rc = cli_load_model(dir, &m, &model)) != CLI_EXIT_OK || (rc = make_prompts(model, &c, &l, &cp, &p)) != CLI_EXIT_OK)
        goto done;
    infer_gen_opts go;
    infer_gen_opts_default(&go);
    go.max_tokens = max_tokens;
    go.temperature = temp;
    go.seed = (uint64_t)seed;
    int st = infer_batch_generate(model, &p, &go, parallel, &r);
    if (st) {
        rc = cli_library_error(st);
        goto done;
    }
    int failed = 0;
    for (size_t i = 0; i < l.n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", (double)i);
        if (r[i].status) {
            cJSON_AddStringToObject(o, "error", r[i].error);
            failed = 1;
        } else {
            cJSON *ids = cJSON_CreateArray();
            for (size_t j = 0; j < r[i].n_ids; j++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(r[i].ids[j]));
            cJSON_AddItemToObject(o, "ids", ids);
            if (r[i].text) cJSON_AddStringToObject(o, "text", r[i].text);
        }
        print_json(o);
    }
    if (failed) rc = cli_fail("some prompts failed (see their \"error\")");
done:
    if (r) infer_batch_free(r, l.n);
    chat_prompts_free(&cp);
    infer_model_free(model);
    lines_free(&l);
    return rc;
}

int cmd_inspect(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *prompt = NULL, *ids_arg = NULL, *out = NULL, *qout = NULL;
    cli_model_opts m = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "-p", .kind = CLI_STRING, .dest = &prompt, .meta = "PROMPT", .help = "the prompt text"},
        {.name = "--prompt-ids", .kind = CLI_STRING, .dest = &ids_arg, .meta = "LIST",
         .help = "the prompt as token ids"},
        {.name = "--out", .kind = CLI_STRING, .dest = &out, .meta = "FILE.npy", .required = 1,
         .help = "keys, float32 [layers, kv_heads, seq, head_dim]"},
        {.name = "--queries", .kind = CLI_STRING, .dest = &qout, .meta = "QFILE.npy",
         .help = "queries, float32 [layers, heads, seq, head_dim]"},
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    if (!!prompt + !!ids_arg != 1) return cli_usage_error(self, "give the prompt as -p TEXT or --prompt-ids LIST");
    int32_t *ids = NULL;
    size_t n = 0;
    if (ids_arg && (rc = cli_parse_ids(self, "--prompt-ids", ids_arg, &ids, &n)) != CLI_EXIT_OK) return rc;
    infer_model *model = NULL;
    infer_attention a = {0};
    int st;
    if ((rc = cli_load_model(dir, &m, &model)) != CLI_EXIT_OK) goto done;
    if (prompt) {
        const infer_tokenizer *tok = infer_model_tokenizer(model);
        if (!tok) {
            rc = cli_fail("%s has no tokenizer.json: use --prompt-ids", dir);
            goto done;
        }
        if ((st = infer_tokenize(tok, prompt, (size_t)-1, 1, &ids, &n))) {
            rc = cli_library_error(st);
            goto done;
        }
    }
    if ((st = infer_inspect_attention(model, ids, n, qout != NULL, &a))) {
        rc = cli_library_error(st);
        goto done;
    }
    char err[512];
    int64_t ks[4] = {a.n_layers, a.n_kv_heads, a.seq_len, a.head_dim};
    if (npy_write_f32(out, a.keys, ks, 4, err, sizeof err)) {
        rc = cli_fail("cannot write %s", err);
        goto done;
    }
    printf("%s: keys float32 [%d, %d, %d, %d]\n", out, a.n_layers, a.n_kv_heads, a.seq_len, a.head_dim);
    if (qout) {
        int64_t qs[4] = {a.n_layers, a.n_heads, a.seq_len, a.head_dim};
        if (npy_write_f32(qout, a.queries, qs, 4, err, sizeof err)) {
            rc = cli_fail("cannot write %s", err);
            goto done;
        }
        printf("%s: queries float32 [%d, %d, %d, %d]\n", qout, a.n_layers, a.n_heads, a.seq_len, a.head_dim);
    }
done:
    infer_attention_free(&a);
    infer_model_free(model);
    if (prompt)
        infer_free(ids);
    else
        free(ids);
    return rc;
}
