/*
 * acceptor.c: a server's accepting, held to max_connections and to
 * max_connections_per_address. Both counts are the server's own, or its
 * pool's (lg_share), so the limits hold across workers. Behind a proxy
 * (proxy_protocol) a client is known only once its header is in: the
 * prelude takes its place under max_connections_per_address then.
 */
#include <string.h>
#include <unistd.h>

#include "served.h"
#include "sock.h"

int lg_server_take_address(lg_server *sv, const char *key, gl_addr **addr) {
  int full;
  *addr = NULL;
  if (!sv->o.max_connections_per_address || !sv->addrs) return 1;
  *addr = gl_addrs_take(sv->addrs, key, strlen(key),
                        sv->o.max_connections_per_address, &full);
  return *addr != NULL;
}

/* A place for fd's client under max_connections_per_address, by its IP
 * address, or on a Unix socket its user (gl_sock_peer_key); none yet
 * behind a proxy (the prelude takes it once the header is in). */
static int per_address(lg_server *sv, int fd, gl_addr **addr) {
  char key[64];
  *addr = NULL;
  if (!sv->o.max_connections_per_address || !sv->addrs ||
      sv->o.proxy_protocol)
    return 1;
  if (gl_sock_peer_key(fd, key, sizeof key) != 0) return 1;
  return lg_server_take_address(sv, key, addr);
}

/* Takes a slot under max_connections (counted across a pool). */
static int claim(lg_server *sv) {
  long max = sv->o.max_connections;
  if (!max) return 1;
  /* compare-and-swap: the count never passes max, not even for a moment,
   * so a failed claim cannot hide a free slot from another worker */
  long c = atomic_load(sv->count);
  while (c < max)
    if (atomic_compare_exchange_weak(sv->count, &c, c + 1)) return 1;
  return 0;
}

void lg_server_give_slot(lg_server *sv, gl_addr *addr) {
  if (addr) gl_addrs_give(sv->addrs, addr);
  if (sv->o.max_connections &&
      atomic_fetch_sub(sv->count, 1) >= sv->o.max_connections) {
    /* someone may be waiting for this slot: here, or on another worker */
    lg_server_resume(sv);
    if (sv->share) sv->share->resume(sv->share);
  }
}

int lg_server_full(lg_server *sv) {
  return sv->o.max_connections &&
         atomic_load(sv->count) >= sv->o.max_connections;
}

/* Past max_connections the server stops accepting; a connection accepted
 * meanwhile (by a race between workers) is held, not dropped, and served
 * when a slot frees. */
void lg_acceptor_accept(gl_listener *l, int fd) {
  lg_server *sv = l->data;
  gl_addr *addr;
  if (!per_address(sv, fd, &addr)) { /* as nginx's limit_conn: refused */
    /* counted first: once the peer sees the close, stats() shows it */
    GL_STAT_ADD(sv->rt->stats.refused, 1);
    close(fd);
    return;
  }
  if (sv->nheld || !claim(sv)) {
    if (sv->nheld < LG_HOLD_MAX) {
      sv->held[sv->nheld].fd = fd;
      sv->held[sv->nheld++].addr = addr;
    } else {
      close(fd); /* cannot happen: accepting pauses first */
      if (addr) gl_addrs_give(sv->addrs, addr);
      GL_STAT_ADD(sv->rt->stats.errors, 1);
    }
    gl_listener_pause(&sv->l, 1);
    /* a slot freed meanwhile on another worker sent its resume before we
     * paused: look again */
    if (!lg_server_full(sv)) lg_server_resume(sv);
    return;
  }
  lg_served_start(sv, fd, addr);
  if (lg_server_full(sv)) gl_listener_pause(&sv->l, 1);
}

void lg_server_resume(lg_server *sv) {
  if (!sv->open) {
    while (sv->nheld) {
      sv->nheld--;
      close(sv->held[sv->nheld].fd);
      if (sv->held[sv->nheld].addr)
        gl_addrs_give(sv->addrs, sv->held[sv->nheld].addr);
    }
    return;
  }
  while (sv->nheld && claim(sv)) {
    int fd = sv->held[0].fd;
    gl_addr *addr = sv->held[0].addr;
    memmove(sv->held, sv->held + 1, (size_t)--sv->nheld * sizeof sv->held[0]);
    lg_served_start(sv, fd, addr);
  }
  if (!sv->nheld && !lg_server_full(sv)) gl_listener_pause(&sv->l, 0);
}
