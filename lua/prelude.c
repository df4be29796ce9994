/*
 * prelude.c: what a served connection goes through before its script sees
 * it: the PROXY header (proxy_protocol), then the TLS handshake (tls), in
 * that order, within handshake_timeout of its accept.
 *
 * A connection in its prelude holds its slot under max_connections (and
 * max_connections_per_address: behind a proxy, from when its header is
 * in, counted by the client the header names) and a gl_conn, but no
 * socket object, state table or fiber: it costs the loop nothing while it
 * waits, and Lua nothing at all. When the prelude ends well the connection
 * is handed to served.c (lg_served_adopt), which runs with_init as for any
 * other. When it fails (a bad or missing header, a refused handshake, the
 * peer gone, the time up, a shutdown) the connection closes without
 * with_init or with_close, is counted (stats tls_failed, proxy_failed) and
 * logged at most once a second with the peer and the reason.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gl.h"
#include "proxyio.h"
#include "served.h"
#include "sock.h"

enum { PRE_PROXY, PRE_TLS };

typedef struct lg_pre {
  lg_server *sv;
  gl_conn *c;
  gl_addr *addr;
  gl_proxyio_hdr *hdr; /* once read */
  ev_tstamp start;     /* its accept: handshake_timeout counts from it */
  int phase;           /* PRE_* */
  struct lg_pre *prev, *next; /* in sv->pres */
  char peer[GL_NAMELEN + 48]; /* for the log: it fails after the close */
} lg_pre;

static void unlink_pre(lg_pre *p) {
  lg_server *sv = p->sv;
  if (p->prev)
    p->prev->next = p->next;
  else
    sv->pres = p->next;
  if (p->next) p->next->prev = p->prev;
  sv->npre--;
}

static void pre_data(gl_conn *c) { (void)c; } /* nothing is read for it */

/* Ends the prelude: the connection goes to served.c. */
static void pre_done(lg_pre *p) {
  lg_server *sv = p->sv;
  gl_conn *c = p->c;
  gl_proxyio_hdr *hdr = p->hdr;
  gl_addr *addr = p->addr;
  unlink_pre(p);
  free(p);
  gl_conn_set_idle(c, 0);
  lg_served_adopt(sv, c, hdr, addr);
}

/* The client's place under max_connections_per_address, once the header
 * says who it is: the address it carries, as getpeername() will give it
 * (for a LOCAL or UNKNOWN header, or a Unix socket's address: the
 * connection's own peer). Returns 0 when that client is at its cap. */
static int client_place(lg_pre *p) {
  const gl_proxy *h = p->hdr ? &p->hdr->h : NULL;
  char key[64];
  int port, fam;
  if (!p->sv->o.max_connections_per_address || p->addr) return 1;
  if (!h || h->command != GL_PROXY_PROXY ||
      (h->family != AF_INET && h->family != AF_INET6) ||
      gl_sock_addr_text(&h->src, h->src_len, key, sizeof key, &port, &fam) !=
          GL_OK) {
    if (gl_sock_peer_key(p->c->fd, key, sizeof key) != GL_OK) return 1;
  }
  return lg_server_take_address(p->sv, key, &p->addr);
}

/* A handshake ended well (conn.h reports it as on_drain): the header is
 * in, or TLS is up. */
static void pre_drain(gl_conn *c) {
  lg_pre *p = c->data;
  if (p->phase == PRE_PROXY) {
    p->hdr = gl_proxyio_take(c);
    if (!client_place(p)) { /* as at accept: refused, closed at once */
      GL_STAT_ADD(p->sv->rt->stats.refused, 1);
      gl_conn_close(c, GL_CLOSE_LOCAL, 0); /* counted: not a failure */
      return;
    }
    if (p->sv->tls && !p->sv->o.starttls) {
      p->phase = PRE_TLS;
      if (gl_tls_start(c, p->sv->tls, NULL) != GL_OK) {
        GL_STAT_ADD(p->sv->rt->stats.errors, 1); /* no memory */
        gl_conn_close(c, GL_CLOSE_LOCAL, 0);
        return;
      }
      gl_tls_set_ud(c, p->sv->tlsfns);
      c->last_active = p->start; /* one timeout for the whole prelude */
      return;
    }
    gl_conn_set_transport(c, &gl_plain, NULL, 0);
  }
  pre_done(p);
}

/* The prelude failed: counted, logged, slot given back. */
static void pre_close(gl_conn *c) {
  lg_pre *p = c->data;
  lg_server *sv = p->sv;
  lg_rt *rt = sv->rt;
  const char *why =
      p->phase == PRE_PROXY ? gl_proxyio_error(c) : gl_tls_error(c);
  if (c->reason == GL_CLOSE_TIMEOUT)
    why = p->phase == PRE_PROXY ? "no PROXY header in time"
                                : "TLS handshake timed out";
  else if (c->reason == GL_CLOSE_LOCAL)
    why = NULL; /* a shutdown, or no memory: not the peer's doing */
  else if (!why)
    why = c->err ? strerror(c->err) : "peer closed";
  if (why) {
    int tls = p->phase == PRE_TLS;
    if (tls)
      GL_STAT_ADD(rt->stats.tls_failed, 1);
    else
      GL_STAT_ADD(rt->stats.proxy_failed, 1);
    lg_log_flood(rt, tls ? &sv->all->tls_failed : &sv->all->proxy_failed,
                 "%s from %s: %s",
                 tls ? "TLS handshake failed" : "PROXY header refused",
                 p->peer, why);
  }
  unlink_pre(p);
  c->data = NULL;
  free(p->hdr);
  lg_server_give_slot(sv, p->addr);
  free(p);
}

static const gl_conn_cbs pre_cbs = {pre_data, pre_drain, pre_close};

void lg_prelude_start(lg_server *sv, int fd, gl_addr *addr) {
  lg_rt *rt = sv->rt;
  lg_pre *p = calloc(1, sizeof *p);
  gl_conn *c;
  int rc;
  if (!p) {
    close(fd);
    lg_server_give_slot(sv, addr);
    GL_STAT_ADD(rt->stats.errors, 1);
    return;
  }
  c = gl_conn_new(&rt->env, fd, 0, &pre_cbs, p);
  if (!c) { /* fd closed */
    free(p);
    lg_server_give_slot(sv, addr);
    GL_STAT_ADD(rt->stats.errors, 1);
    return;
  }
  p->sv = sv;
  p->c = c;
  p->addr = addr;
  p->start = ev_now(rt->loop);
  if (gl_sock_peer_text(fd, p->peer, sizeof p->peer) != GL_OK)
    snprintf(p->peer, sizeof p->peer, "unknown");
  p->next = sv->pres;
  if (p->next) p->next->prev = p;
  sv->pres = p;
  sv->npre++;
  if (sv->o.proxy_protocol) {
    p->phase = PRE_PROXY;
    rc = gl_proxyio_start(c);
  } else {
    p->phase = PRE_TLS;
    rc = gl_tls_start(c, sv->tls, NULL);
    if (rc == GL_OK) gl_tls_set_ud(c, sv->tlsfns);
  }
  if (rc != GL_OK) {
    gl_conn_close(c, GL_CLOSE_LOCAL, 0);
    GL_STAT_ADD(rt->stats.errors, 1);
    return;
  }
  gl_conn_set_idle(c, sv->o.handshake_timeout);
}

void lg_prelude_close_all(lg_server *sv) {
  while (sv->pres) gl_conn_close(sv->pres->c, GL_CLOSE_LOCAL, 0);
}
