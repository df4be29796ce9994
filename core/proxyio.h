/*
 * proxyio.h: reading the PROXY header (proxy.h) off a connection, as a
 * transport of gl_conn (conn.h) whose handshake is the header.
 *
 * gl_proxyio_start puts a connection that has read nothing yet on the
 * "proxy" transport. Its handshake reads the header and not one byte more:
 * it peeks at what has arrived, and takes off the socket only bytes that
 * belong to the header (all of them while the header is incomplete, then
 * exactly the rest of it), so the bytes after it (a TLS ClientHello, the
 * client's first request) are still the socket's to read for whatever
 * transport comes next, and a connection waiting for the rest of a header
 * does not spin. The end is reported as any handshake's (conn.h): on_drain
 * when the header is in, on_close (GL_CLOSE_ERROR, c->err = EPROTO for a
 * bad header, ECONNRESET for a peer that closed before the end of one, or
 * the socket's errno) when it failed; gl_proxyio_error says why.
 *
 * Memory: a few bytes while waiting; GL_PROXY_MAX more for a header that
 * arrives in pieces; once done, the header (gl_proxyio_take).
 */
#ifndef GL_PROXYIO_H
#define GL_PROXYIO_H

#include <stddef.h>

#include "conn.h"
#include "proxy.h"

/* A header read off a connection: the parsed header, whose TLVs point into
 * bytes (its len raw bytes), in the same allocation. */
typedef struct gl_proxyio_hdr {
  gl_proxy h;
  size_t len;
  char bytes[];
} gl_proxyio_hdr;

/* Puts c (nothing read or queued yet) on the proxy transport and starts
 * reading the header. Returns GL_OK, or -ENOMEM with c unchanged. */
int gl_proxyio_start(gl_conn *c);

/* After the handshake is done: the header, now the caller's (free() it),
 * or NULL when c is not on the proxy transport or its header is not in.
 * The caller then puts c on its next transport (gl_conn_set_transport,
 * gl_tls_start, or back on gl_plain). */
gl_proxyio_hdr *gl_proxyio_take(gl_conn *c);

/* Why c's header could not be read ("not a PROXY header", "incomplete
 * PROXY header", ...: gl_proxy_strerror's words), or NULL when it did not
 * fail on the header's bytes (a timeout, a socket error: see c->reason
 * and c->err). Valid while c is. */
const char *gl_proxyio_error(const gl_conn *c);

#endif
