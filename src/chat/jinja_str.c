/* jinja_str.c - UTF-8 helpers and Python's character classes. */
#include <utf8proc.h>

#include "chat/jinja_int.h"

uint32_t u8_next(const char *s, size_t n, size_t *i)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t k = *i;
    uint32_t c = p[k];
    int extra = 0;
    if (c < 0x80) {
        *i = k + 1;
        return c;
    }
    if (c >= 0xf0) {
        c &= 0x07;
        extra = 3;
    } else if (c >= 0xe0) {
        c &= 0x0f;
        extra = 2;
    } else {
        c &= 0x1f;
        extra = 1;
    }
    k++;
    while (extra-- > 0 && k < n)
        c = (c << 6) | (p[k++] & 0x3f);
    *i = k;
    return c;
}

int u8_put(char *buf, uint32_t cp)
{
    unsigned char *b = (unsigned char *)buf;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    b[0] = (unsigned char)(0xf0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t u8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            c++;
    return c;
}

size_t u8_offset(const char *s, size_t n, size_t ci)
{
    size_t i = 0;
    while (i < n && ci > 0) {
        u8_next(s, n, &i);
        ci--;
    }
    return i;
}

int u8_valid(const char *s, size_t n, size_t *bad)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            goto invalid;
        }
        if (n - i < len)
            goto invalid;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                goto invalid;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            goto invalid;
        i += len;
    }
    return 1;
invalid:
    if (bad)
        *bad = i;
    return 0;
}

/* Python's str.isspace(): category Zs or bidirectional class WS, B or S. */
int py_isspace(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20);
    switch (cp) {
    case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f:
    case 0x205f: case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200a;
    }
}

static int cat(uint32_t cp)
{
    if (cp > 0x10ffff)
        return UTF8PROC_CATEGORY_CN;
    return (int)utf8proc_category((utf8proc_int32_t)cp);
}

int py_isprintable(uint32_t cp)
{
    if (cp == ' ')
        return 1;
    switch (cat(cp)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return 0;
    default:
        return 1;
    }
}

int py_isalpha(uint32_t cp)
{
    if (cp < 0x80)
        return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    switch (cat(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return 1;
    default:
        return 0;
    }
}

int py_isdecimal(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= '0' && cp <= '9';
    return cat(cp) == UTF8PROC_CATEGORY_ND;
}

int py_isdigit(uint32_t cp)
{
    if (py_isdecimal(cp))
        return 1;
    /* Numeric_Type=Digit: superscripts, circled and parenthesized digits. */
    return cp == 0xb2 || cp == 0xb3 || cp == 0xb9 || (cp >= 0x2070 && cp <= 0x2079 && cp != 0x2071 &&
           cp != 0x2072 && cp != 0x2073) || (cp >= 0x2080 && cp <= 0x2089) ||
           (cp >= 0x2460 && cp <= 0x2468) || (cp >= 0x2474 && cp <= 0x247c) ||
           (cp >= 0x2488 && cp <= 0x2490) || cp == 0x24ea || (cp >= 0x24f5 && cp <= 0x24fd) ||
           cp == 0x24ff || (cp >= 0x2776 && cp <= 0x277e) || (cp >= 0x2780 && cp <= 0x2788) ||
           (cp >= 0x278a && cp <= 0x2792);
}

int py_isnumeric(uint32_t cp)
{
    if (py_isdigit(cp))
        return 1;
    int c = cat(cp);
    if (c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO)
        return 1;
    /* CJK numerals that Unicode gives a numeric value. */
    switch (cp) {
    case 0x3007: case 0x4e00: case 0x4e03: case 0x4e07: case 0x4e09: case 0x4e5d:
    case 0x4e8c: case 0x4e94: case 0x516b: case 0x516d: case 0x5341: case 0x5343:
    case 0x56db: case 0x5104: case 0x767e: case 0x96f6:
        return 1;
    default:
        return 0;
    }
}

int py_isalnum(uint32_t cp) { return py_isalpha(cp) || py_isnumeric(cp); }

int py_isword(uint32_t cp) { return cp == '_' || py_isalnum(cp); }

int py_islower_cp(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= 'a' && cp <= 'z';
    if (cat(cp) == UTF8PROC_CATEGORY_LL)
        return 1;
    /* Other_Lowercase: ordinal indicators, modifier letters. */
    return cp == 0xaa || cp == 0xba || (cp >= 0x2b0 && cp <= 0x2b8) || (cp >= 0x2c0 && cp <= 0x2c1) ||
           (cp >= 0x2e0 && cp <= 0x2e4) || (cp >= 0x1d2c && cp <= 0x1d6a) || cp == 0x2071 ||
           cp == 0x207f || (cp >= 0x2090 && cp <= 0x209c) || (cp >= 0x24d0 && cp <= 0x24e9);
}

int py_isupper_cp(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= 'A' && cp <= 'Z';
    if (cat(cp) == UTF8PROC_CATEGORY_LU)
        return 1;
    return (cp >= 0x2160 && cp <= 0x216f) || (cp >= 0x24b6 && cp <= 0x24cf);
}

int py_istitle_cp(uint32_t cp) { return cat(cp) == UTF8PROC_CATEGORY_LT; }

int py_iscased(uint32_t cp) { return py_islower_cp(cp) || py_isupper_cp(cp) || py_istitle_cp(cp); }

int py_isident_start(uint32_t cp)
{
    if (cp < 0x80)
        return cp == '_' || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
    switch (cat(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
        return 1;
    default:
        return 0;
    }
}

int py_isident_cont(uint32_t cp)
{
    if (cp < 0x80)
        return cp == '_' || (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
    if (py_isident_start(cp))
        return 1;
    switch (cat(cp)) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return cp == 0xb7;
    }
}

uint32_t py_upper(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') ? cp - 32 : cp;
    return (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp);
}

uint32_t py_lower(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
}

uint32_t py_title(uint32_t cp)
{
    if (cp < 0x80)
        return py_upper(cp);
    return (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp);
}
