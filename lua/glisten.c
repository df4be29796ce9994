/*
 * glisten.c: luaopen_glisten, the module table, and glisten.stats.
 *
 * The same module serves `require "glisten"` from any Lua 5.4 host, the
 * glisten-lua command, which links it in, and each worker of a pool.
 */
#include <string.h>

#include "connect.h"
#include "glisten.h"
#include "messages.h"
#include "options.h"
#include "pool.h"
#include "server.h"
#include "shared.h"
#include "sockopt.h"
#include "tlsctx.h"
#include "timer.h"

static void push_stats(lua_State *L, const gl_stats *st) {
  lua_createtable(L, 0, 10);
#define F(k)                                      \
  lua_pushinteger(L, (lua_Integer)GL_STAT_GET(st->k)); \
  lua_setfield(L, -2, #k)
  F(connections);
  F(accepted);
  F(closed);
  F(bytes_in);
  F(bytes_out);
  F(errors);
  F(accept_errors);
  F(dropped);
  F(refused);
  F(tls_failed);
  F(proxy_failed);
#undef F
}

static void add_stats(gl_stats *t, const gl_stats *st) {
  t->connections += GL_STAT_GET(st->connections);
  t->accepted += GL_STAT_GET(st->accepted);
  t->closed += GL_STAT_GET(st->closed);
  t->bytes_in += GL_STAT_GET(st->bytes_in);
  t->bytes_out += GL_STAT_GET(st->bytes_out);
  t->errors += GL_STAT_GET(st->errors);
  t->accept_errors += GL_STAT_GET(st->accept_errors);
  t->dropped += GL_STAT_GET(st->dropped);
  t->refused += GL_STAT_GET(st->refused);
  t->tls_failed += GL_STAT_GET(st->tls_failed);
  t->proxy_failed += GL_STAT_GET(st->proxy_failed);
}

typedef struct gather {
  lg_rt *self;
  void *group; /* self's pool, when it is a worker */
  gl_stats total;
  int n;
  struct {
    int id;
    gl_stats st;
  } w[LG_MAX_WORKERS];
} gather;

/* Takes the runtimes that make up this server: this one, the other workers
 * of its pool, and the workers of pools it started. */
static void take(lg_rt *o, void *group, int member, void *ud) {
  gather *g = ud;
  lg_rt *self = g->self;
  int mine = o == self || (g->group && group == g->group) ||
             (group && lg_pool_host(group) == self);
  if (!mine) return;
  add_stats(&g->total, &o->stats);
  if (group && g->n < LG_MAX_WORKERS) {
    g->w[g->n].id = member;
    memset(&g->w[g->n].st, 0, sizeof g->w[g->n].st);
    add_stats(&g->w[g->n].st, &o->stats); /* atomic loads, field by field */
    g->n++;
  }
}

/* glisten.stats() -> counters summed over every worker, with per-worker
 * figures in .workers (indexed by worker id) when there is a pool */
static int glisten_stats(lua_State *L) {
  gather *g = lua_newuserdatauv(L, sizeof *g, 0);
  memset(g, 0, sizeof *g);
  g->self = lg_rt_get(L);
  g->group = lg_msg_group(g->self);
  lg_msg_each(NULL, take, g);
  push_stats(L, &g->total);
  lua_createtable(L, g->n, 0);
  for (int i = 0; i < g->n; i++) {
    push_stats(L, &g->w[i].st);
    lua_rawseti(L, -2, g->w[i].id);
  }
  lua_setfield(L, -2, "workers");
  return 1;
}

int luaopen_glisten(lua_State *L) {
  lg_rt_open(L);
  lua_newtable(L);
  lg_fiber_open(L);
  lg_timer_open(L);
  lg_socket_open(L);
  lg_sockopt_open(L);
  lg_tls_methods(L);
  lg_connect_open(L);
  lg_server_open(L);
  lg_messages_open(L);
  lg_shared_open(L);
  lg_pool_open(L, luaopen_glisten);
  lua_pushcfunction(L, glisten_stats);
  lua_setfield(L, -2, "stats");
  lua_pushliteral(L, GLISTEN_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
