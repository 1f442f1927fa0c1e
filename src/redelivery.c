/* redelivery.c — a chained hash of recently seen (conversation, activity id) keys with a FIFO in
 * arrival order, so expiry pops from the front in O(1) and lookups stay O(1). The keys are chosen
 * by whoever sends activities, so the hash is keyed (SipHash-2-4, OpenSSL's, with a random key per
 * process): nobody can compute ids that all land in one bucket and turn lookups into a scan. */
#include "redelivery.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;
    int64_t at;
    struct entry *chain;          /* bucket chain */
    struct entry *newer;          /* FIFO, oldest first */
    size_t key_len;
    char key[];                   /* conversation "\n" activity id */
} entry;

struct redelivery {
    EVP_MAC_CTX *mac;             /* SipHash, its output size set to 8 bytes */
    unsigned char key[16];
    entry **buckets;
    size_t nbuckets;              /* power of two */
    size_t count, max;
    entry *oldest, *newest;
};

uint64_t redelivery_hash(redelivery *r, const char *conversation_id, const char *activity_id)
{
    unsigned char out[8] = {0};
    size_t n = 0;
    /* re-keying is a few additions, and restarts the state whatever the last call left in it */
    if (EVP_MAC_init(r->mac, r->key, sizeof r->key, NULL) != 1 ||
        EVP_MAC_update(r->mac, (const unsigned char *)conversation_id, strlen(conversation_id)) != 1 ||
        EVP_MAC_update(r->mac, (const unsigned char *)"\n", 1) != 1 ||
        EVP_MAC_update(r->mac, (const unsigned char *)activity_id, strlen(activity_id)) != 1 ||
        EVP_MAC_final(r->mac, out, &n, sizeof out) != 1)
        return 0;                 /* never seen in practice; every key in bucket 0 is slow, not wrong */
    uint64_t h = 0;
    memcpy(&h, out, sizeof h);
    return h;
}

redelivery *redelivery_new(size_t max_entries)
{
    redelivery *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    r->mac = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);              /* the context keeps its own reference */
    size_t size = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_END};
    if (!r->mac || RAND_bytes(r->key, sizeof r->key) != 1 ||
        EVP_MAC_init(r->mac, r->key, sizeof r->key, params) != 1) {
        redelivery_free(r);
        return NULL;
    }
    r->max = max_entries ? max_entries : 1;
    r->nbuckets = 1024;
    while (r->nbuckets < r->max)
        r->nbuckets <<= 1;
    r->buckets = calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->buckets) {
        redelivery_free(r);
        return NULL;
    }
    return r;
}

void redelivery_free(redelivery *r)
{
    if (!r)
        return;
    for (entry *e = r->oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    free(r->buckets);
    EVP_MAC_CTX_free(r->mac);
    OPENSSL_cleanse(r->key, sizeof r->key);
    free(r);
}

size_t redelivery_size(const redelivery *r) { return r->count; }

static void drop_oldest(redelivery *r)
{
    entry *e = r->oldest;
    entry **pp = &r->buckets[e->hash & (r->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    r->oldest = e->newer;
    if (!r->oldest)
        r->newest = NULL;
    r->count--;
    free(e);
}

static void expire(redelivery *r, int64_t now_ms, int64_t window_ms)
{
    while (r->oldest && r->oldest->at <= now_ms - window_ms)
        drop_oldest(r);
}

static entry *find(redelivery *r, uint64_t h, const char *conversation_id, const char *activity_id)
{
    size_t clen = strlen(conversation_id), alen = strlen(activity_id);
    for (entry *e = r->buckets[h & (r->nbuckets - 1)]; e; e = e->chain)
        if (e->hash == h && e->key_len == clen + 1 + alen &&
            memcmp(e->key, conversation_id, clen) == 0 && e->key[clen] == '\n' &&
            memcmp(e->key + clen + 1, activity_id, alen) == 0)
            return e;
    return NULL;
}

int redelivery_seen(redelivery *r, const char *conversation_id, const char *activity_id,
                    int64_t now_ms, int64_t window_ms)
{
    expire(r, now_ms, window_ms);
    return find(r, redelivery_hash(r, conversation_id, activity_id), conversation_id,
                activity_id) != NULL;
}

int redelivery_check(redelivery *r, const char *conversation_id, const char *activity_id,
                     int64_t now_ms, int64_t window_ms)
{
    expire(r, now_ms, window_ms);
    uint64_t h = redelivery_hash(r, conversation_id, activity_id);
    if (find(r, h, conversation_id, activity_id))
        return 1;
    size_t clen = strlen(conversation_id), alen = strlen(activity_id);
    if (r->count >= r->max)
        drop_oldest(r);
    entry *e = malloc(sizeof *e + clen + 1 + alen + 1);
    if (!e)
        return 0;                 /* forgetting is the safe failure: the handler runs */
    e->hash = h;
    e->at = now_ms;
    e->key_len = clen + 1 + alen;
    memcpy(e->key, conversation_id, clen);
    e->key[clen] = '\n';
    memcpy(e->key + clen + 1, activity_id, alen + 1);
    size_t b = h & (r->nbuckets - 1);
    e->chain = r->buckets[b];
    r->buckets[b] = e;
    e->newer = NULL;
    if (r->newest) r->newest->newer = e; else r->oldest = e;
    r->newest = e;
    r->count++;
    return 0;
}
