/*
 * value.h: values as bytes, to cross Lua states (value.c).
 */
#ifndef LG_VALUE_H
#define LG_VALUE_H

#include "lua.h"

/* [-0, +1, e] Pushes the encoding of the value at idx as a string. */
void lg_value_encode(lua_State *L, int idx);

/* [-0, +1, e] Pushes the value encoded in p[0..len). */
void lg_value_decode(lua_State *L, const char *p, size_t len);

#endif
