/*
 * script.c: loading a user script and turning it into serve options; shared
 * by the command (one worker) and by every worker thread of a pool.
 */
#include <string.h>

#include "options.h"
#include "script.h"
#include "state.h"

#include "lauxlib.h"

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int lg_script_load(lua_State *L, const char *path) {
  int base = lua_gettop(L), st;
  lua_pushcfunction(L, msghandler);
  st = luaL_loadfile(L, path);
  if (st == LUA_OK) st = lua_pcall(L, 0, 1, base + 1);
  if (st == LUA_ERRMEM) { /* Lua's message names no file */
    lua_settop(L, base);
    luaL_error(L, "%s: not enough memory while loading it%s", path,
               lg_getlimit(L) ? " (max_memory)" : "");
  }
  if (st != LUA_OK) lua_error(L);
  lua_remove(L, base + 1);
  if (lua_type(L, -1) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  lua_pushglobaltable(L);
  return 0;
}

/* [-1, +1, m] The tls table on top (a flag's fields) over the script's
 * (in the options table at t, when it has one): a new table with the
 * fields of both, the flags' winning, so --tls-cert can stand in for the
 * script's cert and keep its other fields. */
static void merge_tls(lua_State *L, int t) {
  int flags = lua_gettop(L), merged;
  t = lua_absindex(L, t);
  if (lua_getfield(L, t, "tls") != LUA_TTABLE) { /* flags + 1 */
    lua_pop(L, 1);
    return;
  }
  lua_newtable(L);
  merged = lua_gettop(L);
  for (int from = flags + 1; from >= flags; from--) { /* script's, flags' */
    lua_pushnil(L);
    while (lua_next(L, from)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, merged);
    }
  }
  lua_replace(L, flags);
  lua_settop(L, flags);
}

void lg_script_options(lua_State *L, int t, int from_table, int opts) {
  t = lua_absindex(L, t);
  if (opts) opts = lua_absindex(L, opts);
  lua_newtable(L);
  if (from_table)
    for (const lg_option *r = lg_options; r->key; r++)
      if (r->where & LG_IN_SCRIPT) {
        lua_getfield(L, t, r->key);
        lua_setfield(L, -2, r->key);
      }
  for (const char *const *k = lg_callback_names; *k; k++) {
    lua_getfield(L, t, *k);
    lua_setfield(L, -2, *k);
  }
  if (opts) {
    lua_pushnil(L);
    while (lua_next(L, opts)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      if (lua_type(L, -1) == LUA_TTABLE && lua_type(L, -2) == LUA_TSTRING &&
          strcmp(lua_tostring(L, -2), "tls") == 0)
        merge_tls(L, -4); /* over the tls the table being made has */
      lua_settable(L, -4);
    }
  }
}
