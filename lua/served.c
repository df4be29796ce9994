/*
 * served.c: the life of a served connection.
 *
 * One mechanism runs every callback of a served connection: when there is
 * something to do (the connection is new, input or a message arrived, or it
 * ended), the connection takes a fiber (a spare one, or new) and runs
 * conn_run on it (served_wake, the socket's ready hook): with_init once,
 * then handler for each message of input (a chunk as it arrived, a line or
 * a packet: the socket's packet mode) and with_message for each post, one
 * at a time and in order, until nothing is left; then the fiber's function
 * returns and the fiber is kept as a spare. A callback that waits (receive,
 * sleep, ...) keeps the fiber, suspended, until it returns; meanwhile input
 * is buffered (up to the socket's limits) and messages queue in the mailbox,
 * and the same run goes on with them afterwards.
 *
 * So an idle connection holds no coroutine (a suspended one costs about a
 * kilobyte, most of an idle connection's memory), and a callback that does
 * not wait costs one resume of a spare thread, with no yield.
 *
 * When the connection ends, because the peer closed, the script closed, a
 * timeout, a shutdown or an error, a fiber runs with_close exactly once;
 * then the socket is closed (after flushing) and forgotten.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "served.h"
#include "state.h"

/* The body of a served connection's fiber, each time it has something to
 * do (see the top of this file): with_init the first time, then, one at a
 * time, with_message for each message and handler for each chunk of input,
 * until nothing is left. Sets s->idle when the connection may get more to
 * do, and clears it once the connection is over (with_close comes next). A
 * callback may wait: the continuation carries on after it.
 * Stack: conn_run's argument, and nothing else between callbacks: a call
 * takes all that was pushed for it, returns nothing, and a continuation
 * finds the stack as it was below the function; so no lua_settop per
 * message. */
static int conn_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = (lg_socket *)ctx;
  lg_server *sv = s->server;
  (void)status;
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
      int r;
      lua_rawgeti(L, LUA_REGISTRYINDEX, sv->cb[LG_CB_HANDLER]);
      if ((r = lg_socket_next(L, s)) <= 0) {
        if (r < 0) { /* a message past its limit: the connection fails */
          s->detail = s->packet == LG_PACKET_LINE
                          ? "line longer than max_line"
                          : "packet longer than max_receive";
          lg_socket_close(s, LG_R_ERROR, LG_LINGER);
          break;
        }
        if (s->eof) { /* the rest of a packet never comes: dropped, and
                       * with_close runs as for any "closed", the socket
                       * still open for a last answer */
          s->reason = LG_R_CLOSED;
          s->detail = "peer closed in the middle of a packet";
          gl_conn_consume(c, c->in.len);
          break;
        }
        s->idle = 1; /* until the rest of the message arrives */
        return 0;
      }
    } else {
      s->idle = !s->eof;
      return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->sref);
    lua_callk(L, 2, 0, ctx, conn_k);
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
    sv->all->served--;
    if (s->addr) gl_addrs_give(sv->addrs, s->addr);
    s->addr = NULL;
  }
  s->owner = NULL;
  s->server = NULL;
  lg_socket_release(s);
  if (!sv) return;
  lg_server_give_slot(sv, NULL);
  if (!sv->open && !sv->nconns) {
    ev_timer_stop(sv->rt->loop, &sv->grace);
    lg_server_unanchor(sv);
  }
}

static void conn_finish(lg_fiber *f) {
  lg_socket *s = f->ud;
  lg_server *sv = s->server;
  /* the fiber is a spare first: a connection waiting for a slot under
   * max_connections may take it at once */
  f->ud = NULL;
  s->owner = NULL;
  s->server = NULL; /* so closing does not look for a fiber to run it */
  if (s->reserve) lg_reserve(s->rt->L, 0);
  s->reserve = 0;
  lg_fiber_retire(f);
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
  char what[GL_NAMELEN + 96], peer[GL_NAMELEN + 48]; /* unix:PATH pid N uid N */
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
    /* out of memory: with_close may go past max_memory by a reserve, so
     * it can finish while the state still holds what filled it */
    if ((status == LUA_ERRMEM || described == LUA_ERRMEM ||
         (keep && strstr(lua_tostring(co, -1), "not enough memory"))) &&
        lg_reserve(L, 1))
      s->reserve = 1;
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
    lg_fiber_retire(f);
    return;
  }
  if (!s->reason) s->reason = s->eof ? LG_R_CLOSED : LG_R_LOCAL;
  /* "error" says why; so does "closed" for a TLS stream cut short */
  start_close(f, s->reason == LG_R_ERROR || s->reason == LG_R_CLOSED
                     ? s->detail : NULL, 0);
}

/* [-0, +0, m] Gives an idle connection a fiber (a spare, or new).
 * The new fiber is empty; its thread's stack has room for a few values. */
static void adopt_fiber(lg_socket *s, lg_fiber *f) {
  f->done = conn_done;
  f->ud = s;
  s->in_close = 0;
  s->owner = f;
}

static lg_fiber *adopt(lua_State *L, lg_socket *s) {
  lg_fiber *f = lg_fiber_spare(s->rt);
  if (!f) f = lg_fiber_new(L, conn_done);
  adopt_fiber(s, f);
  return f;
}

static int adopt_protected(lua_State *L) {
  adopt(L, lua_touserdata(L, 1));
  return 0;
}

/* [-0, +0, -] The socket's ready hook (lg_socket.ready) for a served
 * connection: runs an idle connection's callbacks again, at once when
 * called from a loop callback, and returns 1; returns 0 when the
 * connection is served no more. Allocates only when no spare fiber is
 * left. */
static int served_wake(lg_socket *s) {
  lg_rt *rt = s->rt;
  lua_State *L = rt->L;
  if (!s->server) return 0;
  if (rt->closing || s->owner) return 1;
  lg_fiber *f = lg_fiber_spare(rt);
  if (!f) {
    lua_pushcfunction(L, adopt_protected);
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      /* out of memory: no fiber can run its callbacks, with_close either */
      lg_server *sv = s->server;
      GL_STAT_ADD(rt->stats.errors, 1);
      lg_log_flood(rt, &sv->all->run_failed,
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
    adopt_fiber(s, f);
  }
  f = s->owner;
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
static int shutdown_idle(lua_State *L) {
  lg_socket *s = lua_touserdata(L, 1);
  start_close(adopt(L, s), NULL, 0);
  return 0;
}

static void conn_shutdown(lg_socket *s) {
  lg_fiber *f = s->owner;
  if (!s->reason) s->reason = LG_R_SHUTDOWN;
  if (!f && s->conn) { /* idle: run with_close now, socket still open */
    lua_State *L = s->rt->L;
    lua_pushcfunction(L, shutdown_idle);
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

void lg_served_shutdown_all(lg_server *sv) {
  lg_socket *s, *next;
  lg_defer_begin(sv->rt);
  for (s = sv->socks; s; s = next) {
    next = s->snext;
    conn_shutdown(s);
  }
  lg_defer_end(sv->rt);
}

typedef struct accept_ctx {
  lg_server *sv;
  int fd;          /* an accepted descriptor, or -1 and: */
  gl_conn *conn;   /* a connection through its prelude (prelude.c) */
  void *proxy;     /* its PROXY header, or NULL */
  gl_addr *addr;
  lg_socket *s; /* once made */
} accept_ctx;

/* The socket's upgrade hook (socket.h): its server's TLS settings for
 * starttls. */
static gl_tls *served_upgrade(lg_socket *s, void **ud) {
  lg_server *sv = s->server;
  if (!sv || !sv->tls) return NULL;
  gl_tls_ref(sv->tls);
  *ud = sv->tlsfns;
  return sv->tls;
}

/* [-0, +0, m] The protected part of serving a new connection. */
static int serve_conn(lua_State *L) {
  accept_ctx *a = lua_touserdata(L, 1);
  lg_server *sv = a->sv;
  lg_rt *rt = sv->rt;
  lg_socket *s = lg_socket_new(L, rt, NULL); /* 2 */
  lg_socket_anchor(L, s);
  a->s = s;
  s->addr = a->addr;
  lg_socket_limits(s, &sv->o);
  lua_createtable(L, 0, 2); /* 3: state */
  lua_pushvalue(L, 2);
  lua_setfield(L, 3, "socket");
  s->sref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->server = sv;
  s->ready = served_wake;
  s->upgrade = served_upgrade;
  s->inbound = 1;
  lg_fiber *f = adopt(L, s); /* its first run calls with_init */
  lua_pushcfunction(f->th, conn_run);
  lua_pushlightuserdata(f->th, s);
  lg_fiber_start(f, 1);
  gl_conn *c = a->conn;
  if (c) { /* handed over from its prelude */
    c->cbs = &lg_socket_cbs;
    c->data = NULL;
    s->proxy = a->proxy;
    a->conn = NULL;
    a->proxy = NULL;
  } else {
    c = gl_conn_new(&rt->env, a->fd, 0, &lg_socket_cbs, NULL);
    a->fd = -1; /* gl_conn_new owns it now, even when it fails */
  }
  s->snext = sv->socks;
  if (s->snext) s->snext->sprev = s;
  sv->socks = s;
  sv->nconns++;
  sv->all->served++;
  if (!c) return lg_nomem(L);
  lg_socket_attach(s, c);
  gl_conn_set_idle(c, sv->o.idle_timeout);
  return 0;
}

/* Serves fd, or c once through its prelude (with its PROXY header, or
 * NULL): the connection's socket, state table and first run. */
static void serve(lg_server *sv, int fd, gl_conn *c, void *proxy,
                  gl_addr *addr) {
  lg_rt *rt = sv->rt;
  lua_State *L = rt->L;
  accept_ctx a = {sv, fd, c, proxy, addr, NULL};
  lua_pushcfunction(L, serve_conn);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    GL_STAT_ADD(rt->stats.errors, 1);
    lg_log_flood(rt, &sv->all->serve_failed,
                 "cannot serve a new connection: %s",
                 lua_tostring(L, -1));
    lua_pop(L, 1);
    if (a.fd >= 0) close(a.fd);
    if (a.conn) { /* closed as a connection no one owns */
      a.conn->cbs = &lg_socket_cbs;
      a.conn->data = NULL;
      gl_conn_close(a.conn, GL_CLOSE_LOCAL, 0);
    }
    free(a.proxy);
    if (a.s && a.s->owner) {
      lg_fiber *f = a.s->owner;
      lg_fiber_kill(f);
      conn_finish(f);
    } else {
      if (a.s) lg_socket_release(a.s);
      lg_server_give_slot(sv, addr);
    }
  }
}

void lg_served_start(lg_server *sv, int fd, gl_addr *addr) {
  if ((sv->tls && !sv->o.starttls) || sv->o.proxy_protocol)
    lg_prelude_start(sv, fd, addr);
  else
    serve(sv, fd, NULL, NULL, addr);
}

void lg_served_adopt(lg_server *sv, gl_conn *c, void *proxy, gl_addr *addr) {
  serve(sv, -1, c, proxy, addr);
}
