/*
 * pool.c: serving one script with several workers. Each worker is a
 * thread with its own libev loop and its own Lua state that loads the
 * script; together they are the acceptor pool.
 *
 * Sharing the port: every worker listens on its own socket bound with
 * SO_REUSEPORT, and the kernel spreads new connections over them by a hash
 * of the addresses. No lock, no thundering herd, and a worker never wakes
 * for a connection another takes. (docs/internals.md gives the measured
 * balance.)
 *
 * Start: worker 1 loads the script and binds first (so port 0 becomes a
 * real port), then the others bind that port. If any fails to load or
 * bind, the started ones are told to stop and serve returns nil, err: no
 * half-started server.
 *
 * A Unix socket's path can be bound only once, and SO_REUSEPORT does not
 * apply to one: worker 1 binds it (so the file is made, and removed, once)
 * and the others listen on copies of its descriptor (lg_share's fd); each
 * worker's loop watches the one socket, and whichever accepts first takes
 * the connection.
 *
 * The pool object lives in the state that called glisten.serve (the host).
 * It keeps the host's loop running until every worker has exited; close
 * (or the command's signals) sends each worker a shutdown with the grace
 * period through its inbox.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sock.h"
#include "lualib.h"
#include "messages.h"
#include "pool.h"
#include "script.h"
#include "server.h"
#include "state.h"
#include "value.h"

#define LG_POOL "glisten.pool"

typedef struct lg_pool lg_pool;

/* The commands a pool sends its workers (lg_msg_control). */
enum { CTL_SHUTDOWN = 1, CTL_RESUME };

/* The pools' part of a runtime: the pool it is a worker of, if any, and
 * the pools it started. */
typedef struct pools {
  lg_pool *pool;     /* NULL: not a worker */
  int worker_id, worker_count;
  int running;       /* pools it started that still run */
  lg_pool *list;     /* those pools */
} pools;

static void pools_close_all(lg_rt *rt, void *self, double grace);
static long pools_busy(lg_rt *rt, void *self);
static const lg_rt_hooks pool_hooks = {pools_close_all, pools_busy, NULL};

static pools *pools_of(lg_rt *rt) { return lg_rt_state(rt, &pool_hooks); }

struct lg_pool {
  int n;
  char *script;
  char *opts; /* the serve options, encoded (value.c) */
  size_t opts_len;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started, ready, failed, exited, joined;
  char err[1024];
  int port;
  char host[64];
  char path[GL_NAMELEN]; /* worker 1's Unix socket, or "" */
  atomic_long conns; /* max_connections counts across the pool */
  lg_share share;    /* what each worker's server shares: conns, resume */
  gl_tls *tls;       /* share.tls points here */
  lua_CFunction open_module; /* luaopen_glisten, for each worker's state */
  pthread_t threads[LG_MAX_WORKERS];
  lg_rt *host_rt;
  ev_async done; /* in the host's loop: a worker exited */
  int ref;       /* anchors the pool userdata while workers run */
  int closing;
  lg_pool *next; /* in the host's list */
};

typedef struct wctx {
  lg_pool *p;
  int id;
} wctx;

static wctx ctxs[LG_SLOTS]; /* one per possible worker; ids are small */
static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;

lg_rt *lg_pool_host(void *pool) { return ((lg_pool *)pool)->host_rt; }

/* --- in a worker --------------------------------------------------- */

/* In worker 1, once it serves: when sv (the pool's server) listens on a
 * Unix socket, records its path and a copy of its descriptor, which the
 * other workers listen on. Returns NULL, or what failed. */
static const char *share_unix(lg_pool *p, lg_server *sv) {
  int fd;
  if (!sv || !sv->l.path[0]) return NULL;
  if ((fd = gl_sock_dup(sv->l.fd)) < 0) return strerror(-fd);
  pthread_mutex_lock(&p->mu);
  snprintf(p->path, sizeof p->path, "%s", sv->l.path);
  p->share.fd = fd;
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* Closes the pool's copy of worker 1's descriptor, once no worker may still
 * need it (every one serves, or has exited). */
static void unshare_unix(lg_pool *p) {
  if (p->share.fd >= 0) close(p->share.fd);
  p->share.fd = -1;
}

static void report(lg_pool *p, const char *err, int port) {
  pthread_mutex_lock(&p->mu);
  if (err) {
    if (!p->failed) snprintf(p->err, sizeof p->err, "%s", err);
    p->failed = 1;
  } else {
    if (port) p->port = port;
    p->ready++;
  }
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* [-0, +0, e] Loads the script and serves it; reports the bound port. */
static int worker_setup(lua_State *L) {
  wctx *w = lua_touserdata(L, 1);
  lg_pool *p = w->p;
  lg_value_decode(L, p->opts, p->opts_len); /* 2: options */
  if (lua_getfield(L, 2, "max_memory") == LUA_TNUMBER) /* before the script */
    lg_limit_memory(L, (size_t)lua_tointeger(L, -1));
  lua_pop(L, 1);
  if (w->id > 1) {
    lua_pushinteger(L, p->port);
    lua_setfield(L, 2, "port");
  }
  int from_table = lg_script_load(L, p->script); /* 3 */
  if (lua_getfield(L, 3, "handler") != LUA_TFUNCTION)
    return luaL_error(L, "%s defines no handler(msg, state)", p->script);
  lua_pop(L, 1);
  lg_script_options(L, 3, from_table, 2); /* 4 */
  if (lg_serve(L, 4, &p->share) == 2) return lua_error(L);
  lg_server *sv = lua_touserdata(L, -1);
  lua_pushinteger(L, sv->l.port);
  return 1;
}

static void *worker_main(void *arg) {
  wctx *w = arg;
  lg_pool *p = w->p;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* signals are the host's */
  lua_State *L = lg_newstate();
  if (!L) {
    report(p, "cannot create a Lua state", 0);
    goto out;
  }
  luaL_openlibs(L);
  luaL_requiref(L, "glisten", p->open_module, 1);
  lua_pop(L, 1);
  lg_rt *rt = lg_rt_get(L);
  pools *ps = pools_of(rt);
  ps->pool = p;
  ps->worker_id = w->id;
  ps->worker_count = p->n;
  rt->hosted = 1;
  lg_msg_join(rt, p, w->id);
  lua_createtable(L, 1, 0); /* arg, as the command sets it */
  lua_pushstring(L, p->script);
  lua_rawseti(L, -2, 0);
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, worker_setup);
  lua_pushlightuserdata(L, w);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    char msg[1024];
    snprintf(msg, sizeof msg, "worker %d: %s", w->id, lua_tostring(L, -1));
    report(p, msg, 0);
  } else {
    /* the newest server is the pool's: the script's own came before */
    const char *why = w->id == 1 ? share_unix(p, lg_servers_of(rt)) : NULL;
    char msg[1024];
    if (why)
      snprintf(msg, sizeof msg, "worker 1: cannot share unix:%s: %s",
               lg_servers_of(rt)->l.path, why);
    report(p, why ? msg : NULL, (int)lua_tointeger(L, -1));
    lua_pop(L, 1);
    pthread_mutex_lock(&p->mu);
    int closing = p->closing; /* a failed start told everyone to stop */
    pthread_mutex_unlock(&p->mu);
    if (!closing) {
      /* A worker lives until it is told to stop, even with nothing to do
       * (its listener paused at max_connections, say): the inbox that
       * brings the command keeps its loop running. */
      ev_ref(rt->loop);
      lg_run(rt);
      ev_unref(rt->loop);
    }
  }
  lg_closestate(L);
out:
  pthread_mutex_lock(&p->mu);
  p->exited++;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  ev_async_send(p->host_rt->loop, &p->done);
  return NULL;
}

/* On a worker's loop: a command from the host or another worker. */
static void pool_control(lg_rt *rt, int cmd, double arg) {
  if (cmd == CTL_RESUME) {
    for (lg_server *sv = lg_servers_of(rt); sv; sv = sv->next)
      if (sv->share) lg_server_resume(sv);
    return;
  }
  if (cmd == CTL_SHUTDOWN) lg_rt_shutdown(rt, arg);
}

/* --- in the host -------------------------------------------------------- */

static int start_worker(lg_pool *p, int id) {
  wctx *w = NULL;
  pthread_mutex_lock(&ctx_mu);
  for (int i = 0; i < LG_SLOTS; i++)
    if (!ctxs[i].p) {
      w = &ctxs[i];
      w->p = p;
      w->id = id;
      break;
    }
  pthread_mutex_unlock(&ctx_mu);
  if (!w) return EAGAIN;
  int rc = pthread_create(&p->threads[id - 1], NULL, worker_main, w);
  if (rc) {
    w->p = NULL;
    return rc;
  }
  p->started++;
  return 0;
}

/* Waits until want workers are ready, one failed, or all exited. */
static int wait_ready(lg_pool *p, int want) {
  pthread_mutex_lock(&p->mu);
  while (!p->failed && p->ready < want && p->exited < p->started)
    pthread_cond_wait(&p->cv, &p->mu);
  int ok = !p->failed && p->ready >= want;
  pthread_mutex_unlock(&p->mu);
  return ok;
}

static void join_all(lg_pool *p) {
  if (p->joined) return;
  for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
  p->joined = 1;
  pthread_mutex_lock(&ctx_mu);
  for (int i = 0; i < LG_SLOTS; i++)
    if (ctxs[i].p == p) ctxs[i].p = NULL;
  pthread_mutex_unlock(&ctx_mu);
}

static void pool_release(lg_pool *p) {
  lg_rt *rt = p->host_rt;
  if (ev_is_active(&p->done)) {
    pools *ps = pools_of(rt);
    ev_async_stop(rt->loop, &p->done);
    ps->running--;
    for (lg_pool **q = &ps->list; *q; q = &(*q)->next)
      if (*q == p) {
        *q = p->next;
        break;
      }
  }
  join_all(p);
  if (p->ref != LUA_NOREF && !rt->closing)
    luaL_unref(rt->L, LUA_REGISTRYINDEX, p->ref);
  p->ref = LUA_NOREF;
}

static void on_done(EV_P_ ev_async *w, int revents) {
  lg_pool *p = w->data;
  int all;
  (void)loop;
  (void)revents;
  pthread_mutex_lock(&p->mu);
  all = p->exited >= p->started;
  pthread_mutex_unlock(&p->mu);
  if (all) pool_release(p);
}

static void pool_close(lg_pool *p, double grace) {
  pthread_mutex_lock(&p->mu);
  p->closing = 1;
  pthread_mutex_unlock(&p->mu);
  lg_msg_control(p, CTL_SHUTDOWN, grace);
}

/* The runtime's shutdown hook: closes every pool rt started, passing the
 * grace to their workers. */
static void pools_close_all(lg_rt *rt, void *self, double grace) {
  (void)rt;
  for (lg_pool *p = ((pools *)self)->list; p; p = p->next)
    pool_close(p, grace);
}

/* The runtime's busy hook: a shutdown waits until those pools' workers
 * have exited. */
static long pools_busy(lg_rt *rt, void *self) {
  (void)rt;
  return ((pools *)self)->running;
}

static int pool_gc(lua_State *L) {
  lg_pool *p = lua_touserdata(L, 1);
  if (!p->host_rt) return 0;
  if (p->started > p->exited) pool_close(p, 0);
  join_all(p); /* at exit: wait for the workers to finish */
  if (p->host_rt->loop && ev_is_active(&p->done))
    ev_async_stop(p->host_rt->loop, &p->done);
  unshare_unix(p);
  free(p->script);
  free(p->opts);
  gl_addrs_free(p->share.addrs);
  gl_tls_unref(p->tls);
  p->tls = NULL;
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  p->host_rt = NULL;
  return 0;
}

/* A worker's server freed a slot under max_connections: the others may
 * have connections waiting for one (the share's resume hook). */
static void share_resume(const lg_share *sh) {
  lg_msg_control(sh->pool, CTL_RESUME, 0);
}

/* [-0, +1|2, e] glisten.serve{script =, workers =, ...} for the options
 * table at idx (read into o); open_module opens glisten in each worker's
 * state. Pushes the pool, or nil and a message. */
static int pool_serve(lua_State *L, int idx, const lg_opts *o,
                      lua_CFunction open_module) {
  lg_rt *rt = lg_rt_get(L);
  pools *ps = pools_of(rt);
  int n = o->workers ? o->workers : 1;
  idx = lua_absindex(L, idx);
  rt->started_work = 1;
  if (ps->pool)
    return luaL_error(L, "glisten.serve: a worker cannot start a pool");
  /* the options each worker serves: all but script and workers */
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (lua_type(L, -1) == LUA_TFUNCTION)
      return luaL_error(L, "glisten.serve: with script, '%s' must be defined "
                           "by the script (functions cannot move between "
                           "Lua states)", k);
    if (strcmp(k, "script") && strcmp(k, "workers")) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    } else {
      lua_pop(L, 1);
    }
  }
  lg_value_encode(L, -1);
  size_t len;
  const char *enc = lua_tolstring(L, -1, &len);

  lg_pool *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->ref = LUA_NOREF;
  p->n = n;
  p->open_module = open_module;
  p->share.count = &p->conns;
  p->share.resume = share_resume;
  p->share.pool = p;
  p->share.fd = -1;
  p->share.tls = &p->tls;
  p->host_rt = rt;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  atomic_init(&p->conns, 0);
  snprintf(p->host, sizeof p->host, "%s",
           strcmp(o->host, "*") ? o->host : gl_sock_any());
  p->script = strdup(o->script);
  p->opts = malloc(len ? len : 1);
  if (o->max_connections_per_address) p->share.addrs = gl_addrs_new();
  luaL_setmetatable(L, LG_POOL);
  if (!p->script || !p->opts ||
      (o->max_connections_per_address && !p->share.addrs))
    return lg_nomem(L);
  memcpy(p->opts, enc, len);
  p->opts_len = len;
  ev_async_init(&p->done, on_done);
  p->done.data = p;
  ev_async_start(rt->loop, &p->done);
  ps->running++;
  p->next = ps->list;
  ps->list = p;

  int rc = start_worker(p, 1);
  int ok = !rc && wait_ready(p, 1);
  for (int id = 2; ok && id <= n; id++)
    if ((rc = start_worker(p, id))) ok = 0;
  ok = ok && wait_ready(p, n);
  if (!ok) {
    if (rc && !p->failed) snprintf(p->err, sizeof p->err, "cannot start a worker: %s", strerror(rc));
    pool_close(p, 0);
    pool_release(p);
    unshare_unix(p); /* every worker has exited */
    lua_pushnil(L);
    lua_pushstring(L, p->err);
    return 2;
  }
  unshare_unix(p); /* every worker listens on its own copy */
  lua_pushvalue(L, -1);
  p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* pool:close([grace]) */
static int pool_close_m(lua_State *L) {
  lg_pool *p = luaL_checkudata(L, 1, LG_POOL);
  pool_close(p, lg_opt_seconds(L, 2, 0));
  return 0;
}

static void count_conns(lg_rt *o, void *group, int member, void *ud) {
  (void)group;
  (void)member;
  *(long long *)ud += GL_STAT_GET(o->stats.connections);
}

static int pool_index(lua_State *L) {
  lg_pool *p = luaL_checkudata(L, 1, LG_POOL);
  const char *k = luaL_checkstring(L, 2);
  if (p->path[0] && (!strcmp(k, "port") || !strcmp(k, "host"))) {
    lua_pushnil(L); /* a Unix socket has a path instead */
  } else if (strcmp(k, "port") == 0) {
    lua_pushinteger(L, p->port);
  } else if (strcmp(k, "host") == 0) {
    lua_pushstring(L, p->host);
  } else if (strcmp(k, "path") == 0) {
    if (p->path[0])
      lua_pushstring(L, p->path);
    else
      lua_pushnil(L);
  } else if (strcmp(k, "workers") == 0) {
    lua_pushinteger(L, p->n);
  } else if (strcmp(k, "connections") == 0) {
    long long n = 0;
    lg_msg_each(p, count_conns, &n);
    lua_pushinteger(L, (lua_Integer)n);
  } else if (strcmp(k, "close") == 0) {
    lua_pushcfunction(L, pool_close_m);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int pool_tostring(lua_State *L) {
  lg_pool *p = luaL_checkudata(L, 1, LG_POOL);
  if (p->path[0])
    lua_pushfstring(L, "glisten.server (unix:%s, %d workers)", p->path, p->n);
  else
    lua_pushfstring(L, "glisten.server (%s:%d, %d workers)", p->host, p->port,
                    p->n);
  return 1;
}

/* glisten.serve{...} -> server | nil, err. With script (and workers), the
 * script is served by a pool of worker threads; else by this state alone
 * (lg_serve). Upvalue 1 opens the module in a worker's state. */
static int glisten_serve(lua_State *L) {
  lg_opts o;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lg_opts_read(L, 1, &o, LG_IN_SERVE);
  if (o.script || o.workers > 1) {
    if (!o.script)
      return luaL_error(L, "glisten.serve: more than one worker needs "
                           "script = \"path.lua\" (functions cannot move "
                           "between Lua states)");
    return pool_serve(L, 1, &o, lua_tocfunction(L, lua_upvalueindex(1)));
  }
  return lg_serve(L, 1, NULL);
}

static int glisten_worker_id(lua_State *L) {
  lua_pushinteger(L, pools_of(lg_rt_get(L))->worker_id);
  return 1;
}

static int glisten_worker_count(lua_State *L) {
  lua_pushinteger(L, pools_of(lg_rt_get(L))->worker_count);
  return 1;
}

int lg_pool_open(lua_State *L, lua_CFunction open_module) {
  int first;
  pools *ps = lg_rt_attach(L, &pool_hooks, sizeof(pools), &first);
  if (first) ps->worker_id = ps->worker_count = 1;
  lg_msg_on_control(L, pool_control);
  lua_pushcfunction(L, open_module);
  lua_pushcclosure(L, glisten_serve, 1);
  lua_setfield(L, -2, "serve");
  lua_pushcfunction(L, glisten_worker_id);
  lua_setfield(L, -2, "worker_id");
  lua_pushcfunction(L, glisten_worker_count);
  lua_setfield(L, -2, "worker_count");
  static const luaL_Reg meta[] = {{"__index", pool_index},
                                  {"__tostring", pool_tostring},
                                  {"__gc", pool_gc},
                                  {NULL, NULL}};
  lg_class(L, LG_POOL, meta, NULL);
  return 0;
}
