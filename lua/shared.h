/*
 * shared.h: glisten.shared, one dictionary for every worker of the
 * process (shared.c).
 */
#ifndef LG_SHARED_H
#define LG_SHARED_H

#include "lua.h"

/* [-0, +0, m] Sets glisten.shared in the module table on top. */
int lg_shared_open(lua_State *L);

#endif
