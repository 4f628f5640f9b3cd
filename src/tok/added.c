/* added.c - finding added tokens ("<start_of_turn>", "<|im_end|>") in
 * text, as Hugging Face's AddedVocabulary::find_matches: leftmost-longest
 * matches of all the tokens at once (not the file's order), then each
 * token's single_word, lstrip and rstrip options. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tok/tok_internal.h"

static int32_t new_node(tok_trie *t, uint8_t byte)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        tok_trie_node *v = realloc(t->nodes, cap * sizeof *v);
        if (!v) return -1;
        t->nodes = v;
        t->cap = cap;
    }
    tok_trie_node *nd = &t->nodes[t->n];
    nd->child = nd->sibling = nd->token = -1;
    nd->byte = byte;
    return (int32_t)t->n++;
}

int trie_add(tok_trie *t, const char *s, size_t len, int32_t token)
{
    if (len == 0) return 0;
    if (!t->nodes) {
        for (int i = 0; i < 256; i++) t->root_child[i] = -1;
        memset(t->first, 0, sizeof t->first);
    }
    t->empty = 0;
    uint8_t c0 = (uint8_t)s[0];
    t->first[c0 >> 3] |= (uint8_t)(1u << (c0 & 7));
    int32_t cur = t->root_child[c0];
    if (cur < 0) {
        if ((cur = new_node(t, c0)) < 0) return INFER_ERR_OUT_OF_MEMORY;
        t->root_child[c0] = cur;
    }
    for (size_t i = 1; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t k = t->nodes[cur].child, last = -1;
        while (k >= 0 && t->nodes[k].byte != c) {
            last = k;
            k = t->nodes[k].sibling;
        }
        if (k < 0) {
            if ((k = new_node(t, c)) < 0) return INFER_ERR_OUT_OF_MEMORY;
            if (last >= 0) t->nodes[last].sibling = k;
            else t->nodes[cur].child = k;
        }
        cur = k;
    }
    if (t->nodes[cur].token < 0) t->nodes[cur].token = token; /* equal patterns: the first wins */
    return 0;
}

void trie_free(tok_trie *t)
{
    free(t->nodes);
    t->nodes = NULL;
    t->n = t->cap = 0;
}

/* The longest token starting at s[i]; its length in *len, or -1. */
static int32_t longest_at(const tok_trie *t, const char *s, size_t n, size_t i, size_t *len)
{
    int32_t cur = t->root_child[(uint8_t)s[i]], best = -1;
    size_t j = i + 1;
    while (cur >= 0) {
        if (t->nodes[cur].token >= 0) {
            best = t->nodes[cur].token;
            *len = j - i;
        }
        if (j >= n) break;
        uint8_t c = (uint8_t)s[j];
        int32_t k = t->nodes[cur].child;
        while (k >= 0 && t->nodes[k].byte != c) k = t->nodes[k].sibling;
        cur = k;
        j++;
    }
    return best;
}

/* The code point ending at s[end) (end > 0). */
static uint32_t cp_before(const char *s, size_t end)
{
    size_t j = end - 1, l;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    return utf8_get(s + j, &l);
}

static int ms_add(tok_matches *ms, size_t a, size_t b, int m)
{
    if (ms->n == ms->cap) {
        size_t cap = ms->cap ? ms->cap * 2 : 16;
        tok_match *v = realloc(ms->v, cap * sizeof *v);
        if (!v) return -1;
        ms->v = v;
        ms->cap = cap;
    }
    ms->v[ms->n].start = (uint32_t)a;
    ms->v[ms->n].end = (uint32_t)b;
    ms->v[ms->n].is_match = (uint8_t)m;
    ms->n++;
    return 0;
}

int added_split(const infer_tokenizer *tok, const tok_trie *t, const char *s, size_t n,
                tok_matches *ms, tok_ids *tokens)
{
    ms->n = 0;
    tokens->n = 0;
    size_t start_offset = 0, i = 0;
    while (i < n) {
        uint8_t c = (uint8_t)s[i];
        if (!(t->first[c >> 3] & (1u << (c & 7)))) {
            i++;
            continue;
        }
        size_t len = 0;
        int32_t k = longest_at(t, s, n, i, &len);
        if (k < 0) {
            i++;
            continue;
        }
        const tok_added *a = &tok->added[k];
        size_t start = i, stop = i + len;
        i = stop; /* the matcher goes on after this match whatever becomes of it */
        if (a->single_word) {
            int start_ok = start == 0 || !uc_is_word(cp_before(s, start));
            size_t l;
            int stop_ok = stop == n || !uc_is_word(utf8_get(s + stop, &l));
            if (!start_ok || !stop_ok) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t j = ns - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                size_t l;
                if (!uc_is_whitespace(utf8_get(s + j, &l))) break;
                ns = j;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t l;
                if (!uc_is_whitespace(utf8_get(s + stop, &l))) break;
                stop += l;
            }
        }
        if (start < start_offset) start = start_offset; /* after an rstrip that ate into it */
        if (start_offset < start && ms_add(ms, start_offset, start, 0)) goto nomem;
        if (ms_add(ms, start, stop, 1) || ids_push(tokens, k)) goto nomem;
        start_offset = stop;
        if (i < stop) i = stop;
    }
    if (start_offset < n && ms_add(ms, start_offset, n, 0)) goto nomem;
    return 0;
nomem:
    return infer_err(INFER_ERR_OUT_OF_MEMORY, "added tokens: out of memory");
}
