/*
 * runtime.c: the runtime of one lua_State (runtime.h): its making and its
 * end, the modules attached to it, the one shutdown, and error logging.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiber.h"
#include "log.h"
#include "preempt.h"

static char RT_KEY;

/* The slots of the process's runtimes: taken at lg_rt_open, given back
 * when the runtime ends. */
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char slot_used[LG_SLOTS];

static int slot_take(void) {
  int slot = -1;
  pthread_mutex_lock(&slots_mu);
  for (int i = 1; i < LG_SLOTS; i++)
    if (!slot_used[i]) {
      slot_used[i] = 1;
      slot = i;
      break;
    }
  pthread_mutex_unlock(&slots_mu);
  return slot;
}

static void slot_give(int slot) {
  pthread_mutex_lock(&slots_mu);
  slot_used[slot] = 0;
  pthread_mutex_unlock(&slots_mu);
}

lg_rt *lg_rt_get(lua_State *L) {
  lg_rt *rt;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!rt) luaL_error(L, "glisten is not loaded in this Lua state");
  return rt;
}

/* __gc of the runtime: the last glisten object finalized (it is created
 * first), so sockets and servers have let go of their core objects. The
 * modules release theirs through their teardown hooks, the last attached
 * first; then what close() queued still goes out, and the loop ends. */
static int rt_gc(lua_State *L) {
  lg_rt *rt = lua_touserdata(L, 1);
  double flush = LG_LINGER; /* the longest the teardown may flush */
  if (!rt->loop) { /* never made whole */
    if (rt->slot > 0) slot_give(rt->slot);
    rt->slot = 0;
    return 0;
  }
  /* a shutdown under way keeps its deadline, flush included */
  if (rt->overdue)
    flush = 0;
  else if (ev_is_active(&rt->deadline))
    flush = ev_timer_remaining(rt->loop, &rt->deadline);
  rt->closing = 1;
  ev_timer_stop(rt->loop, &rt->settle);
  ev_timer_stop(rt->loop, &rt->deadline);
  for (int i = rt->nmod - 1; i >= 0; i--)
    if (rt->mod[i].hooks->teardown)
      rt->mod[i].hooks->teardown(rt, rt->mod[i].self);
  for (int i = 0; i < rt->nmod; i++) free(rt->mod[i].self);
  rt->nmod = 0;
  gl_env_flush_close_all(&rt->env, flush); /* what close() queued goes out */
  lg_sched_close(rt);
  lg_watch_close(rt);
  ev_loop_destroy(rt->loop);
  rt->loop = NULL;
  free(rt->env.scratch);
  slot_give(rt->slot);
  rt->slot = 0;
  return 0;
}

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
  rt->slot = slot_take();
  if (rt->slot < 0) {
    rt->slot = 0;
    luaL_error(L, "glisten: too many Lua states in one process (at most %d)",
               LG_SLOTS - 1);
  }
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
  lg_sched_init(L, rt);
  lg_watch_open(L, rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  return rt;
}

void *lg_rt_attach(lua_State *L, const lg_rt_hooks *h, size_t size,
                   int *first) {
  lg_rt *rt = lg_rt_get(L);
  void *self = lg_rt_state(rt, h);
  *first = self == NULL;
  if (self) return self;
  if (rt->nmod == LG_MODULES) abort(); /* a fixed set of modules */
  self = calloc(1, size ? size : 1);
  if (!self) lg_nomem(L);
  rt->mod[rt->nmod].hooks = h;
  rt->mod[rt->nmod].self = self;
  rt->nmod++;
  return self;
}

void *lg_rt_state(lg_rt *rt, const lg_rt_hooks *h) {
  for (int i = 0; i < rt->nmod; i++)
    if (rt->mod[i].hooks == h) return rt->mod[i].self;
  return NULL;
}

/* --- the one shutdown --------------------------------------------------- */

static long busy(lg_rt *rt) {
  long n = 0;
  for (int i = 0; i < rt->nmod; i++)
    if (rt->mod[i].hooks->busy)
      n += rt->mod[i].hooks->busy(rt, rt->mod[i].self);
  return n;
}

static void on_settle(EV_P_ ev_timer *w, int revents) {
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
  if (!rt->hosted) /* a pool's workers end quietly: their host says it */
    gl_log(GL_LOG_WARN, "connections still open after the grace period "
                        "and the flush; ending");
  ev_timer_stop(EV_A_ & rt->settle);
  rt->stopped = 1;
  rt->overdue = 1;
  ev_break(EV_A_ EVBREAK_ALL);
}

void lg_rt_shutdown(lg_rt *rt, double grace) {
  if (ev_is_active(&rt->deadline)) return;
  for (int i = 0; i < rt->nmod; i++)
    if (rt->mod[i].hooks->shutdown)
      rt->mod[i].hooks->shutdown(rt, rt->mod[i].self, grace);
  ev_timer_init(&rt->settle, on_settle, 0., 0.02);
  rt->settle.data = rt;
  ev_timer_again(rt->loop, &rt->settle);
  ev_timer_init(&rt->deadline, on_grace_up, grace + LG_LINGER + 1, 0.);
  rt->deadline.data = rt;
  ev_timer_start(rt->loop, &rt->deadline);
}

/* --- seconds ------------------------------------------------------------- */

double lg_opt_seconds(lua_State *L, int idx, double def) {
  return lua_isnoneornil(L, idx) ? def : lg_check_seconds(L, idx);
}

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

/* --- errors --------------------------------------------------------------- */

/* [-1, +1, e] (on L) Replaces the error object on top of co with its
 * message and traceback, as a string on L. Runs protected (see below):
 * the object's __tostring may raise. */
static int traceback_p(lua_State *L) {
  lua_State *co = lua_touserdata(L, 1);
  const char *msg = lua_tostring(co, -1);
  size_t len;
  if (!msg) {
    if (luaL_callmeta(co, -1, "__tostring") && lua_type(co, -1) == LUA_TSTRING)
      msg = lua_tostring(co, -1);
    else
      msg = lua_pushfstring(co, "(error object is a %s value)",
                            luaL_typename(co, -1));
  }
  lua_tolstring(co, -1, &len); /* msg's length */
  if (strlen(msg) == len) {
    luaL_traceback(L, co, msg, 0);
  } else { /* a NUL in msg, where luaL_traceback would end it */
    lua_pushlstring(L, msg, len);
    lua_pushliteral(L, "\n");
    luaL_traceback(L, co, NULL, 0);
    lua_concat(L, 3);
  }
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

int lg_log_error(lg_rt *rt, const char *what, lua_State *co, int status) {
  char buf[256];
  int st;
  const char *msg = traceback(co, rt, buf, sizeof buf, &st);
  size_t len = strlen(msg);
  (void)status;
  if (st == LUA_OK) lua_tolstring(co, -1, &len);
  GL_STAT_ADD(rt->stats.errors, 1);
  gl_log_text(GL_LOG_ERROR, what, msg, len);
  return st;
}

void lg_log_flood(lg_rt *rt, lg_flood *fl, const char *fmt, ...) {
  char msg[256];
  double now = ev_now(rt->loop);
  va_list ap;
  if (fl->at && now - fl->at < 1.0) {
    fl->skipped++;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (fl->skipped)
    gl_log(GL_LOG_ERROR, "%s (and %lu more like it left out)", msg,
           fl->skipped);
  else
    gl_log(GL_LOG_ERROR, "%s", msg);
  fl->at = now;
  fl->skipped = 0;
}

void lg_class(lua_State *L, const char *name, const luaL_Reg *meta,
              const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {
    luaL_setfuncs(L, meta, 0);
    if (methods) {
      lua_newtable(L);
      luaL_setfuncs(L, methods, 0);
      lua_setfield(L, -2, "__index");
    }
  }
  lua_pop(L, 1);
}

void lg_hidden_mt(lua_State *L, const char *key, lua_CFunction gc,
                  lua_CFunction close) {
  lua_createtable(L, 0, 3);
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  if (close) {
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
  }
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}
