/*
 * timer.c: glisten.after and glisten.every. A timer's run is a fiber of its
 * own, so its function may wait like any callback.
 */
#include <math.h>

#include "fiber.h"
#include "timer.h"

#define LG_TIMER "glisten.timer"

/* The timers' part of a runtime: the record of its flood of errors. */
typedef struct timers {
  lg_flood cannot_run;
} timers;

static const lg_rt_hooks timer_hooks = {NULL, NULL, NULL};

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
    timers *ts = lg_rt_state(t->rt, &timer_hooks);
    lg_log_flood(t->rt, &ts->cannot_run, "timer: cannot run yet: %s",
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

/* [-0, +0, m] Registers the timer type, and adds after and every to the
 * module table on top. */
int lg_timer_open(lua_State *L) {
  int first;
  lg_rt_attach(L, &timer_hooks, sizeof(timers), &first);
  static const luaL_Reg meta[] = {{"__gc", timer_gc}, {NULL, NULL}};
  static const luaL_Reg methods[] = {{"cancel", timer_cancel}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"after", glisten_after},
                                   {"every", glisten_every},
                                   {NULL, NULL}};
  lg_class(L, LG_TIMER, meta, methods);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
