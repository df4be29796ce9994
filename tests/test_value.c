/*
 * test_value.c: lua/value.c, values as bytes between Lua states: round
 * trips, shapes kept (a table met twice arrives as one table), the caps, the
 * encoding buffer on the state's allocator, and decoding bytes that no
 * encoder wrote (truncated, mutated, crafted), which must raise "corrupt
 * message" and nothing worse.
 *
 * value.c stands in layer 0 of the binding and calls only Lua's C API, so
 * this test links it with Lua and nothing else of glisten.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lauxlib.h"
#include "lualib.h"
#include "value.h"

/* An allocator that refuses growth past a limit, as max_memory's does. */
typedef struct counted {
  size_t used, limit; /* limit 0: none */
} counted;

static void *counted_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  counted *c = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    c->used -= old;
    return NULL;
  }
  if (c->limit && nsize > old && nsize - old > c->limit - c->used) return NULL;
  ptr = realloc(ptr, nsize);
  if (ptr) c->used = c->used - old + nsize;
  return ptr;
}

static int l_encode(lua_State *L) {
  lua_settop(L, 1);
  lg_value_encode(L, 1);
  return 1;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  lg_value_decode(L, p, len);
  return 1;
}

/* Lua helpers for the tests: same(a, b) compares deeply, and also checks
 * that a's sharing of tables is b's (two references to one table in a are
 * two references to one table in b, and only then). */
static const char HELPERS[] =
    "function same(a, b, map, back)\n"
    "  map, back = map or {}, back or {}\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) ~= 'table' then\n"
    "    if a ~= a then return b ~= b end\n"
    "    return a == b and math.type(a) == math.type(b)\n"
    "      and (a ~= 0 or 1/a == 1/b)\n"
    "  end\n"
    "  if map[a] or back[b] then return map[a] == b and back[b] == a end\n"
    "  map[a], back[b] = b, a\n"
    "  local n = 0\n"
    "  for k, v in pairs(a) do\n"
    "    n = n + 1\n"
    "    local bk = k\n"
    "    if type(k) == 'table' then bk = map[k] end\n"
    "    if type(k) == 'table' and bk == nil then\n"
    "      for k2 in pairs(b) do\n"
    "        if type(k2) == 'table' and not back[k2] and same(k, k2, map, back) then\n"
    "          bk = k2; break\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if bk == nil or not same(v, b[bk], map, back) then return false end\n"
    "  end\n"
    "  for _ in pairs(b) do n = n - 1 end\n"
    "  return n == 0\n"
    "end\n"
    "function roundtrip(v)\n"
    "  local back = decode(encode(v))\n"
    "  assert(same(v, back), 'not the same after a round trip')\n"
    "  return back\n"
    "end\n";

static lua_State *newstate(counted *c) {
  lua_State *L = lua_newstate(counted_alloc, c);
  assert_non_null(L);
  luaL_openlibs(L);
  lua_register(L, "encode", l_encode);
  lua_register(L, "decode", l_decode);
  if (luaL_dostring(L, HELPERS) != LUA_OK)
    fail_msg("helpers: %s", lua_tostring(L, -1));
  return L;
}

/* Runs chunk, which must succeed. */
static void run(lua_State *L, const char *chunk) {
  if (luaL_dostring(L, chunk) != LUA_OK)
    fail_msg("%s in:\n%s", lua_tostring(L, -1), chunk);
  lua_settop(L, 0);
}

/* [-0, +0] Decodes p[0..len) under lua_pcall. Returns the status; the error
 * message, when there is one, goes into err. */
static int try_decode(lua_State *L, const char *p, size_t len, char *err,
                      size_t errlen) {
  int st;
  lua_pushcfunction(L, l_decode);
  lua_pushlstring(L, p, len);
  st = lua_pcall(L, 1, 1, 0);
  if (st != LUA_OK && err)
    snprintf(err, errlen, "%s",
             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
  lua_pop(L, 1);
  return st;
}

static void assert_corrupt(lua_State *L, const char *p, size_t len,
                           const char *what) {
  char err[256];
  if (try_decode(L, p, len, err, sizeof err) == LUA_OK)
    fail_msg("%s: decoded", what);
  if (strcmp(err, "corrupt message") != 0)
    fail_msg("%s: raised '%s', not 'corrupt message'", what, err);
}

static void test_round_trips(void **state) {
  counted c = {0, 0};
  lua_State *L = newstate(&c);
  (void)state;
  run(L,
      "for _, v in ipairs{true, false, 0, 1, -1, 63, 64, -64, -65, 300,\n"
      "    math.maxinteger, math.mininteger, 0.5, -0.0, 1/0, -1/0, 0/0, 1e308,\n"
      "    '', 'a', 'a\\0b', ('x'):rep(255), ('y'):rep(256), ('z'):rep(70000),\n"
      "    {}, {1, 2, 3}, {1, nil, 3}, {nil, nil, 3}, {a = 1, b = {c = {}}},\n"
      "    {[1] = 1, [2] = 2, [4] = 4, [8] = 8, [1 << 40] = 1},\n"
      "    {[0] = 0, [-1] = -1, 1, 2, x = 'x', [1.5] = 1.5, [true] = false},\n"
      "    {[{}] = {}, [{1}] = {2}}} do\n"
      "  roundtrip(v)\n"
      "end\n"
      "assert(decode(encode(nil)) == nil)\n"
      "local a = {} for i = 1, 10000 do a[i] = i * 3 end\n"
      "roundtrip(a)\n"
      "local h = {} for i = 1, 10000 do h['k' .. i] = {i, tostring(i)} end\n"
      "roundtrip(h)\n"
      /* a sparse table whose border is far past its entries goes as pairs,
       * not as 2^40 nils */
      "local s = {}\n"
      "for i = 0, 40 do s[1 << i] = i end\n"
      "assert(#encode(s) < 41 * 16, #encode(s))\n"
      "roundtrip(s)\n");
  lua_close(L);
}

static void test_shapes_kept(void **state) {
  counted c = {0, 0};
  lua_State *L = newstate(&c);
  (void)state;
  run(L,
      /* a DAG arrives as a DAG */
      "local s = {x = 1}\n"
      "local v = roundtrip({a = s, b = s, c = {s}, [s] = s})\n"
      "assert(v.a == v.b and v.b == v.c[1] and v[v.a] == v.a)\n"
      /* a long string repeated is encoded once */
      "local big = ('q'):rep(100000)\n"
      "local e = encode({big, big, big, k = big})\n"
      "assert(#e < 100100, #e)\n"
      "roundtrip({big, big, big, k = big})\n"
      /* t = {t, t} 23 tables deep: bytes in proportion to the tables */
      "local t = {}\n"
      "for _ = 2, 23 do t = {t, t} end\n"
      "local e = encode(t)\n"
      "assert(#e <= 23 * 8, #e)\n"
      "local back = decode(e)\n"
      "local n = 0\n"
      "while back do\n"
      "  n = n + 1\n"
      "  assert(back[1] == back[2])\n"
      "  back = back[1]\n"
      "end\n"
      "assert(n == 23, n)\n"
      /* deep but not too deep */
      "local d = {}\n"
      "for _ = 2, 200 do d = {d} end\n"
      "roundtrip(d)\n");
  lua_close(L);
}

static void test_refuses(void **state) {
  counted c = {0, 0};
  lua_State *L = newstate(&c);
  (void)state;
  run(L,
      "local function refuses(v, pat)\n"
      "  local ok, err = pcall(encode, v)\n"
      "  assert(not ok, 'encoded')\n"
      "  assert(err:find(pat), err)\n"
      "end\n"
      "local t = {} t.t = t\n"
      "refuses(t, 'cannot send a table that contains itself %(a cycle%)')\n"
      "local k = {} k[k] = 1\n"
      "refuses(k, 'a cycle')\n"
      "local a = {} a[1] = {{{a}}}\n"
      "refuses(a, 'a cycle')\n"
      "refuses({print}, 'cannot send a function value')\n"
      "refuses({coroutine.create(print)}, 'cannot send a thread value')\n"
      "refuses(io.stdout, 'cannot send a userdata value')\n"
      "local d = {}\n"
      "for _ = 2, 201 do d = {d} end\n"
      "refuses(d, 'cannot send a value nested more than 200 tables deep')\n"
      "local big = ('x'):rep(64 << 20)\n"
      "refuses(big, 'cannot send a value larger than 64 MiB encoded')\n"
      "local parts = {} for i = 1, 65 do parts[i] = ('%d'):format(i):rep(1 << 20) end\n"
      "refuses(parts, 'cannot send a value larger than 64 MiB encoded')\n");
  lua_close(L);
}

/* The buffer comes from the state's allocator: a cap on it fails the
 * encoding with Lua's "not enough memory", and what the error leaves is
 * collected. */
static void test_buffer_counted(void **state) {
  counted c = {0, 0};
  lua_State *L = newstate(&c);
  size_t base;
  (void)state;
  run(L, "s = ('m'):rep(3 << 20) .. 'x'; collectgarbage()");
  base = c.used;
  c.limit = base + (5u << 20); /* room for the copy, not for the buffer too */
  run(L,
      "local ok, err = pcall(encode, {s})\n"
      "assert(not ok and err == 'not enough memory', tostring(err))\n"
      "collectgarbage()\n");
  assert_true(c.used < base + (64u << 10));
  c.limit = base + (8u << 20);
  run(L, "assert(#encode({s}) > 3 << 20)");
  lua_close(L);
}

/* Bytes no encoder wrote. */
static void test_crafted(void **state) {
  counted c = {0, 0};
  lua_State *L = newstate(&c);
  char nan[9] = "d", bomb[1024];
  double x = 0.0 / 0.0;
  size_t n = 0;
  (void)state;
#define CORRUPT(lit, what) assert_corrupt(L, lit, sizeof lit - 1, what)
  CORRUPT("", "nothing");
  CORRUPT("x", "an unknown tag");
  CORRUPT("e", "an end tag alone");
  CORRUPT("nn", "bytes after the value");
  CORRUPT("i", "an integer without its bytes");
  CORRUPT("i\x80", "a varint cut short");
  CORRUPT("i\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "a varint of 71 bits");
  CORRUPT("i\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", "a varint past 64 bits");
  CORRUPT("d1234", "a float cut short");
  CORRUPT("s\x05" "abc", "a string cut short");
  CORRUPT("s\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "a huge string length");
  CORRUPT("T", "a table without counts");
  CORRUPT("T\x00\x00", "a table without its end");
  CORRUPT("T\x03\x00nne", "an end among the array values");
  CORRUPT("T\xff\xff\xff\xff\x0f\x00e", "a huge array count");
  CORRUPT("T\x00\x00nn" "e", "a nil key");
  CORRUPT("T\x00\x00i\x02ne", "a nil value");
  CORRUPT("r\x00", "a reference to nothing");
  CORRUPT("T\x01\x00r\x00" "e", "a reference to the table being decoded");
  CORRUPT("U\x01\x00r\x00" "e", "a reference to the table being decoded (kept)");
  CORRUPT("T\x02\x00s\x01" "ar\x03" "e", "a reference to a string not kept");
  CORRUPT("T\x02\x00S\x01" "ar\x04" "e", "a reference to the middle of a string");
  CORRUPT("T\x02\x00r\x05S\x01" "ae", "a reference forward");
  CORRUPT("T\x02\x00U\x00\x00" "er\xff\xff\xff\xff\x0f" "e", "a reference far out");
  memcpy(nan + 1, &x, sizeof x);
  {
    char k[16] = "T\x00\x00";
    memcpy(k + 3, nan, 9);
    memcpy(k + 12, "i\x02" "e", 3);
    assert_corrupt(L, k, 15, "a NaN key");
  }
  /* 201 tables deep */
  for (int i = 0; i < 201; i++) {
    memcpy(bomb + n, "T\x01\x00", 3);
    n += 3;
  }
  bomb[n - 2] = 0; /* the innermost is empty */
  for (int i = 0; i < 201; i++) bomb[n++] = 'e';
  assert_corrupt(L, bomb, n, "201 tables deep");
  /* 200 deep decodes */
  assert_int_equal(try_decode(L, bomb + 3, n - 4, NULL, 0), LUA_OK);
  /* the hash count is a hint: a wrong one is no error */
  assert_int_equal(
      try_decode(L, "T\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01" "e", 13,
                 NULL, 0),
      LUA_OK);
  /* a table kept and referred to, in a key and a value */
  run(L, "local t = decode('T\\0\\1U\\0\\0er\\3e')\n"
         "local k, v = next(t)\n"
         "assert(type(k) == 'table' and k == v)\n");
#undef CORRUPT
  lua_close(L);
}

/* Every cut and every one-byte change of real encodings: a value or
 * "corrupt message", never a crash (the sanitizer build watches) or another
 * error. */
static void test_mutated(void **state) {
  counted c = {0, 0};
  lua_State *L = newstate(&c);
  static const char *const values[] = {
      "local s = {x = 1, y = ('l'):rep(300)}\n"
      "return {s, s, s.y, {[s] = s, [2.5] = -7, n = 1 << 40}, 'short', true}",
      "local t = {} for _ = 2, 6 do t = {t, t, k = t} end return t",
      "return {1, nil, 3, {[1] = 1, [2] = 2, [4] = 4, [9] = 9}, -0.0, false}",
  };
  (void)state;
  for (size_t v = 0; v < sizeof values / sizeof *values; v++) {
    size_t len;
    char *enc, err[256];
    if (luaL_dostring(L, values[v]) != LUA_OK)
      fail_msg("%s", lua_tostring(L, -1));
    lg_value_encode(L, -1);
    enc = malloc(lua_rawlen(L, -1));
    assert_non_null(enc);
    len = lua_rawlen(L, -1);
    memcpy(enc, lua_tostring(L, -1), len);
    lua_settop(L, 0);
    assert_int_equal(try_decode(L, enc, len, NULL, 0), LUA_OK);
    for (size_t cut = 0; cut < len; cut++)
      assert_corrupt(L, enc, cut, "a cut");
    for (size_t i = 0; i < len; i++) {
      char was = enc[i];
      for (int b = 0; b < 256; b++) {
        enc[i] = (char)b;
        if (try_decode(L, enc, len, err, sizeof err) != LUA_OK &&
            strcmp(err, "corrupt message") != 0)
          fail_msg("byte %zu set to %d: raised '%s'", i, b, err);
      }
      enc[i] = was;
    }
    free(enc);
  }
  lua_close(L);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_shapes_kept),
      cmocka_unit_test(test_refuses),
      cmocka_unit_test(test_buffer_counted),
      cmocka_unit_test(test_crafted),
      cmocka_unit_test(test_mutated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
