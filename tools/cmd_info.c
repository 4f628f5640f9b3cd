/* cmd_info.c - `infer info MODEL_DIR [--json]`: loads a model and prints
 * the fields of infer_model_info, as aligned "key: value" lines or as one
 * JSON object. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef enum field_kind { FIELD_STR, FIELD_INT, FIELD_I64, FIELD_BOOL } field_kind;

typedef struct info_field {
    const char *key;
    field_kind kind;
    size_t offset; /* in infer_model_info */
    size_t size;   /* of the member (for strings) */
} info_field;

#define FIELD(kind, member)                                                       \
    {#member, kind, offsetof(infer_model_info, member),                           \
     sizeof(((infer_model_info *)0)->member)}

static const info_field fields[] = {
    FIELD(FIELD_STR, architecture),
    FIELD(FIELD_STR, model_type),
    FIELD(FIELD_STR, backend),
    FIELD(FIELD_STR, dtype),
    FIELD(FIELD_INT, vocab_size),
    FIELD(FIELD_INT, n_layers),
    FIELD(FIELD_INT, hidden_size),
    FIELD(FIELD_INT, intermediate_size),
    FIELD(FIELD_INT, n_heads),
    FIELD(FIELD_INT, n_kv_heads),
    FIELD(FIELD_INT, head_dim),
    FIELD(FIELD_INT, context_len),
    FIELD(FIELD_INT, max_position_embeddings),
    FIELD(FIELD_INT, sliding_window),
    FIELD(FIELD_BOOL, tied_embeddings),
    FIELD(FIELD_I64, n_params),
    FIELD(FIELD_INT, quant_bits),
    FIELD(FIELD_INT, quant_group_size),
    FIELD(FIELD_I64, weight_bytes),
    FIELD(FIELD_I64, decode_bytes),
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* A string member, which need not be NUL-terminated. */
static void field_string(const infer_model_info *info, const info_field *f, const char **s,
                         int *len)
{
    *s = (const char *)info + f->offset;
    *len = (int)strnlen(*s, f->size);
}

static int field_int(const infer_model_info *info, const info_field *f)
{
    int v;
    memcpy(&v, (const char *)info + f->offset, sizeof v);
    return v;
}

static long long field_i64(const infer_model_info *info, const info_field *f)
{
    int64_t v;
    memcpy(&v, (const char *)info + f->offset, sizeof v);
    return (long long)v;
}

/* Prints the value of one field as text (JSON strings are quoted by
 * the caller). */
static void print_value(const infer_model_info *info, const info_field *f)
{
    const char *s;
    int len;
    switch (f->kind) {
    case FIELD_STR:
        field_string(info, f, &s, &len);
        for (int i = 0; i < len; i++) /* one line per field, whatever the bytes */
            putchar((unsigned char)s[i] < 0x20 ? '?' : s[i]);
        break;
    case FIELD_INT: printf("%d", field_int(info, f)); break;
    case FIELD_I64: printf("%lld", field_i64(info, f)); break;
    case FIELD_BOOL: printf("%s", field_int(info, f) ? "true" : "false"); break;
    }
}

static void print_text(const infer_model_info *info)
{
    int width = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        int n = (int)strlen(fields[i].key) + 1;
        if (n > width) width = n;
    }
    for (size_t i = 0; i < N_FIELDS; i++) {
        printf("%s:%*s ", fields[i].key, width - (int)strlen(fields[i].key) - 1, "");
        print_value(info, &fields[i]);
        putchar('\n');
    }
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void print_json_string(const char *s, int len)
{
    putchar('"');
    for (int i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_json(const infer_model_info *info)
{
    putchar('{');
    for (size_t i = 0; i < N_FIELDS; i++) {
        const info_field *f = &fields[i];
        printf("%s\"%s\": ", i ? ", " : "", f->key);
        if (f->kind == FIELD_STR) {
            const char *s;
            int len;
            field_string(info, f, &s, &len);
            print_json_string(s, len);
        } else {
            print_value(info, f);
        }
    }
    printf("}\n");
}

int cmd_info(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0;
    cli_model_opts m = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir,
         .help = "a Hugging Face model folder"},
        {.name = "--json", .kind = CLI_FLAG, .dest = &json,
         .help = "print one JSON object instead of key: value lines"},
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;

    infer_model *model;
    rc = cli_load_model(dir, &m, &model);
    if (rc != CLI_EXIT_OK) return rc;
    infer_model_info info;
    memset(&info, 0, sizeof info);
    int st = infer_model_get_info(model, &info);
    if (st != INFER_OK) {
        rc = cli_library_error(st);
    } else if (json) {
        print_json(&info);
    } else {
        print_text(&info);
    }
    infer_model_free(model);
    return rc;
}
