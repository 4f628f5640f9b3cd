/* cuda_pdl.cuh - programmatic dependent launch, shared by cuda_kernels.cu
 * and cuda_train.cu. */
#ifndef INFER_BACKEND_CUDA_PDL_CUH
#define INFER_BACKEND_CUDA_PDL_CUH

#include <cuda_runtime.h>

/* ---- programmatic dependent launch (sm_90 and later) ----
 * Every kernel of cuda_kernels.cu and cuda_train.cu is launched with
 * PDL_LAUNCH, which lets it start while the kernel before it on the
 * stream still runs (the launch and a kernel's first reads of its weights
 * then overlap the one before).  So
 * each kernel begins with PDL_ENTRY: it waits until the kernel before has
 * finished and its writes are visible (griddepcontrol.wait; whatever
 * precedes it may read only what no kernel of the stream writes), then
 * lets the next kernel start.  On older devices both are no-ops and the
 * launch is an ordinary one. */
__device__ __forceinline__ void pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_next(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#define PDL_ENTRY()                                                                                              \
    do {                                                                                                         \
        pdl_wait();                                                                                              \
        pdl_next();                                                                                              \
    } while (0)

static int pdl_ok(void)
{
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0;
        ok = !cudaGetDevice(&dev) && !cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) &&
             major >= 9;
        cudaGetLastError();
    }
    return ok;
}

static cudaLaunchAttribute pdl_attr[1];

static cudaLaunchConfig_t launch_cfg(dim3 grid, dim3 block, size_t smem, cudaStream_t st)
{
    cudaLaunchConfig_t c = {};
    c.gridDim = grid;
    c.blockDim = block;
    c.dynamicSmemBytes = smem;
    c.stream = st;
    pdl_attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    pdl_attr[0].val.programmaticStreamSerializationAllowed = 1;
    c.attrs = pdl_attr;
    c.numAttrs = pdl_ok() ? 1 : 0;
    return c;
}

/* Launches kernel K; returns the launch's error from the enclosing
 * function when there is one. */
#define PDL_LAUNCH(K, GRID, BLOCK, SMEM, STREAM, ...)                                                            \
    do {                                                                                                         \
        cudaLaunchConfig_t cfg_ = launch_cfg((GRID), (BLOCK), (SMEM), (cudaStream_t)(STREAM));                   \
        cudaError_t e_ = cudaLaunchKernelEx(&cfg_, K, __VA_ARGS__);                                              \
        if (e_) return (int)e_;                                                                                  \
    } while (0)

#endif
