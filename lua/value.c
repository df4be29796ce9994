/*
 * value.c: Lua values as bytes, so they can cross from one Lua state to
 * another (glisten.post and glisten.publish, which copy in every case, so a
 * script behaves the same with one worker and with many).
 *
 * Values: nil, booleans, integers, floats, strings, and tables of those,
 * nested, without cycles (a table met twice on one path is a cycle; the same
 * table in two places is copied twice). Anything else raises a clear error.
 *
 * Encoding goes into a C buffer owned by a userdata box (freed by __gc), so
 * an error halfway leaks nothing and the stack may move freely meanwhile
 * (which a luaL_Buffer would not allow).
 * Format: one tag byte, then the payload: integers and floats in the
 * machine's own order (the bytes never leave the process), strings and
 * tables as a size_t count first.
 */
#include <string.h>

#include "buf.h"
#include "fail.h"
#include "lauxlib.h"
#include "value.h"

#define MAX_DEPTH 64

enum { T_NIL = 'n', T_FALSE = 'f', T_TRUE = 't', T_INT = 'i', T_NUM = 'd',
       T_STR = 's', T_TABLE = 'T' };

typedef struct encbuf {
  gl_buf b;
  lua_State *L;
} encbuf;

static int encbuf_gc(lua_State *L) {
  encbuf *e = lua_touserdata(L, 1);
  gl_buf_free(&e->b);
  return 0;
}

static void put(encbuf *e, const void *p, size_t n) {
  if (gl_buf_append(&e->b, p, n) != 0) lg_nomem(e->L);
}

/* [-0, +0, e] seen is the stack index of the table of tables on the path. */
static void encode(lua_State *L, encbuf *b, int idx, int seen,
                   int depth) {
  char tag;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      tag = T_NIL;
      put(b, &tag, 1);
      break;
    case LUA_TBOOLEAN:
      tag = lua_toboolean(L, idx) ? T_TRUE : T_FALSE;
      put(b, &tag, 1);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        tag = T_INT;
        put(b, &tag, 1);
        put(b, &i, sizeof i);
      } else {
        lua_Number n = lua_tonumber(L, idx);
        tag = T_NUM;
        put(b, &tag, 1);
        put(b, &n, sizeof n);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      tag = T_STR;
      put(b, &tag, 1);
      put(b, &len, sizeof len);
      put(b, s, len);
      break;
    }
    case LUA_TTABLE: {
      size_t n = 0;
      if (depth >= MAX_DEPTH)
        luaL_error(L, "cannot send a value nested more than %d tables deep",
                   MAX_DEPTH);
      luaL_checkstack(L, 6, "value too deep");
      lua_pushvalue(L, idx);
      if (lua_rawget(L, seen) != LUA_TNIL)
        luaL_error(L, "cannot send a table that contains itself (a cycle)");
      lua_pop(L, 1);
      lua_pushvalue(L, idx);
      lua_pushboolean(L, 1);
      lua_rawset(L, seen);
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        n++;
        lua_pop(L, 1);
      }
      tag = T_TABLE;
      put(b, &tag, 1);
      put(b, &n, sizeof n);
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        encode(L, b, top - 1, seen, depth + 1);
        encode(L, b, top, seen, depth + 1);
        lua_pop(L, 1);
      }
      lua_pushvalue(L, idx);
      lua_pushnil(L);
      lua_rawset(L, seen);
      break;
    }
    default:
      luaL_error(L, "cannot send a %s value (only nil, booleans, numbers, "
                    "strings and tables of those cross workers)",
                 luaL_typename(L, idx));
  }
}

void lg_value_encode(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  encbuf *e = lua_newuserdatauv(L, sizeof *e, 0);
  int box = lua_gettop(L);
  memset(e, 0, sizeof *e);
  e->L = L;
  if (luaL_newmetatable(L, "glisten.encbuf")) {
    lua_pushcfunction(L, encbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, box);
  lua_newtable(L); /* tables on the current path */
  encode(L, e, idx, box + 1, 0);
  lua_pushlstring(L, gl_buf_head(&e->b), e->b.len);
  gl_buf_free(&e->b);
  lua_replace(L, box);
  lua_settop(L, box);
}

typedef struct reader {
  const char *p, *end;
} reader;

static int take(reader *r, void *dst, size_t n) {
  if ((size_t)(r->end - r->p) < n) return 0;
  memcpy(dst, r->p, n);
  r->p += n;
  return 1;
}

static void decode(lua_State *L, reader *r) {
  char tag = 0;
  if (!take(r, &tag, 1)) luaL_error(L, "corrupt message");
  luaL_checkstack(L, 4, "message too deep");
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      lua_Integer i = 0;
      if (!take(r, &i, sizeof i)) luaL_error(L, "corrupt message");
      lua_pushinteger(L, i);
      break;
    }
    case T_NUM: {
      lua_Number n = 0;
      if (!take(r, &n, sizeof n)) luaL_error(L, "corrupt message");
      lua_pushnumber(L, n);
      break;
    }
    case T_STR: {
      size_t len = 0;
      if (!take(r, &len, sizeof len) || (size_t)(r->end - r->p) < len)
        luaL_error(L, "corrupt message");
      lua_pushlstring(L, r->p, len);
      r->p += len;
      break;
    }
    case T_TABLE: {
      size_t n = 0;
      if (!take(r, &n, sizeof n)) luaL_error(L, "corrupt message");
      lua_createtable(L, 0, n < 1024 ? (int)n : 1024);
      for (size_t i = 0; i < n; i++) {
        decode(L, r);
        decode(L, r);
        if (lua_isnil(L, -2)) luaL_error(L, "corrupt message");
        lua_rawset(L, -3);
      }
      break;
    }
    default:
      luaL_error(L, "corrupt message");
  }
}

void lg_value_decode(lua_State *L, const char *p, size_t len) {
  reader r = {p, p + len};
  decode(L, &r);
  if (r.p != r.end) luaL_error(L, "corrupt message");
}
