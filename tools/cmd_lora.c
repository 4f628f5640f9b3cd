/* cmd_lora.c - `infer lora MODEL_DIR --data DIR --adapter-path OUT ...`:
 * LoRA fine-tuning as mlx-lm's `mlx_lm.lora --train` runs it (the same
 * data folder, defaults and adapter files), with a progress line every
 * few steps; and `infer fuse MODEL_DIR --adapter-path A --out DIR`: the
 * adapter merged into a new model folder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"

static int progress(void *user, const infer_train_progress *p)
{
    (void)user;
    if (!isnan(p->val_loss)) printf("Iter %d: val loss %.3f\n", p->iter, p->val_loss);
    if (!isnan(p->train_loss))
        printf("Iter %d: train loss %.3f, learning rate %.3e, grad norm %.3g, tokens/s %.1f, trained tokens %lld, "
               "peak mem %.3f GB\n",
               p->iter, p->train_loss, (double)p->lr, p->grad_norm, p->tokens_per_s, (long long)p->tokens,
               (double)p->peak_memory / 1e9);
    if (p->saved) printf("Iter %d: saved a checkpoint of the adapter to %s\n", p->iter, p->saved);
    fflush(stdout);
    return 0;
}

/* dir/name.jsonl, or NULL (set *rc) when it cannot be read; a missing
 * optional file is not an error. */
static int load_split(const infer_tokenizer *tok, const char *dir, const char *name, int mask, int required,
                      infer_dataset **out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.jsonl", dir, name);
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return required ? cli_fail("%s: no such file (the data folder needs it)", path) : 0;
    int st = infer_dataset_load(tok, path, mask, out);
    return st ? cli_library_error(st) : 0;
}

int cmd_lora(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *data = NULL, *targets = "q_proj,v_proj", *format = "mlx", *schedule = "constant";
    cli_model_opts m = {0};
    infer_lora_opts lo;
    infer_lora_opts_default(&lo);
    infer_train_opts to;
    infer_train_opts_default(&to);
    infer_train_loop_opts loop;
    infer_train_loop_opts_default(&loop);
    int mask = 0, resume = 0, test = 0, seed = 0, num_layers = 16;
    const char *resume_file = NULL;
    int train_flag = 0;
    float alpha = 0.0f;
    m.adapter = "adapters";
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "--train", .kind = CLI_FLAG, .dest = &train_flag,
         .help = "accepted for mlx_lm.lora's command lines: infer lora always trains"},
        {.name = "--data", .kind = CLI_STRING, .dest = &data, .meta = "DIR", .required = 1,
         .help = "a folder with train.jsonl and valid.jsonl (test.jsonl for --test): lines of {\"text\"}, "
                 "{\"prompt\", \"completion\"} or {\"messages\"} (each may add \"tools\")"},
        {.name = "--iters", .kind = CLI_INT, .dest = &loop.iters, .meta = "N", .min = 1, .max = 1 << 30,
         .help = "optimizer steps (default 1000)"},
        {.name = "--batch-size", .kind = CLI_INT, .dest = &loop.batch_size, .meta = "B", .min = 1, .max = 1 << 16,
         .help = "examples a batch (default 4)"},
        {.name = "--grad-accum", .kind = CLI_INT, .dest = &loop.grad_accum, .meta = "K", .min = 1, .max = 1 << 16,
         .help = "batches whose gradients add up before each step (default 1)",
         .alias = "--grad-accumulation-steps"},
        {.name = "--lr", .kind = CLI_FLOAT, .dest = &to.lr, .meta = "LR", .fmin = 0, .fmax = 10,
         .help = "learning rate (default 1e-5)", .alias = "--learning-rate"},
        {.name = "--schedule", .kind = CLI_CHOICE, .dest = &schedule, .meta = "S", .choices = "constant|cosine",
         .help = "learning-rate schedule after the warmup (default constant; cosine decays to 0 at --iters)"},
        {.name = "--warmup", .kind = CLI_INT, .dest = &to.warmup_steps, .meta = "N", .min = 0, .max = 1 << 30,
         .help = "linear warmup steps (default 0)"},
        {.name = "--weight-decay", .kind = CLI_FLOAT, .dest = &to.weight_decay, .meta = "W", .fmin = 0, .fmax = 10,
         .help = "AdamW's decoupled weight decay (default 0.01)"},
        {.name = "--max-grad-norm", .kind = CLI_FLOAT, .dest = &to.max_grad_norm, .meta = "X", .fmin = 0, .fmax = 1e9,
         .help = "clip the gradient to this norm (default 0 = off)"},
        {.name = "--rank", .kind = CLI_INT, .dest = &lo.rank, .meta = "R", .min = 1, .max = 4096,
         .help = "LoRA rank (default 8)"},
        {.name = "--scale", .kind = CLI_FLOAT, .dest = &lo.scale, .meta = "S", .fmin = 1e-9, .fmax = 1e9,
         .help = "the adapter's multiplier (default 20, mlx-lm's)"},
        {.name = "--alpha", .kind = CLI_FLOAT, .dest = &alpha, .meta = "A", .fmin = 1e-9, .fmax = 1e9,
         .help = "PEFT's lora_alpha instead of --scale: the multiplier is alpha / rank"},
        {.name = "--dropout", .kind = CLI_FLOAT, .dest = &lo.dropout, .meta = "P", .fmin = 0, .fmax = 0.999,
         .help = "dropout on the adapter's input in training (default 0)"},
        {.name = "--targets", .kind = CLI_STRING, .dest = &targets, .meta = "LIST",
         .help = "modules to adapt: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all "
                 "(default q_proj,v_proj)"},
        {.name = "--num-layers", .kind = CLI_INT, .dest = &num_layers, .meta = "N", .min = -1, .max = 1 << 20,
         .help = "adapt the last N layers (default 16; -1 = all)"},
        {.name = "--mask-prompt", .kind = CLI_FLAG, .dest = &mask,
         .help = "leave the prompt out of the loss (prompt/completion and chat data)"},
        {.name = "--grad-checkpoint", .kind = CLI_FLAG, .dest = &to.grad_checkpoint,
         .help = "keep only each layer's input; compute the rest again in the backward pass"},
        {.name = "--max-seq-len", .kind = CLI_INT, .dest = &loop.max_seq_len, .meta = "L", .min = 2, .max = 1 << 24,
         .help = "cut longer examples to L tokens (default 2048; at most the context)", .alias = "--max-seq-length"},
        {.name = "--val-every", .kind = CLI_INT, .dest = &loop.val_every, .meta = "N", .min = 0, .max = 1 << 30,
         .help = "validation loss before the first step (iter 0), every N steps and at the end (default 200; 0 = only at the end)", .alias = "--steps-per-eval"},
        {.name = "--val-batches", .kind = CLI_INT, .dest = &loop.val_batches, .meta = "N", .min = -1, .max = 1 << 30,
         .help = "validation batches each time (default 25; -1 = all)"},
        {.name = "--steps-per-report", .kind = CLI_INT, .dest = &loop.report_every, .meta = "N", .min = 1,
         .max = 1 << 30, .help = "a progress line every N steps (default 10)"},
        {.name = "--save-every", .kind = CLI_INT, .dest = &loop.save_every, .meta = "N", .min = 0, .max = 1 << 30,
         .help = "save the adapter every N steps and at the end (default 100), keeping each N-step save as "
                 "a checkpoint: 0000100_adapters.safetensors (mlx) or checkpoint-100/ (peft)"},
        {.name = "--format", .kind = CLI_CHOICE, .dest = &format, .meta = "F", .choices = "mlx|peft",
         .help = "adapter files: mlx (mlx-lm's, the default) or peft"},
        {.name = "--resume", .kind = CLI_FLAG, .dest = &resume,
         .help = "start from the adapter in --adapter-path (its weights; the optimizer starts afresh)"},
        {.name = "--resume-adapter-file", .kind = CLI_STRING, .dest = &resume_file, .meta = "FILE",
         .help = "start from the adapter weights in FILE, such as a checkpoint 0000100_adapters.safetensors "
                 "(its folder's adapter_config.json gives rank, scale and modules), as mlx-lm's option does"},
        {.name = "--test", .kind = CLI_FLAG, .dest = &test, .help = "print the loss on test.jsonl at the end"},
        {.name = "--seed", .kind = CLI_INT, .dest = &seed, .meta = "S", .min = 0, .max = 2147483647,
         .help = "the adapter's initial weights and the batches' order (default 0)"},
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    for (int i = 0; opts[i].name; i++)
        if (!strcmp(opts[i].name, "--scale") && opts[i].seen && alpha > 0.0f)
            return cli_usage_error(self, "--scale and --alpha do not go together");
    const char *out = m.adapter;
    m.adapter = NULL; /* the folder to write, not one to apply */
    infer_model *model;
    if ((rc = cli_load_model(dir, &m, &model))) return rc;
    const infer_tokenizer *tok = infer_model_tokenizer(model);
    infer_dataset *train = NULL, *valid = NULL, *testset = NULL;
    infer_lora *l = NULL;
    infer_trainer *t = NULL;
    if (!tok) {
        rc = cli_fail("%s: no tokenizer.json: training data needs one", dir);
        goto done;
    }
    if ((rc = load_split(tok, data, "train", mask, 1, &train)) || (rc = load_split(tok, data, "valid", mask, 1, &valid)) ||
        (test && (rc = load_split(tok, data, "test", mask, 1, &testset))))
        goto done;
    infer_model_info info;
    if ((rc = infer_model_get_info(model, &info))) {
        rc = cli_library_error(rc);
        goto done;
    }
    int st;
    if (resume || resume_file) {
        st = infer_lora_load(model, resume_file ? resume_file : out, &l);
    } else {
        lo.targets = targets;
        lo.num_layers = num_layers < 0 || num_layers >= info.n_layers ? 0 : num_layers;
        lo.seed = (uint64_t)seed;
        if (alpha > 0.0f) {
            lo.scale = 0.0f;
            lo.alpha = alpha;
        }
        st = infer_lora_new(model, &lo, &l);
    }
    if (!st) {
        to.schedule = !strcmp(schedule, "cosine") ? INFER_LR_COSINE : INFER_LR_CONSTANT;
        to.seed = (uint64_t)seed;
        to.total_steps = loop.iters;
        st = infer_trainer_new(l, &to, &t);
    }
    if (st) {
        rc = cli_library_error(st);
        goto done;
    }
    printf("Training: %zu train, %zu valid examples; %d steps of %d x %d; adapter in %s (%s)\n",
           infer_dataset_size(train), infer_dataset_size(valid), loop.iters, loop.grad_accum, loop.batch_size, out,
           format);
    fflush(stdout);
    loop.save_path = out;
    loop.save_format = !strcmp(format, "peft") ? INFER_ADAPTER_PEFT : INFER_ADAPTER_MLX;
    loop.seed = (uint64_t)seed;
    if ((st = infer_train(t, train, valid, &loop, progress, NULL))) {
        rc = cli_library_error(st);
        goto done;
    }
    printf("Saved the adapter to %s\n", out);
    if (testset) {
        double loss;
        if ((st = infer_train_eval(t, testset, loop.batch_size, loop.max_seq_len, &loss))) {
            rc = cli_library_error(st);
            goto done;
        }
        printf("Test loss %.3f, test ppl %.3f\n", loss, exp(loss));
    }
done:
    infer_trainer_free(t);
    infer_lora_free(l);
    infer_dataset_free(train);
    infer_dataset_free(valid);
    infer_dataset_free(testset);
    infer_model_free(model);
    return rc;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int cmd_fuse(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *adapter = "adapters", *out = "fused_model";
    int dequant = 0;
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir, .help = "a Hugging Face model folder"},
        {.name = "--adapter-path", .kind = CLI_STRING, .dest = &adapter, .meta = "DIR",
         .help = "the LoRA adapter folder (PEFT or mlx-lm; default adapters, where infer lora saves by default)"},
        {.name = "--out", .kind = CLI_STRING, .dest = &out, .meta = "DIR",
         .help = "the model folder to write (default fused_model)", .alias = "--save-path"},
        {.name = "--dequantize", .kind = CLI_FLAG, .dest = &dequant,
         .help = "an MLX-quantized model: write a float model (the weights dequantized in their scales' dtype, "
                 "then the adapter merged), as mlx_lm.fuse --dequantize; without it the fused modules are "
                 "quantized again",
         .alias = "--de-quantize"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    cli_model_opts m = {.backend = "cpu"};
    infer_model *model;
    if ((rc = cli_load_model(dir, &m, &model))) return rc;
    infer_model_info info;
    int st = infer_model_get_info(model, &info);
    char tmp[4096] = "";
    if (!st && dequant && info.quant_bits > 0) {
        /* the dequantized copy beside the output, loaded in the model's place */
        infer_model_free(model);
        model = NULL;
        snprintf(tmp, sizeof tmp, "%s.dequantized-tmp", out);
        infer_quant_opts qo;
        infer_quant_opts_default(&qo);
        qo.dequantize = 1;
        st = infer_quantize(dir, tmp, &qo);
        if (!st && (rc = cli_load_model(tmp, &m, &model))) {
            (void)nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
            return rc;
        }
    }
    infer_lora *l = NULL;
    if (!st) st = infer_lora_load(model, adapter, &l);
    if (!st) st = infer_lora_fuse(l, out);
    infer_lora_free(l);
    infer_model_free(model);
    if (tmp[0] && access(tmp, F_OK) == 0) (void)nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (st) return cli_library_error(st);
    printf("%s: %s with %s merged%s\n", out, dir, adapter, tmp[0] ? ", dequantized" : "");
    return CLI_EXIT_OK;
}
