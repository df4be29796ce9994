/*
 * loadgen_tls.c: the TLS client side of loadgen; see loadgen_tls.h. All of
 * loadgen's OpenSSL calls are here, one context per process.
 */
#include "loadgen_tls.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static SSL_CTX *ctx;
static char why[256]; /* lg_tls_error's text */

/* Fills why from OpenSSL's error queue (its first entry), or with fallback
 * when the queue is empty, and empties the queue: SSL_get_error reads it,
 * so an entry left there would be taken for the next call's. */
static void take_error(const char *fallback) {
  unsigned long e = ERR_get_error();
  if (e)
    ERR_error_string_n(e, why, sizeof why);
  else
    snprintf(why, sizeof why, "%s", fallback);
  ERR_clear_error();
}

int lg_tls_init(void) {
  /* OpenSSL writes with write(2), which raises SIGPIPE on a connection the
   * server has closed; the failure is reported as EPIPE instead. */
  signal(SIGPIPE, SIG_IGN);
  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    take_error("cannot make a TLS context");
    return -1;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  return 0;
}

SSL *lg_tls_new(int fd, SSL_SESSION *session) {
  SSL *ssl = SSL_new(ctx);
  if (!ssl) return NULL;
  if (SSL_set_fd(ssl, fd) != 1 || (session && SSL_set_session(ssl, session) != 1) ||
      SSL_set_tlsext_host_name(ssl, "localhost") != 1) {
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

/* After an SSL call returned ret <= 0, with errno as the call left it:
 * -1 with errno EAGAIN when it must wait, 0 at the end of the stream, or
 * -1 with errno set and why filled when it failed. */
static ssize_t outcome(SSL *ssl, int ret, int err) {
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:
      ERR_clear_error();
      return 0;
    case SSL_ERROR_SYSCALL:
      if (err == 0) err = EPIPE; /* no errno: the stream ended under a write */
      take_error(strerror(err));
      errno = err;
      return -1;
    default:
      take_error("TLS failed");
      errno = EPROTO;
      return -1;
  }
}

int lg_tls_handshake(SSL *ssl) {
  errno = 0;
  int r = SSL_do_handshake(ssl);
  if (r == 1) return 1;
  ssize_t o = outcome(ssl, r, errno);
  if (o == 0) { /* close_notify, or the stream cut, before the end */
    snprintf(why, sizeof why, "closed by the peer during the handshake");
    errno = ECONNRESET;
    return -1;
  }
  return errno == EAGAIN ? 0 : -1;
}

ssize_t lg_tls_read(SSL *ssl, void *buf, size_t len) {
  errno = 0;
  int n = SSL_read(ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
  return n > 0 ? n : outcome(ssl, n, errno);
}

ssize_t lg_tls_write(SSL *ssl, const void *buf, size_t len) {
  errno = 0;
  int n = SSL_write(ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
  if (n > 0) return n;
  ssize_t o = outcome(ssl, n, errno);
  if (o == 0) { /* the peer's close_notify: nothing more can be sent */
    snprintf(why, sizeof why, "%s", strerror(EPIPE));
    errno = EPIPE;
    return -1;
  }
  return o;
}

int lg_tls_resumed(SSL *ssl) { return SSL_session_reused(ssl); }

SSL_SESSION *lg_tls_session(SSL *ssl) {
  SSL_SESSION *s = SSL_get1_session(ssl);
  if (s && !SSL_SESSION_is_resumable(s)) {
    SSL_SESSION_free(s);
    s = NULL;
  }
  return s;
}

void lg_tls_session_free(SSL_SESSION *session) { SSL_SESSION_free(session); }

void lg_tls_close(SSL *ssl) {
  if (SSL_is_init_finished(ssl)) SSL_shutdown(ssl);
  ERR_clear_error();
  SSL_free(ssl);
}

const char *lg_tls_error(void) { return why; }
