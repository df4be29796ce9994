/*
 * glisten.c: luaopen_glisten, the module table, and glisten.stats.
 *
 * The same module serves `require "glisten"` from any Lua 5.4 host and the
 * glisten-lua command, which links it in.
 */
#include "lg.h"

static void set_count(lua_State *L, const char *k, long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* glisten.stats() -> table of counters */
static int glisten_stats(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  gl_stats *st = &rt->stats;
  lua_createtable(L, 0, 8);
  set_count(L, "connections", st->connections);
  set_count(L, "accepted", (long long)st->accepted);
  set_count(L, "closed", (long long)st->closed);
  set_count(L, "bytes_in", (long long)st->bytes_in);
  set_count(L, "bytes_out", (long long)st->bytes_out);
  set_count(L, "errors", (long long)st->errors);
  set_count(L, "accept_errors", (long long)st->accept_errors);
  return 1;
}

int luaopen_glisten(lua_State *L) {
  lg_rt_open(L);
  lua_newtable(L);
  lg_sched_open(L);
  lg_socket_open(L);
  lg_server_open(L);
  lua_pushcfunction(L, glisten_stats);
  lua_setfield(L, -2, "stats");
  lua_pushliteral(L, GLISTEN_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
