/*
 * tlsctx.c: TLS for the binding (tlsctx.h): the tls option table read into
 * core contexts (core/tls.h), and the socket methods tlsinfo and
 * proxyinfo. Misuse raises; a file or setting OpenSSL refuses is a message
 * for the caller to return (serve and connect return nil, err).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include "lauxlib.h"
#include <string.h>

#include "options.h"
#include "preempt.h"
#include "gl.h"
#include "proxyio.h"
#include "runtime.h"
#include "sock.h"
#include "tlsctx.h"

#define ALPN_MAX 1024 /* bytes of ALPN protocols in wire format */

/* [-0, +0, e] The ALPN list of the tls table at t (tls.alpn: a list of
 * names, or one string of them separated by commas) in wire format into
 * out. Returns its length, 0 for none. */
static size_t alpn_wire(lua_State *L, int t, unsigned char *out) {
  size_t n = 0;
  int ty = lua_getfield(L, t, "alpn");
  if (ty == LUA_TSTRING) {
    const char *p = lua_tostring(L, -1);
    while (*p) {
      size_t len = strcspn(p, ",");
      if (len == 0 || len > 255 || n + 1 + len > ALPN_MAX)
        luaL_error(L, "option 'tls.alpn' must list names of 1 to 255 bytes, "
                      "at most %d bytes in all", ALPN_MAX);
      out[n++] = (unsigned char)len;
      memcpy(out + n, p, len);
      n += len;
      p += len + (p[len] == ',');
    }
  } else if (ty == LUA_TTABLE) {
    lua_Integer k = lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= k; i++) {
      size_t len;
      const char *p;
      lua_rawgeti(L, -1, i);
      p = lua_tolstring(L, -1, &len);
      if (lua_type(L, -1) != LUA_TSTRING || len == 0 || len > 255 ||
          n + 1 + len > ALPN_MAX)
        luaL_error(L, "option 'tls.alpn' must list names of 1 to 255 bytes, "
                      "at most %d bytes in all", ALPN_MAX);
      out[n++] = (unsigned char)len;
      memcpy(out + n, p, len);
      n += len;
      lua_pop(L, 1);
    }
  } else if (ty != LUA_TNIL && ty != LUA_TFUNCTION) {
    luaL_error(L, "option 'tls.alpn' must be a list of names, a string or "
                  "a function");
  }
  lua_pop(L, 1);
  return n;
}

/* [-0, +0, e] tls.verify of the table at t, for a server or a client. */
static int verify_of(lua_State *L, int t, int server) {
  int ty = lua_getfield(L, t, "verify"), v;
  const char *w = ty == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (ty == LUA_TNIL)
    v = server ? GL_TLS_VERIFY_NONE : GL_TLS_VERIFY_REQUIRED;
  else if (!server && ty == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1) ? GL_TLS_VERIFY_REQUIRED : GL_TLS_VERIFY_NONE;
  else if (w && strcmp(w, "none") == 0)
    v = GL_TLS_VERIFY_NONE;
  else if (w && strcmp(w, "required") == 0)
    v = GL_TLS_VERIFY_REQUIRED;
  else if (w && strcmp(w, "optional") == 0)
    v = server ? GL_TLS_VERIFY_OPTIONAL : GL_TLS_VERIFY_REQUIRED;
  else
    return luaL_error(L, server ? "option 'tls.verify' must be \"none\", "
                                  "\"optional\" or \"required\""
                                : "option 'tls.verify' must be a boolean");
  lua_pop(L, 1);
  return v;
}

/* [-0, +0, e] A string field of the table at t, or NULL. */
static const char *str_field(lua_State *L, int t, const char *k,
                             const char *what) {
  int ty = lua_getfield(L, t, k);
  const char *v = ty == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (ty != LUA_TNIL && !v)
    luaL_error(L, "option '%s%s' must be a string", what, k);
  lua_pop(L, 1); /* the table holds it */
  return v;
}

/* [-0, +0, e] The other certificates of tls.sni (a table name -> {cert,
 * key, password}) added to t, each a context of conf's settings with its
 * own certificate. GL_OK, or GL_ERR with err filled. */
static int add_names(lua_State *L, int tt, gl_tls *t, gl_tls_conf conf,
                     char *err, size_t errlen, gl_tls *like) {
  int ty = lua_getfield(L, tt, "sni"), sni = lua_gettop(L);
  if (ty == LUA_TNIL || ty == LUA_TFUNCTION) {
    lua_pop(L, 1);
    return GL_OK;
  }
  if (ty != LUA_TTABLE)
    return luaL_error(L, "option 'tls.sni' must be a table or a function");
  lua_pushnil(L);
  while (lua_next(L, sni)) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
                                                       : NULL;
    gl_tls *other;
    char e[GL_ERRLEN];
    if (!name || lua_type(L, -1) != LUA_TTABLE)
      return luaL_error(L, "option 'tls.sni' must map names to tables "
                           "{cert =, key =}");
    conf.cert = str_field(L, -1, "cert", "tls.sni[name].");
    conf.key = str_field(L, -1, "key", "tls.sni[name].");
    conf.password = str_field(L, -1, "password", "tls.sni[name].");
    if (!conf.cert || !conf.key) {
      snprintf(err, errlen, "tls.sni[\"%s\"]: needs cert and key", name);
      return GL_ERR;
    }
    other = gl_tls_new(&conf, e, sizeof e);
    if (!other) {
      snprintf(err, errlen, "tls.sni[\"%s\"]: %s", name, e);
      return GL_ERR;
    }
    gl_tls_set_hooks(other, gl_tls_get_hooks(like));
    ty = gl_tls_add_name(t, name, other);
    gl_tls_unref(other);
    if (ty != GL_OK) return lg_nomem(L);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return GL_OK;
}


/* --- tls.sni and tls.alpn as functions ----------------------------------- */

struct lg_tls_fns {
  lg_rt *rt;
  int tls;   /* the tls table (registry ref): settings of sni's contexts */
  int sni;   /* the functions (registry refs), or LUA_NOREF */
  int alpn;
  int cache; /* tables sni returned -> their contexts (weak keys) */
  lg_flood failed;
};

static int sni_hook(void *ud, const char *name, gl_tls **out);
static int alpn_hook(void *ud, const unsigned char *in, unsigned inlen,
                     const unsigned char **out, unsigned char *outlen);
static const gl_tls_hooks hooks_sni = {sni_hook, NULL};
static const gl_tls_hooks hooks_alpn = {NULL, alpn_hook};
static const gl_tls_hooks hooks_both = {sni_hook, alpn_hook};

#define CTX_MT "glisten.tls.context" /* a gl_tls * in a userdata */

static int ctx_gc(lua_State *L) {
  gl_tls **t = lua_touserdata(L, 1);
  gl_tls_unref(*t);
  *t = NULL;
  return 0;
}

/* Drops f's references. */
static void fns_unref(lg_tls_fns *f) {
  lua_State *L = f->rt->L;
  if (f->rt->closing) return;
  luaL_unref(L, LUA_REGISTRYINDEX, f->sni);
  luaL_unref(L, LUA_REGISTRYINDEX, f->alpn);
  luaL_unref(L, LUA_REGISTRYINDEX, f->tls);
  luaL_unref(L, LUA_REGISTRYINDEX, f->cache);
  f->sni = f->alpn = f->tls = f->cache = LUA_NOREF;
}

void lg_tls_fns_set(lua_State *L, lg_tls_fns *f, int tls_idx) {
  int s, a;
  tls_idx = lua_absindex(L, tls_idx);
  fns_unref(f);
  if (lua_type(L, tls_idx) != LUA_TTABLE) return;
  s = lua_getfield(L, tls_idx, "sni") == LUA_TFUNCTION;
  f->sni = s ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
  a = lua_getfield(L, tls_idx, "alpn") == LUA_TFUNCTION;
  f->alpn = a ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
  if (!s && !a) return;
  lua_pushvalue(L, tls_idx);
  f->tls = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  f->cache = luaL_ref(L, LUA_REGISTRYINDEX);
}

lg_tls_fns *lg_tls_fns_new(lua_State *L, int tls_idx) {
  lg_tls_fns *f = calloc(1, sizeof *f);
  if (!f) lg_nomem(L);
  f->rt = lg_rt_get(L);
  f->sni = f->alpn = f->tls = f->cache = LUA_NOREF;
  lg_tls_fns_set(L, f, tls_idx);
  return f;
}

void lg_tls_fns_free(lg_tls_fns *f) {
  if (!f) return;
  fns_unref(f);
  free(f);
}
/* [-0, +1, e] The protected part of sni_hook: the context for the name
 * (light userdata 2) from the function's answer, made once per table it
 * returns; pushes the gl_tls ** box, or nothing useful (nil). */
static int sni_call(lua_State *L) {
  lg_tls_fns *f = lua_touserdata(L, 1);
  const char *name = lua_touserdata(L, 2);
  char err[GL_ERRLEN];
  gl_tls **box;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->sni);
  lua_pushstring(L, name);
  lua_call(L, 1, 1); /* 1: its answer */
  if (lua_isnil(L, 1)) return 1;
  if (!lua_istable(L, 1))
    return luaL_error(L, "tls.sni function must return a table {cert =, "
                         "key =} or nil, not a %s", luaL_typename(L, 1));
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->cache); /* 2 */
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 2) == LUA_TUSERDATA) return 1; /* made before */
  lua_pop(L, 1);
  /* this table's certificate with the server's other settings */
  lua_newtable(L); /* 3 */
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->tls);
  lua_pushnil(L);
  while (lua_next(L, 4)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 3);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setfield(L, 3, "sni");
  lua_pushnil(L);
  lua_setfield(L, 3, "password");
  for (const char *const *k = (const char *const[]){"cert", "key", "password",
                                                    NULL};
       *k; k++) {
    lua_getfield(L, 1, *k);
    lua_setfield(L, 3, *k);
  }
  box = lua_newuserdatauv(L, sizeof *box, 0); /* 4 */
  *box = NULL;
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, 4);
  *box = lg_tls_make(L, 3, 1, err, sizeof err);
  if (!*box) return luaL_error(L, "tls.sni(\"%s\"): %s", name, err);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_rawset(L, 2);
  return 1;
}

static int sni_hook(void *ud, const char *name, gl_tls **out) {
  lg_tls_fns *f = ud;
  lua_State *L;
  int rc = GL_OK, st;
  if (!f || f->sni == LUA_NOREF) return GL_OK;
  L = f->rt->L;
  lua_pushcfunction(L, sni_call);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, (void *)name);
  f->rt->running++; /* no wait, loop or resume inside OpenSSL */
  st = lg_watch_pcall(f->rt, 2, 1);
  f->rt->running--;
  if (st != LUA_OK) {
    lg_log_flood(f->rt, &f->failed, "tls.sni: %s",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    rc = GL_ERR;
  } else if (lua_type(L, -1) == LUA_TUSERDATA) {
    gl_tls **box = lua_touserdata(L, -1);
    if (*box) {
      gl_tls_ref(*box);
      *out = *box;
    }
  }
  lua_pop(L, 1);
  return rc;
}

/* [-0, +1, e] The protected part of alpn_hook: calls the function with
 * the offered names (a list), pushes its answer (a string or nil). */
static int alpn_call(lua_State *L) {
  lg_tls_fns *f = lua_touserdata(L, 1);
  const unsigned char *in = lua_touserdata(L, 2);
  unsigned inlen = (unsigned)lua_tointeger(L, 3), i = 0;
  int n = 0;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->alpn);
  lua_newtable(L);
  while (i < inlen && i + 1u + in[i] <= inlen) {
    lua_pushlstring(L, (const char *)in + i + 1, in[i]);
    lua_rawseti(L, 2, ++n);
    i += 1u + in[i];
  }
  lua_call(L, 1, 1);
  if (!lua_isnil(L, 1) && lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "tls.alpn function must return one of the names "
                         "offered or nil, not a %s", luaL_typename(L, 1));
  return 1;
}

static int alpn_hook(void *ud, const unsigned char *in, unsigned inlen,
                     const unsigned char **out, unsigned char *outlen) {
  lg_tls_fns *f = ud;
  lua_State *L;
  int rc = 0, st;
  if (!f || f->alpn == LUA_NOREF) return 0;
  L = f->rt->L;
  lua_pushcfunction(L, alpn_call);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, (void *)in);
  lua_pushinteger(L, inlen);
  f->rt->running++; /* no wait, loop or resume inside OpenSSL */
  st = lg_watch_pcall(f->rt, 3, 1);
  f->rt->running--;
  if (st != LUA_OK) {
    lg_log_flood(f->rt, &f->failed, "tls.alpn: %s",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    rc = -1;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *want = lua_tolstring(L, -1, &len);
    unsigned i = 0;
    rc = -1; /* a name the client did not offer */
    while (i < inlen && i + 1u + in[i] <= inlen) {
      if (in[i] == len && memcmp(in + i + 1, want, len) == 0) {
        *out = in + i + 1;
        *outlen = in[i];
        rc = 1;
        break;
      }
      i += 1u + in[i];
    }
    if (rc < 0)
      lg_log_flood(f->rt, &f->failed, "tls.alpn: \"%s\" was not offered",
                   want);
  }
  lua_pop(L, 1);
  return rc;
}

gl_tls *lg_tls_make(lua_State *L, int tls_idx, int server, char *err,
                    size_t errlen) {
  unsigned char alpn[ALPN_MAX];
  gl_tls_conf conf;
  gl_tls *t;
  lg_opts o;
  int tt, top = lua_gettop(L);
  tls_idx = lua_absindex(L, tls_idx);
  if (lua_type(L, tls_idx) == LUA_TTABLE) {
    tt = tls_idx;
  } else {
    lua_newtable(L); /* true: every field at its default */
    tt = lua_gettop(L);
  }
  lg_opts_read(L, tt, &o, LG_IN_TLS);
  memset(&conf, 0, sizeof conf);
  conf.server = server;
  conf.cert = o.cert;
  conf.key = o.key;
  conf.password = o.password;
  conf.ca = o.ca;
  conf.verify = verify_of(L, tt, server);
  conf.alpn_len = alpn_wire(L, tt, alpn);
  conf.alpn = conf.alpn_len ? alpn : NULL;
  conf.min_version = o.min_version;
  conf.ciphers = o.ciphers;
  conf.ciphersuites = o.ciphersuites;
  conf.no_tickets = !o.session_tickets;
  /* a box holds t while add_names may raise */
  gl_tls **hold = lua_newuserdatauv(L, sizeof *hold, 0);
  *hold = NULL;
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (server && (!conf.cert || !conf.key)) {
    snprintf(err, errlen, "serving TLS needs tls.cert and tls.key (--tls-cert, --tls-key)");
    t = NULL;
  } else {
    t = *hold = gl_tls_new(&conf, err, errlen);
  }
  if (t && server) {
    int s = lua_getfield(L, tt, "sni") == LUA_TFUNCTION;
    int a = lua_getfield(L, tt, "alpn") == LUA_TFUNCTION;
    lua_pop(L, 2);
    gl_tls_set_hooks(t, s && a ? &hooks_both : s ? &hooks_sni
                        : a    ? &hooks_alpn : NULL);
    if (add_names(L, tt, t, conf, err, errlen, t) != GL_OK) {
      gl_tls_unref(t);
      t = NULL;
    }
  }
  *hold = NULL; /* the caller's now */
  lua_settop(L, top);
  return t;
}

const char *lg_tls_server_name(lua_State *L, int tls_idx, const char *host) {
  const char *name = NULL;
  struct in6_addr a;
  if (lua_type(L, tls_idx) == LUA_TTABLE) {
    name = str_field(L, tls_idx, "server_name", "tls.");
    if (name) return name;
  }
  if (!host || inet_pton(AF_INET, host, &a) == 1 ||
      inet_pton(AF_INET6, host, &a) == 1 || lg_unix_path(host))
    return NULL;
  return host;
}


/* --- contexts made once per options table ------------------------------- */

static char CLIENT_CACHE_KEY, SERVER_CACHE_KEY;

/* [-0, +1, e] The box (a userdata holding a gl_tls *) of the context for
 * the tls option at idx (a table, or true: a client's defaults), made the
 * first time and kept as long as the table lives (true's for good), so a
 * connect or starttls in a loop does not read certificate files, nor the
 * system's store, each time. Raises on misuse; pushes nil and a message
 * when the context cannot be made. */
static gl_tls *cached(lua_State *L, int idx, int server) {
  char err[GL_ERRLEN];
  gl_tls **box;
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX,
                  server ? &SERVER_CACHE_KEY : &CLIENT_CACHE_KEY) !=
      LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX,
                server ? &SERVER_CACHE_KEY : &CLIENT_CACHE_KEY);
  }
  if (lua_type(L, idx) == LUA_TTABLE)
    lua_pushvalue(L, idx);
  else
    lua_pushboolean(L, 1);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    lua_remove(L, -2);
    return *(gl_tls **)lua_touserdata(L, -1);
  }
  lua_pop(L, 1);
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  *box = lg_tls_make(L, idx, server, err, sizeof err);
  if (!*box) {
    lua_pop(L, 2);
    lua_pushnil(L);
    lua_pushfstring(L, "tls: %s", err);
    return NULL;
  }
  if (lua_type(L, idx) == LUA_TTABLE)
    lua_pushvalue(L, idx);
  else
    lua_pushboolean(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4); /* cache[key] = box */
  lua_remove(L, -2);
  return *box;
}

gl_tls *lg_tls_client(lua_State *L, int tls_idx) {
  return cached(L, tls_idx, 0);
}

/* --- sock:starttls([tls]) ------------------------------------------------ */

/* Stack: the handle, the tls option (nil: the server's settings, or a
 * client's defaults), the deadline, the phase (0: output still queued; 1:
 * in the handshake). */
static int starttls_k(lua_State *L, int status, lua_KContext ctx) {
  lg_socket *s = lua_touserdata(L, 1);
  double deadline = lua_tonumber(L, 3);
  int why = lg_woken(ctx);
  (void)status;
  for (;;) {
    gl_conn *c = s->conn;
    if (!c) {
      if (s->reason == LG_R_ERROR && s->detail)
        return lg_fail(L, LG_FAIL_MESSAGE, s->detail);
      return lg_fail(L, LG_FAIL_CLOSED, NULL);
    }
    if (lua_tointeger(L, 4) == 1 && !(c->flags & GL_CONN_HANDSHAKE)) {
      lua_pushboolean(L, 1);
      return 1;
    }
    if (lua_tointeger(L, 4) == 0 && !gl_conn_queued(c) && !s->writer) {
      gl_tls *t;
      void *ud = NULL;
      const char *name = NULL;
      int own = 0, rc;
      /* what the peer sent after its STARTTLS and before the handshake
       * would be taken for what it sent under TLS: refused */
      if (c->in.len) {
        s->detail = "plaintext pending";
        lg_socket_close(s, LG_R_ERROR, 0);
        return lg_fail(L, LG_FAIL_PLAINTEXT, NULL);
      }
      if (s->inbound && lua_isnil(L, 2)) { /* a served socket: its server's */
        t = s->upgrade ? s->upgrade(s, &ud) : NULL;
        if (!t)
          return luaL_error(L, "starttls: %s (give them: sock:starttls{cert "
                               "=, key =})", s->upgrade
                               ? "the server has no tls settings"
                               : "an accepted socket has no tls settings");
        own = 1;
      } else {
        t = cached(L, 2, s->inbound); /* +1: its box, or nil, err */
        if (!t) return 2;
        lua_pop(L, 1); /* the table at 2, or the cache, keeps it */
        if (!s->inbound) name = lg_tls_server_name(L, 2, s->host);
      }
      rc = gl_tls_start(c, t, name);
      if (own) gl_tls_unref(t); /* the connection holds its own */
      if (rc != GL_OK) return lg_nomem(L);
      gl_tls_set_ud(c, ud);
      lua_pushinteger(L, 1);
      lua_replace(L, 4);
      continue;
    }
    if (why == LG_WAKE_TIMEOUT) {
      lg_socket_close(s, LG_R_LOCAL, 0);
      return lg_fail(L, LG_FAIL_TIMEOUT, NULL);
    }
    why = lg_wait(L, &s->wq, deadline, starttls_k);
  }
}

/* sock:starttls([tls]) -> true | nil, err: TLS from here on, as the server
 * (an accepted socket: a served one's server's tls settings unless given)
 * or the client (a connected socket: a client's settings, verification
 * on, unless given). */
static int sock_starttls(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  gl_tls_info i;
  lua_settop(L, 2);
  if (!lua_isnil(L, 2) && !lua_istable(L, 2) &&
      !(lua_isboolean(L, 2) && lua_toboolean(L, 2)))
    return luaL_typeerror(L, 2, "table or nil");
  if (lua_isboolean(L, 2)) {
    lua_pushnil(L);
    lua_replace(L, 2);
  }
  if (s->conn && (s->conn->tp != &gl_plain || gl_tls_get_info(s->conn, &i) == GL_OK))
    return luaL_error(L, "starttls: the socket is already on TLS");
  lua_pushnumber(L, lg_deadline(s->rt, s->timeout));
  lua_pushinteger(L, 0);
  return starttls_k(L, LUA_OK, 0);
}

/* --- sock:tlsinfo() ------------------------------------------------------ */

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* [-0, +1, m] The peer's certificate as a table, or nil. */
static void push_peer(lua_State *L, gl_conn *c) {
  gl_tls_peer *p = malloc(sizeof *p);
  int rc = p ? gl_tls_get_peer(c, p) : -ENOMEM;
  if (rc != GL_OK) {
    free(p);
    if (rc == -ENOMEM) lg_nomem(L);
    lua_pushnil(L);
    return;
  }
  /* nothing below may raise before p is freed: make room first */
  if (!lua_checkstack(L, 4)) {
    free(p->pem);
    free(p);
    lg_nomem(L);
  }
  lua_createtable(L, 0, 8);
  set_str(L, "subject", p->subject);
  set_str(L, "issuer", p->issuer);
  set_str(L, "serial", p->serial);
  set_str(L, "sha256", p->sha256);
  set_str(L, "pem", p->pem);
  lua_pushinteger(L, (lua_Integer)p->not_before);
  lua_setfield(L, -2, "not_before");
  lua_pushinteger(L, (lua_Integer)p->not_after);
  lua_setfield(L, -2, "not_after");
  lua_createtable(L, p->nsan, 0);
  const char *q = p->san;
  for (int i = 1; i <= p->nsan; i++) {
    lua_pushstring(L, q);
    lua_rawseti(L, -2, i);
    q += strlen(q) + 1;
  }
  lua_setfield(L, -2, "san");
  free(p->pem);
  free(p);
}

/* sock:tlsinfo() -> table | nil (plain) | nil, "closed" */
static int sock_tlsinfo(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  gl_tls_info i;
  if (!s->conn) return lg_fail(L, LG_FAIL_CLOSED, NULL);
  if (gl_tls_get_info(s->conn, &i) != GL_OK) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 8);
  set_str(L, "version", i.version);
  set_str(L, "cipher", i.cipher);
  if (i.alpn) {
    lua_pushlstring(L, (const char *)i.alpn, i.alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  set_str(L, "server_name", i.server_name);
  lua_pushboolean(L, i.resumed);
  lua_setfield(L, -2, "resumed");
  lua_pushboolean(L, i.has_peer && i.verify_result == 0);
  lua_setfield(L, -2, "verified");
  if (i.has_peer) set_str(L, "verify_error", i.verify_error);
  push_peer(L, s->conn);
  lua_setfield(L, -2, "peer");
  return 1;
}

/* --- sock:proxyinfo() ---------------------------------------------------- */

/* [-0, +1, m] An address of a PROXY header as {address =, port =,
 * family =} (no port on a Unix socket), as getpeername words them. */
static void push_addr(lua_State *L, const struct sockaddr_storage *ss,
                      socklen_t len) {
  char ip[GL_NAMELEN];
  int port, fam;
  lua_createtable(L, 0, 3);
  if (gl_sock_addr_text(ss, len, ip, sizeof ip, &port, &fam) != GL_OK)
    return;
  set_str(L, "address", ip);
  if (fam != GL_FAMILY_UNIX) {
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
  }
  set_str(L, "family", fam == GL_FAMILY_UNIX    ? "unix"
                       : fam == GL_FAMILY_INET6 ? "inet6"
                                                : "inet");
}

/* sock:proxyinfo() -> table | nil (no PROXY header) */
static int sock_proxyinfo(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  const gl_proxyio_hdr *p = s->proxy;
  const gl_proxy *h;
  if (!p) {
    lua_pushnil(L);
    return 1;
  }
  h = &p->h;
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, h->version);
  lua_setfield(L, -2, "version");
  set_str(L, "command", h->command == GL_PROXY_LOCAL ? "LOCAL" : "PROXY");
  if (h->family != AF_UNSPEC) {
    push_addr(L, &h->src, h->src_len);
    lua_setfield(L, -2, "src");
    push_addr(L, &h->dst, h->dst_len);
    lua_setfield(L, -2, "dst");
  }
  lua_createtable(L, 0, (int)h->ntlvs);
  for (size_t i = 0; i < h->ntlvs; i++) {
    lua_pushlstring(L, h->tlvs[i].value, h->tlvs[i].len);
    lua_rawseti(L, -2, h->tlvs[i].type);
  }
  lua_setfield(L, -2, "tlvs");
  return 1;
}

void lg_tls_methods(lua_State *L) {
  static const luaL_Reg methods[] = {{"tlsinfo", sock_tlsinfo},
                                     {"starttls", sock_starttls},
                                     {"proxyinfo", sock_proxyinfo},
                                     {NULL, NULL}};
  lg_socket_methods(L, methods);
}
