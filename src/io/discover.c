/* discover.c - infer_discover: the model folders in a directory, its
 * direct subfolders and the Hugging Face cache layout
 *
 *     models--ORG--NAME/
 *       refs/main              the revision "main" points to
 *       snapshots/REV/...      links into ../../blobs/
 *       blobs/
 *
 * Every stat() follows links, so a snapshot's files count with the sizes
 * of their blobs.  A folder that cannot be read, or whose config.json is
 * not a JSON object, is skipped: only the top folder being unreadable or
 * running out of memory fails the scan. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "io/config.h"

typedef struct entry_list {
    infer_model_entry *e;
    size_t n, cap;
} entry_list;

#define HUB_PREFIX "models--"

/* "a/b" in a new string (no doubled '/' when a ends with one). */
static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int slash = la > 0 && a[la - 1] == '/' ? 0 : 1;
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    if (slash) p[la] = '/';
    memcpy(p + la + slash, b, lb + 1);
    return p;
}

/* 1 if dir/name is a regular file (links followed); *size gets its size. */
static int is_file(const char *dir, const char *name, int64_t *size)
{
    char *p = join(dir, name);
    struct stat st;
    int ok = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
    if (ok && size) *size = (int64_t)st.st_size;
    free(p);
    return ok;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

/* Whether dir holds weights (a *.safetensors file or the index of a
 * sharded set), and the bytes of its *.safetensors files. */
static int has_weights(const char *dir, int64_t *bytes)
{
    *bytes = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t size;
        if (de->d_name[0] == '.') continue;
        if (!strcmp(de->d_name, "model.safetensors.index.json") && is_file(dir, de->d_name, NULL)) {
            found = 1;
        } else if (ends_with(de->d_name, ".safetensors") && is_file(dir, de->d_name, &size)) {
            found = 1;
            *bytes += size;
        }
    }
    closedir(d);
    return found;
}

/* Copies a JSON string into a fixed field, cut to fit. */
static void copy_field(char *dst, size_t size, const cJSON *v)
{
    if (cJSON_IsString(v) && v->valuestring) snprintf(dst, size, "%s", v->valuestring);
}

/* Fills the config.json fields of e; 0 if the file is not a JSON object
 * (the folder is then skipped). */
static int read_config(const char *dir, infer_model_entry *e)
{
    char *path = join(dir, "config.json");
    char *buf = NULL;
    size_t len = 0;
    int ok = path && config_read_file(path, &buf, &len) == INFER_OK;
    free(path);
    cJSON *root = ok ? cJSON_ParseWithLength(buf, len) : NULL;
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return 0;
    }
    copy_field(e->model_type, sizeof e->model_type, cJSON_GetObjectItemCaseSensitive(root, "model_type"));
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (cJSON_IsArray(arch)) copy_field(e->architecture, sizeof e->architecture, cJSON_GetArrayItem(arch, 0));
    /* dtype (transformers 5.x) over torch_dtype (4.x), the top level over
     * text_config, as config.c reads them */
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    const cJSON *objs[2] = {root, cJSON_IsObject(text) ? text : NULL};
    static const char *const dtype_keys[2] = {"dtype", "torch_dtype"};
    for (int o = 0; o < 2 && !e->dtype[0]; o++)
        for (int k = 0; objs[o] && k < 2 && !e->dtype[0]; k++)
            copy_field(e->dtype, sizeof e->dtype, cJSON_GetObjectItemCaseSensitive(objs[o], dtype_keys[k]));
    static const char *const quant_keys[2] = {"quantization", "quantization_config"};
    for (int k = 0; k < 2 && !e->quant_bits; k++) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, quant_keys[k]);
        const cJSON *bits = cJSON_IsObject(q) ? cJSON_GetObjectItemCaseSensitive(q, "bits") : NULL;
        if (cJSON_IsNumber(bits) && bits->valuedouble > 0 && bits->valuedouble <= 64)
            e->quant_bits = (int)bits->valuedouble;
    }
    cJSON_Delete(root);
    return 1;
}

/* Adds dir to the list under name if it is a model folder; sets *added.
 * Fails only when out of memory. */
static int try_model(entry_list *l, const char *dir, const char *name, int *added)
{
    infer_model_entry e;
    memset(&e, 0, sizeof e);
    if (added) *added = 0;
    if (!is_file(dir, "config.json", NULL) || !has_weights(dir, &e.weight_bytes) || !read_config(dir, &e))
        return INFER_OK;
    e.has_tokenizer = is_file(dir, "tokenizer.json", NULL);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        infer_model_entry *p = realloc(l->e, cap * sizeof *p);
        if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
        l->e = p;
        l->cap = cap;
    }
    e.path = strdup(dir);
    e.name = strdup(name);
    if (!e.path || !e.name) {
        free(e.path);
        free(e.name);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    }
    l->e[l->n++] = e;
    if (added) *added = 1;
    return INFER_OK;
}

/* "ORG/NAME" from "models--ORG--NAME" (every "--" a '/'). */
static char *hub_name(const char *folder)
{
    const char *s = folder + strlen(HUB_PREFIX);
    char *out = malloc(strlen(s) + 1), *w = out;
    if (!out) return NULL;
    while (*s) {
        if (s[0] == '-' && s[1] == '-') {
            *w++ = '/';
            s += 2;
        } else {
            *w++ = *s++;
        }
    }
    *w = '\0';
    return out;
}

/* The revision refs/main names, if it is a plain folder name; "" if none. */
static void hub_main_ref(const char *repo, char *rev, size_t size)
{
    rev[0] = '\0';
    char *path = join(repo, "refs/main");
    FILE *f = path ? fopen(path, "r") : NULL;
    free(path);
    if (!f) return;
    if (fgets(rev, (int)size, f)) {
        size_t n = strcspn(rev, " \t\r\n");
        rev[n] = '\0';
        if (strchr(rev, '/') || rev[0] == '.') rev[0] = '\0';
    } else {
        rev[0] = '\0';
    }
    fclose(f);
}

/* A cache entry models--ORG--NAME at repo (folder is its last part): the
 * snapshot refs/main names if it is a model folder, else every snapshot
 * that is. */
static int scan_hub_repo(entry_list *l, const char *repo, const char *folder)
{
    char *name = hub_name(folder);
    char *snaps = join(repo, "snapshots");
    int rc = INFER_OK;
    if (!name || !snaps) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", repo);
        goto done;
    }
    char rev[256];
    hub_main_ref(repo, rev, sizeof rev);
    if (rev[0]) {
        char *snap = join(snaps, rev);
        int added = 0;
        rc = snap ? try_model(l, snap, name, &added) : infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", repo);
        free(snap);
        if (rc || added) goto done;
    }
    DIR *d = opendir(snaps);
    if (!d) goto done;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *snap = join(snaps, de->d_name);
        if (!snap) rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", repo);
        else if (is_dir(snap)) rc = try_model(l, snap, name, NULL);
        free(snap);
    }
    closedir(d);
done:
    free(name);
    free(snaps);
    return rc;
}

/* The last part of a path ("a/b/" gives "b"), into buf. */
static void base_name(const char *path, char *buf, size_t size)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t len = n - start;
    if (len >= size) len = size - 1;
    memcpy(buf, path + start, len);
    buf[len] = '\0';
}

/* The name of dir itself: its last part, resolved so that "." and ".."
 * give a folder's real name. */
static void own_name(const char *dir, char *buf, size_t size)
{
    char *real = realpath(dir, NULL);
    base_name(real ? real : dir, buf, size);
    free(real);
    if (!buf[0]) snprintf(buf, size, "%s", dir);
}

static int by_name_then_path(const void *a, const void *b)
{
    const infer_model_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->path, y->path);
}

static int scan(entry_list *l, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return infer_err(INFER_ERR_IO, "%s: cannot open the folder: %s", dir, strerror(errno));
    char self[NAME_MAX + 1];
    own_name(dir, self, sizeof self);
    int rc = !strncmp(self, HUB_PREFIX, strlen(HUB_PREFIX)) ? scan_hub_repo(l, dir, self)
                                                             : try_model(l, dir, self, NULL);
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *sub = join(dir, de->d_name);
        if (!sub) {
            rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
        } else if (is_dir(sub)) {
            if (!strncmp(de->d_name, HUB_PREFIX, strlen(HUB_PREFIX)))
                rc = scan_hub_repo(l, sub, de->d_name);
            else
                rc = try_model(l, sub, de->d_name, NULL);
        }
        free(sub);
    }
    closedir(d);
    return rc;
}

int infer_discover(const char *dir, infer_model_entry **out, size_t *n)
{
    if (out) *out = NULL;
    if (n) *n = 0;
    if (!dir || !out || !n)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_discover: %s is NULL", !dir ? "dir" : !out ? "out" : "n");
    entry_list l = {NULL, 0, 0};
    int rc = scan(&l, dir);
    if (rc) {
        infer_model_entries_free(l.e, l.n);
        return rc;
    }
    if (l.n > 1) qsort(l.e, l.n, sizeof *l.e, by_name_then_path);
    *out = l.e;
    *n = l.n;
    return INFER_OK;
}

void infer_model_entries_free(infer_model_entry *e, size_t n)
{
    if (!e) return;
    for (size_t i = 0; i < n; i++) {
        free(e[i].path);
        free(e[i].name);
    }
    free(e);
}
