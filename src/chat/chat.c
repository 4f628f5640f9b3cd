/* chat.c - infer_chat_render: a conversation through the tokenizer's chat
 * template, with the variables transformers' apply_chat_template passes:
 * messages, tools and documents (None), add_generation_prompt, the
 * special-tokens map (bos_token, eos_token, ...) and the caller's extra
 * keyword arguments, which override the rest. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "core/error.h"
#include "tok/tokenizer.h"

void infer_chat_opts_default(infer_chat_opts *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->add_generation_prompt = 1;
}

static int set_vars(jinja_vars *v, const infer_tokenizer *tok, const infer_message *msgs, size_t n,
                    const infer_chat_opts *o)
{
    const char **roles = malloc((n ? n : 1) * sizeof *roles);
    const char **contents = malloc((n ? n : 1) * sizeof *contents);
    int rc = 0;
    if (!roles || !contents) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "infer_chat_render: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            rc = infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_chat_render: message %zu has a NULL %s", i,
                           msgs[i].role ? "content" : "role");
            goto out;
        }
        roles[i] = msgs[i].role;
        contents[i] = msgs[i].content;
    }
    const cJSON *map = tok_special_map(tok), *it;
    if (map) {
        cJSON_ArrayForEach(it, map) if ((rc = jinja_vars_set_cjson(v, it->string, it))) goto out;
    }
    if ((rc = jinja_vars_set_messages(v, "messages", roles, contents, n)) ||
        (rc = jinja_vars_set_none(v, "tools")) || (rc = jinja_vars_set_none(v, "documents")) ||
        (rc = jinja_vars_set_bool(v, "add_generation_prompt", o->add_generation_prompt != 0)))
        goto out;
    if (o->template_kwargs) {
        rc = jinja_vars_set_json_object(v, o->template_kwargs, strlen(o->template_kwargs));
        if (rc)
            rc = infer_err_prefix(rc, "infer_chat_render: template_kwargs");
    }
out:
    free(roles);
    free(contents);
    return rc;
}

int infer_chat_render(const infer_tokenizer *tok, const infer_message *msgs, size_t n_msgs,
                      const infer_chat_opts *opts, char **out, size_t *len)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_chat_render: out is NULL");
    *out = NULL;
    if (len) *len = 0;
    if (!tok || (n_msgs && !msgs))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_chat_render: NULL tokenizer or messages");
    infer_chat_opts def;
    if (!opts) {
        infer_chat_opts_default(&def);
        opts = &def;
    }
    const char *src = opts->template_override ? opts->template_override : tok_chat_template(tok);
    if (!src)
        return infer_err(INFER_ERR_MISSING,
                         "%s: no chat template (neither chat_template in tokenizer_config.json nor "
                         "chat_template.jinja)",
                         tok_path(tok));
    jinja_template *tpl = NULL;
    jinja_vars *vars = NULL;
    int rc = jinja_parse(src, strlen(src), &tpl);
    if (rc) {
        rc = infer_err_prefix(rc, "%s",
                              opts->template_override ? "template_override" : tok_path(tok));
        goto done;
    }
    if ((rc = jinja_vars_new(&vars)) || (rc = set_vars(vars, tok, msgs, n_msgs, opts))) goto done;
    size_t n = 0;
    rc = jinja_render(tpl, vars, NULL, out, &n);
    if (rc == 0 && len) *len = n;
done:
    jinja_vars_free(vars);
    jinja_template_free(tpl);
    return rc;
}
