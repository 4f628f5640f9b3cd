/* cmd_list.c - two commands that look at what is there rather than run a
 * model:
 *
 *   infer list DIR [--json]     the model folders infer_discover finds:
 *                               name, type, quantization, size, path
 *   infer devices [--json]      every backend, and for an available one its
 *                               device and the library's memory figures */
#include <stdio.h>
#include <string.h>

#include "commands.h"

/* Prints s with control bytes as '?', so that one entry stays one line. */
static void print_plain(const char *s)
{
    for (; *s; s++) putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

/* Prints s padded with spaces to width columns (counted in bytes). */
static void print_cell(const char *s, int width)
{
    print_plain(s);
    for (int n = (int)strlen(s); n < width; n++) putchar(' ');
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void print_json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* "4-bit" for a quantized model, else its dtype shortened ("bf16"), or
 * "-" when config.json names none. */
static const char *quant_label(const infer_model_entry *e, char *buf, size_t size)
{
    static const char *const dtypes[][2] = {
        {"bfloat16", "bf16"}, {"float16", "f16"}, {"float32", "f32"}, {"float64", "f64"}};
    if (e->quant_bits > 0) {
        snprintf(buf, size, "%d-bit", e->quant_bits);
        return buf;
    }
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(e->dtype, dtypes[i][0])) return dtypes[i][1];
    return e->dtype[0] ? e->dtype : "-";
}

/* Bytes as decimal gigabytes ("1.23 GB"). */
static void gigabytes(int64_t bytes, char *buf, size_t size)
{
    snprintf(buf, size, "%.2f GB", (double)bytes / 1e9);
}

static void print_entries_text(const infer_model_entry *e, size_t n)
{
    enum { COLS = 4 };
    static const char *const head[COLS] = {"NAME", "TYPE", "QUANT", "SIZE"};
    int width[COLS];
    for (int c = 0; c < COLS; c++) width[c] = (int)strlen(head[c]);
    for (size_t i = 0; i < n; i++) {
        char q[32], gb[32];
        gigabytes(e[i].weight_bytes, gb, sizeof gb);
        const char *cell[COLS] = {e[i].name, e[i].model_type[0] ? e[i].model_type : "-",
                                  quant_label(&e[i], q, sizeof q), gb};
        for (int c = 0; c < COLS; c++)
            if ((int)strlen(cell[c]) > width[c]) width[c] = (int)strlen(cell[c]);
    }
    for (int c = 0; c < COLS; c++) {
        if (c == 3) printf("%*s", width[c], head[c]); /* sizes align right */
        else print_cell(head[c], width[c]);
        printf("  ");
    }
    printf("PATH\n");
    for (size_t i = 0; i < n; i++) {
        char q[32], gb[32];
        gigabytes(e[i].weight_bytes, gb, sizeof gb);
        print_cell(e[i].name, width[0]);
        printf("  ");
        print_cell(e[i].model_type[0] ? e[i].model_type : "-", width[1]);
        printf("  ");
        print_cell(quant_label(&e[i], q, sizeof q), width[2]);
        printf("  %*s  ", width[3], gb);
        print_plain(e[i].path);
        putchar('\n');
    }
}

static void print_entries_json(const infer_model_entry *e, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        printf("%s\n  {\"name\": ", i ? "," : "");
        print_json_str(e[i].name);
        printf(", \"path\": ");
        print_json_str(e[i].path);
        printf(", \"model_type\": ");
        print_json_str(e[i].model_type);
        printf(", \"architecture\": ");
        print_json_str(e[i].architecture);
        printf(", \"dtype\": ");
        print_json_str(e[i].dtype);
        printf(", \"quant_bits\": %d, \"weight_bytes\": %lld, \"has_tokenizer\": %s}", e[i].quant_bits,
               (long long)e[i].weight_bytes, e[i].has_tokenizer ? "true" : "false");
    }
    printf("%s]\n", n ? "\n" : "");
}

int cmd_list(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0;
    cli_opt opts[] = {
        {.name = "DIR", .kind = CLI_POSITIONAL, .dest = &dir,
         .help = "a folder of model folders, or a Hugging Face cache (~/.cache/huggingface/hub)"},
        {.name = "--json", .kind = CLI_FLAG, .dest = &json,
         .help = "print a JSON array of objects instead of a table"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;

    infer_model_entry *e = NULL;
    size_t n = 0;
    int st = infer_discover(dir, &e, &n);
    if (st != INFER_OK) return cli_library_error(st);
    if (json)
        print_entries_json(e, n);
    else if (n == 0)
        printf("no model folders in %s\n", dir);
    else
        print_entries_text(e, n);
    infer_model_entries_free(e, n);
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* infer devices                                                        */
/* ------------------------------------------------------------------ */

/* Bytes in the largest unit that keeps the figure at least 1 ("1.5 GB"). */
static void human_bytes(size_t bytes, char *buf, size_t size)
{
    static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    if (u == 0) snprintf(buf, size, "%zu B", bytes);
    else snprintf(buf, size, "%.1f %s", v, unit[u]);
}

typedef struct device_report {
    const char *backend;
    int available;
    int ok;                  /* infer_get_device_info succeeded */
    infer_device_info info;
    size_t active, peak, cache;
} device_report;

static void print_device_text(const device_report *r)
{
    if (!r->available) {
        printf("%s: not available on this machine\n", r->backend);
        return;
    }
    if (!r->ok) {
        printf("%s: available; no device information (%s)\n", r->backend, infer_last_error());
        return;
    }
    const infer_device_info *d = &r->info;
    char total[32], free_[32], a[32], p[32], c[32];
    human_bytes(d->memory_total, total, sizeof total);
    human_bytes(d->memory_free, free_, sizeof free_);
    human_bytes(r->active, a, sizeof a);
    human_bytes(r->peak, p, sizeof p);
    human_bytes(r->cache, c, sizeof c);
    printf("%s: ", r->backend);
    print_plain(d->name);
    printf("\n  memory:          %s total, %s free\n", total, free_);
    if (d->compute_major > 0) {
        printf("  compute:         %d.%d\n", d->compute_major, d->compute_minor);
        printf("  multiprocessors: %d\n", d->multiprocessors);
    } else {
        printf("  cores:           %d\n", d->multiprocessors);
    }
    printf("  features:        ");
    print_plain(d->features[0] ? d->features : "-");
    printf("\n  library memory:  %s active, %s peak, %s cached\n", a, p, c);
}

static void print_device_json(const device_report *r)
{
    printf("{\"backend\": ");
    print_json_str(r->backend);
    printf(", \"available\": %s", r->available ? "true" : "false");
    if (r->ok) {
        const infer_device_info *d = &r->info;
        printf(", \"name\": ");
        print_json_str(d->name);
        printf(", \"memory_total\": %zu, \"memory_free\": %zu, \"compute_major\": %d, "
               "\"compute_minor\": %d, \"multiprocessors\": %d, \"features\": ",
               d->memory_total, d->memory_free, d->compute_major, d->compute_minor, d->multiprocessors);
        print_json_str(d->features);
        printf(", \"active_memory\": %zu, \"peak_memory\": %zu, \"cache_memory\": %zu", r->active, r->peak,
               r->cache);
    }
    putchar('}');
}

int cmd_devices(const cli_command *self, int argc, char **argv)
{
    int json = 0;
    cli_opt opts[] = {
        {.name = "--json", .kind = CLI_FLAG, .dest = &json,
         .help = "print a JSON array, one object per backend"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;

    int n = infer_backend_count();
    if (json) putchar('[');
    for (int i = 0; i < n; i++) {
        device_report r;
        memset(&r, 0, sizeof r);
        r.backend = infer_backend_name(i);
        if (!r.backend) continue;
        r.available = infer_backend_available(r.backend);
        if (r.available && infer_get_device_info(r.backend, &r.info) == INFER_OK) {
            r.ok = 1;
            r.active = infer_get_active_memory(r.backend);
            r.peak = infer_get_peak_memory(r.backend);
            r.cache = infer_get_cache_memory(r.backend);
        }
        if (json) {
            printf("%s\n  ", i ? "," : "");
            print_device_json(&r);
        } else {
            print_device_text(&r);
        }
    }
    if (json) printf("%s]\n", n ? "\n" : "");
    return CLI_EXIT_OK;
}
