/* cmd_generate.c - text generation from the command line:
 *   infer generate MODEL_DIR (-p PROMPT | --prompt-ids 1,2,3) [sampling options] [--json]
 *   infer chat MODEL_DIR [--system S] [sampling options]   (interactive; /reset, /exit)
 * Tokens stream to stdout as they come; errors go to stderr with a
 * non-zero exit status. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"

/* Options shared by generate and chat. */
typedef struct gen_cli {
    int max_tokens;
    float temp, top_p, min_p, repeat, presence, frequency;
    int top_k, seed, seed_set, ignore_eos, logprobs, stats, no_thinking, truncate;
    cli_list stop;
} gen_cli;

#define GEN_OPTIONS(g)                                                                                    \
    {.name = "--max-tokens", .kind = CLI_INT, .dest = &(g)->max_tokens, .meta = "N",                     \
     .help = "generate at most N tokens (default 256; 0 = until EOS or the context is full)", .min = 0,   \
     .max = 1 << 24, .alias = "-n"},                                                                      \
        {.name = "--temp", .kind = CLI_FLOAT, .dest = &(g)->temp, .meta = "T",                           \
         .help = "temperature; 0 = greedy (default: generation_config.json, else greedy)", .fmin = 0,     \
         .fmax = 100},                                                                                    \
        {.name = "--top-k", .kind = CLI_INT, .dest = &(g)->top_k, .meta = "K",                           \
         .help = "keep the K most likely tokens (0 = off)", .min = 0, .max = 1 << 24},                    \
        {.name = "--top-p", .kind = CLI_FLOAT, .dest = &(g)->top_p, .meta = "P",                         \
         .help = "nucleus sampling: keep the most likely tokens up to probability P", .fmin = 1e-6,       \
         .fmax = 1},                                                                                      \
        {.name = "--min-p", .kind = CLI_FLOAT, .dest = &(g)->min_p, .meta = "P",                         \
         .help = "drop tokens below P x the top probability (0 = off)", .fmin = 0, .fmax = 1},            \
        {.name = "--repeat-penalty", .kind = CLI_FLOAT, .dest = &(g)->repeat, .meta = "R",               \
         .help = "penalize generated tokens (1 = off)", .fmin = 1e-3, .fmax = 100},                       \
        {.name = "--presence-penalty", .kind = CLI_FLOAT, .dest = &(g)->presence, .meta = "X",           \
         .help = "subtract X from the logit of every token generated so far", .fmin = -100, .fmax = 100}, \
        {.name = "--frequency-penalty", .kind = CLI_FLOAT, .dest = &(g)->frequency, .meta = "X",         \
         .help = "subtract X per occurrence so far", .fmin = -100, .fmax = 100},                          \
        {.name = "--seed", .kind = CLI_INT, .dest = &(g)->seed, .meta = "S",                             \
         .help = "sampling seed (default: from the clock)", .min = 0, .max = 2147483647},                 \
        {.name = "--stop", .kind = CLI_LIST, .dest = &(g)->stop, .meta = "STR",                          \
         .help = "stop before this text (repeatable)"},                                                   \
        {.name = "--ignore-eos", .kind = CLI_FLAG, .dest = &(g)->ignore_eos,                             \
         .help = "do not stop at end-of-sequence tokens"},                                                \
        {.name = "--logprobs", .kind = CLI_INT, .dest = &(g)->logprobs, .meta = "N",                     \
         .help = "report the N most likely tokens per step (with --json)", .min = 0,                      \
         .max = INFER_MAX_LOGPROBS},                                                                      \
        {.name = "--stats", .kind = CLI_FLAG, .dest = &(g)->stats,                                       \
         .help = "print timings and memory on stderr at the end"},                                        \
        {.name = "--no-thinking", .kind = CLI_FLAG, .dest = &(g)->no_thinking,                           \
         .help = "pass enable_thinking=false to the chat template (Qwen 3)"},                             \
        {.name = "--truncate", .kind = CLI_FLAG, .dest = &(g)->truncate,                                 \
         .help = "drop the oldest prompt tokens when the prompt does not fit the context"}

static void gen_cli_init(gen_cli *g)
{
    memset(g, 0, sizeof *g);
    g->max_tokens = 256;
    g->temp = g->top_p = g->min_p = g->repeat = INFER_UNSET;
    g->top_k = -1;
}

static void to_gen_opts(const gen_cli *g, const cli_opt *opts, infer_gen_opts *o)
{
    infer_gen_opts_default(o);
    o->max_tokens = g->max_tokens;
    o->temperature = g->temp;
    o->top_k = g->top_k;
    o->top_p = g->top_p;
    o->min_p = g->min_p;
    o->repeat_penalty = g->repeat;
    o->presence_penalty = g->presence;
    o->frequency_penalty = g->frequency;
    int seed_seen = 0;
    for (const cli_opt *p = opts; p->name; p++)
        if (!strcmp(p->name, "--seed")) seed_seen = p->seen;
    o->seed = seed_seen ? (uint64_t)g->seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    o->stop_strings = g->stop.v;
    o->n_stop_strings = (size_t)g->stop.n;
    o->ignore_eos = g->ignore_eos;
    o->logprobs = g->logprobs;
    o->truncate_prompt = g->truncate;
}

static const char *finish_name(infer_finish f)
{
    switch (f) {
    case INFER_FINISH_EOS: return "eos";
    case INFER_FINISH_STOP: return "stop";
    case INFER_FINISH_LENGTH: return "length";
    case INFER_FINISH_CONTEXT: return "context";
    case INFER_FINISH_CANCELLED: return "cancelled";
    case INFER_FINISH_ERROR: return "error";
    default: return "none";
    }
}

static void print_stats(const infer_metrics *m)
{
    fprintf(stderr,
            "\nprompt: %d tokens (%d computed) in %.3f s, %.1f tok/s\n"
            "generated: %d tokens in %.3f s, %.1f tok/s\n"
            "total: %.3f s; finish: %s; memory: %.1f MB active, %.1f MB peak\n",
            m->prompt_tokens, m->prefill_tokens, m->prefill_s, m->prefill_tok_s, m->generated_tokens, m->decode_s,
            m->decode_tok_s, m->total_s, finish_name(m->finish), m->active_memory / 1e6, m->peak_memory / 1e6);
}

static cJSON *metrics_json(const infer_metrics *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", m->prompt_tokens);
    cJSON_AddNumberToObject(o, "prefill_tokens", m->prefill_tokens);
    cJSON_AddNumberToObject(o, "generated_tokens", m->generated_tokens);
    cJSON_AddNumberToObject(o, "prefill_s", m->prefill_s);
    cJSON_AddNumberToObject(o, "decode_s", m->decode_s);
    cJSON_AddNumberToObject(o, "total_s", m->total_s);
    cJSON_AddNumberToObject(o, "prefill_tok_s", m->prefill_tok_s);
    cJSON_AddNumberToObject(o, "decode_tok_s", m->decode_tok_s);
    cJSON_AddNumberToObject(o, "peak_memory", (double)m->peak_memory);
    cJSON_AddNumberToObject(o, "active_memory", (double)m->active_memory);
    cJSON_AddStringToObject(o, "finish", finish_name(m->finish));
    return o;
}

/* Runs a stream to its end: text to stdout as it comes (or collected for
 * --json); the text is also appended to *text when text is not NULL. */
static int drive(infer_stream *st, const gen_cli *g, int json, char **text)
{
    cJSON *ids = json ? cJSON_CreateArray() : NULL, *lps = json && g->logprobs ? cJSON_CreateArray() : NULL;
    size_t n = 0, cap = 256;
    char *buf = malloc(cap);
    if (!buf) return cli_fail("out of memory");
    buf[0] = '\0';
    infer_token t;
    while (infer_stream_next(st, &t)) {
        if (!json && t.len) {
            fwrite(t.text, 1, t.len, stdout);
            fflush(stdout);
        }
        if (n + t.len + 1 > cap) {
            while (n + t.len + 1 > cap) cap *= 2;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                return cli_fail("out of memory");
            }
            buf = b;
        }
        memcpy(buf + n, t.text, t.len);
        n += t.len;
        buf[n] = '\0';
        if (ids) cJSON_AddItemToArray(ids, cJSON_CreateNumber(t.id));
        if (lps) {
            cJSON *e = cJSON_CreateObject(), *top = cJSON_CreateArray();
            cJSON_AddNumberToObject(e, "id", t.id);
            cJSON_AddNumberToObject(e, "logprob", t.logprob);
            for (int i = 0; i < t.n_top; i++) {
                cJSON *x = cJSON_CreateObject();
                cJSON_AddNumberToObject(x, "id", t.top[i].id);
                cJSON_AddNumberToObject(x, "logprob", t.top[i].logprob);
                cJSON_AddItemToArray(top, x);
            }
            cJSON_AddItemToObject(e, "top", top);
            cJSON_AddItemToArray(lps, e);
        }
    }
    const char *msg;
    int st_rc = infer_stream_error(st, &msg);
    infer_metrics m;
    infer_stream_metrics(st, &m);
    int rc = CLI_EXIT_OK;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "ids", ids);
        cJSON_AddStringToObject(o, "text", buf);
        if (lps) cJSON_AddItemToObject(o, "logprobs", lps);
        cJSON_AddItemToObject(o, "metrics", metrics_json(&m));
        if (st_rc) cJSON_AddStringToObject(o, "error", msg);
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(o);
    } else if (g->stats) {
        print_stats(&m);
    }
    if (st_rc) rc = cli_fail("%s", msg);
    if (text)
        *text = buf;
    else
        free(buf);
    return rc;
}

static int chat_kwargs(const gen_cli *g, infer_chat_opts *co)
{
    infer_chat_opts_default(co);
    if (g->no_thinking) co->template_kwargs = "{\"enable_thinking\": false}";
    return 0;
}

int cmd_generate(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *prompt = NULL, *prompt2 = NULL, *ids_arg = NULL, *system = NULL;
    int chat = 0, json = 0;
    gen_cli g;
    gen_cli_init(&g);
    cli_model_opts m = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "-p", .kind = CLI_STRING, .dest = &prompt, .meta = "PROMPT", .help = "the prompt text"},
        {.name = "--prompt", .kind = CLI_STRING, .dest = &prompt2, .meta = "PROMPT", .help = "the same as -p"},
        {.name = "--prompt-ids", .kind = CLI_STRING, .dest = &ids_arg, .meta = "LIST",
         .help = "the prompt as token ids, such as 1,2,3"},
        {.name = "--chat", .kind = CLI_FLAG, .dest = &chat,
         .help = "send the prompt as a user message through the chat template"},
        {.name = "--system", .kind = CLI_STRING, .dest = &system, .meta = "TEXT",
         .help = "a system message (with --chat)", .alias = "--system-prompt"},
        {.name = "--json", .kind = CLI_FLAG, .dest = &json,
         .help = "print one JSON object at the end: ids, text, metrics"},
        GEN_OPTIONS(&g),
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    if (prompt2) {
        if (prompt) return cli_usage_error(self, "give -p or --prompt, not both");
        prompt = prompt2;
    }
    if (!!prompt + !!ids_arg != 1) return cli_usage_error(self, "give the prompt as -p TEXT or --prompt-ids LIST");
    if ((chat || system) && !prompt) return cli_usage_error(self, "--chat and --system need a text prompt (-p)");
    if (system && !chat) return cli_usage_error(self, "--system needs --chat");
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (ids_arg && (rc = cli_parse_ids(self, "--prompt-ids", ids_arg, &ids, &n_ids)) != CLI_EXIT_OK) return rc;
    infer_model *model = NULL;
    infer_session *s = NULL;
    infer_stream *st = NULL;
    if ((rc = cli_load_model(dir, &m, &model)) != CLI_EXIT_OK) goto done;
    int lib;
    if ((lib = infer_session_new(model, &s))) {
        rc = cli_library_error(lib);
        goto done;
    }
    infer_gen_opts go;
    to_gen_opts(&g, opts, &go);
    if (chat) {
        infer_message msgs[2];
        size_t n = 0;
        if (system) msgs[n++] = (infer_message){"system", system};
        msgs[n++] = (infer_message){"user", prompt};
        infer_chat_opts co;
        chat_kwargs(&g, &co);
        lib = infer_chat(s, msgs, n, &co, &go, &st);
    } else if (prompt) {
        lib = infer_generate(s, prompt, &go, &st);
    } else {
        lib = infer_generate_ids(s, ids, n_ids, &go, &st);
    }
    if (lib) {
        rc = cli_library_error(lib);
        goto done;
    }
    rc = drive(st, &g, json, NULL);
    if (!json && rc == CLI_EXIT_OK) printf("\n");
done:
    infer_stream_free(st);
    infer_session_free(s);
    infer_model_free(model);
    free(ids);
    return rc;
}

/* ---- interactive chat ---- */

typedef struct history {
    infer_message *m;
    char **owned;
    size_t n, cap;
} history;

static int history_add(history *h, const char *role, const char *content)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        infer_message *m = realloc(h->m, cap * sizeof *m);
        if (!m) return -1;
        h->m = m;
        char **o = realloc(h->owned, cap * sizeof *o);
        if (!o) return -1;
        h->owned = o;
        h->cap = cap;
    }
    char *c = strdup(content);
    if (!c) return -1;
    h->owned[h->n] = c;
    h->m[h->n++] = (infer_message){role, c};
    return 0;
}

static void history_clear(history *h, size_t keep)
{
    while (h->n > keep) free(h->owned[--h->n]);
}

int cmd_chat(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *system = NULL;
    gen_cli g;
    gen_cli_init(&g);
    g.max_tokens = 1024;
    cli_model_opts m = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "--system", .kind = CLI_STRING, .dest = &system, .meta = "TEXT", .help = "a system message",
         .alias = "--system-prompt"},
        GEN_OPTIONS(&g),
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    infer_model *model = NULL;
    infer_session *s = NULL;
    history h = {0};
    if ((rc = cli_load_model(dir, &m, &model)) != CLI_EXIT_OK) return rc;
    int lib = infer_session_new(model, &s);
    if (lib) {
        rc = cli_library_error(lib);
        goto done;
    }
    size_t base = 0;
    if (system) {
        if (history_add(&h, "system", system)) goto oom;
        base = 1;
    }
    int tty = isatty(0);
    if (tty) fprintf(stderr, "Type a message; /reset starts over, /exit (or end of input) quits.\n");
    char *line = NULL;
    size_t lcap = 0;
    for (;;) {
        if (tty) fprintf(stderr, ">>> ");
        ssize_t len = getline(&line, &lcap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            history_clear(&h, base);
            infer_session_reset(s);
            continue;
        }
        if (history_add(&h, "user", line)) goto oom_line;
        infer_gen_opts go;
        to_gen_opts(&g, opts, &go);
        infer_chat_opts co;
        chat_kwargs(&g, &co);
        infer_stream *st = NULL;
        lib = infer_chat(s, h.m, h.n, &co, &go, &st);
        if (lib) {
            cli_library_error(lib);
            history_clear(&h, h.n - 1);
            continue;
        }
        char *reply = NULL;
        int r = drive(st, &g, 0, &reply);
        infer_stream_free(st);
        printf("\n");
        fflush(stdout);
        if (r == CLI_EXIT_OK && reply) {
            if (history_add(&h, "assistant", reply)) {
                free(reply);
                goto oom_line;
            }
        } else {
            history_clear(&h, h.n - 1);
        }
        free(reply);
    }
    free(line);
    goto done;
oom_line:
    free(line);
oom:
    rc = cli_fail("out of memory");
done:
    history_clear(&h, 0);
    free(h.m);
    free(h.owned);
    infer_session_free(s);
    infer_model_free(model);
    return rc;
}
