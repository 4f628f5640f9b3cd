/* dtype.c - element sizes, names and float conversions. */
#include "core/dtype.h"

#include <math.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[DT_COUNT] = {
    [DT_F32] = {"F32", 4}, [DT_F16] = {"F16", 2},   [DT_BF16] = {"BF16", 2},
    [DT_F64] = {"F64", 8}, [DT_U32] = {"U32", 4},   [DT_I32] = {"I32", 4},
    [DT_U8] = {"U8", 1},   [DT_I8] = {"I8", 1},     [DT_BOOL] = {"BOOL", 1},
    [DT_I16] = {"I16", 2}, [DT_U16] = {"U16", 2},   [DT_I64] = {"I64", 8},
    [DT_U64] = {"U64", 8},
};

size_t dtype_size(infer_dtype t) { return (unsigned)t < DT_COUNT ? dtype_table[t].size : 0; }

const char *dtype_name(infer_dtype t) { return (unsigned)t < DT_COUNT ? dtype_table[t].name : "?"; }

int dtype_parse(const char *s)
{
    if (!s) return -1;
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(s, dtype_table[i].name) == 0) return i;
    return -1;
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float f = ldexpf((float)man, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     /* overflow to inf */
    if (a < 0x38800000u) {                                       /* subnormal or zero */
        float v = fabsf(f) * 16777216.0f;                        /* in units of 2^-24 */
        return (uint16_t)(sign | (uint32_t)nearbyintf(v));
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}

void dtype_from_f32(void *dst, const float *src, infer_dtype t, size_t n)
{
    unsigned char *p = dst;
    if (t == DT_F32) {
        memcpy(p, src, n * sizeof(float));
    } else if (t == DT_BF16 || t == DT_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = t == DT_BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
    }
}

void dtype_to_f32(float *dst, const void *src, infer_dtype t, size_t n)
{
    const unsigned char *p = src;
    switch (t) {
    case DT_F32:
        memcpy(dst, p, n * sizeof(float));
        break;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
        break;
    case DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        break;
    default:
        for (size_t i = 0; i < n; i++) dst[i] = 0.0f;
        break;
    }
}
