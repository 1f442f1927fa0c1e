/* quarantine.c — the culprits the watchdog recorded (JSON lines beside the database), loaded for
 * the running script and asked before work that once stalled the host runs again. */
#include "quarantine.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct entry {
    char *hash, *kind, *key;
    long long at_ms;
} entry;

static entry *entries;
static int nentries;

/* Bytes of the UTF-8 sequence starting at s (at most n available), 0 when it is not valid UTF-8. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
    if (!len || len > n || s[0] > 0xF4)
        return 0;
    unsigned cp = s[0] & (0x3F >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A key as the file holds it: the first QUARANTINE_KEY_MAX - 1 bytes (what the watchdog keeps of a
 * culprit), each byte that is not part of valid UTF-8 written as \xHH, since a JSON line is UTF-8
 * (jansson refused such a key, so a schedule id or chunk name with one was never quarantined and
 * looped the restart). Every append and every lookup goes through it. out holds CANON_MAX bytes. */
#define CANON_MAX (4 * QUARANTINE_KEY_MAX)
static void canon(const char *key, char *out)
{
    const unsigned char *s = (const unsigned char *)key;
    size_t n = strnlen(key, QUARANTINE_KEY_MAX - 1), o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(s + i, n - i);
        if (len) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            o += (size_t)snprintf(out + o, 5, "\\x%02X", s[i]);
            i++;
        }
    }
    out[o] = 0;
}

void quarantine_clear(void)
{
    for (int i = 0; i < nentries; i++) {
        free(entries[i].hash);
        free(entries[i].kind);
        free(entries[i].key);
    }
    free(entries);
    entries = NULL;
    nentries = 0;
}

int quarantine_load(const char *path)
{
    quarantine_clear();
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        log_error("cannot read the quarantine file %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        const char *hash = json_string_value(json_object_get(j, "script"));
        const char *kind = json_string_value(json_object_get(j, "kind"));
        const char *key = json_string_value(json_object_get(j, "key"));
        json_t *at = json_object_get(j, "at");
        if (hash && kind && key) {
            entry *n = realloc(entries, (size_t)(nentries + 1) * sizeof *n);
            if (n) {
                entries = n;
                entry *e = &entries[nentries];
                e->hash = strdup(hash);
                e->kind = strdup(kind);
                e->key = strdup(key);
                e->at_ms = json_is_integer(at) ? json_integer_value(at) : 0;
                if (e->hash && e->kind && e->key) {
                    nentries++;
                } else {
                    free(e->hash);
                    free(e->kind);
                    free(e->key);
                }
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return nentries;
}

long long quarantine_since(const char *script_hash, const char *kind, const char *key)
{
    if (!nentries)
        return 0;
    char k[CANON_MAX];
    canon(key, k);
    for (int i = 0; i < nentries; i++)
        if (strcmp(entries[i].kind, kind) == 0 && strcmp(entries[i].key, k) == 0 &&
            strcmp(entries[i].hash, script_hash) == 0)
            return entries[i].at_ms ? entries[i].at_ms : 1;
    return 0;
}

int quarantine_has(const char *script_hash, const char *kind, const char *key)
{
    return nentries && quarantine_since(script_hash, kind, key) != 0;
}

int quarantine_append(const char *path, const char *script_hash, const char *kind, const char *key,
                      long long at_ms, long cpu_ms, const char *script_path)
{
    char k[CANON_MAX], p[CANON_MAX];
    canon(key, k);
    canon(script_path ? script_path : "", p);
    json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:I, s:s}", "at", (json_int_t)at_ms, "script",
                          script_hash, "kind", kind, "key", k, "cpu_ms", (json_int_t)cpu_ms,
                          "path", p);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        errno = ENOMEM;
        return -1;
    }
    int rc = -1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        size_t len = strlen(s);
        if (write(fd, s, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0)
            rc = 0;
        int e = errno;
        close(fd);
        errno = e;
    }
    free(s);
    return rc;
}

int quarantine_hash(const void *buf, size_t len, char out[65])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (EVP_Digest(buf, len, digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
        return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    return 0;
}
