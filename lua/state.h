/*
 * state.h: the Lua states glisten-lua creates, each on a heap of its own,
 * and their memory cap (state.c).
 */
#ifndef LG_STATE_H
#define LG_STATE_H

#include "lua.h"

/* A new state on a heap of its own, or NULL when out of memory. Close it
 * with lg_closestate. The warning switch lives in a block of the heap,
 * found through the registry. */
lua_State *lg_newstate(void);

/* Closes a state made by lg_newstate and frees its heap. */
void lg_closestate(lua_State *L);

/* The cap set by lg_setlimit, or 0. */
size_t lg_getlimit(lua_State *L);

/* Caps what L may hold at limit bytes (0: no cap). Returns 0; -1 when L
 * was not made by lg_newstate (a host's state keeps its allocator); -2
 * when it already holds more than limit. */
int lg_setlimit(lua_State *L, size_t limit);

#define LG_RESERVE (256u << 10) /* what lg_reserve adds to the cap */

/* Lets L hold LG_RESERVE bytes past its cap while at least one reserve is
 * on: for with_close after a callback ran out of memory, so it can finish.
 * on: 1 to take one, 0 to give it back. Returns 1 when L is capped (a
 * reserve was taken or given), else 0 (nothing to do). */
int lg_reserve(lua_State *L, int on);

#endif
