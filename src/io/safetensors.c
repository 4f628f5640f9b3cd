/* safetensors.c - validating parser and memory-mapped loader for safetensors
 * files, single and sharded.
 *
 * st_parse checks one image in memory: the 8-byte header length, the JSON
 * header (through cJSON), every tensor entry, and that the tensors tile the
 * data region exactly.  st_open_file maps a file read-only and parses it; the
 * tensor data is never read, so opening is fast whatever the file's size.
 * st_open_dir finds the files of a model folder and joins them into one set
 * with a hash table (open addressing, FNV-1a) for O(1) lookup by name.
 *
 * Every failure returns a status with a message naming the file and, where
 * there is one, the tensor; nothing is leaked on any path. */
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/error.h"

/* The header size limit of the reference implementation (100 MB). */
#define ST_MAX_HEADER ((uint64_t)100000000)
/* Offsets and dims must be exact in a double: below 2^53. */
#define ST_MAX_EXACT 9007199254740992.0
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SUFFIX ".safetensors"
/* The start of a message about one tensor: file, then name. */
#define TENSOR "%s: tensor '%.256s': "

/* One entry while parsing: the tensor plus its offsets in the data region. */
typedef struct parsed {
    st_tensor t;
    uint64_t begin, end;
} parsed;

/* Key/value pairs of "__metadata__", both strings owned. */
typedef struct meta {
    char **kv; /* kv[2i] = key, kv[2i+1] = value */
    size_t n;
} meta;

typedef struct st_file {
    char *path;
    void *map; /* NULL when the file is empty */
    size_t len;
} st_file;

struct st_set {
    st_file *files;
    int n_files;
    st_tensor *t;
    size_t n;
    meta meta; /* of file 0 */
    size_t *slots; /* hash table: tensor index + 1, 0 = empty */
    size_t cap;    /* a power of two */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */
/* ------------------------------------------------------------------ */

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static char *path_join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    char *p = malloc(dl + nl + 2);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    p[dl] = '/';
    memcpy(p + dl + 1, name, nl + 1);
    return p;
}

static int oom(const char *what)
{
    return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
}

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A JSON number that is an exact integer in [0, 2^53). */
static int exact_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0.0 && v < ST_MAX_EXACT) || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* "[2, 3]" into buf, for messages. */
static const char *shape_str(const st_tensor *t, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static void meta_free(meta *m)
{
    for (size_t i = 0; i < 2 * m->n; i++) free(m->kv[i]);
    free(m->kv);
    m->kv = NULL;
    m->n = 0;
}

void st_tensors_free(st_tensor *t, size_t n)
{
    if (!t) return;
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}

/* ------------------------------------------------------------------ */
/* Name index: open addressing with linear probing, FNV-1a              */
/* ------------------------------------------------------------------ */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Builds a table over t[0..n).  On a duplicate name returns 1 with *dup_a
 * and *dup_b the two indices; -1 when out of memory; 0 on success. */
static int index_build(const st_tensor *t, size_t n, size_t **slots_out, size_t *cap_out,
                       size_t *dup_a, size_t *dup_b)
{
    size_t cap = 8;
    while (cap < 2 * n) cap *= 2;
    size_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < n; i++) {
        size_t s = (size_t)fnv1a(t[i].name) & (cap - 1);
        for (; slots[s]; s = (s + 1) & (cap - 1)) {
            if (strcmp(t[slots[s] - 1].name, t[i].name) == 0) {
                *dup_a = slots[s] - 1;
                *dup_b = i;
                free(slots);
                return 1;
            }
        }
        slots[s] = i + 1;
    }
    *slots_out = slots;
    *cap_out = cap;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Parsing one image                                                    */
/* ------------------------------------------------------------------ */

static int parse_metadata(const cJSON *j, const char *what, meta *m)
{
    if (!cJSON_IsObject(j))
        return infer_err(INFER_ERR_FORMAT, "%s: __metadata__ is not an object", what);
    size_t n = (size_t)cJSON_GetArraySize(j);
    meta_free(m);
    m->kv = calloc(2 * n + 1, sizeof *m->kv);
    if (!m->kv) return oom(what);
    const cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        if (!cJSON_IsString(e))
            return infer_err(INFER_ERR_FORMAT, "%s: __metadata__ value of '%.256s' is not a string",
                             what, e->string);
        m->kv[2 * m->n] = str_dup(e->string);
        m->kv[2 * m->n + 1] = str_dup(e->valuestring);
        m->n++;
        if (!m->kv[2 * m->n - 2] || !m->kv[2 * m->n - 1]) return oom(what);
    }
    return INFER_OK;
}

static int parse_dtype(const cJSON *e, const char *what, const char *name, st_tensor *t)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(d))
        return infer_err(INFER_ERR_FORMAT, TENSOR "\"dtype\" missing or not a string",
                         what, name);
    int dt = dtype_parse(d->valuestring);
    if (dt < 0)
        return infer_err(INFER_ERR_UNSUPPORTED, TENSOR "unsupported dtype '%.64s'",
                         what, name, d->valuestring);
    t->dtype = (infer_dtype)dt;
    return INFER_OK;
}

/* Fills shape/ndim and *bytes = product(shape) * dtype size. */
static int parse_shape(const cJSON *e, const char *what, const char *name, st_tensor *t,
                       uint64_t *bytes)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(s))
        return infer_err(INFER_ERR_FORMAT, TENSOR "\"shape\" missing or not an array",
                         what, name);
    int nd = cJSON_GetArraySize(s);
    if (nd > ST_MAX_DIMS)
        return infer_err(INFER_ERR_UNSUPPORTED, TENSOR "shape has %d dims, more than %d",
                         what, name, nd, ST_MAX_DIMS);
    const cJSON *d;
    int zero = 0;
    t->ndim = 0;
    cJSON_ArrayForEach(d, s)
    {
        uint64_t v;
        if (!exact_uint(d, &v))
            return infer_err(INFER_ERR_FORMAT,
                             TENSOR "shape[%d] is not a non-negative integer below 2^53",
                             what, name, t->ndim);
        zero |= v == 0;
        t->shape[t->ndim++] = (int64_t)v;
    }
    uint64_t total = dtype_size(t->dtype);
    for (int i = 0; i < t->ndim && !zero; i++) {
        uint64_t v = (uint64_t)t->shape[i];
        if (total > UINT64_MAX / v) {
            char sb[256];
            return infer_err(INFER_ERR_FORMAT, TENSOR "shape %s is too large", what,
                             name, shape_str(t, sb, sizeof sb));
        }
        total *= v;
    }
    *bytes = zero ? 0 : total;
    return INFER_OK;
}

static int parse_offsets(const cJSON *e, const char *what, const char *name, uint64_t data_len,
                         parsed *p)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) != 2)
        return infer_err(INFER_ERR_FORMAT,
                         TENSOR "\"data_offsets\" missing or not [begin, end]", what,
                         name);
    if (!exact_uint(cJSON_GetArrayItem(o, 0), &p->begin) ||
        !exact_uint(cJSON_GetArrayItem(o, 1), &p->end))
        return infer_err(INFER_ERR_FORMAT,
                         TENSOR "data_offsets are not non-negative integers below 2^53",
                         what, name);
    if (p->begin > p->end)
        return infer_err(INFER_ERR_FORMAT, TENSOR "data_offsets [%llu, %llu] end before they begin",
                         what, name, (unsigned long long)p->begin, (unsigned long long)p->end);
    if (p->end > data_len)
        return infer_err(INFER_ERR_FORMAT,
                         TENSOR "data_offsets [%llu, %llu] go past the end of the data "
                         "(%llu bytes; file truncated?)",
                         what, name, (unsigned long long)p->begin, (unsigned long long)p->end,
                         (unsigned long long)data_len);
    return INFER_OK;
}

static int parse_entry(const cJSON *e, const char *what, uint64_t data_len, parsed *p)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return infer_err(INFER_ERR_FORMAT, TENSOR "entry is not an object", what, name);
    uint64_t bytes = 0;
    int rc = parse_dtype(e, what, name, &p->t);
    if (!rc) rc = parse_shape(e, what, name, &p->t, &bytes);
    if (!rc) rc = parse_offsets(e, what, name, data_len, p);
    if (rc) return rc;
    if (p->end - p->begin != bytes) {
        char sb[256];
        return infer_err(INFER_ERR_FORMAT,
                         TENSOR "data_offsets [%llu, %llu] hold %llu bytes but shape %s "
                         "of %s needs %llu",
                         what, name, (unsigned long long)p->begin, (unsigned long long)p->end,
                         (unsigned long long)(p->end - p->begin), shape_str(&p->t, sb, sizeof sb),
                         dtype_name(p->t.dtype), (unsigned long long)bytes);
    }
    p->t.nbytes = (size_t)bytes;
    p->t.name = str_dup(name);
    return p->t.name ? INFER_OK : oom(what);
}

static int cmp_offsets(const void *a, const void *b)
{
    const parsed *x = *(const parsed *const *)a, *y = *(const parsed *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The tensors, sorted by offsets, must tile [0, data_len) exactly. */
static int check_tiling(parsed *p, size_t n, uint64_t data_len, const char *what)
{
    if (n == 0) {
        if (data_len == 0) return INFER_OK;
        return infer_err(INFER_ERR_FORMAT, "%s: %llu bytes of data but no tensors", what,
                         (unsigned long long)data_len);
    }
    parsed **order = malloc(n * sizeof *order);
    if (!order) return oom(what);
    for (size_t i = 0; i < n; i++) order[i] = &p[i];
    qsort(order, n, sizeof *order, cmp_offsets);
    uint64_t at = 0;
    int rc = INFER_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const parsed *c = order[i];
        if (c->begin < at)
            rc = infer_err(INFER_ERR_FORMAT,
                           TENSOR "data_offsets [%llu, %llu] overlap tensor '%.256s'",
                           what, c->t.name, (unsigned long long)c->begin,
                           (unsigned long long)c->end, order[i - 1]->t.name);
        else if (c->begin > at)
            rc = infer_err(INFER_ERR_FORMAT,
                           TENSOR "data_offsets [%llu, %llu] leave a hole: bytes "
                           "[%llu, %llu) belong to no tensor",
                           what, c->t.name, (unsigned long long)c->begin,
                           (unsigned long long)c->end, (unsigned long long)at,
                           (unsigned long long)c->begin);
        at = c->end;
    }
    if (!rc && at != data_len)
        rc = infer_err(INFER_ERR_FORMAT,
                       "%s: bytes [%llu, %llu) after tensor '%.256s' belong to no tensor", what,
                       (unsigned long long)at, (unsigned long long)data_len, order[n - 1]->t.name);
    free(order);
    return rc;
}

static int check_duplicates(const parsed *p, size_t n, const char *what)
{
    st_tensor *t = malloc((n ? n : 1) * sizeof *t);
    if (!t) return oom(what);
    for (size_t i = 0; i < n; i++) t[i] = p[i].t;
    size_t *slots = NULL, cap, a, b;
    int r = index_build(t, n, &slots, &cap, &a, &b);
    free(slots);
    free(t);
    if (r < 0) return oom(what);
    if (r > 0)
        return infer_err(INFER_ERR_FORMAT, "%s: tensor '%.256s' appears twice in the header", what,
                         p[b].t.name);
    return INFER_OK;
}

/* Reads the header length and parses the JSON header into *root. */
static int parse_header(const unsigned char *buf, size_t len, const char *what, cJSON **root,
                        uint64_t *hlen)
{
    if (len < 8)
        return infer_err(INFER_ERR_FORMAT,
                         "%s: file is %zu bytes, too short for a safetensors header", what, len);
    uint64_t n = read_le64(buf);
    if (n > ST_MAX_HEADER)
        return infer_err(INFER_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes",
                         what, (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > len - 8)
        return infer_err(INFER_ERR_FORMAT,
                         "%s: header length %llu is larger than the %zu bytes after it "
                         "(file truncated?)",
                         what, (unsigned long long)n, len - 8);
    /* cJSON gets its own NUL-terminated copy: it never reads the mapping. */
    char *text = malloc((size_t)n + 1);
    if (!text) return oom(what);
    memcpy(text, buf + 8, (size_t)n);
    text[n] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    size_t at = end ? (size_t)(end - text) : 0;
    int rc = INFER_OK;
    if (!j) {
        rc = infer_err(INFER_ERR_FORMAT, "%s: header is not valid JSON (error at byte %zu of %llu)",
                       what, at, (unsigned long long)n);
    } else {
        while (at < n && strchr(" \t\r\n", text[at]) && text[at]) at++;
        if (at < n)
            rc = infer_err(INFER_ERR_FORMAT,
                           "%s: header has bytes after its JSON value (at byte %zu)", what, at);
        else if (!cJSON_IsObject(j))
            rc = infer_err(INFER_ERR_FORMAT, "%s: header is not a JSON object", what);
    }
    free(text);
    if (rc) {
        cJSON_Delete(j);
        return rc;
    }
    *root = j;
    *hlen = n;
    return INFER_OK;
}

/* Parses every entry of the header object into p (n slots) and m. */
static int parse_entries(const cJSON *root, const char *what, uint64_t data_len, parsed *p,
                         size_t *n, meta *m)
{
    const cJSON *e;
    int seen_meta = 0;
    *n = 0;
    cJSON_ArrayForEach(e, root)
    {
        int rc;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++)
                return infer_err(INFER_ERR_FORMAT, "%s: __metadata__ appears twice", what);
            rc = parse_metadata(e, what, m);
        } else {
            memset(&p[*n], 0, sizeof p[*n]);
            rc = parse_entry(e, what, data_len, &p[*n]);
            if (!rc) (*n)++;
        }
        if (rc) return rc;
    }
    return INFER_OK;
}

/* st_parse, also handing back the metadata (when m is not NULL). */
static int parse_image(const unsigned char *buf, size_t len, const char *what, st_tensor **out,
                       size_t *n_out, meta *m)
{
    cJSON *root = NULL;
    uint64_t hlen = 0;
    int rc = parse_header(buf, len, what, &root, &hlen);
    if (rc) return rc;
    uint64_t data_len = len - 8 - hlen;
    size_t cap = (size_t)cJSON_GetArraySize(root);
    parsed *p = calloc(cap ? cap : 1, sizeof *p);
    meta mm = {0};
    size_t n = 0;
    rc = p ? parse_entries(root, what, data_len, p, &n, &mm) : oom(what);
    cJSON_Delete(root);
    if (!rc) rc = check_duplicates(p, n, what);
    if (!rc) rc = check_tiling(p, n, data_len, what);
    st_tensor *t = NULL;
    if (!rc && out) {
        t = malloc((n ? n : 1) * sizeof *t);
        if (!t) rc = oom(what);
    }
    if (rc || !out) {
        for (size_t i = 0; i < n; i++) free(p[i].t.name);
        free(p);
        meta_free(&mm);
        return rc;
    }
    const unsigned char *data = buf + 8 + hlen;
    for (size_t i = 0; i < n; i++) {
        t[i] = p[i].t;
        t[i].data = data + p[i].begin;
    }
    free(p);
    *out = t;
    if (n_out) *n_out = n;
    if (m) *m = mm;
    else meta_free(&mm);
    return INFER_OK;
}

int st_parse(const unsigned char *buf, size_t len, const char *what, st_tensor **out,
             size_t *n_out)
{
    if (!buf && len) return infer_err(INFER_ERR_INVALID_ARGUMENT, "st_parse: NULL buffer");
    if (!what) what = "safetensors";
    if (out) *out = NULL;
    if (n_out) *n_out = 0;
    return parse_image(buf, len, what, out, n_out, NULL);
}

/* ------------------------------------------------------------------ */
/* Files and sets                                                       */
/* ------------------------------------------------------------------ */

/* Maps path read-only; an empty file gets map NULL and len 0. */
static int map_file(const char *path, void **map, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return infer_err(INFER_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return infer_err(INFER_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return infer_err(INFER_ERR_IO, "%s: not a regular file", path);
    }
    *map = NULL;
    *len = (size_t)st.st_size;
    if (*len > 0) {
        void *p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return infer_err(INFER_ERR_IO, "%s: cannot map %zu bytes: %s", path, *len, strerror(e));
        }
        *map = p;
    }
    close(fd);
    return INFER_OK;
}

void st_drop(const st_set *set, const void *p, size_t n)
{
    if (!set || !p || !n) return;
    uintptr_t a = (uintptr_t)p, e = a + n;
    for (int i = 0; i < set->n_files; i++) {
        uintptr_t m = (uintptr_t)set->files[i].map;
        if (!m || a < m || e > m + set->files[i].len) continue;
        uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a2 = (a + pg - 1) & ~(pg - 1), e2 = e & ~(pg - 1);
        /* a private, read-only file mapping: MADV_DONTNEED only drops our
         * mapping of the pages */
        if (e2 > a2) (void)madvise((void *)a2, e2 - a2, MADV_DONTNEED);
        return;
    }
}

void st_close(st_set *set)
{
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) {
        if (set->files[i].map) munmap(set->files[i].map, set->files[i].len);
        free(set->files[i].path);
    }
    free(set->files);
    st_tensors_free(set->t, set->n);
    meta_free(&set->meta);
    free(set->slots);
    free(set);
}

/* Maps and parses path, appending its tensors to the set. */
static int set_add_file(st_set *set, const char *path)
{
    st_file *f = realloc(set->files, ((size_t)set->n_files + 1) * sizeof *f);
    if (!f) return oom(path);
    set->files = f;
    st_file *nf = &f[set->n_files];
    memset(nf, 0, sizeof *nf);
    nf->path = str_dup(path);
    if (!nf->path) return oom(path);
    int rc = map_file(path, &nf->map, &nf->len);
    set->n_files++; /* from here st_close releases it */
    if (rc) return rc;
    st_tensor *t;
    size_t n;
    rc = parse_image(nf->map, nf->len, path, &t, &n, set->n_files == 1 ? &set->meta : NULL);
    if (rc) return rc;
    st_tensor *all = realloc(set->t, (set->n + n + 1) * sizeof *all);
    if (!all) {
        st_tensors_free(t, n);
        return oom(path);
    }
    set->t = all;
    for (size_t i = 0; i < n; i++) {
        t[i].file = set->n_files - 1;
        all[set->n + i] = t[i];
    }
    set->n += n;
    free(t);
    return INFER_OK;
}

/* Builds the name table; a name in two files is a format error. */
static int set_index(st_set *set)
{
    size_t a, b;
    int r = index_build(set->t, set->n, &set->slots, &set->cap, &a, &b);
    if (r < 0) return oom(set->n_files ? set->files[0].path : "safetensors");
    if (r > 0)
        return infer_err(INFER_ERR_FORMAT, "tensor '%.256s' is in both %s and %s", set->t[b].name,
                         set->files[set->t[a].file].path, set->files[set->t[b].file].path);
    return INFER_OK;
}

/* Opens the listed files (in order) into a new set. */
static int set_open(char *const *paths, size_t n, st_set **out)
{
    *out = NULL;
    st_set *set = calloc(1, sizeof *set);
    if (!set) return oom(n ? paths[0] : "safetensors");
    int rc = INFER_OK;
    for (size_t i = 0; i < n && !rc; i++) rc = set_add_file(set, paths[i]);
    if (!rc) rc = set_index(set);
    if (rc) {
        st_close(set);
        return rc;
    }
    *out = set;
    return INFER_OK;
}

int st_open_file(const char *path, st_set **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "st_open_file: NULL out");
    *out = NULL;
    if (!path) return infer_err(INFER_ERR_INVALID_ARGUMENT, "st_open_file: NULL path");
    char *paths[1] = {(char *)path};
    return set_open(paths, 1, out);
}

/* ------------------------------------------------------------------ */
/* Model folders                                                        */
/* ------------------------------------------------------------------ */

static void free_strs(char **s, size_t n)
{
    if (!s) return;
    for (size_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int read_text(const char *path, char **text, size_t *len)
{
    void *map;
    int rc = map_file(path, &map, len);
    if (rc) return rc;
    *text = malloc(*len + 1);
    if (*text) {
        if (*len) memcpy(*text, map, *len);
        (*text)[*len] = '\0';
    }
    if (map) munmap(map, *len);
    return *text ? INFER_OK : oom(path);
}

/* A shard name must stay inside the folder. */
static int shard_name_ok(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Checks the weight_map and collects its distinct shard paths, sorted. */
static int index_shards(const cJSON *wm, const char *dir, const char *ipath, char ***paths,
                        size_t *n_paths)
{
    size_t n = (size_t)cJSON_GetArraySize(wm), k = 0;
    if (n == 0) return infer_err(INFER_ERR_FORMAT, "%s: weight_map names no tensors", ipath);
    const char **names = malloc(n * sizeof *names);
    if (!names) return oom(ipath);
    const cJSON *e;
    cJSON_ArrayForEach(e, wm)
    {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            free(names);
            return infer_err(INFER_ERR_FORMAT, TENSOR "shard name is not a file name in the folder",
                             ipath, e->string);
        }
        names[k++] = e->valuestring;
    }
    qsort(names, n, sizeof *names, cmp_str);
    char **p = calloc(n, sizeof *p);
    size_t m = 0;
    int rc = p ? INFER_OK : oom(ipath);
    for (size_t i = 0; i < n && !rc; i++) {
        if (i > 0 && strcmp(names[i], names[i - 1]) == 0) continue;
        p[m] = path_join(dir, names[i]);
        if (!p[m]) rc = oom(ipath);
        else if (!path_exists(p[m++]))
            rc = infer_err(INFER_ERR_MISSING, "%s: shard '%.256s' does not exist (%s)", ipath,
                           names[i], strerror(errno));
    }
    free(names);
    if (rc) {
        free_strs(p, m);
        return rc;
    }
    *paths = p;
    *n_paths = m;
    return INFER_OK;
}

/* Every weight_map entry must be in the shard it names. */
static int index_check(const st_set *set, const cJSON *wm, const char *ipath)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, wm)
    {
        const st_tensor *t = st_find(set, e->string);
        const char *fp = t ? set->files[t->file].path : NULL;
        const char *base = fp ? strrchr(fp, '/') : NULL;
        base = base ? base + 1 : fp;
        if (!t)
            return infer_err(INFER_ERR_MISSING,
                             "%s: tensor '%.256s' is absent from its shard '%.256s'", ipath,
                             e->string, e->valuestring);
        if (strcmp(base, e->valuestring) != 0)
            return infer_err(INFER_ERR_MISSING,
                             "%s: tensor '%.256s' is absent from its shard '%.256s' (it is in %s)",
                             ipath, e->string, e->valuestring, fp);
    }
    return INFER_OK;
}

static int open_index(const char *dir, const char *ipath, st_set **out)
{
    char *text;
    size_t len;
    int rc = read_text(ipath, &text, &len);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!root)
        rc = infer_err(INFER_ERR_FORMAT, "%s: not valid JSON", ipath);
    else if (!cJSON_IsObject(wm))
        rc = infer_err(INFER_ERR_FORMAT, "%s: \"weight_map\" missing or not an object", ipath);
    char **paths = NULL;
    size_t n = 0;
    if (!rc) rc = index_shards(wm, dir, ipath, &paths, &n);
    if (!rc) rc = set_open(paths, n, out);
    if (!rc) {
        rc = index_check(*out, wm, ipath);
        if (rc) {
            st_close(*out);
            *out = NULL;
        }
    }
    free_strs(paths, n);
    cJSON_Delete(root);
    return rc;
}

/* Every *.safetensors file of dir, sorted by name. */
static int list_safetensors(const char *dir, char ***paths, size_t *n_paths)
{
    DIR *d = opendir(dir);
    if (!d) return infer_err(INFER_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    char **p = NULL;
    size_t n = 0, cap = 0;
    int rc = INFER_OK;
    struct dirent *e;
    size_t sl = strlen(SUFFIX);
    while (!rc && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= sl || strcmp(e->d_name + l - sl, SUFFIX) != 0) continue;
        char *full = path_join(dir, e->d_name);
        struct stat st;
        if (!full) {
            rc = oom(dir);
        } else if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(full);
        } else {
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                char **np = realloc(p, cap * sizeof *np);
                if (!np) {
                    free(full);
                    rc = oom(dir);
                    break;
                }
                p = np;
            }
            p[n++] = full;
        }
    }
    closedir(d);
    if (rc) {
        free_strs(p, n);
        return rc;
    }
    if (n) qsort(p, n, sizeof *p, cmp_str);
    *paths = p;
    *n_paths = n;
    return INFER_OK;
}

int st_open_dir(const char *dir, st_set **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "st_open_dir: NULL out");
    *out = NULL;
    if (!dir) return infer_err(INFER_ERR_INVALID_ARGUMENT, "st_open_dir: NULL folder");
    char *ipath = path_join(dir, INDEX_NAME);
    char *spath = path_join(dir, SINGLE_NAME);
    int rc;
    if (!ipath || !spath) {
        rc = oom(dir);
    } else if (path_exists(ipath)) {
        rc = open_index(dir, ipath, out);
    } else if (path_exists(spath)) {
        rc = st_open_file(spath, out);
    } else {
        char **paths = NULL;
        size_t n = 0;
        rc = list_safetensors(dir, &paths, &n);
        if (!rc && n == 0)
            rc = infer_err(INFER_ERR_MISSING,
                           "%s: no " SINGLE_NAME ", " INDEX_NAME " or *" SUFFIX " file", dir);
        else if (!rc)
            rc = set_open(paths, n, out);
        free_strs(paths, n);
    }
    free(ipath);
    free(spath);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Queries                                                              */
/* ------------------------------------------------------------------ */

const st_tensor *st_find(const st_set *set, const char *name)
{
    if (!set || !name || !set->slots) return NULL;
    size_t mask = set->cap - 1;
    for (size_t s = (size_t)fnv1a(name) & mask; set->slots[s]; s = (s + 1) & mask) {
        const st_tensor *t = &set->t[set->slots[s] - 1];
        if (strcmp(t->name, name) == 0) return t;
    }
    return NULL;
}

size_t st_count(const st_set *set) { return set ? set->n : 0; }

const st_tensor *st_get(const st_set *set, size_t i)
{
    return set && i < set->n ? &set->t[i] : NULL;
}

const char *st_file_path(const st_set *set, int i)
{
    return set && i >= 0 && i < set->n_files ? set->files[i].path : NULL;
}

const char *st_metadata(const st_set *set, const char *key)
{
    if (!set || !key) return NULL;
    for (size_t i = 0; i < set->meta.n; i++)
        if (strcmp(set->meta.kv[2 * i], key) == 0) return set->meta.kv[2 * i + 1];
    return NULL;
}
