/*
 * fiber.c: the scheduler (fiber.h): wait queues, the ready queue, fibers
 * and their spares, waits and wakes; glisten.spawn, sleep, now, run, step
 * and stop.
 *
 * The registry table FIBERS maps each live fiber's thread to its
 * "glisten.fiber" userdata, which both anchors the thread and lets a C
 * function find the fiber it runs in (lg_current).
 *
 * The ready queue runs from a prepare watcher (before each poll) and an
 * idle watcher (keeping the loop from blocking while the queue is not
 * empty), both active only while it is not empty.
 */
#include <string.h>

#include "fiber.h"
#include "preempt.h"

static char FIBERS_KEY;

#define READY_PER_TURN 1024 /* resumes per turn; the rest wait a turn */

static void run_ready(lg_rt *rt);

static void on_prepare(EV_P_ ev_prepare *w, int revents) {
  (void)loop;
  (void)revents;
  run_ready(w->data);
}

static void on_idle(EV_P_ ev_idle *w, int revents) {
  (void)loop;
  (void)revents;
  run_ready(w->data);
}

/* [-0, +0, m] The scheduler's part of a new runtime. */
void lg_sched_init(lua_State *L, lg_rt *rt) {
  ev_prepare_init(&rt->prepare, on_prepare);
  rt->prepare.data = rt;
  ev_idle_init(&rt->idle, on_idle);
  rt->idle.data = rt;
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &FIBERS_KEY);
}

/* The scheduler's part of a runtime's end: its watchers leave the loop. */
void lg_sched_close(lg_rt *rt) {
  if (ev_is_active(&rt->prepare)) {
    ev_ref(rt->loop);
    ev_prepare_stop(rt->loop, &rt->prepare);
  }
  ev_idle_stop(rt->loop, &rt->idle);
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

/* The watchers that run the ready queue are active only while it is not
 * empty (none costs anything per loop turn otherwise): the prepare watcher
 * runs queued fibers before each poll, even when events keep coming, and
 * the idle watcher keeps the poll from blocking. Only the idle one keeps the
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
  f->turn = rt->turn;
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

static void resume(lg_fiber *f) {
  lg_rt *rt = f->rt;
  lua_State *co = f->th;
  int nres, nargs = f->nargs, st;
  f->nargs = 0;
  rt->running++;
  lg_watch_begin(rt->watch, co, f->spell);
  st = lua_resume(co, rt->L, nargs, &nres);
  f->spell = lg_watch_end(rt->watch, f->spell);
  rt->running--;
  if (st != LUA_OK && lg_watch_killed(rt->watch)) { /* max_callback_time */
    if (st != LUA_YIELD) {
      f->worn = 1; /* raised from the hook: no hook runs in its thread now */
    } else if (!f->waiting) { /* yielded for it: the run fails here */
      lua_pop(co, nres);
      nres = 0;
      lua_pushliteral(co, LG_TOO_LONG);
      st = LUA_ERRRUN;
    }
  }
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

/* Runs the fibers queued before this turn (those queued while it runs,
 * a fiber that yielded included, wait for the next one: I/O comes
 * between). */
static void run_ready(lg_rt *rt) {
  int n = 0;
  unsigned turn = ++rt->turn;
  rt->in_loop++;
  while (rt->ready && rt->ready->turn != turn && n++ < READY_PER_TURN) {
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
  f->spell = 0;
  return 1;
}

/* Queues f, whose thread holds a function and nargs values, to start. */
void lg_fiber_start(lg_fiber *f, int nargs) {
  f->nargs = nargs;
  ready_push(f);
}

/* Starts f like lg_fiber_start, but at once when called from a loop
 * callback (the hot path: input for an idle connection). */
void lg_fiber_go(lg_fiber *f, int nargs) {
  lg_rt *rt = f->rt;
  f->nargs = nargs;
  if (rt->in_loop && !rt->running && !rt->defer)
    resume(f);
  else
    ready_push(f);
}

/* A spare fiber (its thread empty and ready for a function), or NULL
 * when there is none. */
lg_fiber *lg_fiber_spare(lg_rt *rt) {
  lg_fiber *f = rt->spare;
  if (!f) return NULL;
  rt->spare = f->rnext;
  rt->nspare--;
  f->rnext = NULL;
  return f;
}

/* Keeps a fiber whose function has ended as a spare, for a later
 * connection callback to run in; past LG_SPARE_FIBERS, it is released. */
void lg_fiber_retire(lg_fiber *f) {
  lg_rt *rt = f->rt;
  disarm(f);
  ready_remove(f);
  if (rt->closing || rt->nspare >= LG_SPARE_FIBERS || !f->th || f->worn ||
      lua_status(f->th) != LUA_OK) {
    lg_fiber_release(f);
    return;
  }
  lua_settop(f->th, 0);
  f->ud = NULL;
  f->nargs = 0;
  f->spell = 0;
  f->rnext = rt->spare;
  rt->spare = f;
  rt->nspare++;
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
  lg_watch_thread(rt);
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
  rt->stopped = rt->overdue = 0;
  lg_watch_thread(rt);
  rt->in_loop++;
  while (!rt->stopped && ev_run(rt->loop, 0)) {
  }
  rt->in_loop--;
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
  lg_watch_thread(rt);
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
  run_ready(rt);
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

void lg_defer_begin(lg_rt *rt) { rt->defer++; }
void lg_defer_end(lg_rt *rt) { rt->defer--; }

void lg_wake_first(lg_waitq *q) {
  if (q->head) lg_wake(q->head, LG_WAKE_EVENT);
}

int lg_waitq_empty(const lg_waitq *q) { return q->head == NULL; }

void lg_waitq_orphan(lg_waitq *q) {
  for (lg_fiber *f = q->head; f; f = f->next) f->q = NULL;
}

static const luaL_Reg fiber_funcs[] = {{"spawn", glisten_spawn},
                                       {"sleep", glisten_sleep},
                                       {"now", glisten_now},
                                       {"run", glisten_run},
                                       {"step", glisten_step},
                                       {"stop", glisten_stop},
                                       {NULL, NULL}};

int lg_fiber_open(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", fiber_gc}, {NULL, NULL}};
  lg_class(L, LG_FIBER, meta, NULL);
  luaL_setfuncs(L, fiber_funcs, 0);
  return 0;
}
