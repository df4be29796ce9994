/*
 * runtime.h: the runtime of one lua_State, the lowest layer of the binding
 * above the values and options.
 *
 * One runtime (lg_rt) per lua_State: an ev_loop, the core's connection
 * env, counters, the scheduler's queues (fiber.h), and the part of each
 * module above, which a module attaches (lg_rt_attach) with its hooks: the
 * runtime knows the modules only as hooks and opaque state, so it never
 * calls a higher layer by name.
 *
 * Every runtime has a number in the process (its slot, 1..LG_SLOTS-1):
 * connection ids carry it in their low bits, and messages find a runtime by
 * it.
 */
#ifndef LG_RUNTIME_H
#define LG_RUNTIME_H

#include <ev.h>

#include "conn.h"
#include "fail.h"
#include "lauxlib.h"
#include "lua.h"
#include "stats.h"

#define LG_SLOTS 256 /* Lua states per process; ids carry the slot */
#define LG_LINGER 5.0 /* longest a closing socket flushes */
#define LG_MODULES 8  /* modules that attach to a runtime */

typedef struct lg_rt lg_rt;
typedef struct lg_fiber lg_fiber;
struct lg_watch;

/* A module's part in its runtime's life, given to lg_rt_attach with the
 * module's state (self). The runtime calls them; any may be NULL. */
typedef struct lg_rt_hooks {
  /* lg_rt_shutdown: stop taking new work; end what runs within grace
   * seconds (0: now). */
  void (*shutdown)(lg_rt *rt, void *self, double grace);
  /* How much work a shutdown still waits for (0: none). */
  long (*busy)(lg_rt *rt, void *self);
  /* The state is closing (lua_close): release what the module holds,
   * calling no Lua. Hooks run in the reverse order of attaching; the
   * module's state is freed after. */
  void (*teardown)(lg_rt *rt, void *self);
} lg_rt_hooks;

/* When lg_log_flood last wrote a kind of error, and how many it has left
 * out since. Each module keeps one per kind in its state. */
typedef struct lg_flood {
  double at;
  unsigned long skipped;
} lg_flood;

struct lg_rt {
  lua_State *L; /* main thread */
  struct ev_loop *loop;
  gl_env env;
  gl_stats stats;
  int slot;         /* this runtime's number in the process */
  int started_work; /* a server, listener, connection, coroutine or timer
                       was ever started (the command runs the loop) */
  int stopped;      /* glisten.stop(), or the end of a shutdown */
  int closing;      /* lua_close in progress: call no Lua */
  int hosted;       /* a pool's worker: its host reports a late shutdown */
  ev_timer settle, deadline; /* lg_rt_shutdown: all done?; grace is up */
  int overdue;      /* the deadline passed: teardown flushes nothing more */
  struct {
    const lg_rt_hooks *hooks;
    void *self;
  } mod[LG_MODULES];
  int nmod;
  /* The scheduler's (fiber.c); only its functions touch these. */
  ev_prepare prepare;
  ev_idle idle;
  lg_fiber *ready, *ready_tail; /* fibers to resume, in order */
  unsigned turn;    /* runs of the ready queue */
  int in_loop; /* ev_run frames on the C stack */
  int running; /* fiber resumes on the C stack */
  int defer;   /* > 0: wakes go through the ready queue */
  lg_fiber *spare; /* fibers whose function ended, kept for reuse */
  int nspare;
  struct lg_watch *watch; /* what the watchdog sees of it (preempt.c) */
};

/* [-0, +0, v] The runtime of L's state; raises when glisten is not open
 * in it. */
lg_rt *lg_rt_get(lua_State *L);

/* [-0, +0, m] Creates the runtime of L's state, once, and returns it. */
lg_rt *lg_rt_open(lua_State *L);

/* [-0, +0, m] Attaches a module to rt: its hooks, and a zeroed state of
 * size bytes that the runtime frees after the module's teardown. Returns
 * the state, and sets *first when it was made now (0: the module was
 * already attached, by a second luaopen_glisten in one state). */
void *lg_rt_attach(lua_State *L, const lg_rt_hooks *h, size_t size,
                   int *first);

/* The state a module attached with hooks h, or NULL. */
void *lg_rt_state(lg_rt *rt, const lg_rt_hooks *h);

/* The one shutdown, for the command's signals, a pool's workers and
 * glisten's own: every module stops taking new work and ends what runs
 * within grace seconds; the loop ends (lg_run returns) once no module is
 * busy, or at the latest grace + LG_LINGER + 1 seconds from now, when
 * closed sockets have had their time to flush. A second call changes
 * nothing. */
void lg_rt_shutdown(lg_rt *rt, double grace);

/* [-0, +0, v] A number of seconds at idx (def when none or nil); NaN
 * raises, as it compares false with everything and would wait forever. */
double lg_opt_seconds(lua_State *L, int idx, double def);
/* [-0, +0, v] The same, for an argument that must be there. */
double lg_check_seconds(lua_State *L, int idx);
/* The loop time timeout seconds from now (< 0 or NaN: -1, none). */
double lg_deadline(lg_rt *rt, double timeout);

/* Logs the error on top of co and counts it. Returns LUA_OK when its
 * traceback, a string, is now on top of co; else why it could not be made
 * (LUA_ERRMEM: no memory left; another code: a failing __tostring). Never
 * raises. */
int lg_log_error(lg_rt *rt, const char *what, lua_State *co, int status);

/* Logs an error of a kind that a flood of work can repeat, such as a
 * refusal for lack of memory: at most one line a second per kind (fl)
 * and state, which says how many were left out before it. Never raises. */
void lg_log_flood(lg_rt *rt, lg_flood *fl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* [-0, +0, m] Makes the metatable of a userdata only C sees, with __gc
 * and __close (each may be NULL), hidden from getmetatable, under key. */
void lg_hidden_mt(lua_State *L, const char *key, lua_CFunction gc,
                  lua_CFunction close);

/* [-0, +0, m] Registers the type name (luaL_newmetatable, so errors name
 * it) with the metamethods meta and, when methods is not NULL, an __index
 * table of methods. A second call changes nothing. */
void lg_class(lua_State *L, const char *name, const luaL_Reg *meta,
              const luaL_Reg *methods);

#endif
