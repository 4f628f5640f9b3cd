/* tok_util.c - buffers, UTF-8, character classes and hashing for the
 * tokenizer. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <utf8proc.h>

#include "tok/tok_internal.h"

/* ---- buffers -------------------------------------------------------- */

int tb_reserve(tok_buf *b, size_t extra)
{
    if (b->cap - b->n > extra) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n <= extra) {
        if (cap > SIZE_MAX / 2) return INFER_ERR_OUT_OF_MEMORY;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return INFER_ERR_OUT_OF_MEMORY;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tb_put(tok_buf *b, const void *data, size_t len)
{
    if (tb_reserve(b, len)) return INFER_ERR_OUT_OF_MEMORY;
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
    return 0;
}

int tb_putc(tok_buf *b, char c)
{
    if (b->cap - b->n <= 1 && tb_reserve(b, 1)) return INFER_ERR_OUT_OF_MEMORY;
    b->p[b->n++] = c;
    b->p[b->n] = '\0';
    return 0;
}

int tb_put_cp(tok_buf *b, uint32_t cp)
{
    char u[4];
    return tb_put(b, u, utf8_put(cp, u));
}

void tb_free(tok_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int ids_push(tok_ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return INFER_ERR_OUT_OF_MEMORY;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

int ids_put(tok_ids *a, const int32_t *ids, size_t n)
{
    if (a->cap - a->n < n) {
        size_t cap = a->cap ? a->cap : 64;
        while (cap - a->n < n) cap *= 2;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return INFER_ERR_OUT_OF_MEMORY;
        a->v = v;
        a->cap = cap;
    }
    if (n) memcpy(a->v + a->n, ids, n * sizeof *ids);
    a->n += n;
    return 0;
}

/* ---- big tables ----------------------------------------------------- */

void *tok_table_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < 2 * huge) return calloc(1, bytes ? bytes : 1);
    /* Hash tables of many megabytes are read at random: on 2 MiB pages
     * they cost a few page faults instead of thousands, and few TLB
     * misses. */
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes)) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    memset(p, 0, bytes);
    return p;
}

/* ---- UTF-8 ---------------------------------------------------------- */

size_t utf8_len(unsigned char c)
{
    if (c < 0xC0) return 1;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    if (c < 0xF8) return 4;
    return 1;
}

uint32_t utf8_get(const char *s, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) {
        *len = 1;
        return u[0];
    }
    if (u[0] < 0xE0) {
        *len = 2;
        return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    }
    if (u[0] < 0xF0) {
        *len = 3;
        return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
           ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}

size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* For a lead byte: how many continuation bytes follow, and the range
 * allowed for the first of them (the others are 80..BF).  0 continuation
 * bytes with lo > hi: not a lead byte. */
static int utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 1;
    if (c == 0xE0) {
        *lo = 0xA0;
        return 2;
    }
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return 2;
    if (c == 0xED) {
        *hi = 0x9F;
        return 2;
    }
    if (c == 0xF0) {
        *lo = 0x90;
        return 3;
    }
    if (c >= 0xF1 && c <= 0xF3) return 3;
    if (c == 0xF4) {
        *hi = 0x8F;
        return 3;
    }
    return -1;
}

/* Length of the valid prefix of the sequence at s (1..4); *complete set
 * when it is a whole code point. */
static size_t utf8_seq(const unsigned char *s, size_t n, int *complete)
{
    unsigned char lo, hi;
    int need = utf8_lead(s[0], &lo, &hi);
    *complete = 0;
    if (need < 0) return 1;
    size_t k = 1;
    while (k <= (size_t)need && k < n) {
        unsigned char c = s[k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (c < l || c > h) break;
        k++;
    }
    *complete = k == (size_t)need + 1;
    return k;
}

size_t utf8_check(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int complete;
        size_t k = utf8_seq(s + i, n - i, &complete);
        if (!complete) return i;
        i += k;
    }
    return n;
}

int utf8_lossy(tok_buf *out, const unsigned char *s, size_t n)
{
    if (tb_reserve(out, n + 3)) return INFER_ERR_OUT_OF_MEMORY;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] < 0x80) i++;
        while (i < n && s[i] >= 0x80) {
            int complete;
            size_t k = utf8_seq(s + i, n - i, &complete);
            if (!complete) break;
            i += k;
        }
        if (i > start && tb_put(out, s + start, i - start)) return INFER_ERR_OUT_OF_MEMORY;
        if (i < n && s[i] >= 0x80) {
            int complete;
            size_t k = utf8_seq(s + i, n - i, &complete);
            if (!complete) {
                if (tb_put(out, "\xEF\xBF\xBD", 3)) return INFER_ERR_OUT_OF_MEMORY;
                i += k;
            }
        }
    }
    if (out->p) out->p[out->n] = '\0';
    return 0;
}

size_t utf8_stable_prefix(const unsigned char *s, size_t n)
{
    /* A trailing incomplete sequence starts at most 3 bytes from the end. */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        size_t i = n - back;
        unsigned char lo, hi;
        int need = utf8_lead(s[i], &lo, &hi);
        if (need < 0) {
            if (s[i] >= 0x80 && s[i] < 0xC0) continue; /* a continuation byte */
            return n;
        }
        if ((size_t)need < back) return n; /* complete (or invalid) already */
        int complete;
        size_t k = utf8_seq(s + i, back, &complete);
        return k == back ? i : n; /* all valid so far: may still complete */
    }
    return n;
}

/* ---- character classes ---------------------------------------------- */

int uc_is_whitespace(uint32_t cp)
{
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return 0;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int uc_is_numeric(uint32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int uc_is_punct(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) ||
               (cp >= 0x5B && cp <= 0x60) || (cp >= 0x7B && cp <= 0x7E);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

int uc_is_word(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    if (cp == 0x200C || cp == 0x200D) return 1;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_ME) || c == UTF8PROC_CATEGORY_ND ||
           c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC;
}

/* ---- hashing -------------------------------------------------------- */

static inline uint64_t mix(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}

uint64_t tok_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xC2B2AE3D27D4EB4Full);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len) {
        uint64_t w = 0;
        memcpy(&w, p, len);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    }
    return mix(h);
}

/* ---- ByteLevel tables ----------------------------------------------- */

/* GPT-2's bytes_to_unicode: the printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ map
 * to themselves, the other 68 to 256, 257, ... in byte order. */
const uint16_t tok_byte_to_cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33,  34,  35,  36,  37,  38,  39,  40,  41,  42,  43,  44,  45,  46,  47,
    48,  49,  50,  51,  52,  53,  54,  55,  56,  57,  58,  59,  60,  61,  62,  63,
    64,  65,  66,  67,  68,  69,  70,  71,  72,  73,  74,  75,  76,  77,  78,  79,
    80,  81,  82,  83,  84,  85,  86,  87,  88,  89,  90,  91,  92,  93,  94,  95,
    96,  97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

/* The same as UTF-8: length, then the bytes. */
const uint8_t tok_byte_utf8[256][3] = {
    {2, 0xC4, 0x80}, {2, 0xC4, 0x81}, {2, 0xC4, 0x82}, {2, 0xC4, 0x83}, {2, 0xC4, 0x84}, {2, 0xC4, 0x85},
    {2, 0xC4, 0x86}, {2, 0xC4, 0x87}, {2, 0xC4, 0x88}, {2, 0xC4, 0x89}, {2, 0xC4, 0x8A}, {2, 0xC4, 0x8B},
    {2, 0xC4, 0x8C}, {2, 0xC4, 0x8D}, {2, 0xC4, 0x8E}, {2, 0xC4, 0x8F}, {2, 0xC4, 0x90}, {2, 0xC4, 0x91},
    {2, 0xC4, 0x92}, {2, 0xC4, 0x93}, {2, 0xC4, 0x94}, {2, 0xC4, 0x95}, {2, 0xC4, 0x96}, {2, 0xC4, 0x97},
    {2, 0xC4, 0x98}, {2, 0xC4, 0x99}, {2, 0xC4, 0x9A}, {2, 0xC4, 0x9B}, {2, 0xC4, 0x9C}, {2, 0xC4, 0x9D},
    {2, 0xC4, 0x9E}, {2, 0xC4, 0x9F}, {2, 0xC4, 0xA0}, {1, 0x21, 0x00}, {1, 0x22, 0x00}, {1, 0x23, 0x00},
    {1, 0x24, 0x00}, {1, 0x25, 0x00}, {1, 0x26, 0x00}, {1, 0x27, 0x00}, {1, 0x28, 0x00}, {1, 0x29, 0x00},
    {1, 0x2A, 0x00}, {1, 0x2B, 0x00}, {1, 0x2C, 0x00}, {1, 0x2D, 0x00}, {1, 0x2E, 0x00}, {1, 0x2F, 0x00},
    {1, 0x30, 0x00}, {1, 0x31, 0x00}, {1, 0x32, 0x00}, {1, 0x33, 0x00}, {1, 0x34, 0x00}, {1, 0x35, 0x00},
    {1, 0x36, 0x00}, {1, 0x37, 0x00}, {1, 0x38, 0x00}, {1, 0x39, 0x00}, {1, 0x3A, 0x00}, {1, 0x3B, 0x00},
    {1, 0x3C, 0x00}, {1, 0x3D, 0x00}, {1, 0x3E, 0x00}, {1, 0x3F, 0x00}, {1, 0x40, 0x00}, {1, 0x41, 0x00},
    {1, 0x42, 0x00}, {1, 0x43, 0x00}, {1, 0x44, 0x00}, {1, 0x45, 0x00}, {1, 0x46, 0x00}, {1, 0x47, 0x00},
    {1, 0x48, 0x00}, {1, 0x49, 0x00}, {1, 0x4A, 0x00}, {1, 0x4B, 0x00}, {1, 0x4C, 0x00}, {1, 0x4D, 0x00},
    {1, 0x4E, 0x00}, {1, 0x4F, 0x00}, {1, 0x50, 0x00}, {1, 0x51, 0x00}, {1, 0x52, 0x00}, {1, 0x53, 0x00},
    {1, 0x54, 0x00}, {1, 0x55, 0x00}, {1, 0x56, 0x00}, {1, 0x57, 0x00}, {1, 0x58, 0x00}, {1, 0x59, 0x00},
    {1, 0x5A, 0x00}, {1, 0x5B, 0x00}, {1, 0x5C, 0x00}, {1, 0x5D, 0x00}, {1, 0x5E, 0x00}, {1, 0x5F, 0x00},
    {1, 0x60, 0x00}, {1, 0x61, 0x00}, {1, 0x62, 0x00}, {1, 0x63, 0x00}, {1, 0x64, 0x00}, {1, 0x65, 0x00},
    {1, 0x66, 0x00}, {1, 0x67, 0x00}, {1, 0x68, 0x00}, {1, 0x69, 0x00}, {1, 0x6A, 0x00}, {1, 0x6B, 0x00},
    {1, 0x6C, 0x00}, {1, 0x6D, 0x00}, {1, 0x6E, 0x00}, {1, 0x6F, 0x00}, {1, 0x70, 0x00}, {1, 0x71, 0x00},
    {1, 0x72, 0x00}, {1, 0x73, 0x00}, {1, 0x74, 0x00}, {1, 0x75, 0x00}, {1, 0x76, 0x00}, {1, 0x77, 0x00},
    {1, 0x78, 0x00}, {1, 0x79, 0x00}, {1, 0x7A, 0x00}, {1, 0x7B, 0x00}, {1, 0x7C, 0x00}, {1, 0x7D, 0x00},
    {1, 0x7E, 0x00}, {2, 0xC4, 0xA1}, {2, 0xC4, 0xA2}, {2, 0xC4, 0xA3}, {2, 0xC4, 0xA4}, {2, 0xC4, 0xA5},
    {2, 0xC4, 0xA6}, {2, 0xC4, 0xA7}, {2, 0xC4, 0xA8}, {2, 0xC4, 0xA9}, {2, 0xC4, 0xAA}, {2, 0xC4, 0xAB},
    {2, 0xC4, 0xAC}, {2, 0xC4, 0xAD}, {2, 0xC4, 0xAE}, {2, 0xC4, 0xAF}, {2, 0xC4, 0xB0}, {2, 0xC4, 0xB1},
    {2, 0xC4, 0xB2}, {2, 0xC4, 0xB3}, {2, 0xC4, 0xB4}, {2, 0xC4, 0xB5}, {2, 0xC4, 0xB6}, {2, 0xC4, 0xB7},
    {2, 0xC4, 0xB8}, {2, 0xC4, 0xB9}, {2, 0xC4, 0xBA}, {2, 0xC4, 0xBB}, {2, 0xC4, 0xBC}, {2, 0xC4, 0xBD},
    {2, 0xC4, 0xBE}, {2, 0xC4, 0xBF}, {2, 0xC5, 0x80}, {2, 0xC5, 0x81}, {2, 0xC5, 0x82}, {2, 0xC2, 0xA1},
    {2, 0xC2, 0xA2}, {2, 0xC2, 0xA3}, {2, 0xC2, 0xA4}, {2, 0xC2, 0xA5}, {2, 0xC2, 0xA6}, {2, 0xC2, 0xA7},
    {2, 0xC2, 0xA8}, {2, 0xC2, 0xA9}, {2, 0xC2, 0xAA}, {2, 0xC2, 0xAB}, {2, 0xC2, 0xAC}, {2, 0xC5, 0x83},
    {2, 0xC2, 0xAE}, {2, 0xC2, 0xAF}, {2, 0xC2, 0xB0}, {2, 0xC2, 0xB1}, {2, 0xC2, 0xB2}, {2, 0xC2, 0xB3},
    {2, 0xC2, 0xB4}, {2, 0xC2, 0xB5}, {2, 0xC2, 0xB6}, {2, 0xC2, 0xB7}, {2, 0xC2, 0xB8}, {2, 0xC2, 0xB9},
    {2, 0xC2, 0xBA}, {2, 0xC2, 0xBB}, {2, 0xC2, 0xBC}, {2, 0xC2, 0xBD}, {2, 0xC2, 0xBE}, {2, 0xC2, 0xBF},
    {2, 0xC3, 0x80}, {2, 0xC3, 0x81}, {2, 0xC3, 0x82}, {2, 0xC3, 0x83}, {2, 0xC3, 0x84}, {2, 0xC3, 0x85},
    {2, 0xC3, 0x86}, {2, 0xC3, 0x87}, {2, 0xC3, 0x88}, {2, 0xC3, 0x89}, {2, 0xC3, 0x8A}, {2, 0xC3, 0x8B},
    {2, 0xC3, 0x8C}, {2, 0xC3, 0x8D}, {2, 0xC3, 0x8E}, {2, 0xC3, 0x8F}, {2, 0xC3, 0x90}, {2, 0xC3, 0x91},
    {2, 0xC3, 0x92}, {2, 0xC3, 0x93}, {2, 0xC3, 0x94}, {2, 0xC3, 0x95}, {2, 0xC3, 0x96}, {2, 0xC3, 0x97},
    {2, 0xC3, 0x98}, {2, 0xC3, 0x99}, {2, 0xC3, 0x9A}, {2, 0xC3, 0x9B}, {2, 0xC3, 0x9C}, {2, 0xC3, 0x9D},
    {2, 0xC3, 0x9E}, {2, 0xC3, 0x9F}, {2, 0xC3, 0xA0}, {2, 0xC3, 0xA1}, {2, 0xC3, 0xA2}, {2, 0xC3, 0xA3},
    {2, 0xC3, 0xA4}, {2, 0xC3, 0xA5}, {2, 0xC3, 0xA6}, {2, 0xC3, 0xA7}, {2, 0xC3, 0xA8}, {2, 0xC3, 0xA9},
    {2, 0xC3, 0xAA}, {2, 0xC3, 0xAB}, {2, 0xC3, 0xAC}, {2, 0xC3, 0xAD}, {2, 0xC3, 0xAE}, {2, 0xC3, 0xAF},
    {2, 0xC3, 0xB0}, {2, 0xC3, 0xB1}, {2, 0xC3, 0xB2}, {2, 0xC3, 0xB3}, {2, 0xC3, 0xB4}, {2, 0xC3, 0xB5},
    {2, 0xC3, 0xB6}, {2, 0xC3, 0xB7}, {2, 0xC3, 0xB8}, {2, 0xC3, 0xB9}, {2, 0xC3, 0xBA}, {2, 0xC3, 0xBB},
    {2, 0xC3, 0xBC}, {2, 0xC3, 0xBD}, {2, 0xC3, 0xBE}, {2, 0xC3, 0xBF},
};

int tok_cp_to_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 324) return -1;
    uint32_t n = cp - 256; /* the n-th byte that is not printable */
    if (n < 33) return (int)n;         /* 0 .. 32 */
    if (n < 67) return (int)(n + 94);  /* 127 .. 160 */
    return 173;
}
