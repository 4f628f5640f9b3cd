/* fuzz_jinja.c - libFuzzer target for the Jinja interpreter (src/chat).
 *
 * Parses the input as a template and, when it parses, renders it with
 * small limits (200,000 steps, 1 MiB of text, depth 200) and a fixed set
 * of chat-like variables.  Checks: a failure has a status and a message
 * (a syntax error names its line); a success gives NUL-terminated, valid
 * UTF-8 text within the output limit.  Seeds: fuzz/seeds/fuzz_jinja/. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_int.h"
#include "core/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi \\u00e9\\ud83d\\ude00 <think>x</think>\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nhmm\\n</think>\\n\\nHello.\","
    "  \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1}}}]},"
    " {\"role\": \"tool\", \"content\": \"{\\\"r\\\": 2.5}\"}, {\"role\": \"user\", \"content\": \"Bye\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"d\","
    "  \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}}}}],"
    " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": true,"
    " \"enable_thinking\": false, \"n\": 7, \"f\": 2.5, \"none\": null, \"s\": \"Hello World\","
    " \"x\": [3, 1, 2], \"d\": {\"b\": 1, \"a\": [1, {\"c\": null}]}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jinja_template *tpl = NULL;
    int rc = jinja_parse((const char *)data, size, &tpl);
    if (rc != 0) {
        if (tpl || !infer_last_error()[0]) __builtin_trap();
        return 0;
    }
    jinja_vars *vars = NULL;
    if (jinja_vars_new(&vars) || jinja_vars_set_json_object(vars, VARS, sizeof VARS - 1)) __builtin_trap();
    jinja_limits lim = {0};
    lim.max_steps = 200000;
    lim.max_output = 1 << 20;
    lim.max_depth = 200;
    char *out = NULL;
    size_t len = 0;
    rc = jinja_render(tpl, vars, &lim, &out, &len);
    if (rc == 0) {
        size_t bad;
        if (!out || out[len] != '\0' || len > lim.max_output || !u8_valid(out, len, &bad)) __builtin_trap();
    } else {
        if (out || !infer_last_error()[0]) __builtin_trap();
    }
    free(out);
    jinja_vars_free(vars);
    jinja_template_free(tpl);
    return 0;
}
