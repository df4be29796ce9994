/*
 * server.h: glisten.serve's server in one state, the layer above sockets:
 * the server object (server.c), the life of each served connection
 * (served.c), the acceptor that keeps max_connections (acceptor.c), and
 * the mailbox of a served connection (mailbox.c); served.h joins them.
 * glisten.listen's low-level flow is in listen.c.
 */
#ifndef LG_SERVER_H
#define LG_SERVER_H

#include <stdatomic.h>

#include "addrs.h"
#include "listener.h"
#include "socket.h"
#include "tls.h"

#define LG_SERVER "glisten.server"
#define LG_HOLD_MAX 64 /* accepted connections held for a free slot */

typedef struct lg_server lg_server;

/* The servers' part of a runtime. */
typedef struct lg_servers {
  lg_server *list; /* open servers */
  long served;     /* served connections whose fiber has not finished */
  lg_flood serve_failed, run_failed; /* no memory to serve one; to run one */
  lg_flood tls_failed, proxy_failed; /* a handshake, a PROXY header failed */
} lg_servers;

/* What the server of a pool's worker shares with the other workers: the
 * count max_connections limits, and how to wake them when a slot frees
 * (the pool, a higher layer, fills it in). */
typedef struct lg_share {
  atomic_long *count;
  gl_addrs *addrs; /* max_connections_per_address, when set */
  int fd; /* a Unix socket worker 1 listens on, which the others listen on
             copies of (-1: none, or this is worker 1) */
  void (*resume)(const struct lg_share *sh);
  void *pool;
  /* The pool's TLS context: worker 1 makes it (and keeps a reference
   * here) before the others start, and they serve with it, so one session
   * cache and one set of ticket keys serve the whole pool. */
  gl_tls **tls;
} lg_share;

/* A server's callbacks, as registry refs (LUA_NOREF: not given). */
enum { LG_CB_HANDLER, LG_CB_INIT, LG_CB_CLOSE, LG_CB_MESSAGE, LG_NCB };

struct lg_server {
  lg_rt *rt;
  lg_servers *all;
  int cb[LG_NCB];
  gl_listener l;
  int open;     /* accepting (listener open) */
  int ref;      /* anchor while open or while connections remain */
  lg_opts o;
  char host[64];
  long nconns;
  lg_socket *socks; /* live connections */
  ev_timer grace;   /* close(grace) deadline */
  lg_server *next;  /* in all->list */
  atomic_long own_count; /* open connections, when no pool shares a count */
  atomic_long *count;    /* the count max_connections limits */
  const lg_share *share;  /* set when it serves as a pool's worker */
  struct {
    int fd;
    gl_addr *addr; /* its place under max_connections_per_address */
  } held[LG_HOLD_MAX];    /* accepted past max_connections, not yet served */
  int nheld;
  gl_addrs *addrs;        /* max_connections_per_address: the pool's, or */
  gl_addrs *own_addrs;    /* this server's own */
  gl_tls *tls;            /* serving TLS: the context of new connections */
  struct lg_tls_fns *tlsfns; /* its sni and alpn functions, or NULL */
  struct lg_pre *pres;    /* connections before their script (prelude.c) */
  long npre;
};

/* [-0, +1|2, e] Serves the options table at idx (validated; handler
 * required): on host and port, or on the Unix socket path. share, when
 * given, is what this worker shares with the rest of its pool: a TCP
 * socket is bound with SO_REUSEPORT, a Unix one is share->fd's copy when
 * there is one, and max_connections counts across the pool. Pushes the
 * server, or nil and a message. */
int lg_serve(lua_State *L, int idx, const lg_share *share);

/* Serves held connections while slots are free, then accepts again if
 * there is room; a closed server closes what it held. A pool's worker
 * calls it when a slot frees on another worker. */
void lg_server_resume(lg_server *sv);

/* The open servers of rt, linked by next. */
lg_server *lg_servers_of(lg_rt *rt);

/* [-0, +0, e] Caps this state's memory at limit bytes (max_memory), or
 * raises. */
void lg_limit_memory(lua_State *L, size_t limit);

/* [-0, +0, m] Registers the server and listener types, and adds listen to
 * the module table on top (pool.c adds serve, which serves with lg_serve
 * or a pool). */
int lg_server_open(lua_State *L);

/* [-0, +0, e] Decodes a message (p, len: value.c's encoding)
 * into the mailbox of the served connection id of this state. Returns -1
 * on success, else the failure (LG_FAIL_*) that kept it out. */
int lg_mail_deliver(lua_State *L, lua_Integer id, const char *p, size_t len);

#endif
