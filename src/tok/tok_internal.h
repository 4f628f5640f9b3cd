/* tok_internal.h - the pieces of the tokenizer shared by src/tok/ files.
 *
 * A tokenizer is a Hugging Face tokenizer.json pipeline:
 *
 *   text -> added tokens (raw) -> normalizer -> added tokens (normalized)
 *        -> pre-tokenizer -> BPE model -> post-processor -> ids
 *   ids  -> pieces -> decoder -> text
 *
 * Everything here is immutable after load; per-call state lives in
 * tok_scratch (encode) or infer_detok (streaming decode). */
#ifndef INFER_TOK_INTERNAL_H
#define INFER_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tok/tokenizer.h"

/* Ids are kept below this bound so that a hostile file cannot make us
 * allocate id-indexed tables of gigabytes. */
#define TOK_MAX_ID (1 << 24)

/* At most this many characters may stand before a merge across a split
 * point (see split_bad below); more and long words are not cut. */
#define TOK_SPLIT_BAD_MAX 16

/* ------------------------------------------------------------------ */
/* Growable byte buffers and id vectors (tok_util.c)                    */
/* ------------------------------------------------------------------ */

typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;

int tb_reserve(tok_buf *b, size_t extra);  /* 0 or INFER_ERR_OUT_OF_MEMORY */
int tb_put(tok_buf *b, const void *data, size_t len);
int tb_putc(tok_buf *b, char c);
int tb_put_cp(tok_buf *b, uint32_t cp);    /* appends a code point as UTF-8 */
void tb_free(tok_buf *b);

typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;

int ids_push(tok_ids *a, int32_t id);
int ids_put(tok_ids *a, const int32_t *ids, size_t n);

/* ------------------------------------------------------------------ */
/* UTF-8 and Unicode helpers (tok_util.c)                               */
/* ------------------------------------------------------------------ */

/* The offset of the first byte that is not part of valid UTF-8, or n. */
size_t utf8_check(const char *s, size_t n);
/* Decodes the code point at s (valid UTF-8 with at least one byte);
 * *len gets its byte length. */
uint32_t utf8_get(const char *s, size_t *len);
/* Byte length of the sequence starting with lead byte c (1 for bytes that
 * cannot start one). */
size_t utf8_len(unsigned char c);
/* Length of the UTF-8 encoding of cp written to out[4]. */
size_t utf8_put(uint32_t cp, char *out);
/* Appends bytes as Rust's String::from_utf8_lossy: each maximal invalid
 * subpart becomes one U+FFFD. */
int utf8_lossy(tok_buf *out, const unsigned char *s, size_t n);
/* The length of the longest prefix of s[0..n) that can be followed by more
 * bytes without changing its lossy decoding: n minus a trailing,
 * incomplete but still valid, multi-byte sequence. */
size_t utf8_stable_prefix(const unsigned char *s, size_t n);

int uc_is_whitespace(uint32_t cp);   /* Rust char::is_whitespace */
int uc_is_numeric(uint32_t cp);      /* Rust char::is_numeric (N*) */
int uc_is_punct(uint32_t cp);        /* ASCII punctuation or P* */
int uc_is_word(uint32_t cp);         /* regex \w: letters, marks, Nd, Pc, joiners */

uint64_t tok_hash(const void *data, size_t len);

/* Zeroed memory for a big table (huge pages where it pays); free() frees
 * it. */
void *tok_table_alloc(size_t bytes);

/* The GPT-2 byte <-> printable code point tables of ByteLevel. */
extern const uint16_t tok_byte_to_cp[256];
/* The same characters as UTF-8: {length, byte, byte}. */
extern const uint8_t tok_byte_utf8[256][3];
/* -1 for a code point that no byte maps to (only cp < 324 can map). */
int tok_cp_to_byte(uint32_t cp);

/* ------------------------------------------------------------------ */
/* String -> id hash map (vocab.c)                                      */
/* ------------------------------------------------------------------ */

/* Keys are byte ranges of an arena the caller owns and passes to every
 * call (so the arena may be reallocated between calls). */
typedef struct tok_slot {
    uint32_t hash, off, len;
    uint32_t val1; /* value + 1; 0: empty slot */
} tok_slot;

typedef struct tok_strmap {
    tok_slot *slots;
    uint32_t mask, count;
} tok_strmap;

int strmap_init(tok_strmap *m, size_t expected);
void strmap_free(tok_strmap *m);
/* Inserts or overwrites; returns 0 or INFER_ERR_OUT_OF_MEMORY. */
int strmap_put(tok_strmap *m, const char *arena, uint32_t off, uint32_t len, int32_t val);
/* The value of key, or -1. */
int32_t strmap_get(const tok_strmap *m, const char *arena, const char *key, size_t len);

/* The same with the hash given (strmap_hash), for batches: prefetch the
 * slots of many keys, then (strmap_prefetch_key) the arena bytes of the
 * slots found, then look them up. */
uint32_t strmap_hash(const char *key, size_t len);
int strmap_put_h(tok_strmap *m, const char *arena, uint32_t off, uint32_t len, int32_t val, uint32_t h);
int32_t strmap_get_h(const tok_strmap *m, const char *arena, const char *key, size_t len, uint32_t h);
void strmap_prefetch(const tok_strmap *m, uint32_t h);
void strmap_prefetch_key(const tok_strmap *m, const char *arena, uint32_t h);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_merge_slot {
    uint64_t key; /* (a << 32 | b) + 1; 0: empty (ids are below 2^24) */
    uint32_t rank;
    int32_t id;
} tok_merge_slot;

typedef struct tok_mergemap {
    tok_merge_slot *slots;
    uint64_t mask;
    uint32_t count, shift;
} tok_mergemap;

int mergemap_init(tok_mergemap *m, size_t expected);
void mergemap_free(tok_mergemap *m);
int mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
void mergemap_prefetch(const tok_mergemap *m, int32_t a, int32_t b);

static inline const tok_merge_slot *mergemap_get(const tok_mergemap *m, int32_t a, int32_t b)
{
    if (!m->slots) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> m->shift;
    for (;;) {
        const tok_merge_slot *s = &m->slots[i];
        if (s->key == key + 1) return s;
        if (s->key == 0) return NULL;
        i = (i + 1) & m->mask;
    }
}

/* ------------------------------------------------------------------ */
/* Fast JSON scanning for the big vocab / merges values (tok_json.c)    */
/* ------------------------------------------------------------------ */

const char *js_ws(const char *p, const char *e);
/* Skips one JSON value; NULL if malformed or nested deeper than 512. */
const char *js_skip(const char *p, const char *e);
/* p at '"': appends the decoded string to out; returns the position after
 * the closing quote, or NULL if malformed (*oom set on allocation
 * failure). */
const char *js_string(const char *p, const char *e, tok_buf *out, int *oom);

/* ------------------------------------------------------------------ */
/* Regular expressions (regex.c)                                        */
/* ------------------------------------------------------------------ */

typedef struct tok_regex {
    pcre2_code *code;
    int jit; /* 1 when JIT compiled */
} tok_regex;

/* Compiles a pattern (UTF, UCP, JIT); on failure an INFER_ERR_FORMAT
 * message naming where. */
int regex_compile(tok_regex *re, const char *pat, size_t len, const char *where);
void regex_free(tok_regex *re);

/* One match (start, end) or a gap between matches. */
typedef struct tok_match {
    uint32_t start, end;
    uint8_t is_match;
} tok_match;

typedef struct tok_matches {
    tok_match *v;
    size_t n, cap;
} tok_matches;

/* Fills ms with the matches of a pattern in s covering all of s, as the
 * Rust find_matches does (gaps included, in order). md is match data for
 * re (made by the caller, one per thread). */
int regex_find_all(const tok_regex *re, pcre2_match_data *md, const char *s, size_t n,
                   tok_matches *ms);

/* ------------------------------------------------------------------ */
/* Pipeline stages                                                      */
/* ------------------------------------------------------------------ */

enum {
    NORM_NFC = 1, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWER, NORM_REPLACE, NORM_PREPEND,
    NORM_STRIP, NORM_STRIP_ACCENTS, NORM_SEQ
};

typedef struct tok_norm {
    int kind;
    char *pat;          /* Replace: literal pattern (NULL when a regex) */
    size_t pat_len;
    tok_regex re;       /* Replace: regex pattern */
    char *content;      /* Replace content, Prepend text */
    size_t content_len;
    int left, right;    /* Strip */
    struct tok_norm *kids;
    int n_kids;
} tok_norm;

enum { SPLIT_REMOVED = 1, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

enum {
    PRE_SPLIT = 1, PRE_BYTELEVEL, PRE_METASPACE, PRE_DIGITS, PRE_WHITESPACE, PRE_WSSPLIT,
    PRE_PUNCT, PRE_BERT, PRE_SEQ
};

enum { PREPEND_ALWAYS = 0, PREPEND_FIRST, PREPEND_NEVER };

typedef struct tok_pretok {
    int kind;
    int behavior;       /* Split, Punctuation */
    int invert;         /* Split */
    char *pat;          /* Split: literal pattern (NULL when a regex) */
    size_t pat_len;
    tok_regex re;       /* Split regex; ByteLevel GPT-2 regex; Whitespace */
    int add_prefix_space, use_regex; /* ByteLevel */
    char rep[8];        /* Metaspace replacement, UTF-8 */
    size_t rep_len;
    int prepend, split; /* Metaspace */
    int individual;     /* Digits */
    struct tok_pretok *kids;
    int n_kids;
} tok_pretok;

enum {
    DEC_BYTELEVEL = 1, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE, DEC_SEQ
};

typedef struct tok_dec {
    int kind;
    char *pat;          /* Replace: literal pattern (NULL when a regex) */
    size_t pat_len;
    tok_regex re;
    char *content;      /* Replace content */
    size_t content_len;
    uint32_t strip_cp;  /* Strip content */
    int start, stop;    /* Strip */
    char rep[8];        /* Metaspace replacement */
    size_t rep_len;
    int prepend;        /* Metaspace prepend scheme */
    struct tok_dec *kids;
    int n_kids;
} tok_dec;

/* An added token (tokenizer.json's added_tokens). */
typedef struct tok_added {
    uint32_t off, len;  /* content in tok->added_arena */
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} tok_added;

/* A byte trie over the added tokens matched in one kind of text. */
typedef struct tok_trie_node {
    int32_t child;      /* first child, -1 none */
    int32_t sibling;    /* next sibling, -1 none */
    int32_t token;      /* index into tok->added when a token ends here, else -1 */
    uint8_t byte;
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes;
    size_t n, cap;
    int32_t root_child[256]; /* direct table for the first byte */
    uint8_t first[32];       /* bitmap of first bytes */
    int empty;               /* no tokens */
} tok_trie;

/* ------------------------------------------------------------------ */
/* The tokenizer                                                        */
/* ------------------------------------------------------------------ */

struct infer_tokenizer {
    char *path;              /* tokenizer.json path, for messages */
    uint64_t gen;            /* unique per loaded tokenizer: whose words a thread's cache holds */

    /* Vocabulary: id -> piece (model vocab, overridden by added tokens). */
    int32_t vocab_size;      /* max id + 1 */
    tok_buf arena;           /* model pieces, NUL-terminated */
    uint32_t *piece_off;     /* [vocab_size] offset in arena or added_arena */
    uint32_t *piece_len;     /* [vocab_size]; UINT32_MAX: no token */
    uint8_t *piece_added;    /* [vocab_size] 1: piece lives in added_arena */
    uint8_t *special;        /* [vocab_size] 1: a special token */
    tok_strmap model_map;    /* model piece -> id */
    int32_t model_size;      /* model vocab max id + 1 */

    /* BPE model. */
    tok_mergemap merges;
    int32_t *char_id;        /* [0x10000] single code point pieces, -1 none */
    int ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;          /* -1 none */
    char *unk_token;         /* as named in the file (may be missing from vocab) */
    char *prefix, *suffix;   /* continuing_subword_prefix, end_of_word_suffix */
    size_t prefix_len, suffix_len;
    int32_t byte_id[256];    /* <0xNN> pieces, -1 none */
    int plain_syms;          /* no prefix/suffix: the char_id fast path applies */
    /* Long words are cut into chunks before each "\u2581" (or " ") where no
     * merge can join the two sides (bpe.c), which gives the same ids and
     * lets the word cache work on text that has no pre-tokenizer (Gemma).
     * A cut before the split string is safe unless the character before it
     * is the split string itself, is not in the vocabulary, or ends the
     * left side of a merge whose right side starts with the split string
     * (split_bad lists those characters). */
    char split_str[4];
    size_t split_len;        /* 0: no cutting */
    uint32_t split_bad[TOK_SPLIT_BAD_MAX];
    int n_split_bad;

    /* Added tokens. */
    tok_added *added;
    size_t n_added;
    tok_buf added_arena;
    tok_strmap added_map;    /* content -> id */
    tok_trie trie_raw;       /* normalized = false: matched in the raw text */
    tok_trie trie_norm;      /* normalized = true: matched in normalized text */
    tok_buf norm_arena;      /* normalized contents of trie_norm's tokens */

    tok_norm *norm;          /* NULL: none */
    tok_pretok *pre;         /* NULL: none */
    tok_dec *dec;            /* NULL: join with spaces */
    int dec_byte_fallback;   /* the decoder has ByteFallback */
    int dec_byte_level;      /* the decoder has ByteLevel */
    int dec_strip_start_merged, dec_strip_stop_merged; /* Strip after Fuse/ByteLevel */
    uint32_t dec_strip_cp;

    /* Post-processor for one sequence: prefix + ids + suffix. */
    int32_t *post_prefix, *post_suffix;
    size_t n_post_prefix, n_post_suffix;
    int post_keeps_seq;

    /* tokenizer_config.json, generation_config.json, chat_template.jinja */
    char *cfg_bos, *cfg_eos, *cfg_pad, *cfg_unk;
    struct cJSON *special_map; /* transformers' special_tokens_map: name -> string */
    char *chat_template;
    infer_tokenizer_info info;
};

/* Loads a tokenizer from tokenizer.json text; path names it in messages.
 * The configs are not read (infer_tokenizer_load adds them). */
int tok_load_from_memory(const char *json, size_t len, const char *path, infer_tokenizer **out);

/* A number no other tokenizer of this process has (encode.c). */
uint64_t tok_new_gen(void);

/* Computes info (add_bos, bos/eos/pad, stop ids) from what is loaded. */
void tok_finish_info(infer_tokenizer *tok, const int32_t *gen_eos, size_t n_gen_eos);

/* The piece of id, or NULL when there is none. */
const char *tok_piece(const infer_tokenizer *tok, int32_t id, size_t *len);
/* token_to_id: added tokens first, then the model vocab; -1 if none. */
int32_t tok_lookup(const infer_tokenizer *tok, const char *s, size_t len);

/* ---- parsers of the pipeline's JSON (tok_parse.c) ------------------ */
struct cJSON;
int parse_normalizer(const struct cJSON *j, const char *path, const char *where, tok_norm **out);
int parse_pretok(const struct cJSON *j, const char *path, const char *where, tok_pretok **out);
int parse_decoder(const struct cJSON *j, const char *path, const char *where, tok_dec **out);
void norm_free(tok_norm *n);
void pretok_free(tok_pretok *p);
void dec_free(tok_dec *d);

/* ---- normalize.c ---------------------------------------------------- */
/* Normalizes s[0..n) into out (cleared first). */
int norm_apply(const tok_norm *norm, pcre2_match_data *md, const char *s, size_t n, tok_buf *out,
               tok_buf *tmp, tok_matches *ms);

/* ---- pretokenize.c -------------------------------------------------- */
typedef struct tok_span {
    uint32_t off, len;
    uint8_t origin; /* starts at offset 0 of the original text */
} tok_span;

typedef struct tok_plist {
    tok_buf text;
    tok_span *v;
    size_t n, cap;
} tok_plist;

void plist_clear(tok_plist *l);
void plist_free(tok_plist *l);
int plist_add(tok_plist *l, const char *s, size_t len, int origin);

/* The working state of an encode, kept per thread between calls
 * (encode.c), with the word cache of the tokenizer last used there. */
typedef struct tok_scratch {
    uint64_t gen;          /* the tokenizer whose words the cache holds */
    pcre2_match_data *md;
    tok_matches ms;
    tok_matches raw, normm; /* added-token splits of the raw and normalized text */
    tok_ids raw_marks, norm_marks;
    tok_buf norm, norm_tmp;
    tok_plist pa, pb, pc;
    /* BPE */
    void *syms;
    size_t syms_cap;
    void *heap;
    size_t heap_cap;
    tok_buf word;
    /* word cache: word -> ids */
    tok_buf cache_keys;
    tok_ids cache_ids;
    uint32_t *cache_slots; /* 2 words per slot: key index + 1, 0 = empty */
    uint32_t *cache_meta;  /* per entry: key off, key len, ids off, ids len */
    size_t cache_n, cache_mask;
} tok_scratch;

void scratch_free(tok_scratch *s);
/* Empties the word cache (bpe.c). */
void cache_clear(tok_scratch *s);

/* Pre-tokenizes in (one segment) into out (cleared first). */
int pretok_apply(const tok_pretok *p, tok_scratch *sc, const tok_plist *in, tok_plist *out);

/* ---- bpe.c ---------------------------------------------------------- */
/* Appends the ids of one pre-token. */
int bpe_word(const infer_tokenizer *tok, tok_scratch *sc, const char *w, size_t n, tok_ids *out);

/* ---- added.c -------------------------------------------------------- */
int trie_add(tok_trie *t, const char *s, size_t len, int32_t token);
void trie_free(tok_trie *t);
/* Splits s by the trie's tokens as Hugging Face's find_matches: fills ms
 * with segments covering s; is_match holds 0 for text, else 1 and
 * start/end cover the token with its stripped spaces; tokens gets the
 * index (into tok->added) of each match, in order. */
int added_split(const infer_tokenizer *tok, const tok_trie *t, const char *s, size_t n,
                tok_matches *ms, tok_ids *tokens);

/* ---- decode.c ------------------------------------------------------- */
/* Decodes a window of pieces.  at_start: the first piece is the first of
 * the whole sequence; at_end: the last piece ends it. */
int dec_run(const infer_tokenizer *tok, const char *const *pieces, const size_t *lens, size_t n,
            int at_start, int at_end, tok_buf *out);
/* Sets tok->dec_* (what a streaming decoder must hold back). */
void dec_analyze(infer_tokenizer *tok);
/* The byte of a "<0xNN>" piece, or -1. */
int tok_byte_piece(const char *s, size_t n);
/* The pieces of ids, skipping special tokens on request (allocated arrays);
 * INFER_ERR_OUT_OF_RANGE names the first id without a piece. */
int dec_pieces(const infer_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
               const char ***pieces, size_t **lens, size_t *count);

#endif
