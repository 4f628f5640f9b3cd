/* jinja.h - a Jinja2 interpreter for chat templates (src/chat/jinja_*.c).
 *
 * Runs templates as transformers' apply_chat_template runs them: Jinja2's
 * ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks,
 * keep_trailing_newline off, the loopcontrols extension, the globals
 * raise_exception and strftime_now and a tojson filter that is Python's
 * json.dumps (ensure_ascii=False).
 *
 * Failures return an infer status with a message in infer_last_error():
 *   INFER_ERR_FORMAT            a syntax error ("line L, column C: ...") or an
 *                               error while rendering (a type error, an
 *                               undefined value used, ...)
 *   INFER_ERR_INVALID_ARGUMENT  the template called raise_exception(msg), or
 *                               the template text / a value is not UTF-8
 *   INFER_ERR_UNSUPPORTED       a Jinja feature this interpreter lacks
 *   INFER_ERR_OUT_OF_RANGE      a limit of jinja_limits was reached
 *   INFER_ERR_OUT_OF_MEMORY     an allocation failed
 */
#ifndef INFER_CHAT_JINJA_H
#define INFER_CHAT_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Guards against runaway templates.  A zero field takes its default. */
typedef struct jinja_limits {
    size_t max_output;   /* bytes of text produced in all (default 64 MiB) */
    uint64_t max_steps;  /* evaluation steps (default 20 million) */
    int max_depth;       /* nesting of statements, expressions and calls (default 400) */
} jinja_limits;

typedef struct jinja_template jinja_template;

/* Parses a template (len bytes of UTF-8; (size_t)-1 for a NUL-terminated
 * string). */
int jinja_parse(const char *src, size_t len, jinja_template **out);
void jinja_template_free(jinja_template *tpl);

/* The variables a template is rendered with. */
typedef struct jinja_vars jinja_vars;

int jinja_vars_new(jinja_vars **out);
void jinja_vars_free(jinja_vars *vars);
int jinja_vars_set_string(jinja_vars *vars, const char *name, const char *s, size_t len);
int jinja_vars_set_bool(jinja_vars *vars, const char *name, int value);
int jinja_vars_set_none(jinja_vars *vars, const char *name);
/* A value written as JSON, read as Python's json.loads reads it (1 is an
 * int, 1.0 a float, objects keep their key order). */
int jinja_vars_set_json(jinja_vars *vars, const char *name, const char *json, size_t len);
/* Sets every key of a JSON object (an error if json is not an object). */
int jinja_vars_set_json_object(jinja_vars *vars, const char *json, size_t len);
/* Sets a cJSON value; numbers without a fractional part become ints. */
int jinja_vars_set_cjson(jinja_vars *vars, const char *name, const cJSON *value);
/* A list of {"role": ..., "content": ...} dicts. */
int jinja_vars_set_messages(jinja_vars *vars, const char *name, const char *const *roles,
                            const char *const *contents, size_t n);

/* Renders; *out is NUL-terminated and malloc'd (free with free()).  lim
 * may be NULL for the defaults. */
int jinja_render(const jinja_template *tpl, const jinja_vars *vars, const jinja_limits *lim,
                 char **out, size_t *out_len);

/* Parses and renders in one call, with the keys of a cJSON object (or NULL)
 * as variables. */
int jinja_render_string(const char *src, size_t len, const cJSON *context,
                        const jinja_limits *lim, char **out, size_t *out_len);

#endif
