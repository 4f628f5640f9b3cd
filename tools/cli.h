/* cli.h - what the subcommands of the infer tool share: the command table
 * entry, a strict option parser driven by a per-command table, parsers
 * for values (integers, token id lists) and model loading with the
 * common --backend / --threads options.
 *
 * Exit status: 0 success, 1 a library or I/O failure ("infer: <why>" on
 * stderr), 2 bad usage ("infer CMD: <why>" and a hint on stderr). */
#ifndef INFER_TOOL_CLI_H
#define INFER_TOOL_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "infer.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* cli_parse's "parsed, go on" result (every exit status is >= 0). */
#define CLI_CONTINUE (-1)

/* One subcommand: `infer NAME ...` calls run(self, argc, argv) with the
 * arguments after NAME, and exits with what it returns. */
typedef struct cli_command {
    const char *name;
    int (*run)(const struct cli_command *self, int argc, char **argv);
    const char *summary; /* one line, for `infer --help` */
} cli_command;

typedef enum cli_kind {
    CLI_POSITIONAL, /* a required argument: dest is const char ** */
    CLI_FLAG,       /* --name: dest is int *, set to 1 */
    CLI_STRING,     /* --name VALUE: dest is const char ** */
    CLI_INT,        /* --name N in [min, max]: dest is int * */
    CLI_CHOICE,     /* --name VALUE, one of choices "a|b|c": dest is const char ** */
    CLI_FLOAT,      /* --name X, a finite number in [fmin, fmax]: dest is float * */
    CLI_LIST        /* --name VALUE, repeatable: dest is cli_list * */
} cli_kind;

/* The values of a repeatable option, in order (pointers into argv). */
#define CLI_LIST_MAX 32
typedef struct cli_list {
    const char *v[CLI_LIST_MAX];
    int n;
} cli_list;

/* One entry of a command's argument table.  Tables end with an entry
 * whose name is NULL.  The table is not const: seen is filled in. */
typedef struct cli_opt {
    const char *name;    /* "--ids", or "MODEL_DIR" for a positional */
    cli_kind kind;
    void *dest;
    const char *meta;    /* the value's name in help ("LIST"), or NULL */
    const char *help;    /* one line */
    int required;        /* options only: 1 if it must be given */
    int min, max;        /* CLI_INT only */
    const char *choices; /* CLI_CHOICE only */
    double fmin, fmax;   /* CLI_FLOAT only */
    const char *alias;   /* options only: another name it answers to (a peer's, such as
                            mlx_lm.lora's --learning-rate), or NULL */
    int seen;            /* set by cli_parse */
} cli_opt;

/* Parses argv against opts.  Options may come before, between or after
 * positionals, as "--name VALUE" or "--name=VALUE"; "--" ends options.
 * Unknown, repeated or malformed options and missing or extra arguments
 * print a message on stderr.  --help / -h prints the command's help on
 * stdout.  Returns CLI_CONTINUE, or the exit status to return now
 * (0 after help, 2 after a usage error). */
int cli_parse(const cli_command *cmd, cli_opt *opts, int argc, char **argv);

/* Prints "infer CMD: <message>" and a --help hint on stderr; returns 2. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "infer: <message>" on stderr; returns 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* After a library call failed with status: prints
 * "infer: <infer_last_error()>" (or the status name if there is no
 * message) on stderr; returns 1. */
int cli_library_error(int status);

/* Parses a decimal integer in [min, max]: digits with an optional leading
 * '-', nothing else.  Returns 0, or -1 if s is not such a number. */
int cli_parse_int(const char *s, long min, long max, long *out);

/* Parses "1,2,3" into a new array of non-negative int32 ids (caller
 * frees *ids).  On a malformed list prints why (naming option) and
 * returns 2; returns 1 if out of memory; 0 on success. */
int cli_parse_ids(const cli_command *cmd, const char *option, const char *s,
                  int32_t **ids, size_t *n_ids);

/* The options every command that loads a model takes. */
typedef struct cli_model_opts {
    const char *backend; /* NULL = automatic */
    int threads;         /* 0 = all processors */
    int ctx;             /* 0 = the model's context length */
    int int8;            /* 1: integer dot products for quantized weights (cpu) */
    const char *adapter; /* a LoRA adapter folder (or a weights file in one) to apply, or NULL */
} cli_model_opts;

#define CLI_MODEL_OPTIONS(m)                                                       \
    {.name = "--backend", .kind = CLI_CHOICE, .dest = &(m)->backend, .meta = "NAME",   \
     .help = "backend: cpu or cuda (default: the first available)",                   \
     .choices = "cpu|cuda"},                                                           \
    {.name = "--threads", .kind = CLI_INT, .dest = &(m)->threads, .meta = "N",         \
     .help = "CPU threads (default: 0 = all processors)", .min = 0, .max = 4096},       \
    {.name = "--ctx", .kind = CLI_INT, .dest = &(m)->ctx, .meta = "N",                 \
     .help = "context length (default: the model's)", .min = 0, .max = 1 << 24},        \
    {.name = "--int8", .kind = CLI_FLAG, .dest = &(m)->int8,                              \
     .help = "cpu, quantized weights: activations as two int8 terms for VNNI dot "       \
             "products (faster; relative error about 1e-4)"},                              \
    {.name = "--adapter-path", .kind = CLI_STRING, .dest = &(m)->adapter, .meta = "DIR",    \
     .help = "a LoRA adapter folder (PEFT or mlx-lm), or a weights file in one, applied to the model"}

/* Loads the model folder at path with the given options.  On failure
 * prints the library's message and returns 1 (*model is NULL). */
int cli_load_model(const char *path, const cli_model_opts *m, infer_model **model);

#endif
