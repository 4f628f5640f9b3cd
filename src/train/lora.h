/* lora.h - LoRA adapters on a loaded model (lora.c) and their training
 * (train.c).
 *
 * An adapter's parameters live in one backend float32 block: for each
 * adapted module, A [rank, in] then B [out, rank] (PEFT's layout), in
 * the order of layer, then module kind (q, k, v, o, gate, up, down).
 * The gradient block has the same layout. */
#ifndef INFER_TRAIN_LORA_H
#define INFER_TRAIN_LORA_H

#include "infer.h"
#include "model/model.h"

/* "q_proj", ... and "self_attn.q_proj", ... (mlx-lm's keys). */
extern const char *const lora_mod_name[LM_COUNT];
extern const char *const lora_mod_path[LM_COUNT];

typedef struct lora_mod {
    int layer, kind;
    int64_t in, out;
    size_t a_off, b_off;  /* floats into the parameter and gradient blocks */
    bk_weight A, B;       /* DT_F32 views of the parameters */
} lora_mod;

struct infer_lora {
    infer_model *m;
    int rank;
    float scale;          /* what multiplies (x A^T) B^T */
    float alpha;          /* PEFT's lora_alpha, written to its config */
    float dropout;
    unsigned kinds;       /* bit k: module kind k is adapted somewhere */
    int n_mods;
    lora_mod *mods;
    int *index;           /* [n_layers * LM_COUNT]: into mods, or -1 */
    size_t n_params;
    void *params, *grads; /* backend float32 [n_params] */
    model_adapter view;   /* for the forward pass (infer_model_use_lora) */
    bk_weight *va, *vb;   /* the view's [n_layers * LM_COUNT] weights */
};

/* The module of layer li, kind k, or NULL. */
static inline const lora_mod *lora_at(const infer_lora *l, int li, int k)
{
    int i = l->index[li * LM_COUNT + k];
    return i < 0 ? NULL : &l->mods[i];
}

/* The base weight and bias of module kind k of layer li. */
const bk_weight *lora_base(const infer_model *m, int li, int k, const bk_weight **bias);

/* "...layers.N.<path>.<tail>" (path: lora_mod_path) -> layer N and module
 * kind; 0 if name is not of that form. */
int lora_module_name(const char *name, const char *tail, int *layer, int *kind);

/* The next number of a splitmix64 sequence (adapters' initial weights,
 * the batches' order). */
static inline uint64_t lora_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The adapter a trainer trains (train.c). */
infer_lora *trainer_lora(const infer_trainer *t);

/* Zeroes the gradient block. */
int lora_zero_grads(infer_lora *l);

#endif
