/* registry.c - the backends compiled into this library. */
#include <string.h>

#include "backend/backend.h"
#include "infer.h"

static const backend_ops *const registry[] = {
#ifdef INFER_WITH_CUDA
    &backend_cuda,
#endif
    &backend_cpu,
};

int backend_count(void) { return (int)(sizeof registry / sizeof registry[0]); }

const backend_ops *backend_at(int i)
{
    return i >= 0 && i < backend_count() ? registry[i] : NULL;
}

const backend_ops *backend_find(const char *name)
{
    for (int i = 0; i < backend_count(); i++)
        if (name && strcmp(registry[i]->name, name) == 0) return registry[i];
    return NULL;
}

int infer_backend_count(void) { return backend_count(); }

const char *infer_backend_name(int index)
{
    const backend_ops *b = backend_at(index);
    return b ? b->name : NULL;
}

int infer_backend_available(const char *name)
{
    const backend_ops *b = backend_find(name);
    return b && b->available() ? 1 : 0;
}
