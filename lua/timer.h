/*
 * timer.h: glisten.after and glisten.every.
 */
#ifndef LG_TIMER_H
#define LG_TIMER_H

#include "lua.h"

/* [-0, +0, m] Registers the timer type, and adds after and every to the
 * module table on top. */
int lg_timer_open(lua_State *L);

#endif
