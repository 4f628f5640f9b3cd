/* npy.c - atomic writer of .npy v1.0 files (see npy.h).
 *
 * Layout: "\x93NUMPY", version 1 0, the header length as little-endian
 * uint16, then a Python dict literal
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (N, V), }
 * padded with spaces and ended by '\n' so that the data starts at a
 * multiple of 64 bytes, then the data in C order. */
#include "npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_PREAMBLE 10 /* magic (6) + version (2) + header length (2) */
#define NPY_ALIGN 64

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

/* The dict literal, without padding; returns its length or 0. */
static size_t format_dict(char *buf, size_t size, const char *descr, const int64_t *shape,
                          int ndim)
{
    size_t len = 0;
    int n = snprintf(buf, size, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    if (n < 0 || (size_t)n >= size) return 0;
    len = (size_t)n;
    for (int d = 0; d < ndim; d++) {
        n = snprintf(buf + len, size - len, d ? ", %lld" : "%lld", (long long)shape[d]);
        if (n < 0 || (size_t)n >= size - len) return 0;
        len += (size_t)n;
    }
    n = snprintf(buf + len, size - len, "%s), }", ndim == 1 ? "," : "");
    if (n < 0 || (size_t)n >= size - len) return 0;
    return len + (size_t)n;
}

size_t npy_header(char *buf, size_t size, const char *descr, const int64_t *shape, int ndim)
{
    if (size <= NPY_PREAMBLE || ndim < 0 || ndim > NPY_MAX_DIMS) return 0;
    size_t dict = format_dict(buf + NPY_PREAMBLE, size - NPY_PREAMBLE, descr, shape, ndim);
    if (dict == 0) return 0;
    size_t total = NPY_PREAMBLE + dict + 1; /* + '\n' */
    total = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    size_t hlen = total - NPY_PREAMBLE;
    if (total > size || hlen > 0xffff) return 0;
    memset(buf + NPY_PREAMBLE + dict, ' ', hlen - dict - 1);
    buf[total - 1] = '\n';
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    return total;
}

/* The number of elements of shape, or -1 if a dim is negative or the
 * byte count would overflow. */
static int64_t element_count(const int64_t *shape, int ndim, size_t elem_size)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return -1;
        if (shape[d] != 0 && n > INT64_MAX / shape[d]) return -1;
        n *= shape[d];
    }
    if ((uint64_t)n > SIZE_MAX / elem_size) return -1;
    return n;
}

static int host_is_little_endian(void)
{
    uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Writes n elements of elem_size bytes (<= 8) little-endian; 0 on success. */
static int write_data(FILE *f, const void *data, size_t elem_size, size_t n)
{
    if (n == 0) return 0;
    if (host_is_little_endian()) return fwrite(data, elem_size, n, f) == n ? 0 : -1;
    unsigned char buf[4096];
    const unsigned char *src = data;
    size_t per = sizeof buf / elem_size;
    for (size_t done = 0; done < n; done += per) {
        size_t k = n - done < per ? n - done : per;
        for (size_t e = 0; e < k; e++)
            for (size_t b = 0; b < elem_size; b++)
                buf[e * elem_size + b] = src[(done + e) * elem_size + elem_size - 1 - b];
        if (fwrite(buf, elem_size, k, f) != k) return -1;
    }
    return 0;
}

/* Gives the temporary file the mode a plain fopen would have made. */
static void set_default_mode(int fd)
{
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask);
}

/* Writes header and data to the open temporary file and closes it;
 * returns 0 or an errno value. */
static int write_and_close(FILE *f, const char *header, size_t header_len, const void *data,
                           size_t elem_size, size_t n)
{
    int ok = fwrite(header, 1, header_len, f) == header_len &&
             write_data(f, data, elem_size, n) == 0 && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    int e = ok ? 0 : (errno ? errno : EIO);
    if (fclose(f) != 0 && ok) e = errno ? errno : EIO;
    return e;
}

/* Creates a temporary file from the template tmp (modified), writes
 * the array, and renames it to path; returns 0 or an errno value. */
static int write_via_temp(char *tmp, const char *path, const char *header, size_t header_len,
                          const void *data, size_t elem_size, size_t n)
{
    int fd = mkstemp(tmp);
    if (fd < 0) return errno;
    FILE *f = fdopen(fd, "wb");
    int e;
    if (!f) {
        e = errno;
        close(fd);
    } else {
        set_default_mode(fd);
        errno = 0;
        e = write_and_close(f, header, header_len, data, elem_size, n);
        if (e == 0 && rename(tmp, path) != 0) e = errno;
    }
    if (e != 0) unlink(tmp);
    return e;
}

static int npy_write(const char *path, const char *descr, const void *data, size_t elem_size,
                     const int64_t *shape, int ndim, char *err, size_t err_size)
{
    char header[1024];
    int64_t n = ndim >= 0 && ndim <= NPY_MAX_DIMS ? element_count(shape, ndim, elem_size) : -1;
    size_t header_len = n < 0 ? 0 : npy_header(header, sizeof header, descr, shape, ndim);
    if (header_len == 0 || (n > 0 && !data)) {
        set_err(err, err_size, "%s: invalid array shape", path);
        return -1;
    }
    size_t tmp_size = strlen(path) + sizeof ".tmpXXXXXX";
    char *tmp = malloc(tmp_size);
    if (!tmp) {
        set_err(err, err_size, "%s: out of memory", path);
        return -1;
    }
    snprintf(tmp, tmp_size, "%s.tmpXXXXXX", path);
    int e = write_via_temp(tmp, path, header, header_len, data, elem_size, (size_t)n);
    free(tmp);
    if (e != 0) set_err(err, err_size, "%s: %s", path, strerror(e));
    return e != 0 ? -1 : 0;
}

int npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim,
                  char *err, size_t err_size)
{
    return npy_write(path, "<f4", data, sizeof(float), shape, ndim, err, err_size);
}

int npy_write_i32(const char *path, const int32_t *data, const int64_t *shape, int ndim,
                  char *err, size_t err_size)
{
    return npy_write(path, "<i4", data, sizeof(int32_t), shape, ndim, err, err_size);
}
