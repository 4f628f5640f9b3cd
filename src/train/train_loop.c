/* train_loop.c - a whole fine-tuning run over a data set, as mlx-lm's
 * trainer runs it: examples sorted by length and cut into batches of
 * batch_size neighbours (so that a batch pads little; a remainder smaller
 * than a batch is left out), the batches' order shuffled every epoch,
 * examples longer than max_seq_len (or the model's context, where that is
 * shorter) cut to it; a validation loss over the
 * first val_batches batches of the validation set before the first step
 * (iter 0: where training starts from, as mlx-lm's first report), every
 * val_every steps and at the end; the adapter saved every save_every
 * steps and at the end, each save_every step's also kept as a numbered
 * checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "io/files.h"
#include "train/lora.h"

void infer_train_loop_opts_default(infer_train_loop_opts *o)
{
    memset(o, 0, sizeof *o);
    /* mlx-lm's defaults */
    o->iters = 1000;
    o->batch_size = 4;
    o->grad_accum = 1;
    o->max_seq_len = 2048;
    o->val_every = 200;
    o->val_batches = 25;
    o->report_every = 10;
    o->save_every = 100;
    o->save_format = INFER_ADAPTER_MLX;
}

/* The adapter saved to o->save_path after step it; at a save_every step
 * also a checkpoint of it, named into path (as mlx-lm does, the last step
 * too where save_every divides it): mlx-lm's 0000100_adapters.safetensors
 * beside adapters.safetensors, or transformers' Trainer's checkpoint-100/
 * folder (PEFT). */
static int save_step(const infer_trainer *t, const infer_train_loop_opts *o, int it, char *path, size_t cap)
{
    path[0] = 0;
    int rc = infer_lora_save(trainer_lora(t), o->save_path, o->save_format);
    if (rc || !(o->save_every > 0 && it % o->save_every == 0)) return rc;
    if (o->save_format == INFER_ADAPTER_PEFT) {
        snprintf(path, cap, "%s/checkpoint-%d", o->save_path, it);
        rc = infer_lora_save(trainer_lora(t), path, o->save_format);
    } else {
        char src[4096];
        snprintf(src, sizeof src, "%s/adapters.safetensors", o->save_path);
        snprintf(path, cap, "%s/%07d_adapters.safetensors", o->save_path, it);
        int copied;
        rc = io_copy_file(src, path, &copied);
        if (!rc && !copied) rc = infer_err(INFER_ERR_IO, "%s: missing after the save", src);
    }
    if (rc) path[0] = 0;
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The data set's examples cut to max_len, sorted by length, in batches of
 * bs (a batch: bs consecutive entries of order). */
typedef struct batches {
    infer_train_example *ex; /* [n] views, cut */
    size_t *order;           /* [n] indices by length */
    size_t n, n_batches, bs;
} batches;

typedef struct len_index {
    size_t len, i;
} len_index;

static int by_length(const void *a, const void *b)
{
    const len_index *x = a, *y = b;
    return x->len < y->len ? -1 : x->len > y->len ? 1 : (x->i > y->i) - (x->i < y->i);
}

/* The length examples are cut to: max_seq_len, or the model's context
 * where that is shorter (mlx-lm, which has no context limit, only cuts to
 * max_seq_len; a step refuses an example longer than the context). */
static int cut_length(const infer_trainer *t, int max_seq_len)
{
    const int ctx = trainer_lora(t)->m->context_len;
    return ctx < max_seq_len ? ctx : max_seq_len;
}

static int make_batches(const infer_dataset *d, int bs, int max_len, const char *what, batches *b)
{
    memset(b, 0, sizeof *b);
    size_t n = infer_dataset_size(d);
    if (n < (size_t)bs)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "train: the %s set has %zu examples, fewer than a batch of %d",
                         what, n, bs);
    b->ex = malloc(n * sizeof *b->ex);
    b->order = malloc(n * sizeof *b->order);
    len_index *li = malloc(n * sizeof *li);
    if (!b->ex || !b->order || !li) {
        free(b->ex);
        free(b->order);
        free(li);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        b->ex[i] = *infer_dataset_example(d, i);
        if (b->ex[i].n_ids > (size_t)max_len) b->ex[i].n_ids = (size_t)max_len;
        if (b->ex[i].prompt_len > b->ex[i].n_ids) b->ex[i].prompt_len = b->ex[i].n_ids;
        li[i] = (len_index){b->ex[i].n_ids, i};
    }
    qsort(li, n, sizeof *li, by_length);
    for (size_t i = 0; i < n; i++) b->order[i] = li[i].i;
    free(li);
    b->n = n;
    b->bs = (size_t)bs;
    b->n_batches = n / (size_t)bs;
    return INFER_OK;
}

static void free_batches(batches *b)
{
    free(b->ex);
    free(b->order);
}

/* Batch k of b, its examples copied to buf [bs]. */
static infer_train_batch batch_at(const batches *b, size_t k, infer_train_example *buf)
{
    for (size_t i = 0; i < b->bs; i++) buf[i] = b->ex[b->order[k * b->bs + i]];
    return (infer_train_batch){buf, b->bs};
}

/* The target tokens the loss counts in n micro-batches. */
static int64_t targets(const infer_train_batch *b, int n)
{
    int64_t c = 0;
    for (int k = 0; k < n; k++)
        for (size_t i = 0; i < b[k].n; i++) {
            const infer_train_example *e = &b[k].examples[i];
            size_t p = e->prompt_len > 1 ? e->prompt_len : 1;
            if (e->n_ids > p) c += (int64_t)(e->n_ids - p);
        }
    return c;
}

static int validate(infer_trainer *t, const batches *v, int n_batches, double *loss)
{
    size_t nb = n_batches < 0 || (size_t)n_batches > v->n_batches ? v->n_batches : (size_t)n_batches;
    infer_train_example *buf = malloc(v->bs * sizeof *buf);
    if (!buf) return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    double sum = 0.0;
    int64_t count = 0;
    int rc = INFER_OK;
    for (size_t k = 0; k < nb && !rc; k++) {
        infer_train_batch bt = batch_at(v, k, buf);
        infer_step_result r;
        if (targets(&bt, 1) == 0) continue;
        if (!(rc = infer_train_loss(t, &bt, 1, 0, &r))) {
            sum += r.loss * (double)r.n_tokens;
            count += r.n_tokens;
        }
    }
    free(buf);
    *loss = count ? sum / (double)count : NAN;
    return rc;
}

int infer_train(infer_trainer *t, const infer_dataset *train, const infer_dataset *valid,
                const infer_train_loop_opts *opts, infer_train_cb cb, void *user)
{
    if (!t || !train) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_train: NULL argument");
    infer_train_loop_opts o;
    if (opts)
        o = *opts;
    else
        infer_train_loop_opts_default(&o);
    if (o.iters <= 0 || o.batch_size <= 0 || o.grad_accum <= 0 || o.max_seq_len < 2 || o.val_every < 0 ||
        o.save_every < 0 || o.report_every < 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "train loop: iters %d, batch size %d, grad accum %d, max seq len %d, val every %d, save "
                         "every %d, report every %d",
                         o.iters, o.batch_size, o.grad_accum, o.max_seq_len, o.val_every, o.save_every,
                         o.report_every);
    batches tb, vb;
    const int cut = cut_length(t, o.max_seq_len);
    int rc = make_batches(train, o.batch_size, cut, "training", &tb);
    if (rc) return rc;
    memset(&vb, 0, sizeof vb);
    if (valid && (rc = make_batches(valid, o.batch_size, cut, "validation", &vb))) {
        free_batches(&tb);
        return rc;
    }
    size_t *perm = malloc(tb.n_batches * sizeof *perm);
    infer_train_batch *micro = malloc((size_t)o.grad_accum * sizeof *micro);
    infer_train_example *buf = malloc((size_t)o.grad_accum * tb.bs * sizeof *buf);
    if (!perm || !micro || !buf) rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    const char *backend = trainer_lora(t)->m->be->name;
    uint64_t st = o.seed * 0x2545f4914f6cdd1dull + 7;
    size_t pos = tb.n_batches; /* a new epoch at the first step */
    if (!rc && valid && o.val_every > 0) { /* the starting point */
        infer_train_progress p = {.iter = 0, .val_loss = NAN, .lr = NAN, .grad_norm = NAN, .train_loss = NAN};
        rc = validate(t, &vb, o.val_batches, &p.val_loss);
        p.peak_memory = infer_get_peak_memory(backend);
        if (!rc && cb && cb(user, &p)) rc = infer_err(INFER_ERR_CANCELLED, "train: cancelled before the first step");
    }
    double win_loss = 0.0, win_t0 = now_s();
    int64_t win_tok = 0, win_count = 0, total_tok = 0;
    for (int it = 1; !rc && it <= o.iters; it++) {
        for (int a = 0; a < o.grad_accum; a++) {
            if (pos == tb.n_batches) { /* shuffle the batches' order */
                for (size_t i = 0; i < tb.n_batches; i++) perm[i] = i;
                for (size_t i = tb.n_batches; i > 1; i--) {
                    size_t j = (size_t)(lora_splitmix(&st) % i), x = perm[i - 1];
                    perm[i - 1] = perm[j];
                    perm[j] = x;
                }
                pos = 0;
            }
            micro[a] = batch_at(&tb, perm[pos++], buf + (size_t)a * tb.bs);
            for (size_t i = 0; i < tb.bs; i++) win_tok += (int64_t)micro[a].examples[i].n_ids;
        }
        infer_step_result r;
        if (targets(micro, o.grad_accum) == 0) continue; /* every target masked: nothing to learn */
        if ((rc = infer_train_step(t, micro, o.grad_accum, &r))) break;
        win_loss += r.loss * (double)r.n_tokens;
        win_count += r.n_tokens;
        int report = o.report_every > 0 && (it % o.report_every == 0 || it == o.iters);
        int val = valid && ((o.val_every > 0 && it % o.val_every == 0) || it == o.iters);
        infer_train_progress p = {.iter = it, .val_loss = NAN, .lr = r.lr, .grad_norm = r.grad_norm, .train_loss = NAN};
        if (val && (rc = validate(t, &vb, o.val_batches, &p.val_loss))) break;
        char ckpt[4096];
        if (o.save_path && ((o.save_every > 0 && it % o.save_every == 0) || it == o.iters)) {
            if ((rc = save_step(t, &o, it, ckpt, sizeof ckpt))) break;
            if (ckpt[0]) p.saved = ckpt;
        }
        if (!(report || val)) { /* only the checkpoint to tell */
            p.tokens = total_tok + win_tok;
            p.peak_memory = infer_get_peak_memory(backend);
            if (p.saved && cb && cb(user, &p)) rc = infer_err(INFER_ERR_CANCELLED, "train: cancelled at step %d", it);
        } else {
            double dt = now_s() - win_t0;
            total_tok += win_tok;
            p.train_loss = win_count ? win_loss / (double)win_count : NAN;
            p.tokens_per_s = dt > 0 ? (double)win_tok / dt : 0.0;
            p.tokens = total_tok;
            p.peak_memory = infer_get_peak_memory(backend);
            if (cb && cb(user, &p)) {
                rc = infer_err(INFER_ERR_CANCELLED, "train: cancelled at step %d", it);
                break;
            }
            win_loss = 0.0;
            win_count = win_tok = 0;
            win_t0 = now_s();
        }
    }
    free(perm);
    free(micro);
    free(buf);
    free_batches(&tb);
    free_batches(&vb);
    return rc;
}

int infer_train_eval(infer_trainer *t, const infer_dataset *d, int batch_size, int max_seq_len, double *loss)
{
    if (!t || !d || !loss) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_train_eval: NULL argument");
    if (batch_size <= 0 || max_seq_len < 2)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_train_eval: batch size %d, max seq len %d", batch_size,
                         max_seq_len);
    batches b;
    int rc = make_batches(d, batch_size, cut_length(t, max_seq_len), "evaluation", &b);
    if (rc) return rc;
    rc = validate(t, &b, -1, loss);
    free_batches(&b);
    return rc;
}
