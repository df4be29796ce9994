/*
 * proxyio.c: the PROXY header read off a connection (proxyio.h).
 */
#include "proxyio.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "gl.h"

typedef struct reader {
  gl_proxyio_hdr *done; /* the header, once in */
  int err;              /* GL_PROXY_E*, or 1: none */
  size_t len;           /* bytes of the header taken off the socket */
  char *got;            /* them (GL_PROXY_MAX bytes), made only for a
                           header that arrives in pieces */
} reader;

static long no_read(gl_conn *c, char *p, size_t n) {
  (void)c, (void)p, (void)n;
  return -EPROTO; /* never called: conn.c reads only after the handshake */
}

static long no_write(gl_conn *c, const char *p, size_t n) {
  (void)c, (void)p, (void)n;
  return -EPROTO;
}

/* recv that retries on EINTR; -errno on failure. */
static long recv_some(int fd, char *p, size_t n, int flags) {
  ssize_t r;
  do r = recv(fd, p, n, flags);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : (long)r;
}

static int handshake(gl_conn *c) {
  reader *r = c->tpd;
  char tmp[GL_PROXY_MAX];
  gl_proxy h;
  long n;
  int rc;
  if (r->done) return 1;
  if (r->len) memcpy(tmp, r->got, r->len); /* got is NULL until a piece */
  n = recv_some(c->fd, tmp + r->len, sizeof tmp - r->len, MSG_PEEK);
  if (n == -EAGAIN || n == -EWOULDBLOCK) return GL_WANT_READ;
  if (n < 0) return (int)n;
  if (n == 0) { /* the peer closed before the end of a header */
    r->err = GL_PROXY_NEED_MORE;
    return -ECONNRESET;
  }
  rc = gl_proxy_parse(tmp, r->len + (size_t)n, &h);
  if (rc < 0) {
    r->err = rc;
    return -EPROTO;
  }
  if (rc == GL_PROXY_NEED_MORE) {
    /* every byte so far is the header's: take them, so the descriptor is
     * readable again only when more arrive */
    if (!r->got && !(r->got = malloc(GL_PROXY_MAX))) return -ENOMEM;
    if (recv_some(c->fd, r->got + r->len, (size_t)n, 0) != n) return -EIO;
    r->len += (size_t)n;
    return GL_WANT_READ;
  }
  /* the rest of the header, and not a byte of what follows it */
  if ((size_t)rc > r->len &&
      recv_some(c->fd, tmp + r->len, (size_t)rc - r->len, 0) !=
          (long)((size_t)rc - r->len))
    return -EIO;
  r->done = malloc(sizeof *r->done + (size_t)rc);
  if (!r->done) return -ENOMEM;
  r->done->len = (size_t)rc;
  memcpy(r->done->bytes, tmp, (size_t)rc);
  /* parsed again where it stays, so its TLVs point into bytes */
  gl_proxy_parse(r->done->bytes, (size_t)rc, &r->done->h);
  return 1;
}

static void reader_free(gl_conn *c) {
  reader *r = c->tpd;
  if (r) {
    free(r->done);
    free(r->got);
  }
  free(r);
  c->tpd = NULL;
}

static const gl_transport proxy_transport = {
    "proxy", no_read, no_write, handshake, NULL, NULL, NULL, reader_free};

int gl_proxyio_start(gl_conn *c) {
  reader *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->err = 1;
  gl_conn_set_transport(c, &proxy_transport, r, GL_WANT_READ);
  return GL_OK;
}

gl_proxyio_hdr *gl_proxyio_take(gl_conn *c) {
  reader *r = c->tp == &proxy_transport ? c->tpd : NULL;
  gl_proxyio_hdr *h = r ? r->done : NULL;
  if (h) r->done = NULL;
  return h;
}

const char *gl_proxyio_error(const gl_conn *c) {
  const reader *r = c->tp == &proxy_transport ? c->tpd : NULL;
  return r && r->err <= 0 ? gl_proxy_strerror(r->err) : NULL;
}
