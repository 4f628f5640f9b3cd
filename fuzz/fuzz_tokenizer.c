/* fuzz_tokenizer.c - libFuzzer target for the tokenizer: tokenizer.json
 * parsing, encoding, decoding and streaming decode.
 *
 * The input is a tokenizer.json, a NUL byte, then a text (no NUL: the text
 * is empty).  The tokenizer is loaded from memory; when it is refused, the
 * message must name the file.  When it loads, the text is encoded with and
 * without special tokens (invalid UTF-8 must be refused with
 * INFER_ERR_INVALID_ARGUMENT), the ids decoded with and without specials
 * (whole UTF-8 out), and streamed one id at a time: the pieces must be
 * whole UTF-8 and add up to the plain decode.  Ids made from the text's
 * bytes, some outside the vocabulary, are decoded too.  Any broken
 * invariant traps.  Seeds: fuzz/seeds/fuzz_tokenizer/ (small synthetic
 * tokenizers from tests/tok/synthetic/). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PATH "fuzz/tokenizer.json"

static void check_utf8(const char *s, size_t n)
{
    if (utf8_check(s, n) != n) __builtin_trap();
}

/* Decodes ids whole and streamed; the two must agree. */
static void decode_both(const infer_tokenizer *tok, const int32_t *ids, size_t n, int skip)
{
    char *text = NULL;
    size_t len = 0;
    int rc = infer_detokenize(tok, ids, n, skip, &text, &len);
    int in_range = 1;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (!tok_piece(tok, ids[i], &l)) in_range = 0;
    }
    if (!in_range) {
        if (rc != INFER_ERR_OUT_OF_RANGE || text) __builtin_trap();
        return;
    }
    if (rc != INFER_OK) {
        if (rc != INFER_ERR_OUT_OF_MEMORY) __builtin_trap();
        return;
    }
    check_utf8(text, len);
    if (strlen(text) > len) __builtin_trap();

    infer_detok *d = NULL;
    if (infer_detok_new(tok, skip, &d) != INFER_OK) __builtin_trap();
    tok_buf all = {0};
    for (size_t i = 0; i <= n; i++) {
        const char *piece = NULL;
        size_t pl = 0;
        rc = i < n ? infer_detok_push(d, ids[i], &piece, &pl) : infer_detok_flush(d, &piece, &pl);
        if (rc != INFER_OK) __builtin_trap();
        check_utf8(piece, pl);
        if (tb_put(&all, piece, pl)) __builtin_trap();
    }
    infer_detok_free(d);
    if (all.n != len || (len && memcmp(all.p, text, len) != 0)) __builtin_trap();
    tb_free(&all);
    infer_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tlen = nul ? size - jlen - 1 : 0;

    infer_tokenizer *tok = NULL;
    int rc = tok_load_from_memory((const char *)data, jlen, PATH, &tok);
    if (rc != INFER_OK) {
        if (tok) __builtin_trap();
        if (strncmp(infer_last_error(), PATH ": ", strlen(PATH ": ")) != 0) __builtin_trap();
        return 0;
    }
    infer_tokenizer_info info;
    if (infer_tokenizer_get_info(tok, &info) != INFER_OK || info.vocab_size != tok->vocab_size)
        __builtin_trap();

    int valid = utf8_check(text, tlen) == tlen;
    for (int add = 0; add < 2; add++) {
        int32_t *ids = NULL;
        size_t n = 0;
        rc = infer_tokenize(tok, text, tlen, add, &ids, &n);
        if (!valid) {
            if (rc != INFER_ERR_INVALID_ARGUMENT || ids || n) __builtin_trap();
            continue;
        }
        if (rc == INFER_ERR_OUT_OF_MEMORY) continue;
        /* an unk_token missing from the vocabulary is the file's fault */
        if (rc == INFER_ERR_FORMAT && strstr(infer_last_error(), "unk_token")) continue;
        if (rc != INFER_OK) __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= tok->vocab_size) __builtin_trap();
        decode_both(tok, ids, n, add);
        infer_free(ids);
    }

    /* ids from the text's bytes, in range or not */
    size_t n = tlen / 2 < 64 ? tlen / 2 : 64;
    int32_t ids[64];
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)(uint8_t)text[2 * i] << 8 | (uint8_t)text[2 * i + 1];
        ids[i] = (int32_t)(v % (uint32_t)(tok->vocab_size + 2)) - 1;
    }
    decode_both(tok, ids, n, 0);
    decode_both(tok, ids, n, 1);
    infer_tokenizer_free(tok);
    return 0;
}
