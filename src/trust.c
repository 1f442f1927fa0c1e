/* trust.c — the serviceUrl allow-list that keeps the bearer token from ever leaving for a host a
 * forged activity or a tampered database row named. Seals make trust survive restarts without
 * trusting the database: only a process holding the app's secret can make one. */
#include "trust.h"
#include "config.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <strings.h>

#define MAX_SEEN 4096

struct trust {
    char *cloud_origin;           /* "https://smba.trafficmanager.net" */
    char **prefixes;
    size_t nprefixes;
    unsigned char key[64];
    size_t key_len;
    char **seen;                  /* validated URLs, normalized; a ring when full */
    size_t nseen, next;
};

/* scheme://host[:port] of url, lower-cased, malloc'd; NULL when url has none. */
static char *origin_of(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return NULL;
    p += 3;
    size_t n = strcspn(p, "/?#");
    if (n == 0 || memchr(p, '@', n))
        return NULL;              /* userinfo in a service URL is never legitimate */
    size_t len = (size_t)(p - url) + n;
    char *o = strndup(url, len);
    for (char *c = o; c && *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return o;
}

static char *normalize(const char *url)
{
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    char *s = strndup(url, n);
    for (char *c = s; c && *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return s;
}

trust *trust_new(const char *proactive_url, const char *prefixes, const unsigned char *key,
                 size_t key_len)
{
    trust *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cloud_origin = proactive_url ? origin_of(proactive_url) : NULL;
    if (prefixes) {
        char *list = strdup(prefixes), *save = NULL;
        size_t cap = 1;
        for (const char *c = prefixes; *c; c++)
            cap += *c == ',';
        t->prefixes = calloc(cap, sizeof *t->prefixes);
        for (char *u = strtok_r(list, ",", &save); u && t->prefixes; u = strtok_r(NULL, ",", &save)) {
            while (*u == ' ')
                u++;
            if (*u)
                t->prefixes[t->nprefixes++] = normalize(u);
        }
        free(list);
    }
    if (key && key_len) {
        /* the HMAC key is derived, so the secret itself is not kept here */
        unsigned int out = 0;
        HMAC(EVP_sha256(), "herald service url seal", 23, key, key_len, t->key, &out);
        t->key_len = out;
    }
    t->seen = calloc(MAX_SEEN, sizeof *t->seen);
    return t;
}

void trust_free(trust *t)
{
    if (!t)
        return;
    free(t->cloud_origin);
    for (size_t i = 0; i < t->nprefixes; i++)
        free(t->prefixes[i]);
    free(t->prefixes);
    for (size_t i = 0; t->seen && i < MAX_SEEN; i++)
        free(t->seen[i]);
    free(t->seen);
    OPENSSL_cleanse(t->key, sizeof t->key);
    free(t);
}

void trust_note_validated(trust *t, const char *service_url)
{
    char *n = normalize(service_url);
    if (!n || !t->seen)
        return free(n);
    for (size_t i = 0; i < t->nseen; i++)
        if (strcmp(t->seen[i], n) == 0)
            return free(n);
    free(t->seen[t->next]);
    t->seen[t->next] = n;
    t->next = (t->next + 1) % MAX_SEEN;
    if (t->nseen < MAX_SEEN)
        t->nseen++;
}

int trust_seal(const trust *t, const char *conversation_id, const char *service_url, char out[65])
{
    if (!t->key_len)
        return -1;
    char *n = normalize(service_url);
    if (!n)
        return -1;
    unsigned char mac[32];
    unsigned int len = 0;
    size_t cl = strlen(conversation_id), nl = strlen(n);
    unsigned char *msg = malloc(cl + 1 + nl);
    if (!msg) {
        free(n);
        return -1;
    }
    memcpy(msg, conversation_id, cl);
    msg[cl] = '\n';
    memcpy(msg + cl + 1, n, nl);
    HMAC(EVP_sha256(), t->key, (int)t->key_len, msg, cl + 1 + nl, mac, &len);
    free(msg);
    free(n);
    for (unsigned i = 0; i < 32; i++) {
        static const char hex[] = "0123456789abcdef";
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[64] = 0;
    return 0;
}

/* A service URL is where herald POSTs, so anything but a web origin (file:, javascript:, data:,
 * a bare word) is refused where it enters, not when a send fails on it later. */
const char *trust_service_url_invalid(const char *url)
{
    if (!url || !*url)
        return "serviceUrl is empty";
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return "serviceUrl contains spaces or control characters";
    size_t scheme = strncasecmp(url, "https://", 8) == 0 ? 8
                    : strncasecmp(url, "http://", 7) == 0 ? 7 : 0;
    if (!scheme)
        return "serviceUrl must be an http or https URL";
    const char *host = url + scheme;
    size_t authority = strcspn(host, "/?#");
    if (memchr(host, '@', authority))
        return "serviceUrl must not carry credentials";
    size_t name = authority;
    if (*host == '[') {
        const char *close = memchr(host, ']', authority);
        if (!close || close == host + 1)
            return "serviceUrl has a malformed host";
        name = (size_t)(close - host) + 1;
    } else {
        const char *colon = memchr(host, ':', authority);
        if (colon)
            name = (size_t)(colon - host);
    }
    if (name == 0)
        return "serviceUrl has no host";
    if (name < authority) {       /* a port: ':' then 1-5 digits */
        const char *port = host + name;
        size_t digits = authority - name - 1;
        if (*port != ':' || digits < 1 || digits > 5 || strspn(port + 1, "0123456789") < digits)
            return "serviceUrl has a malformed port";
    }
    /* the checks above name the common mistakes; libcurl, which will send to the URL, has the
     * last word (a host character it refuses would make a stored reference no send can use) */
    CURLU *u = curl_url();
    CURLUcode rc = u ? curl_url_set(u, CURLUPART_URL, url, 0) : CURLUE_OUT_OF_MEMORY;
    curl_url_cleanup(u);
    if (rc != CURLUE_OK)
        return "serviceUrl is not a URL libcurl accepts (a malformed host?)";
    return NULL;
}

int trust_allows(const trust *t, const char *service_url, const char *conversation_id,
                 const char *seal)
{
    /* plain http only on a loopback host, whatever vouches for the URL */
    if (!service_url || !config_url_allowed(service_url))
        return 0;
    char *o = origin_of(service_url);
    if (!o)
        return 0;
    int ok = t->cloud_origin && strncmp(o, "https://", 8) == 0 && strcmp(o, t->cloud_origin) == 0;
    free(o);
    if (ok)
        return 1;
    char *n = normalize(service_url);
    if (!n)
        return 0;
    for (size_t i = 0; i < t->nprefixes && !ok; i++) {
        size_t pl = strlen(t->prefixes[i]);
        ok = strncmp(n, t->prefixes[i], pl) == 0 && (n[pl] == 0 || n[pl] == '/' ||
                                                      t->prefixes[i][pl - 1] == '/');
    }
    for (size_t i = 0; i < t->nseen && !ok; i++)
        ok = strcmp(t->seen[i], n) == 0;
    free(n);
    if (!ok && seal && conversation_id) {
        char want[65];
        ok = trust_seal(t, conversation_id, service_url, want) == 0 && strlen(seal) == 64 &&
             CRYPTO_memcmp(want, seal, 64) == 0;
    }
    return ok;
}
