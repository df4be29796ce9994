/*
 * server.c: the server object of glisten.serve in one state: serve, close
 * with a grace period, the fields a script reads, and the servers' part of
 * the runtime (its shutdown closes every server with the grace and waits
 * for every served connection to end).
 */
#include <stdio.h>
#include <string.h>

#include "gl.h"
#include "listen.h"
#include "preempt.h"
#include "served.h"
#include "sock.h"
#include "state.h"
#include "tlsctx.h"

static void servers_shutdown(lg_rt *rt, void *self, double grace);
static long servers_busy(lg_rt *rt, void *self);
static void servers_teardown(lg_rt *rt, void *self);
static const lg_rt_hooks server_hooks = {servers_shutdown, servers_busy,
                                         servers_teardown};

void lg_server_unanchor(lg_server *sv) {
  if (sv->ref != LUA_NOREF && !sv->rt->closing)
    luaL_unref(sv->rt->L, LUA_REGISTRYINDEX, sv->ref);
  sv->ref = LUA_NOREF;
}

static void on_grace(EV_P_ ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  lg_served_shutdown_all(w->data);
}


/* Stops sv accepting and takes it off the runtime's list of servers. */
static void server_unlist(lg_server *sv) {
  gl_listener_close(&sv->l);
  sv->open = 0;
  for (lg_server **p = &sv->all->list; *p; p = &(*p)->next)
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
    lg_server_resume(sv); /* closes what was held */
  }
  lg_prelude_close_all(sv); /* no script saw them: nothing to finish */
  if (!sv->nconns) {
    lg_server_unanchor(sv);
    return;
  }
  if (grace > 0) {
    if (!ev_is_active(&sv->grace)) {
      ev_timer_set(&sv->grace, grace, 0.);
      ev_timer_start(rt->loop, &sv->grace);
    }
  } else {
    ev_timer_stop(rt->loop, &sv->grace);
    lg_served_shutdown_all(sv);
  }
}

void lg_limit_memory(lua_State *L, size_t limit) {
  int rc = lg_setlimit(L, limit);
  if (rc == -1)
    luaL_error(L, "option 'max_memory': only the Lua states glisten-lua "
                  "creates can be capped (the command's and each worker's)");
  if (rc == -2)
    luaL_error(L, "option 'max_memory': the state already holds more than "
                  "%I bytes", (LUAI_UACINT)limit);
}

/* Opens sv's listener: the Unix socket o->path (a copy of the pool's, when
 * share has one), or host and port. GL_OK, or GL_ERR with err filled. */
static int open_listener(lg_server *sv, const lg_opts *o, const lg_share *share,
                         char *err, size_t errlen) {
  struct ev_loop *loop = sv->rt->loop;
  if (o->path && share && share->fd >= 0) {
    int fd = gl_sock_dup(share->fd), rc = GL_ERR;
    if (fd >= 0) rc = gl_listener_adopt(&sv->l, loop, fd, lg_acceptor_accept, sv);
    if (rc != GL_OK)
      snprintf(err, errlen, "cannot listen on unix:%s: %s", o->path,
               strerror(fd < 0 ? -fd : -rc));
    return rc == GL_OK ? GL_OK : GL_ERR;
  }
  if (o->path)
    return gl_listener_open_unix(&sv->l, loop, o->path, (int)o->mode,
                                 (int)o->backlog, lg_acceptor_accept, sv, err,
                                 errlen);
  return gl_listener_open(&sv->l, loop, sv->host, (int)o->port, (int)o->backlog,
                          share || o->reuseport ? GL_LISTEN_REUSEPORT : 0,
                          lg_acceptor_accept, sv, err, errlen);
}

int lg_serve(lua_State *L, int idx, const lg_share *share) {
  lg_rt *rt = lg_rt_get(L);
  lg_opts o;
  char err[GL_ERRLEN];
  const char *const *cbs = lg_callback_names;
  idx = lua_absindex(L, idx);
  rt->started_work = 1;
  lg_opts_read(L, idx, &o, LG_IN_SERVE);
  if (o.max_memory) lg_limit_memory(L, o.max_memory);
  lg_watch_set(rt, o.callback_slice, o.max_callback_time);
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
  sv->all = lg_rt_state(rt, &server_hooks);
  sv->l.fd = -1;
  sv->ref = LUA_NOREF;
  sv->o = o;
  snprintf(sv->host, sizeof sv->host, "%s",
           strcmp(o.host, "*") ? o.host : gl_sock_any());
  sv->o.host = sv->host;
  sv->o.script = sv->o.path = NULL; /* they point into the options table */
  atomic_init(&sv->own_count, 0);
  sv->count = share ? share->count : &sv->own_count;
  sv->share = share;
  ev_timer_init(&sv->grace, on_grace, 0., 0.);
  sv->grace.data = sv;
  luaL_setmetatable(L, LG_SERVER);
  if (o.max_connections_per_address) {
    sv->addrs = share && share->addrs ? share->addrs
                                      : (sv->own_addrs = gl_addrs_new());
    if (!sv->addrs) return lg_nomem(L);
  }
  lua_pushvalue(L, h);
  lua_setiuservalue(L, svi, 1);
  for (int i = 0; i < LG_NCB; i++) /* the order of LG_CB_* */
    if (lua_getfield(L, h, cbs[i]) == LUA_TFUNCTION)
      sv->cb[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    else
      lua_pop(L, 1);
  if (o.tls && share && share->tls && *share->tls) { /* the pool's */
    sv->tls = *share->tls;
    gl_tls_ref(sv->tls);
  } else if (o.tls) {
    lua_getfield(L, idx, "tls");
    sv->tls = lg_tls_make(L, -1, 1, err, sizeof err);
    lua_pop(L, 1);
    if (!sv->tls) {
      lua_pushnil(L);
      lua_pushfstring(L, "tls: %s", err);
      return 2;
    }
    if (share && share->tls) {
      gl_tls_ref(sv->tls);
      *share->tls = sv->tls;
    }
  }
  if (o.tls) { /* this state's functions, whoever made the context */
    lua_getfield(L, idx, "tls");
    sv->tlsfns = lg_tls_fns_new(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  if (open_listener(sv, &o, share, err, sizeof err) != GL_OK) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  sv->l.stats = &rt->stats;
  sv->open = 1;
  lua_pushvalue(L, svi);
  sv->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sv->next = sv->all->list;
  sv->all->list = sv;
  if (lg_server_full(sv)) gl_listener_pause(&sv->l, 1);
  return 1;
}

static lg_server *check_server(lua_State *L) {
  return luaL_checkudata(L, 1, LG_SERVER);
}

/* server:set_tls(tls) -> true | nil, err: new connections use the
 * certificates and settings of the tls table from now on; those already
 * open, or in their handshake, keep their context, and a handshake in
 * progress calls the new table's sni and alpn functions. */
static int server_set_tls(lua_State *L) {
  lg_server *sv = check_server(L);
  char err[GL_ERRLEN];
  gl_tls *t;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!sv->tls)
    return luaL_error(L, "server:set_tls: this server does not serve TLS");
  t = lg_tls_make(L, 2, 1, err, sizeof err);
  if (!t) {
    lua_pushnil(L);
    lua_pushfstring(L, "tls: %s", err);
    return 2;
  }
  gl_tls_unref(sv->tls);
  sv->tls = t;
  lg_tls_fns_set(L, sv->tlsfns, 2);
  lua_pushboolean(L, 1);
  return 1;
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
  if (sv->l.path[0] && (!strcmp(k, "port") || !strcmp(k, "host")))
    lua_pushnil(L); /* a Unix socket has a path instead */
  else if (strcmp(k, "path") == 0 && sv->l.path[0])
    lua_pushstring(L, sv->l.path);
  else if (strcmp(k, "port") == 0)
    lua_pushinteger(L, sv->l.port);
  else if (strcmp(k, "host") == 0)
    lua_pushstring(L, sv->host);
  else if (strcmp(k, "connections") == 0)
    lua_pushinteger(L, sv->nconns);
  else if (strcmp(k, "close") == 0)
    lua_pushcfunction(L, server_close);
  else if (strcmp(k, "set_tls") == 0)
    lua_pushcfunction(L, server_set_tls);
  else
    lua_pushnil(L);
  return 1;
}

static int server_tostring(lua_State *L) {
  lg_server *sv = check_server(L);
  if (sv->l.path[0])
    lua_pushfstring(L, "glisten.server (unix:%s%s)", sv->l.path,
                    sv->open ? "" : ", closed");
  else
    lua_pushfstring(L, "glisten.server (%s:%d%s)", sv->host, sv->l.port,
                    sv->open ? "" : ", closed");
  return 1;
}

static int server_gc(lua_State *L) {
  lg_server *sv = lua_touserdata(L, 1);
  if (sv->rt->loop) lg_prelude_close_all(sv);
  gl_addrs_free(sv->own_addrs); /* its connections are gone, or closing */
  sv->own_addrs = sv->addrs = NULL;
  gl_tls_unref(sv->tls); /* connections hold their own references */
  sv->tls = NULL;
  lg_tls_fns_free(sv->tlsfns);
  sv->tlsfns = NULL;
  if (!sv->rt->loop) return 0;
  for (int i = 0; i < LG_NCB; i++) {
    if (sv->cb[i] != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, sv->cb[i]);
    sv->cb[i] = LUA_NOREF;
  }
  ev_timer_stop(sv->rt->loop, &sv->grace);
  if (sv->open) server_unlist(sv);
  return 0;
}

/* The runtime's hooks (lg_rt_hooks): a shutdown closes every server with
 * the grace; it waits for every served connection to end; at teardown the
 * listeners close and no grace timer is left on the loop. */
static void servers_shutdown(lg_rt *rt, void *self, double grace) {
  lg_servers *all = self;
  (void)rt;
  while (all->list) server_stop(all->list, grace);
}

static long servers_busy(lg_rt *rt, void *self) {
  (void)rt;
  return ((lg_servers *)self)->served;
}

static void servers_teardown(lg_rt *rt, void *self) {
  for (lg_server *sv = ((lg_servers *)self)->list; sv; sv = sv->next) {
    lg_prelude_close_all(sv);
    gl_listener_close(&sv->l);
    ev_timer_stop(rt->loop, &sv->grace);
  }
}

lg_server *lg_servers_of(lg_rt *rt) {
  lg_servers *all = lg_rt_state(rt, &server_hooks);
  return all ? all->list : NULL;
}

int lg_server_open(lua_State *L) {
  int first;
  lg_rt_attach(L, &server_hooks, sizeof(lg_servers), &first);
  static const luaL_Reg meta[] = {{"__index", server_index},
                                  {"__tostring", server_tostring},
                                  {"__gc", server_gc},
                                  {NULL, NULL}};
  lg_class(L, LG_SERVER, meta, NULL);
  lg_listen_open(L);
  return 0;
}
