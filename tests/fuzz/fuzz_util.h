/* fuzz_util.h — what every fuzz target shares: the property check that turns a broken promise
 * into a crash (so libFuzzer keeps the input), and splitting an input into NUL-terminated parts. */
#ifndef HERALD_FUZZ_UTIL_H
#define HERALD_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A violated property: says which, then aborts (libFuzzer writes the input as a crash). */
#define FUZZ_CHECK(cond, ...)                                                                       \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            fprintf(stderr, "%s:%d: property failed: ", __FILE__, __LINE__);                        \
            fprintf(stderr, __VA_ARGS__);                                                           \
            fputc('\n', stderr);                                                                    \
            abort();                                                                                \
        }                                                                                           \
    } while (0)

/* [p, p+n) as a malloc'd NUL-terminated string (it ends at an embedded NUL, as C readers see it). */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* Splits [p, p+n) at sep into k malloc'd strings; parts missing from the input are NULL. The last
 * part takes the rest (separators included). Free with fuzz_free_parts. */
static inline void fuzz_split(const uint8_t *p, size_t n, char sep, char **out, int k)
{
    for (int i = 0; i < k; i++)
        out[i] = NULL;
    for (int i = 0; i < k; i++) {
        const uint8_t *e = i == k - 1 ? NULL : memchr(p, sep, n);
        size_t len = e ? (size_t)(e - p) : n;
        out[i] = fuzz_strndup(p, len);
        if (!e)
            return;
        n -= len + 1;
        p = e + 1;
    }
}

static inline void fuzz_free_parts(char **parts, int k)
{
    for (int i = 0; i < k; i++)
        free(parts[i]);
}

/* 1 when [s, s+n) is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static inline int fuzz_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], len, cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (i + len > n)
            return 0;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* 1 when s holds no control character (C0 or DEL): safe inside one log line. */
static inline int fuzz_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* A byte cursor over the input, for targets that draw numbers from it. */
typedef struct fuzz_bytes {
    const uint8_t *p;
    size_t n;
} fuzz_bytes;

static inline uint64_t fuzz_take(fuzz_bytes *b, int nbytes)
{
    uint64_t v = 0;
    for (int i = 0; i < nbytes && b->n; i++, b->p++, b->n--)
        v = v << 8 | *b->p;
    return v;
}

#endif
