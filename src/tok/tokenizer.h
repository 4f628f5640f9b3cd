/* tokenizer.h - internal view of a loaded tokenizer (src/tok/).
 *
 * The public calls (infer_tokenize, ...) are declared in infer.h.  What
 * other modules of the library need beyond them is declared here. */
#ifndef INFER_TOK_TOKENIZER_H
#define INFER_TOK_TOKENIZER_H

#include "infer.h"

/* The chat template (tokenizer_config.json's chat_template, or
 * chat_template.jinja), or NULL when there is none.  When
 * tokenizer_config.json holds a list of named templates, the one named
 * "default". */
const char *tok_chat_template(const infer_tokenizer *tok);

/* A string-valued special-token setting of tokenizer_config.json
 * ("bos_token", "eos_token", "pad_token", "unk_token"), whether written as a
 * string or as {"content": ...}; NULL when absent or null. */
const char *tok_config_token(const infer_tokenizer *tok, const char *key);

/* The special-tokens map transformers passes to chat templates: the
 * standard names (bos_token, eos_token, unk_token, sep_token, pad_token,
 * cls_token, mask_token) that are set, then extra_special_tokens.  A cJSON
 * object of strings; NULL for a tokenizer loaded without its folder. */
/* The tokenizer.json path, for messages. */
const char *tok_path(const infer_tokenizer *tok);

struct cJSON;
const struct cJSON *tok_special_map(const infer_tokenizer *tok);

#endif
