/*
 * sockopt.c: what a socket says of its ends and how it is tuned: the
 * methods getpeername, getsockname (address, port, family), getpeercred
 * (a Unix socket's peer process) and setoption, getoption (LuaSocket's
 * names for the options of core/sock.h). Misuse (an unknown option, a value
 * of the wrong type) raises; a closed socket gives nil, "closed"; what the
 * system refuses gives nil and its message.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "proxyio.h"
#include "sock.h"
#include "sockopt.h"
#include "socket.h"

/* [-0, +3|2, -] The peer's (peer != 0) or the socket's own address:
 * ip, port, "inet" | "inet6"; path, nil, "unix" on a Unix socket. A
 * connection that came with a PROXY header has the addresses it carries
 * (its client's, and the one the client reached), unless it was LOCAL or
 * UNSPEC: then the socket's own. */
static int push_name(lua_State *L, int peer) {
  lg_socket *s = lg_check_socket(L, 1);
  char ip[GL_NAMELEN];
  int port, fam, rc;
  const gl_proxyio_hdr *p = s->proxy;
  if (!s->conn) return lg_fail(L, LG_FAIL_CLOSED, NULL);
  if (p && p->h.command == GL_PROXY_PROXY && p->h.family != AF_UNSPEC)
    rc = peer ? gl_sock_addr_text(&p->h.src, p->h.src_len, ip, sizeof ip,
                                  &port, &fam)
              : gl_sock_addr_text(&p->h.dst, p->h.dst_len, ip, sizeof ip,
                                  &port, &fam);
  else
    rc = gl_sock_name(s->conn->fd, peer, ip, sizeof ip, &port, &fam);
  if (rc) return lg_fail(L, LG_FAIL_MESSAGE, strerror(-rc));
  lua_pushstring(L, ip);
  if (fam == GL_FAMILY_UNIX)
    lua_pushnil(L);
  else
    lua_pushinteger(L, port);
  lua_pushstring(L, fam == GL_FAMILY_UNIX    ? "unix"
                    : fam == GL_FAMILY_INET6 ? "inet6"
                                             : "inet");
  return 3;
}

static int sock_getpeername(lua_State *L) { return push_name(L, 1); }
static int sock_getsockname(lua_State *L) { return push_name(L, 0); }

/* sock:getpeercred() -> pid, uid, gid | nil, "not a unix socket" */
static int sock_getpeercred(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  long pid, uid, gid;
  int rc;
  if (!s->conn) return lg_fail(L, LG_FAIL_CLOSED, NULL);
  rc = gl_sock_peercred(s->conn->fd, &pid, &uid, &gid);
  if (rc == -ENOTSUP) return lg_fail(L, LG_FAIL_NOT_UNIX, NULL);
  if (rc) return lg_fail(L, LG_FAIL_MESSAGE, strerror(-rc));
  lua_pushinteger(L, pid);
  lua_pushinteger(L, uid);
  lua_pushinteger(L, gid);
  return 3;
}

/* The options by LuaSocket's names, and what each takes. */
enum { FLAG, LINGER, NUMBER };
static const struct {
  const char *name;
  int opt, kind;
} options[] = {{"tcp-nodelay", GL_OPT_NODELAY, FLAG},
               {"keepalive", GL_OPT_KEEPALIVE, FLAG},
               {"reuseaddr", GL_OPT_REUSEADDR, FLAG},
               {"linger", GL_OPT_LINGER, LINGER},
               {"tcp-keepidle", GL_OPT_KEEPIDLE, NUMBER},
               {"tcp-keepintvl", GL_OPT_KEEPINTVL, NUMBER},
               {"tcp-keepcnt", GL_OPT_KEEPCNT, NUMBER}};
#define NOPTIONS (sizeof options / sizeof options[0])

/* [-0, +0, v] The option named at idx (an index into options), or raises. */
static size_t check_option(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strcmp(options[i].name, name) == 0) return i;
  return (size_t)luaL_argerror(
      L, idx,
      lua_pushfstring(L, "unknown socket option '%s' (tcp-nodelay, keepalive, "
                         "reuseaddr, linger, tcp-keepidle, tcp-keepintvl, "
                         "tcp-keepcnt)", name));
}

/* [-0, +0, v] An integer from 0 to INT_MAX at idx, or raises. */
static int check_count(lua_State *L, int idx, lua_Integer v) {
  luaL_argcheck(L, v >= 0 && v <= INT_MAX, idx, "must be >= 0");
  return (int)v;
}

/* sock:setoption(name, value) -> 1 | nil, err. value: a boolean; for
 * "linger" a table {on = boolean, timeout = seconds}; for the tcp-keep*
 * ones a whole number. */
static int sock_setoption(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  size_t i = check_option(L, 2);
  int v = 0, secs = 0, rc;
  switch (options[i].kind) {
  case FLAG:
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    v = lua_toboolean(L, 3);
    break;
  case LINGER:
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "on") != LUA_TBOOLEAN)
      luaL_argerror(L, 3, "boolean 'on' field expected");
    v = lua_toboolean(L, -1);
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
      int ok;
      lua_Integer t = lua_tointegerx(L, -1, &ok);
      if (!ok) luaL_argerror(L, 3, "whole number 'timeout' field expected");
      secs = check_count(L, 3, t);
    }
    lua_pop(L, 2);
    break;
  default:
    v = check_count(L, 3, luaL_checkinteger(L, 3));
  }
  if (!s->conn) return lg_fail(L, LG_FAIL_CLOSED, NULL);
  rc = gl_sock_setopt(s->conn->fd, options[i].opt, v, secs);
  if (rc) return lg_fail(L, LG_FAIL_MESSAGE, strerror(-rc));
  lua_pushinteger(L, 1);
  return 1;
}

/* sock:getoption(name) -> value | nil, err, value as setoption takes it. */
static int sock_getoption(lua_State *L) {
  lg_socket *s = lg_check_socket(L, 1);
  size_t i = check_option(L, 2);
  int v, secs, rc;
  if (!s->conn) return lg_fail(L, LG_FAIL_CLOSED, NULL);
  rc = gl_sock_getopt(s->conn->fd, options[i].opt, &v, &secs);
  if (rc) return lg_fail(L, LG_FAIL_MESSAGE, strerror(-rc));
  switch (options[i].kind) {
  case FLAG:
    lua_pushboolean(L, v);
    break;
  case LINGER:
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, v);
    lua_setfield(L, -2, "on");
    lua_pushinteger(L, secs);
    lua_setfield(L, -2, "timeout");
    break;
  default:
    lua_pushinteger(L, v);
  }
  return 1;
}

int lg_sockopt_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"getpeername", sock_getpeername},
                                     {"getsockname", sock_getsockname},
                                     {"getpeercred", sock_getpeercred},
                                     {"setoption", sock_setoption},
                                     {"getoption", sock_getoption},
                                     {NULL, NULL}};
  lg_socket_methods(L, methods);
  return 0;
}
