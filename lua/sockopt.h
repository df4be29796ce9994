/*
 * sockopt.h: a socket's names, credentials and options (sockopt.c).
 */
#ifndef LG_SOCKOPT_H
#define LG_SOCKOPT_H

#include "lua.h"

/* [-0, +0, m] Adds getpeername, getsockname, getpeercred, setoption and
 * getoption to the socket type (lg_socket_open first). */
int lg_sockopt_open(lua_State *L);

#endif
