/*
 * fiber.h: the scheduler. A fiber is a coroutine the runtime made
 * (glisten.spawn, a timer, a served connection's callbacks).
 *
 * A blocking-style call (receive, accept, sleep, ...) waits through
 * lg_wait: inside a fiber it yields; in any other thread (the main chunk of
 * a plain script) it runs the loop until the wait ends. The same
 * continuation function serves both, so each call is written once.
 *
 * Resumes happen only where no Lua code runs: from a loop callback, or from
 * the ready queue, run before each poll. A wake from inside running Lua
 * code always goes through the queue, so fibers never nest.
 */
#ifndef LG_FIBER_H
#define LG_FIBER_H

#include "runtime.h"

#define LG_FIBER "glisten.fiber"
#define LG_SPARE_FIBERS 64 /* fibers a runtime keeps for reuse */

/* Why a wait ended. */
enum { LG_WAKE_NONE = 0, LG_WAKE_EVENT, LG_WAKE_TIMEOUT };

/* Fibers waiting for one thing, first come first served. */
typedef struct lg_waitq {
  lg_fiber *head, *tail;
} lg_waitq;

/* Called when a fiber's function returns (status LUA_OK) or raises (status
 * is the error code; the message is on top of f->th). */
typedef void lg_done_fn(lg_fiber *f, int status);

struct lg_fiber {
  lg_rt *rt;
  lua_State *th;
  lg_done_fn *done; /* NULL: log errors and forget */
  void *ud;         /* its user's: a served connection's socket */
  int waiting;      /* suspended in lg_wait */
  /* The scheduler's own. */
  int managed;  /* 0: the stack-allocated waiter of an unmanaged thread */
  int woken;    /* LG_WAKE_* of the last wait */
  int queued;   /* in the ready queue */
  unsigned turn; /* the runtime's turn when it was queued */
  long spell;   /* us it has run in runs cut short for others (preempt.h) */
  int worn;     /* its thread is not to be used again (preempt.h) */
  int nargs;    /* values to pass at the next resume */
  lg_waitq *q;  /* the queue it waits in, or NULL */
  lg_fiber *prev, *next; /* links in q */
  lg_fiber *rnext;       /* link in the ready queue, or among the spares */
  ev_timer timer;        /* the wait's timeout */
};

/* [-0, +0, -] The fiber L runs in, or NULL for a thread glisten does not
 * manage (the main thread, a coroutine of the script's own). */
lg_fiber *lg_current(lua_State *L);

/* [-0, +0, m] Makes a fiber with an empty thread, registered but not
 * started; done runs when its function ends (NULL: errors are logged). */
lg_fiber *lg_fiber_new(lua_State *L, lg_done_fn *done);

/* [-(narg+1), +0, m] Makes a fiber of the function below the narg values on
 * top of L and queues its start with those values. */
lg_fiber *lg_spawn(lua_State *L, int narg, lg_done_fn *done);

/* Forgets a fiber whose function has ended; its thread may be collected. */
void lg_fiber_release(lg_fiber *f);

/* Queues f, whose thread holds a function and nargs values, to start. */
void lg_fiber_start(lg_fiber *f, int nargs);

/* Starts f like lg_fiber_start, but at once when called from a loop
 * callback (the hot path: input for an idle connection). */
void lg_fiber_go(lg_fiber *f, int nargs);

/* Cuts short a suspended fiber: cancels its wait, closes its pending
 * to-be-closed variables, and leaves its thread empty and ready for a new
 * function. Returns 0 if f is running (it cannot be cut short). */
int lg_fiber_kill(lg_fiber *f);

/* A spare fiber (its thread empty and ready for a function), or NULL when
 * there is none. */
lg_fiber *lg_fiber_spare(lg_rt *rt);

/* Keeps a fiber whose function has ended as a spare, for a later
 * connection callback to run in; past LG_SPARE_FIBERS, it is released. */
void lg_fiber_retire(lg_fiber *f);

/* Waits in q (NULL: only the deadline or lg_wake ends it) until deadline
 * (absolute ev_now time; < 0: none). In a fiber: yields, and k runs when the
 * fiber is resumed, with a ctx for lg_woken. Elsewhere: runs the loop until
 * the wait ends and returns LG_WAKE_EVENT or LG_WAKE_TIMEOUT. Raises when
 * the caller can neither yield nor run the loop. */
int lg_wait(lua_State *L, lg_waitq *q, double deadline, lua_KFunction k);

/* lg_wait for a caller that knows its fiber (NULL: not a fiber). */
int lg_wait_in(lua_State *L, lg_fiber *f, lg_waitq *q, double deadline,
               lua_KFunction k);

/* Why the wait of the continuation's ctx ended (LG_WAKE_*). */
int lg_woken(lua_KContext ctx);

/* Ends f's wait (if it waits) with why and resumes it: at once when called
 * from a loop callback, else through the ready queue. */
void lg_wake(lg_fiber *f, int why);

/* Wakes every fiber of q, in order. */
void lg_wake_all(lg_waitq *q);

/* Wakes the first fiber of q, if any. */
void lg_wake_first(lg_waitq *q);

/* Whether no fiber waits in q. */
int lg_waitq_empty(const lg_waitq *q);

/* Between lg_defer_begin and its lg_defer_end, wakes go through the ready
 * queue: for a caller that wakes several fibers, or must run no Lua. */
void lg_defer_begin(lg_rt *rt);
void lg_defer_end(lg_rt *rt);

/* The object that holds q is being collected (only at lua_close can
 * fibers still wait then): its fibers forget q. */
void lg_waitq_orphan(lg_waitq *q);

/* Runs the loop until glisten.stop() or a shutdown ends it, or nothing is
 * left to run. */
void lg_run(lg_rt *rt);

/* [-0, +0, v] Raises unless the loop may be run from L (glisten.fn). */
void lg_check_loop_allowed(lua_State *L, const char *fn);

/* [-0, +0, m] Registers the fiber type, and adds spawn, sleep, now, run,
 * step and stop to the module table on top. */
int lg_fiber_open(lua_State *L);

/* The scheduler's part of the runtime (runtime.c calls these). */
void lg_sched_init(lua_State *L, lg_rt *rt);
void lg_sched_close(lg_rt *rt);

#endif
