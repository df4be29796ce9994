/*
 * connect.h: glisten.connect, the outbound socket (connect.c).
 */
#ifndef LG_CONNECT_H
#define LG_CONNECT_H

#include "lua.h"

/* [-0, +0, m] Adds connect to the module table on top. */
int lg_connect_open(lua_State *L);

#endif
