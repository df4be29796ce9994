/*
 * shared.c: glisten.shared, one dictionary for every worker of the process,
 * with the signatures of OpenResty's ngx.shared.DICT, called with a colon:
 *
 *   get(key) -> value | nil
 *   set(key, value [, ttl]) -> true, nil, forcible | nil, "no memory"
 *   add(key, value [, ttl]) -> true | false, "exists" | nil, "no memory"
 *   incr(key, step [, init [, init_ttl]]) -> new | nil, "not found" | ...
 *   delete(key) -> true
 *   keys([max]) -> { key, ... } (max 1024 by default, 0 for all)
 *
 * Values are strings, numbers and booleans; each call is atomic across
 * workers (core/dict.c makes each call's change under its mutex, for a
 * time that does not grow with the entries held, but keys(0)'s). The
 * dictionary holds at most LG_SHARED_BYTES; see dict.h for what happens
 * when full.
 */
#include <pthread.h>
#include <string.h>

#include "buf.h"
#include "dict.h"
#include "runtime.h"
#include "shared.h"

#define LG_SHARED_BYTES (64u << 20)

static char KEYBUF_KEY; /* the metatable of keys()'s buffer */

/* The dictionary lives while any runtime of the process does: made on
 * first use, freed when the last runtime closes (the module itself may be
 * unloaded then). */
static gl_dict *shared;
static int users;
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;

static void shared_acquire(void) {
  pthread_mutex_lock(&shared_mu);
  users++;
  pthread_mutex_unlock(&shared_mu);
}

/* The dictionary's part of a runtime: a scratch buffer for get. */
typedef struct shared_rt {
  gl_buf tmp;
} shared_rt;

/* The runtime's teardown: lets go of the process-wide dictionary (freed
 * with its last user) and of this state's scratch buffer. */
static void shared_teardown(lg_rt *rt, void *self) {
  (void)rt;
  gl_buf_free(&((shared_rt *)self)->tmp);
  pthread_mutex_lock(&shared_mu);
  if (--users == 0) {
    gl_dict_free(shared);
    shared = NULL;
  }
  pthread_mutex_unlock(&shared_mu);
}

static gl_dict *dict(lua_State *L) {
  pthread_mutex_lock(&shared_mu);
  if (!shared) shared = gl_dict_new(LG_SHARED_BYTES);
  gl_dict *d = shared;
  pthread_mutex_unlock(&shared_mu);
  if (!d) lg_nomem(L);
  return d;
}

static const lg_rt_hooks shared_hooks = {NULL, NULL, shared_teardown};

static const char *key(lua_State *L, size_t *kl) {
  luaL_checkudata(L, 1, "glisten.shared");
  const char *k = luaL_checklstring(L, 2, kl);
  luaL_argcheck(L, *kl > 0, 2, "empty key");
  return k;
}

/* [-0, +0, e] Reads the value at idx into v; nil_ok allows nil. */
static void to_dval(lua_State *L, int idx, gl_dval *v, int nil_ok) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TNONE:
      if (!nil_ok) luaL_argerror(L, idx, "value expected");
      v->type = GL_DV_NIL;
      break;
    case LUA_TBOOLEAN:
      v->type = GL_DV_BOOL;
      v->b = lua_toboolean(L, idx);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        v->type = GL_DV_INT;
        v->i = lua_tointeger(L, idx);
      } else {
        v->type = GL_DV_NUM;
        v->n = lua_tonumber(L, idx);
      }
      break;
    case LUA_TSTRING:
      v->type = GL_DV_STR;
      v->s = lua_tolstring(L, idx, &v->len);
      break;
    default:
      luaL_argerror(L, idx, lua_pushfstring(L, "cannot store a %s in "
                    "glisten.shared (strings, numbers and booleans only)",
                    luaL_typename(L, idx)));
  }
}

static void push_dval(lua_State *L, const gl_dval *v) {
  switch (v->type) {
    case GL_DV_BOOL: lua_pushboolean(L, v->b); break;
    case GL_DV_INT: lua_pushinteger(L, v->i); break;
    case GL_DV_NUM: lua_pushnumber(L, v->n); break;
    case GL_DV_STR: lua_pushlstring(L, v->s, v->len); break;
    default: lua_pushnil(L);
  }
}

static int fail(lua_State *L, int rc) {
  switch (rc) {
    case GL_DICT_EXISTS: return lg_fail(L, LG_FAIL_EXISTS, NULL);
    case GL_DICT_NOTFOUND: return lg_fail(L, LG_FAIL_NOT_FOUND, NULL);
    case GL_DICT_NOTNUM: return lg_fail(L, LG_FAIL_NOT_A_NUMBER, NULL);
    default: return lg_fail(L, LG_FAIL_NO_ROOM, NULL);
  }
}

static int shared_get(lua_State *L) {
  size_t kl;
  const char *k = key(L, &kl);
  shared_rt *sr = lg_rt_state(lg_rt_get(L), &shared_hooks);
  gl_dval v;
  int rc = gl_dict_get(dict(L), k, kl, &v, &sr->tmp);
  if (rc == GL_DICT_NOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc) return fail(L, rc);
  push_dval(L, &v);
  return 1;
}

static double ttl(lua_State *L, int idx) {
  double t = lg_opt_seconds(L, idx, 0);
  luaL_argcheck(L, t >= 0, idx, "ttl must be >= 0");
  return t;
}

static int store(lua_State *L, int mode) {
  size_t kl;
  const char *k = key(L, &kl);
  gl_dval v;
  int evicted = 0, rc;
  to_dval(L, 3, &v, mode == GL_DICT_SET);
  rc = gl_dict_set(dict(L), k, kl, &v, ttl(L, 4), mode, &evicted);
  if (rc == GL_DICT_EXISTS) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, lg_failure(LG_FAIL_EXISTS));
    return 2;
  }
  if (rc) return fail(L, rc);
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, evicted);
  return 3;
}

static int shared_set(lua_State *L) { return store(L, GL_DICT_SET); }
static int shared_add(lua_State *L) { return store(L, GL_DICT_ADD); }

/* [-0, +0, e] A number argument (a numeric string converts) as a dval. */
static void to_number(lua_State *L, int idx, gl_dval *v) {
  int isint;
  memset(v, 0, sizeof *v);
  lua_Integer i = lua_tointegerx(L, idx, &isint);
  if (isint && (lua_isinteger(L, idx) || lua_type(L, idx) == LUA_TSTRING)) {
    v->type = GL_DV_INT;
    v->i = i;
    return;
  }
  v->type = GL_DV_NUM;
  v->n = luaL_checknumber(L, idx);
}

static int shared_incr(lua_State *L) {
  size_t kl;
  const char *k = key(L, &kl);
  gl_dval step, init, out;
  to_number(L, 3, &step);
  if (lua_isnoneornil(L, 4))
    init.type = GL_DV_NIL;
  else
    to_number(L, 4, &init);
  int rc = gl_dict_incr(dict(L), k, kl, &step, &init, ttl(L, 5), &out);
  if (rc) return fail(L, rc);
  push_dval(L, &out);
  return 1;
}

static int shared_delete(lua_State *L) {
  size_t kl;
  const char *k = key(L, &kl);
  gl_dict_delete(dict(L), k, kl);
  lua_pushboolean(L, 1);
  return 1;
}

static int keybuf_gc(lua_State *L) {
  gl_buf_free(lua_touserdata(L, 1));
  return 0;
}

/* The keys are copied out under the lock into a buffer of this call's own
 * (a userdata that frees it when collected, should a Lua allocation below
 * raise): get's scratch would not do, since any allocation here can run
 * a finalizer that uses glisten.shared, and so that scratch, itself. */
static int shared_keys(lua_State *L) {
  luaL_checkudata(L, 1, "glisten.shared");
  lua_Integer max = luaL_optinteger(L, 2, 1024);
  size_t n, kl;
  luaL_argcheck(L, max >= 0, 2, "max must be >= 0");
  lua_settop(L, 2);
  gl_buf *kb = lua_newuserdatauv(L, sizeof *kb, 0); /* 3 */
  gl_buf_init(kb);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &KEYBUF_KEY);
  lua_setmetatable(L, 3);
  if (gl_dict_keys(dict(L), (size_t)max, kb, &n)) {
    gl_buf_free(kb);
    return fail(L, GL_DICT_NOMEM);
  }
  lua_createtable(L, n < 1024 ? (int)n : 1024, 0);
  const char *p = gl_buf_head(kb);
  for (size_t i = 0; i < n; i++) {
    memcpy(&kl, p, sizeof kl);
    p += sizeof kl;
    lua_pushlstring(L, p, kl);
    p += kl;
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  gl_buf_free(kb);
  return 1;
}

static const luaL_Reg shared_methods[] = {
    {"get", shared_get},       {"set", shared_set},   {"add", shared_add},
    {"incr", shared_incr},     {"delete", shared_delete},
    {"keys", shared_keys},     {NULL, NULL}};

int lg_shared_open(lua_State *L) {
  int first;
  lg_rt_attach(L, &shared_hooks, sizeof(shared_rt), &first);
  if (first) shared_acquire();
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, keybuf_gc);
  lua_setfield(L, -2, "__gc");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEYBUF_KEY);
  lua_newuserdatauv(L, 0, 0);
  if (luaL_newmetatable(L, "glisten.shared")) {
    luaL_newlib(L, shared_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "shared");
  return 0;
}
