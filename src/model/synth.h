/* synth.h - synthetic model folders with random weights and real shapes,
 * for benchmarks and tests (random weights run exactly as fast as real ones). */
#ifndef INFER_MODEL_SYNTH_H
#define INFER_MODEL_SYNTH_H

#include <stdint.h>

#include "core/dtype.h"

typedef struct synth_spec {
    const char *name;        /* preset name, e.g. "gemma3-1b" */
    const char *model_type;  /* llama, qwen2, qwen3, gemma2, gemma3_text */
    int hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
    int tied;
    const char *extra;       /* more config.json members, e.g. "\"sliding_window\": 512" */
} synth_spec;

/* The presets of shared/testing.md; NULL when unknown. */
const synth_spec *synth_preset(const char *name);
/* The i-th preset, or NULL past the end. */
const synth_spec *synth_preset_at(int i);

/* Writes DIR/config.json and DIR/model.safetensors (dtype F32, F16 or BF16)
 * with weights drawn from seed.  DIR must exist. */
int synth_write_model(const char *dir, const synth_spec *spec, infer_dtype dtype, uint64_t seed);

#endif
