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
    const char *adapter_path; /* LoRA adapter folder (PEFT or mlx-lm) used from the start, or
                                 NULL (infer_lora_load + infer_model_use_lora) */
    int cpu_int8;             /* cpu, quantized weights: 0 = float32 activations (exact, the
                                 default); 1 = activations as two int8 terms per block of 32
                                 (x = d (x8 + r8 / 256)) for VNNI dot products: faster, about
                                 1e-4 relative error in the logits */
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
    int64_t n_params;       /* parameters in the weights used; a quantized matrix counts as
                               out x in (as mlx-lm counts it), its scales and biases not */
    int quant_bits;         /* MLX quantization, top-level "bits"; 0 = not quantized
                               (per-module entries may differ) */
    int quant_group_size;   /* top-level "group_size"; 0 = not quantized */
    int64_t weight_bytes;   /* every weight as stored (quantized: values, scales and biases) */
    int64_t decode_bytes;   /* the weight bytes one decode step reads: all of them but the
                               embedding, of which one row, and the head (the whole embedding
                               again when tied) */
} infer_model_info;

INFER_API int infer_model_get_info(const infer_model *model, infer_model_info *out);

/* Computes the logits at every position of a sequence of token ids, as
 * transformers' model(input_ids).logits[0].  out has room for
 * n_ids * vocab_size floats.  Ids outside [0, vocab_size) are an
 * INFER_ERR_OUT_OF_RANGE error. */
INFER_API int infer_model_logits(infer_model *model, const int32_t *ids, size_t n_ids,
                                 float *out);

/* ------------------------------------------------------------------ */
/* Tokenizers                                                           */
/* ------------------------------------------------------------------ */

/* A tokenizer loaded from a folder's tokenizer.json, with
 * tokenizer_config.json (special tokens, chat_template),
 * generation_config.json (eos_token_id, possibly a list) and
 * chat_template.jinja where present.  No weights are needed.  Immutable
 * after load; may be shared by threads. */
typedef struct infer_tokenizer infer_tokenizer;

/* Frees memory the library returned to the caller (ids, text). */
INFER_API void infer_free(void *p);

INFER_API int infer_tokenizer_load(const char *dir, infer_tokenizer **out);
INFER_API void infer_tokenizer_free(infer_tokenizer *tok);

#define INFER_MAX_STOP_IDS 16

typedef struct infer_tokenizer_info {
    int vocab_size;       /* ids in [0, vocab_size): the model vocabulary plus added tokens */
    int32_t bos_id;       /* -1 if none */
    int32_t eos_id;       /* -1 if none */
    int32_t pad_id;       /* -1 if none */
    int add_bos;          /* 1 if encoding with specials adds a BOS */
    int has_chat_template;
    int n_stop_ids;       /* EOS + generation_config's + the template's end-of-turn token */
    int32_t stop_ids[INFER_MAX_STOP_IDS];
} infer_tokenizer_info;

INFER_API int infer_tokenizer_get_info(const infer_tokenizer *tok, infer_tokenizer_info *out);

/* Encodes len bytes of UTF-8 text (len may be (size_t)-1 for a
 * NUL-terminated string).  add_special: let the post-processor add its
 * tokens (BOS ...) as Hugging Face's encode(text) does by default.  Special
 * tokens written in the text ("<start_of_turn>") are always recognised.
 * Invalid UTF-8 in the input is an INFER_ERR_INVALID_ARGUMENT error naming
 * the byte offset.  *ids is allocated (free with infer_free). */
INFER_API int infer_tokenize(const infer_tokenizer *tok, const char *text, size_t len,
                             int add_special, int32_t **ids, size_t *n_ids);

/* Decodes ids to UTF-8 text as Hugging Face's decode does; bytes that do
 * not form valid UTF-8 become U+FFFD.  skip_special drops special tokens.
 * *text is NUL-terminated and allocated (free with infer_free). */
INFER_API int infer_detokenize(const infer_tokenizer *tok, const int32_t *ids, size_t n_ids,
                               int skip_special, char **text, size_t *len);

/* The vocabulary string of a token ("Ġthe", "<bos>"), owned by the
 * tokenizer.  INFER_ERR_OUT_OF_RANGE for an unknown id. */
INFER_API int infer_token_to_piece(const infer_tokenizer *tok, int32_t id, const char **piece,
                                   size_t *len);

/* The id of a token given by its exact vocabulary string (e.g. a special
 * token "<|im_end|>"); INFER_ERR_MISSING if there is none. */
INFER_API int infer_token_lookup(const infer_tokenizer *tok, const char *piece, int32_t *id);

/* 1 if id is a special token (an added token marked special). */
INFER_API int infer_token_is_special(const infer_tokenizer *tok, int32_t id);

/* Streaming decode: push ids one at a time; each call yields the text that
 * became complete, always whole UTF-8 code points (possibly none).  The
 * concatenation of all pieces and the final flush equals
 * infer_detokenize of all the ids pushed. */
typedef struct infer_detok infer_detok;

INFER_API int infer_detok_new(const infer_tokenizer *tok, int skip_special, infer_detok **out);
/* *text points into the decoder and stays valid until the next call. */
INFER_API int infer_detok_push(infer_detok *d, int32_t id, const char **text, size_t *len);
/* Emits what is held back (an incomplete sequence becomes U+FFFD). */
INFER_API int infer_detok_flush(infer_detok *d, const char **text, size_t *len);
INFER_API void infer_detok_free(infer_detok *d);

/* ------------------------------------------------------------------ */
/* Chat templates                                                       */
/* ------------------------------------------------------------------ */

typedef struct infer_message {
    const char *role;     /* "system", "user", "assistant", ... */
    const char *content;  /* UTF-8, NUL-terminated */
} infer_message;

typedef struct infer_chat_opts {
    int add_generation_prompt;      /* 1 (the default): end with the assistant's turn opened */
    const char *template_kwargs;    /* NULL or a JSON object of extra template variables, as
                                       transformers' apply_chat_template(**kwargs):
                                       {"enable_thinking": false, "date_string": "26 Jul 2024"} */
    const char *template_override;  /* NULL: the tokenizer's own template */
} infer_chat_opts;

INFER_API void infer_chat_opts_default(infer_chat_opts *opts);

/* Renders a conversation with the tokenizer's chat template exactly as
 * transformers' apply_chat_template(messages, tokenize=False, ...) does.
 * A template's raise_exception() becomes INFER_ERR_INVALID_ARGUMENT with
 * its message.  *out is NUL-terminated (free with infer_free).  Tokenize
 * the result with add_special = 0: the template writes its own BOS. */
INFER_API int infer_chat_render(const infer_tokenizer *tok, const infer_message *msgs, size_t n_msgs,
                                const infer_chat_opts *opts, char **out, size_t *len);

/* ------------------------------------------------------------------ */
/* Sampling options                                                     */
/* ------------------------------------------------------------------ */

typedef struct infer_logit_bias {
    int32_t id;
    float bias;  /* added to the token's logit; -INFINITY bans it */
} infer_logit_bias;

/* How tokens are chosen and when generation stops.  Start from
 * infer_gen_opts_default(): fields left at INFER_UNSET take the model's
 * generation_config.json (temperature, top_k, top_p, min_p,
 * repetition_penalty; greedy when it has do_sample false or is absent). */
#define INFER_UNSET (-1.0f)

typedef struct infer_gen_opts {
    int max_tokens;             /* generated tokens at most; 0 = until EOS or the context is full */
    float temperature;          /* 0 = greedy (argmax) */
    int top_k;                  /* 0 = off; -1 = unset */
    float top_p;                /* 1 = off */
    float min_p;                /* 0 = off: drop tokens below min_p * p(most likely) */
    float repeat_penalty;       /* 1 = off: over the generated tokens, a positive logit is
                                   divided by it, a negative one multiplied */
    float presence_penalty;     /* 0 = off: subtracted once from every generated token's logit */
    float frequency_penalty;    /* 0 = off: subtracted per occurrence */
    const infer_logit_bias *logit_bias;
    size_t n_logit_bias;
    uint64_t seed;              /* the sampler's seed; equal seeds give equal samples */
    const int32_t *stop_ids;    /* more stop tokens (EOS and the template's end of turn always stop) */
    size_t n_stop_ids;
    const char *const *stop_strings; /* generation ends before any of them; never emitted */
    size_t n_stop_strings;
    int ignore_eos;             /* 1: EOS and stop ids do not stop (max_tokens should be set) */
    int logprobs;               /* top-N log-probabilities per token (0 = none, at most 20) */
    double timeout_s;           /* 0 = none; else a deadline this long after the call */
    int truncate_prompt;        /* 1: an over-long prompt loses its oldest tokens instead of
                                   failing with INFER_ERR_OUT_OF_RANGE */
} infer_gen_opts;

INFER_API void infer_gen_opts_default(infer_gen_opts *opts);

/* ------------------------------------------------------------------ */
/* Sessions and streams                                                 */
/* ------------------------------------------------------------------ */

/* A conversation's state on one model: its KV cache, scratch memory and
 * metrics.  Sessions of one model may run at once in different threads;
 * one session serves one stream at a time. */
typedef struct infer_session infer_session;

INFER_API int infer_session_new(infer_model *model, infer_session **out);
INFER_API void infer_session_free(infer_session *s);
/* Forgets the cached tokens (the next prompt is prefilled whole). */
INFER_API void infer_session_reset(infer_session *s);

/* The tokenizer loaded with the model (from its folder), or NULL. */
INFER_API const infer_tokenizer *infer_model_tokenizer(const infer_model *model);

typedef struct infer_top_logprob {
    int32_t id;
    float logprob;
} infer_top_logprob;

#define INFER_MAX_LOGPROBS 20

/* One generated token.  text is the UTF-8 this token completes (possibly
 * empty: a token that ends inside a code point gives its bytes with the
 * next one); valid until the next call on the stream. */
typedef struct infer_token {
    int32_t id;
    const char *text;
    size_t len;
    float logprob;                   /* log p(id) under the model, when opts.logprobs > 0 */
    int n_top;
    const infer_top_logprob *top;    /* the n_top most likely tokens, most likely first */
} infer_token;

typedef enum infer_finish {
    INFER_FINISH_NONE = 0,   /* still running */
    INFER_FINISH_EOS,        /* an end-of-sequence or stop token */
    INFER_FINISH_STOP,       /* a stop string */
    INFER_FINISH_LENGTH,     /* max_tokens */
    INFER_FINISH_CONTEXT,    /* the context is full */
    INFER_FINISH_CANCELLED,  /* infer_stream_cancel or the deadline */
    INFER_FINISH_ERROR
} infer_finish;

typedef struct infer_metrics {
    int prompt_tokens;          /* tokens of the prompt */
    int prefill_tokens;         /* of them, the ones computed (the rest came from the cache) */
    int generated_tokens;
    double prefill_s, decode_s, total_s;
    double prefill_tok_s, decode_tok_s;
    size_t peak_memory, active_memory;  /* bytes, the backend's accounting */
    infer_finish finish;
} infer_metrics;

typedef struct infer_stream infer_stream;

/* Starts generating from a text prompt (encoded with the tokenizer's
 * specials, as Hugging Face's encode does), token ids, or a conversation
 * rendered with the model's chat template.  Nothing is computed until the
 * first infer_stream_next.  chat_opts may be NULL.  The stream holds the
 * session until it is freed. */
INFER_API int infer_generate(infer_session *s, const char *prompt, const infer_gen_opts *opts,
                             infer_stream **out);
INFER_API int infer_generate_ids(infer_session *s, const int32_t *ids, size_t n_ids,
                                 const infer_gen_opts *opts, infer_stream **out);
INFER_API int infer_chat(infer_session *s, const infer_message *msgs, size_t n_msgs,
                         const infer_chat_opts *chat_opts, const infer_gen_opts *opts,
                         infer_stream **out);

/* The pull form: 1 and *tok filled while there are tokens, 0 at the end
 * (then see infer_stream_error and infer_stream_metrics). */
INFER_API int infer_stream_next(infer_stream *st, infer_token *tok);
/* INFER_OK, or why the stream ended early (INFER_ERR_CANCELLED for a
 * cancel or a deadline); *msg (may be NULL) gets the message. */
INFER_API int infer_stream_error(const infer_stream *st, const char **msg);
/* Asks a running stream to stop; safe from any thread.  The stream ends
 * within one decode step. */
INFER_API void infer_stream_cancel(infer_stream *st);
INFER_API int infer_stream_metrics(const infer_stream *st, infer_metrics *out);
INFER_API void infer_stream_free(infer_stream *st);

/* The callback form: runs the stream to its end, calling cb for each
 * token; cb returning non-zero cancels.  Returns infer_stream_error's
 * status. */
typedef int (*infer_token_cb)(void *user, const infer_token *tok);
INFER_API int infer_stream_run(infer_stream *st, infer_token_cb cb, void *user);

/* ------------------------------------------------------------------ */
/* Batches: classification and batch generation                         */
/* ------------------------------------------------------------------ */

/* A batch of prompts, as text (encoded with the tokenizer's specials) or
 * as token ids: exactly one of texts and ids is non-NULL. */
typedef struct infer_prompts {
    size_t n;
    const char *const *texts;     /* [n] */
    const int32_t *const *ids;    /* [n] arrays of lens[i] ids */
    const size_t *lens;
} infer_prompts;

typedef struct infer_classify_result {
    int status;         /* INFER_OK, or why this prompt failed (the others still run) */
    char *error;        /* the message when status != INFER_OK */
    int32_t token;      /* the most likely next token */
    char *text;         /* its text (NULL without a tokenizer) */
    float *logits;      /* [vocab] of the last position when asked, else NULL */
} infer_classify_result;

/* One batched prefill of every prompt (no padding: the prompts are packed
 * into passes); per prompt the next token and, with want_logits, the last
 * position's logits.  *out is an array of prompts->n results. */
INFER_API int infer_classify(infer_model *model, const infer_prompts *prompts, int want_logits,
                             infer_classify_result **out);
INFER_API void infer_classify_free(infer_classify_result *r, size_t n);

typedef struct infer_batch_result {
    int status;         /* INFER_OK, or why this prompt failed */
    char *error;
    int32_t *ids;       /* the generated tokens */
    size_t n_ids;
    char *text;         /* their text, special tokens skipped (NULL without a tokenizer) */
    infer_finish finish;
} infer_batch_result;

/* Generates from every prompt at once: each decode pass reads the weights
 * once for all the running prompts, each with its own positions, cache
 * and sampler (seeded with opts->seed), so that every result has the
 * tokens that generating its prompt alone gives.  At most max_parallel
 * prompts run at once (0 = the model's parallel_slots, else 32). */
INFER_API int infer_batch_generate(infer_model *model, const infer_prompts *prompts,
                                   const infer_gen_opts *opts, int max_parallel,
                                   infer_batch_result **out);
INFER_API void infer_batch_free(infer_batch_result *r, size_t n);

/* ------------------------------------------------------------------ */
/* Attention inspection                                                 */
/* ------------------------------------------------------------------ */

typedef struct infer_attention {
    int n_layers, n_heads, n_kv_heads, seq_len, head_dim;
    float *keys;     /* [n_layers, n_kv_heads, seq_len, head_dim]: after the k norm and RoPE */
    float *queries;  /* [n_layers, n_heads, seq_len, head_dim], or NULL when not asked */
} infer_attention;

/* Runs a prompt and returns the keys (and queries) of every layer as the
 * attention sees them. */
INFER_API int infer_inspect_attention(infer_model *model, const int32_t *ids, size_t n_ids,
                                      int with_queries, infer_attention *out);
INFER_API void infer_attention_free(infer_attention *a);

/* ------------------------------------------------------------------ */
/* Memory and devices                                                   */
/* ------------------------------------------------------------------ */

/* The nine memory calls, per backend (NULL = the default backend, the
 * first available; a name not compiled in or not available here is
 * INFER_ERR_BACKEND).  Sizes are bytes.  The accounting and the limits are
 * process-wide per backend: every model and session on it counts into the
 * same figures.  On the cpu backend they account the library's own
 * allocations (activations, KV caches, scratch), not the mapped weight
 * files.  A memory limit makes an allocation that would pass it fail with
 * INFER_ERR_OUT_OF_MEMORY, the call that needed it failing cleanly
 * (0 = no limit; a limit below the active bytes is allowed and makes the
 * next allocation fail).  The cache limit bounds memory kept for reuse
 * after it is freed; the wired limit bounds pinned host memory (cuda).  The
 * cpu backend keeps no reuse cache and pins nothing: its cache memory is
 * always 0, infer_clear_cache does nothing, and the cache and wired limits
 * are only stored and returned.  The setters return the previous value in
 * *previous (may be NULL).  The getters return 0 for a backend that is
 * not there (infer_last_error says why).  infer_reset_peak_memory makes the
 * peak the active bytes. */
INFER_API int infer_set_cache_limit(const char *backend, size_t bytes, size_t *previous);
INFER_API int infer_set_memory_limit(const char *backend, size_t bytes, size_t *previous);
INFER_API int infer_set_wired_limit(const char *backend, size_t bytes, size_t *previous);
INFER_API size_t infer_get_active_memory(const char *backend);
INFER_API size_t infer_get_peak_memory(const char *backend);
INFER_API size_t infer_get_cache_memory(const char *backend);
INFER_API int infer_clear_cache(const char *backend);
INFER_API int infer_reset_peak_memory(const char *backend);

typedef struct infer_device_info {
    char backend[16];
    char name[128];           /* "NVIDIA H100 80GB HBM3", or the CPU's model name */
    size_t memory_total;      /* bytes: GPU memory, or the machine's RAM */
    size_t memory_free;
    int compute_major, compute_minor;  /* cuda compute capability; 0 on cpu */
    int multiprocessors;      /* SMs, or online CPU cores */
    char features[64];        /* "avx512 avx2 f16c", ... */
} infer_device_info;

INFER_API int infer_get_device_info(const char *backend, infer_device_info *out);

/* The memory bandwidth the backend's device reaches now, in GB/s: the
 * physical limit a memory-bound job (decode) is measured against.  cpu: a
 * streaming read of 1 GiB split over n_threads threads (0 = every online
 * processor), the best of 3; cuda: a device-to-device copy of 512 MiB,
 * bytes read plus written, the best of 10.  Takes about a second. */
INFER_API int infer_measure_bandwidth(const char *backend, int n_threads, double *gb_per_s);

/* ------------------------------------------------------------------ */
/* Discovery                                                            */
/* ------------------------------------------------------------------ */

typedef struct infer_model_entry {
    char *path;               /* the folder (for the Hugging Face cache: the snapshot) */
    char *name;               /* "org/name" for the cache layout, else the folder's name */
    char model_type[32];
    char architecture[64];
    char dtype[16];           /* config.json's dtype or torch_dtype ("bfloat16"); "" if absent */
    int quant_bits;           /* 0 = not quantized */
    int64_t weight_bytes;     /* of the *.safetensors files */
    int has_tokenizer;        /* 1 if tokenizer.json is there */
} infer_model_entry;

/* Finds model folders in dir itself and its direct subfolders (not
 * deeper).  A model folder holds config.json and at least one
 * *.safetensors file or a model.safetensors.index.json.  A folder
 * models--ORG--NAME (in dir, or dir itself) is a Hugging Face cache entry:
 * its snapshot snapshots/REV/ is listed as "ORG/NAME", with linked files
 * followed; where refs/main names a snapshot that is a model folder, that
 * one alone is listed, else every snapshot that is.  So dir may be a
 * cache root such as ~/.cache/huggingface/hub.  model_type and
 * architecture are config.json's top-level ones ("gemma3" for the
 * multimodal checkpoint); quant_bits is the "bits" of its "quantization"
 * or "quantization_config" object.  A folder whose config.json is not a
 * JSON object is skipped without error: one bad folder does not fail a
 * scan.  Hidden entries (".name") are not looked into.  Sorted by name,
 * then path.  *out is NULL when nothing is found; free it with
 * infer_model_entries_free.  dir unreadable: INFER_ERR_IO. */
INFER_API int infer_discover(const char *dir, infer_model_entry **out, size_t *n);
INFER_API void infer_model_entries_free(infer_model_entry *e, size_t n);

/* ------------------------------------------------------------------ */
/* Quantization (MLX format)                                            */
/* ------------------------------------------------------------------ */

typedef struct infer_quant_opts {
    int bits;                 /* 2, 3, 4, 5, 6 or 8 (MLX's); default 4 */
    int group_size;           /* 32, 64 or 128; default 64 */
    int dequantize;           /* 1: make a float folder from an MLX-quantized one */
    const char *dtype;        /* dequantize: "bfloat16", "float16" or "float32" for the
                                 weights written; NULL = the dtype of their scales */
    int64_t max_shard_bytes;  /* tensor bytes per output file; 0 = 5 GiB (mlx-lm's) */
} infer_quant_opts;

/* Fills *opts with the defaults: 4 bits, groups of 64, quantize. */
INFER_API void infer_quant_opts_default(infer_quant_opts *opts);

/* Writes the model folder in_dir to out_dir (a new or empty folder) as
 * mlx-lm's convert does.  Quantize: every linear layer and the embedding
 * (and an untied lm_head) whose input dimension is a multiple of the group
 * size becomes <module>.weight (uint32, MLX's packing), <module>.scales and
 * <module>.biases (in the weight's float dtype), by MLX's rounding rule;
 * other tensors are copied; config.json gets "quantization" and
 * "quantization_config" {group_size, bits, mode: "affine"}.  Dequantize
 * (in_dir MLX-quantized): each quantized module becomes a float weight
 * (scale * q + bias in float32, then rounded to the dtype) and the
 * quantization keys leave config.json.  Tokenizer files,
 * generation_config.json and chat_template.jinja are copied.  Tensors are
 * converted one at a time (the input stays mapped, never read whole into
 * memory), in model.safetensors or model-0000N-of-0000M.safetensors with
 * model.safetensors.index.json.  On failure nothing is left in out_dir. */
INFER_API int infer_quantize(const char *in_dir, const char *out_dir, const infer_quant_opts *opts);

/* ------------------------------------------------------------------ */
/* LoRA fine-tuning                                                     */
/* ------------------------------------------------------------------ */

/* A LoRA adapter on a loaded model: for each adapted linear layer W,
 *     y = x W^T (+ bias) + scale * (x A^T) B^T,
 * A [rank, in] and B [out, rank] float32 (PEFT's lora_A / lora_B; mlx-lm
 * stores their transposes as lora_a / lora_b).  The base weights stay
 * frozen, in whatever format they have (bf16, float32, MLX 4/8-bit). */
typedef struct infer_lora infer_lora;

typedef struct infer_lora_opts {
    int rank;              /* 8 */
    float scale;           /* the multiplier; 0 = alpha / rank */
    float alpha;           /* used when scale is 0 (PEFT's lora_alpha); 16 */
    float dropout;         /* on the adapter's input in training steps (PEFT's lora_dropout,
                              mlx-lm's dropout), in [0, 1); 0 */
    const char *targets;   /* comma-separated module names (q_proj, k_proj, v_proj, o_proj,
                              gate_proj, up_proj, down_proj) or "all"; "q_proj,v_proj" */
    int num_layers;        /* the last N layers; 0 = all */
    uint64_t seed;         /* A ~ PEFT's kaiming-uniform init from this seed; B = 0 */
} infer_lora_opts;

INFER_API void infer_lora_opts_default(infer_lora_opts *opts);
/* A fresh adapter (A random, B zero: the model is unchanged until trained). */
INFER_API int infer_lora_new(infer_model *model, const infer_lora_opts *opts, infer_lora **out);
/* An adapter folder written by PEFT (adapter_config.json with peft_type
 * "LORA", adapter_model.safetensors) or by mlx-lm (adapter_config.json
 * with lora_parameters, adapters.safetensors); the format is told from
 * the config.  path may also name a weights file in such a folder (a
 * checkpoint such as mlx-lm's 0000100_adapters.safetensors), read with
 * the folder's config. */
INFER_API int infer_lora_load(infer_model *model, const char *path, infer_lora **out);

typedef enum infer_adapter_format {
    INFER_ADAPTER_MLX = 0, /* adapters.safetensors + adapter_config.json, as mlx-lm writes */
    INFER_ADAPTER_PEFT     /* adapter_model.safetensors + adapter_config.json, as PEFT writes */
} infer_adapter_format;

/* Makes generation, classification and logits of model go through lora
 * (NULL: the base model again).  Sessions keep what they have cached:
 * reset them after a change.  Freeing the adapter detaches it. */
INFER_API int infer_model_use_lora(infer_model *model, infer_lora *lora);

/* Writes the adapter's files into dir (created if missing). */
INFER_API int infer_lora_save(const infer_lora *lora, const char *dir, infer_adapter_format format);
INFER_API void infer_lora_free(infer_lora *lora);
/* Writes a model folder to out_dir with the adapter merged into its
 * model's weights (W + scale B A, rounded to W's dtype); config,
 * tokenizer and template files copied.  An MLX-quantized module is fused
 * as mlx-lm does: dequantized, W + scale B A in the scales' dtype,
 * quantized again with its bits and group size. */
INFER_API int infer_lora_fuse(const infer_lora *lora, const char *out_dir);

typedef enum infer_lr_schedule {
    INFER_LR_CONSTANT = 0,   /* lr throughout (after the warmup, if any) */
    INFER_LR_COSINE          /* linear warmup to lr, then cosine decay to 0 at total_steps,
                                as transformers' get_cosine_schedule_with_warmup */
} infer_lr_schedule;

typedef struct infer_train_opts {
    float lr;                /* 1e-5 */
    float beta1, beta2, eps; /* AdamW: 0.9, 0.999, 1e-8 */
    float weight_decay;      /* decoupled (AdamW): 0.01 */
    infer_lr_schedule schedule;
    int warmup_steps;        /* 0 */
    int total_steps;         /* the cosine schedule's length */
    float max_grad_norm;     /* clip the adapter's gradient to this L2 norm; 0 = no clipping */
    int grad_checkpoint;     /* 1: keep only each layer's input and compute the rest again in
                                the backward pass (less memory, about a third more work) */
    uint64_t seed;           /* the adapter's dropout masks (infer_lora_opts.dropout) */
} infer_train_opts;

INFER_API void infer_train_opts_default(infer_train_opts *opts);

/* One training example: token ids, of which the first prompt_len are
 * prompt: with prompt_len > 0 the loss leaves out the targets inside the
 * prompt (ids[1 .. prompt_len - 1]), so that only the completion counts. */
typedef struct infer_train_example {
    const int32_t *ids;
    size_t n_ids;
    size_t prompt_len;
} infer_train_example;

/* A batch: examples trained side by side (padded to the longest). */
typedef struct infer_train_batch {
    const infer_train_example *examples;
    size_t n;
} infer_train_batch;

typedef struct infer_step_result {
    double loss;          /* the mean over every counted target token of the step */
    int64_t n_tokens;     /* counted target tokens */
    float lr;             /* the learning rate the step used */
    double grad_norm;     /* the adapter gradient's L2 norm before clipping */
} infer_step_result;

typedef struct infer_trainer infer_trainer;

/* A trainer of lora's parameters (AdamW state included); the adapter and
 * its model must outlive it. */
INFER_API int infer_trainer_new(infer_lora *lora, const infer_train_opts *opts, infer_trainer **out);
INFER_API void infer_trainer_free(infer_trainer *t);

/* One optimizer step over n_micro batches (gradient accumulation: their
 * gradients add up before the step).  The loss is the sum of the
 * cross-entropies of every counted target token of all n_micro batches
 * divided by their count, so accumulation gives the gradient of the whole
 * batch.  Then: clipping, AdamW with the schedule's learning rate.  A
 * model with dynamic RoPE scales each micro-batch for its padded length
 * (its longest example), as transformers scales a batch. */
INFER_API int infer_train_step(infer_trainer *t, const infer_train_batch *micro, int n_micro,
                               infer_step_result *out);
/* The same loss and gradient without a step (the gradient stays readable
 * through the adapter until the next call): validation, and checks. */
INFER_API int infer_train_loss(infer_trainer *t, const infer_train_batch *micro, int n_micro, int want_grad,
                               infer_step_result *out);

/* Training data as mlx-lm reads it: a JSON Lines file whose lines are
 * {"text": ...} (encoded with the tokenizer's specials, EOS appended), or
 * {"prompt": ..., "completion": ...} or {"messages": [{"role", "content"},
 * ...]} (rendered with the tokenizer's chat template: the completion as
 * the assistant's answer to the prompt as the user's).  The first line
 * decides the format.  mask_prompt: each example's prompt (the template
 * over every message but the last, with the generation prompt) is left out
 * of the loss; a text data set has no prompt to mask (an error). */
typedef struct infer_dataset infer_dataset;
INFER_API int infer_dataset_load(const infer_tokenizer *tok, const char *path, int mask_prompt,
                                 infer_dataset **out);
INFER_API size_t infer_dataset_size(const infer_dataset *d);
/* The i-th example (views into the data set), or NULL past the end. */
INFER_API const infer_train_example *infer_dataset_example(const infer_dataset *d, size_t i);
INFER_API void infer_dataset_free(infer_dataset *d);

typedef struct infer_train_loop_opts {
    int iters;                 /* optimizer steps (1000) */
    int batch_size;            /* examples a micro-batch (4); the data set needs at least that many */
    int grad_accum;            /* micro-batches a step (1) */
    int max_seq_len;           /* examples are cut to this many tokens (2048), or to the
                                  model's context length where that is shorter */
    int val_every;             /* validation loss before the first step (a report of iter 0), every N
                                  steps and at the end (200; 0 = only at the end) */
    int val_batches;           /* validation batches each time (25; -1 = all) */
    int report_every;          /* progress callback every N steps (10) */
    int save_every;            /* the adapter saved every N steps and at the end (100; 0 = at the end);
                                  each of the N-step saves also kept as a checkpoint beside it, as
                                  mlx-lm and transformers' Trainer keep them: mlx format
                                  save_path/0000100_adapters.safetensors, PEFT format
                                  save_path/checkpoint-100/ */
    const char *save_path;     /* where to save it (NULL: not saved) */
    infer_adapter_format save_format;
    uint64_t seed;             /* the batches' order */
} infer_train_loop_opts;

INFER_API void infer_train_loop_opts_default(infer_train_loop_opts *opts);

typedef struct infer_train_progress {
    int iter;                  /* steps done */
    double train_loss;         /* the mean loss per target token since the last report */
    double val_loss;           /* NaN when this report has none */
    double tokens_per_s;       /* tokens trained (padding not counted) per second since the last report */
    int64_t tokens;            /* tokens trained so far */
    float lr;
    double grad_norm;          /* the last step's, before clipping */
    size_t peak_memory;        /* the backend's peak memory, bytes */
    const char *saved;         /* the checkpoint this step saved (save_every), else NULL; a report
                                  of only this has train_loss NaN */
} infer_train_progress;

/* Returning non-zero stops the run (INFER_ERR_CANCELLED). */
typedef int (*infer_train_cb)(void *user, const infer_train_progress *p);

/* Trains t's adapter on train for opts->iters steps (batches sorted by
 * length, their order shuffled each epoch), reporting through cb (may be
 * NULL); valid may be NULL. */
INFER_API int infer_train(infer_trainer *t, const infer_dataset *train, const infer_dataset *valid,
                          const infer_train_loop_opts *opts, infer_train_cb cb, void *user);
/* The mean loss per target token over every whole batch of d (examples cut
 * as infer_train cuts them). */
INFER_API int infer_train_eval(infer_trainer *t, const infer_dataset *d, int batch_size, int max_seq_len,
                               double *loss);

#ifdef __cplusplus
}
#endif

#endif /* INFER_H */
