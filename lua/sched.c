/*
 * sched.c: the runtime of one lua_State and its coroutine scheduler.
 *
 * A fiber is a coroutine the runtime made (glisten.spawn, a timer, a served
 * connection). The registry table FIBERS maps each live fiber's thread to
 * its "glisten.fiber" userdata, which both anchors the thread and lets a C
 * function find the fiber it runs in.
 *
 * Resumes happen only where no Lua code is running: directly from a loop
 * callback, or from the ready queue, which a prepare watcher (before each
 * poll) and an idle watcher (keeping the loop from blocking while the queue
 * is not empty) drain. A wake from inside running Lua code always goes
 * through the queue, so fibers never nest.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg.h"
#include "resolve.h"
#include "log.h"

static char RT_KEY, FIBERS_KEY;

#define READY_PER_TURN 1024 /* resumes per drain; the rest wait a turn */

/* --- runtime ------------------------------------------------------------ */

lg_rt *lg_rt_get(lua_State *L) {
  lg_rt *rt;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!rt) luaL_error(L, "glisten is not loaded in this Lua state");
  return rt;
}

static void drain(lg_rt *rt);

static void on_prepare(EV_P_ ev_prepare *w, int revents) {
  (void)loop;
  (void)revents;
  drain(w->data);
}

static void on_idle(EV_P_ ev_idle *w, int revents) {
  (void)loop;
  (void)revents;
  drain(w->data);
}

/* __gc of the runtime: the last glisten object finalized (it is created
 * first), so sockets and servers have let go of their core objects. The
 * modules release theirs through their teardown hooks, the last opened
 * first; then what close() queued still goes out, and the loop ends. */
static int rt_gc(lua_State *L) {
  lg_rt *rt = lua_touserdata(L, 1);
  if (!rt->loop) return 0;
  rt->closing = 1;
  ev_timer_stop(rt->loop, &rt->drain);
  ev_timer_stop(rt->loop, &rt->deadline);
  for (int i = rt->nhooks - 1; i >= 0; i--)
    if (rt->hooks[i]->teardown) rt->hooks[i]->teardown(rt);
  gl_env_flush_close_all(&rt->env); /* what close() queued still goes out */
  if (ev_is_active(&rt->prepare)) {
    ev_ref(rt->loop);
    ev_prepare_stop(rt->loop, &rt->prepare);
  }
  ev_idle_stop(rt->loop, &rt->idle);
  gl_resolver_free(rt->resolver); /* waits for lookups still running */
  rt->resolver = NULL;
  ev_loop_destroy(rt->loop);
  rt->loop = NULL;
  free(rt->env.scratch);
  return 0;
}

/* Registers a module's hooks with rt. Returns 1 the first time, 0 when
 * they already were (a second luaopen_glisten in one state), so a module
 * sets up its part of the runtime once. */
int lg_rt_hook(lg_rt *rt, const lg_rt_hooks *h) {
  for (int i = 0; i < rt->nhooks; i++)
    if (rt->hooks[i] == h) return 0;
  if (rt->nhooks == LG_RT_HOOKS) abort(); /* a fixed set of modules */
  rt->hooks[rt->nhooks++] = h;
  return 1;
}

static long busy(lg_rt *rt) {
  long n = 0;
  for (int i = 0; i < rt->nhooks; i++)
    if (rt->hooks[i]->busy) n += rt->hooks[i]->busy(rt);
  return n;
}

static void on_drained(EV_P_ ev_timer *w, int revents) {
  lg_rt *rt = w->data;
  (void)revents;
  if (busy(rt) == 0) {
    ev_timer_stop(EV_A_ w);
    rt->stopped = 1;
    ev_break(EV_A_ EVBREAK_ALL);
  }
}

static void on_grace_up(EV_P_ ev_timer *w, int revents) {
  lg_rt *rt = w->data;
  (void)revents;
  if (!rt->pool) /* a pool's workers end quietly: their host says it */
    gl_log(GL_LOG_WARN, "connections still open after the grace period "
                        "and the flush; ending");
  ev_timer_stop(EV_A_ & rt->drain);
  rt->stopped = 1;
  ev_break(EV_A_ EVBREAK_ALL);
}

/* The one shutdown, for the command's signals and a pool's workers: every
 * module stops taking new work and ends what runs within grace seconds
 * (servers close with grace, pools pass it to their workers); the loop
 * ends (lg_run returns) once no module is busy, or at the latest grace +
 * LG_LINGER + 1 seconds from now, when closed sockets have had their time
 * to flush. A second call changes nothing. */
void lg_rt_shutdown(lg_rt *rt, double grace) {
  if (ev_is_active(&rt->deadline)) return;
  for (int i = 0; i < rt->nhooks; i++)
    if (rt->hooks[i]->shutdown) rt->hooks[i]->shutdown(rt, grace);
  ev_timer_init(&rt->drain, on_drained, 0., 0.02);
  rt->drain.data = rt;
  ev_timer_again(rt->loop, &rt->drain);
  ev_timer_init(&rt->deadline, on_grace_up, grace + LG_LINGER + 1, 0.);
  rt->deadline.data = rt;
  ev_timer_start(rt->loop, &rt->deadline);
}

/* [-0, +0, m] Creates the runtime of L's state, once. */
lg_rt *lg_rt_open(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  lg_rt *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (rt) return rt;
  rt = lua_newuserdatauv(L, sizeof *rt, 0);
  memset(rt, 0, sizeof *rt);
  lua_newtable(L);
  lua_pushcfunction(L, rt_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  rt->env.scratch = malloc(GL_READ_CHUNK);
  rt->loop = rt->env.scratch ? ev_loop_new(EVFLAG_AUTO) : NULL;
  if (!rt->loop) {
    free(rt->env.scratch);
    luaL_error(L, "glisten: cannot create an event loop");
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  rt->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  rt->env.loop = rt->loop;
  rt->env.stats = &rt->stats;
  ev_prepare_init(&rt->prepare, on_prepare);
  rt->prepare.data = rt;
  ev_idle_init(&rt->idle, on_idle);
  rt->idle.data = rt;
  rt->worker_id = rt->worker_count = 1;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &FIBERS_KEY);
  return rt;
}

/* [-0, +0, v] A number of seconds at idx (def when none or nil); NaN
 * raises, as it compares false with everything and would wait forever. */
double lg_opt_seconds(lua_State *L, int idx, double def) {
  return lua_isnoneornil(L, idx) ? def : lg_check_seconds(L, idx);
}

/* [-0, +0, v] The same, for an argument that must be there. */
double lg_check_seconds(lua_State *L, int idx) {
  double t = luaL_checknumber(L, idx);
  if (isnan(t)) luaL_argerror(L, idx, "seconds must be a number, not NaN");
  return t;
}

double lg_deadline(lg_rt *rt, double timeout) {
  if (timeout < 0 || isnan(timeout)) return -1;
  if (!rt->in_loop) ev_now_update(rt->loop);
  return ev_now(rt->loop) + timeout;
}

/* --- wait queues and the ready queue ---------------------------------- */

static void q_push(lg_waitq *q, lg_fiber *f) {
  f->q = q;
  f->next = NULL;
  f->prev = q->tail;
  if (q->tail)
    q->tail->next = f;
  else
    q->head = f;
  q->tail = f;
}

static void q_remove(lg_fiber *f) {
  lg_waitq *q = f->q;
  if (!q) return;
  if (f->prev)
    f->prev->next = f->next;
  else
    q->head = f->next;
  if (f->next)
    f->next->prev = f->prev;
  else
    q->tail = f->prev;
  f->q = NULL;
  f->prev = f->next = NULL;
}

/* The watchers that drain the ready queue run only while it is not empty
 * (none costs anything per loop turn otherwise): the prepare watcher runs
 * queued fibers before each poll, even when events keep coming, and the
 * idle watcher keeps the poll from blocking. Only the idle one keeps the
 * loop alive. */
static void ready_watch(lg_rt *rt, int on) {
  if (on) {
    ev_idle_start(rt->loop, &rt->idle);
    ev_prepare_start(rt->loop, &rt->prepare);
    ev_unref(rt->loop);
  } else {
    ev_idle_stop(rt->loop, &rt->idle);
    ev_ref(rt->loop);
    ev_prepare_stop(rt->loop, &rt->prepare);
  }
}

static void ready_push(lg_fiber *f) {
  lg_rt *rt = f->rt;
  if (f->queued) return;
  f->queued = 1;
  f->rnext = NULL;
  if (rt->ready_tail)
    rt->ready_tail->rnext = f;
  else
    rt->ready = f;
  rt->ready_tail = f;
  if (!ev_is_active(&rt->idle)) ready_watch(rt, 1);
}

static void ready_remove(lg_fiber *f) {
  lg_rt *rt = f->rt;
  lg_fiber **p, *prev = NULL;
  if (!f->queued) return;
  for (p = &rt->ready; *p; prev = *p, p = &(*p)->rnext) {
    if (*p == f) {
      *p = f->rnext;
      if (rt->ready_tail == f) rt->ready_tail = prev;
      break;
    }
  }
  f->queued = 0;
  f->rnext = NULL;
}

static void disarm(lg_fiber *f) {
  q_remove(f);
  ev_timer_stop(f->rt->loop, &f->timer);
  f->waiting = 0;
}

/* --- fibers --------------------------------------------------------------- */

static void on_fiber_timer(EV_P_ ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  lg_wake(w->data, LG_WAKE_TIMEOUT);
}

static void fiber_init(lg_fiber *f, lg_rt *rt, lua_State *th, int managed) {
  memset(f, 0, sizeof *f);
  f->rt = rt;
  f->th = th;
  f->managed = managed;
  ev_init(&f->timer, on_fiber_timer);
  f->timer.data = f;
}

static int fiber_gc(lua_State *L) {
  lg_fiber *f = lua_touserdata(L, 1);
  if (f->rt && f->rt->loop) {
    disarm(f);
    ready_remove(f);
  }
  return 0;
}

/* [-0, +0, -] The fiber L runs in, or NULL for a thread glisten does not
 * manage (the main thread, a coroutine of the script's own). */
lg_fiber *lg_current(lua_State *L) {
  lg_fiber *f;
  if (lua_pushthread(L)) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &FIBERS_KEY);
  lua_insert(L, -2);
  lua_rawget(L, -2);
  f = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return f;
}

/* [-0, +0, m] Makes a fiber with an empty thread, registered but not
 * started; done runs when its function ends (NULL: errors are logged). */
lg_fiber *lg_fiber_new(lua_State *L, lg_done_fn *done) {
  lg_rt *rt = lg_rt_get(L);
  lua_State *co = lua_newthread(L);
  lg_fiber *f = lua_newuserdatauv(L, sizeof *f, 0);
  fiber_init(f, rt, co, 1);
  luaL_setmetatable(L, LG_FIBER);
  f->done = done;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &FIBERS_KEY);
  lua_pushvalue(L, -3);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3); /* FIBERS[co] = f */
  lua_pop(L, 3);     /* FIBERS, f, co */
  return f;
}

/* [-(narg+1), +0, m] Makes a fiber of the function below the narg values on
 * top of L and queues its start with those values. */
lg_fiber *lg_spawn(lua_State *L, int narg, lg_done_fn *done) {
  lg_fiber *f = lg_fiber_new(L, done);
  f->rt->started_work = 1;
  if (!lua_checkstack(f->th, narg + 1)) {
    lg_fiber_release(f);
    luaL_error(L, "too many arguments (%d), or no memory for them", narg);
  }
  lua_xmove(L, f->th, narg + 1);
  f->nargs = narg;
  ready_push(f);
  return f;
}

/* Forgets a fiber whose function has ended; its thread may be collected. */
void lg_fiber_release(lg_fiber *f) {
  lua_State *L = f->rt->L;
  disarm(f);
  ready_remove(f);
  if (f->rt->closing) return;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &FIBERS_KEY);
  lua_pushthread(f->th);
  lua_xmove(f->th, L, 1);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  f->th = NULL;
}

/* [-1, +1, e] (on L) Replaces the error object on top of co with its
 * message and traceback, as a string on L. Runs protected (see below):
 * the object's __tostring may raise. */
static int traceback_p(lua_State *L) {
  lua_State *co = lua_touserdata(L, 1);
  const char *msg = lua_tostring(co, -1);
  if (!msg) {
    if (luaL_callmeta(co, -1, "__tostring") && lua_type(co, -1) == LUA_TSTRING)
      msg = lua_tostring(co, -1);
    else
      msg = lua_pushfstring(co, "(error object is a %s value)",
                            luaL_typename(co, -1));
  }
  luaL_traceback(L, co, msg, 0);
  return 1;
}

/* [-0, +(0|1), -] Returns the message and traceback of co's failed run,
 * pushed onto co (*st is LUA_OK); or, when that fails (*st is why: a failing
 * __tostring, no memory left), a description written to buf. Never
 * raises. */
static const char *traceback(lua_State *co, lg_rt *rt, char *buf,
                             size_t size, int *status) {
  lua_State *L = rt->L;
  int top = lua_gettop(co), st;
  lua_pushcfunction(L, traceback_p);
  lua_pushlightuserdata(L, co);
  *status = st = lua_pcall(L, 1, 1, 0);
  if (st == LUA_OK) {
    lua_settop(co, top);
    lua_xmove(L, co, 1);
    return lua_tostring(co, -1);
  }
  lua_pop(L, 1);
  lua_settop(co, top);
  if (st == LUA_ERRMEM)
    snprintf(buf, size, "%s (no memory left for a traceback)",
             lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1)
                                             : "not enough memory");
  else
    snprintf(buf, size, "(error object is a %s value whose __tostring "
             "failed)", luaL_typename(co, -1));
  return buf;
}

/* Logs the error on top of co and counts it. Returns LUA_OK when its
 * traceback, a string, is now on top of co; else why it could not be made
 * (LUA_ERRMEM: no memory left; another code: a failing __tostring). Never
 * raises. */
int lg_log_error(lg_rt *rt, const char *what, lua_State *co, int status) {
  char buf[256];
  int st;
  const char *msg = traceback(co, rt, buf, sizeof buf, &st);
  (void)status;
  GL_STAT_ADD(rt->stats.errors, 1);
  gl_log(GL_LOG_ERROR, "%s: %s", what, msg);
  return st;
}

/* Logs an error of a kind (LG_FLOOD_*) that a flood of work can repeat,
 * such as a refusal for lack of memory: at most one line a second per kind
 * and state, which says how many were left out before it. Never raises. */
void lg_log_flood(lg_rt *rt, int kind, const char *fmt, ...) {
  char msg[256];
  double now = ev_now(rt->loop);
  va_list ap;
  if (rt->flood[kind].at && now - rt->flood[kind].at < 1.0) {
    rt->flood[kind].skipped++;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (rt->flood[kind].skipped)
    gl_log(GL_LOG_ERROR, "%s (and %lu more like it left out)", msg,
           rt->flood[kind].skipped);
  else
    gl_log(GL_LOG_ERROR, "%s", msg);
  rt->flood[kind].at = now;
  rt->flood[kind].skipped = 0;
}

static void resume(lg_fiber *f) {
  lg_rt *rt = f->rt;
  lua_State *co = f->th;
  int nres, nargs = f->nargs, st;
  f->nargs = 0;
  rt->running++;
  st = lua_resume(co, rt->L, nargs, &nres);
  rt->running--;
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    /* A bare coroutine.yield(): not a glisten wait, so run again next turn. */
    if (!f->waiting) ready_push(f);
    return;
  }
  if (f->done) {
    f->done(f, st);
    return;
  }
  if (st != LUA_OK) lg_log_error(rt, "error in spawned function", co, st);
  lg_fiber_release(f);
}

static void drain(lg_rt *rt) {
  int n = 0;
  rt->in_loop++;
  while (rt->ready && n++ < READY_PER_TURN) {
    lg_fiber *f = rt->ready;
    rt->ready = f->rnext;
    if (!rt->ready) rt->ready_tail = NULL;
    f->queued = 0;
    f->rnext = NULL;
    resume(f);
  }
  rt->in_loop--;
  if (!rt->ready && ev_is_active(&rt->idle)) ready_watch(rt, 0);
}

/* Ends f's wait (if it waits) with why and resumes it: at once when called
 * from a loop callback, else through the ready queue. */
void lg_wake(lg_fiber *f, int why) {
  lg_rt *rt = f->rt;
  if (!f->waiting) return;
  disarm(f);
  f->woken = why;
  if (!f->managed) return; /* its blocking loop sees waiting == 0 */
  if (rt->in_loop && !rt->running && !rt->defer)
    resume(f);
  else
    ready_push(f);
}

void lg_wake_all(lg_waitq *q) {
  lg_waitq mine = *q;
  lg_fiber *f;
  q->head = q->tail = NULL;
  for (f = mine.head; f; f = f->next) f->q = &mine;
  while ((f = mine.head)) lg_wake(f, LG_WAKE_EVENT);
}

/* Cuts short a suspended fiber: cancels its wait, closes its pending
 * to-be-closed variables, and leaves its thread empty and ready for a new
 * function. Returns 0 if f is running (it cannot be cut short). */
int lg_fiber_kill(lg_fiber *f) {
  if (!f->th || (!f->waiting && !f->queued)) return 0;
  if (lua_status(f->th) != LUA_YIELD && !f->queued) return 0;
  disarm(f);
  ready_remove(f);
  lua_resetthread(f->th);
  lua_settop(f->th, 0);
  f->nargs = 0;
  return 1;
}

/* Queues f, whose thread holds a function and nargs values, to start. */
void lg_fiber_start(lg_fiber *f, int nargs) {
  f->nargs = nargs;
  ready_push(f);
}

/* Starts f like lg_fiber_start, but at once when called from a loop
 * callback (the hot path: input for a parked connection). */
void lg_fiber_go(lg_fiber *f, int nargs) {
  lg_rt *rt = f->rt;
  f->nargs = nargs;
  if (rt->in_loop && !rt->running && !rt->defer)
    resume(f);
  else
    ready_push(f);
}

/* A fiber from the pool (its thread empty and ready for a function), or
 * NULL when the pool is empty. */
lg_fiber *lg_fiber_pooled(lg_rt *rt) {
  lg_fiber *f = rt->fpool;
  if (!f) return NULL;
  rt->fpool = f->rnext;
  rt->nfpool--;
  f->rnext = NULL;
  return f;
}

/* Gives a fiber whose function has ended back to the pool, for a later
 * connection callback to run in; past LG_FIBER_POOL, it is released. */
void lg_fiber_pool_put(lg_fiber *f) {
  lg_rt *rt = f->rt;
  disarm(f);
  ready_remove(f);
  if (rt->closing || rt->nfpool >= LG_FIBER_POOL || !f->th ||
      lua_status(f->th) != LUA_OK) {
    lg_fiber_release(f);
    return;
  }
  lua_settop(f->th, 0);
  f->ud = NULL;
  f->nargs = 0;
  f->rnext = rt->fpool;
  rt->fpool = f;
  rt->nfpool++;
}

int lg_woken(lua_KContext ctx) {
  return ctx ? ((lg_fiber *)ctx)->woken : LG_WAKE_NONE;
}

/* Waits in q (NULL: only the deadline or lg_wake ends it) until deadline
 * (absolute ev_now time; < 0: none). In a fiber: yields, and k runs when the
 * fiber is resumed, with a ctx for lg_woken. Elsewhere: runs the loop until
 * the wait ends and returns LG_WAKE_EVENT or LG_WAKE_TIMEOUT. Raises when
 * the caller can neither yield nor run the loop. */
int lg_wait(lua_State *L, lg_waitq *q, double deadline, lua_KFunction k) {
  return lg_wait_in(L, lg_current(L), q, deadline, k);
}

/* lg_wait for a caller that knows its fiber (NULL: not a fiber). */
int lg_wait_in(lua_State *L, lg_fiber *f, lg_waitq *q, double deadline,
               lua_KFunction k) {
  lg_rt *rt = f ? f->rt : lg_rt_get(L);
  lg_fiber tmp;
  double after = 0;
  if (deadline >= 0) {
    after = deadline - ev_now(rt->loop);
    if (after < 0) after = 0;
  }
  if (f) {
    if (!lua_isyieldable(L))
      luaL_error(L, "cannot wait here (inside a metamethod or a C function "
                    "that does not allow yields)");
    f->waiting = 1;
    f->woken = LG_WAKE_NONE;
    if (q) q_push(q, f);
    if (deadline >= 0) {
      ev_timer_set(&f->timer, after, 0.);
      ev_timer_start(rt->loop, &f->timer);
    }
    return lua_yieldk(L, 0, (lua_KContext)f, k);
  }
  if (rt->running || rt->closing)
    luaL_error(L, "cannot wait in a coroutine glisten does not manage "
                  "(start it with glisten.spawn)");
  fiber_init(&tmp, rt, L, 0);
  tmp.waiting = 1;
  if (q) q_push(q, &tmp);
  if (deadline >= 0) {
    ev_timer_set(&tmp.timer, after, 0.);
    ev_timer_start(rt->loop, &tmp.timer);
  }
  rt->in_loop++;
  while (tmp.waiting) {
    if (!ev_run(rt->loop, EVRUN_ONCE) && tmp.waiting) {
      disarm(&tmp);
      rt->in_loop--;
      luaL_error(L, "wait can never end: nothing left in the loop to end it");
    }
  }
  rt->in_loop--;
  return tmp.woken;
}

void lg_check_loop_allowed(lua_State *L, const char *fn) {
  lg_rt *rt = lg_rt_get(L);
  if (rt->running || lg_current(L))
    luaL_error(L, "glisten.%s cannot be called from inside a glisten "
                  "callback or coroutine", fn);
}

void lg_run(lg_rt *rt) {
  rt->stopped = 0;
  rt->in_loop++;
  while (!rt->stopped && ev_run(rt->loop, 0)) {
  }
  rt->in_loop--;
}

/* --- timers ----------------------------------------------------------- */

typedef struct lg_timer {
  lg_rt *rt;
  ev_timer w;
  int ref;       /* anchor while armed */
  int cancelled; /* a run already queued must not start */
} lg_timer;

static void timer_disarm(lg_timer *t) {
  ev_timer_stop(t->rt->loop, &t->w);
  if (t->ref != LUA_NOREF && !t->rt->closing) {
    luaL_unref(t->rt->L, LUA_REGISTRYINDEX, t->ref);
  }
  t->ref = LUA_NOREF;
}

static int timer_run_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* The body of a timer's fiber: calls the timer's function unless the timer
 * was cancelled after this run was queued. */
static int timer_run(lua_State *L) {
  lg_timer *t = lua_touserdata(L, 1);
  if (t->cancelled) return 0;
  lua_getiuservalue(L, 1, 1);
  lua_callk(L, 0, 0, 0, timer_run_k);
  return 0;
}

static void timer_done(lg_fiber *f, int status) {
  if (status != LUA_OK) lg_log_error(f->rt, "error in timer", f->th, status);
  lg_fiber_release(f);
}

static int timer_fire(lua_State *L) {
  lg_timer *t = lua_touserdata(L, 1);
  lua_pushcfunction(L, timer_run);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lg_spawn(L, 1, timer_done);
  if (t->w.repeat == 0) timer_disarm(t); /* only once its run is queued */
  return 0;
}

#define TIMER_RETRY 0.1 /* seconds before a timer that could not run retries */

static void on_timer(EV_P_ ev_timer *w, int revents) {
  lg_timer *t = w->data;
  lua_State *L = t->rt->L;
  (void)revents;
  if (t->ref == LUA_NOREF) return;
  lua_pushcfunction(L, timer_fire);
  lua_pushlightuserdata(L, t);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* no memory for its coroutine: a one-shot timer tries again shortly,
     * so the run that would free memory is not lost */
    GL_STAT_ADD(t->rt->stats.errors, 1);
    lg_log_flood(t->rt, LG_FLOOD_TIMER, "timer: cannot run yet: %s",
                 lua_tostring(L, -1));
    lua_pop(L, 1);
    if (t->w.repeat == 0) {
      ev_timer_set(&t->w, TIMER_RETRY, 0.);
      ev_timer_start(loop, &t->w);
    }
  }
}

static int new_timer(lua_State *L, int repeat) {
  lg_rt *rt = lg_rt_get(L);
  double s = lg_check_seconds(L, 1);
  rt->started_work = 1;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s < 0 || isnan(s)) luaL_argerror(L, 1, "seconds must be >= 0");
  if (repeat && s <= 0) luaL_argerror(L, 1, "interval must be > 0");
  lg_timer *t = lua_newuserdatauv(L, sizeof *t, 1);
  t->rt = rt;
  t->ref = LUA_NOREF;
  t->cancelled = 0;
  luaL_setmetatable(L, LG_TIMER);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  ev_timer_init(&t->w, on_timer, s, repeat ? s : 0.);
  t->w.data = t;
  if (!rt->in_loop) ev_now_update(rt->loop);
  ev_timer_start(rt->loop, &t->w);
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int glisten_after(lua_State *L) { return new_timer(L, 0); }
static int glisten_every(lua_State *L) { return new_timer(L, 1); }

static int timer_cancel(lua_State *L) {
  lg_timer *t = luaL_checkudata(L, 1, LG_TIMER);
  int was = t->ref != LUA_NOREF;
  t->cancelled = 1;
  timer_disarm(t);
  lua_pushboolean(L, was);
  return 1;
}

static int timer_gc(lua_State *L) {
  lg_timer *t = luaL_checkudata(L, 1, LG_TIMER);
  if (t->rt->loop) ev_timer_stop(t->rt->loop, &t->w);
  return 0;
}

/* --- module functions -------------------------------------------------- */

static int glisten_spawn(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lg_fiber *f = lg_spawn(L, n - 1, NULL);
  lua_pushthread(f->th);
  lua_xmove(f->th, L, 1);
  return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

static int glisten_sleep(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  double s = lg_check_seconds(L, 1);
  lg_wait(L, NULL, lg_deadline(rt, s > 0 ? s : 0), sleep_k);
  return 0;
}

static int glisten_now(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  if (!rt->in_loop) ev_now_update(rt->loop);
  lua_pushnumber(L, ev_now(rt->loop));
  return 1;
}

static int glisten_run(lua_State *L) {
  lg_check_loop_allowed(L, "run");
  lg_run(lg_rt_get(L));
  return 0;
}

static void on_step_timeout(EV_P_ ev_timer *w, int revents) {
  (void)loop;
  (void)w;
  (void)revents;
}

static int glisten_step(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  double timeout = lg_opt_seconds(L, 1, 0);
  ev_timer t;
  int active;
  lg_check_loop_allowed(L, "step");
  rt->in_loop++;
  if (timeout > 0) {
    ev_timer_init(&t, on_step_timeout, timeout, 0.);
    ev_timer_start(rt->loop, &t);
    ev_unref(rt->loop);
    active = ev_run(rt->loop, EVRUN_ONCE);
    ev_ref(rt->loop);
    ev_timer_stop(rt->loop, &t);
  } else {
    active = ev_run(rt->loop, EVRUN_NOWAIT);
  }
  drain(rt);
  rt->in_loop--;
  lua_pushboolean(L, active || rt->ready);
  return 1;
}

static int glisten_stop(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  rt->stopped = 1;
  ev_break(rt->loop, EVBREAK_ALL);
  return 0;
}

static const luaL_Reg sched_funcs[] = {{"spawn", glisten_spawn},
                                       {"sleep", glisten_sleep},
                                       {"after", glisten_after},
                                       {"every", glisten_every},
                                       {"now", glisten_now},
                                       {"run", glisten_run},
                                       {"step", glisten_step},
                                       {"stop", glisten_stop},
                                       {NULL, NULL}};

/* [-0, +0, m] Adds the scheduler's functions to the module table on top. */
int lg_sched_open(lua_State *L) {
  luaL_newmetatable(L, LG_FIBER);
  lua_pushcfunction(L, fiber_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LG_TIMER);
  lua_pushcfunction(L, timer_gc);
  lua_setfield(L, -2, "__gc");
  lua_newtable(L);
  lua_pushcfunction(L, timer_cancel);
  lua_setfield(L, -2, "cancel");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, sched_funcs, 0);
  return 0;
}
