/* cli.c - the infer tool's option parser, value parsers, error reporting
 * and model loading (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Messages                                                             */
/* ------------------------------------------------------------------ */

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "infer %s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'infer %s --help'.\n", cmd->name);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("infer: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_EXIT_FAIL;
}

int cli_library_error(int status)
{
    const char *msg = infer_last_error();
    if (!msg || !*msg) msg = infer_status_name(status);
    return cli_fail("%s", msg ? msg : "unknown error");
}

/* ------------------------------------------------------------------ */
/* Help                                                                 */
/* ------------------------------------------------------------------ */

/* "--ids LIST" or "MODEL_DIR", as shown in help; returns its length. */
static int opt_label(const cli_opt *o, char *buf, size_t size)
{
    int n = o->meta && o->kind != CLI_POSITIONAL && o->kind != CLI_FLAG
                ? snprintf(buf, size, "%s %s", o->name, o->meta)
                : snprintf(buf, size, "%s", o->name);
    return n < 0 ? 0 : n;
}

static void print_usage_line(const cli_command *cmd, const cli_opt *opts)
{
    printf("usage: infer %s", cmd->name);
    for (const cli_opt *o = opts; o->name; o++)
        if (o->kind == CLI_POSITIONAL) printf(" %s", o->name);
    for (const cli_opt *o = opts; o->name; o++) {
        char label[96];
        if (o->kind != CLI_POSITIONAL && o->required) {
            opt_label(o, label, sizeof label);
            printf(" %s", label);
        }
    }
    printf(" [options]\n");
}

static void print_help(const cli_command *cmd, const cli_opt *opts)
{
    int width = (int)strlen("-h, --help");
    char label[96];
    for (const cli_opt *o = opts; o->name; o++) {
        int n = opt_label(o, label, sizeof label);
        if (n > width) width = n;
    }
    print_usage_line(cmd, opts);
    printf("\n%s\n\n", cmd->summary);
    for (const cli_opt *o = opts; o->name; o++) {
        opt_label(o, label, sizeof label);
        printf("  %-*s  %s%s", width, label, o->help, o->required ? " (required)" : "");
        if (o->alias) printf(" (also %s)", o->alias);
        printf("\n");
    }
    printf("  %-*s  %s\n", width, "-h, --help", "show this help");
}

/* ------------------------------------------------------------------ */
/* Parsing                                                              */
/* ------------------------------------------------------------------ */

int cli_parse_int(const char *s, long min, long max, long *out)
{
    const char *p = s[0] == '-' ? s + 1 : s;
    if (*p < '0' || *p > '9') return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return -1;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno == ERANGE || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* 1 if value is one of the '|'-separated words of choices. */
static int is_choice(const char *choices, const char *value)
{
    size_t n = strlen(value);
    for (const char *p = choices; *p;) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && n > 0 && !strncmp(p, value, n)) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

static int assign_value(const cli_command *cmd, cli_opt *o, const char *value)
{
    if (!*value) return cli_usage_error(cmd, "%s: empty value", o->name);
    if (o->kind == CLI_INT) {
        long v;
        if (cli_parse_int(value, o->min, o->max, &v) != 0)
            return cli_usage_error(cmd, "%s: expected an integer from %d to %d, got '%s'",
                                   o->name, o->min, o->max, value);
        *(int *)o->dest = (int)v;
        return CLI_CONTINUE;
    }
    if (o->kind == CLI_FLOAT) {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (*end || errno == ERANGE || !isfinite(v) || v < o->fmin || v > o->fmax)
            return cli_usage_error(cmd, "%s: expected a number from %g to %g, got '%s'", o->name, o->fmin,
                                   o->fmax, value);
        *(float *)o->dest = (float)v;
        return CLI_CONTINUE;
    }
    if (o->kind == CLI_LIST) {
        cli_list *l = o->dest;
        if (l->n >= CLI_LIST_MAX) return cli_usage_error(cmd, "%s: at most %d values", o->name, CLI_LIST_MAX);
        l->v[l->n++] = value;
        return CLI_CONTINUE;
    }
    if (o->kind == CLI_CHOICE && !is_choice(o->choices, value))
        return cli_usage_error(cmd, "%s: expected one of %s, got '%s'", o->name, o->choices,
                               value);
    *(const char **)o->dest = value;
    return CLI_CONTINUE;
}

static cli_opt *find_option(cli_opt *opts, const char *name, size_t len)
{
    for (cli_opt *o = opts; o->name; o++)
        if (o->kind != CLI_POSITIONAL && ((strlen(o->name) == len && !strncmp(o->name, name, len)) ||
                                          (o->alias && strlen(o->alias) == len && !strncmp(o->alias, name, len))))
            return o;
    return NULL;
}

/* argv[*i] starts with '-': an option, with its value inline after '='
 * or in the next argument (then *i moves past it). */
static int parse_option(const cli_command *cmd, cli_opt *opts, int argc, char **argv, int *i)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    cli_opt *o = find_option(opts, arg, len);
    if (!o) return cli_usage_error(cmd, "unknown option '%.*s'", (int)len, arg);
    if (o->seen && o->kind != CLI_LIST) return cli_usage_error(cmd, "option %s given twice", o->name);
    o->seen = 1;
    if (o->kind == CLI_FLAG) {
        if (eq) return cli_usage_error(cmd, "option %s takes no value", o->name);
        *(int *)o->dest = 1;
        return CLI_CONTINUE;
    }
    if (eq) return assign_value(cmd, o, eq + 1);
    if (*i + 1 >= argc)
        return cli_usage_error(cmd, "option %s needs a value (%s %s)", o->name, o->name,
                               o->meta ? o->meta : "VALUE");
    *i += 1;
    return assign_value(cmd, o, argv[*i]);
}

static int take_positional(const cli_command *cmd, cli_opt *opts, const char *arg)
{
    for (cli_opt *o = opts; o->name; o++) {
        if (o->kind == CLI_POSITIONAL && !o->seen) {
            o->seen = 1;
            *(const char **)o->dest = arg;
            return CLI_CONTINUE;
        }
    }
    return cli_usage_error(cmd, "unexpected argument '%s'", arg);
}

static int check_required(const cli_command *cmd, const cli_opt *opts)
{
    for (const cli_opt *o = opts; o->name; o++) {
        if (o->seen) continue;
        if (o->kind == CLI_POSITIONAL) return cli_usage_error(cmd, "missing %s", o->name);
        if (o->required)
            return cli_usage_error(cmd, "missing option %s %s", o->name,
                                   o->meta ? o->meta : "VALUE");
    }
    return CLI_CONTINUE;
}

/* 1 if --help or -h comes before any "--". */
static int wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

int cli_parse(const cli_command *cmd, cli_opt *opts, int argc, char **argv)
{
    for (cli_opt *o = opts; o->name; o++) o->seen = 0;
    if (wants_help(argc, argv)) {
        print_help(cmd, opts);
        return CLI_EXIT_OK;
    }
    int options_done = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        int rc;
        if (!options_done && !strcmp(arg, "--")) {
            options_done = 1;
            continue;
        }
        if (!options_done && arg[0] == '-' && arg[1] != '\0')
            rc = parse_option(cmd, opts, argc, argv, &i);
        else
            rc = take_positional(cmd, opts, arg);
        if (rc != CLI_CONTINUE) return rc;
    }
    return check_required(cmd, opts);
}

/* ------------------------------------------------------------------ */
/* Token id lists                                                       */
/* ------------------------------------------------------------------ */

#define IDS_HINT "expected comma-separated token ids such as 1,2,3"

/* Parses one item s[0, len) of an id list. */
static int parse_id(const cli_command *cmd, const char *option, const char *s, size_t len,
                    size_t index, int32_t *out)
{
    if (len == 0)
        return cli_usage_error(cmd, "%s: item %zu is empty (" IDS_HINT ")", option, index + 1);
    if (s[0] == '-' && len > 1 && s[1] >= '0' && s[1] <= '9')
        return cli_usage_error(cmd, "%s: negative id '%.*s' (" IDS_HINT ")", option, (int)len, s);
    int64_t v = 0;
    for (size_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9')
            return cli_usage_error(cmd, "%s: '%.*s' is not a token id (" IDS_HINT ")", option,
                                   (int)len, s);
        v = v * 10 + (s[k] - '0');
        if (v > INT32_MAX)
            return cli_usage_error(cmd, "%s: id '%.*s' is too large (at most %d)", option,
                                   (int)len, s, INT32_MAX);
    }
    *out = (int32_t)v;
    return CLI_EXIT_OK;
}

int cli_parse_ids(const cli_command *cmd, const char *option, const char *s, int32_t **ids,
                  size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    if (!*s) return cli_usage_error(cmd, "%s: empty list (" IDS_HINT ")", option);
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    int32_t *v = malloc(n * sizeof *v);
    if (!v) return cli_fail("out of memory for %zu token ids", n);
    const char *p = s;
    for (size_t k = 0; k < n; k++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int rc = parse_id(cmd, option, p, len, k, &v[k]);
        if (rc != CLI_EXIT_OK) {
            free(v);
            return rc;
        }
        p += len + 1;
    }
    *ids = v;
    *n_ids = n;
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* Models                                                               */
/* ------------------------------------------------------------------ */

int cli_load_model(const char *path, const cli_model_opts *m, infer_model **model)
{
    infer_load_opts opts;
    infer_load_opts_default(&opts);
    opts.backend = m->backend;
    opts.n_threads = m->threads;
    opts.context_len = m->ctx;
    opts.cpu_int8 = m->int8;
    opts.adapter_path = m->adapter;
    *model = NULL;
    int rc = infer_model_load(path, &opts, model);
    if (rc != INFER_OK) {
        infer_model_free(*model);
        *model = NULL;
        return cli_library_error(rc);
    }
    return CLI_EXIT_OK;
}
