/* model.h - a loaded model: hyperparameters, weights, backend.
 *
 * The transformer is written once (forward.c) over the backend table;
 * what differs between families is data in model_config (io/config.h). */
#ifndef INFER_MODEL_H
#define INFER_MODEL_H

#include "backend/backend.h"
#include "infer.h"
#include "io/config.h"
#include "io/safetensors.h"

typedef struct layer_weights {
    bk_weight input_norm;          /* [hidden] */
    bk_weight q, k, v, o;          /* [heads*hd, hidden], [kv*hd, hidden] x2, [hidden, heads*hd] */
    bk_weight q_bias, k_bias, v_bias, o_bias; /* data NULL when absent */
    bk_weight q_norm, k_norm;      /* [head_dim] when cfg.qk_norm */
    bk_weight post_attn_norm;      /* [hidden]: before the MLP, or (sandwich) after attention */
    bk_weight pre_ff_norm;         /* sandwich only */
    bk_weight post_ff_norm;        /* sandwich only */
    bk_weight gate, up, down;      /* [inter, hidden] x2, [hidden, inter] */
    bk_weight gate_bias, up_bias, down_bias;
} layer_weights;

/* The linear modules a LoRA adapter may adapt, in this order. */
enum { LM_Q, LM_K, LM_V, LM_O, LM_GATE, LM_UP, LM_DOWN, LM_COUNT };

/* What the forward pass reads of the adapter in use (train/lora.c fills
 * it): module k of layer li adds scale * (x A^T) B^T, A = a[li * LM_COUNT
 * + k] [rank, in] and B = b[...] [out, rank], float32; data NULL where the
 * module is not adapted. */
typedef struct model_adapter {
    int rank;
    float scale;
    size_t max_out;       /* the widest adapted module's out */
    const bk_weight *a, *b;
} model_adapter;

struct infer_model {
    model_config cfg;
    char *path;
    st_set *weights_file;
    const backend_ops *be;
    void *bctx;
    int context_len;
    int parallel_slots;            /* load option: sequences served at once (0 = default) */
    bk_weight embed;               /* [vocab, hidden] */
    bk_weight final_norm;          /* [hidden] */
    bk_weight lm_head;             /* [vocab, hidden]; the embedding when tied */
    layer_weights *layers;         /* [n_layers] */
    void *inv_freq_global;         /* backend float [head_dim / 2] */
    void *inv_freq_local;
    char dtype[16];                /* stored dtype of the embedding, as "bfloat16" */
    int64_t n_params;
    int64_t weight_bytes, decode_bytes; /* infer_model_info */
    int weights_placed;            /* model_weights_prepare ran: release them before the context goes */
    infer_tokenizer *tok;          /* the folder's tokenizer, or NULL when it has none */
    gen_config gen;                /* generation_config.json */
    const model_adapter *adapter;  /* the LoRA adapter generation uses, or NULL */
    struct infer_lora *own_lora;   /* loaded with the model (load option adapter_path) */
};

/* Calls fn for every tensor of the base model but the output head: its
 * name without the prefix ("layers.3.mlp.up_proj.weight"), its slot in the
 * model, and its shape [rows, cols] (cols 0: a vector of rows). */
typedef int (*weight_visit)(void *arg, const char *suffix, bk_weight *slot, int64_t rows,
                            int64_t cols);
int model_visit_weights(infer_model *m, weight_visit fn, void *arg);

/* 1 if the text model's weights sit inside a multimodal checkpoint
 * (Gemma 3's "language_model" prefixes), whose module paths adapters name
 * differently. */
int model_is_multimodal(const infer_model *m);

/* Binds and checks every weight named by the config (model_weights.c). */
int model_bind_weights(infer_model *m);
/* Hands every weight to the backend's weight_prepare (cuda copies them to
 * the device; cpu has none and uses them where they lie), and back. */
int model_weights_prepare(infer_model *m);
void model_weights_release(infer_model *m);

/* Calls fn with the full name of every matrix of the model present in w:
 * the embedding, the linear layers and an untied head (the Linear and
 * Embedding modules mlx-lm quantizes), in file order.  path names the
 * folder in messages. */
int model_matrix_names(const model_config *cfg, const st_set *w, const char *path,
                       int (*fn)(void *arg, const char *name), void *arg);

/* RoPE inverse frequencies (float32, head_dim / 2 of them) for a rope
 * config; seq_len matters for dynamic scaling only (rope.c). */
void rope_inv_freq(const rope_config *rc, int head_dim, int max_position, int seq_len, float *out);

/* Logits of n_ids tokens at positions 0..n_ids-1 into host memory out
 * [n_ids, vocab] (forward.c). */
int model_forward_logits(infer_model *m, const int32_t *ids, int n_ids, float *out);
/* ys[i] = x . ws[i]^T (+ bs[i]) for n <= 4 weights of one x (q, k, v; gate,
 * up): one matmul_n where the backend has it, else one product after
 * another (forward.c; the trainer's too). */
int model_products(infer_model *m, void *const *ys, const void *x, const bk_weight *const *ws,
                   const bk_weight *const *bs, int n, int T);

/* ---- KV caches and batched forward passes (kv.c, forward.c) ---- */

/* The keys and values of n_slots sequences, per layer, in backend memory:
 * layer l holds [n_slots, cap[l], n_kv_heads * head_dim] floats.  A
 * sliding-window layer whose cap is below the context is a ring (see
 * bk_attn_kv); other layers grow (kv_cache_reserve) up to the context. */
typedef struct kv_cache {
    int n_slots;
    int n_layers;
    int *cap;           /* [n_layers] */
    void **k, **v;      /* [n_layers] */
    int full_cap;       /* cap of the non-ring layers now */
    int max_chunk;      /* most new tokens per sequence in one pass */
} kv_cache;

/* A cache for n_slots sequences taking up to max_chunk new tokens each per
 * pass; full layers start with room for initial positions. */
int kv_cache_new(infer_model *m, int n_slots, int max_chunk, int initial, kv_cache *kv);
void kv_cache_free(infer_model *m, kv_cache *kv);
/* Makes room for positions [0, n) in every slot (n <= the context),
 * keeping what the slots hold (their first `keep` positions). */
int kv_cache_reserve(infer_model *m, kv_cache *kv, int n, int keep);
/* 1 if a slot holding `len` positions can be cut back to `to` positions
 * (the rings still hold what the positions after `to` will see). */
int kv_cache_can_rewind(const infer_model *m, const kv_cache *kv, int len, int to);

/* One pass over a ragged batch: sequence b adds the tokens
 * ids[q_start[b] .. q_start[b+1]) at positions kv_len[b] - n_b ..
 * kv_len[b] - 1 of its slot.  Logits of the rows out_rows[0..n_out) go
 * to host memory logits [n_out, vocab]. */
typedef struct fwd_batch {
    int B, N;
    const int32_t *ids;       /* host [N] */
    const int32_t *q_start;   /* host [B + 1] */
    const int32_t *kv_len;    /* host [B] */
    const int32_t *slot;      /* host [B] */
    /* host [B] or NULL: the sequence length dynamic RoPE scales for (NULL:
     * kv_len).  transformers scales a whole prefill for the prompt's
     * length, so a prompt prefilled in chunks passes that length. */
    const int32_t *rope_len;
    const int32_t *out_rows;  /* host [n_out] */
    int n_out;
    float *logits;            /* host [n_out, vocab] */
    /* Optional, host [n_out]: the greedy token of each output row, found
     * by the backend (only the ids come back); -1 where the host must
     * look at the row, whose logits then are in logits (NaN or +inf in
     * it, nothing above -inf, or no argmax in the backend). */
    int32_t *out_ids;
    /* Optional: called per layer with the post-RoPE queries [N, heads, hd]
     * and keys [N, kv_heads, hd] (backend memory). */
    int (*inspect)(void *user, int layer, const void *q, const void *k);
    void *inspect_user;
} fwd_batch;

/* Scratch memory of passes of up to max_rows rows, max_B sequences and
 * max_out logit rows. */
typedef struct fwd_scratch {
    int max_rows, max_B, max_out;
    void *x, *h, *q, *k, *v, *a, *o, *g, *u;
    void *sel, *logits;
    void *lt, *lu;           /* an adapter's x A^T [max_rows, rank] and its product with B */
    int lt_rank;             /* lt and lu are sized for this rank (0: not allocated) */
    size_t lu_cols;
    void *inputs;            /* one backend block: the pass's inputs below point into it */
    void *ids, *pos, *q_start, *kv_len, *slot, *out_rows, *inv_freq_dyn, *amax;
    int32_t *host_in;        /* host staging of inputs (forward.c's in_layout) */
    void *graph;             /* the recorded decode step (backends with graphs), or NULL */
    uint64_t graph_key;      /* what it was recorded for (graph_key in forward.c) */
    uint64_t eager_key;      /* the key of the last step that ran without a graph */
} fwd_scratch;

int fwd_scratch_new(infer_model *m, int max_rows, int max_B, int max_out, fwd_scratch *s);
void fwd_scratch_free(infer_model *m, fwd_scratch *s);

int model_forward(infer_model *m, kv_cache *kv, fwd_scratch *s, const fwd_batch *fb);

#endif
