/*
 * pool.h: serving one script with several workers, each a thread with its
 * own loop and Lua state (pool.c); glisten.serve, worker_id and
 * worker_count.
 */
#ifndef LG_POOL_H
#define LG_POOL_H

#include "runtime.h"

/* [-0, +0, m] Registers the pool type, takes the control commands of the
 * state's inbox, and adds serve, worker_id and worker_count to the module
 * table on top; open_module (luaopen_glisten, from the front above) opens
 * the module in a worker's state. */
int lg_pool_open(lua_State *L, lua_CFunction open_module);

/* The runtime that started pool (a group of lg_msg_join). */
lg_rt *lg_pool_host(void *pool);

#endif
