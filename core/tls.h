/*
 * tls.h: TLS on OpenSSL 3 as a transport of gl_conn (conn.h).
 *
 * A gl_tls is a context: certificates, verification and protocol settings,
 * shared by every connection made with it and by any number of threads
 * (reference-counted; OpenSSL's SSL_CTX is safe to share once set up). A
 * context is either a server's or a client's.
 *
 * gl_tls_start puts a connection on TLS and starts its handshake; the
 * connection reports the end through its owner's callbacks (conn.h:
 * on_drain when done, on_close with GL_CLOSE_ERROR and c->err = EPROTO,
 * ETIMEDOUT or the socket's errno when it failed). gl_tls_error then says
 * why in OpenSSL's words. Over TLS, a read of 0 is the end of the stream:
 * the peer's close_notify, or (truncation) a stream cut without one, which
 * gl_tls_error names. A local close sends close_notify when nothing is left
 * unwritten, without waiting for the peer's.
 *
 * Each connection's record buffers are released while it is idle
 * (SSL_MODE_RELEASE_BUFFERS), so an idle TLS connection holds only
 * OpenSSL's session state.
 */
#ifndef GL_TLS_H
#define GL_TLS_H

#include <stddef.h>
#include <time.h>

#include "conn.h"

enum { GL_TLS_VERIFY_NONE, GL_TLS_VERIFY_OPTIONAL, GL_TLS_VERIFY_REQUIRED };

/* What a context is made of. Strings are read during gl_tls_new only. */
typedef struct gl_tls_conf {
  int server;
  /* A path, or the PEM text itself (a string holding "-----BEGIN"). The
   * certificate may carry its chain; the key may be encrypted (password).
   * Required for a server; optional for a client (its certificate). */
  const char *cert, *key, *password;
  /* Certificates to verify the peer with: a file, a directory, or PEM
   * text. NULL: a client uses the system's store; a server asks for no
   * client certificate. */
  const char *ca;
  /* GL_TLS_VERIFY_*. A server: whether it asks for, and requires, a client
   * certificate. A client: NONE or REQUIRED (the server's certificate and
   * name, against ca or the system's store). */
  int verify;
  /* ALPN protocols in order of preference, in the wire format (each name
   * preceded by its length byte), or NULL. */
  const unsigned char *alpn;
  size_t alpn_len;
  const char *min_version; /* "1.2" (NULL) or "1.3" */
  const char *ciphers;      /* TLS 1.2 cipher list, or NULL */
  const char *ciphersuites; /* TLS 1.3 suites, or NULL */
  int no_tickets;           /* a server: no session tickets */
} gl_tls_conf;

typedef struct gl_tls gl_tls;

/* A new context with one reference, or NULL with a message in err that
 * names what is wrong (which file, missing or not PEM, a key that does not
 * match its certificate, a wrong password, an unknown version). */
gl_tls *gl_tls_new(const gl_tls_conf *conf, char *err, size_t errlen);
void gl_tls_ref(gl_tls *t);
void gl_tls_unref(gl_tls *t); /* the last one frees it */

/* A server context: serve name (exactly, or "*.example.com" for one label
 * under example.com) with the certificate of other (a server context made
 * for it; it takes a reference). Names are matched without regard to case;
 * an exact name before any "*." one, and among those the first added; a
 * client naming none gets t's own.
 * Returns GL_OK or -ENOMEM. Call before t is used by connections. */
int gl_tls_add_name(gl_tls *t, const char *name, gl_tls *other);

/* Puts c (connected, nothing read or queued yet) on TLS with t and starts
 * the handshake. server_name: for a client, the name sent (SNI) and, when
 * t verifies, the one the certificate must carry (an IP address is
 * checked as one and not sent); NULL for neither. Returns GL_OK, or -ENOMEM
 * with c unchanged. */
int gl_tls_start(gl_conn *c, gl_tls *t, const char *server_name);

/* What a server context asks its owner during a handshake. ud is what
 * gl_tls_set_ud gave the connection (NULL if nothing). Both run inside the
 * handshake, on the connection's loop, and must not block. */
typedef struct gl_tls_hooks {
  /* The client named name and no name of gl_tls_add_name matched: sets
   * *out to a context to serve it with (a reference the hook gives up) or
   * leaves it NULL for t's own; returns GL_OK, or GL_ERR to refuse the
   * handshake (alert unrecognized_name). */
  int (*sni)(void *ud, const char *name, gl_tls **out);
  /* The client offered the protocols in (wire format, inlen bytes): sets
   * *out, *outlen to the one chosen (within in) and returns 1; returns 0
   * for none (no ALPN, the handshake goes on), -1 to refuse it. Replaces
   * the context's own list. */
  int (*alpn)(void *ud, const unsigned char *in, unsigned inlen,
              const unsigned char **out, unsigned char *outlen);
} gl_tls_hooks;

/* Sets t's hooks (h outlives t; NULL: none). Call before t is used by
 * connections. The contexts a sni hook returns, and those of
 * gl_tls_add_name, should carry the same hooks (ALPN is chosen by the
 * context a connection ends up on). */
void gl_tls_set_hooks(gl_tls *t, const gl_tls_hooks *h);
const gl_tls_hooks *gl_tls_get_hooks(const gl_tls *t);

/* Gives c's hooks their ud (after gl_tls_start). */
void gl_tls_set_ud(gl_conn *c, void *ud);

/* Why c's handshake or stream failed (OpenSSL's reason, or "peer closed
 * without close_notify"), or NULL. Valid until c's next I/O. */
const char *gl_tls_error(const gl_conn *c);

/* What a TLS connection agreed on. Strings stay valid while c is open. */
typedef struct gl_tls_info {
  const char *version;             /* "TLSv1.3" */
  const char *cipher;              /* "TLS_AES_256_GCM_SHA384" */
  const unsigned char *alpn;       /* the protocol chosen, or NULL */
  unsigned alpn_len;
  const char *server_name;         /* the name the client sent, or NULL */
  int resumed;                     /* a resumed session */
  int has_peer;                    /* the peer sent a certificate */
  long verify_result;              /* X509_V_OK (0) or why not */
  const char *verify_error;        /* NULL, or the text of verify_result */
} gl_tls_info;

/* Fills *out when c is on TLS and its handshake is done: GL_OK, else
 * GL_ERR. */
int gl_tls_get_info(const gl_conn *c, gl_tls_info *out);

/* The peer's certificate, formatted. */
typedef struct gl_tls_peer {
  char subject[512], issuer[512]; /* RFC 2253 */
  char serial[128];               /* hex */
  char sha256[65];                /* hex of the DER */
  time_t not_before, not_after;
  /* subjectAltName DNS names, addresses (text) and URIs, each followed by
   * a NUL; nsan of them */
  char san[2048];
  int nsan;
  char *pem; /* malloc'd PEM; the caller frees it */
} gl_tls_peer;

/* Fills *out with c's peer certificate: GL_OK; GL_ERR when it has none;
 * -ENOMEM. */
int gl_tls_get_peer(const gl_conn *c, gl_tls_peer *out);

#endif
