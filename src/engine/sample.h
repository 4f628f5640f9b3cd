/* sample.h - choosing the next token from the logits of the last position.
 *
 * One sampler per stream.  Each decode step the engine calls
 * sampler_sample() with the float32 logits [vocab] of the last position,
 * then sampler_accept() with the token it keeps.
 *
 * What happens to the logits, in this order (the transformers order):
 *
 *   1. repetition penalty, over the DISTINCT tokens accepted so far: a
 *      logit > 0 is divided by repeat_penalty, any other is multiplied by
 *      it (transformers' RepetitionPenaltyLogitsProcessor);
 *   2. presence and frequency penalties (OpenAI): every distinct accepted
 *      token loses presence_penalty once and frequency_penalty times the
 *      number of times it was accepted;
 *   3. logit bias: each entry's bias is added to its token's logit
 *      (-INFINITY bans the token; an id listed twice gets both);
 *   4. temperature == 0: the argmax (ties: the lowest id); nothing below
 *      runs and the random generator is not touched.  Otherwise every
 *      logit is divided by the temperature (if that overflows the largest
 *      logit to +inf, the argmax is taken, the limit of a tiny temperature);
 *   5. top-k: keep the top_k largest logits (ties: lower ids first);
 *   6. top-p (nucleus): keep the smallest set of most likely tokens whose
 *      probability sum reaches top_p, at least one (transformers'
 *      TopPLogitsWarper with min_tokens_to_keep = 1);
 *   7. min-p: keep the tokens whose probability is >= min_p times that of
 *      the most likely one, after the filters above (MinPLogitsWarper);
 *   8. one uniform double in [0, 1) from the sampler's own generator
 *      (xoshiro256** seeded through splitmix64) picks a token by inverse
 *      CDF over the softmax of what is left, the kept tokens taken in an
 *      order fixed by the logits and the parameters alone: the same seed
 *      gives the same tokens on every machine.
 *
 * Probabilities are exp(logit / T - largest / T), summed in double; the
 * exp is the library's own (relative error ~3e-7, the same bits on every
 * machine and vector width), so the draws do not depend on the libm.
 * Cost per step over a vocabulary of V: a few vectorized O(V) passes and
 * no sort.  Greedy: a max.  Top-k: a heap of k entries for k <= 512
 * (blocks whose max cannot enter are skipped), else a threshold lowered
 * until k logits reach it, then a quickselect of those.  Top-p without
 * top-k: one exp pass gives every weight and the sum Z; the nucleus lies
 * within the tokens of weight >= t as soon as those weigh top_p * Z, so t
 * is tried at 2^-8 and 2^-16 of the largest weight, then at
 * (1 - top_p) * Z / V (below it V tokens weigh less than (1 - top_p) * Z),
 * by vector masked sums; only those tokens are gathered, and a
 * quickselect that splits by probability mass, not count, finds the exact
 * nucleus.  Min-p alone: only the logits above a bound safely below
 * min_p get an exp.  Scratch: about 12 bytes a token, 24 with penalties.
 *
 * Log-probabilities reported (logprob, top) are those of the RAW logits,
 * before penalties, bias, temperature and filters: what the model said. */
#ifndef INFER_ENGINE_SAMPLE_H
#define INFER_ENGINE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "infer.h"

typedef struct sampler_params {
    float temperature;        /* >= 0; 0 = greedy */
    int top_k;                /* >= 0; 0 = off (so is top_k >= vocab) */
    float top_p;              /* in (0, 1]; 1 = off */
    float min_p;              /* in [0, 1]; 0 = off */
    float repeat_penalty;     /* > 0; 1 = off */
    float presence_penalty;   /* 0 = off; negative values encourage repeats */
    float frequency_penalty;  /* 0 = off */
    const infer_logit_bias *logit_bias; /* [n_logit_bias], copied by sampler_new */
    size_t n_logit_bias;
    uint64_t seed;
    int n_logprobs;           /* 0..min(INFER_MAX_LOGPROBS, vocab) */
} sampler_params;

typedef struct sampler sampler;

/* Validates p and makes a sampler for a vocabulary of vocab tokens.
 * INFER_ERR_INVALID_ARGUMENT, with a message naming the field, for a
 * negative or non-finite temperature, a negative top_k, top_p outside
 * (0, 1], min_p outside [0, 1], a repeat_penalty <= 0 or infinite, a
 * non-finite presence or frequency penalty, NaN anywhere, a logit_bias id
 * outside [0, vocab) or a bias of NaN or +inf, n_logprobs out of range.
 * INFER_ERR_OUT_OF_MEMORY if its scratch cannot be allocated. */
int sampler_new(const sampler_params *p, int vocab, sampler **out);
void sampler_free(sampler *s);

/* Forgets the accepted tokens and reseeds the generator: the sampler then
 * repeats what it did after sampler_new. */
void sampler_reset(sampler *s);

/* Records a generated token for the penalties (a no-op when they are off;
 * ids outside the vocabulary are ignored). */
void sampler_accept(sampler *s, int32_t id);

/* Chooses the next token from logits[vocab] into *id.
 *
 * logits is used as scratch but holds its original values again on
 * return.  logprob (may be NULL, which skips a pass over the vocabulary
 * when n_logprobs is 0 too) gets the log softmax of the raw logits at
 * *id; top[0..n_logprobs) (may be NULL when n_logprobs is 0) gets the
 * n_logprobs highest raw log-probabilities, most likely first, ties by
 * lower id.
 *
 * INFER_ERR_INVALID_ARGUMENT for logits containing NaN ("logits contain
 * NaN at id N") or +inf, and when every token is banned (all -inf after
 * the bias and penalties). */
int sampler_sample(sampler *s, float *logits, int32_t *id, float *logprob, infer_top_logprob *top);

/* The distribution sampler_sample would draw from for these logits, into
 * probs[vocab]: 0 for the tokens the filters remove, 1 at the argmax when
 * greedy.  The generator is not touched; errors as sampler_sample. */
int sampler_dist(sampler *s, float *logits, float *probs);

#endif
