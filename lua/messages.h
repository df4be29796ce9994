/*
 * messages.h: what crosses Lua states (messages.c): glisten.post and
 * publish, sock:subscribe and unsubscribe, and the process's directory of
 * runtimes, which a higher layer (the pool) uses to reach its workers.
 */
#ifndef LG_MESSAGES_H
#define LG_MESSAGES_H

#include "runtime.h"

/* A higher layer's handler of control commands, run on rt's own loop. */
typedef void lg_control_fn(lg_rt *rt, int cmd, double arg);

/* Called for a runtime listed in the directory, under its lock: it must
 * not call back into the directory. */
typedef void lg_each_fn(lg_rt *rt, void *group, int member, void *ud);

/* Puts rt in group (NULL: none; a pool, opaque here) as its member-th
 * runtime; other threads see it from now on. */
void lg_msg_join(lg_rt *rt, void *group, int member);

/* The group of rt (NULL: none). */
void *lg_msg_group(lg_rt *rt);

/* Sends a control command to every runtime of group; each runs its
 * control handler with it, on its own loop. */
void lg_msg_control(void *group, int cmd, double arg);

/* Calls fn for every runtime of group (NULL: every runtime of the
 * process), under the directory's lock. */
void lg_msg_each(void *group, lg_each_fn *fn, void *ud);

/* [-0, +0, -] Sets the control handler of L's runtime. */
void lg_msg_on_control(lua_State *L, lg_control_fn *fn);

/* [-0, +0, m] Lists this state's runtime in the directory, starts its
 * inbox, adds subscribe and unsubscribe to sockets, and post and publish to
 * the module table on top. */
int lg_messages_open(lua_State *L);

#endif
