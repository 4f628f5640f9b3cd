/* fuzz_safetensors.c - libFuzzer target for the safetensors header parser.
 *
 * Parses the input as a whole safetensors file; when it is accepted, reads
 * every byte of every tensor so that AddressSanitizer proves the offsets
 * stay inside the buffer.  Seeds: fuzz/seeds/fuzz_safetensors/. */
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_tensor *t = NULL;
    size_t n = 0;
    if (st_parse(data, size, "fuzz.safetensors", &t, &n) != 0) return 0;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        size_t elems = 1;
        for (int d = 0; d < t[i].ndim; d++) elems *= (size_t)t[i].shape[d];
        if (elems * dtype_size(t[i].dtype) != t[i].nbytes) __builtin_trap();
        for (size_t k = 0; k < t[i].nbytes; k++) sum += t[i].data[k];
    }
    sink = sum;
    st_tensors_free(t, n);
    return 0;
}
