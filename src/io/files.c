/* files.c - small file helpers shared by the writers of model folders. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "io/files.h"

const char *const io_side_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json",
    "chat_template.jinja", "chat_template.json", NULL,
};

int io_copy_file(const char *src, const char *dst, int *copied)
{
    if (copied) *copied = 0;
    FILE *in = fopen(src, "rb");
    if (!in) return errno == ENOENT ? INFER_OK : infer_err(INFER_ERR_IO, "%s: %s", src, strerror(errno));
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return infer_err(INFER_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) break;
    int bad = ferror(in) || ferror(out);
    fclose(in);
    if (fclose(out) != 0) bad = 1;
    if (bad) {
        unlink(dst);
        return infer_err(INFER_ERR_IO, "%s: copy to %s failed", src, dst);
    }
    if (copied) *copied = 1;
    return INFER_OK;
}
