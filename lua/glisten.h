/*
 * glisten.h: the module front (glisten.c), for the command and any host
 * that links glisten-lua in.
 */
#ifndef LG_GLISTEN_H
#define LG_GLISTEN_H

#include "lua.h"

/* [-0, +1, m] Opens the glisten module in L's state and pushes its table;
 * for require "glisten" (and luaL_requiref). The one symbol the module
 * exports. */
__attribute__((visibility("default"))) int luaopen_glisten(lua_State *L);

#endif
