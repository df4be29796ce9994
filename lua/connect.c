/*
 * connect.c: glisten.connect, the outbound socket: a name looked up off
 * the loop's thread (core/resolve.c), then each of its addresses tried in
 * turn until one accepts.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "connect.h"
#include "gl.h"
#include "resolve.h"
#include "sock.h"
#include "socket.h"
#include "tlsctx.h"

/* The outbound part of a runtime: name lookups, made on first use. */
typedef struct connects {
  gl_resolver *resolver;
} connects;

/* The runtime's teardown: waits for lookups still running. */
static void connects_teardown(lg_rt *rt, void *self) {
  connects *cs = self;
  (void)rt;
  gl_resolver_free(cs->resolver);
  cs->resolver = NULL;
}

static const lg_rt_hooks connect_hooks = {NULL, NULL, connects_teardown};

/* What one connect works through: the addresses of its host (from a lookup
 * off the loop's thread, or at once for a numeric host) and the next one to
 * try. A to-be-closed userdata on the connecting coroutine's stack, so a
 * connect that ends in any way, its coroutine killed included (which closes
 * pending to-be-closed values), cancels a lookup still in flight at once. */
typedef struct attempt {
  lg_rt *rt;
  gl_lookup *q; /* in flight, or NULL */
  struct addrinfo *addrs, *next;
  lg_waitq wq; /* the connecting fiber, while the lookup runs */
  int tried;   /* an address was tried (a failure counts in stats) */
  int tls;     /* 1: wants TLS; 2: its handshake started */
  char err[GL_ERRLEN]; /* why the last address failed */
} attempt;

static char ATTEMPT_MT_KEY;

static void attempt_end(attempt *a) {
  if (a->q) gl_lookup_cancel(a->q);
  a->q = NULL;
  if (a->addrs) freeaddrinfo(a->addrs);
  a->addrs = a->next = NULL;
}

static int attempt_close(lua_State *L) {
  attempt_end(lua_touserdata(L, 1));
  return 0;
}

static int attempt_gc(lua_State *L) {
  attempt *a = lua_touserdata(L, 1);
  attempt_end(a);
  lg_waitq_orphan(&a->wq);
  return 0;
}

static void on_lookup(gl_lookup *q) {
  attempt *a = q->data;
  a->q = NULL;
  a->addrs = a->next = q->addrs;
  q->addrs = NULL; /* a owns them now */
  if (!a->addrs) snprintf(a->err, sizeof a->err, "%s", q->err);
  lg_wake_all(&a->wq);
}

/* Stack: host, port, timeout or options, the socket object, its handle,
 * deadline, the attempt, and with TLS the tls option and the box of its
 * context (tlsctx.h). One
 * deadline covers the lookup, every address tried and the handshake. */
static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = lua_touserdata(L, 5);
  double deadline = lua_tonumber(L, 6);
  attempt *a = lua_touserdata(L, 7);
  int why = lg_woken(ctx);
  (void)status;
  for (;;) {
    if (why == LG_WAKE_TIMEOUT) {
      lg_socket_close(s, LG_R_LOCAL, 0);
      attempt_end(a);
      return lg_fail(L, LG_FAIL_TIMEOUT, NULL);
    }
    if (a->q) { /* the lookup is still running */
      why = lg_wait(L, &a->wq, deadline, connect_k);
      continue;
    }
    if (s->conn) {
      gl_conn *c = s->conn;
      if (a->tls == 1 && !(c->flags & GL_CONN_CONNECTING)) {
        /* connected: TLS on it, with the context at 9 */
        gl_tls *t = *(gl_tls **)lua_touserdata(L, 9);
        const char *name = lg_tls_server_name(L, 8, lua_tostring(L, 1));
        if (gl_tls_start(c, t, name) != GL_OK) return lg_nomem(L);
        a->tls = 2;
      }
      if (!(c->flags & (GL_CONN_CONNECTING | GL_CONN_HANDSHAKE))) {
        attempt_end(a);
        lua_pushvalue(L, 4);
        return 1;
      }
      why = lg_wait(L, &s->wq, deadline, connect_k);
      continue;
    }
    if (a->tls == 2) { /* the handshake failed: no other address is tried */
      GL_STAT_ADD(s->rt->stats.errors, 1);
      attempt_end(a);
      return lg_fail(L, LG_FAIL_MESSAGE, s->detail ? s->detail : "closed");
    }
    if (s->reason) { /* the last address refused: keep why, try the next */
      snprintf(a->err, sizeof a->err, "%s", s->detail ? s->detail : "closed");
      s->reason = 0;
      s->detail = NULL;
      s->eof = 0;
    }
    struct addrinfo *ai = a->next;
    if (!ai) { /* every address failed: one error for the whole connect */
      if (a->addrs || a->tried) GL_STAT_ADD(s->rt->stats.errors, 1);
      lg_fail(L, LG_FAIL_MESSAGE, a->err[0] ? a->err : "no address to connect to");
      attempt_end(a);
      return 2;
    }
    a->next = ai->ai_next;
    int fd = gl_sock_connect_ai(ai, a->err, sizeof a->err);
    if (fd < 0) continue;
    gl_conn *c = gl_conn_new(&s->rt->env, fd, 1, &lg_socket_cbs, NULL);
    if (!c) { /* gl_conn_new closed fd */
      attempt_end(a);
      return lg_nomem(L);
    }
    lg_socket_attach(s, c);
  }
}

/* The connect of glisten.connect("unix:PATH" [, timeout | options]): a
 * Unix socket connects (or fails) at once. Stack as for connect_k. */
static int connect_unix(lua_State *L, lg_socket *s, attempt *a,
                        const char *path) {
  int fd = gl_sock_connect_unix(path, a->err, sizeof a->err);
  a->tried = 1;
  if (fd < 0) {
    GL_STAT_ADD(s->rt->stats.errors, 1);
    return lg_fail(L, LG_FAIL_MESSAGE, a->err);
  }
  gl_conn *c = gl_conn_new(&s->rt->env, fd, 1, &lg_socket_cbs, NULL);
  if (!c) return lg_nomem(L); /* gl_conn_new closed fd */
  lg_socket_attach(s, c);
  return connect_k(L, LUA_OK, 0);
}

/* glisten.connect(host, port [, timeout | {timeout=, max_line=,
 * max_receive=, max_output=}]) -> socket | nil, err. Tries each address of
 * host in turn (as getaddrinfo orders them) until one accepts. A name is
 * looked up off the loop's thread (core/resolve.c). glisten.connect(
 * "unix:PATH" [, timeout | options]) connects to a Unix socket. */
static int glisten_connect(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  const char *host = luaL_checkstring(L, 1);
  const char *path = lg_unix_path(host);
  lua_Integer port = 0;
  lg_opts o;
  double t = -1;
  if (path) { /* no port: what follows is the timeout or the options */
    lua_settop(L, 2);
    lua_pushnil(L);
    lua_insert(L, 2); /* host, nil, timeout | options */
  } else {
    port = luaL_checkinteger(L, 2);
    luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  }
  lua_settop(L, 3);
  if (lua_type(L, 3) == LUA_TTABLE) {
    lg_opts_read(L, 3, &o, LG_IN_CONNECT);
    t = o.timeout;
  } else {
    o = lg_defaults;
    t = lg_opt_seconds(L, 3, -1);
  }
  rt->started_work = 1;
  lg_socket *s = lg_socket_new(L, rt, NULL); /* 4 */
  lg_socket_limits(s, &o);
  lua_rawgeti(L, 4, 1);                      /* 5 */
  lua_pushnumber(L, lg_deadline(rt, t));     /* 6 */
  attempt *a = lua_newuserdatauv(L, sizeof *a, 0); /* 7 */
  memset(a, 0, sizeof *a);
  a->rt = rt;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ATTEMPT_MT_KEY);
  lua_setmetatable(L, 7);
  lua_toclose(L, 7); /* a connect cut short cancels its lookup at once */
  if (o.tls) { /* 8: the tls option; 9: its context, made once per table */
    a->tls = 1;
    lua_getfield(L, 3, "tls");
    if (!lg_tls_client(L, 8)) return 2; /* nil, "tls: ..." */
  }
  if (!path && !(s->host = strdup(host))) return lg_nomem(L);
  if (path) return connect_unix(L, s, a, path);
  int rc = gl_sock_numeric(host, (int)port, &a->addrs, a->err, sizeof a->err);
  if (rc == GL_ERR) return lg_fail(L, LG_FAIL_MESSAGE, a->err);
  if (rc == GL_AGAIN) {
    connects *cs = lg_rt_state(rt, &connect_hooks);
    if (!cs->resolver) cs->resolver = gl_resolver_new(rt->loop);
    if (cs->resolver)
      a->q = gl_lookup_start(cs->resolver, host, (int)port, on_lookup, a);
    if (!a->q) return lg_nomem(L); /* the attempt is closed on the way */
  }
  a->next = a->addrs;
  (void)s;
  return connect_k(L, LUA_OK, 0);
}

static const luaL_Reg connect_funcs[] = {{"connect", glisten_connect},
                                         {NULL, NULL}};

int lg_connect_open(lua_State *L) {
  int first;
  lg_rt_attach(L, &connect_hooks, sizeof(connects), &first);
  lg_hidden_mt(L, &ATTEMPT_MT_KEY, attempt_gc, attempt_close); /* a connect's */
  luaL_setfuncs(L, connect_funcs, 0);
  return 0;
}
