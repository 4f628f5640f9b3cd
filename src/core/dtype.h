/* dtype.h - element types of stored tensors, and float conversions.
 *
 * Tensor data inside a safetensors file need not be aligned for its type
 * (the header length is arbitrary), so every load goes through memcpy. */
#ifndef INFER_CORE_DTYPE_H
#define INFER_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum infer_dtype {
    DT_F32 = 0,
    DT_F16,
    DT_BF16,
    DT_F64,
    DT_U32,
    DT_I32,
    DT_U8,
    DT_I8,
    DT_BOOL,
    DT_I16,
    DT_U16,
    DT_I64,
    DT_U64,
    DT_COUNT
} infer_dtype;

/* Size of one element in bytes. */
size_t dtype_size(infer_dtype t);
/* The safetensors spelling ("BF16"); NULL-safe names for messages. */
const char *dtype_name(infer_dtype t);
/* Parses a safetensors dtype string; returns -1 when unknown. */
int dtype_parse(const char *s);

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as PyTorch does; NaN stays NaN. */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* Converts n elements starting at src (any alignment) of type t
 * (F32, F16 or BF16) to float32. */
void dtype_to_f32(float *dst, const void *src, infer_dtype t, size_t n);

/* The reverse: n float32 values to type t (F32, F16 or BF16, rounded to
 * nearest even) at dst (any alignment); other types write nothing. */
void dtype_from_f32(void *dst, const float *src, infer_dtype t, size_t n);

#endif
