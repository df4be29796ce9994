/*
 * fail.c: the words of failure (fail.h).
 */
#include "fail.h"

#include "lauxlib.h"

#define LG_FAIL_WORD(name, word) word,
static const char *const words[] = {LG_FAILURES(LG_FAIL_WORD)};
#undef LG_FAIL_WORD

const char *lg_failure(int f) { return words[f]; }

int lg_fail(lua_State *L, int f, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, f == LG_FAIL_MESSAGE ? msg : words[f]);
  return 2;
}

int lg_nomem(lua_State *L) { return luaL_error(L, "not enough memory"); }
