/* cuda_bf16.cuh - float32 to bf16 as the cuda backend's kernels round it,
 * shared by cuda_kernels.cu and cuda_train.cu so that a value converted
 * by either gives the same bits. */
#ifndef INFER_BACKEND_CUDA_BF16_CUH
#define INFER_BACKEND_CUDA_BF16_CUH

#include <stdint.h>

/* Round to nearest even, NaN kept a NaN. */
__device__ __forceinline__ uint16_t f32_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Four values rounded as above, packed in order (x in the low half of .x) */
__device__ __forceinline__ uint2 f32x4_bf16(float4 v)
{
    return make_uint2((uint32_t)f32_bf16(v.x) | (uint32_t)f32_bf16(v.y) << 16,
                      (uint32_t)f32_bf16(v.z) | (uint32_t)f32_bf16(v.w) << 16);
}

#endif
