/*
 * preempt.c: the watchdog of late callbacks (preempt.h).
 *
 * The watchdog thread sleeps a tick (half the smallest callback_slice,
 * a quarter of the smallest max_callback_time, at least 1 ms) and looks at
 * every runtime: a run it sees going on since at least a slice is signalled
 * (SIGURG to the runtime's thread). After a second with no run anywhere it
 * dozes, looking once a second, until a resume rouses it.
 *
 * Everything that touches a lua_State happens on the runtime's own thread:
 * the signal handler sets the hook on the thread being resumed there, and
 * the hook (Lua calls it between instructions) yields or raises.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "options.h"
#include "preempt.h"

#define PREEMPT_SIGNAL SIGURG
#define RETRY_COUNT 1000 /* instructions between tries where none can yield */

atomic_int lg_watch_dozing;

static lg_watch watches[LG_SLOTS];
static pthread_t owners[LG_SLOTS]; /* the thread of each; under mu */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Taken first by lg_watch_open and lg_watch_close, and held while the last
 * one joins the watchdog, so a runtime opened meanwhile waits for it. */
static pthread_mutex_t life_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static pthread_t dog;
static int users, stopping;
static atomic_int running; /* the watchdog thread is */
static int top; /* one past the highest slot watched; under mu */
static struct sigaction old_action;

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- on the runtime's thread --------------------------------------------- */

static void on_hook(lua_State *L, lua_Debug *ar) {
  lg_watch *w = lg_rt_get(L)->watch;
  unsigned long run = atomic_load_explicit(&w->runs, memory_order_relaxed);
  (void)ar;
  if (atomic_load_explicit(&w->current, memory_order_relaxed) != L) {
    lua_sethook(L, NULL, 0, 0); /* left from a run that has ended */
    return;
  }
  if (atomic_load(&w->kill) == run) {
    if (lua_isyieldable(L)) { /* the resume fails the run (lg_watch_killed) */
      lua_sethook(L, NULL, 0, 0);
      lua_yield(L, 0);
      return;
    }
    /* Where nothing can yield, raise. Should the error leave the thread,
     * Lua has not turned hooks back on in it (the raise skips that), so
     * the thread is not used again (lg_watch_killed). Again in a while,
     * should the script catch the error and go on. */
    lua_sethook(L, on_hook, LUA_MASKCOUNT, RETRY_COUNT);
    luaL_error(L, LG_TOO_LONG);
  }
  if (atomic_load(&w->due) != run) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (lua_isyieldable(L)) {
    lua_sethook(L, NULL, 0, 0);
    atomic_store(&w->due, 0);
    atomic_store(&w->yielded, run);
    lua_yield(L, 0); /* the fiber goes to the end of the ready queue */
    return;
  }
  lua_sethook(L, on_hook, LUA_MASKCOUNT, RETRY_COUNT); /* cannot yield here */
}

/* The handler of PREEMPT_SIGNAL: sets the hook on the thread this OS
 * thread is resuming, if the watchdog wants that run to yield or fail.
 * lua_sethook may be called from a signal handler (lua.c does). */
static void on_signal(int sig) {
  int saved = errno;
  pthread_t self = pthread_self();
  (void)sig;
  for (int i = 1; i < LG_SLOTS; i++) {
    lg_watch *w = &watches[i];
    lua_State *cur;
    unsigned long run;
    if (!atomic_load(&w->active) || !pthread_equal(owners[i], self)) continue;
    cur = atomic_load_explicit(&w->current, memory_order_relaxed);
    run = atomic_load_explicit(&w->runs, memory_order_relaxed);
    if (cur && (atomic_load(&w->due) == run || atomic_load(&w->kill) == run))
      lua_sethook(cur, on_hook, LUA_MASKCOUNT, 1);
  }
  errno = saved;
}

/* --- the watchdog thread -------------------------------------------------- */

/* Looks at w once; returns the tick it asks for (us; 0: it asks none) and
 * sets *busy when it saw a run. Under mu. */
static long look(lg_watch *w, pthread_t owner, double now, int *busy) {
  long slice = atomic_load(&w->slice_us), limit = atomic_load(&w->limit_us);
  long tick = 0;
  if (!slice && !limit) return 0;
  if (slice) tick = slice / 2;
  if (limit && (!tick || limit / 4 < tick)) tick = limit / 4;
  unsigned long run = atomic_load_explicit(&w->runs, memory_order_relaxed);
  if (run != w->seen) {
    w->seen = run;
    w->since = now;
    *busy = 1;
  }
  if (!atomic_load_explicit(&w->current, memory_order_relaxed)) return tick;
  *busy = 1;
  double late = (now - w->since) * 1e6; /* this run */
  double spell = late + (double)atomic_load(&w->carried);
  if (limit && spell >= limit) {
    if (atomic_load(&w->kill) != run) {
      atomic_store(&w->kill, run);
      pthread_kill(owner, PREEMPT_SIGNAL);
    }
  } else if (slice && late >= slice &&
             (w->signalled_run != run || (now - w->signalled) * 1e6 >= slice)) {
    atomic_store(&w->due_late, (long)late);
    atomic_store(&w->due, run);
    w->signalled_run = run;
    w->signalled = now;
    pthread_kill(owner, PREEMPT_SIGNAL);
  }
  return tick;
}

static void *watchdog(void *arg) {
  double quiet = now_mono();
  (void)arg;
  pthread_mutex_lock(&mu);
  while (!stopping) {
    double now = now_mono();
    long tick = 0;
    int busy = 0;
    for (int i = 1; i < top; i++) {
      if (!atomic_load(&watches[i].active)) continue;
      long t = look(&watches[i], owners[i], now, &busy);
      if (t && (!tick || t < tick)) tick = t;
    }
    if (busy) quiet = now;
    if (tick && tick < 1000) tick = 1000;
    if (!tick) { /* nothing to watch: lg_watch_set wakes it */
      tick = 1000000;
    } else if (now - quiet > 1.0) { /* doze: the next resume rouses it */
      atomic_store(&lg_watch_dozing, 1);
      tick = 1000000;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (tick % 1000000) * 1000;
    ts.tv_sec += tick / 1000000 + ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&cv, &mu, &ts);
    if (!atomic_load(&lg_watch_dozing)) quiet = now_mono(); /* roused */
    atomic_store(&lg_watch_dozing, 0);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

void lg_watch_rouse(void) {
  pthread_mutex_lock(&mu);
  if (atomic_load(&lg_watch_dozing)) {
    atomic_store(&lg_watch_dozing, 0);
    pthread_cond_signal(&cv);
  }
  pthread_mutex_unlock(&mu);
}

/* Starts the watchdog and the signal's handler. Under mu. 0 or an errno. */
static int start(void) {
  struct sigaction sa;
  pthread_condattr_t ca;
  sigset_t all, old;
  int rc;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&cv, &ca);
  pthread_condattr_destroy(&ca);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(PREEMPT_SIGNAL, &sa, &old_action);
  sigfillset(&all); /* the watchdog takes no signal */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  stopping = 0;
  atomic_store(&lg_watch_dozing, 0);
  rc = pthread_create(&dog, NULL, watchdog, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) {
    sigaction(PREEMPT_SIGNAL, &old_action, NULL);
    pthread_cond_destroy(&cv);
  }
  return rc;
}

void lg_watch_open(lua_State *L, lg_rt *rt) {
  lg_watch *w = &watches[rt->slot];
  (void)L;
  pthread_mutex_lock(&life_mu);
  pthread_mutex_lock(&mu);
  users++;
  w->nruns = w->seen = w->signalled_run = 0;
  atomic_store(&w->runs, 0);
  atomic_store(&w->current, NULL);
  atomic_store(&w->due, 0);
  atomic_store(&w->kill, 0);
  atomic_store(&w->yielded, 0);
  atomic_store(&w->carried, 0);
  atomic_store(&w->slice_us, (long)(lg_defaults.callback_slice * 1e6));
  atomic_store(&w->limit_us, (long)(lg_defaults.max_callback_time * 1e6));
  owners[rt->slot] = pthread_self();
  atomic_store(&w->active, 1);
  if (rt->slot >= top) top = rt->slot + 1;
  rt->watch = w;
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&life_mu);
}

void lg_watch_close(lg_rt *rt) {
  int last;
  if (!rt->watch) return;
  pthread_mutex_lock(&life_mu);
  pthread_mutex_lock(&mu);
  atomic_store(&rt->watch->active, 0);
  atomic_store(&rt->watch->current, NULL);
  while (top > 1 && !atomic_load(&watches[top - 1].active)) top--;
  rt->watch = NULL;
  last = --users == 0 && atomic_load(&running);
  if (last) {
    stopping = 1;
    pthread_cond_signal(&cv);
  }
  pthread_mutex_unlock(&mu);
  if (last) {
    pthread_join(dog, NULL);
    sigaction(PREEMPT_SIGNAL, &old_action, NULL);
    pthread_cond_destroy(&cv);
    atomic_store(&running, 0);
  }
  pthread_mutex_unlock(&life_mu);
}

/* Starts the watchdog, once, when rt has something for it to watch: at
 * the first run of a loop, so a process that asks for no slice and no
 * limit has no thread of it. */
static void need(lg_rt *rt) {
  int rc = 0;
  if (atomic_load(&running) || (!atomic_load(&rt->watch->slice_us) &&
                                !atomic_load(&rt->watch->limit_us)))
    return;
  pthread_mutex_lock(&life_mu);
  pthread_mutex_lock(&mu);
  if (!atomic_load(&running) && users > 0) {
    rc = start();
    if (!rc) atomic_store(&running, 1);
  }
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&life_mu);
  if (rc)
    gl_log(GL_LOG_WARN, "cannot start the watchdog (%s): callbacks run "
                        "without callback_slice or max_callback_time",
           strerror(rc));
}

void lg_watch_thread(lg_rt *rt) {
  pthread_t self = pthread_self();
  if (!rt->watch) return;
  need(rt);
  if (pthread_equal(owners[rt->slot], self)) return;
  pthread_mutex_lock(&mu);
  owners[rt->slot] = self;
  pthread_mutex_unlock(&mu);
}

void lg_watch_set(lg_rt *rt, double slice, double limit) {
  if (!rt->watch) return;
  atomic_store(&rt->watch->slice_us, (long)(slice * 1e6));
  atomic_store(&rt->watch->limit_us, (long)(limit * 1e6));
  pthread_mutex_lock(&mu);
  if (atomic_load(&running)) pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  need(rt);
}

int lg_watch_pcall(lg_rt *rt, int nargs, int nres) {
  lg_watch *w = rt->watch;
  lua_State *L = rt->L;
  int st;
  if (!w || atomic_load_explicit(&w->current, memory_order_relaxed))
    return lua_pcall(L, nargs, nres, 0);
  lg_watch_begin(w, L, 0);
  st = lua_pcall(L, nargs, nres, 0); /* restores the hooks a raise stopped */
  lg_watch_end(w, 0);
  return st;
}
