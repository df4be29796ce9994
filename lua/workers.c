/*
 * workers.c: what crosses Lua states. Every runtime (each worker's, and a
 * host's) registers in one process-wide table and gets a slot; connection
 * ids carry the slot in their low 8 bits, so glisten.post finds the worker
 * that owns a connection without asking anyone.
 *
 * A value for another worker is encoded (value.c) into a message and queued
 * in that worker's inbox (core/inbox.c); the worker decodes it on its own
 * loop into the connection's mailbox. A value for this worker is encoded and
 * decoded on the spot, so posts copy in every case and order between one
 * sender and one receiver is kept either way (one FIFO per receiver).
 *
 * Delivery never makes a sender wait: a full mailbox or inbox drops the
 * message and counts it in stats().dropped (a local post reports
 * "mailbox full" instead, since it can).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lg.h"
#include "log.h"

static char SUBS_KEY; /* topic -> { [id] = true }: this state's subscribers */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static lg_rt *reg[LG_SLOTS];

enum { MSG_POST = 1, MSG_PUBLISH, MSG_CONTROL };

/* --- registry -------------------------------------------------------- */

int lg_registry_add(lg_rt *rt) {
  int slot = -1;
  pthread_mutex_lock(&reg_mu);
  for (int i = 1; i < LG_SLOTS; i++)
    if (!reg[i]) {
      reg[i] = rt;
      slot = i;
      break;
    }
  pthread_mutex_unlock(&reg_mu);
  return slot;
}

void lg_registry_remove(lg_rt *rt) {
  pthread_mutex_lock(&reg_mu);
  if (rt->slot > 0 && reg[rt->slot] == rt) reg[rt->slot] = NULL;
  pthread_mutex_unlock(&reg_mu);
}

/* Makes rt a worker of pool p. Under the registry's lock, since other
 * threads read rt->pool there. */
void lg_registry_set_pool(lg_rt *rt, lg_pool *p) {
  pthread_mutex_lock(&reg_mu);
  rt->pool = p;
  pthread_mutex_unlock(&reg_mu);
}

/* Queues m for the runtime in slot. 0, -ESRCH (none there) or -ENOBUFS. */
static int send_to(int slot, gl_msg *m) {
  int rc = -ESRCH;
  pthread_mutex_lock(&reg_mu);
  if (slot > 0 && slot < LG_SLOTS && reg[slot])
    rc = gl_inbox_push(&reg[slot]->inbox, m);
  else
    free(m);
  pthread_mutex_unlock(&reg_mu);
  return rc;
}

/* Sends a control command to every runtime of pool p. */
void lg_registry_control(lg_pool *p, int cmd, double arg) {
  pthread_mutex_lock(&reg_mu);
  for (int i = 1; i < LG_SLOTS; i++) {
    if (!reg[i] || reg[i]->pool != p) continue;
    gl_msg *m = gl_msg_new(MSG_CONTROL, cmd, sizeof arg);
    if (!m) continue;
    memcpy(m->data, &arg, sizeof arg);
    gl_inbox_push(&reg[i]->inbox, m);
  }
  pthread_mutex_unlock(&reg_mu);
}

/* Calls fn for every runtime of pool p (NULL: every runtime), under the
 * registry's lock: fn must not call back into the registry. */
void lg_registry_each(lg_pool *p, void (*fn)(lg_rt *, void *), void *ud) {
  pthread_mutex_lock(&reg_mu);
  for (int i = 1; i < LG_SLOTS; i++)
    if (reg[i] && (!p || reg[i]->pool == p)) fn(reg[i], ud);
  pthread_mutex_unlock(&reg_mu);
}

/* --- delivery into mailboxes -------------------------------------------- */

/* [-0, +0, e] Decodes a message for the served connection id into its
 * mailbox. Returns -1 on success, else the failure (LG_FAIL_*) that kept
 * it out. */
static int deliver(lua_State *L, lua_Integer id, const char *p, size_t len) {
  lg_socket *s = lg_find_socket(L, id);
  if (!s || !s->conn || !s->server || s->stop ||
      (s->owner && s->in_close))
    return LG_FAIL_NO_CONNECTION;
  if (s->server->cb[LG_CB_MESSAGE] == LUA_NOREF) return LG_FAIL_NO_WITH_MESSAGE;
  if (s->nmail >= s->max_mail) return LG_FAIL_MAILBOX_FULL;
  lg_value_decode(L, p, len);
  lg_mail_push(L, s);
  return -1;
}

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
    int f = deliver(L, id, p, len);
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
static void publish_here(lua_State *L, lg_rt *rt, int topic, const char *p,
                         size_t len) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SUBS_KEY);
  lua_pushvalue(L, topic);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      if (deliver(L, lua_tointeger(L, -1), p, len) >= 0)
        GL_STAT_ADD(rt->stats.dropped, 1);
    }
  }
  lua_pop(L, 2);
}

/* glisten.publish(topic, value) -> true. Every subscriber of topic, on
 * every worker, gets a copy through its with_message. */
static int glisten_publish(lua_State *L) {
  lg_rt *rt = lg_rt_get(L);
  size_t tl, len;
  const char *topic = luaL_checklstring(L, 1, &tl);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lg_value_encode(L, 2); /* 3 */
  const char *p = lua_tolstring(L, 3, &len);
  publish_here(L, rt, 1, p, len);
  pthread_mutex_lock(&reg_mu);
  for (int i = 1; i < LG_SLOTS; i++) {
    if (!reg[i] || i == rt->slot || !atomic_load(&reg[i]->nsubs)) continue;
    gl_msg *m = gl_msg_new(MSG_PUBLISH, (long long)tl, tl + len);
    if (!m) continue;
    memcpy(m->data, topic, tl);
    memcpy(m->data + tl, p, len);
    if (gl_inbox_push(&reg[i]->inbox, m)) GL_STAT_ADD(rt->stats.dropped, 1);
  }
  pthread_mutex_unlock(&reg_mu);
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
  if (lua_rawgeti(L, -1, s->id) == LUA_TNIL) atomic_fetch_add(&s->rt->nsubs, 1);
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
    if (lua_rawgeti(L, -1, id) != LUA_TNIL) atomic_fetch_sub(&rt->nsubs, 1);
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
 * the runtime's released hook. */
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

/* --- the inbox --------------------------------------------------------- */

static void handle(lua_State *L, lg_rt *rt, gl_msg *m) {
  switch (m->kind) {
    case MSG_POST:
      if (deliver(L, m->target, m->data, m->len) >= 0)
        GL_STAT_ADD(rt->stats.dropped, 1);
      break;
    case MSG_PUBLISH: {
      size_t tl = (size_t)m->target;
      lua_pushlstring(L, m->data, tl);
      publish_here(L, rt, lua_gettop(L), m->data + tl, m->len - tl);
      lua_pop(L, 1);
      break;
    }
    case MSG_CONTROL: {
      double arg;
      memcpy(&arg, m->data, sizeof arg);
      if (rt->control) rt->control(rt, (int)m->target, arg);
      break;
    }
  }
}

static int deliver_all(lua_State *L) {
  lg_rt *rt = lua_touserdata(L, 1);
  while (rt->mail) {
    gl_msg *m = rt->mail;
    rt->mail = m->next;
    rt->mail_cur = m;
    handle(L, rt, m);
    rt->mail_cur = NULL;
    free(m);
  }
  return 0;
}

static void on_mail(gl_inbox *in) {
  lg_rt *rt = in->data;
  lua_State *L = rt->L;
  gl_msg *m = gl_inbox_take(in), **tail = &rt->mail;
  while (*tail) tail = &(*tail)->next;
  *tail = m;
  rt->defer++; /* deliveries wake fibers through the ready queue */
  while (rt->mail) {
    lua_pushcfunction(L, deliver_all);
    lua_pushlightuserdata(L, rt);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      GL_STAT_ADD(rt->stats.errors, 1);
      lg_log_flood(rt, LG_FLOOD_DELIVER, "cannot deliver a message: %s",
                   lua_tostring(L, -1));
      lua_pop(L, 1);
      free(rt->mail_cur);
      rt->mail_cur = NULL;
    }
  }
  rt->defer--;
}

/* [-0, +0, m] Registers rt in the process and starts its inbox. */
static void workers_attach(lua_State *L, lg_rt *rt) {
  /* the inbox first: once in the registry, other threads may post */
  gl_inbox_init(&rt->inbox, rt->loop, LG_INBOX_MAX, on_mail, rt);
  rt->slot = lg_registry_add(rt);
  if (rt->slot < 0)
    luaL_error(L, "glisten: too many Lua states in one process (at most %d)",
               LG_SLOTS - 1);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SUBS_KEY);
}

/* Unregisters rt (no more mail can arrive) and frees its inbox. */
static void workers_detach(lg_rt *rt) {
  gl_msg *m, *next;
  lg_registry_remove(rt);
  gl_inbox_close(&rt->inbox);
  for (m = rt->mail; m; m = next) {
    next = m->next;
    free(m);
  }
  rt->mail = NULL;
}

static int glisten_worker_id(lua_State *L) {
  lua_pushinteger(L, lg_rt_get(L)->worker_id);
  return 1;
}

static int glisten_worker_count(lua_State *L) {
  lua_pushinteger(L, lg_rt_get(L)->worker_count);
  return 1;
}

static const luaL_Reg worker_funcs[] = {{"post", glisten_post},
                                        {"publish", glisten_publish},
                                        {"worker_id", glisten_worker_id},
                                        {"worker_count", glisten_worker_count},
                                        {NULL, NULL}};

/* [-0, +0, m] Adds post, publish, worker_id and worker_count to the module
 * table on top. */
int lg_workers_open(lua_State *L) {
  static const lg_rt_hooks hooks = {NULL, NULL, workers_detach};
  lg_rt *rt = lg_rt_get(L);
  static const luaL_Reg sock_methods[] = {{"subscribe", sock_subscribe},
                                          {"unsubscribe", sock_unsubscribe},
                                          {NULL, NULL}};
  if (lg_rt_hook(rt, &hooks)) workers_attach(L, rt);
  rt->released = unsubscribe_all;
  lg_socket_methods(L, sock_methods);
  luaL_setfuncs(L, worker_funcs, 0);
  return 0;
}
