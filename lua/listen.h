/*
 * listen.h: glisten.listen and listener:accept (listen.c).
 */
#ifndef LG_LISTEN_H
#define LG_LISTEN_H

#include "lua.h"

/* [-0, +0, m] Registers the listener type and adds listen to the module
 * table on top. */
int lg_listen_open(lua_State *L);

#endif
