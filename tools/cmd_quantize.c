/* cmd_quantize.c - `infer quantize MODEL_DIR OUT_DIR [--bits B]
 * [--group-size G] [--dequantize [--dtype T]]`: writes an MLX-quantized
 * copy of a model folder (as mlx-lm's convert -q does, bit for bit with
 * MLX's rounding), or a float copy of an MLX-quantized one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

int cmd_quantize(const cli_command *self, int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *bits = "4", *group = "64", *dtype = NULL;
    int dequantize = 0;
    cli_opt opts[] = {
        {.name = "MODEL_DIR", .kind = CLI_POSITIONAL, .dest = &in,
         .help = "a Hugging Face model folder (bf16, f16 or f32 weights)"},
        {.name = "OUT_DIR", .kind = CLI_POSITIONAL, .dest = &out,
         .help = "the folder to write (new, or empty)"},
        {.name = "--bits", .kind = CLI_CHOICE, .dest = &bits, .meta = "B",
         .help = "bits per weight: 4 or 8 (also 2, 3, 5, 6; default 4)", .choices = "2|3|4|5|6|8"},
        {.name = "--group-size", .kind = CLI_CHOICE, .dest = &group, .meta = "G",
         .help = "weights per scale and bias: 32, 64 or 128 (default 64)", .choices = "32|64|128"},
        {.name = "--dequantize", .kind = CLI_FLAG, .dest = &dequantize,
         .help = "write a float folder from an MLX-quantized one instead"},
        {.name = "--dtype", .kind = CLI_CHOICE, .dest = &dtype, .meta = "T",
         .help = "with --dequantize: the weights' dtype (default: that of the scales)",
         .choices = "bfloat16|float16|float32"},
        {.name = NULL},
    };
    int rc = cli_parse(self, opts, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    if (dequantize && (opts[2].seen || opts[3].seen))
        return cli_usage_error(self, "--bits and --group-size do not go with --dequantize");
    if (!dequantize && opts[5].seen) return cli_usage_error(self, "--dtype goes with --dequantize only");

    infer_quant_opts q;
    infer_quant_opts_default(&q);
    q.bits = atoi(bits);
    q.group_size = atoi(group);
    q.dequantize = dequantize;
    q.dtype = dtype;
    int st = infer_quantize(in, out, &q);
    if (st != INFER_OK) return cli_library_error(st);
    if (dequantize)
        printf("%s: dequantized to %s\n", out, dtype ? dtype : "the scales' dtype");
    else
        printf("%s: %d-bit, groups of %d (MLX affine)\n", out, q.bits, q.group_size);
    return CLI_EXIT_OK;
}
