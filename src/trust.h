/* trust.h — which service URLs may receive the bot's bearer token: the cloud's own Teams host,
 * configured prefixes, URLs from validated activities, and stored references sealed by an HMAC. */
#ifndef HERALD_TRUST_H
#define HERALD_TRUST_H

#include <stddef.h>

typedef struct trust trust;

/* proactive_url: the cloud's global endpoint (its scheme+host is trusted); prefixes: comma list or
 * NULL; key/key_len: secret material for sealing references (NULL: seals are never valid). */
trust *trust_new(const char *proactive_url, const char *prefixes, const unsigned char *key,
                 size_t key_len);
void trust_free(trust *t);

/* Records a service URL that arrived in a validated activity. */
void trust_note_validated(trust *t, const char *service_url);

/* Seal for a stored reference: hex HMAC-SHA256 over conversation id and service URL, in out
 * (65 bytes). Returns 0, or -1 when no key is configured. */
int trust_seal(const trust *t, const char *conversation_id, const char *service_url, char out[65]);

/* The one shape check for a service URL, wherever one comes from (an activity, dev mode included):
 * http or https, a host, no credentials, no spaces or control characters. Returns NULL when url
 * may be used, else the reason (a static string naming the problem, safe in a JSON string). */
const char *trust_service_url_invalid(const char *url);

/* 1 when a token may go to service_url: it is https (plain http only on a loopback host) and the
 * cloud's host, under a configured prefix, seen in a validated activity, or vouched for by seal,
 * the stored trust_seal of (conversation_id, service_url) (either may be NULL). */
int trust_allows(const trust *t, const char *service_url, const char *conversation_id,
                 const char *seal);

#endif
