/* cmd_logits.c - `infer logits MODEL_DIR --ids 1,2,3 --out FILE.npy`:
 * the logits at every position of a sequence of token ids, written as a
 * float32 .npy array of shape [n_ids, vocab_size]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "commands.h"
#include "npy.h"

/* Computes the logits of ids and writes them to path. */
static int write_logits(infer_model *model, const int32_t *ids, size_t n_ids,
                        const char *path)
{
    infer_model_info info;
    int st = infer_model_get_info(model, &info);
    if (st != INFER_OK) return cli_library_error(st);
    if (info.vocab_size <= 0) return cli_fail("the model reports vocab_size %d", info.vocab_size);
    size_t vocab = (size_t)info.vocab_size;
    if (n_ids > SIZE_MAX / sizeof(float) / vocab)
        return cli_fail("%zu ids x %zu logits do not fit in memory", n_ids, vocab);
    float *logits = malloc(n_ids * vocab * sizeof(float));
    if (!logits) return cli_fail("out of memory for %zu x %zu logits", n_ids, vocab);

    int rc = CLI_EXIT_OK;
    st = infer_model_logits(model, ids, n_ids, logits);
    if (st != INFER_OK) {
        rc = cli_library_error(st);
    } else {
        int64_t shape[2] = {(int64_t)n_ids, (int64_t)vocab};
        char err[512];
        if (npy_write_f32(path, logits, shape, 2, err, sizeof err) != 0)
            rc = cli_fail("cannot write %s", err);
        else
            printf("%s: float32 [%zu, %zu]\n", path, n_ids, vocab);
    }
    free(logits);
    return rc;
}

int cmd_logits(const cli_command *self, int argc, char **argv)
{
    const char *dir = NULL, *ids_arg = NULL, *out = NULL;
    cli_model_opts m = {0};
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &dir,
         .help = "a Hugging Face model folder"},
        {.name = "--ids", .kind = CLI_STRING, .dest = &ids_arg, .meta = "LIST",
         .help = "comma-separated token ids, such as 1,2,3", .required = 1},
        {.name = "--out", .kind = CLI_STRING, .dest = &out, .meta = "FILE",
         .help = "the .npy file to write (replaced atomically)", .required = 1},
        CLI_MODEL_OPTIONS(&m),
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    int32_t *ids;
    size_t n_ids;
    rc = cli_parse_ids(self, "--ids", ids_arg, &ids, &n_ids);
    if (rc != CLI_EXIT_OK) return rc;

    infer_model *model;
    rc = cli_load_model(dir, &m, &model);
    if (rc == CLI_EXIT_OK) rc = write_logits(model, ids, n_ids, out);
    infer_model_free(model);
    free(ids);
    return rc;
}
