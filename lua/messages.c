/*
 * messages.c: what crosses Lua states. Every runtime (each worker's, and a
 * host's) is listed in the process's directory by its slot; connection ids
 * carry the slot in their low 8 bits, so glisten.post finds the worker that
 * owns a connection without asking anyone.
 *
 * A value for another worker is encoded (value.c) into a message and queued
 * in that worker's inbox (core/inbox.c); the worker decodes it on its own
 * loop into the connection's mailbox (mailbox.c). A value for this worker
 * is encoded and decoded on the spot, so posts copy in every case and order
 * between one sender and one receiver is kept either way (one FIFO per
 * receiver). The inbox hands each message to the handler of its kind: a
 * post, a publish, or a control command for a higher layer (the pool's
 * shutdown and resume).
 *
 * Delivery never makes a sender wait: a full mailbox or inbox drops the
 * message and counts it in stats().dropped (a local post reports
 * "mailbox full" instead, since it can).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "inbox.h"
#include "log.h"
#include "messages.h"
#include "server.h"
#include "value.h"

#define LG_INBOX_MAX 65536   /* messages queued for one runtime */
#define DELIVER_PER_TURN 256 /* deliveries between two polls of the loop */

static char SUBS_KEY; /* topic -> { [id] = true }: this state's subscribers */

enum { MSG_POST = 1, MSG_PUBLISH, MSG_CONTROL };

/* The messages' part of a runtime. */
typedef struct msgs {
  lg_rt *rt;
  gl_inbox inbox;          /* messages from other states */
  gl_msg *mail, *mail_cur; /* taken from the inbox, being delivered */
  atomic_int nsubs;        /* subscriptions here: publish skips states
                              with none */
  lg_control_fn *control;  /* the handler of MSG_CONTROL */
  int budget;              /* deliveries left in this turn (on_mail) */
  lg_flood undelivered;
} msgs;

static void msgs_teardown(lg_rt *rt, void *self);
static const lg_rt_hooks msgs_hooks = {NULL, NULL, msgs_teardown};

static msgs *msgs_of(lg_rt *rt) { return lg_rt_state(rt, &msgs_hooks); }

/* --- the directory ------------------------------------------------------ */

/* The process's runtimes by slot, each with the group it belongs to (a
 * pool, opaque here) and its number in it. Other threads read it, under
 * dir_mu. */
static pthread_mutex_t dir_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  msgs *m;
  void *group;
  int member;
} dir[LG_SLOTS];

void lg_msg_join(lg_rt *rt, void *group, int member) {
  pthread_mutex_lock(&dir_mu);
  dir[rt->slot].group = group;
  dir[rt->slot].member = member;
  pthread_mutex_unlock(&dir_mu);
}

void *lg_msg_group(lg_rt *rt) {
  pthread_mutex_lock(&dir_mu);
  void *g = dir[rt->slot].group;
  pthread_mutex_unlock(&dir_mu);
  return g;
}

/* Queues m for the runtime in slot. 0, -ESRCH (none there) or -ENOBUFS. */
static int send_to(int slot, gl_msg *m) {
  int rc = -ESRCH;
  pthread_mutex_lock(&dir_mu);
  if (slot > 0 && slot < LG_SLOTS && dir[slot].m)
    rc = gl_inbox_push(&dir[slot].m->inbox, m);
  else
    free(m);
  pthread_mutex_unlock(&dir_mu);
  return rc;
}

void lg_msg_control(void *group, int cmd, double arg) {
  pthread_mutex_lock(&dir_mu);
  for (int i = 1; i < LG_SLOTS; i++) {
    if (!dir[i].m || dir[i].group != group) continue;
    gl_msg *m = gl_msg_new(MSG_CONTROL, cmd, sizeof arg);
    if (!m) continue;
    memcpy(m->data, &arg, sizeof arg);
    gl_inbox_push(&dir[i].m->inbox, m);
  }
  pthread_mutex_unlock(&dir_mu);
}

void lg_msg_each(void *group, lg_each_fn *fn, void *ud) {
  pthread_mutex_lock(&dir_mu);
  for (int i = 1; i < LG_SLOTS; i++)
    if (dir[i].m && (!group || dir[i].group == group))
      fn(dir[i].m->rt, dir[i].group, dir[i].member, ud);
  pthread_mutex_unlock(&dir_mu);
}

/* --- post and publish ----------------------------------------------------- */

/* glisten.post(id, value) -> true | nil, err */
static int glisten_post(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  lua_Integer id = luaL_checkinteger(L, 1);
  size_t len;
  int slot = (int)(id & (LG_SLOTS - 1));
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lg_value_encode(L, 2); /* 3: raises for what cannot cross */
  const char *p = lua_tolstring(L, 3, &len);
  if (slot == rt->slot) {
    int f = lg_mail_deliver(L, id, p, len);
    if (f >= 0) return lg_fail(L, f, NULL);
    lua_pushboolean(L, 1);
    return 1;
  }
  gl_msg *m = gl_msg_new(MSG_POST, id, len);
  if (!m) return lg_nomem(L);
  memcpy(m->data, p, len);
  int rc = send_to(slot, m);
  if (rc)
    return lg_fail(L, rc == -ESRCH ? LG_FAIL_NO_CONNECTION : LG_FAIL_INBOX_FULL,
                   NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* [-0, +0, e] Delivers an encoded value to this state's subscribers of
 * topic (the string at idx). */
static int publish_here(lua_State *L, lg_rt *rt, int topic, const char *p,
                        size_t len) {
  int n = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SUBS_KEY);
  lua_pushvalue(L, topic);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      n++;
      if (lg_mail_deliver(L, lua_tointeger(L, -1), p, len) >= 0)
        GL_STAT_ADD(rt->stats.dropped, 1);
    }
  }
  lua_pop(L, 2);
  return n;
}

/* glisten.publish(topic, value) -> true. Every subscriber of topic, on
 * every worker, this one included, gets a copy through its with_message:
 * the value goes to the inbox of each runtime that has subscribers, where
 * the fan-out runs in bounded parts (on_mail), so a burst of publishes
 * costs the publisher a copy each, not everyone's latency. */
static int glisten_publish(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  size_t tl, len;
  const char *topic = luaL_checklstring(L, 1, &tl);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lg_value_encode(L, 2); /* 3 */
  const char *p = lua_tolstring(L, 3, &len);
  pthread_mutex_lock(&dir_mu);
  for (int i = 1; i < LG_SLOTS; i++) {
    if (!dir[i].m || !atomic_load(&dir[i].m->nsubs)) continue;
    gl_msg *m = gl_msg_new(MSG_PUBLISH, (long long)tl, tl + len);
    if (!m) continue;
    memcpy(m->data, topic, tl);
    memcpy(m->data + tl, p, len);
    if (gl_inbox_push(&dir[i].m->inbox, m)) GL_STAT_ADD(rt->stats.dropped, 1);
  }
  pthread_mutex_unlock(&dir_mu);
  lua_pushboolean(L, 1);
  return 1;
}

/* sock:subscribe(topic) -> true */
static int sock_subscribe(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  luaL_checkstring(L, 2);
  if (!s->server)
    return luaL_error(L, "only a served connection can subscribe");
  if (!s->conn) return lg_fail(L, LG_FAIL_CLOSED, NULL);
  lua_settop(L, 2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SUBS_KEY); /* 3 */
  lua_pushvalue(L, 2);
  if (lua_rawget(L, 3) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 3);
  }
  if (lua_rawgeti(L, -1, s->id) == LUA_TNIL)
    atomic_fetch_add(&msgs_of(s->rt)->nsubs, 1);
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_rawseti(L, -2, s->id);
  /* the socket remembers its topics, to leave them when it ends */
  if (lua_getiuservalue(L, 1, 2) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 2);
  }
  lua_pushvalue(L, 2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pushboolean(L, 1);
  return 1;
}

static void leave(lua_State *L, lg_rt *rt, int topic, lua_Integer id) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SUBS_KEY);
  lua_pushvalue(L, topic);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    if (lua_rawgeti(L, -1, id) != LUA_TNIL)
      atomic_fetch_sub(&msgs_of(rt)->nsubs, 1);
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, -2, id);
    lua_pushnil(L);
    if (!lua_next(L, -2)) { /* nobody left: forget the topic */
      lua_pushvalue(L, topic);
      lua_pushnil(L);
      lua_rawset(L, -4);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 2);
}

/* sock:unsubscribe(topic) -> true */
static int sock_unsubscribe(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  leave(L, s->rt, 2, s->id);
  if (lua_getiuservalue(L, 1, 2) == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* [-0, +0, -] Ends every subscription of s (its socket userdata at idx):
 * the socket's release hook. */
static void unsubscribe_all(lua_State *L, int idx, lg_socket *s) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, 2) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      leave(L, s->rt, lua_gettop(L), s->id);
    }
    lua_pushnil(L);
    lua_setiuservalue(L, idx, 2);
  }
  lua_pop(L, 1);
}

/* --- the inbox ------------------------------------------------------------ */

/* A handler of a kind of message returns how many deliveries it made
 * (at least 1), which on_mail counts against its budget. */
static int on_post(lua_State *L, msgs *ms, gl_msg *m) {
  if (lg_mail_deliver(L, m->target, m->data, m->len) >= 0)
    GL_STAT_ADD(ms->rt->stats.dropped, 1);
  return 1;
}

static int on_publish(lua_State *L, msgs *ms, gl_msg *m) {
  size_t tl = (size_t)m->target;
  int n;
  lua_pushlstring(L, m->data, tl);
  n = publish_here(L, ms->rt, lua_gettop(L), m->data + tl, m->len - tl);
  lua_pop(L, 1);
  return n > 0 ? n : 1;
}

static int on_control(lua_State *L, msgs *ms, gl_msg *m) {
  double arg;
  (void)L;
  memcpy(&arg, m->data, sizeof arg);
  if (ms->control) ms->control(ms->rt, (int)m->target, arg);
  return 1;
}

/* The handler of each kind of message (MSG_*). */
static int (*const handlers[])(lua_State *, msgs *, gl_msg *) = {
    [MSG_POST] = on_post, [MSG_PUBLISH] = on_publish,
    [MSG_CONTROL] = on_control};

/* [-0, +0, e] Handles taken messages until none is left or the budget is
 * spent. */
static int deliver_some(lua_State *L) {
  msgs *ms = lua_touserdata(L, 1);
  while (ms->mail && ms->budget > 0) {
    gl_msg *m = ms->mail;
    ms->mail = m->next;
    ms->mail_cur = m;
    ms->budget -= handlers[m->kind](L, ms, m);
    ms->mail_cur = NULL;
    free(m);
  }
  return 0;
}

/* The inbox's callback: handles messages, DELIVER_PER_TURN deliveries at
 * the most (a publish's fan-out is not cut), then lets the loop poll and
 * comes back for the rest. It takes from the inbox only what it has
 * handled all of before, so the inbox's bound holds for senders. */
static void on_mail(gl_inbox *in) {
  msgs *ms = in->data;
  lg_rt *rt = ms->rt;
  lua_State *L = rt->L;
  ms->budget = DELIVER_PER_TURN;
  lg_defer_begin(rt); /* deliveries wake fibers through the ready queue */
  while (ms->budget > 0) {
    if (!ms->mail && !(ms->mail = gl_inbox_take(in))) break;
    lua_pushcfunction(L, deliver_some);
    lua_pushlightuserdata(L, ms);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      GL_STAT_ADD(rt->stats.errors, 1);
      lg_log_flood(rt, &ms->undelivered, "cannot deliver a message: %s",
                   lua_tostring(L, -1));
      lua_pop(L, 1);
      if (!ms->mail_cur && ms->mail) { /* failed before taking one */
        ms->mail_cur = ms->mail;
        ms->mail = ms->mail->next;
      }
      free(ms->mail_cur);
      ms->mail_cur = NULL;
      ms->budget--;
    }
  }
  lg_defer_end(rt);
  if (ms->budget <= 0) gl_inbox_wake(in); /* the rest on a later turn */
}

/* [-0, +0, m] Lists ms in the directory and starts its inbox. */
static void msgs_attach(lua_State *L, msgs *ms) {
  lg_rt *rt = lg_rt_get(L);
  ms->rt = rt;
  atomic_init(&ms->nsubs, 0);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SUBS_KEY);
  /* the inbox first: once in the directory, other threads may post */
  gl_inbox_init(&ms->inbox, rt->loop, LG_INBOX_MAX, on_mail, ms);
  pthread_mutex_lock(&dir_mu);
  dir[rt->slot].m = ms;
  dir[rt->slot].group = NULL;
  dir[rt->slot].member = 1;
  pthread_mutex_unlock(&dir_mu);
}

/* The runtime's teardown: takes ms off the directory (no more mail can
 * arrive) and frees its inbox. */
static void msgs_teardown(lg_rt *rt, void *self) {
  msgs *ms = self;
  gl_msg *m, *next;
  pthread_mutex_lock(&dir_mu);
  if (dir[rt->slot].m == ms) dir[rt->slot].m = NULL;
  pthread_mutex_unlock(&dir_mu);
  gl_inbox_close(&ms->inbox);
  for (m = ms->mail; m; m = next) {
    next = m->next;
    free(m);
  }
  ms->mail = NULL;
}

void lg_msg_on_control(lua_State *L, lg_control_fn *fn) {
  msgs_of(lg_rt_get(L))->control = fn;
}

static const luaL_Reg msg_funcs[] = {{"post", glisten_post},
                                     {"publish", glisten_publish},
                                     {NULL, NULL}};

int lg_messages_open(lua_State *L) {
  static const luaL_Reg sock_methods[] = {{"subscribe", sock_subscribe},
                                          {"unsubscribe", sock_unsubscribe},
                                          {NULL, NULL}};
  int first;
  msgs *ms = lg_rt_attach(L, &msgs_hooks, sizeof(msgs), &first);
  if (first) msgs_attach(L, ms);
  lg_socket_on_release(L, unsubscribe_all);
  lg_socket_methods(L, sock_methods);
  luaL_setfuncs(L, msg_funcs, 0);
  return 0;
}
