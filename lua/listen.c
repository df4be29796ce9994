/*
 * listen.c: the low-level flow, glisten.listen and listener:accept, for a
 * script that accepts and runs its connections itself.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gl.h"
#include "listen.h"
#include "listener.h"
#include "sock.h"
#include "socket.h"

#define LG_LISTENER "glisten.listener"

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
  gl_listener_pause(&ls->l,
                    lg_waitq_empty(&ls->aq) || ls->npending >= PENDING_MAX);
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
  lg_defer_begin(ls->rt);
  lg_wake_first(&ls->aq);
  lg_defer_end(ls->rt);
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
      s->inbound = 1;
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
  lg_waitq_orphan(&ls->aq);
  return 0;
}

static int lsock_index(lua_State *L) {
  lg_lsock *ls = luaL_checkudata(L, 1, LG_LISTENER);
  const char *k = luaL_checkstring(L, 2);
  if (ls->l.path[0] && (!strcmp(k, "port") || !strcmp(k, "host")))
    lua_pushnil(L); /* a Unix socket has a path instead */
  else if (strcmp(k, "path") == 0 && ls->l.path[0])
    lua_pushstring(L, ls->l.path);
  else if (strcmp(k, "port") == 0)
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

/* glisten.listen(port [, host | {host=, backlog=, reuseport=, path=, mode=,
 * max_line=, max_receive=, max_output=}]) -> listener | nil, err;
 * glisten.listen("unix:PATH" [, options]) listens on a Unix socket, as
 * the option path does. */
static int glisten_listen(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  const char *path = NULL;
  lua_Integer port = 0;
  lg_opts o;
  char err[GL_ERRLEN];
  int rc;
  if (lua_type(L, 1) == LUA_TSTRING && lg_unix_path(lua_tostring(L, 1))) {
    path = lg_unix_path(lua_tostring(L, 1));
    luaL_argcheck(L, lua_type(L, 2) != LUA_TSTRING, 2,
                  "a Unix socket takes no host");
  } else {
    port = luaL_checkinteger(L, 1);
    luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port out of range");
  }
  rt->started_work = 1;
  if (lua_type(L, 2) == LUA_TTABLE) {
    lg_opts_read(L, 2, &o, LG_IN_LISTEN);
  } else {
    o = lg_defaults;
    if (!lua_isnoneornil(L, 2)) o.host = luaL_checkstring(L, 2);
  }
  if (path) o.path = path;
  const char *host = strcmp(o.host, "*") ? o.host : gl_sock_any();
  int backlog = o.backlog;
  lg_lsock *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  memset(ls, 0, sizeof *ls);
  ls->rt = rt;
  ls->l.fd = -1;
  snprintf(ls->host, sizeof ls->host, "%s", host);
  ls->o = o;
  ls->o.host = ls->host;
  ls->o.path = NULL; /* it points into the options table */
  luaL_setmetatable(L, LG_LISTENER);
  if (o.path)
    rc = gl_listener_open_unix(&ls->l, rt->loop, o.path, (int)o.mode, backlog,
                               on_lsock_accept, ls, err, sizeof err);
  else
    rc = gl_listener_open(&ls->l, rt->loop, host, (int)port, backlog,
                          o.reuseport ? GL_LISTEN_REUSEPORT : 0,
                          on_lsock_accept, ls, err, sizeof err);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  ls->l.stats = &rt->stats;
  lsock_update(ls);
  return 1;
}

static const luaL_Reg listen_funcs[] = {{"listen", glisten_listen},
                                        {NULL, NULL}};

int lg_listen_open(lua_State *L) {
  static const luaL_Reg meta[] = {{"__index", lsock_index},
                                  {"__gc", lsock_gc},
                                  {NULL, NULL}};
  lg_class(L, LG_LISTENER, meta, NULL);
  luaL_setfuncs(L, listen_funcs, 0);
  return 0;
}
