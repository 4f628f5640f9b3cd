/* fuzz_config.c - libFuzzer target for the config.json parser.
 *
 * Parses the input as config.json.  When it is accepted, checks the
 * invariants the model code relies on (sizes positive, heads dividing,
 * head_dim even, one sliding flag per layer, window set exactly when a
 * layer slides) and traps if one fails; when it is rejected, checks that
 * the struct was left zeroed and the message names the file.  Seeds:
 * fuzz/seeds/fuzz_config/. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PATH "fuzz/config.json"

static void check_rope(const rope_config *r)
{
    if (!(r->theta > 0.0) || !isfinite(r->theta) || !(r->factor > 0.0)) __builtin_trap();
    if (r->kind == ROPE_LLAMA3 &&
        (r->original_max_position <= 0 || !(r->high_freq_factor > r->low_freq_factor)))
        __builtin_trap();
}

static void check_valid(const model_config *c)
{
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0) __builtin_trap();
    if (c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0) __builtin_trap();
    if (c->n_heads % c->n_kv_heads != 0 || c->head_dim <= 0 || c->head_dim % 2 != 0)
        __builtin_trap();
    if (!(c->rms_norm_eps > 0.0) || !(c->attn_scale > 0.0) || !isfinite(c->attn_scale))
        __builtin_trap();
    if (c->attn_softcap < 0.0 || c->final_softcap < 0.0) __builtin_trap();
    if (!c->layer_sliding) __builtin_trap();
    int any = 0;
    for (int i = 0; i < c->n_layers; i++) {
        if (c->layer_sliding[i] > 1) __builtin_trap();
        any |= c->layer_sliding[i];
    }
    if (any != (c->sliding_window > 0)) __builtin_trap();
    check_rope(&c->rope_global);
    check_rope(&c->rope_local);
    if (memchr(c->model_type, 0, sizeof c->model_type) == NULL ||
        memchr(c->architecture, 0, sizeof c->architecture) == NULL ||
        memchr(c->dtype, 0, sizeof c->dtype) == NULL)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    model_config c;
    int rc = config_parse((const char *)data, size, PATH, &c);
    if (rc == 0) {
        check_valid(&c);
    } else {
        if (c.layer_sliding || c.n_layers) __builtin_trap();
        if (strncmp(infer_last_error(), PATH ": ", strlen(PATH ": ")) != 0) __builtin_trap();
    }
    config_free(&c);
    return 0;
}
