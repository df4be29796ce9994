/*
 * fuzz_value.c: lg_value_decode (lua/value.c) on any bytes.
 *
 * Each input is decoded in a fresh lua_State whose allocator counts every
 * byte and refuses past a cap of a constant times the input's length, as
 * value.c promises (decoding "allocates at most a constant times the
 * message's length"); the call is protected. Checked:
 *   - decoding pushes a value or raises "corrupt message", and nothing
 *     else: not "not enough memory" under the cap, never a crash;
 *   - a value it accepts encodes (lg_value_encode) and decodes again to an
 *     equal value of the same shape: the same types (an integer stays an
 *     integer, a float keeps its bits), the same strings, and tables that
 *     correspond one to one, so two references to one table stay two
 *     references to one table, and two tables stay two (entries whose key
 *     is a table are compared when that table has been met elsewhere);
 *   - closing the state gives back every byte it took.
 * Time: a decoding slower than linear shows as a timeout (-timeout=).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                         \
  do {                                                                   \
    if (!(c)) {                                                          \
      fprintf(stderr, "fuzz_value: %s:%d: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                           \
    }                                                                    \
  } while (0)

/* Bytes a decoding may take, over what the empty state holds: a constant
 * times the input's length. Lua's objects cost a few dozen bytes for the
 * few bytes that encode them, and a table's parts double as they grow. */
#define BYTES_PER_BYTE 512
#define BYTES_SLACK (64 << 10)
/* The cap while encoding and decoding again: a string met twice may be
 * encoded twice, so the encoding may outgrow the input many times over. */
#define ROUND_TRIP_CAP ((size_t)512 << 20)

typedef struct counted {
  size_t used, cap;
} counted;

static void *counted_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  counted *c = ud;
  void *q;
  if (!p) osize = 0; /* then osize tells the kind of object */
  if (nsize == 0) {
    free(p);
    c->used -= osize;
    return NULL;
  }
  if (nsize > osize && nsize - osize > c->cap - c->used) return NULL;
  q = realloc(p, nsize);
  if (!q) return NULL;
  c->used = c->used - osize + nsize;
  return q;
}

/* [-0, +1, e] decode(p, len) */
static int decode(lua_State *L) {
  const char *p = lua_touserdata(L, 1);
  size_t len = (size_t)lua_tointeger(L, 2);
  lg_value_decode(L, p, len);
  return 1;
}

/* [-0, +1, e] encode(v) */
static int encode(lua_State *L) {
  lg_value_encode(L, 1);
  return 1;
}

/* Slots of the two maps: a table of the first value -> its counterpart,
 * and back. */
enum { AMAP = 1, BMAP = 2 };

static int equal(lua_State *L, int a, int b);

/* Whether tables a and b (absolute) hold equal entries. */
static int equal_tables(lua_State *L, int a, int b) {
  size_t na = 0, nb = 0;
  lua_pushnil(L);
  while (lua_next(L, b)) {
    nb++;
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, a)) {
    int k = lua_gettop(L) - 1, v = k + 1, ok = 1;
    na++;
    if (lua_type(L, k) == LUA_TTABLE) {
      lua_pushvalue(L, k);
      if (lua_rawget(L, AMAP) == LUA_TNIL) { /* not met yet: count only */
        lua_pop(L, 2);
        continue;
      }
    } else {
      lua_pushvalue(L, k);
    }
    lua_rawget(L, b);
    ok = !lua_isnil(L, -1) && equal(L, v, lua_gettop(L));
    lua_pop(L, 2);
    if (!ok) {
      lua_pop(L, 1);
      return 0;
    }
  }
  return na == nb;
}

/* Whether the values at a and b (absolute) are equal, tables as above. */
static int equal(lua_State *L, int a, int b) {
  int t = lua_type(L, a), ok;
  luaL_checkstack(L, 8, NULL);
  if (t != lua_type(L, b)) return 0;
  switch (t) {
    case LUA_TNUMBER:
      if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
      if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
      {
        lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        return memcmp(&x, &y, sizeof x) == 0;
      }
    case LUA_TTABLE:
      lua_pushvalue(L, a);
      if (lua_rawget(L, AMAP) != LUA_TNIL) { /* met before */
        ok = lua_rawequal(L, -1, b);
        lua_pop(L, 1);
        return ok;
      }
      lua_pushvalue(L, b);
      ok = lua_rawget(L, BMAP) == LUA_TNIL; /* b is no other table's */
      lua_pop(L, 2);
      if (!ok) return 0;
      lua_pushvalue(L, a);
      lua_pushvalue(L, b);
      lua_rawset(L, AMAP);
      lua_pushvalue(L, b);
      lua_pushvalue(L, a);
      lua_rawset(L, BMAP);
      return equal_tables(L, a, b);
    default: /* nil, booleans, strings */
      return lua_rawequal(L, a, b);
  }
}

/* The error on top is "corrupt message". */
static int corrupt(lua_State *L) {
  size_t n;
  const char *m = lua_tolstring(L, -1, &n);
  return m && n == 15 && memcmp(m, "corrupt message", 15) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  counted c = {0, (size_t)-1};
  lua_State *L = lua_newstate(counted_alloc, &c);
  int rc, v1, v2;
  CHECK(L);
  lua_newtable(L); /* AMAP */
  lua_newtable(L); /* BMAP */
  lua_gc(L, LUA_GCCOLLECT, 0);
  c.cap = c.used + BYTES_SLACK + BYTES_PER_BYTE * size;

  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, (void *)data);
  lua_pushinteger(L, (lua_Integer)size);
  rc = lua_pcall(L, 2, 1, 0);
  if (rc != LUA_OK) {
    if (!corrupt(L)) {
      fprintf(stderr, "fuzz_value: decoding %zu bytes: %s (%zu bytes in use)\n",
              size, lua_tostring(L, -1), c.used);
      abort();
    }
    lua_close(L);
    CHECK(c.used == 0);
    return 0;
  }
  v1 = lua_gettop(L);

  /* accepted: encode, decode again, compare */
  c.cap = ROUND_TRIP_CAP;
  lua_pushcfunction(L, encode);
  lua_pushvalue(L, v1);
  rc = lua_pcall(L, 1, 1, 0);
  if (rc != LUA_OK) {
    fprintf(stderr, "fuzz_value: a decoded value does not encode: %s\n",
            lua_tostring(L, -1));
    abort();
  }
  {
    size_t n;
    const char *e = lua_tolstring(L, -1, &n);
    lua_pushcfunction(L, decode);
    lua_pushlightuserdata(L, (void *)e);
    lua_pushinteger(L, (lua_Integer)n);
    rc = lua_pcall(L, 2, 1, 0);
  }
  if (rc != LUA_OK) {
    fprintf(stderr, "fuzz_value: an encoding does not decode: %s\n",
            lua_tostring(L, -1));
    abort();
  }
  v2 = lua_gettop(L);
  CHECK(equal(L, v1, v2));
  lua_close(L);
  CHECK(c.used == 0);
  return 0;
}
