/*
 * value.h: values as bytes, to cross Lua states (value.c).
 */
#ifndef LG_VALUE_H
#define LG_VALUE_H

#include <stddef.h>

#include "lua.h"

/* The most bytes a value may take encoded, and the most tables it may nest
 * (the outermost counts). Past either, lg_value_encode raises. */
#define LG_VALUE_MAX_SIZE ((size_t)64 << 20)
#define LG_VALUE_MAX_DEPTH 200

/* [-0, +1, e] Pushes the encoding of the value at idx as a string. Raises
 * for a value that cannot cross (a function, a userdata, a thread, a
 * cycle), one nested more than LG_VALUE_MAX_DEPTH tables deep or larger
 * than LG_VALUE_MAX_SIZE encoded, and with "not enough memory" when the
 * state's allocator (max_memory counts the buffer) refuses. */
void lg_value_encode(lua_State *L, int idx);

/* [-0, +1, e] Pushes the value encoded in p[0..len). Any bytes are safe:
 * what no encoding could be raises "corrupt message". */
void lg_value_decode(lua_State *L, const char *p, size_t len);

#endif
