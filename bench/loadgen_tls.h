/*
 * loadgen_tls.h: the TLS client side of loadgen (OpenSSL 3), in the shape
 * of the socket calls loadgen makes, so a mode drives a TLS connection as
 * it drives a plain one: a call that must wait fails with EAGAIN, and the
 * caller waits for the socket's next edge (loadgen's epoll is
 * edge-triggered on both directions, so whichever direction OpenSSL wants
 * is covered).
 *
 * No certificate is verified: the peer is our own server on loopback, with
 * a throwaway certificate. The context sets SSL_MODE_RELEASE_BUFFERS (so
 * thousands of idle connections stay small), partial writes and moving
 * write buffers, and reads a cut stream (no close_notify) as the end of it.
 *
 * A call that must wait has to be repeated with the same arguments
 * (OpenSSL's rule for SSL_write); loadgen's modes keep their unsent bytes
 * where they were, so they do.
 */
#ifndef LOADGEN_TLS_H
#define LOADGEN_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

/* Makes the process's client context. Returns 0, or -1 with the reason in
 * lg_tls_error(). Called once, before any lg_tls_new. */
int lg_tls_init(void);

/* A new client connection over the connected (or connecting) socket fd,
 * which stays the caller's to close. session: a session to offer for
 * resumption, or NULL (the connection takes its own reference). Returns
 * NULL when out of memory. */
SSL *lg_tls_new(int fd, SSL_SESSION *session);

/* Advances the handshake: 1 when it is done, 0 when it must wait (errno
 * EAGAIN), -1 when it failed (lg_tls_error() says why). */
int lg_tls_handshake(SSL *ssl);

/* As recv(2): bytes read (> 0), 0 at the end of the stream (close_notify,
 * or the stream cut), -1 with errno EAGAIN when it must wait (a record that
 * was not data, such as a session ticket, also ends in a wait) or EPROTO
 * when TLS failed (lg_tls_error() says why). */
ssize_t lg_tls_read(SSL *ssl, void *buf, size_t len);

/* As send(2): bytes written (> 0; a partial write ends at a record),
 * -1 with errno EAGAIN when it must wait, or another errno when it failed
 * (EPROTO: lg_tls_error() says why). */
ssize_t lg_tls_write(SSL *ssl, const void *buf, size_t len);

/* Whether the handshake resumed the session offered. */
int lg_tls_resumed(SSL *ssl);

/* The connection's session, to offer on a later connection (a reference
 * the caller frees with lg_tls_session_free), or NULL when the server gave
 * none it could resume (over TLS 1.3 it arrives as a ticket after the
 * handshake, so ask once some data has been read). */
SSL_SESSION *lg_tls_session(SSL *ssl);
void lg_tls_session_free(SSL_SESSION *session);

/* Sends close_notify if it can go out now, without waiting for the peer's,
 * and frees the connection. The socket is the caller's to close. */
void lg_tls_close(SSL *ssl);

/* Why the last failed call failed, in OpenSSL's words, or a plain
 * message; a static buffer, valid until the next failure. */
const char *lg_tls_error(void);

#endif
