/* fuzz_sign.h — signs test JWTs for the fuzz targets that need a token the validator accepts
 * (fuzz_jwt, fuzz_openid): RS256 with the throw-away key of fuzz_keys.h. Test material only. */
#ifndef HERALD_FUZZ_SIGN_H
#define HERALD_FUZZ_SIGN_H

#include "auth_in.h"
#include "fuzz_keys.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The private key of "fuzz-key-1"; aborts when it cannot be read. */
static inline EVP_PKEY *fuzz_signing_key(void)
{
    BIO *b = BIO_new_mem_buf(FUZZ_PRIVATE_KEY_PEM, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!k) {
        fprintf(stderr, "fuzz: cannot read the embedded key\n");
        abort();
    }
    return k;
}

/* "Bearer <base64url(header)>.<base64url(payload)>.<RS256 signature>", malloc'd. */
static inline char *fuzz_sign_token(EVP_PKEY *key, const char *header, const char *payload)
{
    char *h64 = auth_b64url_encode((const unsigned char *)header, strlen(header));
    char *p64 = auth_b64url_encode((const unsigned char *)payload, strlen(payload));
    size_t sl = strlen(h64) + 1 + strlen(p64);
    char *signing = malloc(sl + 1);
    snprintf(signing, sl + 1, "%s.%s", h64, p64);
    unsigned char sig[512];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, sig, &siglen, (unsigned char *)signing, sl) != 1)
        abort();
    EVP_MD_CTX_free(md);
    char *s64 = auth_b64url_encode(sig, siglen);
    size_t tl = 7 + sl + 1 + strlen(s64);
    char *auth = malloc(tl + 1);
    snprintf(auth, tl + 1, "Bearer %s.%s", signing, s64);
    free(h64);
    free(p64);
    free(signing);
    free(s64);
    return auth;
}

#endif
