/*
 * infer.h - the public interface of libinfer.
 *
 * Runs large language models straight from Hugging Face model folders
 * (config.json, *.safetensors, tokenizer.json).
 *
 * Conventions
 *   - Every call that can fail returns an int status: INFER_OK (0) or one of
 *     the infer_status codes below.  After a failure, infer_last_error()
 *     returns a message naming the file, tensor or field at fault.  The
 *     message is per thread.
 *   - Every object made by an _load/_new call has exactly one _free call.
 *     _free(NULL) is allowed and does nothing.
 *   - The library never exits, aborts or prints.
 *   - A loaded model is immutable and may be used by several threads at once.
 *
 * Matrices are row-major.  Logits are float32 [n_tokens, vocab_size].
 */
#ifndef INFER_H
#define INFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INFER_VERSION_MAJOR 0
#define INFER_VERSION_MINOR 1
#define INFER_VERSION_PATCH 0
#define INFER_VERSION_STRING "0.1.0"

#if defined(__GNUC__) && !defined(INFER_STATIC_BUILD)
#define INFER_API __attribute__((visibility("default")))
#else
#define INFER_API
#endif

/* ------------------------------------------------------------------ */
/* Status codes and errors                                              */
/* ------------------------------------------------------------------ */

typedef enum infer_status {
    INFER_OK = 0,
    INFER_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a negative size, a bad option */
    INFER_ERR_IO = 2,               /* a file could not be opened, read or mapped */
    INFER_ERR_FORMAT = 3,           /* a file is malformed: JSON, safetensors header, ... */
    INFER_ERR_UNSUPPORTED = 4,      /* well formed, but a value this library does not support */
    INFER_ERR_MISSING = 5,          /* a required file, field or tensor is absent */
    INFER_ERR_SHAPE = 6,            /* a tensor has the wrong shape or dtype */
    INFER_ERR_OUT_OF_RANGE = 7,     /* a token id outside the vocabulary, a prompt too long */
    INFER_ERR_OUT_OF_MEMORY = 8,    /* an allocation failed or a memory limit was reached */
    INFER_ERR_BACKEND = 9,          /* the backend is unavailable or failed */
    INFER_ERR_CANCELLED = 10        /* the caller cancelled the operation */
} infer_status;

/* The message of the last failure on this thread ("" if none). */
INFER_API const char *infer_last_error(void);

/* A short constant name for a status code ("INFER_ERR_FORMAT"). */
INFER_API const char *infer_status_name(int status);

/* The library's version as "MAJOR.MINOR.PATCH". */
INFER_API const char *infer_version(void);

/* ------------------------------------------------------------------ */
/* Backends                                                             */
/* ------------------------------------------------------------------ */

/* Number of backends compiled into this library, and the name of each
 * ("cpu", "cuda").  The order is the order of preference for automatic
 * choice. */
INFER_API int infer_backend_count(void);
INFER_API const char *infer_backend_name(int index);

/* 1 if the named backend is compiled in and usable on this machine. */
INFER_API int infer_backend_available(const char *name);

/* ------------------------------------------------------------------ */
/* Models                                                               */
/* ------------------------------------------------------------------ */

typedef struct infer_model infer_model;

typedef struct infer_load_opts {
    const char *backend;      /* "cpu", "cuda", or NULL for the first available */
    int context_len;          /* 0 = the model's max_position_embeddings */
    int n_threads;            /* CPU threads; 0 = all online processors */
    int gpu_layers;           /* -1 = all */
    int parallel_slots;       /* sessions served at once; 0 = 1 */
    const char *adapter_path; /* LoRA adapter to attach at load, or NULL */
} infer_load_opts;

/* Fills *opts with the defaults (automatic backend, all threads, ...). */
INFER_API void infer_load_opts_default(infer_load_opts *opts);

/* Loads a Hugging Face model folder.  opts may be NULL for the defaults.
 * On failure *out is NULL and infer_last_error() says why. */
INFER_API int infer_model_load(const char *path, const infer_load_opts *opts,
                               infer_model **out);
INFER_API void infer_model_free(infer_model *model);

typedef struct infer_model_info {
    char architecture[64];  /* "LlamaForCausalLM", ... (first of config.json's list) */
    char model_type[32];    /* config.json's model_type ("gemma3" for the multimodal one) */
    char backend[16];       /* the backend the model runs on */
    char dtype[16];         /* the weights' stored dtype: "bfloat16", "float16", "float32" */
    int vocab_size;
    int n_layers;
    int hidden_size;
    int intermediate_size;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int context_len;        /* the context this model was loaded with */
    int max_position_embeddings;
    int sliding_window;     /* 0 = none */
    int tied_embeddings;    /* 1 if the output head is the embedding matrix */
    int64_t n_params;       /* parameters in the weights used (counted as stored) */
    int quant_bits;         /* 0 = not quantized */
    int quant_group_size;   /* 0 = not quantized */
} infer_model_info;

INFER_API int infer_model_get_info(const infer_model *model, infer_model_info *out);

/* Computes the logits at every position of a sequence of token ids, as
 * transformers' model(input_ids).logits[0].  out has room for
 * n_ids * vocab_size floats.  Ids outside [0, vocab_size) are an
 * INFER_ERR_OUT_OF_RANGE error. */
INFER_API int infer_model_logits(infer_model *model, const int32_t *ids, size_t n_ids,
                                 float *out);

#ifdef __cplusplus
}
#endif

#endif /* INFER_H */
