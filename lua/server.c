/*
 * server.c: glisten.serve (the acceptor and the life of each served
 * connection) and the low-level glisten.listen / listener:accept flow.
 *
 * One mechanism runs every callback of a served connection: when there is
 * something to do (the connection is new, input or a message arrived, or it
 * ended), the connection takes a fiber from the runtime's pool and runs
 * conn_run on it (conn_unpark, the socket's ready hook): with_init once, then handler for each
 * chunk of input and with_message for each post, one at a time and in order,
 * until nothing is left; then the fiber's function returns and the fiber
 * goes back to the pool. A callback that waits (receive, sleep, ...) keeps
 * the fiber, suspended, until it returns; meanwhile input is buffered (up to
 * the socket's limits) and messages queue in the mailbox, and the same run
 * goes on with them afterwards.
 *
 * So an idle connection holds no coroutine (a suspended one costs about a
 * kilobyte, most of an idle connection's memory), and a callback that does
 * not wait costs one resume of a pooled thread, with no yield.
 *
 * When the connection ends, because the peer closed, the script closed, a
 * timeout, a shutdown or an error, a fiber runs with_close exactly once;
 * then the socket is closed (after flushing) and forgotten.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lg.h"
#include "log.h"
#include "sock.h"

/* --- served connections ----------------------------------------------- */

static void server_unanchor(lg_server *sv) {
  if (sv->ref != LUA_NOREF && !sv->rt->closing)
    luaL_unref(sv->rt->L, LUA_REGISTRYINDEX, sv->ref);
  sv->ref = LUA_NOREF;
}

/* The body of a served connection's fiber, each time it has something to
 * do (see the top of this file): with_init the first time, then, one at a
 * time, with_message for each message and handler for each chunk of input,
 * until nothing is left. Sets s->idle when the connection may get more to
 * do, and clears it once the connection is over (with_close comes next). A
 * callback may wait: the continuation carries on after it. */
static int conn_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = (lg_socket *)ctx;
  lg_server *sv = s->server;
  (void)status;
  lua_settop(L, 0);
  if (!s->started && sv) {
    s->started = 1;
    if (sv->cb[LG_CB_INIT] != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, sv->cb[LG_CB_INIT]);
      lua_rawgeti(L, LUA_REGISTRYINDEX, s->sref);
      lua_callk(L, 1, 0, ctx, conn_k);
    }
  }
  for (;;) {
    gl_conn *c = s->conn;
    if (!c || !sv || s->stop) break;
    if (s->nmail) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, sv->cb[LG_CB_MESSAGE]);
      lg_mail_pop(L, s);
    } else if (c->in.len) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, sv->cb[LG_CB_HANDLER]);
      lg_socket_take(L, s);
    } else {
      s->idle = !s->eof;
      return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->sref);
    lua_callk(L, 2, 0, ctx, conn_k);
    lua_settop(L, 0);
  }
  s->idle = 0;
  return 0;
}

static int conn_run(lua_State *L) {
  return conn_k(L, LUA_OK, (lua_KContext)lua_touserdata(L, 1));
}

/* Closes a served connection that is over and forgets it: its socket, its
 * place in the server, its state table and subscriptions, its slot under
 * max_connections. s has no fiber any more. */
static void conn_release(lg_socket *s, lg_server *sv) {
  lg_socket_close(s, LG_R_LOCAL, LG_LINGER);
  if (sv) {
    if (s->sprev)
      s->sprev->snext = s->snext;
    else
      sv->socks = s->snext;
    if (s->snext) s->snext->sprev = s->sprev;
    s->sprev = s->snext = NULL;
    sv->nconns--;
  }
  s->rt->served--;
  s->owner = NULL;
  s->server = NULL;
  lg_socket_release(s);
  if (!sv) return;
  if (sv->o.max_connections &&
      atomic_fetch_sub(sv->count, 1) >= sv->o.max_connections) {
    /* someone may be waiting for this slot: here, or on another worker */
    lg_server_resume(sv);
    if (sv->share) sv->share->resume(sv->share);
  }
  if (!sv->open && !sv->nconns) {
    ev_timer_stop(sv->rt->loop, &sv->grace);
    server_unanchor(sv);
  }
}

static void conn_finish(lg_fiber *f) {
  lg_socket *s = f->ud;
  lg_server *sv = s->server;
  /* the fiber goes back to the pool first: a connection waiting for a
   * slot under max_connections may take it at once */
  f->ud = NULL;
  s->owner = NULL;
  s->server = NULL; /* so closing does not look for a fiber to run it */
  lg_fiber_pool_put(f);
  conn_release(s, sv);
}

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L, (void)status, (void)ctx;
  return 0;
}

/* The body of a fiber that runs with_close. Stack: the socket (light
 * userdata), the detail: nil, a string, or static text (light userdata).
 * Everything that allocates happens here, inside the fiber's protected
 * run, so running out of memory fails this run and nothing else. */
static int close_run(lua_State *L) {
  lg_socket *s = lua_touserdata(L, 1);
  if (!s->server || s->server->cb[LG_CB_CLOSE] == LUA_NOREF) return 0;
  if (lua_islightuserdata(L, 2))
    lua_pushstring(L, lua_touserdata(L, 2));
  else
    lua_pushvalue(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->server->cb[LG_CB_CLOSE]);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->sref);
  lua_pushstring(L, lg_reason_name(s->reason));
  if (lua_isnil(L, 3)) {
    lua_callk(L, 2, 0, 0, close_k);
  } else {
    lua_pushvalue(L, 3);
    lua_callk(L, 3, 0, 0, close_k);
  }
  return 0;
}

/* Makes f run with_close(state, reason [, detail]), or finishes at once if
 * there is none. f's thread must not be running; what it holds is dropped,
 * but for a detail string on its top when detail_on_top. detail (static
 * text) is used otherwise; NULL: none. Allocates nothing. */
static void start_close(lg_fiber *f, const char *detail, int detail_on_top) {
  lg_socket *s = f->ud;
  lua_State *co = f->th;
  s->in_close = 1;
  if (s->server->cb[LG_CB_CLOSE] == LUA_NOREF) {
    lua_settop(co, 0);
    conn_finish(f);
    return;
  }
  if (detail_on_top) { /* keep it, below the function and the socket */
    lua_insert(co, 1);
    lua_settop(co, 1);
  } else {
    lua_settop(co, 0);
    if (detail)
      lua_pushlightuserdata(co, (void *)detail);
    else
      lua_pushnil(co);
  }
  lua_pushcfunction(co, close_run);
  lua_pushlightuserdata(co, s);
  lua_rotate(co, 1, 2); /* close_run, s, detail */
  lg_fiber_start(f, 2);
}

static void conn_done(lg_fiber *f, int status) {
  lg_socket *s = f->ud;
  lg_rt *rt = f->rt;
  lua_State *co = f->th;
  char what[128], peer[80];
  int described = LUA_OK; /* whether the traceback is on top of co */
  if (status != LUA_OK) {
    lg_socket_peer(s, peer, sizeof peer);
    snprintf(what, sizeof what, "conn %lld (%s): %s", (long long)s->id, peer,
             s->in_close ? "error in with_close" : "script error");
    described = lg_log_error(rt, what, co, status);
  }
  if (s->in_close) {
    conn_finish(f);
    return;
  }
  if (status != LUA_OK) {
    /* the traceback (or, when it could not be made, the error object if
     * it is a string) outlives the reset: on L's stack, moved, not copied */
    lua_State *L = rt->L;
    int keep = lua_type(co, -1) == LUA_TSTRING && lua_checkstack(L, 1);
    if (keep) lua_xmove(co, L, 1);
    lua_resetthread(co);
    if (keep) lua_xmove(L, co, 1);
    s->reason = LG_R_ERROR;
    lg_socket_close(s, LG_R_ERROR, LG_LINGER);
    start_close(f, keep ? NULL
                 : status == LUA_ERRMEM || described == LUA_ERRMEM
                     ? "not enough memory"
                     : "(error object whose __tostring failed)",
                keep);
    return;
  }
  if (s->idle && s->conn) {
    s->owner = NULL; /* idle: the next input or message runs it again */
    f->ud = NULL;
    lg_fiber_pool_put(f);
    return;
  }
  if (!s->reason) s->reason = s->eof ? LG_R_CLOSED : LG_R_LOCAL;
  start_close(f, s->reason == LG_R_ERROR ? s->detail : NULL, 0);
}

/* [-0, +0, m] Gives a parked connection a fiber (from the pool, or new).
 * The new fiber is empty; its thread's stack has room for a few values. */
static lg_fiber *adopt(lua_State *L, lg_socket *s) {
  lg_fiber *f = lg_fiber_pooled(s->rt);
  if (!f) f = lg_fiber_new(L, conn_done);
  f->done = conn_done;
  f->ud = s;
  s->in_close = 0;
  s->owner = f;
  return f;
}

static int adopt_protected(lua_State *L) {
  adopt(L, lua_touserdata(L, 1));
  return 0;
}

/* [-0, +0, -] The socket's ready hook (lg_socket.ready) for a served
 * connection: runs a parked connection's loop again, at once when called
 * from a loop callback, and returns 1; returns 0 when the connection is
 * served no more. Allocates only when the fiber pool is empty. */
static int conn_unpark(lg_socket *s) {
  lg_rt *rt = s->rt;
  lua_State *L = rt->L;
  if (!s->server) return 0;
  if (rt->closing || s->owner) return 1;
  if (!rt->fpool) {
    lua_pushcfunction(L, adopt_protected);
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      /* out of memory: no fiber can run its callbacks, with_close either */
      lg_server *sv = s->server;
      GL_STAT_ADD(rt->stats.errors, 1);
      lg_log_flood(rt, LG_FLOOD_UNPARK,
                   "conn %lld: cannot run its callbacks: %s",
                   (long long)s->id, lua_tostring(L, -1));
      lua_pop(L, 1);
      s->server = NULL; /* so closing does not come back here */
      s->reason = LG_R_ERROR;
      s->detail = "not enough memory";
      lg_socket_close(s, LG_R_ERROR, 0);
      conn_release(s, sv);
      return 1;
    }
  } else {
    adopt(L, s);
  }
  lg_fiber *f = s->owner;
  lua_pushcfunction(f->th, conn_run);
  lua_pushlightuserdata(f->th, s);
  lg_fiber_go(f, 1);
  return 1;
}

/* Ends a served connection for a shutdown: the callback in progress, if
 * suspended, is cut short (its pending to-be-closed variables are closed),
 * then with_close(state, "shutdown") runs while the socket is still open, so
 * it can say goodbye; the socket is flushed and closed after it. A fiber
 * already in with_close is cut short. A running fiber (the caller itself)
 * ends its run when the callback in progress returns. */
static int shutdown_parked(lua_State *L) {
  lg_socket *s = lua_touserdata(L, 1);
  start_close(adopt(L, s), NULL, 0);
  return 0;
}

static void conn_shutdown(lg_socket *s) {
  lg_fiber *f = s->owner;
  if (!s->reason) s->reason = LG_R_SHUTDOWN;
  if (!f && s->conn) { /* parked: run with_close now, socket still open */
    lua_State *L = s->rt->L;
    lua_pushcfunction(L, shutdown_parked);
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) return;
    lua_pop(L, 1);
  }
  if (f && !s->in_close && lg_fiber_kill(f)) {
    start_close(f, s->reason == LG_R_ERROR ? s->detail : NULL, 0);
    return;
  }
  if (f && s->in_close && f->waiting && lg_fiber_kill(f)) {
    conn_finish(f);
    return;
  }
  if (f) {
    /* Its fiber is running: the shutdown comes from its own callback. The
     * run ends when that callback returns, and with_close follows with the
     * socket still open (or, already in with_close, the socket closes after
     * it), so it can say goodbye as any other. Should the callback wait
     * instead, the server's timer comes back for it after LG_LINGER. */
    lg_server *sv = s->server;
    s->stop = 1;
    if (sv && !ev_is_active(&sv->grace)) {
      ev_timer_set(&sv->grace, LG_LINGER, 0.);
      ev_timer_start(sv->rt->loop, &sv->grace);
    }
    return;
  }
  lg_socket_close(s, LG_R_SHUTDOWN, LG_LINGER);
}

static void shutdown_all(lg_server *sv) {
  lg_socket *s, *next;
  sv->rt->defer++;
  for (s = sv->socks; s; s = next) {
    next = s->snext;
    conn_shutdown(s);
  }
  sv->rt->defer--;
}

static void on_grace(EV_P_ ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  shutdown_all(w->data);
}

/* Stops sv accepting and takes it off the runtime's list of servers. */
static void server_unlist(lg_server *sv) {
  gl_listener_close(&sv->l);
  sv->open = 0;
  for (lg_server **p = &sv->rt->servers; *p; p = &(*p)->next)
    if (*p == sv) {
      *p = sv->next;
      break;
    }
}

/* Stops accepting at once; open connections are closed with "shutdown"
 * after grace seconds (0: now). */
static void server_stop(lg_server *sv, double grace) {
  lg_rt *rt = sv->rt;
  if (sv->open) {
    server_unlist(sv);
    lg_server_resume(sv); /* closes what was parked */
  }
  if (!sv->nconns) {
    server_unanchor(sv);
    return;
  }
  if (grace > 0) {
    if (!ev_is_active(&sv->grace)) {
      ev_timer_set(&sv->grace, grace, 0.);
      ev_timer_start(rt->loop, &sv->grace);
    }
  } else {
    ev_timer_stop(rt->loop, &sv->grace);
    shutdown_all(sv);
  }
}

typedef struct accept_ctx {
  lg_server *sv;
  int fd;
  lg_socket *s; /* once made */
} accept_ctx;

/* [-0, +0, m] The protected part of serving a new connection. */
static int serve_conn(lua_State *L) {
  accept_ctx *a = lua_touserdata(L, 1);
  lg_server *sv = a->sv;
  lg_rt *rt = sv->rt;
  lg_socket *s = lg_socket_new(L, rt, NULL); /* 2 */
  lg_socket_anchor(L, s);
  a->s = s;
  lg_socket_limits(s, &sv->o);
  lua_createtable(L, 0, 2); /* 3: state */
  lua_pushvalue(L, 2);
  lua_setfield(L, 3, "socket");
  s->sref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->server = sv;
  s->ready = conn_unpark;
  lg_fiber *f = adopt(L, s); /* its first run calls with_init */
  lua_pushcfunction(f->th, conn_run);
  lua_pushlightuserdata(f->th, s);
  lg_fiber_start(f, 1);
  gl_conn *c = gl_conn_new(&rt->env, a->fd, 0, &lg_socket_cbs, NULL);
  a->fd = -1; /* gl_conn_new owns it now, even when it fails */
  s->snext = sv->socks;
  if (s->snext) s->snext->sprev = s;
  sv->socks = s;
  sv->nconns++;
  rt->served++;
  if (!c) return lg_nomem(L);
  lg_socket_attach(s, c);
  gl_conn_set_idle(c, sv->o.idle_timeout);
  return 0;
}

/* Serves fd, an accepted connection that holds a slot. */
static void serve_fd(lg_server *sv, int fd) {
  lg_rt *rt = sv->rt;
  lua_State *L = rt->L;
  accept_ctx a = {sv, fd, NULL};
  lua_pushcfunction(L, serve_conn);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    GL_STAT_ADD(rt->stats.errors, 1);
    lg_log_flood(rt, LG_FLOOD_SERVE, "cannot serve a new connection: %s",
                 lua_tostring(L, -1));
    lua_pop(L, 1);
    if (a.fd >= 0) close(a.fd);
    if (a.s && a.s->owner) {
      lg_fiber *f = a.s->owner;
      lg_fiber_kill(f);
      conn_finish(f);
    } else {
      if (a.s) lg_socket_release(a.s);
      if (sv->o.max_connections) atomic_fetch_sub(sv->count, 1);
    }
  }
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

static int full(lg_server *sv) {
  return sv->o.max_connections &&
         atomic_load(sv->count) >= sv->o.max_connections;
}

/* Past max_connections the server stops accepting; a connection accepted
 * meanwhile (by a race between workers) is parked, not dropped, and served
 * when a slot frees. */
static void on_accept(gl_listener *l, int fd) {
  lg_server *sv = l->data;
  if (sv->nparked || !claim(sv)) {
    if (sv->nparked < LG_PARK_MAX) {
      sv->parked[sv->nparked++] = fd;
    } else {
      close(fd); /* cannot happen: accepting pauses first */
      GL_STAT_ADD(sv->rt->stats.errors, 1);
    }
    gl_listener_pause(&sv->l, 1);
    /* a slot freed meanwhile on another worker sent its resume before we
     * paused: look again */
    if (!full(sv)) lg_server_resume(sv);
    return;
  }
  serve_fd(sv, fd);
  if (full(sv)) gl_listener_pause(&sv->l, 1);
}

/* Serves parked connections while slots are free, then accepts again if
 * there is room. */
void lg_server_resume(lg_server *sv) {
  if (!sv->open) {
    while (sv->nparked) close(sv->parked[--sv->nparked]);
    return;
  }
  while (sv->nparked && claim(sv)) {
    int fd = sv->parked[0];
    memmove(sv->parked, sv->parked + 1, (size_t)--sv->nparked * sizeof(int));
    serve_fd(sv, fd);
  }
  if (!sv->nparked && !full(sv)) gl_listener_pause(&sv->l, 0);
}

/* [-0, +0, e] Caps this state's memory at limit bytes (max_memory), or
 * raises. */
void lg_limit_memory(lua_State *L, size_t limit) {
  int rc = lg_setlimit(L, limit);
  if (rc == -1)
    luaL_error(L, "option 'max_memory': only the Lua states glisten-lua "
                  "creates can be capped (the command's and each worker's)");
  if (rc == -2)
    luaL_error(L, "option 'max_memory': the state already holds more than "
                  "%I bytes", (LUAI_UACINT)limit);
}

/* [-0, +1|2, e] Serves the options table at idx (validated; handler
 * required); share, when given, is what this worker shares with the rest
 * of its pool: the socket is bound with SO_REUSEPORT and max_connections
 * counts across the pool. Pushes the server, or nil and a message. */
int lg_serve(lua_State *L, int idx, const lg_share *share) {
  lg_rt *rt = lg_rt_get(L);
  lg_opts o;
  char err[GL_ERRLEN];
  const char *const *cbs = lg_callback_names;
  idx = lua_absindex(L, idx);
  rt->started_work = 1;
  lg_opts_read(L, idx, &o, LG_IN_SERVE);
  if (o.max_memory) lg_limit_memory(L, o.max_memory);
  lua_createtable(L, 0, 4); /* handlers */
  int h = lua_gettop(L);
  for (const char *const *k = cbs; *k; k++) {
    int t = lua_getfield(L, idx, *k);
    if (t == LUA_TNIL && k == cbs)
      return luaL_error(L, "glisten.serve: 'handler' is required");
    if (t != LUA_TNIL && t != LUA_TFUNCTION)
      return luaL_error(L, "glisten.serve: '%s' must be a function", *k);
    lua_setfield(L, h, *k);
  }
  lg_server *sv = lua_newuserdatauv(L, sizeof *sv, 1);
  int svi = lua_gettop(L);
  memset(sv, 0, sizeof *sv);
  for (int i = 0; i < LG_NCB; i++) sv->cb[i] = LUA_NOREF;
  sv->rt = rt;
  sv->l.fd = -1;
  sv->ref = LUA_NOREF;
  sv->o = o;
  snprintf(sv->host, sizeof sv->host, "%s", o.host);
  sv->o.host = sv->host;
  sv->o.script = NULL;
  atomic_init(&sv->own_count, 0);
  sv->count = share ? share->count : &sv->own_count;
  sv->share = share;
  ev_timer_init(&sv->grace, on_grace, 0., 0.);
  sv->grace.data = sv;
  luaL_setmetatable(L, LG_SERVER);
  lua_pushvalue(L, h);
  lua_setiuservalue(L, svi, 1);
  for (int i = 0; i < LG_NCB; i++) /* the order of LG_CB_* */
    if (lua_getfield(L, h, cbs[i]) == LUA_TFUNCTION)
      sv->cb[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    else
      lua_pop(L, 1);
  if (gl_listener_open(&sv->l, rt->loop, sv->host, o.port, o.backlog,
                       share ? GL_LISTEN_REUSEPORT : 0, on_accept, sv, err,
                       sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  sv->l.stats = &rt->stats;
  sv->open = 1;
  lua_pushvalue(L, svi);
  sv->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sv->next = rt->servers;
  rt->servers = sv;
  if (full(sv)) gl_listener_pause(&sv->l, 1);
  return 1;
}

static lg_server *check_server(lua_State *L) {
  return luaL_checkudata(L, 1, LG_SERVER);
}

/* server:close([grace]) */
static int server_close(lua_State *L) {
  lg_server *sv = check_server(L);
  double grace = lg_opt_seconds(L, 2, 0);
  server_stop(sv, grace);
  return 0;
}

static int server_index(lua_State *L) {
  lg_server *sv = check_server(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "port") == 0)
    lua_pushinteger(L, sv->l.port);
  else if (strcmp(k, "host") == 0)
    lua_pushstring(L, sv->host);
  else if (strcmp(k, "connections") == 0)
    lua_pushinteger(L, sv->nconns);
  else if (strcmp(k, "close") == 0)
    lua_pushcfunction(L, server_close);
  else
    lua_pushnil(L);
  return 1;
}

static int server_tostring(lua_State *L) {
  lg_server *sv = check_server(L);
  lua_pushfstring(L, "glisten.server (%s:%d%s)", sv->host, sv->l.port,
                  sv->open ? "" : ", closed");
  return 1;
}

static int server_gc(lua_State *L) {
  lg_server *sv = lua_touserdata(L, 1);
  if (!sv->rt->loop) return 0;
  for (int i = 0; i < LG_NCB; i++) {
    if (sv->cb[i] != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, sv->cb[i]);
    sv->cb[i] = LUA_NOREF;
  }
  ev_timer_stop(sv->rt->loop, &sv->grace);
  if (sv->open) server_unlist(sv);
  return 0;
}

/* --- the low-level flow: listen and accept --------------------------- */

#define PENDING_MAX 16

typedef struct lg_lsock {
  lg_rt *rt;
  gl_listener l;
  lg_waitq aq;
  int pending[PENDING_MAX];
  int npending;
  char host[64];
  lg_opts o; /* limits of the sockets it accepts; o.host is host */
} lg_lsock;

static void lsock_update(lg_lsock *ls) {
  gl_listener_pause(&ls->l, !ls->aq.head || ls->npending >= PENDING_MAX);
}

static void on_lsock_accept(gl_listener *l, int fd) {
  lg_lsock *ls = l->data;
  if (ls->npending >= PENDING_MAX) {
    close(fd); /* cannot happen: accepting pauses first */
    return;
  }
  ls->pending[ls->npending++] = fd;
  lsock_update(ls);
  /* through the ready queue: no Lua may run (and free ls) inside on_io */
  ls->rt->defer++;
  if (ls->aq.head) lg_wake(ls->aq.head, LG_WAKE_EVENT);
  ls->rt->defer--;
}

static int accept_k(lua_State *L, int status, lua_KContext ctx) {
  lg_lsock *ls = lua_touserdata(L, 1);
  double deadline = lua_tonumber(L, 3);
  int why = lg_woken(ctx);
  (void)status;
  for (;;) {
    if (ls->npending) {
      /* the socket object before taking the descriptor: should Lua run out
       * of memory, the descriptor is still pending, not lost */
      lg_socket *s = lg_socket_new(L, ls->rt, NULL);
      int fd = ls->pending[0];
      gl_conn *c;
      memmove(ls->pending, ls->pending + 1,
              (size_t)--ls->npending * sizeof(int));
      lsock_update(ls);
      lg_socket_limits(s, &ls->o);
      c = gl_conn_new(&ls->rt->env, fd, 0, &lg_socket_cbs, NULL);
      if (!c) return lg_nomem(L); /* gl_conn_new closed fd */
      lg_socket_attach(s, c);
      return 1;
    }
    if (ls->l.fd < 0) return lg_fail(L, LG_FAIL_CLOSED, NULL);
    if (why == LG_WAKE_TIMEOUT) {
      lsock_update(ls);
      return lg_fail(L, LG_FAIL_TIMEOUT, NULL);
    }
    gl_listener_pause(&ls->l, 0);
    why = lg_wait(L, &ls->aq, deadline, accept_k);
    lsock_update(ls);
  }
}

/* listener:accept([timeout]) -> socket | nil, "timeout" | nil, "closed" */
static int lsock_accept(lua_State *L) {
  lg_lsock *ls = luaL_checkudata(L, 1, LG_LISTENER);
  double t = lg_opt_seconds(L, 2, -1);
  lua_settop(L, 2);
  lua_pushnumber(L, lg_deadline(ls->rt, t));
  return accept_k(L, LUA_OK, 0);
}

static int lsock_close(lua_State *L) {
  lg_lsock *ls = luaL_checkudata(L, 1, LG_LISTENER);
  gl_listener_close(&ls->l);
  while (ls->npending) close(ls->pending[--ls->npending]);
  lg_wake_all(&ls->aq);
  return 0;
}

static int lsock_gc(lua_State *L) {
  lg_lsock *ls = lua_touserdata(L, 1);
  if (ls->rt->loop) gl_listener_close(&ls->l);
  while (ls->npending) close(ls->pending[--ls->npending]);
  for (lg_fiber *f = ls->aq.head; f; f = f->next) f->q = NULL;
  return 0;
}

static int lsock_index(lua_State *L) {
  lg_lsock *ls = luaL_checkudata(L, 1, LG_LISTENER);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "port") == 0)
    lua_pushinteger(L, ls->l.port);
  else if (strcmp(k, "host") == 0)
    lua_pushstring(L, ls->host);
  else if (strcmp(k, "accept") == 0)
    lua_pushcfunction(L, lsock_accept);
  else if (strcmp(k, "close") == 0)
    lua_pushcfunction(L, lsock_close);
  else
    lua_pushnil(L);
  return 1;
}

/* glisten.listen(port [, host | {host=, backlog=, max_line=, max_receive=,
 * max_output=}]) -> listener | nil, err */
static int glisten_listen(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  lua_Integer port = luaL_checkinteger(L, 1);
  lg_opts o;
  char err[GL_ERRLEN];
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port out of range");
  rt->started_work = 1;
  if (lua_type(L, 2) == LUA_TTABLE) {
    lg_opts_read(L, 2, &o, LG_IN_LISTEN);
  } else {
    o = lg_defaults;
    if (!lua_isnoneornil(L, 2)) o.host = luaL_checkstring(L, 2);
  }
  const char *host = o.host;
  int backlog = o.backlog;
  lg_lsock *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  memset(ls, 0, sizeof *ls);
  ls->rt = rt;
  ls->l.fd = -1;
  snprintf(ls->host, sizeof ls->host, "%s", host);
  ls->o = o;
  ls->o.host = ls->host;
  luaL_setmetatable(L, LG_LISTENER);
  if (gl_listener_open(&ls->l, rt->loop, host, (int)port, backlog, 0,
                       on_lsock_accept, ls, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  ls->l.stats = &rt->stats;
  lsock_update(ls);
  return 1;
}

static const luaL_Reg server_funcs[] = {{"listen", glisten_listen},
                                        {NULL, NULL}};

/* The runtime's hooks (lg_rt_hooks): a shutdown closes every server with
 * the grace; it waits for every served connection to end; at teardown the
 * listeners close and no grace timer is left on the loop. */
static void servers_shutdown(lg_rt *rt, double grace) {
  while (rt->servers) server_stop(rt->servers, grace);
}

static long servers_busy(lg_rt *rt) { return rt->served; }

static void servers_teardown(lg_rt *rt) {
  for (lg_server *sv = rt->servers; sv; sv = sv->next) {
    gl_listener_close(&sv->l);
    ev_timer_stop(rt->loop, &sv->grace);
  }
}

/* [-0, +0, m] Registers the server and listener types, and adds listen to
 * the module table on top (pool.c adds serve, which serves with lg_serve
 * or a pool). */
int lg_server_open(lua_State *L) {
  static const lg_rt_hooks hooks = {servers_shutdown, servers_busy,
                                    servers_teardown};
  lg_rt_hook(lg_rt_get(L), &hooks);
  luaL_newmetatable(L, LG_SERVER);
  lua_pushcfunction(L, server_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, server_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, server_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LG_LISTENER);
  lua_pushcfunction(L, lsock_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lsock_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_setfuncs(L, server_funcs, 0);
  return 0;
}
