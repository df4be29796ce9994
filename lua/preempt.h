/*
 * preempt.h: a callback that runs too long yields to the others, or fails
 * (preempt.c). Part of the scheduler.
 *
 * A process-wide watchdog thread looks at each runtime's resumes a few
 * times a slice. When one fiber's run has gone on for callback_slice
 * seconds, it signals the runtime's thread (SIGURG), whose handler sets a
 * count hook on the running thread, as lua.c does for SIGINT; the hook
 * yields the fiber, which runs again after what is ready (a hook in a place
 * that cannot yield tries again every few instructions). Past
 * max_callback_time, the hook raises "callback ran too long" instead.
 *
 * A resume costs three stores and a load here (lg_watch_begin/end); no hook
 * is set until a run is late, so a callback that returns in time runs
 * exactly as without this.
 */
#ifndef LG_PREEMPT_H
#define LG_PREEMPT_H

#include <stdatomic.h>

#include "runtime.h"

/* What the watchdog knows of one runtime; one per slot, never freed. */
typedef struct lg_watch {
  _Atomic(lua_State *) current; /* the thread being resumed, or NULL */
  atomic_ulong runs;            /* resumes begun */
  unsigned long nruns;          /* the same, the runtime's own copy */
  atomic_long carried; /* us the fiber ran before this run, in runs that
                          were cut for others (its spell so far) */
  atomic_ulong due;    /* the run the watchdog wants to yield (0: none) */
  atomic_long due_late; /* us that run had gone on when it was asked */
  atomic_ulong yielded; /* the last run that yielded for others */
  atomic_ulong kill;   /* the run past max_callback_time (0: none) */
  atomic_long slice_us, limit_us; /* the settings; 0: off */
  atomic_int active;   /* a runtime owns this slot */
  /* The watchdog's own. */
  unsigned long seen;  /* the run it last saw going on */
  double since;        /* when it first saw it */
  double signalled;    /* when it last signalled this run */
  unsigned long signalled_run;
} lg_watch;

extern atomic_int lg_watch_dozing;

/* Wakes the watchdog from its doze (work has started again). */
void lg_watch_rouse(void);

/* Around each resume of a fiber's thread co; spell is the time (us) it
 * ran in runs just before, each cut short for the others (0: none). */
static inline void lg_watch_begin(lg_watch *w, lua_State *co, long spell) {
  atomic_store_explicit(&w->current, co, memory_order_relaxed);
  atomic_store_explicit(&w->carried, spell, memory_order_relaxed);
  atomic_store_explicit(&w->runs, ++w->nruns, memory_order_relaxed);
  if (atomic_load_explicit(&lg_watch_dozing, memory_order_relaxed))
    lg_watch_rouse();
}

/* Returns the fiber's spell after the run: how long it has run in runs
 * cut for the others, this one included; 0 when this run ended otherwise
 * (it returned, raised or waits). */
static inline long lg_watch_end(lg_watch *w, long spell) {
  atomic_store_explicit(&w->current, NULL, memory_order_relaxed);
  if (atomic_load_explicit(&w->yielded, memory_order_relaxed) !=
      w->nruns)
    return 0;
  return spell + atomic_load_explicit(&w->due_late, memory_order_relaxed);
}

#define LG_TOO_LONG "callback ran too long (max_callback_time)"

/* After a run: whether the watchdog ended it past max_callback_time (the
 * run yielded for it, or raised LG_TOO_LONG). */
static inline int lg_watch_killed(lg_watch *w) {
  return atomic_load_explicit(&w->kill, memory_order_relaxed) == w->nruns;
}

/* Watches rt (made with slot rt->slot), from the thread that calls it. */
void lg_watch_open(lua_State *L, lg_rt *rt);

/* Stops watching rt; the last runtime stops the watchdog and puts the
 * signal's former handler back. */
void lg_watch_close(lg_rt *rt);

/* The thread that runs rt's loop now (the one the watchdog signals); at a
 * loop's start, so the watchdog starts with the first loop that has a
 * slice or a limit. */
void lg_watch_thread(lg_rt *rt);

/* Sets rt's callback_slice and max_callback_time (seconds; 0: off). */
void lg_watch_set(lg_rt *rt, double slice, double limit);

/* [-(nargs + 1), +(nres | 1), -] lua_pcall(L, nargs, nres, 0) on rt's own
 * state, watched as a run: for Lua that the runtime calls outside any fiber
 * (tls.sni and tls.alpn functions, inside a handshake). Such a run cannot
 * yield, so callback_slice does not cut it; past max_callback_time it
 * raises LG_TOO_LONG, which this pcall returns as its error. Inside a
 * watched run (a fiber's), it is a plain pcall, the outer run watched. */
int lg_watch_pcall(lg_rt *rt, int nargs, int nres);

#endif
