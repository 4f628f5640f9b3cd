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

struct infer_model {
    model_config cfg;
    char *path;
    st_set *weights_file;
    const backend_ops *be;
    void *bctx;
    int context_len;
    bk_weight embed;               /* [vocab, hidden] */
    bk_weight final_norm;          /* [hidden] */
    bk_weight lm_head;             /* [vocab, hidden]; the embedding when tied */
    layer_weights *layers;         /* [n_layers] */
    void *inv_freq_global;         /* backend float [head_dim / 2] */
    void *inv_freq_local;
    char dtype[16];                /* stored dtype of the embedding, as "bfloat16" */
    int64_t n_params;
};

/* Calls fn for every tensor of the base model but the output head: its
 * name without the prefix ("layers.3.mlp.up_proj.weight"), its slot in the
 * model, and its shape [rows, cols] (cols 0: a vector of rows). */
typedef int (*weight_visit)(void *arg, const char *suffix, bk_weight *slot, int64_t rows,
                            int64_t cols);
int model_visit_weights(infer_model *m, weight_visit fn, void *arg);

/* Binds and checks every weight named by the config (model_weights.c). */
int model_bind_weights(infer_model *m);

/* RoPE inverse frequencies (float32, head_dim / 2 of them) for a rope
 * config; seq_len matters for dynamic scaling only (rope.c). */
void rope_inv_freq(const rope_config *rc, int head_dim, int max_position, int seq_len, float *out);

/* Logits of n_ids tokens at positions 0..n_ids-1 into host memory out
 * [n_ids, vocab] (forward.c). */
int model_forward_logits(infer_model *m, const int32_t *ids, int n_ids, float *out);

#endif
