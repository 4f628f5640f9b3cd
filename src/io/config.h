/* config.h - config.json to hyperparameters.
 *
 * Both spellings of config.json are read: transformers 4.x (torch_dtype,
 * rope_theta, rope_scaling, sliding_window_pattern, rope_local_base_freq)
 * and 5.x (dtype, rope_parameters, layer_types, _sliding_window_pattern).
 * Fields left out take the defaults of transformers' configuration class
 * for the model_type.  The multimodal "gemma3" nests its text model under
 * text_config (defaults of Gemma3TextConfig).  Unknown keys are ignored;
 * known keys with unsupported values are INFER_ERR_UNSUPPORTED. */
#ifndef INFER_IO_CONFIG_H
#define INFER_IO_CONFIG_H

#include <stddef.h>

typedef enum model_family {
    FAMILY_LLAMA = 0,
    FAMILY_QWEN2,
    FAMILY_QWEN3,
    FAMILY_GEMMA2,
    FAMILY_GEMMA3, /* gemma3_text, and the text model of gemma3 */
} model_family;

typedef enum rope_kind {
    ROPE_DEFAULT = 0,
    ROPE_LINEAR,  /* positions / factor */
    ROPE_LLAMA3,  /* per-frequency scaling by wavelength */
    ROPE_DYNAMIC, /* NTK-aware base growth past max_position_embeddings */
} rope_kind;

typedef struct rope_config {
    rope_kind kind;
    double theta;                 /* base */
    double factor;                /* linear, llama3, dynamic */
    double low_freq_factor;       /* llama3 */
    double high_freq_factor;      /* llama3 */
    int original_max_position;    /* llama3 (original_max_position_embeddings) */
} rope_config;

typedef enum act_kind { ACT_SILU = 0, ACT_GELU_TANH } act_kind;

/* One per-module entry of an MLX "quantization" object: the module path
 * ("model.layers.0.mlp.down_proj") and its own settings, or quantized = 0
 * for an entry of false. */
typedef struct quant_override {
    char *path;              /* malloc'ed */
    int quantized;
    int bits, group_size;
} quant_override;

typedef struct model_config {
    char model_type[32];     /* as written at the top level ("gemma3" for multimodal) */
    char architecture[64];   /* architectures[0], or "" */
    model_family family;
    int multimodal;          /* 1 when the text model sits under text_config */

    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;            /* config value, else hidden_size / n_heads */
    int max_position_embeddings;
    double rms_norm_eps;

    /* per-family math, as data */
    int norm_plus_one;       /* gemma: x * (1 + w) */
    int qk_norm;             /* qwen3, gemma3: RMSNorm over head_dim on q and k */
    int sandwich_norms;      /* gemma2/3: post_attention, pre/post_feedforward norms */
    int qkv_bias;            /* bias on q, k, v projections */
    int o_bias;              /* bias on o_proj */
    int mlp_bias;            /* bias on gate, up, down */
    act_kind act;
    int embed_scale;         /* 1: multiply embeddings by sqrt(hidden_size) */
    double attn_scale;       /* multiplier of q.k: query_pre_attn_scalar^-0.5 or head_dim^-0.5 */
    double attn_softcap;     /* 0 = off */
    double final_softcap;    /* 0 = off */
    int tie_word_embeddings;

    int sliding_window;      /* window length (counts the current token); 0 = none */
    unsigned char *layer_sliding; /* [n_layers]: 1 = sliding-window layer (malloc'ed) */

    rope_config rope_global; /* full-attention layers */
    rope_config rope_local;  /* sliding layers (gemma3: rope_local_base_freq, unscaled);
                                equal to rope_global for the other families */

    char dtype[16];          /* torch_dtype / dtype: "bfloat16", "float16", "float32" or "" */
    int bos_token_id;        /* -1 if absent */

    /* MLX quantization: the top-level "quantization" object (else
     * "quantization_config", else text_config's).  quant_bits = 0: none.
     * Only mode "affine" is accepted. */
    int quant_bits;
    int quant_group_size;
    quant_override *quant_over;   /* [n_quant_over], malloc'ed */
    int n_quant_over;
} model_config;

/* Parses config.json text.  path names the file in error messages. */
int config_parse(const char *json, size_t len, const char *path, model_config *out);

/* Reads DIR/config.json. */
int config_load(const char *dir, model_config *out);

void config_free(model_config *cfg);

/* The override for a module path, or NULL. */
const quant_override *config_quant_override(const model_config *cfg, const char *module);

/* Reads a whole small JSON file (a few MB at most); *buf is malloc'ed and
 * NUL-terminated is not promised.  INFER_ERR_MISSING when absent. */
int config_read_file(const char *path, char **buf, size_t *len);

/* generation_config.json: the sampling defaults transformers' generate()
 * takes from it (its own defaults for keys left out) and the EOS ids. */
typedef struct gen_config {
    int present;             /* the file exists */
    int do_sample;
    float temperature, top_p, min_p, repetition_penalty;
    int top_k;
    int n_eos;
    int eos[16];
} gen_config;

/* Reads dir/generation_config.json; a missing file leaves present = 0. */
int gen_config_load(const char *dir, gen_config *out);

#endif
